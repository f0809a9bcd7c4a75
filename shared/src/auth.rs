//! User tokens: EdDSA (Ed25519) JWTs issued by profiles and verified by every
//! component. The key type pins the algorithm, so a token whose header names
//! any other algorithm (`none` included) fails. `iss`, `aud` and `exp` are
//! required and checked with a small explicit leeway. The subject is the
//! user's id, and `ver` carries the user's token version: a password change
//! bumps the version, so every older token stops working.

use std::collections::HashSet;

use http::HeaderMap;
use jwt_simple::prelude::{
    Claims, Duration, Ed25519KeyPair, Ed25519PublicKey, EdDSAKeyPairLike, EdDSAPublicKeyLike, VerificationOptions,
};
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Secret};
use crate::error::ApiError;

/// Clock difference tolerated between the issuer and a verifier. jwt-simple
/// defaults to 15 minutes, far too long for a token that is revoked by expiry.
pub const LEEWAY_SECONDS: u64 = 30;
/// Tokens longer than this are rejected before any parsing.
pub const MAX_TOKEN_LENGTH: usize = 4096;

/// The role every registered user has.
pub const ROLE_USER: &str = "user";
/// The role an operator grants; never given at registration.
pub const ROLE_ADMIN: &str = "admin";

/// The claims this application adds to the registered ones.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserClaims {
    /// The user's token version when the token was issued.
    pub ver: u64,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// The user a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    pub token_version: u64,
    pub roles: Vec<String>,
}

impl Identity {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// The key that signs user tokens (its public half verifies them).
pub type SigningKey = Ed25519KeyPair;

/// The issuer, audience and lifetime of user tokens.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub issuer: String,
    pub audience: String,
    pub lifetime_seconds: u64,
}

/// Reads an Ed25519 signing key given as the hex of its 32-byte seed
/// (`openssl rand -hex 32` makes one).
pub fn signing_key(variable: &str, seed_hex: &Secret) -> Result<Ed25519KeyPair, ConfigError> {
    let problem = || ConfigError::new(variable, "must be 64 hex digits (a 32-byte Ed25519 seed)");
    let seed = decode_hex_32(seed_hex.expose()).ok_or_else(problem)?;
    let key_pair = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed));
    Ed25519KeyPair::from_bytes(&key_pair[..]).map_err(|_| problem())
}

thread_local! {
    /// The keys derived so far, with the seeds they came from. A component
    /// instance serves many requests (Spin reuses it up to 128 times), and
    /// deriving the public key costs a scalar multiplication, so each key is
    /// derived once per seed. A component uses at most two (user tokens and
    /// service tokens), and the list is capped so a changing seed cannot grow it.
    /// The keys are the same for every request, as globals must be.
    static DERIVED_KEYS: std::cell::RefCell<Vec<(String, std::rc::Rc<SigningKey>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// How many derived keys an instance keeps.
const DERIVED_KEYS_KEPT: usize = 4;

/// Returns [`signing_key`] for this seed, derived once per instance and seed.
pub fn cached_signing_key(variable: &str, seed_hex: &Secret) -> Result<std::rc::Rc<SigningKey>, ConfigError> {
    let cached = DERIVED_KEYS.with_borrow(|keys| {
        keys.iter().find(|(seed, _)| seed == seed_hex.expose()).map(|(_, key)| key.clone())
    });
    if let Some(key) = cached {
        return Ok(key);
    }
    let key = std::rc::Rc::new(signing_key(variable, seed_hex)?);
    DERIVED_KEYS.with_borrow_mut(|keys| {
        if keys.len() >= DERIVED_KEYS_KEPT {
            keys.remove(0);
        }
        keys.push((seed_hex.expose().to_string(), key.clone()));
    });
    Ok(key)
}

/// Reads an Ed25519 public key given as 64 hex digits. Components that only
/// verify user tokens get the public half (the `user_token_public_key`
/// variable), so none of them can issue a token.
pub fn verifying_key(variable: &str, key_hex: &str) -> Result<Ed25519PublicKey, ConfigError> {
    let problem = || ConfigError::new(variable, "must be 64 hex digits (a 32-byte Ed25519 public key)");
    let bytes = decode_hex_32(key_hex).ok_or_else(problem)?;
    Ed25519PublicKey::from_bytes(&bytes).map_err(|_| problem())
}

/// Decodes exactly 64 hex digits into 32 bytes.
fn decode_hex_32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(bytes)
}

/// Returns the public key, as hex, that verifies tokens signed with the
/// seed `seed_hex` (what `user_token_public_key` must be set to).
pub fn public_key_hex(variable: &str, seed_hex: &Secret) -> Result<String, ConfigError> {
    Ok(crate::ids::hex(&signing_key(variable, seed_hex)?.public_key().to_bytes()))
}

/// Rejects a caller without `role` with 403. Roles come from a verified
/// token whose version was checked, so they are the user's current roles.
pub fn require_role(identity: &Identity, role: &str) -> Result<(), ApiError> {
    if identity.has_role(role) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!("this route needs the `{role}` role")))
    }
}

