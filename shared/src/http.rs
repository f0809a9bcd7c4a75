//! HTTP conventions shared by the four components: the request context and
//! the wrapper every handler runs in ([`serve`]), routing on the request URI,
//! JSON bodies with a size limit, and responses in the error envelope
//! `{"errors": {"body": ["<message>", …], "<field>": [...]}}`.
//!
//! Components route on the request URI path, never on the `spin-path-info`
//! header, which a client can also send.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use spin_sdk::http::{FullBody, Request};

use crate::error::{ApiError, RETRY_AFTER_SECONDS};
use crate::telemetry::{RequestLog, Stats};

/// A complete response, built in memory.
pub type Response = http::Response<FullBody<Bytes>>;

/// The header that carries the request id back to the client.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The default maximum size of a JSON body, for routes that set none.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// The request context a handler gets next to the request.
pub struct Ctx {
    pub component: &'static str,
    /// Generated for every request, returned in `x-request-id` and logged.
    pub request_id: String,
    /// From a valid incoming `traceparent`, for the log line.
    pub trace_id: Option<String>,
    /// The request id of the component that made this call, when another
    /// component called through [`crate::service::ServiceKey::call`].
    pub caller_request_id: Option<String>,
    /// Counters for the log line; `Db` and `Kv` handles share them.
    pub stats: Rc<Stats>,
    route: Cell<&'static str>,
    note: std::cell::RefCell<Option<String>>,
    /// Headers for the response, whatever it turns out to be (rate-limit state).
    extra_headers: std::cell::RefCell<Vec<(&'static str, String)>>,
    /// The rules of a write admitted by `crate::ratelimit::admit`, for its per-user count.
    pub(crate) limits: std::cell::RefCell<Option<Rc<crate::ratelimit::Limits>>>,
}

impl Ctx {
    fn new(component: &'static str, headers: &HeaderMap) -> Self {
        let trace_id = headers
            .get_all("traceparent")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .find_map(crate::telemetry::trace_id)
            .map(str::to_string);
        let caller_request_id = headers
            .get(crate::service::CALLER_REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .filter(|id| id.len() == 24 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .map(str::to_string);
        Self {
            component,
            request_id: crate::ids::random_hex(12),
            trace_id,
            caller_request_id,
            stats: Rc::new(Stats::default()),
            route: Cell::new("unmatched"),
            note: std::cell::RefCell::new(None),
            extra_headers: Default::default(),
            limits: Default::default(),
        }
    }

    /// Records why a request that is not an error from the API's point of view
    /// still went wrong (a health check that found its database down), for
    /// the log line. The text follows the log rules: no personal data.
    pub fn note_error(&self, reason: impl Into<String>) {
        *self.note.borrow_mut() = Some(reason.into());
    }

    /// Returns a `traceparent` for a call this request makes: the same trace,
    /// a fresh parent id. Without an incoming trace there is none to continue.
    pub fn child_traceparent(&self) -> Option<String> {
        self.trace_id
            .as_ref()
            .map(|trace_id| format!("00-{trace_id}-{}-01", crate::ids::random_hex(8)))
    }

    /// Adds a header to this request's response, error responses included.
    /// A name added again gets the new value appended after a comma, as
    /// list-valued headers such as `RateLimit` combine.
    pub fn add_response_header(&self, name: &'static str, value: String) {
        let mut headers = self.extra_headers.borrow_mut();
        match headers.iter_mut().find(|(existing, _)| *existing == name) {
            Some((_, combined)) => {
                combined.push_str(", ");
                combined.push_str(&value);
            }
            None => headers.push((name, value)),
        }
    }

    /// Names the route pattern being served, for the log line.
    pub fn set_route(&self, route: &'static str) {
        self.route.set(route);
    }
}

/// Runs `handler` for one request: builds the context, responds to a CORS
/// preflight from an allowed origin, turns an error into the envelope (5xx
/// bodies carry only the request id), adds `x-request-id`, the headers of
/// `crate::cors` and `Cache-Control: no-store` when the request carried
/// credentials, and writes the request's log line. Requests to `/api/`
/// routes pass the rate limits of `crate::ratelimit` first.
pub async fn serve(
    component: &'static str,
    request: Request,
    handler: impl AsyncFnOnce(&Ctx, Request) -> Result<Response, ApiError>,
) -> Response {
    let started = Instant::now();
    let ctx = Ctx::new(component, request.headers());
    let method = request.method().to_string();
    let cors = crate::cors::CorsPolicy::load().await;
    let origin = cors.allowed_origin(request.headers());
    let authenticated = request.headers().contains_key(header::AUTHORIZATION);

    let class = crate::ratelimit::class_of(request.method().as_str(), request.uri().path());
    let outcome = match cors.preflight(&request) {
        Some(preflight) => {
            ctx.set_route("preflight");
            Ok(preflight)
        }
        None => match class {
            Some(class) => match crate::ratelimit::admit(&ctx, request.headers(), class).await {
                Ok(()) => handler(&ctx, request).await,
                Err(refused) => Err(refused),
            },
            None => handler(&ctx, request).await,
        },
    };
    let (mut response, error) = match outcome {
        Ok(response) => (response, None),
        Err(error) => (error_response(&error, &ctx.request_id), error.log_cause()),
    };
    crate::cors::finish(&mut response, origin);
    // A response to a request with credentials can hold the caller's own
    // data: no shared or browser cache may keep it.
    if authenticated && !response.headers().contains_key(header::CACHE_CONTROL) {
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    let error = error.or_else(|| ctx.note.borrow_mut().take());
    if let Ok(value) = HeaderValue::from_str(&ctx.request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    for (name, value) in ctx.extra_headers.borrow_mut().drain(..) {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }

    RequestLog {
        component,
        method: &method,
        route: ctx.route.get(),
        status: response.status().as_u16(),
        started,
        request_id: &ctx.request_id,
        trace_id: ctx.trace_id.as_deref(),
        caller_request_id: ctx.caller_request_id.as_deref(),
        stats: &ctx.stats,
        error,
    }
    .emit();
    response
}

/// Builds the response for an error: the envelope, plus `Allow`,
/// `Retry-After` or `WWW-Authenticate` where the status needs one.
pub fn error_response(error: &ApiError, request_id: &str) -> Response {
    let mut response = json(error.status(), &error.envelope(request_id));
    match error {
        ApiError::MethodNotAllowed(allow) => {
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        ApiError::Unavailable(_) => {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        ApiError::TooManyRequests { retry_after_seconds, .. } => {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_seconds));
        }
        // RFC 9110 requires a challenge on every 401. `Bearer` is the
        // registered scheme; the RealWorld `Token` scheme is accepted as well.
        ApiError::Unauthorized(_) => {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        _ => {}
    }
    response
}

/// Builds a response with a body and its content type.
pub fn with_body(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response {
    let mut response = http::Response::new(FullBody::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Builds a JSON response.
pub fn json(status: StatusCode, body: &serde_json::Value) -> Response {
    with_body(status, "application/json", body.to_string())
}

/// Builds a `204 No Content` response: no body and no content type.
pub fn no_content() -> Response {
    let mut response = http::Response::new(FullBody::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// Marks a response as not to be stored by any cache (it carries a token or a user's own data).
pub fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Returns the health response: `200` with `up` as plain text. Details of a
/// failing dependency go to the log, never into this body.
pub fn health_up() -> Response {
    with_body(StatusCode::OK, "text/plain", "up")
}

/// Splits a request path into percent-decoded segments:
/// `/api/profiles/Jos%C3%A9` gives `["api", "profiles", "José"]`. A trailing
/// slash gives an empty last segment, so `/api/user/` matches no route.
pub fn segments(path: &str) -> Result<Vec<String>, ApiError> {
    path.strip_prefix('/')
        .unwrap_or(path)
        .split('/')
        .map(percent_decode)
        .collect()
}

fn percent_decode(segment: &str) -> Result<String, ApiError> {
    decode_percent(segment, false)
        .ok_or_else(|| ApiError::BadRequest("the path is not valid percent-encoded UTF-8".into()))
}

/// Decodes `%XX` escapes, and `+` as a space when `plus_is_space` (query
/// strings); `None` for a broken escape or bytes that are not UTF-8.
pub(crate) fn decode_percent(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                decoded.push(u8::from_str_radix(text.get(i + 1..i + 3)?, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                decoded.push(b' ');
                i += 1;
            }
            byte => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
}

/// Reads a JSON body of at most `limit` bytes. A body that is not declared
/// as JSON gets 415, a larger one 413, one that does not parse 400.
pub async fn read_json(request: Request, limit: usize) -> Result<serde_json::Value, ApiError> {
    check_json_content_type(request.headers())?;
    parse_json(&read_bytes(request, limit).await?)
}

/// Reads a body of at most `limit` bytes, whatever its type: 413 when larger.
pub async fn read_bytes(request: Request, limit: usize) -> Result<Bytes, ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(ApiError::PayloadTooLarge(limit));
    }

    let body = Limited::new(request.into_body(), limit)
        .collect()
        .await
        .map_err(|error| {
            if error.is::<http_body_util::LengthLimitError>() {
                ApiError::PayloadTooLarge(limit)
            } else {
                ApiError::BadRequest("the request body could not be read".into())
            }
        })?
        .to_bytes();
    Ok(body)
}

/// Accepts `application/json`, with parameters (`; charset=utf-8`) or the `+json` suffix.
fn check_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let is_json = essence == "application/json"
        || essence.strip_prefix("application/").is_some_and(|subtype| subtype.ends_with("+json"));
    if is_json { Ok(()) } else { Err(ApiError::UnsupportedMediaType) }
}

/// The deepest nesting of arrays and objects a JSON body may have. No route
/// reads deeper than 3 levels; the parser's own limit (128) is far looser.
pub const MAX_JSON_DEPTH: usize = 16;

/// Returns the deepest nesting of arrays and objects in `body`, counting
/// brackets outside strings only, so a body is measured before it is parsed.
fn json_depth(body: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Parses a JSON body. The error gives where parsing stopped, never what the
/// body contained. Nesting deeper than [`MAX_JSON_DEPTH`] is a 422.
pub fn parse_json(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    if json_depth(body) > MAX_JSON_DEPTH {
        return Err(ApiError::invalid("body", format!("nests arrays and objects deeper than {MAX_JSON_DEPTH} levels")));
    }
    serde_json::from_slice(body).map_err(|error| {
        ApiError::BadRequest(format!(
            "the body is not valid JSON (line {}, column {})",
            error.line(),
            error.column()
        ))
    })
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use http_body::Body;

    use super::*;

    /// Reads a `FullBody` without an async runtime: it yields its one frame at once.
    fn body_text(response: Response) -> String {
        let mut body = pin!(response.into_body());
        let mut context = Context::from_waker(Waker::noop());
        let mut text = String::new();
        while let Poll::Ready(Some(Ok(frame))) = body.as_mut().poll_frame(&mut context) {
            if let Ok(data) = frame.into_data() {
                text.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
        text
    }

    #[test]
    fn json_depth_counts_brackets_outside_strings() {
        assert_eq!(json_depth(br#"{"user": {"tags": ["a"]}}"#), 3);
        assert_eq!(json_depth(br#"{"text": "[[[[{{{{\"]]"}"#), 1);
        assert_eq!(json_depth(b"17"), 0);
        let deep = format!("{}{}", "[".repeat(17), "]".repeat(17));
        assert!(matches!(parse_json(deep.as_bytes()), Err(ApiError::Validation(_))));
        let allowed = format!("{}{}", "[".repeat(16), "]".repeat(16));
        assert!(parse_json(allowed.as_bytes()).is_ok());
    }

    #[test]
    fn error_envelope_escapes_its_message() {
        let response = error_response(&ApiError::Conflict(r#"a "quoted" \ message"#.into()), "r1");

        assert_eq!(response.status(), 409);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body: serde_json::Value = serde_json::from_str(&body_text(response)).unwrap();
        assert_eq!(body, serde_json::json!({"errors": {"body": [r#"a "quoted" \ message"#]}}));
    }

    #[test]
    fn method_not_allowed_lists_allowed_methods() {
        let response = error_response(&ApiError::MethodNotAllowed("GET"), "r1");

        assert_eq!(response.status(), 405);
        assert_eq!(response.headers()[header::ALLOW], "GET");
    }

    #[test]
    fn unavailable_asks_the_client_to_retry() {
        let response = error_response(&ApiError::Unavailable("database unavailable".into()), "r9");

        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let text = body_text(response);
        assert!(text.contains("r9"), "{text}");
        assert!(!text.contains("database"), "{text}");
    }

    #[test]
    fn unauthorized_carries_a_challenge() {
        let response = error_response(&ApiError::Unauthorized("the token has expired".into()), "r1");

        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }

    #[test]
    fn health_up_is_plain_text() {
        let response = health_up();

        assert_eq!(response.status(), 200);
        assert_eq!(body_text(response), "up");
    }

    #[test]
    fn segments_are_percent_decoded() {
        assert_eq!(segments("/api/profiles/Jos%C3%A9").unwrap(), ["api", "profiles", "José"]);
        assert_eq!(segments("/api/user/").unwrap(), ["api", "user", ""]);
        assert_eq!(segments("/a%2Fb").unwrap(), ["a/b"]);
        assert!(matches!(segments("/bad%zz"), Err(ApiError::BadRequest(_))));
        assert!(matches!(segments("/bad%ff"), Err(ApiError::BadRequest(_))));
        assert!(matches!(segments("/cut%4"), Err(ApiError::BadRequest(_))));
    }

    #[test]
    fn only_json_content_types_are_accepted() {
        let headers = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            headers
        };

        assert!(check_json_content_type(&headers("application/json")).is_ok());
        assert!(check_json_content_type(&headers("Application/JSON; charset=utf-8")).is_ok());
        assert!(check_json_content_type(&headers("application/merge-patch+json")).is_ok());
        assert!(check_json_content_type(&headers("text/plain")).is_err());
        assert!(check_json_content_type(&HeaderMap::new()).is_err());
    }

    #[test]
    fn parse_errors_give_the_position_only() {
        let error = parse_json(br#"{"user": {"password": "hunter2""#).unwrap_err();

        let ApiError::BadRequest(message) = error else { panic!("expected 400") };
        assert!(message.starts_with("the body is not valid JSON (line 1"), "{message}");
        assert!(!message.contains("hunter2"));
    }
}
