//! API2:2023 Broken Authentication. Every component rejects forged, tampered,
//! unsigned, expired, revoked and service tokens and malformed or repeated
//! `Authorization` headers with 401 and its own message. Failed logins do not
//! reveal which emails exist, and every sign-in route shares one budget per address.
//! Also covered in tests/profiles.rs (`bad_tokens_get_401`, `login_rejects_unknown_and_wrong_alike`), tests/events.rs (`logout_all_refuses_old_tokens_in_every_component`) and tests/rate_limits.rs (`sign_in_limit_resets_with_window`).

use crate::common::wait_for_room_in_window;
use conduit_tests::{Host, Reply, TEST_PASSWORD, app_options, email_of, register_user, test_env_value, unique_name};
use jwt_simple::prelude::*;
use serde_json::{Value, json};

const INVALID: &str = "the token is invalid";
const EXPIRED: &str = "the token has expired";
const REVOKED: &str = "the token has been revoked; log in again";
const MALFORMED: &str = "the Authorization header must be `Token <jwt>` or `Bearer <jwt>`";
const REPEATED: &str = "send one Authorization header";

/// One route of each component that needs a user token, read with `GET`.
const PROTECTED_ROUTES: [&str; 4] = [
    "/api/user",
    "/api/articles/feed",
    "/api/wallet",
    "/api/notifications/unread-count",
];

/// The claims the application adds to the registered ones (`shared::auth::UserClaims`).
#[derive(Serialize, Deserialize)]
struct UserClaims {
    ver: u64,
    roles: Vec<String>,
}

/// The claims of a service token (`shared::service`).
#[derive(Serialize, Deserialize)]
struct ServiceClaims {
    roles: Vec<String>,
}

/// Builds the Ed25519 key pair whose seed is the hex variable `name` of `tests/test.env`.
fn key_from_test_env(name: &str) -> Ed25519KeyPair {
    let seed_hex = test_env_value(name);
    let seed: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&seed_hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let pair = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::from_slice(&seed).unwrap());
    Ed25519KeyPair::from_bytes(&pair[..]).unwrap()
}

/// Signs a user token for `subject` at token version 1, as profiles does,
/// after `adjust` changed its claims.
fn sign_user_token(key: &Ed25519KeyPair, subject: &str, adjust: impl FnOnce(&mut JWTClaims<UserClaims>)) -> String {
    let custom = UserClaims {
        ver: 1,
        roles: vec!["user".into()],
    };
    let mut claims = Claims::with_custom_claims(custom, Duration::from_hours(1))
        .with_issuer("conduit")
        .with_audience("conduit-api")
        .with_subject(subject);
    adjust(&mut claims);
    key.sign(claims).unwrap()
}

/// Signs a valid service token from profiles to `target`, with the service key.
fn service_token(target: &str) -> String {
    let claims = Claims::with_custom_claims(
        ServiceClaims {
            roles: vec!["service".into()],
        },
        Duration::from_secs(120),
    )
    .with_issuer("conduit-services")
    .with_audience(target)
    .with_subject("profiles");
    key_from_test_env("SPIN_VARIABLE_SERVICE_TOKEN_KEY").sign(claims).unwrap()
}

/// Replaces the payload of a signed token and keeps its header and signature.
fn with_payload(token: &str, change: impl FnOnce(&mut Value)) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload: Value = serde_json::from_slice(&Base64UrlSafeNoPadding::decode_to_vec(parts[1], None).unwrap()).unwrap();
    change(&mut payload);
    let encoded = Base64UrlSafeNoPadding::encode_to_string(payload.to_string()).unwrap();
    format!("{}.{encoded}.{}", parts[0], parts[2])
}

/// Returns the messages of the error envelope's `body`.
fn messages(reply: &Reply) -> Vec<String> {
    serde_json::from_value(reply.json()["errors"]["body"].clone()).unwrap_or_default()
}

