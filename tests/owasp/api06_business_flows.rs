//! API6:2023 Unrestricted Access to Sensitive Business Flows. Tips cannot go
//! to oneself under another spelling of one's name, outside the amount bounds
//! or past the balance, and a rejected tip writes nothing to the ledger. An
//! Idempotency-Key pays once per user, verification links and tokens cannot be
//! repeated, and a refresh token raced twice ends every session in every component.
//! Also covered in tests/payments.rs (`tip_to_self_gets_422`, `tip_rejects_invalid_fields`, `tip_over_balance_gets_422`, `same_tip_key_replays_first_reply`, `same_tip_key_other_body_gets_422`, `fifty_tips_one_key_transfer_once`), tests/notifications.rs (`email_verification_flow`) and tests/profiles.rs (`refresh_reuse_ends_sessions`).

use crate::common::{App, eur_balance, field_errors};
use conduit_tests::{
    Host, Reply, TEST_PASSWORD, TestUser, admin_db, app_options, email_of, log_in, register_user, test_env_value, unique_name,
};
use mysql_async::prelude::Queryable;
use serde_json::{Value, json};

const SELF_TIP: &str = "is you; you cannot tip yourself";
const AMOUNT_BOUNDS: &str = "must be a whole number of minor units from 1 to 1000000";
const REVOKED: &str = "the token has been revoked; log in again";

/// One route of each component that needs a user token, read with `GET`.
const PROTECTED_ROUTES: [&str; 4] = [
    "/api/user",
    "/api/articles/feed",
    "/api/wallet",
    "/api/notifications/unread-count",
];

/// Posts a raw JSON body with a token and an Idempotency-Key.
async fn send_with_key(host: &Host, path: &str, token: &str, key: &str, body: String) -> Reply {
    let authorization = format!("Token {token}");
    let headers = [
        ("authorization", authorization.as_str()),
        ("content-type", "application/json"),
        ("idempotency-key", key),
    ];
    host.request("POST", path, &headers, body).await
}

/// Sends `POST /api/tips` with `{"tip": <fields>}` and the given Idempotency-Key.
async fn tip(host: &Host, sender: &TestUser, key: &str, fields: Value) -> Reply {
    send_with_key(host, "/api/tips", &sender.token, key, json!({ "tip": fields }).to_string()).await
}

/// Counts the rows that `from_clause` (the text after `FROM`, with `{schema}`
/// for the payments schema and one `?` for the user id) selects.
async fn count_rows(from_clause: &str, user_id: &str) -> u64 {
    let schema = format!("{}_payments", test_env_value("SPIN_VARIABLE_DATABASE_PREFIX"));
    let statement = format!("SELECT COUNT(*) FROM {}", from_clause.replace("{schema}", &schema));
    let mut db = admin_db().await;
    let count: Option<u64> = db.exec_first(statement, (user_id,)).await.unwrap();
    db.disconnect().await.unwrap();
    count.unwrap_or(0)
}

/// Counts the ledger entries of every account the user owns.
async fn ledger_entries_of(user: &TestUser) -> u64 {
    count_rows(
        "{schema}.ledger_entries e JOIN {schema}.accounts a ON a.id = e.account_id WHERE a.user_id = ?",
        &user.id,
    )
    .await
}

/// Counts the tips the user sent.
async fn tips_sent_by(user: &TestUser) -> u64 {
    count_rows("{schema}.payments WHERE kind = 'tip' AND user_id = ?", &user.id).await
}

/// Writes printable ASCII characters other than space in their full-width forms (`a` becomes U+FF41).
fn full_width(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() {
                char::from_u32(c as u32 - 0x21 + 0xFF01).unwrap()
            } else {
                c
            }
        })
        .collect()
}

#[tokio::test]
async fn tip_abuse_moves_no_extra_money() {
    // Both flows share one host, because each host start compiles the four components.
    let app = App::start();
    check_rejected_tips_leave_ledger_untouched(&app).await;
    check_tip_key_replays_across_sessions(&app).await;
}

