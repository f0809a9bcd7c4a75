//! Outbound HTTP with a deadline the component enforces itself: Spin applies
//! no timeout of its own to outbound calls (its default is 600 s), so every
//! call races the whole exchange, response body included, against
//! `spin_sdk::time::sleep`.

use std::pin::pin;
use std::time::Duration;

use bytes::Bytes;
use futures::future::{Either, select};
use http_body_util::{BodyExt, Limited};
use spin_sdk::http::FullBody;

use crate::service::CallError;

/// A response read whole within the deadline, whatever its status.
pub struct Reply {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
}

/// Maximum size, in bytes, of a response body that [`send`] reads. A
/// provider's reply takes a few kilobytes, and the body is kept in memory.
pub const MAX_REPLY_BYTES: usize = 1 << 20;

/// Sends `request` and reads the whole response within `deadline`.
/// Dropping the exchange when the deadline passes abandons the call. A body
/// over [`MAX_REPLY_BYTES`] is not read further: the result is
/// [`CallError::TooLarge`] with the status, which the caller may still act on.
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
        let declared = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|length| length > MAX_REPLY_BYTES as u64) {
            return Err(CallError::TooLarge { status });
        }
        let body = Limited::new(response.into_body(), MAX_REPLY_BYTES)
            .collect()
            .await
            .map_err(|error| {
                if error.is::<http_body_util::LengthLimitError>() {
                    CallError::TooLarge { status }
                } else {
                    CallError::Transport("body".into())
                }
            })?
            .to_bytes();
        Ok(Reply { status, content_type, body })
    };
    match select(pin!(exchange), pin!(spin_sdk::time::sleep(deadline))).await {
        Either::Left((outcome, _)) => outcome,
        Either::Right(((), _)) => Err(CallError::Deadline),
    }
}

/// Names a WASI HTTP error by its variant only (its payload can quote a URL):
/// `ErrorCode::HttpRequestDenied` becomes `HttpRequestDenied`.
pub(crate) fn error_kind(error: &impl std::fmt::Debug) -> String {
    let text = format!("{error:?}");
    let end = text.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(text.len());
    let path = &text[..end];
    path.rsplit("::").next().unwrap_or(path).to_string()
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

        struct Qualified;
        impl std::fmt::Debug for Qualified {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_tuple("ErrorCode::DnsError").field(&"http://private.example").finish()
            }
        }
        assert_eq!(error_kind(&Qualified), "DnsError");
    }
}
