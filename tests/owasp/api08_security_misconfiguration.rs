//! API8:2023 Security Misconfiguration. Every response of every component carries
//! HSTS, `nosniff` and a request id, and no server banner. CORS allows listed
//! origins only, never `*`. Replies with a token or to credentials are `no-store`.
//! A database outage or a broken variable gets a generic 5xx body with the request
//! id, and health checks return only `up` or `down`. The ingress forces HTTPS.
//! Also covered: tests/profiles.rs `responses_carry_security_headers`, `responses_to_authenticated_requests_are_not_stored`, `cors_answers_listed_origins_only`, `database_outage_gets_503`, `bad_variable_named_in_log_only`; tests/feed.rs `database_outage_gets_503`; tests/host.rs `tls_serves_https_with_the_given_certificate`.

use conduit_tests::{
    Host, Reply, TEST_PASSWORD, TestUser, app_options, email_of, register_user, test_env_value, unique_name, workspace_root,
};
use jwt_simple::prelude::{Claims, Duration, Ed25519KeyPair, EdDSAKeyPairLike};
use serde_json::json;

const HSTS: &str = "max-age=63072000; includeSubDomains";
/// The only origin the CORS test host allows. The variable also contains a
/// bare wildcard and a wildcard subdomain, which the components must ignore.
const LISTED_ORIGIN: &str = "http://localhost:4200";
const CORS_VARIABLE: &str = "*, http://localhost:4200, https://*.example.com";
/// The database password of the outage test, which MariaDB rejects.
const WRONG_DB_PASSWORD: &str = "wrong-password-0000";

/// One request of a table: a label, method, path, whether it carries the
/// user's token, content type and body, and the expected status.
struct Case {
    label: &'static str,
    method: &'static str,
    path: String,
    token: bool,
    content_type: Option<&'static str>,
    body: String,
    status: u16,
}

fn case(label: &'static str, method: &'static str, path: impl Into<String>, token: bool, status: u16) -> Case {
    Case {
        label,
        method,
        path: path.into(),
        token,
        content_type: None,
        body: String::new(),
        status,
    }
}

fn with_body(mut case: Case, content_type: &'static str, body: impl Into<String>) -> Case {
    case.content_type = Some(content_type);
    case.body = body.into();
    case
}

/// Sends a case with an `Origin` header, and with `token` when the case carries one.
async fn send(host: &Host, case: &Case, token: &str, origin: &str) -> Reply {
    let authorization = format!("Token {token}");
    let mut headers = vec![("origin", origin)];
    if case.token {
        headers.push(("authorization", authorization.as_str()));
    }
    if let Some(content_type) = case.content_type {
        headers.push(("content-type", content_type));
    }
    host.request(case.method, &case.path, &headers, case.body.clone()).await
}

/// Words that would show an internal detail in a response body: SQL, driver
/// and server messages, Rust panics, type names and source paths, and the
/// test database's names and secrets.
fn leaked_markers(text: &str) -> Vec<String> {
    let mut markers: Vec<String> = [
        "select ",
        "insert ",
        "update ",
        "mysql",
        "mariadb",
        "sql",
        "access denied",
        "servererror",
        "io(",
        "conduit_test",
        "127.0.0.1",
        "3306",
        "panicked",
        "unwrap",
        "backtrace",
        ".rs:",
        "src/",
        "::",
        "anyhow",
        "invalid type",
        "serde",
        "token_public_key",
        "db_url",
        "redis",
        "currencies",
        "euro",
    ]
    .iter()
    .map(|marker| marker.to_string())
    .collect();
    for component in ["PROFILES", "FEED", "PAYMENTS", "NOTIFICATIONS"] {
        markers.push(test_env_value(&format!("SPIN_VARIABLE_{component}_DB_PASSWORD")).to_ascii_lowercase());
    }
    markers.push(WRONG_DB_PASSWORD.to_string());
    let lower = text.to_ascii_lowercase();
    markers.into_iter().filter(|marker| lower.contains(marker.as_str())).collect()
}

