//! The payments component. It will own creator payments: wallets, top-ups
//! through a payment provider, tips, refunds and the double-entry ledger behind
//! them. For now it serves only its health check.
//!
//! This file is the routing table. It matches on the request URI path, not on
//! the `spin-path-info` header, which a client can also send.

use shared::http;
use spin_sdk::http::{IntoResponse, Method, Request};
use spin_sdk::http_service;

const HEALTH_PATH: &str = "/health/payments";

#[http_service]
async fn handle(request: Request) -> impl IntoResponse {
    match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, HEALTH_PATH) => http::health_up(),
        (_, HEALTH_PATH) => http::method_not_allowed("GET, HEAD"),
        _ => http::not_found(),
    }
}
