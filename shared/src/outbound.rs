//! Outbound HTTP with a deadline the component enforces itself: Spin applies
//! no timeout of its own to outbound calls (its default is 600 s), so every
//! call races the whole exchange, response body included, against
//! `spin_sdk::time::sleep`.

use std::pin::pin;
use std::time::Duration;

use bytes::Bytes;
use futures::future::{Either, select};
use spin_sdk::http::FullBody;
use spin_sdk::http::body::IncomingBodyExt;

use crate::service::CallError;

/// A response read whole within the deadline, whatever its status.
pub struct Reply {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
}

/// Sends `request` and reads the whole response within `deadline`.
/// Dropping the exchange when the deadline passes abandons the call.
pub async fn send(request: http::Request<FullBody<Bytes>>, deadline: Duration) -> Result<Reply, CallError> {
    let exchange = async {
        let response = spin_sdk::http::send(request)
            .await
            .map_err(|error| CallError::Transport(error_kind(&error)))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response
            .into_body()
            .bytes()
            .await
            .map_err(|_| CallError::Transport("body".into()))?;
        Ok(Reply { status, content_type, body })
    };
    match select(pin!(exchange), pin!(spin_sdk::time::sleep(deadline))).await {
        Either::Left((outcome, _)) => outcome,
        Either::Right(((), _)) => Err(CallError::Deadline),
    }
}

/// Names a WASI HTTP error by its variant only (its payload can quote a URL).
pub(crate) fn error_kind(error: &impl std::fmt::Debug) -> String {
    let text = format!("{error:?}");
    let end = text.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(text.len());
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_keep_the_variant_name_only() {
        #[derive(Debug)]
        #[allow(dead_code)]
        enum Sample {
            ConnectionRefused,
            DestinationNotFound(String),
        }
        assert_eq!(error_kind(&Sample::DestinationNotFound("http://x".into())), "DestinationNotFound");
        assert_eq!(error_kind(&Sample::ConnectionRefused), "ConnectionRefused");
    }
}
