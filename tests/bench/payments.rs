//! Measures tips through the local host against MariaDB: latency of
//! `POST /api/tips` between two funded wallets, sequential on one
//! connection, and the outcome of concurrent tips that overdraw a wallet.
//! Prints medians and p99s from one run; compare figures only within a run.

use std::time::{Duration, Instant};

use conduit_tests::fake_mollie::FakeMollie;
use conduit_tests::{Host, app_options, register_user};
use serde_json::json;

const TIPS: usize = 500;
const WARM_UP: usize = 50;
const CONCURRENT: usize = 50;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Funds `token`'s wallet with `amount_minor` EUR through a paid top-up.
async fn fund(host: &Host, fake: &FakeMollie, token: &str, amount_minor: i64, key: &str) {
    let body = json!({"top_up": {"amount_minor": amount_minor, "currency": "EUR"}});
    let headers = [("authorization", format!("Token {token}")), ("idempotency-key", key.to_string()), ("content-type", "application/json".into())];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let reply = host.request("POST", "/api/wallet/top-ups", &headers, body.to_string()).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let id = reply.json()["top_up"]["id"].as_str().unwrap().to_string();
    let payment = fake.payments().into_iter().find(|p| p["metadata"]["payment_id"] == id.as_str()).expect("the provider has the payment");
    let provider_id = payment["id"].as_str().unwrap().to_string();
    fake.set_payment_status(&provider_id, "paid");
    assert_eq!(fake.send_webhook(&provider_id).await, 200);
}

async fn tip(host: &Host, token: &str, to: &str, amount_minor: i64, key: &str) -> u16 {
    let body = json!({"tip": {"to_username": to, "amount_minor": amount_minor}});
    let headers = [("authorization", format!("Token {token}")), ("idempotency-key", key.to_string()), ("content-type", "application/json".into())];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    host.request("POST", "/api/tips", &headers, body.to_string()).await.status
}

#[tokio::main]
async fn main() {
    let fake = FakeMollie::start();
    let host = Host::start(
        app_options()
            .arg("--quiet-component-output")
            .env("SPIN_VARIABLE_PAYMENT_PROVIDER_URL", fake.base_url())
            .env("SPIN_VARIABLE_PAYMENT_PROVIDER_API_KEY", fake.api_key()),
    );
    fake.set_webhook_target(host.url("").trim_end_matches('/'));
    let ann = register_user(&host, "benchtipper").await;
    let bob = register_user(&host, "benchcreator").await;
    fund(&host, &fake, &ann.token, 1_000_000, "bench-fund-1").await;

    for i in 0..WARM_UP {
        assert_eq!(tip(&host, &ann.token, &bob.username, 1, &format!("warm-{i}")).await, 201);
    }
    let mut times = Vec::with_capacity(TIPS);
    for i in 0..TIPS {
        let started = Instant::now();
        let status = tip(&host, &ann.token, &bob.username, 1, &format!("tip-{i}")).await;
        times.push(started.elapsed());
        assert_eq!(status, 201);
    }
    times.sort();
    println!("payments over loopback, sequential requests on one keep-alive connection:");
    println!("  POST /api/tips ({TIPS}): median {}, p99 {}", ms(percentile(&times, 0.5)), ms(percentile(&times, 0.99)));

    // Concurrent tips that together overdraw a fresh wallet of 1000.
    let cy = register_user(&host, "benchconcurrent").await;
    fund(&host, &fake, &cy.token, 1_000, "bench-fund-2").await;
    let started = Instant::now();
    let sends = (0..CONCURRENT).map(|i| {
        let (host, token, to) = (&host, &cy.token, &bob.username);
        async move { tip(host, token, to, 30, &format!("burst-{i}")).await }
    });
    let statuses = futures::future::join_all(sends).await;
    let elapsed = started.elapsed();
    let accepted = statuses.iter().filter(|s| **s == 201).count();
    let rejected = statuses.iter().filter(|s| **s == 422).count();
    println!(
        "  {CONCURRENT} concurrent tips of 30 from a wallet of 1000: {accepted} accepted, {rejected} rejected for lack of funds, {} other, in {}",
        CONCURRENT - accepted - rejected,
        ms(elapsed)
    );
}
