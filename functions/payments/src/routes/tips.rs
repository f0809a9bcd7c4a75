//! `POST /api/tips` with an `Idempotency-Key`: moves money from the caller's
//! wallet to another user's.
//!
//! The key, the transfer, the payment row and the event are written in one
//! database transaction. The key's row is inserted first, so a concurrent
//! request with the same key waits on that row and then finds the stored
//! outcome. Validation failures and insufficient funds are stored for the key
//! too (4xx outcomes), in the same transaction.

use serde_json::{Value, json};
use shared::ApiError;
use shared::db::{Statements, Tx, codes};
use shared::events::Event;
use shared::http::{Response, json as json_response, no_store, read_json};
use shared::money::Currency;
use shared::params;
use spin_sdk::http::{Request, StatusCode};

use crate::app::App;
use crate::events;
use crate::idempotency::{self, Claim};
use crate::ledger::{self, Side};
use crate::routes::wallet::DEFAULT_CURRENCY;
use crate::store::{self, NewTip};

/// The largest tip, in minor units.
pub const TIP_MAX_MINOR: i64 = 1_000_000;
/// The maximum length of a tip's message, in characters.
pub const MESSAGE_MAX: usize = 280;
const ROUTE: &str = "POST /api/tips";

/// A tip request, checked.
struct TipRequest {
    to_username: String,
    amount_minor: i64,
    currency: Currency,
    article_slug: Option<String>,
    message: Option<String>,
}

fn read_tip(body: &Value, allowed: &[Currency]) -> Result<TipRequest, ApiError> {
    let mut fields = shared::json::wrapped(body, "tip")?;
    fields.reject_unknown(&["to_username", "amount_minor", "currency", "article_slug", "message"]);
    let map = body["tip"].as_object().expect("wrapped checked the object");

    let to_username = fields.required_string("to_username").map(|name| shared::text::canonical(&name));
    if to_username.as_deref() == Some("") {
        fields.errors.add("to_username", "can't be blank");
    }
    let amount_minor = map.get("amount_minor").and_then(Value::as_i64).filter(|n| (1..=TIP_MAX_MINOR).contains(n));
    if amount_minor.is_none() {
        fields.errors.add("amount_minor", format!("must be a whole number of minor units from 1 to {TIP_MAX_MINOR}"));
    }
    let currency = match map.get("currency") {
        None | Some(Value::Null) => Currency::from_code(DEFAULT_CURRENCY),
        Some(value) => value.as_str().and_then(Currency::from_code).filter(|c| allowed.contains(c)),
    };
    if currency.is_none() {
        let codes: Vec<&str> = allowed.iter().map(|c| c.code()).collect();
        fields.errors.add("currency", format!("must be one of {}", codes.join(", ")));
    }

    let article_slug = match map.get("article_slug") {
        None | Some(Value::Null) => None,
        Some(Value::String(slug)) if shared::text::is_slug(slug) => Some(slug.clone()),
        Some(_) => {
            fields.errors.add("article_slug", "must be an article's slug (lower-case letters, digits and hyphens)");
            None
        }
    };
    let message = match map.get("message") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if text.chars().count() <= MESSAGE_MAX && !text.chars().any(|c| c.is_control() && c != '\n') => {
            Some(shared::text::canonical(text))
        }
        Some(_) => {
            fields.errors.add("message", format!("must be text of at most {MESSAGE_MAX} characters"));
            None
        }
    };
    fields.finish()?;

    Ok(TipRequest {
        to_username: to_username.expect("checked above"),
        amount_minor: amount_minor.expect("checked above"),
        currency: currency.expect("checked above"),
        article_slug,
        message: message.filter(|m| !m.is_empty()),
    })
}

/// The result of the tip's transaction.
enum Attempt {
    /// This request ran; its outcome is stored, with the event of a completed tip.
    Done { status: u16, body: Value, event: Option<Event> },
    /// Another request has the key: read what it stored.
    KeyTaken,
}

