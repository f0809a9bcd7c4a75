//! `GET /api/wallet` (the caller's balances) and `POST /api/wallet/top-ups`
//! (adding money through the payment provider, with an `Idempotency-Key`).
//!
//! A top-up stores its payment row and the key's lease before it calls the
//! provider, and passes the payment's id on as the provider's idempotency
//! key. A retry after a provider outage therefore continues with the same
//! row, and the provider returns the payment it already made instead of a
//! second one.

use serde_json::{Value, json};
use shared::ApiError;
use shared::http::{Response, json as json_response, no_store, read_json};
use shared::money::{Currency, MAX_MINOR};
use spin_sdk::http::{Request, StatusCode};

use crate::app::App;
use crate::idempotency::{self, Begin, Claim};
use crate::ledger;
use crate::provider::{NewPayment, PaymentProvider};
use crate::store;

/// The largest top-up, in minor units.
pub const TOP_UP_MAX_MINOR: i64 = 1_000_000;
const _: () = assert!(TOP_UP_MAX_MINOR <= MAX_MINOR);
/// The currency of a top-up that names none, and of a new user's empty balance.
pub const DEFAULT_CURRENCY: &str = "EUR";

pub async fn balances(app: &App<'_>, request: Request) -> Result<Response, ApiError> {
    let caller = app.caller(request.headers()).await?;
    let mut balances = ledger::wallet(&app.db, &caller.user_id).await?;
    if balances.is_empty() {
        balances.push((DEFAULT_CURRENCY.to_string(), 0));
    }
    let balances: Vec<Value> = balances
        .into_iter()
        .map(|(currency, amount)| json!({ "currency": currency, "amount_minor": amount }))
        .collect();
    Ok(no_store(json_response(StatusCode::OK, &json!({ "wallet": { "balances": balances } }))))
}

/// Reads `{"top_up": {"amount_minor", "currency"?}}`.
fn read_top_up(body: &Value, allowed: &[Currency]) -> Result<(i64, Currency), ApiError> {
    let mut fields = shared::json::wrapped(body, "top_up")?;
    fields.reject_unknown(&["amount_minor", "currency"]);
    let map = body["top_up"].as_object().expect("wrapped checked the object");
    let amount = match map.get("amount_minor") {
        None | Some(Value::Null) => {
            fields.errors.add("amount_minor", "can't be blank");
            None
        }
        Some(value) => match value.as_i64().filter(|n| (1..=TOP_UP_MAX_MINOR).contains(n)) {
            Some(amount) => Some(amount),
            None => {
                fields.errors.add("amount_minor", format!("must be a whole number of minor units from 1 to {TOP_UP_MAX_MINOR}"));
                None
            }
        },
    };
    let currency = match map.get("currency") {
        None | Some(Value::Null) => Currency::from_code(DEFAULT_CURRENCY),
        Some(Value::String(code)) => {
            let found = Currency::from_code(code).filter(|c| allowed.contains(c));
            if found.is_none() {
                let codes: Vec<&str> = allowed.iter().map(|c| c.code()).collect();
                fields.errors.add("currency", format!("must be one of {}", codes.join(", ")));
            }
            found
        }
        Some(_) => {
            fields.errors.add("currency", "must be a string");
            None
        }
    };
    fields.finish()?;
    Ok((amount.expect("checked above"), currency.expect("checked above")))
}

pub async fn top_up(app: &App<'_>, request: Request) -> Result<Response, ApiError> {
    let caller = app.caller(request.headers()).await?;
    let key = idempotency::key_of(request.headers())?;
    let path = request.uri().path().to_string();
    let body = read_json(request, shared::http::DEFAULT_BODY_LIMIT).await?;
    let claim = Claim {
        user_id: &caller.user_id,
        route: "POST /api/wallet/top-ups",
        key,
        hash: idempotency::request_hash("POST", &path, &body),
    };
    let new_id = shared::ids::uuid_v7();
    let existing = match claim.begin(&app.db, &new_id).await? {
        Begin::Replay { status, body } => return Ok(idempotency::replay(status, body)),
        Begin::Proceed { resource_id } => resource_id,
    };

    let outcome = start_top_up(app, &caller.user_id, &body, existing.as_deref().unwrap_or(&new_id)).await;
    if let Err(error) = claim.finish(&app.db, &outcome).await {
        app.ctx.note_error(format!("storing the idempotent outcome failed: {error}"));
    }
    let (status, body) = outcome?;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::CREATED);
    Ok(no_store(json_response(status, &body)))
}

/// Creates the payment row (unless an earlier attempt with the key did),
/// then the provider's payment, and returns the 201 body. The row is
/// inserted whenever it is missing: an earlier attempt may have claimed the
/// key and failed before writing it.
async fn start_top_up(app: &App<'_>, user_id: &str, body: &Value, payment_id: &str) -> Result<(u16, Value), ApiError> {
    let (amount_minor, currency) = read_top_up(body, &app.currencies)?;
    let now = shared::time::now_micros();
    match store::insert_top_up(&app.db, payment_id, user_id, amount_minor, currency.code(), now).await {
        Err(error) if error.code() == Some(shared::db::codes::DUPLICATE_KEY) => {}
        other => other?,
    }
    let new_payment = NewPayment { payment_id, amount_minor, currency, description: "Conduit wallet top-up" };
    let remote = app.provider.create_payment(&new_payment, payment_id).await?;
    let check_after = shared::time::now_micros() + app.recheck_after_seconds * 1_000_000;
    store::attach_provider_payment(&app.db, payment_id, &remote.id, remote.checkout_url.as_deref(), check_after).await?;
    let payment = store::payment(&app.db, payment_id)
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("the top-up just written is missing")))?;
    Ok((201, json!({ "top_up": payment.to_json(user_id) })))
}
