//! The notifications component: each user's in-app inbox with its unread
//! count, their notification preferences, and email (verification links
//! and notification emails to verified addresses, with one-click
//! unsubscribe). It consumes the events of profiles, feed and payments (see
//! `events.rs`) and is reached by them only through its internal event
//! route, so its failure never fails their requests: their outboxes keep the
//! events until it is back.
//!
//! This file is the routing table. It matches on the request URI path, not on
//! the `spin-path-info` header, which a client can also send.

mod app;
mod cache;
mod email;
mod events;
mod preferences;
mod routes;
mod store;
mod unsubscribe;

use serde_json::json;
use shared::ApiError;
use shared::http::{Ctx, Response};
use spin_sdk::http::{IntoResponse, Method, Request, StatusCode};
use spin_sdk::http_service;

/// How many users' old notifications one dispatch run purges, and how many emails.
const PURGE_USERS: u32 = 100;
const PURGE_EMAILS: u32 = 1000;

#[derive(Debug, PartialEq, Eq)]
enum Route {
    List,
    UnreadCount,
    MarkRead(String),
    ReadAll,
    Preferences,
    SetPreferences,
    ConfirmUnsubscribe,
    Unsubscribe,
    Events,
    Dispatch,
    Health,
}

/// Maps a method and path onto a route. Returns the route's pattern for the
/// log line next to the route: 404 for an unknown path, 405 with `Allow`
/// for a known path and another method.
fn resolve(method: &Method, path: &str) -> (&'static str, Result<Route, ApiError>) {
    const UNMATCHED: &str = "unmatched";
    let segments = match shared::http::segments(path) {
        Ok(segments) => segments,
        Err(error) => return (UNMATCHED, Err(error)),
    };
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let m = method.as_str();
    let allow = |methods: &'static str| Err(ApiError::MethodNotAllowed(methods));
    let only = |route: Route, expected: &'static str| if m == expected { Ok(route) } else { allow(expected) };
    match segments.as_slice() {
        ["api", "notifications"] => ("/api/notifications", only(Route::List, "GET")),
        ["api", "notifications", "unread-count"] => ("/api/notifications/unread-count", only(Route::UnreadCount, "GET")),
        ["api", "notifications", "read-all"] => ("/api/notifications/read-all", only(Route::ReadAll, "POST")),
        ["api", "notifications", "preferences"] => (
            "/api/notifications/preferences",
            match m {
                "GET" => Ok(Route::Preferences),
                "PUT" => Ok(Route::SetPreferences),
                _ => allow("GET, PUT"),
            },
        ),
        ["api", "notifications", "unsubscribe"] => (
            unsubscribe::PATH,
            match m {
                "GET" => Ok(Route::ConfirmUnsubscribe),
                "POST" => Ok(Route::Unsubscribe),
                _ => allow("GET, POST"),
            },
        ),
        ["api", "notifications", id, "read"] if !id.is_empty() => {
            ("/api/notifications/:id/read", only(Route::MarkRead(id.to_string()), "POST"))
        }
        ["internal", "notifications", "events"] => ("/internal/notifications/events", only(Route::Events, "POST")),
        ["ops", "notifications", "dispatch"] => ("/ops/notifications/dispatch", only(Route::Dispatch, "POST")),
        ["health", "notifications"] => (
            "/health/notifications",
            if matches!(m, "GET" | "HEAD") { Ok(Route::Health) } else { allow("GET, HEAD") },
        ),
        _ => (UNMATCHED, Err(ApiError::NotFound("not found".into()))),
    }
}

#[http_service]
async fn handle(request: Request) -> impl IntoResponse {
    shared::http::serve("notifications", request, dispatch).await
}

async fn dispatch(ctx: &Ctx, request: Request) -> Result<Response, ApiError> {
    let (pattern, route) = resolve(request.method(), request.uri().path());
    ctx.set_route(pattern);
    let route = route?;
    match route {
        Route::Health => return Ok(shared::platform::health(ctx).await),
        Route::ConfirmUnsubscribe => return unsubscribe::confirm(request).await,
        _ => {}
    }

    let app = app::App::load(ctx).await?;
    match route {
        Route::List => routes::list(&app, request).await,
        Route::UnreadCount => routes::unread_count(&app, request).await,
        Route::MarkRead(id) => routes::mark_read(&app, request, &id).await,
        Route::ReadAll => routes::read_all(&app, request).await,
        Route::Preferences => routes::get_preferences(&app, request).await,
        Route::SetPreferences => routes::put_preferences(&app, request).await,
        Route::Unsubscribe => unsubscribe::unsubscribe(&app, request).await,
        Route::Events => {
            let inbox = events::Inbox::load(&app.kv).await?;
            shared::events::receive(&app.db, &app.service, &inbox, request).await
        }
        Route::Dispatch => run_dispatch(&app, request).await,
        Route::Health | Route::ConfirmUnsubscribe => unreachable!("answered above"),
    }
}

/// `POST /ops/notifications/dispatch`: continues unfinished resyncs, sends
/// due emails, and purges notifications and settled emails older than
/// `retention_days`, and processed event ids past theirs.
async fn run_dispatch(app: &app::App<'_>, request: Request) -> Result<Response, ApiError> {
    shared::events::authorize_dispatch(&request).await?;
    let inbox = events::Inbox::load(&app.kv).await?;
    let resync = shared::events::dispatch_inbox(app.ctx, &app.db, &app.service, &inbox).await?;
    let provider = email::Brevo::load().await?;
    let emails = email::send_due(app.ctx, &app.db, &provider).await?;

    let retention_days: i64 = shared::config::parsed("retention_days").await?;
    let cutoff = shared::time::now_micros() - retention_days * 86_400 * 1_000_000;
    let mut purged = 0;
    for user_id in store::users_with_old(&app.db, cutoff, PURGE_USERS).await? {
        purged += app.db.transaction(async |tx| Ok(store::purge_user(tx, &user_id, cutoff).await?)).await?;
        cache::invalidate_unread(&app.kv, &user_id).await;
    }
    email::purge_before(&app.db, cutoff, PURGE_EMAILS).await?;
    Ok(shared::http::json(
        StatusCode::OK,
        &json!({ "inbox": resync, "emails": emails, "purged_notifications": purged }),
    ))
}
