//! Rate limits, counted in the component's key-value store through its
//! atomic increment only.
//!
//! Each rule is a fixed window: `<limit>/<seconds>` from a Spin variable.
//! A request adds one to the counter `rl:<rule>:<subject>:<window start>`
//! and is rejected with `429`, `Retry-After` (the seconds to the window's
//! end) and the `RateLimit` and `RateLimit-Policy` headers once the count
//! passes the limit. The headers go on admitted responses too. Counters are
//! never read or written any other way, and each component counts its own
//! routes in its own store.
//!
//! Rules:
//! - `rate_limit_address`: every request to an `/api/` route, per client address;
//! - `rate_limit_auth`: registration, login, refresh and email verification,
//!   per client address, on top of the first;
//! - `rate_limit_user_writes`: every write (not `GET` or `HEAD`) per
//!   authenticated user, counted once the token is verified ([`per_user`]).
//!
//! The client address is the one the host recorded for the connection: the
//! last `spin-client-addr` header, which Spin appends after the client's own
//! headers. `X-Forwarded-For` counts only when that address is one of
//! `trusted_proxies`; then the nearest address in it that is not a trusted
//! proxy is the client. Calls between components (service chaining) use
//! `/internal/` routes, which have no limits, like health and dispatch.
//!
//! While the store fails, registration, login and the other `rate_limit_auth`
//! routes get `503` with `Retry-After`, since they are what guessing attacks
//! aim at. Everything else proceeds unlimited, noted in its log line.
//!
//! NOTE: counters of past windows stay until the store evicts them (the
//! production stores run `allkeys-lru`; the store has no expiry).

use std::net::IpAddr;
use std::rc::Rc;

use http::HeaderMap;

use crate::config::{self, ConfigError};
use crate::error::ApiError;
use crate::http::Ctx;
use crate::kv::Kv;

/// A fixed-window rule: at most `limit` requests per `window_seconds`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: &'static str,
    pub limit: u64,
    pub window_seconds: u64,
}

impl Rule {
    /// Parses `<limit>/<seconds>`, both whole numbers of at least 1, the window at most a day.
    pub fn parse(name: &'static str, variable: &str, text: &str) -> Result<Self, ConfigError> {
        let problem = || ConfigError::new(variable, "must be <limit>/<seconds>, such as 10/60");
        let (limit, window) = text.trim().split_once('/').ok_or_else(problem)?;
        let limit: u64 = limit.trim().parse().map_err(|_| problem())?;
        let window_seconds: u64 = window.trim().parse().map_err(|_| problem())?;
        if limit == 0 || window_seconds == 0 || window_seconds > 86_400 {
            return Err(problem());
        }
        Ok(Self { name, limit, window_seconds })
    }
}

/// The kind of request a rule set applies to, by method and path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Registration, login, refresh and email verification.
    Auth,
    Write,
    Read,
}

/// Classifies a request; `None` for routes without limits (anything
/// outside `/api/`, and CORS preflights).
pub fn class_of(method: &str, path: &str) -> Option<Class> {
    if !path.starts_with("/api/") || method == "OPTIONS" {
        return None;
    }
    let auth = matches!(
        path,
        "/api/users" | "/api/users/login" | "/api/users/refresh" | "/api/users/verify-email" | "/api/user/email-verification"
    );
    Some(match (auth, method) {
        (true, _) => Class::Auth,
        (false, "GET" | "HEAD") => Class::Read,
        (false, _) => Class::Write,
    })
}

/// The rules and trusted proxies of a component, from its variables.
#[derive(Debug, Clone)]
pub struct Limits {
    pub address: Rule,
    pub auth: Rule,
    pub user_writes: Rule,
    pub trusted_proxies: Vec<IpAddr>,
}

impl Limits {
    pub async fn load() -> Result<Self, ConfigError> {
        let rule = async |name, variable| Rule::parse(name, variable, &config::required(variable).await?);
        Ok(Self {
            address: rule("address", "rate_limit_address").await?,
            auth: rule("auth", "rate_limit_auth").await?,
            user_writes: rule("user-writes", "rate_limit_user_writes").await?,
            trusted_proxies: parse_proxies(&config::declared("trusted_proxies").await?)?,
        })
    }
}

