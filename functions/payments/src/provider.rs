//! The payment provider behind top-ups, behind one small trait, and its one
//! implementation: Mollie's payments API (v2), an EU-based provider. The base
//! URL and the API key come from the `provider_url` and `provider_api_key`
//! variables, and the host must be in `allowed_outbound_hosts`.
//!
//! Mollie's webhook carries only a payment id and no signature, so the
//! component never trusts it: every webhook and every dispatch re-check
//! fetches the payment from the provider.

use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use shared::ApiError;
use shared::config::Secret;
use shared::money::Currency;
use shared::service::CallError;
use spin_sdk::http::FullBody;

/// How long one provider call may take before the request gives up on it.
pub const PROVIDER_DEADLINE: Duration = Duration::from_secs(3);

/// A payment's state at the provider, in the provider's own terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderStatus {
    /// Created, not yet settled (`open`, `pending`, `authorized`).
    Open,
    Paid,
    Failed,
    Expired,
    Canceled,
}

/// One payment as the provider reports it.
#[derive(Debug, Clone)]
pub struct ProviderPayment {
    pub id: String,
    pub status: ProviderStatus,
    pub checkout_url: Option<String>,
    pub amount_minor: i64,
    pub currency: String,
}

/// A top-up to start at the provider.
pub struct NewPayment<'a> {
    pub payment_id: &'a str,
    pub amount_minor: i64,
    pub currency: Currency,
    pub description: &'a str,
}

/// The failure of a provider call. Bodies are never kept, because they can
/// quote personal data.
#[derive(Debug)]
pub enum ProviderError {
    /// Unreachable, timed out or returned 5xx or 429: try again later.
    Unavailable(String),
    /// Responded, but not as expected (4xx, unreadable body).
    Rejected(String),
}

impl From<ProviderError> for ApiError {
    fn from(error: ProviderError) -> Self {
        match error {
            ProviderError::Unavailable(reason) => ApiError::Unavailable(format!("payment provider: {reason}")),
            ProviderError::Rejected(reason) => ApiError::Internal(anyhow::anyhow!("payment provider: {reason}")),
        }
    }
}

/// The provider operations payments needs.
// Used with static dispatch inside one-threaded components only.
#[allow(async_fn_in_trait)]
pub trait PaymentProvider {
    /// Starts a payment; `idempotency_key` makes a retry return the same one.
    async fn create_payment(&self, payment: &NewPayment<'_>, idempotency_key: &str) -> Result<ProviderPayment, ProviderError>;
    /// Reads a payment's current state.
    async fn payment(&self, provider_id: &str) -> Result<ProviderPayment, ProviderError>;
    /// Asks the provider to pay back part or all of a paid payment.
    async fn create_refund(&self, provider_id: &str, amount_minor: i64, currency: Currency, idempotency_key: &str)
    -> Result<ProviderRefund, ProviderError>;
    /// Reads a refund's current state.
    async fn refund(&self, provider_id: &str, refund_id: &str) -> Result<ProviderRefund, ProviderError>;
}

/// A refund's state at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundStatus {
    /// Accepted, not yet paid out (`queued`, `pending`, `processing`).
    Pending,
    Refunded,
    /// `failed` or `canceled`: the money stays with this application.
    Failed,
}

/// One refund as the provider reports it.
#[derive(Debug, Clone)]
pub struct ProviderRefund {
    pub id: String,
    pub status: RefundStatus,
}

#[derive(Deserialize)]
struct MollieRefund {
    id: String,
    status: String,
}

/// Checks the shape of a Mollie refund id (`re_` and letters and digits).
pub fn is_refund_id(id: &str) -> bool {
    id.len() > 3 && id.len() <= 64 && id.starts_with("re_") && id[3..].bytes().all(|b| b.is_ascii_alphanumeric())
}

