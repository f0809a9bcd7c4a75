//! The state every route of this component uses: the database and the token
//! keys, read from the component's Spin variables.

use shared::ApiError;
use shared::auth::{self, Identity, SigningKey, TokenError, TokenSettings};
use shared::config;
use shared::db::Db;
use shared::http::Ctx;
use spin_sdk::http::HeaderMap;

use crate::store::{self, User};

pub struct App {
    pub db: Db,
    key: std::rc::Rc<SigningKey>,
    tokens: TokenSettings,
}

/// The authenticated caller: the token they sent and their current row.
pub struct Caller {
    pub token: String,
    pub user: User,
}

impl App {
    /// Reads the component's variables. A missing one is a 500 whose log line names it.
    pub async fn load(ctx: &Ctx) -> Result<Self, ApiError> {
        let db_url = config::required_secret("db_url").await?;
        let key = auth::cached_signing_key("token_key", &config::required_secret("token_key").await?)?;
        let tokens = TokenSettings {
            issuer: config::required("token_issuer").await?,
            audience: config::required("token_audience").await?,
            lifetime_seconds: config::parsed("token_ttl_seconds").await?,
        };
        Ok(Self { db: Db::new(db_url, ctx.stats.clone()), key, tokens })
    }

    /// Issues a token for `user`, carrying the user's roles and token version.
    pub fn issue_token(&self, user: &User) -> Result<String, ApiError> {
        auth::issue(&self.key, &self.tokens, &user.identity()).map_err(ApiError::Internal)
    }

    /// Authenticates the caller of a route that requires a token: 401 without one.
    pub async fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        self.optional_caller(headers)
            .await?
            .ok_or_else(|| ApiError::Unauthorized("this route needs an Authorization header".into()))
    }

    /// Authenticates the caller of a route where a token is optional. A token
    /// that is sent must be valid, so a bad one is a 401 even here.
    pub async fn optional_caller(&self, headers: &HeaderMap) -> Result<Option<Caller>, ApiError> {
        let Some(token) = auth::bearer_token(headers)? else { return Ok(None) };
        let identity = self.verify(token)?;
        let user = store::user_by_id(&self.db, &identity.user_id)
            .await?
            .ok_or_else(|| ApiError::Unauthorized("the token's user no longer exists".into()))?;
        check_version(&identity, &user)?;
        Ok(Some(Caller { token: token.to_string(), user }))
    }

    /// Verifies a required token without the database and returns it with
    /// its identity. The caller still compares the version with the user's row.
    pub fn identity(&self, headers: &HeaderMap) -> Result<(String, Identity), ApiError> {
        let token = auth::bearer_token(headers)?
            .ok_or_else(|| ApiError::Unauthorized("this route needs an Authorization header".into()))?;
        Ok((token.to_string(), self.verify(token)?))
    }

    fn verify(&self, token: &str) -> Result<Identity, ApiError> {
        auth::verify(&self.key.public_key(), &self.tokens, token).map_err(|error| {
            ApiError::Unauthorized(
                match error {
                    TokenError::Expired => "the token has expired",
                    TokenError::Invalid | TokenError::Incomplete => "the token is invalid",
                }
                .into(),
            )
        })
    }
}

/// Rejects a token issued before the user's last password change.
pub fn check_version(identity: &Identity, user: &User) -> Result<(), ApiError> {
    if identity.token_version == user.token_version {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("the token has been revoked; log in again".into()))
    }
}
