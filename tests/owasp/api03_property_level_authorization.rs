//! API3:2023 Broken Object Property Level Authorization. Against mass assignment,
//! no request body can set roles, ids, ownership, balances or statuses: such a
//! field, inside the wrapper object or beside it, is a 422 naming it, and
//! nothing is stored. Against excessive data exposure, no response carries a
//! password hash, a token version, another user's email or id, or a secret.
//! Also covered by: tests/feed.rs `read_only_fields_are_ignored`, tests/payments.rs `tip_rejects_unknown_fields`, tests/notifications.rs `preferences_merge_and_reject_invalid`, tests/profiles.rs `register_rejects_bad_fields`.

use crate::common::{App, eur_balance, field_errors, post_with_new_key, query};
use std::collections::BTreeSet;

use conduit_tests::{
    Host, Reply, TEST_PASSWORD, TestUser, app_options, email_of, grant_admin, log_in, register_user, settle_paid, test_env,
    unique_name,
};
use serde_json::{Value, json};

const PREFERENCES_PATH: &str = "/api/notifications/preferences";

/// The message of an unknown field inside a wrapper object.
const UNKNOWN_FIELD: &str = "is not a known field";

/// Returns the message of an unknown key beside the wrapper object `wrapper`.
fn beside_wrapper(wrapper: &str) -> String {
    format!("is not a known field (the body holds only `{wrapper}`)")
}

// ---- requests ----

/// Returns the ids of the user's payment history, newest first.
async fn history_ids(host: &Host, user: &TestUser) -> Vec<String> {
    let reply = host.send("GET", "/api/payments", Some(&user.token)).await;
    assert_eq!(reply.status, 200, "reading the history failed: {}", reply.text());
    let payments = reply.json()["payments"].as_array().cloned().unwrap_or_default();
    payments
        .iter()
        .map(|payment| payment["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Returns the `user` object of `GET /api/user`. Panics unless the status is 200.
async fn current_user(host: &Host, user: &TestUser) -> Value {
    let reply = host.send("GET", "/api/user", Some(&user.token)).await;
    assert_eq!(reply.status, 200, "reading the current user failed: {}", reply.text());
    reply.json()["user"].clone()
}

fn valid_article(title: &str) -> Value {
    json!({"title": title, "description": "A description", "body": "The body", "tagList": []})
}

// ---- reading replies and rows ----

/// Asserts a 422 whose envelope has exactly `message` for `field`.
fn assert_rejects_field(reply: &Reply, field: &str, message: &str, context: &str) {
    assert_eq!(reply.status, 422, "{context}: {}", reply.text());
    assert_eq!(field_errors(reply, field), [message], "{context}: {}", reply.text());
}

/// Returns the keys of a JSON object, sorted.
fn keys_of(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("expected an object, got {value}"))
        .keys()
        .cloned()
        .collect()
}

fn key_set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|key| key.to_string()).collect()
}

/// Counts the user's rows in `user_roles` (roles granted on top of `user`).
async fn granted_roles(user_id: &str) -> u64 {
    let rows: Vec<u64> = query(
        "SELECT COUNT(*) FROM conduit_test_profiles.user_roles WHERE user_id = ?",
        vec![user_id.to_string()],
    )
    .await;
    rows[0]
}

/// Reads the stored bio, token version and verification flag of a user.
async fn account_row(user_id: &str) -> (String, u64, bool) {
    let rows: Vec<(String, u64, bool)> = query(
        "SELECT bio, token_version, email_verified_at IS NOT NULL FROM conduit_test_profiles.users WHERE id = ?",
        vec![user_id.to_string()],
    )
    .await;
    rows.into_iter().next().unwrap_or_else(|| panic!("user {user_id} has no row"))
}

// ---- mass assignment ----

