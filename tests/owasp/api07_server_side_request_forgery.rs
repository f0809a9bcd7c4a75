//! API7:2023 Server Side Request Forgery. No component fetches a URL that a
//! client sent: not from profile, article, comment or tip fields, not from the
//! payment webhook's body or a request's `Host` header, and not during any
//! component's scheduled work. The host enforces `allowed_outbound_hosts`, so
//! a provider variable that names an unlisted host reaches nothing.
//! Also covered: tests/host.rs `outbound_http_allowed_hosts_only`, tests/payments.rs `webhook_body_fields_are_ignored`, tests/manifest.rs `secrets_and_hosts_stay_narrow`.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use conduit_tests::fake_brevo::FakeBrevo;
use conduit_tests::fake_mollie::FakeMollie;
use conduit_tests::{
    Host, Reply, TestUser, app_options, dispatch, email_of, register_user, scratch_dir, unique_name, workspace_root,
};
use serde_json::{Value, json};

/// The webhook and redirect URLs that `spin.toml` gives payments by default,
/// because the tests leave both variables unset.
const CONFIGURED_WEBHOOK_URL: &str = "http://127.0.0.1:3000/api/payments/webhooks/provider";
const CONFIGURED_REDIRECT_URL: &str = "http://127.0.0.1:3000/";
/// The verification link's base that `spin.toml` gives notifications by default.
const CONFIGURED_VERIFICATION_URL: &str = "http://127.0.0.1:3000/verify-email?token=";

/// A loopback listener that counts every TCP connection it accepts, so a test
/// can prove that nothing connected to it.
struct Tripwire {
    port: u16,
    connections: Arc<AtomicUsize>,
    first_bytes: Arc<Mutex<Vec<String>>>,
}

impl Tripwire {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0 for the tripwire failed");
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let first_bytes = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (connections.clone(), first_bytes.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                count.fetch_add(1, Ordering::SeqCst);
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_millis(500)));
                let mut buffer = [0u8; 256];
                let read = std::io::Read::read(&mut stream, &mut buffer).unwrap_or(0);
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buffer[..read]).into_owned());
            }
        });
        Self {
            port,
            connections,
            first_bytes,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Returns the number of connections so far and the first bytes each sent.
    fn report(&self) -> (usize, Vec<String>) {
        std::thread::sleep(std::time::Duration::from_millis(200));
        (
            self.connections.load(Ordering::SeqCst),
            self.first_bytes.lock().unwrap().clone(),
        )
    }
}

async fn post_with_key(host: &Host, path: &str, user: &TestUser, body: &Value, extra: &[(&str, &str)]) -> Reply {
    let authorization = format!("Token {}", user.token);
    let key = unique_name("key");
    let mut headers = vec![
        ("content-type", "application/json"),
        ("authorization", authorization.as_str()),
        ("idempotency-key", key.as_str()),
    ];
    headers.extend_from_slice(extra);
    host.request("POST", path, &headers, body.to_string()).await
}

fn provider_id_of(mollie: &FakeMollie, payment_id: &Value) -> String {
    let payments = mollie.payments();
    let found = payments
        .iter()
        .find(|payment| payment["metadata"]["payment_id"] == *payment_id);
    let id = found.and_then(|payment| payment["id"].as_str());
    id.unwrap_or_else(|| panic!("the provider has no payment for {payment_id}: {payments:?}"))
        .to_string()
}

