//! The scan that runs after the whole test suite over every log its hosts
//! wrote: the host's own output and each component's log files, all kept
//! under `target/test-state/`. A log must never hold a secret from
//! `tests/test.env`, a fake provider's API key, the test password, a token
//! (user or service JWTs, links' `token=` parameters) or an email address.
//! A finding names the file, the line and the kind of leak, never the value.

use std::path::{Path, PathBuf};

/// One leak: where it is and what kind of value leaked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub file: PathBuf,
    pub line: usize,
    pub kind: String,
}

/// The values and shapes a log must not contain.
pub struct Scanner {
    /// Exact values, each with the name reported when one is found.
    secrets: Vec<(String, String)>,
}

impl Scanner {
    /// Builds a scanner for `secrets`: `(name, value)` pairs. Values shorter
    /// than eight characters are left out, as they would match by chance.
    pub fn new(secrets: impl IntoIterator<Item = (String, String)>) -> Self {
        Self { secrets: secrets.into_iter().filter(|(_, value)| value.len() >= 8).collect() }
    }

    /// Returns the kinds of leak in one line.
    pub fn scan_line(&self, line: &str) -> Vec<String> {
        let mut kinds: Vec<String> =
            self.secrets.iter().filter(|(_, value)| line.contains(value.as_str())).map(|(name, _)| name.clone()).collect();
        if has_jwt(line) {
            kinds.push("a JWT".into());
        }
        if line.contains("token=") {
            kinds.push("a link token".into());
        }
        if has_email_address(line) {
            kinds.push("an email address".into());
        }
        kinds
    }

    /// Scans every file below `root`; unreadable or non-UTF-8 bytes are read lossily.
    pub fn scan_tree(&self, root: &Path) -> std::io::Result<(usize, Vec<Finding>)> {
        let mut files = 0;
        let mut findings = Vec::new();
        for file in log_files(root)? {
            files += 1;
            let text = String::from_utf8_lossy(&std::fs::read(&file)?).into_owned();
            for (index, line) in text.lines().enumerate() {
                for kind in self.scan_line(line) {
                    findings.push(Finding { file: file.clone(), line: index + 1, kind });
                }
            }
        }
        Ok((files, findings))
    }
}

/// Lists the log files below `root`: every `.txt` file (the host's output
/// and the components' logs); databases and other state are left out.
pub fn log_files(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "txt") {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Finds `eyJ…​.…​.…`: three base64url parts, the first a JSON object, as every JWT has.
fn has_jwt(line: &str) -> bool {
    let bytes = line.as_bytes();
    let mut start = 0;
    while let Some(offset) = line[start..].find("eyJ") {
        let at = start + offset;
        let mut parts = 1;
        let mut length = 0;
        for &b in &bytes[at..] {
            if b == b'.' {
                parts += 1;
            } else if is_base64url(b) {
                length += 1;
            } else {
                break;
            }
        }
        if parts >= 3 && length >= 20 {
            return true;
        }
        start = at + 3;
    }
    false
}

/// Finds `local@domain.tld`, the shape of an email address.
fn has_email_address(line: &str) -> bool {
    let bytes = line.as_bytes();
    bytes.iter().enumerate().filter(|(_, b)| **b == b'@').any(|(at, _)| {
        let local = bytes[..at].iter().rev().take_while(|b| b.is_ascii_alphanumeric() || b"._%+-".contains(b)).count();
        let domain: Vec<u8> =
            bytes[at + 1..].iter().copied().take_while(|b| b.is_ascii_alphanumeric() || *b == b'.' || *b == b'-').collect();
        let tld = domain.rsplit(|b| *b == b'.').next().unwrap_or_default();
        local > 0 && domain.contains(&b'.') && tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanner() -> Scanner {
        Scanner::new([("SPIN_VARIABLE_SCHEDULER_TOKEN".to_string(), "test-only-scheduler-5d1c8e2a7b".to_string())])
    }

    #[test]
    fn clean_log_lines_pass() {
        let line = r#"{"event":"request","route":"/api/users/login","status":401,"email_key":3,"at":"2026-12-05T10:00:00Z"}"#;
        assert!(scanner().scan_line(line).is_empty(), "{:?}", scanner().scan_line(line));
        assert!(scanner().scan_line("version 1.2.3 @ host x").is_empty());
    }

    #[test]
    fn each_kind_of_leak_is_found() {
        let cases = [
            ("authorization: Bearer test-only-scheduler-5d1c8e2a7b", "SPIN_VARIABLE_SCHEDULER_TOKEN"),
            ("token eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl", "a JWT"),
            ("GET /verify-email?token=abc", "a link token"),
            ("sent to ann.lee+1@example.test", "an email address"),
        ];
        for (line, kind) in cases {
            assert_eq!(scanner().scan_line(line), [kind], "{line}");
        }
    }

    #[test]
    fn scan_tree_reads_log_files_only() {
        let root = std::env::temp_dir().join(format!("log-scan-{}", std::process::id()));
        std::fs::create_dir_all(root.join("a/logs")).unwrap();
        std::fs::write(root.join("a/logs/feed_stdout.txt"), "ok\nmail to x@y.example\n").unwrap();
        std::fs::write(root.join("a/state.db"), "x@y.example").unwrap();

        let (files, findings) = scanner().scan_tree(&root).unwrap();
        std::fs::remove_dir_all(&root).unwrap();

        assert_eq!(files, 1);
        assert_eq!(findings, [Finding { file: root.join("a/logs/feed_stdout.txt"), line: 2, kind: "an email address".into() }]);
    }
}
