//! The statements on payments and users, outside the ledger (`ledger.rs`),
//! idempotency keys (`idempotency.rs`) and the outbox (`shared::events`).
//! Each function runs one statement.

use serde_json::{Value, json};
use shared::db::{DbError, Row, Statements};
use shared::params;

/// The states a payment moves through. Only `pending` changes; the rest are final.
pub const PENDING: &str = "pending";

/// A payment with the usernames of both sides, as the API shows it.
#[derive(Debug, Clone)]
pub struct Payment {
    pub id: String,
    pub kind: String,
    /// The user who paid in (a top-up) or sent (a tip).
    pub user_id: String,
    /// A tip's recipient.
    pub counterparty_id: Option<String>,
    pub status: String,
    pub amount_minor: i64,
    pub currency: String,
    pub refunded_minor: i64,
    pub article_slug: Option<String>,
    pub message: Option<String>,
    pub provider_payment_id: Option<String>,
    pub checkout_url: Option<String>,
    pub username: Option<String>,
    pub counterparty_username: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "p.id, p.kind, p.user_id, p.counterparty_id, p.status, p.amount_minor, p.currency, p.refunded_minor,
    p.article_slug, p.message, p.provider_payment_id, p.checkout_url, p.created_at, p.updated_at,
    su.username AS username, cu.username AS counterparty_username";
const FROM: &str = "payments p LEFT JOIN users su ON su.id = p.user_id LEFT JOIN users cu ON cu.id = p.counterparty_id";

impl Payment {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        Ok(Self {
            id: row.get("id")?,
            kind: row.get("kind")?,
            user_id: row.get("user_id")?,
            counterparty_id: row.get("counterparty_id")?,
            status: row.get("status")?,
            amount_minor: row.get("amount_minor")?,
            currency: row.get("currency")?,
            refunded_minor: row.get("refunded_minor")?,
            article_slug: row.get("article_slug")?,
            message: row.get("message")?,
            provider_payment_id: row.get("provider_payment_id")?,
            checkout_url: row.get("checkout_url")?,
            username: row.get("username")?,
            counterparty_username: row.get("counterparty_username")?,
            created_at: row.get("created_at")?,
            updated_at: row.get("updated_at")?,
        })
    }

    /// Renders the payment for `viewer_id`: the checkout link only while a
    /// top-up is pending, and for a tip its direction and the other side's name.
    pub fn to_json(&self, viewer_id: &str) -> Value {
        let mut value = json!({
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "amount_minor": self.amount_minor,
            "currency": self.currency,
            "refunded_minor": self.refunded_minor,
            "created_at": shared::time::rfc3339(self.created_at),
            "updated_at": shared::time::rfc3339(self.updated_at),
        });
        if self.status == PENDING
            && let Some(url) = &self.checkout_url
        {
            value["checkout_url"] = url.as_str().into();
        }
        if self.kind == TIP {
            let received = self.counterparty_id.as_deref() == Some(viewer_id) && self.user_id != viewer_id;
            let other = if received { &self.username } else { &self.counterparty_username };
            value["direction"] = if received { "received" } else { "sent" }.into();
            value["counterparty"] = other.clone().map(Value::from).unwrap_or(Value::Null);
            if let Some(slug) = &self.article_slug {
                value["article_slug"] = slug.as_str().into();
            }
            if let Some(message) = &self.message {
                value["message"] = message.as_str().into();
            }
        }
        value
    }
}

pub const TIP: &str = "tip";

/// Inserts a top-up the provider has not confirmed yet. It stays out of the
/// owner's history until [`attach_provider_payment`] records the provider's id.
pub async fn insert_top_up(db: &impl Statements, id: &str, user_id: &str, amount_minor: i64, currency: &str, now: i64) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO payments (id, kind, user_id, status, amount_minor, currency, created_at, updated_at)
         VALUES (?, 'top_up', ?, 'pending', ?, ?, ?, ?)",
        params![id, user_id, amount_minor, currency, now, now],
    )
    .await
}

pub async fn attach_provider_payment(
    db: &impl Statements,
    id: &str,
    provider_payment_id: &str,
    checkout_url: Option<&str>,
    check_after: i64,
) -> Result<(), DbError> {
    db.execute(
        "UPDATE payments SET provider_payment_id = ?, checkout_url = ?, check_after = ?, updated_at = ? WHERE id = ?",
        params![provider_payment_id, checkout_url, check_after, shared::time::now_micros(), id],
    )
    .await
}

pub async fn payment(db: &impl Statements, id: &str) -> Result<Option<Payment>, DbError> {
    let statement = format!("SELECT {COLUMNS} FROM {FROM} WHERE p.id = ?");
    db.query_one(&statement, params![id]).await?.as_ref().map(Payment::from_row).transpose()
}

pub async fn lock_payment(db: &impl Statements, id: &str) -> Result<Option<Payment>, DbError> {
    let statement = format!("SELECT {COLUMNS} FROM {FROM} WHERE p.id = ? FOR UPDATE");
    db.query_one(&statement, params![id]).await?.as_ref().map(Payment::from_row).transpose()
}

