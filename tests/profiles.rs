//! Black-box tests of the profiles component: the real `profiles.wasm` run by
//! the local host from the application's `spin.toml`, against the
//! `conduit_test_profiles` schema in MariaDB that `cargo xtask test` migrates.

use std::sync::atomic::{AtomicU32, Ordering};

use conduit_tests::{Host, Reply, admin_db, app_options, register_user, test_env_value, with_and_without_reuse};
use jwt_simple::prelude::*;
use mysql_async::prelude::Queryable;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

/// Makes a username no other test (or earlier run) uses, starting with `prefix`.
fn name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}{:x}{}", nanos % 0xff_ffff, NEXT.fetch_add(1, Ordering::Relaxed))
}

fn email_of(username: &str) -> String {
    format!("{}@example.test", username.to_lowercase())
}

/// Percent-encodes a path segment.
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---- one helper per endpoint ----

async fn register(host: &Host, username: &str, email: &str, password: &str) -> Reply {
    let body = json!({"user": {"username": username, "email": email, "password": password}});
    host.send_json("POST", "/api/users", None, &body).await
}

async fn login(host: &Host, email: &str, password: &str) -> Reply {
    host.send_json("POST", "/api/users/login", None, &json!({"user": {"email": email, "password": password}}))
        .await
}

async fn current_user(host: &Host, token: &str) -> Reply {
    host.send("GET", "/api/user", Some(token)).await
}

async fn update_user(host: &Host, token: &str, user: Value) -> Reply {
    host.send_json("PUT", "/api/user", Some(token), &json!({ "user": user })).await
}

async fn profile(host: &Host, username: &str, token: Option<&str>) -> Reply {
    host.send("GET", &format!("/api/profiles/{}", segment(username)), token).await
}

async fn follow(host: &Host, username: &str, token: &str) -> Reply {
    host.send("POST", &format!("/api/profiles/{}/follow", segment(username)), Some(token)).await
}

async fn unfollow(host: &Host, username: &str, token: &str) -> Reply {
    host.send("DELETE", &format!("/api/profiles/{}/follow", segment(username)), Some(token)).await
}

/// Registers a user and returns its token.
async fn registered(host: &Host, username: &str) -> String {
    let reply = register(host, username, &email_of(username), PASSWORD).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    token_of(&reply)
}

fn token_of(reply: &Reply) -> String {
    reply.json()["user"]["token"].as_str().expect("the reply carries a token").to_string()
}

/// Reads the claims of a token without verifying it.
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&Base64UrlSafeNoPadding::decode_to_vec(payload, None).unwrap()).unwrap()
}

fn field_errors(reply: &Reply, field: &str) -> Vec<String> {
    serde_json::from_value(reply.json()["errors"][field].clone()).unwrap_or_default()
}

/// Builds the signing key of the test suite's `user_token_key`.
fn test_signing_key() -> Ed25519KeyPair {
    let seed_hex = test_env_value("SPIN_VARIABLE_USER_TOKEN_KEY");
    let seed: Vec<u8> = (0..32).map(|i| u8::from_str_radix(&seed_hex[2 * i..2 * i + 2], 16).unwrap()).collect();
    let pair = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::from_slice(&seed).unwrap());
    Ed25519KeyPair::from_bytes(&pair[..]).unwrap()
}

#[derive(Serialize, Deserialize)]
struct TestClaims {
    ver: u64,
    roles: Vec<String>,
}

/// Signs a token like the component's, with the changes `adjust` makes.
fn forge(key: &Ed25519KeyPair, subject: &str, adjust: impl FnOnce(&mut JWTClaims<TestClaims>)) -> String {
    let mut claims = Claims::with_custom_claims(TestClaims { ver: 1, roles: vec!["user".into()] }, Duration::from_hours(1))
        .with_issuer("conduit")
        .with_audience("conduit-api")
        .with_subject(subject);
    adjust(&mut claims);
    key.sign(claims).unwrap()
}

// ---- tests ----

#[tokio::test]
async fn register_login_current_user_round_trip() {
    with_and_without_reuse(app_options(), |host, reuse| async move {
        let username = name("Ann");
        let email = format!("{username}@Example.TEST");

        let created = register(&host, &username, &email, PASSWORD).await;
        let logged_in = login(&host, &email.to_lowercase(), PASSWORD).await;
        let token = token_of(&logged_in);
        let me = current_user(&host, &token).await;
        let bearer = host.request("GET", "/api/user", &[("authorization", &format!("Bearer {token}"))], "").await;

        assert_eq!(created.status, 201, "reuse {reuse}: {}", created.text());
        let user = &created.json()["user"];
        assert_eq!((user["username"].as_str(), user["email"].as_str()), (Some(username.as_str()), Some(email.as_str())));
        assert_eq!((user["bio"].as_str(), user["image"].as_str()), (Some(""), Some("")), "unset bio and image are empty strings");
        assert_eq!(created.header("cache-control"), Some("no-store"));
        let request_id = created.header("x-request-id").expect("every response has a request id");
        assert_eq!(request_id.len(), 24);
        let host_lines = host.request_logs().await;
        assert!(
            host_lines.iter().any(|l| l["request_id"] == request_id),
            "the host's log line carries the component's request id: {host_lines:?}"
        );
        assert_eq!(logged_in.status, 200, "{}", logged_in.text());
        assert_eq!(me.status, 200);
        assert_eq!(me.json()["user"]["username"], username.as_str());
        assert_eq!(me.json()["user"]["token"], token.as_str());
        assert_eq!(bearer.status, 200, "Bearer is accepted as well as Token");
        let claims = claims_of(&token);
        assert_eq!((claims["iss"].as_str(), claims["aud"].as_str()), (Some("conduit"), Some("conduit-api")));
        assert_eq!(claims["roles"], json!(["user"]));
        assert_eq!(claims["ver"], 1);
        assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 86_400);

        let mut db = admin_db().await;
        let row: Option<(String, String, String, String, String)> = db
            .exec_first(
                "SELECT id, username, username_key, email_key, password_hash FROM conduit_test_profiles.users WHERE username = ?",
                (&username,),
            )
            .await
            .unwrap();
        let (id, stored_name, username_key, email_key, hash) = row.expect("the user row exists");
        assert_eq!(claims["sub"], id.as_str(), "the subject is the user id");
        assert_eq!(stored_name, username, "the username is kept as entered");
        assert_eq!(username_key, username.to_lowercase());
        assert_eq!(email_key, email.to_lowercase());
        assert!(hash.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{hash}");
        assert!(!created.text().contains("argon2"), "the hash is never returned");
        assert!(!me.text().contains("argon2"), "the hash is never returned");
    })
    .await;
}

