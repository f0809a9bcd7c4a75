//! Measures the local host: start-up time, and the latency of a trivial
//! fixture route over loopback with instance reuse on (Spin's defaults) and
//! off. Prints medians and p99s from one run; compare figures only within a run.

use std::time::{Duration, Instant};

use conduit_tests::{Host, app_options, fixture_options, wasm_path};

const WARM_UP: usize = 200;
const SAMPLES: usize = 3_000;
const CLIENTS: usize = 16;
const REQUESTS_PER_CLIENT: usize = 300;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

async fn latency(host: &Host, path: &str) -> (Duration, Duration) {
    for _ in 0..WARM_UP {
        assert_eq!(host.get(path).await.status, 200);
    }
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let started = Instant::now();
        let reply = host.get(path).await;
        samples.push(started.elapsed());
        assert_eq!(reply.status, 200);
    }
    samples.sort();
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

/// Requests per second with `CLIENTS` concurrent clients, each on its own connection.
async fn throughput(host: &Host, path: &str) -> f64 {
    let started = Instant::now();
    let clients = (0..CLIENTS).map(|_| async {
        for _ in 0..REQUESTS_PER_CLIENT {
            assert_eq!(host.get(path).await.status, 200);
        }
    });
    futures::future::join_all(clients).await;
    (CLIENTS * REQUESTS_PER_CLIENT) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    println!("component sizes:");
    for name in ["profiles", "feed", "payments", "notifications", "fixture"] {
        let bytes = std::fs::metadata(wasm_path(name)).unwrap().len();
        println!("  {name:<14} {:>8.1} KiB", bytes as f64 / 1024.0);
    }

    let mut startups = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let host = Host::start(app_options());
        startups.push(started.elapsed());
        drop(host);
    }
    startups.sort();
    println!("start-up of spin.toml (4 components), spawn to ready, median of 5: {:.0} ms", startups[2].as_secs_f64() * 1e3);

    println!("GET /echo/x on one keep-alive connection, {SAMPLES} sequential requests after {WARM_UP} warm-up:");
    let reuse_on = Host::start(fixture_options(1, "bench"));
    let (on_median, on_p99) = latency(&reuse_on, "/echo/x").await;
    let on_rate = throughput(&reuse_on, "/echo/x").await;
    drop(reuse_on);
    let reuse_off = Host::start(fixture_options(1, "bench").arg("--max-instance-reuse-count").arg("1"));
    let (off_median, off_p99) = latency(&reuse_off, "/echo/x").await;
    let off_rate = throughput(&reuse_off, "/echo/x").await;
    drop(reuse_off);
    println!("  reuse on  (128 per instance): median {}, p99 {}", micros(on_median), micros(on_p99));
    println!("  reuse off (1 per instance):   median {}, p99 {}", micros(off_median), micros(off_p99));
    println!(
        "  ratio off/on: median {:.2}, p99 {:.2}",
        off_median.as_secs_f64() / on_median.as_secs_f64(),
        off_p99.as_secs_f64() / on_p99.as_secs_f64()
    );
    println!("GET /echo/x from {CLIENTS} concurrent clients, {REQUESTS_PER_CLIENT} requests each:");
    println!("  reuse on:  {on_rate:.0} requests/s");
    println!("  reuse off: {off_rate:.0} requests/s (ratio on/off {:.2})", on_rate / off_rate);
}
