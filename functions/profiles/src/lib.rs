//! The profiles component: the RealWorld users and profiles contract
//! (registration, login, the current user, profiles, follows). It owns users,
//! their roles and follows, and issues the tokens every component accepts.
//! Changes to users and follows are published as events (see `events.rs`).
//!
//! This file is the routing table. It matches on the request URI path, not on
//! the `spin-path-info` header, which a client can also send.

mod app;
mod events;
mod refresh;
mod routes;
mod store;

use shared::ApiError;
use shared::http::{Ctx, Response};
use spin_sdk::http::{IntoResponse, Method, Request};
use spin_sdk::http_service;

/// Every route this component serves.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Register,
    Login,
    Refresh,
    CurrentUser,
    UpdateUser,
    Profile(String),
    Follow(String),
    Unfollow(String),
    LogoutAll,
    RequestVerification,
    VerifyEmail,
    SetRoles(String),
    DeleteUser(String),
    Resync,
    Dispatch,
    Health,
}

/// Maps a method and path onto a route. Returns the route's pattern for the
/// log line (never the path, which can contain a username) next to the route:
/// 404 for an unknown path, 405 with `Allow` for a known path and another method.
fn resolve(method: &Method, path: &str) -> (&'static str, Result<Route, ApiError>) {
    const UNMATCHED: &str = "unmatched";
    let segments = match shared::http::segments(path) {
        Ok(segments) => segments,
        Err(error) => return (UNMATCHED, Err(error)),
    };
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let m = method.as_str();
    let allow = |methods: &'static str| Err(ApiError::MethodNotAllowed(methods));
    match segments.as_slice() {
        ["api", "users"] => ("/api/users", if m == "POST" { Ok(Route::Register) } else { allow("POST") }),
        ["api", "users", "login"] => ("/api/users/login", if m == "POST" { Ok(Route::Login) } else { allow("POST") }),
        ["api", "users", "refresh"] => ("/api/users/refresh", if m == "POST" { Ok(Route::Refresh) } else { allow("POST") }),
        ["api", "user"] => (
            "/api/user",
            match m {
                "GET" => Ok(Route::CurrentUser),
                "PUT" => Ok(Route::UpdateUser),
                _ => allow("GET, PUT"),
            },
        ),
        ["api", "user", "email-verification"] => (
            "/api/user/email-verification",
            if m == "POST" { Ok(Route::RequestVerification) } else { allow("POST") },
        ),
        ["api", "users", "verify-email"] => (
            "/api/users/verify-email",
            if m == "POST" { Ok(Route::VerifyEmail) } else { allow("POST") },
        ),
        ["api", "user", "logout-all"] => (
            "/api/user/logout-all",
            if m == "POST" { Ok(Route::LogoutAll) } else { allow("POST") },
        ),
        ["api", "admin", "users", username] if !username.is_empty() => (
            "/api/admin/users/:username",
            if m == "DELETE" { Ok(Route::DeleteUser(username.to_string())) } else { allow("DELETE") },
        ),
        ["api", "admin", "users", username, "roles"] if !username.is_empty() => (
            "/api/admin/users/:username/roles",
            if m == "PUT" { Ok(Route::SetRoles(username.to_string())) } else { allow("PUT") },
        ),
        ["internal", "profiles", "resync"] => (
            "/internal/profiles/resync",
            if m == "GET" { Ok(Route::Resync) } else { allow("GET") },
        ),
        ["ops", "profiles", "dispatch"] => (
            "/ops/profiles/dispatch",
            if m == "POST" { Ok(Route::Dispatch) } else { allow("POST") },
        ),
        ["api", "profiles", username] if !username.is_empty() => (
            "/api/profiles/:username",
            if m == "GET" { Ok(Route::Profile(username.to_string())) } else { allow("GET") },
        ),
        ["api", "profiles", username, "follow"] if !username.is_empty() => (
            "/api/profiles/:username/follow",
            match m {
                "POST" => Ok(Route::Follow(username.to_string())),
                "DELETE" => Ok(Route::Unfollow(username.to_string())),
                _ => allow("POST, DELETE"),
            },
        ),
        ["health", "profiles"] => (
            "/health/profiles",
            if matches!(m, "GET" | "HEAD") { Ok(Route::Health) } else { allow("GET, HEAD") },
        ),
        _ => (UNMATCHED, Err(ApiError::NotFound("not found".into()))),
    }
}

#[http_service]
async fn handle(request: Request) -> impl IntoResponse {
    shared::http::serve("profiles", request, dispatch).await
}

async fn dispatch(ctx: &Ctx, request: Request) -> Result<Response, ApiError> {
    let (pattern, route) = resolve(request.method(), request.uri().path());
    ctx.set_route(pattern);
    let route = route?;
    if route == Route::Health {
        return Ok(routes::health::check(ctx).await);
    }

    let app = app::App::load(ctx).await?;
    match route {
        Route::Register => routes::users::register(&app, request).await,
        Route::Login => routes::users::login(&app, request).await,
        Route::Refresh => routes::users::refresh_session(&app, request).await,
        Route::CurrentUser => routes::users::current(&app, request).await,
        Route::UpdateUser => routes::users::update(&app, request).await,
        Route::Profile(username) => routes::profiles::get(&app, request, &username).await,
        Route::Follow(username) => routes::profiles::follow(&app, request, &username).await,
        Route::Unfollow(username) => routes::profiles::unfollow(&app, request, &username).await,
        Route::LogoutAll => routes::users::logout_all(&app, request).await,
        Route::RequestVerification => routes::email::request(&app, request).await,
        Route::VerifyEmail => routes::email::verify(&app, request).await,
        Route::SetRoles(username) => routes::admin::set_roles(&app, request, &username).await,
        Route::DeleteUser(username) => routes::admin::delete_user(&app, request, &username).await,
        Route::Resync => routes::ops::resync(&app, request).await,
        Route::Dispatch => routes::ops::dispatch(&app, request).await,
        Route::Health => unreachable!("answered above"),
    }
}
