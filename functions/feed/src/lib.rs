//! The feed component. It will own articles: the global list, each user's
//! personal feed, comments, favourites and tags. For now it serves its health
//! check, keeps the token versions of profiles' user events and runs its
//! dispatch (see `shared::platform`).
//!
//! This file is the routing table. It matches on the request URI path, not on
//! the `spin-path-info` header, which a client can also send.

use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;

static ROUTES: shared::platform::Routes = shared::platform::Routes {
    component: "feed",
    health: "/health/feed",
    events: "/internal/feed/events",
    dispatch: "/ops/feed/dispatch",
};

#[http_service]
async fn handle(request: Request) -> impl IntoResponse {
    shared::platform::serve(&ROUTES, request).await
}