#[tokio::test]
async fn account_bodies_reject_privileged_fields() {
    let host = Host::start(app_options());
    let ann = register_user(&host, "ann").await;
    let bob = register_user(&host, "bob").await;
    let ann_before = account_row(&ann.id).await;
    let fields_inside = [
        ("roles", json!(["admin"])),
        ("admin", json!(true)),
        ("id", json!(bob.id)),
        ("token_version", json!(99)),
        ("emailVerified", json!(true)),
    ];

    for (field, value) in &fields_inside {
        let username = unique_name("reg");
        let mut user = json!({"username": username, "email": email_of(&username), "password": "a long passphrase"});
        user[*field] = value.clone();
        let reply = host.send_json("POST", "/api/users", None, &json!({ "user": user })).await;
        assert_rejects_field(&reply, field, UNKNOWN_FIELD, &format!("registration with `{field}`"));
        let stored: Vec<u64> = query(
            "SELECT COUNT(*) FROM conduit_test_profiles.users WHERE username = ?",
            vec![username.clone()],
        )
        .await;
        assert_eq!(stored, [0], "registration with `{field}` stored no user");

        // An update echoes the user object, whose `emailVerified` is checked below.
        if *field == "emailVerified" {
            continue;
        }
        let update = json!({"user": {"bio": "Set with a forbidden field", field.to_string(): value}});
        let reply = host.send_json("PUT", "/api/user", Some(&ann.token), &update).await;
        assert_rejects_field(&reply, field, UNKNOWN_FIELD, &format!("update with `{field}`"));
    }

    // The read-only fields of the user object a client echoes are accepted and never applied.
    let echoed = json!({"user": {"emailVerified": true, "refreshToken": "not-a-refresh-token"}});
    let update = host.send_json("PUT", "/api/user", Some(&ann.token), &echoed).await;
    assert_eq!(update.status, 200, "an echoed user object: {}", update.text());
    assert_eq!(update.json()["user"]["emailVerified"], false, "`emailVerified` is ignored: {}", update.text());

    let username = unique_name("reg");
    let beside = json!({"user": {"username": username, "email": email_of(&username), "password": "a long passphrase"},
                        "roles": ["admin"]});
    let registration = host.send_json("POST", "/api/users", None, &beside).await;
    assert_rejects_field(
        &registration,
        "roles",
        &beside_wrapper("user"),
        "registration with `roles` beside `user`",
    );
    let update = host
        .send_json(
            "PUT",
            "/api/user",
            Some(&ann.token),
            &json!({"user": {"bio": "Beside"}, "roles": ["admin"]}),
        )
        .await;
    assert_rejects_field(&update, "roles", &beside_wrapper("user"), "update with `roles` beside `user`");

    let preferences_cases = [
        (
            "`user_id` beside `preferences`",
            json!({"preferences": {"follow": {"email": true}}, "user_id": bob.id}),
            "must be the only key of the body",
        ),
        (
            "`user_id` as a type",
            json!({"preferences": {"user_id": {"email": true}}}),
            "has an unknown type `user_id`; the types are follow, comment, favorite, tip, top_up",
        ),
    ];
    for (what, body, message) in preferences_cases {
        let reply = host.send_json("PUT", PREFERENCES_PATH, Some(&ann.token), &body).await;
        assert_rejects_field(&reply, "preferences", message, &format!("preferences with {what}"));
    }

    // `token` is accepted because clients send back the user object, but another user's token is ignored.
    let with_bobs_token = json!({"user": {"token": bob.token, "image": "https://example.com/ann.png"}});
    let update = host.send_json("PUT", "/api/user", Some(&ann.token), &with_bobs_token).await;
    assert_eq!(update.status, 200, "{}", update.text());
    assert_eq!(
        update.json()["user"]["username"],
        ann.username.as_str(),
        "the caller is still ann: {}",
        update.text()
    );
    assert_eq!(
        update.json()["user"]["token"],
        ann.token.as_str(),
        "the reply carries ann's own token"
    );
    let bobs_image: Vec<String> = query(
        "SELECT image FROM conduit_test_profiles.users WHERE id = ?",
        vec![bob.id.clone()],
    )
    .await;
    assert_eq!(bobs_image, [String::new()], "bob's image is unchanged");

    assert_eq!(
        account_row(&ann.id).await,
        ann_before,
        "ann's bio, token version and verification are unchanged"
    );
    assert_eq!(granted_roles(&ann.id).await, 0, "ann has no role beyond `user`");
    let user = current_user(&host, &ann).await;
    assert_eq!(user["bio"], "", "no rejected update set the bio: {user}");
    assert_eq!(user["emailVerified"], false, "{user}");
    let preferences_rows: Vec<u64> = query(
        "SELECT COUNT(*) FROM conduit_test_notifications.preferences WHERE user_id IN (?, ?)",
        vec![ann.id.clone(), bob.id.clone()],
    )
    .await;
    assert_eq!(preferences_rows, [0], "no rejected preferences body stored a row");

    // The roles route takes only the complete list of roles, of known grantable names.
    let admin = register_user(&host, "adm").await;
    grant_admin(&admin.id, "spin.toml");
    let admin_token = log_in(&host, &admin).await;
    let path = format!("/api/admin/users/{}/roles", bob.username);
    let known_roles = "has an unknown role (known: user, admin)";
    let cases = [
        (
            "another user's id",
            json!({"roles": ["admin"], "user_id": ann.id}),
            "user_id",
            UNKNOWN_FIELD,
        ),
        (
            "another username",
            json!({"roles": ["admin"], "username": ann.username}),
            "username",
            UNKNOWN_FIELD,
        ),
        ("the service role", json!({"roles": ["service"]}), "roles", known_roles),
        ("an invented role", json!({"roles": ["superuser"]}), "roles", known_roles),
        (
            "a role as text",
            json!({"roles": "admin"}),
            "roles",
            "must be a list of role names",
        ),
        (
            "roles in a user object",
            json!({"user": {"roles": ["admin"]}}),
            "user",
            UNKNOWN_FIELD,
        ),
    ];

    for (what, body, field, message) in &cases {
        let reply = host.send_json("PUT", &path, Some(&admin_token), body).await;
        assert_rejects_field(&reply, field, message, what);
    }

    assert_eq!(granted_roles(&bob.id).await, 0, "bob got no role");
    assert_eq!(granted_roles(&ann.id).await, 0, "ann got no role");
    let audits: Vec<u64> = query(
        "SELECT COUNT(*) FROM conduit_test_profiles.role_audit WHERE user_id IN (?, ?)",
        vec![ann.id.clone(), bob.id.clone()],
    )
    .await;
    assert_eq!(audits, [0], "no role change was audited");
    let bobs_session = host.send("GET", "/api/user", Some(&bob.token)).await;
    assert_eq!(
        bobs_session.status,
        200,
        "bob's token version was not bumped: {}",
        bobs_session.text()
    );
}

