//! Admin routes: `PUT /api/admin/users/:username/roles` and
//! `DELETE /api/admin/users/:username`. Both need the `admin` role on the
//! caller's current row (the token's version is checked against it, and
//! every role change bumps the version, so a token's roles are current).

use serde_json::{Value, json};
use shared::ApiError;
use shared::auth::{ROLE_ADMIN, ROLE_USER, require_role};
use shared::http::{Response, json, no_store, read_json};
use shared::text::normalised_key;
use spin_sdk::http::{Request, StatusCode};

use crate::app::{App, Caller};
use crate::events;
use crate::store;

/// Roles an admin may grant; `user` is everyone's and needs no row.
pub const GRANTABLE_ROLES: [&str; 1] = [ROLE_ADMIN];

const BODY_LIMIT: usize = 4 * 1024;

async fn admin(app: &App<'_>, request: &Request) -> Result<Caller, ApiError> {
    let caller = app.caller(request.headers()).await?;
    require_role(&caller.user.identity(), ROLE_ADMIN)?;
    Ok(caller)
}

fn not_found() -> ApiError {
    ApiError::NotFound("user not found".into())
}

/// Reads `{"roles": ["admin", …]}`: the complete set of roles the user
/// should have. `user` may be listed and is implied either way.
fn parse_roles(body: &Value) -> Result<Vec<&'static str>, ApiError> {
    let Some(object) = body.as_object() else {
        return Err(ApiError::invalid("body", "must be a JSON object with `roles`"));
    };
    if let Some(unknown) = object.keys().find(|key| *key != "roles") {
        return Err(ApiError::invalid(unknown, "is not a known field"));
    }
    let list = match object.get("roles") {
        None | Some(Value::Null) => return Err(ApiError::invalid("roles", "can't be blank")),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(ApiError::invalid("roles", "must be a list of role names")),
    };
    let mut roles = Vec::new();
    for item in list {
        let name = item.as_str().ok_or_else(|| ApiError::invalid("roles", "must be a list of role names"))?;
        if name == ROLE_USER {
            continue;
        }
        let role = GRANTABLE_ROLES
            .iter()
            .find(|role| **role == name)
            .ok_or_else(|| ApiError::invalid("roles", format!("has an unknown role (known: {ROLE_USER}, {ROLE_ADMIN})")))?;
        if !roles.contains(role) {
            roles.push(*role);
        }
    }
    Ok(roles)
}

/// Sets a user's roles. One transaction writes the change, its audit rows,
/// a token version bump and a `user.updated` event, so the user's old tokens
/// stop working. Asking for the roles the user has changes nothing.
pub async fn set_roles(app: &App<'_>, request: Request, username: &str) -> Result<Response, ApiError> {
    let caller = admin(app, &request).await?;
    let requested = parse_roles(&read_json(request, BODY_LIMIT).await?)?;
    let now = shared::time::now_micros();

    let (user, event) = app
        .db
        .transaction(async |tx| {
            let mut user = store::lock_user_by_username(tx, &normalised_key(username)).await?.ok_or_else(not_found)?;
            let grant: Vec<&str> = requested.iter().copied().filter(|r| !user.granted_roles.iter().any(|g| g == r)).collect();
            let revoke: Vec<&str> = GRANTABLE_ROLES
                .iter()
                .copied()
                .filter(|r| !requested.contains(r) && user.granted_roles.iter().any(|g| g == r))
                .collect();
            if grant.is_empty() && revoke.is_empty() {
                return Ok((user, None));
            }
            store::change_roles(tx, &caller.user.id, &user.id, &grant, &revoke, now).await?;
            store::bump_token_version(tx, &user.id, now).await?;
            user.granted_roles = GRANTABLE_ROLES.iter().filter(|r| requested.contains(r)).map(|r| r.to_string()).collect();
            user.token_version += 1;
            let event = events::user_changed(&app.outbox, tx, "user.updated", &user).await?;
            Ok((user, Some(event)))
        })
        .await?;
    if let Some(event) = event {
        app.publish(&[event]).await;
    }
    Ok(no_store(json(
        StatusCode::OK,
        &json!({ "user": { "username": user.username, "roles": user.identity().roles } }),
    )))
}

/// Deletes a user with their roles and follows, and publishes `user.deleted`.
/// An admin cannot delete their own account this way.
pub async fn delete_user(app: &App<'_>, request: Request, username: &str) -> Result<Response, ApiError> {
    let caller = admin(app, &request).await?;
    let published = app
        .db
        .transaction(async |tx| {
            let user = store::lock_user_by_username(tx, &normalised_key(username)).await?.ok_or_else(not_found)?;
            if user.id == caller.user.id {
                return Err(ApiError::invalid("username", "is your own; another admin must delete it"));
            }
            store::delete_user(tx, &user.id).await?;
            Ok([
                events::user_deleted(&app.outbox, tx, &user.id).await?,
                events::email_deleted(&app.outbox, tx, &user.id).await?,
            ])
        })
        .await?;
    app.publish(&published).await;
    Ok(no_store(shared::http::no_content()))
}
