//! Each user's unread count, cached in the key-value store.
//!
//! The exact count lives in the database (`unread_counts`); the store keeps
//! a copy under a key that ends in the user's version token
//! (`ver:unread:<user id>`). A change replaces the token after its commit,
//! and a reader that finds no token writes one before reading the database,
//! so a count read before a change is never served under a later token.
//! Values expire after [`VALUE_SECONDS`] in any case. Every store error reads
//! as a miss, so a store outage costs a statement and fails nothing.

use shared::kv::Kv;

pub const VALUE_SECONDS: u32 = 300;
pub const TOKEN_SECONDS: u32 = 86_400;

fn token_key(user_id: &str) -> String {
    format!("ver:unread:{user_id}")
}

/// Returns the key the user's count is cached under, writing a token when
/// there is none; `None` when the store fails.
pub async fn unread_key(kv: &Kv, user_id: &str) -> Option<String> {
    let token = match kv.get_fresh::<String>(&token_key(user_id)).await {
        Ok(Some(token)) => token,
        Ok(None) => {
            let token = shared::ids::random_hex(8);
            kv.set_fresh(&token_key(user_id), &token, TOKEN_SECONDS).await.ok()?;
            token
        }
        Err(_) => return None,
    };
    Some(format!("unread:{user_id}:{token}"))
}

pub async fn get_unread(kv: &Kv, key: Option<&str>) -> Option<i64> {
    kv.get_fresh(key?).await.ok().flatten()
}

pub async fn put_unread(kv: &Kv, key: Option<&str>, count: i64) {
    if let Some(key) = key {
        let _ = kv.set_fresh(key, &count, VALUE_SECONDS).await;
    }
}

/// Makes the cached count unreachable; called after a change committed.
/// When the token cannot be replaced it is deleted, and if that fails too
/// the old count can be served until it expires.
pub async fn invalidate_unread(kv: &Kv, user_id: &str) {
    let token = shared::ids::random_hex(8);
    if kv.set_fresh(&token_key(user_id), &token, TOKEN_SECONDS).await.is_err() {
        let _ = kv.delete(&token_key(user_id)).await;
    }
}
