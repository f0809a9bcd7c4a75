//! Helpers for the black-box tests: start the real host binary on a free
//! loopback port with a manifest, send it requests, read its log lines.

mod accounts;
pub mod fake_brevo;
pub mod fake_mollie;
mod fake_server;
mod flows;
pub mod log_scan;

pub use flows::{default_preferences, fund_wallet, post_with_new_key, settle_paid};
pub use accounts::{TEST_PASSWORD, TestUser, dispatch, email_of, grant_admin, log_in, register_user, subject_of, unique_name};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Returns the release build of the host, which `cargo xtask test` builds first.
pub fn host_binary() -> PathBuf {
    let path = workspace_root().join("target/release/conduit-host");
    assert!(path.is_file(), "{} is missing: run the tests with `cargo xtask test`", path.display());
    path
}

/// Returns the path of a built component under `target/wasm32-wasip2/release/`.
pub fn wasm_path(name: &str) -> PathBuf {
    let path = workspace_root().join(format!("target/wasm32-wasip2/release/{name}.wasm"));
    assert!(path.is_file(), "{} is missing: run the tests with `cargo xtask test`", path.display());
    path
}

/// Creates a fresh directory for one host run's state and logs.
pub fn scratch_dir(name: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = workspace_root().join(format!(
        "target/test-state/{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Returns a name no earlier run used, for keys in stores that outlive a test run (Redis).
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// How to start the host.
#[derive(Clone, Debug)]
pub struct HostOptions {
    pub manifest: PathBuf,
    pub runtime_config: Option<PathBuf>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub faults: bool,
}

impl HostOptions {
    pub fn new(manifest: impl Into<PathBuf>) -> Self {
        Self {
            manifest: manifest.into(),
            runtime_config: None,
            args: Vec::new(),
            env: Vec::new(),
            faults: false,
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, name: &str, value: impl Into<String>) -> Self {
        self.env.push((name.to_string(), value.into()));
        self
    }
}

/// A running host process; killed on drop.
pub struct Host {
    pub addr: SocketAddr,
    pub fault_addr: Option<SocketAddr>,
    pub state_dir: PathBuf,
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Reads the status, the headers and the whole body of `response`.
    pub(crate) async fn read(response: http::Response<hyper::body::Incoming>) -> Reply {
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let body = response.into_body().collect().await.expect("the body arrives").to_bytes();
        Reply { status, headers, body }
    }
}

impl Host {
    /// Starts the host and waits for its `ready` line; panics with its output otherwise.
    pub fn start(options: HostOptions) -> Self {
        match Self::try_start(options) {
            Ok(host) => host,
            Err(output) => panic!("the host did not start:\n{output}"),
        }
    }

    /// Starts the host; `Err` carries everything it printed if it exited instead.
    pub fn try_start(options: HostOptions) -> Result<Self, String> {
        let state_dir = scratch_dir("host");
        let fault_addr = options
            .faults
            .then(|| SocketAddr::from(([127, 0, 0, 1], free_port())));
        let mut command = Command::new(host_binary());
        command
            .arg("up")
            .arg("--from")
            .arg(&options.manifest)
            .args(["--listen", "127.0.0.1:0"])
            .arg("--state-dir")
            .arg(&state_dir)
            .args(&options.args)
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(config) = &options.runtime_config {
            command.arg("--runtime-config-file").arg(config);
        }
        if let Some(addr) = fault_addr {
            command.arg("--test-fault-listen").arg(addr.to_string());
        }
        let mut child = command.spawn().expect("the host binary starts");

        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel::<Option<SocketAddr>>();
        // Kept next to the components' logs, for the log scan after the suite.
        let copy = |name: &str| std::fs::File::create(state_dir.join(name)).expect("the state directory is writable");
        let (mut stdout_copy, mut stderr_copy) = (copy("host_stdout.txt"), copy("host_stderr.txt"));
        {
            let lines = stdout.clone();
            let pipe = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                let mut ready = Some(ready_tx);
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = writeln!(stdout_copy, "{line}");
                    if line.contains(r#""event":"ready""#)
                        && let Some(tx) = ready.take()
                    {
                        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
                        let _ = tx.send(value["listen"].as_str().and_then(|a| a.parse().ok()));
                    }
                    lines.lock().unwrap().push(line);
                }
                if let Some(tx) = ready.take() {
                    let _ = tx.send(None);
                }
            });
        }
        {
            let lines = stderr.clone();
            let pipe = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = writeln!(stderr_copy, "{line}");
                    lines.lock().unwrap().push(line);
                }
            });
        }

        let addr = ready_rx.recv_timeout(Duration::from_secs(60)).ok().flatten();
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            let out = stdout.lock().unwrap().join("\n");
            let err = stderr.lock().unwrap().join("\n");
            return Err(format!("{out}\n{err}"));
        };
        Ok(Self {
            addr,
            fault_addr,
            state_dir,
            child,
            stdout,
            stderr,
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// Returns the host process's id, e.g. to read its memory use.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[], "").await
    }

    pub async fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Reply {
        let mut builder = http::Request::builder().method(method).uri(self.url(path));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Full::new(body.into())).unwrap();
        let response = tokio::time::timeout(Duration::from_secs(30), self.client.request(request))
            .await
            .expect("the host answers within 30 s")
            .expect("the request reaches the host");
        Reply::read(response).await
    }

    /// Sets the fault switch for `component`: `unavailable`, `hang` or `none`.
    pub async fn set_fault(&self, component: &str, fault: &str) {
        let addr = self.fault_addr.expect("start the host with faults = true");
        let request = http::Request::put(format!("http://{addr}/faults/{component}"))
            .body(Full::new(Bytes::from(fault.to_string())))
            .unwrap();
        let response = self.client.request(request).await.unwrap();
        assert_eq!(response.status(), 204, "fault switch refused {component}={fault}");
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed");
        self.child.wait().unwrap()
    }

    /// Returns every stdout line so far (the host's JSON log).
    pub fn log_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Returns every stderr line so far (start-up text and component output).
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Request log lines as JSON, waiting briefly for lines still in flight.
    pub async fn request_logs(&self) -> Vec<serde_json::Value> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.log_lines()
            .iter()
            .filter(|l| l.contains(r#""event":"request""#))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A one-request-per-connection HTTP server on loopback that responds to every
/// request with `200 hello` and records the raw request heads it received.
pub struct LoopbackServer {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl LoopbackServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).map(|n| n == 1).unwrap_or(false) {
                    head.push(byte[0]);
                }
                seen.lock().unwrap().push(String::from_utf8_lossy(&head).into_owned());
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello");
            }
        });
        Self { port, requests }
    }
}

