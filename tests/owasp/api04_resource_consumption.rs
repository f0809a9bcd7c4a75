//! API4:2023 Unrestricted Resource Consumption. Each component caps request
//! bodies (413, whether or not the client declares a length), reads JSON only
//! (415) and only 16 levels deep (422). Profile fields have maximum lengths,
//! list pages at most 100 items, and writes per user and requests per address are rate limited.
//! Also covered in tests/feed.rs (`oversized_body_gets_413`, `non_json_content_type_gets_415`, `create_rejects_invalid_fields`, `create_accepts_maximum_lengths`, `comment_body_is_validated`, `list_caps_limit_at_100`), tests/payments.rs (`tip_accepts_field_limits`, `tip_rejects_invalid_fields`), tests/notifications.rs (`list_rejects_invalid_query`), tests/profiles.rs (`deeply_nested_bodies_are_rejected_before_parsing`) and tests/rate_limits.rs (`writes_are_limited_per_user`, `routes_outside_the_api_have_no_limits`).

use crate::common::{App, field_errors, wait_for_room_in_window};
use std::time::Duration as StdDuration;

use conduit_tests::{Host, Reply, TEST_PASSWORD, TestUser, app_options, email_of, register_user, unique_name};
use jwt_simple::prelude::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A `limit` past the largest 64-bit unsigned integer, which the query parser reads as that integer.
const BEYOND_U64: &str = "99999999999999999999999";
/// A 41-digit `limit`, longer than the 40 digits the query parser reads.
const FORTY_ONE_DIGITS: &str = "10000000000000000000000000000000000000000";

/// Sends `POST /api/tips` with a fresh Idempotency-Key.
async fn tip(host: &Host, sender: &TestUser, fields: Value) -> Reply {
    let authorization = format!("Token {}", sender.token);
    let key = unique_name("key");
    let headers = [
        ("authorization", authorization.as_str()),
        ("content-type", "application/json"),
        ("idempotency-key", key.as_str()),
    ];
    host.request("POST", "/api/tips", &headers, json!({ "tip": fields }).to_string())
        .await
}

/// Returns the length of the list under `key` in a JSON reply.
fn list_length(reply: &Reply, key: &str) -> usize {
    reply.json()[key]
        .as_array()
        .unwrap_or_else(|| panic!("the reply has no `{key}` list: {}", reply.text()))
        .len()
}

/// Builds a JSON object of exactly `size` bytes, `{"pad":"xx…"}`, which no route accepts.
fn padded_body(size: usize) -> String {
    format!("{{\"pad\":\"{}\"}}", "x".repeat(size - 10))
}

/// Sends a request whose body is sent in chunks, without `Content-Length`,
/// over a raw connection. Returns the status and the raw rest of the response.
async fn send_chunked(host: &Host, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(host.addr)
        .await
        .expect("the host accepts connections");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n",
        host.addr
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    for chunk in body.chunks(4096) {
        bytes.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        bytes.extend_from_slice(chunk);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"0\r\n\r\n");
    // The host may respond and close before it has read the whole body, so a failed write is not an error here.
    let _ = stream.write_all(&bytes).await;

    let mut response = Vec::new();
    let read = tokio::time::timeout(StdDuration::from_secs(30), stream.read_to_end(&mut response)).await;
    assert!(read.is_ok(), "the host responds to a chunked request within 30 s");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text}"));
    (status, text)
}

/// Checks a 429 of `rule`: the message, `Retry-After` within the window and both `RateLimit` headers.
fn assert_limited(reply: &Reply, rule: &str, limit: u64, window: u64, context: &str) {
    assert_eq!(reply.status, 429, "{context}: {}", reply.text());
    assert_eq!(
        field_errors(reply, "body"),
        ["too many requests; retry after the time in Retry-After"],
        "{context}"
    );
    let wait: u64 = reply
        .header("retry-after")
        .and_then(|value| value.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=window).contains(&wait), "{context}: Retry-After {wait}");
    let policy = format!("\"{rule}\";q={limit};w={window}");
    assert!(
        reply.header("ratelimit-policy").is_some_and(|value| value.contains(&policy)),
        "{context}: {:?}",
        reply.headers
    );
    let state = format!("\"{rule}\";r=0;t=");
    assert!(
        reply.header("ratelimit").is_some_and(|value| value.contains(&state)),
        "{context}: {:?}",
        reply.headers
    );
}

