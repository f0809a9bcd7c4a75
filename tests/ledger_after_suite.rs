//! Runs after every other test (`cargo xtask test` starts it last, and plain
//! `cargo test` skips it): the payments ledger that all the other tests left
//! behind, tips, top-ups, refunds and concurrency runs included, must still
//! be balanced.

use conduit_tests::{Host, app_options, dispatch, grant_admin, log_in, register_user};

#[tokio::test]
async fn ledger_balanced_after_suite() {
    let host = Host::start(app_options());
    let admin = register_user(&host, "auditor").await;
    grant_admin(&admin.id, "spin.toml");
    assert_eq!(dispatch(&host, "profiles").await.status, 200);
    let token = log_in(&host, &admin).await;

    let reply = host.send("GET", "/api/admin/ledger/check", Some(&token)).await;

    assert_eq!(reply.status, 200, "{}", reply.text());
    let ledger = &reply.json()["ledger"];
    assert_eq!(ledger["balanced"], true, "the ledger after the whole suite: {ledger}");
    assert!(ledger["transactions"].as_u64().is_some_and(|n| n > 0), "the suite moved money: {ledger}");
    println!("ledger after the suite: {ledger}");
}
