//! `GET /health/profiles`: `up` when a query succeeds, `down` otherwise.
//! The reason goes to the log line, never into the body.

use shared::db::Db;
use shared::http::{Ctx, Response, with_body};
use spin_sdk::http::StatusCode;

use crate::store;

pub async fn check(ctx: &Ctx) -> Response {
    let outcome = match shared::config::required_secret("db_url").await {
        Ok(url) => store::ping(&Db::new(url, ctx.stats.clone())).await.map_err(|e| e.to_string()),
        Err(error) => Err(error.to_string()),
    };
    match outcome {
        Ok(()) => shared::http::health_up(),
        Err(reason) => {
            ctx.note_error(reason);
            with_body(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "down")
        }
    }
}
