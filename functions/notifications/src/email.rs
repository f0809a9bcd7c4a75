//! Email: the messages, the provider that sends them, and the email outbox.
//!
//! A message is rendered and written to `emails` in the transaction that
//! applies its event, then sent by the dispatch run ([`send_due`]), which
//! claims due rows with a lease, commits, and only then calls the provider.
//! A failure is retried with backoff: [`RETRY_BASE_SECONDS`] after the first,
//! doubling to [`RETRY_CAP_SECONDS`], for [`MAX_ATTEMPTS`] attempts in all.
//! After the last, the row is `failed`. A refusal of the message itself (a
//! 4xx other than 401, 403, 408 and 429) fails it at once. `last_error` keeps
//! the reason: a status or a transport error, never the provider's text.
//!
//! Preferences and the address are checked again before each send, so an
//! email queued before the user turned its kind off, or changed the
//! address, is dropped instead of sent.
//!
//! Only a verified address receives anything but a verification link, and
//! every such email carries a one-click unsubscribe link (RFC 8058, see
//! `unsubscribe.rs`). The messages carry the least personal data that
//! explains them: the actor's public username, an article's slug, an amount.
//! Never another user's email address or a comment's or tip's text.
//!
//! NOTE: Brevo takes no idempotency key on this endpoint, so a send whose
//! response is lost (a deadline passing after Brevo accepted it) is sent
//! again on the retry.

use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use serde_json::{Value, json};
use shared::ApiError;
use shared::config::{self, Secret};
use shared::db::{Db, DbError, Param, Row, Statements};
use shared::http::Ctx;
use shared::params;
use shared::service::CallError;
use spin_sdk::http::FullBody;

/// The attempts an email gets before it is given up.
pub const MAX_ATTEMPTS: i64 = 8;
pub const RETRY_BASE_SECONDS: i64 = 30;
pub const RETRY_CAP_SECONDS: i64 = 3600;
/// How long one call to the provider may take.
pub const SEND_DEADLINE: Duration = Duration::from_secs(5);
/// The maximum number of emails one dispatch run claims, and of sends in flight.
pub const BATCH: u32 = 20;
pub const SEND_CONCURRENCY: usize = 4;
const LEASE_SECONDS: i64 = 60;
const SECOND: i64 = 1_000_000;

/// The `kind` of a verification link, next to the notification types.
pub const VERIFICATION: &str = "verification";

/// A message ready to store and send.
pub struct Message {
    pub subject: String,
    pub text: String,
    pub html: String,
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html_page(paragraphs: &[String]) -> String {
    let body: String = paragraphs.iter().map(|p| format!("<p>{p}</p>")).collect();
    format!("<!doctype html><html><body>{body}</body></html>")
}

/// Renders the verification link's message.
pub fn verification(link: &str, expires_at: &str) -> Message {
    Message {
        subject: "Confirm your email address".into(),
        text: format!(
            "Someone, hopefully you, asked to confirm this address for a Conduit account.\n\n\
             Open this link to confirm it:\n{link}\n\n\
             The link works until {expires_at}. If you did not ask, ignore this email."
        ),
        html: html_page(&[
            "Someone, hopefully you, asked to confirm this address for a Conduit account.".into(),
            format!("<a href=\"{0}\">Confirm this address</a>", escape(link)),
            format!("The link works until {}. If you did not ask, ignore this email.", escape(expires_at)),
        ]),
    }
}

/// Renders the email of a notification of `kind` with its `data`, from
/// `actor` (a username, or `None` for top-ups), with its unsubscribe link.
pub fn notification(kind: &str, actor: Option<&str>, data: &Value, unsubscribe: &str) -> Message {
    let actor = actor.unwrap_or("Someone");
    let slug = data["article_slug"].as_str().unwrap_or("");
    let amount = || {
        let currency = data["currency"].as_str().unwrap_or("");
        let minor = data["amount_minor"].as_i64().unwrap_or(0);
        match shared::money::Currency::from_code(currency) {
            Some(currency) => format!("{} {}", currency.format_decimal(minor), currency.code()),
            None => format!("{minor} (minor units) {currency}"),
        }
    };
    let (subject, line) = match kind {
        "follow" => (format!("{actor} followed you"), format!("{actor} now follows you on Conduit.")),
        "comment" => (format!("{actor} commented on your article"), format!("{actor} commented on your article \"{slug}\".")),
        "favorite" => (format!("{actor} favorited your article"), format!("{actor} favorited your article \"{slug}\".")),
        "tip" => (format!("{actor} sent you a tip"), format!("{actor} sent you a tip of {}.", amount())),
        _ if data["status"] == "succeeded" => ("Your top-up went through".into(), format!("Your top-up of {} is in your wallet.", amount())),
        _ => ("Your top-up did not go through".into(), format!("Your top-up of {} did not go through; nothing was charged.", amount())),
    };
    let footer = format!("You get this email because email notifications of this kind are on. To stop them, unsubscribe: {unsubscribe}");
    Message {
        subject,
        text: format!("{line}\n\n--\n{footer}\n"),
        html: html_page(&[
            escape(&line),
            format!(
                "You get this email because email notifications of this kind are on. <a href=\"{}\">Unsubscribe</a>",
                escape(unsubscribe)
            ),
        ]),
    }
}

/// An email to queue.
pub struct NewEmail<'a> {
    pub user_id: &'a str,
    pub kind: &'a str,
    pub to: &'a str,
    pub message: &'a Message,
    pub unsubscribe_url: Option<&'a str>,
    pub now: i64,
}

