//! One-click unsubscribe (RFC 8058), without logging in.
//!
//! Each notification email carries a link to
//! `/api/notifications/unsubscribe?token=<user id>.<type>.<mac>`, where the
//! mac is HMAC-SHA256 under the `unsubscribe_key` secret, so the link needs
//! no stored state and cannot be forged for another user or type. A `GET`
//! only shows a confirmation form, because mail scanners follow links. The
//! `POST` turns that type's email off and drops the user's unsent emails of
//! it. It comes from the form, or from the mail client's one-click request
//! with the body `List-Unsubscribe=One-Click`.

use shared::config::{self, Secret};
use shared::http::{Response, no_store, with_body};
use shared::{ApiError, ids};
use spin_sdk::http::{Request, StatusCode};

use crate::app::App;
use crate::{email, preferences};

/// The unsubscribe route's path, after `public_base_url`.
pub const PATH: &str = "/api/notifications/unsubscribe";
/// The most of a one-click body the route reads; it ignores what it reads.
const BODY_LIMIT: usize = 1024;

fn mac(key: &Secret, user_id: &str, kind: &str) -> String {
    let input = format!("unsubscribe:v1:{user_id}:{kind}");
    ids::base64url(&hmac_sha256::HMAC::mac(input.as_bytes(), key.expose().as_bytes()))
}

/// Builds the link for a user's emails of `kind`.
pub fn link(base_url: &str, key: &Secret, user_id: &str, kind: &str) -> String {
    format!("{}{PATH}?token={user_id}.{kind}.{}", base_url.trim_end_matches('/'), mac(key, user_id, kind))
}

/// Checks a token and returns its user id and type.
pub fn verify<'t>(key: &Secret, token: &'t str) -> Option<(&'t str, &'static str)> {
    let mut parts = token.splitn(3, '.');
    let (user_id, kind, given) = (parts.next()?, parts.next()?, parts.next()?);
    let kind = preferences::TYPES.into_iter().find(|known| *known == kind)?;
    if !ids::is_uuid(user_id) {
        return None;
    }
    let expected = mac(key, user_id, kind);
    // Compared in full whatever the first difference, so timing reveals nothing.
    let same = expected.len() == given.len() && expected.bytes().zip(given.bytes()).fold(0, |d, (a, b)| d | (a ^ b)) == 0;
    same.then_some((user_id, kind))
}

fn token_of(request: &Request) -> Result<String, ApiError> {
    let query = shared::query::Query::parse(request.uri().query())?;
    query
        .get("token")?
        .map(str::to_string)
        .ok_or_else(|| ApiError::invalid("token", "can't be blank"))
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head><body><h1>{title}</h1>{body}</body></html>"
    );
    no_store(with_body(status, "text/html; charset=utf-8", html))
}

fn described(kind: &str) -> &'static str {
    match kind {
        "follow" => "new followers",
        "comment" => "comments on your articles",
        "favorite" => "favourites of your articles",
        "tip" => "tips you receive",
        _ => "your wallet top-ups",
    }
}

/// `GET`: shows the form that confirms; changes nothing.
pub async fn confirm(request: Request) -> Result<Response, ApiError> {
    let key = config::required_secret("unsubscribe_key").await?;
    let token = token_of(&request)?;
    let (_, kind) = verify(&key, &token).ok_or_else(|| ApiError::invalid("token", "is not a valid unsubscribe link"))?;
    let action = format!("{PATH}?token={}", token);
    Ok(page(
        StatusCode::OK,
        "Unsubscribe",
        &format!(
            "<p>Stop emails about {}?</p><form method=\"post\" action=\"{}\">\
             <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
             <button type=\"submit\">Unsubscribe</button></form>",
            described(kind),
            action.replace('&', "&amp;").replace('"', "&quot;")
        ),
    ))
}

/// `POST`: turns the type's email off and drops its unsent emails.
pub async fn unsubscribe(app: &App<'_>, request: Request) -> Result<Response, ApiError> {
    let key = config::required_secret("unsubscribe_key").await?;
    let token = token_of(&request)?;
    let (user_id, kind) = verify(&key, &token).ok_or_else(|| ApiError::invalid("token", "is not a valid unsubscribe link"))?;
    let (user_id, kind) = (user_id.to_string(), kind);
    shared::http::read_bytes(request, BODY_LIMIT).await?;
    let now = shared::time::now_micros();
    app.db
        .transaction(async |tx| {
            preferences::store(tx, &user_id, &[(kind, preferences::EMAIL, false)], now).await?;
            email::drop_pending(tx, &user_id, kind).await?;
            Ok(())
        })
        .await?;
    Ok(page(StatusCode::OK, "Unsubscribed", &format!("<p>You will get no more emails about {}.</p>", described(kind))))
}