#[tokio::test]
async fn bad_tokens_rejected_by_every_component() {
    let host = Host::start(app_options());
    let ann = register_user(&host, "authann").await;
    let bob = register_user(&host, "authbob").await;
    let leaver = register_user(&host, "authleaver").await;
    let logout = host.send("POST", "/api/user/logout-all", Some(&leaver.token)).await;
    assert_eq!(logout.status, 204, "logout-all: {}", logout.text());

    let user_key = key_from_test_env("SPIN_VARIABLE_USER_TOKEN_KEY");
    let now = Clock::now_since_epoch();
    let expired = sign_user_token(&user_key, &ann.id, |claims| {
        claims.issued_at = Some(now - Duration::from_hours(2));
        claims.invalid_before = Some(now - Duration::from_hours(2));
        claims.expires_at = Some(now - Duration::from_mins(5));
    });
    let other_key = sign_user_token(&Ed25519KeyPair::generate(), &ann.id, |_| {});
    let other_subject = with_payload(&ann.token, |payload| payload["sub"] = json!(bob.id));
    let admin_role = with_payload(&ann.token, |payload| payload["roles"] = json!(["user", "admin"]));
    let payload = ann.token.split('.').nth(1).unwrap();
    // The header {"alg":"none","typ":"JWT"}, Ann's payload, no signature.
    let alg_none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    let genuine = format!("Token {}", ann.token);
    let bearer = format!("Bearer {}", ann.token);

    for route in PROTECTED_ROUTES {
        let component = route.split('/').nth(2).unwrap();
        let service = format!("Bearer {}", service_token(component));
        let cases: Vec<(&str, Vec<String>, &str)> = vec![
            ("another signing key", vec![format!("Token {other_key}")], INVALID),
            ("a changed subject", vec![format!("Token {other_subject}")], INVALID),
            ("an added admin role", vec![format!("Token {admin_role}")], INVALID),
            ("alg none", vec![format!("Token {alg_none}")], INVALID),
            ("a service token", vec![service], INVALID),
            ("an expired token", vec![format!("Token {expired}")], EXPIRED),
            (
                "a token from before logout-all",
                vec![format!("Token {}", leaver.token)],
                REVOKED,
            ),
            ("a scheme without a token", vec!["Token".to_string()], MALFORMED),
            ("the Basic scheme", vec!["Basic dXNlcjpwYXNz".to_string()], MALFORMED),
            ("two Authorization headers", vec![genuine.clone(), genuine.clone()], REPEATED),
        ];

        for accepted in [&genuine, &bearer] {
            let reply = host.request("GET", route, &[("authorization", accepted.as_str())], "").await;
            assert_eq!(reply.status, 200, "{route} with Ann's own token: {}", reply.text());
        }
        for (what, values, message) in cases {
            let headers: Vec<(&str, &str)> = values.iter().map(|value| ("authorization", value.as_str())).collect();
            let reply = host.request("GET", route, &headers, "").await;

            assert_eq!(reply.status, 401, "{route} with {what}: {}", reply.text());
            assert_eq!(messages(&reply), [message], "{route} with {what}");
            assert_eq!(
                reply.header("www-authenticate"),
                Some("Bearer"),
                "{route} with {what}: a 401 carries a challenge"
            );
        }
    }
}

#[tokio::test]
async fn login_failures_look_alike() {
    let host = Host::start(app_options());
    let ann = register_user(&host, "lookalike").await;
    let email = email_of(&ann.username);
    let too_long = "p".repeat(129);
    let unknown = format!("{}@example.test", unique_name("nobody"));
    let cases = [
        ("a wrong password", email.clone(), "not the password".to_string()),
        (
            "a wrong password, email upper-case",
            email.to_uppercase(),
            "not the password".to_string(),
        ),
        ("an unknown email", unknown.clone(), TEST_PASSWORD.to_string()),
        ("a 129-character password", email.clone(), too_long.clone()),
        ("an unknown email and a 129-character password", unknown, too_long),
    ];

    for (what, email, password) in cases {
        let body = json!({"user": {"email": email, "password": password}});
        let reply = host.send_json("POST", "/api/users/login", None, &body).await;

        assert_eq!(reply.status, 401, "{what}: {}", reply.text());
        assert_eq!(
            reply.json(),
            json!({"errors": {"body": ["email or password is invalid"]}}),
            "{what}"
        );
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"), "{what}");
    }
    let right = json!({"user": {"email": email, "password": TEST_PASSWORD}});
    assert_eq!(
        host.send_json("POST", "/api/users/login", None, &right).await.status,
        200,
        "the account still logs in"
    );
}