pub async fn queue(db: &impl Statements, email: &NewEmail<'_>) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO emails (id, user_id, kind, to_address, subject, text_body, html_body, unsubscribe_url,
                             status, next_attempt_at, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
        params![
            shared::ids::uuid_v7(),
            email.user_id,
            email.kind,
            email.to,
            email.message.subject.as_str(),
            email.message.text.as_str(),
            email.message.html.as_str(),
            email.unsubscribe_url,
            email.now,
            email.now
        ],
    )
    .await
}

/// Drops a user's unsent emails of `kind` (after an unsubscribe).
pub async fn drop_pending(db: &impl Statements, user_id: &str, kind: &str) -> Result<(), DbError> {
    db.execute(
        "UPDATE emails SET status = 'dropped', text_body = '', html_body = '', lease_owner = NULL
         WHERE user_id = ? AND kind = ? AND status = 'pending'",
        params![user_id, kind],
    )
    .await
}

/// Drops a user's unsent verification links: all of them once the address
/// is verified, otherwise those to an address other than `current`.
pub async fn drop_stale_verifications(db: &impl Statements, user_id: &str, current: &str, verified: bool) -> Result<(), DbError> {
    db.execute(
        "UPDATE emails SET status = 'dropped', text_body = '', html_body = '', lease_owner = NULL
         WHERE user_id = ? AND kind = 'verification' AND status = 'pending' AND (? OR to_address <> ?)",
        params![user_id, verified, current],
    )
    .await
}

// ---- the provider ----

/// One email as the provider receives it.
pub struct Outgoing {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub unsubscribe_url: Option<String>,
    pub kind: String,
}

/// The reason a send failed.
#[derive(Debug)]
pub enum SendError {
    /// Worth another attempt later: a timeout, a transport error, 401/403
    /// (the key, which an operator fixes), 408, 429 or 5xx.
    Retry(String),
    /// The provider refused this message; another attempt would fail too.
    Refused(String),
}

/// An email provider's HTTP API.
#[allow(async_fn_in_trait)]
pub trait EmailProvider {
    /// Sends one email and returns the provider's message id.
    async fn send(&self, email: &Outgoing) -> Result<String, SendError>;
}

/// Brevo's transactional email API (v3), `POST /v3/smtp/email` with the
/// `api-key` header. Brevo is a French company with its data in the EU.
pub struct Brevo {
    base_url: String,
    api_key: Secret,
    sender_address: String,
    sender_name: String,
}

impl Brevo {
    /// Reads `provider_url`, `provider_api_key`, `sender_address` and `sender_name`.
    pub async fn load() -> Result<Self, ApiError> {
        Ok(Self {
            base_url: config::required_secret("provider_url").await?.expose().trim_end_matches('/').to_string(),
            api_key: config::required_secret("provider_api_key").await?,
            sender_address: config::required("sender_address").await?,
            sender_name: config::required("sender_name").await?,
        })
    }

