//! Idempotency keys for the routes that move money. A key is scoped to the
//! caller and the route, is at most 255 printable ASCII characters, and is
//! kept 24 hours. The request hash covers the method, the path and the body.
//!
//! - The same key with the same request returns the stored status and body.
//! - The same key with another request is a 422.
//! - While the first request still holds its lease, a second gets 409.
//! - Only 2xx and 4xx outcomes other than 409 and 429 are stored. A 5xx
//!   releases the lease, so the client may retry at once with the same key.

use serde_json::Value;
use sha2::{Digest, Sha256};
use shared::ApiError;
use shared::db::{Db, Statements};
use shared::http::Response;
use shared::params;
use spin_sdk::http::HeaderMap;

/// How long a request holds its key before another may take it over (a
/// request that died leaves its lease behind).
const LEASE_SECONDS: i64 = 30;
/// How long keys are kept.
pub const RETENTION_SECONDS: i64 = 24 * 3600;
pub const HEADER: &str = "idempotency-key";
const KEY_MAX: usize = 255;
const SECOND: i64 = 1_000_000;

/// Reads the `Idempotency-Key` header: required, one value, 1 to 255
/// printable ASCII characters (0x21 to 0x7E).
pub fn key_of(headers: &HeaderMap) -> Result<String, ApiError> {
    let mut values = headers.get_all(HEADER).iter();
    let missing = || ApiError::BadRequest("this route needs an Idempotency-Key header".into());
    let value = values.next().ok_or_else(missing)?;
    if values.next().is_some() {
        return Err(ApiError::BadRequest("send one Idempotency-Key header".into()));
    }
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > KEY_MAX || !bytes.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(ApiError::BadRequest(format!(
            "the Idempotency-Key must be 1 to {KEY_MAX} printable ASCII characters without spaces"
        )));
    }
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// Hashes what makes two requests the same: method, path and body.
pub fn request_hash(method: &str, path: &str, body: &Value) -> String {
    let mut hasher = Sha256::new();
    for part in [method, path, &body.to_string()] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    shared::ids::hex(&hasher.finalize())
}

/// One request's claim on its key.
pub struct Claim<'a> {
    pub user_id: &'a str,
    pub route: &'static str,
    pub key: String,
    pub hash: String,
}

/// The next step of a request after it claimed its key.
pub enum Begin {
    /// Run the request. `resource_id` is what an earlier attempt with this
    /// key created and did not finish (its lease ran out or it failed).
    Proceed { resource_id: Option<String> },
    /// Return the response the first request returned.
    Replay { status: u16, body: String },
}

