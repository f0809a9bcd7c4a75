//! `GET /api/payments` (the caller's payments, newest first, paged with an
//! opaque cursor) and `GET /api/payments/:id` (its owner or an admin;
//! anyone else gets 404, as for an id that does not exist).

use serde_json::{Value, json};
use shared::ApiError;
use shared::auth::ROLE_ADMIN;
use shared::http::{Response, json as json_response, no_store};
use shared::query::{Cursor, Query};
use spin_sdk::http::{Request, StatusCode};

use crate::app::App;
use crate::store;

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

/// Encodes the position after a payment: its creation time and id.
fn cursor_of(payment: &store::Payment) -> String {
    Cursor { created_at: payment.created_at, id: payment.id.clone() }.encode()
}

pub async fn list(app: &App<'_>, request: Request) -> Result<Response, ApiError> {
    let caller = app.caller(request.headers()).await?;
    let query = Query::parse(request.uri().query())?;
    let limit = query.limit(DEFAULT_LIMIT, MAX_LIMIT)?;
    let after = query.cursor()?.map(|cursor| (cursor.created_at, cursor.id));

    // One row more than the page shows whether another page follows.
    let mut payments = store::history(&app.db, &caller.user_id, after.as_ref().map(|(at, id)| (*at, id.as_str())), limit + 1).await?;
    let next = if payments.len() > limit as usize {
        payments.truncate(limit as usize);
        payments.last().map(cursor_of)
    } else {
        None
    };
    let items: Vec<Value> = payments.iter().map(|payment| payment.to_json(&caller.user_id)).collect();
    Ok(no_store(json_response(StatusCode::OK, &json!({ "payments": items, "next_cursor": next }))))
}

pub async fn get(app: &App<'_>, request: Request, id: &str) -> Result<Response, ApiError> {
    let caller = app.caller(request.headers()).await?;
    let not_found = || ApiError::NotFound("payment not found".into());
    if !shared::ids::is_uuid(id) {
        return Err(not_found());
    }
    let payment = store::payment(&app.db, id).await?.ok_or_else(not_found)?;
    let party = payment.user_id == caller.user_id || payment.counterparty_id.as_deref() == Some(caller.user_id.as_str());
    let visible = party || caller.has_role(ROLE_ADMIN);
    if !visible || (payment.kind == "top_up" && payment.provider_payment_id.is_none()) {
        return Err(not_found());
    }
    Ok(no_store(json_response(StatusCode::OK, &json!({ "payment": payment.to_json(&caller.user_id) }))))
}
