//! Users: `POST /api/users` (register), `POST /api/users/login`,
//! `GET /api/user` and `PUT /api/user`, as the RealWorld contract defines them.

use serde_json::{Value, json};
use shared::ApiError;
use shared::error::FieldErrors;
use shared::http::{Response, json, no_store, read_json};
use shared::json::{Update, wrapped};
use shared::{password, text};
use spin_sdk::http::{Request, StatusCode};

use crate::app::{App, check_version};
use crate::{events, refresh};
use crate::store::{self, NewUser, User, UserUpdate};

/// Bodies of these routes are small; this leaves room for a long bio.
const BODY_LIMIT: usize = 16 * 1024;

/// Builds the contract's user object. The token is the one the client sent
/// or was just issued; `refresh` is a refresh token issued with it.
fn user_response(status: StatusCode, user: &User, token: &str, refresh: Option<&str>) -> Response {
    let mut body = json!({ "user": {
        "email": user.email,
        "emailVerified": user.email_verified,
        "token": token,
        "username": user.username,
        "bio": user.bio,
        "image": user.image,
    }});
    if let Some(refresh) = refresh {
        body["user"]["refreshToken"] = refresh.into();
    }
    no_store(json(status, &body))
}

fn check(errors: &mut FieldErrors, field: &str, problem: Option<String>) {
    if let Some(problem) = problem {
        errors.add(field, problem);
    }
}

/// Maps a duplicate key met while writing a user to the field it concerns.
fn duplicate_field(error: &shared::db::DbError) -> Option<&'static str> {
    match error.duplicate_key()? {
        "users_username_key" => Some("username"),
        "users_email_key" => Some("email"),
        _ => None,
    }
}

fn taken_errors(username_taken: bool, email_taken: bool) -> Result<(), ApiError> {
    let mut errors = FieldErrors::new();
    if username_taken {
        errors.add("username", "has already been taken");
    }
    if email_taken {
        errors.add("email", "has already been taken");
    }
    errors.into_result()
}

pub async fn register(app: &App<'_>, request: Request) -> Result<Response, ApiError> {
    let body = read_json(request, BODY_LIMIT).await?;
    let mut fields = wrapped(&body, "user")?;
    let username = fields.required_string("username");
    let email = fields.required_string("email");
    let password = fields.required_string("password");
    fields.reject_unknown(&["username", "email", "password"]);
    let mut errors = std::mem::take(&mut fields.errors);
    let (Some(username), Some(email), Some(password)) = (username, email, password) else {
        return Err(ApiError::Validation(errors));
    };
    let (username, email) = (text::canonical(&username), text::canonical(&email));
    check(&mut errors, "username", text::username_problem(&username));
    check(&mut errors, "email", text::email_problem(&email));
    check(&mut errors, "password", text::password_problem(&password));
    errors.into_result()?;

    let username_key = text::normalised_key(&username);
    let email_key = text::normalised_key(&email);
    // Checked before hashing, so a taken name costs no hash; the unique keys
    // still decide when two registrations race.
    let (username_taken, email_taken) = store::taken(&app.db, &username_key, &email_key, "").await?;
    taken_errors(username_taken, email_taken)?;

    let password_hash = password::hash(&password).map_err(ApiError::Internal)?;
    let user = User {
        id: shared::ids::uuid_v7(),
        username,
        email,
        email_verified: false,
        bio: String::new(),
        image: String::new(),
        token_version: 1,
        granted_roles: Vec::new(),
    };
    let new_user = NewUser {
        id: &user.id,
        username: &user.username,
        username_key: &username_key,
        email: &user.email,
        email_key: &email_key,
        password_hash: &password_hash,
        now: shared::time::now_micros(),
    };
    let ttl = refresh::ttl_seconds().await?;
    let (published, refresh_token) = app
        .db
        .transaction(async |tx| {
            store::insert_user(tx, &new_user).await.map_err(|error| match duplicate_field(&error) {
                Some(field) => ApiError::invalid(field, "has already been taken"),
                None => error.into(),
            })?;
            let refresh_token = refresh::issue(tx, &user.id, new_user.now, ttl).await?;
            let published = [
                events::user_changed(&app.outbox, tx, "user.created", &user).await?,
                events::email_changed(&app.outbox, tx, &user).await?,
            ];
            Ok((published, refresh_token))
        })
        .await?;
    app.publish(&published).await;

    let token = app.issue_token(&user)?;
    Ok(user_response(StatusCode::CREATED, &user, &token, Some(&refresh_token)))
}

