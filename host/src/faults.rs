//! A test-only fault switch: makes a named component respond 503 or hang, so
//! outage handling can be tested against the real components. It is off
//! unless `--test-fault-listen` is given, and listens only on loopback.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The component responds `503` with `Retry-After`.
    Unavailable,
    /// The component accepts the request and sends no response until the fault is cleared.
    Hang,
}

#[derive(Default)]
pub struct Faults {
    active: Mutex<BTreeMap<String, Fault>>,
    changed: Option<watch::Sender<u64>>,
}

impl Faults {
    pub fn enabled() -> Self {
        Self {
            active: Mutex::default(),
            changed: Some(watch::channel(0).0),
        }
    }

    pub fn get(&self, component: &str) -> Option<Fault> {
        self.changed.as_ref()?;
        self.active.lock().unwrap_or_else(|p| p.into_inner()).get(component).copied()
    }

    fn set(&self, component: &str, fault: Option<Fault>) {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        match fault {
            Some(fault) => active.insert(component.to_string(), fault),
            None => active.remove(component),
        };
        if let Some(changed) = &self.changed {
            changed.send_modify(|n| *n += 1);
        }
    }

    /// Waits while `component` is set to hang; returns once the fault changes.
    pub async fn wait_while_hanging(&self, component: &str) {
        let Some(changed) = &self.changed else { return };
        let mut rx = changed.subscribe();
        while self.get(component) == Some(Fault::Hang) {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// Serves `PUT /faults/<component>` with body `unavailable`, `hang` or `none`,
/// and `GET /faults`, on a loopback address only.
pub async fn serve(listen: SocketAddr, faults: Arc<Faults>, components: Vec<String>) -> Result<()> {
    if !listen.ip().is_loopback() {
        bail!("--test-fault-listen must be a loopback address, not {listen}");
    }
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let faults = faults.clone();
            let components = components.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let faults = faults.clone();
                    let components = components.clone();
                    async move { Ok::<_, std::convert::Infallible>(control(req, &faults, &components).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(())
}

async fn control(
    req: http::Request<hyper::body::Incoming>,
    faults: &Faults,
    components: &[String],
) -> http::Response<Full<Bytes>> {
    let reply = |status: u16, body: String| {
        http::Response::builder()
            .status(status)
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from(body)))
            .expect("static response parts are valid")
    };
    let path = req.uri().path().to_string();
    if req.method() == http::Method::GET && path == "/faults" {
        let active = faults.active.lock().unwrap_or_else(|p| p.into_inner()).clone();
        return reply(200, format!("{active:?}"));
    }
    let Some(component) = path.strip_prefix("/faults/").map(str::to_string) else {
        return reply(404, "not found".into());
    };
    if req.method() != http::Method::PUT {
        return reply(405, "use PUT".into());
    }
    if !components.contains(&component) {
        return reply(404, format!("no component `{component}`"));
    }
    let Ok(body) = req.into_body().collect().await else {
        return reply(400, "unreadable body".into());
    };
    let fault = match body.to_bytes().as_ref() {
        b"unavailable" => Some(Fault::Unavailable),
        b"hang" => Some(Fault::Hang),
        b"none" => None,
        _ => return reply(400, "body must be unavailable, hang or none".into()),
    };
    faults.set(&component, fault);
    reply(204, String::new())
}
