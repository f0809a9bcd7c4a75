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
use crate::store::{self, NewUser, User, UserUpdate};

/// Bodies of these routes are small; this leaves room for a long bio.
const BODY_LIMIT: usize = 16 * 1024;

/// The contract's user object. The token is the one the client sent or was just issued.
fn user_response(status: StatusCode, user: &User, token: &str) -> Response {
    no_store(json(
        status,
        &json!({ "user": {
            "email": user.email,
            "token": token,
            "username": user.username,
            "bio": user.bio,
            "image": user.image,
        }}),
    ))
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

pub async fn register(app: &App, request: Request) -> Result<Response, ApiError> {
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
    let (username, email) = (username.trim().to_string(), email.trim().to_string());
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
    let id = shared::ids::uuid_v7();
    let new_user = NewUser {
        id: &id,
        username: &username,
        username_key: &username_key,
        email: &email,
        email_key: &email_key,
        password_hash: &password_hash,
        now: shared::time::now_micros(),
    };
    if let Err(error) = store::insert_user(&app.db, &new_user).await {
        return Err(match duplicate_field(&error) {
            Some(field) => ApiError::invalid(field, "has already been taken"),
            None => error.into(),
        });
    }

    let user = User {
        id,
        username,
        email,
        bio: String::new(),
        image: String::new(),
        token_version: 1,
        granted_roles: Vec::new(),
    };
    let token = app.issue_token(&user)?;
    Ok(user_response(StatusCode::CREATED, &user, &token))
}

pub async fn login(app: &App, request: Request) -> Result<Response, ApiError> {
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

    let refused = || ApiError::Unauthorized("email or password is invalid".into());
    if password.chars().count() > text::PASSWORD_MAX {
        return Err(refused());
    }
    let credentials = store::credentials_by_email(&app.db, &text::normalised_key(email.trim())).await?;
    let Some(credentials) = credentials else {
        // As slow as a wrong password, so the answer does not tell which emails exist.
        password::verify_nothing(&password);
        return Err(refused());
    };
    if !password::verify(&password, &credentials.password_hash) {
        return Err(refused());
    }
    let token = app.issue_token(&credentials.user)?;
    Ok(user_response(StatusCode::OK, &credentials.user, &token))
}

pub async fn current(app: &App, request: Request) -> Result<Response, ApiError> {
    let caller = app.caller(request.headers()).await?;
    Ok(user_response(StatusCode::OK, &caller.user, &caller.token))
}

/// Changes any of `username`, `email`, `password`, `bio`, `image`. A
/// password change bumps the token version (every older token stops
/// working) and returns a new token.
pub async fn update(app: &App, request: Request) -> Result<Response, ApiError> {
    let caller = app.caller(request.headers()).await?;
    let body = read_json(request, BODY_LIMIT).await?;
    let mut fields = wrapped(&body, "user")?;
    let username = fields.optional_string("username");
    let email = fields.optional_string("email");
    let new_password = fields.optional_string("password");
    let bio = fields.optional_string("bio");
    let image = fields.optional_string("image");
    // Clients often send back the whole user object they were given, token included.
    fields.reject_unknown(&["username", "email", "password", "bio", "image", "token"]);
    let mut errors = std::mem::take(&mut fields.errors);

    let mut updated = caller.user.clone();
    let mut required = |field: &str, value: Update<String>, target: &mut String, problem: fn(&str) -> Option<String>| {
        match value {
            Update::Absent => {}
            Update::Null => errors.add(field, "can't be blank"),
            Update::Set(value) => {
                let value = value.trim().to_string();
                check(&mut errors, field, problem(&value));
                *target = value;
            }
        }
    };
    required("username", username, &mut updated.username, text::username_problem);
    required("email", email, &mut updated.email, text::email_problem);
    let mut optional = |field: &str, value: Update<String>, target: &mut String, problem: fn(&str) -> Option<String>| {
        match value {
            Update::Absent => {}
            Update::Null => target.clear(),
            Update::Set(value) => {
                check(&mut errors, field, problem(&value));
                *target = value;
            }
        }
    };
    optional("bio", bio, &mut updated.bio, text::bio_problem);
    optional("image", image, &mut updated.image, text::image_problem);
    let new_password = match new_password {
        Update::Set(password) => {
            check(&mut errors, "password", text::password_problem(&password));
            Some(password)
        }
        Update::Absent | Update::Null => None,
    };
    errors.into_result()?;

    let password_hash = match &new_password {
        Some(password) => Some(password::hash(password).map_err(ApiError::Internal)?),
        None => None,
    };
    let change = UserUpdate {
        username: &updated.username,
        email: &updated.email,
        bio: &updated.bio,
        image: &updated.image,
        password_hash: password_hash.as_deref(),
        now: shared::time::now_micros(),
    };

    let saved = app
        .db
        .transaction(async |tx| {
            // Lock, then check: a password change racing this update must not be undone by it.
            let current = store::lock_user(tx, &caller.user.id)
                .await?
                .ok_or_else(|| ApiError::Unauthorized("the token's user no longer exists".into()))?;
            check_version(&caller.identity, &current)?;
            let (username_key, email_key) = (text::normalised_key(change.username), text::normalised_key(change.email));
            let keys_changed = username_key != text::normalised_key(&current.username)
                || email_key != text::normalised_key(&current.email);
            if keys_changed {
                let (username_taken, email_taken) = store::taken(tx, &username_key, &email_key, &current.id).await?;
                taken_errors(username_taken, email_taken)?;
            }
            store::update_user(tx, &current.id, &change).await.map_err(|error| match duplicate_field(&error) {
                Some(field) => ApiError::invalid(field, "has already been taken"),
                None => error.into(),
            })?;
            Ok(current)
        })
        .await?;

    let user = User {
        token_version: saved.token_version + u64::from(password_hash.is_some()),
        granted_roles: saved.granted_roles,
        ..updated
    };
    let token = if password_hash.is_some() { app.issue_token(&user)? } else { caller.token };
    Ok(user_response(StatusCode::OK, &user, &token))
}

/// The contract's profile object.
pub fn profile_json(username: &str, bio: &str, image: &str, following: bool) -> Value {
    json!({ "profile": { "username": username, "bio": bio, "image": image, "following": following } })
}
