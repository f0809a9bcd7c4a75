//! The feed component: the RealWorld articles contract (the global list,
//! each user's personal feed, articles, comments, favourites, tags). It owns
//! articles and everything attached to them, keeps a read model of profiles'
//! users and follows (see `events.rs`), and caches what every viewer sees
//! alike (see `cache.rs`).
//!
//! This file is the routing table. It matches on the request URI path, not on
//! the `spin-path-info` header, which a client can also send.

mod app;
mod cache;
mod events;
mod routes;
mod store;
mod view;

use shared::ApiError;
use shared::http::{Ctx, Response};
use spin_sdk::http::{IntoResponse, Method, Request};
use spin_sdk::http_service;

/// Every route this component serves.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    ListArticles,
    CreateArticle,
    Feed,
    GetArticle(String),
    UpdateArticle(String),
    DeleteArticle(String),
    ListComments(String),
    AddComment(String),
    DeleteComment(String, String),
    Favorite(String),
    Unfavorite(String),
    Tags,
    Events,
    Dispatch,
    Health,
}

/// Maps a method and path onto a route. Returns the route's pattern for the
/// log line (never the path, which contains slugs) next to the route: 404 for
/// an unknown path, 405 with `Allow` for a known path and another method.
fn resolve(method: &Method, path: &str) -> (&'static str, Result<Route, ApiError>) {
    const UNMATCHED: &str = "unmatched";
    let segments = match shared::http::segments(path) {
        Ok(segments) => segments,
        Err(error) => return (UNMATCHED, Err(error)),
    };
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let m = method.as_str();
    let allow = |methods: &'static str| Err(ApiError::MethodNotAllowed(methods));
    match segments.as_slice() {
        ["api", "articles"] => (
            "/api/articles",
            match m {
                "GET" => Ok(Route::ListArticles),
                "POST" => Ok(Route::CreateArticle),
                _ => allow("GET, POST"),
            },
        ),
        ["api", "articles", "feed"] => ("/api/articles/feed", if m == "GET" { Ok(Route::Feed) } else { allow("GET") }),
        ["api", "articles", slug] if !slug.is_empty() => (
            "/api/articles/:slug",
            match m {
                "GET" => Ok(Route::GetArticle(slug.to_string())),
                "PUT" => Ok(Route::UpdateArticle(slug.to_string())),
                "DELETE" => Ok(Route::DeleteArticle(slug.to_string())),
                _ => allow("GET, PUT, DELETE"),
            },
        ),
        ["api", "articles", slug, "comments"] if !slug.is_empty() => (
            "/api/articles/:slug/comments",
            match m {
                "GET" => Ok(Route::ListComments(slug.to_string())),
                "POST" => Ok(Route::AddComment(slug.to_string())),
                _ => allow("GET, POST"),
            },
        ),
        ["api", "articles", slug, "comments", id] if !slug.is_empty() && !id.is_empty() => (
            "/api/articles/:slug/comments/:id",
            if m == "DELETE" { Ok(Route::DeleteComment(slug.to_string(), id.to_string())) } else { allow("DELETE") },
        ),
        ["api", "articles", slug, "favorite"] if !slug.is_empty() => (
            "/api/articles/:slug/favorite",
            match m {
                "POST" => Ok(Route::Favorite(slug.to_string())),
                "DELETE" => Ok(Route::Unfavorite(slug.to_string())),
                _ => allow("POST, DELETE"),
            },
        ),
        ["api", "tags"] => ("/api/tags", if m == "GET" { Ok(Route::Tags) } else { allow("GET") }),
        ["internal", "feed", "events"] => ("/internal/feed/events", if m == "POST" { Ok(Route::Events) } else { allow("POST") }),
        ["ops", "feed", "dispatch"] => ("/ops/feed/dispatch", if m == "POST" { Ok(Route::Dispatch) } else { allow("POST") }),
        ["health", "feed"] => (
            "/health/feed",
            if matches!(m, "GET" | "HEAD") { Ok(Route::Health) } else { allow("GET, HEAD") },
        ),
        _ => (UNMATCHED, Err(ApiError::NotFound("not found".into()))),
    }
}

#[http_service]
async fn handle(request: Request) -> impl IntoResponse {
    shared::http::serve("feed", request, dispatch).await
}

async fn dispatch(ctx: &Ctx, request: Request) -> Result<Response, ApiError> {
    let (pattern, route) = resolve(request.method(), request.uri().path());
    ctx.set_route(pattern);
    let route = route?;
    if route == Route::Health {
        return Ok(shared::platform::health(ctx).await);
    }

    let app = app::App::load(ctx).await?;
    use routes::{articles, comments, favorites, lists, ops, tags};
    match route {
        Route::ListArticles => lists::list(&app, request).await,
        Route::CreateArticle => articles::create(&app, request).await,
        Route::Feed => lists::feed(&app, request).await,
        Route::GetArticle(slug) => articles::get(&app, request, &slug).await,
        Route::UpdateArticle(slug) => articles::update(&app, request, &slug).await,
        Route::DeleteArticle(slug) => articles::delete(&app, request, &slug).await,
        Route::ListComments(slug) => comments::list(&app, request, &slug).await,
        Route::AddComment(slug) => comments::add(&app, request, &slug).await,
        Route::DeleteComment(slug, id) => comments::delete(&app, request, &slug, &id).await,
        Route::Favorite(slug) => favorites::favorite(&app, request, &slug).await,
        Route::Unfavorite(slug) => favorites::unfavorite(&app, request, &slug).await,
        Route::Tags => tags::list(&app, request).await,
        Route::Events => ops::receive(&app, request).await,
        Route::Dispatch => ops::dispatch(&app, request).await,
        Route::Health => unreachable!("answered above"),
    }
}