#[tokio::test]
async fn case_collides_but_accents_differ() {
    with_and_without_reuse(app_options(), |host, _reuse| async move {
        let base = name("jose");
        let accented = base.replacen("jose", "José", 1);

        let first = register(&host, &base, &email_of(&base), PASSWORD).await;
        let upper = register(&host, &base.to_uppercase(), "other@example.test", PASSWORD).await;
        let accent = register(&host, &accented, &format!("accent-{base}@example.test"), PASSWORD).await;
        let email_case = register(&host, &name("x"), &email_of(&base).to_uppercase(), PASSWORD).await;
        let decomposed_name = format!("{}e\u{301}", name("Zo"));
        let decomposed = register(&host, &decomposed_name, &email_of(&name("nfd")), PASSWORD).await;
        let both = register(&host, &base.to_uppercase(), &email_of(&base).to_uppercase(), PASSWORD).await;

        assert_eq!(first.status, 201, "{}", first.text());
        assert_eq!(upper.status, 422, "{}", upper.text());
        assert_eq!(field_errors(&upper, "username"), ["has already been taken"]);
        assert_eq!(accent.status, 201, "`José` next to `jose` is allowed: {}", accent.text());
        assert_eq!(accent.json()["user"]["username"], accented.as_str());
        assert_eq!(email_case.status, 422);
        assert_eq!(field_errors(&email_case, "email"), ["has already been taken"]);
        assert_eq!(field_errors(&both, "username").len() + field_errors(&both, "email").len(), 2, "both fields are named");
        assert_eq!(decomposed.status, 201, "a combining accent is part of a name: {}", decomposed.text());
        let composed_name = decomposed_name.replace("e\u{301}", "é");
        assert_eq!(decomposed.json()["user"]["username"], composed_name.as_str(), "stored in composed form (NFC)");
        let accented_profile = profile(&host, &accented.to_uppercase(), None).await;
        assert_eq!(accented_profile.json()["profile"]["username"], accented.as_str(), "profiles are found by normalised key");
    })
    .await;
}

#[tokio::test]
async fn register_rejects_bad_fields() {
    with_and_without_reuse(app_options(), |host, _reuse| async move {
        let post = |body: Value| {
            let host = &host;
            async move { host.send_json("POST", "/api/users", None, &body).await }
        };

        let no_user = post(json!({})).await;
        let nulls = post(json!({"user": {"username": null, "email": null, "password": null}})).await;
        let missing = post(json!({"user": {"username": name("m")}})).await;
        let wrong_types = post(json!({"user": {"username": 5, "email": true, "password": ["x"]}})).await;
        let invalid = post(json!({"user": {"username": "has space", "email": "nope", "password": "short"}})).await;
        let grants_role = post(json!({"user": {"username": name("r"), "email": "r@example.test", "password": PASSWORD, "roles": ["admin"]}})).await;
        let not_json = host.request("POST", "/api/users", &[("content-type", "application/json")], "{\"user\":").await;
        let form = host.request("POST", "/api/users", &[("content-type", "application/x-www-form-urlencoded")], "a=b").await;
        let huge = host
            .request("POST", "/api/users", &[("content-type", "application/json")], format!("{{\"user\":{{\"bio\":\"{}\"}}}}", "x".repeat(20_000)))
            .await;

        assert_eq!(no_user.status, 422);
        assert_eq!(field_errors(&no_user, "user"), ["is required"]);
        assert_eq!(nulls.status, 422);
        for field in ["username", "email", "password"] {
            assert_eq!(field_errors(&nulls, field), ["can't be blank"], "{field}");
        }
        assert_eq!(field_errors(&missing, "email"), ["can't be blank"]);
        assert_eq!(field_errors(&missing, "password"), ["can't be blank"]);
        assert_eq!(field_errors(&wrong_types, "username"), ["must be a string"]);
        assert_eq!(invalid.status, 422);
        assert_eq!(field_errors(&invalid, "email"), ["is invalid"]);
        assert_eq!(field_errors(&invalid, "password"), ["is too short (minimum is 8 characters)"]);
        assert!(!field_errors(&invalid, "username").is_empty());
        assert_eq!(grants_role.status, 422);
        assert_eq!(field_errors(&grants_role, "roles"), ["is not a known field"]);
        assert_eq!(not_json.status, 400);
        assert_eq!(form.status, 415);
        assert_eq!(huge.status, 413);
        for reply in [&no_user, &nulls, &not_json, &form, &huge] {
            assert!(reply.json()["errors"]["body"].as_array().is_some_and(|b| !b.is_empty()), "{}", reply.text());
        }
    })
    .await;
}

