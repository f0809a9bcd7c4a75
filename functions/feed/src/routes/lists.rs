//! `GET /api/articles` (token optional; filters `tag`, `author`,
//! `favorited`) and `GET /api/articles/feed` (token required; articles by
//! the authors the caller follows). Both are newest first, paged by `limit`
//! (default [`DEFAULT_LIMIT`], capped at [`MAX_LIMIT`]) and `offset`, with
//! `articlesCount` the total. Each runs a fixed number of statements
//! whatever the page size.
//!
//! Two pages are cached. The first page of the unfiltered list is cached
//! whole (the summaries and the total), since every viewer sees it alike:
//! an anonymous hit runs no statement, a signed-in one only the viewer's
//! flags. Each user's first feed page is cached as article ids and the
//! total, which spares the join and sort over followed authors. A hit then
//! reads those rows by primary key, with the viewer's flags, in one statement.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shared::ApiError;
use shared::auth::Identity;
use shared::http::{Response, json as json_response, no_store};
use shared::query::Query;
use spin_sdk::http::{Request, StatusCode};

use crate::app::App;
use crate::cache::Dependency;
use crate::store::{self, Article, Author, Filter};
use crate::view;

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

/// The cached first page of the unfiltered list.
#[derive(Serialize, Deserialize)]
struct CachedPage {
    count: u64,
    articles: Vec<Article>,
}

/// The cached first page of a user's feed.
#[derive(Serialize, Deserialize)]
struct CachedIds {
    count: u64,
    ids: Vec<String>,
}

/// Reads a filter value; an empty one is no filter.
fn filter_value(query: &Query, name: &str) -> Result<Option<String>, ApiError> {
    Ok(query.get(name)?.filter(|value| !value.is_empty()).map(|value| shared::text::normalised_key(value.trim())))
}

fn page_json(items: Vec<Value>, count: u64) -> Value {
    json!({ "articles": items, "articlesCount": count })
}

pub async fn list(app: &App<'_>, request: Request) -> Result<Response, ApiError> {
    let viewer = app.optional_caller(request.headers()).await?;
    let query = Query::parse(request.uri().query())?;
    let limit = query.limit(DEFAULT_LIMIT, MAX_LIMIT)?;
    let offset = query.offset()?;
    let filter = Filter {
        tag: filter_value(&query, "tag")?,
        author_key: filter_value(&query, "author")?,
        favorited_by_key: filter_value(&query, "favorited")?,
        followed_by: None,
    };

    let cache = app.cache();
    let key = match filter.is_empty() && offset == 0 {
        true => cache.key(&format!("list:{limit}"), &[Dependency::ListContent]).await,
        false => None,
    };
    let body = match cache.get::<CachedPage>(key.as_deref()).await {
        Some(page) => page_json(view::list_items(app, viewer.as_ref(), &page.articles, HashMap::new()).await?, page.count),
        None => {
            let (count, articles, authors) = read_page(app, &filter, limit, offset).await?;
            cache.put(key.as_deref(), &CachedPage { count, articles: articles.clone() }).await;
            page_json(view::list_items(app, viewer.as_ref(), &articles, authors).await?, count)
        }
    };
    let response = json_response(StatusCode::OK, &body);
    Ok(if viewer.is_some() { no_store(response) } else { response })
}

pub async fn feed(app: &App<'_>, request: Request) -> Result<Response, ApiError> {
    let viewer = app.caller(request.headers()).await?;
    let query = Query::parse(request.uri().query())?;
    let limit = query.limit(DEFAULT_LIMIT, MAX_LIMIT)?;
    let offset = query.offset()?;
    let filter = Filter { followed_by: Some(viewer.user_id.clone()), ..Filter::default() };

    let cache = app.cache();
    let key = match offset == 0 {
        true => {
            let name = format!("feed:{}:{limit}", viewer.user_id);
            cache.key(&name, &[Dependency::Follows(&viewer.user_id), Dependency::ArticleSet]).await
        }
        false => None,
    };
    let body = match cache.get::<CachedIds>(key.as_deref()).await {
        Some(page) => page_json(cached_feed_items(app, &viewer, &page.ids).await?, page.count),
        None => {
            let (count, articles, authors) = read_page(app, &filter, limit, offset).await?;
            let ids = articles.iter().map(|article| article.id.clone()).collect();
            cache.put(key.as_deref(), &CachedIds { count, ids }).await;
            page_json(view::list_items(app, Some(&viewer), &articles, authors).await?, count)
        }
    };
    Ok(no_store(json_response(StatusCode::OK, &body)))
}

/// Reads a page from the database: the total, then the page (skipped when
/// the offset is past the end), with the authors the page statement joined.
async fn read_page(
    app: &App<'_>,
    filter: &Filter,
    limit: u32,
    offset: u64,
) -> Result<(u64, Vec<Article>, HashMap<String, Author>), ApiError> {
    let count = store::count_articles(&app.db, filter).await?;
    let rows = if count > offset { store::page(&app.db, filter, limit, offset).await? } else { Vec::new() };
    let mut authors = HashMap::new();
    let mut articles = Vec::with_capacity(rows.len());
    for (article, author) in rows {
        authors.insert(author.id.clone(), author);
        articles.push(article);
    }
    Ok((count, articles, authors))
}

/// Renders a cached feed page: the rows by id with the viewer's flags, in
/// the cached order. An article deleted since then is left out.
async fn cached_feed_items(app: &App<'_>, viewer: &Identity, ids: &[String]) -> Result<Vec<Value>, ApiError> {
    let mut rows = store::viewed_by_id(&app.db, &viewer.user_id, ids).await?;
    let mut items = Vec::with_capacity(rows.len());
    for id in ids {
        if let Some(index) = rows.iter().position(|row| row.article.id == *id) {
            let row = rows.swap_remove(index);
            items.push(view::article_json(&row.article, &row.author, row.favorited, row.following));
        }
    }
    Ok(items)
}