fn parse_refund(body: &[u8]) -> Result<ProviderRefund, ProviderError> {
    let refund: MollieRefund =
        serde_json::from_slice(body).map_err(|_| ProviderError::Rejected("unreadable refund".into()))?;
    let status = match refund.status.as_str() {
        "queued" | "pending" | "processing" => RefundStatus::Pending,
        "refunded" => RefundStatus::Refunded,
        "failed" | "canceled" => RefundStatus::Failed,
        _ => return Err(ProviderError::Rejected("an unknown refund status".into())),
    };
    if !is_refund_id(&refund.id) {
        return Err(ProviderError::Rejected("an unexpected refund id".into()));
    }
    Ok(ProviderRefund { id: refund.id, status })
}

/// Mollie's payments API.
pub struct Mollie {
    base_url: String,
    api_key: Secret,
    webhook_url: String,
    redirect_url: String,
}

#[derive(Deserialize)]
struct MollieAmount {
    currency: String,
    value: String,
}

#[derive(Deserialize)]
struct MolliePayment {
    id: String,
    status: String,
    amount: MollieAmount,
    #[serde(rename = "_links")]
    links: Option<MollieLinks>,
}

#[derive(Deserialize)]
struct MollieLinks {
    checkout: Option<MollieLink>,
}

#[derive(Deserialize)]
struct MollieLink {
    href: String,
}

/// Checks the shape of a Mollie payment id (`tr_` and letters and digits),
/// so an id from a webhook is never put into a URL unchecked.
pub fn is_provider_id(id: &str) -> bool {
    id.len() > 3 && id.len() <= 64 && id.starts_with("tr_") && id[3..].bytes().all(|b| b.is_ascii_alphanumeric())
}

impl Mollie {
    pub fn new(base_url: String, api_key: Secret, webhook_url: String, redirect_url: String) -> Self {
        Self { base_url: base_url.trim_end_matches('/').to_string(), api_key, webhook_url, redirect_url }
    }

    fn over_plain_http(&self) -> bool {
        self.base_url.starts_with("http://")
    }

    /// Sends one API request within [`PROVIDER_DEADLINE`] and returns the 2xx body.
    async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<serde_json::Value>,
        idempotency_key: Option<&str>,
    ) -> Result<Bytes, ProviderError> {
        let mut builder = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base_url))
            .header(http::header::AUTHORIZATION, format!("Bearer {}", self.api_key.expose()))
            .header(http::header::ACCEPT, "application/hal+json");
        if let Some(key) = idempotency_key {
            builder = builder.header("idempotency-key", key);
        }
        let bytes = match body {
            Some(body) => {
                builder = builder.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(body.to_string())
            }
            None => Bytes::new(),
        };
        let request = builder
            .body(FullBody::new(bytes))
            .map_err(|_| ProviderError::Rejected("the request could not be built".into()))?;

        let reply = shared::outbound::send(request, PROVIDER_DEADLINE).await.map_err(|error| match error {
            CallError::TooLarge { .. } => ProviderError::Rejected(error.to_string()),
            other => ProviderError::Unavailable(other.to_string()),
        })?;
        match reply.status {
            200..=299 => Ok(reply.body),
            429 | 500..=599 => Err(ProviderError::Unavailable(format!("status {}", reply.status))),
            status => Err(ProviderError::Rejected(format!("status {status}"))),
        }
    }
}

/// Maximum length, in bytes, of a checkout URL passed on to a client.
const CHECKOUT_URL_MAX: usize = 2048;

/// Checks a checkout URL before a client is sent to it: `https://` with a
/// host, at most [`CHECKOUT_URL_MAX`] bytes, no spaces or control
/// characters. `http://` passes only when the provider itself is reached over
/// plain HTTP, which only a local fake on loopback is.
fn is_checkout_url(url: &str, allow_http: bool) -> bool {
    let rest = url.strip_prefix("https://").or_else(|| if allow_http { url.strip_prefix("http://") } else { None });
    let Some(rest) = rest else { return false };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    url.len() <= CHECKOUT_URL_MAX && !host.is_empty() && !host.contains('@') && url.bytes().all(|b| b.is_ascii_graphic())
}

