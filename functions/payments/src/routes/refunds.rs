//! `POST /api/payments/:id/refund` (admin): gives back part or all of a
//! payment, `{"refund": {"amount_minor": n}}`, or the rest when no amount is
//! given. The payment row is locked first, so refunds of one payment run one
//! at a time and their total never exceeds the original.
//!
//! - A tip is reversed at once from the recipient's wallet to the sender's.
//!   When the recipient's wallet lacks the amount, the refund gets 409 and
//!   nothing changes.
//! - A top-up's amount first moves from the user's wallet into the
//!   `refunds_pending` account (409 when the wallet lacks it), then the
//!   provider's refund API is called. The refund stays pending until a
//!   dispatch run finds it refunded (the money leaves through the clearing
//!   account) or failed (the money goes back to the wallet). A provider
//!   outage while asking is a 503, and the money goes back at once.
//!
//! Every accepted refund is appended to `admin_audit`.

use serde_json::{Value, json};
use shared::ApiError;
use shared::auth::{ROLE_ADMIN, require_role};
use shared::http::{Response, json as json_response, no_store, read_json};
use shared::money::Currency;
use spin_sdk::http::{Request, StatusCode};

use crate::app::App;
use crate::ledger::{self, Side};
use crate::provider::{PaymentProvider, ProviderError, RefundStatus};
use crate::store::{self, Payment, Refund};

/// Reads the optional amount of `{"refund": {"amount_minor": n}}`; `{}` and
/// `{"refund": {}}` ask for everything that is left.
fn read_amount(body: &Value) -> Result<Option<i64>, ApiError> {
    if body.as_object().is_some_and(|map| map.is_empty()) {
        return Ok(None);
    }
    let mut fields = shared::json::wrapped(body, "refund")?;
    fields.reject_unknown(&["amount_minor"]);
    let amount = match body["refund"].get("amount_minor") {
        None | Some(Value::Null) => None,
        Some(value) => {
            let amount = value.as_i64().filter(|n| *n >= 1);
            if amount.is_none() {
                fields.errors.add("amount_minor", "must be a whole number of minor units of at least 1");
            }
            amount
        }
    };
    fields.finish()?;
    Ok(amount)
}

fn insufficient(wallet_owner: &str) -> ApiError {
    ApiError::Conflict(format!("{wallet_owner} wallet lacks the amount to refund; nothing was changed"))
}

pub async fn create(app: &App<'_>, request: Request, id: &str) -> Result<Response, ApiError> {
    let caller = app.caller(request.headers()).await?;
    require_role(&caller, ROLE_ADMIN)?;
    let not_found = || ApiError::NotFound("payment not found".into());
    if !shared::ids::is_uuid(id) {
        return Err(not_found());
    }
    let requested = read_amount(&read_json(request, shared::http::DEFAULT_BODY_LIMIT).await?)?;

    let now = shared::time::now_micros();
    let refund = app
        .db
        .transaction(async |tx| {
            let payment = store::lock_payment(tx, id).await?.ok_or_else(not_found)?;
            // A fully refunded payment passes here and fails on the amount below.
            let refundable_status = match payment.kind.as_str() {
                store::TIP => matches!(payment.status.as_str(), "completed" | "partially_refunded" | "refunded"),
                _ => matches!(payment.status.as_str(), "paid" | "partially_refunded" | "refunded"),
            };
            if !refundable_status {
                return Err(ApiError::invalid("payment", format!("is {}; only a paid top-up or a completed tip can be refunded", payment.status)));
            }
            let pending = store::pending_refunds(tx, &payment.id).await?;
            let left = payment.amount_minor - payment.refunded_minor - pending;
            let amount = requested.unwrap_or(left);
            if left <= 0 || amount > left {
                return Err(ApiError::invalid("amount_minor", format!("exceeds the {left} minor units left to refund")));
            }
            let refund = Refund {
                id: shared::ids::uuid_v7(),
                payment_id: payment.id.clone(),
                amount_minor: amount,
                currency: payment.currency.clone(),
                status: if payment.kind == store::TIP { "completed" } else { "pending" }.into(),
                provider_refund_id: None,
                created_at: now,
            };
            if payment.kind == store::TIP {
                reverse_tip(tx, &payment, &refund).await?;
                store::audit(tx, &caller.user_id, "refund", &payment.id, amount, &payment.currency).await?;
            } else {
                let moved_to_pending = ledger::transfer(
                    tx,
                    "refund_hold",
                    &payment.id,
                    Side { kind: ledger::WALLET, user_id: &payment.user_id },
                    Side { kind: ledger::REFUNDS_PENDING, user_id: "" },
                    amount,
                    &payment.currency,
                )
                .await?;
                if !moved_to_pending {
                    return Err(insufficient("the user's"));
                }
            }
            store::insert_refund(tx, &refund, &caller.user_id).await?;
            Ok((payment, refund))
        })
        .await?;

    let (payment, mut refund) = refund;
    if payment.kind != store::TIP {
        refund.provider_refund_id = Some(ask_provider(app, &payment, &refund, &caller.user_id).await?);
    }
    Ok(no_store(json_response(StatusCode::CREATED, &json!({ "refund": refund.to_json() }))))
}

