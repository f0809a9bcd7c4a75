//! Assembling what clients see: viewer-independent parts from the cache or
//! the database, author blocks merged in at read time, and the viewer's own
//! `favorited` and `following` flags from one statement per response.

use std::collections::HashMap;

use futures::future::join_all;
use serde_json::{Value, json};
use shared::ApiError;
use shared::auth::Identity;

use crate::app::App;
use crate::cache::Dependency;
use crate::store::{self, Article, Author, ViewerFlags};

/// Renders an author as the RealWorld profile block.
pub fn profile_json(author: &Author, following: bool) -> Value {
    json!({
        "username": author.username,
        "bio": author.bio,
        "image": author.image,
        "following": following,
    })
}

/// Renders the RealWorld article object. It has `body` only when the article
/// carries one, because list items leave it out as the contract's list schema does.
pub fn article_json(article: &Article, author: &Author, favorited: bool, following: bool) -> Value {
    let mut value = json!({
        "slug": article.slug,
        "title": article.title,
        "description": article.description,
        "tagList": article.tag_list,
        "createdAt": shared::time::rfc3339(article.created_at),
        "updatedAt": shared::time::rfc3339(article.updated_at),
        "favorited": favorited,
        "favoritesCount": article.favorites_count,
        "author": profile_json(author, following),
    });
    if let Some(body) = &article.body {
        value["body"] = body.as_str().into();
    }
    value
}

/// Reads author blocks by user id: each from the cache, the misses from the
/// database in one statement (then cached). Unknown ids are left out.
pub async fn authors(app: &App<'_>, ids: &[&str]) -> Result<HashMap<String, Author>, ApiError> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();

    let cache = app.cache();
    let cache = &cache;
    let lookups = ids.iter().map(|id| async move {
        let key = cache.key(&format!("author:{id}"), &[Dependency::Author(id)]).await;
        let cached: Option<Author> = cache.get(key.as_deref()).await;
        (*id, key, cached)
    });
    let mut found = HashMap::with_capacity(ids.len());
    let mut missing = Vec::new();
    for (id, key, cached) in join_all(lookups).await {
        match cached {
            Some(author) => {
                found.insert(author.id.clone(), author);
            }
            None => missing.push((id, key)),
        }
    }
    if missing.is_empty() {
        return Ok(found);
    }

    let missing_ids: Vec<&str> = missing.iter().map(|(id, _)| *id).collect();
    let loaded = store::authors_by_id(&app.db, &missing_ids).await?;
    let writes = loaded.iter().filter_map(|author| {
        let (_, key) = missing.iter().find(|(id, _)| *id == author.id)?;
        Some(cache.put(key.as_deref(), author))
    });
    join_all(writes).await;
    found.extend(loaded.into_iter().map(|author| (author.id.clone(), author)));
    Ok(found)
}

/// Reads the viewer's flags for these articles and their authors; nothing
/// for an anonymous viewer.
pub async fn flags(app: &App<'_>, viewer: Option<&Identity>, articles: &[&Article]) -> Result<ViewerFlags, ApiError> {
    let Some(viewer) = viewer else { return Ok(ViewerFlags::default()) };
    let article_ids: Vec<&str> = articles.iter().map(|a| a.id.as_str()).collect();
    let mut author_ids: Vec<&str> = articles.iter().map(|a| a.author_id.as_str()).collect();
    author_ids.sort_unstable();
    author_ids.dedup();
    Ok(store::viewer_flags(&app.db, &viewer.user_id, &article_ids, &author_ids).await?)
}

/// Renders a list page: author blocks from `known` or the cache, the
/// viewer's flags in one statement.
pub async fn list_items(
    app: &App<'_>,
    viewer: Option<&Identity>,
    articles: &[Article],
    mut known: HashMap<String, Author>,
) -> Result<Vec<Value>, ApiError> {
    let unknown: Vec<&str> = articles
        .iter()
        .map(|a| a.author_id.as_str())
        .filter(|id| !known.contains_key(*id))
        .collect();
    if !unknown.is_empty() {
        known.extend(authors(app, &unknown).await?);
    }
    let refs: Vec<&Article> = articles.iter().collect();
    let flags = flags(app, viewer, &refs).await?;
    Ok(articles
        .iter()
        .filter_map(|article| {
            let author = known.get(&article.author_id)?;
            Some(article_json(
                article,
                author,
                flags.favorited.contains(&article.id),
                flags.following.contains(&article.author_id),
            ))
        })
        .collect())
}
