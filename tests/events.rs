//! Black-box tests of the platform services: events from profiles to a
//! consumer, dispatch, resync, service tokens, roles and token revocation.
//!
//! The host runs `tests/fixture/events.toml`: the real `profiles.wasm` and
//! the test-only consumer (`fixture.wasm` named `consumer`, see
//! `tests/fixture/src/consumer.rs`), against the `conduit_test_profiles` and
//! `conduit_test_consumer` schemas. The tests share those schemas and one of
//! them empties the consumer's tables, so they run one at a time.

use std::time::{Duration, Instant};

use conduit_tests::{Host, Reply, TestUser, admin_db, dispatch, events_options, log_in, register_user};
use mysql_async::prelude::Queryable;
use serde_json::{Value, json};
use tokio::sync::{Mutex, MutexGuard};

/// Held by every test for its whole run.
async fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::const_new(());
    LOCK.lock().await
}

type User = TestUser;

async fn register(host: &Host, prefix: &str) -> User {
    register_user(host, prefix).await
}

async fn login(host: &Host, user: &User) -> String {
    log_in(host, user).await
}

async fn follow(host: &Host, follower: &User, followee: &User, method: &str) {
    let reply = host.send(method, &format!("/api/profiles/{}/follow", followee.username), Some(&follower.token)).await;
    assert_eq!(reply.status, 200, "{method} follow: {}", reply.text());
}

/// Dispatches profiles' outbox once and returns how many deliveries it made.
async fn dispatch_profiles(host: &Host) -> u64 {
    let reply = dispatch(host, "profiles").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["outbox"]["delivered"].as_u64().unwrap()
}

async fn query<T: mysql_async::prelude::FromRow + Send + 'static>(statement: &str, params: Vec<String>) -> Vec<T> {
    let mut db = admin_db().await;
    let rows = db.exec(statement, params).await.unwrap();
    db.disconnect().await.unwrap();
    rows
}

/// Returns the user or follow events profiles recorded for an aggregate id,
/// oldest first: (id, type, version). The `email` events of a user share its
/// id and are left out: they go to notifications only.
async fn events_of(aggregate_id: &str) -> Vec<(String, String, u64)> {
    query(
        "SELECT id, type, aggregate_version FROM conduit_test_profiles.outbox_events
         WHERE aggregate_type IN ('user', 'follow') AND aggregate_id = ? ORDER BY aggregate_version",
        vec![aggregate_id.to_string()],
    )
    .await
}

/// Counts the deliveries of an event that reached the consumer, duplicates included.
async fn receipts(event_id: &str) -> u64 {
    let rows: Vec<u64> =
        query("SELECT COUNT(*) FROM conduit_test_consumer.receipts WHERE event_id = ?", vec![event_id.into()]).await;
    rows[0]
}

/// Counts the consumer's records of an event id (at most one).
async fn processed(event_id: &str) -> u64 {
    let rows: Vec<u64> =
        query("SELECT COUNT(*) FROM conduit_test_consumer.event_inbox WHERE event_id = ?", vec![event_id.into()]).await;
    rows[0]
}

/// Returns the delivery row of an event for the consumer: (attempts, delivered, last error).
async fn delivery(event_id: &str) -> (u32, bool, Option<String>) {
    let rows: Vec<(u32, Option<i64>, Option<String>)> = query(
        "SELECT attempts, delivered_at, last_error FROM conduit_test_profiles.outbox_deliveries
         WHERE event_id = ? AND consumer = 'consumer'",
        vec![event_id.into()],
    )
    .await;
    let (attempts, delivered_at, last_error) = rows.into_iter().next().expect("a delivery row exists");
    (attempts, delivered_at.is_some(), last_error)
}

async fn consumer_username(user_id: &str) -> Option<String> {
    let rows: Vec<String> =
        query("SELECT username FROM conduit_test_consumer.users WHERE id = ?", vec![user_id.into()]).await;
    rows.into_iter().next()
}