pub async fn login(app: &App<'_>, request: Request) -> Result<Response, ApiError> {
    let body = read_json(request, BODY_LIMIT).await?;
    let mut fields = wrapped(&body, "user")?;
    let email = fields.required_string("email");
    let password = fields.required_string("password");
    fields.reject_unknown(&["email", "password"]);
    let errors = std::mem::take(&mut fields.errors);
    let (Some(email), Some(password)) = (email, password) else {
        return Err(ApiError::Validation(errors));
    };
    errors.into_result()?;

    let rejected = || ApiError::Unauthorized("email or password is invalid".into());
    if password.chars().count() > text::PASSWORD_MAX {
        return Err(rejected());
    }
    let credentials = store::credentials_by_email(&app.db, &text::normalised_key(email.trim())).await?;
    let Some(credentials) = credentials else {
        // As slow as a wrong password, so the response time does not reveal which emails exist.
        password::verify_nothing(&password);
        return Err(rejected());
    };
    if !password::verify(&password, &credentials.password_hash) {
        return Err(rejected());
    }
    if password::needs_rehash(&credentials.password_hash) {
        upgrade_hash(app, &credentials, &password).await;
    }
    let token = app.issue_token(&credentials.user)?;
    let now = shared::time::now_micros();
    let refresh_token = refresh::issue(&app.db, &credentials.user.id, now, refresh::ttl_seconds().await?).await?;
    Ok(user_response(StatusCode::OK, &credentials.user, &token, Some(&refresh_token)))
}

/// Stores a hash with the current parameters in place of one made with
/// older ones. Login succeeds whether or not this works, so a failure is only
/// noted in the log line, and the next login tries again.
async fn upgrade_hash(app: &App<'_>, credentials: &store::Credentials, password: &str) {
    let replaced = match password::hash(password) {
        Ok(new_hash) => store::replace_password_hash(&app.db, &credentials.user.id, &credentials.password_hash, &new_hash)
            .await
            .map_err(|error| format!("storing the upgraded password hash failed: {error}")),
        Err(error) => Err(format!("upgrading the password hash failed: {error}")),
    };
    if let Err(reason) = replaced {
        app.ctx.note_error(reason);
    }
}

pub async fn current(app: &App<'_>, request: Request) -> Result<Response, ApiError> {
    let caller = app.caller(request.headers()).await?;
    Ok(user_response(StatusCode::OK, &caller.user, &caller.token, None))
}

