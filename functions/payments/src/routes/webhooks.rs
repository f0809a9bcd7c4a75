//! `POST /api/payments/webhooks/provider`: the provider's callback. Mollie
//! posts `id=<payment id>` as `application/x-www-form-urlencoded`, with no
//! signature, so the body is only a hint. The payment is fetched from the
//! provider, and the provider's state is applied. An id this component does not know,
//! or a payment already final, is acknowledged with `200` and changes nothing.

use shared::ApiError;
use shared::http::{Response, with_body};
use shared::query::Query;
use spin_sdk::http::{Request, StatusCode};

use crate::app::App;
use crate::provider::is_provider_id;
use crate::settle;
use crate::store::{self, PENDING};

/// The largest webhook body read; Mollie's is about 30 bytes.
const BODY_LIMIT: usize = 1024;

pub async fn receive(app: &App<'_>, request: Request) -> Result<Response, ApiError> {
    let content_type = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if content_type != "application/x-www-form-urlencoded" {
        return Err(ApiError::UnsupportedMediaType);
    }
    let body = shared::http::read_bytes(request, BODY_LIMIT).await?;
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::BadRequest("the body is not UTF-8".into()))?;
    let form = Query::parse(Some(text))?;
    let id = form.get("id")?.unwrap_or("");

    let acknowledged = || with_body(StatusCode::OK, "text/plain", "");
    if !is_provider_id(id) {
        app.ctx.note_error("webhook without a valid payment id");
        return Ok(acknowledged());
    }
    let Some(payment) = store::payment_by_provider_id(&app.db, id).await? else {
        app.ctx.note_error("webhook for an unknown payment");
        return Ok(acknowledged());
    };
    if payment.status == PENDING {
        // A provider outage here is a 503, so the provider retries later;
        // dispatch re-checks the top-up meanwhile.
        settle::check(app, &payment.id, id).await?;
    }
    Ok(acknowledged())
}
