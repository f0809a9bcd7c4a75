//! The state every route of this component uses: the database, the token
//! keys and the outbox, read from the component's Spin variables.

use shared::ApiError;
use shared::auth::{self, Identity, SigningKey, TokenSettings};
use shared::config;
use shared::db::Db;
use shared::events::{Event, Outbox};
use shared::http::Ctx;
use shared::service::ServiceKey;
use spin_sdk::http::HeaderMap;

use crate::store::{self, User};

pub struct App<'a> {
    pub ctx: &'a Ctx,
    pub db: Db,
    pub outbox: Outbox,
    pub service: ServiceKey,
    key: std::rc::Rc<SigningKey>,
    tokens: TokenSettings,
}

/// The authenticated caller: the token they sent and their current row.
pub struct Caller {
    pub token: String,
    pub user: User,
}

impl<'a> App<'a> {
    /// Reads the component's variables. A missing one is a 500 whose log line names it.
    pub async fn load(ctx: &'a Ctx) -> Result<Self, ApiError> {
        let db_url = config::required_secret("db_url").await?;
        let key = auth::cached_signing_key("token_key", &config::required_secret("token_key").await?)?;
        let tokens = TokenSettings {
            issuer: config::required("token_issuer").await?,
            audience: config::required("token_audience").await?,
            lifetime_seconds: config::parsed("token_ttl_seconds").await?,
        };
        Ok(Self {
            ctx,
            db: Db::new(db_url, ctx.stats.clone()),
            outbox: Outbox::load(ctx).await?,
            service: ServiceKey::load(ctx.component).await?,
            key,
            tokens,
        })
    }

    /// Pushes events this request committed to their consumers (see
    /// `shared::events`); a consumer that is down gets them from dispatch.
    pub async fn publish(&self, events: &[Event]) {
        self.outbox.push(self.ctx, &self.db, &self.service, events).await;
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
        shared::ratelimit::per_user(self.ctx, &user.id)?;
        Ok(Some(Caller { token: token.to_string(), user }))
    }

    /// Verifies a required token without the database and returns it with
    /// its identity. The caller still compares the version with the user's row.
    pub fn identity(&self, headers: &HeaderMap) -> Result<(String, Identity), ApiError> {
        let token = auth::bearer_token(headers)?
            .ok_or_else(|| ApiError::Unauthorized("this route needs an Authorization header".into()))?;
        let identity = self.verify(token)?;
        shared::ratelimit::per_user(self.ctx, &identity.user_id)?;
        Ok((token.to_string(), identity))
    }

    fn verify(&self, token: &str) -> Result<Identity, ApiError> {
        auth::verify_request_token(&self.key.public_key(), &self.tokens, token)
    }
}

/// Rejects a token issued before the user's last password change, role
/// change or logout-all.
pub fn check_version(identity: &Identity, user: &User) -> Result<(), ApiError> {
    if identity.token_version == user.token_version {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("the token has been revoked; log in again".into()))
    }
}
