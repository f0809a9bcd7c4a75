//! `POST|DELETE /api/articles/:slug/favorite`. Favouriting twice, or
//! unfavouriting an article not favourited, changes nothing and publishes
//! nothing. A change is written with its event in one transaction.

use shared::ApiError;
use shared::db::codes;
use shared::http::{Response, json, no_store};
use shared::text::is_slug;
use spin_sdk::http::{Request, StatusCode};

use crate::app::App;
use crate::cache::Dependency;
use crate::events;
use crate::routes::articles::not_found;
use crate::store;
use crate::view;

pub async fn favorite(app: &App<'_>, request: Request, slug: &str) -> Result<Response, ApiError> {
    set_favorite(app, request, slug, true).await
}

pub async fn unfavorite(app: &App<'_>, request: Request, slug: &str) -> Result<Response, ApiError> {
    set_favorite(app, request, slug, false).await
}

async fn set_favorite(app: &App<'_>, request: Request, slug: &str, favorited: bool) -> Result<Response, ApiError> {
    let caller = app.caller(request.headers()).await?;
    if !is_slug(slug) {
        return Err(not_found());
    }
    // A favourite references the user's author row, which must exist first.
    app.caller_author(&caller).await?;

    let now = shared::time::now_micros();
    let (mut article, event) = app
        .db
        .transaction(async |tx| {
            let article = store::lock_article(tx, slug).await?.ok_or_else(not_found)?;
            if store::lock_favorite(tx, &caller.user_id, &article.id).await? == favorited {
                return Ok((article, None));
            }
            // The article is locked, so a missing row can only be the user's author row.
            store::set_favorite(tx, &caller.user_id, &article.id, favorited, now).await.map_err(|error| {
                if error.code() == Some(codes::FOREIGN_KEY_MISSING) { crate::app::unknown_user() } else { error.into() }
            })?;
            let event = events::favorite_changed(&app.outbox, tx, &article, &caller.user_id, favorited).await?;
            Ok((article, Some(event)))
        })
        .await?;

    if let Some(event) = event {
        let cache = app.cache();
        cache.invalidate(Dependency::Article(&article.slug)).await;
        cache.invalidate(Dependency::ListContent).await;
        app.publish(&[event]).await;
        article.favorites_count = if favorited { article.favorites_count + 1 } else { article.favorites_count.saturating_sub(1) };
    }
    let mut authors = view::authors(app, &[article.author_id.as_str()]).await?;
    let author = authors.remove(&article.author_id).ok_or_else(not_found)?;
    let flags = view::flags(app, Some(&caller), &[&article]).await?;
    let body = serde_json::json!({
        "article": view::article_json(&article, &author, favorited, flags.following.contains(&article.author_id))
    });
    Ok(no_store(json(StatusCode::OK, &body)))
}
