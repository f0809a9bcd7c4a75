//! Applying the provider's state of a top-up: the webhook and the
//! dispatch re-check both end here. A pending top-up that the provider
//! reports paid credits the wallet in the same transaction that marks it
//! paid and records its event. The payment row is locked and only a pending
//! row changes, so a webhook delivered many times, or together with a
//! re-check, credits once.

use shared::ApiError;

use crate::app::App;
use crate::events;
use crate::ledger::{self, Side};
use crate::provider::{PaymentProvider, ProviderPayment, ProviderStatus};
use crate::store::{self, PENDING};

/// The effect of applying the provider's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The top-up reached a final status now.
    Settled,
    /// Still open at the provider, or already final here.
    Unchanged,
}

/// Fetches a top-up from the provider and applies its state.
pub async fn check(app: &App<'_>, payment_id: &str, provider_id: &str) -> Result<Outcome, ApiError> {
    let remote = app.provider.payment(provider_id).await?;
    apply(app, payment_id, &remote).await
}

/// Applies the provider's view of a top-up to the pending payment row.
pub async fn apply(app: &App<'_>, payment_id: &str, remote: &ProviderPayment) -> Result<Outcome, ApiError> {
    let status = match remote.status {
        ProviderStatus::Open => return Ok(Outcome::Unchanged),
        ProviderStatus::Paid => "paid",
        ProviderStatus::Failed => "failed",
        ProviderStatus::Expired => "expired",
        ProviderStatus::Canceled => "canceled",
    };
    let event = app
        .db
        .transaction(async |tx| {
            let Some(payment) = store::lock_payment(tx, payment_id).await? else { return Ok(None) };
            if payment.status != PENDING || payment.provider_payment_id.as_deref() != Some(remote.id.as_str()) {
                return Ok(None);
            }
            if status == "paid" {
                if remote.amount_minor != payment.amount_minor || remote.currency != payment.currency {
                    // Never credit an amount other than the one the user started.
                    return Err(ApiError::Internal(anyhow::anyhow!("the provider reports another amount for payment {}", payment.id)));
                }
                let credited = ledger::transfer(
                    tx,
                    "top_up",
                    &payment.id,
                    Side { kind: ledger::PROVIDER_CLEARING, user_id: "" },
                    Side { kind: ledger::WALLET, user_id: &payment.user_id },
                    payment.amount_minor,
                    &payment.currency,
                )
                .await?;
                debug_assert!(credited, "the clearing account is not a wallet and cannot run out");
            }
            store::settle(tx, &payment.id, status).await?;
            Ok(Some(events::top_up_settled(&app.outbox, tx, &payment, status).await?))
        })
        .await?;
    match event {
        Some(event) => {
            app.publish(&[event]).await;
            Ok(Outcome::Settled)
        }
        None => Ok(Outcome::Unchanged),
    }
}