#[tokio::test]
async fn login_rejects_unknown_and_wrong_alike() {
    with_and_without_reuse(app_options(), |host, _reuse| async move {
        let username = name("lou");
        registered(&host, &username).await;

        let wrong = login(&host, &email_of(&username), "wrong password").await;
        let unknown = login(&host, "nobody-here@example.test", PASSWORD).await;
        let missing = host.send_json("POST", "/api/users/login", None, &json!({"user": {"email": email_of(&username)}})).await;
        let upper = login(&host, &email_of(&username).to_uppercase(), PASSWORD).await;

        assert_eq!(wrong.status, 401);
        assert_eq!(unknown.status, 401);
        assert_eq!(wrong.json(), unknown.json(), "the answer does not tell which emails exist");
        assert_eq!(missing.status, 422);
        assert_eq!(field_errors(&missing, "password"), ["can't be blank"]);
        assert_eq!(upper.status, 200, "emails match by normalised key");
    })
    .await;
}

#[tokio::test]
async fn update_and_password_change_revokes_tokens() {
    with_and_without_reuse(app_options(), |host, reuse| async move {
        let username = name("upd");
        let old_token = registered(&host, &username).await;
        let other_user = name("taken");
        registered(&host, &other_user).await;

        let bio = update_user(&host, &old_token, json!({"bio": "I write", "image": "https://img.example/a.png"})).await;
        let cleared = update_user(&host, &old_token, json!({"image": null, "token": old_token})).await;
        let renamed = update_user(&host, &old_token, json!({"username": format!("{username}X")})).await;
        let clash = update_user(&host, &old_token, json!({"username": other_user.to_uppercase()})).await;
        let blank = update_user(&host, &old_token, json!({"email": null, "image": "ftp://x"})).await;
        let empty_password = update_user(&host, &old_token, json!({"password": "", "bio": "still me"})).await;
        let password = update_user(&host, &old_token, json!({"password": "a new long password"})).await;
        let new_token = token_of(&password);
        let with_old = current_user(&host, &old_token).await;
        let with_new = current_user(&host, &new_token).await;
        let old_login = login(&host, &email_of(&username), PASSWORD).await;
        let new_login = login(&host, &email_of(&username), "a new long password").await;

        assert_eq!(bio.status, 200, "reuse {reuse}: {}", bio.text());
        assert_eq!(bio.json()["user"]["bio"], "I write");
        assert_eq!(bio.json()["user"]["token"], old_token.as_str(), "no new token without a password change");
        assert_eq!(cleared.json()["user"]["image"], "", "null clears the image: {}", cleared.text());
        assert_eq!(cleared.json()["user"]["bio"], "I write", "absent fields stay");
        assert_eq!(renamed.json()["user"]["username"], format!("{username}X"));
        assert_eq!(clash.status, 422);
        assert_eq!(field_errors(&clash, "username"), ["has already been taken"]);
        assert_eq!(blank.status, 422);
        assert_eq!(field_errors(&blank, "email"), ["can't be blank"]);
        assert_eq!(field_errors(&blank, "image"), ["must be an http or https URL"]);
        assert_eq!(empty_password.status, 200, "an empty password field leaves the password alone");
        assert_eq!(empty_password.json()["user"]["token"], old_token.as_str());
        assert_eq!(password.status, 200, "{}", password.text());
        assert_ne!(new_token, old_token);
        assert_eq!(claims_of(&new_token)["ver"], 2);
        assert_eq!(with_old.status, 401, "the old token is revoked");
        assert!(with_old.text().contains("revoked"), "{}", with_old.text());
        assert_eq!(with_new.status, 200);
        assert_eq!(with_new.json()["user"]["username"], format!("{username}X"));
        assert_eq!(old_login.status, 401);
        assert_eq!(new_login.status, 200);
    })
    .await;
}

#[tokio::test]
async fn bad_tokens_get_401() {
    with_and_without_reuse(app_options(), |host, _reuse| async move {
        let username = name("tok");
        let token = registered(&host, &username).await;
        let subject = claims_of(&token)["sub"].as_str().unwrap().to_string();
        let key = test_signing_key();
        let now = Clock::now_since_epoch();

        let genuine = forge(&key, &subject, |_| {});
        let expired = forge(&key, &subject, |c| {
            c.issued_at = Some(now - Duration::from_hours(2));
            c.expires_at = Some(now - Duration::from_mins(5));
        });
        let other_key = forge(&Ed25519KeyPair::generate(), &subject, |_| {});
        let wrong_audience = forge(&key, &subject, |c| c.audiences = Some(Audiences::AsString("payments".into())));
        let wrong_issuer = forge(&key, &subject, |c| c.issuer = Some("someone-else".into()));
        let no_expiry = forge(&key, &subject, |c| c.expires_at = None);
        let payload = token.split('.').nth(1).unwrap();
        // {"alg":"none","typ":"JWT"}, the genuine payload, no signature.
        let alg_none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");

        assert_eq!(current_user(&host, &genuine).await.status, 200, "a token signed with the test key works");
        for (what, bad) in [
            ("expired", &expired),
            ("signed by another key", &other_key),
            ("wrong audience", &wrong_audience),
            ("wrong issuer", &wrong_issuer),
            ("no expiry", &no_expiry),
            ("alg none", &alg_none),
            ("garbage", &"not.a.token".to_string()),
        ] {
            let reply = current_user(&host, bad).await;
            assert_eq!(reply.status, 401, "{what}: {}", reply.text());
            assert_eq!(profile(&host, &username, Some(bad)).await.status, 401, "{what} on an optional-auth route");
        }
        assert!(current_user(&host, &expired).await.text().contains("expired"));
        let twice = host
            .request("GET", "/api/user", &[("authorization", &format!("Token {token}")), ("authorization", &format!("Token {token}"))], "")
            .await;
        let basic = host.request("GET", "/api/user", &[("authorization", "Basic dXNlcjpwYXNz")], "").await;
        let none = host.get("/api/user").await;
        assert_eq!((twice.status, basic.status, none.status), (401, 401, 401));
        assert_eq!(none.header("www-authenticate"), Some("Bearer"), "a 401 carries a challenge");
    })
    .await;
}