#[tokio::test]
async fn client_urls_never_fetched() {
    let _serial = crate::common::email_dispatch_lock().await;
    let tripwire = Tripwire::start();
    let probe = tripwire.url("/probe");
    let probe_by_name = format!("http://localhost:{}/by-name", tripwire.port);
    let tripwire_authority = format!("127.0.0.1:{}", tripwire.port);
    let mollie = FakeMollie::start();
    let brevo = FakeBrevo::start();
    let options = app_options()
        .env("SPIN_VARIABLE_PAYMENT_PROVIDER_URL", mollie.base_url())
        .env("SPIN_VARIABLE_PAYMENT_PROVIDER_API_KEY", mollie.api_key())
        .env("SPIN_VARIABLE_EMAIL_PROVIDER_URL", brevo.base_url())
        .env("SPIN_VARIABLE_EMAIL_PROVIDER_API_KEY", brevo.api_key())
        .env("SPIN_VARIABLE_PAYMENTS_RECHECK_AFTER_SECONDS", "0");
    let host = Host::start(options);
    mollie.set_webhook_target(&host.url(""));
    let (ann, bob) = (register_user(&host, "ssrfann").await, register_user(&host, "ssrfbob").await);

    // Every field that takes free text or a URL gets the tripwire's address.
    let profile = json!({"user": {"image": probe, "bio": format!("My site: {probe_by_name}")}});
    let updated = host.send_json("PUT", "/api/user", Some(&ann.token), &profile).await;
    let article = json!({"article": {
        "title": unique_name("Linked post "),
        "description": format!("See {probe}"),
        "body": format!("![cover]({probe}) and [a link]({probe_by_name})"),
        "tagList": [],
    }});
    let published = host.send_json("POST", "/api/articles", Some(&ann.token), &article).await;
    let slug = published.json()["article"]["slug"].as_str().unwrap_or_default().to_string();
    let comment = json!({"comment": {"body": format!("Mirror: {probe}")}});
    let commented = host
        .send_json("POST", &format!("/api/articles/{slug}/comments"), Some(&bob.token), &comment)
        .await;
    let listed_by_url = host.get(&format!("/api/articles?author={probe}&tag={probe_by_name}")).await;

    // A top-up that names callback URLs of its own is rejected. One sent with
    // a forged Host header still gives the provider the configured URLs.
    let forged_callbacks =
        json!({"top_up": {"amount_minor": 1000, "currency": "EUR", "webhookUrl": probe, "redirectUrl": probe}});
    let rejected_top_up = post_with_key(&host, "/api/wallet/top-ups", &bob, &forged_callbacks, &[]).await;
    let forged_host = [
        ("host", tripwire_authority.as_str()),
        ("x-forwarded-host", tripwire_authority.as_str()),
    ];
    let top_up = json!({"top_up": {"amount_minor": 1000, "currency": "EUR"}});
    let funded = post_with_key(&host, "/api/wallet/top-ups", &bob, &top_up, &forged_host).await;
    let payment_id = funded.json()["top_up"]["id"].clone();
    let provider_id = provider_id_of(&mollie, &payment_id);
    let creation = mollie
        .requests()
        .into_iter()
        .find(|request| request.method == "POST" && request.path == "/v2/payments");
    let sent: Value = creation
        .map(|request| serde_json::from_str(&request.body).unwrap_or_default())
        .unwrap_or_default();

    // Webhooks whose body or Host header names the tripwire: payments fetches
    // the payment from the configured provider, and only for a well-formed id.
    mollie.set_payment_status(&provider_id, "paid");
    let form = [
        ("content-type", "application/x-www-form-urlencoded"),
        ("host", tripwire_authority.as_str()),
    ];
    let url_as_id = host
        .request("POST", "/api/payments/webhooks/provider", &form, format!("id={probe}"))
        .await;
    let url_fields = format!("id={provider_id}&webhookUrl={probe}&url={probe}");
    let settled = host
        .request("POST", "/api/payments/webhooks/provider", &form, url_fields)
        .await;
    let looked_up = mollie
        .requests()
        .iter()
        .any(|request| request.method == "GET" && request.path == format!("/v2/payments/{provider_id}"));
    let message = format!("Thanks, more at {probe}");
    let tip = json!({"tip": {"to_username": ann.username, "amount_minor": 100, "article_slug": slug, "message": message}});
    let tipped = post_with_key(&host, "/api/tips", &bob, &tip, &[]).await;
    let slug_as_url = json!({"tip": {"to_username": ann.username, "amount_minor": 100, "article_slug": probe}});
    let rejected_tip = post_with_key(&host, "/api/tips", &bob, &slug_as_url, &[]).await;

    // A verification request sent with a forged Host header.
    let authorization = format!("Token {}", ann.token);
    let forged_verification = [
        ("authorization", authorization.as_str()),
        ("host", tripwire_authority.as_str()),
    ];
    let verification = host
        .request("POST", "/api/user/email-verification", &forged_verification, "")
        .await;

    // Every component's scheduled work, as the host's timer runs it.
    // NOTE: notifications' dispatch sends every due email of the shared test
    // schema, so another module's email can end up at this test's fake.
    let mut dispatched = Vec::new();
    for component in ["profiles", "feed", "payments", "notifications"] {
        let reply = dispatch(&host, component).await;
        dispatched.push((component, reply.status, reply.text()));
    }
    let article_read = host.get(&format!("/api/articles/{slug}")).await;
    let verification_texts: Vec<String> = brevo
        .emails_to(&email_of(&ann.username))
        .into_iter()
        .filter_map(|email| email.text)
        .collect();
    let (connections, first_bytes) = tripwire.report();

    assert_eq!(updated.status, 200, "profile update: {}", updated.text());
    assert_eq!(
        updated.json()["user"]["image"],
        probe.as_str(),
        "the image URL is stored as sent: {}",
        updated.text()
    );
    assert_eq!(published.status, 201, "article: {}", published.text());
    assert_eq!(commented.status, 200, "comment: {}", commented.text());
    assert_eq!(listed_by_url.status, 200, "list filtered by URLs: {}", listed_by_url.text());
    assert_eq!(
        rejected_top_up.status,
        422,
        "top-up with callback URLs: {}",
        rejected_top_up.text()
    );
    assert!(
        rejected_top_up.json()["errors"]["webhookUrl"].is_array(),
        "the error names webhookUrl: {}",
        rejected_top_up.text()
    );
    assert_eq!(funded.status, 201, "top-up with a forged Host: {}", funded.text());
    assert_eq!(
        sent["webhookUrl"], CONFIGURED_WEBHOOK_URL,
        "the provider gets the configured webhook URL: {sent}"
    );
    assert_eq!(
        sent["redirectUrl"], CONFIGURED_REDIRECT_URL,
        "the provider gets the configured redirect URL: {sent}"
    );
    assert_eq!(
        url_as_id.status,
        200,
        "a webhook whose id is a URL is acknowledged: {}",
        url_as_id.text()
    );
    assert_eq!(settled.status, 200, "a webhook with URL fields: {}", settled.text());
    assert!(looked_up, "payments fetched {provider_id} from the configured provider");
    assert_eq!(tipped.status, 201, "tip with a URL in its message: {}", tipped.text());
    assert_eq!(rejected_tip.status, 422, "a URL as article_slug: {}", rejected_tip.text());
    assert_eq!(verification.status, 202, "verification request: {}", verification.text());
    for (component, status, text) in &dispatched {
        assert_eq!(*status, 200, "{component}'s dispatch: {text}");
    }
    assert_eq!(
        article_read.json()["article"]["author"]["image"],
        probe.as_str(),
        "feed serves the image URL: {}",
        article_read.text()
    );
    assert!(
        !verification_texts.is_empty(),
        "the verification email reached the email provider"
    );
    for text in &verification_texts {
        assert!(
            text.contains(CONFIGURED_VERIFICATION_URL),
            "the link uses the configured URL: {text}"
        );
        assert!(
            !text.contains(&tripwire.port.to_string()),
            "the link ignores the Host header: {text}"
        );
    }
    assert_eq!(connections, 0, "something connected to the tripwire: {first_bytes:?}");
}

