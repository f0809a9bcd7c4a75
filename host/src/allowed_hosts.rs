//! `allowed_outbound_hosts`: the network capability of each component. Entries
//! are `<scheme>://<host>[:<port>]` with `*` wildcards, as Spin reads them; an
//! entry may be a `{{ variable }}` template resolved once at start-up.

use std::net::IpAddr;

use anyhow::{Context, Result, bail};

/// The service-chaining domain: `http://<component>.spin.internal`.
pub const CHAINING_SUFFIX: &str = ".spin.internal";

/// A component's resolved allow-list.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    scheme: Option<String>,
    host: HostPattern,
    port: PortPattern,
}

#[derive(Debug, Clone, PartialEq)]
enum HostPattern {
    Any,
    /// `*.example.com`, stored as `.example.com`.
    AnySubdomain(String),
    /// `self`: relative requests back to this application.
    ToSelf,
    Literal(String),
}

#[derive(Debug, Clone, PartialEq)]
enum PortPattern {
    Any,
    Range(u16, u16),
}

impl AllowedHosts {
    /// Parses resolved entries (templates already expanded).
    pub fn parse(entries: &[String]) -> Result<Self> {
        let entries = entries
            .iter()
            .map(|entry| Entry::parse(entry).with_context(|| format!("allowed host {entry:?}")))
            .collect::<Result<_>>()?;
        Ok(Self { entries })
    }

    /// Checks whether `url` may be reached. A URL without a scheme takes `default_scheme`.
    pub fn allows_url(&self, url: &str, default_scheme: &str) -> bool {
        let Some(target) = Target::parse(url, default_scheme) else {
            return false;
        };
        self.entries.iter().any(|entry| entry.allows(&target))
    }

    /// Checks whether requests back to this application (`self`) are allowed.
    pub fn allows_self(&self) -> bool {
        self.entries
            .iter()
            .any(|entry| matches!(entry.host, HostPattern::Any | HostPattern::ToSelf))
    }
}

struct Target {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Target {
    fn parse(url: &str, default_scheme: &str) -> Option<Self> {
        let with_scheme = if url.contains("://") {
            url.to_string()
        } else {
            format!("{default_scheme}://{url}")
        };
        let parsed = url::Url::parse(&with_scheme).ok()?;
        let host = match parsed.host()? {
            url::Host::Domain(domain) => domain.to_ascii_lowercase(),
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => ip.to_string(),
        };
        Some(Self {
            scheme: parsed.scheme().to_string(),
            host,
            port: parsed.port(),
        })
    }
}

impl Entry {
    fn parse(entry: &str) -> Result<Self> {
        let entry = entry.trim();
        let Some((scheme, rest)) = entry.split_once("://") else {
            bail!("no scheme: write <scheme>://<host>[:<port>], with `*` wildcards where needed");
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            bail!("an allowed host cannot have a path");
        }
        let (host, port) = split_host_port(rest);

        let scheme = match scheme {
            "*" => None,
            s if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphabetic()) => Some(s.to_string()),
            _ => bail!("scheme must be `*` or letters only"),
        };
        let port = match port {
            None => {
                let Some(scheme) = &scheme else {
                    bail!("a port is required when the scheme is `*`");
                };
                let Some(port) = well_known_port(scheme) else {
                    bail!("scheme {scheme:?} has no default port; give one");
                };
                PortPattern::Range(port, port + 1)
            }
            Some("*") => PortPattern::Any,
            Some(port) => match port.split_once("..") {
                Some((start, end)) => PortPattern::Range(start.parse()?, end.parse()?),
                None => {
                    let port: u16 = port.parse().context("port is not a number")?;
                    PortPattern::Range(port, port.saturating_add(1))
                }
            },
        };
        let host = match host {
            "*" => HostPattern::Any,
            "self" | "self.alt" => HostPattern::ToSelf,
            h if h.starts_with("*.") => {
                let domain = &h[1..];
                if domain[1..].contains('*') {
                    bail!("wildcards are allowed only as a prefix");
                }
                HostPattern::AnySubdomain(domain.to_ascii_lowercase())
            }
            h if h.contains('*') => bail!("wildcards are allowed only as a prefix"),
            "" => bail!("host is empty"),
            h => HostPattern::Literal(normalise_literal(h)),
        };
        Ok(Self { scheme, host, port })
    }

