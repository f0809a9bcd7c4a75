//! The HTTP server: routes each request to a component, hands it to that
//! component's `ProxyHandler` (Spin 4's instance reuse), and writes one JSON
//! log line per request.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use http::header::{HOST, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::oneshot;
use wasmtime::component::Accessor;
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi_http::handler::{HandlerState, Proxy, ProxyHandler, ProxyPre, StoreBundle};
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;

use crate::faults::{Fault, Faults};
use crate::outbound::{Body, CHAINED_CLIENT_ADDR, OutboundHooks};
use crate::routes::{RouteMatch, Router};
use crate::state::{ComponentRuntime, HostState};

/// The client address of the scheduler's requests: the host itself.
pub const SCHEDULER_CLIENT_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// Spin's instance-reuse settings; each may be a value or a `low..high` range
/// sampled per instance, as `spin up` accepts them.
#[derive(Clone, Copy, Debug)]
pub struct ReuseConfig {
    pub max_reuse: Range<usize>,
    pub max_concurrent: Range<usize>,
    pub request_timeout: Option<Range<Duration>>,
    pub idle_timeout: Range<Duration>,
}

#[derive(Clone, Copy, Debug)]
pub enum Range<T> {
    Value(T),
    Bounds(T, T),
}

impl<T: rand::distr::uniform::SampleUniform + PartialOrd + Copy> Range<T> {
    fn sample(self) -> T {
        match self {
            Self::Value(v) => v,
            // The command-line parser only builds ranges with `low < high`.
            Self::Bounds(low, high) => rand::random_range(low..high),
        }
    }
}

/// One component's handler state: creates its instances' stores.
pub struct Handler {
    engine: Engine,
    runtime: Arc<ComponentRuntime>,
    app: Weak<App>,
    reuse: ReuseConfig,
    next_instance: AtomicU64,
}

impl HandlerState for Handler {
    type StoreData = HostState;

    fn new_store(&self, _req_id: Option<u64>) -> wasmtime::Result<StoreBundle<HostState>> {
        let instance_id = self.next_instance.fetch_add(1, Ordering::Relaxed);
        let hooks = OutboundHooks {
            allowed: self.runtime.allowed_hosts.clone(),
            app: self.app.clone(),
        };
        let mut store = Store::new(&self.engine, HostState::new(instance_id, self.runtime.clone(), hooks));
        store.limiter(|state| &mut state.limits);
        // Yield to the event loop at every epoch tick so a guest that never
        // awaits cannot starve the request deadline or its neighbours.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
        Ok(StoreBundle {
            store,
            write_profile: Box::new(|_| ()),
        })
    }

    fn request_timeout(&self) -> Duration {
        self.reuse.request_timeout.map(Range::sample).unwrap_or(Duration::MAX)
    }

    fn idle_instance_timeout(&self) -> Duration {
        self.reuse.idle_timeout.sample()
    }

    fn max_instance_reuse_count(&self) -> usize {
        self.reuse.max_reuse.sample()
    }

    fn max_instance_concurrent_reuse_count(&self) -> usize {
        self.reuse.max_concurrent.sample()
    }

    fn handle_worker_error(&self, error: wasmtime::Error) {
        log_event(serde_json::json!({
            "level": "error",
            "event": "instance_failed",
            "component": self.runtime.id,
            "error": format!("{error:#}"),
        }));
    }
}

/// The running application.
pub struct App {
    name: String,
    version: Option<String>,
    router: Router,
    handlers: BTreeMap<String, ProxyHandler<Handler>>,
    faults: Arc<Faults>,
    next_request: AtomicU64,
    listen: std::sync::OnceLock<SocketAddr>,
}

/// A compiled component with its runtime settings, as `App::new` takes it.
pub struct PreparedComponent {
    pub runtime: Arc<ComponentRuntime>,
    pub pre: ProxyPre<HostState>,
}

