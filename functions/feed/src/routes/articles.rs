//! Articles: `POST /api/articles`, `GET|PUT|DELETE /api/articles/:slug`.
//!
//! Only the author changes an article; the author or an admin deletes it.
//! A slug is made from the title (see [`slug_candidate`]), is unique, and
//! changes when a changed title gives another one.

use serde_json::{Value, json};
use shared::ApiError;
use shared::auth::{Identity, ROLE_ADMIN};
use shared::http::{Response, json as json_response, no_content, no_store, read_json};
use shared::json::{Fields, Update};
use shared::text::{canonical, is_slug, normalised_key, slug_base};
use spin_sdk::http::{Request, StatusCode};

use crate::app::App;
use crate::cache::Dependency;
use crate::store::{self, Article, ArticleRow};
use crate::view;

/// Limits on an article's fields, in characters.
pub const TITLE_MAX: usize = 200;
pub const DESCRIPTION_MAX: usize = 1000;
pub const BODY_MAX: usize = 65_536;
pub const TAGS_MAX: usize = 10;
pub const TAG_MAX: usize = 32;
/// The largest request body the article routes read: room for a body of
/// [`BODY_MAX`] characters of four UTF-8 bytes each, plus the other fields.
pub const REQUEST_LIMIT: usize = 320 * 1024;
/// How many slugs a write tries before giving up (each retry adds a random suffix).
const SLUG_ATTEMPTS: u32 = 4;

/// Fields the API returns that front ends often send back with an edit.
/// They are ignored, never applied: the server owns them.
const READ_ONLY_FIELDS: [&str; 6] = ["slug", "createdAt", "updatedAt", "favorited", "favoritesCount", "author"];
const WRITABLE_FIELDS: [&str; 4] = ["title", "description", "body", "tagList"];

pub fn not_found() -> ApiError {
    ApiError::NotFound("article not found".into())
}

/// The writable fields of a create or update request, checked and normalised.
#[derive(Default)]
struct Input {
    title: Option<String>,
    description: Option<String>,
    body: Option<String>,
    tags: Option<Vec<String>>,
}

/// Reads one text field: required on create, optional (but never `null`)
/// on update. `trim` removes surrounding white space before checking.
fn text_field(fields: &mut Fields, name: &str, creating: bool, max: usize, trim: bool) -> Option<String> {
    let value = if creating {
        fields.required_string(name)
    } else {
        match fields.optional_string(name) {
            Update::Absent => None,
            Update::Null => {
                fields.errors.add(name, "can't be blank");
                None
            }
            Update::Set(value) => Some(value),
        }
    }?;
    let value = if trim { canonical(&value) } else { value };
    let problem = if value.trim().is_empty() {
        Some("can't be blank".to_string())
    } else if value.chars().count() > max {
        Some(format!("is too long (maximum is {max} characters)"))
    } else if trim && value.chars().any(char::is_control) {
        Some("must not contain control characters".to_string())
    } else {
        None
    };
    match problem {
        Some(problem) => {
            fields.errors.add(name, problem);
            None
        }
        None => Some(value),
    }
}

