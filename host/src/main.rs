//! `conduit-host`: runs a Spin 4 application (`spin.toml`) the way `spin up`
//! does, for machines without the Spin CLI. See `docs/local-host.md`.

mod allowed_hosts;
mod bindings;
mod faults;
mod kv;
mod manifest;
mod mysql;
mod outbound;
mod output;
mod routes;
mod runtime_config;
mod scheduler;
mod server;
mod state;
mod tls;
mod variables;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi_http::handler::ProxyPre;
use wasmtime_wasi_http::p3::bindings::ServicePre;

use crate::allowed_hosts::AllowedHosts;
use crate::faults::Faults;
use crate::manifest::Manifest;
use crate::output::ComponentOutput;
use crate::runtime_config::{KvStoreConfig, RuntimeConfig};
use crate::server::{App, PreparedComponent, Range, ReuseConfig};
use crate::state::{ComponentRuntime, HostState};
use crate::variables::{AppVariables, ComponentVariables, EnvLookup};

/// How often the epoch advances; a guest that never awaits yields this often.
const EPOCH_TICK: Duration = Duration::from_millis(10);

#[derive(Parser, Debug)]
#[command(name = "conduit-host", version, about = "Run a Spin 4 application locally, as `spin up` does")]
enum Cli {
    /// Serve the application.
    Up(UpArgs),
}

#[derive(clap::Args, Debug)]
struct UpArgs {
    /// The application manifest.
    #[arg(short = 'f', long = "from", default_value = "spin.toml")]
    manifest: PathBuf,

    /// Runtime config file in Spin's format (key-value stores).
    #[arg(long)]
    runtime_config_file: Option<PathBuf>,

    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "SPIN_HTTP_LISTEN_ADDR", default_value = "127.0.0.1:3000", value_parser = parse_listen_addr)]
    listen: SocketAddr,

    /// Directory for the default SQLite key-value file; defaults to `.spin` beside the manifest.
    #[arg(long)]
    state_dir: Option<PathBuf>,

    /// Directory for component stdout/stderr files; defaults to `<state-dir>/logs`.
    #[arg(long)]
    log_dir: Option<PathBuf>,

    /// Requests one instance serves before it is dropped (a value or a range `a..b`).
    #[arg(long, value_parser = parse_usize_range, default_value = "128")]
    max_instance_reuse_count: Range<usize>,

    /// Requests one instance serves at once (a value or a range `a..b`).
    #[arg(long, value_parser = parse_usize_range, default_value = "16")]
    max_instance_concurrent_reuse_count: Range<usize>,

    /// Time an idle instance is kept for reuse, e.g. `1s` or `500ms` (a bare number is seconds).
    #[arg(long, value_parser = parse_duration_range, default_value = "1s")]
    idle_instance_timeout: Range<Duration>,

    /// Deadline for one request, e.g. `30s` or `500ms` (a bare number is seconds); none by default, as in Spin.
    #[arg(long, value_parser = parse_duration_range)]
    request_timeout: Option<Range<Duration>>,

    /// Linear memory one instance may use, in MiB.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    max_instance_memory_mib: u32,

    /// TLS certificate chain (PEM); with --tls-key, the app is served over HTTPS.
    #[arg(long, env = "SPIN_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// TLS private key (PEM) for --tls-cert.
    #[arg(long, env = "SPIN_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// How often to call each component's `POST /ops/<component>/dispatch`
    /// with the `scheduler_token` variable, e.g. `10s` (a bare number is
    /// seconds); `0` turns the scheduler off.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    dispatch_interval: Duration,

    /// Test-only: serve the fault switch on this loopback address.
    #[arg(long)]
    test_fault_listen: Option<SocketAddr>,

    /// Do not echo component output to the terminal (it still goes to the log files).
    #[arg(long)]
    quiet_component_output: bool,
}

fn main() -> Result<()> {
    let Cli::Up(args) = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(up(args))
}

