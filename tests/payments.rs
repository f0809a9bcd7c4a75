//! Black-box tests of the payments component: wallets, top-ups through the
//! payment provider, the provider's webhooks, dispatch re-checks, payment
//! history and the ledger check. The real `payments.wasm` runs in the local
//! host from the application's `spin.toml`, next to profiles, which issues the
//! tokens. Each test starts its own `FakeMollie` on loopback as the provider,
//! and reads rows as root from the `conduit_test_payments` schema that
//! `cargo xtask test` migrates.
//!
//! Tests that call a dispatch route (granting the admin role needs profiles'
//! dispatch) or make the provider hang hold `one_at_a_time()`. A payments
//! dispatch re-checks every pending top-up in the shared schema, and the 409
//! of a request in flight depends on the timing of the hanging provider call.

use std::collections::BTreeSet;
use std::time::Duration;

use conduit_tests::fake_mollie::{FakeMollie, RecordedRequest};
use conduit_tests::{
    Host, HostOptions, Reply, TestUser, admin_db, app_options, dispatch, grant_admin, log_in, register_user, unique_name,
};
use mysql_async::prelude::Queryable;
use serde_json::{Value, json};
use tokio::sync::{Mutex, MutexGuard};

/// The payments component's schema under the test prefix of `tests/test.env`.
const PAYMENTS_SCHEMA: &str = "conduit_test_payments";

/// The fields of a payment as the top-up, payment and history routes return it.
const PAYMENT_FIELDS: [&str; 8] =
    ["id", "kind", "status", "amount_minor", "currency", "checkout_url", "created_at", "updated_at"];

/// The route the provider calls when a payment's status changes.
const WEBHOOK_PATH: &str = "/api/payments/webhooks/provider";

const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

const SUCCEEDED_EVENT: &str = "top_up.succeeded";
const FAILED_EVENT: &str = "top_up.failed";

/// Locks the mutex that serialises the tests which call a dispatch route or
/// make the provider hang. Each test keeps the guard for its whole run.
async fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::const_new(());
    LOCK.lock().await
}

// ---- the application and its fake provider ----

/// The host running the application, and the fake provider that its payments
/// component calls. Fields drop in order, so the host stops before the fake
/// closes the connections of requests it still holds.
struct App {
    host: Host,
    fake: FakeMollie,
}

impl App {
    fn start() -> Self {
        Self::start_with(app_options())
    }

    /// Starts a fake provider, then the host with `options` and the fake's URL
    /// and API key, and sends the fake's webhooks to that host.
    fn start_with(options: HostOptions) -> Self {
        let fake = FakeMollie::start();
        let options = options
            .env("SPIN_VARIABLE_PAYMENT_PROVIDER_URL", fake.base_url())
            .env("SPIN_VARIABLE_PAYMENT_PROVIDER_API_KEY", fake.api_key());
        let host = Host::start(options);
        fake.set_webhook_target(&host.url(""));
        App { host, fake }
    }
}

// ---- one helper per payments endpoint ----

/// Returns the `top_up` fields of a valid EUR top-up request.
fn eur_top_up(amount_minor: i64) -> Value {
    json!({"amount_minor": amount_minor, "currency": "EUR"})
}

/// Sends `POST /api/wallet/top-ups` with a raw body, and with a token and an
/// `Idempotency-Key` when given.
async fn send_top_up(host: &Host, token: Option<&str>, key: Option<&str>, content_type: &str, body: String) -> Reply {
    let authorization = token.map(|t| format!("Token {t}"));
    let mut headers = vec![("content-type", content_type)];
    if let Some(value) = &authorization {
        headers.push(("authorization", value.as_str()));
    }
    if let Some(key) = key {
        headers.push(("idempotency-key", key));
    }
    host.request("POST", "/api/wallet/top-ups", &headers, body).await
}

/// Requests a top-up with `{"top_up": <fields>}` as JSON.
async fn request_top_up(host: &Host, token: &str, key: Option<&str>, fields: Value) -> Reply {
    send_top_up(host, Some(token), key, "application/json", json!({ "top_up": fields }).to_string()).await
}

/// Returns the `top_up` object of a reply. Panics unless the status is 201.
fn created_top_up(reply: &Reply) -> Value {
    assert_eq!(reply.status, 201, "the top-up request failed: {}", reply.text());
    reply.json()["top_up"].clone()
}

/// Requests a top-up of `amount_minor` euro cents with a new Idempotency-Key
/// and returns the created payment. Panics unless the status is 201.
async fn create_top_up(host: &Host, user: &TestUser, amount_minor: i64) -> Value {
    let reply = request_top_up(host, &user.token, Some(&unique_name("key")), eur_top_up(amount_minor)).await;
    created_top_up(&reply)
}

fn id_of(payment: &Value) -> String {
    payment["id"].as_str().unwrap_or_else(|| panic!("the payment has no string id: {payment}")).to_string()
}

async fn get_wallet(host: &Host, token: Option<&str>) -> Reply {
    host.send("GET", "/api/wallet", token).await
}

/// Returns the user's EUR balance in cents from `GET /api/wallet`.
async fn eur_balance(host: &Host, user: &TestUser) -> i64 {
    let reply = get_wallet(host, Some(&user.token)).await;
    assert_eq!(reply.status, 200, "reading the wallet failed: {}", reply.text());
    let body = reply.json();
    let balances = body["wallet"]["balances"].as_array().unwrap_or_else(|| panic!("the reply has no balances list: {body}"));
    let eur = balances.iter().find(|balance| balance["currency"] == "EUR");
    let amount = eur.and_then(|balance| balance["amount_minor"].as_i64());
    amount.unwrap_or_else(|| panic!("the wallet has no integer EUR balance: {body}"))
}

async fn get_payment(host: &Host, token: Option<&str>, payment_id: &str) -> Reply {
    host.send("GET", &format!("/api/payments/{payment_id}"), token).await
}

/// Calls `GET /api/payments?<query>` (`query` without the `?`).
async fn list_payments(host: &Host, token: Option<&str>, query: &str) -> Reply {
    host.send("GET", &format!("/api/payments?{query}"), token).await
}

async fn ledger_check(host: &Host, token: Option<&str>) -> Reply {
    host.send("GET", "/api/admin/ledger/check", token).await
}

/// Posts to the webhook route without a token, as the provider does, with any content type and body.
async fn post_webhook(host: &Host, content_type: &str, body: &str) -> Reply {
    host.request("POST", WEBHOOK_PATH, &[("content-type", content_type)], body.to_string()).await
}

// ---- the provider's side ----

/// Returns the fake's payment whose `metadata.payment_id` is our payment id.
fn provider_payment(fake: &FakeMollie, payment_id: &str) -> Value {
    let payments = fake.payments();
    let found = payments.iter().find(|payment| payment["metadata"]["payment_id"] == payment_id).cloned();
    found.unwrap_or_else(|| panic!("the provider has no payment with metadata.payment_id {payment_id}: {payments:?}"))
}