/// Sends tips to oneself, out of bounds and past the balance, and checks that each is a 422 that moves no money.
async fn check_rejected_tips_leave_ledger_untouched(app: &App) {
    let host = &app.host;
    let ann = register_user(host, "tipann").await;
    let bob = register_user(host, "tipbob").await;
    let carol = register_user(host, "tipcarol").await;
    app.fund(&ann, 500).await;
    let ann_entries = ledger_entries_of(&ann).await;
    let to_bob = |amount: Value| json!({"to_username": bob.username, "amount_minor": amount});
    let cases: Vec<(&str, &TestUser, Value, &str, String)> = vec![
        (
            "her own name in spaces",
            &ann,
            json!({"to_username": format!("  {}  ", ann.username), "amount_minor": 100}),
            "to_username",
            SELF_TIP.into(),
        ),
        (
            "her own name in full-width letters",
            &ann,
            json!({"to_username": full_width(&ann.username), "amount_minor": 100}),
            "to_username",
            SELF_TIP.into(),
        ),
        (
            "the largest 64-bit amount",
            &ann,
            to_bob(json!(i64::MAX)),
            "amount_minor",
            AMOUNT_BOUNDS.into(),
        ),
        (
            "an amount past 64 bits",
            &ann,
            to_bob(json!(9_223_372_036_854_775_808u64)),
            "amount_minor",
            AMOUNT_BOUNDS.into(),
        ),
        (
            "the smallest 64-bit amount",
            &ann,
            to_bob(json!(i64::MIN)),
            "amount_minor",
            AMOUNT_BOUNDS.into(),
        ),
        (
            "an amount in exponent form",
            &ann,
            to_bob(json!(1e2)),
            "amount_minor",
            AMOUNT_BOUNDS.into(),
        ),
        (
            "one cent past the balance",
            &ann,
            to_bob(json!(501)),
            "amount_minor",
            "exceeds your balance of 500 EUR minor units".into(),
        ),
        (
            "an empty wallet",
            &carol,
            to_bob(json!(1)),
            "amount_minor",
            "exceeds your balance of 0 EUR minor units".into(),
        ),
    ];

    for (what, sender, fields, field, message) in cases {
        let reply = tip(host, sender, &unique_name("key"), fields).await;

        assert_eq!(reply.status, 422, "{what}: {}", reply.text());
        assert_eq!(field_errors(&reply, field), [message], "{what}");
    }
    assert_eq!(eur_balance(host, &ann).await, 500, "Ann's balance is unchanged");
    assert_eq!(eur_balance(host, &bob).await, 0, "Bob received nothing");
    assert_eq!(
        ledger_entries_of(&ann).await,
        ann_entries,
        "no ledger entry touches Ann's wallet"
    );
    assert_eq!(ledger_entries_of(&bob).await, 0, "no ledger entry touches Bob's wallet");
    assert_eq!(ledger_entries_of(&carol).await, 0, "no ledger entry touches Carol's wallet");
    assert_eq!(
        count_rows("{schema}.accounts WHERE user_id = ?", &carol.id).await,
        0,
        "an empty wallet is never created to pay"
    );
    assert_eq!(tips_sent_by(&ann).await, 0, "no tip from Ann was stored");
    assert_eq!(tips_sent_by(&carol).await, 0, "no tip from Carol was stored");
}

