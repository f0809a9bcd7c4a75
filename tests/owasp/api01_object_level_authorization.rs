//! API1:2023 Broken Object Level Authorization: a user reaches only their own
//! payments, notifications, preferences and account. Another user's payment
//! or notification is a 404 with the body of an id that never existed. An
//! unsubscribe link works only for its own user and type, and only an
//! article's or comment's author may change it (403, and it stays unchanged).
//! Also covered by: tests/payments.rs `foreign_and_unknown_payments_get_404` and `tip_visible_to_parties_and_admin`, tests/notifications.rs `mark_read_touches_own_items_only`, tests/feed.rs `non_authors_get_403`.

use crate::common::{App, eur_balance, field_errors, post_with_new_key, query};
use conduit_tests::{Host, Reply, TestUser, app_options, default_preferences, email_of, register_user, test_env_value, unique_name};
use serde_json::{Value, json};

/// A UUID that no payment or notification has.
const UNKNOWN_ID: &str = "00000000-0000-4000-8000-000000000000";

const PREFERENCES_PATH: &str = "/api/notifications/preferences";
const UNSUBSCRIBE_PATH: &str = "/api/notifications/unsubscribe";

// ---- requests ----

/// Sends an EUR tip and returns the payment id. Panics unless the status is 201.
async fn give_tip(host: &Host, sender: &TestUser, recipient: &TestUser, amount_minor: i64) -> String {
    let body = json!({"tip": {"to_username": recipient.username, "amount_minor": amount_minor, "currency": "EUR"}});
    let reply = post_with_new_key(host, "/api/tips", sender, &body).await;
    assert_eq!(reply.status, 201, "the tip failed: {}", reply.text());
    string_at(&reply.json()["tip"]["id"])
}

async fn get_payment(host: &Host, user: &TestUser, payment_id: &str) -> Reply {
    host.send("GET", &format!("/api/payments/{payment_id}"), Some(&user.token))
        .await
}

/// Returns the ids of the user's payment history, newest first.
async fn history_ids(host: &Host, user: &TestUser) -> Vec<String> {
    history_ids_with_query(host, user, "").await
}

/// Returns the ids of `GET /api/payments?<query>` as `user`, newest first.
async fn history_ids_with_query(host: &Host, user: &TestUser, query: &str) -> Vec<String> {
    let reply = host.send("GET", &format!("/api/payments?{query}"), Some(&user.token)).await;
    assert_eq!(
        reply.status,
        200,
        "reading the history with {query:?} failed: {}",
        reply.text()
    );
    let body = reply.json();
    let payments = body["payments"]
        .as_array()
        .unwrap_or_else(|| panic!("the reply has no payments list: {body}"));
    payments.iter().map(|payment| string_at(&payment["id"])).collect()
}

async fn follow(host: &Host, follower: &TestUser, followee: &TestUser) {
    let reply = host
        .send(
            "POST",
            &format!("/api/profiles/{}/follow", followee.username),
            Some(&follower.token),
        )
        .await;
    assert_eq!(reply.status, 200, "follow failed: {}", reply.text());
}

/// Returns the items of the user's inbox, newest first.
async fn inbox(host: &Host, user: &TestUser) -> Vec<Value> {
    let reply = host.send("GET", "/api/notifications", Some(&user.token)).await;
    assert_eq!(reply.status, 200, "reading the inbox failed: {}", reply.text());
    reply.json()["notifications"].as_array().cloned().unwrap_or_default()
}

async fn unread_count(host: &Host, user: &TestUser) -> i64 {
    let reply = host.send("GET", "/api/notifications/unread-count", Some(&user.token)).await;
    assert_eq!(reply.status, 200, "reading the unread count failed: {}", reply.text());
    reply.json()["unread_count"]
        .as_i64()
        .unwrap_or_else(|| panic!("the count is not an integer: {}", reply.text()))
}

async fn preferences(host: &Host, user: &TestUser) -> Value {
    let reply = host.send("GET", PREFERENCES_PATH, Some(&user.token)).await;
    assert_eq!(reply.status, 200, "reading the preferences failed: {}", reply.text());
    reply.json()["preferences"].clone()
}