#[tokio::test]
async fn article_and_comment_bodies_keep_author() {
    let host = Host::start(app_options());
    let ann = register_user(&host, "ann").await;
    let bob = register_user(&host, "bob").await;
    let bob_as_author = json!({"username": bob.username, "bio": "", "image": "", "following": false});

    for (field, value) in [
        ("author_id", json!(bob.id)),
        ("user_id", json!(bob.id)),
        ("id", json!(bob.id)),
    ] {
        let mut article = valid_article(&format!("Rejected {}", unique_name("art")));
        article[field] = value;
        let reply = host
            .send_json("POST", "/api/articles", Some(&ann.token), &json!({ "article": article }))
            .await;
        assert_rejects_field(&reply, field, UNKNOWN_FIELD, &format!("an article with `{field}`"));
    }
    let beside = json!({"article": valid_article(&format!("Rejected {}", unique_name("art"))), "author": bob_as_author});
    let reply = host.send_json("POST", "/api/articles", Some(&ann.token), &beside).await;
    assert_rejects_field(&reply, "author", &beside_wrapper("article"), "`author` beside `article`");
    let listed = host
        .send("GET", &format!("/api/articles?author={}", ann.username), None)
        .await;
    assert_eq!(
        listed.json()["articlesCount"],
        0,
        "no rejected article was stored: {}",
        listed.text()
    );

    // The contract's read-only fields are accepted and ignored, because
    // clients send back the article they were given.
    let mut article = valid_article(&format!("Accepted {}", unique_name("art")));
    article["author"] = bob_as_author.clone();
    article["favoritesCount"] = json!(99);
    let created = host
        .send_json("POST", "/api/articles", Some(&ann.token), &json!({ "article": article }))
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let slug = created.json()["article"]["slug"]
        .as_str()
        .expect("the article has a slug")
        .to_string();
    assert_eq!(
        created.json()["article"]["author"]["username"],
        ann.username.as_str(),
        "the author is the caller"
    );
    assert_eq!(
        created.json()["article"]["favoritesCount"],
        0,
        "the count is not set by the body"
    );

    let article_path = format!("/api/articles/{slug}");
    let forged_owner = json!({"article": {"description": "Moved to bob", "author_id": bob.id}});
    let update = host.send_json("PUT", &article_path, Some(&ann.token), &forged_owner).await;
    assert_rejects_field(&update, "author_id", UNKNOWN_FIELD, "an update with `author_id`");
    let ignored = json!({"article": {"description": "Still ann's", "author": bob_as_author}});
    let update = host.send_json("PUT", &article_path, Some(&ann.token), &ignored).await;
    assert_eq!(update.status, 200, "{}", update.text());
    assert_eq!(
        update.json()["article"]["author"]["username"],
        ann.username.as_str(),
        "`author` is ignored"
    );

    let comments_path = format!("{article_path}/comments");
    let comment_cases = [
        (
            "`author` inside",
            json!({"comment": {"body": "Hi", "author": bob_as_author}}),
            "author",
            UNKNOWN_FIELD.to_string(),
        ),
        (
            "`id` inside",
            json!({"comment": {"body": "Hi", "id": 1}}),
            "id",
            UNKNOWN_FIELD.to_string(),
        ),
        (
            "`author_id` beside",
            json!({"comment": {"body": "Hi"}, "author_id": bob.id}),
            "author_id",
            beside_wrapper("comment"),
        ),
    ];
    for (what, body, field, message) in &comment_cases {
        let reply = host.send_json("POST", &comments_path, Some(&ann.token), body).await;
        assert_rejects_field(&reply, field, message, &format!("a comment with {what}"));
    }
    let comments = host.send("GET", &comments_path, None).await;
    assert_eq!(
        comments.json()["comments"],
        json!([]),
        "no rejected comment was stored: {}",
        comments.text()
    );

    let rows: Vec<(String, String, u64)> = query(
        "SELECT author_id, description, favorites_count FROM conduit_test_feed.articles WHERE slug = ?",
        vec![slug.clone()],
    )
    .await;
    assert_eq!(
        rows,
        [(ann.id.clone(), "Still ann's".to_string(), 0)],
        "the stored article is ann's"
    );
}

