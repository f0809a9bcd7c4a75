//! The routes a component serves before it has an API of its own: its
//! health check, the endpoint for profiles' user events and its dispatch
//! route. Such a component keeps the token versions of `revocation`, so it
//! already rejects revoked tokens the moment it gains user routes, and a
//! dispatch run resyncs them from profiles when it has never done so.

use spin_sdk::http::{Request, StatusCode};

use crate::ApiError;
use crate::db::Db;
use crate::events::{self, Event, Projection};
use crate::http::{Ctx, Response, health_up, json, with_body};
use crate::kv::Kv;
use crate::service::ServiceKey;
use crate::{config, revocation};

/// A component's platform route patterns, as its log lines name them.
pub struct Routes {
    pub component: &'static str,
    /// `/health/<component>`
    pub health: &'static str,
    /// `/internal/<component>/events`
    pub events: &'static str,
    /// `/ops/<component>/dispatch`
    pub dispatch: &'static str,
}

/// The read model of a component that so far keeps only token versions.
pub struct TokenVersions<'a> {
    pub kv: &'a Kv,
}

impl Projection for TokenVersions<'_> {
    fn subscriptions(&self) -> &'static [(&'static str, &'static str)] {
        &[revocation::USER_EVENTS]
    }

    async fn apply(&self, tx: &crate::db::Tx<'_>, event: &Event) -> Result<(), ApiError> {
        revocation::apply(tx, event).await
    }

    async fn applied(&self, event: &Event) {
        revocation::cache(self.kv, event).await;
    }
}

/// Serves `routes`: health (`up` when the database responds), the event
/// endpoint and dispatch. Every other path is a 404, a known path with
/// another method a 405.
pub async fn serve(routes: &'static Routes, request: Request) -> Response {
    crate::http::serve(routes.component, request, async |ctx, request| {
        let path = request.uri().path();
        let method = request.method().as_str();
        if path == routes.health {
            ctx.set_route(routes.health);
            return match method {
                "GET" | "HEAD" => Ok(health(ctx).await),
                _ => Err(ApiError::MethodNotAllowed("GET, HEAD")),
            };
        }
        let route = [routes.events, routes.dispatch].into_iter().find(|route| *route == path);
        let Some(route) = route else { return Err(ApiError::NotFound("not found".into())) };
        ctx.set_route(route);
        if method != "POST" {
            return Err(ApiError::MethodNotAllowed("POST"));
        }
        if route == routes.dispatch {
            events::authorize_dispatch(&request).await?;
        }
        let db = Db::new(config::required_secret("db_url").await?, ctx.stats.clone());
        let service = ServiceKey::load(routes.component).await?;
        let kv = Kv::new(routes.component, ctx.stats.clone());
        let projection = TokenVersions { kv: &kv };
        if route == routes.events {
            events::receive(&db, &service, &projection, request).await
        } else {
            let inbox = events::dispatch_inbox(ctx, &db, &service, &projection).await?;
            Ok(json(StatusCode::OK, &serde_json::json!({ "inbox": inbox })))
        }
    })
    .await
}

/// Runs a health check: `up` when the component's database (its `db_url`
/// variable) runs a trivial query, `down` otherwise. The reason for `down`
/// goes to the log line only.
pub async fn health(ctx: &Ctx) -> Response {
    let outcome = match config::required_secret("db_url").await {
        Ok(url) => Db::new(url, ctx.stats.clone()).query("SELECT 1 AS up", Vec::new()).await.map(|_| ()).map_err(|e| e.to_string()),
        Err(error) => Err(error.to_string()),
    };
    match outcome {
        Ok(()) => health_up(),
        Err(reason) => {
            ctx.note_error(reason);
            with_body(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "down")
        }
    }
}