/// Moves a tip's refund from the recipient back to the sender and counts it.
async fn reverse_tip(tx: &shared::db::Tx<'_>, payment: &Payment, refund: &Refund) -> Result<(), ApiError> {
    let recipient = payment.counterparty_id.as_deref().unwrap_or_default();
    let moved = ledger::transfer(
        tx,
        "tip_refund",
        &payment.id,
        Side { kind: ledger::WALLET, user_id: recipient },
        Side { kind: ledger::WALLET, user_id: &payment.user_id },
        refund.amount_minor,
        &payment.currency,
    )
    .await?;
    if !moved {
        return Err(insufficient("the recipient's"));
    }
    store::add_refunded(tx, &payment.id, refund.amount_minor).await?;
    Ok(())
}

/// Asks the provider to refund a top-up and records its refund id, with
/// the audit row. When the provider cannot be asked, the held money goes
/// back to the wallet and the refund is marked failed.
async fn ask_provider(app: &App<'_>, payment: &Payment, refund: &Refund, actor: &str) -> Result<String, ApiError> {
    let currency = Currency::from_code(&payment.currency)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("payment {} has an unsupported currency", payment.id)))?;
    let provider_id = payment.provider_payment_id.as_deref().unwrap_or_default();
    match app.provider.create_refund(provider_id, refund.amount_minor, currency, &refund.id).await {
        Ok(remote) => {
            let check_after = shared::time::now_micros() + app.recheck_after_seconds * 1_000_000;
            app.db
                .transaction(async |tx| {
                    store::attach_provider_refund(tx, &refund.id, &remote.id, check_after).await?;
                    store::audit(tx, actor, "refund", &payment.id, refund.amount_minor, &payment.currency).await?;
                    Ok(())
                })
                .await?;
            Ok(remote.id)
        }
        Err(error) => {
            release_hold(app, &refund.id).await?;
            Err(match error {
                ProviderError::Unavailable(_) => error.into(),
                ProviderError::Rejected(reason) => ApiError::Conflict(format!("the payment provider rejected the refund ({reason})")),
            })
        }
    }
}

/// Ends a pending top-up refund as failed and returns the held money to the
/// wallet. Does nothing to a refund no longer pending.
pub async fn release_hold(app: &App<'_>, refund_id: &str) -> Result<(), ApiError> {
    app.db
        .transaction(async |tx| {
            let Some(refund) = store::lock_refund(tx, refund_id).await? else { return Ok(()) };
            if refund.status != "pending" {
                return Ok(());
            }
            let payment = store::payment(tx, &refund.payment_id).await?.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("refund without payment")))?;
            ledger::transfer(
                tx,
                "refund_release",
                &payment.id,
                Side { kind: ledger::REFUNDS_PENDING, user_id: "" },
                Side { kind: ledger::WALLET, user_id: &payment.user_id },
                refund.amount_minor,
                &refund.currency,
            )
            .await?;
            store::settle_refund(tx, &refund.id, "failed").await?;
            Ok(())
        })
        .await
}

/// Completes a top-up refund the provider paid out: the held money leaves
/// through the clearing account, and the payment counts it.
pub async fn complete(app: &App<'_>, refund_id: &str) -> Result<(), ApiError> {
    app.db
        .transaction(async |tx| {
            let Some(refund) = store::lock_refund(tx, refund_id).await? else { return Ok(()) };
            if refund.status != "pending" {
                return Ok(());
            }
            ledger::transfer(
                tx,
                "refund_payout",
                &refund.payment_id,
                Side { kind: ledger::REFUNDS_PENDING, user_id: "" },
                Side { kind: ledger::PROVIDER_CLEARING, user_id: "" },
                refund.amount_minor,
                &refund.currency,
            )
            .await?;
            store::settle_refund(tx, &refund.id, "completed").await?;
            store::add_refunded(tx, &refund.payment_id, refund.amount_minor).await?;
            Ok(())
        })
        .await
}

/// Fetches a pending top-up refund from the provider and settles it when
/// the provider reached a final state. Returns whether it did.
pub async fn check(app: &App<'_>, refund_id: &str) -> Result<bool, ApiError> {
    let Some(refund) = store::refund(&app.db, refund_id).await? else { return Ok(false) };
    let Some(payment) = store::payment(&app.db, &refund.payment_id).await? else { return Ok(false) };
    let (Some(provider_id), Some(remote_id)) = (payment.provider_payment_id.as_deref(), refund.provider_refund_id.as_deref()) else {
        return Ok(false);
    };
    match app.provider.refund(provider_id, remote_id).await?.status {
        RefundStatus::Pending => Ok(false),
        RefundStatus::Refunded => complete(app, refund_id).await.map(|()| true),
        RefundStatus::Failed => release_hold(app, refund_id).await.map(|()| true),
    }
}