#[tokio::test]
async fn follow_and_unfollow() {
    with_and_without_reuse(app_options(), |host, reuse| async move {
        let (alice, bob) = (name("alice"), name("bob"));
        let alice_token = registered(&host, &alice).await;
        let bob_token = registered(&host, &bob).await;

        let anonymous = profile(&host, &bob, None).await;
        let followed = follow(&host, &bob, &alice_token).await;
        let again = follow(&host, &bob.to_uppercase(), &alice_token).await;
        let seen_by_alice = profile(&host, &bob, Some(&alice_token)).await;
        let seen_by_bob = profile(&host, &alice, Some(&bob_token)).await;
        let self_follow = follow(&host, &alice, &alice_token).await;
        let self_unfollow = unfollow(&host, &alice, &alice_token).await;
        let unknown = follow(&host, &name("ghost"), &alice_token).await;
        let no_token = host.send("POST", &format!("/api/profiles/{bob}/follow"), None).await;
        let mut db = admin_db().await;
        let follows_after_follow: Option<i64> = db
            .exec_first(
                "SELECT COUNT(*) FROM conduit_test_profiles.follows f
                 JOIN conduit_test_profiles.users a ON a.id = f.follower_id
                 JOIN conduit_test_profiles.users b ON b.id = f.followee_id
                 WHERE a.username = ? AND b.username = ?",
                (&alice, &bob),
            )
            .await
            .unwrap();
        let unfollowed = unfollow(&host, &bob, &alice_token).await;
        let unfollowed_again = unfollow(&host, &bob, &alice_token).await;
        let after = profile(&host, &bob, Some(&alice_token)).await;

        assert_eq!(anonymous.status, 200, "reuse {reuse}: {}", anonymous.text());
        assert_eq!(anonymous.json(), json!({"profile": {"username": bob, "bio": "", "image": "", "following": false}}));
        assert_eq!(followed.status, 200);
        assert_eq!(followed.json()["profile"]["following"], true);
        assert_eq!(again.json()["profile"]["following"], true, "following twice changes nothing");
        assert_eq!(follows_after_follow, Some(1), "one follow row");
        assert_eq!(seen_by_alice.json()["profile"]["following"], true);
        assert_eq!(seen_by_alice.header("cache-control"), Some("no-store"), "per-viewer answers are not cached");
        assert_eq!(seen_by_bob.json()["profile"]["following"], false, "following is one-way");
        assert_eq!(self_follow.status, 422);
        assert!(!field_errors(&self_follow, "username").is_empty());
        assert_eq!(self_unfollow.status, 422);
        assert_eq!(unknown.status, 404);
        assert_eq!(unknown.json(), json!({"errors": {"body": ["profile not found"]}}));
        assert_eq!(no_token.status, 401);
        assert_eq!(unfollowed.json()["profile"]["following"], false);
        assert_eq!(unfollowed_again.status, 200, "unfollowing twice changes nothing");
        assert_eq!(after.json()["profile"]["following"], false);
        assert_eq!(profile(&host, &name("nobody"), None).await.status, 404);
    })
    .await;
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    with_and_without_reuse(app_options(), |host, _reuse| async move {
        let unknown = host.get("/api/profiles/").await;
        let trailing = host.get("/api/user/").await;
        let wrong_method = host.get("/api/users").await;
        let wrong_on_user = host.request("DELETE", "/api/user", &[], "").await;
        let bad_encoding = host.get("/api/profiles/%ff").await;

        assert_eq!(unknown.status, 404);
        assert_eq!(unknown.json(), json!({"errors": {"body": ["not found"]}}));
        assert_eq!(trailing.status, 404);
        assert_eq!((wrong_method.status, wrong_method.header("allow")), (405, Some("POST")));
        assert_eq!((wrong_on_user.status, wrong_on_user.header("allow")), (405, Some("GET, PUT")));
        assert_eq!(bad_encoding.status, 400);
        let logs = host.component_logs("profiles").await;
        let logged_405 = logs.iter().find(|l| l["status"] == 405 && l["method"] == "GET").expect("the 405 is logged");
        assert_eq!(logged_405["route"], "/api/users", "a 405 is logged under its route pattern");
    })
    .await;
}

