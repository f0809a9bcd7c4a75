//! The HTTP server under the loopback fakes of third-party APIs: it binds a
//! free port on 127.0.0.1 and serves HTTP/1 from a thread with its own Tokio
//! runtime, so a fake works under any test runtime. The fakes also share the
//! faults that tests inject.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

/// How long a request picked by a fake's `hang_next` waits before it gets a
/// 504, unless the fake is dropped first and closes the connection.
const HANG_DURATION: Duration = Duration::from_secs(600);

/// A server for one fake API and the fake's state `S`. Dropping it stops the
/// server and closes every open connection, including held ones.
pub(crate) struct FakeServer<S> {
    base_url: String,
    state: Arc<Mutex<S>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl<S: Send + 'static> FakeServer<S> {
    /// Binds 127.0.0.1 on a free port and starts serving in the background.
    /// `api` names the faked API in messages, such as `Mollie`. `new_state`
    /// gets the base URL, and `handle` returns the response to each request.
    pub(crate) fn start<H, F>(api: &str, new_state: impl FnOnce(&str) -> S, handle: H) -> Self
    where
        H: Fn(Arc<Mutex<S>>, Request<Incoming>) -> F + Copy + Send + 'static,
        F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("binding 127.0.0.1:0 for the fake {api} API failed: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("setting the fake {api} listener non-blocking failed: {e}"));
        let address = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("reading the address of the fake {api} listener failed: {e}"));
        let base_url = format!("http://{address}");

        let state = Arc::new(Mutex::new(new_state(&base_url)));
        let (stop, stopped) = oneshot::channel();
        let server_state = state.clone();
        let server_api = api.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("fake-{}", api.to_ascii_lowercase()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap_or_else(|e| panic!("building the fake {server_api} runtime failed: {e}"));
                runtime.block_on(serve(&server_api, listener, server_state, handle, stopped));
                // Dropping the runtime here cancels the connection tasks, which
                // closes the connections of requests that still hang.
            })
            .unwrap_or_else(|e| panic!("starting the fake {api} thread failed: {e}"));

        FakeServer { base_url, state, stop: Some(stop), thread: Some(thread) }
    }

    /// Returns `http://127.0.0.1:<port>`, without a trailing slash.
    pub(crate) fn base_url(&self) -> String {
        self.base_url.clone()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, S> {
        lock(&self.state)
    }
}

impl<S> Drop for FakeServer<S> {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Locks a fake's state even if a thread panicked while it held the lock, so
/// one failed check does not fail every later request. Each fake keeps its
/// state consistent at every point where it may panic under the lock.
pub(crate) fn lock<S>(state: &Mutex<S>) -> MutexGuard<'_, S> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Accepts connections until `stopped` fires, and serves each on a task of its own.
async fn serve<S, H, F>(
    api: &str,
    listener: std::net::TcpListener,
    state: Arc<Mutex<S>>,
    handle: H,
    mut stopped: oneshot::Receiver<()>,
) where
    S: Send + 'static,
    H: Fn(Arc<Mutex<S>>, Request<Incoming>) -> F + Copy + Send + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::from_std(listener)
        .unwrap_or_else(|e| panic!("registering the fake {api} listener with Tokio failed: {e}"));
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    eprintln!("fake {api} API: accepting a connection failed: {error}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };

        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = handle(state.clone(), request);
                async move { Ok::<_, std::convert::Infallible>(response.await) }
            });
            // Connection errors are not reported because most come from clients
            // that close the connection, as timeout tests do on purpose.
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// A fault that a test injects into a request, in place of the normal response.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Fault {
    /// An error response with this status.
    Fail(u16),
    /// No response for 10 minutes, or until the fake is dropped.
    Hang,
}

impl Fault {
    /// Returns `Fault::Fail(status)`. Panics unless `status` is 400 to 599, so
    /// call it before taking the state lock, which a panic would poison.
    pub(crate) fn failure(status: u16) -> Self {
        assert!((400..=599).contains(&status), "fail_next takes an error status (400 to 599), not {status}");
        Fault::Fail(status)
    }
}

/// Holds a request picked by [`Fault::Hang`] for 10 minutes. The caller then
/// responds with a 504, unless dropping the fake cancels this wait first.
pub(crate) async fn hang() {
    tokio::time::sleep(HANG_DURATION).await;
}

/// Sends a request to a fake and reads the whole response. Panics if the fake
/// does not respond within 10 s.
#[cfg(test)]
pub(crate) async fn send(base_url: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> crate::Reply {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let mut request = Request::builder().method(method).uri(format!("{base_url}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .expect("the fake responds within 10 s")
        .expect("the request reaches the fake");
    crate::Reply::read(response).await
}
