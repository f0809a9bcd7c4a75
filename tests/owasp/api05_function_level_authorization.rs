//! API5:2023 Broken Function Level Authorization: admin routes reject ordinary
//! users (403) and anonymous callers (401) and accept an admin's new token.
//! `/internal/` paths have no public route and need their component's service
//! token, `/ops/` dispatch needs the scheduler token, and no token works where
//! another kind is required. A method a route does not define gets 405 with `Allow`.
//! Also covered by: tests/payments.rs `ledger_check_needs_admin` and `refund_needs_admin_token`, tests/events.rs `internal_routes_need_a_service_token` and `dispatch_needs_the_scheduler_token`, tests/feed.rs `admin_deletes_any_article_and_comment`.

use crate::common::{App, eur_balance, field_errors, post_with_new_key, query};
use std::path::PathBuf;

use conduit_tests::{
    Host, Reply, app_options, dispatch, grant_admin, log_in, register_user, scratch_dir, test_env_value, workspace_root,
};
use jwt_simple::prelude::*;
use serde_json::{Value, json};

const ADMIN_ROLE_NEEDED: &str = "this route needs the `admin` role";
const NEEDS_AUTHORIZATION: &str = "this route needs an Authorization header";
const INVALID_USER_TOKEN: &str = "the token is invalid";

// ---- requests ----

/// Sends a request with `Authorization: Bearer <token>` when a token is given, and a JSON body.
async fn send_bearer(host: &Host, method: &str, path: &str, token: Option<&str>, body: &Value) -> Reply {
    let authorization = token.map(|token| format!("Bearer {token}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(value) = &authorization {
        headers.push(("authorization", value.as_str()));
    }
    host.request(method, path, &headers, body.to_string()).await
}

// ---- tokens ----

/// The custom claims of a service token, as `shared::service` signs them.
#[derive(Serialize, Deserialize)]
struct ServiceClaims {
    roles: Vec<String>,
}

/// Builds the Ed25519 key pair of a 64-hex-digit seed in `tests/test.env`.
fn key_pair(variable: &str) -> Ed25519KeyPair {
    let seed_hex = test_env_value(variable);
    let seed: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&seed_hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let pair = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::from_slice(&seed).unwrap());
    Ed25519KeyPair::from_bytes(&pair[..]).unwrap()
}

/// Signs a token with the claims of a service token from `caller` to
/// `audience`, valid for 120 s, with `key`.
fn service_token_with(key: &Ed25519KeyPair, caller: &str, audience: &str) -> String {
    let claims = Claims::with_custom_claims(
        ServiceClaims {
            roles: vec!["service".into()],
        },
        Duration::from_secs(120),
    )
    .with_issuer("conduit-services")
    .with_audience(audience)
    .with_subject(caller);
    key.sign(claims).unwrap()
}

/// Signs a valid service token from `caller` to `audience` with the test suite's service key.
fn service_token(caller: &str, audience: &str) -> String {
    service_token_with(&key_pair("SPIN_VARIABLE_SERVICE_TOKEN_KEY"), caller, audience)
}

// ---- reading replies and rows ----

/// Asserts the status and the envelope's only `body` message.
fn assert_error(reply: &Reply, status: u16, message: &str, context: &str) {
    assert_eq!(reply.status, status, "{context}: {}", reply.text());
    assert_eq!(field_errors(reply, "body"), [message], "{context}: {}", reply.text());
}

/// Returns the roles granted to a user on top of `user`, sorted.
async fn granted_roles(user_id: &str) -> Vec<String> {
    query(
        "SELECT role FROM conduit_test_profiles.user_roles WHERE user_id = ? ORDER BY role",
        vec![user_id.to_string()],
    )
    .await
}

// ---- admin routes ----