#[tokio::test]
async fn sixteen_concurrent_logins_succeed() {
    let host = Host::start(app_options());
    let username = name("many");
    registered(&host, &username).await;
    let email = email_of(&username);

    let replies = futures::future::join_all((0..16).map(|_| login(&host, &email, PASSWORD))).await;

    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200; 16]);
    let logs = host.request_logs().await;
    // The host's lines name the trigger route that matched. How the logins
    // spread over instances depends on timing: each one blocks its instance
    // while it hashes, so a burst may start up to 16 instances. Instance reuse
    // itself is tested in host.rs.
    let logins: Vec<&Value> = logs.iter().filter(|l| l["route"] == "/api/users/..." && l["status"] == 200).collect();
    assert_eq!(logins.len(), 16);
    assert!(logins.iter().all(|line| line["instance"].as_u64().is_some()), "each line names its instance");
}

#[tokio::test]
async fn login_upgrades_older_password_hashes() {
    use argon2::password_hash::{PasswordHasher, SaltString};

    let host = Host::start(app_options());
    let username = name("rehash");
    let token = registered(&host, &username).await;
    let email = email_of(&username);
    let older = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(19 * 1024, 2, 1, None).unwrap(),
    );
    let salt = SaltString::encode_b64(b"sixteen byte sal").unwrap();
    let older_hash = older.hash_password(PASSWORD.as_bytes(), &salt).unwrap().to_string();
    let mut db = admin_db().await;
    let stored_hash = "SELECT password_hash FROM conduit_test_profiles.users WHERE username = ?";
    db.exec_drop("UPDATE conduit_test_profiles.users SET password_hash = ? WHERE username = ?", (&older_hash, &username))
        .await
        .unwrap();

    let first = login(&host, &email, PASSWORD).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let upgraded: String = db.exec_first(stored_hash, (&username,)).await.unwrap().unwrap();
    assert!(upgraded.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{upgraded}");

    // The same password still works, the wrong one still fails, and the
    // token from before the upgrade still works: the password did not change.
    assert_eq!(login(&host, &email, PASSWORD).await.status, 200);
    assert_eq!(login(&host, &email, "wrong horse battery").await.status, 401);
    assert_eq!(current_user(&host, &token).await.status, 200);
    let unchanged: String = db.exec_first(stored_hash, (&username,)).await.unwrap().unwrap();
    assert_eq!(unchanged, upgraded, "a current hash is not replaced again");
}

#[tokio::test]
async fn runtime_user_rights_are_limited() {
    let password = test_env_value("SPIN_VARIABLE_PROFILES_DB_PASSWORD");
    let url = format!("mysql://conduit_test_profiles:{password}@127.0.0.1:3306/conduit_test_profiles");
    let mut conn = mysql_async::Conn::from_url(url).await.expect("the runtime user can connect");
    let code = |result: Result<(), mysql_async::Error>| match result {
        Err(mysql_async::Error::Server(error)) => Some(error.code),
        Err(other) => panic!("unexpected error {other:?}"),
        Ok(()) => None,
    };

    let own: Result<Vec<u64>, _> = conn.query("SELECT COUNT(*) FROM users").await;
    let other_schema = code(conn.query_drop("SELECT * FROM conduit_test_feed.schema_migrations").await);
    let create = code(conn.query_drop("CREATE TABLE sneaky (id INT)").await);
    let drop = code(conn.query_drop("DROP TABLE follows").await);
    let alter = code(conn.query_drop("ALTER TABLE users ADD COLUMN x INT").await);
    let grants = code(conn.query_drop("SELECT * FROM mysql.user").await);

    assert!(own.is_ok(), "{own:?}");
    assert_eq!(other_schema, Some(1142), "no SELECT on another component's schema");
    assert_eq!(create, Some(1142), "no CREATE");
    assert_eq!(drop, Some(1142), "no DROP");
    assert_eq!(alter, Some(1142), "no ALTER");
    assert_eq!(grants, Some(1142), "no access to the server's users");
    conn.disconnect().await.unwrap();
}

#[tokio::test]
async fn database_outage_gets_503() {
    let closed_port = conduit_tests::free_port();
    let host = Host::start(app_options().env("SPIN_VARIABLE_MYSQL_PORT", closed_port.to_string()));

    let login_reply = login(&host, "anyone@example.test", PASSWORD).await;
    let health = host.get("/health/profiles").await;

    assert_eq!(login_reply.status, 503, "{}", login_reply.text());
    assert_eq!(login_reply.header("retry-after"), Some("2"));
    let request_id = login_reply.header("x-request-id").unwrap();
    assert!(login_reply.text().contains(request_id), "the body carries the request id");
    assert_eq!((health.status, health.text().as_str()), (503, "down"));
    let logs = host.component_logs("profiles").await;
    let logged = logs.iter().find(|l| l["request_id"] == request_id).expect("the request is logged");
    assert_eq!(logged["error"], "database unavailable (open: Io)");
}

#[tokio::test]
async fn bad_variable_named_in_log_only() {
    let host = Host::start(app_options().env("SPIN_VARIABLE_USER_TOKEN_KEY", "not-a-key"));

    let reply = login(&host, "anyone@example.test", PASSWORD).await;

    assert_eq!(reply.status, 500);
    assert!(!reply.text().contains("token_key"), "{}", reply.text());
    let logs = host.component_logs("profiles").await;
    let error = logs.iter().find_map(|l| l["error"].as_str()).expect("an error is logged").to_string();
    assert!(error.starts_with("variable `token_key` must be 64 hex digits"), "{error}");
    assert!(!host.all_output().contains("not-a-key"), "the value itself is never logged");
}