/// Returns the provider's id (`tr_…`) of our payment.
fn provider_id(fake: &FakeMollie, payment_id: &str) -> String {
    let payment = provider_payment(fake, payment_id);
    payment["id"].as_str().unwrap_or_else(|| panic!("the provider payment has no id: {payment}")).to_string()
}

/// Returns the payment creations (`POST /v2/payments`) the provider received, including rejected ones, oldest first.
fn provider_creations(fake: &FakeMollie) -> Vec<RecordedRequest> {
    fake.requests().into_iter().filter(|request| request.method == "POST" && request.path == "/v2/payments").collect()
}

/// Waits until the provider has received `count` payment creations. Panics after 10 s.
async fn wait_for_provider_creations(fake: &FakeMollie, count: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while provider_creations(fake).len() < count {
        assert!(tokio::time::Instant::now() < deadline, "the provider did not receive {count} payment creations within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Returns the key of an `Authorization: Bearer <key>` value. The scheme is case-insensitive.
fn bearer_key(authorization: &str) -> Option<&str> {
    let (scheme, key) = authorization.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(key)
}

/// Sets the provider's status of our payment and delivers the provider's
/// webhook. Panics unless the component responds 200.
async fn settle_at_provider(app: &App, payment_id: &str, status: &str) {
    let provider_id = provider_id(&app.fake, payment_id);
    app.fake.set_payment_status(&provider_id, status);
    let webhook_status = app.fake.send_webhook(&provider_id).await;
    assert_eq!(webhook_status, 200, "the webhook for a {status} payment got {webhook_status}");
}

/// Creates a top-up for `user`, has the provider mark it paid and delivers
/// the webhook. Returns our payment id.
async fn pay_top_up(app: &App, user: &TestUser, amount_minor: i64) -> String {
    let payment_id = id_of(&create_top_up(&app.host, user, amount_minor).await);
    settle_at_provider(app, &payment_id, "paid").await;
    payment_id
}

// ---- reading replies ----

/// Returns the ids of a `{"payments": […]}` reply, in order.
fn payment_ids(reply: &Reply) -> Vec<String> {
    reply.json()["payments"]
        .as_array()
        .unwrap_or_else(|| panic!("the reply has no `payments` list: {}", reply.text()))
        .iter()
        .map(id_of)
        .collect()
}

fn next_cursor(reply: &Reply) -> Option<String> {
    reply.json()["next_cursor"].as_str().map(str::to_string)
}

/// Returns the messages of `errors.<field>` in the error envelope.
fn field_errors(reply: &Reply, field: &str) -> Vec<String> {
    serde_json::from_value(reply.json()["errors"][field].clone()).unwrap_or_default()
}

/// Returns every message of the error envelope, whatever its key.
fn error_messages(reply: &Reply) -> Vec<String> {
    let body = reply.json();
    let Some(errors) = body["errors"].as_object() else {
        return Vec::new();
    };
    errors.values().filter_map(Value::as_array).flatten().filter_map(Value::as_str).map(str::to_string).collect()
}

fn has_error_envelope(reply: &Reply) -> bool {
    !error_messages(reply).is_empty()
}

/// Returns `Retry-After` as whole seconds, or `None` when it is absent or an HTTP date.
fn retry_after_seconds(reply: &Reply) -> Option<u32> {
    reply.header("retry-after").and_then(|value| value.trim().parse().ok())
}

/// Checks the textual UUID shape: 32 hexadecimal digits in groups of 8-4-4-4-12.
fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text.char_indices().all(|(i, c)| if matches!(i, 8 | 13 | 18 | 23) { c == '-' } else { c.is_ascii_hexdigit() })
}

/// Checks the RFC 3339 date-time shape, such as `2024-05-01T12:30:00.123Z` or `…+02:00`.
fn is_rfc3339(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.len() < 20 {
        return false;
    }
    let digits = |range: std::ops::Range<usize>| bytes[range].iter().all(u8::is_ascii_digit);
    let date_and_time = digits(0..4)
        && bytes[4] == b'-'
        && digits(5..7)
        && bytes[7] == b'-'
        && digits(8..10)
        && matches!(bytes[10], b'T' | b't')
        && digits(11..13)
        && bytes[13] == b':'
        && digits(14..16)
        && bytes[16] == b':'
        && digits(17..19);
    if !date_and_time {
        return false;
    }

    let mut offset = &text[19..];
    if let Some(fraction) = offset.strip_prefix('.') {
        let fraction_digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if fraction_digits == 0 {
            return false;
        }
        offset = &fraction[fraction_digits..];
    }
    match offset.as_bytes() {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|b| b.is_ascii_digit()),
        _ => false,
    }
}

/// Percent-encodes every byte outside RFC 3986's unreserved characters, for an opaque cursor in a query.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---- rows, read as root ----

async fn fetch_rows<T: mysql_async::prelude::FromRow + Send + 'static>(statement: &str, params: Vec<String>) -> Vec<T> {
    let mut db = admin_db().await;
    let rows = db.exec(statement, params).await.unwrap();
    db.disconnect().await.unwrap();
    rows
}

/// An event row of the payments outbox.
struct PaymentEvent {
    event_type: String,
    aggregate_type: String,
    payload: Value,
}

/// Returns the outbox events whose aggregate id is `payment_id`, oldest first.
async fn payment_events(payment_id: &str) -> Vec<PaymentEvent> {
    let statement = format!(
        "SELECT type, aggregate_type, payload FROM {PAYMENTS_SCHEMA}.outbox_events
         WHERE aggregate_id = ? ORDER BY occurred_at, id"
    );
    let rows: Vec<(String, String, String)> = fetch_rows(&statement, vec![payment_id.into()]).await;
    rows.into_iter()
        .map(|(event_type, aggregate_type, payload)| PaymentEvent {
            event_type,
            aggregate_type,
            payload: serde_json::from_str(&payload).unwrap_or_else(|e| panic!("the payload is not JSON ({e}): {payload}")),
        })
        .collect()
}

fn count_of_type(events: &[PaymentEvent], event_type: &str) -> usize {
    events.iter().filter(|event| event.event_type == event_type).count()
}

/// One entry of a ledger transaction, with the kind and owner of its account.
struct LedgerEntry {
    account_kind: String,
    user_id: String,
    currency: String,
    amount: i64,
}

struct LedgerTransaction {
    kind: String,
    entries: Vec<LedgerEntry>,
}