/// Reads a Mollie payment object into the provider-neutral form.
/// `allow_http` is whether the provider's own URL is plain HTTP.
fn parse_payment(body: &[u8], allow_http: bool) -> Result<ProviderPayment, ProviderError> {
    let payment: MolliePayment =
        serde_json::from_slice(body).map_err(|_| ProviderError::Rejected("unreadable payment".into()))?;
    let currency = Currency::from_code(&payment.amount.currency)
        .ok_or_else(|| ProviderError::Rejected("a currency this application does not support".into()))?;
    let amount_minor = currency
        .parse_decimal(&payment.amount.value)
        .ok_or_else(|| ProviderError::Rejected("an unreadable amount".into()))?;
    let status = match payment.status.as_str() {
        "open" | "pending" | "authorized" => ProviderStatus::Open,
        "paid" => ProviderStatus::Paid,
        "failed" => ProviderStatus::Failed,
        "expired" => ProviderStatus::Expired,
        "canceled" => ProviderStatus::Canceled,
        _ => return Err(ProviderError::Rejected("an unknown payment status".into())),
    };
    if !is_provider_id(&payment.id) {
        return Err(ProviderError::Rejected("an unexpected payment id".into()));
    }
    let checkout_url = payment.links.and_then(|links| links.checkout).map(|link| link.href);
    if let Some(url) = &checkout_url
        && !is_checkout_url(url, allow_http)
    {
        return Err(ProviderError::Rejected("a checkout URL that is not an https URL".into()));
    }
    Ok(ProviderPayment {
        id: payment.id,
        status,
        checkout_url,
        amount_minor,
        currency: currency.code().to_string(),
    })
}

impl PaymentProvider for Mollie {
    async fn create_payment(&self, payment: &NewPayment<'_>, idempotency_key: &str) -> Result<ProviderPayment, ProviderError> {
        let body = json!({
            "amount": { "currency": payment.currency.code(), "value": payment.currency.format_decimal(payment.amount_minor) },
            "description": payment.description,
            "redirectUrl": self.redirect_url,
            "webhookUrl": self.webhook_url,
            "metadata": { "payment_id": payment.payment_id },
        });
        let reply = self.call(http::Method::POST, "/v2/payments", Some(body), Some(idempotency_key)).await?;
        parse_payment(&reply, self.over_plain_http())
    }

    async fn payment(&self, provider_id: &str) -> Result<ProviderPayment, ProviderError> {
        if !is_provider_id(provider_id) {
            return Err(ProviderError::Rejected("not a payment id".into()));
        }
        let reply = self.call(http::Method::GET, &format!("/v2/payments/{provider_id}"), None, None).await?;
        parse_payment(&reply, self.over_plain_http())
    }

    async fn create_refund(
        &self,
        provider_id: &str,
        amount_minor: i64,
        currency: Currency,
        idempotency_key: &str,
    ) -> Result<ProviderRefund, ProviderError> {
        if !is_provider_id(provider_id) {
            return Err(ProviderError::Rejected("not a payment id".into()));
        }
        let body = json!({
            "amount": { "currency": currency.code(), "value": currency.format_decimal(amount_minor) },
            "description": "Conduit refund",
        });
        let path = format!("/v2/payments/{provider_id}/refunds");
        parse_refund(&self.call(http::Method::POST, &path, Some(body), Some(idempotency_key)).await?)
    }

    async fn refund(&self, provider_id: &str, refund_id: &str) -> Result<ProviderRefund, ProviderError> {
        if !is_provider_id(provider_id) || !is_refund_id(refund_id) {
            return Err(ProviderError::Rejected("not a payment or refund id".into()));
        }
        let path = format!("/v2/payments/{provider_id}/refunds/{refund_id}");
        parse_refund(&self.call(http::Method::GET, &path, None, None).await?)
    }
}
