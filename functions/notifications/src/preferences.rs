//! Notification preferences: a user's choice per event type and channel.
//!
//! Defaults, where a user has chosen nothing: every type appears in the
//! in-app inbox. Email goes out for comments, tips and top-ups. Follows and
//! favourites come often and matter less, so they send none by default. Only choices
//! that differ from a default need a row, but a row that repeats the
//! default is harmless.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use shared::ApiError;
use shared::db::{DbError, Statements};
use shared::params;

pub const TYPES: [&str; 5] = ["follow", "comment", "favorite", "tip", "top_up"];
pub const IN_APP: &str = "in_app";
pub const EMAIL: &str = "email";
pub const CHANNELS: [&str; 2] = [IN_APP, EMAIL];

/// Returns the choice a user has before changing anything.
pub fn default(kind: &str, channel: &str) -> bool {
    channel == IN_APP || matches!(kind, "comment" | "tip" | "top_up")
}

/// One user's choices for every type and channel.
pub struct Preferences(BTreeMap<(String, String), bool>);

impl Preferences {
    /// Reads a user's choices (one statement).
    pub async fn load(db: &impl Statements, user_id: &str) -> Result<Self, DbError> {
        let rows = db.query("SELECT type, channel, enabled FROM preferences WHERE user_id = ?", params![user_id]).await?;
        let mut chosen = BTreeMap::new();
        for row in rows {
            chosen.insert((row.get::<String>("type")?, row.get::<String>("channel")?), row.get::<bool>("enabled")?);
        }
        Ok(Self(chosen))
    }

    pub fn enabled(&self, kind: &str, channel: &str) -> bool {
        self.0.get(&(kind.to_string(), channel.to_string())).copied().unwrap_or_else(|| default(kind, channel))
    }

    /// Builds the API's object: `{"<type>": {"in_app": bool, "email": bool}, …}`.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        for kind in TYPES {
            object.insert(kind.into(), json!({ IN_APP: self.enabled(kind, IN_APP), EMAIL: self.enabled(kind, EMAIL) }));
        }
        Value::Object(object)
    }
}

/// Reads a `PUT` body, `{"preferences": {"<type>": {"<channel>": bool}}}`,
/// into the choices it sets. Any unknown type or channel, non-boolean value
/// or other key is a 422 naming `preferences`, and then nothing is stored.
pub fn parse_update(body: &Value) -> Result<Vec<(&'static str, &'static str, bool)>, ApiError> {
    let problem = |message: String| ApiError::invalid("preferences", message);
    let wrapped = "must be sent as {\"preferences\": {\"<type>\": {\"<channel>\": true|false}}}";
    let object = body.as_object().filter(|o| o.contains_key("preferences")).ok_or_else(|| problem(wrapped.into()))?;
    if object.len() > 1 {
        return Err(problem("must be the only key of the body".into()));
    }
    let types = object
        .get("preferences")
        .and_then(Value::as_object)
        .ok_or_else(|| problem("must be an object of event types".into()))?;
    let mut changes = Vec::new();
    for (kind, channels) in types {
        let kind = TYPES
            .into_iter()
            .find(|known| known == kind)
            .ok_or_else(|| problem(format!("has an unknown type `{}`; the types are {}", clip(kind), TYPES.join(", "))))?;
        let channels = channels.as_object().ok_or_else(|| problem(format!("{kind} must be an object of channels")))?;
        for (channel, enabled) in channels {
            let channel = CHANNELS
                .into_iter()
                .find(|known| known == channel)
                .ok_or_else(|| problem(format!("{kind} has an unknown channel `{}`; the channels are in_app, email", clip(channel))))?;
            let enabled = enabled.as_bool().ok_or_else(|| problem(format!("{kind}.{channel} must be true or false")))?;
            changes.push((kind, channel, enabled));
        }
    }
    Ok(changes)
}

/// Shortens a name the client sent for an error message.
fn clip(name: &str) -> String {
    name.chars().take(32).collect()
}

/// Stores choices (one statement).
pub async fn store(db: &impl Statements, user_id: &str, changes: &[(&str, &str, bool)], now: i64) -> Result<(), DbError> {
    if changes.is_empty() {
        return Ok(());
    }
    let rows = vec!["(?, ?, ?, ?, ?)"; changes.len()].join(", ");
    let mut values = Vec::with_capacity(changes.len() * 5);
    for (kind, channel, enabled) in changes {
        values.extend(params![user_id, *kind, *channel, *enabled, now]);
    }
    db.execute(
        &format!(
            "INSERT INTO preferences (user_id, type, channel, enabled, updated_at) VALUES {rows}
             ON DUPLICATE KEY UPDATE enabled = VALUES(enabled), updated_at = VALUES(updated_at)"
        ),
        values,
    )
    .await
}