/// Returns the ledger transactions of a payment with their entries.
async fn ledger_transactions(payment_id: &str) -> Vec<LedgerTransaction> {
    let statement = format!(
        "SELECT t.id, t.kind, a.kind, a.user_id, e.currency, e.amount
         FROM {PAYMENTS_SCHEMA}.ledger_transactions t
         JOIN {PAYMENTS_SCHEMA}.ledger_entries e ON e.transaction_id = t.id
         JOIN {PAYMENTS_SCHEMA}.accounts a ON a.id = e.account_id
         WHERE t.payment_id = ? ORDER BY t.created_at, t.id, e.amount DESC"
    );
    let rows: Vec<(String, String, String, String, String, i64)> = fetch_rows(&statement, vec![payment_id.into()]).await;
    let mut transactions: Vec<(String, LedgerTransaction)> = Vec::new();
    for (transaction_id, kind, account_kind, user_id, currency, amount) in rows {
        let entry = LedgerEntry { account_kind, user_id, currency, amount };
        match transactions.last_mut() {
            Some((id, transaction)) if *id == transaction_id => transaction.entries.push(entry),
            _ => transactions.push((transaction_id, LedgerTransaction { kind, entries: vec![entry] })),
        }
    }
    transactions.into_iter().map(|(_, transaction)| transaction).collect()
}

/// Returns the stored balance of the user's wallet in `currency` and the sum
/// of its ledger entries, or `None` when the user has no such wallet.
async fn wallet_account(user_id: &str, currency: &str) -> Option<(i64, i64)> {
    let statement = format!(
        "SELECT a.balance, CAST(COALESCE(SUM(e.amount), 0) AS SIGNED)
         FROM {PAYMENTS_SCHEMA}.accounts a
         LEFT JOIN {PAYMENTS_SCHEMA}.ledger_entries e ON e.account_id = a.id
         WHERE a.kind = 'wallet' AND a.user_id = ? AND a.currency = ?
         GROUP BY a.id, a.balance"
    );
    let rows: Vec<(i64, i64)> = fetch_rows(&statement, vec![user_id.into(), currency.into()]).await;
    assert!(rows.len() <= 1, "the user has {} {currency} wallets", rows.len());
    rows.into_iter().next()
}

/// What the component shows and stores for one payment: the status its owner
/// reads, the owner's EUR balance, the payment's events and ledger transactions.
struct PaymentState {
    status: Value,
    balance: i64,
    succeeded_events: usize,
    failed_events: usize,
    ledger_transactions: usize,
}

async fn payment_state(host: &Host, owner: &TestUser, payment_id: &str) -> PaymentState {
    let reply = get_payment(host, Some(&owner.token), payment_id).await;
    assert_eq!(reply.status, 200, "reading payment {payment_id} failed: {}", reply.text());
    let events = payment_events(payment_id).await;
    PaymentState {
        status: reply.json()["payment"]["status"].clone(),
        balance: eur_balance(host, owner).await,
        succeeded_events: count_of_type(&events, SUCCEEDED_EVENT),
        failed_events: count_of_type(&events, FAILED_EVENT),
        ledger_transactions: ledger_transactions(payment_id).await.len(),
    }
}

// ---- top-ups and webhooks ----

#[tokio::test]
async fn paid_top_up_credits_wallet() {
    let app = App::start();
    let ann = register_user(&app.host, "ann").await;
    let key = unique_name("key");

    let created = request_top_up(&app.host, &ann.token, Some(&key), eur_top_up(1000)).await;
    let top_up = created_top_up(&created);
    let payment_id = id_of(&top_up);
    let provider = provider_payment(&app.fake, &payment_id);
    let provider_id = provider_id(&app.fake, &payment_id);
    let creations = provider_creations(&app.fake);
    let balance_before = eur_balance(&app.host, &ann).await;
    app.fake.set_payment_status(&provider_id, "paid");
    let webhook_status = app.fake.send_webhook(&provider_id).await;
    let provider_path = format!("/v2/payments/{provider_id}");
    let fetched_from_provider =
        app.fake.requests().iter().any(|request| request.method == "GET" && request.path == provider_path);
    let balance_after = eur_balance(&app.host, &ann).await;
    let read = get_payment(&app.host, Some(&ann.token), &payment_id).await;
    let listed = list_payments(&app.host, Some(&ann.token), "").await;
    let events = payment_events(&payment_id).await;
    let transactions = ledger_transactions(&payment_id).await;
    let account = wallet_account(&ann.id, "EUR").await;

    for field in PAYMENT_FIELDS {
        assert!(top_up.get(field).is_some(), "the created top-up has `{field}`: {top_up}");
    }
    assert!(is_uuid(&payment_id), "the id {payment_id:?} is a UUID");
    assert_eq!(top_up["kind"], "top_up");
    assert_eq!(top_up["status"], "pending");
    assert_eq!(top_up["amount_minor"], 1000);
    assert_eq!(top_up["currency"], "EUR");
    assert_eq!(top_up["checkout_url"], provider["_links"]["checkout"]["href"], "the checkout URL is the provider's");
    assert!(top_up["created_at"].as_str().is_some_and(is_rfc3339), "created_at is RFC 3339: {top_up}");
    assert!(top_up["updated_at"].as_str().is_some_and(is_rfc3339), "updated_at is RFC 3339: {top_up}");

    assert_eq!(creations.len(), 1, "one payment creation reached the provider");
    let creation = &creations[0];
    let sent: Value = serde_json::from_str(&creation.body)
        .unwrap_or_else(|e| panic!("the provider request body is not JSON ({e}): {}", creation.body));
    assert_eq!(sent["amount"]["value"], "10.00", "1000 cents are sent as the string 10.00: {sent}");
    assert_eq!(sent["amount"]["currency"], "EUR", "{sent}");
    assert!(sent["description"].as_str().is_some_and(|d| !d.trim().is_empty()), "a description is sent: {sent}");
    assert!(
        sent["webhookUrl"].as_str().is_some_and(|url| url.contains(WEBHOOK_PATH)),
        "the webhookUrl leads to {WEBHOOK_PATH}: {sent}"
    );
    assert!(sent["redirectUrl"].as_str().is_some_and(|url| !url.is_empty()), "a redirectUrl is sent: {sent}");
    assert_eq!(sent["metadata"]["payment_id"], payment_id.as_str(), "the metadata carries our payment id: {sent}");
    assert_eq!(
        creation.authorization.as_deref().and_then(bearer_key),
        Some(app.fake.api_key()),
        "the provider request authenticates with the configured API key"
    );
    assert!(
        creation.idempotency_key.as_deref().is_some_and(|k| !k.is_empty()),
        "the provider request has an Idempotency-Key header"
    );
    assert!(
        creation.content_type.as_deref().is_some_and(|t| t.to_ascii_lowercase().starts_with("application/json")),
        "the provider request is JSON: {:?}",
        creation.content_type
    );

    assert_eq!(balance_before, 0, "a pending top-up credits nothing");
    assert_eq!(webhook_status, 200, "the webhook is accepted");
    assert!(fetched_from_provider, "the component fetched {provider_path} from the provider after the webhook");
    assert_eq!(balance_after, 1000, "the paid top-up is credited");
    assert_eq!(read.status, 200, "{}", read.text());
    assert_eq!(read.json()["payment"]["status"], "paid", "{}", read.text());
    assert_eq!(read.json()["payment"]["id"], payment_id.as_str());
    assert_eq!(read.json()["payment"]["amount_minor"], 1000);
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(payment_ids(&listed), [payment_id.as_str()], "the list shows the one top-up");
    assert_eq!(listed.json()["payments"][0]["status"], "paid", "{}", listed.text());

    assert_eq!(count_of_type(&events, SUCCEEDED_EVENT), 1, "one {SUCCEEDED_EVENT} event");
    assert_eq!(count_of_type(&events, FAILED_EVENT), 0, "no {FAILED_EVENT} event");
    let event = events.iter().find(|event| event.event_type == SUCCEEDED_EVENT).expect("the event exists");
    assert_eq!(event.aggregate_type, "payment");
    assert_eq!(event.payload["payment_id"], payment_id.as_str(), "{}", event.payload);
    assert_eq!(event.payload["user_id"], ann.id.as_str(), "{}", event.payload);
    assert_eq!(event.payload["amount_minor"], 1000, "{}", event.payload);
    assert_eq!(event.payload["currency"], "EUR", "{}", event.payload);
    assert_eq!(event.payload["status"], "paid", "{}", event.payload);

    assert_eq!(transactions.len(), 1, "one ledger transaction for the top-up");
    let transaction = &transactions[0];
    assert_eq!(transaction.kind, "top_up");
    assert_eq!(transaction.entries.len(), 2, "a top-up moves money between two accounts");
    assert_eq!(transaction.entries.iter().map(|entry| entry.amount).sum::<i64>(), 0, "the entries sum to zero");
    let wallet_entry = transaction.entries.iter().find(|entry| entry.account_kind == "wallet");
    assert_eq!(
        wallet_entry.map(|entry| (entry.user_id.as_str(), entry.currency.as_str(), entry.amount)),
        Some((ann.id.as_str(), "EUR", 1000)),
        "the user's EUR wallet gets +1000"
    );
    let clearing_entry = transaction.entries.iter().find(|entry| entry.account_kind == "provider_clearing");
    assert_eq!(
        clearing_entry.map(|entry| (entry.currency.as_str(), entry.amount)),
        Some(("EUR", -1000)),
        "provider_clearing gets -1000"
    );
    let (stored_balance, entries_sum) = account.expect("the user has an EUR wallet account");
    assert_eq!(stored_balance, entries_sum, "the wallet's stored balance equals the sum of its entries");
    assert_eq!(stored_balance, 1000);
}

