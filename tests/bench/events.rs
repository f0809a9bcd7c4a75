//! Measures events from profiles to the test-only consumer through the local
//! host (`tests/fixture/events.toml`) against MariaDB. It reports the delay
//! from the producer's commit to the consumer's record, a write's latency
//! with the consumer up and down, and the dispatch runs that deliver a
//! backlog. Prints medians and p99s from one run.

use std::time::{Duration, Instant};

use conduit_tests::{Host, admin_db, events_options, test_env_value};
use mysql_async::prelude::Queryable;
use serde_json::json;

const WRITES: usize = 300;
const WARM_UP: usize = 30;

fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Sends `count` bio updates; returns the sorted latencies.
async fn updates(host: &Host, token: &str, count: usize, label: &str) -> Vec<Duration> {
    let mut times = Vec::with_capacity(count);
    for i in 0..count {
        let body = json!({"user": {"bio": format!("{label} {i}")}});
        let started = Instant::now();
        let reply = host.send_json("PUT", "/api/user", Some(token), &body).await;
        times.push(started.elapsed());
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    times.sort();
    times
}

#[tokio::main]
async fn main() {
    let mut options = events_options().arg("--quiet-component-output");
    options.faults = true;
    let host = Host::start(options);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let username = format!("benchev{:x}", nanos % 0xff_ffff);
    let body = json!({"user": {"username": username, "email": format!("{username}@example.test"), "password": "benchmark passphrase"}});
    let created = host.send_json("POST", "/api/users", None, &body).await;
    assert_eq!(created.status, 201, "{}", created.text());
    let token = created.json()["user"]["token"].as_str().unwrap().to_string();

    updates(&host, &token, WARM_UP, "warm-up").await;
    let since = now_micros();
    let up = updates(&host, &token, WRITES, "up").await;
    let mut db = admin_db().await;
    let mut delays: Vec<i64> = db
        .exec(
            "SELECT i.received_at - e.occurred_at FROM conduit_test_profiles.outbox_events e
             JOIN conduit_test_consumer.event_inbox i ON i.event_id = e.id
             WHERE e.occurred_at >= ?",
            (since,),
        )
        .await
        .unwrap();
    delays.sort();

    host.set_fault("consumer", "unavailable").await;
    let down = updates(&host, &token, WRITES, "down").await;
    host.set_fault("consumer", "none").await;
    let scheduler = format!("Bearer {}", test_env_value("SPIN_VARIABLE_SCHEDULER_TOKEN"));
    let mut runs = Vec::new();
    let mut delivered = 0;
    while delivered < WRITES as u64 {
        let started = Instant::now();
        let reply = host.request("POST", "/ops/profiles/dispatch", &[("authorization", scheduler.as_str())], "").await;
        runs.push(started.elapsed());
        assert_eq!(reply.status, 200, "{}", reply.text());
        let count = reply.json()["outbox"]["delivered"].as_u64().unwrap();
        assert!(count > 0, "a dispatch run delivered nothing with {} pending", WRITES as u64 - delivered);
        delivered += count;
    }
    runs.sort();
    db.disconnect().await.unwrap();

    println!("events from profiles to one consumer, {WRITES} writes (PUT /api/user), reuse on:");
    println!(
        "  commit to consumer's record, both up ({} events): median {:.2} ms, p99 {:.2} ms",
        delays.len(),
        percentile(&delays, 0.5) as f64 / 1e3,
        percentile(&delays, 0.99) as f64 / 1e3
    );
    println!("  PUT /api/user, consumer up:   median {}, p99 {}", ms(percentile(&up, 0.5)), ms(percentile(&up, 0.99)));
    println!("  PUT /api/user, consumer down: median {}, p99 {}", ms(percentile(&down, 0.5)), ms(percentile(&down, 0.99)));
    println!(
        "  dispatch runs delivering the {WRITES} pending (batches of up to 50): {} runs, median {}, slowest {}",
        runs.len(),
        ms(percentile(&runs, 0.5)),
        ms(*runs.last().unwrap())
    );
}

fn now_micros() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64
}
