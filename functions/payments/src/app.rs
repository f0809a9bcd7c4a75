//! The state every route of this component uses: the database, the
//! key-value store, the outbox, the payment provider and the public key that
//! verifies user tokens, read from the component's Spin variables. Payments
//! never gets the user-token signing key.

use shared::ApiError;
use shared::auth::{Identity, Verifier};
use shared::config;
use shared::db::Db;
use shared::events::{Event, Outbox};
use shared::http::Ctx;
use shared::kv::Kv;
use shared::money::Currency;
use shared::service::ServiceKey;
use spin_sdk::http::HeaderMap;

use crate::provider::Mollie;

pub struct App<'a> {
    pub ctx: &'a Ctx,
    pub db: Db,
    pub kv: Kv,
    pub outbox: Outbox,
    pub service: ServiceKey,
    pub provider: Mollie,
    /// The currencies users may hold, from the `currencies` variable.
    pub currencies: Vec<Currency>,
    /// How long a top-up stays open before dispatch fetches it from the provider.
    pub recheck_after_seconds: i64,
    verifier: Verifier,
}

impl<'a> App<'a> {
    /// Reads the component's variables. A missing one is a 500 whose log line names it.
    pub async fn load(ctx: &'a Ctx) -> Result<Self, ApiError> {
        let db_url = config::required_secret("db_url").await?;
        let currencies = shared::money::parse_allowed(&config::required("currencies").await?)
            .ok_or_else(|| config::ConfigError::new("currencies", "must list ISO 4217 codes this application supports, such as EUR"))?;
        let provider = Mollie::new(
            config::required("provider_url").await?,
            config::required_secret("provider_api_key").await?,
            config::required("webhook_url").await?,
            config::required("redirect_url").await?,
        );
        Ok(Self {
            ctx,
            db: Db::new(db_url, ctx.stats.clone()),
            kv: Kv::new(ctx.component, ctx.stats.clone()),
            outbox: Outbox::load(ctx).await?,
            service: ServiceKey::load(ctx.component).await?,
            provider,
            currencies,
            recheck_after_seconds: config::parsed("recheck_after_seconds").await?,
            verifier: Verifier::load().await?,
        })
    }

    /// Pushes events this request committed to their consumers (see
    /// `shared::events`); a consumer that is down gets them from dispatch.
    pub async fn publish(&self, events: &[Event]) {
        self.outbox.push(self.ctx, &self.db, &self.service, events).await;
    }

    /// Authenticates the caller: 401 without a valid, unrevoked token.
    pub async fn caller(&self, headers: &HeaderMap) -> Result<Identity, ApiError> {
        shared::revocation::caller(self.ctx, &self.verifier, &self.db, &self.kv, headers).await
    }
}
