//! A fake of the Brevo transactional email API (v3) on loopback, so black-box
//! tests can check the emails a component sends without the internet.
//!
//! It serves `POST /v3/smtp/email` with Brevo's `api-key` header, its request
//! fields (`sender`, `to`, `subject`, `htmlContent`, `textContent`, `headers`,
//! `replyTo`, `tags`, `params`) and its error bodies, `{"code", "message"}`.
//! Tests read the accepted emails and every request, and inject errors and hangs.
//!
//! NOTE: only emails with inline content are modelled. The fake has no
//! templates (`templateId`), so a body that relies on one is rejected for
//! missing content. It does not check or use attachments, batch sends
//! (`messageVersions`), `scheduledAt`, `cc`, `bcc` or sender ids, and it accepts
//! a scheduled email as sent at once. It has no idempotency because Brevo
//! documents none for this endpoint, so a repeated request sends a second email.

use std::collections::{BTreeMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};

use crate::fake_server::{self, FakeServer, Fault};

/// The only API key the fake accepts. It has the shape of a Brevo v3 key:
/// `xkeysib-`, 64 hex digits, `-` and 16 alphanumerics.
pub const API_KEY: &str = "xkeysib-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef-FakeBrevoTestKey";

const SEND_PATH: &str = "/v3/smtp/email";

/// The maximum length of an email address in bytes. RFC 5321, section 4.5.3.1.3, limits
/// a path to 256 octets, and that count includes the angle brackets.
const MAX_ADDRESS_LENGTH: usize = 254;

/// A fake Brevo API served from its own thread and Tokio runtime, so it works
/// under any test runtime. Dropping it stops the server and closes every open
/// connection, including the ones held by [`FakeBrevo::hang_next`].
pub struct FakeBrevo {
    server: FakeServer<State>,
}

/// An email the fake accepted with a 201.
#[derive(Clone, Debug)]
pub struct SentEmail {
    /// The id returned in the 201 response, angle brackets included.
    pub message_id: String,
    /// The address of `sender.email`.
    pub sender: String,
    /// The addresses of `to`, in request order.
    pub to: Vec<String>,
    pub subject: String,
    /// The `textContent` field.
    pub text: Option<String>,
    /// The `htmlContent` field.
    pub html: Option<String>,
    /// The `headers` object of the request body, empty when absent.
    pub headers: BTreeMap<String, String>,
    /// The whole request body, unknown fields included.
    pub body: Value,
}

/// A request the fake received, whatever the response.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// The path without the query, such as `/v3/smtp/email`.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The status code of the response, or 0 if the fake sent none because the
    /// request is held by [`FakeBrevo::hang_next`] or its client went away first.
    pub status: u16,
}

impl FakeBrevo {
    /// Binds 127.0.0.1 on a free port and starts serving in the background.
    pub fn start() -> FakeBrevo {
        let server = FakeServer::start("Brevo", |_| State::default(), handle);
        FakeBrevo { server }
    }

    /// Returns `http://127.0.0.1:<port>`, without a trailing slash. API paths start with `/v3/`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// Returns the key the fake accepts in the `api-key` header.
    pub fn api_key(&self) -> &str {
        API_KEY
    }

    /// Returns the accepted emails, oldest first.
    pub fn emails(&self) -> Vec<SentEmail> {
        self.lock().emails.clone()
    }

    /// Returns the accepted emails with `address` in `to`, compared ignoring ASCII case, oldest first.
    pub fn emails_to(&self, address: &str) -> Vec<SentEmail> {
        let state = self.lock();
        let matches = |email: &&SentEmail| email.to.iter().any(|to| to.eq_ignore_ascii_case(address));
        state.emails.iter().filter(matches).cloned().collect()
    }

    /// Returns every request received so far, rejected ones included, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Makes the next `count` requests to `POST /v3/smtp/email` fail with
    /// `status` (400 to 599) and a Brevo error body, before the key or the body
    /// is checked. Faults queue up in call order with those of [`FakeBrevo::hang_next`].
    pub fn fail_next(&self, count: usize, status: u16) {
        let fault = Fault::failure(status);
        self.lock().faults.extend(std::iter::repeat_n(fault, count));
    }

