//! The state every route of this component uses: the database, the
//! key-value store, the outbox and the public key that verifies user
//! tokens, read from the component's Spin variables. Feed never gets the
//! signing key, so it cannot issue a token.

use shared::ApiError;
use shared::auth::{Identity, Verifier};
use shared::config;
use shared::db::Db;
use shared::events::{Event, Outbox};
use shared::http::Ctx;
use shared::kv::Kv;
use shared::service::ServiceKey;
use spin_sdk::http::HeaderMap;

use crate::cache::Cache;
use crate::events::{ReadModel, USER_EVENTS};
use crate::store::Author;
use crate::view;

pub struct App<'a> {
    pub ctx: &'a Ctx,
    pub db: Db,
    pub kv: Kv,
    pub outbox: Outbox,
    pub service: ServiceKey,
    verifier: Verifier,
}

impl<'a> App<'a> {
    /// Reads the component's variables. A missing one is a 500 whose log line names it.
    pub async fn load(ctx: &'a Ctx) -> Result<Self, ApiError> {
        let db_url = config::required_secret("db_url").await?;
        Ok(Self {
            ctx,
            db: Db::new(db_url, ctx.stats.clone()),
            kv: Kv::new(ctx.component, ctx.stats.clone()),
            outbox: Outbox::load(ctx).await?,
            service: ServiceKey::load(ctx.component).await?,
            verifier: Verifier::load().await?,
        })
    }

    pub fn cache(&self) -> Cache<'_> {
        Cache::new(&self.kv)
    }

    /// Pushes events this request committed to their consumers (see
    /// `shared::events`); a consumer that is down gets them from dispatch.
    pub async fn publish(&self, events: &[Event]) {
        self.outbox.push(self.ctx, &self.db, &self.service, events).await;
    }

    /// Authenticates the caller of a route that requires a token: 401 without one.
    pub async fn caller(&self, headers: &HeaderMap) -> Result<Identity, ApiError> {
        shared::revocation::caller(self.ctx, &self.verifier, &self.db, &self.kv, headers).await
    }

    /// Authenticates the caller of a route where a token is optional.
    pub async fn optional_caller(&self, headers: &HeaderMap) -> Result<Option<Identity>, ApiError> {
        shared::revocation::optional_caller(self.ctx, &self.verifier, &self.db, &self.kv, headers).await
    }

    /// Returns the caller's author block, for routes that write in the
    /// caller's name. A caller feed has not heard of yet (their profile
    /// event is still pending, because feed was down when they registered)
    /// is fetched from profiles first. A user profiles no longer has gets 401.
    pub async fn caller_author(&self, identity: &Identity) -> Result<Author, ApiError> {
        if let Some(author) = view::authors(self, &[identity.user_id.as_str()]).await?.remove(&identity.user_id) {
            return Ok(author);
        }
        let model = ReadModel::new(&self.kv);
        let found = shared::events::fetch_aggregate(self.ctx, &self.db, &self.service, &model, USER_EVENTS, &identity.user_id)
            .await?;
        if !found {
            return Err(unknown_user());
        }
        view::authors(self, &[identity.user_id.as_str()]).await?.remove(&identity.user_id).ok_or_else(unknown_user)
    }
}

/// Builds the 401 for a valid token whose user neither feed nor profiles has.
pub fn unknown_user() -> ApiError {
    ApiError::Unauthorized("the token's user no longer exists".into())
}