    fn allows(&self, target: &Target) -> bool {
        let scheme_ok = self.scheme.as_deref().is_none_or(|s| s == target.scheme);
        let host_ok = match &self.host {
            HostPattern::Any => true,
            HostPattern::AnySubdomain(suffix) => {
                target.host.parse::<IpAddr>().is_err() && target.host.ends_with(suffix.as_str())
            }
            HostPattern::Literal(literal) => *literal == target.host,
            HostPattern::ToSelf => false,
        };
        let port_ok = match self.port {
            PortPattern::Any => true,
            PortPattern::Range(start, end) => {
                match target.port.or_else(|| well_known_port(&target.scheme)) {
                    Some(port) => (start..end).contains(&port),
                    None => false,
                }
            }
        };
        scheme_ok && host_ok && port_ok
    }
}

fn split_host_port(rest: &str) -> (&str, Option<&str>) {
    if let Some(inner) = rest.strip_prefix('[') {
        // [ipv6]:port
        if let Some((host, after)) = inner.split_once(']') {
            return (host, after.strip_prefix(':'));
        }
    }
    match rest.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (rest, None),
    }
}

fn normalise_literal(host: &str) -> String {
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => host.to_ascii_lowercase(),
    }
}

fn well_known_port(scheme: &str) -> Option<u16> {
    Some(match scheme {
        "http" => 80,
        "https" => 443,
        "mysql" => 3306,
        "postgres" => 5432,
        "redis" => 6379,
        "mqtt" => 1883,
        _ => return None,
    })
}

/// Checks an entry's syntax at manifest load. Templates are checked after resolution.
pub fn validate_entry(entry: &str) -> Result<()> {
    if entry.contains("{{") {
        return Ok(());
    }
    Entry::parse(entry).map(drop)
}

/// Returns the component a literal `http://<id>.spin.internal` entry names, if any.
pub fn chaining_target_of_entry(entry: &str) -> Option<String> {
    if entry.contains("{{") {
        return None;
    }
    let parsed = Entry::parse(entry).ok()?;
    match parsed.host {
        HostPattern::Literal(host) => chaining_target_of_host(&host),
        _ => None,
    }
}

/// `profiles.spin.internal` (with or without a port) names component `profiles`.
pub fn chaining_target_of_host(host: &str) -> Option<String> {
    let host = host.split(':').next().unwrap_or(host).to_ascii_lowercase();
    let id = host.strip_suffix(CHAINING_SUFFIX)?;
    (!id.is_empty() && !id.contains('.')).then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(entries: &[&str], url: &str, default_scheme: &str) -> bool {
        let entries: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
        AllowedHosts::parse(&entries).unwrap().allows_url(url, default_scheme)
    }

    #[test]
    fn default_ports_come_from_the_scheme() {
        assert!(allows(&["https://api.example.com"], "https://api.example.com/v1", "https"));
        assert!(!allows(&["https://api.example.com"], "https://api.example.com:8443/v1", "https"));
        assert!(allows(&["mysql://127.0.0.1"], "mysql://user@127.0.0.1/db", "mysql"));
        assert!(!allows(&["mysql://127.0.0.1"], "mysql://user@127.0.0.1:3307/db", "mysql"));
    }

    #[test]
    fn wildcards_cover_scheme_subdomains_and_ports() {
        assert!(allows(&["*://*.example.com:*"], "http://a.example.com:9/x", "https"));
        assert!(!allows(&["*://*.example.com:*"], "http://example.org/x", "https"));
        assert!(allows(&["http://127.0.0.1:8000..8010"], "http://127.0.0.1:8005/", "https"));
        assert!(!allows(&["http://127.0.0.1:8000..8010"], "http://127.0.0.1:8010/", "https"));
    }

    #[test]
    fn scheme_must_match() {
        assert!(!allows(&["https://api.example.com"], "http://api.example.com/", "https"));
    }

    #[test]
    fn malformed_entries_are_refused() {
        for entry in ["example.com", "*", "http://a/b", "http://a*.example.com", "*://example.com"] {
            assert!(Entry::parse(entry).is_err(), "{entry}");
        }
    }

    #[test]
    fn chaining_targets_are_read_from_hosts_and_entries() {
        assert_eq!(chaining_target_of_host("feed.spin.internal").as_deref(), Some("feed"));
        assert_eq!(chaining_target_of_host("feed.spin.internal:80").as_deref(), Some("feed"));
        assert_eq!(chaining_target_of_host("a.b.spin.internal"), None);
        assert_eq!(chaining_target_of_entry("http://feed.spin.internal").as_deref(), Some("feed"));
        assert_eq!(chaining_target_of_entry("http://*.spin.internal"), None);
    }
}