    /// Makes the next `count` requests to `POST /v3/smtp/email` get no
    /// response: each connection stays open until the fake is dropped or 10
    /// minutes pass. Faults queue up in call order with those of [`FakeBrevo::fail_next`].
    pub fn hang_next(&self, count: usize) {
        self.lock().faults.extend(std::iter::repeat_n(Fault::Hang, count));
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.server.lock()
    }
}

/// The fake's data. No code panics while it holds the lock, so a poisoned lock
/// still guards consistent data.
#[derive(Default)]
struct State {
    emails: Vec<SentEmail>,
    requests: Vec<RecordedRequest>,
    faults: VecDeque<Fault>,
    id_hasher: RandomState,
    ids_made: u64,
}

impl State {
    /// Validates a request that no fault picked, and records the email if the request is a valid send.
    fn route(&mut self, parts: &Parts, body: &Bytes) -> ApiResponse {
        let path = parts.uri.path();
        if path != SEND_PATH {
            let message = format!("Path {path} not found. The fake Brevo API serves only POST {SEND_PATH}.");
            return ApiResponse::error(404, "not_found", message);
        }
        if parts.method != Method::POST {
            let mut response = ApiResponse::error(
                405,
                "method_not_allowed",
                format!("Method {} is not allowed on {SEND_PATH}. Use POST.", parts.method),
            );
            response.allow = Some("POST");
            return response;
        }
        if parts.headers.get("api-key").map(|key| key.as_bytes()) != Some(API_KEY.as_bytes()) {
            return ApiResponse::error(401, "unauthorized", "Key not found");
        }
        if !has_json_content_type(&parts.headers) {
            let message = match parts.headers.get(header::CONTENT_TYPE) {
                Some(value) => {
                    let value = String::from_utf8_lossy(value.as_bytes());
                    format!("Content-Type {value} is not supported. Send application/json.")
                }
                None => "Content-Type is missing. Send application/json.".to_string(),
            };
            return ApiResponse::error(400, "bad_request", message);
        }
        let body: Value = match serde_json::from_slice(body) {
            Ok(body) => body,
            Err(error) => {
                return ApiResponse::error(400, "bad_request", format!("The body is not valid JSON: {error}"));
            }
        };
        let mut email = match parse_email(&body) {
            Ok(email) => email,
            Err(response) => return response,
        };

        email.message_id = self.new_message_id();
        let response = ApiResponse::new(201, json!({"messageId": email.message_id}));
        self.emails.push(email);
        response
    }

    /// Makes a message id `<YYYYMMDDhhmmss.NNNNNNNNNNNN@smtp-relay.mailin.fr>` from the UTC time
    /// and 12 random digits, unused by this fake so far.
    /// NOTE: ids that Brevo returned in public logs have a shorter time (`YYYYMMDDhhmm`) and
    /// 11 digits, so clients should treat the id as an opaque string.
    fn new_message_id(&mut self) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("the clock is after 1970").as_secs();
        let timestamp = compact_utc_timestamp(now);
        loop {
            self.ids_made += 1;
            let digits = self.id_hasher.hash_one(self.ids_made) % 1_000_000_000_000;
            let id = format!("<{timestamp}.{digits:012}@smtp-relay.mailin.fr>");
            if !self.emails.iter().any(|email| email.message_id == id) {
                return id;
            }
        }
    }
}