/// Normalises tags: trimmed, lower case (the normalised key), duplicates
/// dropped keeping the first, order kept.
fn read_tags(fields: &mut Fields) -> Option<Vec<String>> {
    let raw = match fields.optional_string_list("tagList") {
        Update::Absent => return None,
        Update::Null => Vec::new(),
        Update::Set(tags) => tags,
    };
    let mut tags: Vec<String> = Vec::with_capacity(raw.len());
    for tag in &raw {
        let tag = normalised_key(&canonical(tag));
        let problem = if tag.is_empty() {
            Some("must not contain blank tags".to_string())
        } else if tag.chars().count() > TAG_MAX {
            Some(format!("has a tag that is too long (maximum is {TAG_MAX} characters)"))
        } else if tag.chars().any(char::is_control) {
            Some("has a tag with control characters".to_string())
        } else {
            None
        };
        if let Some(problem) = problem {
            fields.errors.add("tagList", problem);
            return None;
        }
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    if tags.len() > TAGS_MAX {
        fields.errors.add("tagList", format!("has too many tags (maximum is {TAGS_MAX})"));
        return None;
    }
    Some(tags)
}

fn read_input(body: &Value, creating: bool) -> Result<Input, ApiError> {
    let mut fields = shared::json::wrapped(body, "article")?;
    let mut allowed = WRITABLE_FIELDS.to_vec();
    allowed.extend(READ_ONLY_FIELDS);
    fields.reject_unknown(&allowed);
    let input = Input {
        title: text_field(&mut fields, "title", creating, TITLE_MAX, true),
        description: text_field(&mut fields, "description", creating, DESCRIPTION_MAX, true),
        body: text_field(&mut fields, "body", creating, BODY_MAX, false),
        tags: read_tags(&mut fields),
    };
    let sent_any = WRITABLE_FIELDS.iter().any(|field| fields.contains(field));
    if !creating && !sent_any {
        fields.errors.add("article", "must contain at least one of title, description, body, tagList");
    }
    fields.finish()?;
    Ok(input)
}

/// Picks the slug to try on attempt `attempt` (from 0): the title's slug
/// base first, then the base with a random suffix. A base that is empty
/// (no Latin letters or digits) becomes `article`, and `feed` (the route
/// `/api/articles/feed`) always gets a suffix.
fn slug_candidate(title: &str, attempt: u32) -> String {
    let base = slug_base(title);
    if attempt == 0 && !base.is_empty() && base != "feed" {
        return base;
    }
    let base = if base.is_empty() { "article".to_string() } else { base };
    let mut suffix = [0u8; 6];
    shared::ids::random_bytes(&mut suffix);
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let suffix: String = suffix.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect();
    format!("{base}-{suffix}")
}

/// Maps a duplicate slug to a conflict the caller retries with another
/// slug, and a missing author row (a foreign-key failure) to a 401.
fn slug_taken(error: shared::db::DbError) -> ApiError {
    if error.duplicate_key() == Some("articles_slug") {
        ApiError::Conflict("an article with this slug exists".into())
    } else if error.code() == Some(shared::db::codes::FOREIGN_KEY_MISSING) {
        crate::app::unknown_user()
    } else {
        error.into()
    }
}

/// Renders one article for `viewer`, with body, author block and flags.
async fn article_response(app: &App<'_>, viewer: Option<&Identity>, article: &Article, status: StatusCode) -> Result<Response, ApiError> {
    let mut authors = view::authors(app, &[article.author_id.as_str()]).await?;
    let author = authors.remove(&article.author_id).ok_or_else(not_found)?;
    let flags = view::flags(app, viewer, &[article]).await?;
    let body = json!({
        "article": view::article_json(
            article,
            &author,
            flags.favorited.contains(&article.id),
            flags.following.contains(&article.author_id),
        )
    });
    let response = json_response(status, &body);
    Ok(if viewer.is_some() { no_store(response) } else { response })
}

pub async fn get(app: &App<'_>, request: Request, slug: &str) -> Result<Response, ApiError> {
    let viewer = app.optional_caller(request.headers()).await?;
    if !is_slug(slug) {
        return Err(not_found());
    }
    let cache = app.cache();
    let key = cache.key(&format!("article:{slug}"), &[Dependency::Article(slug)]).await;
    let article = match cache.get::<Article>(key.as_deref()).await {
        Some(article) => article,
        None => {
            let article = store::article_by_slug(&app.db, slug).await?.ok_or_else(not_found)?;
            cache.put(key.as_deref(), &article).await;
            article
        }
    };
    article_response(app, viewer.as_ref(), &article, StatusCode::OK).await
}

pub async fn create(app: &App<'_>, request: Request) -> Result<Response, ApiError> {
    let caller = app.caller(request.headers()).await?;
    let input = read_input(&read_json(request, REQUEST_LIMIT).await?, true)?;
    let (Some(title), Some(description), Some(body)) = (input.title, input.description, input.body) else {
        unreachable!("read_input requires every field on create")
    };
    let tags = input.tags.unwrap_or_default();
    app.caller_author(&caller).await?;

    let now = shared::time::now_micros();
    let id = shared::ids::uuid_v7();
    let mut attempt = 0;
    let slug = loop {
        let slug = slug_candidate(&title, attempt);
        let row = ArticleRow {
            id: &id,
            slug: &slug,
            author_id: &caller.user_id,
            title: &title,
            description: &description,
            body: &body,
            tags: &tags,
            created_at: now,
            updated_at: now,
        };
        let inserted = app
            .db
            .transaction(async |tx| {
                store::insert_article(tx, &row).await.map_err(slug_taken)?;
                Ok(store::insert_tags(tx, &id, &tags).await?)
            })
            .await;
        match inserted {
            Ok(()) => break slug,
            Err(ApiError::Conflict(_)) if attempt + 1 < SLUG_ATTEMPTS => attempt += 1,
            Err(error) => return Err(error),
        }
    };

    let cache = app.cache();
    cache.invalidate(Dependency::ArticleSet).await;
    cache.invalidate(Dependency::ListContent).await;
    if !tags.is_empty() {
        cache.invalidate(Dependency::Tags).await;
    }
    let article = Article {
        id,
        slug,
        author_id: caller.user_id.clone(),
        title,
        description,
        body: Some(body),
        tag_list: tags,
        favorites_count: 0,
        created_at: now,
        updated_at: now,
    };
    article_response(app, Some(&caller), &article, StatusCode::CREATED).await
}

pub async fn update(app: &App<'_>, request: Request, slug: &str) -> Result<Response, ApiError> {
    let caller = app.caller(request.headers()).await?;
    let input = read_input(&read_json(request, REQUEST_LIMIT).await?, false)?;
    if !is_slug(slug) {
        return Err(not_found());
    }

    let now = shared::time::now_micros();
    let mut attempt = 0;
    let (before, after) = loop {
        let outcome = app
            .db
            .transaction(async |tx| {
                let before = store::lock_article(tx, slug).await?.ok_or_else(not_found)?;
                if before.author_id != caller.user_id {
                    return Err(ApiError::Forbidden("only the author may change this article".into()));
                }
                let mut after = before.clone();
                if let Some(title) = &input.title
                    && slug_base(title) != slug_base(&before.title)
                {
                    after.slug = slug_candidate(title, attempt);
                }
                after.title = input.title.clone().unwrap_or(after.title);
                after.description = input.description.clone().unwrap_or(after.description);
                after.body = input.body.clone().or(after.body);
                after.tag_list = input.tags.clone().unwrap_or(after.tag_list);
                after.updated_at = now;
                let row = ArticleRow {
                    id: &after.id,
                    slug: &after.slug,
                    author_id: &after.author_id,
                    title: &after.title,
                    description: &after.description,
                    body: after.body.as_deref().unwrap_or_default(),
                    tags: &after.tag_list,
                    created_at: after.created_at,
                    updated_at: now,
                };
                store::update_article(tx, &row).await.map_err(slug_taken)?;
                if after.tag_list != before.tag_list {
                    store::replace_tags(tx, &after.id, &after.tag_list).await?;
                }
                Ok((before, after))
            })
            .await;
        match outcome {
            Ok(pair) => break pair,
            Err(ApiError::Conflict(_)) if attempt + 1 < SLUG_ATTEMPTS => attempt += 1,
            Err(error) => return Err(error),
        }
    };

    let cache = app.cache();
    cache.invalidate(Dependency::Article(&before.slug)).await;
    if after.slug != before.slug {
        cache.invalidate(Dependency::Article(&after.slug)).await;
    }
    cache.invalidate(Dependency::ListContent).await;
    if after.tag_list != before.tag_list {
        cache.invalidate(Dependency::Tags).await;
    }
    article_response(app, Some(&caller), &after, StatusCode::OK).await
}

pub async fn delete(app: &App<'_>, request: Request, slug: &str) -> Result<Response, ApiError> {
    let caller = app.caller(request.headers()).await?;
    if !is_slug(slug) {
        return Err(not_found());
    }
    let article = app
        .db
        .transaction(async |tx| {
            let article = store::lock_article(tx, slug).await?.ok_or_else(not_found)?;
            if article.author_id != caller.user_id && !caller.has_role(ROLE_ADMIN) {
                return Err(ApiError::Forbidden("only the author or an admin may delete this article".into()));
            }
            store::delete_article(tx, &article.id).await?;
            Ok(article)
        })
        .await?;

    let cache = app.cache();
    cache.invalidate(Dependency::Article(&article.slug)).await;
    cache.invalidate(Dependency::ArticleSet).await;
    cache.invalidate(Dependency::ListContent).await;
    if !article.tag_list.is_empty() {
        cache.invalidate(Dependency::Tags).await;
    }
    Ok(no_content())
}
