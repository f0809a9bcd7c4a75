//! The payments component: wallets, top-ups through a payment provider (see
//! `provider.rs`), the double-entry ledger behind them (`ledger.rs`),
//! idempotency keys (`idempotency.rs`), and a read model of profiles' users
//! (`events.rs`). Tips move money between wallets (`routes/tips.rs`), and
//! admins refund tips and top-ups (`routes/refunds.rs`).
//!
//! This file is the routing table. It matches on the request URI path, not on
//! the `spin-path-info` header, which a client can also send.

mod app;
mod events;
mod idempotency;
mod ledger;
mod provider;
mod routes;
mod settle;
mod store;

use shared::ApiError;
use shared::http::{Ctx, Response};
use spin_sdk::http::{IntoResponse, Method, Request};
use spin_sdk::http_service;

/// Every route this component serves.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Wallet,
    TopUp,
    Tip,
    Refund(String),
    Payments,
    Payment(String),
    Webhook,
    LedgerCheck,
    Events,
    Dispatch,
    Health,
}

/// Maps a method and path onto a route. Returns the route's pattern for the
/// log line (never the path, which contains ids) next to the route: 404 for
/// an unknown path, 405 with `Allow` for a known path and another method.
fn resolve(method: &Method, path: &str) -> (&'static str, Result<Route, ApiError>) {
    const UNMATCHED: &str = "unmatched";
    let segments = match shared::http::segments(path) {
        Ok(segments) => segments,
        Err(error) => return (UNMATCHED, Err(error)),
    };
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let m = method.as_str();
    let only = |wanted: &'static str, route: Route| if m == wanted { Ok(route) } else { Err(ApiError::MethodNotAllowed(wanted)) };
    match segments.as_slice() {
        ["api", "wallet"] => ("/api/wallet", only("GET", Route::Wallet)),
        ["api", "wallet", "top-ups"] => ("/api/wallet/top-ups", only("POST", Route::TopUp)),
        ["api", "tips"] => ("/api/tips", only("POST", Route::Tip)),
        ["api", "payments"] => ("/api/payments", only("GET", Route::Payments)),
        ["api", "payments", id, "refund"] if !id.is_empty() => ("/api/payments/:id/refund", only("POST", Route::Refund(id.to_string()))),
        ["api", "payments", "webhooks", "provider"] => ("/api/payments/webhooks/provider", only("POST", Route::Webhook)),
        ["api", "payments", id] if !id.is_empty() => ("/api/payments/:id", only("GET", Route::Payment(id.to_string()))),
        ["api", "admin", "ledger", "check"] => ("/api/admin/ledger/check", only("GET", Route::LedgerCheck)),
        ["internal", "payments", "events"] => ("/internal/payments/events", only("POST", Route::Events)),
        ["ops", "payments", "dispatch"] => ("/ops/payments/dispatch", only("POST", Route::Dispatch)),
        ["health", "payments"] => (
            "/health/payments",
            if matches!(m, "GET" | "HEAD") { Ok(Route::Health) } else { Err(ApiError::MethodNotAllowed("GET, HEAD")) },
        ),
        _ => (UNMATCHED, Err(ApiError::NotFound("not found".into()))),
    }
}

#[http_service]
async fn handle(request: Request) -> impl IntoResponse {
    shared::http::serve("payments", request, dispatch).await
}

async fn dispatch(ctx: &Ctx, request: Request) -> Result<Response, ApiError> {
    let (pattern, route) = resolve(request.method(), request.uri().path());
    ctx.set_route(pattern);
    let route = route?;
    if route == Route::Health {
        return Ok(shared::platform::health(ctx).await);
    }

    let app = app::App::load(ctx).await?;
    use routes::{admin, history, ops, refunds, tips, wallet, webhooks};
    match route {
        Route::Wallet => wallet::balances(&app, request).await,
        Route::TopUp => wallet::top_up(&app, request).await,
        Route::Tip => tips::create(&app, request).await,
        Route::Refund(id) => refunds::create(&app, request, &id).await,
        Route::Payments => history::list(&app, request).await,
        Route::Payment(id) => history::get(&app, request, &id).await,
        Route::Webhook => webhooks::receive(&app, request).await,
        Route::LedgerCheck => admin::check_ledger(&app, request).await,
        Route::Events => ops::receive(&app, request).await,
        Route::Dispatch => ops::dispatch(&app, request).await,
        Route::Health => unreachable!("answered above"),
    }
}