#[tokio::test]
async fn bodies_bounded_in_every_component() {
    let host = Host::start(app_options());
    let ann = register_user(&host, "bodyann").await;
    let article = json!({"article": {"title": format!("Bounded {}", unique_name("b")), "description": "d", "body": "b"}});
    let created = host.send_json("POST", "/api/articles", Some(&ann.token), &article).await;
    assert_eq!(created.status, 201, "the article: {}", created.text());
    let slug = created.json()["article"]["slug"].as_str().unwrap().to_string();
    let comments_path = format!("/api/articles/{slug}/comments");
    let routes = [
        ("POST", "/api/users/login", 16 * 1024, false),
        ("POST", "/api/users/verify-email", 4 * 1024, false),
        ("POST", comments_path.as_str(), 64 * 1024, true),
        ("POST", "/api/tips", 64 * 1024, true),
        ("PUT", "/api/notifications/preferences", 4 * 1024, true),
    ];
    let authorization = format!("Token {}", ann.token);
    let too_deep = format!("{{\"pad\":{}1{}}}", "[".repeat(16), "]".repeat(16));

    // Every request carries an Idempotency-Key, which only the tip route reads.
    for (method, path, limit, authenticated) in routes {
        let send = |content_type: &'static str, body: String| {
            let (host, authorization) = (&host, &authorization);
            async move {
                let key = unique_name("key");
                let mut headers = vec![("content-type", content_type), ("idempotency-key", key.as_str())];
                if authenticated {
                    headers.push(("authorization", authorization.as_str()));
                }
                host.request(method, path, &headers, body).await
            }
        };
        let route = format!("{method} {path}");

        let at_limit = send("application/json", padded_body(limit)).await;
        assert_eq!(
            at_limit.status,
            422,
            "{route}, {limit} bytes are read: {}",
            at_limit.text().chars().take(300).collect::<String>()
        );
        let over = send("application/json", padded_body(limit + 1)).await;
        assert_eq!(over.status, 413, "{route}, {} bytes: {}", limit + 1, over.text());
        assert_eq!(
            field_errors(&over, "body"),
            [format!("body is larger than {limit} bytes")],
            "{route}"
        );

        let key = unique_name("key");
        let mut headers = vec![("content-type", "application/json"), ("idempotency-key", key.as_str())];
        if authenticated {
            headers.push(("authorization", authorization.as_str()));
        }
        let (status, text) = send_chunked(&host, method, path, &headers, padded_body(limit + 1).as_bytes()).await;
        assert_eq!(status, 413, "{route}, {} bytes without Content-Length: {text}", limit + 1);
        assert!(
            text.contains(&format!("body is larger than {limit} bytes")),
            "{route}: {text}"
        );

        let text_plain = send("text/plain", "{}".to_string()).await;
        assert_eq!(text_plain.status, 415, "{route} as text/plain: {}", text_plain.text());
        assert_eq!(
            field_errors(&text_plain, "body"),
            ["content type must be application/json"],
            "{route}"
        );
        let deep = send("application/json", too_deep.clone()).await;
        assert_eq!(deep.status, 422, "{route}, 17 levels: {}", deep.text());
        assert_eq!(
            field_errors(&deep, "body"),
            ["body nests arrays and objects deeper than 16 levels"],
            "{route}"
        );
    }
}

