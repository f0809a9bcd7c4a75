//! Routes for other components and for the scheduler, not for clients:
//! `GET /internal/profiles/resync` (service token) and
//! `POST /ops/profiles/dispatch` (scheduler token).

use serde_json::json;
use shared::ApiError;
use shared::events::{self, ResyncQuery};
use shared::http::{Response, json};
use spin_sdk::http::{Request, StatusCode};

use crate::app::App;

/// Serves a page of current users, follows or email addresses, each with its
/// version, to a consumer rebuilding its read model. Addresses go only to
/// the consumers that receive the `email` events.
pub async fn resync(app: &App<'_>, request: Request) -> Result<Response, ApiError> {
    let caller = app.service.guard(request.headers())?;
    let query = ResyncQuery::parse(request.uri().query())?;
    if query.aggregate_type == crate::events::EMAIL && !crate::events::EMAIL_CONSUMERS.contains(&caller.as_str()) {
        return Err(ApiError::Forbidden("this component does not receive email addresses".into()));
    }
    let snapshots = crate::events::snapshots(&app.db, &query)
        .await?
        .ok_or_else(|| ApiError::invalid("aggregate", "must be `user`, `follow` or `email`"))?;
    Ok(query.response(snapshots))
}

/// Retries pending event deliveries, purges delivered ones past retention,
/// and purges expired verification links, old send times and expired
/// refresh tokens.
pub async fn dispatch(app: &App<'_>, request: Request) -> Result<Response, ApiError> {
    events::authorize_dispatch(&request).await?;
    let outbox = app.outbox.dispatch(app.ctx, &app.db, &app.service).await?;
    let now = shared::time::now_micros();
    let interval = crate::routes::email::Settings::load().await?.interval_seconds.max(86_400);
    crate::store::purge_verifications(&app.db, now, now - interval * 1_000_000, events::PURGE_BATCH).await?;
    crate::refresh::purge_expired(&app.db, now, events::PURGE_BATCH).await?;
    Ok(json(StatusCode::OK, &json!({ "outbox": outbox })))
}
