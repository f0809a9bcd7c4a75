//! The local host, tested through the fixture component (`tests/fixture/`)
//! against real MariaDB and Redis: routing, Spin's headers, capabilities,
//! isolation between requests, deadlines, limits and start-up errors.

use std::time::{Duration, Instant};

use conduit_tests::{
    Host, HostOptions, LoopbackServer, Reply, app_options, fixture_options, scratch_dir, unique, wasm_path, with_and_without_reuse,
};
use mysql_async::prelude::Queryable;
use serde_json::{Value, json};

const API_TOKEN: &str = "fixture-api-token-5b1c9e";
const MYSQL_ADMIN: &str = "mysql://root@127.0.0.1:3306";

/// Returns every value of `name` in an echoed header list, in received order.
fn all_headers(echo: &Value, name: &str) -> Vec<String> {
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pair| pair[0] == name)
        .map(|pair| pair[1].as_str().unwrap().to_string())
        .collect()
}

/// Returns the last value of `name`, the one a component takes.
fn last_header(echo: &Value, name: &str) -> Option<String> {
    all_headers(echo, name).pop()
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_follow_spin_precedence() {
    with_and_without_reuse(fixture_options(1, API_TOKEN), |host, _| async move {
        let cases = [
            ("/echo/exact", "exact"),
            ("/echo/other", "echo"),
            ("/echo", "echo"),
            ("/echo/exact/deeper", "echo"),
            ("/users/42/items/7", "params"),
            ("/users/42", "params"),
            ("/anything/else", "fallback"),
            ("/", "fallback"),
        ];

        for (path, component) in cases {
            let reply = host.get(path).await;

            assert_eq!(reply.status, 200, "{path}");
            assert_eq!(reply.json()["component"], component, "{path}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn spin_headers_follow_client_headers() {
    with_and_without_reuse(fixture_options(1, API_TOKEN), |host, _| async move {
        let reply = host
            .request("GET", "/users/42/items/7?q=1", &[("x-client", "yes")], "")
            .await;
        let echo = reply.json();

        let expect = |name: &str, value: &str| assert_eq!(last_header(&echo, name).as_deref(), Some(value), "{name}");
        expect("spin-full-url", &format!("http://{}/users/42/items/7?q=1", host.addr));
        expect("spin-path-info", "/items/7");
        expect("spin-matched-route", "/users/:user_id/...");
        expect("spin-base-path", "/");
        expect("spin-raw-component-route", "/users/:user_id/...");
        expect("spin-component-route", "/users/:user_id");
        expect("spin-path-match-user-id", "42");
        let client_addr = last_header(&echo, "spin-client-addr").unwrap();
        assert!(client_addr.starts_with("127.0.0.1:"), "{client_addr}");
        let names: Vec<&str> = echo["headers"].as_array().unwrap().iter().map(|p| p[0].as_str().unwrap()).collect();
        let client_at = names.iter().position(|n| *n == "x-client").unwrap();
        let first_spin = names.iter().position(|n| n.starts_with("spin-")).unwrap();
        assert!(client_at < first_spin, "client headers come first: {names:?}");
        assert_eq!(echo["uri"], format!("http://{}/users/42/items/7?q=1", host.addr));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_spin_header_not_last() {
    with_and_without_reuse(fixture_options(1, API_TOKEN), |host, _| async move {
        let forged = [
            ("spin-client-addr", "10.9.8.7:1234"),
            ("spin-path-info", "/forged"),
            ("spin-matched-route", "/admin/..."),
        ];

        let echo = host.request("GET", "/echo/real", &forged, "").await.json();

        assert_eq!(all_headers(&echo, "spin-client-addr")[0], "10.9.8.7:1234");
        assert!(last_header(&echo, "spin-client-addr").unwrap().starts_with("127.0.0.1:"));
        assert_eq!(last_header(&echo, "spin-path-info").as_deref(), Some("/real"));
        assert_eq!(last_header(&echo, "spin-matched-route").as_deref(), Some("/echo/..."));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn key_value_round_trips_both_backends() {
    with_and_without_reuse(fixture_options(1, API_TOKEN), |host, reuse| async move {
        for label in ["default", "cache"] {
            let key = unique(&format!("round-trip-{reuse}"));
            let path = format!("/work/kv/{label}/{key}");

            assert_eq!(host.get(&path).await.status, 404, "{label}");
            assert_eq!(host.request("PUT", &path, &[], "value-1").await.status, 204, "{label}");
            let stored = host.get(&path).await;
            assert_eq!((stored.status, stored.text().as_str()), (200, "value-1"), "{label}");
            assert_eq!(host.request("DELETE", &path, &[], "").await.status, 204, "{label}");
            assert_eq!(host.get(&path).await.status, 404, "{label}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn get_keys_lists_each_store() {
    let host = Host::start(fixture_options(1, API_TOKEN));
    let prefix = unique("keys");

    for label in ["default", "cache"] {
        for suffix in ["b", "a"] {
            let path = format!("/work/kv/{label}/{prefix}-{label}-{suffix}");
            assert_eq!(host.request("PUT", &path, &[], "v").await.status, 204);
        }
    }
    let sqlite = host.get("/work/kv-keys/default").await.json();
    let redis = host.get("/work/kv-keys/cache").await.json();

    assert_eq!(sqlite, json!([format!("{prefix}-default-a"), format!("{prefix}-default-b")]), "a fresh SQLite store");
    let redis: Vec<String> = serde_json::from_value(redis).unwrap();
    assert!(redis.contains(&format!("{prefix}-cache-a")), "{redis:?}");
    assert!(redis.contains(&format!("{prefix}-cache-b")), "{redis:?}");
    assert!(!redis.iter().any(|k| k.contains("-default-")), "stores stay apart");
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_redis_fails_fast() {
    let dir = scratch_dir("redis-down");
    let config = dir.join("runtime-config.toml");
    let closed_port = conduit_tests::free_port();
    std::fs::write(&config, format!("[key_value_store.cache]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{closed_port}/0\"\n")).unwrap();
    let mut options = fixture_options(1, API_TOKEN);
    options.runtime_config = Some(config);
    let host = Host::start(options);

    let started = Instant::now();
    let reply = host.get("/work/kv/cache/anything").await;
    let sqlite = host.get("/work/kv/default/anything").await;

    assert_eq!(reply.status, 500);
    assert!(reply.text().contains("redis"), "{}", reply.text());
    assert!(started.elapsed() < Duration::from_secs(6), "took {:?}", started.elapsed());
    assert_eq!(sqlite.status, 404, "other stores keep working");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_serves_https_with_the_given_certificate() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = scratch_dir("tls");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.join("cert.pem"), certified.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), certified.key_pair.serialize_pem()).unwrap();
    let host = Host::start(
        fixture_options(1, API_TOKEN)
            .arg("--tls-cert")
            .arg(dir.join("cert.pem").display().to_string())
            .arg("--tls-key")
            .arg(dir.join("key.pem").display().to_string()),
    );
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));

    let tcp = tokio::net::TcpStream::connect(host.addr).await.unwrap();
    let server_name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = connector.connect(server_name, tcp).await.expect("the TLS handshake succeeds");
    let request = format!("GET /echo/tls HTTP/1.1\r\nhost: localhost:{}\r\nconnection: close\r\n\r\n", host.addr.port());
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap_or_default();
    let plain = plain_http_get(host.addr).await;

    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(&format!(r#""spin-full-url","https://localhost:{}/echo/tls""#, host.addr.port())), "{response}");
    assert!(!plain.starts_with("HTTP/1.1 200"), "plain HTTP is not served on the TLS port: {plain:?}");
}

/// Sends a plain-text HTTP request and returns whatever comes back.
async fn plain_http_get(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /echo/plain HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").await.unwrap();
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut bytes)).await;
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_host_cleanly() {
    let mut host = Host::start(fixture_options(1, API_TOKEN));
    assert_eq!(host.get("/echo/x").await.status, 200);

    let status = host.terminate();

    assert!(status.success(), "{status:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(host.log_lines().iter().any(|l| l.contains(r#""event":"stopping""#) && l.contains("SIGTERM")));
}

#[tokio::test(flavor = "multi_thread")]
async fn undeclared_store_access_denied() {
    let host = Host::start(fixture_options(1, API_TOKEN));

    let reply = host.get("/work/kv/elsewhere/key").await;

    assert_eq!(reply.status, 500);
    assert!(reply.text().contains("AccessDenied"), "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_increments_lose_nothing() {
    let host = Host::start(fixture_options(1, API_TOKEN));
    for label in ["default", "cache"] {
        let path = format!("/work/kv-increment/{label}/{}?delta=1", unique("counter"));
        let requests = (0..24).map(|_| host.request("POST", &path, &[], ""));

        let replies: Vec<Reply> = futures::future::join_all(requests).await;

        let mut values: Vec<i64> = replies.iter().map(|r| r.text().parse().unwrap()).collect();
        values.sort();
        assert_eq!(values, (1..=24).collect::<Vec<_>>(), "{label}");
    }
}

/// Calls the application's key-value wrapper (`shared::kv`) inside the
/// fixture: `target` is `<label>/<operation>/<key>[?query]`.
async fn shared_kv(host: &Host, target: &str, body: &str) -> Value {
    let reply = host.request("POST", &format!("/work/shared-kv/{target}"), &[], body.to_owned()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_kv_expires_and_counts_calls() {
    let host = Host::start(fixture_options(1, API_TOKEN));
    for label in ["default", "cache"] {
        let (fresh, short, counter) = (unique("fresh"), unique("short"), unique("counter"));

        let written = shared_kv(&host, &format!("{label}/set-fresh/{fresh}?ttl=60"), r#"{"title":"cached"}"#).await;
        let read = shared_kv(&host, &format!("{label}/get-fresh/{fresh}"), "").await;
        shared_kv(&host, &format!("{label}/set-fresh/{short}?ttl=1"), "[1,2]").await;
        let before_expiry = shared_kv(&host, &format!("{label}/get-fresh/{short}"), "").await;
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let after_expiry = shared_kv(&host, &format!("{label}/get-fresh/{short}"), "").await;
        let stale_entry = shared_kv(&host, &format!("{label}/get/{short}"), "").await;
        let deleted = shared_kv(&host, &format!("{label}/delete/{fresh}"), "").await;
        let after_delete = shared_kv(&host, &format!("{label}/get-fresh/{fresh}"), "").await;
        let incremented = shared_kv(&host, &format!("{label}/increment/{counter}?delta=5"), "").await;
        let decremented = shared_kv(&host, &format!("{label}/increment/{counter}?delta=-2"), "").await;

        assert_eq!(written, json!({"result": null, "error": null, "kv_calls": 2}), "{label}: open and set");
        assert_eq!(read, json!({"result": {"title": "cached"}, "error": null, "kv_calls": 2}), "{label}");
        assert_eq!(before_expiry["result"], json!([1, 2]), "{label}");
        assert_eq!(after_expiry["result"], Value::Null, "{label}: an expired entry reads as missing");
        assert!(stale_entry["result"].as_str().unwrap().contains("\"exp\""), "{label}: {stale_entry}");
        assert_eq!(deleted["error"], Value::Null, "{label}");
        assert_eq!(after_delete["result"], Value::Null, "{label}: a deleted entry reads as missing");
        assert_eq!(incremented["result"], 5, "{label}");
        assert_eq!(incremented["kv_calls"], 1, "{label}: an increment is one call");
        assert_eq!(decremented["result"], 3, "{label}");
    }
    // A label the component was not granted gives an error that names only the
    // operation and its kind. The failed open still counts as a call.
    let denied = shared_kv(&host, "undeclared/get/key", "").await;
    assert_eq!(denied, json!({"result": null, "error": "key-value open failed (access denied)", "kv_calls": 1}));
}

#[tokio::test(flavor = "multi_thread")]
async fn compare_and_swap_fails_after_interference() {
    let host = Host::start(fixture_options(1, API_TOKEN));

    for label in ["default", "cache"] {
        let key = unique("cas");
        let path = format!("/work/kv-cas/{label}/{key}");

        let first = host.request("POST", &path, &[], "one").await.json();
        let second = host.request("POST", &path, &[], "two").await.json();
        let lost = host.request("POST", &format!("{path}?interfere=other"), &[], "three").await.json();
        let stored = host.get(&format!("/work/kv/{label}/{key}")).await;

        assert_eq!(first, json!({"previous": null, "swapped": true}), "{label}");
        assert_eq!(second, json!({"previous": "one", "swapped": true}), "{label}");
        assert_eq!(lost, json!({"previous": "two", "swapped": false}), "{label}");
        assert_eq!(stored.text(), "other", "{label}: the interfering write stays");
    }
}

async fn admin_connection() -> mysql_async::Conn {
    mysql_async::Conn::new(mysql_async::Opts::from_url(MYSQL_ADMIN).unwrap())
        .await
        .expect("MariaDB is reachable as root on 127.0.0.1:3306")
}

/// Held by every test here whose hosts open MySQL connections. The host closes
/// a connection in the background after the request, so a host killed at the
/// end of one test can count as an aborted client in another test's window of
/// the server-wide `Aborted_clients`.
async fn mysql_tests_one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

async fn aborted_clients(conn: &mut mysql_async::Conn) -> u64 {
    let row: (String, String) = conn
        .query_first("SHOW GLOBAL STATUS LIKE 'Aborted_clients'")
        .await
        .unwrap()
        .unwrap();
    row.1.parse().unwrap()
}

async fn mysql(host: &Host, address: &str, statements: Value) -> Value {
    let body = json!({"address": address, "statements": statements}).to_string();
    let reply = host.request("POST", "/work/mysql", &[], body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_converts_values_like_spin() {
    let _mysql = mysql_tests_one_at_a_time().await;
    let mut admin = admin_connection().await;
    admin.query_drop("CREATE DATABASE IF NOT EXISTS host_fixture").await.unwrap();
    let table = format!("host_fixture.values_{}", std::process::id());
    let address = format!("{MYSQL_ADMIN}/host_fixture");

    with_and_without_reuse(fixture_options(1, API_TOKEN), |host, reuse| {
        let (table, address) = (format!("{table}_{reuse}"), address.clone());
        async move {
            let mut admin = admin_connection().await;
            let aborted_before = aborted_clients(&mut admin).await;

            let results = mysql(&host, &address, json!([
                {"kind": "execute", "sql": format!("DROP TABLE IF EXISTS {table}"), "params": []},
                {"kind": "execute", "sql": format!("CREATE TABLE {table} (
                    id BIGINT PRIMARY KEY, small TINYINT(1), count INT UNSIGNED,
                    name VARCHAR(50) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
                    name_key VARCHAR(50) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
                    raw VARBINARY(10), ratio DOUBLE, price DECIMAL(10,2), at DATETIME, note TEXT)"), "params": []},
                {"kind": "execute", "sql": format!("INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?, ?, 1.50, '2026-01-02 03:04:05', ?)"),
                    "params": [9007199254740993i64, true, 7, "José", "josé", {"binary": "00ff"}, 0.25, null]},
                {"kind": "query", "sql": format!("SELECT id, small, count, name, name_key, raw, ratio, note FROM {table}"), "params": []},
                {"kind": "query", "sql": format!("SELECT price FROM {table}"), "params": []},
                {"kind": "query", "sql": format!("SELECT at FROM {table}"), "params": []},
                {"kind": "query", "sql": format!("SELECT CAST(SUM(count) AS SIGNED) AS total FROM {table}"), "params": []},
                {"kind": "execute", "sql": format!("INSERT INTO {table} (id) VALUES (?)"), "params": [9007199254740993i64]},
            ])).await["results"].clone();

            let select = &results[3];
            assert_eq!(select["columns"], json!([
                ["id", "int64"], ["small", "int8"], ["count", "uint32"], ["name", "str"],
                ["name_key", "binary"], ["raw", "binary"], ["ratio", "floating64"], ["note", "str"]]));
            assert_eq!(select["rows"], json!([[
                {"int64": 9007199254740993i64}, {"int8": 1}, {"uint32": 7}, {"str": "José"},
                {"binary": "6a6f73c3a9"}, {"binary": "00ff"}, {"floating64": 0.25}, "null"]]));
            let decimal = results[4].to_string();
            assert!(decimal.contains("ValueConversionFailed") || decimal.contains("other"), "{decimal}");
            let datetime = results[5].to_string();
            assert!(datetime.contains("ValueConversionFailed") || datetime.contains("other"), "{datetime}");
            assert_eq!(results[6]["rows"], json!([[{"int64": 7}]]));
            let duplicate = results[7]["error"].as_str().unwrap();
            assert!(duplicate.contains("QueryFailed(\"Server(ServerError { code: 1062, message: "), "{duplicate}");

            let stored: Option<(i64, String)> = admin
                .query_first(format!("SELECT id, name FROM {table}"))
                .await
                .unwrap();
            assert_eq!(stored, Some((9007199254740993, "José".to_string())));
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(aborted_clients(&mut admin).await, aborted_before, "connections are closed cleanly");
            admin.query_drop(format!("DROP TABLE {table}")).await.unwrap();
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_streams_many_rows() {
    let _mysql = mysql_tests_one_at_a_time().await;
    let mut admin = admin_connection().await;
    admin.query_drop("CREATE DATABASE IF NOT EXISTS host_fixture").await.unwrap();
    let host = Host::start(fixture_options(1, API_TOKEN));

    let results = mysql(&host, &format!("{MYSQL_ADMIN}/host_fixture"), json!([
        {"kind": "query", "sql": "SELECT seq, REPEAT('x', 100) AS filler FROM seq_1_to_5000", "params": []},
        {"kind": "query", "sql": "SELECT CAST(? AS SIGNED) + 1 AS next", "params": [41]},
    ])).await["results"].clone();

    let rows = results[0]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 5000);
    assert_eq!(rows[0][0], json!({"uint64": 1}));
    assert_eq!(rows[4999][0], json!({"uint64": 5000}));
    assert_eq!(results[1]["rows"], json!([[{"int64": 42}]]), "the connection is usable after a long result");
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_address_outside_allow_list_rejected() {
    let host = Host::start(fixture_options(1, API_TOKEN));

    for address in ["mysql://root@127.0.0.2:3306/db", "mysql://root@127.0.0.1:3307/db", "mysql://root@localhost:3306/db"] {
        let reply = mysql(&host, address, json!([])).await;

        let error = reply["open_error"].as_str().unwrap_or_default();
        assert!(error.contains("ConnectionFailed"), "{address}: {reply}");
        assert!(error.contains("is not permitted"), "{address}: {reply}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn outbound_http_allowed_hosts_only() {
    let server = LoopbackServer::start();
    let other = LoopbackServer::start();
    with_and_without_reuse(fixture_options(server.port, API_TOKEN), |host, _| {
        let (allowed, denied) = (server.port, other.port);
        let requests = server.requests.clone();
        async move {
            let url = format!("http://127.0.0.1:{allowed}/resource");

            let ok = host.request("POST", "/work/outbound", &[("x-forward-header", "passed")], url).await.json();
            let denied = host
                .request("POST", "/work/outbound", &[], format!("http://127.0.0.1:{denied}/"))
                .await
                .json();
            let denied_name = host.request("POST", "/work/outbound", &[], "http://example.invalid/").await.json();

            assert_eq!((ok["status"].as_u64(), ok["body"].as_str()), (Some(200), Some("hello")), "{ok}");
            let received = requests.lock().unwrap().clone();
            assert!(received.iter().any(|r| r.contains("x-forwarded-test: passed")), "{received:?}");
            assert!(received.iter().any(|r| r.to_ascii_lowercase().contains(&format!("host: 127.0.0.1:{allowed}"))), "{received:?}");
            assert!(denied["error"].as_str().unwrap().contains("HttpRequestDenied"), "{denied}");
            assert!(denied_name["error"].as_str().unwrap().contains("HttpRequestDenied"), "{denied_name}");
        }
    })
    .await;
    assert!(other.requests.lock().unwrap().is_empty(), "nothing reached the disallowed server");
}

#[tokio::test(flavor = "multi_thread")]
async fn service_chaining_reaches_private_component() {
    with_and_without_reuse(fixture_options(1, API_TOKEN), |host, _| async move {
        let reply = host
            .request("POST", "/work/outbound", &[], "http://hidden.spin.internal/deep/path?x=1")
            .await
            .json();
        let chained = host.request("POST", "/work/outbound", &[], "http://fallback.spin.internal/").await.json();

        assert_eq!(reply["status"], 200, "{reply}");
        let echo: Value = serde_json::from_str(reply["body"].as_str().unwrap()).unwrap();
        assert_eq!(echo["component"], "hidden");
        assert_eq!(last_header(&echo, "spin-client-addr").as_deref(), Some("0.0.0.0:0"));
        assert_eq!(last_header(&echo, "spin-path-info").as_deref(), Some("/deep/path"));
        assert_eq!(last_header(&echo, "spin-matched-route").as_deref(), Some("/..."));
        assert_eq!(last_header(&echo, "spin-component-route").as_deref(), Some(""));
        assert!(chained["error"].as_str().unwrap().contains("HttpRequestDenied"), "not in the allow-list: {chained}");
        let logs = host.request_logs().await;
        assert!(logs.iter().any(|l| l["component"] == "hidden" && l["chained"] == true), "{logs:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn self_requests_reach_the_app() {
    with_and_without_reuse(fixture_options(1, API_TOKEN), |host, _| async move {
        let alt = host.request("POST", "/work/outbound", &[], "http://self.alt/echo/alt").await.json();
        let relative = host.request("POST", "/work/outbound", &[], "/echo/relative").await.json();

        assert_eq!(alt["status"], 200, "{alt}");
        let echo: Value = serde_json::from_str(alt["body"].as_str().unwrap()).unwrap();
        assert_eq!(echo["component"], "echo");
        assert_eq!(echo["path"], "/echo/alt");
        assert!(last_header(&echo, "spin-client-addr").unwrap().starts_with("127.0.0.1:"), "a real loopback connection");
        // wasmtime 44 cannot build a URI without an authority, so a relative
        // URL fails inside wasi:http before any host hook runs, under Spin too.
        assert!(relative["error"].as_str().unwrap().contains("HttpRequestUriInvalid"), "{relative}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn runaway_loop_gets_500() {
    let options = fixture_options(1, API_TOKEN).arg("--request-timeout").arg("1s");
    with_and_without_reuse(options, |host, _| async move {
        let host = std::sync::Arc::new(host);
        let started = Instant::now();
        let looping = tokio::spawn({
            let host = host.clone();
            async move { host.get("/work/loop").await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;

        for _ in 0..5 {
            assert_eq!(host.get("/echo/while-looping").await.status, 200);
            assert_eq!(host.get("/work/sleep?ms=5").await.status, 200, "the same component keeps serving");
        }
        let looped = looping.await.unwrap();

        assert_eq!(looped.status, 500);
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn body_cut_by_timeout_is_not_complete() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = Host::start(fixture_options(1, API_TOKEN).arg("--request-timeout").arg("1s"));

    let mut tcp = tokio::net::TcpStream::connect(host.addr).await.unwrap();
    tcp.write_all(b"GET /work/stream?chunks=30&ms=200 HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut bytes)).await;
    let response = String::from_utf8_lossy(&bytes);

    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("chunk 0"), "{response}");
    assert!(!response.contains("chunk 29"), "the timeout ends the body early: {response}");
    assert!(!response.ends_with("0\r\n\r\n"), "a cut body must not end like a complete one: {response:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_body_arrives_whole() {
    let host = Host::start(fixture_options(1, API_TOKEN));

    let reply = host.get("/work/stream?chunks=5&ms=20").await;

    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_hog_gets_500() {
    let options = fixture_options(1, API_TOKEN).arg("--max-instance-memory-mib").arg("64");
    with_and_without_reuse(options, |host, _| async move {
        let hog = host.get("/work/hog").await;
        let after = host.get("/work/sleep?ms=1").await;

        assert_eq!(hog.status, 500);
        assert_eq!(after.status, 200);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_stay_isolated() {
    with_and_without_reuse(fixture_options(1, API_TOKEN), |host, reuse| async move {
        let warm = host.get("/work/sleep?ms=1").await.json();

        // The second request starts once the first is awaiting its sleep, the
        // moment an instance accepts a concurrent request.
        let (a, b) = tokio::join!(
            host.request("GET", "/work/sleep?ms=600", &[("x-tag", "alpha")], ""),
            async {
                tokio::time::sleep(Duration::from_millis(150)).await;
                host.request("GET", "/work/sleep?ms=600", &[("x-tag", "beta")], "").await
            },
        );
        let (a, b) = (a.json(), b.json());

        assert_eq!((a["tag_before"].as_str(), a["tag_after"].as_str()), (Some("alpha"), Some("alpha")));
        assert_eq!((b["tag_before"].as_str(), b["tag_after"].as_str()), (Some("beta"), Some("beta")));
        let overlap = a["started_ms"].as_i64() < b["finished_ms"].as_i64() && b["started_ms"].as_i64() < a["finished_ms"].as_i64();
        assert!(overlap, "the two requests ran at the same time: {a} {b}");
        if reuse {
            assert_eq!(a["instance"], warm["instance"], "the warm instance serves both");
            assert_eq!(a["instance"], b["instance"], "one instance served both at once");
        } else {
            assert_ne!(a["instance"], b["instance"]);
            assert_ne!(a["instance"], warm["instance"]);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_instances_are_dropped_after_timeout() {
    let host = Host::start(fixture_options(1, API_TOKEN).arg("--idle-instance-timeout").arg("300ms"));

    let first = host.get("/echo/a").await.json();
    let soon = host.get("/echo/b").await.json();
    tokio::time::sleep(Duration::from_millis(900)).await;
    let later = host.get("/echo/c").await.json();

    assert_eq!(first["instance"], soon["instance"], "reused within the idle timeout");
    assert_ne!(first["instance"], later["instance"], "a new instance after the idle timeout");
    assert_eq!(later["served"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_serve_at_most_the_reuse_count() {
    let host = Host::start(fixture_options(1, API_TOKEN).arg("--max-instance-reuse-count").arg("3"));

    let mut instances = Vec::new();
    for _ in 0..7 {
        let echo = host.get("/echo/x").await.json();
        instances.push((echo["instance"].as_u64().unwrap(), echo["served"].as_u64().unwrap()));
    }

    let served: Vec<u64> = instances.iter().map(|(_, served)| *served).collect();
    assert_eq!(served, [1, 2, 3, 1, 2, 3, 1]);
    assert_eq!(instances[0].0, instances[2].0);
    assert_ne!(instances[2].0, instances[3].0);
    assert_ne!(instances[5].0, instances[6].0);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_reuse_count_caps_overlap() {
    let host = Host::start(fixture_options(1, API_TOKEN).arg("--max-instance-concurrent-reuse-count").arg("1"));
    host.get("/work/sleep?ms=1").await;

    let (a, b) = tokio::join!(host.get("/work/sleep?ms=400"), host.get("/work/sleep?ms=400"));

    assert_ne!(a.json()["instance"], b.json()["instance"], "one request at a time per instance");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_log_names_instance() {
    let host = Host::start(fixture_options(1, API_TOKEN));

    let first = host.get("/echo/a").await.json();
    let second = host.get("/echo/b").await.json();

    assert_eq!(first["instance"], second["instance"], "reused with Spin's defaults");
    let logs = host.request_logs().await;
    let echo_lines: Vec<&Value> = logs.iter().filter(|l| l["component"] == "echo").collect();
    assert_eq!(echo_lines.len(), 2);
    assert_eq!(echo_lines[0]["instance"], echo_lines[1]["instance"]);
    for line in echo_lines {
        assert_eq!(line["route"], "/echo/...");
        assert_eq!(line["status"], 200);
        assert!(line["latency_ms"].as_f64().unwrap() > 0.0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fault_switch_unavailable_and_hang() {
    let mut options = fixture_options(1, API_TOKEN);
    options.faults = true;
    let host = std::sync::Arc::new(Host::start(options));

    host.set_fault("echo", "unavailable").await;
    let unavailable = host.get("/echo/x").await;
    let unaffected = host.get("/users/1").await;
    host.set_fault("echo", "hang").await;
    let hanging = tokio::spawn({
        let host = host.clone();
        async move { host.get("/echo/y").await }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let still_hanging = !hanging.is_finished();
    host.set_fault("echo", "none").await;
    let released = tokio::time::timeout(Duration::from_secs(5), hanging).await.unwrap().unwrap();

    assert_eq!(unavailable.status, 503);
    assert_eq!(unavailable.header("retry-after"), Some("1"));
    assert_eq!(unaffected.status, 200);
    assert!(still_hanging, "a hanging component does not answer");
    assert_eq!(released.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn fault_switch_off_by_default() {
    let host = Host::start(fixture_options(1, API_TOKEN));

    assert!(host.fault_addr.is_none());
    assert!(
        !host.stderr_lines().iter().any(|l| l.contains("fault")),
        "no fault listener is mentioned"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn component_output_captured_per_component() {
    let host = Host::start(fixture_options(1, API_TOKEN));

    assert_eq!(host.get("/work/log").await.status, 204);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let stdout = std::fs::read_to_string(host.state_dir.join("logs/worker_stdout.txt")).unwrap();
    let stderr = std::fs::read_to_string(host.state_dir.join("logs/worker_stderr.txt")).unwrap();
    assert!(stdout.contains("fixture stdout line"), "{stdout}");
    assert!(stderr.contains("fixture stderr line"), "{stderr}");
    assert!(!stdout.contains("stderr"), "streams stay apart");
}

#[tokio::test(flavor = "multi_thread")]
async fn variables_resolve_and_report_errors() {
    let host = Host::start(fixture_options(1, API_TOKEN));

    let greeting = host.get("/work/variable/greeting").await;
    let token = host.get("/work/variable/token").await;
    let undefined = host.get("/work/variable/missing").await;
    let invalid = host.get("/work/variable/Bad-Name").await;

    assert_eq!((greeting.status, greeting.text().as_str()), (200, "hello from 127.0.0.1"));
    assert_eq!(token.text(), API_TOKEN);
    assert_eq!(undefined.status, 500);
    assert!(undefined.text().contains("Undefined"), "{}", undefined.text());
    assert_eq!(invalid.status, 500);
    assert!(invalid.text().contains("InvalidName"), "{}", invalid.text());
    let everything_logged = [host.log_lines(), host.stderr_lines()].concat().join("\n");
    assert!(!everything_logged.contains(API_TOKEN), "a secret value reached the host's output");
}

#[tokio::test(flavor = "multi_thread")]
async fn app_health_routes_answer() {
    let _mysql = mysql_tests_one_at_a_time().await;
    let host = Host::start(app_options());

    assert_eq!(host.get("/nowhere").await.status, 404);
    let unmatched = host.request_logs().await;
    assert!(
        unmatched.iter().any(|l| l["status"] == 404 && l["component"].is_null() && l["route"].is_null()),
        "requests no route matches are logged too: {unmatched:?}"
    );
    assert_eq!(host.get("/internal/profiles/anything").await.status, 404, "internal paths have no public route");
    assert_eq!(host.get("/.well-known/spin/health").await.status, 200);
    let info = host.get("/.well-known/spin/info").await;
    assert_eq!(info.header("content-type"), Some("application/json"));
    assert_eq!(info.json(), json!({"name": "conduit", "version": "0.1.0"}));
    let logs = host.request_logs().await;
    assert!(
        logs.iter().any(|l| l["route"] == "/.well-known/spin/..." && l["status"] == 200),
        "well-known requests are logged: {logs:?}"
    );
    for component in ["profiles", "feed", "payments", "notifications"] {
        let reply = host.get(&format!("/health/{component}")).await;
        let head = host.request("HEAD", &format!("/health/{component}"), &[], "").await;
        let wrong_method = host.request("POST", &format!("/health/{component}"), &[], "").await;

        assert_eq!((reply.status, reply.text().as_str()), (200, "up"), "{component}");
        assert!(reply.header("x-request-id").is_some(), "{component}: every response has a request id");
        assert_eq!((head.status, head.body.len()), (200, 0), "{component}: HEAD has no body");
        assert_eq!(wrong_method.status, 405, "{component}");
        assert_eq!(wrong_method.header("allow"), Some("GET, HEAD"), "{component}");
        assert_eq!(wrong_method.json(), json!({"errors": {"body": ["method not allowed"]}}), "{component}");
    }
    let unrouted = host.get("/api/articles/some-slug/no-such-part").await;
    assert_eq!(unrouted.status, 404, "feed's own pattern, but no route of feed");
    assert_eq!(unrouted.json(), json!({"errors": {"body": ["not found"]}}));
}

fn start_error(manifest: &str, env: &[(&str, &str)]) -> String {
    let dir = scratch_dir("startup");
    let path = dir.join("spin.toml");
    std::fs::write(&path, manifest.replace("FIXTURE", &wasm_path("fixture").display().to_string())).unwrap();
    let mut options = HostOptions::new(path);
    for (name, value) in env {
        options = options.env(name, *value);
    }
    match Host::try_start(options) {
        Ok(_) => panic!("the host started with a broken manifest:\n{manifest}"),
        Err(output) => output,
    }
}

const GOOD: &str = r#"
spin_manifest_version = 2
[application]
name = "startup"
[variables]
token = { required = true, secret = true }
[[trigger.http]]
route = "/a/..."
component = "alpha"
[component.alpha]
source = "FIXTURE"
allowed_outbound_hosts = ["http://alpha.spin.internal"]
[component.alpha.variables]
token = "{{ token }}"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn start_up_errors_name_the_cause() {
    let cases = [
        (GOOD.replace("[application]", "[application"), vec![], "invalid manifest"),
        (GOOD.replace("FIXTURE", "/nowhere/missing.wasm"), vec![("SPIN_VARIABLE_TOKEN", "t")], "does not exist"),
        (GOOD.replace("component = \"alpha\"", "component = \"beta\""), vec![], "`beta`, which the manifest does not define"),
        (GOOD.to_string(), vec![], "SPIN_VARIABLE_TOKEN"),
        (GOOD.replace("http://alpha.spin.internal", "http://beta.spin.internal"), vec![], "not a component of this application"),
        (GOOD.replace("[component.alpha.variables]", "key_value_stores = [\"nowhere\"]\n[component.alpha.variables]"), vec![("SPIN_VARIABLE_TOKEN", "t")], "`nowhere`, which the runtime config does not define"),
    ];

    for (manifest, env, expected) in cases {
        let output = start_error(&manifest, &env);

        assert!(output.contains(expected), "expected {expected:?} in:\n{output}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fault_switch_only_binds_loopback() {
    let options = fixture_options(1, API_TOKEN).arg("--test-fault-listen").arg("0.0.0.0:0");

    let output = match Host::try_start(options) {
        Ok(_) => panic!("the fault switch listened on a non-loopback address"),
        Err(output) => output,
    };

    assert!(output.contains("must be a loopback address"), "{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn non_utf8_header_gets_400() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = Host::start(fixture_options(1, API_TOKEN));

    let mut tcp = tokio::net::TcpStream::connect(host.addr).await.unwrap();
    tcp.write_all(b"GET /echo/x HTTP/1.1\r\nhost: localhost\r\nx-binary: \xff\xfe\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut bytes = Vec::new();
    tcp.read_to_end(&mut bytes).await.unwrap();
    let response = String::from_utf8_lossy(&bytes);

    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains("x-binary"), "the message names the header: {response}");
}

#[tokio::test(flavor = "multi_thread")]
async fn valid_start_up_manifest_starts() {
    let dir = scratch_dir("startup-good");
    let path = dir.join("spin.toml");
    std::fs::write(&path, GOOD.replace("FIXTURE", &wasm_path("fixture").display().to_string())).unwrap();

    let host = Host::start(HostOptions::new(path).env("SPIN_VARIABLE_TOKEN", "t"));

    assert_eq!(host.get("/a/b").await.status, 200);
}