async fn up(args: UpArgs) -> Result<()> {
    let started = Instant::now();
    let manifest = Manifest::load(&args.manifest)?;
    let runtime_config = match &args.runtime_config_file {
        Some(path) => RuntimeConfig::load(path)?,
        None => RuntimeConfig::default(),
    };
    let mut env_providers = vec![runtime_config::EnvProvider::default()];
    env_providers.extend(runtime_config.env_providers.iter().cloned());
    let lookup = EnvLookup::new(env_providers)?;
    let app_variables = AppVariables::resolve(&manifest, &lookup, |name| std::env::var(name).ok())?;
    let state_dir = args.state_dir.clone().unwrap_or_else(|| manifest.base_dir.join(".spin"));
    let log_dir = args.log_dir.clone().unwrap_or_else(|| state_dir.join("logs"));

    let memory_limit = (args.max_instance_memory_mib as usize) << 20;
    let engine = build_engine(memory_limit)?;
    let linker = build_linker(&engine)?;
    let stores = open_stores(&manifest, &runtime_config, &state_dir)?;

    let mut prepared = Vec::new();
    // Components that share a Wasm file are compiled once: the compiled code
    // is immutable, and each component still gets its own instances and settings.
    let mut compiled_files: BTreeMap<PathBuf, Component> = BTreeMap::new();
    for component in manifest.components.values() {
        let runtime = component_runtime(component, &app_variables, &stores, &log_dir, &args)
            .with_context(|| format!("component `{}`", component.id))?;
        let compiled = match compiled_files.get(&component.source) {
            Some(compiled) => compiled.clone(),
            None => {
                let compiled = wasm(Component::from_file(&engine, &component.source)).with_context(|| {
                    format!(
                        "cannot compile component `{}` from {} (if the cause is a memory limit, raise --max-instance-memory-mib, now {} MiB)",
                        component.id,
                        component.source.display(),
                        args.max_instance_memory_mib
                    )
                })?;
                compiled_files.insert(component.source.clone(), compiled.clone());
                compiled
            }
        };
        let instance_pre = wasm(linker.instantiate_pre(&compiled))
            .with_context(|| format!("component `{}` needs an import this host does not provide", component.id))?;
        let service = wasm(ServicePre::new(instance_pre)).with_context(|| {
            format!("component `{}` does not export wasi:http/handler@0.3.0-rc-2026-03-15", component.id)
        })?;
        prepared.push(PreparedComponent {
            runtime: Arc::new(runtime),
            pre: ProxyPre::P3(service),
        });
    }

    let routes: Vec<(&str, &str)> = manifest
        .triggers
        .iter()
        .filter_map(|t| t.route.as_deref().map(|r| (r, t.component.as_str())))
        .collect();
    let router = routes::Router::build(routes.iter().copied())?;

    let faults = Arc::new(match args.test_fault_listen {
        Some(_) => Faults::enabled(),
        None => Faults::default(),
    });
    if let Some(listen) = args.test_fault_listen {
        faults::serve(listen, faults.clone(), manifest.components.keys().cloned().collect()).await?;
    }

    let reuse = ReuseConfig {
        max_reuse: args.max_instance_reuse_count,
        max_concurrent: args.max_instance_concurrent_reuse_count,
        request_timeout: args.request_timeout,
        idle_timeout: args.idle_instance_timeout,
    };
    let app = App::new(manifest.name.clone(), manifest.version.clone(), &engine, router, prepared, reuse, faults);

    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };

    spawn_epoch_ticker(engine.clone());
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| {
        format!(
            "cannot listen on {}: stop whatever uses that address or pass --listen with another one",
            args.listen
        )
    })?;
    let address = listener.local_addr()?;

    eprintln!("Serving {scheme}://{address}");
    eprintln!("Available Routes:");
    for trigger in &manifest.triggers {
        if let Some(route) = &trigger.route {
            eprintln!("  {}: {scheme}://{address}{}", trigger.component, route.replace("/...", "/ (wildcard)").replace("(wildcard)/", "(wildcard)"));
        }
    }
    server::log_event(serde_json::json!({
        "level": "info",
        "event": "ready",
        "listen": address.to_string(),
        "scheme": scheme,
        "components": manifest.components.len(),
        "startup_ms": started.elapsed().as_millis() as u64,
    }));

    scheduler::start(app.clone(), &manifest, &app_variables, args.dispatch_interval);
    tokio::select! {
        result = app.serve(listener, tls) => result,
        signal = shutdown_signal() => {
            server::log_event(serde_json::json!({"level": "info", "event": "stopping", "signal": signal}));
            Ok(())
        }
    }
}