pub async fn create(app: &App<'_>, request: Request) -> Result<Response, ApiError> {
    let caller = app.caller(request.headers()).await?;
    let key = idempotency::key_of(request.headers())?;
    let path = request.uri().path().to_string();
    let body = read_json(request, shared::http::DEFAULT_BODY_LIMIT).await?;
    let claim = Claim { user_id: &caller.user_id, route: ROUTE, key, hash: idempotency::request_hash("POST", &path, &body) };

    // A second round happens only when an expired key was removed.
    for _ in 0..2 {
        let attempt = app.db.transaction(async |tx| run(app, tx, &claim, &caller.user_id, &body).await).await?;
        match attempt {
            Attempt::Done { status, body, event } => {
                if let Some(event) = event {
                    app.publish(&[event]).await;
                }
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::CREATED);
                return Ok(no_store(json_response(status, &body)));
            }
            Attempt::KeyTaken => match claim.stored(&app.db).await? {
                Some(response) => return Ok(response),
                None => continue,
            },
        }
    }
    Err(ApiError::Conflict("a request with this Idempotency-Key is still in progress; retry later".into()))
}

/// Runs the tip inside its transaction: claims the key, then validates,
/// transfers and records, and stores the outcome for the key.
async fn run(app: &App<'_>, tx: &Tx<'_>, claim: &Claim<'_>, sender_id: &str, body: &Value) -> Result<Attempt, ApiError> {
    let now = shared::time::now_micros();
    let inserted = tx
        .execute(
            "INSERT INTO idempotency_keys (user_id, route, idempotency_key, request_hash, status, response, lease_until, created_at)
             VALUES (?, ?, ?, ?, NULL, NULL, ?, ?)",
            params![claim.user_id, claim.route, &claim.key, &claim.hash, now + 30_000_000, now],
        )
        .await;
    match inserted {
        Err(error) if error.code() == Some(codes::DUPLICATE_KEY) => return Ok(Attempt::KeyTaken),
        other => other?,
    }

    let outcome = transfer(app, tx, sender_id, body, now).await;
    let (status, response, event) = match outcome {
        Ok((response, event)) => (201, response, Some(event)),
        Err(error) if error.status().is_client_error() => (error.status().as_u16(), error.envelope(""), None),
        Err(error) => return Err(error),
    };
    tx.execute(
        "UPDATE idempotency_keys SET status = ?, response = ?, lease_until = 0 WHERE user_id = ? AND route = ? AND idempotency_key = ?",
        params![u32::from(status), response.to_string(), claim.user_id, claim.route, &claim.key],
    )
    .await?;
    Ok(Attempt::Done { status, body: response, event })
}

async fn transfer(app: &App<'_>, tx: &Tx<'_>, sender_id: &str, body: &Value, now: i64) -> Result<(Value, Event), ApiError> {
    let tip = read_tip(body, &app.currencies)?;
    let key = shared::text::normalised_key(&tip.to_username);
    let (recipient_id, recipient_name) = store::user_by_key(tx, &key)
        .await?
        .ok_or_else(|| ApiError::NotFound("recipient not found".into()))?;
    if recipient_id == sender_id {
        return Err(ApiError::invalid("to_username", "is you; you cannot tip yourself"));
    }

    let payment_id = shared::ids::uuid_v7();
    let moved = ledger::transfer(
        tx,
        "tip",
        &payment_id,
        Side { kind: ledger::WALLET, user_id: sender_id },
        Side { kind: ledger::WALLET, user_id: &recipient_id },
        tip.amount_minor,
        tip.currency.code(),
    )
    .await?;
    if !moved {
        let balance = ledger::wallet(tx, sender_id)
            .await?
            .into_iter()
            .find(|(currency, _)| currency == tip.currency.code())
            .map_or(0, |(_, amount)| amount);
        return Err(ApiError::invalid(
            "amount_minor",
            format!("exceeds your balance of {balance} {} minor units", tip.currency.code()),
        ));
    }
    let new_tip = NewTip {
        id: &payment_id,
        from: sender_id,
        to: &recipient_id,
        amount_minor: tip.amount_minor,
        currency: tip.currency.code(),
        article_slug: tip.article_slug.as_deref(),
        message: tip.message.as_deref(),
        now,
    };
    store::insert_tip(tx, &new_tip).await?;
    let event = events::tip_received(&app.outbox, tx, &new_tip).await?;
    let payment = store::payment(tx, &payment_id)
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("the tip just written is missing")))?;
    let mut view = payment.to_json(sender_id);
    if view["counterparty"].is_null() {
        view["counterparty"] = recipient_name.into();
    }
    Ok((json!({ "tip": view }), event))
}