#[tokio::test]
async fn unpaid_top_ups_leave_wallet_unchanged() {
    let app = App::start();
    let ann = register_user(&app.host, "ann").await;

    for status in ["failed", "expired", "canceled"] {
        let payment_id = id_of(&create_top_up(&app.host, &ann, 1000).await);
        settle_at_provider(&app, &payment_id, status).await;
        let state = payment_state(&app.host, &ann, &payment_id).await;
        let events = payment_events(&payment_id).await;
        let failed = events.iter().find(|event| event.event_type == FAILED_EVENT);

        assert_eq!(state.status, status, "the provider's {status} becomes the payment's status");
        assert_eq!(state.balance, 0, "{status}: the wallet is unchanged");
        assert_eq!(state.failed_events, 1, "{status}: one {FAILED_EVENT} event");
        assert_eq!(state.succeeded_events, 0, "{status}: no {SUCCEEDED_EVENT} event");
        assert_eq!(state.ledger_transactions, 0, "{status}: nothing is booked");
        let payload = failed.map(|event| event.payload.clone()).unwrap_or_default();
        assert_eq!(payload["status"], status, "{status}: the event carries the status: {payload}");
        assert_eq!(payload["payment_id"], payment_id.as_str(), "{status}: {payload}");
        assert_eq!(payload["amount_minor"], 1000, "{status}: {payload}");
    }
    let account = wallet_account(&ann.id, "EUR").await;
    assert!(account.is_none_or(|(balance, _)| balance == 0), "no wallet balance was stored: {account:?}");
}

#[tokio::test]
async fn repeated_webhooks_credit_once() {
    let app = App::start();
    let ann = register_user(&app.host, "ann").await;
    let payment_id = id_of(&create_top_up(&app.host, &ann, 1000).await);
    let provider_id = provider_id(&app.fake, &payment_id);
    app.fake.set_payment_status(&provider_id, "paid");

    let first = app.fake.send_webhook(&provider_id).await;
    let (second, third) = tokio::join!(app.fake.send_webhook(&provider_id), app.fake.send_webhook(&provider_id));
    let state = payment_state(&app.host, &ann, &payment_id).await;
    let account = wallet_account(&ann.id, "EUR").await;

    assert_eq!(first, 200, "the first webhook");
    assert_eq!(second, 200, "a concurrent repeat");
    assert_eq!(third, 200, "the other concurrent repeat");
    assert_eq!(state.status, "paid");
    assert_eq!(state.balance, 1000, "three webhooks credit the wallet once");
    assert_eq!(state.succeeded_events, 1, "one {SUCCEEDED_EVENT} event");
    assert_eq!(state.ledger_transactions, 1, "one ledger transaction");
    assert_eq!(account.map(|(balance, _)| balance), Some(1000), "the stored balance is credited once");
}

#[tokio::test]
async fn webhook_while_open_changes_nothing() {
    let app = App::start();
    let ann = register_user(&app.host, "ann").await;
    let payment_id = id_of(&create_top_up(&app.host, &ann, 1000).await);

    // The provider's statuses before a final one all read as pending.
    for status in ["open", "pending", "authorized"] {
        settle_at_provider(&app, &payment_id, status).await;
        let state = payment_state(&app.host, &ann, &payment_id).await;

        assert_eq!(state.status, "pending", "the provider's {status} reads as pending");
        assert_eq!(state.balance, 0, "{status}: nothing is credited");
        assert_eq!(state.succeeded_events + state.failed_events, 0, "{status}: no event");
        assert_eq!(state.ledger_transactions, 0, "{status}: nothing is booked");
    }
    settle_at_provider(&app, &payment_id, "paid").await;
    let paid = payment_state(&app.host, &ann, &payment_id).await;
    assert_eq!(paid.status, "paid", "the payment was still open to a later webhook");
    assert_eq!(paid.balance, 1000);
}

#[tokio::test]
async fn paid_top_up_stays_paid() {
    let app = App::start();
    let ann = register_user(&app.host, "ann").await;
    let payment_id = pay_top_up(&app, &ann, 1000).await;
    let paid = payment_state(&app.host, &ann, &payment_id).await;

    settle_at_provider(&app, &payment_id, "failed").await;
    let after = payment_state(&app.host, &ann, &payment_id).await;

    assert_eq!(paid.status, "paid");
    assert_eq!(after.status, "paid", "a final status does not change when the provider reports another");
    assert_eq!(after.balance, 1000, "the credit stays");
    assert_eq!(after.succeeded_events, 1, "one {SUCCEEDED_EVENT} event");
    assert_eq!(after.failed_events, 0, "no {FAILED_EVENT} event");
    assert_eq!(after.ledger_transactions, 1, "no reversal was booked");
}

