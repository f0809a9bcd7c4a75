//! The state every route of this component uses: the database, the
//! key-value store, the service key and the public key that verifies user
//! tokens, read from the component's Spin variables. The email settings are
//! read only by the routes that need them (see `email.rs`).

use shared::ApiError;
use shared::auth::{Identity, Verifier};
use shared::config;
use shared::db::Db;
use shared::http::Ctx;
use shared::kv::Kv;
use shared::service::ServiceKey;
use spin_sdk::http::HeaderMap;

pub struct App<'a> {
    pub ctx: &'a Ctx,
    pub db: Db,
    pub kv: Kv,
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
            service: ServiceKey::load(ctx.component).await?,
            verifier: Verifier::load().await?,
        })
    }

    /// Authenticates the caller: 401 without a valid, unrevoked token.
    pub async fn caller(&self, headers: &HeaderMap) -> Result<Identity, ApiError> {
        shared::revocation::caller(self.ctx, &self.verifier, &self.db, &self.kv, headers).await
    }
}
