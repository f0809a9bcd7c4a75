//! API9:2023 Improper Inventory Management. The routes `spin.toml` declares
//! are exactly the documented set, every documented endpoint responds, and
//! no other path reaches a component: no old API version, debug or metrics
//! path, and no /internal/ path. The production ingress forwards only /api/ and /health/,
//! so the dispatch routes under /ops/ stay inside the cluster.
//! Also covered: tests/manifest.rs `no_catch_all_routes`, `no_public_internal_routes`, `ops_has_only_dispatch_paths`, `each_component_has_health_route`; tests/host.rs `app_health_routes_answer`.

use conduit_tests::{Host, app_options, register_user, unique_name, workspace_root};
use serde_json::json;

/// Every public route of `spin.toml` with its component. A new route must be
/// added here on purpose, once the README's component table and
/// walk-throughs document it.
const DOCUMENTED_ROUTES: [(&str, &str); 25] = [
    ("/api/users", "profiles"),
    ("/api/users/...", "profiles"),
    ("/api/user", "profiles"),
    ("/api/user/...", "profiles"),
    ("/api/profiles/...", "profiles"),
    ("/api/admin/users/...", "profiles"),
    ("/health/profiles", "profiles"),
    ("/ops/profiles/dispatch", "profiles"),
    ("/api/articles", "feed"),
    ("/api/articles/...", "feed"),
    ("/api/tags", "feed"),
    ("/health/feed", "feed"),
    ("/ops/feed/dispatch", "feed"),
    ("/api/wallet", "payments"),
    ("/api/wallet/...", "payments"),
    ("/api/tips", "payments"),
    ("/api/payments", "payments"),
    ("/api/payments/...", "payments"),
    ("/api/admin/ledger/...", "payments"),
    ("/health/payments", "payments"),
    ("/ops/payments/dispatch", "payments"),
    ("/api/notifications", "notifications"),
    ("/api/notifications/...", "notifications"),
    ("/health/notifications", "notifications"),
    ("/ops/notifications/dispatch", "notifications"),
];

/// Returns (route, component) for every trigger of `spin.toml`, sorted.
fn manifest_routes() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(workspace_root().join("spin.toml")).unwrap();
    let manifest: toml::Table = toml::from_str(&text).unwrap();
    let triggers = manifest["trigger"]["http"]
        .as_array()
        .expect("spin.toml has [[trigger.http]] entries");
    let mut routes: Vec<(String, String)> = triggers
        .iter()
        .map(|trigger| {
            let route = trigger["route"]
                .as_str()
                .unwrap_or_else(|| panic!("a trigger without a string route: {trigger}"));
            (route.to_string(), trigger["component"].as_str().unwrap().to_string())
        })
        .collect();
    routes.sort();
    routes
}

/// Reads the README's component table: each component with its route
/// patterns, such as `/api/users…` (a prefix) or `/api/tags` (exact).
fn readme_table() -> Vec<(String, Vec<String>)> {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let table = readme
        .lines()
        .skip_while(|line| !line.starts_with("| component | owns | routes |"))
        .skip(2)
        .take_while(|line| line.starts_with('|'));
    table
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let component = cells[1].trim_matches('`').to_string();
            let patterns = cells[3]
                .split(", ")
                .map(|pattern| pattern.trim_matches('`').to_string())
                .collect();
            (component, patterns)
        })
        .collect()
}

/// Checks whether a manifest route lies under a README pattern: `…` at the
/// end makes the pattern a prefix, otherwise it must match exactly.
fn covers(pattern: &str, route: &str) -> bool {
    match pattern.strip_suffix('…') {
        Some(prefix) => route.starts_with(prefix),
        None => route == pattern,
    }
}

#[test]
fn manifest_routes_are_documented() {
    let mut documented: Vec<(String, String)> = DOCUMENTED_ROUTES
        .iter()
        .map(|(route, component)| (route.to_string(), component.to_string()))
        .collect();
    documented.sort();
    let routes = manifest_routes();
    let table = readme_table();

    assert_eq!(routes, documented, "spin.toml's routes differ from the documented list");
    assert_eq!(table.len(), 4, "the README's table has a row per component: {table:?}");
    for (route, component) in &routes {
        let patterns = table
            .iter()
            .find(|(name, _)| name == component)
            .map(|(_, patterns)| patterns.clone())
            .unwrap_or_default();
        let platform_routes = [format!("/health/{component}"), format!("/ops/{component}/dispatch")];
        let in_table = patterns.iter().any(|pattern| covers(pattern, route));

        assert!(
            in_table || platform_routes.contains(route),
            "{route} of `{component}` is in no README pattern of it: {patterns:?}"
        );
    }
    for (component, patterns) in &table {
        for pattern in patterns {
            let used = routes
                .iter()
                .any(|(route, owner)| owner == component && covers(pattern, route));
            assert!(used, "the README's {pattern} of `{component}` matches no route in spin.toml");
        }
    }
}

