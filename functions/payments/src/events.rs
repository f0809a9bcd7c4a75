//! The events payments consumes and publishes.
//!
//! **Consumed** from profiles: `user.*` keeps the `users` read model (who
//! may receive money, by name) and the token versions (`shared::revocation`).
//!
//! **Published** through the outbox, for notifications, in the transaction
//! that moves the money, all on the `payment` aggregate (id = the payment id):
//! - `top_up.succeeded` and `top_up.failed`, payload
//!   `{payment_id, user_id, amount_minor, currency, status}`;
//! - `tip.received`, payload `{payment_id, from_user_id, to_user_id,
//!   amount_minor, currency, article_slug, message}`.

use serde::Deserialize;
use serde_json::json;
use shared::ApiError;
use shared::db::{DbError, Tx};
use shared::events::{Event, Outbox, Projection};
use shared::kv::Kv;
use shared::revocation;

use crate::store::{self, NewTip, Payment};

pub const USER_EVENTS: (&str, &str) = revocation::USER_EVENTS;
pub const PAYMENT: &str = "payment";

#[derive(Deserialize)]
struct UserPayload {
    id: String,
    username: String,
}

/// Payments' read model of profiles' users.
pub struct ReadModel<'a> {
    pub kv: &'a Kv,
}

impl Projection for ReadModel<'_> {
    fn subscriptions(&self) -> &'static [(&'static str, &'static str)] {
        &[USER_EVENTS]
    }

    async fn apply(&self, tx: &Tx<'_>, event: &Event) -> Result<(), ApiError> {
        revocation::apply(tx, event).await?;
        if event.is_deletion() {
            store::delete_user(tx, &event.aggregate_id).await?;
            return Ok(());
        }
        let user: UserPayload = serde_json::from_value(event.payload.clone())
            .map_err(|_| ApiError::invalid("payload", format!("is not a valid `{}` payload", event.kind)))?;
        if user.id != event.aggregate_id {
            return Err(ApiError::invalid("payload", "names another user than the aggregate"));
        }
        let key = shared::text::normalised_key(&user.username);
        store::upsert_user(tx, &user.id, &user.username, &key, shared::time::now_micros()).await?;
        Ok(())
    }

    async fn applied(&self, event: &Event) {
        revocation::cache(self.kv, event).await;
    }
}

/// Records `top_up.succeeded` (status `paid`) or `top_up.failed` (any other final status).
pub async fn top_up_settled(outbox: &Outbox, tx: &Tx<'_>, payment: &Payment, status: &str) -> Result<Event, DbError> {
    let kind = if status == "paid" { "top_up.succeeded" } else { "top_up.failed" };
    let payload = json!({
        "payment_id": payment.id,
        "user_id": payment.user_id,
        "amount_minor": payment.amount_minor,
        "currency": payment.currency,
        "status": status,
    });
    outbox.record(tx, kind, PAYMENT, &payment.id, payload).await
}

pub async fn tip_received(outbox: &Outbox, tx: &Tx<'_>, tip: &NewTip<'_>) -> Result<Event, DbError> {
    let payload = json!({
        "payment_id": tip.id,
        "from_user_id": tip.from,
        "to_user_id": tip.to,
        "amount_minor": tip.amount_minor,
        "currency": tip.currency,
        "article_slug": tip.article_slug,
        "message": tip.message,
    });
    outbox.record(tx, "tip.received", PAYMENT, tip.id, payload).await
}