#[tokio::test]
async fn request_logs_count_statements() {
    let host = Host::start(app_options());
    let (alice, bob) = (name("logA"), name("logB"));
    let alice_email = email_of(&alice);

    let created = register(&host, &alice, &alice_email, PASSWORD).await;
    let token = token_of(&created);
    registered(&host, &bob).await;
    let logged_in = login(&host, &alice_email, PASSWORD).await;
    current_user(&host, &token).await;
    update_user(&host, &token, json!({"bio": "new bio"})).await;
    update_user(&host, &token, json!({"username": format!("{alice}Z")})).await;
    profile(&host, &bob, None).await;
    profile(&host, &bob, Some(&token)).await;
    follow(&host, &bob, &token).await;
    follow(&host, &bob, &token).await;
    unfollow(&host, &bob, &token).await;

    let logs = host.component_logs("profiles").await;
    let counts: Vec<(String, String, u64)> = logs
        .iter()
        .filter(|l| l["event"] == "request")
        .map(|l| (l["method"].as_str().unwrap().into(), l["route"].as_str().unwrap().into(), l["db_statements"].as_u64().unwrap()))
        .collect();
    // A write costs 8 statements besides its own. The transaction adds the
    // session's lock wait timeout, START TRANSACTION, the aggregate version
    // (upsert and read), the event row, one insert for the deliveries to the
    // three consumers and COMMIT. After the pushes, one update marks them
    // delivered. Registration also records the `email` event for
    // notifications (4 statements) and the first refresh token (1), and
    // login stores its refresh token (1).
    let expected = [
        ("POST", "/api/users", 15),
        ("POST", "/api/users", 15),
        ("POST", "/api/users/login", 2),
        ("GET", "/api/user", 1),
        ("PUT", "/api/user", 10),
        ("PUT", "/api/user", 11),
        ("GET", "/api/profiles/:username", 1),
        ("GET", "/api/profiles/:username", 2),
        ("POST", "/api/profiles/:username/follow", 11),
        // Following again changes nothing and writes nothing.
        ("POST", "/api/profiles/:username/follow", 2),
        ("DELETE", "/api/profiles/:username/follow", 11),
    ];
    let expected: Vec<(String, String, u64)> =
        expected.iter().map(|(m, r, n)| (m.to_string(), r.to_string(), *n)).collect();
    assert_eq!(counts, expected);
    assert!(logs.iter().all(|l| l["request_id"].as_str().is_some_and(|id| id.len() == 24)));
    let output = host.all_output();
    for secret in [alice.as_str(), bob.as_str(), alice_email.as_str(), PASSWORD, token.as_str(), &token_of(&logged_in)] {
        assert!(!output.contains(secret), "the logs contain {secret:?}");
    }
    assert!(!output.contains("$argon2id$"), "no password hash is logged");
}

#[tokio::test]
async fn locked_row_retried_then_503() {
    let host = Host::start(app_options());
    let username = name("lock");
    let token = registered(&host, &username).await;
    let mut holder = admin_db().await;
    let id: String = holder
        .exec_first("SELECT id FROM conduit_test_profiles.users WHERE username = ?", (&username,))
        .await
        .unwrap()
        .expect("the user exists");
    // By primary key, so that only this user's row is locked.
    let lock_row = "SELECT id FROM conduit_test_profiles.users WHERE id = ? FOR UPDATE";

    // The row stays locked until the first attempt has timed out and the second
    // is waiting, so the request retries exactly once.
    holder.query_drop("START TRANSACTION").await.unwrap();
    holder.exec_drop(lock_row, (&id,)).await.unwrap();
    let release = async {
        let mut observer = admin_db().await;
        let first = next_lock_wait(&mut observer, None).await;
        next_lock_wait(&mut observer, Some(first)).await;
        holder.query_drop("COMMIT").await.unwrap();
    };
    let (retried, ()) = tokio::join!(update_user(&host, &token, json!({"bio": "after a wait"})), release);

    // Held for longer than every attempt together: 503, and nothing is written.
    holder.query_drop("START TRANSACTION").await.unwrap();
    holder.exec_drop(lock_row, (&id,)).await.unwrap();
    let busy = update_user(&host, &token, json!({"bio": "never written"})).await;
    holder.query_drop("COMMIT").await.unwrap();
    let after = current_user(&host, &token).await;

    assert_eq!(retried.status, 200, "{}", retried.text());
    assert_eq!(retried.json()["user"]["bio"], "after a wait");
    assert_eq!(busy.status, 503, "{}", busy.text());
    assert_eq!(busy.header("retry-after"), Some("2"));
    assert_eq!(after.json()["user"]["bio"], "after a wait");
    let logs = host.component_logs("profiles").await;
    let puts: Vec<&Value> = logs.iter().filter(|l| l["method"] == "PUT").collect();
    assert_eq!(puts[0]["db_retries"], 1, "{puts:?}");
    assert_eq!(puts[1]["db_retries"], 2);
    assert!(puts[1]["error"].as_str().unwrap().contains("server error 1205"), "{puts:?}");
}