#[tokio::test]
async fn admin_routes_reject_ordinary_users() {
    let app = App::start();
    let host = &app.host;
    let ann = register_user(host, "ann").await;
    let mut bob = register_user(host, "bob").await;
    let doomed = register_user(host, "del").await;
    let admin = register_user(host, "adm").await;
    app.fund(&ann, 1000).await;
    let tip = json!({"tip": {"to_username": bob.username, "amount_minor": 200, "currency": "EUR"}});
    let tip_reply = post_with_new_key(host, "/api/tips", &ann, &tip).await;
    assert_eq!(tip_reply.status, 201, "{}", tip_reply.text());
    let tip_id = tip_reply.json()["tip"]["id"].as_str().expect("the tip has an id").to_string();
    let roles_path = format!("/api/admin/users/{}/roles", bob.username);
    let delete_path = format!("/api/admin/users/{}", doomed.username);
    let refund_path = format!("/api/payments/{tip_id}/refund");
    let grant_body = json!({"roles": ["admin"]});
    let refund_body = json!({"refund": {"amount_minor": 50}});
    let routes = [
        ("PUT", roles_path.as_str(), &grant_body),
        ("DELETE", delete_path.as_str(), &json!({})),
        ("GET", "/api/admin/ledger/check", &json!({})),
        ("POST", refund_path.as_str(), &refund_body),
    ];

    for (method, path, body) in routes {
        let anonymous = host.send_json(method, path, None, body).await;
        assert_error(
            &anonymous,
            401,
            NEEDS_AUTHORIZATION,
            &format!("{method} {path} without a token"),
        );
        for user in [&ann, &bob, &admin] {
            let reply = host.send_json(method, path, Some(&user.token), body).await;
            assert_error(
                &reply,
                403,
                ADMIN_ROLE_NEEDED,
                &format!("{method} {path} as {}", user.username),
            );
        }
    }
    assert!(granted_roles(&bob.id).await.is_empty(), "bob got no role");
    let doomed_profile = host.send("GET", &format!("/api/profiles/{}", doomed.username), None).await;
    assert_eq!(
        doomed_profile.status,
        200,
        "the user was not deleted: {}",
        doomed_profile.text()
    );
    assert_eq!(eur_balance(host, &ann).await, 800, "nothing was refunded to the sender");
    assert_eq!(eur_balance(host, &bob).await, 200, "nothing was taken from the recipient");

    grant_admin(&admin.id, "spin.toml");
    let stale = host.send_json("PUT", &roles_path, Some(&admin.token), &grant_body).await;
    assert_error(
        &stale,
        401,
        "the token has been revoked; log in again",
        "the token from before the grant",
    );
    let admin_token = log_in(host, &admin).await;

    let granted = host.send_json("PUT", &roles_path, Some(&admin_token), &grant_body).await;
    assert_eq!(granted.status, 200, "{}", granted.text());
    assert_eq!(
        granted.json(),
        json!({"user": {"username": bob.username, "roles": ["user", "admin"]}})
    );
    assert_eq!(granted_roles(&bob.id).await, ["admin"], "the grant is stored");
    let actors: Vec<(String, String)> = query(
        "SELECT actor, action FROM conduit_test_profiles.role_audit WHERE user_id = ?",
        vec![bob.id.clone()],
    )
    .await;
    assert_eq!(
        actors,
        [(admin.id.clone(), "grant".to_string())],
        "the grant is audited with its actor"
    );
    let revoked = host
        .send_json("PUT", &roles_path, Some(&admin_token), &json!({"roles": ["user"]}))
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    assert_eq!(revoked.json()["user"]["roles"], json!(["user"]), "{}", revoked.text());
    assert!(granted_roles(&bob.id).await.is_empty(), "the role is removed again");
    let bobs_old_session = host.send("GET", "/api/user", Some(&bob.token)).await;
    assert_error(
        &bobs_old_session,
        401,
        "the token has been revoked; log in again",
        "bob's token from before the role change",
    );
    bob.token = log_in(host, &bob).await;

    let ledger = host.send("GET", "/api/admin/ledger/check", Some(&admin_token)).await;
    assert_eq!(ledger.status, 200, "{}", ledger.text());
    assert!(
        ledger.json()["ledger"]["balanced"].is_boolean(),
        "the report has `balanced`: {}",
        ledger.text()
    );
    let refund = host.send_json("POST", &refund_path, Some(&admin_token), &refund_body).await;
    assert_eq!(refund.status, 201, "{}", refund.text());
    assert_eq!(
        eur_balance(host, &ann).await,
        850,
        "the admin's refund returned 50 to the sender"
    );
    assert_eq!(
        eur_balance(host, &bob).await,
        150,
        "the admin's refund took 50 from the recipient"
    );
    let deleted = host.send("DELETE", &delete_path, Some(&admin_token)).await;
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    let deleted_profile = host.send("GET", &format!("/api/profiles/{}", doomed.username), None).await;
    assert_eq!(deleted_profile.status, 404, "the deleted user's profile: {}", deleted_profile.text());
}