/// Reads the test suite's known secrets and schema prefix from `tests/test.env`
/// (the values `cargo xtask test` migrated the test schemas with).
pub fn test_env() -> Vec<(String, String)> {
    let path = workspace_root().join("tests/test.env");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
        .collect()
}

/// Returns one value of `tests/test.env`.
pub fn test_env_value(name: &str) -> String {
    test_env()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("tests/test.env has no {name}"))
}

/// Options that run the application's own `spin.toml` against the test
/// schemas, with the local runtime config (SQLite key-value stores in the
/// host's state directory).
/// The host's scheduler is off: tests call dispatch themselves.
pub fn app_options() -> HostOptions {
    test_app_options(workspace_root().join("spin.toml"))
}

/// Options that run the host's test application, `tests/fixture/spin.toml`,
/// with its own runtime config and without component output on the console.
/// `loopback_port` is where its outbound probe may connect; `api_token`
/// fills its secret variable.
pub fn fixture_options(loopback_port: u16, api_token: &str) -> HostOptions {
    let dir = workspace_root().join("tests/fixture");
    let mut options = HostOptions::new(dir.join("spin.toml"))
        .env("SPIN_VARIABLE_LOOPBACK_PORT", loopback_port.to_string())
        .env("SPIN_VARIABLE_API_TOKEN", api_token)
        .arg("--quiet-component-output");
    options.runtime_config = Some(dir.join("runtime-config.toml"));
    options
}