async fn consumer_follows(follower: &User, followee: &User) -> bool {
    let rows: Vec<u64> = query(
        "SELECT COUNT(*) FROM conduit_test_consumer.follows WHERE follower_id = ? AND followee_id = ?",
        vec![follower.id.clone(), followee.id.clone()],
    )
    .await;
    rows[0] == 1
}

#[tokio::test]
async fn delivery_with_both_up_arrives_once() {
    let _serial = one_at_a_time().await;
    let host = Host::start(events_options());

    let ann = register(&host, "Ann").await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace}-00f067aa0ba902b7-01");
    let bio = host
        .request(
            "PUT",
            "/api/user",
            &[
                ("authorization", &format!("Token {}", ann.token)),
                ("content-type", "application/json"),
                ("traceparent", &traceparent),
            ],
            json!({"user": {"bio": "hello"}}).to_string(),
        )
        .await;

    // No polling: profiles pushes before it responds.
    assert_eq!(bio.status, 200, "{}", bio.text());
    assert_eq!(consumer_username(&ann.id).await.as_deref(), Some(ann.username.as_str()));
    let events = events_of(&ann.id).await;
    let kinds: Vec<&str> = events.iter().map(|(_, kind, _)| kind.as_str()).collect();
    assert_eq!(kinds, ["user.created", "user.updated"]);
    assert_eq!(events.iter().map(|(_, _, version)| *version).collect::<Vec<_>>(), [1, 2]);
    for (event_id, _, _) in &events {
        assert_eq!(receipts(event_id).await, 1, "{event_id}");
        assert_eq!(delivery(event_id).await, (1, true, None));
    }
    // A dispatch run now finds nothing to do.
    assert_eq!(dispatch_profiles(&host).await, 0);
    let log = host.component_logs("profiles").await;
    let register_line = log.iter().find(|line| line["route"] == "/api/users").expect("register is logged");
    assert!(register_line.get("error").is_none(), "{register_line}");
    // The push carried the trace and the producer's request id.
    let update_line = log.iter().find(|line| line["route"] == "/api/user").expect("the update is logged");
    let received = host.component_logs("consumer").await;
    let pushed = received
        .iter()
        .find(|line| line["route"] == "/internal/consumer/events" && line["trace_id"] == trace)
        .expect("the consumer logged the traced push");
    assert_eq!(pushed["caller_request_id"], update_line["request_id"]);
}

#[tokio::test]
async fn delivery_to_a_failing_consumer_waits_for_dispatch() {
    let _serial = one_at_a_time().await;
    let mut options = events_options();
    options.faults = true;
    let host = Host::start(options);

    host.set_fault("consumer", "unavailable").await;
    let started = Instant::now();
    let ann = register(&host, "Ann").await;
    let unavailable_in = started.elapsed();

    host.set_fault("consumer", "hang").await;
    let started = Instant::now();
    let bio = host.send_json("PUT", "/api/user", Some(&ann.token), &json!({"user": {"bio": "while hanging"}})).await;
    let hung_in = started.elapsed();
    host.set_fault("consumer", "unavailable").await;

    assert_eq!(bio.status, 200, "{}", bio.text());
    // Registration includes a ~30 ms password hash; the rejected push adds little.
    assert!(unavailable_in < Duration::from_millis(1500), "registration took {unavailable_in:?}");
    // The push waits for its 300 ms deadline, and no longer.
    assert!(hung_in >= Duration::from_millis(300), "update took {hung_in:?}");
    assert!(hung_in < Duration::from_millis(1500), "update took {hung_in:?}");
    let events = events_of(&ann.id).await;
    assert_eq!(events.len(), 2);
    let (created, updated) = (&events[0].0, &events[1].0);
    assert_eq!(delivery(created).await, (1, false, Some("status 503".into())));
    assert_eq!(delivery(updated).await, (1, false, Some("deadline passed".into())));
    assert_eq!(receipts(created).await, 0);
    let log = host.component_logs("profiles").await;
    let noted = log.iter().find(|line| line["route"] == "/api/users").and_then(|line| line["error"].as_str());
    assert_eq!(noted, Some("1 event deliveries pending (consumer: status 503)"));

    // A dispatch run while the consumer still fails backs off: 5 s after the second failure.
    let failing_run = dispatch(&host, "profiles").await;
    assert_eq!(failing_run.json()["outbox"], json!({"delivered": 0, "failed": 2}));
    let mut db = admin_db().await;
    let waits: Vec<i64> = db
        .exec(
            "SELECT next_attempt_at - ? FROM conduit_test_profiles.outbox_deliveries WHERE event_id IN (?, ?)",
            (now_micros(), created, updated),
        )
        .await
        .unwrap();
    assert!(waits.iter().all(|wait| (3_500_000..6_100_000).contains(wait)), "{waits:?}");
    assert_eq!(dispatch_profiles(&host).await, 0, "nothing is due during the backoff");
    assert_eq!(delivery(created).await, (2, false, Some("status 503".into())));
    host.set_fault("consumer", "none").await;
    db.exec_drop("UPDATE conduit_test_profiles.outbox_deliveries SET next_attempt_at = 0 WHERE event_id IN (?, ?)", (created, updated))
        .await
        .unwrap();
    db.disconnect().await.unwrap();

    assert_eq!(dispatch_profiles(&host).await, 2);
    assert_eq!(dispatch_profiles(&host).await, 0);

    assert_eq!(consumer_username(&ann.id).await.as_deref(), Some(ann.username.as_str()));
    assert_eq!(receipts(created).await, 1);
    assert_eq!(processed(created).await, 1);
    // The abandoned push may still reach the consumer once the hang ends;
    // the consumer then applies the event once and ignores the redelivery.
    assert_eq!(processed(updated).await, 1);
    assert_eq!(delivery(created).await, (3, true, None));
}