#[tokio::test]
async fn profile_fields_bounded_at_maximum() {
    let host = Host::start(app_options());
    let username = format!("{:x<32}", unique_name("maxlen"));
    let domain = format!("{}.test", "d".repeat(254 - username.len() - 1 - 5));
    let email = format!("{}@{domain}", username.to_lowercase());
    let password = "p".repeat(128);
    let register = |username: &str, email: &str, password: &str| {
        let body = json!({"user": {"username": username, "email": email, "password": password}});
        let host = &host;
        async move { host.send_json("POST", "/api/users", None, &body).await }
    };
    let other = unique_name("over");
    let long_domain = format!("{}.test", "d".repeat(255 - other.len() - 1 - 5));
    // U+FDFA is one letter whose NFKC form, used in the comparison key, is 18 characters.
    let expanding = "\u{FDFA}\u{FDFA}";
    let rejected_registrations = [
        (
            "a 33-character username",
            register(&format!("{:x<33}", other), &email_of(&other), TEST_PASSWORD).await,
            "username",
            "is too long (maximum is 32 characters)",
        ),
        (
            "a username whose key is 36 characters",
            register(expanding, &email_of(&other), TEST_PASSWORD).await,
            "username",
            "is too long (maximum is 32 characters)",
        ),
        (
            "a 255-character email",
            register(&other, &format!("{}@{long_domain}", other.to_lowercase()), TEST_PASSWORD).await,
            "email",
            "is too long (maximum is 254 characters)",
        ),
        (
            "a 129-character password",
            register(&other, &email_of(&other), &"p".repeat(129)).await,
            "password",
            "is too long (maximum is 128 characters)",
        ),
    ];
    for (what, reply, field, message) in &rejected_registrations {
        assert_eq!(reply.status, 422, "{what}: {}", reply.text());
        assert_eq!(field_errors(reply, field), [*message], "{what}");
    }
    assert_eq!(
        host.get(&format!("/api/profiles/{other}")).await.status,
        404,
        "no rejected registration created a user"
    );

    assert_eq!((username.chars().count(), email.chars().count()), (32, 254));
    let registered = register(&username, &email, &password).await;
    assert_eq!(registered.status, 201, "every field at its maximum: {}", registered.text());
    let login = host
        .send_json(
            "POST",
            "/api/users/login",
            None,
            &json!({"user": {"email": email, "password": password}}),
        )
        .await;
    assert_eq!(login.status, 200, "the 128-character password logs in: {}", login.text());
    let token = login.json()["user"]["token"].as_str().unwrap().to_string();

    // Two-byte characters, so the bio limit is seen to count characters.
    let bio = "é".repeat(2000);
    let image = format!("https://example.com/{}", "i".repeat(2048 - 20));
    let updated = host
        .send_json(
            "PUT",
            "/api/user",
            Some(&token),
            &json!({"user": {"bio": bio, "image": image}}),
        )
        .await;
    assert_eq!(
        updated.status,
        200,
        "bio and image at their maximum: {}",
        updated.text().chars().take(300).collect::<String>()
    );
    let rejected_updates = [
        (
            "a 2001-character bio",
            json!({"bio": "é".repeat(2001)}),
            "bio",
            "is too long (maximum is 2000 characters)",
        ),
        (
            "a 2049-character image",
            json!({"image": format!("{image}i")}),
            "image",
            "is too long (maximum is 2048 characters)",
        ),
    ];
    for (what, user, field, message) in rejected_updates {
        let reply = host
            .send_json("PUT", "/api/user", Some(&token), &json!({ "user": user }))
            .await;
        assert_eq!(reply.status, 422, "{what}: {}", reply.text());
        assert_eq!(field_errors(&reply, field), [message], "{what}");
    }
    let current = host.send("GET", "/api/user", Some(&token)).await.json();
    assert_eq!(current["user"]["bio"], bio.as_str(), "the rejected updates changed nothing");
    assert_eq!(
        current["user"]["image"],
        image.as_str(),
        "the rejected updates changed nothing"
    );
}

#[tokio::test]
async fn list_pages_capped_or_rejected() {
    let app = App::start();
    let host = &app.host;
    let (ann, bob) = (register_user(host, "pageann").await, register_user(host, "pagebob").await);
    app.fund(&ann, 101).await;
    // 101 tips of one cent each give Bob 101 payments.
    for batch in 0..11 {
        let tips =
            (0..10.min(101 - batch * 10)).map(|_| tip(host, &ann, json!({"to_username": bob.username, "amount_minor": 1})));
        for reply in futures::future::join_all(tips).await {
            assert_eq!(reply.status, 201, "a tip: {}", reply.text());
        }
    }
    let bobs = |path: String| {
        let token = bob.token.clone();
        async move { host.send("GET", &path, Some(&token)).await }
    };

    for limit in ["1000", BEYOND_U64] {
        let payments = bobs(format!("/api/payments?limit={limit}")).await;
        assert_eq!(payments.status, 200, "payments, limit {limit}: {}", payments.text());
        assert_eq!(
            list_length(&payments, "payments"),
            100,
            "payments, limit {limit}: the page is capped at 100"
        );
        assert!(
            payments.json()["next_cursor"].is_string(),
            "payments, limit {limit}: a next page follows"
        );

        let articles = host.get(&format!("/api/articles?limit={limit}")).await;
        assert_eq!(articles.status, 200, "articles, limit {limit}: {}", articles.text());
        assert!(
            list_length(&articles, "articles") <= 100,
            "articles, limit {limit}: the page is capped at 100"
        );

        let notifications = bobs(format!("/api/notifications?limit={limit}")).await;
        assert_eq!(
            notifications.status,
            422,
            "notifications, limit {limit}: {}",
            notifications.text()
        );
        assert_eq!(
            field_errors(&notifications, "limit"),
            ["must be a whole number from 1 to 100"],
            "notifications, limit {limit}"
        );
    }

    let payments = bobs(format!("/api/payments?limit={FORTY_ONE_DIGITS}")).await;
    let articles = host.get(&format!("/api/articles?limit={FORTY_ONE_DIGITS}")).await;
    for (list, reply) in [("payments", &payments), ("articles", &articles)] {
        assert_eq!(reply.status, 422, "{list}, a 41-digit limit: {}", reply.text());
        assert_eq!(
            field_errors(reply, "limit"),
            ["must be a whole number of at least 1"],
            "{list}"
        );
    }
}