async fn handle(state: Arc<Mutex<State>>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map(|collected| collected.to_bytes());
    let is_send = parts.method == Method::POST && parts.uri.path() == SEND_PATH;

    let (index, fault) = {
        let mut state = fake_server::lock(&state);
        state.requests.push(RecordedRequest {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            headers: parts.headers.clone(),
            body: body.as_ref().cloned().unwrap_or_default(),
            status: 0,
        });
        let fault = if is_send { state.faults.pop_front() } else { None };
        (state.requests.len() - 1, fault)
    };

    if let Some(Fault::Hang) = fault {
        fake_server::hang().await;
    }

    let mut state = fake_server::lock(&state);
    let response = match (fault, body) {
        (Some(Fault::Fail(status)), _) => ApiResponse::injected(status),
        (Some(Fault::Hang), _) => {
            let message = "The fake Brevo API held this request for 10 minutes because a test called hang_next";
            ApiResponse::error(504, "internal_error", message)
        }
        (None, Err(error)) => {
            ApiResponse::error(400, "bad_request", format!("Reading the request body failed: {error}"))
        }
        (None, Ok(body)) => state.route(&parts, &body),
    };
    state.requests[index].status = response.status.as_u16();
    response.into_response()
}

/// A response before it is encoded: status, JSON body and, for 405, the `Allow` header.
struct ApiResponse {
    status: StatusCode,
    body: Value,
    allow: Option<&'static str>,
}

impl ApiResponse {
    fn new(status: u16, body: Value) -> Self {
        Self { status: StatusCode::from_u16(status).expect("a valid HTTP status"), body, allow: None }
    }

    /// Builds Brevo's error body, `{"code": ..., "message": ...}`.
    fn error(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self::new(status, json!({"code": code, "message": message.into()}))
    }

    /// Builds the error that [`FakeBrevo::fail_next`] injects. A status without a Brevo code
    /// here gets its reason phrase in snake case, such as `conflict` for 409.
    fn injected(status: u16) -> Self {
        let code = match status {
            400 => "invalid_parameter".to_string(),
            401 => "unauthorized".to_string(),
            404 => "not_found".to_string(),
            405 => "method_not_allowed".to_string(),
            429 => "too_many_requests".to_string(),
            500..=599 => "internal_error".to_string(),
            _ => StatusCode::from_u16(status)
                .ok()
                .and_then(|status| status.canonical_reason())
                .map(|reason| reason.to_ascii_lowercase().replace([' ', '-'], "_"))
                .unwrap_or_else(|| "error".to_string()),
        };
        let message = format!("The fake Brevo API returned {status} because a test called fail_next");
        Self::error(status, &code, message)
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let mut response =
            Response::builder().status(self.status).header(header::CONTENT_TYPE, "application/json; charset=utf-8");
        if let Some(allow) = self.allow {
            response = response.header(header::ALLOW, allow);
        }
        response.body(Full::new(Bytes::from(self.body.to_string()))).expect("the fake Brevo response is valid")
    }
}

fn has_json_content_type(headers: &HeaderMap) -> bool {
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next());
    media_type.is_some_and(|media_type| media_type.trim().eq_ignore_ascii_case("application/json"))
}

fn missing(field: &str) -> ApiResponse {
    ApiResponse::error(400, "missing_parameter", format!("{field} is missing"))
}

fn invalid(message: impl Into<String>) -> ApiResponse {
    ApiResponse::error(400, "invalid_parameter", message)
}

