//! Outbound HTTP from components: the allow-list check, and service chaining
//! (`http://<component>.spin.internal/...`) dispatched in-process as Spin
//! does, with the chained request's client address `0.0.0.0:0` and no
//! request-options timeouts.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use http::header::HOST;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use wasmtime_wasi::TrappableError;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p3::{RequestOptions, WasiHttpHooks, default_send_request};

use crate::allowed_hosts::{AllowedHosts, chaining_target_of_host};
use crate::server::App;

pub type Body = UnsyncBoxBody<Bytes, ErrorCode>;

/// The client address Spin gives chained requests.
pub const CHAINED_CLIENT_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

type SendResult = Result<(http::Response<Body>, Box<dyn Future<Output = Result<(), ErrorCode>> + Send>), TrappableError<ErrorCode>>;

pub struct OutboundHooks {
    pub allowed: AllowedHosts,
    pub app: Weak<App>,
}

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<Body>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), ErrorCode>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        // Errors the guest reports while reading the response are not actionable here.
        drop(fut);
        let allowed = self.allowed.clone();
        let app = self.app.clone();
        Box::new(async move { send(allowed, app, request, options).await.map_err(TrappableError::from) })
    }
}

async fn send(
    allowed: AllowedHosts,
    app: Weak<App>,
    mut request: http::Request<Body>,
    options: Option<RequestOptions>,
) -> Result<(http::Response<Body>, Box<dyn Future<Output = Result<(), ErrorCode>> + Send>), ErrorCode> {
    let host = request
        .uri()
        .authority()
        .map(|a| a.host().to_string())
        .unwrap_or_default();

    // `self.alt` (or an empty host) means this application, reached through
    // its own listener as Spin does. A relative URL never gets here: wasmtime
    // 44 rejects a URI without an authority with `HttpRequestUriInvalid`.
    let is_self = host.is_empty() || host == "self.alt";
    let permitted = if is_self {
        allowed.allows_self()
    } else {
        allowed.allows_url(&request.uri().to_string(), "https")
    };
    if !permitted {
        return Err(ErrorCode::HttpRequestDenied);
    }

    if is_self {
        let app: Arc<App> = app.upgrade().ok_or(ErrorCode::ConnectionRefused)?;
        let origin = app.listen_addr().ok_or(ErrorCode::ConnectionRefused)?;
        let path_and_query = request.uri().path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
        *request.uri_mut() = format!("http://{origin}{path_and_query}")
            .parse()
            .map_err(|_| ErrorCode::HttpRequestUriInvalid)?;
        let host_value = http::HeaderValue::from_str(&origin.to_string()).map_err(|_| ErrorCode::HttpRequestUriInvalid)?;
        request.headers_mut().insert(HOST, host_value);
    }

    if let Some(component) = chaining_target_of_host(&host) {
        // Spin drops the `Host` header of a chained request, so the component
        // gets `localhost` in `spin-full-url`, as under `spin up`.
        request.headers_mut().remove(HOST);
        let app: Arc<App> = app.upgrade().ok_or(ErrorCode::ConnectionRefused)?;
        let response = app.dispatch_chained(&component, request).await?;
        let done: Box<dyn Future<Output = Result<(), ErrorCode>> + Send> = Box::new(async { Ok(()) });
        return Ok((response, done));
    }

    let (response, io) = default_send_request(request, options).await?;
    let done: Box<dyn Future<Output = Result<(), ErrorCode>> + Send> = Box::new(io);
    Ok((response.map(BodyExt::boxed_unsync), done))
}