impl App {
    pub fn new(
        name: String,
        version: Option<String>,
        engine: &Engine,
        router: Router,
        components: Vec<PreparedComponent>,
        reuse: ReuseConfig,
        faults: Arc<Faults>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|app| {
            let handlers = components
                .into_iter()
                .map(|prepared| {
                    let id = prepared.runtime.id.clone();
                    let handler = Handler {
                        engine: engine.clone(),
                        runtime: prepared.runtime,
                        app: app.clone(),
                        reuse,
                        next_instance: AtomicU64::new(1),
                    };
                    (id, ProxyHandler::new(handler, prepared.pre))
                })
                .collect();
            Self {
                name,
                version,
                router,
                handlers,
                faults,
                next_request: AtomicU64::new(1),
                listen: std::sync::OnceLock::new(),
            }
        })
    }

    /// Returns the address the app serves on, for requests a component sends to itself.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.get().copied()
    }

    /// Accepts connections until the process ends; with `tls`, over HTTPS.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener, tls: Option<tokio_rustls::TlsAcceptor>) -> Result<()> {
        if let Ok(address) = listener.local_addr() {
            let _ = self.listen.set(address);
        }
        let scheme = if tls.is_some() { Scheme::HTTPS } else { Scheme::HTTP };
        loop {
            let (stream, client_addr) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    log_event(serde_json::json!({"level": "warn", "event": "accept_failed", "error": error.to_string()}));
                    continue;
                }
            };
            let app = self.clone();
            let tls = tls.clone();
            let scheme = scheme.clone();
            tokio::spawn(async move {
                match tls {
                    None => app.serve_connection(stream, client_addr, scheme).await,
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(stream) => app.serve_connection(stream, client_addr, scheme).await,
                        Err(error) => log_event(serde_json::json!({
                            "level": "warn",
                            "event": "tls_handshake_failed",
                            "error": error.to_string(),
                        })),
                    },
                }
            });
        }
    }

    async fn serve_connection<S>(self: Arc<Self>, stream: S, client_addr: SocketAddr, scheme: Scheme)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let app = self.clone();
            let scheme = scheme.clone();
            async move {
                let req = req.map(|body| body.map_err(ErrorCode::from_hyper_request_error).boxed_unsync());
                Ok::<_, std::convert::Infallible>(app.handle_public(req, client_addr, scheme).await)
            }
        });
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), service)
            .await;
    }

    async fn handle_public(self: &Arc<Self>, req: http::Request<Body>, client_addr: SocketAddr, scheme: Scheme) -> http::Response<Body> {
        let path = req.uri().path().to_string();
        if let Some(well_known) = path.strip_prefix("/.well-known/spin/") {
            let response = match well_known {
                "health" => plain(200, "OK"),
                "info" => {
                    let mut info = serde_json::json!({ "name": self.name });
                    if let Some(version) = &self.version {
                        info["version"] = version.as_str().into();
                    }
                    let mut response = plain(200, &info.to_string());
                    response
                        .headers_mut()
                        .insert("content-type", HeaderValue::from_static("application/json"));
                    response
                }
                _ => empty(404),
            };
            self.log_unrouted(req.method(), &path, response.status());
            return response;
        }
        match self.router.route(&path) {
            Some(route) => self.dispatch(route, req, client_addr, scheme, false).await,
            None => {
                let response = empty(404);
                self.log_unrouted(req.method(), &path, response.status());
                response
            }
        }
    }

    /// Logs a request the host served itself: no component, and the route
    /// only for Spin's fixed `/.well-known/spin/` paths (never a client's path).
    fn log_unrouted(&self, method: &http::Method, path: &str, status: http::StatusCode) {
        let route = path.starts_with("/.well-known/spin/").then_some("/.well-known/spin/...");
        log_event(serde_json::json!({
            "level": "info",
            "event": "request",
            "component": null,
            "route": route,
            "method": method.as_str(),
            "status": status.as_u16(),
            "sequence": self.next_request.fetch_add(1, Ordering::Relaxed),
            "chained": false,
        }));
    }

    /// Sends the scheduler's `POST` to a dispatch route, through the router
    /// like a client's request, from [`SCHEDULER_CLIENT_ADDR`]. Returns the status.
    pub async fn dispatch_scheduled(self: &Arc<Self>, path: &str, token: &str) -> u16 {
        let Some(route) = self.router.route(path) else { return 404 };
        let host = self.listen_addr().map_or_else(|| "localhost".to_string(), |address| address.to_string());
        let request = http::Request::post(path)
            .header(HOST, host)
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .header(http::header::CONTENT_LENGTH, "0")
            .body(Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync());
        let Ok(request) = request else { return 400 };
        self.dispatch(route, request, SCHEDULER_CLIENT_ADDR, Scheme::HTTP, false).await.status().as_u16()
    }

    /// Dispatches a service-chaining request from a component to `component`.
    pub async fn dispatch_chained(self: &Arc<Self>, component: &str, req: http::Request<Body>) -> Result<http::Response<Body>, ErrorCode> {
        if !self.handlers.contains_key(component) {
            return Err(ErrorCode::DestinationNotFound);
        }
        let route = RouteMatch::chained(component, req.uri().path());
        Ok(self.dispatch(route, req, CHAINED_CLIENT_ADDR, Scheme::HTTP, true).await)
    }

    async fn dispatch(
        self: &Arc<Self>,
        route: RouteMatch,
        req: http::Request<Body>,
        client_addr: SocketAddr,
        scheme: Scheme,
        chained: bool,
    ) -> http::Response<Body> {
        let started = Instant::now();
        let sequence = self.next_request.fetch_add(1, Ordering::Relaxed);
        let method = req.method().to_string();

        let outcome = self.execute(&route, req, client_addr, scheme).await;

        let (response, instance, error) = match outcome {
            Ok((response, instance)) => (response, instance, None),
            Err(Failure::BadRequest(message)) => (plain(400, &message), None, Some(message)),
            Err(Failure::Internal(error)) => (empty(500), None, Some(format!("{error:#}"))),
        };
        let mut line = serde_json::json!({
            "level": if response.status().is_server_error() { "error" } else { "info" },
            "event": "request",
            "component": route.component,
            "route": route.raw_route,
            "method": method,
            "status": response.status().as_u16(),
            "latency_ms": (started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
            "instance": instance,
            "sequence": sequence,
            "chained": chained,
        });
        // The component's own request id, so this line and the component's line can be matched.
        if let Some(request_id) = response.headers().get("x-request-id").and_then(|v| v.to_str().ok()) {
            line["request_id"] = request_id.into();
        }
        if let Some(error) = error {
            line["error"] = error.into();
        }
        log_event(line);
        response
    }

    async fn execute(
        self: &Arc<Self>,
        route: &RouteMatch,
        req: http::Request<Body>,
        client_addr: SocketAddr,
        scheme: Scheme,
    ) -> Result<(http::Response<Body>, Option<u64>), Failure> {
        let handler = self
            .handlers
            .get(&route.component)
            .ok_or_else(|| Failure::Internal(anyhow!("no handler for component `{}`", route.component)))?;
        let req = prepare_request(route, req, client_addr, scheme).map_err(|e| Failure::BadRequest(format!("{e:#}")))?;

        match self.faults.get(&route.component) {
            Some(Fault::Unavailable) => {
                let mut response = plain(503, r#"{"errors":{"body":["service unavailable"]}}"#);
                response.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
                response.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
                return Ok((response, None));
            }
            Some(Fault::Hang) => self.faults.wait_while_hanging(&route.component).await,
            None => {}
        }

        let (request, request_io) = wasmtime_wasi_http::p3::Request::from_http(req);
        let (tx, rx) = oneshot::channel::<wasmtime::Result<(u64, http::Response<Body>)>>();
        handler.spawn(
            None,
            Box::new(move |store: &Accessor<HostState>, proxy: &Proxy| {
                Box::pin(async move {
                    let result = async {
                        let Proxy::P3(service) = proxy else {
                            return Err(wasmtime::format_err!("component does not export wasi:http/handler@0.3"));
                        };
                        let (instance, request) = store.with(|mut access| -> wasmtime::Result<_> {
                            let state = access.get();
                            Ok((state.instance_id, state.table.push(request)?))
                        })?;
                        let response = service.wasi_http_handler().call_handle(store, request).await?;
                        let response = store.with(|mut access| -> wasmtime::Result<_> {
                            let response = access.get().table.delete(response?)?;
                            response.into_http(&mut access, request_io)
                        })?;
                        wasmtime::Result::Ok((instance, response))
                    }
                    .await;
                    match result {
                        Ok((instance, response)) => {
                            let (done_tx, done_rx) = oneshot::channel();
                            let cut_off = Arc::new(AtomicBool::new(false));
                            let mut guard = CutOffGuard(Some(cut_off.clone()));
                            let response = response.map(|inner| {
                                ResponseBody { inner, done: Some(done_tx), cut_off }.boxed_unsync()
                            });
                            if tx.send(Ok((instance, response))).is_ok() {
                                // Keep the instance's event loop running until the body is sent.
                                let _ = done_rx.await;
                            }
                            guard.disarm();
                        }
                        Err(error) => {
                            let _ = tx.send(Err(error));
                        }
                    }
                })
            }),
        );

        match rx.await {
            Ok(Ok((instance, response))) => Ok((response, Some(instance))),
            Ok(Err(error)) => Err(Failure::Internal(anyhow!("component failed: {error:#}"))),
            Err(_) => Err(Failure::Internal(anyhow!(
                "the instance ended before it returned a response (trap, memory limit or request timeout)"
            ))),
        }
    }
}

enum Failure {
    BadRequest(String),
    Internal(anyhow::Error),
}

/// Spin's request preparation: the client's headers first, then the `spin-*`
/// headers, and an absolute URI built from the scheme and the `Host` header.
fn prepare_request(
    route: &RouteMatch,
    req: http::Request<Body>,
    client_addr: SocketAddr,
    scheme: Scheme,
) -> Result<http::Request<Body>> {
    let (mut parts, body) = req.into_parts();
    for (name, value) in &parts.headers {
        value
            .to_str()
            .with_context(|| format!("header `{name}` is not valid UTF-8"))?;
    }
    let host_header = parts
        .headers
        .get(HOST)
        .map(|h| h.to_str().map(str::to_string))
        .transpose()?;
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());

    let spin_headers = route.spin_headers(
        scheme.as_str(),
        host_header.as_deref().unwrap_or("localhost"),
        &path_and_query,
        client_addr,
    );
    for (name, value) in spin_headers {
        parts
            .headers
            .append(HeaderName::from_bytes(name.as_bytes())?, HeaderValue::from_str(&value)?);
    }

    let header_authority = host_header
        .as_deref()
        .map(|h| h.parse::<Authority>().context("`Host` header is not a valid authority"))
        .transpose()?;
    let authority = match (header_authority, parts.uri.authority().cloned()) {
        (Some(a), Some(b)) if a != b => bail!("authority in `Host` header does not match the request URI"),
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => bail!("no `Host` header in the request"),
    };
    parts.uri = http::Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path_and_query)
        .build()?;
    Ok(http::Request::from_parts(parts, body))
}

