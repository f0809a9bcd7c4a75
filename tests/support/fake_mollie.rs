//! A fake of the Mollie payments API (v2) on loopback, so black-box tests of
//! the payments component run without the internet.
//!
//! It serves four endpoints in Mollie's formats: create and get a payment,
//! create and get a refund. Tests drive everything else through plain methods:
//! payment and refund status changes, webhook calls, injected failures and
//! hangs, and the recorded requests.
//!
//! NOTE: this is a model of the documented behaviour, not of every rule of the
//! real API. It has no list, cancel or update endpoints, no payment methods
//! (`method` stays null), `isCancelable` is always false, and request bodies
//! must be JSON although Mollie also accepts form-encoded ones. The
//! `_links.checkout` URL points at the fake, which serves no checkout page there.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value, json};

use crate::fake_server::{self, FakeServer, Fault};

/// The only API key the fake accepts. It has Mollie's shape (`test_` and 30
/// characters) because client libraries check that shape before sending.
pub const API_KEY: &str = "test_fakemollie00000000000000000000";

const ERROR_DOCUMENTATION: &str = "https://docs.mollie.com/overview/handling-errors";
const PAYMENT_DOCUMENTATION: &str = "https://docs.mollie.com/reference/v2/payments-api/get-payment";
const HAL_JSON: &str = "application/hal+json";

/// The time from a payment's `createdAt` to its `expiresAt`, 15 minutes as in
/// Mollie's examples.
/// NOTE: the fake never expires a payment by itself, so tests call
/// `set_payment_status(id, "expired")`.
const PAYMENT_EXPIRY: Duration = Duration::from_secs(15 * 60);

/// How long [`FakeMollie::send_webhook`] waits for the receiver's response.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(30);

const MAX_PAYMENT_DESCRIPTION: usize = 255;
const MAX_REFUND_DESCRIPTION: usize = 140;

/// A fake Mollie API served from its own thread and Tokio runtime, so it works
/// under any test runtime. Dropping it stops the server and closes every open
/// connection, including the ones held by [`FakeMollie::hang_next`].
pub struct FakeMollie {
    server: FakeServer<State>,
}

/// One request the fake received, as the component sent it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// The path without the query, such as `/v2/payments`.
    pub path: String,
    pub query: Option<String>,
    pub authorization: Option<String>,
    pub idempotency_key: Option<String>,
    pub content_type: Option<String>,
    /// The body as UTF-8 text, with invalid bytes replaced.
    pub body: String,
}

impl FakeMollie {
    /// Binds 127.0.0.1 on a free port and starts serving in the background.
    pub fn start() -> FakeMollie {
        let server = FakeServer::start("Mollie", |base_url| State::new(base_url.to_string()), handle);
        FakeMollie { server }
    }

    /// Returns `http://127.0.0.1:<port>`. The API paths start with `/v2/`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// Returns the API key the fake accepts as `Authorization: Bearer <key>`.
    pub fn api_key(&self) -> &str {
        API_KEY
    }

    /// Sets the status of a payment as Mollie would, with the matching
    /// timestamp: `authorizedAt` for `authorized`, and `paidAt`, `failedAt`,
    /// `canceledAt` or `expiredAt` for the final statuses. A payment has at most
    /// one final timestamp, so moving it to another status drops the old one.
    /// Panics on an unknown payment id or status.
    pub fn set_payment_status(&self, payment_id: &str, status: &str) {
        let status = PaymentStatus::parse(status).unwrap_or_else(|| {
            panic!(
                "invalid payment status {status:?}: use open, pending, authorized, paid, failed, canceled or expired"
            )
        });
        let mut state = self.lock();
        let Some(payment) = state.payments.iter_mut().find(|p| p.id == payment_id) else {
            drop(state);
            panic!("the fake Mollie API has no payment {payment_id}");
        };
        if payment.status == status {
            return;
        }

        let now = SystemTime::now();
        payment.status = status;
        payment.final_at = status.is_final().then_some(now);
        if status == PaymentStatus::Authorized {
            payment.authorized_at = Some(now);
        }
    }

    /// Sets the status of a refund. A `failed` or `canceled` refund no longer
    /// counts against its payment's `amountRemaining`. Panics on an unknown
    /// refund id or status.
    pub fn set_refund_status(&self, refund_id: &str, status: &str) {
        let status = RefundStatus::parse(status).unwrap_or_else(|| {
            panic!("invalid refund status {status:?}: use queued, pending, processing, refunded, failed or canceled")
        });
        let mut state = self.lock();
        let Some(refund) = state.refunds.iter_mut().find(|r| r.id == refund_id) else {
            drop(state);
            panic!("the fake Mollie API has no refund {refund_id}");
        };
        refund.status = status;
    }

    /// Sends webhooks to `base` (such as `http://127.0.0.1:4567`) plus the path
    /// and query of each payment's `webhookUrl`, in place of its own host.
    pub fn set_webhook_target(&self, base: &str) {
        self.lock().webhook_target = Some(base.trim_end_matches('/').to_string());
    }

    /// Calls the payment's webhook as Mollie does: a form-encoded POST with the
    /// body `id=<payment id>`. Returns the status code of the response.
    ///
    /// Panics if the payment is unknown or has no `webhookUrl`, if the target is
    /// not on loopback (call [`FakeMollie::set_webhook_target`] for a
    /// `webhookUrl` on another host), or if the receiver does not respond
    /// within 30 s.
    pub async fn send_webhook(&self, payment_id: &str) -> u16 {
        let url = self.webhook_url(payment_id);
        let uri: Uri = url.parse().unwrap_or_else(|e| panic!("invalid webhook URL {url}: {e}"));
        assert!(
            uri.scheme_str() == Some("http") && uri.host().is_some_and(is_loopback_host),
            "webhook URL {url} is not an http URL on loopback: call set_webhook_target first"
        );

        let request = Request::post(uri)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::USER_AGENT, "Mollie HTTP client/1.0")
            .body(Full::new(Bytes::from(format!("id={payment_id}"))))
            .expect("the webhook request is valid");
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let response = tokio::time::timeout(WEBHOOK_TIMEOUT, client.request(request))
            .await
            .unwrap_or_else(|_| panic!("the webhook receiver at {url} did not respond within 30 s"))
            .unwrap_or_else(|e| panic!("the webhook request to {url} failed: {e}"));
        let status = response.status().as_u16();
        // Read the body so the receiver's response is complete before returning.
        let _ = response.into_body().collect().await;
        status
    }

    /// Returns every payment as `GET /v2/payments/<id>` would return it now, oldest first.
    pub fn payments(&self) -> Vec<Value> {
        let state = self.lock();
        state.payments.iter().map(|payment| state.payment_json(payment)).collect()
    }

    /// Returns every refund as `GET /v2/payments/<id>/refunds/<id>` would return it now, oldest first.
    pub fn refunds(&self) -> Vec<Value> {
        let state = self.lock();
        state.refunds.iter().map(|refund| state.refund_json(refund)).collect()
    }

    /// Returns every request received so far, including rejected ones, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Makes the next `count` requests fail with `status` (400 to 599) and a
    /// Mollie error body, without touching any payment. Faults queue up in call
    /// order with those of [`FakeMollie::hang_next`].
    pub fn fail_next(&self, count: usize, status: u16) {
        let fault = Fault::failure(status);
        self.lock().faults.extend(std::iter::repeat_n(fault, count));
    }

    /// Makes the next `count` requests get no response: the connection stays
    /// open until the fake is dropped or 10 minutes pass. Faults queue up in
    /// call order with those of [`FakeMollie::fail_next`].
    pub fn hang_next(&self, count: usize) {
        self.lock().faults.extend(std::iter::repeat_n(Fault::Hang, count));
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.server.lock()
    }

    fn webhook_url(&self, payment_id: &str) -> String {
        let (webhook_url, target) = {
            let state = self.lock();
            let payment = state.payments.iter().find(|p| p.id == payment_id);
            (payment.map(|p| p.webhook_url.clone()), state.webhook_target.clone())
        };
        let Some(webhook_url) = webhook_url else {
            panic!("the fake Mollie API has no payment {payment_id}");
        };
        let Some(webhook_url) = webhook_url else {
            panic!("payment {payment_id} was created without a webhookUrl");
        };
        let Some(target) = target else {
            return webhook_url;
        };

        let uri: Uri = webhook_url
            .parse()
            .unwrap_or_else(|e| panic!("payment {payment_id} has an invalid webhookUrl {webhook_url}: {e}"));
        let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        format!("{target}{path_and_query}")
    }
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