/// Sends a one-click unsubscribe, as a mail client does, for `token`.
async fn post_unsubscribe(host: &Host, token: &str) -> Reply {
    let path = format!("{UNSUBSCRIBE_PATH}?token={token}");
    let headers = [("content-type", "application/x-www-form-urlencoded")];
    host.request("POST", &path, &headers, "List-Unsubscribe=One-Click").await
}

/// Builds the unsubscribe token that notifications puts in its emails:
/// `<user id>.<type>.<mac>`, where the mac is the unpadded base64url of
/// HMAC-SHA256 over `unsubscribe:v1:<user id>:<type>` under the test suite's
/// `email_unsubscribe_key`. The HMAC comes from the ring provider of rustls,
/// because the tests have no HMAC crate of their own.
fn unsubscribe_token(user_id: &str, kind: &str) -> String {
    use jwt_simple::reexports::ct_codecs::{Base64UrlSafeNoPadding, Encoder};
    use rustls::crypto::tls13::OkmBlock;

    let key = test_env_value("SPIN_VARIABLE_EMAIL_UNSUBSCRIBE_KEY");
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .expect("a TLS 1.3 suite");
    let input = format!("unsubscribe:v1:{user_id}:{kind}");
    let tag = suite
        .hkdf_provider
        .hmac_sign(&OkmBlock::new(key.as_bytes()), input.as_bytes());
    let mac = Base64UrlSafeNoPadding::encode_to_string(tag.as_ref()).expect("base64url encoding succeeds");
    format!("{user_id}.{kind}.{mac}")
}

async fn publish(host: &Host, author: &TestUser) -> Value {
    let title = format!("Owned {}", unique_name("post"));
    let article = json!({"title": title, "description": "Only mine", "body": "The original body", "tagList": ["owned"]});
    let reply = host
        .send_json("POST", "/api/articles", Some(&author.token), &json!({ "article": article }))
        .await;
    assert_eq!(reply.status, 201, "creating {title:?} failed: {}", reply.text());
    reply.json()["article"].clone()
}

/// Adds a comment and returns its id as decimal text.
async fn add_comment(host: &Host, slug: &str, commenter: &TestUser, body: &str) -> String {
    let path = format!("/api/articles/{slug}/comments");
    let reply = host
        .send_json("POST", &path, Some(&commenter.token), &json!({"comment": {"body": body}}))
        .await;
    assert_eq!(reply.status, 200, "adding a comment failed: {}", reply.text());
    reply.json()["comment"]["id"].to_string()
}

async fn comment_ids(host: &Host, slug: &str) -> Vec<String> {
    let reply = host.send("GET", &format!("/api/articles/{slug}/comments"), None).await;
    assert_eq!(reply.status, 200, "listing comments failed: {}", reply.text());
    let comments = reply.json()["comments"].as_array().cloned().unwrap_or_default();
    comments.iter().map(|comment| comment["id"].to_string()).collect()
}

// ---- reading replies and rows ----

fn string_at(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("expected a string, got {value}"))
        .to_string()
}

/// Reads the profile columns a user may change, plus the token version, as root.
async fn user_row(user_id: &str) -> (String, String, String, String, u64) {
    let rows: Vec<(String, String, String, String, u64)> = query(
        "SELECT username, email, bio, image, token_version FROM conduit_test_profiles.users WHERE id = ?",
        vec![user_id.to_string()],
    )
    .await;
    rows.into_iter().next().unwrap_or_else(|| panic!("user {user_id} has no row"))
}

// ---- tests ----