/// Changes any of `username`, `email`, `password`, `bio`, `image`. A
/// password change bumps the token version (every older token stops
/// working) and returns a new token. `null` clears `bio` or `image`, leaves
/// the password unchanged, and is invalid for `username` and `email`.
pub async fn update(app: &App<'_>, request: Request) -> Result<Response, ApiError> {
    // The token is checked here; its version is checked against the row
    // locked below, so no separate statement reads the user first.
    let (token, identity) = app.identity(request.headers())?;
    let body = read_json(request, BODY_LIMIT).await?;
    let changes = Changes::parse(&body)?;

    // Hashing takes tens of milliseconds: do it before any row is locked.
    let password_hash = match &changes.password {
        Some(password) => Some(password::hash(password).map_err(ApiError::Internal)?),
        None => None,
    };
    let now = shared::time::now_micros();
    let ttl = refresh::ttl_seconds().await?;

    let (user, published, refresh_token) = app
        .db
        .transaction(async |tx| {
            let current = store::lock_user(tx, &identity.user_id)
                .await?
                .ok_or_else(|| ApiError::Unauthorized("the token's user no longer exists".into()))?;
            check_version(&identity, &current)?;
            let mut updated = changes.apply(&current, password_hash.is_some());

            let keys = |user: &User| (text::normalised_key(&user.username), text::normalised_key(&user.email));
            let (username_key, email_key) = keys(&updated);
            let email_changed = email_key != text::normalised_key(&current.email);
            updated.email_verified &= !email_changed;
            if keys(&current) != (username_key.clone(), email_key.clone()) {
                let (username_taken, email_taken) = store::taken(tx, &username_key, &email_key, &current.id).await?;
                taken_errors(username_taken, email_taken)?;
            }
            let change = UserUpdate {
                email_changed,
                username: &updated.username,
                username_key: &username_key,
                email: &updated.email,
                email_key: &email_key,
                bio: &updated.bio,
                image: &updated.image,
                password_hash: password_hash.as_deref(),
                now,
            };
            store::update_user(tx, &current.id, &change).await.map_err(|error| match duplicate_field(&error) {
                Some(field) => ApiError::invalid(field, "has already been taken"),
                None => error.into(),
            })?;
            let mut published = vec![events::user_changed(&app.outbox, tx, "user.updated", &updated).await?];
            if email_changed {
                // A link sent to the old address must not verify the new one.
                store::delete_verifications(tx, &current.id).await?;
                published.push(events::email_changed(&app.outbox, tx, &updated).await?);
            }
            // A new password ends every session, refresh tokens included.
            let refresh_token = match password_hash {
                Some(_) => {
                    refresh::revoke_all(tx, &current.id, now).await?;
                    Some(refresh::issue(tx, &current.id, now, ttl).await?)
                }
                None => None,
            };
            Ok((updated, published, refresh_token))
        })
        .await?;
    app.publish(&published).await;

    let token = if password_hash.is_some() { app.issue_token(&user)? } else { token };
    Ok(user_response(StatusCode::OK, &user, &token, refresh_token.as_deref()))
}

/// `POST /api/user/logout-all`: bumps the caller's token version, so every
/// token issued so far stops working (this one included), here at once and in
/// the other components as soon as the `user.updated` event reaches them.
/// Responds 204, and the client logs in again.
pub async fn logout_all(app: &App<'_>, request: Request) -> Result<Response, ApiError> {
    let (_, identity) = app.identity(request.headers())?;
    let now = shared::time::now_micros();
    let event = app
        .db
        .transaction(async |tx| {
            let mut user = store::lock_user(tx, &identity.user_id)
                .await?
                .ok_or_else(|| ApiError::Unauthorized("the token's user no longer exists".into()))?;
            check_version(&identity, &user)?;
            store::bump_token_version(tx, &user.id, now).await?;
            refresh::revoke_all(tx, &user.id, now).await?;
            user.token_version += 1;
            Ok(events::user_changed(&app.outbox, tx, "user.updated", &user).await?)
        })
        .await?;
    app.publish(&[event]).await;
    Ok(no_store(shared::http::no_content()))
}

/// `POST /api/users/refresh {"refreshToken": "…"}`: exchanges a refresh
/// token for a new access token and the next refresh token (200 with the
/// user object). An unknown, expired or revoked token is a 401. A token used
/// before is a 401 that also revokes its family and bumps the user's token
/// version, which ends every session of the user.
pub async fn refresh_session(app: &App<'_>, request: Request) -> Result<Response, ApiError> {
    let body = read_json(request, BODY_LIMIT).await?;
    let presented = refresh_token_field(&body)?;
    let now = shared::time::now_micros();
    let ttl = refresh::ttl_seconds().await?;
    let invalid = || ApiError::Unauthorized("the refresh token is invalid or has expired".into());

    let (outcome, published) = app
        .db
        .transaction(async |tx| match refresh::exchange(tx, &presented, now, ttl).await? {
            refresh::Exchange::Invalid => Err(invalid()),
            refresh::Exchange::Reused { user_id } => {
                let Some(mut user) = store::lock_user(tx, &user_id).await? else { return Err(invalid()) };
                store::bump_token_version(tx, &user.id, now).await?;
                user.token_version += 1;
                let event = events::user_changed(&app.outbox, tx, "user.updated", &user).await?;
                Ok((None, vec![event]))
            }
            refresh::Exchange::Rotated { user_id, token } => {
                let user = store::lock_user(tx, &user_id).await?.ok_or_else(invalid)?;
                Ok((Some((user, token)), Vec::new()))
            }
        })
        .await?;
    app.publish(&published).await;
    let Some((user, refresh_token)) = outcome else {
        return Err(ApiError::Unauthorized(
            "the refresh token was used before, so every session of this user has ended; log in again".into(),
        ));
    };
    let token = app.issue_token(&user)?;
    Ok(user_response(StatusCode::OK, &user, &token, Some(&refresh_token)))
}

