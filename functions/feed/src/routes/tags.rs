//! `GET /api/tags`: the tags in use, most used first, at most
//! `store::TAGS_MAX`. Cached until an article's tags change.

use serde_json::json;
use shared::ApiError;
use shared::http::{Response, json as json_response};
use spin_sdk::http::{Request, StatusCode};

use crate::app::App;
use crate::cache::Dependency;
use crate::store;

pub async fn list(app: &App<'_>, _request: Request) -> Result<Response, ApiError> {
    let cache = app.cache();
    let key = cache.key("tags", &[Dependency::Tags]).await;
    let tags = match cache.get::<Vec<String>>(key.as_deref()).await {
        Some(tags) => tags,
        None => {
            let tags = store::popular_tags(&app.db).await?;
            cache.put(key.as_deref(), &tags).await;
            tags
        }
    };
    Ok(json_response(StatusCode::OK, &json!({ "tags": tags })))
}
