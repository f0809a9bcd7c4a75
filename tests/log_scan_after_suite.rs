//! Runs once after the whole test suite; `cargo xtask test` starts it last.
//! It reads every log the suite's hosts wrote: their own output and their
//! components' log files under `target/test-state/`. None may hold the test
//! run's secrets (`tests/test.env`, the fake providers' API keys, the test
//! password), a token or an email address. Run alone after a partial run,
//! it scans only what that run left.

use conduit_tests::log_scan::{Finding, Scanner};
use conduit_tests::{TEST_PASSWORD, fake_brevo, fake_mollie, test_env, workspace_root};

/// Tells whether a variable of `tests/test.env` contains a secret: a password,
/// a key (not the public key, which is meant to be seen) or a token.
fn is_secret(name: &str) -> bool {
    (name.ends_with("_PASSWORD") || name.ends_with("_KEY") || name.ends_with("_TOKEN")) && !name.ends_with("_PUBLIC_KEY")
}

#[test]
fn suite_logs_hold_no_secrets() {
    let mut secrets: Vec<(String, String)> = test_env().into_iter().filter(|(name, _)| is_secret(name)).collect();
    assert!(secrets.len() >= 8, "tests/test.env has the test secrets: {}", secrets.len());
    secrets.push(("the test password".into(), TEST_PASSWORD.into()));
    secrets.push(("the fake Mollie API key".into(), fake_mollie::API_KEY.into()));
    secrets.push(("the fake Brevo API key".into(), fake_brevo::API_KEY.into()));

    let root = workspace_root().join("target/test-state");
    let (files, findings) = Scanner::new(secrets).scan_tree(&root).expect("the test state directory is readable");

    assert!(files > 0, "no log files under {}: run the suite first", root.display());
    let listed: Vec<String> = findings
        .iter()
        .take(20)
        .map(|Finding { file, line, kind }| format!("{}:{line}: {kind}", file.display()))
        .collect();
    assert!(findings.is_empty(), "{} leaks in {files} log files, the first ones:\n{}", findings.len(), listed.join("\n"));
    println!("scanned {files} log files: no secrets, tokens or email addresses");
}
