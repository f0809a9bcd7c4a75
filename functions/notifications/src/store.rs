//! The inbox's SQL: notifications and their unread counts, and the read
//! models of profiles' users and addresses. Each function runs one statement
//! unless its comment states otherwise.
//!
//! Lock order: every transaction that changes a user's notifications first
//! locks that user's `unread_counts` row ([`lock_count`]), then the
//! notifications. So marking read, reading all, a new notification and a
//! removed one queue on one row instead of deadlocking.

use serde_json::{Value, json};
use shared::db::{DbError, Row, Statements};
use shared::params;

/// A notification as the API shows it.
pub struct Notification {
    pub id: String,
    pub kind: String,
    pub actor_username: Option<String>,
    pub data: Value,
    pub created_at: i64,
    pub read_at: Option<i64>,
}

impl Notification {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        let data: String = row.get("data")?;
        Ok(Self {
            id: row.get("id")?,
            kind: row.get("type")?,
            actor_username: row.get("actor_username")?,
            data: serde_json::from_str(&data).map_err(|_| DbError::decode("notification data is not JSON".into()))?,
            created_at: row.get("created_at")?,
            read_at: row.get("read_at")?,
        })
    }

    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "type": self.kind,
            "read": self.read_at.is_some(),
            "created_at": shared::time::rfc3339(self.created_at),
            "actor": self.actor_username.as_ref().map(|username| json!({ "username": username })),
            "data": self.data,
        })
    }
}

const COLUMNS: &str = "n.id, n.type, u.username AS actor_username, n.data, n.created_at, n.read_at
    FROM notifications n LEFT JOIN users u ON u.id = n.actor_id";

/// Reads up to `limit` of a user's notifications, newest first, after `after`.
pub async fn page(
    db: &impl Statements,
    user_id: &str,
    unread_only: bool,
    after: Option<&shared::query::Cursor>,
    limit: u32,
) -> Result<Vec<Notification>, DbError> {
    let mut statement = format!("SELECT {COLUMNS} WHERE n.user_id = ?");
    let mut values = params![user_id];
    if unread_only {
        statement.push_str(" AND n.read_at IS NULL");
    }
    if let Some(after) = after {
        statement.push_str(" AND (n.created_at < ? OR (n.created_at = ? AND n.id < ?))");
        values.extend(params![after.created_at, after.created_at, after.id.as_str()]);
    }
    statement.push_str(" ORDER BY n.created_at DESC, n.id DESC LIMIT ?");
    values.extend(params![limit]);
    db.query(&statement, values).await?.iter().map(Notification::from_row).collect()
}

pub async fn by_id(db: &impl Statements, user_id: &str, id: &str) -> Result<Option<Notification>, DbError> {
    let statement = format!("SELECT {COLUMNS} WHERE n.id = ? AND n.user_id = ?");
    db.query_one(&statement, params![id, user_id]).await?.as_ref().map(Notification::from_row).transpose()
}

/// Reads a user's unread count; 0 for a user without a row.
pub async fn unread_count(db: &impl Statements, user_id: &str) -> Result<i64, DbError> {
    let row = db.query_one("SELECT unread FROM unread_counts WHERE user_id = ?", params![user_id]).await?;
    Ok(row.map(|row| row.get("unread")).transpose()?.unwrap_or(0))
}

/// Locks a user's count row, creating it when missing, and returns the
/// count (two statements). The upsert takes the exclusive lock at once, so
/// two transactions never both hold a shared lock they then upgrade.
pub async fn lock_count(db: &impl Statements, user_id: &str) -> Result<i64, DbError> {
    db.execute(
        "INSERT INTO unread_counts (user_id, unread) VALUES (?, 0) ON DUPLICATE KEY UPDATE unread = unread",
        params![user_id],
    )
    .await?;
    unread_count(db, user_id).await
}

pub async fn add_to_count(db: &impl Statements, user_id: &str, delta: i64) -> Result<(), DbError> {
    db.execute("UPDATE unread_counts SET unread = unread + ? WHERE user_id = ?", params![delta, user_id]).await
}

/// A notification to store.
pub struct NewNotification<'a> {
    pub user_id: &'a str,
    pub kind: &'a str,
    pub actor_id: Option<&'a str>,
    pub source: &'a str,
    pub data: &'a Value,
    pub now: i64,
}

pub async fn insert(db: &impl Statements, notification: &NewNotification<'_>) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO notifications (id, user_id, type, actor_id, source, data, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        params![
            shared::ids::uuid_v7(),
            notification.user_id,
            notification.kind,
            notification.actor_id,
            notification.source,
            notification.data.to_string(),
            notification.now
        ],
    )
    .await
}

/// Returns who received notifications from `source` (an event's aggregate).
pub async fn recipients_of(db: &impl Statements, source: &str) -> Result<Vec<String>, DbError> {
    let rows = db.query("SELECT user_id FROM notifications WHERE source = ?", params![source]).await?;
    rows.iter().map(|row| row.get("user_id")).collect()
}

/// Deletes the notification `source` gave `user_id` and returns whether it
/// was unread (two statements; the caller holds the user's count lock).
pub async fn remove(db: &impl Statements, user_id: &str, source: &str) -> Result<Option<bool>, DbError> {
    let row = db
        .query_one("SELECT read_at FROM notifications WHERE source = ? AND user_id = ? FOR UPDATE", params![source, user_id])
        .await?;
    let Some(row) = row else { return Ok(None) };
    let unread = row.get::<Option<i64>>("read_at")?.is_none();
    db.execute("DELETE FROM notifications WHERE source = ? AND user_id = ?", params![source, user_id]).await?;
    Ok(Some(unread))
}