/// What `infra/kubernetes/ingress.yaml` routes, read with plain string checks.
struct IngressPaths {
    /// The `- path:` values of its rules, in file order.
    paths: Vec<String>,
    path_types: Vec<String>,
    /// Every `name:` value: the ingress's own and each backend service's.
    names: Vec<String>,
    has_default_backend: bool,
}

fn ingress_paths() -> IngressPaths {
    let text = std::fs::read_to_string(workspace_root().join("infra/kubernetes/ingress.yaml")).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|line| !line.starts_with('#')).collect();
    let values = |key: &str| -> Vec<String> {
        lines
            .iter()
            .filter_map(|line| line.strip_prefix(key))
            .map(|value| value.trim().trim_matches('"').to_string())
            .collect()
    };
    IngressPaths {
        paths: values("- path:"),
        path_types: values("pathType:"),
        names: values("name:"),
        has_default_backend: lines.iter().any(|line| line.starts_with("defaultBackend:")),
    }
}

#[test]
fn ingress_forwards_api_and_health_only() {
    let ingress = ingress_paths();
    let forwarded = |route: &str| ingress.paths.iter().any(|prefix| route.starts_with(prefix.as_str()));

    assert_eq!(ingress.paths, ["/api/", "/health/"], "the ingress's paths");
    assert_eq!(ingress.path_types, ["Prefix", "Prefix"], "both paths are prefixes");
    assert!(
        !ingress.has_default_backend,
        "a default backend would forward every other path"
    );
    assert!(
        ingress.names.iter().all(|name| name == "conduit"),
        "every backend is the app's service: {:?}",
        ingress.names
    );
    for (route, component) in manifest_routes() {
        let expected = !route.starts_with("/ops/");
        assert_eq!(forwarded(&route), expected, "{route} of `{component}` forwarded from outside");
    }
    for unrouted in [
        "/internal/profiles/resync",
        "/ops/payments/dispatch",
        "/.well-known/spin/info",
        "/metrics",
        "/debug",
    ] {
        assert!(!forwarded(unrouted), "{unrouted} is forwarded from outside");
    }
}

