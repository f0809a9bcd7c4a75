//! The application manifest keeps the routing rules the architecture relies on.

use std::collections::BTreeMap;

use conduit_tests::workspace_root;

const COMPONENTS: [&str; 4] = ["profiles", "feed", "payments", "notifications"];

fn manifest() -> toml::Table {
    let text = std::fs::read_to_string(workspace_root().join("spin.toml")).unwrap();
    toml::from_str(&text).unwrap()
}

/// (route, component) for every public trigger.
fn public_routes() -> Vec<(String, String)> {
    manifest()["trigger"]["http"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| {
            let route = t["route"].as_str()?.to_string();
            Some((route, t["component"].as_str().unwrap().to_string()))
        })
        .collect()
}

#[test]
fn app_has_four_components() {
    let components: Vec<String> = manifest()["component"].as_table().unwrap().keys().cloned().collect();

    assert_eq!(components, ["feed", "notifications", "payments", "profiles"]);
}

#[test]
fn no_catch_all_routes() {
    for (route, component) in public_routes() {
        assert!(!matches!(route.as_str(), "/..." | "/" | "" | "/*"), "`{component}` has catch-all {route:?}");
        let depth = route.trim_end_matches("/...").split('/').filter(|s| !s.is_empty()).count();
        assert!(depth >= 2 || !route.ends_with("/..."), "`{component}`: wildcard {route:?} is too broad");
    }
}

#[test]
fn no_shared_route_patterns() {
    let mut owners: BTreeMap<String, Vec<String>> = BTreeMap::new();

    for (route, component) in public_routes() {
        owners.entry(route.trim_end_matches('/').to_string()).or_default().push(component);
    }

    for (route, components) in owners {
        assert_eq!(components.len(), 1, "{route} is claimed by {components:?}");
    }
}

#[test]
fn no_public_internal_routes() {
    for (route, component) in public_routes() {
        assert!(!route.starts_with("/internal"), "`{component}` exposes {route}");
    }
}

#[test]
fn ops_has_only_dispatch_paths() {
    let ops: Vec<(String, String)> = public_routes().into_iter().filter(|(r, _)| r.starts_with("/ops")).collect();

    let expected: Vec<(String, String)> = COMPONENTS
        .iter()
        .map(|c| (format!("/ops/{c}/dispatch"), c.to_string()))
        .collect();
    let mut ops_sorted = ops.clone();
    ops_sorted.sort();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(ops_sorted, expected_sorted);
}

#[test]
fn each_component_has_health_route() {
    let routes = public_routes();

    for component in COMPONENTS {
        let health = (format!("/health/{component}"), component.to_string());
        assert!(routes.contains(&health), "missing {health:?}");
    }
}

#[test]
fn secrets_and_hosts_stay_narrow() {
    // Secrets have no default, and each component gets exactly its outbound hosts.
    let manifest = manifest();

    for (name, variable) in manifest["variables"].as_table().unwrap() {
        if variable.get("secret").and_then(|s| s.as_bool()) == Some(true) {
            assert!(variable.get("default").is_none(), "secret variable `{name}` has a default");
        }
    }
    for (id, component) in manifest["component"].as_table().unwrap() {
        let hosts = component.get("allowed_outbound_hosts").and_then(|h| h.as_array()).cloned().unwrap_or_default();
        let hosts: Vec<&str> = hosts.iter().map(|host| host.as_str().unwrap()).collect();
        for host in &hosts {
            assert!(!host.contains('*'), "`{id}` allows a wildcard: {host}");
        }
        // Each component reaches its database, the components it pushes
        // events to or fetches from, and its own provider; nothing else.
        let database = "mysql://{{ mysql_host }}:{{ mysql_port }}";
        let expected: &[&str] = match id.as_str() {
            "profiles" => &[database, "http://feed.spin.internal", "http://payments.spin.internal", "http://notifications.spin.internal"],
            "feed" => &[database, "http://profiles.spin.internal", "http://notifications.spin.internal"],
            "payments" => &[database, "http://profiles.spin.internal", "http://notifications.spin.internal", "{{ payment_provider_url }}"],
            "notifications" => &[database, "http://profiles.spin.internal", "{{ email_provider_url }}"],
            other => panic!("unexpected component `{other}`"),
        };
        assert_eq!(hosts, expected, "`{id}`'s allowed_outbound_hosts");
        let stores = component["key_value_stores"].as_array().unwrap();
        assert_eq!(stores.len(), 1, "`{id}` uses one store label of its own");
        assert_eq!(stores[0].as_str(), Some(id.as_str()));
    }
}
