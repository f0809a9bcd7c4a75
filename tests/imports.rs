//! Every built component imports only the platform interfaces in `wit/` and
//! the WASI interfaces Rust's standard library and spin-sdk pull in, and
//! exports the one handler version that released Spin 4.0 accepts.

use conduit_tests::wasm_path;
use wasmparser::{Parser, Payload};

/// The `wasi:http/handler` version Spin 4.0.x and SpinKube's shim accept.
const HANDLER: &str = "wasi:http/handler@0.3.0-rc-2026-03-15";

/// Interfaces a component of this application may import, as `package/interface@version`
/// with `*` standing for any interface of that package version.
const ALLOWED_IMPORTS: &[&str] = &[
    "spin:key-value/key-value@3.0.0",
    "spin:mysql/mysql@3.0.0",
    "spin:variables/variables@3.0.0",
    "wasi:keyvalue/store@0.2.0-draft2",
    "wasi:keyvalue/atomics@0.2.0-draft2",
    "wasi:http/types@0.3.0-rc-2026-03-15",
    "wasi:http/client@0.3.0-rc-2026-03-15",
    "wasi:clocks/*@0.3.0-rc-2026-03-15",
    "wasi:random/*@0.3.0-rc-2026-03-15",
    "wasi:cli/*@0.2.*",
    "wasi:io/*@0.2.*",
    "wasi:random/*@0.2.*",
    "wasi:clocks/*@0.2.*",
];

/// Lists the component-level imports and exports of a component binary.
fn interfaces(bytes: &[u8]) -> (Vec<String>, Vec<String>) {
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.expect("a valid component binary") {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth -= 1,
            Payload::ComponentImportSection(section) if depth == 1 => {
                for import in section {
                    imports.push(import.unwrap().name.0.to_string());
                }
            }
            Payload::ComponentExportSection(section) if depth == 1 => {
                for export in section {
                    exports.push(export.unwrap().name.0.to_string());
                }
            }
            _ => {}
        }
    }
    (imports, exports)
}

fn matches(pattern: &str, name: &str) -> bool {
    let (p_path, p_version) = pattern.split_once('@').unwrap();
    let Some((n_path, n_version)) = name.split_once('@') else {
        return false;
    };
    let path_ok = match p_path.strip_suffix("/*") {
        Some(package) => n_path.split_once('/').is_some_and(|(pkg, _)| pkg == package),
        None => p_path == n_path,
    };
    let version_ok = match p_version.strip_suffix('*') {
        Some(prefix) => n_version.starts_with(prefix) && !n_version.contains('-'),
        None => p_version == n_version,
    };
    path_ok && version_ok
}

/// Checks a component against `allowed`, describing the first problem found.
fn audit(bytes: &[u8], allowed: &[&str]) -> Result<(), String> {
    let (imports, exports) = interfaces(bytes);
    let extra: Vec<&String> = imports.iter().filter(|i| !allowed.iter().any(|p| matches(p, i))).collect();
    if !extra.is_empty() {
        return Err(format!("imports outside the allowed set: {extra:?}"));
    }
    if exports != [HANDLER] {
        return Err(format!("exports {exports:?}; expected only {HANDLER}"));
    }
    Ok(())
}

#[test]
fn components_import_only_allowed() {
    for component in ["profiles", "feed", "payments", "notifications"] {
        let bytes = std::fs::read(wasm_path(component)).unwrap();

        let (imports, _) = interfaces(&bytes);

        assert!(!imports.is_empty(), "{component}: no imports found, so the audit would prove nothing");
        audit(&bytes, ALLOWED_IMPORTS).unwrap_or_else(|e| panic!("{component}: {e}"));
    }
}

#[test]
fn audit_fails_on_extra_import() {
    let bytes = std::fs::read(wasm_path("fixture")).unwrap();
    let without_mysql: Vec<&str> = ALLOWED_IMPORTS.iter().copied().filter(|p| !p.starts_with("spin:mysql")).collect();

    let with = audit(&bytes, ALLOWED_IMPORTS);
    let without = audit(&bytes, &without_mysql);

    assert_eq!(with, Ok(()));
    let error = without.unwrap_err();
    assert!(error.contains("spin:mysql/mysql@3.0.0"), "{error}");
}

#[test]
fn handler_version_is_spin_4_0() {
    let bytes = std::fs::read(wasm_path("feed")).unwrap();
    let (imports, exports) = interfaces(&bytes);

    assert_eq!(exports, [HANDLER]);
    assert!(!exports.iter().any(|e| e == "wasi:http/handler@0.3.0"), "spin-sdk 7's final 0.3.0 is not accepted by Spin 4.0.x");
    assert!(imports.iter().all(|i| !i.starts_with("wasi:http/") || i.ends_with("@0.3.0-rc-2026-03-15")), "{imports:?}");
}

#[test]
fn version_patterns_stay_narrow() {
    assert!(matches("wasi:cli/*@0.2.*", "wasi:cli/stdout@0.2.6"));
    assert!(!matches("wasi:cli/*@0.2.*", "wasi:cli/stdout@0.3.0-rc-2026-03-15"));
    assert!(!matches("wasi:cli/*@0.2.*", "wasi:sockets/tcp@0.2.6"));
    assert!(!matches("spin:mysql/mysql@3.0.0", "fermyon:spin/mysql@2.0.0"));
    assert!(matches("wasi:clocks/*@0.3.0-rc-2026-03-15", "wasi:clocks/monotonic-clock@0.3.0-rc-2026-03-15"));
}