/// Parses a comma-separated list of IP addresses (possibly empty).
pub fn parse_proxies(text: &str) -> Result<Vec<IpAddr>, ConfigError> {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| entry.parse().map_err(|_| ConfigError::new("trusted_proxies", "must list IP addresses, separated by commas")))
        .collect()
}

/// Finds the client's address: the host's record of the connection, or,
/// when that is a trusted proxy, the nearest untrusted address the proxies
/// added to `X-Forwarded-For`. `None` when the host recorded none.
pub fn client_address(headers: &HeaderMap, trusted_proxies: &[IpAddr]) -> Option<IpAddr> {
    let recorded = headers.get_all("spin-client-addr").iter().next_back()?.to_str().ok()?;
    let peer: IpAddr = match recorded.parse::<std::net::SocketAddr>() {
        Ok(socket) => socket.ip(),
        Err(_) => recorded.parse().ok()?,
    };
    if !trusted_proxies.contains(&peer) {
        return Some(peer);
    }
    // Proxies append: read from the right, past every trusted proxy. A list
    // with anything but addresses in it is ignored as a whole.
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("?").split(',').map(|entry| entry.trim().parse().ok()).collect::<Vec<_>>())
        .collect::<Option<Vec<IpAddr>>>()
        .unwrap_or_default();
    Some(forwarded.into_iter().rev().find(|address| !trusted_proxies.contains(address)).unwrap_or(peer))
}

/// A counter's state after one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    pub count: u64,
    /// Seconds until the window ends.
    pub reset: u64,
}

/// Returns the key and reset of `rule`'s current window for `subject` at `now` (Unix seconds).
pub fn window(rule: &Rule, subject: &str, now: u64) -> (String, u64) {
    let start = now - now % rule.window_seconds;
    (format!("rl:{}:{subject}:{start}", rule.name), start + rule.window_seconds - now)
}

/// Formats one rule's entries of the `RateLimit-Policy` and `RateLimit` headers.
pub fn header_entries(rule: &Rule, counted: Counted) -> (String, String) {
    let remaining = rule.limit.saturating_sub(counted.count);
    (
        format!("\"{}\";q={};w={}", rule.name, rule.limit, rule.window_seconds),
        format!("\"{}\";r={remaining};t={}", rule.name, counted.reset),
    )
}

fn count(kv: &Kv, rule: &Rule, subject: &str) -> Result<Counted, crate::kv::KvError> {
    let now = (crate::time::now_micros() / 1_000_000) as u64;
    let (key, reset) = window(rule, subject, now);
    let count = kv.increment(&key, 1)?;
    Ok(Counted { count: count.max(0) as u64, reset })
}

/// Counts a request under `rules` for `subject`, sets the headers, and
/// refuses it when any count passed its limit. A store failure is
/// `Err(None)`; the caller decides what it means.
fn apply(ctx: &Ctx, kv: &Kv, rules: &[&Rule], subject: &str) -> Result<(), Option<ApiError>> {
    let mut policies = Vec::new();
    let mut states = Vec::new();
    let mut rejected = None;
    for rule in rules {
        let counted = count(kv, rule, subject).map_err(|_| None)?;
        let (policy, state) = header_entries(rule, counted);
        policies.push(policy);
        states.push(state);
        if counted.count > rule.limit && rejected.is_none() {
            rejected = Some(counted.reset.max(1));
        }
    }
    ctx.add_response_header("ratelimit-policy", policies.join(", "));
    ctx.add_response_header("ratelimit", states.join(", "));
    match rejected {
        Some(wait) => Err(Some(ApiError::TooManyRequests {
            message: "too many requests; retry after the time in Retry-After".into(),
            retry_after_seconds: wait,
        })),
        None => Ok(()),
    }
}

