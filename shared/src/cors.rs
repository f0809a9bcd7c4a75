//! Headers every response carries, and CORS for browser front ends served
//! from another origin.
//!
//! Every response gets `X-Content-Type-Options: nosniff` and
//! `Strict-Transport-Security` (browsers ignore the latter over plain HTTP,
//! so it matters where TLS is terminated in front of the app).
//!
//! CORS is off unless the `cors_allowed_origins` variable lists exact
//! origins (`https://app.example.com`, separated by commas; no wildcard,
//! since responses carry users' data). A request from a listed origin gets
//! `Access-Control-Allow-Origin` with that origin and `Vary: Origin`. A
//! preflight (`OPTIONS` with `Access-Control-Request-Method`) from one gets
//! `204` with the allowed methods and headers. Other origins get no CORS
//! headers, so browsers keep their responses from scripts.

use http::{HeaderMap, HeaderValue, header};
use spin_sdk::http::Request;

use crate::http::{Response, no_content};

/// The methods a front end may use across origins.
pub const ALLOWED_METHODS: &str = "GET, POST, PUT, DELETE";
/// The request headers a front end may send across origins.
pub const ALLOWED_HEADERS: &str = "authorization, content-type, idempotency-key";
/// How long a browser may reuse a preflight's response, in seconds.
pub const MAX_AGE_SECONDS: u32 = 600;
/// The `Strict-Transport-Security` value: two years, subdomains included.
pub const HSTS: &str = "max-age=63072000; includeSubDomains";

/// The origins allowed to call the API from a browser.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CorsPolicy {
    origins: Vec<String>,
}

impl CorsPolicy {
    /// Reads `cors_allowed_origins`; a component without the variable allows no origin.
    pub async fn load() -> Self {
        match spin_sdk::variables::get("cors_allowed_origins").await {
            Ok(list) => Self::parse(&list),
            Err(_) => Self::default(),
        }
    }

    /// Parses a comma-separated list of origins, dropping entries that are not
    /// an `http` or `https` scheme and host with no path.
    pub fn parse(list: &str) -> Self {
        let origins = list
            .split(',')
            .map(|origin| origin.trim().trim_end_matches('/').to_ascii_lowercase())
            .filter(|origin| {
                let rest = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
                rest.is_some_and(|host| !host.is_empty() && !host.contains('/') && !host.contains('*'))
            })
            .collect();
        Self { origins }
    }

    /// Returns the request's `Origin` when it is one of the allowed origins.
    pub fn allowed_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        let text = origin.to_str().ok()?.to_ascii_lowercase();
        self.origins.iter().any(|allowed| *allowed == text).then(|| origin.clone())
    }

    /// Builds the response to a preflight from an allowed origin; `None` for any other request.
    pub fn preflight(&self, request: &Request) -> Option<Response> {
        let is_preflight = request.method() == http::Method::OPTIONS
            && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        let origin = is_preflight.then(|| self.allowed_origin(request.headers())).flatten()?;
        let mut response = no_content();
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOWED_METHODS));
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOWED_HEADERS));
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(MAX_AGE_SECONDS));
        // `finish` adds the origin's other headers, as for every response.
        Some(response)
    }
}

/// Adds the headers every response carries, and CORS headers for an allowed origin.
pub fn finish(response: &mut Response, origin: Option<HeaderValue>) {
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
    if let Some(origin) = origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("x-request-id, retry-after, ratelimit, ratelimit-policy"));
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_origin(origin: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        headers
    }

    #[test]
    fn only_listed_origins_are_allowed() {
        let policy = CorsPolicy::parse(" https://app.example.com/, http://localhost:4200 ,*, https://*.example.com, ftp://x, https://x/y");

        assert_eq!(policy.origins, ["https://app.example.com", "http://localhost:4200"]);
        assert!(policy.allowed_origin(&with_origin("https://app.example.com")).is_some());
        assert!(policy.allowed_origin(&with_origin("HTTP://LOCALHOST:4200")).is_some());
        assert!(policy.allowed_origin(&with_origin("https://evil.example.com")).is_none());
        assert!(policy.allowed_origin(&HeaderMap::new()).is_none());
        assert!(CorsPolicy::parse("").allowed_origin(&with_origin("https://app.example.com")).is_none());
    }
}