/// Validates a send request body and returns its email, with an empty message id.
fn parse_email(body: &Value) -> Result<SentEmail, ApiResponse> {
    let Some(fields) = body.as_object() else {
        return Err(ApiResponse::error(400, "bad_request", "The body must be a JSON object"));
    };

    let sender = match present(fields, "sender") {
        Some(sender) => parse_contact(sender, "sender")?,
        None => return Err(missing("sender")),
    };
    let to = match present(fields, "to") {
        None => return Err(missing("to")),
        Some(Value::Array(entries)) if entries.is_empty() => return Err(missing("to")),
        Some(Value::Array(entries)) => {
            entries.iter().map(|entry| parse_contact(entry, "to")).collect::<Result<_, _>>()?
        }
        Some(_) => return Err(invalid("to is not valid. It must be an array of objects with an email")),
    };
    let subject = match optional_string(fields, "subject")? {
        Some(subject) if !subject.is_empty() => subject,
        _ => return Err(missing("subject")),
    };
    let html = optional_string(fields, "htmlContent")?;
    let text = optional_string(fields, "textContent")?;
    if html.iter().chain(&text).all(|content| content.is_empty()) {
        return Err(missing("htmlContent or textContent"));
    }

    let headers = match present(fields, "headers") {
        None => BTreeMap::new(),
        Some(Value::Object(headers)) => headers
            .iter()
            .map(|(name, value)| value.as_str().map(|value| (name.clone(), value.to_string())))
            .collect::<Option<_>>()
            .ok_or_else(|| invalid("headers is not valid. Each value must be a string"))?,
        Some(_) => return Err(invalid("headers is not valid. It must be an object of strings")),
    };
    if let Some(reply_to) = present(fields, "replyTo") {
        parse_contact(reply_to, "replyTo")?;
    }
    if let Some(tags) = present(fields, "tags") {
        let all_strings = tags.as_array().is_some_and(|tags| tags.iter().all(Value::is_string));
        if !all_strings {
            return Err(invalid("tags is not valid. It must be an array of strings"));
        }
    }
    if present(fields, "params").is_some_and(|params| !params.is_object()) {
        return Err(invalid("params is not valid. It must be an object"));
    }

    Ok(SentEmail { message_id: String::new(), sender, to, subject, text, html, headers, body: body.clone() })
}

/// Returns a field unless it is absent or null, so the fake treats a null field as absent.
fn present<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    fields.get(name).filter(|value| !value.is_null())
}

fn optional_string(fields: &Map<String, Value>, name: &str) -> Result<Option<String>, ApiResponse> {
    match present(fields, name) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(invalid(format!("{name} is not valid. It must be a string"))),
    }
}

/// Validates a `{"email", "name"}` object of the field `field` and returns its address.
fn parse_contact(value: &Value, field: &str) -> Result<String, ApiResponse> {
    let Some(contact) = value.as_object() else {
        return Err(invalid(format!("{field} is not valid. It must be an object with an email")));
    };
    let address = match present(contact, "email") {
        None => return Err(ApiResponse::error(400, "missing_parameter", format!("email is missing in {field}"))),
        Some(Value::String(address)) if is_plausible_address(address) => address.clone(),
        Some(_) => return Err(invalid(format!("email is not valid in {field}"))),
    };
    if present(contact, "name").is_some_and(|name| !name.is_string()) {
        return Err(invalid(format!("name is not valid in {field}")));
    }
    Ok(address)
}

