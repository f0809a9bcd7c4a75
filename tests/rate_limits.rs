//! Black-box tests of the rate limits (`shared::ratelimit`) through the host.
//! The request past a limit gets `429` with `Retry-After` and the
//! `RateLimit` headers, and a new window admits again. Addresses a client
//! sets count for nothing unless a trusted proxy forwarded them. Writes
//! count per user, routes outside `/api/` have no limits, and a failing
//! store refuses sign-in only. Each test starts its own host with its own limits; its
//! counters live in that host's own store.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use conduit_tests::{Host, HostOptions, Reply, app_options, dispatch, register_user, runtime_config_with_stores_down};
use serde_json::json;

const LOGIN: &str = "/api/users/login";

fn limited(options: HostOptions, variable: &str, rule: &str) -> HostOptions {
    options.env(&format!("SPIN_VARIABLE_{variable}"), rule)
}

async fn failed_login(host: &Host, headers: &[(&str, &str)]) -> Reply {
    let body = json!({"user": {"email": "nobody@example.test", "password": "not the password"}}).to_string();
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    host.request("POST", LOGIN, &all, body).await
}

/// Waits until a fixed window of `seconds` has just begun, so a test's
/// requests fall into one window.
async fn start_of_window(seconds: u64) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let into = now.as_millis() as u64 % (seconds * 1000);
    tokio::time::sleep(Duration::from_millis(seconds * 1000 - into + 50)).await;
}

fn assert_limited(reply: &Reply, rule: &str, window: u64) {
    assert_eq!(reply.status, 429, "{}", reply.text());
    let wait: u64 = reply.header("retry-after").expect("Retry-After is set").parse().unwrap();
    assert!((1..=window).contains(&wait), "Retry-After {wait}");
    assert!(reply.header("ratelimit-policy").is_some_and(|p| p.contains(&format!("\"{rule}\";"))), "{:?}", reply.headers);
    assert!(reply.header("ratelimit").is_some_and(|s| s.contains(&format!("\"{rule}\";r=0;"))), "{:?}", reply.headers);
    assert!(reply.json()["errors"]["body"][0].as_str().is_some_and(|m| m.contains("too many requests")));
}

#[tokio::test]
async fn sign_in_limit_resets_with_window() {
    let host = Host::start(limited(app_options(), "RATE_LIMIT_AUTH", "3/4"));
    start_of_window(4).await;

    for attempt in 1..=3 {
        let reply = failed_login(&host, &[]).await;
        assert_eq!(reply.status, 401, "attempt {attempt}: {}", reply.text());
        let expected = format!("\"auth\";r={};", 3 - attempt);
        assert!(reply.header("ratelimit").is_some_and(|s| s.contains(&expected)), "{:?}", reply.header("ratelimit"));
        assert_eq!(reply.header("ratelimit-policy").map(|p| p.contains("\"auth\";q=3;w=4")), Some(true));
    }
    let fourth = failed_login(&host, &[]).await;
    assert_limited(&fourth, "auth", 4);

    // Addresses the client sets itself change nothing.
    let spoofed = failed_login(&host, &[("x-forwarded-for", "198.51.100.9"), ("spin-client-addr", "198.51.100.9:4000")]).await;
    assert_limited(&spoofed, "auth", 4);
    // Other routes of the address are still open: the stricter rule covers sign-in only.
    assert_eq!(host.get("/api/profiles/nobody-here").await.status, 404);

    let wait: u64 = fourth.header("retry-after").unwrap().parse().unwrap();
    tokio::time::sleep(Duration::from_millis(wait * 1000 + 100)).await;
    assert_eq!(failed_login(&host, &[]).await.status, 401, "a new window admits again");
}

#[tokio::test]
async fn forwarded_address_counts_from_trusted_proxy() {
    let options = limited(limited(app_options(), "RATE_LIMIT_AUTH", "2/60"), "TRUSTED_PROXIES", "127.0.0.1");
    let host = Host::start(options);
    let from = |address: &'static str| [("x-forwarded-for", address)];

    assert_eq!(failed_login(&host, &from("203.0.113.10")).await.status, 401);
    assert_eq!(failed_login(&host, &from("203.0.113.10")).await.status, 401);
    assert_limited(&failed_login(&host, &from("203.0.113.10")).await, "auth", 60);
    // Another client behind the same proxy has its own count; the proxy's own entry is skipped.
    assert_eq!(failed_login(&host, &from("203.0.113.11, 127.0.0.1")).await.status, 401);
}

#[tokio::test]
async fn writes_are_limited_per_user() {
    let host = Host::start(limited(app_options(), "RATE_LIMIT_USER_WRITES", "2/60"));
    let (ann, bob) = (register_user(&host, "writer").await, register_user(&host, "other").await);
    let bio = |text: &str| json!({"user": {"bio": text}});

    for text in ["one", "two"] {
        assert_eq!(host.send_json("PUT", "/api/user", Some(&ann.token), &bio(text)).await.status, 200);
    }
    let third = host.send_json("PUT", "/api/user", Some(&ann.token), &bio("three")).await;
    assert_limited(&third, "user-writes", 60);
    let policy = third.header("ratelimit-policy").unwrap_or_default();
    assert!(policy.contains("\"address\";"), "the address rule is listed beside the user's: {policy}");
    // From another address, as far as the header goes: still the same user.
    let elsewhere = host
        .request(
            "PUT",
            "/api/user",
            &[("authorization", &format!("Token {}", ann.token)), ("content-type", "application/json"), ("x-forwarded-for", "192.0.2.1")],
            bio("four").to_string(),
        )
        .await;
    assert_eq!(elsewhere.status, 429);
    assert_eq!(host.send("GET", "/api/user", Some(&ann.token)).await.status, 200, "reads are not writes");
    assert_eq!(host.send_json("PUT", "/api/user", Some(&bob.token), &bio("mine")).await.status, 200);
    // The refused write changed nothing.
    assert_eq!(host.send("GET", "/api/user", Some(&ann.token)).await.json()["user"]["bio"], "two");
}

#[tokio::test]
async fn routes_outside_the_api_have_no_limits() {
    let host = Host::start(limited(app_options(), "RATE_LIMIT_ADDRESS", "1/60"));

    assert_eq!(host.get("/api/tags").await.status, 200);
    assert_limited(&host.get("/api/tags").await, "address", 60);
    for _ in 0..3 {
        assert_eq!(host.get("/health/feed").await.status, 200);
        assert_eq!(dispatch(&host, "feed").await.status, 200);
    }
}

#[tokio::test]
async fn limiter_outage_refuses_sign_in_only() {
    let mut options = app_options();
    options.runtime_config = Some(runtime_config_with_stores_down(&["profiles", "feed"]));
    let host = Host::start(options);

    let login = failed_login(&host, &[]).await;
    assert_eq!(login.status, 503, "{}", login.text());
    assert!(login.header("retry-after").is_some());
    let body = json!({"user": {"username": "nolimiter", "email": "nolimiter@example.test", "password": "a long passphrase"}});
    assert_eq!(host.send_json("POST", "/api/users", None, &body).await.status, 503);

    // Everything else proceeds, unlimited, noted in its log line.
    assert_eq!(host.get("/api/tags").await.status, 200);
    assert_eq!(host.get("/api/profiles/nobody-here").await.status, 404);
    let logs = host.component_logs("feed").await;
    let noted = logs.iter().any(|line| line["error"].as_str().is_some_and(|e| e.contains("rate-limit store failed")));
    assert!(noted, "{logs:?}");
}