#[tokio::test]
async fn payments_of_another_user_are_not_found() {
    let app = App::start();
    let ann = register_user(&app.host, "ann").await;
    let bob = register_user(&app.host, "bob").await;
    let cy = register_user(&app.host, "cy").await;
    let top_up_id = app.fund(&ann, 1000).await;
    let tip_id = give_tip(&app.host, &ann, &bob, 300).await;

    let unknown = get_payment(&app.host, &cy, UNKNOWN_ID).await;
    let own = get_payment(&app.host, &ann, &top_up_id).await;
    let foreign = [
        ("a third user reads the top-up", get_payment(&app.host, &cy, &top_up_id).await),
        ("a third user reads the tip", get_payment(&app.host, &cy, &tip_id).await),
        (
            "the tip's recipient reads the sender's top-up",
            get_payment(&app.host, &bob, &top_up_id).await,
        ),
    ];
    let refund_body = json!({"refund": {"amount_minor": 100}});
    let refunds = [
        ("a third user refunds the top-up", &cy, &top_up_id),
        ("a third user refunds the tip", &cy, &tip_id),
        ("the recipient refunds the tip", &bob, &tip_id),
        ("the owner refunds her own top-up", &ann, &top_up_id),
    ];

    assert_eq!(unknown.status, 404, "an unknown id: {}", unknown.text());
    assert_eq!(
        unknown.json(),
        json!({"errors": {"body": ["payment not found"]}}),
        "{}",
        unknown.text()
    );
    assert_eq!(own.status, 200, "the owner reads her top-up: {}", own.text());
    for (what, reply) in &foreign {
        assert_eq!(reply.status, 404, "{what}: {}", reply.text());
        assert_eq!(reply.json(), unknown.json(), "{what}: the body is the one of an unknown id");
    }
    for (what, user, payment_id) in refunds {
        let path = format!("/api/payments/{payment_id}/refund");
        let reply = app.host.send_json("POST", &path, Some(&user.token), &refund_body).await;
        // Only admins refund, so every user gets the same 403, owner or not.
        assert_eq!(reply.status, 403, "{what}: {}", reply.text());
        assert_eq!(
            field_errors(&reply, "body"),
            ["this route needs the `admin` role"],
            "{what}: {}",
            reply.text()
        );
    }

    assert_eq!(
        history_ids(&app.host, &ann).await,
        [tip_id.clone(), top_up_id.clone()],
        "the owner sees both"
    );
    assert_eq!(
        history_ids(&app.host, &bob).await,
        [tip_id.clone()],
        "the recipient sees only the tip"
    );
    assert!(history_ids(&app.host, &cy).await.is_empty(), "a third user sees none of them");
    // The history has no owner parameter: one in the query is ignored.
    let naming_ann = format!("user_id={}", ann.id);
    assert!(
        history_ids_with_query(&app.host, &cy, &naming_ann).await.is_empty(),
        "`user_id` shows none of ann's"
    );
    assert_eq!(eur_balance(&app.host, &ann).await, 700, "the sender's wallet is unchanged");
    assert_eq!(eur_balance(&app.host, &bob).await, 300, "the recipient's wallet is unchanged");
    assert_eq!(
        eur_balance(&app.host, &cy).await,
        0,
        "the third user's wallet shows nothing of theirs"
    );
    let refund_rows: Vec<u64> = query(
        "SELECT COUNT(*) FROM conduit_test_payments.refunds WHERE payment_id IN (?, ?)",
        vec![top_up_id.clone(), tip_id.clone()],
    )
    .await;
    assert_eq!(refund_rows, [0], "no refund was stored");
}