/// Replays a tip's Idempotency-Key from a new session, with another body and as another user.
async fn check_tip_key_replays_across_sessions(app: &App) {
    let host = &app.host;
    let ann = register_user(host, "keyann").await;
    let bob = register_user(host, "keybob").await;
    let carol = register_user(host, "keycarol").await;
    app.fund(&ann, 1000).await;
    let key = unique_name("key");

    let first = tip(
        host,
        &ann,
        &key,
        json!({"to_username": bob.username, "amount_minor": 250, "message": "thanks"}),
    )
    .await;
    assert_eq!(first.status, 201, "the first tip: {}", first.text());

    // A retry from a new session, with the fields in another order and spaced out, is the same request.
    let second_session = TestUser {
        id: ann.id.clone(),
        username: ann.username.clone(),
        token: log_in(host, &ann).await,
    };
    let reordered = format!(
        "{{ \"tip\" : {{ \"message\" : \"thanks\", \"amount_minor\" : 250, \"to_username\" : \"{}\" }} }}",
        bob.username
    );
    let replayed = send_with_key(host, "/api/tips", &second_session.token, &key, reordered).await;
    assert_eq!(replayed.status, 201, "the retry: {}", replayed.text());
    assert_eq!(
        replayed.json(),
        first.json(),
        "the retry gets the first reply, with the same payment id"
    );

    let other_recipient = tip(
        host,
        &second_session,
        &key,
        json!({"to_username": carol.username, "amount_minor": 250, "message": "thanks"}),
    )
    .await;
    assert_eq!(
        other_recipient.status,
        422,
        "the key with another recipient: {}",
        other_recipient.text()
    );
    let key_errors = field_errors(&other_recipient, "Idempotency-Key");
    assert_eq!(
        key_errors,
        ["was already used with another request; use a new key for a new request"]
    );

    // The key is scoped to Ann, so Bob sending it gets his own outcome, not Ann's stored reply.
    let bobs = tip(host, &bob, &key, json!({"to_username": ann.username, "amount_minor": 1})).await;
    assert_eq!(bobs.status, 201, "Bob's tip with Ann's key: {}", bobs.text());
    assert_ne!(
        bobs.json()["tip"]["id"],
        first.json()["tip"]["id"],
        "Bob's tip is a payment of its own"
    );

    assert_eq!(eur_balance(host, &ann).await, 751, "Ann paid 250 once and received 1");
    assert_eq!(eur_balance(host, &bob).await, 249, "Bob received 250 once and paid 1");
    assert_eq!(eur_balance(host, &carol).await, 0, "Carol received nothing");
    assert_eq!(tips_sent_by(&ann).await, 1, "one tip from Ann was stored");
}

/// The interval between two verification links to one address, in seconds,
/// on the host of the verification test: long enough for the requests between
/// two links on a busy machine, short enough to wait out.
const INTERVAL: u64 = 10;

#[tokio::test]
async fn verification_links_limited_and_single_use() {
    // Both flows share one host, because each host start compiles the four components.
    let host = Host::start(app_options().env("SPIN_VARIABLE_EMAIL_VERIFICATION_INTERVAL_SECONDS", INTERVAL.to_string()));
    check_interval_spans_accounts(&host).await;
    check_token_works_once(&host).await;
}

/// Requests links to one address from two accounts, and checks the second waits for the interval.
async fn check_interval_spans_accounts(host: &Host) {
    let ann = register_user(host, "linkann").await;
    let bob = register_user(host, "linkbob").await;
    let first_address = email_of(&ann.username);
    let new_address = email_of(&unique_name("linkannnew"));
    let request_link = |user: &TestUser| {
        let token = user.token.clone();
        async move { host.send("POST", "/api/user/email-verification", Some(&token)).await }
    };
    let change_email = |user: &TestUser, email: String| {
        let token = user.token.clone();
        async move {
            host.send_json("PUT", "/api/user", Some(&token), &json!({"user": {"email": email}}))
                .await
        }
    };

    let first = request_link(&ann).await;
    assert_eq!(first.status, 202, "Ann's first link: {}", first.text());
    assert_eq!(
        change_email(&ann, new_address.clone()).await.status,
        200,
        "Ann moves to another address"
    );
    // Bob takes Ann's old address, written in upper case, and requests a link to it.
    let moved = change_email(&bob, first_address.to_uppercase()).await;
    assert_eq!(moved.status, 200, "Bob takes the freed address: {}", moved.text());

    let repeated = request_link(&bob).await;
    assert_eq!(
        repeated.status,
        429,
        "a second link to the address from another account: {}",
        repeated.text()
    );
    assert_eq!(
        field_errors(&repeated, "body"),
        ["a verification link went to this address recently; wait before asking again"]
    );
    let wait: u64 = repeated
        .header("retry-after")
        .and_then(|value| value.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=INTERVAL).contains(&wait), "Retry-After {wait}");
    let to_new_address = request_link(&ann).await;
    assert_eq!(
        to_new_address.status,
        202,
        "Ann's new address has an interval of its own: {}",
        to_new_address.text()
    );

    tokio::time::sleep(std::time::Duration::from_millis(wait * 1000 + 200)).await;
    let after_interval = request_link(&bob).await;
    assert_eq!(after_interval.status, 202, "after Retry-After: {}", after_interval.text());
}