#[tokio::test]
async fn auth_budget_spans_sign_in_routes() {
    const LIMIT: u64 = 5;
    // An hour, so the requests share one window and wait only in the last two minutes of an hour.
    const WINDOW: u64 = 3600;
    let host = Host::start(app_options().env("SPIN_VARIABLE_RATE_LIMIT_AUTH", format!("{LIMIT}/{WINDOW}")));
    let username = unique_name("budget");
    let email = email_of(&username);
    let login = |password: &str| json!({"user": {"email": email, "password": password}});
    wait_for_room_in_window(WINDOW, 120).await;

    // Five requests to five sign-in routes spend one budget of five.
    let registered = host
        .send_json(
            "POST",
            "/api/users",
            None,
            &json!({"user": {"username": username, "email": email, "password": TEST_PASSWORD}}),
        )
        .await;
    assert_eq!(registered.status, 201, "registration: {}", registered.text());
    let token = registered.json()["user"]["token"].as_str().unwrap().to_string();
    let refresh_token = registered.json()["user"]["refreshToken"].as_str().unwrap().to_string();
    let admitted = [
        ("POST /api/users", registered, 201),
        (
            "a failed login",
            host.send_json("POST", "/api/users/login", None, &login("not the password"))
                .await,
            401,
        ),
        (
            "a refresh",
            host.send_json("POST", "/api/users/refresh", None, &json!({"refreshToken": refresh_token}))
                .await,
            200,
        ),
        (
            "a verification link",
            host.send("POST", "/api/user/email-verification", Some(&token)).await,
            202,
        ),
        (
            "an unknown verification token",
            host.send_json("POST", "/api/users/verify-email", None, &json!({"token": "A".repeat(43)}))
                .await,
            422,
        ),
    ];
    for (spent, (what, reply, status)) in admitted.iter().enumerate() {
        assert_eq!(reply.status, *status, "{what}: {}", reply.text());
        let remaining = format!("\"auth\";r={};", LIMIT - 1 - spent as u64);
        assert!(
            reply.header("ratelimit").is_some_and(|value| value.contains(&remaining)),
            "{what}: {:?}",
            reply.header("ratelimit")
        );
    }

    let other_name = unique_name("budget");
    let rejected = [
        (
            "a correct login",
            host.send_json("POST", "/api/users/login", None, &login(TEST_PASSWORD)).await,
        ),
        (
            "a registration",
            host.send_json(
                "POST",
                "/api/users",
                None,
                &json!({"user": {"username": other_name, "email": email_of(&other_name), "password": TEST_PASSWORD}}),
            )
            .await,
        ),
        (
            "a verification link",
            host.send("POST", "/api/user/email-verification", Some(&token)).await,
        ),
    ];
    for (what, reply) in &rejected {
        assert_eq!(reply.status, 429, "{what}: {}", reply.text());
        assert_eq!(
            messages(reply),
            ["too many requests; retry after the time in Retry-After"],
            "{what}"
        );
        let wait: u64 = reply
            .header("retry-after")
            .and_then(|value| value.parse().ok())
            .expect("Retry-After in seconds");
        assert!((1..=WINDOW).contains(&wait), "{what}: Retry-After {wait}");
        let policy = format!("\"auth\";q={LIMIT};w={WINDOW}");
        assert!(
            reply.header("ratelimit-policy").is_some_and(|value| value.contains(&policy)),
            "{what}: {:?}",
            reply.headers
        );
        assert!(
            reply.header("ratelimit").is_some_and(|value| value.contains("\"auth\";r=0;")),
            "{what}: {:?}",
            reply.headers
        );
    }
    let profile = host.get(&format!("/api/profiles/{other_name}")).await;
    assert_eq!(
        profile.status,
        404,
        "the rejected registration created no user: {}",
        profile.text()
    );
}