#[tokio::test]
async fn inbox_and_preferences_are_per_user() {
    let host = Host::start(app_options());
    let ann = register_user(&host, "ann").await;
    let bob = register_user(&host, "bob").await;
    let cy = register_user(&host, "cy").await;
    follow(&host, &bob, &ann).await;
    follow(&host, &cy, &bob).await;
    let anns = inbox(&host, &ann).await;
    let bobs = inbox(&host, &bob).await;
    assert_eq!(anns.len(), 1, "ann has the follow notification: {anns:?}");
    assert_eq!(bobs.len(), 1, "bob has the follow notification: {bobs:?}");
    let bobs_id = string_at(&bobs[0]["id"]);
    let path = format!("/api/notifications/{bobs_id}/read");

    let foreign = host.send("POST", &path, Some(&ann.token)).await;
    let unknown = host
        .send("POST", &format!("/api/notifications/{UNKNOWN_ID}/read"), Some(&ann.token))
        .await;
    let read_all = host.send("POST", "/api/notifications/read-all", Some(&ann.token)).await;
    let naming_bob = host
        .send("GET", &format!("/api/notifications?user_id={}", bob.id), Some(&ann.token))
        .await;

    assert_eq!(unknown.status, 404, "an unknown id: {}", unknown.text());
    assert_eq!(
        unknown.json(),
        json!({"errors": {"body": ["notification not found"]}}),
        "{}",
        unknown.text()
    );
    assert_eq!(foreign.status, 404, "another user's notification: {}", foreign.text());
    assert_eq!(foreign.json(), unknown.json(), "the body is the one of an unknown id");
    assert_eq!(
        naming_bob.status,
        422,
        "the inbox has no owner parameter: {}",
        naming_bob.text()
    );
    assert_eq!(
        field_errors(&naming_bob, "user_id"),
        ["is not a known parameter"],
        "{}",
        naming_bob.text()
    );
    assert_eq!(read_all.status, 200, "{}", read_all.text());
    assert_eq!(
        read_all.json(),
        json!({"marked": 1, "unread_count": 0}),
        "read-all marks only ann's one item"
    );
    let anns_ids: Vec<String> = inbox(&host, &ann).await.iter().map(|item| string_at(&item["id"])).collect();
    assert!(
        !anns_ids.contains(&bobs_id),
        "ann's inbox lists none of bob's items: {anns_ids:?}"
    );
    assert_eq!(inbox(&host, &bob).await[0]["read"], false, "bob's item is still unread");
    assert_eq!(unread_count(&host, &bob).await, 1, "bob's unread count is unchanged");
    let rows: Vec<(String, Option<i64>)> = query(
        "SELECT user_id, read_at FROM conduit_test_notifications.notifications WHERE id = ?",
        vec![bobs_id.clone()],
    )
    .await;
    assert_eq!(rows, [(bob.id.clone(), None)], "the row still belongs to bob and is unread");

    // A preferences PUT and an unsubscribe link change only their own user's preferences.
    let anns_token = unsubscribe_token(&ann.id, "comment");
    let mac = anns_token.rsplit('.').next().expect("the token has a mac");
    // Ann's valid mac with bob's id, and with another type.
    let for_bob = format!("{}.comment.{mac}", bob.id);
    let for_tips = format!("{}.tip.{mac}", ann.id);

    let put = host
        .send_json(
            "PUT",
            PREFERENCES_PATH,
            Some(&ann.token),
            &json!({"preferences": {"follow": {"email": true}}}),
        )
        .await;
    let mut expected_for_ann = default_preferences();
    expected_for_ann["follow"]["email"] = json!(true);
    assert_eq!(put.status, 200, "{}", put.text());
    assert_eq!(
        put.json()["preferences"],
        expected_for_ann,
        "the reply shows ann's preferences"
    );
    assert_eq!(
        preferences(&host, &bob).await,
        default_preferences(),
        "bob keeps the defaults"
    );

    for (what, token) in [
        ("ann's mac with bob's id", &for_bob),
        ("ann's mac with another type", &for_tips),
    ] {
        let page = host.get(&format!("{UNSUBSCRIBE_PATH}?token={token}")).await;
        let posted = post_unsubscribe(&host, token).await;
        for (method, reply) in [("GET", &page), ("POST", &posted)] {
            assert_eq!(reply.status, 422, "{method} with {what}: {}", reply.text());
            assert_eq!(
                field_errors(reply, "token"),
                ["is not a valid unsubscribe link"],
                "{method} with {what}"
            );
        }
    }
    assert_eq!(
        preferences(&host, &bob).await,
        default_preferences(),
        "no tampered link changed bob's preferences"
    );
    assert_eq!(
        preferences(&host, &ann).await,
        expected_for_ann,
        "no tampered link changed ann's preferences"
    );

    let genuine = post_unsubscribe(&host, &anns_token).await;
    assert_eq!(genuine.status, 200, "ann's own link works: {}", genuine.text());
    expected_for_ann["comment"]["email"] = json!(false);
    assert_eq!(preferences(&host, &ann).await, expected_for_ann, "ann's comment email is off");
    assert_eq!(
        preferences(&host, &bob).await,
        default_preferences(),
        "bob keeps the defaults"
    );
    let bobs_rows: Vec<u64> = query(
        "SELECT COUNT(*) FROM conduit_test_notifications.preferences WHERE user_id = ?",
        vec![bob.id.clone()],
    )
    .await;
    assert_eq!(bobs_rows, [0], "no preference row was stored for bob");
}

