//! Black-box tests of the feed component: the real `feed.wasm` run by the
//! local host from the application's `spin.toml`, next to profiles, which
//! issues the tokens and pushes the user and follow events that feed keeps.
//! Everything runs against the `conduit_test_*` schemas in MariaDB that
//! `cargo xtask test` migrates.
//!
//! Tests that switch a component off, call a dispatch route or count database
//! statements hold `one_at_a_time()`. A dispatch run delivers every pending
//! event in the shared schemas, so one test's dispatch would deliver the event
//! that another test keeps pending on purpose.

use std::collections::BTreeSet;
use std::time::Duration;

use conduit_tests::{
    Host, Reply, TestUser, admin_db, app_options, dispatch, grant_admin, log_in, register_user, unique_name,
    with_and_without_reuse,
};
use mysql_async::prelude::Queryable;
use serde_json::{Value, json};
use tokio::sync::{Mutex, MutexGuard};

/// The feed component's schema under the test prefix of `tests/test.env`.
const FEED_SCHEMA: &str = "conduit_test_feed";

/// The fields of an article as `GET /api/articles/:slug` returns it. List items carry all but `body`.
const ARTICLE_FIELDS: [&str; 10] =
    ["slug", "title", "description", "body", "tagList", "createdAt", "updatedAt", "favorited", "favoritesCount", "author"];

const AUTHOR_FIELDS: [&str; 4] = ["username", "bio", "image", "following"];

/// Locks the mutex that serialises the tests which switch a component off,
/// call a dispatch route or count statements. Each keeps it for its whole run.
async fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::const_new(());
    LOCK.lock().await
}

/// Makes a lower-case word of ASCII letters and digits that no other test uses, for titles and tags.
fn word(prefix: &str) -> String {
    unique_name(prefix).to_lowercase()
}

// ---- users, through profiles ----

type User = TestUser;

async fn register(host: &Host, prefix: &str) -> User {
    register_user(host, prefix).await
}

async fn login(host: &Host, user: &User) -> String {
    log_in(host, user).await
}

async fn update_user(host: &Host, token: &str, user: Value) -> Reply {
    host.send_json("PUT", "/api/user", Some(token), &json!({ "user": user })).await
}

async fn follow(host: &Host, follower: &User, followee: &User) {
    let reply = host.send("POST", &format!("/api/profiles/{}/follow", followee.username), Some(&follower.token)).await;
    assert_eq!(reply.status, 200, "follow failed: {}", reply.text());
}

async fn unfollow(host: &Host, follower: &User, followee: &User) {
    let reply = host.send("DELETE", &format!("/api/profiles/{}/follow", followee.username), Some(&follower.token)).await;
    assert_eq!(reply.status, 200, "unfollow failed: {}", reply.text());
}

// ---- one helper per feed endpoint ----

fn valid_article(title: &str) -> Value {
    json!({"title": title, "description": "A description", "body": "The body"})
}

/// Returns a valid article for `title` with `field` set to `value`.
fn article_with(title: &str, field: &str, value: Value) -> Value {
    let mut article = valid_article(title);
    article[field] = value;
    article
}

/// Returns a valid article for `title` without `field`.
fn article_without(title: &str, field: &str) -> Value {
    let mut article = valid_article(title);
    article.as_object_mut().unwrap().remove(field);
    article
}

async fn create_article(host: &Host, token: Option<&str>, article: Value) -> Reply {
    host.send_json("POST", "/api/articles", token, &json!({ "article": article })).await
}

/// Creates an article by `author` and returns it. Panics unless the status is 201.
async fn publish(host: &Host, author: &User, title: &str, tags: &[String]) -> Value {
    let article = json!({"title": title, "description": "A description", "body": "The body", "tagList": tags});
    let reply = create_article(host, Some(&author.token), article).await;
    assert_eq!(reply.status, 201, "creating {title:?} failed: {}", reply.text());
    reply.json()["article"].clone()
}

/// Publishes `count` untagged articles by `author`, eight at a time, and returns their slugs.
async fn publish_many(host: &Host, author: &User, count: usize, title_prefix: &str) -> Vec<String> {
    let numbers: Vec<usize> = (0..count).collect();
    let mut slugs = Vec::new();
    for batch in numbers.chunks(8) {
        let titles: Vec<String> = batch.iter().map(|n| format!("{title_prefix} {n}")).collect();
        let articles = futures::future::join_all(titles.iter().map(|title| publish(host, author, title, &[]))).await;
        slugs.extend(articles.iter().map(slug_of));
    }
    slugs
}

fn slug_of(article: &Value) -> String {
    article["slug"].as_str().unwrap_or_else(|| panic!("the article has no slug: {article}")).to_string()
}

fn article_path(slug: &str) -> String {
    format!("/api/articles/{slug}")
}

async fn get_article(host: &Host, slug: &str, token: Option<&str>) -> Reply {
    host.send("GET", &article_path(slug), token).await
}

async fn update_article(host: &Host, slug: &str, token: &str, fields: Value) -> Reply {
    host.send_json("PUT", &article_path(slug), Some(token), &json!({ "article": fields })).await
}

async fn delete_article(host: &Host, slug: &str, token: &str) -> Reply {
    host.send("DELETE", &article_path(slug), Some(token)).await
}

/// Calls `GET /api/articles?<query>` (`query` without the `?`).
async fn list_articles(host: &Host, query: &str, token: Option<&str>) -> Reply {
    host.send("GET", &format!("/api/articles?{query}"), token).await
}

async fn personal_feed(host: &Host, query: &str, token: &str) -> Reply {
    host.send("GET", &format!("/api/articles/feed?{query}"), Some(token)).await
}

async fn favorite(host: &Host, slug: &str, token: &str) -> Reply {
    host.send("POST", &format!("/api/articles/{slug}/favorite"), Some(token)).await
}

async fn unfavorite(host: &Host, slug: &str, token: &str) -> Reply {
    host.send("DELETE", &format!("/api/articles/{slug}/favorite"), Some(token)).await
}

async fn add_comment(host: &Host, slug: &str, token: &str, body: &str) -> Reply {
    host.send_json("POST", &format!("/api/articles/{slug}/comments"), Some(token), &json!({"comment": {"body": body}}))
        .await
}

async fn list_comments(host: &Host, slug: &str, token: Option<&str>) -> Reply {
    host.send("GET", &format!("/api/articles/{slug}/comments"), token).await
}

async fn delete_comment(host: &Host, slug: &str, comment_id: &str, token: &str) -> Reply {
    host.send("DELETE", &format!("/api/articles/{slug}/comments/{comment_id}"), Some(token)).await
}

async fn tags(host: &Host) -> Reply {
    host.get("/api/tags").await
}

// ---- reading replies ----

/// Returns the slugs of an article list reply, in order.
fn slugs(reply: &Reply) -> Vec<String> {
    reply.json()["articles"]
        .as_array()
        .unwrap_or_else(|| panic!("the reply has no `articles` list: {}", reply.text()))
        .iter()
        .map(slug_of)
        .collect()
}

fn articles_count(reply: &Reply) -> Option<u64> {
    reply.json()["articlesCount"].as_u64()
}

/// Returns the id of the comment in a `{"comment": …}` reply, as decimal text.
fn comment_id_of(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "adding the comment failed: {}", reply.text());
    let id = reply.json()["comment"]["id"].as_u64();
    id.unwrap_or_else(|| panic!("the comment id is not an integer: {}", reply.text())).to_string()
}