pub async fn payment_by_provider_id(db: &impl Statements, provider_payment_id: &str) -> Result<Option<Payment>, DbError> {
    let statement = format!("SELECT {COLUMNS} FROM {FROM} WHERE p.provider_payment_id = ?");
    db.query_one(&statement, params![provider_payment_id]).await?.as_ref().map(Payment::from_row).transpose()
}

/// Sets a pending payment's final status.
pub async fn settle(db: &impl Statements, id: &str, status: &str) -> Result<(), DbError> {
    db.execute(
        "UPDATE payments SET status = ?, check_after = NULL, check_lease_until = 0, updated_at = ? WHERE id = ?",
        params![status, shared::time::now_micros(), id],
    )
    .await
}

/// Reads one page of a user's payments, newest first, after the cursor
/// position `(created_at, id)` when given. Top-ups the provider never
/// confirmed are left out.
pub async fn history(db: &impl Statements, user_id: &str, after: Option<(i64, &str)>, limit: u32) -> Result<Vec<Payment>, DbError> {
    let (condition, mut values) = match after {
        Some((created_at, id)) => ("AND (p.created_at, p.id) < (?, ?)", params![user_id, user_id, created_at, id]),
        None => ("", params![user_id, user_id]),
    };
    let statement = format!(
        "SELECT {COLUMNS} FROM {FROM}
         WHERE (p.user_id = ? OR p.counterparty_id = ?) {condition}
           AND (p.kind <> 'top_up' OR p.provider_payment_id IS NOT NULL)
         ORDER BY p.created_at DESC, p.id DESC LIMIT ?"
    );
    values.extend(params![limit]);
    db.query(&statement, values).await?.iter().map(Payment::from_row).collect()
}

/// Claims up to `batch` pending top-ups due for a check with the provider,
/// leasing them to this run for `lease_micros`: two statements, inside the
/// caller's transaction.
pub async fn claim_checks(db: &impl Statements, now: i64, lease_micros: i64, batch: u32) -> Result<Vec<String>, DbError> {
    let rows = db
        .query(
            "SELECT id FROM payments
             WHERE status = 'pending' AND provider_payment_id IS NOT NULL AND check_after <= ? AND check_lease_until <= ?
             ORDER BY check_after LIMIT ? FOR UPDATE SKIP LOCKED",
            params![now, now, batch],
        )
        .await?;
    let ids: Vec<String> = rows.iter().map(|row| row.get("id")).collect::<Result<_, _>>()?;
    if !ids.is_empty() {
        let statement = format!("UPDATE payments SET check_lease_until = ? WHERE id IN ({})", vec!["?"; ids.len()].join(", "));
        let mut values = params![now + lease_micros];
        values.extend(ids.iter().map(|id| shared::db::Param::from(id.as_str())));
        db.execute(&statement, values).await?;
    }
    Ok(ids)
}

/// Schedules the next check of a top-up still open at the provider.
pub async fn check_later(db: &impl Statements, id: &str, check_after: i64) -> Result<(), DbError> {
    db.execute(
        "UPDATE payments SET check_after = ?, check_lease_until = 0 WHERE id = ? AND status = 'pending'",
        params![check_after, id],
    )
    .await
}

// ---- users, from profiles' events ----

pub async fn upsert_user(db: &impl Statements, id: &str, username: &str, username_key: &str, now: i64) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO users (id, username, username_key, updated_at) VALUES (?, ?, ?, ?)
         ON DUPLICATE KEY UPDATE username = VALUES(username), username_key = VALUES(username_key), updated_at = VALUES(updated_at)",
        params![id, username, username_key, now],
    )
    .await
}

pub async fn delete_user(db: &impl Statements, id: &str) -> Result<(), DbError> {
    db.execute("DELETE FROM users WHERE id = ?", params![id]).await
}

/// Finds a user of the read model by normalised username key.
pub async fn user_by_key(db: &impl Statements, username_key: &str) -> Result<Option<(String, String)>, DbError> {
    let row = db.query_one("SELECT id, username FROM users WHERE username_key = ? ORDER BY updated_at DESC LIMIT 1", params![username_key]).await?;
    row.map(|row| Ok((row.get("id")?, row.get("username")?))).transpose()
}

/// A new tip, completed.
pub struct NewTip<'a> {
    pub id: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub amount_minor: i64,
    pub currency: &'a str,
    pub article_slug: Option<&'a str>,
    pub message: Option<&'a str>,
    pub now: i64,
}

pub async fn insert_tip(db: &impl Statements, tip: &NewTip<'_>) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO payments (id, kind, user_id, counterparty_id, status, amount_minor, currency, article_slug, message, created_at, updated_at)
         VALUES (?, 'tip', ?, ?, 'completed', ?, ?, ?, ?, ?, ?)",
        params![tip.id, tip.from, tip.to, tip.amount_minor, tip.currency, tip.article_slug, tip.message, tip.now, tip.now],
    )
    .await
}

// ---- refunds ----

/// A refund row.
#[derive(Debug, Clone)]
pub struct Refund {
    pub id: String,
    pub payment_id: String,
    pub amount_minor: i64,
    pub currency: String,
    pub status: String,
    pub provider_refund_id: Option<String>,
    pub created_at: i64,
}

