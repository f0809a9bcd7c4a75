//! `GET /health/profiles`: `up` when a query succeeds, `down` otherwise.
//! The reason goes to the log line, never into the body.

use shared::http::{Ctx, Response};

pub async fn check(ctx: &Ctx) -> Response {
    shared::platform::health(ctx).await
}