#[tokio::test]
async fn every_response_hardened() {
    let host = Host::start(app_options().env("SPIN_VARIABLE_CORS_ALLOWED_ORIGINS", CORS_VARIABLE));
    let ann = register_user(&host, "hdrann").await;
    let article = json!({"article": {"title": unique_name("Headers "), "description": "d", "body": "b", "tagList": []}});
    let published = host.send_json("POST", "/api/articles", Some(&ann.token), &article).await;
    assert_eq!(published.status, 201, "publishing failed: {}", published.text());
    let slug = published.json()["article"]["slug"].as_str().unwrap_or_default().to_string();
    let json_type = "application/json";
    let oversized = format!("{{\"article\": {{\"body\": \"{}\"}}}}", "x".repeat(400 * 1024));
    let cases = [
        // profiles
        case("profile", "GET", format!("/api/profiles/{}", ann.username), false, 200),
        case("current user", "GET", "/api/user", true, 200),
        case("current user without token", "GET", "/api/user", false, 401),
        case("current user with DELETE", "DELETE", "/api/user", true, 405),
        case("unknown profile", "GET", "/api/profiles/nobody-here-at-all", false, 404),
        with_body(
            case("registration with broken JSON", "POST", "/api/users", false, 400),
            json_type,
            "{\"user\":",
        ),
        with_body(
            case("registration as text", "POST", "/api/users", false, 415),
            "text/plain",
            "{}",
        ),
        with_body(
            case("registration with a number as name", "POST", "/api/users", false, 422),
            json_type,
            r#"{"user":{"username":5}}"#,
        ),
        case("profiles health", "GET", "/health/profiles", false, 200),
        case("profiles health with POST", "POST", "/health/profiles", false, 405),
        case(
            "profiles dispatch without token",
            "POST",
            "/ops/profiles/dispatch",
            false,
            401,
        ),
        // feed
        case("tags", "GET", "/api/tags", false, 200),
        case("article", "GET", format!("/api/articles/{slug}"), true, 200),
        case("unknown article", "GET", "/api/articles/no-such-article-here", false, 404),
        case(
            "path under articles",
            "GET",
            format!("/api/articles/{slug}/no/such/part"),
            false,
            404,
        ),
        case("tags with DELETE", "DELETE", "/api/tags", false, 405),
        case("list with a bad limit", "GET", "/api/articles?limit=many", false, 422),
        with_body(
            case("oversized article", "POST", "/api/articles", true, 413),
            json_type,
            oversized,
        ),
        case("feed health HEAD", "HEAD", "/health/feed", false, 200),
        // payments
        case("wallet", "GET", "/api/wallet", true, 200),
        case("wallet without token", "GET", "/api/wallet", false, 401),
        case("top-ups with GET", "GET", "/api/wallet/top-ups", true, 405),
        case(
            "unknown payment",
            "GET",
            "/api/payments/00000000-0000-4000-8000-000000000000",
            true,
            404,
        ),
        with_body(
            case("webhook as JSON", "POST", "/api/payments/webhooks/provider", false, 415),
            json_type,
            "{}",
        ),
        case("payments health", "GET", "/health/payments", false, 200),
        // notifications
        case("inbox", "GET", "/api/notifications", true, 200),
        case(
            "unread count without token",
            "GET",
            "/api/notifications/unread-count",
            false,
            401,
        ),
        case("unread count with PUT", "PUT", "/api/notifications/unread-count", true, 405),
        case("path under notifications", "GET", "/api/notifications/a/b/c", true, 404),
        case(
            "bad unsubscribe link",
            "GET",
            "/api/notifications/unsubscribe?token=forged",
            false,
            422,
        ),
        case("notifications health", "GET", "/health/notifications", false, 200),
    ];

    // Each request comes from an unlisted origin, so none may get CORS headers.
    for case in &cases {
        let reply = send(&host, case, &ann.token, "https://elsewhere.example").await;
        let label = case.label;

        assert_eq!(reply.status, case.status, "{label}: {}", reply.text());
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"), "{label}");
        assert_eq!(reply.header("strict-transport-security"), Some(HSTS), "{label}");
        assert!(
            reply.header("x-request-id").is_some(),
            "{label}: the response has a request id"
        );
        assert_eq!(reply.header("server"), None, "{label}: no server banner");
        assert_eq!(reply.header("x-powered-by"), None, "{label}: no framework banner");
        assert_eq!(
            reply.header("access-control-allow-origin"),
            None,
            "{label}: an unlisted origin gets no CORS"
        );
        if case.token {
            assert_eq!(
                reply.header("cache-control"),
                Some("no-store"),
                "{label}: a response to credentials is not stored"
            );
        }
        if reply.status >= 400 && case.method != "HEAD" {
            assert_eq!(reply.header("content-type"), Some(json_type), "{label}: errors are JSON");
            assert!(
                reply.json()["errors"]["body"].is_array(),
                "{label}: the error envelope: {}",
                reply.text()
            );
            assert_eq!(
                leaked_markers(&reply.text()),
                Vec::<String>::new(),
                "{label}: {}",
                reply.text()
            );
        }
    }

    // Responses that carry a token are never stored, though the request had none.
    let refresh_token = ann_refresh_token(&host, &ann.username).await;
    let token_bearing = [
        (
            "registration",
            host.send_json("POST", "/api/users", None, &new_user_body()).await,
        ),
        (
            "login",
            host.send_json("POST", "/api/users/login", None, &login_body(&ann.username))
                .await,
        ),
        (
            "refresh",
            host.send_json("POST", "/api/users/refresh", None, &json!({"refreshToken": refresh_token}))
                .await,
        ),
    ];
    for (label, reply) in &token_bearing {
        assert!(reply.status < 300, "{label}: {}", reply.text());
        assert_eq!(
            reply.header("cache-control"),
            Some("no-store"),
            "{label}: a reply with a token is not stored"
        );
    }

    // CORS: only the exact listed origin, on success and on errors, in every component.
    let origins = [
        (LISTED_ORIGIN, Some(LISTED_ORIGIN)),
        ("https://app.example.com", None),
        ("https://anything.example", None),
        ("http://localhost:4200.elsewhere.example", None),
        ("http://localhost:42000", None),
        ("null", None),
    ];
    let probes = [
        format!("/api/profiles/{}", ann.username),
        "/api/tags".to_string(),
        "/api/wallet".to_string(),
        "/api/notifications".to_string(),
    ];
    for path in &probes {
        for (origin, expected) in origins {
            let reply = host.request("GET", path, &[("origin", origin)], "").await;
            let preflight_headers = [("origin", origin), ("access-control-request-method", "DELETE")];
            let preflight = host.request("OPTIONS", path, &preflight_headers, "").await;

            assert_eq!(
                reply.header("access-control-allow-origin"),
                expected,
                "{path} from {origin} ({})",
                reply.status
            );
            assert_eq!(reply.header("access-control-allow-credentials"), None, "{path} from {origin}");
            assert_eq!(
                preflight.header("access-control-allow-origin"),
                expected,
                "preflight of {path} from {origin}"
            );
            if expected.is_none() {
                assert_eq!(
                    preflight.status,
                    405,
                    "preflight of {path} from {origin}: {}",
                    preflight.text()
                );
                assert_eq!(
                    preflight.header("access-control-allow-methods"),
                    None,
                    "preflight of {path} from {origin}"
                );
            }
        }
    }
}

