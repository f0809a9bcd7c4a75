//! Email verification: `POST /api/user/email-verification` requests a link
//! to the caller's current address, `POST /api/users/verify-email` confirms
//! the address with the link's token.
//!
//! The link leaves through notifications, which receives the
//! `email_verification.requested` event and sends it at its next dispatch
//! run. One address gets at most one link per `verification_interval_seconds`
//! (429 with `Retry-After` otherwise), whichever account requests it. A token works
//! until `verification_ttl_seconds` pass, the address is verified or the
//! user changes the address.

use serde_json::json;
use sha2::{Digest, Sha256};
use shared::http::{Response, json, no_store, read_json};
use shared::{ApiError, config, text};
use spin_sdk::http::{Request, StatusCode};

use crate::app::{App, check_version};
use crate::{events, store};

/// The random bytes in a token: 43 characters of base64url.
const TOKEN_BYTES: usize = 32;
/// Tokens longer than this are not ours and are rejected unhashed.
const TOKEN_MAX: usize = 64;
const SECOND: i64 = 1_000_000;

/// The interval and lifetime from the component's variables.
pub struct Settings {
    pub interval_seconds: i64,
    pub ttl_seconds: i64,
}

impl Settings {
    pub async fn load() -> Result<Self, ApiError> {
        Ok(Self {
            interval_seconds: config::parsed("verification_interval_seconds").await?,
            ttl_seconds: config::parsed("verification_ttl_seconds").await?,
        })
    }
}

fn token_hash(token: &str) -> String {
    shared::ids::hex(&Sha256::digest(token.as_bytes()))
}

/// `POST /api/user/email-verification`: 202 with the address and when the
/// link expires; 422 when the address is already verified; 429 when a link
/// went to it less than the interval ago. Any request body is ignored.
pub async fn request(app: &App<'_>, request: Request) -> Result<Response, ApiError> {
    let (_, identity) = app.identity(request.headers())?;
    let settings = Settings::load().await?;
    let token = shared::ids::random_token(TOKEN_BYTES);
    let hash = token_hash(&token);
    let now = shared::time::now_micros();
    let expires_at = now + settings.ttl_seconds * SECOND;

    let (user, event) = app
        .db
        .transaction(async |tx| {
            let user = store::lock_user(tx, &identity.user_id)
                .await?
                .ok_or_else(|| ApiError::Unauthorized("the token's user no longer exists".into()))?;
            check_version(&identity, &user)?;
            if user.email_verified {
                return Err(ApiError::invalid("email", "is already verified"));
            }
            let email_key = text::normalised_key(&user.email);
            if let Some(last) = store::lock_last_verification_send(tx, &email_key).await? {
                let wait = last + settings.interval_seconds * SECOND - now;
                if wait > 0 {
                    return Err(ApiError::TooManyRequests {
                        message: "a verification link went to this address recently; wait before asking again".into(),
                        retry_after_seconds: (wait as u64).div_ceil(SECOND as u64),
                    });
                }
            }
            store::insert_verification(tx, &hash, &user.id, &email_key, now, expires_at).await?;
            let event = events::verification_requested(&app.outbox, tx, &user, &token, expires_at).await?;
            Ok((user, event))
        })
        .await?;
    app.publish(&[event]).await;
    Ok(no_store(json(
        StatusCode::ACCEPTED,
        &json!({ "emailVerification": {
            "email": user.email,
            "expiresAt": shared::time::rfc3339(expires_at),
        }}),
    )))
}

/// `POST /api/users/verify-email {"token": "…"}`: needs no login, since the
/// link may be opened on another device. 200 with the verified user; 422
/// for a token that is unknown, expired, already used or sent to an
/// address the user no longer has.
pub async fn verify(app: &App<'_>, request: Request) -> Result<Response, ApiError> {
    let body = read_json(request, 4 * 1024).await?;
    let token = read_token(&body)?;
    let rejected = || ApiError::invalid("token", "is invalid or has expired");
    if token.len() > TOKEN_MAX {
        return Err(rejected());
    }
    let hash = token_hash(token);
    let now = shared::time::now_micros();

    let (user, event) = app
        .db
        .transaction(async |tx| {
            let link = store::lock_verification(tx, &hash).await?.ok_or_else(rejected)?;
            if link.expires_at < now {
                return Err(rejected());
            }
            let mut user = store::lock_user(tx, &link.user_id).await?.ok_or_else(rejected)?;
            if text::normalised_key(&user.email) != link.email_key {
                return Err(rejected());
            }
            store::set_email_verified(tx, &user.id, now).await?;
            store::delete_verifications(tx, &user.id).await?;
            user.email_verified = true;
            let event = events::email_changed(&app.outbox, tx, &user).await?;
            Ok((user, event))
        })
        .await?;
    app.publish(&[event]).await;
    Ok(no_store(json(
        StatusCode::OK,
        &json!({ "user": { "username": user.username, "email": user.email, "emailVerified": true } }),
    )))
}

/// Reads `{"token": "…"}`: 422 for another shape, a missing or non-string
/// token, or any other key.
fn read_token(body: &serde_json::Value) -> Result<&str, ApiError> {
    let object = body.as_object().ok_or_else(|| ApiError::invalid("body", "must be an object with a `token`"))?;
    if let Some(other) = object.keys().find(|key| *key != "token") {
        return Err(ApiError::invalid(other, "is not a known field"));
    }
    match object.get("token") {
        None | Some(serde_json::Value::Null) => Err(ApiError::invalid("token", "can't be blank")),
        Some(serde_json::Value::String(token)) if token.is_empty() => Err(ApiError::invalid("token", "can't be blank")),
        Some(serde_json::Value::String(token)) => Ok(token),
        Some(_) => Err(ApiError::invalid("token", "must be a string")),
    }
}
