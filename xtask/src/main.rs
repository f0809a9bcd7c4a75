//! The project's commands. `cargo xtask up` builds everything, makes sure
//! MariaDB is running, writes local secrets to `.env` when they are missing,
//! migrates the database and serves the app on 127.0.0.1:3000;
//! `cargo xtask test` builds everything, makes sure MariaDB and Redis are
//! running, migrates fresh test schemas and runs every test. Both install what
//! a fresh machine lacks.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

const COMPONENTS: [&str; 4] = ["profiles", "feed", "payments", "notifications"];
const WASM_TARGET: &str = "wasm32-wasip2";
/// The crates built for this machine: the host, the admin tool, the shared
/// crate's native tests, and the tests.
const NATIVE_PACKAGES: [&str; 4] = ["conduit-host", "conduit-admin", "shared", "conduit-tests"];
/// The test suite's known secrets and schema prefix (see the file).
const TEST_ENV: &str = "tests/test.env";
/// The variables `up` generates into `.env` when they are missing: name and random bytes.
const LOCAL_SECRETS: [(&str, usize); 10] = [
    ("SPIN_VARIABLE_PROFILES_DB_PASSWORD", 16),
    ("SPIN_VARIABLE_FEED_DB_PASSWORD", 16),
    ("SPIN_VARIABLE_PAYMENTS_DB_PASSWORD", 16),
    ("SPIN_VARIABLE_NOTIFICATIONS_DB_PASSWORD", 16),
    ("SPIN_VARIABLE_USER_TOKEN_KEY", 32),
    ("SPIN_VARIABLE_SERVICE_TOKEN_KEY", 32),
    ("SPIN_VARIABLE_SCHEDULER_TOKEN", 24),
    // A placeholder, so the app starts: top-ups need a real Mollie test key here.
    ("SPIN_VARIABLE_PAYMENT_PROVIDER_API_KEY", 15),
    // A placeholder as well: emails stay queued until a Brevo key is set here.
    ("SPIN_VARIABLE_EMAIL_PROVIDER_API_KEY", 15),
    ("SPIN_VARIABLE_EMAIL_UNSUBSCRIBE_KEY", 32),
];

/// The secret variables `up` writes into `.env` with a fixed value when they are missing.
const LOCAL_FIXED: [(&str, &str); 1] = [
    // The discard port, where nothing listens: no email leaves a developer's
    // machine until `.env` names the real provider (https://api.brevo.com).
    ("SPIN_VARIABLE_EMAIL_PROVIDER_URL", "http://127.0.0.1:9"),
];

type Result<T> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            Ok(())
        }
        Some("build") => build(),
        Some("up") => up(&args[1..]),
        Some("migrate") => migrate(&args[1..]),
        Some("test") => test(&args[1..]),
        Some("bench") => bench(),
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: cargo xtask <command>
  build            build the four components and the local host
  up [-- ARGS]     build, start MariaDB if needed, write missing secrets to .env,
                   migrate, serve the app on 127.0.0.1:3000 (ARGS go to
                   `conduit-host up`, e.g. --request-timeout 30s or --listen
                   127.0.0.1:3001; see `target/release/conduit-host up --help`)
  migrate [-- ARGS]
                   build the admin tool, start MariaDB if needed, write missing
                   secrets to .env, apply pending migrations (ARGS go to
                   `conduit-admin migrate`, e.g. --prefix; see `conduit-admin --help`)
  test [-- ARGS]   build, start MariaDB and Redis if needed, migrate fresh test
                   schemas, run every test, then check the payments ledger the
                   tests left (ARGS go to `cargo test`; with ARGS, no ledger check)
  bench            build, then print the host's start-up time and request latency,
                   the profiles and feed routes' latency and statement counts,
                   the feed cache's hit ratio, tip latency, and the cost of
                   Argon2id in Wasm and of concurrent logins";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

fn run(command: &mut Command) -> Result<()> {
    let description = format!("{command:?}");
    let status = command
        .current_dir(root())
        .status()
        .map_err(|e| format!("cannot run {description}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{description} failed with {status}"))
    }
}