/// Admits a request of `class` under the per-address rules, before its
/// handler runs; a write also arms [`per_user`]. See the module comment for
/// what a store failure does.
pub async fn admit(ctx: &Ctx, headers: &HeaderMap, class: Class) -> Result<(), ApiError> {
    let limits = Rc::new(Limits::load().await?);
    if class == Class::Write {
        *ctx.limits.borrow_mut() = Some(limits.clone());
    }
    let Some(address) = client_address(headers, &limits.trusted_proxies) else { return Ok(()) };
    let kv = Kv::new(ctx.component, ctx.stats.clone());
    let rules: Vec<&Rule> = match class {
        Class::Auth => vec![&limits.address, &limits.auth],
        Class::Write | Class::Read => vec![&limits.address],
    };
    match apply(ctx, &kv, &rules, &address.to_string()) {
        Ok(()) => Ok(()),
        Err(Some(rejected)) => Err(rejected),
        Err(None) if class == Class::Auth => {
            Err(ApiError::Unavailable("rate-limit store unavailable, so sign-in is rejected; retry later".into()))
        }
        Err(None) => {
            ctx.note_error("rate-limit store failed; request not limited");
            Ok(())
        }
    }
}

/// Counts a write of an authenticated user under `rate_limit_user_writes`;
/// called once the token is verified. Does nothing for reads. A store
/// failure lets the write through, noted in the log line.
pub fn per_user(ctx: &Ctx, user_id: &str) -> Result<(), ApiError> {
    let Some(limits) = ctx.limits.borrow().clone() else { return Ok(()) };
    let kv = Kv::new(ctx.component, ctx.stats.clone());
    match apply(ctx, &kv, &[&limits.user_writes], &format!("user:{user_id}")) {
        Ok(()) => Ok(()),
        Err(Some(rejected)) => Err(rejected),
        Err(None) => {
            ctx.note_error("rate-limit store failed; write not limited");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn rules_parse_strictly() {
        assert_eq!(Rule::parse("auth", "v", " 10 / 60 ").unwrap(), Rule { name: "auth", limit: 10, window_seconds: 60 });
        for bad in ["", "10", "0/60", "10/0", "10/86401", "x/60", "-1/60", "10/60/2"] {
            assert!(Rule::parse("auth", "v", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn classes_follow_method_and_path() {
        assert_eq!(class_of("POST", "/api/users/login"), Some(Class::Auth));
        assert_eq!(class_of("POST", "/api/users"), Some(Class::Auth));
        assert_eq!(class_of("GET", "/api/articles"), Some(Class::Read));
        assert_eq!(class_of("DELETE", "/api/articles/x"), Some(Class::Write));
        assert_eq!(class_of("OPTIONS", "/api/articles"), None);
        assert_eq!(class_of("POST", "/internal/feed/events"), None);
        assert_eq!(class_of("POST", "/ops/feed/dispatch"), None);
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn client_address_trusts_forwarding_from_proxies_only() {
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        // A client's own spin-client-addr comes first; the host's is last.
        let direct = headers(&[("spin-client-addr", "9.9.9.9:1"), ("x-forwarded-for", "8.8.8.8"), ("spin-client-addr", "203.0.113.7:5000")]);
        assert_eq!(client_address(&direct, &[proxy]), "203.0.113.7".parse().ok());

        let proxied = headers(&[("x-forwarded-for", "1.1.1.1, 198.51.100.2, 10.0.0.5"), ("spin-client-addr", "10.0.0.5:443")]);
        assert_eq!(client_address(&proxied, &[proxy]), "198.51.100.2".parse().ok());
        assert_eq!(client_address(&proxied, &[]), "10.0.0.5".parse().ok(), "an untrusted peer's header is ignored");

        let garbled = headers(&[("x-forwarded-for", "not-an-ip"), ("spin-client-addr", "10.0.0.5:443")]);
        assert_eq!(client_address(&garbled, &[proxy]), "10.0.0.5".parse().ok());
        assert_eq!(client_address(&headers(&[]), &[proxy]), None);
    }

    #[test]
    fn windows_are_fixed_and_headers_count_down() {
        let rule = Rule { name: "auth", limit: 3, window_seconds: 60 };
        assert_eq!(window(&rule, "1.2.3.4", 1_000_030), ("rl:auth:1.2.3.4:1000020".to_string(), 50));
        assert_eq!(
            header_entries(&rule, Counted { count: 2, reset: 50 }),
            ("\"auth\";q=3;w=60".to_string(), "\"auth\";r=1;t=50".to_string())
        );
        assert_eq!(header_entries(&rule, Counted { count: 9, reset: 5 }).1, "\"auth\";r=0;t=5");
    }
}
