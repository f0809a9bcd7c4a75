//! The events notifications consumes, and what each does to the inbox.
//!
//! From **profiles**: `user.*` keeps the `users` read model (actors' names)
//! and the token versions (`shared::revocation`). A deleted user's
//! notifications, choices and unsent emails go with it. `email.*` keeps each
//! user's address and whether it is verified. `email_verification.requested`
//! queues the verification link. `follow.created` notifies the followed user.
//!
//! From **feed**: `comment.created` and `favorite.created` notify the
//! article's author. From **payments**: `tip.received` notifies the
//! recipient, `top_up.succeeded` and `top_up.failed` the user who paid.
//!
//! A `*.deleted` event of a follow, comment or favourite removes the
//! notification its creation made, so the inbox shows what is still true.
//! A user's own actions notify no one. Each notification is checked
//! against the recipient's preferences (`preferences.rs`) before anything is
//! stored or queued. Every event applies once: `shared::events` records its
//! id and compares the aggregate's version in the same transaction.
//!
//! Only profiles' users and addresses are rebuilt by resync. Replaying
//! follows, comments or payments would notify people again about the past.

use std::cell::RefCell;

use serde::Deserialize;
use serde_json::{Value, json};
use shared::ApiError;
use shared::config::Secret;
use shared::db::Tx;
use shared::events::{Event, Projection};
use shared::kv::Kv;
use shared::revocation;

use crate::cache;
use crate::email::{self, Message, NewEmail};
use crate::preferences::{self, Preferences};
use crate::store::{self, NewNotification};
use crate::unsubscribe;

const USERS: (&str, &str) = revocation::USER_EVENTS;
const EMAILS: (&str, &str) = ("profiles", "email");
const VERIFICATIONS: (&str, &str) = ("profiles", "email_verification");
const FOLLOWS: (&str, &str) = ("profiles", "follow");
const COMMENTS: (&str, &str) = ("feed", "comment");
const FAVORITES: (&str, &str) = ("feed", "favorite");
const PAYMENTS: (&str, &str) = ("payments", "payment");

/// The settings the email messages read from the component's variables.
pub struct EmailSettings {
    pub public_base_url: String,
    pub verification_url: String,
    pub unsubscribe_key: Secret,
}

impl EmailSettings {
    pub async fn load() -> Result<Self, ApiError> {
        Ok(Self {
            public_base_url: shared::config::required("public_base_url").await?,
            verification_url: shared::config::required("verification_url").await?,
            unsubscribe_key: shared::config::required_secret("unsubscribe_key").await?,
        })
    }
}

/// Notifications' read model and inbox, as a consumer of the three producers.
pub struct Inbox<'a> {
    kv: &'a Kv,
    settings: EmailSettings,
    /// Users whose unread count the event being applied changed.
    touched: RefCell<Vec<String>>,
}

impl<'a> Inbox<'a> {
    pub async fn load(kv: &'a Kv) -> Result<Self, ApiError> {
        Ok(Self { kv, settings: EmailSettings::load().await?, touched: RefCell::new(Vec::new()) })
    }
}

fn payload<T: serde::de::DeserializeOwned>(event: &Event) -> Result<T, ApiError> {
    serde_json::from_value(event.payload.clone())
        .map_err(|_| ApiError::invalid("payload", format!("is not a valid `{}` payload", event.kind)))
}

#[derive(Deserialize)]
struct UserPayload {
    id: String,
    username: String,
}

#[derive(Deserialize)]
struct AddressPayload {
    user_id: String,
    email: String,
    verified: bool,
}

#[derive(Deserialize)]
struct VerificationPayload {
    user_id: String,
    email: String,
    token: String,
    expires_at: String,
}

#[derive(Deserialize)]
struct FollowPayload {
    follower_id: String,
    followee_id: String,
}

#[derive(Deserialize)]
struct CommentPayload {
    comment_id: u64,
    article_slug: String,
    article_author_id: String,
    author_id: String,
}

#[derive(Deserialize)]
struct FavoritePayload {
    user_id: String,
    article_slug: String,
    article_author_id: String,
}