fn new_user_body() -> serde_json::Value {
    let username = unique_name("hdrnew");
    json!({"user": {"username": username, "email": email_of(&username), "password": TEST_PASSWORD}})
}

fn login_body(username: &str) -> serde_json::Value {
    json!({"user": {"email": email_of(username), "password": TEST_PASSWORD}})
}

/// Logs the user in and returns the refresh token of the reply.
async fn ann_refresh_token(host: &Host, username: &str) -> String {
    let reply = host.send_json("POST", "/api/users/login", None, &login_body(username)).await;
    assert_eq!(reply.status, 200, "login failed: {}", reply.text());
    reply.json()["user"]["refreshToken"].as_str().unwrap_or_default().to_string()
}

/// The custom claims of a user token, as profiles issues them.
#[derive(serde::Serialize, serde::Deserialize)]
struct UserClaims {
    ver: u64,
    roles: Vec<String>,
}

/// Signs a user token with the suite's `user_token_key`, as profiles would,
/// for a host whose database is down and cannot issue one.
fn signed_token() -> String {
    let seed_hex = test_env_value("SPIN_VARIABLE_USER_TOKEN_KEY");
    let seed: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&seed_hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let pair = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::from_slice(&seed).unwrap());
    let key = Ed25519KeyPair::from_bytes(&pair[..]).unwrap();
    let claims = Claims::with_custom_claims(
        UserClaims {
            ver: 1,
            roles: vec!["user".into()],
        },
        Duration::from_hours(1),
    )
    .with_issuer("conduit")
    .with_audience("conduit-api")
    .with_subject("00000000-0000-7000-8000-000000000000");
    key.sign(claims).unwrap()
}