fn now_micros() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64
}

#[tokio::test]
async fn follow_events_in_reverse_order_leave_no_follow() {
    let _serial = one_at_a_time().await;
    let mut options = events_options();
    options.faults = true;
    let host = Host::start(options);
    let (ann, bob) = (register(&host, "Ann").await, register(&host, "Bob").await);

    host.set_fault("consumer", "unavailable").await;
    follow(&host, &ann, &bob, "POST").await;
    follow(&host, &ann, &bob, "DELETE").await;
    host.set_fault("consumer", "none").await;

    let pair = format!("{}:{}", ann.id, bob.id);
    let events = events_of(&pair).await;
    let kinds: Vec<&str> = events.iter().map(|(_, kind, _)| kind.as_str()).collect();
    assert_eq!(kinds, ["follow.created", "follow.deleted"]);
    let (followed, unfollowed) = (events[0].0.clone(), events[1].0.clone());
    let mut db = admin_db().await;
    let hold = "UPDATE conduit_test_profiles.outbox_deliveries SET next_attempt_at = ? WHERE event_id = ?";
    db.exec_drop(hold, (i64::MAX, &followed)).await.unwrap();
    assert_eq!(dispatch_profiles(&host).await, 1, "the unfollow goes first");
    db.exec_drop(hold, (0, &followed)).await.unwrap();
    assert_eq!(dispatch_profiles(&host).await, 1, "then the follow");
    let state: Vec<(u64, bool)> = db
        .exec(
            "SELECT version, deleted FROM conduit_test_consumer.aggregate_state
             WHERE producer = 'profiles' AND aggregate_type = 'follow' AND aggregate_id = ?",
            (&pair,),
        )
        .await
        .unwrap();
    db.disconnect().await.unwrap();

    assert!(!consumer_follows(&ann, &bob).await);
    assert_eq!(state, [(2, true)], "the tombstone keeps version 2");
    assert_eq!((receipts(&followed).await, receipts(&unfollowed).await), (1, 1));
    // Following again is version 3 and shows.
    follow(&host, &ann, &bob, "POST").await;
    assert!(consumer_follows(&ann, &bob).await);
}