#[tokio::test]
async fn webhook_for_unknown_id_changes_nothing() {
    let app = App::start();
    let ann = register_user(&app.host, "ann").await;
    let payment_id = id_of(&create_top_up(&app.host, &ann, 1000).await);

    let unknown = post_webhook(&app.host, FORM_CONTENT_TYPE, "id=tr_unknown0000").await;
    let state = payment_state(&app.host, &ann, &payment_id).await;

    assert_eq!(unknown.status, 200, "an unknown id is acknowledged: {}", unknown.text());
    assert!(unknown.body.is_empty(), "the webhook reply has no body: {}", unknown.text());
    assert_eq!(state.status, "pending", "the other top-up is unchanged");
    assert_eq!(state.balance, 0);
    assert_eq!(state.succeeded_events + state.failed_events, 0, "no event");
}

#[tokio::test]
async fn webhook_body_fields_are_ignored() {
    let app = App::start();
    let ann = register_user(&app.host, "ann").await;
    let payment_id = id_of(&create_top_up(&app.host, &ann, 1000).await);
    let provider_id = provider_id(&app.fake, &payment_id);

    // The provider still returns the payment as open, whatever the body claims.
    let body = format!("id={provider_id}&status=paid&amount=1000000");
    let forged = post_webhook(&app.host, FORM_CONTENT_TYPE, &body).await;
    let state = payment_state(&app.host, &ann, &payment_id).await;

    assert_eq!(forged.status, 200, "{}", forged.text());
    assert_eq!(state.status, "pending", "the status comes from the provider, not the body");
    assert_eq!(state.balance, 0, "nothing is credited");
    assert_eq!(state.succeeded_events, 0, "no {SUCCEEDED_EVENT} event");
}

#[tokio::test]
async fn webhook_with_json_body_gets_415() {
    let app = App::start();
    let ann = register_user(&app.host, "ann").await;
    let payment_id = id_of(&create_top_up(&app.host, &ann, 1000).await);
    let provider_id = provider_id(&app.fake, &payment_id);
    app.fake.set_payment_status(&provider_id, "paid");

    let reply = post_webhook(&app.host, "application/json", &json!({ "id": provider_id }).to_string()).await;
    let state = payment_state(&app.host, &ann, &payment_id).await;

    assert_eq!(reply.status, 415, "{}", reply.text());
    assert_eq!(state.status, "pending", "the rejected webhook was not processed");
    assert_eq!(state.balance, 0, "nothing is credited");
}

#[tokio::test]
async fn dispatch_recovers_lost_webhook() {
    // Holds the lock because it calls payments' dispatch.
    let _serial = one_at_a_time().await;
    let app = App::start_with(app_options().env("SPIN_VARIABLE_PAYMENTS_RECHECK_AFTER_SECONDS", "0"));
    let ann = register_user(&app.host, "ann").await;
    let payment_id = id_of(&create_top_up(&app.host, &ann, 1000).await);
    // The provider marks the payment paid, but its webhook never arrives.
    app.fake.set_payment_status(&provider_id(&app.fake, &payment_id), "paid");
    let before = payment_state(&app.host, &ann, &payment_id).await;

    let first = dispatch(&app.host, "payments").await;
    let recovered = payment_state(&app.host, &ann, &payment_id).await;
    let second = dispatch(&app.host, "payments").await;
    let after_second = payment_state(&app.host, &ann, &payment_id).await;

    assert_eq!(before.status, "pending", "without the webhook the top-up stays pending");
    assert_eq!(before.balance, 0);
    assert_eq!(first.status, 200, "{}", first.text());
    // NOTE: dispatch re-checks every pending top-up of the shared schema,
    // other tests' included, so the counts are only checked from below.
    let counts = &first.json()["top_ups"];
    assert!(counts["checked"].as_u64().is_some_and(|n| n >= 1), "the first dispatch checked the top-up: {counts}");
    assert!(counts["changed"].as_u64().is_some_and(|n| n >= 1), "the first dispatch changed the top-up: {counts}");
    assert_eq!(recovered.status, "paid", "dispatch asked the provider and found the payment paid");
    assert_eq!(recovered.balance, 1000, "the wallet is credited");
    assert_eq!(recovered.succeeded_events, 1, "one {SUCCEEDED_EVENT} event");
    assert_eq!(recovered.ledger_transactions, 1, "one ledger transaction");
    assert_eq!(second.status, 200, "{}", second.text());
    assert!(second.json()["top_ups"]["checked"].is_u64(), "the second dispatch reports its checks: {}", second.text());
    assert_eq!(after_second.status, "paid");
    assert_eq!(after_second.balance, 1000, "the second dispatch credits nothing more");
    assert_eq!(after_second.succeeded_events, 1, "the second dispatch adds no event");
    assert_eq!(after_second.ledger_transactions, 1, "the second dispatch books nothing");
}

// ---- idempotency ----

#[tokio::test]
async fn missing_idempotency_key_gets_400() {
    let app = App::start();
    let ann = register_user(&app.host, "ann").await;

    let reply = request_top_up(&app.host, &ann.token, None, eur_top_up(1000)).await;
    let listed = list_payments(&app.host, Some(&ann.token), "").await;

    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(has_error_envelope(&reply), "{}", reply.text());
    assert!(provider_creations(&app.fake).is_empty(), "the provider was not called");
    assert_eq!(payment_ids(&listed), Vec::<String>::new(), "no payment was stored");
}

#[tokio::test]
async fn invalid_idempotency_key_gets_400() {
    let app = App::start();
    let ann = register_user(&app.host, "ann").await;
    let cases = [
        ("256 characters", "k".repeat(256)),
        ("a space", "key with space".to_string()),
        ("a tab", "key\twith-tab".to_string()),
    ];

    for (what, key) in &cases {
        let reply = request_top_up(&app.host, &ann.token, Some(key), eur_top_up(1000)).await;

        assert_eq!(reply.status, 400, "a key with {what}: {}", reply.text());
        assert!(has_error_envelope(&reply), "a key with {what}: {}", reply.text());
    }
    // Header values outside visible ASCII never reach the component: the
    // platform rejects the request first, as Spin does, without the envelope.
    let non_ascii = request_top_up(&app.host, &ann.token, Some("clé-ünicode"), eur_top_up(1000)).await;
    assert_eq!(non_ascii.status, 400, "a key with non-ASCII letters: {}", non_ascii.text());
    let creations_after_rejects = provider_creations(&app.fake).len();
    let longest = request_top_up(&app.host, &ann.token, Some(&"k".repeat(255)), eur_top_up(1000)).await;
    let listed = list_payments(&app.host, Some(&ann.token), "").await;

    assert_eq!(creations_after_rejects, 0, "no rejected request reached the provider");
    assert_eq!(longest.status, 201, "255 characters are allowed: {}", longest.text());
    assert_eq!(payment_ids(&listed).len(), 1, "only the valid request stored a payment");
}

