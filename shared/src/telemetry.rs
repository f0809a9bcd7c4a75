//! The request log: one JSON log line per request with its route, status,
//! latency, ids and the number of database statements and key-value calls it
//! made. The counts come from the `db` and `kv` wrappers, so they exist on
//! Spin as well as on the local host. No personal data is logged: routes
//! appear as patterns (`/api/profiles/:username`), never as the path.

use std::cell::Cell;
use std::time::Instant;

use serde_json::json;

/// Per-request counters, shared by the request's `Db` and `Kv` handles.
#[derive(Debug, Default)]
pub struct Stats {
    db_statements: Cell<u32>,
    db_connections: Cell<u32>,
    db_retries: Cell<u32>,
    kv_calls: Cell<u32>,
}

impl Stats {
    pub fn db_statement(&self) {
        self.db_statements.set(self.db_statements.get() + 1);
    }

    pub fn db_connection_opened(&self) {
        self.db_connections.set(self.db_connections.get() + 1);
    }

    pub fn db_transaction_retried(&self) {
        self.db_retries.set(self.db_retries.get() + 1);
    }

    pub fn kv_call(&self) {
        self.kv_calls.set(self.kv_calls.get() + 1);
    }

    pub fn db_statements(&self) -> u32 {
        self.db_statements.get()
    }

    pub fn kv_calls(&self) -> u32 {
        self.kv_calls.get()
    }
}

/// The fields of one request's log line.
pub struct RequestLog<'a> {
    pub component: &'a str,
    pub method: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub started: Instant,
    pub request_id: &'a str,
    pub trace_id: Option<&'a str>,
    /// The calling component's request id, for a chained call.
    pub caller_request_id: Option<&'a str>,
    pub stats: &'a Stats,
    /// For 5xx only: the cause chain, free of personal data and server messages.
    pub error: Option<String>,
}

impl RequestLog<'_> {
    /// Formats the log line as one line of JSON.
    pub fn line(&self) -> String {
        let mut line = json!({
            "time": crate::time::rfc3339(crate::time::now_micros()),
            "level": if self.status >= 500 { "error" } else { "info" },
            "event": "request",
            "component": self.component,
            "method": self.method,
            "route": self.route,
            "status": self.status,
            "latency_ms": (self.started.elapsed().as_secs_f64() * 1000.0 * 100.0).round() / 100.0,
            "request_id": self.request_id,
            "db_statements": self.stats.db_statements.get(),
            "db_connections": self.stats.db_connections.get(),
            "db_retries": self.stats.db_retries.get(),
            "kv_calls": self.stats.kv_calls.get(),
        });
        if let Some(trace_id) = self.trace_id {
            line["trace_id"] = trace_id.into();
        }
        if let Some(caller) = self.caller_request_id {
            line["caller_request_id"] = caller.into();
        }
        if let Some(error) = &self.error {
            line["error"] = error.as_str().into();
        }
        line.to_string()
    }

    /// Writes the line to standard output, which Spin collects per component.
    pub fn emit(&self) {
        println!("{}", self.line());
    }
}

/// Extracts the trace id of a valid W3C `traceparent` header
/// (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`), if any.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let is_hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let valid = is_hex(version, 2)
        && version != "ff"
        && is_hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && is_hex(parent, 16)
        && parent.bytes().any(|b| b != b'0')
        && is_hex(flags, 2)
        && (version != "00" || parts.next().is_none());
    valid.then_some(trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_line_has_counts_not_path() {
        let stats = Stats::default();
        stats.db_connection_opened();
        stats.db_statement();
        stats.db_statement();
        stats.kv_call();

        let line = RequestLog {
            component: "profiles",
            method: "GET",
            route: "/api/profiles/:username",
            status: 200,
            started: Instant::now(),
            request_id: "r1",
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            caller_request_id: None,
            stats: &stats,
            error: None,
        }
        .line();

        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["route"], "/api/profiles/:username");
        assert_eq!(parsed["db_statements"], 2);
        assert_eq!(parsed["db_connections"], 1);
        assert_eq!(parsed["kv_calls"], 1);
        assert_eq!(parsed["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(parsed.get("error").is_none());
    }

    #[test]
    fn traceparent_is_validated() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

        assert_eq!(trace_id(valid), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(trace_id("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id("garbage"), None);
    }
}