/// Signs a token for `identity`.
pub fn issue(key: &Ed25519KeyPair, settings: &TokenSettings, identity: &Identity) -> Result<String, anyhow::Error> {
    let custom = UserClaims { ver: identity.token_version, roles: identity.roles.clone() };
    let claims = Claims::with_custom_claims(custom, Duration::from_secs(settings.lifetime_seconds))
        .with_issuer(&settings.issuer)
        .with_audience(&settings.audience)
        .with_subject(&identity.user_id);
    key.sign(claims)
}

/// The reason a token was rejected. The client sees one message per reason,
/// and no reason includes the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Bad signature, wrong algorithm, wrong issuer or audience, too long, unparsable.
    Invalid,
    Expired,
    /// A required claim (`exp`, `sub`) is missing.
    Incomplete,
}

/// Verifies a token's signature and claims. The token version is not checked
/// here: the caller compares it with the user's current version.
pub fn verify(key: &Ed25519PublicKey, settings: &TokenSettings, token: &str) -> Result<Identity, TokenError> {
    let options = VerificationOptions {
        allowed_issuers: Some(HashSet::from([settings.issuer.clone()])),
        allowed_audiences: Some(HashSet::from([settings.audience.clone()])),
        time_tolerance: Some(Duration::from_secs(LEEWAY_SECONDS)),
        max_token_length: Some(MAX_TOKEN_LENGTH),
        ..VerificationOptions::default()
    };
    let claims = key.verify_token::<UserClaims>(token, Some(options)).map_err(|error| {
        match error.downcast_ref::<jwt_simple::JWTError>() {
            Some(jwt_simple::JWTError::TokenHasExpired) => TokenError::Expired,
            _ => TokenError::Invalid,
        }
    })?;
    if claims.expires_at.is_none() {
        return Err(TokenError::Incomplete);
    }
    let user_id = claims.subject.filter(|s| !s.is_empty()).ok_or(TokenError::Incomplete)?;
    Ok(Identity { user_id, token_version: claims.custom.ver, roles: claims.custom.roles })
}

/// Verifies a token sent with a request, as [`verify`] does, with the 401
/// the client gets for each reason.
pub fn verify_request_token(key: &Ed25519PublicKey, settings: &TokenSettings, token: &str) -> Result<Identity, ApiError> {
    verify(key, settings, token).map_err(|error| {
        ApiError::Unauthorized(
            match error {
                TokenError::Expired => "the token has expired",
                TokenError::Invalid | TokenError::Incomplete => "the token is invalid",
            }
            .into(),
        )
    })
}

/// The user-token checks of a component that only verifies tokens: the
/// public key (`token_public_key`) and the expected issuer and audience
/// (`token_issuer`, `token_audience`), read from its Spin variables.
pub struct Verifier {
    key: Ed25519PublicKey,
    settings: TokenSettings,
}

impl Verifier {
    /// Reads the variables. A missing or malformed one is a 500 whose log line names it.
    pub async fn load() -> Result<Self, ConfigError> {
        let key = verifying_key("token_public_key", &crate::config::required("token_public_key").await?)?;
        let settings = TokenSettings {
            issuer: crate::config::required("token_issuer").await?,
            audience: crate::config::required("token_audience").await?,
            // A verifier never issues a token.
            lifetime_seconds: 0,
        };
        Ok(Self { key, settings })
    }

    /// Verifies the request's bearer token, if it sent one: `Ok(None)`
    /// without an `Authorization` header, 401 for a bad token. The caller
    /// still checks the token version (`crate::revocation::check`).
    pub fn identity(&self, headers: &HeaderMap) -> Result<Option<Identity>, ApiError> {
        let Some(token) = bearer_token(headers)? else { return Ok(None) };
        verify_request_token(&self.key, &self.settings, token).map(Some)
    }
}

