//! Users, dispatch and admin grants as the black-box tests need them: each
//! test registers users of its own through profiles, so tests never share one.

use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{Value, json};

use crate::{Host, Reply, test_env_value, workspace_root};

/// The password of every user the tests register.
pub const TEST_PASSWORD: &str = "correct horse battery";

/// Makes a username no other test (or earlier run) uses, starting with `prefix`.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}{:x}{}", nanos % 0xff_ffff, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A registered user: id, username and the token registration returned.
pub struct TestUser {
    pub id: String,
    pub username: String,
    pub token: String,
}

pub fn email_of(username: &str) -> String {
    format!("{}@example.test", username.to_lowercase())
}

/// Registers a user named `<prefix><unique suffix>` with [`TEST_PASSWORD`].
pub async fn register_user(host: &Host, prefix: &str) -> TestUser {
    let username = unique_name(prefix);
    let body = json!({"user": {"username": username, "email": email_of(&username), "password": TEST_PASSWORD}});
    let reply = host.send_json("POST", "/api/users", None, &body).await;
    assert_eq!(reply.status, 201, "registration failed: {}", reply.text());
    let token = reply.json()["user"]["token"].as_str().expect("the reply carries a token").to_string();
    TestUser { id: subject_of(&token), username, token }
}

/// Logs the user in again and returns the new token.
pub async fn log_in(host: &Host, user: &TestUser) -> String {
    let body = json!({"user": {"email": email_of(&user.username), "password": TEST_PASSWORD}});
    let reply = host.send_json("POST", "/api/users/login", None, &body).await;
    assert_eq!(reply.status, 200, "login failed: {}", reply.text());
    reply.json()["user"]["token"].as_str().expect("the reply carries a token").to_string()
}

/// Reads the `sub` claim (the user id) of a token without verifying it.
pub fn subject_of(token: &str) -> String {
    use jwt_simple::prelude::*;
    let payload = token.split('.').nth(1).expect("a token has three parts");
    let claims: Value = serde_json::from_slice(&Base64UrlSafeNoPadding::decode_to_vec(payload, None).unwrap()).unwrap();
    claims["sub"].as_str().expect("the token has a subject").to_string()
}

/// Calls `POST /ops/<component>/dispatch` with the scheduler token.
pub async fn dispatch(host: &Host, component: &str) -> Reply {
    let authorization = format!("Bearer {}", test_env_value("SPIN_VARIABLE_SCHEDULER_TOKEN"));
    host.request("POST", &format!("/ops/{component}/dispatch"), &[("authorization", &authorization)], "").await
}

/// Gives the user the admin role with `conduit-admin grant-admin`, which
/// reads the event consumers from `manifest` (relative to the workspace).
/// The user must log in again for a token that carries the role.
pub fn grant_admin(user_id: &str, manifest: &str) -> std::process::Output {
    let output = std::process::Command::new(workspace_root().join("target/release/conduit-admin"))
        .current_dir(workspace_root())
        .env("SPIN_VARIABLE_DATABASE_PREFIX", test_env_value("SPIN_VARIABLE_DATABASE_PREFIX"))
        .args(["grant-admin", "--user-id", user_id, "--manifest", manifest])
        .output()
        .expect("target/release/conduit-admin runs");
    assert!(output.status.success(), "grant-admin failed: {}", String::from_utf8_lossy(&output.stderr));
    output
}
