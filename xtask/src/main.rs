//! The project's commands. `cargo xtask up` builds everything, makes sure
//! MariaDB is running and serves the app on 127.0.0.1:3000; `cargo xtask test`
//! builds everything, makes sure MariaDB and Redis are running and runs every
//! test. Both install what a fresh machine lacks.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

const COMPONENTS: [&str; 4] = ["profiles", "feed", "payments", "notifications"];
const WASM_TARGET: &str = "wasm32-wasip2";

type Result<T> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("build") => build(),
        Some("up") => up(&args[1..]),
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
  up [-- ARGS]     build, start MariaDB if needed, serve the app on 127.0.0.1:3000
                   (ARGS go to `conduit-host up`, e.g. --request-timeout 30s)
  test [-- ARGS]   build, start MariaDB and Redis if needed, run every test
  bench            build, then print the host's start-up time and request latency";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

fn run(command: &mut Command) -> Result<()> {
    let shown = format!("{command:?}");
    let status = command
        .current_dir(root())
        .status()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed with {status}"))
    }
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn build() -> Result<()> {
    ensure_wasm_target()?;
    let mut wasm = cargo();
    wasm.args(["build", "--release", "--target", WASM_TARGET]);
    for component in COMPONENTS {
        wasm.args(["-p", component]);
    }
    run(&mut wasm)?;
    run(cargo().args(["build", "--release", "-p", "conduit-host"]))
}

fn up(args: &[String]) -> Result<()> {
    build()?;
    ensure_mariadb()?;
    let host = root().join("target/release/conduit-host");
    let mut command = Command::new(host);
    command.args([
        "up",
        "--from",
        "spin.toml",
        "--runtime-config-file",
        "infra/runtime-config/local.toml",
        "--listen",
        "127.0.0.1:3000",
    ]);
    command.args(args.iter().skip_while(|a| *a == "--"));
    run(&mut command)
}

fn test(args: &[String]) -> Result<()> {
    build()?;
    run(cargo().args(["build", "--release", "--target", WASM_TARGET, "-p", "fixture"]))?;
    ensure_mariadb()?;
    ensure_redis()?;
    let mut command = cargo();
    command.args(["test", "--release", "--workspace", "--exclude", "xtask"]);
    for excluded in COMPONENTS.iter().chain(&["fixture"]) {
        command.args(["--exclude", excluded]);
    }
    command.args(args.iter().skip_while(|a| *a == "--"));
    run(&mut command)
}

fn bench() -> Result<()> {
    build()?;
    run(cargo().args(["build", "--release", "--target", WASM_TARGET, "-p", "fixture"]))?;
    ensure_redis()?;
    run(cargo().args(["run", "--release", "-p", "conduit-tests", "--example", "bench_host"]))
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

fn ensure_mariadb() -> Result<()> {
    if listening(3306) {
        return Ok(());
    }
    apt_install("/usr/sbin/mariadbd", "mariadb-server")?;
    eprintln!("xtask: starting MariaDB");
    // The package does not start the server here; its socket directory may be missing too.
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
    ]))?;
    wait_for(3306, "MariaDB")
}

fn ensure_redis() -> Result<()> {
    if listening(6379) {
        return Ok(());
    }
    apt_install("/usr/bin/redis-server", "redis-server")?;
    eprintln!("xtask: starting Redis");
    let _ = std::fs::create_dir_all("/var/lib/redis");
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
    ]))?;
    wait_for(6379, "Redis")
}