impl Refund {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        Ok(Self {
            id: row.get("id")?,
            payment_id: row.get("payment_id")?,
            amount_minor: row.get("amount_minor")?,
            currency: row.get("currency")?,
            status: row.get("status")?,
            provider_refund_id: row.get("provider_refund_id")?,
            created_at: row.get("created_at")?,
        })
    }

    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "payment_id": self.payment_id,
            "amount_minor": self.amount_minor,
            "currency": self.currency,
            "status": self.status,
            "created_at": shared::time::rfc3339(self.created_at),
        })
    }
}

const REFUND_COLUMNS: &str = "id, payment_id, amount_minor, currency, status, provider_refund_id, created_at";

pub async fn insert_refund(db: &impl Statements, refund: &Refund, actor_id: &str) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO refunds (id, payment_id, amount_minor, currency, status, actor_id, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        params![&refund.id, &refund.payment_id, refund.amount_minor, &refund.currency, &refund.status, actor_id, refund.created_at, refund.created_at],
    )
    .await
}

/// Sums the refunds of a payment still waiting for the provider.
pub async fn pending_refunds(db: &impl Statements, payment_id: &str) -> Result<i64, DbError> {
    let row = db
        .query_one(
            "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS SIGNED) AS total FROM refunds WHERE payment_id = ? AND status = 'pending'",
            params![payment_id],
        )
        .await?;
    Ok(row.map(|row| row.get("total")).transpose()?.unwrap_or(0))
}

pub async fn lock_refund(db: &impl Statements, id: &str) -> Result<Option<Refund>, DbError> {
    let statement = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE id = ? FOR UPDATE");
    db.query_one(&statement, params![id]).await?.as_ref().map(Refund::from_row).transpose()
}

pub async fn refund(db: &impl Statements, id: &str) -> Result<Option<Refund>, DbError> {
    let statement = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE id = ?");
    db.query_one(&statement, params![id]).await?.as_ref().map(Refund::from_row).transpose()
}

pub async fn attach_provider_refund(db: &impl Statements, id: &str, provider_refund_id: &str, check_after: i64) -> Result<(), DbError> {
    db.execute(
        "UPDATE refunds SET provider_refund_id = ?, check_after = ?, updated_at = ? WHERE id = ?",
        params![provider_refund_id, check_after, shared::time::now_micros(), id],
    )
    .await
}

/// Sets a refund's final status.
pub async fn settle_refund(db: &impl Statements, id: &str, status: &str) -> Result<(), DbError> {
    db.execute(
        "UPDATE refunds SET status = ?, check_after = NULL, check_lease_until = 0, updated_at = ? WHERE id = ?",
        params![status, shared::time::now_micros(), id],
    )
    .await
}

/// Adds a completed refund to its payment, and marks the payment
/// `refunded` once nothing is left, `partially_refunded` before.
pub async fn add_refunded(db: &impl Statements, payment_id: &str, amount_minor: i64) -> Result<(), DbError> {
    db.execute(
        "UPDATE payments SET refunded_minor = refunded_minor + ?,
                status = IF(refunded_minor = amount_minor, 'refunded', 'partially_refunded'), updated_at = ?
         WHERE id = ?",
        params![amount_minor, shared::time::now_micros(), payment_id],
    )
    .await
}

/// Claims pending top-up refunds due for a check with the provider: two
/// statements, inside the caller's transaction.
pub async fn claim_refund_checks(db: &impl Statements, now: i64, lease_micros: i64, batch: u32) -> Result<Vec<String>, DbError> {
    let rows = db
        .query(
            "SELECT id FROM refunds
             WHERE status = 'pending' AND provider_refund_id IS NOT NULL AND check_after <= ? AND check_lease_until <= ?
             ORDER BY check_after LIMIT ? FOR UPDATE SKIP LOCKED",
            params![now, now, batch],
        )
        .await?;
    let ids: Vec<String> = rows.iter().map(|row| row.get("id")).collect::<Result<_, _>>()?;
    if !ids.is_empty() {
        let statement = format!("UPDATE refunds SET check_lease_until = ? WHERE id IN ({})", vec!["?"; ids.len()].join(", "));
        let mut values = params![now + lease_micros];
        values.extend(ids.iter().map(|id| shared::db::Param::from(id.as_str())));
        db.execute(&statement, values).await?;
    }
    Ok(ids)
}

pub async fn refund_check_later(db: &impl Statements, id: &str, check_after: i64) -> Result<(), DbError> {
    db.execute(
        "UPDATE refunds SET check_after = ?, check_lease_until = 0 WHERE id = ? AND status = 'pending'",
        params![check_after, id],
    )
    .await
}

/// Appends to the admin audit log.
pub async fn audit(db: &impl Statements, actor: &str, action: &str, payment_id: &str, amount_minor: i64, currency: &str) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO admin_audit (id, actor, action, payment_id, amount_minor, currency, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        params![shared::ids::uuid_v7(), actor, action, payment_id, amount_minor, currency, shared::time::now_micros()],
    )
    .await
}
