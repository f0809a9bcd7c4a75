//! Token revocation outside profiles. A password change, a role change and
//! logout-all bump a user's token version in profiles, which publishes it in
//! a `user.*` event. Every other component keeps the versions it received in
//! its `user_tokens` table and caches each in its key-value store for
//! [`CACHE_SECONDS`]; [`check`] refuses a token older than the version held.
//!
//! The delay after which an old token is refused everywhere is the delay of
//! the event: the push right after profiles' commit when the consumer is up,
//! otherwise the dispatch run that delivers it. Applying the event rewrites
//! the cache entry at once. Only when that write fails (the store is down)
//! or races a reader refilling the entry from the database can an entry lag,
//! and then for at most [`CACHE_SECONDS`].
//!
//! A user the component has not heard of yet is accepted on the token's
//! signature alone: refusing would lock out every new user until the first
//! event arrived.

use serde::{Deserialize, Serialize};

use crate::auth::{Identity, Verifier};
use crate::db::{Db, Statements, Tx};
use crate::error::ApiError;
use crate::events::Event;
use crate::kv::Kv;
use crate::params;

/// Authenticates a request to a component that only verifies tokens: 401
/// without a token, with a bad one or with a revoked one. A write then
/// counts against the user's rate limit (`crate::ratelimit::per_user`).
pub async fn caller(
    ctx: &crate::http::Ctx,
    verifier: &Verifier,
    db: &Db,
    kv: &Kv,
    headers: &http::HeaderMap,
) -> Result<Identity, ApiError> {
    optional_caller(ctx, verifier, db, kv, headers)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("this route needs an Authorization header".into()))
}

/// Authenticates a request where a token is optional. A token that is sent
/// must be valid and not revoked, so a bad one is a 401 even here.
pub async fn optional_caller(
    ctx: &crate::http::Ctx,
    verifier: &Verifier,
    db: &Db,
    kv: &Kv,
    headers: &http::HeaderMap,
) -> Result<Option<Identity>, ApiError> {
    let Some(identity) = verifier.identity(headers)? else { return Ok(None) };
    check(db, kv, &identity).await?;
    crate::ratelimit::per_user(ctx, &identity.user_id)?;
    Ok(Some(identity))
}

/// How long a cached token version is trusted without the database.
pub const CACHE_SECONDS: u32 = 60;
/// The producer and aggregate type of the events that carry token versions.
pub const USER_EVENTS: (&str, &str) = ("profiles", "user");

/// A component's record of a user's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenState {
    pub version: u64,
    pub deleted: bool,
}

fn cache_key(user_id: &str) -> String {
    format!("token-version:{user_id}")
}

fn state_of(event: &Event) -> Option<TokenState> {
    let deleted = event.is_deletion();
    let version = event.payload.get("token_version").and_then(serde_json::Value::as_u64);
    match (version, deleted) {
        (Some(version), _) => Some(TokenState { version, deleted }),
        // A deletion needs no version, because every token of the user is rejected.
        (None, true) => Some(TokenState { version: u64::MAX, deleted }),
        (None, false) => None,
    }
}

/// Stores the token version a `user.*` event carries, inside the consumer's transaction.
pub async fn apply(tx: &Tx<'_>, event: &Event) -> Result<(), ApiError> {
    if (event.producer.as_str(), event.aggregate_type.as_str()) != USER_EVENTS {
        return Ok(());
    }
    let Some(state) = state_of(event) else {
        return Err(ApiError::invalid("payload", "a user event needs `token_version`"));
    };
    tx.execute(
        "INSERT INTO user_tokens (user_id, token_version, deleted, updated_at) VALUES (?, ?, ?, ?)
         ON DUPLICATE KEY UPDATE token_version = VALUES(token_version), deleted = VALUES(deleted),
                                 updated_at = VALUES(updated_at)",
        params![&event.aggregate_id, state.version, state.deleted, crate::time::now_micros()],
    )
    .await?;
    Ok(())
}

/// Refreshes the cache entry after the event's transaction committed.
pub async fn cache(kv: &Kv, event: &Event) {
    if (event.producer.as_str(), event.aggregate_type.as_str()) != USER_EVENTS {
        return;
    }
    if let Some(state) = state_of(event)
        && kv.set_fresh(&cache_key(&event.aggregate_id), &state, CACHE_SECONDS).await.is_err()
    {
        // The stale entry expires within CACHE_SECONDS, but removing it ends the lag sooner.
        let _ = kv.delete(&cache_key(&event.aggregate_id)).await;
    }
}

/// Rejects a token whose version is older than the one this component has
/// for its user, or whose user was deleted. Reads the cache first and the
/// database on a miss (refilling the cache), so a store outage costs one
/// statement, never the request.
pub async fn check(db: &Db, kv: &Kv, identity: &Identity) -> Result<(), ApiError> {
    let key = cache_key(&identity.user_id);
    let cached = kv.get_fresh::<TokenState>(&key).await.ok().flatten();
    let state = match cached {
        Some(state) => Some(state),
        None => {
            let row = db
                .query_one(
                    "SELECT token_version, deleted FROM user_tokens WHERE user_id = ?",
                    params![&identity.user_id],
                )
                .await?;
            let state = match row {
                Some(row) => Some(TokenState { version: row.get("token_version")?, deleted: row.get("deleted")? }),
                None => None,
            };
            if let Some(state) = state {
                let _ = kv.set_fresh(&key, &state, CACHE_SECONDS).await;
            }
            state
        }
    };
    match state {
        Some(state) if state.deleted => Err(ApiError::Unauthorized("the token's user no longer exists".into())),
        Some(state) if identity.token_version < state.version => {
            Err(ApiError::Unauthorized("the token has been revoked; log in again".into()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn user_event(kind: &str, payload: serde_json::Value) -> Event {
        Event {
            id: "e".into(),
            producer: "profiles".into(),
            kind: kind.into(),
            aggregate_type: "user".into(),
            aggregate_id: "u-1".into(),
            aggregate_version: 2,
            occurred_at: "2026-01-01T00:00:00.000Z".into(),
            payload,
        }
    }

    #[test]
    fn events_carry_the_token_state() {
        assert_eq!(
            state_of(&user_event("user.updated", json!({"token_version": 4}))),
            Some(TokenState { version: 4, deleted: false })
        );
        assert_eq!(state_of(&user_event("user.deleted", json!({}))).map(|s| s.deleted), Some(true));
        assert_eq!(state_of(&user_event("user.updated", json!({}))), None);
    }
}