#[tokio::test]
async fn payment_bodies_reject_balance_fields() {
    let app = App::start();
    let ann = register_user(&app.host, "ann").await;
    let bob = register_user(&app.host, "bob").await;
    let admin = register_user(&app.host, "adm").await;
    app.fund(&ann, 1000).await;
    let tip = json!({"tip": {"to_username": bob.username, "amount_minor": 100, "currency": "EUR"}});
    let tip_reply = post_with_new_key(&app.host, "/api/tips", &ann, &tip).await;
    assert_eq!(tip_reply.status, 201, "{}", tip_reply.text());
    let tip_id = tip_reply.json()["tip"]["id"].as_str().expect("the tip has an id").to_string();
    let top_ups_before = app.mollie.payments().len();
    let history_before = history_ids(&app.host, &ann).await;
    let forged = [
        ("balance", json!(1_000_000)),
        ("fee", json!(0)),
        ("status", json!("paid")),
        ("user_id", json!(bob.id)),
        ("from_username", json!(bob.username)),
    ];

    for (field, value) in &forged {
        let mut top_up = json!({"amount_minor": 500, "currency": "EUR"});
        top_up[*field] = value.clone();
        let reply = post_with_new_key(&app.host, "/api/wallet/top-ups", &ann, &json!({ "top_up": top_up })).await;
        assert_rejects_field(&reply, field, UNKNOWN_FIELD, &format!("a top-up with `{field}`"));

        let mut tip = json!({"to_username": bob.username, "amount_minor": 100, "currency": "EUR"});
        tip[*field] = value.clone();
        let reply = post_with_new_key(&app.host, "/api/tips", &ann, &json!({ "tip": tip })).await;
        assert_rejects_field(&reply, field, UNKNOWN_FIELD, &format!("a tip with `{field}`"));
    }
    let top_up_beside = json!({"top_up": {"amount_minor": 500, "currency": "EUR"}, "balance": 1_000_000});
    let reply = post_with_new_key(&app.host, "/api/wallet/top-ups", &ann, &top_up_beside).await;
    assert_rejects_field(&reply, "balance", &beside_wrapper("top_up"), "`balance` beside `top_up`");
    let tip_beside = json!({"tip": {"to_username": bob.username, "amount_minor": 100}, "from_username": bob.username});
    let reply = post_with_new_key(&app.host, "/api/tips", &ann, &tip_beside).await;
    assert_rejects_field(
        &reply,
        "from_username",
        &beside_wrapper("tip"),
        "`from_username` beside `tip`",
    );

    grant_admin(&admin.id, "spin.toml");
    let admin_token = log_in(&app.host, &admin).await;
    let refund_path = format!("/api/payments/{tip_id}/refund");
    let refund_cases = [
        (
            "`status` inside",
            json!({"refund": {"amount_minor": 50, "status": "refunded"}}),
            "status",
            UNKNOWN_FIELD.to_string(),
        ),
        (
            "`user_id` inside",
            json!({"refund": {"amount_minor": 50, "user_id": admin.id}}),
            "user_id",
            UNKNOWN_FIELD.to_string(),
        ),
        (
            "`fee` beside",
            json!({"refund": {"amount_minor": 50}, "fee": 0}),
            "fee",
            beside_wrapper("refund"),
        ),
    ];
    for (what, body, field, message) in &refund_cases {
        let reply = app.host.send_json("POST", &refund_path, Some(&admin_token), body).await;
        assert_rejects_field(&reply, field, message, &format!("a refund with {what}"));
    }

    assert_eq!(eur_balance(&app.host, &ann).await, 900, "ann's balance is unchanged");
    assert_eq!(eur_balance(&app.host, &bob).await, 100, "bob's balance is unchanged");
    assert_eq!(
        app.mollie.payments().len(),
        top_ups_before,
        "no rejected top-up reached the provider"
    );
    assert_eq!(history_ids(&app.host, &ann).await, history_before, "no payment was added");
    assert!(
        history_ids(&app.host, &admin).await.is_empty(),
        "the admin's history is empty"
    );
    let refunds: Vec<u64> = query(
        "SELECT COUNT(*) FROM conduit_test_payments.refunds WHERE payment_id = ?",
        vec![tip_id.clone()],
    )
    .await;
    assert_eq!(refunds, [0], "no refund was stored");
}