/// Writes a copy of `spin.toml` whose payments component may reach only the
/// discard port on loopback, with component sources made absolute so the
/// copy can live in a scratch directory. Returns the copy's path.
fn manifest_without_provider_host() -> std::path::PathBuf {
    let root = workspace_root();
    let text = std::fs::read_to_string(root.join("spin.toml")).unwrap();
    let listed = "    \"{{ payment_provider_url }}\",\n";
    assert_eq!(
        text.matches(listed).count(),
        1,
        "spin.toml lists the payment provider once in allowed_outbound_hosts"
    );
    let text = text
        .replace(listed, "    \"http://127.0.0.1:9\",\n")
        .replace("source = \"target/", &format!("source = \"{}/target/", root.display()));
    let path = scratch_dir("api07-manifest").join("spin.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Requests a top-up of 10.00 EUR for `user`, and returns the reply and the
/// `error` field of its line in payments' log.
async fn top_up_through(host: &Host, user: &TestUser) -> (Reply, Value) {
    let top_up = json!({"top_up": {"amount_minor": 1000, "currency": "EUR"}});
    let reply = post_with_key(host, "/api/wallet/top-ups", user, &top_up, &[]).await;
    let request_id = reply.header("x-request-id").unwrap_or_default().to_string();
    let logs = host.component_logs("payments").await;
    let logged = logs
        .iter()
        .find(|line| line["request_id"] == request_id.as_str())
        .cloned()
        .unwrap_or_default();
    (reply, logged["error"].clone())
}

#[tokio::test]
async fn unlisted_provider_host_unreachable() {
    // The control: with the provider's URL in the allow-list, the call connects.
    let listed = Tripwire::start();
    let control = Host::start(app_options().env("SPIN_VARIABLE_PAYMENT_PROVIDER_URL", listed.url("")));
    let control_user = register_user(&control, "ssrflisted").await;
    let (control_reply, _) = top_up_through(&control, &control_user).await;
    drop(control);
    let (listed_connections, _) = listed.report();

    let unlisted = Tripwire::start();
    let mut options = app_options();
    options.manifest = manifest_without_provider_host();
    let host = Host::start(options.env("SPIN_VARIABLE_PAYMENT_PROVIDER_URL", unlisted.url("")));
    let user = register_user(&host, "ssrfunlisted").await;
    let (reply, error) = top_up_through(&host, &user).await;
    let (connections, first_bytes) = unlisted.report();

    assert_eq!(
        control_reply.status,
        503,
        "the tripwire sends no HTTP reply: {}",
        control_reply.text()
    );
    assert_eq!(listed_connections, 1, "with the host listed, payments connected to it");
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.header("retry-after"), Some("2"), "{}", reply.text());
    assert_eq!(
        error.as_str(),
        Some("payment provider: transport error (HttpRequestDenied)"),
        "the host denied the call before any connection"
    );
    assert_eq!(
        connections, 0,
        "the call outside the allow-list reached the tripwire: {first_bytes:?}"
    );
}
