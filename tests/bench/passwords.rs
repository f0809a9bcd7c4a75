//! Measures what password hashing costs, to choose the Argon2id parameters
//! and the instance reuse settings:
//! - the time of one hash inside Wasm (the fixture's `/work/argon2` probe)
//!   and natively, for each of OWASP's equally strong Argon2id settings, and
//!   the latency and host memory of 16 hashes at once in Wasm;
//! - login latency under bursts of 16 concurrent logins through the real
//!   profiles component, for several `--max-instance-concurrent-reuse-count`
//!   values, with the latency of profile reads sent during the bursts, the
//!   host's peak memory, and the rate of profile reads without logins.
//!
//! Prints medians and p99s from one run; compare figures only within a run.

use std::time::{Duration, Instant};

use conduit_tests::{Host, TEST_PASSWORD, TestUser, app_options, email_of, fixture_options, register_user};
use serde_json::json;

/// OWASP's Argon2id settings of equal strength (memory in KiB, passes), all
/// with one lane, as its Password Storage Cheat Sheet lists them.
const OWASP_SETTINGS: [(u32, u32); 5] = [(47_104, 1), (19_456, 2), (12_288, 3), (9_216, 4), (7_168, 5)];
const HASH_SAMPLES: usize = 15;
const CLIENTS: usize = 16;
const ROUNDS: usize = 10;
const CONCURRENT_REUSE: [&str; 4] = ["16", "4", "2", "1"];
const READS_PER_CLIENT: usize = 100;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn median_and_p99(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

/// Times one native hash with the same inputs as the fixture's probe.
fn native_hash(memory_kib: u32, passes: u32) -> Duration {
    use argon2::password_hash::{PasswordHasher, SaltString};

    let params = argon2::Params::new(memory_kib, passes, 1, None).unwrap();
    let hasher = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"benchmark-salt16").unwrap();
    let started = Instant::now();
    hasher.hash_password(b"benchmark passphrase", &salt).unwrap();
    started.elapsed()
}

async fn hash_times() {
    let host = Host::start(fixture_options(1, "bench"));
    println!("one Argon2id hash (1 lane), {HASH_SAMPLES} samples each after 2 warm-up hashes:");
    println!("  {:<22} {:>20} {:>20} {:>12}", "memory, passes", "Wasm median / p99", "native median", "Wasm/native");
    for (memory_kib, passes) in OWASP_SETTINGS {
        let path = format!("/work/argon2?memory_kib={memory_kib}&passes={passes}");
        let mut wasm = Vec::new();
        for sample in 0..HASH_SAMPLES + 2 {
            let reply = host.get(&path).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            if sample >= 2 {
                wasm.push(Duration::from_micros(reply.json()["micros"].as_u64().unwrap()));
            }
        }
        let native: Vec<Duration> = (0..HASH_SAMPLES).map(|_| native_hash(memory_kib, passes)).collect();
        let (wasm_median, wasm_p99) = median_and_p99(wasm);
        let (native_median, _) = median_and_p99(native);
        println!(
            "  {:<22} {:>20} {:>20} {:>12.2}",
            format!("{} MiB, t={passes}", memory_kib / 1024),
            format!("{} / {}", ms(wasm_median), ms(wasm_p99)),
            ms(native_median),
            wasm_median.as_secs_f64() / native_median.as_secs_f64()
        );
    }
}

/// Sends bursts of `CLIENTS` hashes at once to a fresh fixture host for each
/// setting. Prints their latency and the growth of the host's peak memory
/// since start.
async fn hash_bursts() {
    println!("{CLIENTS} concurrent hashes in Wasm, 5 bursts, a fresh host per setting (Spin's reuse defaults):");
    println!("  {:<22} {:>20} {:>22}", "memory, passes", "median / p99", "host peak growth");
    for (memory_kib, passes) in OWASP_SETTINGS {
        let host = Host::start(fixture_options(1, "bench"));
        assert_eq!(host.get("/work/log").await.status, 204);
        let before = peak_memory_mib(&host);
        let path = format!("/work/argon2?memory_kib={memory_kib}&passes={passes}");
        let mut times = Vec::new();
        for _ in 0..5 {
            let requests = (0..CLIENTS).map(|_| async {
                let started = Instant::now();
                let reply = host.get(&path).await;
                assert_eq!(reply.status, 200, "{}", reply.text());
                started.elapsed()
            });
            times.extend(futures::future::join_all(requests).await);
        }
        let (median, p99) = median_and_p99(times);
        println!(
            "  {:<22} {:>20} {:>18.0} MiB",
            format!("{} MiB, t={passes}", memory_kib / 1024),
            format!("{} / {}", ms(median), ms(p99)),
            peak_memory_mib(&host) - before
        );
    }
}