#[tokio::test]
async fn same_key_replays_first_reply() {
    let app = App::start();
    let ann = register_user(&app.host, "ann").await;
    let key = unique_name("key");

    let first = request_top_up(&app.host, &ann.token, Some(&key), eur_top_up(1000)).await;
    let repeat = request_top_up(&app.host, &ann.token, Some(&key), eur_top_up(1000)).await;
    let listed = list_payments(&app.host, Some(&ann.token), "").await;

    assert_eq!(first.status, 201, "{}", first.text());
    assert_eq!(repeat.status, first.status, "the repeat gets the first status: {}", repeat.text());
    assert_eq!(repeat.json(), first.json(), "the repeat gets the first body, with the same id");
    assert_eq!(app.fake.payments().len(), 1, "the provider created one payment");
    assert_eq!(payment_ids(&listed).len(), 1, "the history shows one top-up");
}

#[tokio::test]
async fn same_key_other_body_gets_422() {
    let app = App::start();
    let ann = register_user(&app.host, "ann").await;
    let key = unique_name("key");

    let first = request_top_up(&app.host, &ann.token, Some(&key), eur_top_up(1000)).await;
    let other = request_top_up(&app.host, &ann.token, Some(&key), eur_top_up(2000)).await;
    let listed = list_payments(&app.host, Some(&ann.token), "").await;

    assert_eq!(first.status, 201, "{}", first.text());
    assert_eq!(other.status, 422, "{}", other.text());
    let messages = field_errors(&other, "body");
    assert!(
        messages.iter().any(|message| message.to_ascii_lowercase().contains("idempotency-key")),
        "the message names the Idempotency-Key: {}",
        other.text()
    );
    assert_eq!(app.fake.payments().len(), 1, "the provider created one payment");
    assert_eq!(payment_ids(&listed), [id_of(&created_top_up(&first))], "the history shows only the first top-up");
}

#[tokio::test]
async fn key_in_flight_gets_409() {
    // Holds the lock because the 409 depends on the timing of the hanging provider call.
    let _serial = one_at_a_time().await;
    let app = App::start();
    let ann = register_user(&app.host, "ann").await;
    let key = unique_name("key");
    app.fake.hang_next(1);

    let first = request_top_up(&app.host, &ann.token, Some(&key), eur_top_up(1000));
    let second = async {
        // Sends the repeat once the first request waits on the provider.
        wait_for_provider_creations(&app.fake, 1).await;
        let reply = request_top_up(&app.host, &ann.token, Some(&key), eur_top_up(1000)).await;
        (reply, provider_creations(&app.fake).len())
    };
    let (first, (second, creations_at_second)) = tokio::join!(first, second);

    assert_eq!(second.status, 409, "a repeat while the first request runs: {}", second.text());
    assert!(has_error_envelope(&second), "{}", second.text());
    assert_eq!(creations_at_second, 1, "the repeat did not call the provider");
    assert_eq!(first.status, 503, "the provider call hit its deadline: {}", first.text());
    assert!(retry_after_seconds(&first).is_some_and(|s| s >= 1), "Retry-After is {:?}", first.header("retry-after"));
    assert!(app.fake.payments().is_empty(), "the hanging request created no provider payment");
}

#[tokio::test]
async fn same_key_other_user_independent() {
    let app = App::start();
    let (ann, bob) = (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await);
    let key = unique_name("key");

    let anns = request_top_up(&app.host, &ann.token, Some(&key), eur_top_up(1000)).await;
    let bobs = request_top_up(&app.host, &bob.token, Some(&key), eur_top_up(1000)).await;
    let ann_id = id_of(&created_top_up(&anns));
    let bob_id = id_of(&created_top_up(&bobs));
    let ann_list = list_payments(&app.host, Some(&ann.token), "").await;
    let bob_list = list_payments(&app.host, Some(&bob.token), "").await;

    assert_ne!(ann_id, bob_id, "the second user gets a top-up of their own");
    assert_eq!(app.fake.payments().len(), 2, "the provider created two payments");
    assert_ne!(provider_id(&app.fake, &ann_id), provider_id(&app.fake, &bob_id), "each top-up has its own provider payment");
    assert_eq!(payment_ids(&ann_list), [ann_id], "ann sees her top-up only");
    assert_eq!(payment_ids(&bob_list), [bob_id], "bob sees his top-up only");
}

#[tokio::test]
async fn provider_outage_gets_retryable_503() {
    let app = App::start();

    for status in [503, 500] {
        let user = register_user(&app.host, "ann").await;
        let key = unique_name("key");
        let creations_before = provider_creations(&app.fake).len();
        app.fake.fail_next(1, status);

        let failed = request_top_up(&app.host, &user.token, Some(&key), eur_top_up(1000)).await;
        let listed_after_failure = list_payments(&app.host, Some(&user.token), "").await;
        let retried = request_top_up(&app.host, &user.token, Some(&key), eur_top_up(1000)).await;
        let listed = list_payments(&app.host, Some(&user.token), "").await;
        let creations: Vec<RecordedRequest> = provider_creations(&app.fake).split_off(creations_before);

        assert_eq!(failed.status, 503, "the provider's {status}: {}", failed.text());
        assert!(retry_after_seconds(&failed).is_some_and(|s| s >= 1), "provider {status}: Retry-After is {:?}", failed.header("retry-after"));
        assert!(has_error_envelope(&failed), "provider {status}: {}", failed.text());
        assert!(
            payment_ids(&listed_after_failure).is_empty(),
            "provider {status}: the failed request left no payment: {}",
            listed_after_failure.text()
        );
        assert_eq!(retried.status, 201, "provider {status}: the retry with the same key succeeds: {}", retried.text());
        let retried_id = id_of(&created_top_up(&retried));
        assert_eq!(payment_ids(&listed), [retried_id.as_str()], "provider {status}: the history shows exactly one top-up");
        assert_eq!(listed.json()["payments"][0]["status"], "pending", "provider {status}: {}", listed.text());
        assert_eq!(creations.len(), 2, "provider {status}: the failed attempt and the retry reached the provider");
        let keys: Vec<Option<String>> = creations.iter().map(|request| request.idempotency_key.clone()).collect();
        assert!(keys[0].as_deref().is_some_and(|k| !k.is_empty()), "provider {status}: the first attempt sent a key");
        assert_eq!(keys[1], keys[0], "provider {status}: the retry sent the provider the same Idempotency-Key");
        assert_eq!(eur_balance(&app.host, &user).await, 0, "provider {status}: nothing is credited");
    }
    assert_eq!(app.fake.payments().len(), 2, "one provider payment per user");
}

// ---- validation ----