/// Waits for Ctrl-C or SIGTERM (what Kubernetes and process managers send).
async fn shutdown_signal() -> &'static str {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}

fn build_engine(memory_limit: usize) -> Result<Engine> {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .wasm_component_model_async(true)
        .concurrency_support(true)
        .epoch_interruption(true);
    let mut pooling = PoolingAllocationConfig::default();
    pooling
        .total_component_instances(1_000)
        .total_memories(1_000)
        .total_tables(2_000)
        .total_stacks(1_000)
        .total_core_instances(4_000)
        .max_memory_size(memory_limit)
        .max_component_instance_size(10 << 20)
        .max_core_instance_size(10 << 20)
        .max_core_instances_per_component(200)
        .max_tables_per_component(64)
        .max_memories_per_component(32)
        .table_elements(100_000);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    wasm(Engine::new(&config)).context("cannot create the wasm engine")
}

/// Wasmtime's error type is not `std::error::Error`; keep its message and chain.
fn wasm<T>(result: wasmtime::Result<T>) -> Result<T> {
    result.map_err(|e| anyhow::anyhow!("{e:#}"))
}

fn build_linker(engine: &Engine) -> Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasm(wasmtime_wasi::p2::add_to_linker_async(&mut linker)).context("linking WASI 0.2")?;
    wasm(wasmtime_wasi::p3::add_to_linker(&mut linker)).context("linking WASI 0.3")?;
    wasm(wasmtime_wasi_http::p3::add_to_linker(&mut linker)).context("linking wasi:http 0.3")?;
    wasm(bindings::add_to_linker(&mut linker)).context("linking the Spin interfaces")?;
    Ok(linker)
}

/// Opens one backend per label any component uses, shared by every component that lists it.
fn open_stores(
    manifest: &Manifest,
    config: &RuntimeConfig,
    state_dir: &std::path::Path,
) -> Result<BTreeMap<String, kv::Store>> {
    let mut sqlite_files: BTreeMap<PathBuf, Arc<std::sync::Mutex<rusqlite::Connection>>> = BTreeMap::new();
    let mut stores = BTreeMap::new();
    for component in manifest.components.values() {
        for label in &component.key_value_stores {
            if stores.contains_key(label) {
                continue;
            }
            let store = match config.store_for(label) {
                None => bail!(
                    "component `{}` uses key-value store `{label}`, which the runtime config does not define; \
                     pass --runtime-config-file with a [key_value_store.{label}] table \
                     (this repository's is infra/runtime-config/local.toml)",
                    component.id
                ),
                Some(KvStoreConfig::Redis { url }) => kv::Store::redis(&url)
                    .with_context(|| format!("key-value store `{label}`"))?,
                Some(KvStoreConfig::Spin { path }) => {
                    let path = path.unwrap_or_else(|| state_dir.join("sqlite_key_value.db"));
                    let connection = match sqlite_files.get(&path) {
                        Some(connection) => connection.clone(),
                        None => {
                            let connection = kv::open_sqlite(&path)?;
                            sqlite_files.insert(path, connection.clone());
                            connection
                        }
                    };
                    kv::Store::sqlite(label, connection)
                }
            };
            stores.insert(label.clone(), store);
        }
    }
    Ok(stores)
}

fn component_runtime(
    component: &manifest::Component,
    app_variables: &AppVariables,
    stores: &BTreeMap<String, kv::Store>,
    log_dir: &std::path::Path,
    args: &UpArgs,
) -> Result<ComponentRuntime> {
    let allowed: Vec<String> = component
        .allowed_outbound_hosts
        .iter()
        .map(|entry| app_variables.expand(entry))
        .collect::<Result<_>>()?;
    Ok(ComponentRuntime {
        id: component.id.clone(),
        allowed_hosts: AllowedHosts::parse(&allowed)?,
        kv_stores: component
            .key_value_stores
            .iter()
            .map(|label| (label.clone(), stores[label].clone()))
            .collect(),
        variables: Arc::new(ComponentVariables::resolve(app_variables, &component.variables)?),
        environment: component.environment.clone().into_iter().collect(),
        output: ComponentOutput::new(&component.id, Some(log_dir), !args.quiet_component_output)?,
        memory_limit: (args.max_instance_memory_mib as usize) << 20,
    })
}