#[tokio::test]
async fn two_dispatch_runs_at_once_deliver_nothing_twice() {
    let _serial = one_at_a_time().await;
    let mut options = events_options();
    options.faults = true;
    let host = Host::start(options);
    let users = [register(&host, "Ann").await, register(&host, "Bob").await, register(&host, "Cy").await];
    // Deliveries an earlier test left pending would blur the count.
    dispatch_profiles(&host).await;

    host.set_fault("consumer", "unavailable").await;
    for follower in &users {
        for followee in users.iter().filter(|u| u.id != follower.id) {
            follow(&host, follower, followee, "POST").await;
            follow(&host, follower, followee, "DELETE").await;
            follow(&host, follower, followee, "POST").await;
        }
    }
    host.set_fault("consumer", "none").await;
    let mut pending = Vec::new();
    for follower in &users {
        for followee in users.iter().filter(|u| u.id != follower.id) {
            pending.extend(events_of(&format!("{}:{}", follower.id, followee.id)).await.into_iter().map(|(id, _, _)| id));
        }
    }
    assert_eq!(pending.len(), 18);

    let (first, second) = tokio::join!(dispatch(&host, "profiles"), dispatch(&host, "profiles"));
    let delivered_by = |reply: &Reply| reply.json()["outbox"]["delivered"].as_u64().unwrap();
    let rest = dispatch_profiles(&host).await;

    assert_eq!((first.status, second.status), (200, 200));
    assert_eq!(delivered_by(&first) + delivered_by(&second) + rest, 18);
    for event_id in &pending {
        assert_eq!(receipts(event_id).await, 1, "{event_id}");
    }
    for follower in &users {
        for followee in users.iter().filter(|u| u.id != follower.id) {
            assert!(consumer_follows(follower, followee).await, "the last event of each pair is a follow");
        }
    }
}

#[tokio::test]
async fn redelivery_is_applied_once() {
    let _serial = one_at_a_time().await;
    let host = Host::start(events_options());
    let ann = register(&host, "Ann").await;
    let (created, _, _) = events_of(&ann.id).await.remove(0);

    let mut db = admin_db().await;
    db.exec_drop(
        "UPDATE conduit_test_profiles.outbox_deliveries SET delivered_at = NULL WHERE event_id = ?",
        (&created,),
    )
    .await
    .unwrap();
    db.exec_drop("UPDATE conduit_test_consumer.users SET username = 'changed' WHERE id = ?", (&ann.id,))
        .await
        .unwrap();
    db.disconnect().await.unwrap();

    assert_eq!(dispatch_profiles(&host).await, 1);
    assert_eq!(receipts(&created).await, 2);
    assert_eq!(processed(&created).await, 1);
    assert_eq!(consumer_username(&ann.id).await.as_deref(), Some("changed"), "the duplicate changed nothing");
}

#[tokio::test]
async fn resync_rebuilds_an_emptied_consumer() {
    let _serial = one_at_a_time().await;
    let host = Host::start(events_options());
    let users = [register(&host, "Ann").await, register(&host, "Bob").await, register(&host, "Cy").await];
    follow(&host, &users[0], &users[1], "POST").await;
    follow(&host, &users[1], &users[2], "POST").await;
    follow(&host, &users[2], &users[0], "POST").await;
    follow(&host, &users[2], &users[0], "DELETE").await;

    let mut db = admin_db().await;
    for table in ["users", "follows", "aggregate_state", "resync_state", "user_tokens", "event_inbox"] {
        db.query_drop(format!("DELETE FROM conduit_test_consumer.{table}")).await.unwrap();
    }
    let rebuilt = dispatch(&host, "consumer").await;
    let again = dispatch(&host, "consumer").await;

    assert_eq!(rebuilt.status, 200, "{}", rebuilt.text());
    assert!(rebuilt.json()["inbox"]["resynced"].as_u64().unwrap() >= 5, "{}", rebuilt.text());
    assert_eq!(again.json()["inbox"]["resynced"], 0, "a finished resync does not run again");
    let users_of = |schema: &str| format!("SELECT id, username FROM conduit_test_{schema}.users ORDER BY id");
    let follows_of =
        |schema: &str| format!("SELECT follower_id, followee_id FROM conduit_test_{schema}.follows ORDER BY 1, 2");
    let producer_users: Vec<(String, String)> = db.query(users_of("profiles")).await.unwrap();
    let consumer_users: Vec<(String, String)> = db.query(users_of("consumer")).await.unwrap();
    let producer_follows: Vec<(String, String)> = db.query(follows_of("profiles")).await.unwrap();
    let consumer_follows: Vec<(String, String)> = db.query(follows_of("consumer")).await.unwrap();
    let versions: Vec<(String, u64)> = db
        .exec(
            "SELECT aggregate_id, version FROM conduit_test_consumer.aggregate_state WHERE aggregate_id = ?",
            (format!("{}:{}", users[0].id, users[1].id),),
        )
        .await
        .unwrap();
    db.disconnect().await.unwrap();

    assert_eq!(consumer_users, producer_users);
    assert_eq!(consumer_follows, producer_follows);
    assert!(consumer_follows.contains(&(users[1].id.clone(), users[2].id.clone())));
    assert!(!consumer_follows.contains(&(users[2].id.clone(), users[0].id.clone())));
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].1, 1, "snapshots carry the producer's versions");
}

