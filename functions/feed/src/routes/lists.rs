//! `GET /api/articles` (token optional; filters `tag`, `author`,
//! `favorited`) and `GET /api/articles/feed` (token required; articles by
//! the authors the caller follows). Both are newest first, paged by `limit`
//! (default [`DEFAULT_LIMIT`], capped at [`MAX_LIMIT`]) and `offset`, with
//! `articlesCount` the total. Each runs a fixed number of statements
//! whatever the page size: at most a count, a page and the viewer's flags,
//! plus one for author blocks or summaries the cache lacks.
//!
//! The first page of the unfiltered list and of each user's feed is cached
//! as a list of slugs with the total; the articles then come from their own
//! cache entries, so a favourite or an edit invalidates one article, not
//! every cached page.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use shared::ApiError;
use shared::auth::Identity;
use shared::http::{Response, json, no_store};
use shared::query::Query;
use spin_sdk::http::{Request, StatusCode};

use crate::app::App;
use crate::cache::Dependency;
use crate::store::{self, Filter};
use crate::view;

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

/// A cached first page: which articles, in order, and how many match in all.
#[derive(Serialize, Deserialize)]
struct CachedPage {
    count: u64,
    slugs: Vec<String>,
}

/// Reads a filter value; an empty one is no filter.
fn filter_value(query: &Query, name: &str) -> Result<Option<String>, ApiError> {
    Ok(query.get(name)?.filter(|value| !value.is_empty()).map(|value| shared::text::normalised_key(value.trim())))
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
    let cache_as = (filter.is_empty() && offset == 0).then(|| format!("list:{limit}"));
    let body = page(app, viewer.as_ref(), &filter, limit, offset, cache_as, &[Dependency::ArticleSet]).await?;
    let response = json(StatusCode::OK, &body);
    Ok(if viewer.is_some() { no_store(response) } else { response })
}

pub async fn feed(app: &App<'_>, request: Request) -> Result<Response, ApiError> {
    let viewer = app.caller(request.headers()).await?;
    let query = Query::parse(request.uri().query())?;
    let limit = query.limit(DEFAULT_LIMIT, MAX_LIMIT)?;
    let offset = query.offset()?;
    let filter = Filter { followed_by: Some(viewer.user_id.clone()), ..Filter::default() };
    let cache_as = (offset == 0).then(|| format!("feed:{}:{limit}", viewer.user_id));
    let dependencies = [Dependency::Follows(&viewer.user_id), Dependency::ArticleSet];
    let body = page(app, Some(&viewer), &filter, limit, offset, cache_as, &dependencies).await?;
    Ok(no_store(json(StatusCode::OK, &body)))
}

/// Builds a page, from the cache when `cache_as` names a cacheable page.
async fn page(
    app: &App<'_>,
    viewer: Option<&Identity>,
    filter: &Filter,
    limit: u32,
    offset: u64,
    cache_as: Option<String>,
    dependencies: &[Dependency<'_>],
) -> Result<serde_json::Value, ApiError> {
    let cache = app.cache();
    let key = match &cache_as {
        Some(name) => cache.key(name, dependencies).await,
        None => None,
    };
    if let Some(cached) = cache.get::<CachedPage>(key.as_deref()).await {
        let articles = view::summaries(app, &cached.slugs).await?;
        let items = view::list_items(app, viewer, &articles, HashMap::new()).await?;
        return Ok(serde_json::json!({ "articles": items, "articlesCount": cached.count }));
    }

    let count = store::count_articles(&app.db, filter).await?;
    let rows = if count > offset { store::page(&app.db, filter, limit, offset).await? } else { Vec::new() };
    let slugs = rows.iter().map(|(article, _)| article.slug.clone()).collect();
    cache.put(key.as_deref(), &CachedPage { count, slugs }).await;

    let mut authors = HashMap::new();
    let mut articles = Vec::with_capacity(rows.len());
    for (article, author) in rows {
        authors.insert(author.id.clone(), author);
        articles.push(article);
    }
    let items = view::list_items(app, viewer, &articles, authors).await?;
    Ok(serde_json::json!({ "articles": items, "articlesCount": count }))
}