#[tokio::test]
async fn top_up_rejects_invalid_fields() {
    let app = App::start();
    let ann = register_user(&app.host, "ann").await;
    let cases: [(&str, Value, &str); 11] = [
        ("a fraction", json!({"amount_minor": 1.5, "currency": "EUR"}), "amount_minor"),
        ("a string amount", json!({"amount_minor": "1000", "currency": "EUR"}), "amount_minor"),
        ("zero", json!({"amount_minor": 0, "currency": "EUR"}), "amount_minor"),
        ("a negative amount", json!({"amount_minor": -5, "currency": "EUR"}), "amount_minor"),
        ("1000001", json!({"amount_minor": 1_000_001, "currency": "EUR"}), "amount_minor"),
        ("no amount", json!({"currency": "EUR"}), "amount_minor"),
        ("a null amount", json!({"amount_minor": null, "currency": "EUR"}), "amount_minor"),
        ("an unknown currency", json!({"amount_minor": 1000, "currency": "XXX"}), "currency"),
        ("a lower-case currency", json!({"amount_minor": 1000, "currency": "usd"}), "currency"),
        ("a numeric currency", json!({"amount_minor": 1000, "currency": 5}), "currency"),
        ("an unknown field", json!({"amount_minor": 1000, "currency": "EUR", "tip_for": "bob"}), "tip_for"),
    ];

    for (what, fields, field) in cases {
        let reply = request_top_up(&app.host, &ann.token, Some(&unique_name("key")), fields).await;

        assert_eq!(reply.status, 422, "{what}: {}", reply.text());
        assert!(!field_errors(&reply, field).is_empty(), "{what}: the error is on `{field}`: {}", reply.text());
    }
    let listed = list_payments(&app.host, Some(&ann.token), "").await;
    assert!(provider_creations(&app.fake).is_empty(), "no invalid request reached the provider");
    assert_eq!(payment_ids(&listed), Vec::<String>::new(), "no payment was stored");
    assert_eq!(eur_balance(&app.host, &ann).await, 0);
}

#[tokio::test]
async fn top_up_accepts_amount_limits() {
    let app = App::start();
    let ann = register_user(&app.host, "ann").await;

    let smallest = request_top_up(&app.host, &ann.token, Some(&unique_name("key")), json!({"amount_minor": 1})).await;
    let largest = request_top_up(&app.host, &ann.token, Some(&unique_name("key")), eur_top_up(1_000_000)).await;

    let smallest = created_top_up(&smallest);
    let largest = created_top_up(&largest);
    let smallest_sent = provider_payment(&app.fake, &id_of(&smallest));
    let largest_sent = provider_payment(&app.fake, &id_of(&largest));
    assert_eq!(smallest["amount_minor"], 1);
    assert_eq!(smallest["currency"], "EUR", "the currency defaults to EUR");
    assert_eq!(smallest_sent["amount"], json!({"currency": "EUR", "value": "0.01"}), "1 cent is 0.01 at the provider");
    assert_eq!(largest["amount_minor"], 1_000_000);
    assert_eq!(largest_sent["amount"], json!({"currency": "EUR", "value": "10000.00"}));
}

#[tokio::test]
async fn non_json_top_up_gets_415() {
    let app = App::start();
    let ann = register_user(&app.host, "ann").await;
    let body = json!({ "top_up": eur_top_up(1000) }).to_string();

    for content_type in ["text/plain", FORM_CONTENT_TYPE] {
        let reply = send_top_up(&app.host, Some(&ann.token), Some(&unique_name("key")), content_type, body.clone()).await;

        assert_eq!(reply.status, 415, "sent as {content_type}: {}", reply.text());
        assert!(has_error_envelope(&reply), "sent as {content_type}: {}", reply.text());
    }
    assert!(provider_creations(&app.fake).is_empty(), "the provider was not called");
}

#[tokio::test]
async fn garbage_json_top_up_gets_400() {
    let app = App::start();
    let ann = register_user(&app.host, "ann").await;

    for body in ["{\"top_up\": {\"amount_minor\": 1000", "not json at all"] {
        let key = unique_name("key");
        let reply = send_top_up(&app.host, Some(&ann.token), Some(&key), "application/json", body.to_string()).await;

        assert_eq!(reply.status, 400, "{body:?}: {}", reply.text());
        assert!(has_error_envelope(&reply), "{body:?}: {}", reply.text());
    }
    assert!(provider_creations(&app.fake).is_empty(), "the provider was not called");
}

#[tokio::test]
async fn user_routes_need_valid_token() {
    let app = App::start();
    let ann = register_user(&app.host, "ann").await;
    let payment_id = id_of(&create_top_up(&app.host, &ann, 1000).await);
    let payment_path = format!("/api/payments/{payment_id}");
    let top_up_body = json!({ "top_up": eur_top_up(1000) }).to_string();

    for (what, token) in [("no token", None), ("a garbage token", Some("not.a.token"))] {
        let cases = [
            ("GET /api/wallet", get_wallet(&app.host, token).await),
            (
                "POST /api/wallet/top-ups",
                send_top_up(&app.host, token, Some(&unique_name("key")), "application/json", top_up_body.clone()).await,
            ),
            ("GET /api/payments", list_payments(&app.host, token, "").await),
            ("GET /api/payments/:id", app.host.send("GET", &payment_path, token).await),
            ("GET /api/admin/ledger/check", ledger_check(&app.host, token).await),
        ];

        for (route, reply) in &cases {
            assert_eq!(reply.status, 401, "{route} with {what}: {}", reply.text());
            assert!(has_error_envelope(reply), "{route} with {what}: {}", reply.text());
        }
    }
    let listed = list_payments(&app.host, Some(&ann.token), "").await;
    assert_eq!(app.fake.payments().len(), 1, "no unauthenticated top-up reached the provider");
    assert_eq!(payment_ids(&listed), [payment_id], "no payment was added");
}

// ---- wallet ----

#[tokio::test]
async fn new_user_wallet_is_zero_eur() {
    let app = App::start();
    let ann = register_user(&app.host, "ann").await;

    let reply = get_wallet(&app.host, Some(&ann.token)).await;

    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["wallet"]["balances"], json!([{"currency": "EUR", "amount_minor": 0}]), "{}", reply.text());
}

#[tokio::test]
async fn wallet_sums_paid_top_ups() {
    let app = App::start();
    let ann = register_user(&app.host, "ann").await;
    pay_top_up(&app, &ann, 1000).await;
    pay_top_up(&app, &ann, 2550).await;
    // A pending top-up does not count.
    create_top_up(&app.host, &ann, 700).await;

    let reply = get_wallet(&app.host, Some(&ann.token)).await;
    let account = wallet_account(&ann.id, "EUR").await;

    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["wallet"]["balances"], json!([{"currency": "EUR", "amount_minor": 3550}]), "{}", reply.text());
    let (stored_balance, entries_sum) = account.expect("the user has an EUR wallet account");
    assert_eq!(stored_balance, 3550, "the stored balance is the sum of the paid top-ups");
    assert_eq!(entries_sum, 3550, "the wallet's entries sum to the balance");
}

// ---- history ----