fn spawn_epoch_ticker(engine: Engine) {
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .expect("the epoch ticker thread starts");
}

/// Parses a value or a range `low..high`, with `low < high`.
fn parse_range<T: PartialOrd>(s: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<Range<T>, String> {
    match s.split_once("..") {
        Some((low, high)) => {
            let (low, high) = (parse(low)?, parse(high)?);
            if low >= high {
                return Err(format!("invalid range {s:?}: the first value must be below the second"));
            }
            Ok(Range::Bounds(low, high))
        }
        None => Ok(Range::Value(parse(s)?)),
    }
}

/// Parses a count of at least 1, or a range of them.
fn parse_usize_range(s: &str) -> Result<Range<usize>, String> {
    parse_range(s, |n| match n.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("invalid count {n:?}: {e}")),
    })
}

/// `5` and `5s` are seconds; `ms`, `us` and `ns` suffixes are accepted, as in Spin.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let number = |n: &str| {
        n.parse::<u64>().map_err(|_| {
            format!("invalid duration {s:?}: write a whole number of seconds (`30` or `30s`) or use `ms`, `us` or `ns`")
        })
    };
    if let Some(n) = s.strip_suffix("ms") {
        Ok(Duration::from_millis(number(n)?))
    } else if let Some(n) = s.strip_suffix("us").or_else(|| s.strip_suffix("μs")) {
        Ok(Duration::from_micros(number(n)?))
    } else if let Some(n) = s.strip_suffix("ns") {
        Ok(Duration::from_nanos(number(n)?))
    } else {
        Ok(Duration::from_secs(number(s.strip_suffix('s').unwrap_or(s))?))
    }
}

fn parse_duration_range(s: &str) -> Result<Range<Duration>, String> {
    parse_range(s, |d| match parse_duration(d)? {
        Duration::ZERO => Err(format!("invalid duration {d:?}: must be above zero")),
        duration => Ok(duration),
    })
}

/// Resolves `host:port` as Spin does, preferring 127.0.0.1 when a name such
/// as `localhost` resolves to several addresses.
fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    use std::net::{Ipv4Addr, ToSocketAddrs};

    let addresses: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| format!("invalid listen address {s:?}: {e}; write host:port, e.g. 127.0.0.1:3000"))?
        .collect();
    let loopback = addresses
        .iter()
        .find(|a| a.ip() == std::net::IpAddr::V4(Ipv4Addr::LOCALHOST));
    loopback
        .or(addresses.first())
        .copied()
        .ok_or_else(|| format!("{s:?} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_spin_suffixes() {
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("2m").unwrap_err().contains("`ms`"));
    }

    #[test]
    fn ranges_must_be_ordered_and_counts_positive() {
        assert!(matches!(parse_usize_range("4"), Ok(Range::Value(4))));
        assert!(matches!(parse_usize_range("1..8"), Ok(Range::Bounds(1, 8))));
        assert!(parse_usize_range("0").is_err());
        assert!(parse_usize_range("8..1").is_err());
        assert!(parse_duration_range("5s..1s").is_err());
        assert!(parse_duration_range("0").is_err());
    }

    #[test]
    fn zero_instance_memory_is_rejected() {
        let parsed = Cli::try_parse_from(["conduit-host", "up", "--max-instance-memory-mib", "0"]);

        assert!(parsed.is_err());
    }

    #[test]
    fn listen_addresses_resolve_like_spin() {
        assert_eq!(parse_listen_addr("localhost:3001").unwrap(), "127.0.0.1:3001".parse().unwrap());
        assert_eq!(parse_listen_addr("[::1]:3001").unwrap(), "[::1]:3001".parse().unwrap());
        assert!(parse_listen_addr("3001").is_err());
    }
}
