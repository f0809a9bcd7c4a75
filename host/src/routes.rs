//! Spin's HTTP routing: exact routes, `:name` parameters and trailing `/...`
//! wildcards, with the most specific pattern winning (the same matcher crate
//! Spin uses), and the `spin-*` request headers Spin computes for a match.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::{Result, anyhow, bail};

/// Routes of the whole application, built once at start-up.
pub struct Router {
    inner: routefinder::Router<RouteEntry>,
}

#[derive(Debug, Clone)]
struct RouteEntry {
    component: String,
    /// The route as written in the manifest.
    raw: String,
}

/// The outcome of routing one request path.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    pub component: String,
    pub raw_route: String,
    pub path_info: String,
    pub named: BTreeMap<String, String>,
}

impl Router {
    /// Builds the router. Two triggers with the same route are an error here,
    /// where Spin keeps the last one and warns: a silent override hides a bug.
    pub fn build<'a>(routes: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        let mut inner = routefinder::Router::new();
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for (route, component) in routes {
            let based = sanitize(route);
            if let Some(previous) = seen.insert(based.clone(), component.to_string()) {
                bail!("route {route:?} is claimed by both `{previous}` and `{component}`");
            }
            let spec = if let Some(prefix) = based.strip_suffix("/...") {
                format!("{prefix}/*")
            } else {
                based.clone()
            };
            let spec: routefinder::RouteSpec = spec
                .as_str()
                .try_into()
                .map_err(|e| anyhow!("route {route:?} of `{component}` is invalid: {e}"))?;
            inner
                .add(
                    spec,
                    RouteEntry {
                        component: component.to_string(),
                        raw: route.to_string(),
                    },
                )
                .map_err(|e| anyhow!("route {route:?} of `{component}`: {e}"))?;
        }
        Ok(Self { inner })
    }

    pub fn route(&self, path: &str) -> Option<RouteMatch> {
        let found = self.inner.best_match(path)?;
        let entry = found.handler();
        let captures = found.captures();
        let named = captures
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        let path_info = match captures.wildcard() {
            None => String::new(),
            Some(rest) => match (rest.is_empty(), path.ends_with('/')) {
                (true, false) => String::new(),
                (true, true) => "/".to_string(),
                (false, false) => format!("/{rest}"),
                (false, true) => format!("/{rest}/"),
            },
        };
        Some(RouteMatch {
            component: entry.component.clone(),
            raw_route: entry.raw.clone(),
            path_info,
            named,
        })
    }
}

impl RouteMatch {
    /// Builds the match of a chained request, which Spin routes as if matched by `/...`.
    pub fn chained(component: &str, path: &str) -> Self {
        Self {
            component: component.to_string(),
            raw_route: "/...".to_string(),
            path_info: path.to_string(),
            named: BTreeMap::new(),
        }
    }

    /// Computes the `spin-*` headers, in the order Spin appends them after the client's headers.
    pub fn spin_headers(
        &self,
        scheme: &str,
        host: &str,
        path_and_query: &str,
        client_addr: SocketAddr,
    ) -> Vec<(String, String)> {
        let matched = sanitize(&self.raw_route);
        let component_route = self
            .raw_route
            .strip_suffix("/...")
            .unwrap_or(&self.raw_route)
            .to_string();
        let mut headers = vec![
            ("spin-path-info".to_string(), self.path_info.clone()),
            (
                "spin-full-url".to_string(),
                format!("{scheme}://{host}{path_and_query}"),
            ),
            ("spin-matched-route".to_string(), matched),
            ("spin-base-path".to_string(), "/".to_string()),
            ("spin-raw-component-route".to_string(), self.raw_route.clone()),
            ("spin-component-route".to_string(), component_route),
            ("spin-client-addr".to_string(), client_addr.to_string()),
        ];
        for (name, value) in &self.named {
            headers.push((
                format!("spin-path-match-{}", name.to_ascii_lowercase().replace('_', "-")),
                value.clone(),
            ));
        }
        headers
    }
}

/// Spin joins the base path `/` with the route and drops a trailing slash.
fn sanitize(route: &str) -> String {
    let absolute = if route.starts_with('/') {
        route.to_string()
    } else {
        format!("/{route}")
    };
    absolute.strip_suffix('/').unwrap_or(&absolute).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::build([
            ("/...", "fallback"),
            ("/api/...", "api"),
            ("/api/users", "users"),
            ("/api/users/:id", "user"),
            ("/api/users/:id/...", "user-tree"),
            ("/health/feed", "feed"),
        ])
        .unwrap()
    }

    #[test]
    fn router_prefers_most_specific_route() {
        let r = router();

        assert_eq!(r.route("/api/users").unwrap().component, "users");
        assert_eq!(r.route("/api/users/42").unwrap().component, "user");
        assert_eq!(r.route("/api/users/42/posts").unwrap().component, "user-tree");
        assert_eq!(r.route("/api/other/x").unwrap().component, "api");
        assert_eq!(r.route("/elsewhere").unwrap().component, "fallback");
        assert_eq!(r.route("/health/feed").unwrap().component, "feed");
    }

    #[test]
    fn path_info_and_parameters_follow_spin() {
        let r = router();

        let m = r.route("/api/users/42/posts/7").unwrap();
        assert_eq!(m.path_info, "/posts/7");
        assert_eq!(m.named["id"], "42");
        assert_eq!(r.route("/api/x/").unwrap().path_info, "/x/");
        assert_eq!(r.route("/api").unwrap().path_info, "");
        assert_eq!(r.route("/api/users").unwrap().path_info, "");
    }

    #[test]
    fn exact_routes_match_nothing_longer() {
        let r = Router::build([("/health/feed", "feed")]).unwrap();

        assert!(r.route("/health/feed/x").is_none());
        assert!(r.route("/health").is_none());
    }

    #[test]
    fn router_rejects_duplicate_route() {
        assert!(Router::build([("/a", "x"), ("/a/", "y")]).is_err());
    }

    #[test]
    fn spin_headers_match_spin_for_a_wildcard_route() {
        let m = Router::build([("/foo/:userid/...", "c")]).unwrap().route("/foo/42/bar").unwrap();
        let addr: SocketAddr = "127.0.0.1:8777".parse().unwrap();

        let headers: BTreeMap<_, _> = m
            .spin_headers("https", "example.test", "/foo/42/bar?k=v", addr)
            .into_iter()
            .collect();

        assert_eq!(headers["spin-full-url"], "https://example.test/foo/42/bar?k=v");
        assert_eq!(headers["spin-path-info"], "/bar");
        assert_eq!(headers["spin-matched-route"], "/foo/:userid/...");
        assert_eq!(headers["spin-base-path"], "/");
        assert_eq!(headers["spin-raw-component-route"], "/foo/:userid/...");
        assert_eq!(headers["spin-component-route"], "/foo/:userid");
        assert_eq!(headers["spin-client-addr"], "127.0.0.1:8777");
        assert_eq!(headers["spin-path-match-userid"], "42");
    }
}