/// Locks one of the user's notifications and returns whether it is unread;
/// `None` when the user has no such notification.
pub async fn lock_one(db: &impl Statements, user_id: &str, id: &str) -> Result<Option<bool>, DbError> {
    let row = db
        .query_one("SELECT read_at FROM notifications WHERE id = ? AND user_id = ? FOR UPDATE", params![id, user_id])
        .await?;
    row.map(|row| Ok(row.get::<Option<i64>>("read_at")?.is_none())).transpose()
}

pub async fn mark_read(db: &impl Statements, id: &str, now: i64) -> Result<(), DbError> {
    db.execute("UPDATE notifications SET read_at = ? WHERE id = ? AND read_at IS NULL", params![now, id]).await
}

/// Marks every unread notification of a user read and sets the count to 0
/// (two statements; the caller holds the count lock).
pub async fn mark_all_read(db: &impl Statements, user_id: &str, now: i64) -> Result<(), DbError> {
    db.execute("UPDATE notifications SET read_at = ? WHERE user_id = ? AND read_at IS NULL", params![now, user_id])
        .await?;
    db.execute("UPDATE unread_counts SET unread = 0 WHERE user_id = ?", params![user_id]).await
}

// ---- read models of profiles' users and addresses ----

pub async fn upsert_user(db: &impl Statements, id: &str, username: &str, now: i64) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO users (id, username, updated_at) VALUES (?, ?, ?)
         ON DUPLICATE KEY UPDATE username = VALUES(username), updated_at = VALUES(updated_at)",
        params![id, username, now],
    )
    .await
}

pub async fn username(db: &impl Statements, id: &str) -> Result<Option<String>, DbError> {
    let row = db.query_one("SELECT username FROM users WHERE id = ?", params![id]).await?;
    row.map(|row| row.get("username")).transpose()
}

/// Removes everything a deleted user had here: their name, address,
/// notifications, count, choices and unsent emails (six statements).
pub async fn forget_user(db: &impl Statements, id: &str) -> Result<(), DbError> {
    for table in ["users WHERE id", "addresses WHERE user_id", "notifications WHERE user_id", "unread_counts WHERE user_id", "preferences WHERE user_id"] {
        db.execute(&format!("DELETE FROM {table} = ?"), params![id]).await?;
    }
    db.execute("DELETE FROM emails WHERE user_id = ? AND status = 'pending'", params![id]).await
}

pub async fn upsert_address(db: &impl Statements, user_id: &str, email: &str, verified: bool, now: i64) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO addresses (user_id, email, verified, updated_at) VALUES (?, ?, ?, ?)
         ON DUPLICATE KEY UPDATE email = VALUES(email), verified = VALUES(verified), updated_at = VALUES(updated_at)",
        params![user_id, email, verified, now],
    )
    .await
}

pub async fn delete_address(db: &impl Statements, user_id: &str) -> Result<(), DbError> {
    db.execute("DELETE FROM addresses WHERE user_id = ?", params![user_id]).await
}

/// Returns a user's address when it is verified.
pub async fn verified_address(db: &impl Statements, user_id: &str) -> Result<Option<String>, DbError> {
    let row = db.query_one("SELECT email FROM addresses WHERE user_id = ? AND verified = 1", params![user_id]).await?;
    row.map(|row| row.get("email")).transpose()
}

/// Checks whether profiles deleted the user (a tombstone in `aggregate_state`).
pub async fn user_deleted(db: &impl Statements, user_id: &str) -> Result<bool, DbError> {
    let row = db
        .query_one(
            "SELECT deleted FROM aggregate_state WHERE producer = 'profiles' AND aggregate_type = 'user' AND aggregate_id = ?",
            params![user_id],
        )
        .await?;
    Ok(row.map(|row| row.get::<bool>("deleted")).transpose()?.unwrap_or(false))
}

/// Returns up to `limit` users who have notifications created before `cutoff`.
pub async fn users_with_old(db: &impl Statements, cutoff: i64, limit: u32) -> Result<Vec<String>, DbError> {
    let rows = db
        .query("SELECT DISTINCT user_id FROM notifications WHERE created_at < ? LIMIT ?", params![cutoff, limit])
        .await?;
    rows.iter().map(|row| row.get("user_id")).collect()
}

/// Deletes a user's notifications created before `cutoff` and lowers the
/// count by the unread ones among them (five statements). Returns how many went.
pub async fn purge_user(db: &impl Statements, user_id: &str, cutoff: i64) -> Result<u32, DbError> {
    lock_count(db, user_id).await?;
    let rows = db
        .query(
            "SELECT read_at FROM notifications WHERE user_id = ? AND created_at < ? FOR UPDATE",
            params![user_id, cutoff],
        )
        .await?;
    let mut unread = 0;
    for row in &rows {
        unread += i64::from(row.get::<Option<i64>>("read_at")?.is_none());
    }
    db.execute("DELETE FROM notifications WHERE user_id = ? AND created_at < ?", params![user_id, cutoff]).await?;
    add_to_count(db, user_id, -unread).await?;
    Ok(rows.len() as u32)
}