// ---- internal and ops routes ----

/// The `/internal/` route of each component, with its method.
const INTERNAL_ROUTES: [(&str, &str, &str); 4] = [
    ("profiles", "GET", "/internal/profiles/resync?aggregate=user&limit=1"),
    ("feed", "POST", "/internal/feed/events"),
    ("payments", "POST", "/internal/payments/events"),
    ("notifications", "POST", "/internal/notifications/events"),
];

/// Writes a copy of `spin.toml` that also routes each component's
/// `/internal/` path publicly, so a test can call the guard of a real
/// component directly. Only service chaining reaches these paths in the real
/// application. Returns the manifest's path.
fn manifest_with_public_internal_routes() -> PathBuf {
    let root = workspace_root();
    let original = std::fs::read_to_string(root.join("spin.toml")).expect("spin.toml is readable");
    // The copy lives elsewhere, so the component paths become absolute.
    let mut text = original.replace("source = \"target/", &format!("source = \"{}/target/", root.display()));
    for (component, _, path) in INTERNAL_ROUTES {
        let route = path.split('?').next().unwrap_or(path);
        text.push_str(&format!(
            "\n[[trigger.http]]\nroute = \"{route}\"\ncomponent = \"{component}\"\n"
        ));
    }
    let manifest = scratch_dir("owasp-internal-routes").join("spin.toml");
    std::fs::write(&manifest, text).expect("the scratch directory is writable");
    manifest
}

/// Builds a user deletion event as profiles would publish it, for `user_id`.
fn forged_user_deletion(user_id: &str) -> Value {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    json!({
        "id": format!("{:08x}-0000-4000-8000-{:012x}", nanos % 0xffff_ffff, nanos % 0xffff_ffff_ffff),
        "producer": "profiles",
        "type": "user.deleted",
        "aggregate_type": "user",
        "aggregate_id": user_id,
        "aggregate_version": 99,
        "occurred_at": "2026-01-01T00:00:00Z",
        "payload": {"id": user_id},
    })
}

#[tokio::test]
async fn internal_routes_need_service_token() {
    let mut options = app_options();
    options.manifest = manifest_with_public_internal_routes();
    let host = Host::start(options);
    let ann = register_user(&host, "ann").await;
    let event = forged_user_deletion(&ann.id);
    let user_key_service_claims =
        |audience: &str| service_token_with(&key_pair("SPIN_VARIABLE_USER_TOKEN_KEY"), "profiles", audience);
    let invalid = "the service token is invalid";

    for (component, method, path) in INTERNAL_ROUTES {
        let other = if component == "feed" { "payments" } else { "feed" };
        let cases = [
            ("no token", None, 401, "internal routes need a service token"),
            ("a user token", Some(ann.token.clone()), 401, invalid),
            (
                "service claims signed with the user key",
                Some(user_key_service_claims(component)),
                401,
                invalid,
            ),
            (
                "a service token for another component",
                Some(service_token("profiles", other)),
                403,
                "this service token is for another component",
            ),
        ];
        for (what, token, status, message) in cases {
            let reply = send_bearer(&host, method, path, token.as_deref(), &event).await;
            assert_error(&reply, status, message, &format!("{method} {path} with {what}"));
        }

        // A valid token passes the guard: resync serves a page, and an event
        // from a component other than its producer is rejected after it.
        let caller = if component == "profiles" { "feed" } else { other };
        let reply = send_bearer(&host, method, path, Some(&service_token(caller, component)), &event).await;
        if component == "profiles" {
            assert_eq!(reply.status, 200, "{method} {path} with a service token: {}", reply.text());
            assert!(reply.json()["events"].is_array(), "a resync page: {}", reply.text());
        } else {
            let context = format!("{method} {path} with {caller}'s token and a profiles event");
            assert_error(&reply, 403, "a component may only deliver its own events", &context);
        }
    }

    // The rejected deletion was applied nowhere: ann's token still works in every component.
    let checks = [
        ("feed", "/api/articles/feed"),
        ("payments", "/api/wallet"),
        ("notifications", "/api/notifications"),
        ("profiles", "/api/user"),
    ];
    for (component, path) in checks {
        let reply = host.send("GET", path, Some(&ann.token)).await;
        assert_eq!(reply.status, 200, "{component} still accepts ann's token: {}", reply.text());
    }

    // Service and scheduler tokens are rejected where a user token is required.
    let scheduler = test_env_value("SPIN_VARIABLE_SCHEDULER_TOKEN");
    let user_routes = [
        ("GET", "/api/user"),
        ("GET", "/api/articles/feed"),
        ("GET", "/api/wallet"),
        ("GET", "/api/notifications"),
    ];
    for (method, path) in user_routes {
        for (what, token) in [
            ("a service token", service_token("profiles", "feed")),
            ("the scheduler token", scheduler.clone()),
        ] {
            let reply = send_bearer(&host, method, path, Some(&token), &json!({})).await;
            assert_error(&reply, 401, INVALID_USER_TOKEN, &format!("{method} {path} with {what}"));
        }
    }
}