#[tokio::test]
async fn history_pages_newest_first() {
    let app = App::start();
    let (ann, bob) = (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await);
    let mut created = Vec::new();
    for amount in [100, 200, 300, 400, 500] {
        created.push(id_of(&create_top_up(&app.host, &ann, amount).await));
    }
    let bobs = id_of(&create_top_up(&app.host, &bob, 700).await);
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();

    let whole = list_payments(&app.host, Some(&ann.token), "").await;
    let capped = list_payments(&app.host, Some(&ann.token), "limit=1000").await;
    let mut pages: Vec<Vec<String>> = Vec::new();
    let mut query = "limit=2".to_string();
    // At most 10 pages, so that a cursor that never ends stops the loop.
    while pages.len() < 10 {
        let page = list_payments(&app.host, Some(&ann.token), &query).await;
        assert_eq!(page.status, 200, "{query}: {}", page.text());
        pages.push(payment_ids(&page));
        match next_cursor(&page) {
            Some(cursor) => query = format!("limit=2&cursor={}", percent_encode(&cursor)),
            None => break,
        }
    }
    let paged: Vec<String> = pages.concat();
    let distinct: BTreeSet<&String> = paged.iter().collect();

    assert_eq!(whole.status, 200, "{}", whole.text());
    assert_eq!(payment_ids(&whole), newest_first, "the default page shows all five, newest first");
    assert!(whole.json().get("next_cursor").is_some_and(Value::is_null), "the only page has a null next_cursor: {}", whole.text());
    let newest = &whole.json()["payments"][0];
    for field in PAYMENT_FIELDS {
        assert!(newest.get(field).is_some(), "a list item has `{field}`: {newest}");
    }
    assert_eq!(newest["amount_minor"], 500, "the newest is the last created");
    assert_eq!(newest["kind"], "top_up");
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<usize>>(), [2, 2, 1], "pages of two, then the last one");
    assert_eq!(distinct.len(), paged.len(), "no payment shows on two pages: {pages:?}");
    assert_eq!(paged, newest_first, "the pages together show every top-up once, newest first");
    assert!(!paged.contains(&bobs), "another user's top-up is not listed");
    assert_eq!(capped.status, 200, "a limit above 100 is capped, not rejected: {}", capped.text());
    assert_eq!(payment_ids(&capped), newest_first);
}

#[tokio::test]
async fn history_rejects_bad_cursor_and_limit() {
    let app = App::start();
    let ann = register_user(&app.host, "ann").await;
    create_top_up(&app.host, &ann, 1000).await;

    // The last cursor is base64 of {"x":1}, well formed but not one the component issued.
    for cursor in ["garbage", "AAAAAAAAAAAA", "eyJ4IjoxfQ"] {
        let reply = list_payments(&app.host, Some(&ann.token), &format!("cursor={cursor}")).await;

        assert_eq!(reply.status, 422, "cursor={cursor}: {}", reply.text());
        assert!(!field_errors(&reply, "cursor").is_empty(), "cursor={cursor}: the error is on `cursor`: {}", reply.text());
    }
    for limit in ["0", "-1", "abc", "1.5"] {
        let reply = list_payments(&app.host, Some(&ann.token), &format!("limit={limit}")).await;

        assert_eq!(reply.status, 422, "limit={limit}: {}", reply.text());
        assert!(!field_errors(&reply, "limit").is_empty(), "limit={limit}: the error is on `limit`: {}", reply.text());
    }
}

#[tokio::test]
async fn foreign_and_unknown_payments_get_404() {
    let app = App::start();
    let (ann, bob) = (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await);
    let payment_id = id_of(&create_top_up(&app.host, &ann, 1000).await);
    let provider_id = provider_id(&app.fake, &payment_id);

    let own = get_payment(&app.host, Some(&ann.token), &payment_id).await;
    let cases = [
        ("another user's payment", get_payment(&app.host, Some(&bob.token), &payment_id).await),
        ("an unknown UUID", get_payment(&app.host, Some(&ann.token), "00000000-0000-4000-8000-000000000000").await),
        ("a non-UUID id", get_payment(&app.host, Some(&ann.token), "not-a-uuid").await),
        ("the provider's id", get_payment(&app.host, Some(&ann.token), &provider_id).await),
    ];

    assert_eq!(own.status, 200, "the owner reads the payment: {}", own.text());
    assert_eq!(own.json()["payment"]["id"], payment_id.as_str());
    for (what, reply) in &cases {
        assert_eq!(reply.status, 404, "{what}: {}", reply.text());
        assert!(has_error_envelope(reply), "{what}: {}", reply.text());
    }
}

// ---- ledger check ----

#[tokio::test]
async fn ledger_check_needs_admin() {
    // Holds the lock because granting the role calls profiles' dispatch.
    let _serial = one_at_a_time().await;
    let app = App::start();
    let (ann, cy) = (register_user(&app.host, "ann").await, register_user(&app.host, "cy").await);
    let paid = pay_top_up(&app, &ann, 1500).await;
    let failed = id_of(&create_top_up(&app.host, &ann, 800).await);
    settle_at_provider(&app, &failed, "failed").await;
    let as_user = ledger_check(&app.host, Some(&ann.token)).await;

    grant_admin(&cy.id, "spin.toml");
    let dispatched = dispatch(&app.host, "profiles").await;
    let admin_token = log_in(&app.host, &cy).await;
    let as_admin = ledger_check(&app.host, Some(&admin_token)).await;
    let admin_reads_payment = get_payment(&app.host, Some(&admin_token), &paid).await;

    assert_eq!(as_user.status, 403, "a normal user: {}", as_user.text());
    assert!(has_error_envelope(&as_user), "{}", as_user.text());
    assert_eq!(dispatched.status, 200, "{}", dispatched.text());
    assert_eq!(as_admin.status, 200, "an admin: {}", as_admin.text());
    let ledger = as_admin.json()["ledger"].clone();
    assert_eq!(ledger["balanced"], true, "{ledger}");
    assert!(ledger["transactions"].as_u64().is_some_and(|n| n >= 1), "the paid top-up is counted: {ledger}");
    assert_eq!(ledger["entries_sum_by_currency"]["EUR"], 0, "{ledger}");
    let sums = ledger["entries_sum_by_currency"].as_object().cloned().unwrap_or_default();
    let nonzero: Vec<(&String, &Value)> = sums.iter().filter(|(_, sum)| **sum != 0).collect();
    assert!(nonzero.is_empty(), "every currency's entries sum to zero: {nonzero:?}");
    assert_eq!(ledger["unbalanced_transactions"], json!([]), "{ledger}");
    assert_eq!(ledger["mismatched_accounts"], json!([]), "{ledger}");
    assert_eq!(ledger["negative_wallets"], json!([]), "{ledger}");
    assert_eq!(admin_reads_payment.status, 200, "an admin reads any payment: {}", admin_reads_payment.text());
    assert_eq!(admin_reads_payment.json()["payment"]["id"], paid.as_str());
}
