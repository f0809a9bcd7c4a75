//! Profiles: `GET /api/profiles/:username` (token optional) and
//! `POST|DELETE /api/profiles/:username/follow`, as the RealWorld contract
//! defines them. Following or unfollowing yourself is a 422. Following twice,
//! or unfollowing someone not followed, changes nothing.

use shared::ApiError;
use shared::http::{Response, json, no_store};
use shared::text::normalised_key;
use spin_sdk::http::{Request, StatusCode};

use crate::app::App;
use crate::events;
use crate::routes::users::profile_json;
use crate::store::{self, Profile};

fn not_found() -> ApiError {
    ApiError::NotFound("profile not found".into())
}

fn profile_response(profile: &Profile, following: bool) -> Response {
    json(StatusCode::OK, &profile_json(&profile.username, &profile.bio, &profile.image, following))
}

pub async fn get(app: &App<'_>, request: Request, username: &str) -> Result<Response, ApiError> {
    let caller = app.optional_caller(request.headers()).await?;
    let viewer = caller.as_ref().map(|c| c.user.id.as_str());

    let profile = store::profile(&app.db, &normalised_key(username), viewer).await?.ok_or_else(not_found)?;

    let response = profile_response(&profile, profile.following);
    // `following` depends on the viewer: a shared cache must not keep it.
    Ok(if caller.is_some() { no_store(response) } else { response })
}

/// Rejects following or unfollowing yourself.
fn check_not_self(caller_id: &str, profile: &Profile) -> Result<(), ApiError> {
    if profile.id == caller_id {
        return Err(ApiError::invalid("username", "is your own; you cannot follow or unfollow yourself"));
    }
    Ok(())
}

/// Follows (`following` true) or unfollows. A change is written with its
/// event in one transaction. Asking for the state already in place writes
/// nothing and publishes nothing.
async fn set_following(app: &App<'_>, request: Request, username: &str, following: bool) -> Result<Response, ApiError> {
    let caller = app.caller(request.headers()).await?;
    let profile = store::profile(&app.db, &normalised_key(username), Some(&caller.user.id))
        .await?
        .ok_or_else(not_found)?;
    check_not_self(&caller.user.id, &profile)?;
    if profile.following == following {
        return Ok(no_store(profile_response(&profile, following)));
    }

    let now = shared::time::now_micros();
    let event = app
        .db
        .transaction(async |tx| {
            if following {
                store::follow(tx, &caller.user.id, &profile.id, now)
                    .await
                    // 1452: the user was deleted between the lookup and the insert.
                    .map_err(|error| if error.code() == Some(1452) { not_found() } else { error.into() })?;
            } else {
                store::unfollow(tx, &caller.user.id, &profile.id).await?;
            }
            Ok(events::follow_changed(&app.outbox, tx, &caller.user.id, &profile.id, following).await?)
        })
        .await?;
    app.publish(&[event]).await;
    Ok(no_store(profile_response(&profile, following)))
}

pub async fn follow(app: &App<'_>, request: Request, username: &str) -> Result<Response, ApiError> {
    set_following(app, request, username, true).await
}

pub async fn unfollow(app: &App<'_>, request: Request, username: &str) -> Result<Response, ApiError> {
    set_following(app, request, username, false).await
}