/// Returns the query id of a locking read by the profiles runtime user that has
/// waited over 0.5 s, other than `after` (the transaction's previous attempt).
async fn next_lock_wait(observer: &mut mysql_async::Conn, after: Option<u64>) -> u64 {
    let query = "SELECT query_id FROM information_schema.processlist \
                 WHERE user = 'conduit_test_profiles' AND info LIKE '%FOR UPDATE' AND time_ms > 500";
    for _ in 0..750 {
        let waiting: Vec<u64> = observer.query(query).await.unwrap();
        if let Some(id) = waiting.into_iter().find(|id| Some(*id) != after) {
            return id;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("timed out after 15 s: no locking read by the profiles user waited over 0.5 s");
}

/// The token version each of the other three components holds for a user.
async fn versions_elsewhere(user_id: &str) -> Vec<Option<u64>> {
    let mut db = admin_db().await;
    let mut versions = Vec::new();
    for component in ["feed", "payments", "notifications"] {
        let statement = format!("SELECT token_version FROM conduit_test_{component}.user_tokens WHERE user_id = ?");
        versions.push(db.exec_first(statement, (user_id,)).await.unwrap());
    }
    db.disconnect().await.unwrap();
    versions
}

#[tokio::test]
async fn token_versions_reach_every_component() {
    let host = Host::start(app_options());
    let username = name("everywhere");
    let token = registered(&host, &username).await;
    let user_id = claims_of(&token)["sub"].as_str().unwrap().to_string();
    let created = versions_elsewhere(&user_id).await;

    let changed = update_user(&host, &token, json!({"password": "another long password"})).await;
    let after_change = versions_elsewhere(&user_id).await;
    let logout = host.send("POST", "/api/user/logout-all", Some(&token_of(&changed))).await;
    let after_logout = versions_elsewhere(&user_id).await;

    assert_eq!(created, [Some(1); 3]);
    assert_eq!(after_change, [Some(2); 3], "the password change reached every component before it answered");
    assert_eq!(logout.status, 204, "{}", logout.text());
    assert_eq!(after_logout, [Some(3); 3]);
    let scheduler = format!("Bearer {}", test_env_value("SPIN_VARIABLE_SCHEDULER_TOKEN"));
    for component in ["profiles", "feed", "payments", "notifications"] {
        let health = host.get(&format!("/health/{component}")).await;
        let dispatch = host
            .request("POST", &format!("/ops/{component}/dispatch"), &[("authorization", scheduler.as_str())], "")
            .await;
        let without_token = host.request("POST", &format!("/ops/{component}/dispatch"), &[], "").await;
        assert_eq!((health.status, health.text()), (200, "up".to_string()), "{component}");
        assert_eq!(dispatch.status, 200, "{component}: {}", dispatch.text());
        assert_eq!(without_token.status, 401, "{component}");
    }
}

#[tokio::test]
async fn responses_carry_security_headers() {
    let host = Host::start(app_options());

    for path in ["/api/profiles/nobody-here", "/api/articles", "/api/wallet", "/health/notifications"] {
        let reply = host.get(path).await;

        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"), "{path}");
        assert_eq!(reply.header("strict-transport-security"), Some("max-age=63072000; includeSubDomains"), "{path}");
        assert_eq!(reply.header("access-control-allow-origin"), None, "{path}: no CORS without an allowed origin");
    }
}

#[tokio::test]
async fn responses_to_authenticated_requests_are_not_stored() {
    let host = Host::start(app_options());
    let user = register_user(&host, "nostore").await;

    // Routes of every component that set no cache header of their own.
    for path in ["/api/articles", "/api/tags", "/api/profiles/nobody-here", "/api/notifications/preferences"] {
        let signed_in = host.send("GET", path, Some(&user.token)).await;
        let anonymous = host.get(path).await;

        assert_eq!(signed_in.header("cache-control"), Some("no-store"), "{path}: {}", signed_in.status);
        assert_eq!(anonymous.header("cache-control"), None, "{path}: anonymous replies may be cached");
    }
}

#[tokio::test]
async fn cors_answers_listed_origins_only() {
    let host = Host::start(app_options().env("SPIN_VARIABLE_CORS_ALLOWED_ORIGINS", "http://localhost:4200"));
    let preflight = |origin: &'static str| {
        let host = &host;
        async move {
            let headers = [
                ("origin", origin),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "authorization, content-type"),
            ];
            host.request("OPTIONS", "/api/articles", &headers, "").await
        }
    };

    let allowed = preflight("http://localhost:4200").await;
    let other = preflight("https://elsewhere.example").await;
    let read = host.request("GET", "/api/tags", &[("origin", "http://localhost:4200")], "").await;
    let read_elsewhere = host.request("GET", "/api/tags", &[("origin", "https://elsewhere.example")], "").await;

    assert_eq!(allowed.status, 204, "{}", allowed.text());
    assert_eq!(allowed.header("access-control-allow-origin"), Some("http://localhost:4200"));
    assert_eq!(allowed.header("access-control-allow-methods"), Some("GET, POST, PUT, DELETE"));
    assert_eq!(allowed.header("access-control-allow-headers"), Some("authorization, content-type, idempotency-key"));
    assert_eq!(allowed.header("vary"), Some("Origin"));
    assert_eq!(other.status, 405, "a preflight from another origin is an ordinary OPTIONS: {}", other.text());
    assert_eq!(other.header("access-control-allow-origin"), None);
    assert_eq!(read.status, 200, "{}", read.text());
    assert_eq!(read.header("access-control-allow-origin"), Some("http://localhost:4200"));
    assert_eq!(read.header("access-control-expose-headers"), Some("x-request-id, retry-after, ratelimit, ratelimit-policy"));
    assert_eq!(read_elsewhere.status, 200);
    assert_eq!(read_elsewhere.header("access-control-allow-origin"), None, "other origins get no CORS headers");
}

