//! The statements on payments and users, outside the ledger (`ledger.rs`),
//! idempotency keys (`idempotency.rs`) and the outbox (`shared::events`).
//! Each function runs one statement.

use serde_json::{Value, json};
use shared::db::{DbError, Row, Statements};
use shared::params;

/// The states a payment moves through. Only `pending` changes; the rest are final.
pub const PENDING: &str = "pending";

/// A payment as its owner sees it.
#[derive(Debug, Clone)]
pub struct Payment {
    pub id: String,
    pub kind: String,
    pub user_id: String,
    pub status: String,
    pub amount_minor: i64,
    pub currency: String,
    pub provider_payment_id: Option<String>,
    pub checkout_url: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str =
    "id, kind, user_id, status, amount_minor, currency, provider_payment_id, checkout_url, created_at, updated_at";

impl Payment {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        Ok(Self {
            id: row.get("id")?,
            kind: row.get("kind")?,
            user_id: row.get("user_id")?,
            status: row.get("status")?,
            amount_minor: row.get("amount_minor")?,
            currency: row.get("currency")?,
            provider_payment_id: row.get("provider_payment_id")?,
            checkout_url: row.get("checkout_url")?,
            created_at: row.get("created_at")?,
            updated_at: row.get("updated_at")?,
        })
    }

    /// Renders the payment for the API, with the checkout link only while it is pending.
    pub fn to_json(&self) -> Value {
        let mut value = json!({
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "amount_minor": self.amount_minor,
            "currency": self.currency,
            "created_at": shared::time::rfc3339(self.created_at),
            "updated_at": shared::time::rfc3339(self.updated_at),
        });
        if self.status == PENDING
            && let Some(url) = &self.checkout_url
        {
            value["checkout_url"] = url.as_str().into();
        }
        value
    }
}

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
    let statement = format!("SELECT {COLUMNS} FROM payments WHERE id = ?");
    db.query_one(&statement, params![id]).await?.as_ref().map(Payment::from_row).transpose()
}

pub async fn lock_payment(db: &impl Statements, id: &str) -> Result<Option<Payment>, DbError> {
    let statement = format!("SELECT {COLUMNS} FROM payments WHERE id = ? FOR UPDATE");
    db.query_one(&statement, params![id]).await?.as_ref().map(Payment::from_row).transpose()
}

pub async fn payment_by_provider_id(db: &impl Statements, provider_payment_id: &str) -> Result<Option<Payment>, DbError> {
    let statement = format!("SELECT {COLUMNS} FROM payments WHERE provider_payment_id = ?");
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
        Some((created_at, id)) => ("AND (created_at, id) < (?, ?)", params![user_id, created_at, id]),
        None => ("", params![user_id]),
    };
    let statement = format!(
        "SELECT {COLUMNS} FROM payments
         WHERE user_id = ? {condition} AND (kind <> 'top_up' OR provider_payment_id IS NOT NULL)
         ORDER BY created_at DESC, id DESC LIMIT ?"
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