/// A guest's response body as hyper sends it. It reports when hyper has
/// finished with it, and turns an early end into an error when the instance
/// was stopped mid-body (request timeout, trap), so hyper aborts the
/// connection instead of ending a cut-off body like a complete one.
struct ResponseBody<B> {
    inner: B,
    done: Option<oneshot::Sender<()>>,
    cut_off: Arc<AtomicBool>,
}

impl<B> Drop for ResponseBody<B> {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }
}

impl<B: http_body::Body<Data = Bytes, Error = ErrorCode> + Unpin> http_body::Body for ResponseBody<B> {
    type Data = Bytes;
    type Error = ErrorCode;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, ErrorCode>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) if self.cut_off.load(Ordering::Acquire) => Poll::Ready(Some(Err(
                ErrorCode::InternalError(Some("the instance stopped before the response body was complete".into())),
            ))),
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream() && !self.cut_off.load(Ordering::Acquire)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Marks the body as cut off if the request task is dropped before hyper
/// has finished with the body.
struct CutOffGuard(Option<Arc<AtomicBool>>);

impl CutOffGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for CutOffGuard {
    fn drop(&mut self) {
        if let Some(flag) = self.0.take() {
            flag.store(true, Ordering::Release);
        }
    }
}

fn plain(status: u16, text: &str) -> http::Response<Body> {
    http::Response::builder()
        .status(status)
        .body(Full::new(Bytes::copy_from_slice(text.as_bytes())).map_err(|never| match never {}).boxed_unsync())
        .expect("static response parts are valid")
}

fn empty(status: u16) -> http::Response<Body> {
    http::Response::builder()
        .status(status)
        .body(Empty::new().map_err(|never| match never {}).boxed_unsync())
        .expect("static response parts are valid")
}

/// Writes one JSON log line with a timestamp to stdout.
pub fn log_event(mut line: serde_json::Value) {
    line["time"] = humantime::format_rfc3339_millis(SystemTime::now()).to_string().into();
    println!("{line}");
}
