//! Routes for other components and for the scheduler, not for clients:
//! `POST /internal/feed/events` (service token: profiles' user and follow
//! events) and `POST /ops/feed/dispatch` (scheduler token).

use serde_json::json;
use shared::ApiError;
use shared::events;
use shared::http::{Response, json};
use spin_sdk::http::{Request, StatusCode};

use crate::app::App;
use crate::events::ReadModel;

pub async fn receive(app: &App<'_>, request: Request) -> Result<Response, ApiError> {
    let model = ReadModel::new(&app.kv);
    events::receive(&app.db, &app.service, &model, request).await
}

/// Retries pending deliveries of feed's own events, continues an
/// unfinished resync of the read model, and purges what is past retention.
pub async fn dispatch(app: &App<'_>, request: Request) -> Result<Response, ApiError> {
    events::authorize_dispatch(&request).await?;
    let outbox = app.outbox.dispatch(app.ctx, &app.db, &app.service).await?;
    let model = ReadModel::new(&app.kv);
    let inbox = events::dispatch_inbox(app.ctx, &app.db, &app.service, &model).await?;
    Ok(json(StatusCode::OK, &json!({ "outbox": outbox, "inbox": inbox })))
}