/// Options that run `tests/fixture/events.toml`: the real profiles component
/// with the test-only consumer of its events, scheduler off.
pub fn events_options() -> HostOptions {
    test_app_options(workspace_root().join("tests/fixture/events.toml"))
}

fn test_app_options(manifest: PathBuf) -> HostOptions {
    let mut options = HostOptions::new(manifest).arg("--dispatch-interval").arg("0");
    options.runtime_config = Some(workspace_root().join("infra/runtime-config/local.toml"));
    for (name, value) in test_env() {
        options = options.env(&name, value);
    }
    options
}

/// Connects to the test MariaDB as its admin (root on loopback), to check rows.
pub async fn admin_db() -> mysql_async::Conn {
    mysql_async::Conn::from_url("mysql://root@127.0.0.1:3306").await.expect("MariaDB runs on 127.0.0.1:3306")
}

impl Host {
    /// Reads a component's own log lines (its stdout, one JSON object per
    /// line), waiting briefly for lines still in flight.
    pub async fn component_logs(&self, component: &str) -> Vec<serde_json::Value> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let path = self.state_dir.join(format!("logs/{component}_stdout.txt"));
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Everything the host and its components wrote: stdout, stderr and every log file.
    pub fn all_output(&self) -> String {
        let mut text = self.log_lines().join("\n");
        text.push('\n');
        text.push_str(&self.stderr_lines().join("\n"));
        if let Ok(entries) = std::fs::read_dir(self.state_dir.join("logs")) {
            for entry in entries.flatten() {
                text.push('\n');
                text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        text
    }

    /// Sends JSON with `Content-Type: application/json`, and a token when given.
    pub async fn send_json(&self, method: &str, path: &str, token: Option<&str>, body: &serde_json::Value) -> Reply {
        let authorization = token.map(|t| format!("Token {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(value) = &authorization {
            headers.push(("authorization", value.as_str()));
        }
        self.request(method, path, &headers, body.to_string()).await
    }

    /// Sends a request without a body, with a token when given.
    pub async fn send(&self, method: &str, path: &str, token: Option<&str>) -> Reply {
        let authorization = token.map(|t| format!("Token {t}"));
        let headers: Vec<(&str, &str)> = authorization.iter().map(|v| ("authorization", v.as_str())).collect();
        self.request(method, path, &headers, "").await
    }
}

/// Runs `check` twice: with Spin's instance reuse (the default) and with reuse off.
pub async fn with_and_without_reuse<F, Fut>(options: HostOptions, check: F)
where
    F: Fn(Host, bool) -> Fut,
    Fut: Future<Output = ()>,
{
    check(Host::start(options.clone()), true).await;
    check(Host::start(options.arg("--max-instance-reuse-count").arg("1")), false).await;
}

/// Writes a runtime config whose stores named in `down` are Redis on a
/// closed port, the others Spin's SQLite store, and returns its path.
pub fn runtime_config_with_stores_down(down: &[&str]) -> PathBuf {
    let closed_port = free_port();
    let mut text = String::new();
    for label in ["profiles", "feed", "payments", "notifications"] {
        if down.contains(&label) {
            text.push_str(&format!("[key_value_store.{label}]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{closed_port}/0\"\n\n"));
        } else {
            text.push_str(&format!("[key_value_store.{label}]\ntype = \"spin\"\n\n"));
        }
    }
    let config = scratch_dir("stores-down").join("runtime-config.toml");
    std::fs::write(&config, text).unwrap();
    config
}
