//! Service identity: how components call each other and how they tell those
//! calls from everyone else's.
//!
//! Service chaining (`http://<component>.spin.internal/...`) reaches any path
//! of a component, so reachability proves nothing. Every call under
//! `/internal/<component>/` carries a service token: an EdDSA JWT signed with
//! the `service_token_key` variable (never the user-token key), role
//! `service`, issuer [`SERVICE_ISSUER`], subject the calling component,
//! audience the target, valid for [`SERVICE_TOKEN_SECONDS`]. [`ServiceKey::guard`]
//! checks it on the receiving side: no token or a bad one is 401, a valid
//! service token meant for another component is 403.
//!
//! Spin applies no timeout to chained calls, so [`ServiceKey::call`] enforces
//! its own deadline by racing the call against `spin_sdk::time::sleep`.
//!
//! `POST /ops/<component>/dispatch` is public and is authorised differently,
//! by the scheduler token ([`check_scheduler_token`]).

use std::collections::HashSet;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use jwt_simple::prelude::{Claims, EdDSAKeyPairLike, EdDSAPublicKeyLike, VerificationOptions};
use serde::{Deserialize, Serialize};
use spin_sdk::http::FullBody;

use crate::auth::{LEEWAY_SECONDS, MAX_TOKEN_LENGTH, SigningKey, bearer_token, cached_signing_key};
use crate::config::{self, Secret};
use crate::error::ApiError;
use crate::http::Ctx;

/// The role every service token carries, and no user token ever does.
pub const SERVICE_ROLE: &str = "service";
/// The issuer of service tokens, distinct from the user tokens' issuer.
pub const SERVICE_ISSUER: &str = "conduit-services";
/// A service token's lifetime: long enough for a slow call, short enough
/// that a leaked one is soon useless.
pub const SERVICE_TOKEN_SECONDS: u64 = 120;
/// The header that carries the caller's request id, so the two log lines of
/// one chained call can be joined.
pub const CALLER_REQUEST_ID_HEADER: &str = "x-caller-request-id";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ServiceClaims {
    roles: Vec<String>,
}

/// This component's service identity: its name and the service signing key.
pub struct ServiceKey {
    component: &'static str,
    key: Rc<SigningKey>,
}

/// The reason a call to another component failed. None of these carries a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The deadline passed before the whole response arrived.
    Deadline,
    /// The call could not be sent or its response not read (the component
    /// is down, or not in `allowed_outbound_hosts`).
    Transport(String),
    /// The target responded with a status other than 2xx.
    Status(u16),
    /// The response body was larger than `outbound::MAX_REPLY_BYTES`.
    TooLarge { status: u16 },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Deadline => f.write_str("deadline passed"),
            Self::Transport(kind) => write!(f, "transport error ({kind})"),
            Self::Status(status) => write!(f, "status {status}"),
            Self::TooLarge { status } => write!(f, "status {status} with a body over {} bytes", crate::outbound::MAX_REPLY_BYTES),
        }
    }
}

impl ServiceKey {
    /// Reads the `service_token_key` variable (64 hex digits, a 32-byte Ed25519 seed).
    pub async fn load(component: &'static str) -> Result<Self, ApiError> {
        let seed = config::required_secret("service_token_key").await?;
        Self::from_seed(component, &seed).map_err(ApiError::from)
    }

    pub fn from_seed(component: &'static str, seed: &Secret) -> Result<Self, config::ConfigError> {
        Ok(Self { component, key: cached_signing_key("service_token_key", seed)? })
    }

    /// Signs a fresh token for a call to `target`.
    pub fn token_for(&self, target: &str) -> Result<String, ApiError> {
        let claims = Claims::with_custom_claims(
            ServiceClaims { roles: vec![SERVICE_ROLE.into()] },
            jwt_simple::prelude::Duration::from_secs(SERVICE_TOKEN_SECONDS),
        )
        .with_issuer(SERVICE_ISSUER)
        .with_audience(target)
        .with_subject(self.component);
        self.key.sign(claims).map_err(ApiError::Internal)
    }

    /// Checks the service token of a request to an `/internal/` route of this
    /// component and returns the calling component's name.
    pub fn guard(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        let token = bearer_token(headers)?
            .ok_or_else(|| ApiError::Unauthorized("internal routes need a service token".into()))?;
        let public_key = self.key.public_key();
        let options = |audience: Option<&str>| VerificationOptions {
            allowed_issuers: Some(HashSet::from([SERVICE_ISSUER.to_string()])),
            allowed_audiences: audience.map(|a| HashSet::from([a.to_string()])),
            time_tolerance: Some(jwt_simple::prelude::Duration::from_secs(LEEWAY_SECONDS)),
            max_token_length: Some(MAX_TOKEN_LENGTH),
            ..VerificationOptions::default()
        };
        let claims = match public_key.verify_token::<ServiceClaims>(token, Some(options(Some(self.component)))) {
            Ok(claims) => claims,
            // Signed by a component, but for another one: known caller, wrong door.
            Err(_) if public_key.verify_token::<ServiceClaims>(token, Some(options(None))).is_ok() => {
                return Err(ApiError::Forbidden("this service token is for another component".into()));
            }
            Err(_) => return Err(ApiError::Unauthorized("the service token is invalid".into())),
        };
        if claims.expires_at.is_none() {
            return Err(ApiError::Unauthorized("the service token is invalid".into()));
        }
        if !claims.custom.roles.iter().any(|role| role == SERVICE_ROLE) {
            return Err(ApiError::Forbidden("internal routes need the `service` role".into()));
        }
        claims
            .subject
            .filter(|caller| !caller.is_empty())
            .ok_or_else(|| ApiError::Unauthorized("the service token is invalid".into()))
    }