/// Extracts the token of the request's `Authorization` header: `Token <jwt>`
/// (the RealWorld form) or `Bearer <jwt>`. Returns `Ok(None)` without the
/// header, and 401 when it is malformed or repeated.
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(ApiError::Unauthorized("send one Authorization header".into()));
    }
    let malformed = || ApiError::Unauthorized("the Authorization header must be `Token <jwt>` or `Bearer <jwt>`".into());
    let text = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = text.split_once(' ').ok_or_else(malformed)?;
    let token = token.trim();
    let known_scheme = scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer");
    if !known_scheme || token.is_empty() || token.contains(' ') {
        return Err(malformed());
    }
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    const SEED: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn settings() -> TokenSettings {
        TokenSettings { issuer: "conduit".into(), audience: "conduit-api".into(), lifetime_seconds: 3600 }
    }

    fn alice() -> Identity {
        Identity { user_id: "u-1".into(), token_version: 3, roles: vec![ROLE_USER.into()] }
    }

    #[test]
    fn issued_token_verifies() {
        let key = signing_key("user_token_key", &Secret::new(SEED)).unwrap();

        let token = issue(&key, &settings(), &alice()).unwrap();

        assert_eq!(verify(&key.public_key(), &settings(), &token), Ok(alice()));
    }

    #[test]
    fn foreign_tokens_are_invalid() {
        let key = signing_key("user_token_key", &Secret::new(SEED)).unwrap();
        let other_key = Ed25519KeyPair::generate();
        let token = issue(&key, &settings(), &alice()).unwrap();
        let foreign = issue(&other_key, &settings(), &alice()).unwrap();

        let other_audience = TokenSettings { audience: "payments".into(), ..settings() };
        let other_issuer = TokenSettings { issuer: "elsewhere".into(), ..settings() };

        assert_eq!(verify(&key.public_key(), &other_audience, &token), Err(TokenError::Invalid));
        assert_eq!(verify(&key.public_key(), &other_issuer, &token), Err(TokenError::Invalid));
        assert_eq!(verify(&key.public_key(), &settings(), &foreign), Err(TokenError::Invalid));
    }

    #[test]
    fn expiry_leeway_is_small() {
        let key = signing_key("user_token_key", &Secret::new(SEED)).unwrap();
        let mut claims = Claims::with_custom_claims(alice_claims(), Duration::from_secs(60))
            .with_issuer("conduit")
            .with_audience("conduit-api")
            .with_subject("u-1");
        let now = jwt_simple::prelude::Clock::now_since_epoch();
        claims.issued_at = Some(now - Duration::from_secs(600));
        claims.expires_at = Some(now - Duration::from_secs(LEEWAY_SECONDS + 5));
        let token = key.sign(claims).unwrap();

        assert_eq!(verify(&key.public_key(), &settings(), &token), Err(TokenError::Expired));
    }

    fn alice_claims() -> UserClaims {
        UserClaims { ver: 3, roles: vec![ROLE_USER.into()] }
    }

    #[test]
    fn public_key_alone_verifies() {
        let key = signing_key("user_token_key", &Secret::new(SEED)).unwrap();
        let token = issue(&key, &settings(), &alice()).unwrap();

        let public_hex = public_key_hex("user_token_key", &Secret::new(SEED)).unwrap();
        let public = verifying_key("user_token_public_key", &public_hex).unwrap();
        let other = verifying_key("user_token_public_key", &"1f".repeat(32));

        assert_eq!(public_hex.len(), 64);
        assert_eq!(verify(&public, &settings(), &token), Ok(alice()));
        assert!(other.is_err() || verify(&other.unwrap(), &settings(), &token).is_err());
        assert!(verifying_key("user_token_public_key", "zz").is_err());
    }

    #[test]
    fn alg_none_is_rejected() {
        let key = signing_key("user_token_key", &Secret::new(SEED)).unwrap();
        let token = issue(&key, &settings(), &alice()).unwrap();
        let payload = token.split('.').nth(1).unwrap();
        // {"alg":"none","typ":"JWT"}
        let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");

        assert_eq!(verify(&key.public_key(), &settings(), &unsigned), Err(TokenError::Invalid));
    }

    #[test]
    fn derived_key_is_cached_per_seed() {
        let other_seed = Secret::new("1f".repeat(32));

        let first = cached_signing_key("user_token_key", &Secret::new(SEED)).unwrap();
        let again = cached_signing_key("user_token_key", &Secret::new(SEED)).unwrap();
        let other = cached_signing_key("user_token_key", &other_seed).unwrap();

        let first_again = cached_signing_key("user_token_key", &Secret::new(SEED)).unwrap();

        assert!(std::rc::Rc::ptr_eq(&first, &again));
        assert!(std::rc::Rc::ptr_eq(&first, &first_again), "a second seed must not evict the first");
        assert_ne!(first.public_key().to_bytes(), other.public_key().to_bytes());
    }

    #[test]
    fn roles_are_required_by_name() {
        let admin = Identity { roles: vec![ROLE_USER.into(), ROLE_ADMIN.into()], ..alice() };

        assert!(require_role(&admin, ROLE_ADMIN).is_ok());
        assert!(matches!(require_role(&alice(), ROLE_ADMIN), Err(ApiError::Forbidden(_))));
    }

    #[test]
    fn seed_must_be_hex() {
        let error = signing_key("user_token_key", &Secret::new("abc")).unwrap_err();

        assert!(error.to_string().starts_with("variable `user_token_key` must be"));
        assert!(!error.to_string().contains("abc"));
    }

    #[test]
    fn authorization_header_forms() {
        let headers = |values: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(http::header::AUTHORIZATION, HeaderValue::from_static(value));
            }
            headers
        };

        assert_eq!(bearer_token(&headers(&[])).unwrap(), None);
        assert_eq!(bearer_token(&headers(&["Token abc"])).unwrap(), Some("abc"));
        assert_eq!(bearer_token(&headers(&["Bearer abc"])).unwrap(), Some("abc"));
        assert!(bearer_token(&headers(&["Basic abc"])).is_err());
        assert!(bearer_token(&headers(&["Token"])).is_err());
        assert!(bearer_token(&headers(&["Token a", "Token b"])).is_err());
    }
}