#[tokio::test]
async fn internal_paths_have_no_public_route() {
    let host = Host::start(app_options());
    let ann = register_user(&host, "ann").await;
    let bob = register_user(&host, "bob").await;
    let service = service_token("feed", "profiles");

    for (component, method, path) in INTERNAL_ROUTES {
        for (what, token) in [
            ("no token", None),
            ("a user token", Some(ann.token.as_str())),
            ("a service token", Some(service.as_str())),
        ] {
            let reply = send_bearer(&host, method, path, token, &json!({})).await;
            assert_eq!(
                reply.status,
                404,
                "{component}: {method} {path} with {what}: {}",
                reply.text()
            );
            assert!(reply.body.is_empty(), "the platform's empty 404: {}", reply.text());
        }
    }

    // Components route on the request's path, never on the Spin headers a client can also send.
    let internal_headers = [
        ("spin-path-info", "/internal/profiles/resync"),
        (
            "spin-full-url",
            "http://127.0.0.1/internal/profiles/resync?aggregate=user&limit=1",
        ),
    ];
    let profile = host
        .request("GET", &format!("/api/profiles/{}", ann.username), &internal_headers, "")
        .await;
    assert_eq!(profile.status, 200, "{}", profile.text());
    assert_eq!(
        profile.json()["profile"]["username"],
        ann.username.as_str(),
        "the public route served it: {}",
        profile.text()
    );
    let authorization = format!("Token {}", ann.token);
    let admin_path = format!("/api/admin/users/{}", bob.username);
    let admin_headers = [
        ("authorization", authorization.as_str()),
        ("spin-path-info", admin_path.as_str()),
    ];
    let delete = host.request("DELETE", "/api/user", &admin_headers, "").await;
    assert_error(
        &delete,
        405,
        "method not allowed",
        "DELETE /api/user with an admin path in spin-path-info",
    );
    let bobs_profile = host.send("GET", &format!("/api/profiles/{}", bob.username), None).await;
    assert_eq!(bobs_profile.status, 200, "bob was not deleted: {}", bobs_profile.text());
}