#[derive(Deserialize)]
struct TipPayload {
    from_user_id: String,
    to_user_id: String,
    amount_minor: i64,
    currency: String,
    article_slug: Option<String>,
}

#[derive(Deserialize)]
struct TopUpPayload {
    user_id: String,
    amount_minor: i64,
    currency: String,
}

/// The notification an event calls for, before preferences are checked.
struct Candidate {
    recipient: String,
    actor: Option<String>,
    kind: &'static str,
    data: Value,
}

impl Projection for Inbox<'_> {
    fn subscriptions(&self) -> &'static [(&'static str, &'static str)] {
        &[USERS, EMAILS, VERIFICATIONS, FOLLOWS, COMMENTS, FAVORITES, PAYMENTS]
    }

    fn resyncs(&self) -> &'static [(&'static str, &'static str)] {
        &[USERS, EMAILS]
    }

    async fn apply(&self, tx: &Tx<'_>, event: &Event) -> Result<(), ApiError> {
        let now = shared::time::now_micros();
        let key = (event.producer.as_str(), event.aggregate_type.as_str());
        if key == USERS {
            revocation::apply(tx, event).await?;
            if event.is_deletion() {
                store::forget_user(tx, &event.aggregate_id).await?;
            } else {
                let user: UserPayload = payload(event)?;
                if user.id != event.aggregate_id {
                    return Err(ApiError::invalid("payload", "names another user than the aggregate"));
                }
                store::upsert_user(tx, &user.id, &user.username, now).await?;
            }
            return Ok(());
        }
        if key == EMAILS {
            if event.is_deletion() {
                store::delete_address(tx, &event.aggregate_id).await?;
            } else {
                let address: AddressPayload = payload(event)?;
                if address.user_id != event.aggregate_id {
                    return Err(ApiError::invalid("payload", "names another user than the aggregate"));
                }
                store::upsert_address(tx, &address.user_id, &address.email, address.verified, now).await?;
                // A link to an address already verified, or no longer the user's, has no use.
                email::drop_stale_verifications(tx, &address.user_id, &address.email, address.verified).await?;
            }
            return Ok(());
        }
        if key == VERIFICATIONS {
            return self.queue_verification(tx, payload(event)?, now).await;
        }

        let source = format!("{}:{}:{}", event.producer, event.aggregate_type, event.aggregate_id);
        if event.is_deletion() {
            return self.remove(tx, &source).await;
        }
        let Some(candidate) = candidate_for(event)? else { return Ok(()) };
        self.notify(tx, candidate, &source, now).await
    }

    async fn applied(&self, event: &Event) {
        revocation_cache(self.kv, event).await;
        let touched = std::mem::take(&mut *self.touched.borrow_mut());
        for user_id in touched {
            cache::invalidate_unread(self.kv, &user_id).await;
        }
    }
}

async fn revocation_cache(kv: &Kv, event: &Event) {
    if (event.producer.as_str(), event.aggregate_type.as_str()) == USERS {
        revocation::cache(kv, event).await;
    }
}

/// Maps an event that creates something onto the notification it calls
/// for; `None` for an event without one.
fn candidate_for(event: &Event) -> Result<Option<Candidate>, ApiError> {
    let key = (event.producer.as_str(), event.aggregate_type.as_str());
    let candidate = if key == FOLLOWS {
        let follow: FollowPayload = payload(event)?;
        Candidate { recipient: follow.followee_id, actor: Some(follow.follower_id), kind: "follow", data: json!({}) }
    } else if key == COMMENTS {
        let comment: CommentPayload = payload(event)?;
        Candidate {
            recipient: comment.article_author_id,
            actor: Some(comment.author_id),
            kind: "comment",
            data: json!({ "article_slug": comment.article_slug, "comment_id": comment.comment_id }),
        }
    } else if key == FAVORITES {
        let favorite: FavoritePayload = payload(event)?;
        Candidate {
            recipient: favorite.article_author_id,
            actor: Some(favorite.user_id),
            kind: "favorite",
            data: json!({ "article_slug": favorite.article_slug }),
        }
    } else if event.kind == "tip.received" {
        let tip: TipPayload = payload(event)?;
        Candidate {
            recipient: tip.to_user_id,
            actor: Some(tip.from_user_id),
            kind: "tip",
            data: json!({ "amount_minor": tip.amount_minor, "currency": tip.currency, "article_slug": tip.article_slug }),
        }
    } else if let Some(outcome) = event.kind.strip_prefix("top_up.") {
        let top_up: TopUpPayload = payload(event)?;
        let status = if outcome == "succeeded" { "succeeded" } else { "failed" };
        Candidate {
            recipient: top_up.user_id,
            actor: None,
            kind: "top_up",
            data: json!({ "amount_minor": top_up.amount_minor, "currency": top_up.currency, "status": status }),
        }
    } else {
        return Ok(None);
    };
    Ok(Some(candidate))
}