/// Checks the shape of an address, not its syntax: one `@` with text on both
/// sides, no whitespace or control characters, and at most 254 bytes.
fn is_plausible_address(address: &str) -> bool {
    let Some((local, domain)) = address.split_once('@') else {
        return false;
    };
    address.len() <= MAX_ADDRESS_LENGTH
        && !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && !address.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Formats seconds since 1970-01-01 UTC as `YYYYMMDDhhmmss` in UTC.
fn compact_utc_timestamp(unix_seconds: u64) -> String {
    let is_leap = |year: u64| year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    let mut days = unix_seconds / 86_400;
    let mut year = 1970;
    while days >= if is_leap(year) { 366 } else { 365 } {
        days -= if is_leap(year) { 366 } else { 365 };
        year += 1;
    }
    let february = if is_leap(year) { 29 } else { 28 };
    let mut month = 1;
    for month_length in [31, february, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31] {
        if days < month_length {
            break;
        }
        days -= month_length;
        month += 1;
    }

    let second_of_day = unix_seconds % 86_400;
    let (hour, minute, second) = (second_of_day / 3600, second_of_day % 3600 / 60, second_of_day % 60);
    format!("{year:04}{month:02}{:02}{hour:02}{minute:02}{second:02}", days + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Reply;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Sends a request to the fake, with a 10 s limit.
    async fn send(fake: &FakeBrevo, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        fake_server::send(&fake.base_url(), method, path, headers, body).await
    }

    /// Sends `body` to the send endpoint with the valid key, with a 10 s limit.
    async fn post_email(fake: &FakeBrevo, body: &Value) -> Reply {
        let headers = [("api-key", fake.api_key()), ("content-type", "application/json")];
        send(fake, "POST", SEND_PATH, &headers, &body.to_string()).await
    }

    fn email_body(to: &str) -> Value {
        json!({
            "sender": {"name": "Conduit", "email": "no-reply@conduit.example"},
            "to": [{"email": to, "name": "Ann"}],
            "subject": "Confirm your email",
            "htmlContent": "<p>Welcome</p>",
            "textContent": "Welcome",
            "headers": {"X-Conduit-Kind": "confirm-email"},
            "tags": ["confirm-email"],
            "params": {"name": "Ann"},
            "trackOpens": false,
        })
    }

    fn assert_error(reply: &Reply, status: u16, code: &str) {
        assert_eq!(reply.status, status, "{}", reply.text());
        assert_eq!(reply.header("content-type"), Some("application/json; charset=utf-8"));
        let body = reply.json();
        assert_eq!(body["code"], code, "{body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    }

    #[test]
    fn api_key_has_brevo_shape() {
        let (hex, suffix) = API_KEY.strip_prefix("xkeysib-").unwrap().split_once('-').unwrap();
        assert_eq!(hex.len(), 64);
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()), "{hex}");
        assert_eq!(suffix.len(), 16);
        assert!(suffix.chars().all(|c| c.is_ascii_alphanumeric()), "{suffix}");
    }

    #[test]
    fn timestamp_is_utc_calendar_time() {
        assert_eq!(compact_utc_timestamp(0), "19700101000000");
        assert_eq!(compact_utc_timestamp(951_782_400), "20000229000000");
        assert_eq!(compact_utc_timestamp(1_709_251_199), "20240229235959");
        assert_eq!(compact_utc_timestamp(1_735_689_599), "20241231235959");
    }

    #[tokio::test]
    async fn accepted_email_is_recorded() {
        let fake = FakeBrevo::start();
        assert!(fake.base_url().starts_with("http://127.0.0.1:"), "{}", fake.base_url());
        assert!(!fake.base_url().ends_with('/'));

        let reply = post_email(&fake, &email_body("ann@example.com")).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        assert_eq!(reply.header("content-type"), Some("application/json; charset=utf-8"));
        let message_id = reply.json()["messageId"].as_str().unwrap().to_string();
        let (timestamp, rest) = message_id.strip_prefix('<').unwrap().split_once('.').unwrap();
        assert_eq!(timestamp.len(), 14, "{message_id}");
        assert!(timestamp.chars().all(|c| c.is_ascii_digit()), "{message_id}");
        let digits = rest.strip_suffix("@smtp-relay.mailin.fr>").unwrap();
        assert_eq!(digits.len(), 12, "{message_id}");
        assert!(digits.chars().all(|c| c.is_ascii_digit()), "{message_id}");

        let emails = fake.emails();
        assert_eq!(emails.len(), 1);
        let email = &emails[0];
        assert_eq!(email.message_id, message_id);
        assert_eq!(email.sender, "no-reply@conduit.example");
        assert_eq!(email.to, ["ann@example.com"]);
        assert_eq!(email.subject, "Confirm your email");
        assert_eq!(email.text.as_deref(), Some("Welcome"));
        assert_eq!(email.html.as_deref(), Some("<p>Welcome</p>"));
        assert_eq!(email.headers.get("X-Conduit-Kind").map(String::as_str), Some("confirm-email"));
        assert_eq!(email.body, email_body("ann@example.com"));

        let second = post_email(&fake, &email_body("bob@example.com")).await;
        assert_eq!(second.status, 201, "{}", second.text());
        assert_ne!(second.json()["messageId"], message_id.as_str());
        assert_eq!(fake.emails().len(), 2);
        assert_eq!(fake.emails_to("ANN@example.com").len(), 1);
        assert_eq!(fake.emails_to("bob@example.com")[0].to, ["bob@example.com"]);
        assert!(fake.emails_to("carol@example.com").is_empty());
    }

    #[tokio::test]
    async fn wrong_or_missing_key_gets_401() {
        let fake = FakeBrevo::start();
        let body = email_body("ann@example.com").to_string();
        let wrong = [("api-key", "xkeysib-wrong"), ("content-type", "application/json")];
        let reply = send(&fake, "POST", SEND_PATH, &wrong, &body).await;
        assert_error(&reply, 401, "unauthorized");
        assert_eq!(reply.json()["message"], "Key not found");

        let reply = send(&fake, "POST", SEND_PATH, &[("content-type", "application/json")], &body).await;
        assert_error(&reply, 401, "unauthorized");
        assert!(fake.emails().is_empty());
    }

    #[tokio::test]
    async fn missing_fields_get_missing_parameter() {
        let fake = FakeBrevo::start();
        let mut body = email_body("ann@example.com");
        body.as_object_mut().unwrap().remove("subject");
        let reply = post_email(&fake, &body).await;
        assert_error(&reply, 400, "missing_parameter");
        assert_eq!(reply.json()["message"], "subject is missing");

        // A null field counts as absent.
        let cases = [
            ("subject", json!(""), "subject is missing"),
            ("sender", Value::Null, "sender is missing"),
            ("sender", json!({"name": "Conduit"}), "email is missing in sender"),
            ("to", Value::Null, "to is missing"),
            ("to", json!([]), "to is missing"),
            ("to", json!([{"name": "Ann"}]), "email is missing in to"),
        ];
        for (field, value, message) in cases {
            let mut body = email_body("ann@example.com");
            body[field] = value;
            let reply = post_email(&fake, &body).await;
            assert_error(&reply, 400, "missing_parameter");
            assert_eq!(reply.json()["message"], message, "{field}");
        }

        let mut body = email_body("ann@example.com");
        body.as_object_mut().unwrap().remove("htmlContent");
        body["textContent"] = json!("");
        let reply = post_email(&fake, &body).await;
        assert_error(&reply, 400, "missing_parameter");
        assert_eq!(reply.json()["message"], "htmlContent or textContent is missing");
        assert!(fake.emails().is_empty());
    }

    #[tokio::test]
    async fn bad_addresses_get_invalid_parameter() {
        let fake = FakeBrevo::start();
        let too_long = format!("{}@example.com", "a".repeat(243));
        assert_eq!(too_long.len(), 255);
        for address in
            ["ann.example.com", "@example.com", "ann@", "ann@@example.com", "a@b@c", "ann @example.com", &too_long]
        {
            let reply = post_email(&fake, &email_body(address)).await;
            assert_error(&reply, 400, "invalid_parameter");
            assert_eq!(reply.json()["message"], "email is not valid in to", "{address}");

            let mut body = email_body("ann@example.com");
            body["sender"]["email"] = json!(address);
            let reply = post_email(&fake, &body).await;
            assert_error(&reply, 400, "invalid_parameter");
            assert_eq!(reply.json()["message"], "email is not valid in sender", "{address}");
        }

        let longest = format!("{}@example.com", "a".repeat(242));
        assert_eq!(post_email(&fake, &email_body(&longest)).await.status, 201);
        assert_eq!(fake.emails().len(), 1);
    }

    #[tokio::test]
    async fn wrong_field_types_get_invalid_parameter() {
        let fake = FakeBrevo::start();
        let cases = [
            ("to", json!({"email": "ann@example.com"})),
            ("subject", json!(12)),
            ("textContent", json!(["Welcome"])),
            ("headers", json!({"X-Count": 3})),
            ("tags", json!("confirm-email")),
            ("params", json!([1])),
            ("replyTo", json!({"email": "support"})),
        ];
        for (field, value) in cases {
            let mut body = email_body("ann@example.com");
            body[field] = value;
            let reply = post_email(&fake, &body).await;
            assert_error(&reply, 400, "invalid_parameter");
        }
        assert!(fake.emails().is_empty());
    }

    #[tokio::test]
    async fn malformed_requests_get_400_404_405() {
        let fake = FakeBrevo::start();
        let key = fake.api_key();
        let body = email_body("ann@example.com").to_string();

        let reply = send(&fake, "POST", SEND_PATH, &[("api-key", key), ("content-type", "text/plain")], &body).await;
        assert_error(&reply, 400, "bad_request");
        let reply = send(&fake, "POST", SEND_PATH, &[("api-key", key)], &body).await;
        assert_error(&reply, 400, "bad_request");
        let json_headers = [("api-key", key), ("content-type", "application/json")];
        let reply = send(&fake, "POST", SEND_PATH, &json_headers, "{\"sender\":").await;
        assert_error(&reply, 400, "bad_request");
        let reply = send(&fake, "POST", SEND_PATH, &json_headers, "[]").await;
        assert_error(&reply, 400, "bad_request");

        let reply = send(&fake, "POST", "/v3/smtp/emails", &json_headers, &body).await;
        assert_error(&reply, 404, "not_found");
        let reply = send(&fake, "GET", SEND_PATH, &[("api-key", key)], "").await;
        assert_error(&reply, 405, "method_not_allowed");
        assert_eq!(reply.header("allow"), Some("POST"));
        assert!(fake.emails().is_empty());
    }

    #[tokio::test]
    async fn fail_next_returns_errors_then_recovers() {
        let fake = FakeBrevo::start();
        fake.fail_next(1, 429);
        fake.fail_next(1, 503);
        fake.fail_next(1, 400);
        fake.fail_next(1, 409);

        let body = email_body("ann@example.com");
        for (status, code) in
            [(429, "too_many_requests"), (503, "internal_error"), (400, "invalid_parameter"), (409, "conflict")]
        {
            assert_error(&post_email(&fake, &body).await, status, code);
        }
        assert!(fake.emails().is_empty());

        let reply = post_email(&fake, &body).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        assert_eq!(fake.emails().len(), 1);
    }

    #[tokio::test]
    async fn hang_next_holds_request_until_drop() {
        let fake = FakeBrevo::start();
        fake.hang_next(1);

        let body = email_body("ann@example.com");
        let first_attempt = tokio::time::timeout(Duration::from_millis(300), post_email(&fake, &body)).await;
        assert!(first_attempt.is_err(), "the held request got a response");
        let reply = post_email(&fake, &body).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        assert_eq!(fake.emails().len(), 1);
        assert_eq!(fake.requests().len(), 2);

        // A raw connection shows whether the held request ends with a response or a close.
        fake.hang_next(1);
        let address = fake.base_url().trim_start_matches("http://").to_string();
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let body = body.to_string();
        let request = format!(
            "POST {SEND_PATH} HTTP/1.1\r\nhost: 127.0.0.1\r\napi-key: {API_KEY}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(fake);

        let mut response = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
        assert!(read.is_ok(), "dropping the fake did not close the held connection");
        assert!(response.is_empty(), "the held request got a response: {}", String::from_utf8_lossy(&response));
    }

    #[tokio::test]
    async fn requests_record_status_and_body() {
        let fake = FakeBrevo::start();
        let body = email_body("ann@example.com");
        let wrong_key = [("api-key", "xkeysib-wrong"), ("content-type", "application/json")];
        send(&fake, "POST", SEND_PATH, &wrong_key, &body.to_string()).await;
        fake.fail_next(1, 500);
        post_email(&fake, &body).await;
        post_email(&fake, &body).await;
        send(&fake, "GET", "/v3/account", &[], "").await;

        let requests = fake.requests();
        let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [401, 500, 201, 404]);
        assert_eq!(requests[0].method, "POST");
        assert_eq!(requests[0].path, SEND_PATH);
        assert_eq!(requests[0].headers["api-key"], "xkeysib-wrong");
        assert_eq!(requests[2].headers["api-key"], API_KEY);
        assert_eq!(serde_json::from_slice::<Value>(&requests[2].body).unwrap(), body);
        assert_eq!(requests[3].method, "GET");
        assert_eq!(requests[3].path, "/v3/account");
        assert!(requests[3].body.is_empty());
    }
}
