//! The errors a route returns, one variant per status of the API's status
//! table. Caller faults (4xx) carry a message meant for the client. Our own
//! faults (5xx) carry a cause for the log, and the client sees only a generic
//! message and the request id.

use std::fmt;

use http::StatusCode;

use crate::db::DbError;

/// Seconds a client is asked to wait when a dependency is down.
pub const RETRY_AFTER_SECONDS: u32 = 2;

/// Messages about particular fields, in the order they were found. Each
/// becomes a key of the error envelope next to `body`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FieldErrors(Vec<(String, String)>);

impl FieldErrors {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `field` is at fault, with a message that reads after the field name
    /// ("username" + "has already been taken").
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0.push((field.to_string(), message.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(field, message)| (field.as_str(), message.as_str()))
    }

    /// Returns `Err(ApiError::Validation)` when any field is at fault.
    pub fn into_result(self) -> Result<(), ApiError> {
        if self.is_empty() { Ok(()) } else { Err(ApiError::Validation(self)) }
    }
}

/// Everything a route can fail with. Each variant documents its status.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the request cannot be parsed (bad JSON, bad percent-encoding, missing header).
    BadRequest(String),
    /// 401: missing, malformed, expired or revoked credentials.
    Unauthorized(String),
    /// 403: authenticated, but the caller may not do this.
    Forbidden(String),
    /// 404: no such resource, or one the caller may not know about.
    NotFound(String),
    /// 405: the path exists but not for this method; carries the `Allow` value.
    MethodNotAllowed(&'static str),
    /// 409: conflicts with the current state.
    Conflict(String),
    /// 413: the body is larger than the route accepts; carries the limit in bytes.
    PayloadTooLarge(usize),
    /// 415: the route expects JSON.
    UnsupportedMediaType,
    /// 422: well-formed but invalid; every field at fault is named.
    Validation(FieldErrors),
    /// 429 with `Retry-After`: the caller must wait this many seconds.
    TooManyRequests { message: String, retry_after_seconds: u64 },
    /// 503 with `Retry-After`: a dependency (database, store) is unreachable.
    Unavailable(String),
    /// 500: our fault. The cause goes to the log, never to the client.
    Internal(anyhow::Error),
}

impl ApiError {
    /// Builds a 422 for one field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        let mut fields = FieldErrors::new();
        fields.add(field, message);
        Self::Validation(fields)
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Builds the error envelope: `body` always, plus one key per field at
    /// fault. For 5xx the messages are generic and carry the request id.
    pub fn envelope(&self, request_id: &str) -> serde_json::Value {
        let mut errors = serde_json::Map::new();
        let body: Vec<String> = match self {
            Self::BadRequest(message)
            | Self::Unauthorized(message)
            | Self::Forbidden(message)
            | Self::NotFound(message)
            | Self::Conflict(message)
            | Self::TooManyRequests { message, .. } => vec![message.clone()],
            Self::MethodNotAllowed(_) => vec!["method not allowed".into()],
            Self::PayloadTooLarge(limit) => vec![format!("body is larger than {limit} bytes")],
            Self::UnsupportedMediaType => vec!["content type must be application/json".into()],
            Self::Validation(fields) => {
                for (field, message) in fields.iter() {
                    let entry = errors
                        .entry(field.to_string())
                        .or_insert_with(|| serde_json::Value::Array(Vec::new()));
                    if let serde_json::Value::Array(list) = entry {
                        list.push(message.into());
                    }
                }
                fields.iter().map(|(field, message)| format!("{field} {message}")).collect()
            }
            Self::Unavailable(_) => {
                vec![format!("service temporarily unavailable, retry later (request id {request_id})")]
            }
            Self::Internal(_) => vec![format!("internal error (request id {request_id})")],
        };
        errors.insert("body".into(), body.into());
        serde_json::json!({ "errors": errors })
    }

    /// Returns what the log records about this error: the cause chain for
    /// 5xx, nothing for 4xx. The code that builds a cause keeps it free of
    /// personal data and server messages.
    pub fn log_cause(&self) -> Option<String> {
        match self {
            Self::Unavailable(cause) => Some(cause.clone()),
            Self::Internal(cause) => Some(format!("{cause:#}")),
            _ => None,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.status())
    }
}

impl From<DbError> for ApiError {
    /// Maps an unreachable database to 503 and any other database failure to
    /// 500. Call sites that expect a particular failure (a duplicate key) map it first.
    fn from(error: DbError) -> Self {
        if error.is_unavailable() {
            Self::Unavailable(error.to_string())
        } else {
            Self::Internal(anyhow::Error::new(error))
        }
    }
}

impl From<crate::config::ConfigError> for ApiError {
    fn from(error: crate::config::ConfigError) -> Self {
        Self::Internal(anyhow::Error::new(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_envelope_names_fields() {
        let mut fields = FieldErrors::new();
        fields.add("username", "has already been taken");
        fields.add("email", "is invalid");
        fields.add("email", "is too long");

        let envelope = ApiError::Validation(fields).envelope("r1");

        assert_eq!(
            envelope,
            serde_json::json!({"errors": {
                "body": ["username has already been taken", "email is invalid", "email is too long"],
                "username": ["has already been taken"],
                "email": ["is invalid", "is too long"],
            }})
        );
    }

    #[test]
    fn internal_error_shows_request_id_only() {
        let error = ApiError::Internal(anyhow::anyhow!("secret detail"));

        let text = error.envelope("req-7").to_string();

        assert!(!text.contains("secret detail"));
        assert!(text.contains("req-7"));
        assert_eq!(error.status(), 500);
        assert_eq!(error.log_cause().as_deref(), Some("secret detail"));
    }
}