#[tokio::test]
async fn articles_and_comments_change_by_author_only() {
    let host = Host::start(app_options());
    let ann = register_user(&host, "ann").await;
    let bob = register_user(&host, "bob").await;
    let article = publish(&host, &ann).await;
    let slug = string_at(&article["slug"]);
    let article_path = format!("/api/articles/{slug}");
    let anns_comment = add_comment(&host, &slug, &ann, "By the author").await;
    let bobs_comment = add_comment(&host, &slug, &bob, "By a reader").await;
    let before = host.send("GET", &article_path, None).await;

    let update_body = json!({"article": {"title": "Taken over", "body": "Replaced"}});
    let cases = [
        (
            "another user updates the article",
            host.send_json("PUT", &article_path, Some(&bob.token), &update_body).await,
            "only the author may change this article",
        ),
        (
            "another user deletes the article",
            host.send("DELETE", &article_path, Some(&bob.token)).await,
            "only the author or an admin may delete this article",
        ),
        (
            "another user deletes the author's comment",
            host.send("DELETE", &format!("{article_path}/comments/{anns_comment}"), Some(&bob.token))
                .await,
            "only the comment's author or an admin may delete it",
        ),
        (
            "the article's author deletes a reader's comment",
            host.send("DELETE", &format!("{article_path}/comments/{bobs_comment}"), Some(&ann.token))
                .await,
            "only the comment's author or an admin may delete it",
        ),
    ];

    for (what, reply, message) in &cases {
        assert_eq!(reply.status, 403, "{what}: {}", reply.text());
        assert_eq!(field_errors(reply, "body"), [*message], "{what}: {}", reply.text());
    }
    let after = host.send("GET", &article_path, None).await;
    assert_eq!(after.status, 200, "the article still exists: {}", after.text());
    assert_eq!(after.json()["article"], before.json()["article"], "the article is unchanged");
    assert_eq!(
        comment_ids(&host, &slug).await,
        [bobs_comment.clone(), anns_comment.clone()],
        "both comments remain"
    );
    let rows: Vec<(String, String, String)> = query(
        "SELECT author_id, title, body FROM conduit_test_feed.articles WHERE slug = ?",
        vec![slug.clone()],
    )
    .await;
    let expected = (ann.id.clone(), string_at(&article["title"]), "The original body".to_string());
    assert_eq!(rows, [expected], "the stored article keeps its author, title and body");
}

#[tokio::test]
async fn profile_update_changes_only_caller() {
    let host = Host::start(app_options());
    let ann = register_user(&host, "ann").await;
    let bob = register_user(&host, "bob").await;
    let anns_row = user_row(&ann.id).await;

    let update = json!({"user": {"bio": "Bob's own bio", "image": "https://example.com/bob.png"}});
    let own = host.send_json("PUT", "/api/user", Some(&bob.token), &update).await;
    let takes_username = host
        .send_json(
            "PUT",
            "/api/user",
            Some(&bob.token),
            &json!({"user": {"username": ann.username}}),
        )
        .await;
    let takes_email = host
        .send_json(
            "PUT",
            "/api/user",
            Some(&bob.token),
            &json!({"user": {"email": email_of(&ann.username)}}),
        )
        .await;
    let anns_profile = host.send("GET", &format!("/api/profiles/{}", ann.username), None).await;

    assert_eq!(own.status, 200, "{}", own.text());
    assert_eq!(
        own.json()["user"]["username"],
        bob.username.as_str(),
        "the update applies to the caller"
    );
    assert_eq!(own.json()["user"]["bio"], "Bob's own bio");
    for (field, reply) in [("username", &takes_username), ("email", &takes_email)] {
        assert_eq!(reply.status, 422, "taking ann's {field}: {}", reply.text());
        assert_eq!(field_errors(reply, field), ["has already been taken"], "taking ann's {field}");
    }
    assert_eq!(user_row(&ann.id).await, anns_row, "ann's row is unchanged");
    assert_eq!(anns_profile.status, 200, "{}", anns_profile.text());
    assert_eq!(anns_profile.json()["profile"]["bio"], "", "ann's profile shows no bio");
    assert_eq!(anns_profile.json()["profile"]["image"], "", "ann's profile shows no image");
    let bobs_row = user_row(&bob.id).await;
    assert_eq!(bobs_row.0, bob.username, "bob keeps his username");
    assert_eq!(bobs_row.1, email_of(&bob.username), "bob keeps his email");
    assert_eq!(bobs_row.2, "Bob's own bio");
}
