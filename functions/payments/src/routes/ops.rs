//! Routes for other components and for the scheduler, not for clients:
//! `POST /internal/payments/events` (service token: profiles' user events)
//! and `POST /ops/payments/dispatch` (scheduler token).

use serde_json::json;
use shared::ApiError;
use shared::events;
use shared::http::{Response, json};
use spin_sdk::http::{Request, StatusCode};

use crate::app::App;
use crate::events::ReadModel;
use crate::settle::{self, Outcome};
use crate::routes::refunds;
use crate::{idempotency, store};

/// The maximum number of top-ups one dispatch run checks with the provider.
const CHECK_BATCH: u32 = 20;
/// How long a run's claim on a top-up lasts.
const CHECK_LEASE_MICROS: i64 = 60 * 1_000_000;

pub async fn receive(app: &App<'_>, request: Request) -> Result<Response, ApiError> {
    let model = ReadModel { kv: &app.kv };
    events::receive(&app.db, &app.service, &model, request).await
}

/// Retries pending event deliveries, re-checks open top-ups and pending
/// refunds with the provider (a webhook may be lost), continues an
/// unfinished resync, and purges what is past retention.
pub async fn dispatch(app: &App<'_>, request: Request) -> Result<Response, ApiError> {
    events::authorize_dispatch(&request).await?;
    let outbox = app.outbox.dispatch(app.ctx, &app.db, &app.service).await?;
    let model = ReadModel { kv: &app.kv };
    let inbox = events::dispatch_inbox(app.ctx, &app.db, &app.service, &model).await?;
    let top_ups = recheck_top_ups(app).await?;
    let refunds = recheck_refunds(app).await?;
    idempotency::purge(&app.db, 1000).await?;
    Ok(json(StatusCode::OK, &json!({ "outbox": outbox, "inbox": inbox, "top_ups": top_ups, "refunds": refunds })))
}

/// Claims due top-ups in a short transaction, then fetches each from the
/// provider; one still open is checked again after `recheck_after_seconds`.
async fn recheck_top_ups(app: &App<'_>) -> Result<serde_json::Value, ApiError> {
    let now = shared::time::now_micros();
    let claimed = app.db.transaction(async |tx| Ok(store::claim_checks(tx, now, CHECK_LEASE_MICROS, CHECK_BATCH).await?)).await?;
    let (mut changed, mut failed) = (0, 0);
    for id in &claimed {
        let Some(payment) = store::payment(&app.db, id).await? else { continue };
        let Some(provider_id) = payment.provider_payment_id.as_deref() else { continue };
        match settle::check(app, id, provider_id).await {
            Ok(Outcome::Settled) => changed += 1,
            Ok(Outcome::Unchanged) => {
                let next = shared::time::now_micros() + app.recheck_after_seconds * 1_000_000;
                store::check_later(&app.db, id, next).await?;
            }
            Err(error) => {
                failed += 1;
                app.ctx.note_error(format!("re-checking a top-up failed: {error}"));
            }
        }
    }
    Ok(json!({ "checked": claimed.len(), "changed": changed, "failed": failed }))
}

/// Claims pending top-up refunds due for a check, then fetches each from
/// the provider and settles those it finished.
async fn recheck_refunds(app: &App<'_>) -> Result<serde_json::Value, ApiError> {
    let now = shared::time::now_micros();
    let claimed = app
        .db
        .transaction(async |tx| Ok(store::claim_refund_checks(tx, now, CHECK_LEASE_MICROS, CHECK_BATCH).await?))
        .await?;
    let (mut changed, mut failed) = (0, 0);
    for id in &claimed {
        match refunds::check(app, id).await {
            Ok(true) => changed += 1,
            Ok(false) => {
                let next = shared::time::now_micros() + app.recheck_after_seconds * 1_000_000;
                store::refund_check_later(&app.db, id, next).await?;
            }
            Err(error) => {
                failed += 1;
                app.ctx.note_error(format!("re-checking a refund failed: {error}"));
            }
        }
    }
    Ok(json!({ "checked": claimed.len(), "changed": changed, "failed": failed }))
}
