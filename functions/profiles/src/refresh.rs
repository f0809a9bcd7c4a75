//! Refresh tokens (`user.refreshToken`): issued at registration and login,
//! exchanged at `POST /api/users/refresh` for a new access token and the
//! next refresh token of the same family.
//!
//! A token is `<id>.<secret>`: the id finds the row, and only the secret's
//! SHA-256 is stored. Each token works once. A used token presented again
//! means someone has a copy. Then every token of its family is revoked and
//! the user's token version bumped, so the access tokens issued so far stop
//! working as well. Logout-all and a
//! password change revoke all of a user's refresh tokens.

use sha2::{Digest, Sha256};
use shared::db::{DbError, Statements};
use shared::{ApiError, config, params};

const SECOND: i64 = 1_000_000;
const SECRET_BYTES: usize = 32;

/// Reads the lifetime of each refresh token, `refresh_token_ttl_seconds`.
pub async fn ttl_seconds() -> Result<i64, ApiError> {
    Ok(config::parsed("refresh_token_ttl_seconds").await?)
}

fn hash(secret: &str) -> String {
    shared::ids::hex(&Sha256::digest(secret.as_bytes()))
}

/// Issues a token of `family` (two statements with the lookup of none: one).
async fn insert(db: &impl Statements, family: &str, user_id: &str, now: i64, ttl: i64) -> Result<String, DbError> {
    let id = shared::ids::uuid_v7();
    let secret = shared::ids::random_token(SECRET_BYTES);
    db.execute(
        "INSERT INTO refresh_tokens (id, family_id, user_id, secret_hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
        params![id.as_str(), family, user_id, hash(&secret), now, now + ttl * SECOND],
    )
    .await?;
    Ok(format!("{id}.{secret}"))
}

/// Issues the first token of a new family.
pub async fn issue(db: &impl Statements, user_id: &str, now: i64, ttl: i64) -> Result<String, DbError> {
    insert(db, &shared::ids::uuid_v7(), user_id, now, ttl).await
}

/// Revokes every refresh token of a user.
pub async fn revoke_all(db: &impl Statements, user_id: &str, now: i64) -> Result<(), DbError> {
    db.execute(
        "UPDATE refresh_tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
        params![now, user_id],
    )
    .await
}

/// The outcome of presenting a refresh token.
pub enum Exchange {
    /// The token was valid: here is the next one, for this user.
    Rotated { user_id: String, token: String },
    /// The token had been used before: its family is now revoked.
    Reused { user_id: String },
    /// Unknown, malformed, revoked or expired.
    Invalid,
}

/// Exchanges `presented` for the next token of its family, inside the
/// caller's transaction (it locks the token's row).
pub async fn exchange(db: &impl Statements, presented: &str, now: i64, ttl: i64) -> Result<Exchange, DbError> {
    let Some((id, secret)) = presented.split_once('.') else { return Ok(Exchange::Invalid) };
    if !shared::ids::is_uuid(id) || secret.len() > 64 {
        return Ok(Exchange::Invalid);
    }
    let row = db
        .query_one(
            "SELECT family_id, user_id, secret_hash, expires_at, used_at, revoked_at FROM refresh_tokens WHERE id = ? FOR UPDATE",
            params![id],
        )
        .await?;
    let Some(row) = row else { return Ok(Exchange::Invalid) };
    let stored: String = row.get("secret_hash")?;
    let revoked = row.get::<Option<i64>>("revoked_at")?.is_some();
    if stored != hash(secret) || revoked || row.get::<i64>("expires_at")? <= now {
        return Ok(Exchange::Invalid);
    }
    let family: String = row.get("family_id")?;
    let user_id: String = row.get("user_id")?;
    if row.get::<Option<i64>>("used_at")?.is_some() {
        db.execute(
            "UPDATE refresh_tokens SET revoked_at = ? WHERE family_id = ? AND revoked_at IS NULL",
            params![now, family.as_str()],
        )
        .await?;
        return Ok(Exchange::Reused { user_id });
    }
    db.execute("UPDATE refresh_tokens SET used_at = ? WHERE id = ?", params![now, id]).await?;
    let token = insert(db, &family, &user_id, now, ttl).await?;
    Ok(Exchange::Rotated { user_id, token })
}

/// Purges tokens expired before `cutoff`, at most `limit`.
pub async fn purge_expired(db: &impl Statements, cutoff: i64, limit: u32) -> Result<(), DbError> {
    db.execute("DELETE FROM refresh_tokens WHERE expires_at < ? ORDER BY expires_at LIMIT ?", params![cutoff, limit])
        .await
}