impl Inbox<'_> {
    /// Stores the notification and queues its email, as the recipient's
    /// preferences allow. Skips one's own action and a deleted recipient.
    async fn notify(&self, tx: &Tx<'_>, candidate: Candidate, source: &str, now: i64) -> Result<(), ApiError> {
        if candidate.actor.as_deref() == Some(candidate.recipient.as_str()) || store::user_deleted(tx, &candidate.recipient).await? {
            return Ok(());
        }
        let choices = Preferences::load(tx, &candidate.recipient).await?;
        if choices.enabled(candidate.kind, preferences::IN_APP) {
            store::lock_count(tx, &candidate.recipient).await?;
            let notification = NewNotification {
                user_id: &candidate.recipient,
                kind: candidate.kind,
                actor_id: candidate.actor.as_deref(),
                source,
                data: &candidate.data,
                now,
            };
            match store::insert(tx, &notification).await {
                // The same source notified this user before (an older event
                // of a recreated aggregate whose removal never arrived).
                Err(error) if error.code() == Some(shared::db::codes::DUPLICATE_KEY) => return Ok(()),
                other => other?,
            }
            store::add_to_count(tx, &candidate.recipient, 1).await?;
            self.touched.borrow_mut().push(candidate.recipient.clone());
        }
        if choices.enabled(candidate.kind, preferences::EMAIL)
            && let Some(address) = store::verified_address(tx, &candidate.recipient).await?
        {
            let actor = match &candidate.actor {
                Some(id) => store::username(tx, id).await?,
                None => None,
            };
            let link = unsubscribe::link(&self.settings.public_base_url, &self.settings.unsubscribe_key, &candidate.recipient, candidate.kind);
            let message = email::notification(candidate.kind, actor.as_deref(), &candidate.data, &link);
            let queued = NewEmail {
                user_id: &candidate.recipient,
                kind: candidate.kind,
                to: &address,
                message: &message,
                unsubscribe_url: Some(&link),
                now,
            };
            email::queue(tx, &queued).await?;
        }
        Ok(())
    }

    /// Removes what an aggregate's creation notified, for each recipient.
    async fn remove(&self, tx: &Tx<'_>, source: &str) -> Result<(), ApiError> {
        for recipient in store::recipients_of(tx, source).await? {
            store::lock_count(tx, &recipient).await?;
            if store::remove(tx, &recipient, source).await? == Some(true) {
                store::add_to_count(tx, &recipient, -1).await?;
                self.touched.borrow_mut().push(recipient);
            }
        }
        Ok(())
    }

    /// Queues a verification link: the one email an unverified address gets.
    async fn queue_verification(&self, tx: &Tx<'_>, link: VerificationPayload, now: i64) -> Result<(), ApiError> {
        if store::user_deleted(tx, &link.user_id).await? {
            return Ok(());
        }
        let token_ok = !link.token.is_empty() && link.token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !token_ok {
            return Err(ApiError::invalid("payload", "has a token with characters a link cannot carry"));
        }
        let url = format!("{}?token={}", self.settings.verification_url, link.token);
        let message: Message = email::verification(&url, &link.expires_at);
        let queued = NewEmail {
            user_id: &link.user_id,
            kind: email::VERIFICATION,
            to: &link.email,
            message: &message,
            unsubscribe_url: None,
            now,
        };
        email::queue(tx, &queued).await?;
        Ok(())
    }
}