    /// Calls `path` on `target` over service chaining with a fresh service
    /// token, the caller's trace and request id, and a JSON body when given.
    /// Returns the 2xx response body, or why there is none, within `deadline`.
    pub async fn call(
        &self,
        ctx: &Ctx,
        target: &str,
        method: http::Method,
        path: &str,
        body: Option<&serde_json::Value>,
        deadline: Duration,
    ) -> Result<Bytes, CallError> {
        let token = self.token_for(target).map_err(|_| CallError::Transport("token".into()))?;
        let mut builder = http::Request::builder()
            .method(method)
            .uri(format!("http://{target}.spin.internal{path}"))
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .header(CALLER_REQUEST_ID_HEADER, ctx.request_id.as_str());
        if let Some(traceparent) = ctx.child_traceparent() {
            builder = builder.header("traceparent", traceparent);
        }
        let bytes = match body {
            Some(body) => {
                builder = builder.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(body.to_string())
            }
            None => Bytes::new(),
        };
        let request = builder
            .body(FullBody::new(bytes))
            .map_err(|_| CallError::Transport("request".into()))?;

        let reply = crate::outbound::send(request, deadline).await?;
        if (200..300).contains(&reply.status) { Ok(reply.body) } else { Err(CallError::Status(reply.status)) }
    }
}

/// Checks the scheduler token of a `POST /ops/<component>/dispatch` request:
/// `Authorization: Bearer <token>` equal to the `scheduler_token` variable,
/// compared in constant time.
pub fn check_scheduler_token(headers: &HeaderMap, expected: &Secret) -> Result<(), ApiError> {
    let sent = bearer_token(headers)?
        .ok_or_else(|| ApiError::Unauthorized("dispatch needs the scheduler token".into()))?;
    if constant_time_eq(sent.as_bytes(), expected.expose().as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("the scheduler token is invalid".into()))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = a.len() ^ b.len();
    for (i, byte) in a.iter().enumerate() {
        difference |= usize::from(byte ^ b.get(i).copied().unwrap_or(0));
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;
    use crate::auth::{Identity, TokenSettings, issue};

    const SEED: &str = "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f";

    fn key(component: &'static str) -> ServiceKey {
        ServiceKey::from_seed(component, &Secret::new(SEED)).unwrap()
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
        headers
    }

    #[test]
    fn guard_accepts_a_token_for_its_component() {
        let token = key("profiles").token_for("feed").unwrap();

        assert_eq!(key("feed").guard(&bearer(&token)).unwrap(), "profiles");
    }

    #[test]
    fn guard_forbids_a_token_for_another_component() {
        let token = key("profiles").token_for("payments").unwrap();

        assert!(matches!(key("feed").guard(&bearer(&token)), Err(ApiError::Forbidden(_))));
    }

    #[test]
    fn guard_rejects_missing_foreign_and_user_tokens() {
        let user_key = crate::auth::signing_key("user_token_key", &Secret::new("07".repeat(32))).unwrap();
        let settings = TokenSettings { issuer: "conduit".into(), audience: "feed".into(), lifetime_seconds: 60 };
        let identity = Identity { user_id: "u-1".into(), token_version: 1, roles: vec![SERVICE_ROLE.into()] };
        let user_token = issue(&user_key, &settings, &identity).unwrap();
        let other = ServiceKey::from_seed("profiles", &Secret::new("11".repeat(32))).unwrap();

        let feed = key("feed");

        assert!(matches!(feed.guard(&HeaderMap::new()), Err(ApiError::Unauthorized(_))));
        assert!(matches!(feed.guard(&bearer(&user_token)), Err(ApiError::Unauthorized(_))));
        assert!(matches!(feed.guard(&bearer(&other.token_for("feed").unwrap())), Err(ApiError::Unauthorized(_))));
    }

    #[test]
    fn scheduler_token_must_match_exactly() {
        let expected = Secret::new("scheduler-secret-value");

        assert!(check_scheduler_token(&bearer("scheduler-secret-value"), &expected).is_ok());
        assert!(check_scheduler_token(&bearer("scheduler-secret-valu"), &expected).is_err());
        assert!(check_scheduler_token(&bearer("scheduler-secret-value2"), &expected).is_err());
        assert!(check_scheduler_token(&HeaderMap::new(), &expected).is_err());
    }
}
