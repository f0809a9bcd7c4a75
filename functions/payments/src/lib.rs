//! The payments component. It will own creator payments: wallets, top-ups
//! through a payment provider, tips, refunds and the double-entry ledger behind
//! them. For now it serves its health check, keeps the token versions of
//! profiles' user events and runs its dispatch (see `shared::platform`).
//!
//! This file is the routing table. It matches on the request URI path, not on
//! the `spin-path-info` header, which a client can also send.

use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;

static ROUTES: shared::platform::Routes = shared::platform::Routes {
    component: "payments",
    health: "/health/payments",
    events: "/internal/payments/events",
    dispatch: "/ops/payments/dispatch",
};

#[http_service]
async fn handle(request: Request) -> impl IntoResponse {
    shared::platform::serve(&ROUTES, request).await
}
