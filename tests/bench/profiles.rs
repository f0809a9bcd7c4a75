//! Measures the profiles component through the local host against MariaDB:
//! latency of `GET /api/profiles/:username` (with and without a token) and of
//! login, with instance reuse on and off, throughput of profile reads from
//! concurrent clients, and the statements each route runs. Prints medians and
//! p99s from one run; compare figures only within a run.

use std::time::{Duration, Instant};

use conduit_tests::{Host, Reply, app_options};
use serde_json::json;

const PASSWORD: &str = "benchmark passphrase";
const PROFILE_SAMPLES: usize = 2_000;
const LOGIN_SAMPLES: usize = 200;
const WARM_UP: usize = 100;
const CLIENTS: usize = 16;
const REQUESTS_PER_CLIENT: usize = 200;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

async fn login(host: &Host, email: &str) -> Reply {
    let body = json!({"user": {"email": email, "password": PASSWORD}});
    host.send_json("POST", "/api/users/login", None, &body).await
}

/// Sends `samples` sequential requests after a warm-up; returns median and p99.
async fn measure<F, Fut>(samples: usize, send: F) -> (Duration, Duration)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Reply>,
{
    for _ in 0..WARM_UP.min(samples) {
        assert_eq!(send().await.status, 200);
    }
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        let reply = send().await;
        times.push(started.elapsed());
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

struct Figures {
    anonymous: (Duration, Duration),
    with_token: (Duration, Duration),
    login: (Duration, Duration),
    concurrent_rate: f64,
}

async fn run(host: &Host, label: &str) -> Figures {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let username = format!("bench{label}{:x}", nanos % 0xff_ffff);
    let email = format!("{username}@example.test");
    let created = host
        .send_json("POST", "/api/users", None, &json!({"user": {"username": username, "email": email, "password": PASSWORD}}))
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let token = created.json()["user"]["token"].as_str().unwrap().to_string();
    let path = format!("/api/profiles/{username}");

    let anonymous = measure(PROFILE_SAMPLES, || host.get(&path)).await;
    let with_token = measure(PROFILE_SAMPLES, || host.send("GET", &path, Some(&token))).await;
    let login_figures = measure(LOGIN_SAMPLES, || login(host, &email)).await;

    let started = Instant::now();
    let clients = (0..CLIENTS).map(|_| async {
        for _ in 0..REQUESTS_PER_CLIENT {
            assert_eq!(host.get(&path).await.status, 200);
        }
    });
    futures::future::join_all(clients).await;
    let concurrent_rate = (CLIENTS * REQUESTS_PER_CLIENT) as f64 / started.elapsed().as_secs_f64();

    Figures { anonymous, with_token, login: login_figures, concurrent_rate }
}

#[tokio::main]
async fn main() {
    let on_host = Host::start(app_options().arg("--quiet-component-output"));
    let on = run(&on_host, "on").await;
    let logs = on_host.component_logs("profiles").await;
    drop(on_host);
    let off_host = Host::start(app_options().arg("--quiet-component-output").arg("--max-instance-reuse-count").arg("1"));
    let off = run(&off_host, "off").await;
    drop(off_host);

    println!("profiles over loopback, sequential requests on one keep-alive connection:");
    for (what, on, off) in [
        (format!("GET /api/profiles/:username, no token ({PROFILE_SAMPLES})"), on.anonymous, off.anonymous),
        (format!("GET /api/profiles/:username, with token ({PROFILE_SAMPLES})"), on.with_token, off.with_token),
        (format!("POST /api/users/login ({LOGIN_SAMPLES})"), on.login, off.login),
    ] {
        println!("  {what}");
        println!("    reuse on:  median {}, p99 {}", ms(on.0), ms(on.1));
        println!("    reuse off: median {}, p99 {}", ms(off.0), ms(off.1));
        println!("    ratio off/on: median {:.2}", off.0.as_secs_f64() / on.0.as_secs_f64());
    }
    println!("GET /api/profiles/:username (no token) from {CLIENTS} concurrent clients, {REQUESTS_PER_CLIENT} each:");
    println!("  reuse on:  {:.0} requests/s", on.concurrent_rate);
    println!("  reuse off: {:.0} requests/s (ratio on/off {:.2})", off.concurrent_rate, on.concurrent_rate / off.concurrent_rate);

    println!("database statements per request, from the component's log lines (reuse on run):");
    let mut seen: Vec<(String, u64)> = Vec::new();
    for line in logs.iter().filter(|l| l["event"] == "request" && l["status"].as_u64().is_some_and(|s| s < 300)) {
        let route = format!("{} {}", line["method"].as_str().unwrap_or(""), line["route"].as_str().unwrap_or(""));
        let statements = line["db_statements"].as_u64().unwrap_or(0);
        if !seen.contains(&(route.clone(), statements)) {
            seen.push((route, statements));
        }
    }
    for (route, statements) in seen {
        println!("  {route:<40} {statements}");
    }
}
