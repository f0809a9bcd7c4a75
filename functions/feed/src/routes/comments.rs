//! Comments: `GET|POST /api/articles/:slug/comments` and
//! `DELETE /api/articles/:slug/comments/:id`. Comments are listed newest
//! first, at most `store::COMMENTS_MAX`. Only the comment's author or an
//! admin deletes a comment. Comment ids are integers below 2^53, as the
//! RealWorld contract and JavaScript clients need.

use serde_json::{Value, json};
use shared::ApiError;
use shared::auth::ROLE_ADMIN;
use shared::db::codes;
use shared::http::{Response, json as json_response, no_content, no_store, read_json};
use shared::text::is_slug;
use spin_sdk::http::{Request, StatusCode};

use crate::app::App;
use crate::events;
use crate::routes::articles::not_found;
use crate::store::{self, Author, Comment};
use crate::view;

/// The maximum length of a comment, in characters.
pub const BODY_MAX: usize = 10_000;
/// How many ids a new comment tries before giving up (they collide only
/// within one millisecond, one time in 4096).
const ID_ATTEMPTS: u32 = 3;

fn comment_json(comment: &Comment, author: &Author, following: bool) -> Value {
    json!({
        "id": comment.id,
        "createdAt": shared::time::rfc3339(comment.created_at),
        "updatedAt": shared::time::rfc3339(comment.updated_at),
        "body": comment.body,
        "author": view::profile_json(author, following),
    })
}

pub async fn list(app: &App<'_>, request: Request, slug: &str) -> Result<Response, ApiError> {
    let viewer = app.optional_caller(request.headers()).await?;
    if !is_slug(slug) {
        return Err(not_found());
    }
    let comments = store::comments(&app.db, slug).await?.ok_or_else(not_found)?;
    let following = match &viewer {
        Some(viewer) if !comments.is_empty() => {
            let mut author_ids: Vec<&str> = comments.iter().map(|(c, _)| c.author_id.as_str()).collect();
            author_ids.sort_unstable();
            author_ids.dedup();
            store::viewer_flags(&app.db, &viewer.user_id, &[], &author_ids).await?.following
        }
        _ => Default::default(),
    };
    let items: Vec<Value> = comments
        .iter()
        .map(|(comment, author)| comment_json(comment, author, following.contains(&comment.author_id)))
        .collect();
    let response = json_response(StatusCode::OK, &json!({ "comments": items }));
    Ok(if viewer.is_some() { no_store(response) } else { response })
}

fn read_body(body: &Value) -> Result<String, ApiError> {
    let mut fields = shared::json::wrapped(body, "comment")?;
    fields.reject_unknown(&["body"]);
    let text = fields.required_string("body");
    if let Some(text) = &text {
        if text.trim().is_empty() {
            fields.errors.add("body", "can't be blank");
        } else if text.chars().count() > BODY_MAX {
            fields.errors.add("body", format!("is too long (maximum is {BODY_MAX} characters)"));
        }
    }
    fields.finish()?;
    Ok(text.unwrap_or_default())
}

pub async fn add(app: &App<'_>, request: Request, slug: &str) -> Result<Response, ApiError> {
    let caller = app.caller(request.headers()).await?;
    let text = read_body(&read_json(request, shared::http::DEFAULT_BODY_LIMIT).await?)?;
    if !is_slug(slug) {
        return Err(not_found());
    }
    let author = app.caller_author(&caller).await?;

    let now = shared::time::now_micros();
    let mut attempt = 1;
    let (comment, event) = loop {
        let comment = Comment {
            id: shared::ids::small_id(),
            author_id: caller.user_id.clone(),
            body: text.clone(),
            created_at: now,
            updated_at: now,
        };
        let outcome = app
            .db
            .transaction(async |tx| {
                let (article, _) = store::summaries_by_slug(tx, &[slug.to_string()])
                    .await?
                    .into_iter()
                    .next()
                    .ok_or_else(not_found)?;
                store::insert_comment(tx, &article.id, &comment).await.map_err(|error| match error.code() {
                    Some(codes::DUPLICATE_KEY) => ApiError::Conflict("comment id taken".into()),
                    // The article was deleted between the read and the insert
                    // (or, far less likely, the caller's author row).
                    Some(codes::FOREIGN_KEY_MISSING) => not_found(),
                    _ => error.into(),
                })?;
                Ok(events::comment_created(&app.outbox, tx, &article, comment.id, &caller.user_id).await?)
            })
            .await;
        match outcome {
            Ok(event) => break (comment, event),
            Err(ApiError::Conflict(_)) if attempt < ID_ATTEMPTS => attempt += 1,
            Err(error) => return Err(error),
        }
    };
    app.publish(&[event]).await;
    Ok(no_store(json_response(StatusCode::OK, &json!({ "comment": comment_json(&comment, &author, false) }))))
}

pub async fn delete(app: &App<'_>, request: Request, slug: &str, id: &str) -> Result<Response, ApiError> {
    let caller = app.caller(request.headers()).await?;
    let comment_not_found = || ApiError::NotFound("comment not found".into());
    // Digits only: `parse` would also accept a leading `+`.
    let digits = !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit());
    let id: u64 = match id.parse() {
        Ok(id) if digits && is_slug(slug) && id < shared::ids::SMALL_ID_LIMIT => id,
        _ => return Err(comment_not_found()),
    };
    let event = app
        .db
        .transaction(async |tx| {
            let (author_id, article_id) = store::lock_comment(tx, slug, id).await?.ok_or_else(comment_not_found)?;
            if author_id != caller.user_id && !caller.has_role(ROLE_ADMIN) {
                return Err(ApiError::Forbidden("only the comment's author or an admin may delete it".into()));
            }
            store::delete_comment(tx, id).await?;
            Ok(events::comment_deleted(&app.outbox, tx, &article_id, id).await?)
        })
        .await?;
    app.publish(&[event]).await;
    Ok(no_content())
}