#[tokio::test]
async fn failures_leak_no_internals() {
    let user = TestUser {
        id: String::new(),
        username: unique_name("leak"),
        token: signed_token(),
    };

    // Every database password is wrong, so MariaDB rejects each login with a
    // message that names the user and host. Payments' currency list names no
    // currency, so payments fails before it reaches the database.
    let mut options = app_options();
    for component in ["PROFILES", "FEED", "PAYMENTS", "NOTIFICATIONS"] {
        options = options.env(&format!("SPIN_VARIABLE_{component}_DB_PASSWORD"), WRONG_DB_PASSWORD);
    }
    let host = Host::start(options.env("SPIN_VARIABLE_PAYMENTS_CURRENCIES", "EURO"));
    let json_type = "application/json";
    let form = Some("application/x-www-form-urlencoded");
    let unavailable = [
        with_body(
            case("login", "POST", "/api/users/login", false, 503),
            json_type,
            login_body(&user.username).to_string(),
        ),
        case("current user", "GET", "/api/user", true, 503),
        case("profile", "GET", format!("/api/profiles/{}", user.username), false, 503),
        case("article list", "GET", "/api/articles", false, 503),
        case("personal feed", "GET", "/api/articles/feed", true, 503),
        case("tags", "GET", "/api/tags", false, 503),
        case("inbox", "GET", "/api/notifications", true, 503),
    ];
    let top_up = r#"{"top_up":{"amount_minor":1000}}"#;
    let misconfigured = [
        case("wallet", "GET", "/api/wallet", true, 500),
        with_body(case("top-up", "POST", "/api/wallet/top-ups", true, 500), json_type, top_up),
        Case {
            content_type: form,
            body: "id=tr_unknown0000".into(),
            ..case("webhook", "POST", "/api/payments/webhooks/provider", false, 500)
        },
    ];

    for case in unavailable.iter().chain(&misconfigured) {
        let reply = send(&host, case, &user.token, "https://elsewhere.example").await;
        let label = case.label;
        let request_id = reply.header("x-request-id").unwrap_or("no request id").to_string();
        let expected = if case.status == 503 {
            format!("service temporarily unavailable, retry later (request id {request_id})")
        } else {
            format!("internal error (request id {request_id})")
        };

        assert_eq!(reply.status, case.status, "{label}: {}", reply.text());
        assert_eq!(
            reply.json(),
            json!({"errors": {"body": [expected]}}),
            "{label}: only a generic message"
        );
        assert_eq!(
            leaked_markers(&reply.text()),
            Vec::<String>::new(),
            "{label}: {}",
            reply.text()
        );
        if case.status == 503 {
            assert_eq!(reply.header("retry-after"), Some("2"), "{label}");
        } else {
            assert_eq!(reply.header("retry-after"), None, "{label}: a 500 is not a passing outage");
        }
    }

    // Health checks: `down` and nothing else, on both methods.
    for component in ["profiles", "feed", "payments", "notifications"] {
        let path = format!("/health/{component}");
        let reply = host.get(&path).await;
        let head = host.request("HEAD", &path, &[], "").await;

        assert_eq!(reply.status, 503, "{path}");
        assert_eq!(reply.text(), "down", "{path}: the body says only down");
        assert_eq!(reply.header("content-type"), Some("text/plain"), "{path}");
        assert_eq!((head.status, head.body.len()), (503, 0), "HEAD {path}");
    }
}

#[test]
fn ingress_serves_https_only() {
    let text = std::fs::read_to_string(workspace_root().join("infra/kubernetes/ingress.yaml")).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|line| !line.starts_with('#')).collect();
    let annotation = |name: &str| {
        let prefix = format!("nginx.ingress.kubernetes.io/{name}:");
        lines
            .iter()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .map(|value| value.trim().trim_matches('"').to_string())
    };

    assert_eq!(
        annotation("ssl-redirect").as_deref(),
        Some("true"),
        "plain HTTP is redirected"
    );
    assert_eq!(
        annotation("force-ssl-redirect").as_deref(),
        Some("true"),
        "the redirect does not depend on the controller's default"
    );
    assert_eq!(
        annotation("ssl-protocols").as_deref(),
        Some("TLSv1.2 TLSv1.3"),
        "no TLS before 1.2"
    );
    assert!(lines.contains(&"tls:"), "the ingress terminates TLS");
    assert!(
        lines.iter().any(|line| line.starts_with("secretName:")),
        "the certificate comes from a Secret"
    );
}