// ---- excessive data exposure ----

/// The fields of a profile block: a profile, an article's or a comment's author.
const PROFILE_FIELDS: [&str; 4] = ["username", "bio", "image", "following"];

/// The fields of a tip as its sender and recipient read it. The tip in this
/// test has no `message`, so that optional field is not listed.
const TIP_FIELDS: [&str; 11] = [
    "id",
    "kind",
    "status",
    "direction",
    "amount_minor",
    "currency",
    "counterparty",
    "refunded_minor",
    "article_slug",
    "created_at",
    "updated_at",
];

#[tokio::test]
async fn responses_hide_private_fields() {
    let app = App::start();
    let host = &app.host;
    let username = unique_name("cy");
    let registration_body =
        json!({"user": {"username": username, "email": email_of(&username), "password": "a long passphrase"}});
    let registration = host.send_json("POST", "/api/users", None, &registration_body).await;
    let ann = register_user(host, "ann").await;
    let bob = register_user(host, "bob").await;
    let top_up_body = json!({"top_up": {"amount_minor": 1000, "currency": "EUR"}});
    let top_up = post_with_new_key(host, "/api/wallet/top-ups", &bob, &top_up_body).await;
    settle_paid(&app.mollie, &top_up).await;
    let article = valid_article(&format!("Exposed {}", unique_name("art")));
    let created = host
        .send_json("POST", "/api/articles", Some(&ann.token), &json!({ "article": article }))
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let slug = created.json()["article"]["slug"]
        .as_str()
        .expect("the article has a slug")
        .to_string();
    let article_path = format!("/api/articles/{slug}");
    let tip_body = json!({"tip": {"to_username": ann.username, "amount_minor": 250, "article_slug": slug}});

    let follow = host
        .send("POST", &format!("/api/profiles/{}/follow", ann.username), Some(&bob.token))
        .await;
    let comment = host
        .send_json(
            "POST",
            &format!("{article_path}/comments"),
            Some(&bob.token),
            &json!({"comment": {"body": "Nice"}}),
        )
        .await;
    let favorite = host.send("POST", &format!("{article_path}/favorite"), Some(&bob.token)).await;
    let tip = post_with_new_key(host, "/api/tips", &bob, &tip_body).await;
    assert_eq!(tip.status, 201, "{}", tip.text());
    let tip_id = tip.json()["tip"]["id"].as_str().expect("the tip has an id").to_string();
    let login = host
        .send_json(
            "POST",
            "/api/users/login",
            None,
            &json!({"user": {"email": email_of(&ann.username), "password": TEST_PASSWORD}}),
        )
        .await;

    let replies = [
        (
            "ann's profile read by bob",
            host.send("GET", &format!("/api/profiles/{}", ann.username), Some(&bob.token))
                .await,
        ),
        (
            "ann's profile read anonymously",
            host.send("GET", &format!("/api/profiles/{}", ann.username), None).await,
        ),
        ("the follow", follow),
        ("the created article", created),
        (
            "the article read by bob",
            host.send("GET", &article_path, Some(&bob.token)).await,
        ),
        (
            "the article list",
            host.send("GET", &format!("/api/articles?author={}", ann.username), None)
                .await,
        ),
        ("bob's feed", host.send("GET", "/api/articles/feed", Some(&bob.token)).await),
        ("the created comment", comment),
        (
            "the comments read by ann",
            host.send("GET", &format!("{article_path}/comments"), Some(&ann.token)).await,
        ),
        ("the favorite", favorite),
        ("ann's inbox", host.send("GET", "/api/notifications", Some(&ann.token)).await),
        ("the top-up", top_up),
        ("the tip", tip),
        (
            "the tip read by ann",
            host.send("GET", &format!("/api/payments/{tip_id}"), Some(&ann.token)).await,
        ),
        ("ann's history", host.send("GET", "/api/payments", Some(&ann.token)).await),
        ("bob's history", host.send("GET", "/api/payments", Some(&bob.token)).await),
        ("bob's wallet", host.send("GET", "/api/wallet", Some(&bob.token)).await),
    ];
    let mut forbidden: Vec<(String, String)> = vec![
        ("ann's email".into(), email_of(&ann.username)),
        ("bob's email".into(), email_of(&bob.username)),
        ("ann's user id".into(), ann.id.clone()),
        ("bob's user id".into(), bob.id.clone()),
        ("the provider's API key".into(), app.mollie.api_key().to_string()),
    ];
    let is_secret = |name: &str| name.ends_with("_PASSWORD") || name.ends_with("_KEY") || name.ends_with("_TOKEN");
    for (name, value) in test_env().into_iter().filter(|(name, _)| is_secret(name)) {
        forbidden.push((name, value));
    }
    let private_words = ["password", "$argon2", "token_version", "tokenVersion", "roles", "email"];

    for (what, reply) in &replies {
        assert!((200..300).contains(&reply.status), "{what}: {}", reply.text());
        let text = reply.text();
        for (name, value) in &forbidden {
            assert!(!text.contains(value.as_str()), "{what} contains {name}: {text}");
        }
        for word in private_words {
            assert!(!text.contains(word), "{what} contains `{word}`: {text}");
        }
    }

    let json_of = |label: &str| {
        let found = replies.iter().find(|(what, _)| *what == label);
        found.unwrap_or_else(|| panic!("no reply is labelled {label:?}")).1.json()
    };
    let shapes = [
        (
            "a profile",
            json_of("ann's profile read by bob")["profile"].clone(),
            key_set(&PROFILE_FIELDS),
        ),
        (
            "an article's author",
            json_of("the article read by bob")["article"]["author"].clone(),
            key_set(&PROFILE_FIELDS),
        ),
        (
            "a comment's author",
            json_of("the comments read by ann")["comments"][0]["author"].clone(),
            key_set(&PROFILE_FIELDS),
        ),
        (
            "a notification's actor",
            json_of("ann's inbox")["notifications"][0]["actor"].clone(),
            key_set(&["username"]),
        ),
        (
            "the tip read by its recipient",
            json_of("the tip read by ann")["payment"].clone(),
            key_set(&TIP_FIELDS),
        ),
    ];
    for (what, value, expected) in &shapes {
        assert_eq!(&keys_of(value), expected, "{what}: {value}");
    }
    let tip_read = json_of("the tip read by ann");
    assert_eq!(
        tip_read["payment"]["counterparty"],
        bob.username.as_str(),
        "the sender shows by name only"
    );

    // A user's own email appears only in their own user object.
    for (what, reply) in [("registration", &registration), ("login", &login)] {
        assert!((200..300).contains(&reply.status), "{what}: {}", reply.text());
        let user = reply.json()["user"].clone();
        let expected = key_set(&["email", "emailVerified", "token", "username", "bio", "image", "refreshToken"]);
        assert_eq!(keys_of(&user), expected, "{what}: {user}");
        assert!(
            !reply.text().contains("$argon2"),
            "{what} carries no password hash: {}",
            reply.text()
        );
    }
}
