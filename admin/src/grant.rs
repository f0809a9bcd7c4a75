//! `grant-admin`: gives an existing user the `admin` role, the way the
//! profiles component's role route does, for the first admin of a
//! deployment. In one transaction on the profiles schema it adds the role,
//! appends a `role_audit` row (actor `operator`), bumps the user's token
//! version and writes a `user.updated` event with one delivery per consumer,
//! which the next dispatch run of profiles pushes. The layout of the event
//! rows is the one `shared::events` writes.

use std::path::Path;

use anyhow::{Context, Result, bail};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, TxOpts};

/// Reads the consumers of profiles' events from the manifest, as the
/// component gets them (`[component.profiles.variables] event_consumers`).
pub fn event_consumers(manifest: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(manifest).with_context(|| format!("cannot read {}", manifest.display()))?;
    let document: toml::Value = toml::from_str(&text).with_context(|| format!("{} is not valid TOML", manifest.display()))?;
    let value = document
        .get("component")
        .and_then(|c| c.get("profiles"))
        .and_then(|p| p.get("variables"))
        .and_then(|v| v.get("event_consumers"))
        .and_then(toml::Value::as_str)
        .with_context(|| format!("{} sets no `event_consumers` for profiles", manifest.display()))?;
    Ok(value.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_string).collect())
}

pub async fn grant_admin(conn: &mut Conn, prefix: &str, user_id: &str, consumers: &[String]) -> Result<()> {
    if !shared::ids::is_uuid(user_id) {
        bail!("--user-id must be a user's id (a lower-case UUID), as the database stores it");
    }
    let schema = format!("{prefix}_profiles");
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    tx.query_drop(format!("USE `{schema}`")).await.with_context(|| format!("schema `{schema}` is missing: run migrate first"))?;

    type UserRow = (String, String, String, u64);
    let user: Option<UserRow> = tx
        .exec_first("SELECT username, bio, image, token_version FROM users WHERE id = ? FOR UPDATE", (user_id,))
        .await?;
    let Some((username, bio, image, token_version)) = user else {
        bail!("no user has the id {user_id}");
    };
    let already: Option<String> =
        tx.exec_first("SELECT role FROM user_roles WHERE user_id = ? AND role = 'admin'", (user_id,)).await?;
    if already.is_some() {
        println!("{schema}: user {user_id} is already an admin; nothing changed");
        return Ok(tx.rollback().await?);
    }

    let now = shared::time::now_micros();
    let token_version = token_version + 1;
    tx.exec_drop("INSERT INTO user_roles (user_id, role, granted_at) VALUES (?, 'admin', ?)", (user_id, now)).await?;
    tx.exec_drop(
        "INSERT INTO role_audit (id, actor, user_id, role, action, at) VALUES (?, 'operator', ?, 'admin', 'grant', ?)",
        (shared::ids::uuid_v7(), user_id, now),
    )
    .await?;
    tx.exec_drop("UPDATE users SET token_version = ?, updated_at = ? WHERE id = ?", (token_version, now, user_id)).await?;

    tx.exec_drop(
        "INSERT INTO event_versions (aggregate_type, aggregate_id, version) VALUES ('user', ?, 1)
         ON DUPLICATE KEY UPDATE version = version + 1",
        (user_id,),
    )
    .await?;
    let version: Option<u64> = tx
        .exec_first("SELECT version FROM event_versions WHERE aggregate_type = 'user' AND aggregate_id = ?", (user_id,))
        .await?;
    let payload = serde_json::json!({
        "id": user_id,
        "username": username,
        "bio": bio,
        "image": image,
        "token_version": token_version,
        "roles": ["user", "admin"],
    });
    let event_id = shared::ids::uuid_v7();
    tx.exec_drop(
        "INSERT INTO outbox_events (id, type, aggregate_type, aggregate_id, aggregate_version, occurred_at, payload)
         VALUES (?, 'user.updated', 'user', ?, ?, ?, ?)",
        (&event_id, user_id, version.context("the version row just written is missing")?, now, payload.to_string()),
    )
    .await?;
    for consumer in consumers {
        tx.exec_drop(
            "INSERT INTO outbox_deliveries (event_id, consumer, next_attempt_at) VALUES (?, ?, ?)",
            (&event_id, consumer, now),
        )
        .await?;
    }
    tx.commit().await?;
    println!(
        "{schema}: user {user_id} is now an admin; their earlier tokens stop working, and the change reaches {} at the next dispatch",
        if consumers.is_empty() { "no other component".to_string() } else { consumers.join(", ") }
    );
    Ok(())
}
