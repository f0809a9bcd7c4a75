//! The payments component. It will own creator payments: wallets, top-ups
//! through a payment provider, tips, refunds and the double-entry ledger behind
//! them. For now it serves only its health check.
//!
//! This file is the routing table. It matches on the request URI path, not on
//! the `spin-path-info` header, which a client can also send.

use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;

#[http_service]
async fn handle(request: Request) -> impl IntoResponse {
    shared::http::serve_health_only("payments", "/health/payments", request).await
}