#[tokio::test]
async fn dispatch_needs_scheduler_token() {
    let host = Host::start(app_options());
    let ann = register_user(&host, "ann").await;
    let admin = register_user(&host, "adm").await;
    grant_admin(&admin.id, "spin.toml");
    let admin_token = log_in(&host, &admin).await;
    let scheduler = test_env_value("SPIN_VARIABLE_SCHEDULER_TOKEN");
    let invalid = "the scheduler token is invalid";

    for component in ["profiles", "feed", "payments", "notifications"] {
        let path = format!("/ops/{component}/dispatch");
        let cases = [
            ("no token", None, "dispatch needs the scheduler token"),
            ("a user token", Some(ann.token.clone()), invalid),
            ("an admin's user token", Some(admin_token.clone()), invalid),
            ("a service token", Some(service_token("profiles", component)), invalid),
            (
                "the scheduler token with a character changed",
                Some(format!("{}x", &scheduler[..scheduler.len() - 1])),
                invalid,
            ),
        ];
        for (what, token, message) in cases {
            let reply = send_bearer(&host, "POST", &path, token.as_deref(), &json!({})).await;
            assert_error(&reply, 401, message, &format!("POST {path} with {what}"));
        }
    }
    // Profiles' dispatch only delivers pending events, so it is safe to run
    // against the shared test schemas. The others send emails and ask the
    // payment provider about every pending top-up, so they are not run here.
    let accepted = dispatch(&host, "profiles").await;
    assert_eq!(accepted.status, 200, "{}", accepted.text());
    assert!(
        accepted.json()["outbox"].is_object(),
        "the dispatch report: {}",
        accepted.text()
    );

    // The scheduler token is rejected on admin routes.
    for (method, path) in [
        ("GET", "/api/admin/ledger/check"),
        ("DELETE", &format!("/api/admin/users/{}", ann.username)),
    ] {
        let reply = send_bearer(&host, method, path, Some(&scheduler), &json!({})).await;
        assert_error(
            &reply,
            401,
            INVALID_USER_TOKEN,
            &format!("{method} {path} with the scheduler token"),
        );
    }
    let profile = host.send("GET", &format!("/api/profiles/{}", ann.username), None).await;
    assert_eq!(profile.status, 200, "ann was not deleted: {}", profile.text());
}

// ---- methods ----

#[tokio::test]
async fn undefined_methods_get_405() {
    let host = Host::start(app_options());
    let ann = register_user(&host, "ann").await;
    let bob = register_user(&host, "bob").await;
    let payment = "00000000-0000-4000-8000-000000000000";
    let roles = format!("/api/admin/users/{}/roles", bob.username);
    let user = format!("/api/admin/users/{}", bob.username);
    let payment_path = format!("/api/payments/{payment}");
    let refund_path = format!("{payment_path}/refund");
    let cases: [(&str, &str, &str); 22] = [
        ("GET", "/api/users", "POST"),
        ("DELETE", "/api/user", "GET, PUT"),
        ("GET", &roles, "PUT"),
        ("POST", &roles, "PUT"),
        ("GET", &user, "DELETE"),
        ("PUT", &user, "DELETE"),
        ("DELETE", "/api/profiles/nobody", "GET"),
        ("POST", "/api/admin/ledger/check", "GET"),
        ("DELETE", &payment_path, "GET"),
        ("GET", &refund_path, "POST"),
        ("PUT", "/api/wallet", "GET"),
        ("GET", "/api/wallet/top-ups", "POST"),
        ("GET", "/api/tips", "POST"),
        ("GET", "/api/payments/webhooks/provider", "POST"),
        ("PATCH", "/api/articles/some-slug", "GET, PUT, DELETE"),
        ("PUT", "/api/articles/some-slug/comments/1", "DELETE"),
        ("GET", "/api/notifications/read-all", "POST"),
        ("DELETE", "/api/notifications/preferences", "GET, PUT"),
        ("GET", "/ops/profiles/dispatch", "POST"),
        ("GET", "/ops/feed/dispatch", "POST"),
        ("PUT", "/ops/payments/dispatch", "POST"),
        ("DELETE", "/ops/notifications/dispatch", "POST"),
    ];

    for (method, path, allow) in cases {
        for (what, token) in [("without a token", None), ("with a user token", Some(ann.token.as_str()))] {
            let reply = host.send(method, path, token).await;
            let context = format!("{method} {path} {what}");
            assert_error(&reply, 405, "method not allowed", &context);
            assert_eq!(reply.header("allow"), Some(allow), "{context}");
        }
    }
    // A method override header changes nothing: the request's own method decides.
    let authorization = format!("Token {}", ann.token);
    for header in ["x-http-method-override", "x-method-override"] {
        let headers = [("authorization", authorization.as_str()), (header, "DELETE")];
        let reply = host.request("POST", &user, &headers, "").await;
        assert_error(
            &reply,
            405,
            "method not allowed",
            &format!("POST {user} with {header}: DELETE"),
        );
        assert_eq!(reply.header("allow"), Some("DELETE"), "POST {user} with {header}");
    }
    assert!(granted_roles(&bob.id).await.is_empty(), "no method reached the role change");
    let profile = host.send("GET", &format!("/api/profiles/{}", bob.username), None).await;
    assert_eq!(profile.status, 200, "no method reached the deletion: {}", profile.text());
}