#[tokio::test]
async fn live_routes_match_inventory() {
    let host = Host::start(app_options());
    let ann = register_user(&host, "invann").await;
    let article = json!({"article": {"title": unique_name("Inventory "), "description": "d", "body": "b", "tagList": []}});
    let published = host.send_json("POST", "/api/articles", Some(&ann.token), &article).await;
    let slug = published.json()["article"]["slug"].as_str().unwrap_or_default().to_string();
    let user = ann.username.as_str();
    let id = "00000000-0000-4000-8000-000000000000";

    // Every documented endpoint, without credentials: each returns its own
    // status, never the 404 of a path that no endpoint serves.
    let endpoints: Vec<(&str, String, u16)> = vec![
        ("POST", "/api/users".into(), 422),
        ("POST", "/api/users/login".into(), 422),
        ("POST", "/api/users/refresh".into(), 422),
        ("GET", "/api/user".into(), 401),
        ("PUT", "/api/user".into(), 401),
        ("GET", format!("/api/profiles/{user}"), 200),
        ("POST", format!("/api/profiles/{user}/follow"), 401),
        ("DELETE", format!("/api/profiles/{user}/follow"), 401),
        ("POST", "/api/user/logout-all".into(), 401),
        ("POST", "/api/user/email-verification".into(), 401),
        ("POST", "/api/users/verify-email".into(), 422),
        ("PUT", format!("/api/admin/users/{user}/roles"), 401),
        ("DELETE", format!("/api/admin/users/{user}"), 401),
        ("GET", "/api/articles".into(), 200),
        ("POST", "/api/articles".into(), 401),
        ("GET", "/api/articles/feed".into(), 401),
        ("GET", format!("/api/articles/{slug}"), 200),
        ("PUT", format!("/api/articles/{slug}"), 401),
        ("DELETE", format!("/api/articles/{slug}"), 401),
        ("GET", format!("/api/articles/{slug}/comments"), 200),
        ("POST", format!("/api/articles/{slug}/comments"), 401),
        ("DELETE", format!("/api/articles/{slug}/comments/1"), 401),
        ("POST", format!("/api/articles/{slug}/favorite"), 401),
        ("DELETE", format!("/api/articles/{slug}/favorite"), 401),
        ("GET", "/api/tags".into(), 200),
        ("GET", "/api/wallet".into(), 401),
        ("POST", "/api/wallet/top-ups".into(), 401),
        ("POST", "/api/tips".into(), 401),
        ("GET", "/api/payments".into(), 401),
        ("GET", format!("/api/payments/{id}"), 401),
        ("POST", format!("/api/payments/{id}/refund"), 401),
        ("GET", "/api/admin/ledger/check".into(), 401),
        ("GET", "/api/notifications".into(), 401),
        ("GET", "/api/notifications/unread-count".into(), 401),
        ("POST", "/api/notifications/read-all".into(), 401),
        ("GET", "/api/notifications/preferences".into(), 401),
        ("PUT", "/api/notifications/preferences".into(), 401),
        ("POST", format!("/api/notifications/{id}/read"), 401),
        ("GET", "/api/notifications/unsubscribe".into(), 422),
        ("POST", "/api/notifications/unsubscribe".into(), 422),
    ];
    for (method, path, status) in &endpoints {
        let headers = [("content-type", "application/json")];
        let reply = host.request(method, path, &headers, "{}").await;

        assert_eq!(reply.status, *status, "{method} {path}: {}", reply.text());
    }
    for component in ["profiles", "feed", "payments", "notifications"] {
        let health = host.get(&format!("/health/{component}")).await;
        let dispatch = host.request("POST", &format!("/ops/{component}/dispatch"), &[], "").await;
        let webhook_form = [("content-type", "application/x-www-form-urlencoded")];
        let webhook = host
            .request("POST", "/api/payments/webhooks/provider", &webhook_form, "id=tr_unknown0000")
            .await;

        assert_eq!(health.status, 200, "/health/{component}: {}", health.text());
        assert_eq!(
            dispatch.status,
            401,
            "/ops/{component}/dispatch without the scheduler token: {}",
            dispatch.text()
        );
        assert_eq!(webhook.status, 200, "the provider's webhook: {}", webhook.text());
    }

    // Paths inside a component's routes that no endpoint serves: the
    // component's 404 in the error envelope, with or without a token.
    let component_paths: Vec<String> = [
        "/api/users/debug",
        "/api/users/v1/login",
        "/api/user/settings",
        "/api/user/email-verification/resend",
        "/api/profiles/",
        "/api/profiles/PROFILE/follow/all",
        "/api/admin/users/",
        "/api/admin/users/a/roles/b",
        "/api/articles/feed/debug/all",
        "/api/articles/SLUG/comments/1/replies",
        "/api/wallet/debug",
        "/api/wallet/top-ups/all",
        "/api/payments/webhooks/provider/test",
        "/api/admin/ledger/dump",
        "/api/admin/ledger/check/all",
        "/api/notifications/debug/all",
        "/api/notifications/preferences/all/x",
    ]
    .iter()
    .map(|path| path.replace("PROFILE", user).replace("SLUG", &slug))
    .collect();
    for path in &component_paths {
        for token in [None, Some(ann.token.as_str())] {
            let reply = host.send("GET", path, token).await;

            assert_eq!(reply.status, 404, "GET {path} (token: {}): {}", token.is_some(), reply.text());
            assert_eq!(reply.json(), json!({"errors": {"body": ["not found"]}}), "GET {path}");
        }
    }

    // Old versions, debug, metrics and documentation paths, and the paths
    // only service chaining reaches: no route matches, so the host returns
    // its empty 404 and no component runs.
    let unrouted = [
        "/api",
        "/api/",
        "/api/v1/users",
        "/api/v2/articles",
        "/v1/api/articles",
        "/api/debug",
        "/api/metrics",
        "/api/health",
        "/api/status",
        "/api/docs",
        "/api/swagger.json",
        "/api/openapi.json",
        "/api/graphql",
        "/api/admin",
        "/api/admin/config",
        "/api/internal/profiles/resync",
        "/debug",
        "/debug/pprof",
        "/metrics",
        "/status",
        "/admin",
        "/swagger",
        "/openapi.json",
        "/graphql",
        "/.env",
        "/spin.toml",
        "/health",
        "/health/db",
        "/health/all",
        "/ops/profiles/resync",
        "/ops/metrics",
        "/internal/profiles/resync",
        "/internal/feed/events",
        "/internal/payments/events",
        "/internal/notifications/events",
    ];
    for path in unrouted {
        for method in ["GET", "POST"] {
            let reply = host.request(method, path, &[], "").await;

            assert_eq!(reply.status, 404, "{method} {path}: {}", reply.text());
            assert!(reply.body.is_empty(), "{method} {path} has an empty body: {}", reply.text());
            assert_eq!(reply.header("x-request-id"), None, "{method} {path} reached no component");
        }
    }
}