/// Reads `{"refreshToken": "…"}`: 422 for another shape or a missing token.
fn refresh_token_field(body: &Value) -> Result<String, ApiError> {
    let object = body.as_object().ok_or_else(|| ApiError::invalid("refreshToken", "can't be blank"))?;
    if object.keys().any(|key| key != "refreshToken") {
        return Err(ApiError::invalid("body", "may hold only `refreshToken`"));
    }
    match object.get("refreshToken") {
        Some(Value::String(token)) if !token.is_empty() => Ok(token.clone()),
        Some(Value::String(_)) | None | Some(Value::Null) => Err(ApiError::invalid("refreshToken", "can't be blank")),
        Some(_) => Err(ApiError::invalid("refreshToken", "must be a string")),
    }
}

/// The validated fields of a `PUT /api/user` body.
struct Changes {
    username: Option<String>,
    email: Option<String>,
    password: Option<String>,
    bio: Update<String>,
    image: Update<String>,
}

impl Changes {
    fn parse(body: &Value) -> Result<Self, ApiError> {
        let mut fields = wrapped(body, "user")?;
        let username = fields.optional_string("username");
        let email = fields.optional_string("email");
        let password = fields.optional_string("password");
        let bio = fields.optional_string("bio");
        let image = fields.optional_string("image");
        // Clients often send back the whole user object they were given, so
        // its read-only fields (`token`, `emailVerified`, `refreshToken`) are
        // accepted and ignored.
        fields.reject_unknown(&["username", "email", "password", "bio", "image", "token", "emailVerified", "refreshToken"]);
        let mut errors = std::mem::take(&mut fields.errors);

        let mut required = |field: &str, value: Update<String>, problem: fn(&str) -> Option<String>| match value {
            Update::Absent => None,
            Update::Null => {
                errors.add(field, "can't be blank");
                None
            }
            Update::Set(value) => {
                let value = text::canonical(&value);
                check(&mut errors, field, problem(&value));
                Some(value)
            }
        };
        let username = required("username", username, text::username_problem);
        let email = required("email", email, text::email_problem);
        // A null or empty password means "unchanged", as when the field is
        // absent: settings forms often send the empty field, and no valid
        // password is empty.
        let password = match password {
            Update::Set(password) if !password.is_empty() => {
                check(&mut errors, "password", text::password_problem(&password));
                Some(password)
            }
            Update::Set(_) | Update::Absent | Update::Null => None,
        };
        if let Update::Set(bio) = &bio {
            check(&mut errors, "bio", text::bio_problem(bio));
        }
        if let Update::Set(image) = &image {
            check(&mut errors, "image", text::image_problem(image));
        }
        errors.into_result()?;
        Ok(Self { username, email, password, bio, image })
    }

    /// Returns the user after these changes.
    fn apply(&self, current: &User, password_changed: bool) -> User {
        let cleared_or = |update: &Update<String>, current: &str| match update {
            Update::Absent => current.to_string(),
            Update::Null => String::new(),
            Update::Set(value) => value.clone(),
        };
        User {
            id: current.id.clone(),
            username: self.username.clone().unwrap_or_else(|| current.username.clone()),
            email: self.email.clone().unwrap_or_else(|| current.email.clone()),
            email_verified: current.email_verified,
            bio: cleared_or(&self.bio, &current.bio),
            image: cleared_or(&self.image, &current.image),
            token_version: current.token_version + u64::from(password_changed),
            granted_roles: current.granted_roles.clone(),
        }
    }
}

/// Builds the contract's profile object.
pub fn profile_json(username: &str, bio: &str, image: &str, following: bool) -> Value {
    json!({ "profile": { "username": username, "bio": bio, "image": image, "following": following } })
}