/// Returns the comment bodies of a `{"comments": […]}` reply, in order.
fn comment_bodies(reply: &Reply) -> Vec<String> {
    reply.json()["comments"]
        .as_array()
        .unwrap_or_else(|| panic!("the reply has no `comments` list: {}", reply.text()))
        .iter()
        .map(|comment| comment["body"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn field_errors(reply: &Reply, field: &str) -> Vec<String> {
    let messages: Vec<String> = serde_json::from_value(reply.json()["errors"][field].clone()).unwrap_or_default();
    if field != "body" {
        return messages;
    }
    // The article's and the comment's `body` field shares its key with the
    // envelope's `body` list, whose entries read `<field> <message>`.
    messages.iter().filter_map(|m| m.strip_prefix("body ").map(str::to_string)).collect()
}

fn has_error_body(reply: &Reply) -> bool {
    reply.json()["errors"]["body"].as_array().is_some_and(|messages| !messages.is_empty())
}

/// Returns the methods of the `Allow` header.
fn allowed_methods(reply: &Reply) -> BTreeSet<String> {
    reply
        .header("allow")
        .unwrap_or_default()
        .split(',')
        .map(|method| method.trim().to_string())
        .filter(|method| !method.is_empty())
        .collect()
}

/// Checks the slug shape `^[a-z0-9]+(-[a-z0-9]+)*$`, at most 100 characters.
fn is_valid_slug(slug: &str) -> bool {
    slug.len() <= 100
        && slug
            .split('-')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

/// Checks that `slug` is `<base>-` followed by 6 characters of `[a-z0-9]`.
fn has_random_suffix(slug: &str, base: &str) -> bool {
    slug.strip_prefix(&format!("{base}-"))
        .is_some_and(|suffix| suffix.len() == 6 && suffix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

/// Percent-encodes every byte of `text`, as a client may.
fn percent_encode_every_byte(text: &str) -> String {
    text.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// Returns feed's log line for a reply, found by the reply's request id.
async fn feed_log_line(host: &Host, reply: &Reply) -> Value {
    let request_id = reply.header("x-request-id").unwrap_or_else(|| panic!("the reply has no request id: {}", reply.text()));
    let logs = host.component_logs("feed").await;
    logs.into_iter()
        .find(|line| line["request_id"] == request_id)
        .unwrap_or_else(|| panic!("feed logged no line with request id {request_id}"))
}

/// Returns the number of database statements feed logged for a reply.
async fn statements_of(host: &Host, reply: &Reply) -> u64 {
    let line = feed_log_line(host, reply).await;
    line["db_statements"].as_u64().unwrap_or_else(|| panic!("the log line has no `db_statements`: {line}"))
}

// ---- rows, read as root ----

async fn query<T: mysql_async::prelude::FromRow + Send + 'static>(statement: &str, params: Vec<String>) -> Vec<T> {
    let mut db = admin_db().await;
    let rows = db.exec(statement, params).await.unwrap();
    db.disconnect().await.unwrap();
    rows
}

/// An event row of feed's outbox.
struct FeedEvent {
    id: String,
    aggregate_type: String,
    aggregate_id: String,
    payload: Value,
}

/// Returns feed's events of `event_type` whose aggregate id matches the
/// LIKE pattern `aggregate_id`, oldest first.
async fn feed_events(event_type: &str, aggregate_id: &str) -> Vec<FeedEvent> {
    let statement = format!(
        "SELECT id, aggregate_type, aggregate_id, payload FROM {FEED_SCHEMA}.outbox_events
         WHERE type = ? AND aggregate_id LIKE ? ORDER BY occurred_at, id"
    );
    let rows: Vec<(String, String, String, String)> = query(&statement, vec![event_type.into(), aggregate_id.into()]).await;
    rows.into_iter()
        .map(|(id, aggregate_type, aggregate_id, payload)| FeedEvent {
            id,
            aggregate_type,
            aggregate_id,
            payload: serde_json::from_str(&payload).unwrap_or_else(|e| panic!("the payload is not JSON ({e}): {payload}")),
        })
        .collect()
}

/// Counts the delivery rows of a feed event for the notifications component.
async fn deliveries_to_notifications(event_id: &str) -> u64 {
    let statement =
        format!("SELECT COUNT(*) FROM {FEED_SCHEMA}.outbox_deliveries WHERE event_id = ? AND consumer = 'notifications'");
    let rows: Vec<u64> = query(&statement, vec![event_id.into()]).await;
    rows[0]
}

/// Returns an id from an event payload as text, whether it was written as a number or a string.
fn id_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        other => panic!("not an id: {other}"),
    }
}

/// Counts one article's rows in each table of the feed schema whose name
/// contains `kind` and that has an `article_id` column: (table, rows).
/// The table names are not part of the API, so they are found by pattern.
async fn article_rows(kind: &str, article_id: &str) -> Vec<(String, u64)> {
    let tables: Vec<String> = query(
        "SELECT table_name FROM information_schema.columns
         WHERE table_schema = ? AND column_name = 'article_id' AND table_name LIKE ? ORDER BY table_name",
        vec![FEED_SCHEMA.into(), format!("%{kind}%")],
    )
    .await;
    let mut counts = Vec::new();
    for table in tables {
        let statement = format!("SELECT COUNT(*) FROM {FEED_SCHEMA}.`{table}` WHERE article_id = ?");
        let rows: Vec<u64> = query(&statement, vec![article_id.into()]).await;
        counts.push((table, rows[0]));
    }
    counts
}

// ---- the article flow ----

#[tokio::test]
async fn create_returns_every_field() {
    with_and_without_reuse(app_options(), |host, reuse| async move {
        let (ann, bob) = (register(&host, "ann").await, register(&host, "bob").await);
        let unique = word("dragon");
        let title = format!("How to train your dragon {unique}");
        let tag_list = [format!("{unique}-dragons"), format!("{unique}-training")];
        let fields = json!({"title": title, "description": "Ever wonder how?", "body": "You have to believe", "tagList": tag_list});

        let created = create_article(&host, Some(&ann.token), fields).await;
        let article = created.json()["article"].clone();
        let slug = slug_of(&article);
        let anonymous = get_article(&host, &slug, None).await;
        let as_reader = get_article(&host, &slug, Some(&bob.token)).await;
        let as_author = get_article(&host, &slug, Some(&ann.token)).await;

        assert_eq!(created.status, 201, "reuse {reuse}: {}", created.text());
        for field in ARTICLE_FIELDS {
            assert!(article.get(field).is_some(), "the created article has `{field}`: {article}");
        }
        for field in AUTHOR_FIELDS {
            assert!(article["author"].get(field).is_some(), "the author block has `{field}`: {article}");
        }
        assert!(is_valid_slug(&slug), "{slug:?} is not a valid slug");
        assert_eq!(slug, format!("how-to-train-your-dragon-{unique}"), "the slug is the title, lower case, words joined by hyphens");
        assert_eq!(article["title"], title.as_str());
        assert_eq!(article["description"], "Ever wonder how?");
        assert_eq!(article["body"], "You have to believe");
        assert_eq!(article["tagList"], json!(tag_list));
        assert!(article["createdAt"].as_str().is_some_and(|t| !t.is_empty()), "createdAt is a timestamp: {article}");
        assert!(article["updatedAt"].as_str().is_some_and(|t| !t.is_empty()), "updatedAt is a timestamp: {article}");
        assert_eq!(article["favorited"], false);
        assert_eq!(article["favoritesCount"], 0);
        assert_eq!(article["author"], json!({"username": ann.username, "bio": "", "image": "", "following": false}));
        assert_eq!(anonymous.status, 200, "{}", anonymous.text());
        assert_eq!(anonymous.json()["article"], article, "an anonymous read returns the created article");
        assert_eq!(as_reader.status, 200, "{}", as_reader.text());
        assert_eq!(as_reader.json()["article"], article, "another user reads the same article");
        assert_eq!(as_author.json()["article"], article, "the author reads the same article");
    })
    .await;
}

#[tokio::test]
async fn update_by_author_changes_slug() {
    with_and_without_reuse(app_options(), |host, reuse| async move {
        let ann = register(&host, "ann").await;
        let unique = word("upd");
        let original = publish(&host, &ann, &format!("Before {unique}"), &[]).await;
        let slug = slug_of(&original);
        // Read once so that the article is cached before it changes.
        let cached = get_article(&host, &slug, None).await;
        // The wait lets the updatedAt check hold even if timestamps have a resolution of one second.
        tokio::time::sleep(Duration::from_millis(1100)).await;

        let described = update_article(&host, &slug, &ann.token, json!({"description": "Changed"})).await;
        let read_after_update = get_article(&host, &slug, None).await;
        let retitled = update_article(&host, &slug, &ann.token, json!({"title": format!("After {unique}")})).await;
        let new_slug = slug_of(&retitled.json()["article"]);
        let old_slug_read = get_article(&host, &slug, None).await;
        let new_slug_read = get_article(&host, &new_slug, None).await;
        let listed = list_articles(&host, &format!("author={}", ann.username), None).await;
        let tag = format!("{unique}-retagged");
        let retagged = update_article(&host, &new_slug, &ann.token, json!({"tagList": [tag], "body": "New body"})).await;
        let empty = update_article(&host, &new_slug, &ann.token, json!({})).await;
        let unknown = update_article(&host, &format!("no-such-article-{unique}"), &ann.token, json!({"body": "x"})).await;

        assert_eq!(cached.status, 200, "{}", cached.text());
        assert_eq!(described.status, 200, "reuse {reuse}: {}", described.text());
        let updated = described.json()["article"].clone();
        assert_eq!(updated["description"], "Changed");
        assert_eq!(updated["slug"], slug.as_str(), "the slug stays while the title does");
        assert_eq!(updated["title"], original["title"], "absent fields stay");
        assert_eq!(updated["body"], original["body"], "absent fields stay");
        assert_eq!(updated["createdAt"], original["createdAt"], "createdAt does not change");
        assert_ne!(updated["updatedAt"], original["updatedAt"], "updatedAt changes");
        assert_eq!(read_after_update.json()["article"]["description"], "Changed", "a cached article shows the update");
        assert_eq!(retitled.status, 200, "{}", retitled.text());
        assert_eq!(new_slug, format!("after-{unique}"), "a new title gives a new slug");
        assert_eq!(old_slug_read.status, 404, "the old slug is gone: {}", old_slug_read.text());
        assert_eq!(new_slug_read.status, 200, "{}", new_slug_read.text());
        assert_eq!(new_slug_read.json()["article"]["title"], format!("After {unique}"));
        assert_eq!(slugs(&listed), [new_slug.as_str()], "the list shows the article under its new slug");
        assert_eq!(retagged.status, 200, "{}", retagged.text());
        assert_eq!(retagged.json()["article"]["tagList"], json!([tag]));
        assert_eq!(retagged.json()["article"]["body"], "New body");
        assert_eq!(empty.status, 422, "an update needs at least one field: {}", empty.text());
        assert!(has_error_body(&empty), "{}", empty.text());
        assert_eq!(unknown.status, 404, "{}", unknown.text());
    })
    .await;
}

#[tokio::test]
async fn favorite_twice_counts_once() {
    with_and_without_reuse(app_options(), |host, reuse| async move {
        let (ann, bob) = (register(&host, "ann").await, register(&host, "bob").await);
        let slug = slug_of(&publish(&host, &ann, &format!("Liked {}", word("fav")), &[]).await);

        let first = favorite(&host, &slug, &bob.token).await;
        let second = favorite(&host, &slug, &bob.token).await;
        let as_favoriter = get_article(&host, &slug, Some(&bob.token)).await;
        let as_author = get_article(&host, &slug, Some(&ann.token)).await;
        let favorited_list = list_articles(&host, &format!("favorited={}", bob.username), None).await;
        let created_events = feed_events("favorite.created", &format!("{}:%", bob.id)).await;
        let first_removal = unfavorite(&host, &slug, &bob.token).await;
        let second_removal = unfavorite(&host, &slug, &bob.token).await;
        let deleted_events = feed_events("favorite.deleted", &format!("{}:%", bob.id)).await;
        let list_after = list_articles(&host, &format!("favorited={}", bob.username), None).await;

        for (what, reply) in [("first favorite", &first), ("second favorite", &second)] {
            assert_eq!(reply.status, 200, "reuse {reuse}, {what}: {}", reply.text());
            assert_eq!(reply.json()["article"]["favorited"], true, "{what}");
            assert_eq!(reply.json()["article"]["favoritesCount"], 1, "{what}: favoriting twice counts once");
        }
        assert_eq!(as_favoriter.json()["article"]["favorited"], true);
        assert_eq!(as_favoriter.json()["article"]["favoritesCount"], 1);
        assert_eq!(as_author.json()["article"]["favorited"], false, "favorited is per reader");
        assert_eq!(as_author.json()["article"]["favoritesCount"], 1);
        assert_eq!(slugs(&favorited_list), [slug.as_str()]);
        assert_eq!(created_events.len(), 1, "one favorite.created event");
        let event = &created_events[0];
        let article_id = event.aggregate_id.split_once(':').map(|(_, id)| id.to_string()).unwrap_or_default();
        assert_eq!(event.aggregate_type, "favorite");
        assert_eq!(id_text(&event.payload["user_id"]), bob.id);
        assert_eq!(id_text(&event.payload["article_id"]), article_id, "the aggregate id is <user id>:<article id>");
        assert_eq!(event.payload["article_slug"], slug.as_str());
        assert_eq!(id_text(&event.payload["article_author_id"]), ann.id);
        assert_eq!(deliveries_to_notifications(&event.id).await, 1, "the event is addressed to notifications");
        for (what, reply) in [("first removal", &first_removal), ("second removal", &second_removal)] {
            assert_eq!(reply.status, 200, "{what}: {}", reply.text());
            assert_eq!(reply.json()["article"]["favorited"], false, "{what}");
            assert_eq!(reply.json()["article"]["favoritesCount"], 0, "{what}");
        }
        assert_eq!(deleted_events.len(), 1, "one favorite.deleted event");
        assert_eq!(deleted_events[0].aggregate_id, event.aggregate_id);
        assert_eq!(articles_count(&list_after), Some(0));
    })
    .await;
}

#[tokio::test]
async fn comments_add_list_delete() {
    with_and_without_reuse(app_options(), |host, reuse| async move {
        let (ann, bob) = (register(&host, "ann").await, register(&host, "bob").await);
        let slug = slug_of(&publish(&host, &ann, &format!("Discussed {}", word("cmt")), &[]).await);

        let by_bob = add_comment(&host, &slug, &bob.token, "First!").await;
        let bob_comment_id = comment_id_of(&by_bob);
        let by_ann = add_comment(&host, &slug, &ann.token, "Thanks").await;
        let ann_comment_id = comment_id_of(&by_ann);
        let anonymous = list_comments(&host, &slug, None).await;
        follow(&host, &bob, &ann).await;
        let as_follower = list_comments(&host, &slug, Some(&bob.token)).await;
        let created_events = feed_events("comment.created", &bob_comment_id).await;
        let deleted = delete_comment(&host, &slug, &bob_comment_id, &bob.token).await;
        let after_delete = list_comments(&host, &slug, None).await;
        let deleted_events = feed_events("comment.deleted", &bob_comment_id).await;
        let deleted_again = delete_comment(&host, &slug, &bob_comment_id, &bob.token).await;

        let comment = by_bob.json()["comment"].clone();
        for field in ["id", "createdAt", "updatedAt", "body", "author"] {
            assert!(comment.get(field).is_some(), "reuse {reuse}: the comment has `{field}`: {comment}");
        }
        assert!(comment["id"].as_u64().is_some_and(|id| id < 1 << 53), "the id fits a JavaScript number: {comment}");
        assert_eq!(comment["body"], "First!");
        assert_eq!(comment["author"], json!({"username": bob.username, "bio": "", "image": "", "following": false}));
        assert_eq!(anonymous.status, 200, "{}", anonymous.text());
        assert_eq!(comment_bodies(&anonymous), ["Thanks", "First!"], "newest first");
        assert_eq!(anonymous.json()["comments"][1], comment, "the list shows the comment as created");
        let ann_in_list = &as_follower.json()["comments"][0];
        assert_eq!(id_text(&ann_in_list["id"]), ann_comment_id);
        assert_eq!(ann_in_list["author"]["following"], true, "following is per reader");
        assert_eq!(created_events.len(), 1, "one comment.created event");
        let event = &created_events[0];
        assert_eq!(event.aggregate_type, "comment");
        assert_eq!(event.aggregate_id, bob_comment_id, "the aggregate id is the comment id in decimal");
        assert_eq!(id_text(&event.payload["comment_id"]), bob_comment_id);
        assert!(event.payload.get("article_id").is_some_and(|id| !id.is_null()), "{}", event.payload);
        assert_eq!(event.payload["article_slug"], slug.as_str());
        assert_eq!(id_text(&event.payload["article_author_id"]), ann.id);
        assert_eq!(id_text(&event.payload["author_id"]), bob.id);
        assert_eq!(deliveries_to_notifications(&event.id).await, 1, "the event is addressed to notifications");
        assert_eq!(deleted.status, 204, "{}", deleted.text());
        assert!(deleted.body.is_empty(), "a 204 has no body");
        assert_eq!(comment_bodies(&after_delete), ["Thanks"]);
        assert_eq!(deleted_events.len(), 1, "one comment.deleted event");
        assert_eq!(id_text(&deleted_events[0].payload["comment_id"]), bob_comment_id);
        assert_eq!(deleted_events[0].payload["article_id"], event.payload["article_id"]);
        assert_eq!(deleted_again.status, 404, "{}", deleted_again.text());
    })
    .await;
}

#[tokio::test]
async fn comment_body_is_validated() {
    let host = Host::start(app_options());
    let ann = register(&host, "ann").await;
    let slug = slug_of(&publish(&host, &ann, &format!("Commented {}", word("cbody")), &[]).await);

    let blank = add_comment(&host, &slug, &ann.token, "   ").await;
    let empty = add_comment(&host, &slug, &ann.token, "").await;
    let missing = host.send_json("POST", &format!("/api/articles/{slug}/comments"), Some(&ann.token), &json!({"comment": {}})).await;
    let longest = add_comment(&host, &slug, &ann.token, &"é".repeat(10_000)).await;
    let too_long = add_comment(&host, &slug, &ann.token, &"x".repeat(10_001)).await;
    let listed = list_comments(&host, &slug, None).await;

    for (what, reply) in [("blank", &blank), ("empty", &empty), ("missing", &missing)] {
        assert_eq!(reply.status, 422, "{what}: {}", reply.text());
        assert_eq!(field_errors(reply, "body"), ["can't be blank"], "{what}");
    }
    assert_eq!(longest.status, 200, "10000 characters are allowed: {}", longest.text());
    assert_eq!(too_long.status, 422, "{}", too_long.text());
    assert!(!field_errors(&too_long, "body").is_empty(), "{}", too_long.text());
    assert_eq!(comment_bodies(&listed).len(), 1, "only the valid comment was stored");
}

#[tokio::test]
async fn feed_shows_follows_at_once() {
    let host = Host::start(app_options());
    let (ann, bob, cy) = (register(&host, "ann").await, register(&host, "bob").await, register(&host, "cy").await);
    let unique = word("fd");
    let older = slug_of(&publish(&host, &bob, &format!("Bob first {unique}"), &[]).await);
    let newer = slug_of(&publish(&host, &bob, &format!("Bob second {unique}"), &[]).await);
    publish(&host, &cy, &format!("Cy {unique}"), &[]).await;

    let before = personal_feed(&host, "", &ann.token).await;
    follow(&host, &ann, &bob).await;
    let after_follow = personal_feed(&host, "", &ann.token).await;
    let first_page = personal_feed(&host, "limit=1", &ann.token).await;
    let second_page = personal_feed(&host, "limit=1&offset=1", &ann.token).await;
    let bob_feed = personal_feed(&host, "", &bob.token).await;
    unfollow(&host, &ann, &bob).await;
    let after_unfollow = personal_feed(&host, "", &ann.token).await;

    assert_eq!(before.status, 200, "{}", before.text());
    assert_eq!(articles_count(&before), Some(0));
    assert_eq!(slugs(&after_follow), [newer.clone(), older.clone()], "the follow shows at once, newest first");
    assert_eq!(articles_count(&after_follow), Some(2));
    let item = &after_follow.json()["articles"][0];
    assert!(item.get("body").is_none(), "feed items have no body: {item}");
    assert_eq!(item["author"]["following"], true);
    assert_eq!(slugs(&first_page), [newer]);
    assert_eq!(articles_count(&first_page), Some(2), "the count ignores limit");
    assert_eq!(slugs(&second_page), [older]);
    assert_eq!(articles_count(&bob_feed), Some(0), "following is one-way");
    assert_eq!(articles_count(&after_unfollow), Some(0), "the unfollow shows at once");
}

#[tokio::test]
async fn delete_removes_comments_and_favorites() {
    with_and_without_reuse(app_options(), |host, reuse| async move {
        let (ann, bob) = (register(&host, "ann").await, register(&host, "bob").await);
        let slug = slug_of(&publish(&host, &ann, &format!("Short-lived {}", word("del")), &[]).await);
        assert_eq!(favorite(&host, &slug, &bob.token).await.status, 200);
        let comment_id = comment_id_of(&add_comment(&host, &slug, &bob.token, "Nice").await);
        let events = feed_events("comment.created", &comment_id).await;
        let article_id = id_text(&events.first().expect("the comment.created event exists").payload["article_id"]);
        let comments_before = article_rows("comment", &article_id).await;
        // `fav` matches both spellings, favorites and favourites.
        let favorites_before = article_rows("fav", &article_id).await;

        let deleted = delete_article(&host, &slug, &ann.token).await;
        let read = get_article(&host, &slug, None).await;
        let comments = list_comments(&host, &slug, None).await;
        let favorite_after = favorite(&host, &slug, &bob.token).await;
        let deleted_again = delete_article(&host, &slug, &ann.token).await;
        let listed = list_articles(&host, &format!("author={}", ann.username), None).await;
        let comments_after = article_rows("comment", &article_id).await;
        let favorites_after = article_rows("fav", &article_id).await;

        assert!(!comments_before.is_empty(), "the feed schema has a comment table with an article_id column");
        assert!(!favorites_before.is_empty(), "the feed schema has a favorite table with an article_id column");
        assert!(comments_before.iter().any(|(_, rows)| *rows > 0), "the comment was stored: {comments_before:?}");
        assert!(favorites_before.iter().any(|(_, rows)| *rows > 0), "the favorite was stored: {favorites_before:?}");
        assert_eq!(deleted.status, 204, "reuse {reuse}: {}", deleted.text());
        assert!(deleted.body.is_empty(), "a 204 has no body");
        assert_eq!(read.status, 404, "{}", read.text());
        assert_eq!(comments.status, 404, "{}", comments.text());
        assert_eq!(favorite_after.status, 404, "{}", favorite_after.text());
        assert_eq!(deleted_again.status, 404, "{}", deleted_again.text());
        assert_eq!(articles_count(&listed), Some(0));
        assert!(comments_after.iter().all(|(_, rows)| *rows == 0), "comment rows remain: {comments_after:?}");
        assert!(favorites_after.iter().all(|(_, rows)| *rows == 0), "favorite rows remain: {favorites_after:?}");
    })
    .await;
}

// ---- authentication and authorization ----

#[tokio::test]
async fn required_routes_reject_missing_token() {
    let host = Host::start(app_options());
    let ann = register(&host, "ann").await;
    let slug = slug_of(&publish(&host, &ann, &format!("Guarded {}", word("auth")), &[]).await);
    let comment_id = comment_id_of(&add_comment(&host, &slug, &ann.token, "Mine").await);
    let path = article_path(&slug);
    let comment_path = format!("{path}/comments/{comment_id}");

    let cases = [
        ("POST /api/articles", host.send_json("POST", "/api/articles", None, &json!({"article": valid_article("Anonymous")})).await),
        ("GET /api/articles/feed", host.send("GET", "/api/articles/feed", None).await),
        ("PUT /api/articles/:slug", host.send_json("PUT", &path, None, &json!({"article": {"body": "Changed"}})).await),
        ("DELETE /api/articles/:slug", host.send("DELETE", &path, None).await),
        ("POST /api/articles/:slug/favorite", host.send("POST", &format!("{path}/favorite"), None).await),
        ("DELETE /api/articles/:slug/favorite", host.send("DELETE", &format!("{path}/favorite"), None).await),
        (
            "POST /api/articles/:slug/comments",
            host.send_json("POST", &format!("{path}/comments"), None, &json!({"comment": {"body": "Anonymous"}})).await,
        ),
        ("DELETE /api/articles/:slug/comments/:id", host.send("DELETE", &comment_path, None).await),
    ];
    let article_after = get_article(&host, &slug, None).await;
    let comments_after = list_comments(&host, &slug, None).await;
    let listed = list_articles(&host, &format!("author={}", ann.username), None).await;

    for (route, reply) in &cases {
        assert_eq!(reply.status, 401, "{route} without a token: {}", reply.text());
    }
    assert_eq!(article_after.json()["article"]["body"], "The body", "the article is unchanged");
    assert_eq!(article_after.json()["article"]["favoritesCount"], 0);
    assert_eq!(comment_bodies(&comments_after), ["Mine"], "the comment is still there, and no other was added");
    assert_eq!(articles_count(&listed), Some(1), "no article was created");
}

#[tokio::test]
async fn optional_routes_reject_garbage_token() {
    let host = Host::start(app_options());
    let ann = register(&host, "ann").await;
    let slug = slug_of(&publish(&host, &ann, &format!("Open {}", word("opt")), &[]).await);
    let routes = ["/api/articles".to_string(), article_path(&slug), format!("{}/comments", article_path(&slug))];

    for route in &routes {
        let anonymous = host.send("GET", route, None).await;
        let signed_in = host.send("GET", route, Some(&ann.token)).await;
        let garbage = host.send("GET", route, Some("not.a.token")).await;
        let garbage_bearer = host.request("GET", route, &[("authorization", "Bearer garbage")], "").await;

        assert_eq!(anonymous.status, 200, "GET {route} without a token: {}", anonymous.text());
        assert_eq!(signed_in.status, 200, "GET {route} with a valid token: {}", signed_in.text());
        assert_eq!(garbage.status, 401, "GET {route} with a garbage token: {}", garbage.text());
        assert_eq!(garbage_bearer.status, 401, "GET {route} with a garbage bearer token: {}", garbage_bearer.text());
    }
}

#[tokio::test]
async fn non_authors_get_403() {
    let host = Host::start(app_options());
    let (ann, bob, cy) = (register(&host, "ann").await, register(&host, "bob").await, register(&host, "cy").await);
    let slug = slug_of(&publish(&host, &ann, &format!("Ann's own {}", word("own")), &[]).await);
    let ann_comment = comment_id_of(&add_comment(&host, &slug, &ann.token, "By Ann").await);
    let bob_comment = comment_id_of(&add_comment(&host, &slug, &bob.token, "By Bob").await);

    let update = update_article(&host, &slug, &bob.token, json!({"title": "Taken over"})).await;
    let delete = delete_article(&host, &slug, &bob.token).await;
    let other_users_comment = delete_comment(&host, &slug, &ann_comment, &cy.token).await;
    let article_author_on_comment = delete_comment(&host, &slug, &bob_comment, &ann.token).await;
    let article_after = get_article(&host, &slug, None).await;
    let comments_after = list_comments(&host, &slug, None).await;

    assert_eq!(update.status, 403, "another user updates: {}", update.text());
    assert_eq!(delete.status, 403, "another user deletes: {}", delete.text());
    assert_eq!(other_users_comment.status, 403, "another user deletes a comment: {}", other_users_comment.text());
    assert_eq!(
        article_author_on_comment.status,
        403,
        "the article's author deletes someone else's comment: {}",
        article_author_on_comment.text()
    );
    assert_eq!(article_after.status, 200, "the article still exists: {}", article_after.text());
    assert_eq!(article_after.json()["article"]["slug"], slug.as_str());
    assert_ne!(article_after.json()["article"]["title"], "Taken over");
    assert_eq!(comment_bodies(&comments_after), ["By Bob", "By Ann"], "both comments remain");
}

#[tokio::test]
async fn admin_deletes_any_article_and_comment() {
    // Holds the lock because it calls profiles' dispatch.
    let _serial = one_at_a_time().await;
    let host = Host::start(app_options());
    let (ann, bob, cy) = (register(&host, "ann").await, register(&host, "bob").await, register(&host, "cy").await);
    let slug = slug_of(&publish(&host, &ann, &format!("Moderated {}", word("adm")), &[]).await);
    let comment_id = comment_id_of(&add_comment(&host, &slug, &bob.token, "Spam").await);
    let before_grant = delete_article(&host, &slug, &cy.token).await;

    grant_admin(&cy.id, "spin.toml");
    let dispatched = dispatch(&host, "profiles").await;
    let admin_token = login(&host, &cy).await;
    let admin_update = update_article(&host, &slug, &admin_token, json!({"title": "Edited by an admin"})).await;
    let comment_deleted = delete_comment(&host, &slug, &comment_id, &admin_token).await;
    let comments_after = list_comments(&host, &slug, None).await;
    let article_deleted = delete_article(&host, &slug, &admin_token).await;
    let read_after = get_article(&host, &slug, None).await;

    assert_eq!(before_grant.status, 403, "without the role: {}", before_grant.text());
    assert_eq!(dispatched.status, 200, "{}", dispatched.text());
    assert_eq!(admin_update.status, 403, "admins may not update someone else's article: {}", admin_update.text());
    assert_eq!(comment_deleted.status, 204, "an admin deletes any comment: {}", comment_deleted.text());
    assert_eq!(comment_bodies(&comments_after), Vec::<String>::new());
    assert_eq!(article_deleted.status, 204, "an admin deletes any article: {}", article_deleted.text());
    assert_eq!(read_after.status, 404, "{}", read_after.text());
}

// ---- 404, 405 ----

#[tokio::test]
async fn unknown_slugs_and_paths_get_404() {
    let host = Host::start(app_options());
    let ann = register(&host, "ann").await;
    let unique = word("nf");
    let slug = slug_of(&publish(&host, &ann, &format!("Present {unique}"), &[]).await);
    let other_slug = slug_of(&publish(&host, &ann, &format!("Other {unique}"), &[]).await);
    let comment_id = comment_id_of(&add_comment(&host, &slug, &ann.token, "Here").await);
    let missing = format!("missing-{unique}");

    let cases = [
        ("GET unknown article", get_article(&host, &missing, None).await),
        ("PUT unknown article", update_article(&host, &missing, &ann.token, json!({"body": "x"})).await),
        ("DELETE unknown article", delete_article(&host, &missing, &ann.token).await),
        ("GET comments of unknown article", list_comments(&host, &missing, None).await),
        ("POST comment on unknown article", add_comment(&host, &missing, &ann.token, "x").await),
        ("POST favorite of unknown article", favorite(&host, &missing, &ann.token).await),
        ("DELETE favorite of unknown article", unfavorite(&host, &missing, &ann.token).await),
        ("unknown comment id", delete_comment(&host, &slug, "9007199254740991", &ann.token).await),
        ("non-numeric comment id", delete_comment(&host, &slug, "abc", &ann.token).await),
        ("comment of another article", delete_comment(&host, &other_slug, &comment_id, &ann.token).await),
        ("unknown sub-path", host.get(&format!("{}/unknown", article_path(&slug))).await),
        ("path below a comment", host.send("DELETE", &format!("{}/comments/{comment_id}/x", article_path(&slug)), Some(&ann.token)).await),
        ("trailing slash", host.get("/api/articles/").await),
    ];
    let comments_after = list_comments(&host, &slug, None).await;

    for (what, reply) in &cases {
        assert_eq!(reply.status, 404, "{what}: {}", reply.text());
        assert!(has_error_body(reply), "{what}: the error envelope: {}", reply.text());
    }
    assert_eq!(comment_bodies(&comments_after), ["Here"], "the comment was not deleted through another article");
}

#[tokio::test]
async fn wrong_method_gets_405_with_allow() {
    let host = Host::start(app_options());
    let ann = register(&host, "ann").await;
    let slug = slug_of(&publish(&host, &ann, &format!("Methods {}", word("mth")), &[]).await);
    let comment_id = comment_id_of(&add_comment(&host, &slug, &ann.token, "A comment").await);
    let path = article_path(&slug);
    let authorization = format!("Token {}", ann.token);
    let cases: [(&str, String, &[&str]); 7] = [
        ("DELETE", "/api/articles".into(), &["GET", "POST"]),
        ("POST", "/api/articles/feed".into(), &["GET"]),
        ("PATCH", path.clone(), &["GET", "PUT", "DELETE"]),
        ("GET", format!("{path}/favorite"), &["POST", "DELETE"]),
        ("PUT", format!("{path}/comments"), &["GET", "POST"]),
        ("GET", format!("{path}/comments/{comment_id}"), &["DELETE"]),
        ("POST", "/api/tags".into(), &["GET"]),
    ];

    for (method, route, expected) in cases {
        let reply = host.request(method, &route, &[("authorization", &authorization)], "").await;
        let allowed = allowed_methods(&reply);

        assert_eq!(reply.status, 405, "{method} {route}: {}", reply.text());
        for allowed_method in expected {
            assert!(allowed.contains(*allowed_method), "{method} {route}: Allow {allowed:?} lacks {allowed_method}");
        }
        assert!(!allowed.contains(method), "{method} {route}: Allow {allowed:?} lists the rejected method");
    }
}

// ---- validation ----

#[tokio::test]
async fn create_rejects_invalid_fields() {
    with_and_without_reuse(app_options(), |host, reuse| async move {
        let ann = register(&host, "ann").await;
        let title = format!("Invalid {}", word("inv"));
        let eleven_tags: Vec<String> = (0..11).map(|i| format!("tag{i}")).collect();
        let cases: Vec<(&str, Value, &str, Option<&str>)> = vec![
            ("empty title", article_with(&title, "title", json!("")), "title", Some("can't be blank")),
            ("whitespace title", article_with(&title, "title", json!("   ")), "title", Some("can't be blank")),
            ("null title", article_with(&title, "title", Value::Null), "title", Some("can't be blank")),
            ("missing title", article_without(&title, "title"), "title", Some("can't be blank")),
            ("empty description", article_with(&title, "description", json!("")), "description", Some("can't be blank")),
            ("missing description", article_without(&title, "description"), "description", Some("can't be blank")),
            ("empty body", article_with(&title, "body", json!("")), "body", Some("can't be blank")),
            ("missing body", article_without(&title, "body"), "body", Some("can't be blank")),
            ("numeric title", article_with(&title, "title", json!(5)), "title", Some("must be a string")),
            ("boolean description", article_with(&title, "description", json!(true)), "description", Some("must be a string")),
            ("array body", article_with(&title, "body", json!(["x"])), "body", Some("must be a string")),
            ("object title", article_with(&title, "title", json!({"text": "x"})), "title", Some("must be a string")),
            (
                "201-character title",
                article_with(&title, "title", json!("x".repeat(201))),
                "title",
                Some("is too long (maximum is 200 characters)"),
            ),
            (
                "1001-character description",
                article_with(&title, "description", json!("x".repeat(1001))),
                "description",
                Some("is too long (maximum is 1000 characters)"),
            ),
            (
                "65537-character body",
                article_with(&title, "body", json!("x".repeat(65_537))),
                "body",
                Some("is too long (maximum is 65536 characters)"),
            ),
            ("eleven tags", article_with(&title, "tagList", json!(eleven_tags)), "tagList", None),
            ("tagList a string", article_with(&title, "tagList", json!("rust")), "tagList", None),
            ("tagList an object", article_with(&title, "tagList", json!({"rust": true})), "tagList", None),
            ("numeric tag", article_with(&title, "tagList", json!(["rust", 5])), "tagList", None),
            ("null tag", article_with(&title, "tagList", json!([null])), "tagList", None),
            ("empty tag", article_with(&title, "tagList", json!([""])), "tagList", None),
            ("whitespace tag", article_with(&title, "tagList", json!(["   "])), "tagList", None),
            ("33-character tag", article_with(&title, "tagList", json!(["x".repeat(33)])), "tagList", None),
            ("unknown field admin", article_with(&title, "admin", json!(true)), "admin", Some("is not a known field")),
        ];

        for (what, article, field, message) in cases {
            let reply = create_article(&host, Some(&ann.token), article).await;

            assert_eq!(reply.status, 422, "reuse {reuse}, {what}: {}", reply.text());
            let errors = field_errors(&reply, field);
            match message {
                Some(message) => assert_eq!(errors, [message], "{what}: the errors of `{field}`"),
                None => assert!(!errors.is_empty(), "{what}: `{field}` is named: {}", reply.text()),
            }
            assert!(has_error_body(&reply), "{what}: the error envelope has a body: {}", reply.text());
        }
        let no_article = host.send_json("POST", "/api/articles", Some(&ann.token), &json!({})).await;
        let listed = list_articles(&host, &format!("author={}", ann.username), None).await;

        assert_eq!(no_article.status, 422, "a body without `article`: {}", no_article.text());
        assert_eq!(articles_count(&listed), Some(0), "no invalid article was stored");
    })
    .await;
}

#[tokio::test]
async fn create_accepts_maximum_lengths() {
    let host = Host::start(app_options());
    let ann = register(&host, "ann").await;
    let unique = word("max");
    // Non-ASCII text, so that the limits count characters, not bytes.
    let title = format!("{unique} {}", "é".repeat(200 - unique.len() - 1));
    let description = "é".repeat(1000);
    // Four-byte characters: the body is 262 144 bytes, far above the 64 KiB
    // default body limit of `shared::http`, within the 320 KiB of this route.
    let body = "𝄞".repeat(65_536);
    let tag_list: Vec<String> = (0..10).map(|i| format!("{unique}{i}{}", "x".repeat(31 - unique.len()))).collect();
    assert_eq!(title.chars().count(), 200);
    assert!(tag_list.iter().all(|tag| tag.chars().count() == 32));

    let created = create_article(
        &host,
        Some(&ann.token),
        json!({"title": title, "description": description, "body": body, "tagList": tag_list}),
    )
    .await;

    assert_eq!(created.status, 201, "every field at its maximum length: {}", created.text().chars().take(500).collect::<String>());
    let article = created.json()["article"].clone();
    assert_eq!(article["title"], title.as_str());
    assert_eq!(article["description"], description.as_str());
    assert_eq!(article["body"], body.as_str(), "the body is stored whole");
    assert_eq!(article["tagList"], json!(tag_list));
    let slug = slug_of(&article);
    assert!(is_valid_slug(&slug), "{slug:?} is not a valid slug");
}

#[tokio::test]
async fn read_only_fields_are_ignored() {
    let host = Host::start(app_options());
    let (ann, bob) = (register(&host, "ann").await, register(&host, "bob").await);
    let unique = word("ro");
    let chosen = format!("chosen-{unique}");
    let sent_time = "2000-01-01T00:00:00.000Z";
    let bob_author = json!({"username": bob.username, "bio": "forged", "image": "", "following": true});
    let mut fields = valid_article(&format!("Read only {unique}"));
    fields["slug"] = json!(chosen);
    fields["createdAt"] = json!(sent_time);
    fields["updatedAt"] = json!(sent_time);
    fields["favorited"] = json!(true);
    fields["favoritesCount"] = json!(99);
    fields["author"] = bob_author.clone();

    let created = create_article(&host, Some(&ann.token), fields).await;
    let article = created.json()["article"].clone();
    let slug = slug_of(&article);
    let chosen_read = get_article(&host, &chosen, None).await;
    let updated = update_article(
        &host,
        &slug,
        &ann.token,
        json!({"description": "Changed", "slug": format!("other-{unique}"), "author": bob_author,
               "favoritesCount": 5, "favorited": true, "createdAt": sent_time, "updatedAt": sent_time}),
    )
    .await;
    let read_after = get_article(&host, &slug, None).await;

    assert_eq!(created.status, 201, "read-only fields are ignored, not rejected: {}", created.text());
    assert_eq!(slug, format!("read-only-{unique}"), "the slug comes from the title");
    assert_eq!(chosen_read.status, 404, "the sent slug was not used");
    assert_eq!(article["author"]["username"], ann.username.as_str(), "the author is the caller");
    assert_eq!(article["author"]["bio"], "");
    assert_eq!(article["favoritesCount"], 0);
    assert_eq!(article["favorited"], false);
    assert_ne!(article["createdAt"], sent_time);
    assert_ne!(article["updatedAt"], sent_time);
    assert_eq!(updated.status, 200, "{}", updated.text());
    let after = read_after.json()["article"].clone();
    assert_eq!(after["description"], "Changed", "the writable field changed");
    assert_eq!(after["slug"], slug.as_str());
    assert_eq!(after["author"]["username"], ann.username.as_str());
    assert_eq!(after["favoritesCount"], 0);
    assert_eq!(after["favorited"], false);
    assert_eq!(after["createdAt"], article["createdAt"]);
    assert_ne!(after["updatedAt"], sent_time);
    assert_eq!(get_article(&host, &format!("other-{unique}"), None).await.status, 404);
}

#[tokio::test]
async fn update_validates_like_create() {
    let host = Host::start(app_options());
    let ann = register(&host, "ann").await;
    let original = publish(&host, &ann, &format!("Stable {}", word("val")), &[]).await;
    let slug = slug_of(&original);
    let eleven_tags: Vec<String> = (0..11).map(|i| format!("tag{i}")).collect();
    let cases: [(&str, Value, &str, Option<&str>); 8] = [
        ("empty title", json!({"title": ""}), "title", Some("can't be blank")),
        ("null body", json!({"body": null}), "body", Some("can't be blank")),
        ("numeric description", json!({"description": 7}), "description", Some("must be a string")),
        ("201-character title", json!({"title": "x".repeat(201)}), "title", Some("is too long (maximum is 200 characters)")),
        ("eleven tags", json!({"tagList": eleven_tags}), "tagList", None),
        ("numeric tag", json!({"tagList": [1]}), "tagList", None),
        ("unknown field admin", json!({"admin": true, "body": "x"}), "admin", Some("is not a known field")),
        ("valid body, blank title", json!({"body": "Never stored", "title": " "}), "title", Some("can't be blank")),
    ];

    for (what, fields, field, message) in cases {
        let reply = update_article(&host, &slug, &ann.token, fields).await;

        assert_eq!(reply.status, 422, "{what}: {}", reply.text());
        let errors = field_errors(&reply, field);
        match message {
            Some(message) => assert_eq!(errors, [message], "{what}: the errors of `{field}`"),
            None => assert!(!errors.is_empty(), "{what}: `{field}` is named: {}", reply.text()),
        }
    }
    let after = get_article(&host, &slug, None).await;
    assert_eq!(after.json()["article"], original, "no rejected update changed the article");
}

#[tokio::test]
async fn oversized_body_gets_413() {
    let host = Host::start(app_options());
    let ann = register(&host, "ann").await;
    let fields = article_with(&format!("Huge {}", word("big")), "body", json!("x".repeat(400 * 1024)));

    let reply = create_article(&host, Some(&ann.token), fields).await;
    let listed = list_articles(&host, &format!("author={}", ann.username), None).await;

    assert_eq!(reply.status, 413, "{}", reply.text());
    assert!(has_error_body(&reply), "{}", reply.text());
    assert_eq!(articles_count(&listed), Some(0), "nothing was stored");
}

#[tokio::test]
async fn non_json_content_type_gets_415() {
    let host = Host::start(app_options());
    let ann = register(&host, "ann").await;
    let slug = slug_of(&publish(&host, &ann, &format!("Typed {}", word("ct")), &[]).await);
    let authorization = format!("Token {}", ann.token);
    let article_body = json!({"article": valid_article("Sent as text")}).to_string();
    let comment_body = json!({"comment": {"body": "Sent as text"}}).to_string();
    let update_body = json!({"article": {"body": "Sent as text"}}).to_string();
    let cases = [
        ("POST", "/api/articles".to_string(), "text/plain", article_body.clone()),
        ("POST", "/api/articles".to_string(), "application/x-www-form-urlencoded", article_body),
        ("PUT", article_path(&slug), "text/plain", update_body),
        ("POST", format!("{}/comments", article_path(&slug)), "text/plain", comment_body),
    ];

    for (method, route, content_type, body) in cases {
        let headers = [("authorization", authorization.as_str()), ("content-type", content_type)];
        let reply = host.request(method, &route, &headers, body).await;

        assert_eq!(reply.status, 415, "{method} {route} as {content_type}: {}", reply.text());
        assert!(has_error_body(&reply), "{}", reply.text());
    }
    let listed = list_articles(&host, &format!("author={}", ann.username), None).await;
    let comments = list_comments(&host, &slug, None).await;
    let article = get_article(&host, &slug, None).await;
    assert_eq!(articles_count(&listed), Some(1), "no article was created");
    assert_eq!(comment_bodies(&comments), Vec::<String>::new(), "no comment was added");
    assert_eq!(article.json()["article"]["body"], "The body", "the article is unchanged");
}

// ---- slugs ----

#[tokio::test]
async fn repeated_titles_get_distinct_slugs() {
    with_and_without_reuse(app_options(), |host, reuse| async move {
        let ann = register(&host, "ann").await;
        let unique = word("same");
        let title = format!("Same title {unique}");
        let base = format!("same-title-{unique}");

        let first = slug_of(&publish(&host, &ann, &title, &[]).await);
        let second = slug_of(&publish(&host, &ann, &title, &[]).await);
        let third = slug_of(&publish(&host, &ann, &title, &[]).await);

        assert_eq!(first, base, "reuse {reuse}: the first article gets the plain slug");
        assert!(has_random_suffix(&second, &base), "{second:?} is not {base}-<6 random characters>");
        assert!(has_random_suffix(&third, &base), "{third:?} is not {base}-<6 random characters>");
        assert_ne!(second, third, "every repeat gets its own slug");
        for slug in [&first, &second, &third] {
            let read = get_article(&host, slug, None).await;
            assert_eq!(read.status, 200, "{slug}: {}", read.text());
            assert_eq!(read.json()["article"]["slug"], slug.as_str(), "each slug reads its own article");
        }
    })
    .await;
}

#[tokio::test]
async fn feed_title_never_gets_feed_slug() {
    let host = Host::start(app_options());
    let ann = register(&host, "ann").await;

    for title in ["Feed", "feed", "FEED", "Feed"] {
        let article = publish(&host, &ann, title, &[]).await;
        let slug = slug_of(&article);
        let read = get_article(&host, &slug, None).await;

        assert_ne!(slug, "feed", "{title:?} must not take the path of the personal feed");
        assert!(is_valid_slug(&slug), "{slug:?} is not a valid slug");
        assert_eq!(read.status, 200, "{slug}: {}", read.text());
        assert_eq!(read.json()["article"]["title"], title);
    }
    let personal = personal_feed(&host, "", &ann.token).await;
    assert_eq!(personal.status, 200, "{}", personal.text());
    assert!(personal.json().get("article").is_none(), "/api/articles/feed is still the personal feed: {}", personal.text());
    assert!(articles_count(&personal).is_some(), "{}", personal.text());
}

#[tokio::test]
async fn non_latin_title_gets_safe_slug() {
    let host = Host::start(app_options());
    let ann = register(&host, "ann").await;

    let mut seen = BTreeSet::new();
    for title in ["你好", "你好", "!!!", "Привет мир"] {
        let article = publish(&host, &ann, title, &[]).await;
        let slug = slug_of(&article);
        let read = get_article(&host, &slug, None).await;

        assert!(is_valid_slug(&slug), "{title:?} gave {slug:?}, which is not URL-safe");
        assert!(seen.insert(slug.clone()), "{title:?} repeats the slug {slug:?}");
        assert_eq!(read.status, 200, "{slug}: {}", read.text());
        assert_eq!(read.json()["article"]["title"], title, "the title is kept as written");
    }
    for title in ["你好", "!!!"] {
        let slug = slug_of(&publish(&host, &ann, title, &[]).await);
        assert!(slug.starts_with("article-"), "a title without usable characters gives article-<random>, not {slug:?}");
    }
}

#[tokio::test]
async fn accents_stripped_from_slug() {
    let host = Host::start(app_options());
    let ann = register(&host, "ann").await;
    let unique = word("acc");

    let brulee = slug_of(&publish(&host, &ann, &format!("Crème Brûlée {unique}"), &[]).await);
    let deja_vu = slug_of(&publish(&host, &ann, &format!("Ça déjà vu, {unique}!"), &[]).await);

    assert_eq!(brulee, format!("creme-brulee-{unique}"));
    assert_eq!(deja_vu, format!("ca-deja-vu-{unique}"));
}

#[tokio::test]
async fn long_title_slug_at_most_100() {
    let host = Host::start(app_options());
    let ann = register(&host, "ann").await;
    let unique = word("long");
    let title: String = format!("{unique} {}", "word ".repeat(40)).chars().take(200).collect();

    let slug = slug_of(&publish(&host, &ann, &title, &[]).await);
    let read = get_article(&host, &slug, None).await;

    assert!(slug.len() <= 100, "{} characters: {slug}", slug.len());
    assert!(is_valid_slug(&slug), "{slug:?} is not a valid slug (no hyphen at either end)");
    assert!(slug.starts_with(&format!("{unique}-word-")), "{slug}");
    assert_eq!(read.status, 200, "{}", read.text());
}

// ---- tags ----

#[tokio::test]
async fn tags_lowercased_and_deduplicated() {
    let host = Host::start(app_options());
    let ann = register(&host, "ann").await;
    let unique = word("tg");
    let sent = [
        format!("Rust{unique}"),
        format!("rust{unique}"),
        format!("  Wasm{unique}  "),
        format!("RUST{unique}"),
        format!("go{unique}"),
    ];
    let expected = json!([format!("rust{unique}"), format!("wasm{unique}"), format!("go{unique}")]);

    let article = publish(&host, &ann, &format!("Tagged {unique}"), &sent).await;
    let slug = slug_of(&article);
    let read = get_article(&host, &slug, None).await;
    let listed = list_articles(&host, &format!("author={}", ann.username), None).await;
    let retagged = update_article(&host, &slug, &ann.token, json!({"tagList": [format!("Zig{unique}"), format!("ZIG{unique}")]})).await;

    assert_eq!(article["tagList"], expected, "lower case, trimmed, first occurrence kept in order");
    assert_eq!(read.json()["article"]["tagList"], expected);
    assert_eq!(listed.json()["articles"][0]["tagList"], expected, "list items carry the same tags");
    assert_eq!(retagged.status, 200, "{}", retagged.text());
    assert_eq!(retagged.json()["article"]["tagList"], json!([format!("zig{unique}")]), "an update de-duplicates too");
}

#[tokio::test]
async fn tags_route_lists_used_tags() {
    let host = Host::start(app_options());
    let ann = register(&host, "ann").await;
    let unique = word("tr");
    let (alpha, beta, gamma, gone) =
        (format!("{unique}-alpha"), format!("{unique}-beta"), format!("{unique}-gamma"), format!("{unique}-gone"));
    // alpha and beta are used three times each and gamma once, so that the
    // order within this test's tags is known.
    for round in 0..3 {
        let mut tags = vec![beta.to_uppercase(), alpha.clone()];
        if round == 0 {
            tags.push(gamma.clone());
        }
        publish(&host, &ann, &format!("Tag round {round} {unique}"), &tags).await;
    }
    let deleted = slug_of(&publish(&host, &ann, &format!("Tag gone {unique}"), std::slice::from_ref(&gone)).await);
    assert_eq!(delete_article(&host, &deleted, &ann.token).await.status, 204);

    let reply = tags(&host).await;

    assert_eq!(reply.status, 200, "{}", reply.text());
    let listed: Vec<String> = serde_json::from_value(reply.json()["tags"].clone()).expect("`tags` is a list of strings");
    assert!(listed.len() <= 100, "at most 100 tags, got {}", listed.len());
    let distinct: BTreeSet<&String> = listed.iter().collect();
    assert_eq!(distinct.len(), listed.len(), "the tags are distinct");
    assert!(listed.iter().all(|tag| *tag == tag.to_lowercase()), "tags are lower case: {listed:?}");
    let position = |tag: &str| listed.iter().position(|t| t == tag);
    assert!(position(&alpha).is_some(), "{alpha} is listed");
    assert!(position(&beta).is_some(), "{beta} is listed in lower case");
    assert!(position(&alpha) < position(&beta), "equally used tags are in alphabetical order");
    if let Some(gamma_position) = position(&gamma) {
        assert!(position(&beta) < Some(gamma_position), "the more used tag comes first");
    }
    assert_eq!(position(&gone), None, "a tag of a deleted article is no longer in use");
}

#[tokio::test]
async fn tag_filter_ignores_case() {
    let host = Host::start(app_options());
    let ann = register(&host, "ann").await;
    let unique = word("tf");
    let tag = format!("Mixed{unique}");
    let tagged = slug_of(&publish(&host, &ann, &format!("Tagged {unique}"), std::slice::from_ref(&tag)).await);
    publish(&host, &ann, &format!("Untagged {unique}"), &[]).await;

    for query in [tag.clone(), tag.to_lowercase(), tag.to_uppercase()] {
        let reply = list_articles(&host, &format!("tag={query}"), None).await;

        assert_eq!(reply.status, 200, "tag={query}: {}", reply.text());
        assert_eq!(slugs(&reply), [tagged.as_str()], "tag={query}");
        assert_eq!(articles_count(&reply), Some(1), "tag={query}");
    }
}

// ---- lists ----

/// Three articles by one author, oldest first, and a reader who favorited
/// the first and the last. Each of the two tags is on two of the articles.
struct Shelf {
    author: User,
    reader: User,
    tag_of_first_two: String,
    tag_of_last_two: String,
    slugs: [String; 3],
}

async fn stock_shelf(host: &Host) -> Shelf {
    let (author, reader) = (register(host, "ann").await, register(host, "bob").await);
    let unique = word("sh");
    let (older_tag, newer_tag) = (format!("{unique}-older"), format!("{unique}-newer"));
    let both_tags = [older_tag.clone(), newer_tag.clone()];
    let first = slug_of(&publish(host, &author, &format!("Shelf first {unique}"), std::slice::from_ref(&older_tag)).await);
    let second = slug_of(&publish(host, &author, &format!("Shelf second {unique}"), &both_tags).await);
    let third = slug_of(&publish(host, &author, &format!("Shelf third {unique}"), std::slice::from_ref(&newer_tag)).await);
    for slug in [&first, &third] {
        assert_eq!(favorite(host, slug, &reader.token).await.status, 200);
    }
    Shelf { author, reader, tag_of_first_two: older_tag, tag_of_last_two: newer_tag, slugs: [first, second, third] }
}

#[tokio::test]
async fn list_filters_by_tag_author_favorited() {
    let host = Host::start(app_options());
    let shelf = stock_shelf(&host).await;
    let [first, second, third] = shelf.slugs.clone();
    let cases = [
        (format!("tag={}", shelf.tag_of_first_two), vec![second.clone(), first.clone()]),
        (format!("tag={}", shelf.tag_of_last_two), vec![third.clone(), second.clone()]),
        (format!("author={}", shelf.author.username), vec![third.clone(), second.clone(), first.clone()]),
        (format!("author={}", shelf.author.username.to_uppercase()), vec![third.clone(), second.clone(), first.clone()]),
        (format!("favorited={}", shelf.reader.username), vec![third.clone(), first.clone()]),
        (format!("favorited={}", shelf.reader.username.to_uppercase()), vec![third, first]),
        (format!("author={}", unique_name("nobody")), vec![]),
        (format!("favorited={}", unique_name("nobody")), vec![]),
    ];

    for (query, expected) in cases {
        let reply = list_articles(&host, &query, None).await;

        assert_eq!(reply.status, 200, "{query}: {}", reply.text());
        assert_eq!(slugs(&reply), expected, "{query}");
        assert_eq!(articles_count(&reply), Some(expected.len() as u64), "{query}");
    }
}

#[tokio::test]
async fn list_count_ignores_limit_and_offset() {
    let host = Host::start(app_options());
    let shelf = stock_shelf(&host).await;
    let [first, second, third] = shelf.slugs.clone();
    let author = format!("author={}", shelf.author.username);
    let cases = [
        (format!("{author}&limit=1"), vec![third.clone()]),
        (format!("{author}&limit=1&offset=1"), vec![second.clone()]),
        (format!("{author}&limit=2&offset=1"), vec![second, first.clone()]),
        (format!("{author}&offset=2"), vec![first]),
        (format!("{author}&offset=3"), vec![]),
        (format!("{author}&offset=10000"), vec![]),
        (format!("favorited={}&limit=1", shelf.reader.username), vec![third]),
    ];

    for (query, expected) in cases {
        let reply = list_articles(&host, &query, None).await;
        let total = if query.starts_with("favorited") { 2 } else { 3 };

        assert_eq!(reply.status, 200, "{query}: {}", reply.text());
        assert_eq!(slugs(&reply), expected, "{query}");
        assert_eq!(articles_count(&reply), Some(total), "{query}: the count is the total, whatever the page");
    }
}

#[tokio::test]
async fn list_newest_first_without_body() {
    let host = Host::start(app_options());
    let shelf = stock_shelf(&host).await;
    let [first, second, third] = shelf.slugs.clone();

    let anonymous = list_articles(&host, &format!("author={}", shelf.author.username), None).await;
    let as_reader = list_articles(&host, &format!("author={}", shelf.author.username), Some(&shelf.reader.token)).await;

    assert_eq!(slugs(&anonymous), [third.clone(), second, first.clone()], "newest first");
    for item in anonymous.json()["articles"].as_array().unwrap() {
        assert!(item.get("body").is_none(), "list items have no body: {item}");
        for field in ARTICLE_FIELDS.iter().filter(|field| **field != "body") {
            assert!(item.get(*field).is_some(), "list items have `{field}`: {item}");
        }
        for field in AUTHOR_FIELDS {
            assert!(item["author"].get(field).is_some(), "the author block has `{field}`: {item}");
        }
        assert_eq!(item["favorited"], false, "nobody is signed in: {item}");
    }
    let favorited: Vec<(String, bool)> = as_reader.json()["articles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| (slug_of(item), item["favorited"] == true))
        .collect();
    assert_eq!(favorited[0], (third, true), "the reader sees their own favorites");
    assert!(!favorited[1].1, "the reader did not favorite the second article");
    assert_eq!(favorited[2], (first, true));
}

#[tokio::test]
async fn query_values_are_percent_decoded() {
    let host = Host::start(app_options());
    let ann = register(&host, "ann").await;
    let unique = word("pd");
    let tag = format!("{unique} two");
    let slug = slug_of(&publish(&host, &ann, &format!("Spaced {unique}"), std::slice::from_ref(&tag)).await);
    let cases = [
        format!("tag={unique}+two"),
        format!("tag={unique}%20two"),
        format!("author={}", percent_encode_every_byte(&ann.username)),
        format!("author={}&utm_source=newsletter", ann.username),
    ];

    for query in cases {
        let reply = list_articles(&host, &query, None).await;

        assert_eq!(reply.status, 200, "{query}: {}", reply.text());
        assert_eq!(slugs(&reply), [slug.as_str()], "{query}");
    }
}

#[tokio::test]
async fn list_rejects_bad_limit_and_offset() {
    let host = Host::start(app_options());
    let ann = register(&host, "ann").await;
    let cases = [
        ("limit=0", "limit"),
        ("limit=-1", "limit"),
        ("limit=abc", "limit"),
        ("limit=1.5", "limit"),
        ("offset=-1", "offset"),
        ("offset=1.5", "offset"),
        ("offset=abc", "offset"),
        ("offset=10001", "offset"),
    ];

    for (query, field) in cases {
        let list = list_articles(&host, query, None).await;
        let feed = personal_feed(&host, query, &ann.token).await;

        assert_eq!(list.status, 422, "/api/articles?{query}: {}", list.text());
        assert!(!field_errors(&list, field).is_empty(), "/api/articles?{query} names `{field}`: {}", list.text());
        assert_eq!(feed.status, 422, "/api/articles/feed?{query}: {}", feed.text());
        assert!(!field_errors(&feed, field).is_empty(), "/api/articles/feed?{query} names `{field}`: {}", feed.text());
    }
    for query in ["limit=1", "limit=100", "offset=0", "offset=10000"] {
        let reply = list_articles(&host, query, None).await;
        assert_eq!(reply.status, 200, "/api/articles?{query} is valid: {}", reply.text());
    }
}

#[tokio::test]
async fn repeated_query_parameter_gets_422() {
    let host = Host::start(app_options());
    let ann = register(&host, "ann").await;
    let same_author_twice = format!("author={0}&author={0}", ann.username);
    let cases = [
        ("limit=1&limit=2", "limit"),
        ("offset=0&offset=0", "offset"),
        ("tag=a&tag=b", "tag"),
        (same_author_twice.as_str(), "author"),
        ("favorited=a&favorited=b", "favorited"),
    ];

    for (query, field) in cases {
        let reply = list_articles(&host, query, None).await;

        assert_eq!(reply.status, 422, "/api/articles?{query}: {}", reply.text());
        assert!(!field_errors(&reply, field).is_empty(), "/api/articles?{query} names `{field}`: {}", reply.text());
    }
    let feed = personal_feed(&host, "limit=1&limit=1", &ann.token).await;
    assert_eq!(feed.status, 422, "{}", feed.text());
    assert!(!field_errors(&feed, "limit").is_empty(), "{}", feed.text());
}

#[tokio::test]
async fn list_caps_limit_at_100() {
    let host = Host::start(app_options());
    let ann = register(&host, "ann").await;
    publish_many(&host, &ann, 101, &format!("Many {}", word("cap"))).await;

    let capped = list_articles(&host, &format!("author={}&limit=1000", ann.username), None).await;
    let rest = list_articles(&host, &format!("author={}&limit=1000&offset=100", ann.username), None).await;

    assert_eq!(capped.status, 200, "a limit above 100 is not an error: {}", capped.text());
    assert_eq!(slugs(&capped).len(), 100, "the limit is capped at 100");
    assert_eq!(articles_count(&capped), Some(101));
    assert_eq!(slugs(&rest).len(), 1);
}

// ---- the read model: authors and follows from profiles ----

#[tokio::test]
async fn profile_update_reaches_cached_article() {
    let host = Host::start(app_options());
    let ann = register(&host, "ann").await;
    let slug = slug_of(&publish(&host, &ann, &format!("Cached {}", word("pu")), &[]).await);
    assert_eq!(add_comment(&host, &slug, &ann.token, "Author's note").await.status, 200);
    for _ in 0..2 {
        assert_eq!(get_article(&host, &slug, None).await.status, 200);
    }
    let comments_before = list_comments(&host, &slug, None).await;
    let image = "https://img.example/ann.png";

    let updated = update_user(&host, &ann.token, json!({"bio": "I write about caches", "image": image})).await;
    let article = get_article(&host, &slug, None).await;
    let comments = list_comments(&host, &slug, None).await;
    let listed = list_articles(&host, &format!("author={}", ann.username), None).await;

    assert_eq!(comments_before.json()["comments"][0]["author"]["bio"], "");
    assert_eq!(updated.status, 200, "{}", updated.text());
    assert_eq!(article.json()["article"]["author"]["bio"], "I write about caches", "the cached article shows the new bio");
    assert_eq!(article.json()["article"]["author"]["image"], image);
    assert_eq!(comments.json()["comments"][0]["author"]["bio"], "I write about caches", "comments show the new bio");
    assert_eq!(comments.json()["comments"][0]["author"]["image"], image);
    assert_eq!(listed.json()["articles"][0]["author"]["bio"], "I write about caches", "list items show the new bio");
}

#[tokio::test]
async fn username_change_reaches_articles() {
    let host = Host::start(app_options());
    let ann = register(&host, "ann").await;
    let slug = slug_of(&publish(&host, &ann, &format!("Renamed {}", word("un")), &[]).await);
    assert_eq!(get_article(&host, &slug, None).await.status, 200);
    let new_name = unique_name("renamed");

    let updated = update_user(&host, &ann.token, json!({"username": new_name})).await;
    let article = get_article(&host, &slug, None).await;
    let by_new_name = list_articles(&host, &format!("author={new_name}"), None).await;
    let by_old_name = list_articles(&host, &format!("author={}", ann.username), None).await;

    assert_eq!(updated.status, 200, "{}", updated.text());
    assert_eq!(article.json()["article"]["author"]["username"], new_name.as_str());
    assert_eq!(slugs(&by_new_name), [slug]);
    assert_eq!(articles_count(&by_old_name), Some(0), "the old username no longer names an author");
}

#[tokio::test]
async fn follow_during_outage_waits_for_dispatch() {
    let _serial = one_at_a_time().await;
    let mut options = app_options();
    options.faults = true;
    let host = Host::start(options);
    let (ann, bob) = (register(&host, "ann").await, register(&host, "bob").await);
    let slug = slug_of(&publish(&host, &bob, &format!("Followed later {}", word("out")), &[]).await);

    host.set_fault("feed", "unavailable").await;
    let during = personal_feed(&host, "", &ann.token).await;
    follow(&host, &ann, &bob).await;
    host.set_fault("feed", "none").await;
    let before_dispatch = personal_feed(&host, "", &ann.token).await;
    let dispatched = dispatch(&host, "profiles").await;
    let after_dispatch = personal_feed(&host, "", &ann.token).await;

    assert_eq!(during.status, 503, "feed is switched off: {}", during.text());
    assert_eq!(before_dispatch.status, 200, "{}", before_dispatch.text());
    assert_eq!(articles_count(&before_dispatch), Some(0), "the follow has not reached feed yet");
    assert_eq!(dispatched.status, 200, "{}", dispatched.text());
    let delivered = dispatched.json()["outbox"]["delivered"].as_u64();
    assert!(delivered.is_some_and(|n| n >= 1), "dispatch delivered the follow: {}", dispatched.text());
    assert_eq!(slugs(&after_dispatch), [slug], "the follow shows after dispatch");
}

#[tokio::test]
async fn user_registered_during_outage_can_publish() {
    let _serial = one_at_a_time().await;
    let mut options = app_options();
    options.faults = true;
    let host = Host::start(options);

    host.set_fault("feed", "unavailable").await;
    let during = list_articles(&host, "", None).await;
    let cy = register(&host, "cy").await;
    host.set_fault("feed", "none").await;
    let created = create_article(&host, Some(&cy.token), valid_article(&format!("First post {}", word("late")))).await;
    let slug = slug_of(&created.json()["article"]);
    let read = get_article(&host, &slug, None).await;
    let listed = list_articles(&host, &format!("author={}", cy.username), None).await;

    assert_eq!(during.status, 503, "feed is switched off: {}", during.text());
    assert_eq!(created.status, 201, "feed fetches the unknown author from profiles: {}", created.text());
    let expected_author = json!({"username": cy.username, "bio": "", "image": "", "following": false});
    assert_eq!(created.json()["article"]["author"], expected_author);
    assert_eq!(read.json()["article"]["author"], expected_author);
    assert_eq!(slugs(&listed), [slug], "the author filter finds the new author");
}

#[tokio::test]
async fn deleted_user_leaves_nothing_behind() {
    // Holds the lock because it calls profiles' dispatch.
    let _serial = one_at_a_time().await;
    let host = Host::start(app_options());
    let (ann, bob, cy) = (register(&host, "ann").await, register(&host, "bob").await, register(&host, "cy").await);
    let anns = slug_of(&publish(&host, &ann, &format!("Leaving soon {}", word("du")), &[]).await);
    let bobs = slug_of(&publish(&host, &bob, &format!("Staying {}", word("du")), &[]).await);
    assert_eq!(favorite(&host, &bobs, &ann.token).await.status, 200);
    assert_eq!(favorite(&host, &bobs, &cy.token).await.status, 200);
    assert_eq!(add_comment(&host, &bobs, &ann.token, "Bye").await.status, 200);
    assert_eq!(add_comment(&host, &bobs, &cy.token, "Stay").await.status, 200);
    follow(&host, &ann, &bob).await;
    follow(&host, &bob, &ann).await;
    // Read twice so both articles are cached before the deletion.
    for slug in [&anns, &bobs, &anns, &bobs] {
        assert_eq!(get_article(&host, slug, None).await.status, 200);
    }

    grant_admin(&cy.id, "spin.toml");
    assert_eq!(dispatch(&host, "profiles").await.status, 200);
    let admin_token = login(&host, &cy).await;
    let deleted = host.send("DELETE", &format!("/api/admin/users/{}", ann.username), Some(&admin_token)).await;

    assert_eq!(deleted.status, 204, "{}", deleted.text());
    assert_eq!(get_article(&host, &anns, None).await.status, 404, "the deleted user's article is gone");
    let remaining = get_article(&host, &bobs, None).await.json()["article"].clone();
    assert_eq!(remaining["favoritesCount"], 1, "the deleted user's favourite no longer counts: {remaining}");
    assert_eq!(comment_bodies(&list_comments(&host, &bobs, None).await), ["Stay"]);
    assert_eq!(slugs(&personal_feed(&host, "limit=7", &bob.token).await), Vec::<String>::new(), "bob's feed lost ann");
    let authors: Vec<(String,)> = query(&format!("SELECT id FROM {FEED_SCHEMA}.authors WHERE id = ?"), vec![ann.id.clone()]).await;
    let follows: Vec<(String,)> = query(
        &format!("SELECT follower_id FROM {FEED_SCHEMA}.follows WHERE follower_id = ? OR followee_id = ?"),
        vec![ann.id.clone(), ann.id.clone()],
    )
    .await;
    assert!(authors.is_empty(), "the author row is gone");
    assert!(follows.is_empty(), "the follows of and to the deleted user are gone");
}

#[tokio::test]
async fn resync_restores_lost_read_model() {
    // Holds the lock because dispatch resyncs every user and follow.
    let _serial = one_at_a_time().await;
    let host = Host::start(app_options());
    let (ann, bob) = (register(&host, "ann").await, register(&host, "bob").await);
    assert_eq!(update_user(&host, &ann.token, json!({"bio": "Writes about Wasm"})).await.status, 200);
    let slug = slug_of(&publish(&host, &ann, &format!("Survives {}", word("rs")), &[]).await);
    follow(&host, &bob, &ann).await;

    // Lose part of the read model, as a restore from an old backup would.
    let mut db = admin_db().await;
    let follow_id = format!("{}:{}", bob.id, ann.id);
    for (statement, value) in [
        (format!("DELETE FROM {FEED_SCHEMA}.follows WHERE follower_id = ?"), bob.id.clone()),
        (format!("DELETE FROM {FEED_SCHEMA}.aggregate_state WHERE aggregate_id = ?"), follow_id),
        (format!("UPDATE {FEED_SCHEMA}.authors SET bio = 'lost' WHERE id = ?"), ann.id.clone()),
        (format!("DELETE FROM {FEED_SCHEMA}.aggregate_state WHERE aggregate_id = ?"), ann.id.clone()),
    ] {
        db.exec_drop(statement, (value,)).await.unwrap();
    }
    db.query_drop(format!("DELETE FROM {FEED_SCHEMA}.resync_state")).await.unwrap();
    db.disconnect().await.unwrap();
    // Uncached reads: a filtered list and a feed page size no earlier request used.
    let before_author = list_articles(&host, &format!("author={}", ann.username), None).await;
    let before_feed = personal_feed(&host, "limit=9", &bob.token).await;

    let dispatched = dispatch(&host, "feed").await;

    let after_author = list_articles(&host, &format!("author={}", ann.username), None).await;
    let after_feed = personal_feed(&host, "limit=8", &bob.token).await;
    assert_eq!(before_author.json()["articles"][0]["author"]["bio"], "lost", "{}", before_author.text());
    assert_eq!(slugs(&before_feed), Vec::<String>::new(), "the follow is lost");
    assert_eq!(dispatched.status, 200, "{}", dispatched.text());
    assert!(dispatched.json()["inbox"]["resynced"].as_u64().is_some_and(|n| n >= 2), "{}", dispatched.text());
    assert_eq!(after_author.json()["articles"][0]["author"]["bio"], "Writes about Wasm", "{}", after_author.text());
    assert_eq!(slugs(&after_feed), [slug.as_str()], "the follow is back");
}

#[tokio::test]
async fn author_row_gone_but_cached_gets_401() {
    let host = Host::start(app_options());
    let (ann, bob) = (register(&host, "ann").await, register(&host, "bob").await);
    let bobs = slug_of(&publish(&host, &bob, &format!("Still here {}", word("gone")), &[]).await);
    // Publishing caches Ann's author block.
    publish(&host, &ann, &format!("Cached author {}", word("gone")), &[]).await;
    // The row disappears behind the cache's back, as after a database restore.
    let mut db = admin_db().await;
    db.exec_drop(format!("DELETE FROM {FEED_SCHEMA}.authors WHERE id = ?"), (ann.id.clone(),)).await.unwrap();
    db.disconnect().await.unwrap();

    let created = create_article(&host, Some(&ann.token), valid_article(&format!("Orphan {}", word("gone")))).await;
    let favorited = favorite(&host, &bobs, &ann.token).await;

    assert_eq!(created.status, 401, "{}", created.text());
    assert_eq!(favorited.status, 401, "{}", favorited.text());
    let logs = host.component_logs("feed").await;
    assert!(logs.iter().all(|line| line["status"].as_u64().is_some_and(|s| s < 500)), "no request failed with a 5xx");
}

// ---- statement counts and the article cache ----

#[tokio::test]
async fn list_statements_ignore_page_size() {
    let _serial = one_at_a_time().await;
    let host = Host::start(app_options());
    let ann = register(&host, "ann").await;
    publish_many(&host, &ann, 25, &format!("Paged {}", word("st"))).await;

    // The author filter keeps the list out of the cache.
    let twenty = list_articles(&host, &format!("author={}&limit=20", ann.username), None).await;
    let hundred = list_articles(&host, &format!("author={}&limit=100", ann.username), None).await;
    let twenty_line = feed_log_line(&host, &twenty).await;
    let hundred_line = feed_log_line(&host, &hundred).await;

    assert_eq!(slugs(&twenty).len(), 20);
    assert_eq!(slugs(&hundred).len(), 25);
    assert_eq!(twenty_line["route"], "/api/articles");
    assert!(twenty_line["db_statements"].as_u64().is_some_and(|n| n > 0), "the filtered list reads the database: {twenty_line}");
    assert_eq!(
        twenty_line["db_statements"], hundred_line["db_statements"],
        "25 articles cost as many statements as 20: {twenty_line} {hundred_line}"
    );
}

#[tokio::test]
async fn cached_anonymous_read_needs_no_statements() {
    let _serial = one_at_a_time().await;
    let host = Host::start(app_options());
    let ann = register(&host, "ann").await;
    let slug = slug_of(&publish(&host, &ann, &format!("Popular {}", word("ca")), &[]).await);

    let first = get_article(&host, &slug, None).await;
    let second = get_article(&host, &slug, None).await;
    let line = feed_log_line(&host, &second).await;

    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(second.json(), first.json(), "the cached article is the same");
    assert_eq!(line["route"], "/api/articles/:slug");
    assert_eq!(line["db_statements"], 0, "the second anonymous read comes from the cache: {line}");
}

#[tokio::test]
async fn cached_signed_in_read_needs_one_statement() {
    let _serial = one_at_a_time().await;
    let host = Host::start(app_options());
    let (ann, bob) = (register(&host, "ann").await, register(&host, "bob").await);
    let slug = slug_of(&publish(&host, &ann, &format!("Read by many {}", word("cs")), &[]).await);
    assert_eq!(get_article(&host, &slug, None).await.status, 200);

    // The first signed-in read fills the cache of Bob's token version.
    let warm_up = get_article(&host, &slug, Some(&bob.token)).await;
    let second = get_article(&host, &slug, Some(&bob.token)).await;
    let statements = statements_of(&host, &second).await;

    assert_eq!(warm_up.status, 200, "{}", warm_up.text());
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(second.json()["article"]["author"]["username"], ann.username.as_str());
    assert!(statements <= 1, "a cached article read by a signed-in user costs {statements} statements");
}

#[tokio::test]
async fn cached_article_is_per_viewer() {
    let host = Host::start(app_options());
    let (ann, bob, cy) = (register(&host, "ann").await, register(&host, "bob").await, register(&host, "cy").await);
    let slug = slug_of(&publish(&host, &ann, &format!("Shared {}", word("pv")), &[]).await);
    follow(&host, &bob, &ann).await;
    assert_eq!(favorite(&host, &slug, &bob.token).await.status, 200);
    for _ in 0..2 {
        assert_eq!(get_article(&host, &slug, None).await.status, 200);
    }

    let as_bob = get_article(&host, &slug, Some(&bob.token)).await.json()["article"].clone();
    let as_cy = get_article(&host, &slug, Some(&cy.token)).await.json()["article"].clone();
    let anonymous = get_article(&host, &slug, None).await.json()["article"].clone();
    assert_eq!(favorite(&host, &slug, &cy.token).await.status, 200);
    let as_cy_after = get_article(&host, &slug, Some(&cy.token)).await.json()["article"].clone();
    let anonymous_after = get_article(&host, &slug, None).await.json()["article"].clone();

    assert_eq!(as_bob["favorited"], true, "Bob favorited it");
    assert_eq!(as_bob["author"]["following"], true, "Bob follows Ann");
    assert_eq!(as_bob["favoritesCount"], 1);
    assert_eq!(as_cy["favorited"], false, "Cy did not favorite it");
    assert_eq!(as_cy["author"]["following"], false, "Cy does not follow Ann");
    assert_eq!(as_cy["favoritesCount"], 1);
    assert_eq!(anonymous["favorited"], false);
    assert_eq!(anonymous["author"]["following"], false);
    assert_eq!(as_cy_after["favorited"], true);
    assert_eq!(as_cy_after["favoritesCount"], 2, "a new favorite shows in the cached article");
    assert_eq!(anonymous_after["favoritesCount"], 2);
    assert_eq!(anonymous_after["favorited"], false);
}

// ---- outages ----

#[tokio::test]
async fn key_value_outage_serves_from_database() {
    let mut options = app_options();
    options.runtime_config = Some(conduit_tests::runtime_config_with_stores_down(&["feed"]));
    let host = Host::start(options);
    let (ann, bob) = (register(&host, "ann").await, register(&host, "bob").await);
    follow(&host, &bob, &ann).await;
    let unique = word("kv");
    let tag = format!("{unique}-tag");

    let created = create_article(
        &host,
        Some(&ann.token),
        json!({"title": format!("Without a cache {unique}"), "description": "d", "body": "b", "tagList": [tag]}),
    )
    .await;
    let slug = slug_of(&created.json()["article"]);
    let read_twice = [get_article(&host, &slug, None).await, get_article(&host, &slug, None).await];
    let read_signed_in = get_article(&host, &slug, Some(&bob.token)).await;
    let updated = update_article(&host, &slug, &ann.token, json!({"description": "Changed"})).await;
    let read_after_update = get_article(&host, &slug, None).await;
    let listed = list_articles(&host, "", None).await;
    let by_author = list_articles(&host, &format!("author={}", ann.username), Some(&bob.token)).await;
    let by_tag = list_articles(&host, &format!("tag={tag}"), None).await;
    let bob_feed = personal_feed(&host, "", &bob.token).await;
    let favorited = favorite(&host, &slug, &bob.token).await;
    let unfavorited = unfavorite(&host, &slug, &bob.token).await;
    let commented = add_comment(&host, &slug, &bob.token, "Still works").await;
    let comment_id = comment_id_of(&commented);
    let comments = list_comments(&host, &slug, None).await;
    let comment_deleted = delete_comment(&host, &slug, &comment_id, &bob.token).await;
    let tag_list = tags(&host).await;
    let health = host.get("/health/feed").await;
    let deleted = delete_article(&host, &slug, &ann.token).await;
    let read_after_delete = get_article(&host, &slug, None).await;

    assert_eq!(created.status, 201, "{}", created.text());
    for read in &read_twice {
        assert_eq!(read.status, 200, "{}", read.text());
    }
    assert_eq!(read_signed_in.status, 200, "{}", read_signed_in.text());
    assert_eq!(read_signed_in.json()["article"]["author"]["following"], true);
    assert_eq!(updated.status, 200, "{}", updated.text());
    assert_eq!(read_after_update.json()["article"]["description"], "Changed");
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(slugs(&by_author), [slug.as_str()]);
    assert_eq!(slugs(&by_tag), [slug.as_str()]);
    assert_eq!(bob_feed.status, 200, "{}", bob_feed.text());
    assert_eq!(slugs(&bob_feed), [slug.as_str()]);
    assert_eq!(favorited.status, 200, "{}", favorited.text());
    assert_eq!(favorited.json()["article"]["favoritesCount"], 1);
    assert_eq!(unfavorited.status, 200, "{}", unfavorited.text());
    assert_eq!(unfavorited.json()["article"]["favoritesCount"], 0);
    assert_eq!(comments.status, 200, "{}", comments.text());
    assert_eq!(comment_bodies(&comments), ["Still works"]);
    assert_eq!(comment_deleted.status, 204, "{}", comment_deleted.text());
    assert_eq!(tag_list.status, 200, "{}", tag_list.text());
    assert_eq!((health.status, health.text().as_str()), (200, "up"));
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    assert_eq!(read_after_delete.status, 404, "{}", read_after_delete.text());
    let logs = host.component_logs("feed").await;
    let failed: Vec<&Value> = logs.iter().filter(|line| line["status"].as_u64().is_some_and(|s| s >= 500)).collect();
    assert!(failed.is_empty(), "no feed request failed: {failed:?}");
}

#[tokio::test]
async fn database_outage_gets_503() {
    // Registration needs the database, so the token comes from a host with the database up.
    let token = {
        let host = Host::start(app_options());
        register(&host, "ann").await.token
    };
    let closed_port = conduit_tests::free_port();
    let host = Host::start(app_options().env("SPIN_VARIABLE_MYSQL_PORT", closed_port.to_string()));

    let cases = [
        ("GET /api/articles", list_articles(&host, "", None).await),
        ("GET /api/articles?author=", list_articles(&host, "author=someone", None).await),
        ("GET /api/articles/:slug", get_article(&host, "any-slug", None).await),
        ("GET /api/articles/:slug/comments", list_comments(&host, "any-slug", None).await),
        ("GET /api/tags", tags(&host).await),
        ("GET /api/articles/feed", personal_feed(&host, "", &token).await),
        ("POST /api/articles", create_article(&host, Some(&token), valid_article("During an outage")).await),
    ];
    let health = host.get("/health/feed").await;

    for (route, reply) in &cases {
        assert_eq!(reply.status, 503, "{route}: {}", reply.text());
        let retry_after = reply.header("retry-after");
        let seconds = retry_after.and_then(|value| value.parse::<u32>().ok());
        assert!(seconds.is_some_and(|s| s >= 1), "{route}: Retry-After is {retry_after:?}");
        assert!(has_error_body(reply), "{route}: {}", reply.text());
    }
    assert_eq!((health.status, health.text().as_str()), (503, "down"));
}
