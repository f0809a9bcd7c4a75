//! The events profiles publishes, and the snapshots its resync endpoint serves.
//!
//! - `user.created`, `user.updated`, `user.deleted` on the `user` aggregate
//!   (id = the user's id). The payload is the public profile plus the token
//!   version and roles: `{id, username, bio, image, token_version, roles}`;
//!   a deletion carries only `{id}`. Emails and password hashes never leave
//!   profiles in an event.
//! - `follow.created`, `follow.deleted` on the `follow` aggregate
//!   (id = `<follower id>:<followee id>`), payload `{follower_id, followee_id}`.
//!
//! Two aggregates carry an email address and go to notifications only
//! ([`EMAIL_CONSUMERS`]), which sends the email:
//! - `email.updated`, `email.deleted` on the `email` aggregate (id = the
//!   user's id), payload `{user_id, email, verified}`; a deletion `{user_id}`.
//!   Recorded at registration, on an address change, on verification and
//!   when the user is deleted.
//! - `email_verification.requested` on the `email_verification` aggregate
//!   (id = the user's id), payload `{user_id, email, token, expires_at}`:
//!   the link to send. The token lives in this event (and in notifications'
//!   email outbox) until the email is sent; profiles stores only its hash.

use serde_json::{Value, json};
use shared::db::{DbError, Row, Statements, Tx};
use shared::events::{Event, Outbox, ResyncQuery};
use shared::params;

use crate::store::User;

pub const USER: &str = "user";
pub const FOLLOW: &str = "follow";
pub const EMAIL: &str = "email";
pub const EMAIL_VERIFICATION: &str = "email_verification";
/// The only consumers that receive email addresses.
pub const EMAIL_CONSUMERS: &[&str] = &["notifications"];

fn user_payload(user: &User) -> Value {
    json!({
        "id": user.id,
        "username": user.username,
        "bio": user.bio,
        "image": user.image,
        "token_version": user.token_version,
        "roles": user.identity().roles,
    })
}

/// Records `user.created` or `user.updated` with the user as now stored.
pub async fn user_changed(outbox: &Outbox, tx: &Tx<'_>, kind: &str, user: &User) -> Result<Event, DbError> {
    outbox.record(tx, kind, USER, &user.id, user_payload(user)).await
}

pub async fn user_deleted(outbox: &Outbox, tx: &Tx<'_>, user_id: &str) -> Result<Event, DbError> {
    outbox.record(tx, "user.deleted", USER, user_id, json!({ "id": user_id })).await
}

fn email_payload(user: &User) -> Value {
    json!({ "user_id": user.id, "email": user.email, "verified": user.email_verified })
}

/// Records `email.updated` with the user's current address and its state.
pub async fn email_changed(outbox: &Outbox, tx: &Tx<'_>, user: &User) -> Result<Event, DbError> {
    outbox.record_for(tx, EMAIL_CONSUMERS, "email.updated", EMAIL, &user.id, email_payload(user)).await
}

pub async fn email_deleted(outbox: &Outbox, tx: &Tx<'_>, user_id: &str) -> Result<Event, DbError> {
    outbox.record_for(tx, EMAIL_CONSUMERS, "email.deleted", EMAIL, user_id, json!({ "user_id": user_id })).await
}

/// Records the request for a verification link to `user`'s current address.
pub async fn verification_requested(
    outbox: &Outbox,
    tx: &Tx<'_>,
    user: &User,
    token: &str,
    expires_at: i64,
) -> Result<Event, DbError> {
    let payload = json!({
        "user_id": user.id,
        "email": user.email,
        "token": token,
        "expires_at": shared::time::rfc3339(expires_at),
    });
    outbox
        .record_for(tx, EMAIL_CONSUMERS, "email_verification.requested", EMAIL_VERIFICATION, &user.id, payload)
        .await
}

/// Records `follow.created` or, when `following` is false, `follow.deleted`.
pub async fn follow_changed(
    outbox: &Outbox,
    tx: &Tx<'_>,
    follower_id: &str,
    followee_id: &str,
    following: bool,
) -> Result<Event, DbError> {
    let kind = if following { "follow.created" } else { "follow.deleted" };
    let payload = json!({ "follower_id": follower_id, "followee_id": followee_id });
    outbox.record(tx, kind, FOLLOW, &format!("{follower_id}:{followee_id}"), payload).await
}

/// Reads one resync page of current users or follows, each with its
/// current version (0 for one not changed since events began). The version
/// is cast because `COALESCE` of an unsigned and a signed integer is a
/// `DECIMAL`, which the MySQL interface cannot read.
pub async fn snapshots(db: &impl Statements, query: &ResyncQuery) -> Result<Option<Vec<Event>>, DbError> {
    match query.aggregate_type.as_str() {
        USER => user_snapshots(db, query, USER, user_payload).await.map(Some),
        EMAIL => user_snapshots(db, query, EMAIL, email_payload).await.map(Some),
        FOLLOW => {
            let from = query.id.as_deref().unwrap_or(&query.after);
            let (follower, followee) = from.split_once(':').unwrap_or((from, ""));
            let statement = format!(
                "SELECT f.follower_id, f.followee_id, CAST(COALESCE(v.version, 0) AS UNSIGNED) AS version
                 FROM follows f
                 LEFT JOIN event_versions v
                   ON v.aggregate_type = 'follow' AND v.aggregate_id = CONCAT(f.follower_id, ':', f.followee_id)
                 WHERE (f.follower_id, f.followee_id) {} (?, ?)
                 ORDER BY f.follower_id, f.followee_id LIMIT ?",
                if query.id.is_some() { "=" } else { ">" }
            );
            let rows = db.query(&statement, params![follower, followee, query.limit]).await?;
            rows.iter().map(follow_snapshot).collect::<Result<Vec<_>, DbError>>().map(Some)
        }
        _ => Ok(None),
    }
}

/// Reads a page of users as snapshots of `aggregate` (`user` or `email`,
/// both keyed by the user's id), with `payload` made from each.
async fn user_snapshots(
    db: &impl Statements,
    query: &ResyncQuery,
    aggregate: &str,
    payload: fn(&User) -> Value,
) -> Result<Vec<Event>, DbError> {
    let statement = format!(
        "SELECT {}, CAST(COALESCE(v.version, 0) AS UNSIGNED) AS version
         FROM users u
         LEFT JOIN event_versions v ON v.aggregate_type = ? AND v.aggregate_id = u.id
         WHERE {} ORDER BY u.id LIMIT ?",
        crate::store::USER_COLUMNS,
        if query.id.is_some() { "u.id = ?" } else { "u.id > ?" }
    );
    let from = query.id.as_deref().unwrap_or(&query.after);
    let rows = db.query(&statement, params![aggregate, from, query.limit]).await?;
    rows.iter()
        .map(|row| {
            let user = User::from_row(row)?;
            Ok(Event::snapshot("profiles", aggregate, &user.id, row.get("version")?, payload(&user)))
        })
        .collect()
}

fn follow_snapshot(row: &Row) -> Result<Event, DbError> {
    let follower_id: String = row.get("follower_id")?;
    let followee_id: String = row.get("followee_id")?;
    Ok(Event::snapshot(
        "profiles",
        FOLLOW,
        &format!("{follower_id}:{followee_id}"),
        row.get("version")?,
        json!({ "follower_id": follower_id, "followee_id": followee_id }),
    ))
}