// ---- refresh tokens ----

async fn exchange(host: &Host, refresh_token: &str) -> Reply {
    host.send_json("POST", "/api/users/refresh", None, &json!({ "refreshToken": refresh_token })).await
}

fn refresh_token_of(reply: &Reply) -> String {
    reply.json()["user"]["refreshToken"].as_str().expect("the reply carries a refresh token").to_string()
}

#[tokio::test]
async fn refresh_reuse_ends_sessions() {
    let host = Host::start(app_options());
    let username = name("refresher");
    let registration = register(&host, &username, &email_of(&username), PASSWORD).await;
    assert_eq!(registration.status, 201, "{}", registration.text());
    let first = refresh_token_of(&registration);

    let rotated = exchange(&host, &first).await;
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    let (access, second) = (token_of(&rotated), refresh_token_of(&rotated));
    assert_ne!(second, first, "each exchange issues the next token");
    assert_eq!(rotated.header("cache-control"), Some("no-store"));
    assert_eq!(current_user(&host, &access).await.status, 200);

    // Only the secret's hash is stored.
    let mut db = admin_db().await;
    let stored: Vec<String> = db
        .exec("SELECT secret_hash FROM conduit_test_profiles.refresh_tokens WHERE id = ?", (first.split('.').next().unwrap(),))
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    let secret = first.split('.').nth(1).unwrap();
    assert!(!first.contains(&stored[0]), "the stored hash is not part of the token");
    assert!(!stored[0].contains(secret), "the secret is not stored");

    // The first token again: someone copied it. The family and every access token end.
    let reused = exchange(&host, &first).await;
    assert_eq!(reused.status, 401, "{}", reused.text());
    assert_eq!(exchange(&host, &second).await.status, 401, "the family is revoked");
    assert_eq!(current_user(&host, &access).await.status, 401, "the token version was bumped");

    // A login starts a new family.
    let again = login(&host, &email_of(&username), PASSWORD).await;
    assert_eq!(exchange(&host, &refresh_token_of(&again)).await.status, 200);
}

#[tokio::test]
async fn logout_all_and_password_change_revoke_refresh_tokens() {
    let host = Host::start(app_options());
    let username = name("revoker");
    let registration = register(&host, &username, &email_of(&username), PASSWORD).await;
    let (token, refresh_token) = (token_of(&registration), refresh_token_of(&registration));

    let changed = update_user(&host, &token, json!({"password": "another long passphrase"})).await;
    assert_eq!(changed.status, 200, "{}", changed.text());
    assert_eq!(exchange(&host, &refresh_token).await.status, 401, "a password change revokes older refresh tokens");
    let refresh_token = refresh_token_of(&changed);
    assert_eq!(exchange(&host, &refresh_token).await.status, 200, "the change issued a new family");

    let fresh = login(&host, &email_of(&username), "another long passphrase").await;
    let later = refresh_token_of(&fresh);
    assert_eq!(host.send("POST", "/api/user/logout-all", Some(&token_of(&fresh))).await.status, 204);
    assert_eq!(exchange(&host, &later).await.status, 401, "logout-all revokes refresh tokens");
}

#[tokio::test]
async fn refresh_rejects_bad_bodies_and_tokens() {
    let host = Host::start(app_options());
    let username = name("badrefresh");
    let registration = register(&host, &username, &email_of(&username), PASSWORD).await;
    let good = refresh_token_of(&registration);
    let (id, secret) = good.split_once('.').unwrap();

    for token in ["nonsense", "x.y", &format!("{id}.{}", secret.replace(&secret[..1], if &secret[..1] == "A" { "B" } else { "A" })), &format!("{id}.")] {
        let reply = exchange(&host, token).await;
        assert_eq!(reply.status, 401, "{token}: {}", reply.text());
        assert!(reply.json()["errors"]["body"].is_array());
    }
    for body in [json!({}), json!({"refreshToken": 7}), json!({"refreshToken": ""}), json!({"refreshToken": good, "user": {}})] {
        let reply = host.send_json("POST", "/api/users/refresh", None, &body).await;
        assert_eq!(reply.status, 422, "{body}: {}", reply.text());
    }
    let not_json = host.request("POST", "/api/users/refresh", &[("content-type", "text/plain")], "x").await;
    assert_eq!(not_json.status, 415);
    assert_eq!(exchange(&host, &good).await.status, 200, "the failed attempts left the token usable");
}

#[tokio::test]
async fn deeply_nested_bodies_are_rejected_before_parsing() {
    let host = Host::start(app_options());
    let nested = format!(r#"{{"user": {{"bio": {}"x"{}}}}}"#, "[".repeat(20), "]".repeat(20));
    let token = registered(&host, &name("nested")).await;

    for (method, path, token) in [("POST", "/api/users", None), ("PUT", "/api/user", Some(token.as_str()))] {
        let mut headers = vec![("content-type", "application/json")];
        let auth = token.map(|t| format!("Token {t}"));
        if let Some(auth) = &auth {
            headers.push(("authorization", auth.as_str()));
        }
        let reply = host.request(method, path, &headers, nested.clone()).await;
        assert_eq!(reply.status, 422, "{method} {path}: {}", reply.text());
        assert!(reply.json()["errors"]["body"][0].as_str().is_some_and(|m| m.contains("deeper than 16")), "{}", reply.text());
    }
}