#[tokio::test]
async fn writes_limited_per_user_everywhere() {
    const LIMIT: u64 = 2;
    // An hour, so the requests share one window and wait only in the last two minutes of an hour.
    const WINDOW: u64 = 3600;
    let host = Host::start(app_options().env("SPIN_VARIABLE_RATE_LIMIT_USER_WRITES", format!("{LIMIT}/{WINDOW}")));
    let ann = register_user(&host, "writeann").await;
    let bob = register_user(&host, "writebob").await;
    wait_for_room_in_window(WINDOW, 120).await;

    // Tokens that name Ann but carry another key's signature spend none of her writes.
    let forger = Ed25519KeyPair::generate();
    let claims = Claims::with_custom_claims(json!({"ver": 1, "roles": ["user"]}), Duration::from_hours(1))
        .with_issuer("conduit")
        .with_audience("conduit-api")
        .with_subject(&ann.id);
    let forged = format!("Token {}", forger.sign(claims).unwrap());
    for path in ["/api/articles", "/api/tips", "/api/notifications/read-all"] {
        for _ in 0..3 {
            let reply = host
                .request(
                    "POST",
                    path,
                    &[("authorization", forged.as_str()), ("content-type", "application/json")],
                    "{}",
                )
                .await;
            assert_eq!(reply.status, 401, "POST {path} with a forged token: {}", reply.text());
            assert_eq!(field_errors(&reply, "body"), ["the token is invalid"], "POST {path}");
        }
    }

    // Feed: two writes, then the third is rejected.
    let article = json!({"article": {"title": format!("Limited {}", unique_name("w")), "description": "d", "body": "b"}});
    let created = host.send_json("POST", "/api/articles", Some(&ann.token), &article).await;
    assert_eq!(created.status, 201, "feed write 1: {}", created.text());
    let slug = created.json()["article"]["slug"].as_str().unwrap().to_string();
    let favorite_path = format!("/api/articles/{slug}/favorite");
    let favorited = host.send("POST", &favorite_path, Some(&ann.token)).await;
    assert_eq!(favorited.status, 200, "feed write 2: {}", favorited.text());
    assert_limited(
        &host.send("DELETE", &favorite_path, Some(&ann.token)).await,
        "user-writes",
        LIMIT,
        WINDOW,
        "feed write 3",
    );

    // Payments counts its own writes, failed ones too. Ann has no money, so each tip is a 422.
    for attempt in 1..=LIMIT {
        let reply = tip(&host, &ann, json!({"to_username": bob.username, "amount_minor": 1})).await;
        assert_eq!(reply.status, 422, "payments write {attempt}: {}", reply.text());
    }
    let third_tip = tip(&host, &ann, json!({"to_username": bob.username, "amount_minor": 1})).await;
    assert_limited(&third_tip, "user-writes", LIMIT, WINDOW, "payments write 3");

    // Notifications counts its own as well.
    for attempt in 1..=LIMIT {
        let reply = host.send("POST", "/api/notifications/read-all", Some(&ann.token)).await;
        assert_eq!(reply.status, 200, "notifications write {attempt}: {}", reply.text());
    }
    let third_read_all = host.send("POST", "/api/notifications/read-all", Some(&ann.token)).await;
    assert_limited(&third_read_all, "user-writes", LIMIT, WINDOW, "notifications write 3");

    let bobs_write = host.send("POST", "/api/notifications/read-all", Some(&bob.token)).await;
    assert_eq!(
        bobs_write.status,
        200,
        "another user keeps a budget of his own: {}",
        bobs_write.text()
    );
}

#[tokio::test]
async fn address_limit_covers_every_component() {
    const LIMIT: u64 = 3;
    // An hour, so the requests share one window and wait only in the last two minutes of an hour.
    const WINDOW: u64 = 3600;
    let host = Host::start(app_options().env("SPIN_VARIABLE_RATE_LIMIT_ADDRESS", format!("{LIMIT}/{WINDOW}")));
    wait_for_room_in_window(WINDOW, 120).await;

    // Requests without a token count before authentication, so guessing spends the budget too.
    for path in ["/api/user", "/api/articles/feed", "/api/wallet", "/api/notifications"] {
        for attempt in 1..=LIMIT {
            let reply = host.get(path).await;
            assert_eq!(reply.status, 401, "GET {path}, request {attempt}: {}", reply.text());
            let remaining = format!("\"address\";r={};", LIMIT - attempt);
            assert!(
                reply.header("ratelimit").is_some_and(|value| value.contains(&remaining)),
                "GET {path}: {:?}",
                reply.headers
            );
        }
        assert_limited(
            &host.get(path).await,
            "address",
            LIMIT,
            WINDOW,
            &format!("GET {path}, request {}", LIMIT + 1),
        );
    }
}