    fn body(&self, email: &Outgoing) -> Value {
        let mut body = json!({
            "sender": { "name": self.sender_name, "email": self.sender_address },
            "to": [{ "email": email.to }],
            "subject": email.subject,
            "textContent": email.text,
            "htmlContent": email.html,
            "tags": [email.kind],
        });
        if let Some(url) = &email.unsubscribe_url {
            body["headers"] = json!({
                "List-Unsubscribe": format!("<{url}>"),
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            });
        }
        body
    }
}

impl EmailProvider for Brevo {
    async fn send(&self, email: &Outgoing) -> Result<String, SendError> {
        let request = http::Request::post(format!("{}/v3/smtp/email", self.base_url))
            .header("api-key", self.api_key.expose())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .body(FullBody::new(Bytes::from(self.body(email).to_string())))
            .map_err(|_| SendError::Refused("the request could not be built".into()))?;
        // A body over the size limit is left unread, but its status still
        // counts: an accepted email must not be sent twice.
        let (status, body) = match shared::outbound::send(request, SEND_DEADLINE).await {
            Ok(reply) => (reply.status, reply.body),
            Err(CallError::TooLarge { status }) => (status, Bytes::new()),
            Err(CallError::Deadline) => return Err(SendError::Retry("deadline passed".into())),
            Err(other) => return Err(SendError::Retry(other.to_string())),
        };
        match status {
            200..=299 => {
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                Ok(body["messageId"].as_str().unwrap_or("").chars().take(200).collect())
            }
            401 | 403 | 408 | 429 | 500.. => Err(SendError::Retry(format!("status {status}"))),
            status => Err(SendError::Refused(format!("status {status}{}", error_code(&body)))),
        }
    }
}

/// Brevo's error `code` (such as `invalid_parameter`), when it is a plain
/// identifier. Its `message` can quote the address, so it is never kept.
fn error_code(body: &[u8]) -> String {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match body["code"].as_str() {
        Some(code) if code.len() <= 40 && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') => format!(" {code}"),
        _ => String::new(),
    }
}

// ---- the dispatch run ----

/// The outcome of one dispatch run over the email outbox.
#[derive(Debug, Default, serde::Serialize)]
pub struct SendReport {
    pub sent: u32,
    pub retrying: u32,
    pub failed: u32,
    /// No longer wanted: the address changed or lost its verification, or
    /// the user turned this kind of email off.
    pub dropped: u32,
}

struct Claimed {
    id: String,
    attempts: i64,
    email: Outgoing,
    /// Whether the address is still the user's and verified, and the user
    /// still wants this kind of email (not checked for a verification link).
    deliverable: bool,
}

impl Claimed {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        let kind: String = row.get("kind")?;
        let to: String = row.get("to_address")?;
        let current: Option<String> = row.get("current_email")?;
        let verified: Option<bool> = row.get("verified")?;
        // An email was queued under a choice to receive it, so only a later
        // `false` (a PUT or an unsubscribe since) stops it.
        let enabled: Option<bool> = row.get("email_enabled")?;
        let deliverable = kind == VERIFICATION
            || (current.as_deref() == Some(to.as_str()) && verified == Some(true) && enabled != Some(false));
        Ok(Self {
            id: row.get("id")?,
            attempts: row.get("attempts")?,
            deliverable,
            email: Outgoing {
                to,
                subject: row.get("subject")?,
                text: row.get("text_body")?,
                html: row.get("html_body")?,
                unsubscribe_url: row.get("unsubscribe_url")?,
                kind,
            },
        })
    }
}

