//! The feed component. It will own articles: the global list, each user's
//! personal feed, comments, favourites and tags. For now it serves only its
//! health check.
//!
//! This file is the routing table. It matches on the request URI path, not on
//! the `spin-path-info` header.

use spin_sdk::http::{HeaderMap, HeaderValue, IntoResponse, Method, Request, StatusCode};
use spin_sdk::http_service;

const HEALTH_PATH: &str = "/health/feed";

#[http_service]
async fn handle(request: Request) -> impl IntoResponse {
    match (request.method(), request.uri().path()) {
        (&Method::GET, HEALTH_PATH) => text(StatusCode::OK, "up"),
        (_, HEALTH_PATH) => method_not_allowed("GET"),
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

fn text(status: StatusCode, body: &str) -> (StatusCode, HeaderMap, String) {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/plain"));
    (status, headers, body.to_owned())
}

/// Builds the JSON error envelope `{"errors":{"body":[message]}}`. The
/// message is written as is, so it must not contain `"` or `\`.
fn error(status: StatusCode, message: &str) -> (StatusCode, HeaderMap, String) {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let body = format!(r#"{{"errors":{{"body":["{message}"]}}}}"#);
    (status, headers, body)
}

fn method_not_allowed(allow: &'static str) -> (StatusCode, HeaderMap, String) {
    let (status, mut headers, body) = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    headers.insert("allow", HeaderValue::from_static(allow));
    (status, headers, body)
}
