//! The inbox routes: the list, the unread count, marking read, and
//! preferences. Every one needs the caller's token and concerns only
//! the caller's own notifications: another user's id is a 404, as is one
//! that never existed. Responses are `Cache-Control: no-store`.

use serde_json::json;
use shared::ApiError;
use shared::http::{Response, json, no_store, read_json};
use shared::query::{Cursor, Query};
use spin_sdk::http::{Request, StatusCode};

use crate::app::App;
use crate::preferences::{self, Preferences};
use crate::store;
use crate::cache;

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

fn ok(body: serde_json::Value) -> Response {
    no_store(json(StatusCode::OK, &body))
}

/// Reads the paging parameters; any other parameter is a 422.
fn page_query(request: &Request) -> Result<(bool, u32, Option<Cursor>), ApiError> {
    let query = Query::parse(request.uri().query())?;
    query.only(&["unread", "limit", "cursor"])?;
    let unread = match query.get("unread")? {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::invalid("unread", "must be true or false")),
    };
    Ok((unread, query.bounded_limit(DEFAULT_LIMIT, MAX_LIMIT)?, query.cursor()?))
}

/// `GET /api/notifications?unread=&cursor=&limit=`: newest first.
pub async fn list(app: &App<'_>, request: Request) -> Result<Response, ApiError> {
    let caller = app.caller(request.headers()).await?;
    let (unread, limit, cursor) = page_query(&request)?;
    let mut items = store::page(&app.db, &caller.user_id, unread, cursor.as_ref(), limit + 1).await?;
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next = more
        .then(|| items.last().map(|last| Cursor { created_at: last.created_at, id: last.id.clone() }.encode()))
        .flatten();
    let notifications: Vec<_> = items.iter().map(store::Notification::to_json).collect();
    Ok(ok(json!({ "notifications": notifications, "next_cursor": next })))
}

/// Reads the caller's unread count, from the cache when it has it.
async fn unread(app: &App<'_>, user_id: &str) -> Result<i64, ApiError> {
    let key = cache::unread_key(&app.kv, user_id).await;
    if let Some(count) = cache::get_unread(&app.kv, key.as_deref()).await {
        return Ok(count);
    }
    let count = store::unread_count(&app.db, user_id).await?;
    cache::put_unread(&app.kv, key.as_deref(), count).await;
    Ok(count)
}

/// `GET /api/notifications/unread-count`.
pub async fn unread_count(app: &App<'_>, request: Request) -> Result<Response, ApiError> {
    let caller = app.caller(request.headers()).await?;
    Ok(ok(json!({ "unread_count": unread(app, &caller.user_id).await? })))
}

fn not_found() -> ApiError {
    ApiError::NotFound("notification not found".into())
}

/// `POST /api/notifications/:id/read`: marks one of the caller's
/// notifications read. Marking it again changes nothing.
pub async fn mark_read(app: &App<'_>, request: Request, id: &str) -> Result<Response, ApiError> {
    let caller = app.caller(request.headers()).await?;
    if !shared::ids::is_uuid(id) {
        return Err(not_found());
    }
    let user_id = caller.user_id.as_str();
    let now = shared::time::now_micros();
    let (count, changed) = app
        .db
        .transaction(async |tx| {
            let count = store::lock_count(tx, user_id).await?;
            let unread = store::lock_one(tx, user_id, id).await?.ok_or_else(not_found)?;
            if !unread {
                return Ok((count, false));
            }
            store::mark_read(tx, id, now).await?;
            store::add_to_count(tx, user_id, -1).await?;
            Ok((count - 1, true))
        })
        .await?;
    if changed {
        cache::invalidate_unread(&app.kv, user_id).await;
    }
    let notification = store::by_id(&app.db, user_id, id).await?.ok_or_else(not_found)?;
    Ok(ok(json!({ "notification": notification.to_json(), "unread_count": count })))
}

/// `POST /api/notifications/read-all`: marks every one of the caller's notifications read.
pub async fn read_all(app: &App<'_>, request: Request) -> Result<Response, ApiError> {
    let caller = app.caller(request.headers()).await?;
    let user_id = caller.user_id.as_str();
    let now = shared::time::now_micros();
    let marked = app
        .db
        .transaction(async |tx| {
            let count = store::lock_count(tx, user_id).await?;
            if count > 0 {
                store::mark_all_read(tx, user_id, now).await?;
            }
            Ok(count)
        })
        .await?;
    if marked > 0 {
        cache::invalidate_unread(&app.kv, user_id).await;
    }
    Ok(ok(json!({ "marked": marked, "unread_count": 0 })))
}

/// `GET /api/notifications/preferences`.
pub async fn get_preferences(app: &App<'_>, request: Request) -> Result<Response, ApiError> {
    let caller = app.caller(request.headers()).await?;
    let choices = Preferences::load(&app.db, &caller.user_id).await?;
    Ok(ok(json!({ "preferences": choices.to_json() })))
}

/// `PUT /api/notifications/preferences`: changes the choices the body
/// names and keeps the others. An invalid body changes nothing.
pub async fn put_preferences(app: &App<'_>, request: Request) -> Result<Response, ApiError> {
    let caller = app.caller(request.headers()).await?;
    let body = read_json(request, 4 * 1024).await?;
    let changes = preferences::parse_update(&body)?;
    preferences::store(&app.db, &caller.user_id, &changes, shared::time::now_micros()).await?;
    let choices = Preferences::load(&app.db, &caller.user_id).await?;
    Ok(ok(json!({ "preferences": choices.to_json() })))
}