/// Builds a cargo command without the variables `cargo run` set for xtask itself.
/// Build scripts watch some of them, so leaving them in would make builds
/// started here and builds started by hand invalidate each other.
/// `CARGO_TARGET_DIR` is removed too: `spin.toml`, the host and the tests load
/// what these builds produce from `target/` in the repository.
fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    if std::env::var_os("CARGO_TARGET_DIR").is_some() {
        eprintln!("xtask: ignoring CARGO_TARGET_DIR; builds go to target/ in the repository, where spin.toml expects them");
        command.env_remove("CARGO_TARGET_DIR");
    }
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_for_xtask = name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || matches!(
                name.as_ref(),
                "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE" | "CARGO_RUSTC_CURRENT_DIR"
            );
        if set_for_xtask {
            command.env_remove(name.as_ref());
        }
    }
    command
}

fn build() -> Result<()> {
    ensure_wasm_target()?;
    let mut wasm = cargo();
    wasm.args(["build", "--release", "--target", WASM_TARGET]);
    for component in COMPONENTS {
        wasm.args(["-p", component]);
    }
    run(&mut wasm)?;
    // The same packages as `test`, so both resolve dependency features alike
    // and neither rebuilds what the other built.
    run(cargo().args(["build", "--release"]).args(NATIVE_PACKAGES.iter().flat_map(|p| ["-p", p])))
}

fn up(args: &[String]) -> Result<()> {
    build()?;
    ensure_mariadb()?;
    ensure_local_secrets()?;
    ensure_public_key()?;
    run(Command::new(admin_binary()).arg("migrate"))?;
    let user_args: Vec<&String> = args.iter().skip_while(|a| *a == "--").collect();
    let flag_given = |flags: &[&str]| {
        user_args
            .iter()
            .any(|a| flags.iter().any(|f| a.as_str() == *f || a.starts_with(&format!("{f}="))))
    };

    let mut command = Command::new(root().join("target/release/conduit-host"));
    command.current_dir(root()).arg("up");
    if !flag_given(&["--from", "-f"]) {
        command.args(["--from", "spin.toml"]);
    }
    if !flag_given(&["--runtime-config-file"]) {
        command.args(["--runtime-config-file", "infra/runtime-config/local.toml"]);
    }
    if !flag_given(&["--listen"]) && std::env::var_os("SPIN_HTTP_LISTEN_ADDR").is_none() {
        command.args(["--listen", "127.0.0.1:3000"]);
    }
    command.args(user_args);

    // Become the host, so Ctrl-C and SIGTERM reach it directly and stopping
    // this command never leaves a server behind.
    use std::os::unix::process::CommandExt;
    let error = command.exec();
    Err(format!("cannot start target/release/conduit-host: {error}"))
}

fn migrate(args: &[String]) -> Result<()> {
    run(cargo().args(["build", "--release"]).args(NATIVE_PACKAGES.iter().flat_map(|p| ["-p", p])))?;
    ensure_mariadb()?;
    ensure_local_secrets()?;
    run(Command::new(admin_binary()).arg("migrate").args(args.iter().skip_while(|a| *a == "--")))
}

fn admin_binary() -> PathBuf {
    root().join("target/release/conduit-admin")
}

fn test(args: &[String]) -> Result<()> {
    build()?;
    // Each host a test starts keeps its state here; start every run empty.
    let _ = std::fs::remove_dir_all(root().join("target/test-state"));
    run(cargo().args(["build", "--release", "--target", WASM_TARGET, "-p", "fixture"]))?;
    ensure_mariadb()?;
    ensure_redis()?;
    prepare_test_database()?;
    let mut command = cargo();
    command.args(["test", "--release"]);
    command.args(NATIVE_PACKAGES.iter().flat_map(|p| ["-p", p]));
    let filters: Vec<&String> = args.iter().skip_while(|a| *a == "--").collect();
    command.args(&filters);
    run(&mut command)?;
    if filters.is_empty() {
        // What the whole suite left behind: the payments ledger must balance,
        // and no log may hold a secret, a token or an email address.
        run(cargo().args(["test", "--release", "-p", "conduit-tests", "--test", "ledger_after_suite"]))?;
        run(cargo().args(["test", "--release", "-p", "conduit-tests", "--test", "log_scan_after_suite"]))?;
    }
    Ok(())
}