// ---------------------------------------------------------------------------
// Server

async fn handle(state: Arc<Mutex<State>>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            let reply = ApiReply::error(400, format!("Reading the request body failed: {error}"), None);
            return reply.into_response();
        }
    };

    let fault = {
        let mut state = fake_server::lock(&state);
        state.requests.push(RecordedRequest::new(&parts, &body));
        state.faults.pop_front()
    };
    let reply = match fault {
        Some(Fault::Fail(status)) => {
            ApiReply::error(status, "The fake Mollie API returned this error because a test called fail_next", None)
        }
        Some(Fault::Hang) => {
            fake_server::hang().await;
            ApiReply::error(504, "The fake Mollie API held this request because a test called hang_next", None)
        }
        None => fake_server::lock(&state).route(&parts, &body),
    };
    reply.into_response()
}

impl RecordedRequest {
    fn new(parts: &Parts, body: &Bytes) -> Self {
        Self {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().map(str::to_string),
            authorization: header_text(&parts.headers, header::AUTHORIZATION.as_str()),
            idempotency_key: header_text(&parts.headers, "idempotency-key"),
            content_type: header_text(&parts.headers, header::CONTENT_TYPE.as_str()),
            body: String::from_utf8_lossy(body).into_owned(),
        }
    }
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
}

/// A response before it is encoded: status, HAL+JSON body and, for 405, the `Allow` header.
#[derive(Clone, Debug)]
struct ApiReply {
    status: StatusCode,
    body: Value,
    allow: Option<&'static str>,
}

impl ApiReply {
    fn new(status: u16, body: Value) -> Self {
        Self { status: StatusCode::from_u16(status).expect("a valid HTTP status"), body, allow: None }
    }

    /// Builds Mollie's error body. `field` names the request field at fault, when there is one.
    fn error(status: u16, detail: impl Into<String>, field: Option<&str>) -> Self {
        let code = StatusCode::from_u16(status).expect("a valid HTTP status");
        let mut body = json!({
            "status": status,
            "title": code.canonical_reason().unwrap_or("Error"),
            "detail": detail.into(),
            "_links": {"documentation": {"href": ERROR_DOCUMENTATION, "type": "text/html"}},
        });
        if let Some(field) = field {
            body["field"] = json!(field);
        }
        Self::new(status, body)
    }

    fn invalid(field: &str, detail: impl Into<String>) -> Self {
        Self::error(422, detail, Some(field))
    }

    fn method_not_allowed(method: &Method, allow: &'static str) -> Self {
        let mut reply = Self::error(405, format!("The method {method} is not allowed here: use {allow}"), None);
        reply.allow = Some(allow);
        reply
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = Response::builder().status(self.status).header(header::CONTENT_TYPE, HAL_JSON);
        if let Some(allow) = self.allow {
            response = response.header(header::ALLOW, allow);
        }
        response.body(Full::new(Bytes::from(self.body.to_string()))).expect("the fake Mollie response is valid")
    }
}

// ---------------------------------------------------------------------------
// Model

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PaymentStatus {
    Open,
    Pending,
    Authorized,
    Paid,
    Failed,
    Canceled,
    Expired,
}

impl PaymentStatus {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "open" => Self::Open,
            "pending" => Self::Pending,
            "authorized" => Self::Authorized,
            "paid" => Self::Paid,
            "failed" => Self::Failed,
            "canceled" => Self::Canceled,
            "expired" => Self::Expired,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Pending => "pending",
            Self::Authorized => "authorized",
            Self::Paid => "paid",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
            Self::Expired => "expired",
        }
    }

    /// Returns the response field, such as `paidAt`, for the time the payment reached this final status.
    fn final_timestamp_field(self) -> Option<&'static str> {
        match self {
            Self::Paid => Some("paidAt"),
            Self::Failed => Some("failedAt"),
            Self::Canceled => Some("canceledAt"),
            Self::Expired => Some("expiredAt"),
            Self::Open | Self::Pending | Self::Authorized => None,
        }
    }

    fn is_final(self) -> bool {
        self.final_timestamp_field().is_some()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RefundStatus {
    Queued,
    Pending,
    Processing,
    Refunded,
    Failed,
    Canceled,
}

impl RefundStatus {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "queued" => Self::Queued,
            "pending" => Self::Pending,
            "processing" => Self::Processing,
            "refunded" => Self::Refunded,
            "failed" => Self::Failed,
            "canceled" => Self::Canceled,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Refunded => "refunded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }

    /// Returns whether the refund's amount counts against the payment's `amountRemaining`.
    fn counts_against_payment(self) -> bool {
        !matches!(self, Self::Failed | Self::Canceled)
    }
}

/// An amount in minor units (cents for EUR, yen for JPY).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Amount {
    currency: String,
    minor_units: u64,
    decimals: u32,
}

impl Amount {
    fn with_minor_units(&self, minor_units: u64) -> Self {
        Self { minor_units, ..self.clone() }
    }

    /// Formats the value as Mollie does: a string with exactly the currency's decimals.
    fn value(&self) -> String {
        if self.decimals == 0 {
            return self.minor_units.to_string();
        }
        let scale = 10u64.pow(self.decimals);
        let width = self.decimals as usize;
        format!("{}.{:0width$}", self.minor_units / scale, self.minor_units % scale)
    }

    fn to_json(&self) -> Value {
        json!({"currency": self.currency, "value": self.value()})
    }
}