impl Claim<'_> {
    /// Claims the key for this request, returns the stored outcome, or
    /// fails with 409 (in flight) or 422 (another request). A new claim records `new_resource_id` as
    /// what this request is about to create.
    pub async fn begin(&self, db: &Db, new_resource_id: &str) -> Result<Begin, ApiError> {
        let now = shared::time::now_micros();
        db.transaction(async |tx| {
            let row = tx
                .query_one(
                    "SELECT request_hash, resource_id, status, response, lease_until, created_at FROM idempotency_keys
                     WHERE user_id = ? AND route = ? AND idempotency_key = ? FOR UPDATE",
                    params![self.user_id, self.route, &self.key],
                )
                .await?;
            let Some(row) = row.filter(|row| row.get::<i64>("created_at").is_ok_and(|at| at > now - RETENTION_SECONDS * SECOND)) else {
                tx.execute(
                    "REPLACE INTO idempotency_keys (user_id, route, idempotency_key, request_hash, resource_id, status, response, lease_until, created_at)
                     VALUES (?, ?, ?, ?, ?, NULL, NULL, ?, ?)",
                    params![self.user_id, self.route, &self.key, &self.hash, new_resource_id, now + LEASE_SECONDS * SECOND, now],
                )
                .await?;
                return Ok(Begin::Proceed { resource_id: None });
            };
            if row.get::<String>("request_hash")? != self.hash {
                return Err(ApiError::invalid(
                    "Idempotency-Key",
                    "was already used with another request; use a new key for a new request",
                ));
            }
            if let Some(status) = row.get::<Option<u64>>("status")? {
                let status = u16::try_from(status).unwrap_or(500);
                return Ok(Begin::Replay { status, body: row.get::<Option<String>>("response")?.unwrap_or_default() });
            }
            if row.get::<i64>("lease_until")? > now {
                return Err(ApiError::Conflict("a request with this Idempotency-Key is still in progress; retry later".into()));
            }
            tx.execute(
                "UPDATE idempotency_keys SET lease_until = ? WHERE user_id = ? AND route = ? AND idempotency_key = ?",
                params![now + LEASE_SECONDS * SECOND, self.user_id, self.route, &self.key],
            )
            .await?;
            Ok(Begin::Proceed { resource_id: row.get("resource_id")? })
        })
        .await
    }

    /// Ends the request: stores a storable outcome, or releases the lease.
    /// A failure here is logged by the caller and changes nothing for the
    /// client: the lease runs out and a retry takes the key over.
    pub async fn finish(&self, db: &Db, outcome: &Result<(u16, Value), ApiError>) -> Result<(), ApiError> {
        let stored = match outcome {
            Ok((status, body)) => Some((*status, body.to_string())),
            Err(error) => {
                let status = error.status().as_u16();
                let storable = (400..500).contains(&status) && status != 409 && status != 429;
                storable.then(|| (status, error.envelope("").to_string()))
            }
        };
        match stored {
            Some((status, body)) => {
                db.execute(
                    "UPDATE idempotency_keys SET status = ?, response = ?, lease_until = 0
                     WHERE user_id = ? AND route = ? AND idempotency_key = ?",
                    params![u32::from(status), body, self.user_id, self.route, &self.key],
                )
                .await?
            }
            None => {
                db.execute(
                    "UPDATE idempotency_keys SET lease_until = 0 WHERE user_id = ? AND route = ? AND idempotency_key = ?",
                    params![self.user_id, self.route, &self.key],
                )
                .await?
            }
        }
        Ok(())
    }
}

impl Claim<'_> {
    /// Reads the outcome another request stored for this key, for a route
    /// that claims keys inside its own transaction. `None` when the key is
    /// free again (that request rolled back, or its key expired and was
    /// removed here), so the caller runs the request.
    pub async fn stored(&self, db: &Db) -> Result<Option<Response>, ApiError> {
        let row = db
            .query_one(
                "SELECT request_hash, status, response, created_at FROM idempotency_keys
                 WHERE user_id = ? AND route = ? AND idempotency_key = ?",
                params![self.user_id, self.route, &self.key],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        if row.get::<i64>("created_at")? <= shared::time::now_micros() - RETENTION_SECONDS * SECOND {
            db.execute(
                "DELETE FROM idempotency_keys WHERE user_id = ? AND route = ? AND idempotency_key = ?",
                params![self.user_id, self.route, &self.key],
            )
            .await?;
            return Ok(None);
        }
        if row.get::<String>("request_hash")? != self.hash {
            return Err(ApiError::invalid(
                "Idempotency-Key",
                "was already used with another request; use a new key for a new request",
            ));
        }
        match row.get::<Option<u64>>("status")? {
            Some(status) => {
                let body = row.get::<Option<String>>("response")?.unwrap_or_default();
                Ok(Some(replay(u16::try_from(status).unwrap_or(500), body)))
            }
            None => Err(ApiError::Conflict("a request with this Idempotency-Key is still in progress; retry later".into())),
        }
    }
}

/// Rebuilds a stored response.
pub fn replay(status: u16, body: String) -> Response {
    let status = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    shared::http::no_store(shared::http::with_body(status, "application/json", body))
}

/// Deletes keys past retention, at most `batch` of them.
pub async fn purge(db: &Db, batch: u32) -> Result<(), ApiError> {
    let before = shared::time::now_micros() - RETENTION_SECONDS * SECOND;
    db.execute("DELETE FROM idempotency_keys WHERE created_at < ? ORDER BY created_at LIMIT ?", params![before, batch]).await?;
    Ok(())
}