/// Drops and re-creates the test schemas with the known test secrets, then
/// migrates a second time, which must find nothing to do. The test-only
/// event consumer (a component of the host's test application) gets its
/// schema from `tests/fixture/migrations/`.
fn prepare_test_database() -> Result<()> {
    let test_env = read_env_file(&root().join(TEST_ENV))?;
    let admin = || {
        let mut command = Command::new(admin_binary());
        command.envs(test_env.iter().map(|(k, v)| (k, v)));
        command
    };
    run(admin().arg("reset"))?;
    for _ in 0..2 {
        run(admin().args(["migrate", "--env-file", TEST_ENV]))?;
    }
    run(admin().args([
        "migrate",
        "--env-file",
        TEST_ENV,
        "--migrations",
        "tests/fixture/migrations",
        "--component",
        "consumer",
    ]))
}

fn bench() -> Result<()> {
    build()?;
    run(cargo().args(["build", "--release", "--target", WASM_TARGET, "-p", "fixture"]))?;
    ensure_mariadb()?;
    ensure_redis()?;
    prepare_test_database()?;
    // Built with the same packages as `build` and `test`, so nothing is rebuilt
    // with other dependency features.
    run(cargo()
        .args(["build", "--release", "--examples"])
        .args(NATIVE_PACKAGES.iter().flat_map(|p| ["-p", p])))?;
    run(&mut Command::new(root().join("target/release/examples/bench_host")))?;
    run(&mut Command::new(root().join("target/release/examples/bench_profiles")))?;
    run(&mut Command::new(root().join("target/release/examples/bench_events")))?;
    run(&mut Command::new(root().join("target/release/examples/bench_feed")))?;
    run(&mut Command::new(root().join("target/release/examples/bench_payments")))?;
    run(&mut Command::new(root().join("target/release/examples/bench_notifications")))?;
    run(&mut Command::new(root().join("target/release/examples/bench_passwords")))
}

/// Reads `NAME=value` lines; `#` starts a comment line.
fn read_env_file(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
        .collect())
}

/// Appends a random value to `.env` for every local secret it lacks, so
/// `up` works on a fresh clone without any secret in the repository. Values
/// already there (or set in the environment) are kept.
fn ensure_local_secrets() -> Result<()> {
    let path = root().join(".env");
    let existing = if path.exists() { read_env_file(&path)? } else { Vec::new() };
    let mut additions = String::new();
    for (name, bytes) in LOCAL_SECRETS {
        if existing.iter().any(|(n, _)| n == name) || std::env::var_os(name).is_some() {
            continue;
        }
        additions.push_str(&format!("{name}={}\n", random_hex(bytes)?));
    }
    for (name, value) in LOCAL_FIXED {
        if existing.iter().any(|(n, _)| n == name) || std::env::var_os(name).is_some() {
            continue;
        }
        additions.push_str(&format!("{name}={value}\n"));
    }
    if additions.is_empty() {
        return Ok(());
    }
    let mut text = if path.exists() {
        std::fs::read_to_string(&path).map_err(|e| format!("cannot read .env: {e}"))?
    } else {
        "# Local secrets, generated by `cargo xtask up`; see .env.example. Not in git.\n".to_string()
    };
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&additions);
    std::fs::write(&path, text).map_err(|e| format!("cannot write .env: {e}"))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    eprintln!("xtask: wrote missing local secrets to .env");
    Ok(())
}

/// The variable that must hold the public half of `SPIN_VARIABLE_USER_TOKEN_KEY`.
const PUBLIC_KEY_VARIABLE: &str = "SPIN_VARIABLE_USER_TOKEN_PUBLIC_KEY";