/// Returns the number of decimals Mollie requires for `currency`, or `None`
/// for a currency the fake does not support.
fn currency_decimals(currency: &str) -> Option<u32> {
    match currency {
        "EUR" | "USD" | "GBP" | "CHF" | "SEK" | "DKK" | "NOK" | "PLN" => Some(2),
        "JPY" | "ISK" => Some(0),
        _ => None,
    }
}

/// Parses a decimal string with exactly `decimals` digits after the point
/// (no point at all when `decimals` is 0) into minor units. Returns `None` for
/// any other shape, a sign, or a value that overflows `u64`.
fn parse_minor_units(text: &str, decimals: u32) -> Option<u64> {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let fraction = match (decimals, fraction) {
        (0, None) => "",
        (0, Some(_)) | (_, None) => return None,
        (_, Some(fraction)) if fraction.len() == decimals as usize => fraction,
        (_, Some(_)) => return None,
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || (decimals > 0 && !all_digits(fraction)) {
        return None;
    }

    let whole: u64 = whole.parse().ok()?;
    let fraction: u64 = if fraction.is_empty() { 0 } else { fraction.parse().ok()? };
    whole.checked_mul(10u64.pow(decimals))?.checked_add(fraction)
}

struct Payment {
    id: String,
    created_at: SystemTime,
    amount: Amount,
    description: String,
    redirect_url: Option<String>,
    webhook_url: Option<String>,
    metadata: Value,
    status: PaymentStatus,
    authorized_at: Option<SystemTime>,
    /// The time the payment reached its current final status (paid, failed, canceled or expired).
    final_at: Option<SystemTime>,
}

struct Refund {
    id: String,
    payment_id: String,
    created_at: SystemTime,
    amount: Amount,
    description: String,
    status: RefundStatus,
}

/// The first response to a request with an `Idempotency-Key`, replayed for repeats.
struct IdempotentResult {
    method: Method,
    path: String,
    request_body: Bytes,
    reply: ApiReply,
}

/// The fake's data. A poisoned lock on it still guards consistent data: the
/// control methods release the lock before they panic, and no step of a change
/// under the lock panics.
struct State {
    base_url: String,
    payments: Vec<Payment>,
    refunds: Vec<Refund>,
    idempotent_results: HashMap<String, IdempotentResult>,
    requests: Vec<RecordedRequest>,
    faults: VecDeque<Fault>,
    webhook_target: Option<String>,
    id_hasher: RandomState,
    ids_made: u64,
}

impl State {
    fn new(base_url: String) -> Self {
        Self {
            base_url,
            payments: Vec::new(),
            refunds: Vec::new(),
            idempotent_results: HashMap::new(),
            requests: Vec::new(),
            faults: VecDeque::new(),
            webhook_target: None,
            id_hasher: RandomState::new(),
            ids_made: 0,
        }
    }

    /// Makes an id of `prefix` and 10 random alphanumerics, unused so far.
    fn new_id(&mut self, prefix: &str) -> String {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        loop {
            self.ids_made += 1;
            // 62^10 is below 2^64, so one hash gives all 10 characters.
            let mut bits = self.id_hasher.hash_one(self.ids_made);
            let mut id = prefix.to_string();
            for _ in 0..10 {
                id.push(ALPHABET[(bits % 62) as usize] as char);
                bits /= 62;
            }
            let already_used = self.payments.iter().any(|p| p.id == id) || self.refunds.iter().any(|r| r.id == id);
            if !already_used {
                return id;
            }
        }
    }

    fn route(&mut self, parts: &Parts, body: &Bytes) -> ApiReply {
        if !is_authorized(&parts.headers) {
            return ApiReply::error(
                401,
                "Missing authentication, or failed to authenticate: send Authorization: Bearer <API key>",
                None,
            );
        }

        let path = parts.uri.path();
        let Some(rest) = path.strip_prefix("/v2/") else {
            return ApiReply::error(404, format!("The fake Mollie API has no resource at {path}"), None);
        };
        let segments: Vec<&str> = rest.split('/').collect();
        let method = &parts.method;
        match segments.as_slice() {
            ["payments"] if method == Method::POST => {
                self.replay_or_run(parts, body, |state| state.create_payment(parts, body))
            }
            ["payments"] => ApiReply::method_not_allowed(method, "POST"),
            ["payments", payment_id] if method == Method::GET => self.get_payment(payment_id),
            ["payments", _] => ApiReply::method_not_allowed(method, "GET"),
            ["payments", payment_id, "refunds"] if method == Method::POST => {
                self.replay_or_run(parts, body, |state| state.create_refund(payment_id, parts, body))
            }
            ["payments", _, "refunds"] => ApiReply::method_not_allowed(method, "POST"),
            ["payments", payment_id, "refunds", refund_id] if method == Method::GET => {
                self.get_refund(payment_id, refund_id)
            }
            ["payments", _, "refunds", _] => ApiReply::method_not_allowed(method, "GET"),
            _ => ApiReply::error(404, format!("The fake Mollie API has no resource at {path}"), None),
        }
    }

    /// Runs `create` unless the request carries an `Idempotency-Key` seen before.
    /// A repeat of the same method, path and body gets the first response
    /// again, and any other request with that key gets a 422.
    ///
    /// NOTE: the fake stores only successful responses, so a request that failed
    /// validation can be corrected and sent again with the same key. Whether
    /// Mollie stores error responses too is not checked.
    fn replay_or_run(&mut self, parts: &Parts, body: &Bytes, create: impl FnOnce(&mut Self) -> ApiReply) -> ApiReply {
        let Some(key) = header_text(&parts.headers, "idempotency-key") else {
            return create(self);
        };

        if let Some(first) = self.idempotent_results.get(&key) {
            let same_request =
                first.method == parts.method && first.path == parts.uri.path() && same_body(&first.request_body, body);
            if same_request {
                return first.reply.clone();
            }
            return ApiReply::error(
                422,
                format!("The Idempotency-Key {key:?} was already used for a different request: send a new key"),
                None,
            );
        }

        let reply = create(self);
        if reply.status.is_success() {
            let first = IdempotentResult {
                method: parts.method.clone(),
                path: parts.uri.path().to_string(),
                request_body: body.clone(),
                reply: reply.clone(),
            };
            self.idempotent_results.insert(key, first);
        }
        reply
    }

    fn create_payment(&mut self, parts: &Parts, body: &Bytes) -> ApiReply {
        match self.try_create_payment(parts, body) {
            Ok(reply) | Err(reply) => reply,
        }
    }

    fn try_create_payment(&mut self, parts: &Parts, body: &Bytes) -> Result<ApiReply, ApiReply> {
        let request = parse_json_object(&parts.headers, body)?;
        let amount = parse_amount(request.get("amount"))?;

        let description = optional_string(&request, "description")?.unwrap_or_default();
        if description.trim().is_empty() {
            return Err(ApiReply::invalid("description", "The description is missing"));
        }
        if description.chars().count() > MAX_PAYMENT_DESCRIPTION {
            return Err(ApiReply::invalid(
                "description",
                format!("The description is longer than {MAX_PAYMENT_DESCRIPTION} characters"),
            ));
        }
        let redirect_url = optional_string(&request, "redirectUrl")?;
        let webhook_url = optional_string(&request, "webhookUrl")?;
        let metadata = request.get("metadata").cloned().unwrap_or(Value::Null);

        let payment = Payment {
            id: self.new_id("tr_"),
            created_at: SystemTime::now(),
            amount,
            description,
            redirect_url,
            webhook_url,
            metadata,
            status: PaymentStatus::Open,
            authorized_at: None,
            final_at: None,
        };
        let body = self.payment_json(&payment);
        self.payments.push(payment);
        Ok(ApiReply::new(201, body))
    }

    fn get_payment(&self, payment_id: &str) -> ApiReply {
        match self.payments.iter().find(|p| p.id == payment_id) {
            Some(payment) => ApiReply::new(200, self.payment_json(payment)),
            None => payment_not_found(payment_id),
        }
    }

    fn create_refund(&mut self, payment_id: &str, parts: &Parts, body: &Bytes) -> ApiReply {
        match self.try_create_refund(payment_id, parts, body) {
            Ok(reply) | Err(reply) => reply,
        }
    }

    fn try_create_refund(&mut self, payment_id: &str, parts: &Parts, body: &Bytes) -> Result<ApiReply, ApiReply> {
        let Some(payment) = self.payments.iter().find(|p| p.id == payment_id) else {
            return Err(payment_not_found(payment_id));
        };
        let request = parse_json_object(&parts.headers, body)?;
        let amount = parse_amount(request.get("amount"))?;
        if amount.currency != payment.amount.currency {
            return Err(ApiReply::invalid(
                "amount.currency",
                format!(
                    "The refund currency {} differs from the payment currency {}",
                    amount.currency, payment.amount.currency
                ),
            ));
        }

        let description = optional_string(&request, "description")?.unwrap_or_default();
        if description.chars().count() > MAX_REFUND_DESCRIPTION {
            return Err(ApiReply::invalid(
                "description",
                format!("The description is longer than {MAX_REFUND_DESCRIPTION} characters"),
            ));
        }

        if payment.status != PaymentStatus::Paid {
            return Err(ApiReply::invalid(
                "amount.value",
                format!(
                    "The payment {payment_id} cannot be refunded because its status is {}",
                    payment.status.as_str()
                ),
            ));
        }
        let remaining = payment.amount.minor_units.saturating_sub(self.refunded_minor_units(payment_id));
        if amount.minor_units > remaining {
            return Err(ApiReply::invalid(
                "amount.value",
                format!(
                    "The amount {} {} is higher than the amount that remains to be refunded, {} {}",
                    amount.currency,
                    amount.value(),
                    amount.currency,
                    amount.with_minor_units(remaining).value()
                ),
            ));
        }

        let refund = Refund {
            id: self.new_id("re_"),
            payment_id: payment_id.to_string(),
            created_at: SystemTime::now(),
            amount,
            description,
            status: RefundStatus::Pending,
        };
        let body = self.refund_json(&refund);
        self.refunds.push(refund);
        Ok(ApiReply::new(201, body))
    }

    fn get_refund(&self, payment_id: &str, refund_id: &str) -> ApiReply {
        let found = self.refunds.iter().find(|r| r.id == refund_id && r.payment_id == payment_id);
        match found {
            Some(refund) => ApiReply::new(200, self.refund_json(refund)),
            None => {
                ApiReply::error(404, format!("No refund exists with token {refund_id} on payment {payment_id}"), None)
            }
        }
    }

    fn refunded_minor_units(&self, payment_id: &str) -> u64 {
        self.refunds
            .iter()
            .filter(|r| r.payment_id == payment_id && r.status.counts_against_payment())
            .map(|r| r.amount.minor_units)
            .sum()
    }

    fn payment_json(&self, payment: &Payment) -> Value {
        let refunded = self.refunded_minor_units(&payment.id);
        let remaining = payment.amount.minor_units.saturating_sub(refunded);
        let self_url = format!("{}/v2/payments/{}", self.base_url, payment.id);

        let mut body = json!({
            "resource": "payment",
            "id": payment.id,
            "mode": "test",
            "createdAt": format_timestamp(payment.created_at),
            "amount": payment.amount.to_json(),
            "amountRefunded": payment.amount.with_minor_units(refunded).to_json(),
            "amountRemaining": payment.amount.with_minor_units(remaining).to_json(),
            "description": payment.description,
            "method": null,
            "metadata": payment.metadata,
            "status": payment.status.as_str(),
            "isCancelable": false,
            "profileId": "pfl_fake",
            "sequenceType": "oneoff",
            "_links": {
                "self": {"href": self_url, "type": HAL_JSON},
                "documentation": {"href": PAYMENT_DOCUMENTATION, "type": "text/html"},
            },
        });

        // Mollie omits expiresAt once the payment can no longer expire.
        if !payment.status.is_final() {
            body["expiresAt"] = json!(format_timestamp(payment.created_at + PAYMENT_EXPIRY));
        }
        if let Some(url) = &payment.redirect_url {
            body["redirectUrl"] = json!(url);
        }
        if let Some(url) = &payment.webhook_url {
            body["webhookUrl"] = json!(url);
        }
        if let Some(at) = payment.authorized_at {
            body["authorizedAt"] = json!(format_timestamp(at));
        }
        if let (Some(field), Some(at)) = (payment.status.final_timestamp_field(), payment.final_at) {
            body[field] = json!(format_timestamp(at));
        }
        if payment.status == PaymentStatus::Open {
            let checkout_url = format!("{}/checkout/{}", self.base_url, payment.id);
            body["_links"]["checkout"] = json!({"href": checkout_url, "type": "text/html"});
        }
        body
    }

    fn refund_json(&self, refund: &Refund) -> Value {
        let payment_url = format!("{}/v2/payments/{}", self.base_url, refund.payment_id);
        let self_url = format!("{payment_url}/refunds/{}", refund.id);
        json!({
            "resource": "refund",
            "id": refund.id,
            "amount": refund.amount.to_json(),
            "status": refund.status.as_str(),
            "createdAt": format_timestamp(refund.created_at),
            "description": refund.description,
            "paymentId": refund.payment_id,
            "_links": {
                "self": {"href": self_url, "type": HAL_JSON},
                "payment": {"href": payment_url, "type": HAL_JSON},
            },
        })
    }
}

fn payment_not_found(payment_id: &str) -> ApiReply {
    ApiReply::error(404, format!("No payment exists with token {payment_id}"), None)
}

/// Checks for `Authorization: Bearer <API_KEY>`. The scheme is case-insensitive, as RFC 9110 specifies.
fn is_authorized(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    match value.split_once(' ') {
        Some((scheme, key)) => scheme.eq_ignore_ascii_case("bearer") && key == API_KEY,
        None => false,
    }
}

fn parse_json_object(headers: &HeaderMap, body: &Bytes) -> Result<Map<String, Value>, ApiReply> {
    let content_type = header_text(headers, header::CONTENT_TYPE.as_str()).unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return Err(ApiReply::error(
            415,
            format!(
                "The fake Mollie API reads only JSON bodies, but Content-Type is {content_type:?}: send application/json"
            ),
            None,
        ));
    }

    match serde_json::from_slice(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(ApiReply::error(400, "The request body must be a JSON object", None)),
        Err(error) => Err(ApiReply::error(400, format!("The request body is not valid JSON: {error}"), None)),
    }
}