/// Calls `path` on profiles through the consumer with the given credentials;
/// returns the status profiles responded with.
async fn call_profiles(host: &Host, path: &str, credentials: &str) -> (u64, String) {
    let body = json!({"target": "profiles", "path": path, "credentials": credentials});
    let reply = host.send_json("POST", "/api/consumer/call", None, &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let answer = reply.json();
    (answer["status"].as_u64().unwrap(), answer["body"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn internal_routes_need_a_service_token() {
    let _serial = one_at_a_time().await;
    let host = Host::start(events_options());
    let ann = register(&host, "Ann").await;
    let path = "/internal/profiles/resync?aggregate=user&limit=1";

    let none = call_profiles(&host, path, "none").await;
    let user = call_profiles(&host, path, &format!("bearer:{}", ann.token)).await;
    let other_audience = call_profiles(&host, path, "service-for:payments").await;
    let garbage = call_profiles(&host, path, "bearer:not-a-token").await;
    let service = call_profiles(&host, path, "service").await;
    let bad_query = call_profiles(&host, "/internal/profiles/resync?aggregate=wallet", "service").await;
    let public = host.send("GET", path, Some(&ann.token)).await;

    assert_eq!(none.0, 401, "{}", none.1);
    assert_eq!(user.0, 401, "{}", user.1);
    assert_eq!(other_audience.0, 403, "{}", other_audience.1);
    assert_eq!(garbage.0, 401, "{}", garbage.1);
    assert_eq!(service.0, 200, "{}", service.1);
    let page: Value = serde_json::from_str(&service.1).unwrap();
    assert_eq!(page["events"][0]["type"], "user.snapshot");
    assert!(page["next"].is_string(), "a full page points at the next one");
    assert_eq!(bad_query.0, 422, "{}", bad_query.1);
    assert_eq!(public.status, 404, "internal paths have no public route");
}

#[tokio::test]
async fn dispatch_needs_the_scheduler_token() {
    let _serial = one_at_a_time().await;
    let host = Host::start(events_options());
    let ann = register(&host, "Ann").await;

    let without = host.request("POST", "/ops/profiles/dispatch", &[], "").await;
    let wrong = host.request("POST", "/ops/profiles/dispatch", &[("authorization", "Bearer wrong")], "").await;
    let user = host.send("POST", "/ops/profiles/dispatch", Some(&ann.token)).await;
    let get = dispatch(&host, "profiles").await;

    assert_eq!((without.status, wrong.status, user.status), (401, 401, 401));
    assert_eq!(get.status, 200);
}

async fn set_roles(host: &Host, token: &str, username: &str, roles: Value) -> Reply {
    host.send_json("PUT", &format!("/api/admin/users/{username}/roles"), Some(token), &json!({ "roles": roles })).await
}

fn grant_admin(user_id: &str) -> std::process::Output {
    conduit_tests::grant_admin(user_id, "tests/fixture/events.toml")
}

#[tokio::test]
async fn roles_change_by_admins_only_and_are_audited() {
    let _serial = one_at_a_time().await;
    let host = Host::start(events_options());
    let (ann, bob) = (register(&host, "Ann").await, register(&host, "Bob").await);

    let by_user = set_roles(&host, &bob.token, &ann.username, json!(["admin"])).await;
    let anonymous = host.send_json("PUT", &format!("/api/admin/users/{}/roles", ann.username), None, &json!({"roles": []})).await;
    assert_eq!((by_user.status, anonymous.status), (403, 401), "{}", by_user.text());

    let granted = grant_admin(&ann.id);
    let again = grant_admin(&ann.id);
    assert!(String::from_utf8_lossy(&granted.stdout).contains("is now an admin"));
    assert!(String::from_utf8_lossy(&again.stdout).contains("already an admin"));
    // The grant bumped Ann's token version: her old token is rejected, a new login carries the role.
    assert_eq!(host.send("GET", "/api/user", Some(&ann.token)).await.status, 401);
    assert_eq!(dispatch_profiles(&host).await, 1, "the operator's event waits for dispatch");
    let admin_token = login(&host, &ann).await;

    let unknown_role = set_roles(&host, &admin_token, &bob.username, json!(["root"])).await;
    let not_a_list = set_roles(&host, &admin_token, &bob.username, json!("admin")).await;
    let extra_field = host
        .send_json(
            "PUT",
            &format!("/api/admin/users/{}/roles", bob.username),
            Some(&admin_token),
            &json!({"roles": ["admin"], "token_version": 1}),
        )
        .await;
    for rejected in [&not_a_list, &extra_field] {
        assert_eq!(rejected.status, 422, "{}", rejected.text());
    }
    let unknown_user = set_roles(&host, &admin_token, "nobody-here", json!(["admin"])).await;
    let promoted = set_roles(&host, &admin_token, &bob.username, json!(["user", "admin"])).await;
    let unchanged = set_roles(&host, &admin_token, &bob.username, json!(["admin"])).await;

    assert_eq!(unknown_role.status, 422, "{}", unknown_role.text());
    assert!(unknown_role.json()["errors"]["roles"].is_array());
    assert_eq!(unknown_user.status, 404);
    assert_eq!(promoted.status, 200, "{}", promoted.text());
    assert_eq!(promoted.json()["user"]["roles"], json!(["user", "admin"]));
    assert_eq!(unchanged.status, 200);
    assert_eq!(host.send("GET", "/api/user", Some(&bob.token)).await.status, 401, "a role change revokes tokens");
    let bob_admin = login(&host, &bob).await;
    let demoted = set_roles(&host, &bob_admin, &ann.username, json!([])).await;
    assert_eq!(demoted.json()["user"]["roles"], json!(["user"]));
    assert_eq!(set_roles(&host, &admin_token, &bob.username, json!([])).await.status, 401, "Ann's token was revoked");

    let roles: Vec<String> =
        query("SELECT roles FROM conduit_test_consumer.users WHERE id = ?", vec![bob.id.clone()]).await;
    assert_eq!(roles, ["user,admin"], "the consumer heard of the change");
    let audit: Vec<(String, String, String, String)> = query(
        "SELECT actor, user_id, role, action FROM conduit_test_profiles.role_audit
         WHERE user_id IN (?, ?) ORDER BY at, id",
        vec![ann.id.clone(), bob.id.clone()],
    )
    .await;
    let expected = [
        ("operator".to_string(), ann.id.clone(), "admin".to_string(), "grant".to_string()),
        (ann.id.clone(), bob.id.clone(), "admin".into(), "grant".into()),
        (bob.id.clone(), ann.id.clone(), "admin".into(), "revoke".into()),
    ];
    assert_eq!(audit, expected);
    let mut db = admin_db().await;
    let rewrite = db.query_drop("UPDATE conduit_test_profiles.role_audit SET action = 'revoke'").await;
    let erase = db.query_drop("DELETE FROM conduit_test_profiles.role_audit").await;
    db.disconnect().await.unwrap();
    assert!(rewrite.is_err(), "the audit table refuses UPDATE, even from root");
    assert!(erase.is_err(), "the audit table refuses DELETE, even from root");
}

#[tokio::test]
async fn deleted_users_tokens_are_refused_everywhere() {
    let _serial = one_at_a_time().await;
    let host = Host::start(events_options());
    let (ann, bob) = (register(&host, "Ann").await, register(&host, "Bob").await);
    grant_admin(&ann.id);
    assert_eq!(dispatch_profiles(&host).await, 1);
    let admin_token = login(&host, &ann).await;
    follow(&host, &bob, &ann, "POST").await;
    assert_eq!(host.send("GET", "/api/consumer/me", Some(&bob.token)).await.status, 200);

    let by_user = host.send("DELETE", &format!("/api/admin/users/{}", ann.username), Some(&bob.token)).await;
    let own = host.send("DELETE", &format!("/api/admin/users/{}", ann.username), Some(&admin_token)).await;
    let deleted = host.send("DELETE", &format!("/api/admin/users/{}", bob.username), Some(&admin_token)).await;
    let twice = host.send("DELETE", &format!("/api/admin/users/{}", bob.username), Some(&admin_token)).await;

    assert_eq!((by_user.status, own.status, deleted.status, twice.status), (403, 422, 204, 404));
    assert_eq!(host.send("GET", "/api/user", Some(&bob.token)).await.status, 401);
    assert_eq!(host.send("GET", "/api/consumer/me", Some(&bob.token)).await.status, 401);
    assert_eq!(consumer_username(&bob.id).await, None);
    assert!(!consumer_follows(&bob, &ann).await);
}

#[tokio::test]
async fn logout_all_refuses_old_tokens_in_every_component() {
    let _serial = one_at_a_time().await;
    let mut options = events_options();
    options.faults = true;
    let host = Host::start(options);
    let ann = register(&host, "Ann").await;
    let second = login(&host, &ann).await;
    assert_eq!(host.send("GET", "/api/consumer/me", Some(&ann.token)).await.status, 200, "warms the cache");

    let logout = host.send("POST", "/api/user/logout-all", Some(&second)).await;

    // Both components are up: the consumer refuses the token as soon as logout-all has responded.
    assert_eq!(logout.status, 204, "{}", logout.text());
    assert_eq!((logout.header("content-type"), logout.body.len()), (None, 0));
    for token in [&ann.token, &second] {
        assert_eq!(host.send("GET", "/api/user", Some(token)).await.status, 401);
        assert_eq!(host.send("GET", "/api/consumer/me", Some(token)).await.status, 401);
    }
    let fresh = login(&host, &ann).await;
    assert_eq!(host.send("GET", "/api/consumer/me", Some(&fresh)).await.status, 200);

    // The consumer is down: it accepts the old token until dispatch delivers the event.
    host.set_fault("consumer", "unavailable").await;
    assert_eq!(host.send("POST", "/api/user/logout-all", Some(&fresh)).await.status, 204);
    host.set_fault("consumer", "none").await;
    assert_eq!(host.send("GET", "/api/user", Some(&fresh)).await.status, 401);
    assert_eq!(host.send("GET", "/api/consumer/me", Some(&fresh)).await.status, 200, "not yet delivered");
    assert_eq!(dispatch_profiles(&host).await, 1);
    assert_eq!(host.send("GET", "/api/consumer/me", Some(&fresh)).await.status, 401);
}

#[tokio::test]
async fn scheduler_calls_dispatch_on_its_timer() {
    let _serial = one_at_a_time().await;
    let mut options = events_options();
    options.args = vec!["--dispatch-interval".into(), "500ms".into()];
    options.faults = true;
    let host = Host::start(options);

    host.set_fault("consumer", "unavailable").await;
    let ann = register(&host, "Ann").await;
    host.set_fault("consumer", "none").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while consumer_username(&ann.id).await.is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    assert_eq!(consumer_username(&ann.id).await.as_deref(), Some(ann.username.as_str()));
    let scheduled = host
        .request_logs()
        .await
        .into_iter()
        .filter(|line| line["route"] == "/ops/profiles/dispatch" && line["status"] == 200)
        .count();
    assert!(scheduled >= 1, "the host logged its dispatch requests");
}