/// Makes `.env` carry the public key of the user-token key (derived by
/// `conduit-admin public-key`), replacing a value that no longer matches,
/// so components that verify tokens always get the key's real public half.
fn ensure_public_key() -> Result<()> {
    let output = Command::new(admin_binary())
        .arg("public-key")
        .current_dir(root())
        .output()
        .map_err(|e| format!("cannot run conduit-admin public-key: {e}"))?;
    if !output.status.success() {
        return Err(format!("conduit-admin public-key failed: {}", String::from_utf8_lossy(&output.stderr).trim()));
    }
    let public = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if let Ok(value) = std::env::var(PUBLIC_KEY_VARIABLE) {
        if value == public {
            return Ok(());
        }
        return Err(format!("{PUBLIC_KEY_VARIABLE} in the environment does not match SPIN_VARIABLE_USER_TOKEN_KEY; unset it or set it to {public}"));
    }
    let path = root().join(".env");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read .env: {e}"))?;
    let line = format!("{PUBLIC_KEY_VARIABLE}={public}");
    if text.lines().any(|l| l.trim() == line) {
        return Ok(());
    }
    let prefix = format!("{PUBLIC_KEY_VARIABLE}=");
    let mut lines: Vec<&str> = text.lines().filter(|l| !l.trim_start().starts_with(&prefix)).collect();
    lines.push(&line);
    std::fs::write(&path, lines.join("\n") + "\n").map_err(|e| format!("cannot write .env: {e}"))?;
    eprintln!("xtask: wrote {PUBLIC_KEY_VARIABLE} (the public half of the user-token key) to .env");
    Ok(())
}

fn random_hex(bytes: usize) -> Result<String> {
    use std::io::Read;
    let mut buffer = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buffer))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    Ok(buffer.iter().map(|b| format!("{b:02x}")).collect())
}

fn ensure_wasm_target() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    if String::from_utf8_lossy(&installed.stdout).lines().any(|l| l.trim() == WASM_TARGET) {
        return Ok(());
    }
    run(Command::new("rustup").args(["target", "add", WASM_TARGET]))
}

fn listening(port: u16) -> bool {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&address, Duration::from_millis(300)).is_ok()
}

fn wait_for(port: u16, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if listening(port) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(format!("{what} did not start listening on 127.0.0.1:{port} within 60 s"))
}

/// Installs Debian packages when a binary is missing (root, or sudo when available).
fn apt_install(binary: &str, package: &str) -> Result<()> {
    if Path::new(binary).exists() {
        return Ok(());
    }
    eprintln!("xtask: {binary} is missing; installing {package}");
    let as_root = |args: &[&str]| {
        let mut command = if is_root() {
            Command::new(args[0])
        } else {
            let mut sudo = Command::new("sudo");
            sudo.arg(args[0]);
            sudo
        };
        command.args(&args[1..]).env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    run(&mut as_root(&["apt-get", "update"]))?;
    run(&mut as_root(&["apt-get", "install", "-y", package]))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Starts a service that is not listening on its loopback port, installing
/// its Debian package first when `binary` is missing.
fn ensure_service(name: &str, port: u16, binary: &str, package: &str, start: impl FnOnce() -> Result<()>) -> Result<()> {
    if listening(port) {
        return Ok(());
    }
    apt_install(binary, package)?;
    eprintln!("xtask: starting {name}");
    start()?;
    wait_for(port, name)
}

fn ensure_mariadb() -> Result<()> {
    ensure_service("MariaDB", 3306, "/usr/sbin/mariadbd", "mariadb-server", || {
        // The package does not start the server here, and its socket directory may be missing too.
        let _ = std::fs::create_dir_all("/run/mysqld");
        let _ = Command::new("chown").args(["mysql:mysql", "/run/mysqld"]).status();
        run(Command::new("start-stop-daemon").args([
            "--start",
            "--oknodo",
            "--background",
            "--exec",
            "/usr/sbin/mariadbd",
            "--",
            "--user=mysql",
        ]))
    })
}

fn ensure_redis() -> Result<()> {
    ensure_service("Redis", 6379, "/usr/bin/redis-server", "redis-server", || {
        run(Command::new("redis-server").args([
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            "/tmp",
        ]))
    })
}