/// Reads an optional string field. Absent and null give `None`, and any other type gives a 422 on that field.
fn optional_string(object: &Map<String, Value>, field: &str) -> Result<Option<String>, ApiReply> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(other) => Err(ApiReply::invalid(field, format!("The {field} must be a string, not {other}"))),
    }
}

fn parse_amount(amount: Option<&Value>) -> Result<Amount, ApiReply> {
    let Some(amount) = amount.and_then(Value::as_object) else {
        return Err(ApiReply::invalid(
            "amount",
            r#"The amount is missing: send an object such as {"currency": "EUR", "value": "10.00"}"#,
        ));
    };

    let Some(currency) = amount.get("currency").and_then(Value::as_str) else {
        return Err(ApiReply::invalid("amount.currency", "The amount currency is missing"));
    };
    let Some(decimals) = currency_decimals(currency) else {
        return Err(ApiReply::invalid("amount.currency", format!("The currency {currency:?} is not supported")));
    };

    let Some(value) = amount.get("value").and_then(Value::as_str) else {
        return Err(ApiReply::invalid("amount.value", r#"The amount value must be a string, such as "10.00""#));
    };
    let Some(minor_units) = parse_minor_units(value, decimals) else {
        return Err(ApiReply::invalid(
            "amount.value",
            format!(
                "The amount value {value:?} is invalid: {currency} needs a number with exactly {decimals} decimals"
            ),
        ));
    };
    if minor_units == 0 {
        return Err(ApiReply::invalid("amount.value", "The amount value must be higher than zero"));
    }

    Ok(Amount { currency: currency.to_string(), minor_units, decimals })
}

/// Compares request bodies as JSON values, so key order and whitespace do not
/// matter, and as bytes when either is not JSON.
fn same_body(first: &Bytes, second: &Bytes) -> bool {
    match (serde_json::from_slice::<Value>(first), serde_json::from_slice::<Value>(second)) {
        (Ok(first), Ok(second)) => first == second,
        _ => first == second,
    }
}

/// Formats a time as RFC 3339 in UTC with whole seconds, the way Mollie
/// writes them: `2018-03-20T13:13:37+00:00`.
fn format_timestamp(time: SystemTime) -> String {
    let seconds = time.duration_since(UNIX_EPOCH).expect("the clock is after 1970").as_secs();
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let second_of_day = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}+00:00",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day),
/// with the `civil_from_days` algorithm from Howard Hinnant's "chrono-Compatible
/// Low-Level Date Algorithms". It counts in 400-year eras of 146,097 days whose
/// years start on 1 March, so the leap day falls at the end of a year.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Reply;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use std::convert::Infallible;

    fn bearer(fake: &FakeMollie) -> String {
        format!("Bearer {}", fake.api_key())
    }

    async fn send(fake: &FakeMollie, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        fake_server::send(&fake.base_url(), method, path, headers, body).await
    }

    async fn post_json(fake: &FakeMollie, path: &str, idempotency_key: Option<&str>, body: &Value) -> Reply {
        let authorization = bearer(fake);
        let mut headers = vec![("authorization", authorization.as_str()), ("content-type", "application/json")];
        if let Some(key) = idempotency_key {
            headers.push(("idempotency-key", key));
        }
        send(fake, "POST", path, &headers, &body.to_string()).await
    }

    async fn get(fake: &FakeMollie, path: &str) -> Reply {
        let authorization = bearer(fake);
        send(fake, "GET", path, &[("authorization", &authorization)], "").await
    }

    fn payment_body(value: &str) -> Value {
        json!({
            "amount": {"currency": "EUR", "value": value},
            "description": "Order 12",
            "redirectUrl": "https://shop.example/orders/12",
            "webhookUrl": "https://shop.example/webhooks/mollie?shop=1",
            "metadata": {"order": 12},
        })
    }

    async fn create_paid_payment(fake: &FakeMollie, value: &str) -> String {
        let reply = post_json(fake, "/v2/payments", None, &payment_body(value)).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        let id = reply.json()["id"].as_str().unwrap().to_string();
        fake.set_payment_status(&id, "paid");
        id
    }

    fn assert_error(reply: &Reply, status: u16, field: Option<&str>) {
        assert_eq!(reply.status, status, "{}", reply.text());
        assert_eq!(reply.header("content-type"), Some(HAL_JSON));
        let body = reply.json();
        assert_eq!(body["status"], status);
        assert!(body["title"].as_str().is_some_and(|t| !t.is_empty()), "{body}");
        assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{body}");
        assert_eq!(body["_links"]["documentation"]["href"], ERROR_DOCUMENTATION);
        assert_eq!(body["_links"]["documentation"]["type"], "text/html");
        match field {
            Some(field) => assert_eq!(body["field"], field, "{body}"),
            None => assert!(body.get("field").is_none(), "{body}"),
        }
    }

    #[test]
    fn timestamp_format_matches_mollie() {
        let at = |seconds: u64| format_timestamp(UNIX_EPOCH + Duration::from_secs(seconds));
        assert_eq!(at(0), "1970-01-01T00:00:00+00:00");
        assert_eq!(at(1_521_551_617), "2018-03-20T13:13:37+00:00");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00+00:00");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59+00:00");
    }

    #[test]
    fn minor_units_follow_currency_decimals() {
        assert_eq!(parse_minor_units("10.00", 2), Some(1000));
        assert_eq!(parse_minor_units("0.01", 2), Some(1));
        assert_eq!(parse_minor_units("1000", 0), Some(1000));
        for invalid in ["10", "10.0", "10.000", "-1.00", "+1.00", ".50", "1,00", "1.0a", "", "99999999999999999999.00"]
        {
            assert_eq!(parse_minor_units(invalid, 2), None, "{invalid:?} with 2 decimals");
        }
        assert_eq!(parse_minor_units("1000.00", 0), None);
        assert_eq!(parse_minor_units("1000.", 0), None);
    }

    #[tokio::test]
    async fn create_payment_returns_open_payment() {
        let fake = FakeMollie::start();
        let reply = post_json(&fake, "/v2/payments", None, &payment_body("10.00")).await;

        assert_eq!(reply.status, 201, "{}", reply.text());
        assert_eq!(reply.header("content-type"), Some(HAL_JSON));
        let payment = reply.json();
        let id = payment["id"].as_str().unwrap();
        assert!(id.starts_with("tr_"), "{id}");
        assert_eq!(id.len(), 13, "{id}");
        assert!(id[3..].bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
        assert_eq!(payment["resource"], "payment");
        assert_eq!(payment["mode"], "test");
        assert_eq!(payment["status"], "open");
        assert_eq!(payment["amount"], json!({"currency": "EUR", "value": "10.00"}));
        assert_eq!(payment["amountRefunded"], json!({"currency": "EUR", "value": "0.00"}));
        assert_eq!(payment["amountRemaining"], json!({"currency": "EUR", "value": "10.00"}));
        assert_eq!(payment["description"], "Order 12");
        assert_eq!(payment["method"], Value::Null);
        assert_eq!(payment["metadata"], json!({"order": 12}));
        assert_eq!(payment["isCancelable"], false);
        assert_eq!(payment["profileId"], "pfl_fake");
        assert_eq!(payment["sequenceType"], "oneoff");
        assert_eq!(payment["redirectUrl"], "https://shop.example/orders/12");
        assert_eq!(payment["webhookUrl"], "https://shop.example/webhooks/mollie?shop=1");
        assert!(payment["createdAt"].as_str().is_some_and(|t| t.ends_with("+00:00")), "{payment}");
        assert!(payment["expiresAt"].as_str().is_some_and(|t| t > payment["createdAt"].as_str().unwrap()), "{payment}");
        assert_eq!(payment["_links"]["self"]["href"], format!("{}/v2/payments/{id}", fake.base_url()));
        assert_eq!(payment["_links"]["self"]["type"], HAL_JSON);
        assert_eq!(payment["_links"]["checkout"]["href"], format!("{}/checkout/{id}", fake.base_url()));
        assert_eq!(payment["_links"]["checkout"]["type"], "text/html");
        assert!(payment["_links"]["documentation"]["href"].is_string());

        let fetched = get(&fake, &format!("/v2/payments/{id}")).await;
        assert_eq!(fetched.status, 200, "{}", fetched.text());
        assert_eq!(fetched.header("content-type"), Some(HAL_JSON));
        assert_eq!(fetched.json(), payment);
        assert_eq!(fake.payments(), vec![payment.clone()]);

        let requests = fake.requests();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].method, "POST");
        assert_eq!(requests[0].path, "/v2/payments");
        assert_eq!(requests[0].authorization.as_deref(), Some(bearer(&fake).as_str()));
        assert_eq!(requests[0].content_type.as_deref(), Some("application/json"));
        assert_eq!(requests[0].idempotency_key, None);
        assert_eq!(serde_json::from_str::<Value>(&requests[0].body).unwrap(), payment_body("10.00"));
        assert_eq!(requests[1].method, "GET");
        assert_eq!(requests[1].path, format!("/v2/payments/{id}"));
    }

    #[tokio::test]
    async fn create_payment_accepts_zero_decimal_currency() {
        let fake = FakeMollie::start();
        let body = json!({"amount": {"currency": "JPY", "value": "1500"}, "description": "Order 13"});
        let reply = post_json(&fake, "/v2/payments", None, &body).await;

        assert_eq!(reply.status, 201, "{}", reply.text());
        let payment = reply.json();
        assert_eq!(payment["amountRefunded"], json!({"currency": "JPY", "value": "0"}));
        assert_eq!(payment["metadata"], Value::Null);
        assert!(payment.get("webhookUrl").is_none(), "{payment}");
    }

    #[tokio::test]
    async fn create_payment_rejects_invalid_fields() {
        let fake = FakeMollie::start();
        let cases = [
            (json!({"description": "x"}), "amount"),
            (json!({"amount": "10.00", "description": "x"}), "amount"),
            (json!({"amount": {"value": "10.00"}, "description": "x"}), "amount.currency"),
            (json!({"amount": {"currency": "XYZ", "value": "10.00"}, "description": "x"}), "amount.currency"),
            (json!({"amount": {"currency": "EUR", "value": 10.0}, "description": "x"}), "amount.value"),
            (json!({"amount": {"currency": "EUR", "value": "10"}, "description": "x"}), "amount.value"),
            (json!({"amount": {"currency": "EUR", "value": "10.0"}, "description": "x"}), "amount.value"),
            (json!({"amount": {"currency": "EUR", "value": "10.000"}, "description": "x"}), "amount.value"),
            (json!({"amount": {"currency": "EUR", "value": "-1.00"}, "description": "x"}), "amount.value"),
            (json!({"amount": {"currency": "EUR", "value": "0.00"}, "description": "x"}), "amount.value"),
            (json!({"amount": {"currency": "JPY", "value": "100.00"}, "description": "x"}), "amount.value"),
            (json!({"amount": {"currency": "EUR", "value": "10.00"}}), "description"),
            (json!({"amount": {"currency": "EUR", "value": "10.00"}, "description": "  "}), "description"),
            (json!({"amount": {"currency": "EUR", "value": "10.00"}, "description": 12}), "description"),
            (json!({"amount": {"currency": "EUR", "value": "10.00"}, "description": "x".repeat(256)}), "description"),
            (
                json!({"amount": {"currency": "EUR", "value": "10.00"}, "description": "x", "webhookUrl": 1}),
                "webhookUrl",
            ),
        ];
        for (body, field) in cases {
            let reply = post_json(&fake, "/v2/payments", None, &body).await;
            assert_error(&reply, 422, Some(field));
        }
        assert!(fake.payments().is_empty());
    }

    #[tokio::test]
    async fn requests_without_valid_key_get_401() {
        let fake = FakeMollie::start();
        let body = payment_body("10.00").to_string();
        let wrong_key = "Bearer test_wrongkey00000000000000000000".to_string();
        let other_scheme = format!("Token {}", fake.api_key());
        let cases: [&[(&str, &str)]; 3] = [
            &[("content-type", "application/json")],
            &[("content-type", "application/json"), ("authorization", &wrong_key)],
            &[("content-type", "application/json"), ("authorization", &other_scheme)],
        ];
        for headers in cases {
            let reply = send(&fake, "POST", "/v2/payments", headers, &body).await;
            assert_error(&reply, 401, None);
        }
        assert!(fake.payments().is_empty());

        let reply = send(&fake, "GET", "/v2/payments/tr_unknown000", &[], "").await;
        assert_error(&reply, 401, None);
        assert_eq!(fake.requests().len(), 4);
    }

    #[tokio::test]
    async fn malformed_requests_get_errors() {
        let fake = FakeMollie::start();
        let authorization = bearer(&fake);

        let reply = get(&fake, "/v2/payments/tr_unknown000").await;
        assert_error(&reply, 404, None);

        let reply = get(&fake, "/v2/customers").await;
        assert_error(&reply, 404, None);

        let reply = send(&fake, "DELETE", "/v2/payments/tr_unknown000", &[("authorization", &authorization)], "").await;
        assert_error(&reply, 405, None);
        assert_eq!(reply.header("allow"), Some("GET"));

        let json_headers = [("authorization", authorization.as_str()), ("content-type", "application/json")];
        let reply = send(&fake, "POST", "/v2/payments", &json_headers, "{not json").await;
        assert_error(&reply, 400, None);

        let reply = send(&fake, "POST", "/v2/payments", &json_headers, "[1]").await;
        assert_error(&reply, 400, None);

        let form_headers =
            [("authorization", authorization.as_str()), ("content-type", "application/x-www-form-urlencoded")];
        let reply = send(&fake, "POST", "/v2/payments", &form_headers, "description=x").await;
        assert_error(&reply, 415, None);
    }

    #[tokio::test]
    async fn idempotency_key_replays_first_response() {
        let fake = FakeMollie::start();
        let first = post_json(&fake, "/v2/payments", Some("key-1"), &payment_body("10.00")).await;
        assert_eq!(first.status, 201, "{}", first.text());
        let id = first.json()["id"].as_str().unwrap().to_string();

        let repeat = post_json(&fake, "/v2/payments", Some("key-1"), &payment_body("10.00")).await;
        assert_eq!(repeat.status, 201, "{}", repeat.text());
        assert_eq!(repeat.json()["id"], id.as_str());
        assert_eq!(repeat.json(), first.json());
        assert_eq!(fake.payments().len(), 1);

        let conflict = post_json(&fake, "/v2/payments", Some("key-1"), &payment_body("11.00")).await;
        assert_error(&conflict, 422, None);
        assert_eq!(fake.payments().len(), 1);

        let other_key = post_json(&fake, "/v2/payments", Some("key-2"), &payment_body("10.00")).await;
        assert_eq!(other_key.status, 201, "{}", other_key.text());
        assert_ne!(other_key.json()["id"], id.as_str());
        assert_eq!(fake.payments().len(), 2);

        let keys: Vec<Option<String>> = fake.requests().into_iter().map(|r| r.idempotency_key).collect();
        assert_eq!(keys, [Some("key-1"), Some("key-1"), Some("key-1"), Some("key-2")].map(|k| k.map(String::from)));
    }

    #[tokio::test]
    async fn idempotency_key_ignores_failed_validation() {
        let fake = FakeMollie::start();
        let invalid = post_json(&fake, "/v2/payments", Some("key-1"), &payment_body("10")).await;
        assert_error(&invalid, 422, Some("amount.value"));

        let corrected = post_json(&fake, "/v2/payments", Some("key-1"), &payment_body("10.00")).await;
        assert_eq!(corrected.status, 201, "{}", corrected.text());
    }

    #[tokio::test]
    async fn payment_status_changes_show_in_get() {
        let fake = FakeMollie::start();
        let created = post_json(&fake, "/v2/payments", None, &payment_body("10.00")).await;
        let id = created.json()["id"].as_str().unwrap().to_string();
        let path = format!("/v2/payments/{id}");

        fake.set_payment_status(&id, "pending");
        let pending = get(&fake, &path).await.json();
        assert_eq!(pending["status"], "pending");
        assert!(pending["expiresAt"].is_string(), "{pending}");
        assert!(pending["_links"].get("checkout").is_none(), "{pending}");

        fake.set_payment_status(&id, "authorized");
        let authorized = get(&fake, &path).await.json();
        assert_eq!(authorized["status"], "authorized");
        assert!(authorized["authorizedAt"].is_string(), "{authorized}");

        fake.set_payment_status(&id, "paid");
        let paid = get(&fake, &path).await.json();
        assert_eq!(paid["status"], "paid");
        assert!(paid["paidAt"].is_string(), "{paid}");
        assert!(paid.get("expiresAt").is_none(), "{paid}");
        assert!(paid["_links"].get("checkout").is_none(), "{paid}");
        assert!(paid["_links"]["self"]["href"].is_string(), "{paid}");

        for (status, field) in [("failed", "failedAt"), ("canceled", "canceledAt"), ("expired", "expiredAt")] {
            fake.set_payment_status(&id, status);
            let payment = get(&fake, &path).await.json();
            assert_eq!(payment["status"], status);
            assert!(payment[field].is_string(), "{payment}");
            assert!(payment.get("paidAt").is_none(), "{payment}");
        }

        fake.set_payment_status(&id, "open");
        let open = get(&fake, &path).await.json();
        assert!(open["_links"]["checkout"].is_object(), "{open}");
        assert!(open.get("expiredAt").is_none(), "{open}");
    }

    #[test]
    #[should_panic(expected = "invalid payment status")]
    fn set_payment_status_rejects_unknown_status() {
        let fake = FakeMollie::start();
        fake.set_payment_status("tr_unknown000", "refunded");
    }

    #[tokio::test]
    async fn refund_updates_payment_amounts() {
        let fake = FakeMollie::start();
        let id = create_paid_payment(&fake, "10.00").await;
        let refunds_path = format!("/v2/payments/{id}/refunds");

        let body = json!({"amount": {"currency": "EUR", "value": "4.00"}, "description": "Damaged item"});
        let reply = post_json(&fake, &refunds_path, None, &body).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        assert_eq!(reply.header("content-type"), Some(HAL_JSON));
        let refund = reply.json();
        let refund_id = refund["id"].as_str().unwrap().to_string();
        assert!(refund_id.starts_with("re_"), "{refund_id}");
        assert_eq!(refund_id.len(), 13, "{refund_id}");
        assert_eq!(refund["resource"], "refund");
        assert_eq!(refund["amount"], json!({"currency": "EUR", "value": "4.00"}));
        assert_eq!(refund["status"], "pending");
        assert_eq!(refund["description"], "Damaged item");
        assert_eq!(refund["paymentId"], id.as_str());
        assert!(refund["createdAt"].is_string(), "{refund}");
        let payment_url = format!("{}/v2/payments/{id}", fake.base_url());
        assert_eq!(refund["_links"]["self"]["href"], format!("{payment_url}/refunds/{refund_id}"));
        assert_eq!(refund["_links"]["payment"]["href"], payment_url);

        let payment = get(&fake, &format!("/v2/payments/{id}")).await.json();
        assert_eq!(payment["amountRefunded"]["value"], "4.00");
        assert_eq!(payment["amountRemaining"]["value"], "6.00");

        let too_much = json!({"amount": {"currency": "EUR", "value": "6.01"}});
        assert_error(&post_json(&fake, &refunds_path, None, &too_much).await, 422, Some("amount.value"));

        fake.set_refund_status(&refund_id, "refunded");
        let fetched = get(&fake, &format!("{refunds_path}/{refund_id}")).await;
        assert_eq!(fetched.status, 200, "{}", fetched.text());
        assert_eq!(fetched.json()["status"], "refunded");
        assert_error(&post_json(&fake, &refunds_path, None, &too_much).await, 422, Some("amount.value"));

        fake.set_refund_status(&refund_id, "failed");
        let payment = get(&fake, &format!("/v2/payments/{id}")).await.json();
        assert_eq!(payment["amountRefunded"]["value"], "0.00");
        assert_eq!(payment["amountRemaining"]["value"], "10.00");

        let whole = json!({"amount": {"currency": "EUR", "value": "10.00"}});
        let reply = post_json(&fake, &refunds_path, None, &whole).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        assert_eq!(reply.json()["description"], "");
        assert_eq!(fake.refunds().len(), 2);

        let payment = get(&fake, &format!("/v2/payments/{id}")).await.json();
        assert_eq!(payment["amountRemaining"]["value"], "0.00");
    }

    #[tokio::test]
    async fn refund_rejects_invalid_requests() {
        let fake = FakeMollie::start();
        let created = post_json(&fake, "/v2/payments", None, &payment_body("10.00")).await;
        let open_id = created.json()["id"].as_str().unwrap().to_string();
        let euro = json!({"amount": {"currency": "EUR", "value": "1.00"}});

        let reply = post_json(&fake, &format!("/v2/payments/{open_id}/refunds"), None, &euro).await;
        assert_error(&reply, 422, Some("amount.value"));

        let reply = post_json(&fake, "/v2/payments/tr_unknown000/refunds", None, &euro).await;
        assert_error(&reply, 404, None);

        let paid_id = create_paid_payment(&fake, "10.00").await;
        let refunds_path = format!("/v2/payments/{paid_id}/refunds");
        let cases = [
            (json!({}), "amount"),
            (json!({"amount": {"currency": "USD", "value": "1.00"}}), "amount.currency"),
            (json!({"amount": {"currency": "EUR", "value": "1"}}), "amount.value"),
            (json!({"amount": {"currency": "EUR", "value": "0.00"}}), "amount.value"),
            (json!({"amount": {"currency": "EUR", "value": "1.00"}, "description": "x".repeat(141)}), "description"),
        ];
        for (body, field) in cases {
            let reply = post_json(&fake, &refunds_path, None, &body).await;
            assert_error(&reply, 422, Some(field));
        }
        assert!(fake.refunds().is_empty());

        let refund = post_json(&fake, &refunds_path, None, &euro).await.json();
        let refund_id = refund["id"].as_str().unwrap();
        let reply = get(&fake, &format!("/v2/payments/{open_id}/refunds/{refund_id}")).await;
        assert_error(&reply, 404, None);
        let reply = get(&fake, &format!("{refunds_path}/re_unknown000")).await;
        assert_error(&reply, 404, None);
    }

    #[tokio::test]
    async fn refund_honours_idempotency_key() {
        let fake = FakeMollie::start();
        let id = create_paid_payment(&fake, "10.00").await;
        let refunds_path = format!("/v2/payments/{id}/refunds");
        let body = json!({"amount": {"currency": "EUR", "value": "3.00"}});

        let first = post_json(&fake, &refunds_path, Some("refund-1"), &body).await;
        assert_eq!(first.status, 201, "{}", first.text());
        let repeat = post_json(&fake, &refunds_path, Some("refund-1"), &body).await;
        assert_eq!(repeat.status, 201, "{}", repeat.text());
        assert_eq!(repeat.json()["id"], first.json()["id"]);
        assert_eq!(fake.refunds().len(), 1);

        let other_amount = json!({"amount": {"currency": "EUR", "value": "2.00"}});
        assert_error(&post_json(&fake, &refunds_path, Some("refund-1"), &other_amount).await, 422, None);
        assert_error(&post_json(&fake, "/v2/payments", Some("refund-1"), &payment_body("3.00")).await, 422, None);
        assert_eq!(fake.refunds().len(), 1);

        let payment = get(&fake, &format!("/v2/payments/{id}")).await.json();
        assert_eq!(payment["amountRemaining"]["value"], "7.00");
    }

    #[tokio::test]
    async fn fail_next_returns_errors_then_recovers() {
        let fake = FakeMollie::start();
        fake.fail_next(2, 503);

        for _ in 0..2 {
            let reply = post_json(&fake, "/v2/payments", None, &payment_body("10.00")).await;
            assert_error(&reply, 503, None);
        }
        assert!(fake.payments().is_empty());

        let reply = post_json(&fake, "/v2/payments", None, &payment_body("10.00")).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        assert_eq!(fake.requests().len(), 3);
    }

    #[tokio::test]
    async fn hang_next_holds_request_until_drop() {
        let fake = FakeMollie::start();
        fake.hang_next(1);

        let first_attempt = tokio::time::timeout(
            Duration::from_millis(300),
            post_json(&fake, "/v2/payments", None, &payment_body("10.00")),
        )
        .await;
        assert!(first_attempt.is_err(), "the first request got a response");
        let reply = post_json(&fake, "/v2/payments", None, &payment_body("10.00")).await;
        assert_eq!(reply.status, 201, "{}", reply.text());

        fake.hang_next(1);
        let url = format!("{}/v2/payments/{}", fake.base_url(), reply.json()["id"].as_str().unwrap());
        let authorization = bearer(&fake);
        let pending = tokio::spawn(async move {
            let request =
                Request::get(url).header("authorization", authorization).body(Full::new(Bytes::new())).unwrap();
            let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            client.request(request).await.map(|response| response.status().as_u16())
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(fake);

        let outcome = tokio::time::timeout(Duration::from_secs(5), pending)
            .await
            .expect("dropping the fake ends the held request")
            .unwrap();
        assert!(outcome.is_err(), "the held request got a response: {outcome:?}");
    }

    /// A webhook request as a receiver saw it.
    struct ReceivedWebhook {
        method: String,
        uri: String,
        headers: HeaderMap,
        body: String,
    }

    /// Starts an HTTP receiver on loopback that responds 200 and sends each request to the channel.
    async fn start_webhook_receiver() -> (u16, tokio::sync::mpsc::UnboundedReceiver<ReceivedWebhook>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let sender = sender.clone();
                let service = service_fn(move |request: Request<Incoming>| {
                    let sender = sender.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let _ = sender.send(ReceivedWebhook {
                            method: parts.method.to_string(),
                            uri: parts.uri.to_string(),
                            headers: parts.headers,
                            body: String::from_utf8_lossy(&body).into_owned(),
                        });
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        (port, receiver)
    }

    #[tokio::test]
    async fn send_webhook_posts_payment_id() {
        let fake = FakeMollie::start();
        let created = post_json(&fake, "/v2/payments", None, &payment_body("10.00")).await;
        let id = created.json()["id"].as_str().unwrap().to_string();
        let (port, mut received) = start_webhook_receiver().await;
        fake.set_webhook_target(&format!("http://127.0.0.1:{port}/"));

        let status = fake.send_webhook(&id).await;

        assert_eq!(status, 200);
        let webhook = received.recv().await.expect("the receiver got the webhook");
        assert_eq!(webhook.method, "POST");
        assert_eq!(webhook.uri, "/webhooks/mollie?shop=1");
        assert_eq!(webhook.headers["content-type"], "application/x-www-form-urlencoded");
        assert_eq!(webhook.headers["user-agent"], "Mollie HTTP client/1.0");
        assert_eq!(webhook.body, format!("id={id}"));
    }

    #[tokio::test]
    #[should_panic(expected = "is not an http URL on loopback")]
    async fn send_webhook_needs_loopback_target() {
        let fake = FakeMollie::start();
        let created = post_json(&fake, "/v2/payments", None, &payment_body("10.00")).await;
        let id = created.json()["id"].as_str().unwrap().to_string();
        fake.send_webhook(&id).await;
    }
}
