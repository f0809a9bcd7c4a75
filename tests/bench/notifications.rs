//! Measures the notifications component through the local host against
//! MariaDB: the inbox list and the unread count (cached and just changed),
//! sequential on one connection, and the delay from a producer's commit to
//! the notification. Prints medians and p99s from one run; compare figures
//! only within a run.
//!
//! The delay is read from the database: profiles' `outbox_events.occurred_at`
//! is written in the follow's transaction just before its commit, and
//! notifications' `notifications.created_at` in the transaction that applies
//! the pushed event.

use std::time::{Duration, Instant};

use conduit_tests::{Host, admin_db, app_options, register_user};
use mysql_async::prelude::Queryable;

const FOLLOWERS: usize = 200;
const READS: usize = 500;
const CHANGED_READS: usize = 150;
const WARM_UP: usize = 50;

fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn report(name: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let median = percentile(&samples, 0.5);
    println!("{name}: median {}, p99 {} ({} requests)", ms(median), ms(percentile(&samples, 0.99)), samples.len());
    median
}

async fn timed(host: &Host, method: &str, path: &str, token: &str) -> Duration {
    let auth = format!("Token {token}");
    let start = Instant::now();
    let reply = host.request(method, path, &[("authorization", auth.as_str())], "").await;
    let elapsed = start.elapsed();
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    elapsed
}

#[tokio::main]
async fn main() {
    let host = Host::start(app_options().arg("--quiet-component-output"));
    let creator = register_user(&host, "benchinbox").await;

    // Each follow's event is pushed to notifications before the response.
    for i in 0..FOLLOWERS {
        let follower = register_user(&host, &format!("benchfan{i}")).await;
        let path = format!("/api/profiles/{}/follow", creator.username);
        let reply = host.send("POST", &path, Some(&follower.token)).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let creator_id = conduit_tests::subject_of(&creator.token);

    let mut db = admin_db().await;
    let delays: Vec<(i64, i64)> = db
        .exec(
            "SELECT e.occurred_at, n.created_at
             FROM conduit_test_profiles.outbox_events e
             JOIN conduit_test_notifications.notifications n
               ON n.source = CONCAT('profiles:follow:', e.aggregate_id) AND n.user_id = ?
             WHERE e.type = 'follow.created' AND e.aggregate_id LIKE CONCAT('%:', ?)",
            (creator_id.as_str(), creator_id.as_str()),
        )
        .await
        .unwrap();
    assert_eq!(delays.len(), FOLLOWERS, "every follow made one notification");
    let mut micros: Vec<i64> = delays.iter().map(|(occurred, created)| created - occurred).collect();
    micros.sort();
    println!(
        "commit to notification (follow, all components up): median {:.2} ms, p99 {:.2} ms ({} follows)",
        percentile(&micros, 0.5) as f64 / 1e3,
        percentile(&micros, 0.99) as f64 / 1e3,
        micros.len()
    );

    let first_page = "/api/notifications?limit=20";
    for _ in 0..WARM_UP {
        timed(&host, "GET", first_page, &creator.token).await;
    }
    let mut samples = Vec::with_capacity(READS);
    for _ in 0..READS {
        samples.push(timed(&host, "GET", first_page, &creator.token).await);
    }
    report("GET /api/notifications?limit=20", samples);

    let mut samples = Vec::with_capacity(READS);
    for _ in 0..READS {
        samples.push(timed(&host, "GET", "/api/notifications?limit=100", &creator.token).await);
    }
    report("GET /api/notifications?limit=100", samples);

    let mut samples = Vec::with_capacity(READS);
    for _ in 0..READS {
        samples.push(timed(&host, "GET", "/api/notifications/unread-count", &creator.token).await);
    }
    let hit = report("GET /api/notifications/unread-count, cached", samples);

    // Marking one read replaces the count's version token, so the next read misses.
    let ids: Vec<String> = db
        .exec("SELECT id FROM conduit_test_notifications.notifications WHERE user_id = ? AND read_at IS NULL", (creator_id.as_str(),))
        .await
        .unwrap();
    let mut samples = Vec::with_capacity(CHANGED_READS);
    for id in ids.iter().take(CHANGED_READS) {
        timed(&host, "POST", &format!("/api/notifications/{id}/read"), &creator.token).await;
        samples.push(timed(&host, "GET", "/api/notifications/unread-count", &creator.token).await);
    }
    let miss = report("GET /api/notifications/unread-count, just changed", samples);
    println!("unread count changed/cached ratio (medians): {:.2}", miss.as_secs_f64() / hit.as_secs_f64());
}
