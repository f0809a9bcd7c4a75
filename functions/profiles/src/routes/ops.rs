//! Routes for other components and for the scheduler, not for clients:
//! `GET /internal/profiles/resync` (service token) and
//! `POST /ops/profiles/dispatch` (scheduler token).

use serde_json::json;
use shared::ApiError;
use shared::events::{self, ResyncQuery};
use shared::http::{Response, json};
use spin_sdk::http::{Request, StatusCode};

use crate::app::App;

/// Serves a page of current users or follows, each with its version, to a
/// consumer rebuilding its read model.
pub async fn resync(app: &App<'_>, request: Request) -> Result<Response, ApiError> {
    app.service.guard(request.headers())?;
    let query = ResyncQuery::parse(request.uri().query())?;
    let snapshots = crate::events::snapshots(&app.db, &query)
        .await?
        .ok_or_else(|| ApiError::invalid("aggregate", "must be `user` or `follow`"))?;
    Ok(query.response(snapshots))
}

/// Retries pending event deliveries and purges delivered ones past retention.
pub async fn dispatch(app: &App<'_>, request: Request) -> Result<Response, ApiError> {
    events::authorize_dispatch(&request).await?;
    let outbox = app.outbox.dispatch(app.ctx, &app.db, &app.service).await?;
    Ok(json(StatusCode::OK, &json!({ "outbox": outbox })))
}