/// Sends the due emails: claims at most [`BATCH`] with a lease in a short
/// transaction, sends them [`SEND_CONCURRENCY`] at a time, records each outcome.
pub async fn send_due(ctx: &Ctx, db: &Db, provider: &impl EmailProvider) -> Result<SendReport, ApiError> {
    let now = shared::time::now_micros();
    let owner = ctx.request_id.clone();
    let ids: Vec<String> = db
        .transaction(async |tx| {
            let rows = tx
                .query(
                    "SELECT id FROM emails WHERE status = 'pending' AND next_attempt_at <= ? AND lease_until < ?
                     ORDER BY next_attempt_at LIMIT ? FOR UPDATE SKIP LOCKED",
                    params![now, now, BATCH],
                )
                .await?;
            let ids = rows.iter().map(|row| row.get("id")).collect::<Result<Vec<String>, _>>()?;
            if !ids.is_empty() {
                let mut values = params![now + LEASE_SECONDS * SECOND, owner.as_str()];
                values.extend(ids.iter().map(|id| Param::from(id.as_str())));
                tx.execute(
                    &format!("UPDATE emails SET lease_until = ?, lease_owner = ? WHERE id IN ({})", marks(ids.len())),
                    values,
                )
                .await?;
            }
            Ok(ids)
        })
        .await?;
    let mut report = SendReport::default();
    if ids.is_empty() {
        return Ok(report);
    }
    let mut values: Vec<Param> = ids.iter().map(|id| Param::from(id.as_str())).collect();
    values.push(Param::from(owner.as_str()));
    let rows = db
        .query(
            &format!(
                "SELECT e.id, e.kind, e.to_address, e.subject, e.text_body, e.html_body, e.unsubscribe_url, e.attempts,
                        a.email AS current_email, a.verified, p.enabled AS email_enabled
                 FROM emails e
                 LEFT JOIN addresses a ON a.user_id = e.user_id
                 LEFT JOIN preferences p ON p.user_id = e.user_id AND p.type = e.kind AND p.channel = 'email'
                 WHERE e.id IN ({}) AND e.lease_owner = ?",
                marks(ids.len())
            ),
            values,
        )
        .await?;
    let claimed = rows.iter().map(Claimed::from_row).collect::<Result<Vec<_>, _>>()?;

    for chunk in claimed.chunks(SEND_CONCURRENCY) {
        let sends = chunk.iter().map(|email| async move {
            if !email.deliverable {
                return (email, None);
            }
            (email, Some(provider.send(&email.email).await))
        });
        for (email, outcome) in join_all(sends).await {
            let result = settle(db, &owner, email, outcome, &mut report).await;
            if let Err(error) = result {
                ctx.note_error(format!("recording an email's outcome failed: {error}"));
            }
        }
    }
    if report.retrying + report.failed > 0 {
        ctx.note_error(format!("{} emails to retry, {} given up", report.retrying, report.failed));
    }
    Ok(report)
}

/// Records one email's outcome, if this run still holds its lease.
async fn settle(
    db: &Db,
    owner: &str,
    email: &Claimed,
    outcome: Option<Result<String, SendError>>,
    report: &mut SendReport,
) -> Result<(), DbError> {
    let now = shared::time::now_micros();
    let finished = "text_body = '', html_body = '', lease_until = 0, lease_owner = NULL";
    let (statement, values) = match outcome {
        None => {
            report.dropped += 1;
            (format!("UPDATE emails SET status = 'dropped', {finished} WHERE id = ? AND lease_owner = ?"), params![&email.id, owner])
        }
        Some(Ok(message_id)) => {
            report.sent += 1;
            (
                format!(
                    "UPDATE emails SET status = 'sent', attempts = attempts + 1, sent_at = ?, provider_message_id = ?,
                            last_error = NULL, {finished}
                     WHERE id = ? AND lease_owner = ?"
                ),
                params![now, message_id, &email.id, owner],
            )
        }
        Some(Err(SendError::Retry(reason))) if email.attempts + 1 < MAX_ATTEMPTS => {
            report.retrying += 1;
            let wait = (RETRY_BASE_SECONDS << email.attempts.min(20)).min(RETRY_CAP_SECONDS) * SECOND;
            let jitter = i64::from(shared::ids::random_u32() % 1000) * 1000;
            (
                "UPDATE emails SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?, lease_until = 0, lease_owner = NULL
                 WHERE id = ? AND lease_owner = ?"
                    .to_string(),
                params![now + wait + jitter, reason, &email.id, owner],
            )
        }
        Some(Err(SendError::Retry(reason) | SendError::Refused(reason))) => {
            report.failed += 1;
            (
                format!("UPDATE emails SET status = 'failed', attempts = attempts + 1, last_error = ?, {finished} WHERE id = ? AND lease_owner = ?"),
                params![reason, &email.id, owner],
            )
        }
    };
    db.execute(&statement, values).await
}

fn marks(count: usize) -> String {
    vec!["?"; count].join(", ")
}

/// Deletes emails that are no longer pending and older than `cutoff`, at most `limit`.
pub async fn purge_before(db: &impl Statements, cutoff: i64, limit: u32) -> Result<(), DbError> {
    db.execute(
        "DELETE FROM emails WHERE created_at < ? AND status <> 'pending' ORDER BY created_at LIMIT ?",
        params![cutoff, limit],
    )
    .await
}
