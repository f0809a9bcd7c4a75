//! HTTP conventions shared by the four components: the error envelope every
//! route uses, `{"errors": {"body": ["<message>", …]}}`, and the health response.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use spin_sdk::http::FullBody;

/// A complete response, built in memory.
pub type Response = http::Response<FullBody<Bytes>>;

/// Builds a response with a body and its content type.
pub fn with_body(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response {
    let mut response = http::Response::new(FullBody::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Builds the error envelope with one message in `errors.body`.
pub fn error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "errors": { "body": [message] } });
    with_body(status, "application/json", body.to_string())
}

/// Returns `404` in the error envelope.
pub fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not found")
}

/// Returns `405` in the error envelope, with the `Allow` header listing `allow`.
pub fn method_not_allowed(allow: &'static str) -> Response {
    let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// Returns the health response: `200` with `up` as plain text. Details of a
/// failing dependency go to the log, never into this body.
pub fn health_up() -> Response {
    with_body(StatusCode::OK, "text/plain", "up")
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use http_body::Body;

    use super::*;

    /// Reads a `FullBody` without an async runtime: it yields its one frame at once.
    fn body_text(response: Response) -> String {
        let mut body = pin!(response.into_body());
        let mut context = Context::from_waker(Waker::noop());
        let mut text = String::new();
        while let Poll::Ready(Some(Ok(frame))) = body.as_mut().poll_frame(&mut context) {
            if let Ok(data) = frame.into_data() {
                text.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
        text
    }

    #[test]
    fn error_envelope_escapes_its_message() {
        let response = error(StatusCode::UNPROCESSABLE_ENTITY, r#"a "quoted" \ message"#);

        assert_eq!(response.status(), 422);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body: serde_json::Value = serde_json::from_str(&body_text(response)).unwrap();
        assert_eq!(body, serde_json::json!({"errors": {"body": [r#"a "quoted" \ message"#]}}));
    }

    #[test]
    fn method_not_allowed_lists_allowed_methods() {
        let response = method_not_allowed("GET");

        assert_eq!(response.status(), 405);
        assert_eq!(response.headers()[header::ALLOW], "GET");
    }

    #[test]
    fn health_up_is_plain_text() {
        let response = health_up();

        assert_eq!(response.status(), 200);
        assert_eq!(body_text(response), "up");
    }
}
