//! API10:2023 Unsafe Consumption of APIs. The payment and email providers'
//! replies are checked, never trusted. Malformed JSON, an unexpected status
//! or redirect, a wrong amount, currency or id, or a reply that never ends
//! credits nothing and ends within the call's deadline. No component follows
//! the redirect or stores or returns the provider's text.
//! Also covered: tests/payments.rs `provider_outage_gets_retryable_503`, `key_in_flight_gets_409`, `webhook_body_fields_are_ignored`, `provider_outage_at_refund_gets_503`; tests/notifications.rs `failed_emails_retry_then_give_up`.

use crate::common::eur_balance;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conduit_tests::{Host, Reply, TestUser, admin_db, app_options, dispatch, email_of, register_user, unique, unique_name};
use mysql_async::prelude::Queryable;
use serde_json::{Value, json};

/// Text that the scripted providers put into their replies. It must never
/// reach a client, a log line or a database row.
const MARKER: &str = "provider-says-7c1e";

/// How long a trickled reply keeps sending, far beyond both providers' deadlines.
const TRICKLE_FOR: Duration = Duration::from_secs(20);

// ---- a scripted provider ----

/// A request the scripted provider received.
#[derive(Clone, Debug)]
struct Received {
    method: String,
    path: String,
    body: Value,
}

/// What the scripted provider sends back for one request.
enum Behaviour {
    /// A complete response with this status, extra headers and body.
    Respond {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    /// A 200 head announcing a long body, then one byte every 100 ms until
    /// the client goes away or [`TRICKLE_FOR`] passes.
    Trickle,
}

fn respond(status: u16, body: impl Into<Vec<u8>>) -> Behaviour {
    Behaviour::Respond {
        status,
        headers: Vec::new(),
        body: body.into(),
    }
}

/// An HTTP/1.1 server on loopback that responds to each request as a script
/// decides, one connection per request, so a test can send replies that the
/// shared fakes never send. Its threads end by themselves.
struct ScriptedProvider {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
}

impl ScriptedProvider {
    fn start(script: impl Fn(&Received) -> Behaviour + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0 for the scripted provider failed");
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let (script, log) = (Arc::new(script), received.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (script, log) = (script.clone(), log.clone());
                std::thread::spawn(move || serve_one(stream, script.as_ref(), &log));
            }
        });
        Self { port, received }
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

fn read_exactly(reader: &mut impl Read, length: usize) -> Option<Vec<u8>> {
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some(body)
}

/// Reads a body sent with `Transfer-Encoding: chunked`, as wasi-http sends one.
fn read_chunked(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line).ok()?;
        let size = usize::from_str_radix(size_line.trim().split(';').next()?, 16).ok()?;
        let mut chunk = read_exactly(reader, size + 2)?;
        chunk.truncate(size);
        body.extend_from_slice(&chunk);
        if size == 0 {
            return Some(body);
        }
    }
}

