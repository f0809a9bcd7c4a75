//! The events feed consumes and publishes.
//!
//! **Consumed** from profiles (`POST /internal/feed/events`, and resync):
//! `user.*` keeps the `authors` read model and the token versions
//! (`shared::revocation`); `follow.*` keeps `follows`. A deleted user's
//! articles, comments and favourites are removed with their author row.
//!
//! **Published** through the outbox, for notifications:
//! - `comment.created` (aggregate `comment`, id = the comment id in decimal),
//!   payload `{comment_id, article_id, article_slug, article_author_id, author_id}`;
//!   `comment.deleted`, payload `{comment_id, article_id}`.
//! - `favorite.created` / `favorite.deleted` (aggregate `favorite`, id =
//!   `<user id>:<article id>`), payload `{user_id, article_id, article_slug, article_author_id}`.

use std::cell::RefCell;

use serde::Deserialize;
use serde_json::json;
use shared::ApiError;
use shared::db::{DbError, Tx};
use shared::events::{Event, Outbox, Projection};
use shared::kv::Kv;
use shared::revocation;

use crate::cache::{Cache, Dependency};
use crate::store::{self, Article, Author};

/// The aggregates of profiles that feed keeps.
pub const USER_EVENTS: (&str, &str) = revocation::USER_EVENTS;
pub const FOLLOW_EVENTS: (&str, &str) = ("profiles", "follow");

#[derive(Deserialize)]
struct UserPayload {
    id: String,
    username: String,
    #[serde(default)]
    bio: String,
    #[serde(default)]
    image: String,
}

#[derive(Deserialize)]
struct FollowPayload {
    follower_id: String,
    followee_id: String,
}

fn payload<T: serde::de::DeserializeOwned>(event: &Event) -> Result<T, ApiError> {
    serde_json::from_value(event.payload.clone())
        .map_err(|_| ApiError::invalid("payload", format!("is not a valid `{}` payload", event.kind)))
}

/// Feed's read model of profiles' users and follows.
pub struct ReadModel<'a> {
    cache: Cache<'a>,
    kv: &'a Kv,
    /// Slugs whose cached entries the event being applied made stale.
    stale_slugs: RefCell<Vec<String>>,
}

impl<'a> ReadModel<'a> {
    pub fn new(kv: &'a Kv) -> Self {
        Self { cache: Cache::new(kv), kv, stale_slugs: RefCell::new(Vec::new()) }
    }
}

impl Projection for ReadModel<'_> {
    fn subscriptions(&self) -> &'static [(&'static str, &'static str)] {
        &[USER_EVENTS, FOLLOW_EVENTS]
    }

    async fn apply(&self, tx: &Tx<'_>, event: &Event) -> Result<(), ApiError> {
        let now = shared::time::now_micros();
        if event.aggregate_type == USER_EVENTS.1 {
            revocation::apply(tx, event).await?;
            if event.is_deletion() {
                let slugs = store::slugs_touched_by(tx, &event.aggregate_id).await?;
                store::delete_author(tx, &event.aggregate_id).await?;
                store::delete_follows_of(tx, &event.aggregate_id).await?;
                *self.stale_slugs.borrow_mut() = slugs;
            } else {
                let user: UserPayload = payload(event)?;
                if user.id != event.aggregate_id {
                    return Err(ApiError::invalid("payload", "names another user than the aggregate"));
                }
                let key = shared::text::normalised_key(&user.username);
                let author = Author { id: user.id, username: user.username, bio: user.bio, image: user.image };
                store::upsert_author(tx, &author, &key, now).await?;
            }
        } else {
            let follow: FollowPayload = payload(event)?;
            store::set_follow(tx, &follow.follower_id, &follow.followee_id, !event.is_deletion()).await?;
        }
        Ok(())
    }

    async fn applied(&self, event: &Event) {
        if event.aggregate_type == USER_EVENTS.1 {
            revocation::cache(self.kv, event).await;
            self.cache.invalidate(Dependency::Author(&event.aggregate_id)).await;
            if event.is_deletion() {
                let slugs = std::mem::take(&mut *self.stale_slugs.borrow_mut());
                for slug in &slugs {
                    self.cache.invalidate(Dependency::Article(slug)).await;
                }
                self.cache.invalidate(Dependency::ArticleSet).await;
                self.cache.invalidate(Dependency::ListContent).await;
                self.cache.invalidate(Dependency::Tags).await;
                self.cache.invalidate(Dependency::Follows(&event.aggregate_id)).await;
            }
        } else if let Ok(follow) = payload::<FollowPayload>(event) {
            self.cache.invalidate(Dependency::Follows(&follow.follower_id)).await;
        }
    }
}

// ---- published ----

pub const COMMENT: &str = "comment";
pub const FAVORITE: &str = "favorite";

pub async fn comment_created(
    outbox: &Outbox,
    tx: &Tx<'_>,
    article: &Article,
    comment_id: u64,
    author_id: &str,
) -> Result<Event, DbError> {
    let payload = json!({
        "comment_id": comment_id,
        "article_id": article.id,
        "article_slug": article.slug,
        "article_author_id": article.author_id,
        "author_id": author_id,
    });
    outbox.record(tx, "comment.created", COMMENT, &comment_id.to_string(), payload).await
}

pub async fn comment_deleted(outbox: &Outbox, tx: &Tx<'_>, article_id: &str, comment_id: u64) -> Result<Event, DbError> {
    let payload = json!({ "comment_id": comment_id, "article_id": article_id });
    outbox.record(tx, "comment.deleted", COMMENT, &comment_id.to_string(), payload).await
}

/// Records `favorite.created` or, when `favorited` is false, `favorite.deleted`.
pub async fn favorite_changed(
    outbox: &Outbox,
    tx: &Tx<'_>,
    article: &Article,
    user_id: &str,
    favorited: bool,
) -> Result<Event, DbError> {
    let kind = if favorited { "favorite.created" } else { "favorite.deleted" };
    let payload = json!({
        "user_id": user_id,
        "article_id": article.id,
        "article_slug": article.slug,
        "article_author_id": article.author_id,
    });
    outbox.record(tx, kind, FAVORITE, &format!("{user_id}:{}", article.id), payload).await
}