/// Returns the host process's peak resident memory in MiB (`VmHWM`).
fn peak_memory_mib(host: &Host) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", host.pid())).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(f64::NAN);
    kib / 1024.0
}

/// Logs every user in at once; returns each login's latency.
async fn burst(host: &Host, users: &[TestUser]) -> Vec<Duration> {
    let requests = users.iter().map(|user| async move {
        let body = json!({"user": {"email": email_of(&user.username), "password": TEST_PASSWORD}});
        let started = Instant::now();
        let reply = host.send_json("POST", "/api/users/login", None, &body).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        started.elapsed()
    });
    futures::future::join_all(requests).await
}

struct Burst {
    login: (Duration, Duration),
    read_during: (Duration, Duration),
    logins_per_second: f64,
    peak_mib: f64,
    reads_per_second: f64,
}

/// Sends `ROUNDS` bursts of `CLIENTS` concurrent logins, while one more
/// client reads a profile in a loop until the bursts end.
async fn login_bursts(concurrent_reuse: &str) -> Burst {
    let host = Host::start(app_options().arg("--quiet-component-output").arg("--max-instance-concurrent-reuse-count").arg(concurrent_reuse));
    let mut users = Vec::new();
    for _ in 0..CLIENTS {
        users.push(register_user(&host, "pwbench").await);
    }
    let profile_path = format!("/api/profiles/{}", users[0].username);

    burst(&host, &users).await;

    let done = std::sync::atomic::AtomicBool::new(false);
    let reader = async {
        let mut times = Vec::new();
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            let started = Instant::now();
            let reply = host.get(&profile_path).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            times.push(started.elapsed());
        }
        times
    };
    let logins = async {
        let started = Instant::now();
        let mut times = Vec::new();
        for _ in 0..ROUNDS {
            times.extend(burst(&host, &users).await);
        }
        let elapsed = started.elapsed();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (times, elapsed)
    };
    let (reads, (times, elapsed)) = futures::future::join(reader, logins).await;
    let peak_mib = peak_memory_mib(&host);

    // Reads alone, for what the setting costs the routes that only await.
    let started = Instant::now();
    let readers = (0..CLIENTS).map(|_| async {
        for _ in 0..READS_PER_CLIENT {
            assert_eq!(host.get(&profile_path).await.status, 200);
        }
    });
    futures::future::join_all(readers).await;
    let reads_per_second = (CLIENTS * READS_PER_CLIENT) as f64 / started.elapsed().as_secs_f64();

    Burst {
        login: median_and_p99(times),
        read_during: median_and_p99(reads),
        logins_per_second: (ROUNDS * CLIENTS) as f64 / elapsed.as_secs_f64(),
        peak_mib,
        reads_per_second,
    }
}

#[tokio::main]
async fn main() {
    hash_times().await;
    hash_bursts().await;

    println!("POST /api/users/login, {ROUNDS} bursts of {CLIENTS} concurrent logins (reuse count 128), profile reads alongside;");
    println!("then profile reads alone from {CLIENTS} clients x {READS_PER_CLIENT}:");
    println!(
        "  {:<16} {:>22} {:>9} {:>24} {:>10} {:>12}",
        "at once/instance", "login median / p99", "logins/s", "read during, median / p99", "host peak", "reads/s"
    );
    for concurrent in CONCURRENT_REUSE {
        let figures = login_bursts(concurrent).await;
        println!(
            "  {:<16} {:>22} {:>9.1} {:>24} {:>6.0} MiB {:>12.0}",
            concurrent,
            format!("{} / {}", ms(figures.login.0), ms(figures.login.1)),
            figures.logins_per_second,
            format!("{} / {}", ms(figures.read_during.0), ms(figures.read_during.1)),
            figures.peak_mib,
            figures.reads_per_second
        );
    }
}