/// Reads one request, records it and writes the script's response.
fn serve_one(stream: TcpStream, script: &(dyn Fn(&Received) -> Behaviour + Send + Sync), log: &Mutex<Vec<Received>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let (mut content_length, mut chunked) = (0usize, false);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() || line == "\r\n" || line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.trim().parse().unwrap_or(0);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.trim().eq_ignore_ascii_case("chunked");
        }
    }
    let body = if chunked {
        read_chunked(&mut reader)
    } else {
        read_exactly(&mut reader, content_length)
    };
    let Some(body) = body else { return };
    let mut parts = request_line.split_whitespace();
    let request = Received {
        method: parts.next().unwrap_or_default().to_string(),
        path: parts.next().unwrap_or_default().to_string(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    log.lock().unwrap().push(request.clone());
    let mut stream = reader.into_inner();

    match script(&request) {
        Behaviour::Respond { status, headers, body } => {
            let mut head = format!(
                "HTTP/1.1 {status} Scripted\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            head.push_str("content-type: application/json\r\n");
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
        Behaviour::Trickle => {
            let head = concat!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n",
                "content-length: 1000000\r\nconnection: close\r\n\r\n{",
            );
            let started = Instant::now();
            let mut open = stream.write_all(head.as_bytes()).is_ok();
            while open && started.elapsed() < TRICKLE_FOR {
                std::thread::sleep(Duration::from_millis(100));
                open = stream.write_all(b" ").and_then(|()| stream.flush()).is_ok();
            }
        }
    }
}

/// A loopback listener that counts the connections it accepts.
struct Tripwire {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl Tripwire {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0 for the tripwire failed");
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        std::thread::spawn(move || {
            for _stream in listener.incoming() {
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
        Self { port, connections }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/elsewhere", self.port)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

// ---- the payment provider ----

/// A Mollie payment object as the provider returns it.
fn mollie_payment(id: &str, status: &str, value: &str, currency: &str, checkout: &str) -> Value {
    json!({
        "resource": "payment",
        "id": id,
        "mode": "test",
        "status": status,
        "amount": {"value": value, "currency": currency},
        "description": "Conduit wallet top-up",
        "_links": {"checkout": {"href": checkout, "type": "text/html"}},
    })
}

/// Returns the amount a top-up requested, in cents, from the provider's request body.
fn requested_cents(body: &Value) -> i64 {
    let value = body["amount"]["value"].as_str().unwrap_or("0.00");
    let (euros, cents) = value.split_once('.').unwrap_or((value, "0"));
    euros.parse::<i64>().unwrap_or(0) * 100 + cents.parse::<i64>().unwrap_or(0)
}

/// Makes a provider payment id no earlier run stored, because payments keeps
/// each provider id once.
fn unique_provider_id() -> String {
    let suffix: String = unique("tr").chars().filter(char::is_ascii_alphanumeric).collect();
    format!("tr_{suffix}")
}

/// Top-up amounts, in cents, that make the scripted provider fail the payment's
/// creation in one way each, with the status the client must get.
fn creation_faults(tripwire_url: &str) -> Vec<(i64, &'static str, Behaviour, u16)> {
    let long_url = format!("https://pay.example/{}", "c".repeat(5000));
    let moved = Behaviour::Respond {
        status: 307,
        headers: vec![("location", tripwire_url.to_string())],
        body: Vec::new(),
    };
    vec![
        (
            1001,
            "malformed JSON",
            respond(201, r#"{"resource": "payment", "id": "tr_"#),
            500,
        ),
        (
            1002,
            "an unknown status",
            respond(
                201,
                mollie_payment("tr_unknownstatus", "bogus", "10.02", "EUR", "https://pay.example/c").to_string(),
            ),
            500,
        ),
        (
            1003,
            "an id that is a path",
            respond(
                201,
                mollie_payment("../../v2/methods", "open", "10.03", "EUR", "https://pay.example/c").to_string(),
            ),
            500,
        ),
        (1004, "a redirect elsewhere", moved, 500),
        (
            1005,
            "a 418 with text",
            respond(418, json!({"status": 418, "title": MARKER, "detail": MARKER}).to_string()),
            500,
        ),
        (
            1006,
            "a 429",
            respond(429, json!({"status": 429, "detail": MARKER}).to_string()),
            503,
        ),
        (1007, "a reply that never ends", Behaviour::Trickle, 503),
        (
            1008,
            "a checkout URL too long to store",
            respond(
                201,
                mollie_payment(&unique_provider_id(), "open", "10.08", "EUR", &long_url).to_string(),
            ),
            500,
        ),
    ]
}

/// Builds the provider's reply when payments fetches the payment `id` of
/// settlement `case`, a top-up of `cents`. Each case reports the payment paid
/// but gets one detail wrong, and [`CONTROL_CASE`] gets every detail right.
fn settlement_reply(case: i64, id: &str, cents: i64) -> Behaviour {
    let value = format!("{}.{:02}", cents / 100, cents % 100);
    let paid = |value: &str, currency: &str| {
        respond(
            200,
            mollie_payment(id, "paid", value, currency, "https://pay.example/c").to_string(),
        )
    };
    match case {
        1 => paid("1.00", "EUR"),
        2 => paid(&format!("{cents}.00"), "EUR"),
        3 => paid(&value, "USD"),
        4 => paid(&format!("{value}1"), "EUR"),
        5 => paid(&format!("-{value}"), "EUR"),
        6 => paid(&value, "XTS"),
        7 => respond(200, format!("{{\"id\": \"{id}\", \"status\": \"paid\", \"amount\": ")),
        8 => respond(
            200,
            mollie_payment("tr_someoneelse1", "paid", &value, "EUR", "https://pay.example/c").to_string(),
        ),
        9 => Behaviour::Trickle,
        _ => paid(&value, "EUR"),
    }
}

/// The settlement cases: number, label, and the status the provider's webhook must get.
const SETTLEMENT_CASES: [(i64, &str, u16); 9] = [
    (1, "a smaller amount", 500),
    (2, "a hundred times the amount", 500),
    (3, "another currency", 500),
    (4, "an extra decimal", 500),
    (5, "a negative amount", 500),
    (6, "an unsupported currency", 500),
    (7, "malformed JSON", 500),
    (8, "another payment's id", 200),
    (9, "a reply that never ends", 503),
];
/// The case whose provider reply is correct, which must credit the wallet.
const CONTROL_CASE: i64 = 10;

/// Starts the scripted Mollie. A creation of an amount in [`creation_faults`]
/// fails as listed there. Any other creation succeeds with the id
/// `tr_<case>x<run>`, where the case is the amount minus 2000 cents, and
/// fetching that payment returns [`settlement_reply`] for the case.
fn scripted_mollie(tripwire_url: String, run: String) -> ScriptedProvider {
    let created: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    ScriptedProvider::start(move |request| {
        if request.method == "POST" && request.path == "/v2/payments" {
            let cents = requested_cents(&request.body);
            if let Some((_, _, behaviour, _)) = creation_faults(&tripwire_url)
                .into_iter()
                .find(|(amount, ..)| *amount == cents)
            {
                return behaviour;
            }
            let id = format!("tr_{}x{run}", cents - 2000);
            created.lock().unwrap().insert(id.clone(), cents);
            let value = format!("{}.{:02}", cents / 100, cents % 100);
            return respond(
                201,
                mollie_payment(&id, "open", &value, "EUR", "https://pay.example/checkout").to_string(),
            );
        }
        let id = request.path.strip_prefix("/v2/payments/").unwrap_or_default().to_string();
        match created.lock().unwrap().get(&id).copied() {
            Some(cents) => settlement_reply(cents - 2000, &id, cents),
            None => respond(
                404,
                json!({"status": 404, "title": "Not Found", "detail": MARKER}).to_string(),
            ),
        }
    })
}

/// Requests a top-up of `amount_minor` euro cents with a new Idempotency-Key.
async fn request_top_up(host: &Host, user: &TestUser, amount_minor: i64) -> Reply {
    let authorization = format!("Token {}", user.token);
    let key = unique_name("key");
    let headers = [
        ("content-type", "application/json"),
        ("authorization", authorization.as_str()),
        ("idempotency-key", key.as_str()),
    ];
    let body = json!({"top_up": {"amount_minor": amount_minor, "currency": "EUR"}});
    host.request("POST", "/api/wallet/top-ups", &headers, body.to_string()).await
}

async fn payment_status(host: &Host, user: &TestUser, payment_id: &str) -> Value {
    let reply = host
        .send("GET", &format!("/api/payments/{payment_id}"), Some(&user.token))
        .await;
    reply.json()["payment"]["status"].clone()
}

/// Returns the generic body of a 5xx reply, with its own request id.
fn generic_body(reply: &Reply) -> Value {
    let request_id = reply.header("x-request-id").unwrap_or("no request id");
    let message = match reply.status {
        503 => format!("service temporarily unavailable, retry later (request id {request_id})"),
        _ => format!("internal error (request id {request_id})"),
    };
    json!({"errors": {"body": [message]}})
}

/// Returns the payments rows and stored idempotent replies of a user as text.
async fn stored_payment_text(user_id: &str) -> String {
    let mut db = admin_db().await;
    let rows: Vec<(String, Option<String>)> = db
        .exec(
            "SELECT status, checkout_url FROM conduit_test_payments.payments WHERE user_id = ?",
            (user_id,),
        )
        .await
        .unwrap();
    let replies: Vec<Option<String>> = db
        .exec(
            "SELECT response FROM conduit_test_payments.idempotency_keys WHERE user_id = ?",
            (user_id,),
        )
        .await
        .unwrap();
    db.disconnect().await.unwrap();
    format!("{rows:?} {replies:?}")
}

#[tokio::test]
async fn payment_provider_replies_are_checked() {
    let tripwire = Tripwire::start();
    let run: String = unique("run").chars().filter(char::is_ascii_alphanumeric).collect();
    let provider = scripted_mollie(tripwire.url(), run.clone());
    let options = app_options().env("SPIN_VARIABLE_PAYMENT_PROVIDER_URL", provider.base_url());
    let host = Host::start(options);
    let payer = register_user(&host, "consumer").await;

    // A client waits on each of these: a bounded, generic error, and no credit.
    for (amount, fault, _, status) in creation_faults(&tripwire.url()) {
        let started = Instant::now();
        let reply = request_top_up(&host, &payer, amount).await;
        let elapsed = started.elapsed();

        assert_eq!(reply.status, status, "creation with {fault}: {}", reply.text());
        assert_eq!(
            reply.json(),
            generic_body(&reply),
            "creation with {fault}: the body is generic"
        );
        assert!(elapsed < Duration::from_secs(10), "creation with {fault} took {elapsed:?}");
        if status == 503 {
            assert_eq!(reply.header("retry-after"), Some("2"), "creation with {fault}");
        }
        assert_eq!(
            eur_balance(&host, &payer).await,
            0,
            "creation with {fault}: nothing is credited"
        );
    }

    // The provider's webhook for each settlement case: no credit unless the
    // provider reports exactly the requested amount, currency and id.
    let form = [("content-type", "application/x-www-form-urlencoded")];
    for (case, fault, status) in SETTLEMENT_CASES.iter().copied().chain([(CONTROL_CASE, "the control", 200)]) {
        let user = register_user(&host, "settle").await;
        let created = request_top_up(&host, &user, 2000 + case).await;
        assert_eq!(
            created.status,
            201,
            "case {fault}: the top-up was not created: {}",
            created.text()
        );
        let payment_id = created.json()["top_up"]["id"].as_str().unwrap_or_default().to_string();
        let provider_id = format!("tr_{case}x{run}");

        let started = Instant::now();
        let webhook = host
            .request("POST", "/api/payments/webhooks/provider", &form, format!("id={provider_id}"))
            .await;
        let elapsed = started.elapsed();
        let balance = eur_balance(&host, &user).await;
        let payment = payment_status(&host, &user, &payment_id).await;

        assert_eq!(webhook.status, status, "webhook with {fault}: {}", webhook.text());
        assert!(elapsed < Duration::from_secs(10), "webhook with {fault} took {elapsed:?}");
        if case == CONTROL_CASE {
            assert_eq!(balance, 2000 + case, "the correct report credits the requested amount");
            assert_eq!(payment, "paid", "the control");
        } else {
            if status >= 500 {
                assert_eq!(
                    webhook.json(),
                    generic_body(&webhook),
                    "webhook with {fault}: the body is generic"
                );
            }
            assert_eq!(balance, 0, "webhook with {fault}: nothing is credited");
            assert_eq!(payment, "pending", "webhook with {fault}: the top-up stays pending");
        }
    }

    let stored = stored_payment_text(&payer.id).await;
    let fetched: Vec<Received> = provider
        .received()
        .into_iter()
        .filter(|request| request.method == "GET")
        .collect();
    assert!(!stored.contains(MARKER), "the provider's text was stored: {stored}");
    assert!(!host.all_output().contains(MARKER), "the provider's text reached a log");
    assert_eq!(tripwire.connections(), 0, "payments followed the provider's redirect");
    assert_eq!(
        fetched.len(),
        SETTLEMENT_CASES.len() + 1,
        "one fetch per webhook: {fetched:?}"
    );
}

/// Starts the app with a payment provider that returns `reply` for every
/// payment creation, and requests one top-up. Returns the host, the top-up's reply and the user.
async fn top_up_against(reply: Vec<u8>) -> (Host, Reply, TestUser) {
    let provider = ScriptedProvider::start(move |_| respond(201, reply.clone()));
    let host = Host::start(app_options().env("SPIN_VARIABLE_PAYMENT_PROVIDER_URL", provider.base_url()));
    let user = register_user(&host, "consumer").await;
    let top_up = request_top_up(&host, &user, 1000).await;
    (host, top_up, user)
}

#[tokio::test]
async fn checkout_url_must_be_https() {
    let payment = mollie_payment(
        &unique_provider_id(),
        "open",
        "10.00",
        "EUR",
        "javascript:alert(document.cookie)",
    );

    let (_host, reply, user) = top_up_against(payment.to_string().into_bytes()).await;
    let stored = stored_payment_text(&user.id).await;

    assert_eq!(reply.status, 500, "a checkout URL that is not https: {}", reply.text());
    assert_eq!(reply.json(), generic_body(&reply), "the body is generic");
    assert!(
        !reply.text().contains("javascript:"),
        "the URL reached the client: {}",
        reply.text()
    );
    assert!(!stored.contains("javascript:"), "the URL was stored: {stored}");
}

#[tokio::test]
async fn oversized_provider_reply_rejected() {
    // A Mollie payment object takes a few kilobytes, and this one carries 64 MiB of padding.
    let mut payment = mollie_payment(&unique_provider_id(), "open", "10.00", "EUR", "https://pay.example/checkout");
    payment["padding"] = json!("p".repeat(64 << 20));

    let (_host, reply, _user) = top_up_against(payment.to_string().into_bytes()).await;

    assert_eq!(reply.status, 500, "a 64 MiB reply to a payment creation: {}", reply.text());
    assert_eq!(reply.json(), generic_body(&reply), "the body is generic");
}

// ---- the email provider ----

/// The row an email ends with after one dispatch run.
#[derive(Debug)]
struct EmailRow {
    status: String,
    attempts: i64,
    last_error: Option<String>,
    provider_message_id: Option<String>,
}

/// Returns the verification emails to `address`, oldest first.
async fn verification_emails(address: &str) -> Vec<EmailRow> {
    let mut db = admin_db().await;
    let rows: Vec<(String, i64, Option<String>, Option<String>)> = db
        .exec(
            "SELECT status, attempts, last_error, provider_message_id FROM conduit_test_notifications.emails
             WHERE to_address = ? AND kind = 'verification' ORDER BY created_at",
            (address,),
        )
        .await
        .unwrap();
    db.disconnect().await.unwrap();
    rows.into_iter()
        .map(|(status, attempts, last_error, provider_message_id)| EmailRow {
            status,
            attempts,
            last_error,
            provider_message_id,
        })
        .collect()
}

/// How the scripted email provider responds to one recipient, and the email
/// row that response must leave: status and `last_error`.
struct EmailCase {
    label: &'static str,
    /// Builds the reply from the recipient's address and the tripwire's URL.
    reply: fn(&str, &str) -> Behaviour,
    status: &'static str,
    last_error: Option<&'static str>,
}

fn email_cases() -> [EmailCase; 6] {
    [
        EmailCase {
            label: "malformed JSON in a 201",
            reply: |_, _| respond(201, r#"{"messageId": "#),
            status: "sent",
            last_error: None,
        },
        EmailCase {
            label: "a 5000-character message id",
            reply: |_, _| {
                respond(
                    201,
                    json!({"messageId": format!("<{}@{MARKER}>", "x".repeat(5000))}).to_string(),
                )
            },
            status: "sent",
            last_error: None,
        },
        EmailCase {
            label: "a refusal quoting the address",
            reply: |address, _| {
                respond(
                    400,
                    json!({"code": "invalid_parameter", "message": format!("{MARKER}: {address} is not valid")}).to_string(),
                )
            },
            status: "failed",
            last_error: Some("status 400 invalid_parameter"),
        },
        EmailCase {
            label: "a refusal whose code is not an identifier",
            reply: |_, _| {
                respond(
                    400,
                    json!({"code": format!("<b>{MARKER}</b>"), "message": MARKER}).to_string(),
                )
            },
            status: "failed",
            last_error: Some("status 400"),
        },
        EmailCase {
            label: "a redirect elsewhere",
            reply: |_, tripwire_url| Behaviour::Respond {
                status: 302,
                headers: vec![("location", tripwire_url.to_string())],
                body: Vec::new(),
            },
            status: "failed",
            last_error: Some("status 302"),
        },
        EmailCase {
            label: "a reply that never ends",
            reply: |_, _| Behaviour::Trickle,
            status: "pending",
            last_error: Some("deadline passed"),
        },
    ]
}

#[tokio::test]
async fn email_provider_replies_are_checked() {
    let _serial = crate::common::email_dispatch_lock().await;
    let tripwire = Tripwire::start();
    let tripwire_url = tripwire.url();
    // Recipient address to case index, filled once the users exist.
    let recipients: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let routing = recipients.clone();
    let provider = ScriptedProvider::start(move |request| {
        let address = request.body["to"][0]["email"].as_str().unwrap_or_default().to_string();
        match routing.lock().unwrap().get(&address) {
            Some(index) => (email_cases()[*index].reply)(&address, &tripwire_url),
            // NOTE: a dispatch run sends every due email of the shared test
            // schema, so another test's email can arrive here, and a test in
            // another module can send this test's emails. Strangers' emails
            // stay pending for a later attempt.
            None => respond(
                503,
                json!({"code": "service_unavailable", "message": "not a recipient of this test"}).to_string(),
            ),
        }
    });
    let options = app_options().env("SPIN_VARIABLE_EMAIL_PROVIDER_URL", provider.base_url());
    let host = Host::start(options);
    let cases = email_cases();
    let mut addresses = Vec::new();
    for index in 0..cases.len() {
        let user = register_user(&host, "mailto").await;
        let address = email_of(&user.username);
        recipients.lock().unwrap().insert(address.clone(), index);
        let requested = host.send("POST", "/api/user/email-verification", Some(&user.token)).await;
        assert_eq!(
            requested.status,
            202,
            "requesting a verification link failed: {}",
            requested.text()
        );
        addresses.push(address);
    }

    // Profiles' dispatch delivers any verification event whose push failed.
    let delivered = dispatch(&host, "profiles").await;
    let started = Instant::now();
    let dispatched = dispatch(&host, "notifications").await;
    let elapsed = started.elapsed();

    assert_eq!(delivered.status, 200, "{}", delivered.text());
    assert_eq!(dispatched.status, 200, "{}", dispatched.text());
    assert!(elapsed < Duration::from_secs(20), "one dispatch run took {elapsed:?}");
    for (case, address) in cases.iter().zip(&addresses) {
        let rows = verification_emails(address).await;
        let label = case.label;
        assert_eq!(rows.len(), 1, "{label}: one verification email: {rows:?}");
        let row = &rows[0];

        assert_eq!(row.status, case.status, "{label}: {row:?}");
        assert_eq!(row.attempts, 1, "{label}: {row:?}");
        assert_eq!(row.last_error.as_deref(), case.last_error, "{label}: {row:?}");
        let message_id = row.provider_message_id.clone().unwrap_or_default();
        assert!(
            message_id.chars().count() <= 200,
            "{label}: the stored message id is cut to 200 characters"
        );
        assert!(!message_id.contains(MARKER), "{label}: {message_id}");
    }
    let received: Vec<Received> = provider
        .received()
        .into_iter()
        .filter(|request| addresses.iter().any(|a| request.body["to"][0]["email"] == a.as_str()))
        .collect();
    assert_eq!(received.len(), cases.len(), "one send per email: {received:?}");
    assert!(!host.all_output().contains(MARKER), "the provider's text reached a log");
    assert_eq!(tripwire.connections(), 0, "notifications followed the provider's redirect");
}
