//! Black-box tests of the payments component: wallets, top-ups through the
//! payment provider, the provider's webhooks, dispatch re-checks, payment
//! history, tips between users, admin refunds and the ledger check. The real
//! `payments.wasm` runs in the local host from the application's `spin.toml`,
//! next to profiles, which issues the tokens. Each test starts its own
//! `FakeMollie` on loopback as the provider, and reads rows as root from the
//! `conduit_test_payments` schema that `cargo xtask test` migrates.
//!
//! Tests that call a dispatch route (granting the admin role needs profiles'
//! dispatch), make the provider hang or fail, switch a component fault or send
//! 50 requests at once hold `one_at_a_time()`. A payments dispatch re-checks
//! every pending top-up and refund in the shared schema, and the 409 of a
//! request in flight depends on the timing of the hanging provider call.

use std::collections::{BTreeMap, BTreeSet};
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

/// Locks the mutex that serialises the tests listed in the file header. Each
/// test keeps the guard for its whole run.
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

#[tokio::test]
async fn retry_recreates_missing_payment_row() {
    let app = App::start();
    let user = register_user(&app.host, "ann").await;
    let key = unique_name("key");
    app.fake.fail_next(1, 503);
    let failed = request_top_up(&app.host, &user.token, Some(&key), eur_top_up(1000)).await;
    // The key stays claimed for a payment whose row is gone, as when the
    // first attempt failed between claiming the key and writing the row.
    let mut db = admin_db().await;
    db.exec_drop("DELETE FROM conduit_test_payments.payments WHERE user_id = ?", (user.id.clone(),)).await.unwrap();
    db.disconnect().await.unwrap();

    let retried = request_top_up(&app.host, &user.token, Some(&key), eur_top_up(1000)).await;
    let listed = list_payments(&app.host, Some(&user.token), "").await;

    assert_eq!(failed.status, 503, "{}", failed.text());
    assert_eq!(retried.status, 201, "the retry writes the row again: {}", retried.text());
    assert_eq!(payment_ids(&listed), [id_of(&created_top_up(&retried)).as_str()], "{}", listed.text());
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

// ---- tips: helpers ----

const TIP_RECEIVED_EVENT: &str = "tip.received";

/// The fields every tip has as `POST /api/tips` returns it. The optional
/// `article_slug` and `message` are not listed.
const TIP_FIELDS: [&str; 10] = [
    "id",
    "kind",
    "status",
    "direction",
    "amount_minor",
    "currency",
    "counterparty",
    "refunded_minor",
    "created_at",
    "updated_at",
];

/// Returns the `tip` fields of an EUR tip of `amount_minor` to `recipient`, without slug or message.
fn eur_tip(recipient: &TestUser, amount_minor: i64) -> Value {
    json!({"to_username": recipient.username, "amount_minor": amount_minor, "currency": "EUR"})
}

/// Sends `POST /api/tips` with `{"tip": <fields>}` as JSON, and with a token
/// and an `Idempotency-Key` when given.
async fn request_tip(host: &Host, token: Option<&str>, key: Option<&str>, fields: Value) -> Reply {
    let authorization = token.map(|t| format!("Token {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(value) = &authorization {
        headers.push(("authorization", value.as_str()));
    }
    if let Some(key) = key {
        headers.push(("idempotency-key", key));
    }
    host.request("POST", "/api/tips", &headers, json!({ "tip": fields }).to_string()).await
}

/// Returns the `tip` object of a reply. Panics unless the status is 201.
fn created_tip(reply: &Reply) -> Value {
    assert_eq!(reply.status, 201, "the tip request failed: {}", reply.text());
    reply.json()["tip"].clone()
}

/// Sends an EUR tip from `sender` to `recipient` with a new Idempotency-Key
/// and returns the created payment. Panics unless the status is 201.
async fn give_tip(host: &Host, sender: &TestUser, recipient: &TestUser, amount_minor: i64) -> Value {
    let reply = request_tip(host, Some(&sender.token), Some(&unique_name("key")), eur_tip(recipient, amount_minor)).await;
    created_tip(&reply)
}

/// Returns the `payment` object of `GET /api/payments/:id`. Panics unless the status is 200.
async fn read_payment(host: &Host, token: &str, payment_id: &str) -> Value {
    let reply = get_payment(host, Some(token), payment_id).await;
    assert_eq!(reply.status, 200, "reading payment {payment_id} failed: {}", reply.text());
    reply.json()["payment"].clone()
}

/// Returns the items of a `{"payments": […]}` reply whose kind is `tip`.
fn listed_tips(reply: &Reply) -> Vec<Value> {
    let body = reply.json();
    let payments = body["payments"].as_array().unwrap_or_else(|| panic!("the reply has no `payments` list: {body}"));
    payments.iter().filter(|payment| payment["kind"] == "tip").cloned().collect()
}

/// Checks that the error envelope names `field`, as its key or inside a message.
fn names_field(reply: &Reply, field: &str) -> bool {
    !field_errors(reply, field).is_empty() || error_messages(reply).iter().any(|message| message.contains(field))
}

/// Counts the replies by status, for assertion messages.
fn count_statuses(replies: &[Reply]) -> BTreeMap<u16, usize> {
    let mut counts = BTreeMap::new();
    for reply in replies {
        *counts.entry(reply.status).or_insert(0) += 1;
    }
    counts
}

// ---- refunds and admins: helpers ----

/// Sends `POST /api/payments/<id>/refund` with a JSON body, and a token when given.
async fn request_refund(host: &Host, token: Option<&str>, payment_id: &str, body: Value) -> Reply {
    host.send_json("POST", &format!("/api/payments/{payment_id}/refund"), token, &body).await
}

/// Returns a refund request body for `amount_minor`.
fn refund_body(amount_minor: i64) -> Value {
    json!({"refund": {"amount_minor": amount_minor}})
}

/// Returns the `refund` object of a reply. Panics unless the status is 201.
fn created_refund(reply: &Reply) -> Value {
    assert_eq!(reply.status, 201, "the refund request failed: {}", reply.text());
    reply.json()["refund"].clone()
}

/// Registers a user, grants it the admin role through profiles' dispatch and
/// logs it in again. Returns the user and the token that carries the role.
/// Callers hold `one_at_a_time()`, because this calls a dispatch route.
async fn register_admin(host: &Host) -> (TestUser, String) {
    let admin = register_user(host, "adm").await;
    grant_admin(&admin.id, "spin.toml");
    let dispatched = dispatch(host, "profiles").await;
    assert_eq!(dispatched.status, 200, "profiles' dispatch after the grant failed: {}", dispatched.text());
    let token = log_in(host, &admin).await;
    (admin, token)
}

/// Starts the application with a re-check delay of 0 s, so every payments
/// dispatch fetches open top-ups and refunds from the provider.
fn start_with_immediate_recheck() -> App {
    App::start_with(app_options().env("SPIN_VARIABLE_PAYMENTS_RECHECK_AFTER_SECONDS", "0"))
}

/// Returns the refunds the provider holds for its payment `provider_payment_id`, oldest first.
fn provider_refunds(fake: &FakeMollie, provider_payment_id: &str) -> Vec<Value> {
    fake.refunds().into_iter().filter(|refund| refund["paymentId"] == provider_payment_id).collect()
}

/// Returns the refund creations (`POST /v2/payments/<id>/refunds`) the provider received, oldest first.
fn provider_refund_requests(fake: &FakeMollie) -> Vec<RecordedRequest> {
    let is_refund_creation = |request: &RecordedRequest| {
        request.method == "POST" && request.path.starts_with("/v2/payments/") && request.path.ends_with("/refunds")
    };
    fake.requests().into_iter().filter(is_refund_creation).collect()
}

/// Returns the id (`re_…`) of the provider's only refund of our payment.
fn provider_refund_id(fake: &FakeMollie, payment_id: &str) -> String {
    let refunds = provider_refunds(fake, &provider_id(fake, payment_id));
    assert_eq!(refunds.len(), 1, "the provider holds one refund of payment {payment_id}: {refunds:?}");
    refunds[0]["id"].as_str().unwrap_or_else(|| panic!("the provider refund has no id: {}", refunds[0])).to_string()
}

/// Returns the summed balance of the `refunds_pending` accounts in `currency`.
///
/// NOTE: the account is shared by every test, so callers compare two readings
/// taken under `one_at_a_time()`. Only admins refund, and every test that
/// grants the role holds that lock.
async fn refunds_pending_balance(currency: &str) -> i64 {
    let statement = format!(
        "SELECT CAST(COALESCE(SUM(balance), 0) AS SIGNED) FROM {PAYMENTS_SCHEMA}.accounts
         WHERE kind = 'refunds_pending' AND currency = ?"
    );
    let rows: Vec<i64> = fetch_rows(&statement, vec![currency.into()]).await;
    rows.into_iter().next().unwrap_or(0)
}

/// Returns the stored statuses of a payment's refunds, oldest first.
///
/// NOTE: no route returns a refund after the request that created it, so this
/// reads the `refunds` table of the payments migration.
async fn refund_statuses(payment_id: &str) -> Vec<String> {
    let statement =
        format!("SELECT status FROM {PAYMENTS_SCHEMA}.refunds WHERE payment_id = ? ORDER BY created_at, id");
    fetch_rows(&statement, vec![payment_id.into()]).await
}

/// One row of the admin audit log.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct AuditRow {
    actor: String,
    action: String,
    amount_minor: i64,
}

/// Returns the admin audit rows of a payment, sorted by actor, action and amount.
async fn audit_rows(payment_id: &str) -> Vec<AuditRow> {
    let statement = format!(
        "SELECT actor, action, CAST(amount_minor AS SIGNED) FROM {PAYMENTS_SCHEMA}.admin_audit WHERE payment_id = ?"
    );
    let rows: Vec<(String, String, i64)> = fetch_rows(&statement, vec![payment_id.into()]).await;
    let mut rows: Vec<AuditRow> =
        rows.into_iter().map(|(actor, action, amount_minor)| AuditRow { actor, action, amount_minor }).collect();
    rows.sort();
    rows
}

/// Runs one statement as root and returns whether the database accepted it.
async fn root_statement_succeeds(statement: &str, params: Vec<String>) -> bool {
    let mut db = admin_db().await;
    let outcome = db.exec_drop(statement, params).await;
    db.disconnect().await.unwrap();
    outcome.is_ok()
}

/// Calls the ledger check as an admin and asserts that it reports a balanced ledger.
async fn assert_ledger_balanced(host: &Host, admin_token: &str, context: &str) {
    let reply = ledger_check(host, Some(admin_token)).await;
    assert_eq!(reply.status, 200, "{context}: the ledger check failed: {}", reply.text());
    let ledger = reply.json()["ledger"].clone();
    assert_eq!(ledger["balanced"], true, "{context}: {ledger}");
    assert_eq!(ledger["unbalanced_transactions"], json!([]), "{context}: {ledger}");
    assert_eq!(ledger["mismatched_accounts"], json!([]), "{context}: {ledger}");
    assert_eq!(ledger["negative_wallets"], json!([]), "{context}: {ledger}");
}

/// Asserts that the user's stored EUR wallet balance equals the sum of its
/// ledger entries, and returns that balance.
async fn assert_wallet_consistent(user: &TestUser) -> i64 {
    let (stored_balance, entries_sum) =
        wallet_account(&user.id, "EUR").await.unwrap_or_else(|| panic!("{} has no EUR wallet account", user.username));
    assert_eq!(stored_balance, entries_sum, "{}: the stored balance equals the sum of the wallet's entries", user.username);
    stored_balance
}

// ---- tips ----

#[tokio::test]
async fn tip_moves_money_between_wallets() {
    let app = App::start();
    let (ann, bob) = (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await);
    pay_top_up(&app, &ann, 1000).await;
    let fields = json!({
        "to_username": bob.username,
        "amount_minor": 250,
        "currency": "EUR",
        "article_slug": "thanks-for-2-posts",
        "message": "Thanks!",
    });

    let reply = request_tip(&app.host, Some(&ann.token), Some(&unique_name("key")), fields).await;
    let tip = created_tip(&reply);
    let tip_id = id_of(&tip);
    let ann_balance = eur_balance(&app.host, &ann).await;
    let bob_balance = eur_balance(&app.host, &bob).await;
    let transactions = ledger_transactions(&tip_id).await;
    let events = payment_events(&tip_id).await;

    for field in TIP_FIELDS {
        assert!(tip.get(field).is_some(), "the created tip has `{field}`: {tip}");
    }
    assert!(is_uuid(&tip_id), "the id {tip_id:?} is a UUID");
    assert_eq!(tip["kind"], "tip");
    assert_eq!(tip["status"], "completed");
    assert_eq!(tip["direction"], "sent");
    assert_eq!(tip["amount_minor"], 250);
    assert_eq!(tip["currency"], "EUR");
    assert_eq!(tip["counterparty"], bob.username.as_str(), "the counterparty is the recipient: {tip}");
    assert_eq!(tip["article_slug"], "thanks-for-2-posts");
    assert_eq!(tip["message"], "Thanks!");
    assert_eq!(tip["refunded_minor"], 0);
    assert!(tip["created_at"].as_str().is_some_and(is_rfc3339), "created_at is RFC 3339: {tip}");
    assert!(tip["updated_at"].as_str().is_some_and(is_rfc3339), "updated_at is RFC 3339: {tip}");

    assert_eq!(ann_balance, 750, "the sender's wallet goes down by the tip");
    assert_eq!(bob_balance, 250, "the recipient's wallet goes up by the tip");
    assert_eq!(assert_wallet_consistent(&ann).await, 750);
    assert_eq!(assert_wallet_consistent(&bob).await, 250);

    assert_eq!(transactions.len(), 1, "one ledger transaction for the tip");
    let transaction = &transactions[0];
    assert_eq!(transaction.kind, "tip");
    assert_eq!(transaction.entries.len(), 2, "a tip moves money between two wallets");
    assert_eq!(transaction.entries.iter().map(|entry| entry.amount).sum::<i64>(), 0, "the entries sum to zero");
    let entries: Vec<(&str, &str, &str, i64)> = transaction
        .entries
        .iter()
        .map(|entry| (entry.account_kind.as_str(), entry.user_id.as_str(), entry.currency.as_str(), entry.amount))
        .collect();
    assert_eq!(
        entries,
        [("wallet", bob.id.as_str(), "EUR", 250), ("wallet", ann.id.as_str(), "EUR", -250)],
        "the recipient's wallet gets +250 and the sender's -250"
    );

    assert_eq!(count_of_type(&events, TIP_RECEIVED_EVENT), 1, "one {TIP_RECEIVED_EVENT} event");
    let event = events.iter().find(|event| event.event_type == TIP_RECEIVED_EVENT).expect("the event exists");
    assert_eq!(event.aggregate_type, "payment");
    let payload = &event.payload;
    assert_eq!(payload["payment_id"], tip_id.as_str(), "{payload}");
    assert_eq!(payload["from_user_id"], ann.id.as_str(), "{payload}");
    assert_eq!(payload["to_user_id"], bob.id.as_str(), "{payload}");
    assert_eq!(payload["amount_minor"], 250, "{payload}");
    assert_eq!(payload["currency"], "EUR", "{payload}");
    assert_eq!(payload["article_slug"], "thanks-for-2-posts", "{payload}");
    assert_eq!(payload["message"], "Thanks!", "{payload}");
}

#[tokio::test]
async fn tip_optional_fields_may_be_omitted() {
    let app = App::start();
    let (ann, bob) = (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await);
    pay_top_up(&app, &ann, 1000).await;

    let fields = json!({"to_username": bob.username, "amount_minor": 100});
    let reply = request_tip(&app.host, Some(&ann.token), Some(&unique_name("key")), fields).await;
    let tip = created_tip(&reply);
    let events = payment_events(&id_of(&tip)).await;

    assert_eq!(tip["currency"], "EUR", "the currency defaults to EUR: {tip}");
    assert!(tip.get("article_slug").is_none_or(Value::is_null), "no slug was sent: {tip}");
    assert!(tip.get("message").is_none_or(Value::is_null), "no message was sent: {tip}");
    assert_eq!(eur_balance(&app.host, &ann).await, 900);
    assert_eq!(eur_balance(&app.host, &bob).await, 100);
    assert_eq!(count_of_type(&events, TIP_RECEIVED_EVENT), 1, "one {TIP_RECEIVED_EVENT} event");
}

#[tokio::test]
async fn tip_recipient_name_ignores_case() {
    let app = App::start();
    let (ann, bob) = (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await);
    pay_top_up(&app, &ann, 1000).await;
    let shouted = bob.username.to_uppercase();
    assert_ne!(shouted, bob.username, "the test needs a name with lower-case letters");

    let fields = json!({"to_username": shouted, "amount_minor": 100});
    let reply = request_tip(&app.host, Some(&ann.token), Some(&unique_name("key")), fields).await;
    let tip = created_tip(&reply);

    assert_eq!(tip["counterparty"], bob.username.as_str(), "the reply shows the stored spelling: {tip}");
    assert_eq!(eur_balance(&app.host, &bob).await, 100, "the user with that name in other case gets the tip");
}

#[tokio::test]
async fn tip_accepts_field_limits() {
    let app = App::start();
    let (ann, bob) = (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await);
    pay_top_up(&app, &ann, 1_000_000).await;
    pay_top_up(&app, &ann, 1).await;
    let longest_slug = format!("{}-{}", "a".repeat(49), "9".repeat(50));
    // The limit counts characters, so 280 two-byte characters fit.
    let longest_message = "é".repeat(280);

    let smallest = request_tip(&app.host, Some(&ann.token), Some(&unique_name("key")), eur_tip(&bob, 1)).await;
    let largest_fields = json!({
        "to_username": bob.username,
        "amount_minor": 1_000_000,
        "article_slug": longest_slug,
        "message": longest_message,
    });
    let largest = request_tip(&app.host, Some(&ann.token), Some(&unique_name("key")), largest_fields).await;

    assert_eq!(longest_slug.len(), 100);
    assert_eq!(created_tip(&smallest)["amount_minor"], 1);
    let largest = created_tip(&largest);
    assert_eq!(largest["amount_minor"], 1_000_000);
    assert_eq!(largest["article_slug"], longest_slug.as_str());
    assert_eq!(largest["message"], longest_message.as_str());
    assert_eq!(eur_balance(&app.host, &ann).await, 0, "the sender may tip the whole balance");
    assert_eq!(eur_balance(&app.host, &bob).await, 1_000_001);
}

#[tokio::test]
async fn tip_rejects_invalid_fields() {
    let app = App::start();
    let (ann, bob) = (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await);
    pay_top_up(&app, &ann, 5000).await;
    // Each case sets one field of an otherwise valid tip of 100, or removes it when the value is `None`.
    let cases: [(&str, &str, Option<Value>); 23] = [
        ("no recipient", "to_username", None),
        ("a null recipient", "to_username", Some(json!(null))),
        ("a numeric recipient", "to_username", Some(json!(42))),
        ("no amount", "amount_minor", None),
        ("a null amount", "amount_minor", Some(json!(null))),
        ("a fraction", "amount_minor", Some(json!(1.5))),
        ("a string amount", "amount_minor", Some(json!("100"))),
        ("zero", "amount_minor", Some(json!(0))),
        ("a negative amount", "amount_minor", Some(json!(-100))),
        ("1000001", "amount_minor", Some(json!(1_000_001))),
        ("an unknown currency", "currency", Some(json!("XXX"))),
        ("a lower-case currency", "currency", Some(json!("eur"))),
        ("a numeric currency", "currency", Some(json!(978))),
        ("an upper-case slug", "article_slug", Some(json!("Hello-world"))),
        ("a double hyphen", "article_slug", Some(json!("hello--world"))),
        ("a leading hyphen", "article_slug", Some(json!("-hello"))),
        ("a trailing hyphen", "article_slug", Some(json!("hello-"))),
        ("a space in the slug", "article_slug", Some(json!("hello world"))),
        ("an accented slug", "article_slug", Some(json!("café"))),
        ("a 101-character slug", "article_slug", Some(json!("a".repeat(101)))),
        ("a numeric slug", "article_slug", Some(json!(7))),
        ("a 281-character message", "message", Some(json!("x".repeat(281)))),
        ("a numeric message", "message", Some(json!(5))),
    ];

    for (what, field, value) in cases {
        let mut fields = eur_tip(&bob, 100);
        match value {
            Some(value) => fields[field] = value,
            None => {
                fields.as_object_mut().expect("a tip is a JSON object").remove(field);
            }
        }
        let reply = request_tip(&app.host, Some(&ann.token), Some(&unique_name("key")), fields).await;

        assert_eq!(reply.status, 422, "{what}: {}", reply.text());
        assert!(!field_errors(&reply, field).is_empty(), "{what}: the error is on `{field}`: {}", reply.text());
    }
    let anns_list = list_payments(&app.host, Some(&ann.token), "").await;
    let bobs_list = list_payments(&app.host, Some(&bob.token), "").await;
    assert_eq!(eur_balance(&app.host, &ann).await, 5000, "no invalid tip moved money");
    assert_eq!(eur_balance(&app.host, &bob).await, 0);
    assert!(listed_tips(&anns_list).is_empty(), "no tip was stored: {}", anns_list.text());
    assert!(listed_tips(&bobs_list).is_empty(), "no tip was stored: {}", bobs_list.text());
}

#[tokio::test]
async fn tip_rejects_unknown_fields() {
    let app = App::start();
    let (ann, bob) = (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await);
    pay_top_up(&app, &ann, 1000).await;
    let cases = [("from_username", json!(bob.username)), ("balance", json!(1_000_000))];

    for (field, value) in cases {
        let mut fields = eur_tip(&bob, 100);
        fields[field] = value;
        let reply = request_tip(&app.host, Some(&ann.token), Some(&unique_name("key")), fields).await;

        assert_eq!(reply.status, 422, "an unknown `{field}`: {}", reply.text());
        assert!(names_field(&reply, field), "the error names `{field}`: {}", reply.text());
    }
    assert_eq!(eur_balance(&app.host, &ann).await, 1000, "no rejected tip moved money");
    assert_eq!(eur_balance(&app.host, &bob).await, 0);
}

#[tokio::test]
async fn tip_needs_valid_idempotency_key() {
    let app = App::start();
    let (ann, bob) = (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await);
    pay_top_up(&app, &ann, 1000).await;
    let cases = [
        ("no key", None),
        ("256 characters", Some("k".repeat(256))),
        ("a space", Some("key with space".to_string())),
    ];

    for (what, key) in &cases {
        let reply = request_tip(&app.host, Some(&ann.token), key.as_deref(), eur_tip(&bob, 100)).await;

        assert_eq!(reply.status, 400, "{what}: {}", reply.text());
        assert!(has_error_envelope(&reply), "{what}: {}", reply.text());
    }
    assert_eq!(eur_balance(&app.host, &ann).await, 1000, "no rejected tip moved money");
    assert_eq!(eur_balance(&app.host, &bob).await, 0);
}

#[tokio::test]
async fn tip_needs_valid_token() {
    let app = App::start();
    let bob = register_user(&app.host, "bob").await;

    for (what, token) in [("no token", None), ("a garbage token", Some("not.a.token"))] {
        let reply = request_tip(&app.host, token, Some(&unique_name("key")), eur_tip(&bob, 100)).await;

        assert_eq!(reply.status, 401, "{what}: {}", reply.text());
        assert!(has_error_envelope(&reply), "{what}: {}", reply.text());
    }
    assert_eq!(eur_balance(&app.host, &bob).await, 0);
}

#[tokio::test]
async fn tip_to_unknown_user_gets_404() {
    let app = App::start();
    let ann = register_user(&app.host, "ann").await;
    pay_top_up(&app, &ann, 1000).await;

    let fields = json!({"to_username": unique_name("nobody"), "amount_minor": 100});
    let reply = request_tip(&app.host, Some(&ann.token), Some(&unique_name("key")), fields).await;
    let listed = list_payments(&app.host, Some(&ann.token), "").await;

    assert_eq!(reply.status, 404, "{}", reply.text());
    assert!(has_error_envelope(&reply), "{}", reply.text());
    assert_eq!(eur_balance(&app.host, &ann).await, 1000, "nothing moved");
    assert!(listed_tips(&listed).is_empty(), "no tip was stored: {}", listed.text());
}

#[tokio::test]
async fn tip_to_self_gets_422() {
    let app = App::start();
    let ann = register_user(&app.host, "ann").await;
    pay_top_up(&app, &ann, 1000).await;

    for name in [ann.username.clone(), ann.username.to_uppercase()] {
        let fields = json!({"to_username": name, "amount_minor": 100});
        let reply = request_tip(&app.host, Some(&ann.token), Some(&unique_name("key")), fields).await;

        assert_eq!(reply.status, 422, "a tip to {name}: {}", reply.text());
        let errors = field_errors(&reply, "to_username");
        assert!(!errors.is_empty(), "a tip to {name}: the error is on `to_username`: {}", reply.text());
    }
    let listed = list_payments(&app.host, Some(&ann.token), "").await;
    assert_eq!(eur_balance(&app.host, &ann).await, 1000, "nothing moved");
    assert!(listed_tips(&listed).is_empty(), "no tip was stored: {}", listed.text());
}

#[tokio::test]
async fn tip_over_balance_gets_422() {
    let app = App::start();
    let (ann, bob) = (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await);
    let top_up_id = pay_top_up(&app, &ann, 300).await;

    let reply = request_tip(&app.host, Some(&ann.token), Some(&unique_name("key")), eur_tip(&bob, 301)).await;
    let listed = list_payments(&app.host, Some(&ann.token), "").await;

    assert_eq!(reply.status, 422, "{}", reply.text());
    let messages = field_errors(&reply, "amount_minor");
    assert!(!messages.is_empty(), "the error is on `amount_minor`: {}", reply.text());
    // The message may name the balance by word or by amount (300 cents, 3.00 EUR).
    let mentions_balance = messages.iter().any(|message| {
        message.to_lowercase().contains("balance") || message.contains("300") || message.contains("3.00")
    });
    assert!(mentions_balance, "the message mentions the balance: {messages:?}");
    assert_eq!(eur_balance(&app.host, &ann).await, 300, "the sender's wallet is unchanged");
    assert_eq!(eur_balance(&app.host, &bob).await, 0, "the recipient's wallet is unchanged");
    assert_eq!(payment_ids(&listed), [top_up_id], "no tip was stored");
}

#[tokio::test]
async fn insufficient_funds_reply_is_replayed() {
    let app = App::start();
    let (ann, bob) = (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await);
    pay_top_up(&app, &ann, 100).await;
    let key = unique_name("key");

    let first = request_tip(&app.host, Some(&ann.token), Some(&key), eur_tip(&bob, 500)).await;
    pay_top_up(&app, &ann, 1000).await;
    let repeat = request_tip(&app.host, Some(&ann.token), Some(&key), eur_tip(&bob, 500)).await;
    let new_key = request_tip(&app.host, Some(&ann.token), Some(&unique_name("key")), eur_tip(&bob, 500)).await;

    assert_eq!(first.status, 422, "{}", first.text());
    assert!(!field_errors(&first, "amount_minor").is_empty(), "{}", first.text());
    assert_eq!(repeat.status, 422, "the key replays the stored 422 after the sender got money: {}", repeat.text());
    assert_eq!(repeat.json(), first.json(), "the repeat gets the first body");
    assert_eq!(new_key.status, 201, "a new key sends the tip: {}", new_key.text());
    assert_eq!(eur_balance(&app.host, &ann).await, 600, "only the tip with the new key moved money");
    assert_eq!(eur_balance(&app.host, &bob).await, 500);
}

#[tokio::test]
async fn same_tip_key_replays_first_reply() {
    let app = App::start();
    let (ann, bob) = (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await);
    pay_top_up(&app, &ann, 1000).await;
    let key = unique_name("key");

    let first = request_tip(&app.host, Some(&ann.token), Some(&key), eur_tip(&bob, 250)).await;
    let repeat = request_tip(&app.host, Some(&ann.token), Some(&key), eur_tip(&bob, 250)).await;
    let tip_id = id_of(&created_tip(&first));
    let listed = list_payments(&app.host, Some(&ann.token), "").await;
    let transactions = ledger_transactions(&tip_id).await;
    let events = payment_events(&tip_id).await;

    assert_eq!(repeat.status, 201, "the repeat gets the first status: {}", repeat.text());
    assert_eq!(repeat.json(), first.json(), "the repeat gets the first body, with the same id");
    assert_eq!(eur_balance(&app.host, &ann).await, 750, "the money moved once");
    assert_eq!(eur_balance(&app.host, &bob).await, 250);
    assert_eq!(listed_tips(&listed).len(), 1, "the history shows one tip: {}", listed.text());
    assert_eq!(transactions.len(), 1, "one ledger transaction");
    assert_eq!(count_of_type(&events, TIP_RECEIVED_EVENT), 1, "one {TIP_RECEIVED_EVENT} event");
}

#[tokio::test]
async fn same_tip_key_other_body_gets_422() {
    let app = App::start();
    let (ann, bob) = (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await);
    pay_top_up(&app, &ann, 1000).await;
    let key = unique_name("key");

    let first = request_tip(&app.host, Some(&ann.token), Some(&key), eur_tip(&bob, 250)).await;
    let other = request_tip(&app.host, Some(&ann.token), Some(&key), eur_tip(&bob, 400)).await;
    let listed = list_payments(&app.host, Some(&ann.token), "").await;

    assert_eq!(first.status, 201, "{}", first.text());
    assert_eq!(other.status, 422, "{}", other.text());
    let names_key = error_messages(&other).iter().any(|message| message.to_ascii_lowercase().contains("idempotency-key"));
    assert!(names_key, "the message names the Idempotency-Key: {}", other.text());
    assert_eq!(eur_balance(&app.host, &ann).await, 750, "only the first tip moved money");
    assert_eq!(eur_balance(&app.host, &bob).await, 250);
    let tip_ids: Vec<String> = listed_tips(&listed).iter().map(id_of).collect();
    assert_eq!(tip_ids, [id_of(&created_tip(&first))], "the history shows only the first tip");
}

#[tokio::test]
async fn recipient_history_shows_received_tip() {
    let app = App::start();
    let (ann, bob) = (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await);
    pay_top_up(&app, &ann, 1000).await;
    let tip_id = id_of(&give_tip(&app.host, &ann, &bob, 250).await);

    let anns_list = list_payments(&app.host, Some(&ann.token), "").await;
    let bobs_list = list_payments(&app.host, Some(&bob.token), "").await;

    assert_eq!(bobs_list.status, 200, "{}", bobs_list.text());
    assert_eq!(payment_ids(&bobs_list), [tip_id.as_str()], "the recipient's history shows the tip only");
    let received = &bobs_list.json()["payments"][0];
    assert_eq!(received["kind"], "tip", "{received}");
    assert_eq!(received["direction"], "received", "{received}");
    assert_eq!(received["counterparty"], ann.username.as_str(), "the counterparty is the sender: {received}");
    assert_eq!(received["amount_minor"], 250, "{received}");
    assert_eq!(received["status"], "completed", "{received}");
    let sent = listed_tips(&anns_list);
    assert_eq!(sent.len(), 1, "the sender's history shows the tip: {}", anns_list.text());
    assert_eq!(sent[0]["id"], tip_id.as_str());
    assert_eq!(sent[0]["direction"], "sent", "{}", sent[0]);
    assert_eq!(sent[0]["counterparty"], bob.username.as_str(), "{}", sent[0]);
}

#[tokio::test]
async fn tip_visible_to_parties_and_admin() {
    // Holds the lock because granting the role calls profiles' dispatch.
    let _serial = one_at_a_time().await;
    let app = App::start();
    let ann = register_user(&app.host, "ann").await;
    let bob = register_user(&app.host, "bob").await;
    let cy = register_user(&app.host, "cy").await;
    let (_admin, admin_token) = register_admin(&app.host).await;
    pay_top_up(&app, &ann, 1000).await;
    let tip_id = id_of(&give_tip(&app.host, &ann, &bob, 250).await);

    let as_sender = get_payment(&app.host, Some(&ann.token), &tip_id).await;
    let as_recipient = get_payment(&app.host, Some(&bob.token), &tip_id).await;
    let as_admin = get_payment(&app.host, Some(&admin_token), &tip_id).await;
    let as_other = get_payment(&app.host, Some(&cy.token), &tip_id).await;

    assert_eq!(as_sender.status, 200, "the sender: {}", as_sender.text());
    assert_eq!(as_sender.json()["payment"]["id"], tip_id.as_str());
    assert_eq!(as_sender.json()["payment"]["direction"], "sent", "{}", as_sender.text());
    assert_eq!(as_recipient.status, 200, "the recipient: {}", as_recipient.text());
    assert_eq!(as_recipient.json()["payment"]["id"], tip_id.as_str());
    assert_eq!(as_recipient.json()["payment"]["direction"], "received", "{}", as_recipient.text());
    assert_eq!(as_recipient.json()["payment"]["counterparty"], ann.username.as_str(), "{}", as_recipient.text());
    assert_eq!(as_admin.status, 200, "an admin: {}", as_admin.text());
    assert_eq!(as_admin.json()["payment"]["id"], tip_id.as_str());
    assert_eq!(as_other.status, 404, "a user who neither sent nor received the tip: {}", as_other.text());
    assert!(has_error_envelope(&as_other), "{}", as_other.text());
}

#[tokio::test]
async fn tip_reaches_user_registered_during_outage() {
    // Holds the lock because it switches a fault and calls profiles' dispatch.
    let _serial = one_at_a_time().await;
    let mut options = app_options();
    options.faults = true;
    let app = App::start_with(options);
    let ann = register_user(&app.host, "ann").await;
    pay_top_up(&app, &ann, 1000).await;

    app.host.set_fault("payments", "unavailable").await;
    let dee = register_user(&app.host, "dee").await;
    app.host.set_fault("payments", "none").await;
    let dispatched = dispatch(&app.host, "profiles").await;
    let reply = request_tip(&app.host, Some(&ann.token), Some(&unique_name("key")), eur_tip(&dee, 300)).await;

    assert_eq!(dispatched.status, 200, "{}", dispatched.text());
    let tip = created_tip(&reply);
    assert_eq!(tip["counterparty"], dee.username.as_str(), "{tip}");
    assert_eq!(eur_balance(&app.host, &ann).await, 700);
    assert_eq!(eur_balance(&app.host, &dee).await, 300, "the late user's wallet got the tip");
}

// ---- refunds ----

/// The fields of a refund as `POST /api/payments/:id/refund` returns it.
const REFUND_FIELDS: [&str; 6] = ["id", "payment_id", "amount_minor", "currency", "status", "created_at"];

/// Asserts the fields every created refund has, whatever its status.
fn assert_refund_shape(refund: &Value, payment_id: &str, amount_minor: i64) {
    for field in REFUND_FIELDS {
        assert!(refund.get(field).is_some(), "the created refund has `{field}`: {refund}");
    }
    assert!(refund["id"].as_str().is_some_and(is_uuid), "the refund id is a UUID: {refund}");
    assert_eq!(refund["payment_id"], payment_id, "{refund}");
    assert_eq!(refund["amount_minor"], amount_minor, "{refund}");
    assert_eq!(refund["currency"], "EUR", "{refund}");
    assert!(refund["created_at"].as_str().is_some_and(is_rfc3339), "created_at is RFC 3339: {refund}");
}

#[tokio::test]
async fn refund_needs_admin_token() {
    let app = App::start();
    let (ann, bob) = (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await);
    let top_up_id = pay_top_up(&app, &ann, 1000).await;
    let tip_id = id_of(&give_tip(&app.host, &ann, &bob, 100).await);
    let cases = [
        ("no token", None, 401),
        ("a garbage token", Some("not.a.token"), 401),
        ("the sender's token", Some(ann.token.as_str()), 403),
        ("the recipient's token", Some(bob.token.as_str()), 403),
    ];

    for (what, token, expected) in cases {
        for (payment, payment_id) in [("the tip", &tip_id), ("the top-up", &top_up_id)] {
            let reply = request_refund(&app.host, token, payment_id, refund_body(50)).await;

            assert_eq!(reply.status, expected, "{payment} with {what}: {}", reply.text());
            assert!(has_error_envelope(&reply), "{payment} with {what}: {}", reply.text());
        }
    }
    let tip = read_payment(&app.host, &ann.token, &tip_id).await;
    assert_eq!(tip["refunded_minor"], 0, "nothing was refunded: {tip}");
    assert_eq!(eur_balance(&app.host, &ann).await, 900);
    assert_eq!(eur_balance(&app.host, &bob).await, 100);
    assert!(provider_refund_requests(&app.fake).is_empty(), "no refund reached the provider");
}

#[tokio::test]
async fn refund_rejects_invalid_amount_and_id() {
    // Holds the lock because granting the role calls profiles' dispatch.
    let _serial = one_at_a_time().await;
    let app = App::start();
    let (ann, bob) = (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await);
    let (_admin, admin_token) = register_admin(&app.host).await;
    pay_top_up(&app, &ann, 1000).await;
    let tip_id = id_of(&give_tip(&app.host, &ann, &bob, 100).await);
    let amounts: [(&str, Value); 5] = [
        ("zero", json!(0)),
        ("a negative amount", json!(-5)),
        ("a fraction", json!(1.5)),
        ("a string amount", json!("40")),
        ("more than the tip", json!(101)),
    ];

    for (what, amount) in amounts {
        let body = json!({"refund": {"amount_minor": amount}});
        let reply = request_refund(&app.host, Some(&admin_token), &tip_id, body).await;

        assert_eq!(reply.status, 422, "{what}: {}", reply.text());
        let errors = field_errors(&reply, "amount_minor");
        assert!(!errors.is_empty(), "{what}: the error is on `amount_minor`: {}", reply.text());
    }
    for payment_id in ["00000000-0000-4000-8000-000000000000", "not-a-uuid"] {
        let reply = request_refund(&app.host, Some(&admin_token), payment_id, refund_body(10)).await;

        assert_eq!(reply.status, 404, "payment {payment_id}: {}", reply.text());
        assert!(has_error_envelope(&reply), "payment {payment_id}: {}", reply.text());
    }
    let untouched = read_payment(&app.host, &admin_token, &tip_id).await;
    let partial = request_refund(&app.host, Some(&admin_token), &tip_id, refund_body(40)).await;
    let over_remaining = request_refund(&app.host, Some(&admin_token), &tip_id, refund_body(61)).await;
    let tip = read_payment(&app.host, &admin_token, &tip_id).await;

    assert_eq!(untouched["refunded_minor"], 0, "the rejected refunds changed nothing: {untouched}");
    assert_eq!(partial.status, 201, "{}", partial.text());
    assert_eq!(over_remaining.status, 422, "61 is more than the 60 that remain: {}", over_remaining.text());
    assert!(!field_errors(&over_remaining, "amount_minor").is_empty(), "{}", over_remaining.text());
    assert_eq!(tip["refunded_minor"], 40, "{tip}");
    assert_eq!(eur_balance(&app.host, &ann).await, 940);
    assert_eq!(eur_balance(&app.host, &bob).await, 60);
}

#[tokio::test]
async fn tip_refund_partial_then_full() {
    // Holds the lock because granting the role calls profiles' dispatch.
    let _serial = one_at_a_time().await;
    let app = App::start();
    let (ann, bob) = (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await);
    let (_admin, admin_token) = register_admin(&app.host).await;
    pay_top_up(&app, &ann, 1000).await;
    let first_tip = id_of(&give_tip(&app.host, &ann, &bob, 100).await);
    let second_tip = id_of(&give_tip(&app.host, &ann, &bob, 50).await);

    let partial = request_refund(&app.host, Some(&admin_token), &first_tip, refund_body(40)).await;
    let partial_refund = created_refund(&partial);
    let after_partial = read_payment(&app.host, &admin_token, &first_tip).await;
    let sender_view = read_payment(&app.host, &ann.token, &first_tip).await;
    let balances_after_partial = (eur_balance(&app.host, &ann).await, eur_balance(&app.host, &bob).await);

    let rest = request_refund(&app.host, Some(&admin_token), &first_tip, json!({})).await;
    let rest_refund = created_refund(&rest);
    let after_rest = read_payment(&app.host, &admin_token, &first_tip).await;
    let one_more = request_refund(&app.host, Some(&admin_token), &first_tip, refund_body(1)).await;

    let whole = request_refund(&app.host, Some(&admin_token), &second_tip, json!({"refund": {}})).await;
    let whole_refund = created_refund(&whole);
    let second_after = read_payment(&app.host, &admin_token, &second_tip).await;
    let first_tip_statuses = refund_statuses(&first_tip).await;

    assert_refund_shape(&partial_refund, &first_tip, 40);
    assert_eq!(partial_refund["status"], "completed", "a tip refund completes at once: {partial_refund}");
    assert_eq!(after_partial["refunded_minor"], 40, "{after_partial}");
    assert_eq!(after_partial["status"], "partially_refunded", "{after_partial}");
    assert_eq!(after_partial["amount_minor"], 100, "the payment keeps its original amount: {after_partial}");
    assert_eq!(sender_view["refunded_minor"], 40, "the sender sees the refund: {sender_view}");
    assert_eq!(balances_after_partial, (890, 110), "40 went back from the recipient to the sender");

    assert_refund_shape(&rest_refund, &first_tip, 60);
    assert_eq!(rest_refund["status"], "completed", "{rest_refund}");
    assert_eq!(after_rest["refunded_minor"], 100, "{after_rest}");
    assert_eq!(after_rest["status"], "refunded", "{after_rest}");
    assert_eq!(after_rest["amount_minor"], 100, "{after_rest}");
    assert_eq!(one_more.status, 422, "nothing remains to refund: {}", one_more.text());
    assert!(!field_errors(&one_more, "amount_minor").is_empty(), "{}", one_more.text());

    assert_eq!(first_tip_statuses, ["completed", "completed"], "both refunds of the first tip are stored as completed");
    assert_refund_shape(&whole_refund, &second_tip, 50);
    assert_eq!(second_after["refunded_minor"], 50, "{second_after}");
    assert_eq!(second_after["status"], "refunded", "{second_after}");
    assert_eq!(assert_wallet_consistent(&ann).await, 1000, "both tips went back to the sender");
    assert_eq!(assert_wallet_consistent(&bob).await, 0);
}

#[tokio::test]
async fn tip_refund_from_emptied_wallet_gets_409() {
    // Holds the lock because granting the role calls profiles' dispatch.
    let _serial = one_at_a_time().await;
    let app = App::start();
    let ann = register_user(&app.host, "ann").await;
    let bob = register_user(&app.host, "bob").await;
    let cy = register_user(&app.host, "cy").await;
    let (_admin, admin_token) = register_admin(&app.host).await;
    pay_top_up(&app, &ann, 1000).await;
    let tip_id = id_of(&give_tip(&app.host, &ann, &bob, 100).await);
    // The recipient passes most of the tip on, so 20 remain in the wallet.
    give_tip(&app.host, &bob, &cy, 80).await;

    let whole = request_refund(&app.host, Some(&admin_token), &tip_id, refund_body(100)).await;
    let partial = request_refund(&app.host, Some(&admin_token), &tip_id, refund_body(30)).await;
    let tip = read_payment(&app.host, &admin_token, &tip_id).await;
    let balances =
        (eur_balance(&app.host, &ann).await, eur_balance(&app.host, &bob).await, eur_balance(&app.host, &cy).await);
    let transactions = ledger_transactions(&tip_id).await;
    let what_remains = request_refund(&app.host, Some(&admin_token), &tip_id, refund_body(20)).await;

    for (what, reply) in [("the whole tip", &whole), ("30 of the 20 left", &partial)] {
        assert_eq!(reply.status, 409, "{what}: {}", reply.text());
        assert!(has_error_envelope(reply), "{what}: {}", reply.text());
    }
    assert_eq!(tip["refunded_minor"], 0, "nothing was refunded: {tip}");
    assert_eq!(tip["status"], "completed", "{tip}");
    assert_eq!(balances, (900, 20, 80), "no wallet changed");
    assert_eq!(transactions.len(), 1, "only the tip itself is booked for the payment");
    assert_eq!(what_remains.status, 201, "what the wallet still holds can be refunded: {}", what_remains.text());
    assert_eq!(eur_balance(&app.host, &ann).await, 920);
    assert_eq!(eur_balance(&app.host, &bob).await, 0);
}

#[tokio::test]
async fn top_up_refund_completes_after_dispatch() {
    // Holds the lock because it calls dispatch routes.
    let _serial = one_at_a_time().await;
    let app = start_with_immediate_recheck();
    let ann = register_user(&app.host, "ann").await;
    let (_admin, admin_token) = register_admin(&app.host).await;
    let top_up_id = pay_top_up(&app, &ann, 1000).await;
    let provider_payment_id = provider_id(&app.fake, &top_up_id);
    let pending_before = refunds_pending_balance("EUR").await;

    let reply = request_refund(&app.host, Some(&admin_token), &top_up_id, refund_body(300)).await;
    let refund = created_refund(&reply);
    let balance_at_once = eur_balance(&app.host, &ann).await;
    let pending_at_once = refunds_pending_balance("EUR").await;
    let requests = provider_refund_requests(&app.fake);
    let provider_refund_id = provider_refund_id(&app.fake, &top_up_id);
    let before_dispatch = read_payment(&app.host, &admin_token, &top_up_id).await;

    // The provider has not refunded yet, so a dispatch leaves the refund pending.
    let early = dispatch(&app.host, "payments").await;
    let after_early = read_payment(&app.host, &admin_token, &top_up_id).await;
    let statuses_after_early = refund_statuses(&top_up_id).await;
    app.fake.set_refund_status(&provider_refund_id, "refunded");
    let completing = dispatch(&app.host, "payments").await;
    let completed = read_payment(&app.host, &admin_token, &top_up_id).await;
    let statuses_after_completion = refund_statuses(&top_up_id).await;
    let owner_view = read_payment(&app.host, &ann.token, &top_up_id).await;
    let repeated = dispatch(&app.host, "payments").await;
    let after_repeat = read_payment(&app.host, &admin_token, &top_up_id).await;

    assert_refund_shape(&refund, &top_up_id, 300);
    assert_eq!(refund["status"], "pending", "a top-up refund waits for the provider: {refund}");
    assert_eq!(balance_at_once, 700, "the wallet goes down when the refund is requested");
    assert_eq!(pending_at_once - pending_before, 300, "the amount waits in refunds_pending");
    assert_eq!(requests.len(), 1, "one refund creation reached the provider");
    assert_eq!(requests[0].path, format!("/v2/payments/{provider_payment_id}/refunds"));
    let sent: Value = serde_json::from_str(&requests[0].body)
        .unwrap_or_else(|e| panic!("the refund request body is not JSON ({e}): {}", requests[0].body));
    assert_eq!(sent["amount"], json!({"currency": "EUR", "value": "3.00"}), "300 cents are sent as 3.00: {sent}");
    assert_eq!(before_dispatch["refunded_minor"], 0, "a pending refund is not counted as refunded: {before_dispatch}");

    assert_eq!(early.status, 200, "{}", early.text());
    assert_eq!(after_early["refunded_minor"], 0, "the provider's refund is still pending: {after_early}");
    assert_eq!(statuses_after_early, ["pending"], "the refund waits for the provider");
    assert_eq!(completing.status, 200, "{}", completing.text());
    assert_eq!(completed["refunded_minor"], 300, "dispatch completed the refund: {completed}");
    assert_eq!(statuses_after_completion, ["completed"], "the provider refunded, so the refund is completed");
    assert_eq!(completed["amount_minor"], 1000, "the top-up keeps its original amount: {completed}");
    assert_eq!(owner_view["refunded_minor"], 300, "the owner sees the refund: {owner_view}");
    assert_eq!(repeated.status, 200, "{}", repeated.text());
    assert_eq!(after_repeat["refunded_minor"], 300, "a second dispatch changes nothing: {after_repeat}");
    assert_eq!(assert_wallet_consistent(&ann).await, 700, "the completed refund leaves the wallet as it was");
}

#[tokio::test]
async fn failed_top_up_refund_returns_money() {
    // Holds the lock because it calls dispatch routes.
    let _serial = one_at_a_time().await;
    let app = start_with_immediate_recheck();
    let (_admin, admin_token) = register_admin(&app.host).await;

    for status in ["failed", "canceled"] {
        let ann = register_user(&app.host, "ann").await;
        let top_up_id = pay_top_up(&app, &ann, 1000).await;
        let pending_before = refunds_pending_balance("EUR").await;

        let reply = request_refund(&app.host, Some(&admin_token), &top_up_id, refund_body(400)).await;
        let refund = created_refund(&reply);
        let balance_at_once = eur_balance(&app.host, &ann).await;
        app.fake.set_refund_status(&provider_refund_id(&app.fake, &top_up_id), status);
        let dispatched = dispatch(&app.host, "payments").await;
        let top_up = read_payment(&app.host, &admin_token, &top_up_id).await;
        let balance_after = eur_balance(&app.host, &ann).await;
        let pending_after = refunds_pending_balance("EUR").await;
        let statuses = refund_statuses(&top_up_id).await;
        let consistent_balance = assert_wallet_consistent(&ann).await;
        let whole_again = request_refund(&app.host, Some(&admin_token), &top_up_id, refund_body(1000)).await;

        assert_eq!(refund["status"], "pending", "{status}: {refund}");
        assert_eq!(balance_at_once, 600, "{status}: the wallet goes down when the refund is requested");
        assert_eq!(dispatched.status, 200, "{status}: {}", dispatched.text());
        assert_eq!(balance_after, 1000, "{status}: dispatch returned the money to the wallet");
        assert_eq!(pending_after, pending_before, "{status}: refunds_pending holds nothing more");
        assert_eq!(top_up["refunded_minor"], 0, "{status}: nothing was refunded: {top_up}");
        assert_eq!(statuses, ["failed"], "{status}: the refund is stored as failed");
        assert_eq!(consistent_balance, 1000, "{status}");
        assert_eq!(
            whole_again.status,
            201,
            "{status}: the failed refund no longer counts against the top-up: {}",
            whole_again.text()
        );
    }
}

#[tokio::test]
async fn refund_in_progress_reduces_remaining() {
    // Holds the lock because granting the role calls profiles' dispatch.
    let _serial = one_at_a_time().await;
    let app = App::start();
    let ann = register_user(&app.host, "ann").await;
    let (_admin, admin_token) = register_admin(&app.host).await;
    let top_up_id = pay_top_up(&app, &ann, 1000).await;
    // A second top-up, so that the wallet is never what limits the refunds below.
    pay_top_up(&app, &ann, 500).await;

    let first = request_refund(&app.host, Some(&admin_token), &top_up_id, refund_body(300)).await;
    let over = request_refund(&app.host, Some(&admin_token), &top_up_id, refund_body(701)).await;
    let balance_after_over = eur_balance(&app.host, &ann).await;
    let rest = request_refund(&app.host, Some(&admin_token), &top_up_id, refund_body(700)).await;

    assert_eq!(created_refund(&first)["status"], "pending");
    assert_eq!(over.status, 422, "700 remain while 300 are in progress: {}", over.text());
    assert!(!field_errors(&over, "amount_minor").is_empty(), "the error is on `amount_minor`: {}", over.text());
    assert_eq!(balance_after_over, 1200, "the rejected refund took nothing from the wallet");
    assert_eq!(created_refund(&rest)["status"], "pending", "the 700 that remain can be refunded");
    assert_eq!(eur_balance(&app.host, &ann).await, 500);
    let provider_refund_count = provider_refunds(&app.fake, &provider_id(&app.fake, &top_up_id)).len();
    assert_eq!(provider_refund_count, 2, "both refunds reached the provider");
}

#[tokio::test]
async fn top_up_refund_from_emptied_wallet_gets_409() {
    // Holds the lock because granting the role calls profiles' dispatch.
    let _serial = one_at_a_time().await;
    let app = App::start();
    let (ann, bob) = (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await);
    let (_admin, admin_token) = register_admin(&app.host).await;
    let top_up_id = pay_top_up(&app, &ann, 1000).await;
    // The owner tips most of the top-up away, so 200 remain in the wallet.
    give_tip(&app.host, &ann, &bob, 800).await;
    let pending_before = refunds_pending_balance("EUR").await;

    let reply = request_refund(&app.host, Some(&admin_token), &top_up_id, refund_body(300)).await;
    let top_up = read_payment(&app.host, &admin_token, &top_up_id).await;

    assert_eq!(reply.status, 409, "{}", reply.text());
    assert!(has_error_envelope(&reply), "{}", reply.text());
    assert_eq!(eur_balance(&app.host, &ann).await, 200, "the wallet is unchanged");
    assert_eq!(refunds_pending_balance("EUR").await, pending_before, "nothing moved into refunds_pending");
    assert!(provider_refund_requests(&app.fake).is_empty(), "the provider was not asked");
    assert_eq!(top_up["refunded_minor"], 0, "{top_up}");
    assert_eq!(ledger_transactions(&top_up_id).await.len(), 1, "only the top-up itself is booked for the payment");
}

#[tokio::test]
async fn provider_outage_at_refund_gets_503() {
    // Holds the lock because it makes the provider fail and granting the role calls profiles' dispatch.
    let _serial = one_at_a_time().await;
    let app = App::start();
    let ann = register_user(&app.host, "ann").await;
    let (_admin, admin_token) = register_admin(&app.host).await;
    let top_up_id = pay_top_up(&app, &ann, 1000).await;
    let provider_payment_id = provider_id(&app.fake, &top_up_id);
    let pending_before = refunds_pending_balance("EUR").await;
    app.fake.fail_next(1, 503);

    let failed = request_refund(&app.host, Some(&admin_token), &top_up_id, refund_body(300)).await;
    let top_up = read_payment(&app.host, &admin_token, &top_up_id).await;
    let balance_after_failure = eur_balance(&app.host, &ann).await;
    let pending_after_failure = refunds_pending_balance("EUR").await;
    let refunds_after_failure = provider_refunds(&app.fake, &provider_payment_id);
    let retried = request_refund(&app.host, Some(&admin_token), &top_up_id, refund_body(300)).await;

    assert_eq!(failed.status, 503, "{}", failed.text());
    assert!(retry_after_seconds(&failed).is_some_and(|s| s >= 1), "Retry-After is {:?}", failed.header("retry-after"));
    assert!(has_error_envelope(&failed), "{}", failed.text());
    assert_eq!(balance_after_failure, 1000, "the wallet is unchanged");
    assert_eq!(pending_after_failure, pending_before, "nothing is left in refunds_pending");
    assert!(refunds_after_failure.is_empty(), "the provider holds no refund: {refunds_after_failure:?}");
    assert_eq!(top_up["refunded_minor"], 0, "{top_up}");
    assert_eq!(created_refund(&retried)["status"], "pending", "a retry once the provider is back succeeds");
    assert_eq!(eur_balance(&app.host, &ann).await, 700);
}

#[tokio::test]
async fn unpaid_top_up_refund_is_rejected() {
    // Holds the lock because granting the role calls profiles' dispatch.
    let _serial = one_at_a_time().await;
    let app = App::start();
    let ann = register_user(&app.host, "ann").await;
    let (_admin, admin_token) = register_admin(&app.host).await;
    // A paid top-up, so that the wallet could cover the refunds below.
    pay_top_up(&app, &ann, 1000).await;
    let pending_top_up = id_of(&create_top_up(&app.host, &ann, 500).await);
    let failed_top_up = id_of(&create_top_up(&app.host, &ann, 500).await);
    settle_at_provider(&app, &failed_top_up, "failed").await;
    let pending_before = refunds_pending_balance("EUR").await;

    for (what, top_up_id) in [("a pending top-up", &pending_top_up), ("a failed top-up", &failed_top_up)] {
        let reply = request_refund(&app.host, Some(&admin_token), top_up_id, refund_body(100)).await;
        let top_up = read_payment(&app.host, &admin_token, top_up_id).await;

        // NOTE: only paid top-ups may be refunded, but the status for the
        // others is not settled, so both 409 and 422 pass here.
        assert!(matches!(reply.status, 409 | 422), "{what}: {} {}", reply.status, reply.text());
        assert!(has_error_envelope(&reply), "{what}: {}", reply.text());
        assert_eq!(top_up["refunded_minor"], 0, "{what}: {top_up}");
    }
    assert_eq!(eur_balance(&app.host, &ann).await, 1000, "the wallet is unchanged");
    assert_eq!(refunds_pending_balance("EUR").await, pending_before, "nothing moved into refunds_pending");
    assert!(provider_refund_requests(&app.fake).is_empty(), "the provider was not asked");
}

#[tokio::test]
async fn parallel_refunds_cannot_exceed_tip() {
    // Holds the lock because granting the role calls profiles' dispatch.
    let _serial = one_at_a_time().await;
    let app = App::start();
    let (ann, bob) = (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await);
    let (_admin, admin_token) = register_admin(&app.host).await;
    pay_top_up(&app, &ann, 1000).await;
    let tip_id = id_of(&give_tip(&app.host, &ann, &bob, 100).await);

    let (first, second) = tokio::join!(
        request_refund(&app.host, Some(&admin_token), &tip_id, refund_body(60)),
        request_refund(&app.host, Some(&admin_token), &tip_id, refund_body(60)),
    );
    let tip = read_payment(&app.host, &admin_token, &tip_id).await;

    let mut statuses = [first.status, second.status];
    statuses.sort_unstable();
    let replies = format!("{} / {}", first.text(), second.text());
    assert_eq!(statuses, [201, 422], "one refund succeeds and the other exceeds what remains: {replies}");
    let rejected = if first.status == 422 { &first } else { &second };
    assert!(!field_errors(rejected, "amount_minor").is_empty(), "the error is on `amount_minor`: {}", rejected.text());
    assert_eq!(tip["refunded_minor"], 60, "{tip}");
    assert_eq!(tip["status"], "partially_refunded", "{tip}");
    assert_eq!(eur_balance(&app.host, &ann).await, 960);
    assert_eq!(eur_balance(&app.host, &bob).await, 40);
}

#[tokio::test]
async fn refund_audit_rows_are_immutable() {
    // Holds the lock because granting the role calls profiles' dispatch.
    let _serial = one_at_a_time().await;
    let app = App::start();
    let (ann, bob) = (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await);
    let (admin, admin_token) = register_admin(&app.host).await;
    let top_up_id = pay_top_up(&app, &ann, 1000).await;
    let tip_id = id_of(&give_tip(&app.host, &ann, &bob, 100).await);

    created_refund(&request_refund(&app.host, Some(&admin_token), &tip_id, refund_body(30)).await);
    let after_first = audit_rows(&tip_id).await;
    created_refund(&request_refund(&app.host, Some(&admin_token), &tip_id, refund_body(70)).await);
    let tip_rows = audit_rows(&tip_id).await;
    created_refund(&request_refund(&app.host, Some(&admin_token), &top_up_id, refund_body(200)).await);
    let top_up_rows = audit_rows(&top_up_id).await;

    let update = format!("UPDATE {PAYMENTS_SCHEMA}.admin_audit SET amount_minor = amount_minor + 1 WHERE payment_id = ?");
    let delete = format!("DELETE FROM {PAYMENTS_SCHEMA}.admin_audit WHERE payment_id = ?");
    let updated = root_statement_succeeds(&update, vec![tip_id.clone()]).await;
    let deleted = root_statement_succeeds(&delete, vec![tip_id.clone()]).await;
    let rows_at_end = audit_rows(&tip_id).await;

    // NOTE: whether `actor` stores the admin's user id or username is not
    // settled, so either passes.
    let by_admin = |row: &AuditRow| row.actor == admin.id || row.actor == admin.username;
    assert_eq!(after_first.len(), 1, "the first refund wrote one row: {after_first:?}");
    assert_eq!(tip_rows.len(), 2, "each refund appended a row: {tip_rows:?}");
    assert!(tip_rows.iter().all(by_admin), "the admin is the actor: {tip_rows:?}");
    assert!(tip_rows.iter().all(|row| row.action == "refund"), "{tip_rows:?}");
    assert_eq!(tip_rows.iter().map(|row| row.amount_minor).collect::<Vec<i64>>(), [30, 70], "{tip_rows:?}");
    assert!(tip_rows.contains(&after_first[0]), "the first row is unchanged: {after_first:?} / {tip_rows:?}");
    assert_eq!(top_up_rows.len(), 1, "the top-up refund wrote a row: {top_up_rows:?}");
    assert!(top_up_rows.iter().all(by_admin), "{top_up_rows:?}");
    assert_eq!(top_up_rows[0].action, "refund");
    assert_eq!(top_up_rows[0].amount_minor, 200);
    assert!(!updated, "root cannot update an audit row");
    assert!(!deleted, "root cannot delete an audit row");
    assert_eq!(rows_at_end, tip_rows, "the rows are unchanged");
}

// ---- concurrency ----

/// The number of requests each concurrency test sends at once.
const PARALLEL_REQUESTS: usize = 50;

#[tokio::test]
async fn fifty_tips_one_key_transfer_once() {
    // Holds the lock because it sends 50 requests at once and grants the admin role.
    let _serial = one_at_a_time().await;
    let app = App::start();
    let (ann, bob) = (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await);
    let (_admin, admin_token) = register_admin(&app.host).await;
    pay_top_up(&app, &ann, 1000).await;
    let key = unique_name("key");

    let requests = (0..PARALLEL_REQUESTS).map(|_| request_tip(&app.host, Some(&ann.token), Some(&key), eur_tip(&bob, 30)));
    let replies: Vec<Reply> = futures::future::join_all(requests).await;
    let outcomes = count_statuses(&replies);

    assert_eq!(outcomes.get(&201), Some(&PARALLEL_REQUESTS), "every request gets 201, outcomes by status: {outcomes:?}");
    let first = replies[0].json();
    let different = replies.iter().filter(|reply| reply.json() != first).count();
    assert_eq!(different, 0, "{different} bodies differ from the first, outcomes by status: {outcomes:?}");
    let tip_id = id_of(&first["tip"]);
    let transactions = ledger_transactions(&tip_id).await;
    let listed = list_payments(&app.host, Some(&ann.token), "").await;
    assert_eq!(eur_balance(&app.host, &ann).await, 970, "the money moved once, outcomes by status: {outcomes:?}");
    assert_eq!(eur_balance(&app.host, &bob).await, 30, "outcomes by status: {outcomes:?}");
    assert_eq!(transactions.len(), 1, "one ledger transaction for the tip, outcomes by status: {outcomes:?}");
    assert_eq!(transactions[0].kind, "tip");
    assert_eq!(listed_tips(&listed).len(), 1, "the history shows one tip: {}", listed.text());
    assert_eq!(count_of_type(&payment_events(&tip_id).await, TIP_RECEIVED_EVENT), 1, "one {TIP_RECEIVED_EVENT} event");
    assert_wallet_consistent(&ann).await;
    assert_wallet_consistent(&bob).await;
    assert_ledger_balanced(&app.host, &admin_token, "after 50 tips with one key").await;
}

#[tokio::test]
async fn fifty_distinct_tips_never_overdraw() {
    // Holds the lock because it sends 50 requests at once and grants the admin role.
    let _serial = one_at_a_time().await;
    let app = App::start();
    let (ann, bob) = (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await);
    let (_admin, admin_token) = register_admin(&app.host).await;
    pay_top_up(&app, &ann, 1000).await;
    let keys: Vec<String> = (0..PARALLEL_REQUESTS).map(|_| unique_name("key")).collect();

    let requests = keys.iter().map(|key| request_tip(&app.host, Some(&ann.token), Some(key), eur_tip(&bob, 30)));
    let replies: Vec<Reply> = futures::future::join_all(requests).await;
    let outcomes = count_statuses(&replies);
    let sent = outcomes.get(&201).copied().unwrap_or(0) as i64;
    let ann_balance = eur_balance(&app.host, &ann).await;
    let bob_balance = eur_balance(&app.host, &bob).await;
    let received = list_payments(&app.host, Some(&bob.token), "limit=100").await;

    let unexpected: Vec<u16> = outcomes.keys().copied().filter(|status| !matches!(status, 201 | 422)).collect();
    assert!(unexpected.is_empty(), "every response is 201 or 422, outcomes by status: {outcomes:?}");
    for reply in replies.iter().filter(|reply| reply.status == 422) {
        assert!(!field_errors(reply, "amount_minor").is_empty(), "a 422 is on `amount_minor`: {}", reply.text());
    }
    assert_eq!(ann_balance, 1000 - 30 * sent, "the sender paid for each 201, outcomes by status: {outcomes:?}");
    assert!(ann_balance >= 0, "the sender's wallet never goes negative, outcomes by status: {outcomes:?}");
    assert_eq!(bob_balance, 30 * sent, "the recipient got each 201, outcomes by status: {outcomes:?}");
    assert_eq!(ann_balance + bob_balance, 1000, "money is conserved, outcomes by status: {outcomes:?}");
    // A 422 means the balance was below 30 when that tip ran, which happens
    // only after 33 tips went through, so exactly 33 succeed.
    assert_eq!(sent, 33, "1000 cents pay for 33 tips of 30, outcomes by status: {outcomes:?}");
    assert_eq!(listed_tips(&received).len() as i64, sent, "the recipient's history shows each 201: {}", received.text());
    assert_eq!(assert_wallet_consistent(&ann).await, ann_balance);
    assert_eq!(assert_wallet_consistent(&bob).await, bob_balance);
    assert_ledger_balanced(&app.host, &admin_token, "after 50 distinct tips").await;
}

// ---- ledger check after tips and refunds ----

#[tokio::test]
async fn ledger_balanced_after_tips_and_refunds() {
    // Holds the lock because it calls dispatch routes.
    let _serial = one_at_a_time().await;
    let app = start_with_immediate_recheck();
    let (ann, bob) = (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await);
    let (_admin, admin_token) = register_admin(&app.host).await;
    let completed_top_up = pay_top_up(&app, &ann, 1000).await;
    let failed_refund_top_up = pay_top_up(&app, &ann, 500).await;
    let tip_id = id_of(&give_tip(&app.host, &ann, &bob, 200).await);

    created_refund(&request_refund(&app.host, Some(&admin_token), &tip_id, refund_body(50)).await);
    created_refund(&request_refund(&app.host, Some(&admin_token), &completed_top_up, refund_body(100)).await);
    created_refund(&request_refund(&app.host, Some(&admin_token), &failed_refund_top_up, refund_body(100)).await);
    app.fake.set_refund_status(&provider_refund_id(&app.fake, &completed_top_up), "refunded");
    app.fake.set_refund_status(&provider_refund_id(&app.fake, &failed_refund_top_up), "failed");
    let dispatched = dispatch(&app.host, "payments").await;
    let reply = ledger_check(&app.host, Some(&admin_token)).await;

    assert_eq!(dispatched.status, 200, "{}", dispatched.text());
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["ledger"]["entries_sum_by_currency"]["EUR"], 0, "{}", reply.text());
    assert_ledger_balanced(&app.host, &admin_token, "after tips, tip refunds and top-up refunds").await;
    // 1500 paid in, 200 tipped, 50 refunded from the tip, 100 refunded to the provider.
    assert_eq!(assert_wallet_consistent(&ann).await, 1250);
    assert_eq!(assert_wallet_consistent(&bob).await, 150);
}