/// Uses one verification token five times at once and once more later, and checks that exactly one use verifies.
async fn check_token_works_once(host: &Host) {
    let ann = register_user(host, "onceann").await;
    // The link waits in notifications' email outbox until a dispatch run
    // sends it, so no other test of this binary dispatches meanwhile.
    let _serial = crate::common::email_dispatch_lock().await;
    let requested = host.send("POST", "/api/user/email-verification", Some(&ann.token)).await;
    assert_eq!(requested.status, 202, "{}", requested.text());

    let schema = format!("{}_notifications", test_env_value("SPIN_VARIABLE_DATABASE_PREFIX"));
    let mut db = admin_db().await;
    let bodies: Vec<String> = db
        .exec(
            format!("SELECT text_body FROM {schema}.emails WHERE user_id = ? AND kind = 'verification'"),
            (ann.id.as_str(),),
        )
        .await
        .unwrap();
    db.disconnect().await.unwrap();
    let token = bodies
        .iter()
        .find_map(|body| body.split("token=").nth(1))
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
                .collect::<String>()
        })
        .unwrap_or_else(|| panic!("the queued link carries a token: {bodies:?}"));

    let verify_body = json!({ "token": token });
    let attempts = (0..5).map(|_| host.send_json("POST", "/api/users/verify-email", None, &verify_body));
    let replies = futures::future::join_all(attempts).await;
    let verified: Vec<&Reply> = replies.iter().filter(|reply| reply.status == 200).collect();
    assert_eq!(
        verified.len(),
        1,
        "one of five concurrent uses verifies: {:?}",
        replies.iter().map(Reply::text).collect::<Vec<_>>()
    );
    for reply in replies.iter().filter(|reply| reply.status != 200) {
        assert_eq!(reply.status, 422, "{}", reply.text());
        assert_eq!(field_errors(reply, "token"), ["is invalid or has expired"]);
    }
    let later = host.send_json("POST", "/api/users/verify-email", None, &verify_body).await;
    assert_eq!(later.status, 422, "a later use: {}", later.text());
    let current = host.send("GET", "/api/user", Some(&ann.token)).await;
    assert_eq!(current.json()["user"]["emailVerified"], true, "{}", current.text());
}

#[tokio::test]
async fn refresh_race_ends_every_session() {
    let host = Host::start(app_options());
    let username = unique_name("race");
    let body = json!({"user": {"username": username, "email": email_of(&username), "password": TEST_PASSWORD}});
    let registered = host.send_json("POST", "/api/users", None, &body).await;
    assert_eq!(registered.status, 201, "{}", registered.text());
    let first_access = registered.json()["user"]["token"].as_str().unwrap().to_string();
    let refresh_token = registered.json()["user"]["refreshToken"].as_str().unwrap().to_string();

    // The same refresh token twice at once, as a thief racing its owner would send it.
    let exchange_body = json!({ "refreshToken": refresh_token });
    let exchange = || host.send_json("POST", "/api/users/refresh", None, &exchange_body);
    let (one, two) = tokio::join!(exchange(), exchange());
    let mut statuses = [one.status, two.status];
    statuses.sort();
    assert_eq!(statuses, [200, 401], "one exchange wins: {} / {}", one.text(), two.text());
    let (winner, loser) = if one.status == 200 { (one, two) } else { (two, one) };
    let reuse = "the refresh token was used before, so every session of this user has ended; log in again";
    assert_eq!(field_errors(&loser, "body"), [reuse]);

    let next_refresh = winner.json()["user"]["refreshToken"].as_str().unwrap().to_string();
    let after = host
        .send_json("POST", "/api/users/refresh", None, &json!({ "refreshToken": next_refresh }))
        .await;
    assert_eq!(
        after.status,
        401,
        "the winner's refresh token belongs to the revoked family: {}",
        after.text()
    );
    assert_eq!(field_errors(&after, "body"), ["the refresh token is invalid or has expired"]);
    let winner_access = winner.json()["user"]["token"].as_str().unwrap().to_string();
    for route in PROTECTED_ROUTES {
        for (which, token) in [
            ("the first access token", &first_access),
            ("the winner's access token", &winner_access),
        ] {
            let reply = host.send("GET", route, Some(token)).await;
            assert_eq!(reply.status, 401, "{route} with {which}: {}", reply.text());
            assert_eq!(field_errors(&reply, "body"), [REVOKED], "{route} with {which}");
        }
    }
}
