//! Black-box tests of the notifications component and of email verification.
//! The real `notifications.wasm` runs in the local host from the application's
//! `spin.toml`, next to profiles, feed and payments, whose events create the
//! notifications. Each test starts a `FakeBrevo` on loopback as the email
//! provider and a `FakeMollie` as the payment provider (tips need a funded
//! wallet), and reads rows as root from the `conduit_test_*` schemas that
//! `cargo xtask test` migrates.
//!
//! Tests that call a dispatch route, create email rows (a verification request,
//! or an event for a verified address) or switch a component fault hold
//! `one_at_a_time()`. A notifications dispatch sends every due email in the
//! shared schema, so without the lock one test's emails would go through
//! another test's fake provider.

use std::collections::BTreeSet;

use conduit_tests::fake_brevo::{FakeBrevo, RecordedRequest, SentEmail};
use conduit_tests::fake_mollie::FakeMollie;
use conduit_tests::{
    Host, HostOptions, Reply, TestUser, admin_db, app_options, default_preferences, dispatch, email_of, fund_wallet,
    post_with_new_key, register_user, unique_name,
};
use mysql_async::prelude::{FromRow, Queryable};
use serde_json::{Value, json};
use tokio::sync::{Mutex, MutexGuard};

const NOTIFICATIONS_SCHEMA: &str = "conduit_test_notifications";
const PROFILES_SCHEMA: &str = "conduit_test_profiles";
const FEED_SCHEMA: &str = "conduit_test_feed";

const VERIFY_PATH: &str = "/api/users/verify-email";
const VERIFICATION_REQUEST_PATH: &str = "/api/user/email-verification";
const UNREAD_COUNT_PATH: &str = "/api/notifications/unread-count";
const READ_ALL_PATH: &str = "/api/notifications/read-all";
const PREFERENCES_PATH: &str = "/api/notifications/preferences";

/// The length of an email verification token, which uses the characters `A-Z a-z 0-9 _ -`.
const TOKEN_LENGTH: usize = 43;

/// The value of an email's `List-Unsubscribe-Post` header, which is also the
/// body that a mail client posts for a one-click unsubscribe.
const ONE_CLICK: &str = "List-Unsubscribe=One-Click";
const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// A UUID that no notification has.
const UNKNOWN_ID: &str = "00000000-0000-4000-8000-000000000000";

/// Locks the mutex that serialises the tests listed in the file header. Each
/// test keeps the guard for its whole run.
async fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::const_new(());
    LOCK.lock().await
}

// ---- the application and its fake providers ----

/// The host running the application, and the fake providers it calls. Fields
/// drop in order, so the host stops before the fakes close their connections.
struct App {
    host: Host,
    brevo: FakeBrevo,
    mollie: FakeMollie,
}

impl App {
    fn start() -> Self {
        Self::start_with(app_options())
    }

    /// Starts both fake providers, then the host with `options` and the fakes'
    /// URLs and API keys, and sends the payment provider's webhooks to that host.
    fn start_with(options: HostOptions) -> Self {
        let brevo = FakeBrevo::start();
        let mollie = FakeMollie::start();
        let options = options
            .env("SPIN_VARIABLE_EMAIL_PROVIDER_URL", brevo.base_url())
            .env("SPIN_VARIABLE_EMAIL_PROVIDER_API_KEY", brevo.api_key())
            .env("SPIN_VARIABLE_PAYMENT_PROVIDER_URL", mollie.base_url())
            .env("SPIN_VARIABLE_PAYMENT_PROVIDER_API_KEY", mollie.api_key());
        let host = Host::start(options);
        mollie.set_webhook_target(&host.url(""));
        App { host, brevo, mollie }
    }
}

/// Calls `POST /ops/<component>/dispatch` and returns the reply. Panics unless the status is 200.
async fn run_dispatch(host: &Host, component: &str) -> Reply {
    let reply = dispatch(host, component).await;
    assert_eq!(reply.status, 200, "{component}'s dispatch failed: {}", reply.text());
    reply
}

// ---- actions in profiles, feed and payments that notify a user ----

async fn follow(host: &Host, follower: &TestUser, followee: &TestUser) {
    let reply = host.send("POST", &format!("/api/profiles/{}/follow", followee.username), Some(&follower.token)).await;
    assert_eq!(reply.status, 200, "follow failed: {}", reply.text());
}

async fn unfollow(host: &Host, follower: &TestUser, followee: &TestUser) {
    let reply = host.send("DELETE", &format!("/api/profiles/{}/follow", followee.username), Some(&follower.token)).await;
    assert_eq!(reply.status, 200, "unfollow failed: {}", reply.text());
}

/// Creates an article by `author` and returns its slug. Panics unless the status is 201.
async fn publish(host: &Host, author: &TestUser) -> String {
    let title = format!("Notable {}", unique_name("post"));
    let article = json!({"title": title, "description": "A description", "body": "The body", "tagList": []});
    let reply = host.send_json("POST", "/api/articles", Some(&author.token), &json!({ "article": article })).await;
    assert_eq!(reply.status, 201, "creating {title:?} failed: {}", reply.text());
    let slug = reply.json()["article"]["slug"].as_str().map(str::to_string);
    slug.unwrap_or_else(|| panic!("the article has no slug: {}", reply.text()))
}

/// Registers ann and bob, in that order, then publishes an article by ann.
/// Returns both users and the article's slug.
async fn register_two_and_publish(host: &Host) -> (TestUser, TestUser, String) {
    let (ann, bob) = (register_user(host, "ann").await, register_user(host, "bob").await);
    let slug = publish(host, &ann).await;
    (ann, bob, slug)
}

/// Adds a comment and returns its id as decimal text. Panics unless the status is 200.
async fn add_comment(host: &Host, slug: &str, commenter: &TestUser, body: &str) -> String {
    let path = format!("/api/articles/{slug}/comments");
    let reply = host.send_json("POST", &path, Some(&commenter.token), &json!({"comment": {"body": body}})).await;
    assert_eq!(reply.status, 200, "adding a comment failed: {}", reply.text());
    id_text(&reply.json()["comment"]["id"])
}

async fn delete_comment(host: &Host, slug: &str, comment_id: &str, commenter: &TestUser) {
    let path = format!("/api/articles/{slug}/comments/{comment_id}");
    let reply = host.send("DELETE", &path, Some(&commenter.token)).await;
    assert_eq!(reply.status, 204, "deleting comment {comment_id} failed: {}", reply.text());
}

async fn favorite(host: &Host, slug: &str, user: &TestUser) {
    let reply = host.send("POST", &format!("/api/articles/{slug}/favorite"), Some(&user.token)).await;
    assert_eq!(reply.status, 200, "favorite failed: {}", reply.text());
}

async fn unfavorite(host: &Host, slug: &str, user: &TestUser) {
    let reply = host.send("DELETE", &format!("/api/articles/{slug}/favorite"), Some(&user.token)).await;
    assert_eq!(reply.status, 200, "unfavorite failed: {}", reply.text());
}

/// Sends an EUR tip for the article `slug`. Panics unless the status is 201.
async fn tip(host: &Host, sender: &TestUser, recipient: &TestUser, amount_minor: i64, slug: &str) {
    let fields = json!({
        "to_username": recipient.username,
        "amount_minor": amount_minor,
        "currency": "EUR",
        "article_slug": slug,
    });
    let reply = post_with_new_key(host, "/api/tips", sender, &json!({ "tip": fields })).await;
    assert_eq!(reply.status, 201, "the tip failed: {}", reply.text());
}

/// The article that `interact` created, and the id of the actor's comment on it.
struct Interaction {
    slug: String,
    comment_id: String,
}

/// Funds the actor's wallet with 1000 cents and publishes an article by the
/// recipient. Then the actor follows the recipient, comments on the article,
/// favorites it and tips 250 cents for it, in that order.
async fn interact(app: &App, actor: &TestUser, recipient: &TestUser) -> Interaction {
    fund_wallet(&app.host, &app.mollie, actor, 1000).await;
    let slug = publish(&app.host, recipient).await;
    follow(&app.host, actor, recipient).await;
    let comment_id = add_comment(&app.host, &slug, actor, "Well argued").await;
    favorite(&app.host, &slug, actor).await;
    tip(&app.host, actor, recipient, 250, &slug).await;
    Interaction { slug, comment_id }
}

// ---- the user routes of profiles ----

/// Returns the `user` object of `GET /api/user`. Panics unless the status is 200.
async fn current_user(host: &Host, user: &TestUser) -> Value {
    let reply = host.send("GET", "/api/user", Some(&user.token)).await;
    assert_eq!(reply.status, 200, "reading the current user failed: {}", reply.text());
    reply.json()["user"].clone()
}

async fn update_email(host: &Host, user: &TestUser, email: &str) -> Reply {
    host.send_json("PUT", "/api/user", Some(&user.token), &json!({"user": {"email": email}})).await
}

async fn request_verification(host: &Host, user: &TestUser) -> Reply {
    host.send("POST", VERIFICATION_REQUEST_PATH, Some(&user.token)).await
}

async fn post_verify(host: &Host, body: Value) -> Reply {
    host.send_json("POST", VERIFY_PATH, None, &body).await
}

/// Returns the verification token in a link `…?token=<token>` of `text`.
fn token_in(text: &str) -> Option<String> {
    let is_token_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    text.match_indices("token=").find_map(|(start, marker)| {
        let token: String = text[start + marker.len()..].chars().take_while(|c| is_token_char(*c)).collect();
        (token.len() == TOKEN_LENGTH).then_some(token)
    })
}

/// Returns the token of the newest email to `address` whose text carries one.
fn verification_token(brevo: &FakeBrevo, address: &str) -> String {
    let emails = brevo.emails_to(address);
    let token = emails.iter().rev().find_map(|email| email.text.as_deref().and_then(token_in));
    token.unwrap_or_else(|| panic!("no email to {address} has a verification token in its text: {emails:?}"))
}

/// Verifies the user's registered address: requests a link, dispatches
/// notifications so the email leaves, and posts the token from it.
/// Callers hold `one_at_a_time()`.
async fn verify_email(app: &App, user: &TestUser) {
    let requested = request_verification(&app.host, user).await;
    assert_eq!(requested.status, 202, "the verification request failed: {}", requested.text());
    run_dispatch(&app.host, "notifications").await;
    let token = verification_token(&app.brevo, &email_of(&user.username));
    let verified = post_verify(&app.host, json!({ "token": token })).await;
    assert_eq!(verified.status, 200, "verifying the address failed: {}", verified.text());
}

// ---- the notifications routes ----

/// Calls `GET /api/notifications?<query>` (`query` without the `?`).
async fn list_notifications(host: &Host, user: &TestUser, query: &str) -> Reply {
    host.send("GET", &format!("/api/notifications?{query}"), Some(&user.token)).await
}

/// Returns the `notifications` list of a reply. Panics unless the status is 200.
fn items_of(reply: &Reply) -> Vec<Value> {
    assert_eq!(reply.status, 200, "listing notifications failed: {}", reply.text());
    let body = reply.json();
    let items = body["notifications"].as_array().cloned();
    items.unwrap_or_else(|| panic!("the reply has no `notifications` list: {body}"))
}

fn next_cursor(reply: &Reply) -> Option<String> {
    reply.json()["next_cursor"].as_str().map(str::to_string)
}

/// Returns the user's whole inbox, newest first, from one page of 100.
async fn inbox(host: &Host, user: &TestUser) -> Vec<Value> {
    let reply = list_notifications(host, user, "limit=100").await;
    let items = items_of(&reply);
    assert_eq!(next_cursor(&reply), None, "the inbox fits one page of 100: {}", reply.text());
    items
}

/// Follows `next_cursor` from the first page of `query` to the last and returns every item in order.
async fn all_pages(host: &Host, user: &TestUser, query: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..20 {
        let page_query = match &cursor {
            Some(cursor) => format!("{query}&cursor={}", percent_encode(cursor)),
            None => query.to_string(),
        };
        let reply = list_notifications(host, user, &page_query).await;
        items.extend(items_of(&reply));
        cursor = next_cursor(&reply);
        if cursor.is_none() {
            return items;
        }
    }
    panic!("`{query}` still had a next page after 20 pages");
}

fn ids_of(items: &[Value]) -> Vec<String> {
    let id_of = |item: &Value| item["id"].as_str().map(str::to_string);
    items.iter().map(|item| id_of(item).unwrap_or_else(|| panic!("the notification has no id: {item}"))).collect()
}

fn types_of(items: &[Value]) -> Vec<String> {
    items.iter().map(|item| item["type"].as_str().unwrap_or_default().to_string()).collect()
}

/// Returns the one item of `items` with type `kind`. Panics unless there is exactly one.
fn only_of_type<'a>(items: &'a [Value], kind: &str) -> &'a Value {
    let matching: Vec<&Value> = items.iter().filter(|item| item["type"] == kind).collect();
    assert_eq!(matching.len(), 1, "one {kind} notification: {items:?}");
    matching[0]
}

/// Returns `GET /api/notifications/unread-count`. Panics unless the status is 200.
async fn unread_count(host: &Host, user: &TestUser) -> i64 {
    let reply = host.send("GET", UNREAD_COUNT_PATH, Some(&user.token)).await;
    assert_eq!(reply.status, 200, "reading the unread count failed: {}", reply.text());
    reply.json()["unread_count"].as_i64().unwrap_or_else(|| panic!("the unread count is not an integer: {}", reply.text()))
}

async fn mark_read(host: &Host, user: &TestUser, id: &str) -> Reply {
    host.send("POST", &format!("/api/notifications/{id}/read"), Some(&user.token)).await
}

async fn read_all(host: &Host, user: &TestUser) -> Reply {
    host.send("POST", READ_ALL_PATH, Some(&user.token)).await
}

/// Returns the `preferences` object of `GET /api/notifications/preferences`. Panics unless the status is 200.
async fn preferences(host: &Host, user: &TestUser) -> Value {
    let reply = host.send("GET", PREFERENCES_PATH, Some(&user.token)).await;
    assert_eq!(reply.status, 200, "reading the preferences failed: {}", reply.text());
    reply.json()["preferences"].clone()
}

async fn put_preferences(host: &Host, user: &TestUser, body: &Value) -> Reply {
    host.send_json("PUT", PREFERENCES_PATH, Some(&user.token), body).await
}

/// Sets one channel of one notification type. Panics unless the status is 200.
async fn set_preference(host: &Host, user: &TestUser, kind: &str, channel: &str, enabled: bool) {
    let body = json!({"preferences": { kind: { channel: enabled } }});
    let reply = put_preferences(host, user, &body).await;
    assert_eq!(reply.status, 200, "setting {kind}.{channel} failed: {}", reply.text());
}

/// Sends a one-click unsubscribe to `path` (path and query), as a mail client does.
async fn post_unsubscribe(host: &Host, path: &str) -> Reply {
    host.request("POST", path, &[("content-type", FORM_CONTENT_TYPE)], ONE_CLICK).await
}

// ---- checking replies and emails ----

/// Checks the fields every notification has, its type and its actor (`None`
/// for a top-up, which has no actor).
fn assert_notification(item: &Value, kind: &str, actor: Option<&TestUser>) {
    assert_eq!(item["type"], kind, "{item}");
    assert!(item["id"].as_str().is_some_and(is_uuid), "the id is a UUID: {item}");
    assert!(item["read"].is_boolean(), "read is a boolean: {item}");
    assert!(item["created_at"].as_str().is_some_and(is_rfc3339), "created_at is RFC 3339: {item}");
    assert!(item["data"].is_object(), "data is an object: {item}");
    match actor {
        Some(actor) => assert_eq!(item["actor"]["username"], actor.username.as_str(), "the actor: {item}"),
        None => assert!(item["actor"].is_null(), "a {kind} notification has no actor: {item}"),
    }
}

/// Returns the messages of `errors.<field>` in the error envelope.
fn field_errors(reply: &Reply, field: &str) -> Vec<String> {
    serde_json::from_value(reply.json()["errors"][field].clone()).unwrap_or_default()
}

/// Checks that a reply is a 422 whose error envelope names `field`.
fn assert_422_on(reply: &Reply, field: &str, context: &str) {
    assert_eq!(reply.status, 422, "{context}: {}", reply.text());
    assert!(!field_errors(reply, field).is_empty(), "{context}: the error is on `{field}`: {}", reply.text());
}

fn is_html(reply: &Reply) -> bool {
    reply.header("content-type").is_some_and(|value| value.to_ascii_lowercase().starts_with("text/html"))
}

/// Returns a header of the email's `headers` object, whatever the case of its name.
fn email_header<'a>(email: &'a SentEmail, name: &str) -> Option<&'a str> {
    email.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
}

/// Returns the path and query of the http(s) URL in the email's
/// `List-Unsubscribe` header, to send to the test host whatever host the URL names.
fn unsubscribe_path(email: &SentEmail) -> String {
    let header = email_header(email, "List-Unsubscribe");
    let header = header.unwrap_or_else(|| panic!("the email has no List-Unsubscribe: {email:?}"));
    let urls = header.split(',').map(|part| part.trim().trim_start_matches('<').trim_end_matches('>'));
    let url = urls
        .into_iter()
        .find(|url| url.starts_with("http://") || url.starts_with("https://"))
        .unwrap_or_else(|| panic!("List-Unsubscribe has no http URL: {header}"));
    let authority_and_path = url.split_once("://").map(|(_, rest)| rest).unwrap_or(url);
    let path_start = authority_and_path.find('/').unwrap_or_else(|| panic!("the URL {url} has no path"));
    authority_and_path[path_start..].to_string()
}

/// Changes one character in the middle of a token, keeping its length and alphabet.
fn tamper(token: &str) -> String {
    let middle = token.len() / 2;
    let replacement = if token.as_bytes()[middle] == b'A' { 'B' } else { 'A' };
    format!("{}{replacement}{}", &token[..middle], &token[middle + 1..])
}

/// Returns `path` with the value of its `token` query parameter tampered with.
fn with_tampered_token(path: &str) -> String {
    let (before, token_and_rest) = path.split_once("token=").unwrap_or_else(|| panic!("{path} has no token parameter"));
    let token_end = token_and_rest.find('&').unwrap_or(token_and_rest.len());
    format!("{before}token={}{}", tamper(&token_and_rest[..token_end]), &token_and_rest[token_end..])
}

/// Returns `Retry-After` as whole seconds, or `None` when it is absent or an HTTP date.
fn retry_after_seconds(reply: &Reply) -> Option<u64> {
    reply.header("retry-after").and_then(|value| value.trim().parse().ok())
}

/// Returns an id as text, whether the JSON has it as a number or a string.
fn id_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        other => panic!("not an id: {other}"),
    }
}

/// Checks the textual UUID shape: hexadecimal groups of 8, 4, 4, 4 and 12 digits.
fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.iter().map(|group| group.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|group| group.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Checks the RFC 3339 date-time shape `YYYY-MM-DDTHH:MM:SS`, an optional
/// fraction, then `Z` or an offset such as `+02:00`.
fn is_rfc3339(text: &str) -> bool {
    // `#` stands for one ASCII digit.
    let matches_shape = |part: &str, shape: &str| {
        part.len() == shape.len()
            && part.chars().zip(shape.chars()).all(|(c, s)| if s == '#' { c.is_ascii_digit() } else { c == s })
    };
    if !text.is_ascii() || text.len() < 20 {
        return false;
    }
    let (date_time, mut zone) = text.split_at(19);
    if !matches_shape(&date_time.replace('t', "T"), "####-##-##T##:##:##") {
        return false;
    }
    if let Some(fraction) = zone.strip_prefix('.') {
        let rest = fraction.trim_start_matches(|c: char| c.is_ascii_digit());
        if rest.len() == fraction.len() {
            return false;
        }
        zone = rest;
    }
    matches!(zone, "Z" | "z") || ((zone.starts_with('+') || zone.starts_with('-')) && matches_shape(&zone[1..], "##:##"))
}

/// Percent-encodes every byte except ASCII letters, digits and `-._~`, for an opaque cursor in a query.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

fn now_micros() -> i64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    i64::try_from(since_epoch.as_micros()).unwrap()
}

// ---- rows, read and changed as root ----

async fn query<T, P>(statement: &str, params: P) -> Vec<T>
where
    T: FromRow + Send + 'static,
    P: Into<mysql_async::Params> + Send,
{
    let mut db = admin_db().await;
    let rows = db.exec(statement, params).await.unwrap_or_else(|e| panic!("{statement} failed: {e}"));
    db.disconnect().await.unwrap();
    rows
}

/// Runs one statement and returns the number of rows it changed.
async fn execute<P: Into<mysql_async::Params> + Send>(statement: &str, params: P) -> u64 {
    let mut db = admin_db().await;
    db.exec_drop(statement, params).await.unwrap_or_else(|e| panic!("{statement} failed: {e}"));
    let changed = db.affected_rows();
    db.disconnect().await.unwrap();
    changed
}

/// Returns the user's `unread_counts` value (0 without a row) and the number of
/// the user's rows in `notifications` with no `read_at`.
async fn unread_in_database(user_id: &str) -> (i64, i64) {
    let statement = format!(
        "SELECT CAST(COALESCE((SELECT unread FROM {NOTIFICATIONS_SCHEMA}.unread_counts WHERE user_id = ?), 0) AS SIGNED),
                (SELECT COUNT(*) FROM {NOTIFICATIONS_SCHEMA}.notifications WHERE user_id = ? AND read_at IS NULL)"
    );
    let rows: Vec<(i64, i64)> = query(&statement, (user_id, user_id)).await;
    rows[0]
}

/// Checks that the unread-count route, the `unread_counts` row and a count of
/// unread rows all give `expected`.
async fn assert_unread(host: &Host, user: &TestUser, expected: i64, context: &str) {
    let from_route = unread_count(host, user).await;
    let (stored, counted) = unread_in_database(&user.id).await;
    assert_eq!(from_route, expected, "{context}: GET {UNREAD_COUNT_PATH}");
    assert_eq!(stored, expected, "{context}: the unread_counts row");
    assert_eq!(counted, expected, "{context}: the unread rows in notifications");
}

/// Returns the ids of the user's rows in `notifications`.
async fn notification_row_ids(user_id: &str) -> BTreeSet<String> {
    let statement = format!("SELECT CAST(id AS CHAR) FROM {NOTIFICATIONS_SCHEMA}.notifications WHERE user_id = ?");
    query::<String, _>(&statement, (user_id,)).await.into_iter().collect()
}

/// A row of the `emails` table.
#[derive(Debug)]
struct EmailRow {
    id: String,
    kind: String,
    status: String,
    attempts: i64,
    next_attempt_at: i64,
    last_error: Option<String>,
}

const EMAIL_COLUMNS: &str = "CAST(id AS CHAR), kind, status, CAST(attempts AS SIGNED), next_attempt_at, last_error";

/// The columns of [`EMAIL_COLUMNS`] as `mysql_async` reads them.
type EmailColumns = (String, String, String, i64, i64, Option<String>);

fn email_row_from((id, kind, status, attempts, next_attempt_at, last_error): EmailColumns) -> EmailRow {
    EmailRow { id, kind, status, attempts, next_attempt_at, last_error }
}

/// Returns the user's email rows, oldest first.
async fn email_rows(user_id: &str) -> Vec<EmailRow> {
    let statement =
        format!("SELECT {EMAIL_COLUMNS} FROM {NOTIFICATIONS_SCHEMA}.emails WHERE user_id = ? ORDER BY created_at, id");
    query(&statement, (user_id,)).await.into_iter().map(email_row_from).collect()
}

async fn email_row(id: &str) -> EmailRow {
    let statement = format!("SELECT {EMAIL_COLUMNS} FROM {NOTIFICATIONS_SCHEMA}.emails WHERE id = ?");
    let rows: Vec<_> = query(&statement, (id,)).await;
    rows.into_iter().map(email_row_from).next().unwrap_or_else(|| panic!("no email row has id {id}"))
}

/// Returns the user's email rows whose ids are not in `known`.
async fn email_rows_except(user_id: &str, known: &BTreeSet<String>) -> Vec<EmailRow> {
    email_rows(user_id).await.into_iter().filter(|row| !known.contains(&row.id)).collect()
}

async fn email_row_ids(user_id: &str) -> BTreeSet<String> {
    email_rows(user_id).await.into_iter().map(|row| row.id).collect()
}

/// Has `actor` comment on the article and returns the one email row this
/// creates for `recipient`. Panics unless there is exactly one.
async fn comment_and_find_email(host: &Host, slug: &str, actor: &TestUser, recipient: &TestUser) -> EmailRow {
    let known = email_row_ids(&recipient.id).await;
    add_comment(host, slug, actor, "One more thought").await;
    let mut created = email_rows_except(&recipient.id, &known).await;
    assert_eq!(created.len(), 1, "the comment created one email row: {created:?}");
    created.remove(0)
}

/// Marks the producer's delivery of an event to notifications as not yet
/// delivered and due at once, so the producer's next dispatch sends it again.
/// Returns the number of delivery rows changed.
async fn redeliver(schema: &str, event_type: &str, aggregate_id: &str) -> u64 {
    let statement = format!(
        "UPDATE {schema}.outbox_deliveries d JOIN {schema}.outbox_events e ON e.id = d.event_id
         SET d.delivered_at = NULL, d.next_attempt_at = 0, d.lease_until = 0, d.lease_owner = NULL
         WHERE d.consumer = 'notifications' AND e.type = ? AND e.aggregate_id = ?"
    );
    execute(&statement, (event_type, aggregate_id)).await
}

/// Checks whether the producer recorded its delivery of the event to notifications.
async fn delivered_to_notifications(schema: &str, event_type: &str, aggregate_id: &str) -> bool {
    let statement = format!(
        "SELECT COUNT(*) FROM {schema}.outbox_deliveries d JOIN {schema}.outbox_events e ON e.id = d.event_id
         WHERE d.consumer = 'notifications' AND e.type = ? AND e.aggregate_id = ? AND d.delivered_at IS NOT NULL"
    );
    let rows: Vec<i64> = query(&statement, (event_type, aggregate_id)).await;
    rows[0] == 1
}

// ---- the inbox and emails from each kind of event ----

#[tokio::test]
async fn interactions_fill_inbox_and_send_emails() {
    let _serial = one_at_a_time().await;
    let app = App::start();
    let (ann, bob) = (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await);
    let (ann_address, bob_address) = (email_of(&ann.username), email_of(&bob.username));
    verify_email(&app, &ann).await;
    let emails_before = app.brevo.emails_to(&ann_address).len();
    let rows_before = email_row_ids(&ann.id).await;

    let done = interact(&app, &bob, &ann).await;
    run_dispatch(&app.host, "notifications").await;
    let listed = list_notifications(&app.host, &ann, "").await;
    let count = app.host.send("GET", UNREAD_COUNT_PATH, Some(&ann.token)).await;
    let preferences_reply = app.host.send("GET", PREFERENCES_PATH, Some(&ann.token)).await;
    let bobs_inbox = inbox(&app.host, &bob).await;
    let new_emails: Vec<SentEmail> = app.brevo.emails_to(&ann_address).into_iter().skip(emails_before).collect();
    let new_rows = email_rows_except(&ann.id, &rows_before).await;

    let items = items_of(&listed);
    assert_eq!(items.len(), 4, "{items:?}");
    for (item, kind) in items.iter().zip(["tip", "favorite", "comment", "follow"]) {
        assert_notification(item, kind, Some(&bob));
        assert_eq!(item["read"], false, "{item}");
    }
    assert_eq!(items[3]["data"], json!({}), "follow data");
    let comment_data = &items[2]["data"];
    assert_eq!(comment_data.as_object().map(|data| data.len()), Some(2), "comment data has two fields: {comment_data}");
    assert_eq!(comment_data["article_slug"], done.slug.as_str(), "{comment_data}");
    assert_eq!(id_text(&comment_data["comment_id"]), done.comment_id, "{comment_data}");
    assert_eq!(items[1]["data"], json!({"article_slug": done.slug}), "favorite data");
    assert_eq!(items[0]["data"], json!({"amount_minor": 250, "currency": "EUR", "article_slug": done.slug}), "tip data");
    assert_eq!(next_cursor(&listed), None, "four items fit the default page");

    assert_eq!(count.status, 200, "{}", count.text());
    assert_eq!(count.json()["unread_count"], 4, "{}", count.text());
    assert_unread(&app.host, &ann, 4, "after four events").await;
    for (route, reply) in [("the list", &listed), ("the unread count", &count), ("the preferences", &preferences_reply)] {
        assert_eq!(reply.header("cache-control"), Some("no-store"), "{route}");
    }

    assert_eq!(bobs_inbox.len(), 1, "the tipper has only the top-up notification: {bobs_inbox:?}");
    assert_notification(&bobs_inbox[0], "top_up", None);
    assert_eq!(bobs_inbox[0]["data"], json!({"amount_minor": 1000, "currency": "EUR", "status": "succeeded"}));

    // Email is on by default for comment and tip only, and the tipper's address is unverified.
    let mut kinds: Vec<&str> = new_rows.iter().map(|row| row.kind.as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["comment", "tip"], "email rows: {new_rows:?}");
    assert!(new_rows.iter().all(|row| row.status == "sent"), "dispatch sent both: {new_rows:?}");
    assert_eq!(new_emails.len(), 2, "the provider received two emails for the recipient: {new_emails:?}");
    for email in &new_emails {
        assert_eq!(email.to, [ann_address.as_str()], "{email:?}");
        let unsubscribe = email_header(email, "List-Unsubscribe").unwrap_or_default();
        assert!(unsubscribe.starts_with('<'), "List-Unsubscribe: {unsubscribe:?}");
        assert!(unsubscribe.ends_with('>'), "List-Unsubscribe: {unsubscribe:?}");
        assert!(unsubscribe.contains("/api/notifications/unsubscribe?token="), "List-Unsubscribe: {unsubscribe:?}");
        assert_eq!(email_header(email, "List-Unsubscribe-Post"), Some(ONE_CLICK), "{email:?}");
        assert!(!email.body.to_string().contains(&bob_address), "the email shows the actor's address: {}", email.body);
    }
    assert!(app.brevo.emails_to(&bob_address).is_empty(), "nothing goes to an unverified address");
}

#[tokio::test]
async fn in_app_off_keeps_type_out_of_inbox() {
    let _serial = one_at_a_time().await;
    let app = App::start();
    let (ann, bob) = (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await);
    verify_email(&app, &ann).await;
    set_preference(&app.host, &ann, "comment", "in_app", false).await;
    let rows_before = email_row_ids(&ann.id).await;

    interact(&app, &bob, &ann).await;
    run_dispatch(&app.host, "notifications").await;
    let items = inbox(&app.host, &ann).await;
    let new_rows = email_rows_except(&ann.id, &rows_before).await;

    assert_eq!(types_of(&items), ["tip", "favorite", "follow"], "no comment item: {items:?}");
    assert_unread(&app.host, &ann, 3, "without the comment").await;
    // The email channel is separate, so the comment email still goes out.
    let mut kinds: Vec<&str> = new_rows.iter().map(|row| row.kind.as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["comment", "tip"], "email rows: {new_rows:?}");
}

#[tokio::test]
async fn own_actions_notify_nobody() {
    let app = App::start();
    let (ann, bob, slug) = register_two_and_publish(&app.host).await;

    add_comment(&app.host, &slug, &ann, "A note from the author").await;
    favorite(&app.host, &slug, &ann).await;
    // Another user's favorite afterwards shows that events reach the inbox.
    favorite(&app.host, &slug, &bob).await;
    let items = inbox(&app.host, &ann).await;

    assert_eq!(types_of(&items), ["favorite"], "only the other user's favorite: {items:?}");
    assert_notification(&items[0], "favorite", Some(&bob));
    assert_eq!(notification_row_ids(&ann.id).await.len(), 1, "one row in the database");
    assert_unread(&app.host, &ann, 1, "after one foreign favorite").await;
}

// ---- listing and paging ----

#[tokio::test]
async fn paging_is_stable_while_items_arrive() {
    let app = App::start();
    let (ann, bob, slug) = register_two_and_publish(&app.host).await;
    let mut comment_ids = Vec::new();
    for n in 0..25 {
        comment_ids.push(add_comment(&app.host, &slug, &bob, &format!("Comment {n}")).await);
    }

    let snapshot = ids_of(&inbox(&app.host, &ann).await);
    let first = list_notifications(&app.host, &ann, "limit=10").await;
    let first_cursor = next_cursor(&first).unwrap_or_else(|| panic!("the first page has a cursor: {}", first.text()));
    for n in 25..28 {
        comment_ids.push(add_comment(&app.host, &slug, &bob, &format!("Late comment {n}")).await);
    }
    let second = list_notifications(&app.host, &ann, &format!("limit=10&cursor={}", percent_encode(&first_cursor))).await;
    let second_cursor = next_cursor(&second).unwrap_or_else(|| panic!("the second page has a cursor: {}", second.text()));
    let third = list_notifications(&app.host, &ann, &format!("limit=10&cursor={}", percent_encode(&second_cursor))).await;
    let everything = inbox(&app.host, &ann).await;

    assert_eq!(snapshot.len(), 25, "25 comments make 25 notifications");
    assert_eq!(ids_of(&items_of(&first)), snapshot[..10], "the first page");
    assert_eq!(ids_of(&items_of(&second)), snapshot[10..20], "the second page, after three new items arrived");
    assert_eq!(ids_of(&items_of(&third)), snapshot[20..], "the last page");
    assert_eq!(next_cursor(&third), None, "no page after the last: {}", third.text());
    let listed_comments: Vec<String> = everything.iter().map(|item| id_text(&item["data"]["comment_id"])).collect();
    let newest_first: Vec<String> = comment_ids.iter().rev().cloned().collect();
    assert_eq!(listed_comments, newest_first, "newest first, the late items on top");
    assert_eq!(ids_of(&everything)[3..], snapshot, "the late items come before the earlier ones");
    let distinct: BTreeSet<String> = ids_of(&everything).into_iter().collect();
    assert_eq!(distinct.len(), 28, "every id is distinct");
}

#[tokio::test]
async fn unread_filter_pages_unread_only() {
    let app = App::start();
    let (ann, bob, slug) = register_two_and_publish(&app.host).await;
    for n in 0..25 {
        add_comment(&app.host, &slug, &bob, &format!("Comment {n}")).await;
    }
    let all_ids = ids_of(&inbox(&app.host, &ann).await);
    let marked: BTreeSet<String> = all_ids.iter().step_by(3).cloned().collect();
    for id in &marked {
        let reply = mark_read(&app.host, &ann, id).await;
        assert_eq!(reply.status, 200, "marking {id} read failed: {}", reply.text());
    }

    let unread = all_pages(&app.host, &ann, "unread=true&limit=10").await;
    let unfiltered = list_notifications(&app.host, &ann, "unread=false&limit=100").await;

    let expected: Vec<String> = all_ids.iter().filter(|id| !marked.contains(*id)).cloned().collect();
    assert_eq!(marked.len(), 9);
    assert_eq!(ids_of(&unread), expected, "the unread items in order, without gaps or repeats");
    assert!(unread.iter().all(|item| item["read"] == false), "every item of unread=true is unread");
    assert_eq!(unfiltered.status, 200, "unread=false is valid: {}", unfiltered.text());
    assert_unread(&app.host, &ann, 16, "after marking 9 of 25 read").await;
}

#[tokio::test]
async fn list_rejects_invalid_query() {
    let app = App::start();
    let (ann, bob, slug) = register_two_and_publish(&app.host).await;
    add_comment(&app.host, &slug, &bob, "First").await;
    add_comment(&app.host, &slug, &bob, "Second").await;
    let first_page = list_notifications(&app.host, &ann, "limit=1").await;
    let issued = next_cursor(&first_page).unwrap_or_else(|| panic!("two items on pages of one: {}", first_page.text()));
    let tampered = format!("cursor={}", percent_encode(&tamper(&issued)));
    let cases = [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=x", "limit"),
        ("limit=-1", "limit"),
        ("limit=1.5", "limit"),
        ("limit=", "limit"),
        ("limit=10&limit=10", "limit"),
        ("unread=maybe", "unread"),
        ("unread=1", "unread"),
        ("unread=true&unread=true", "unread"),
        ("cursor=garbage", "cursor"),
        (tampered.as_str(), "cursor"),
    ];

    for (query, field) in cases {
        let reply = list_notifications(&app.host, &ann, query).await;
        assert_422_on(&reply, field, &format!("?{query}"));
    }
    let unknown = list_notifications(&app.host, &ann, "page=2").await;
    assert_eq!(unknown.status, 422, "an unknown parameter: {}", unknown.text());
    assert!(unknown.json()["errors"].is_object(), "the error envelope: {}", unknown.text());
    for query in ["limit=1", "limit=100", &format!("limit=1&cursor={}", percent_encode(&issued))] {
        let reply = list_notifications(&app.host, &ann, query).await;
        assert_eq!(reply.status, 200, "?{query} is valid: {}", reply.text());
    }
}

// ---- marking read ----

#[tokio::test]
async fn mark_read_touches_own_items_only() {
    let app = App::start();
    let (ann, bob, cy) =
        (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await, register_user(&app.host, "cy").await);
    follow(&app.host, &bob, &ann).await;
    follow(&app.host, &cy, &ann).await;
    follow(&app.host, &cy, &bob).await;
    let anns = inbox(&app.host, &ann).await;
    let bobs = inbox(&app.host, &bob).await;
    let (own_id, foreign_id) = (ids_of(&anns)[0].clone(), ids_of(&bobs)[0].clone());

    let first = mark_read(&app.host, &ann, &own_id).await;
    let again = mark_read(&app.host, &ann, &own_id).await;
    assert_unread(&app.host, &ann, 1, "after marking one of two read").await;
    let foreign = mark_read(&app.host, &ann, &foreign_id).await;
    let unknown = mark_read(&app.host, &ann, UNKNOWN_ID).await;
    let bobs_after = inbox(&app.host, &bob).await;
    let all = read_all(&app.host, &ann).await;
    let anns_after = inbox(&app.host, &ann).await;
    let bobs_after_read_all = inbox(&app.host, &bob).await;
    let all_again = read_all(&app.host, &ann).await;

    assert_eq!(anns.len(), 2, "{anns:?}");
    for (what, reply) in [("the first mark", &first), ("the repeat", &again)] {
        assert_eq!(reply.status, 200, "{what}: {}", reply.text());
        let body = reply.json();
        assert_eq!(body["notification"]["id"], own_id.as_str(), "{what}: {body}");
        assert_eq!(body["notification"]["read"], true, "{what}: {body}");
        assert_eq!(body["unread_count"], 1, "{what}: {body}");
    }
    assert_eq!(foreign.status, 404, "another user's notification: {}", foreign.text());
    assert_eq!(unknown.status, 404, "an unknown id: {}", unknown.text());
    assert_eq!(bobs_after[0]["read"], false, "the other user's item stays unread");
    assert_eq!(all.status, 200, "{}", all.text());
    assert_eq!(all.json(), json!({"marked": 1, "unread_count": 0}), "read-all marks the one unread item");
    assert!(anns_after.iter().all(|item| item["read"] == true), "every item is read: {anns_after:?}");
    assert_eq!(bobs_after_read_all[0]["read"], false, "read-all leaves other users' items alone");
    assert_eq!(all_again.json(), json!({"marked": 0, "unread_count": 0}), "{}", all_again.text());
    assert_unread(&app.host, &ann, 0, "after read-all").await;
    assert_unread(&app.host, &bob, 1, "the other user after read-all").await;
}

// ---- authentication and methods ----

#[tokio::test]
async fn routes_without_token_get_401() {
    let app = App::start();
    let (ann, bob) = (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await);
    follow(&app.host, &bob, &ann).await;
    let id = ids_of(&inbox(&app.host, &ann).await)[0].clone();
    let read_path = format!("/api/notifications/{id}/read");
    let preferences_body = json!({"preferences": {"follow": {"email": true}}});
    let routes = [
        ("GET", "/api/notifications"),
        ("GET", UNREAD_COUNT_PATH),
        ("POST", read_path.as_str()),
        ("POST", READ_ALL_PATH),
        ("GET", PREFERENCES_PATH),
        ("PUT", PREFERENCES_PATH),
        ("POST", VERIFICATION_REQUEST_PATH),
    ];

    for token in [None, Some("not.a.token")] {
        for (method, path) in routes {
            let reply = app.host.send_json(method, path, token, &preferences_body).await;
            assert_eq!(reply.status, 401, "{method} {path} with token {token:?}: {}", reply.text());
        }
    }
    let items = inbox(&app.host, &ann).await;
    assert_eq!(items[0]["read"], false, "the notification is still unread");
    assert_eq!(preferences(&app.host, &ann).await, default_preferences(), "the preferences are unchanged");
}

#[tokio::test]
async fn wrong_methods_get_405() {
    let app = App::start();
    let ann = register_user(&app.host, "ann").await;
    let read_path = format!("/api/notifications/{UNKNOWN_ID}/read");
    let cases = [
        ("POST", "/api/notifications"),
        ("DELETE", "/api/notifications"),
        ("POST", UNREAD_COUNT_PATH),
        ("GET", read_path.as_str()),
        ("GET", READ_ALL_PATH),
        ("POST", PREFERENCES_PATH),
        ("DELETE", PREFERENCES_PATH),
        ("PUT", "/api/notifications/unsubscribe?token=abc"),
        ("GET", VERIFICATION_REQUEST_PATH),
        ("GET", VERIFY_PATH),
    ];

    for (method, path) in cases {
        let reply = app.host.send(method, path, Some(&ann.token)).await;
        assert_eq!(reply.status, 405, "{method} {path}: {}", reply.text());
    }
}

// ---- preferences ----

#[tokio::test]
async fn preferences_merge_and_reject_invalid() {
    let app = App::start();
    let (ann, bob) = (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await);
    let defaults = preferences(&app.host, &ann).await;

    let first = put_preferences(&app.host, &ann, &json!({"preferences": {"comment": {"email": false}}})).await;
    let second_body = json!({"preferences": {"follow": {"in_app": false}, "tip": {"email": false, "in_app": true}}});
    let second = put_preferences(&app.host, &ann, &second_body).await;
    let stored = preferences(&app.host, &ann).await;

    let mut after_first = default_preferences();
    after_first["comment"]["email"] = json!(false);
    let mut after_second = after_first.clone();
    after_second["follow"]["in_app"] = json!(false);
    after_second["tip"]["email"] = json!(false);
    assert_eq!(defaults, default_preferences(), "the documented defaults");
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json()["preferences"], after_first, "the reply has the full object");
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(second.json()["preferences"], after_second, "the second update keeps the first");
    assert_eq!(stored, after_second, "GET shows the merged preferences");
    assert_eq!(preferences(&app.host, &bob).await, default_preferences(), "another user keeps the defaults");

    let invalid = [
        ("an unknown type", json!({"preferences": {"likes": {"email": true}}})),
        ("an unknown channel", json!({"preferences": {"comment": {"sms": true}}})),
        ("a string value", json!({"preferences": {"comment": {"email": "yes"}}})),
        ("a number value", json!({"preferences": {"comment": {"email": 1}}})),
        ("a null value", json!({"preferences": {"comment": {"email": null}}})),
        ("a type that is not an object", json!({"preferences": {"comment": true}})),
        ("no preferences key", json!({})),
        ("a list", json!({"preferences": [{"comment": {"email": true}}]})),
        ("a string", json!({"preferences": "all"})),
        ("another top-level key", json!({"preferences": {"comment": {"email": true}}, "user": {}})),
        (
            "a valid part next to an invalid one",
            json!({"preferences": {"comment": {"email": true}, "tip": {"email": "no"}}}),
        ),
    ];
    for (what, body) in invalid {
        let reply = put_preferences(&app.host, &ann, &body).await;
        assert_422_on(&reply, "preferences", what);
        assert_eq!(preferences(&app.host, &ann).await, after_second, "{what}: nothing changed");
    }
}

// ---- undoing an action ----

#[tokio::test]
async fn undoing_action_removes_notification() {
    let app = App::start();
    let (ann, bob, slug) = register_two_and_publish(&app.host).await;
    follow(&app.host, &bob, &ann).await;
    let comment_id = add_comment(&app.host, &slug, &bob, "Nice").await;
    favorite(&app.host, &slug, &bob).await;
    let before = inbox(&app.host, &ann).await;
    assert_eq!(types_of(&before), ["favorite", "comment", "follow"]);
    assert_unread(&app.host, &ann, 3, "after three events").await;
    // Removing the read favorite later must leave the unread count alone.
    let favorite_id = only_of_type(&before, "favorite")["id"].as_str().unwrap().to_string();
    assert_eq!(mark_read(&app.host, &ann, &favorite_id).await.status, 200);

    unfollow(&app.host, &bob, &ann).await;
    assert_eq!(types_of(&inbox(&app.host, &ann).await), ["favorite", "comment"], "after unfollow");
    assert_unread(&app.host, &ann, 1, "after unfollow").await;

    delete_comment(&app.host, &slug, &comment_id, &bob).await;
    assert_eq!(types_of(&inbox(&app.host, &ann).await), ["favorite"], "after deleting the comment");
    assert_unread(&app.host, &ann, 0, "after deleting the comment").await;

    unfavorite(&app.host, &slug, &bob).await;
    assert!(inbox(&app.host, &ann).await.is_empty(), "after unfavorite");
    assert_unread(&app.host, &ann, 0, "after removing the read favorite").await;
    assert!(notification_row_ids(&ann.id).await.is_empty(), "no rows are left");
}

// ---- redelivery and outages ----

#[tokio::test]
async fn redelivered_events_apply_once() {
    let _serial = one_at_a_time().await;
    let app = App::start();
    let (ann, bob, slug) = register_two_and_publish(&app.host).await;
    follow(&app.host, &bob, &ann).await;
    let comment_id = add_comment(&app.host, &slug, &bob, "Said twice").await;
    let before = ids_of(&inbox(&app.host, &ann).await);
    let follow_aggregate = format!("{}:{}", bob.id, ann.id);

    let follow_reset = redeliver(PROFILES_SCHEMA, "follow.created", &follow_aggregate).await;
    let comment_reset = redeliver(FEED_SCHEMA, "comment.created", &comment_id).await;
    let profiles = run_dispatch(&app.host, "profiles").await;
    let feed = run_dispatch(&app.host, "feed").await;
    let after = ids_of(&inbox(&app.host, &ann).await);
    let per_source_statement = format!(
        "SELECT source, COUNT(*) FROM {NOTIFICATIONS_SCHEMA}.notifications
         WHERE user_id = ? GROUP BY source ORDER BY source"
    );
    let per_source: Vec<(String, i64)> = query(&per_source_statement, (ann.id.as_str(),)).await;

    assert_eq!(follow_reset, 1, "the follow event had one delivery to notifications");
    assert_eq!(comment_reset, 1, "the comment event had one delivery to notifications");
    for (component, reply) in [("profiles", &profiles), ("feed", &feed)] {
        let delivered = reply.json()["outbox"]["delivered"].as_u64();
        assert!(delivered.is_some_and(|n| n >= 1), "{component}'s dispatch delivered the event again: {}", reply.text());
    }
    assert!(delivered_to_notifications(PROFILES_SCHEMA, "follow.created", &follow_aggregate).await);
    assert!(delivered_to_notifications(FEED_SCHEMA, "comment.created", &comment_id).await);
    assert_eq!(before.len(), 2, "a follow and a comment");
    assert_eq!(after, before, "the inbox is unchanged");
    assert_eq!(per_source.len(), 2, "two sources: {per_source:?}");
    assert!(per_source.iter().all(|(_, count)| *count == 1), "one notification per source: {per_source:?}");
    assert_unread(&app.host, &ann, 2, "after the redelivery").await;
}

#[tokio::test]
async fn outage_repaired_by_dispatch() {
    let _serial = one_at_a_time().await;
    let mut options = app_options();
    options.faults = true;
    let app = App::start_with(options);
    let (ann, bob, slug) = register_two_and_publish(&app.host).await;

    app.host.set_fault("notifications", "unavailable").await;
    // Both helpers panic unless the request succeeds while notifications is down.
    follow(&app.host, &bob, &ann).await;
    add_comment(&app.host, &slug, &bob, "Written during the outage").await;
    let during = list_notifications(&app.host, &ann, "").await;
    app.host.set_fault("notifications", "none").await;
    run_dispatch(&app.host, "profiles").await;
    run_dispatch(&app.host, "feed").await;
    let repaired = inbox(&app.host, &ann).await;
    run_dispatch(&app.host, "profiles").await;
    run_dispatch(&app.host, "feed").await;
    let after_second_dispatch = inbox(&app.host, &ann).await;

    assert_eq!(during.status, 503, "notifications is switched off: {}", during.text());
    assert_eq!(types_of(&repaired), ["comment", "follow"], "{repaired:?}");
    assert_notification(only_of_type(&repaired, "follow"), "follow", Some(&bob));
    assert_notification(only_of_type(&repaired, "comment"), "comment", Some(&bob));
    assert_eq!(ids_of(&after_second_dispatch), ids_of(&repaired), "a second dispatch changes nothing");
    assert_eq!(notification_row_ids(&ann.id).await.len(), 2);
    assert_unread(&app.host, &ann, 2, "after the repair").await;
}

// ---- email verification ----

#[tokio::test]
async fn email_verification_flow() {
    let _serial = one_at_a_time().await;
    let app = App::start();
    let (ann, bob) = (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await);
    let old_address = email_of(&ann.username);
    let new_address = email_of(&unique_name("annnew"));
    let slug = publish(&app.host, &ann).await;
    let at_start = current_user(&app.host, &ann).await;
    // Comments are emailed by default, but this one comes before the address is verified.
    add_comment(&app.host, &slug, &bob, "Before verification").await;

    let requested = request_verification(&app.host, &ann).await;
    let repeated = request_verification(&app.host, &ann).await;
    run_dispatch(&app.host, "notifications").await;
    let to_old_address = app.brevo.emails_to(&old_address);
    let old_token = verification_token(&app.brevo, &old_address);
    let unknown = post_verify(&app.host, json!({"token": "A".repeat(TOKEN_LENGTH)})).await;
    let missing = post_verify(&app.host, json!({})).await;
    let not_string = post_verify(&app.host, json!({"token": 42})).await;
    let unparsable = app.host.request("POST", VERIFY_PATH, &[("content-type", "application/json")], "{\"token\":").await;
    let not_json = app.host.request("POST", VERIFY_PATH, &[("content-type", "text/plain")], old_token.clone()).await;

    let changed = update_email(&app.host, &ann, &new_address).await;
    let stale = post_verify(&app.host, json!({ "token": old_token })).await;
    let after_stale = current_user(&app.host, &ann).await;
    let requested_new = request_verification(&app.host, &ann).await;
    run_dispatch(&app.host, "notifications").await;
    let new_token = verification_token(&app.brevo, &new_address);
    let verified = post_verify(&app.host, json!({ "token": new_token })).await;
    let after_verify = current_user(&app.host, &ann).await;
    let reused = post_verify(&app.host, json!({ "token": new_token })).await;
    let already = request_verification(&app.host, &ann).await;
    run_dispatch(&app.host, "notifications").await;
    let changed_again = update_email(&app.host, &ann, &email_of(&unique_name("annthird"))).await;
    let after_second_change = current_user(&app.host, &ann).await;

    assert_eq!(at_start["emailVerified"], false, "a new user is unverified: {at_start}");
    assert_eq!(requested.status, 202, "{}", requested.text());
    let link = &requested.json()["emailVerification"];
    assert_eq!(link["email"], old_address.as_str(), "{link}");
    assert!(link["expiresAt"].as_str().is_some_and(is_rfc3339), "expiresAt is RFC 3339: {link}");
    assert_eq!(repeated.status, 429, "a second link within the interval: {}", repeated.text());
    let wait = retry_after_seconds(&repeated);
    assert!(wait.is_some_and(|seconds| (1..=300).contains(&seconds)), "Retry-After in seconds: {wait:?}");

    assert_eq!(to_old_address.len(), 1, "the unverified address gets the link and nothing else: {to_old_address:?}");
    assert_eq!(to_old_address[0].to, [old_address.as_str()]);
    assert_eq!(email_header(&to_old_address[0], "List-Unsubscribe"), None, "the verification email has no unsubscribe link");

    for (what, reply) in [("an unknown token", &unknown), ("a missing token", &missing), ("a number", &not_string)] {
        assert_422_on(reply, "token", what);
    }
    assert_eq!(field_errors(&unknown, "token"), ["is invalid or has expired"]);
    assert_eq!(unparsable.status, 400, "{}", unparsable.text());
    assert_eq!(not_json.status, 415, "{}", not_json.text());

    assert_eq!(changed.status, 200, "{}", changed.text());
    assert_eq!(changed.json()["user"]["emailVerified"], false, "{}", changed.text());
    assert_422_on(&stale, "token", "a token for the old address");
    assert_eq!(after_stale["emailVerified"], false, "{after_stale}");
    assert_eq!(requested_new.status, 202, "the new address has its own interval: {}", requested_new.text());
    assert_eq!(requested_new.json()["emailVerification"]["email"], new_address.as_str());

    assert_eq!(verified.status, 200, "{}", verified.text());
    assert_eq!(
        verified.json()["user"],
        json!({"username": ann.username, "email": new_address, "emailVerified": true}),
        "{}",
        verified.text()
    );
    assert_eq!(after_verify["emailVerified"], true, "{after_verify}");
    assert_422_on(&reused, "token", "a used token");
    assert_422_on(&already, "email", "a verified address");
    assert_eq!(app.brevo.emails_to(&new_address).len(), 1, "the earlier comment sends no late email");
    assert_eq!(app.brevo.emails_to(&old_address).len(), 1, "nothing more went to the old address");
    assert_eq!(changed_again.status, 200, "{}", changed_again.text());
    assert_eq!(changed_again.json()["user"]["emailVerified"], false, "{}", changed_again.text());
    assert_eq!(after_second_change["emailVerified"], false, "{after_second_change}");
}

// ---- unsubscribe links ----

#[tokio::test]
async fn unsubscribe_link_turns_email_off() {
    let _serial = one_at_a_time().await;
    let app = App::start();
    let (ann, bob) = (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await);
    let address = email_of(&ann.username);
    verify_email(&app, &ann).await;
    let slug = publish(&app.host, &ann).await;
    add_comment(&app.host, &slug, &bob, "Emailed").await;
    run_dispatch(&app.host, "notifications").await;
    let emails = app.brevo.emails_to(&address);
    let comment_email = emails.last().unwrap_or_else(|| panic!("no email reached the provider"));
    let path = unsubscribe_path(comment_email);
    let tampered_path = with_tampered_token(&path);
    // This comment's email stays pending, because no dispatch runs before the unsubscribe.
    let pending = comment_and_find_email(&app.host, &slug, &bob, &ann).await;

    let page = app.host.get(&path).await;
    let after_page = preferences(&app.host, &ann).await;
    let tampered_get = app.host.get(&tampered_path).await;
    let tampered_post = post_unsubscribe(&app.host, &tampered_path).await;
    let after_tampered = preferences(&app.host, &ann).await;
    let confirmed = post_unsubscribe(&app.host, &path).await;
    let after_confirm = preferences(&app.host, &ann).await;
    let pending_after = email_row(&pending.id).await;
    let sent_before = app.brevo.emails_to(&address).len();
    add_comment(&app.host, &slug, &bob, "Not emailed").await;
    run_dispatch(&app.host, "notifications").await;
    let sent_after = app.brevo.emails_to(&address).len();
    let items = inbox(&app.host, &ann).await;

    assert_eq!(emails.len(), 2, "the verification link and the comment email: {emails:?}");
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(is_html(&page), "the page is HTML: {:?}", page.header("content-type"));
    let html = page.text().to_ascii_lowercase();
    assert!(html.contains("<form"), "the page has a form: {html}");
    assert!(html.contains("method=\"post\"") || html.contains("method='post'"), "the form posts: {html}");
    assert_eq!(after_page, default_preferences(), "opening the page changes nothing");
    assert_422_on(&tampered_get, "token", "GET with a tampered token");
    assert_422_on(&tampered_post, "token", "POST with a tampered token");
    assert_eq!(after_tampered, default_preferences(), "a tampered token changes nothing");

    assert_eq!(confirmed.status, 200, "{}", confirmed.text());
    assert!(is_html(&confirmed), "the confirmation is HTML: {:?}", confirmed.header("content-type"));
    assert_eq!(after_confirm["comment"], json!({"in_app": true, "email": false}), "only comment email is off");
    let mut others = after_confirm.clone();
    others["comment"] = default_preferences()["comment"].clone();
    assert_eq!(others, default_preferences(), "the other types are unchanged");
    assert_eq!(pending.status, "pending", "{pending:?}");
    assert_eq!(pending_after.status, "dropped", "the pending comment email is dropped: {pending_after:?}");
    assert_eq!(sent_after, sent_before, "neither the dropped nor the next comment email is sent");
    assert_eq!(types_of(&items), ["comment", "comment", "comment"], "the inbox still gets comments");
}

// ---- email delivery ----

#[tokio::test]
async fn failed_emails_retry_then_give_up() {
    let _serial = one_at_a_time().await;
    let app = App::start();
    let (ann, bob) = (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await);
    let address = email_of(&ann.username);
    verify_email(&app, &ann).await;
    let slug = publish(&app.host, &ann).await;
    let sends = || {
        let requests = app.brevo.requests().into_iter();
        let to_recipient = |request: &RecordedRequest| String::from_utf8_lossy(&request.body).contains(&address);
        requests.filter(|request| request.path == "/v3/smtp/email" && to_recipient(request)).collect::<Vec<_>>()
    };
    let reset_next_attempt = format!("UPDATE {NOTIFICATIONS_SCHEMA}.emails SET next_attempt_at = 0 WHERE id = ?");

    // A 503 leaves the email pending, due again 30 s later.
    app.brevo.fail_next(1, 503);
    let retried = comment_and_find_email(&app.host, &slug, &bob, &ann).await;
    let sends_before = sends().len();
    let delivered_before = app.brevo.emails_to(&address).len();
    let dispatched_at = now_micros();
    run_dispatch(&app.host, "notifications").await;
    let after_failure = email_row(&retried.id).await;
    let failed_sends: Vec<u16> = sends()[sends_before..].iter().map(|request| request.status).collect();
    assert_eq!(execute(&reset_next_attempt, (retried.id.as_str(),)).await, 1);
    run_dispatch(&app.host, "notifications").await;
    let after_retry = email_row(&retried.id).await;
    let delivered_after_retry = app.brevo.emails_to(&address).len();

    assert_eq!(retried.status, "pending", "{retried:?}");
    assert_eq!(failed_sends, [503], "the dispatch tried once");
    assert_eq!(after_failure.status, "pending", "{after_failure:?}");
    assert_eq!(after_failure.attempts, 1, "{after_failure:?}");
    assert!(after_failure.last_error.as_deref().is_some_and(|error| error.contains("503")), "{after_failure:?}");
    let delay = after_failure.next_attempt_at - dispatched_at;
    assert!((25 * MICROS_PER_SECOND..=35 * MICROS_PER_SECOND).contains(&delay), "the first retry waits 30 s: {delay} µs");
    assert_eq!(after_retry.status, "sent", "{after_retry:?}");
    assert_eq!(delivered_after_retry, delivered_before + 1, "the retry reached the provider");

    // The eighth failed attempt marks the email failed, and later dispatch runs skip it.
    let exhausted = comment_and_find_email(&app.host, &slug, &bob, &ann).await;
    let set_attempts = format!("UPDATE {NOTIFICATIONS_SCHEMA}.emails SET attempts = 7 WHERE id = ?");
    assert_eq!(execute(&set_attempts, (exhausted.id.as_str(),)).await, 1);
    app.brevo.fail_next(1, 503);
    run_dispatch(&app.host, "notifications").await;
    let given_up = email_row(&exhausted.id).await;
    execute(&reset_next_attempt, (exhausted.id.as_str(),)).await;
    let sends_before_idle_run = sends().len();
    run_dispatch(&app.host, "notifications").await;
    let sends_after_idle_run = sends().len();

    assert_eq!(given_up.status, "failed", "{given_up:?}");
    assert_eq!(given_up.attempts, 8, "{given_up:?}");
    assert!(given_up.last_error.as_deref().is_some_and(|error| error.contains("503")), "{given_up:?}");
    assert_eq!(sends_after_idle_run, sends_before_idle_run, "a failed email is not sent again");

    // A 400 means the request itself is wrong, so the email fails at once.
    app.brevo.fail_next(1, 400);
    let rejected = comment_and_find_email(&app.host, &slug, &bob, &ann).await;
    run_dispatch(&app.host, "notifications").await;
    let rejected_after = email_row(&rejected.id).await;

    assert_eq!(rejected_after.status, "failed", "{rejected_after:?}");
    assert_eq!(rejected_after.attempts, 1, "{rejected_after:?}");
    assert!(rejected_after.last_error.as_deref().is_some_and(|error| error.contains("400")), "{rejected_after:?}");
    assert_eq!(app.brevo.emails_to(&address).len(), delivered_after_retry, "no failed email was delivered");
}

// ---- retention ----

#[tokio::test]
async fn retention_purges_old_notifications() {
    let _serial = one_at_a_time().await;
    let app = App::start();
    let (ann, bob, slug) = register_two_and_publish(&app.host).await;
    follow(&app.host, &bob, &ann).await;
    add_comment(&app.host, &slug, &bob, "Aging").await;
    favorite(&app.host, &slug, &bob).await;
    let before = inbox(&app.host, &ann).await;
    let id_of_type = |kind: &str| only_of_type(&before, kind)["id"].as_str().unwrap().to_string();
    let (follow_id, comment_id, favorite_id) = (id_of_type("follow"), id_of_type("comment"), id_of_type("favorite"));
    assert_eq!(mark_read(&app.host, &ann, &favorite_id).await.status, 200);
    assert_unread(&app.host, &ann, 2, "before the purge").await;

    // The unread follow and the read favorite pass the 90-day limit, but the comment stays just inside it.
    let set_created_at = format!("UPDATE {NOTIFICATIONS_SCHEMA}.notifications SET created_at = ? WHERE id = ?");
    let now = now_micros();
    for (id, days) in [(&follow_id, 91), (&favorite_id, 91), (&comment_id, 89)] {
        assert_eq!(execute(&set_created_at, (now - days * MICROS_PER_DAY, id.as_str())).await, 1, "{id}");
    }
    run_dispatch(&app.host, "notifications").await;
    let after = inbox(&app.host, &ann).await;

    assert_eq!(ids_of(&after), [comment_id.as_str()], "only the comment is left: {after:?}");
    assert_eq!(notification_row_ids(&ann.id).await, BTreeSet::from([comment_id]), "the rows are gone");
    assert_unread(&app.host, &ann, 1, "the purged unread follow no longer counts").await;
}

#[tokio::test]
async fn verified_address_gets_no_stale_verification_link() {
    let _serial = one_at_a_time().await;
    let app = App::start();
    let user = register_user(&app.host, "staleverify").await;
    let address = email_of(&user.username);

    // The link is queued; read its token from the outbox before dispatch sends it.
    assert_eq!(request_verification(&app.host, &user).await.status, 202);
    let mut db = admin_db().await;
    let bodies: Vec<String> = db
        .exec(
            format!("SELECT text_body FROM {NOTIFICATIONS_SCHEMA}.emails WHERE user_id = ? AND kind = 'verification'"),
            (user.id.as_str(),),
        )
        .await
        .unwrap();
    let token = bodies.iter().find_map(|body| token_in(body)).expect("the queued link carries a token");
    let verified = post_verify(&app.host, json!({ "token": token })).await;
    assert_eq!(verified.status, 200, "{}", verified.text());

    run_dispatch(&app.host, "notifications").await;

    assert!(app.brevo.emails_to(&address).is_empty(), "a verified address got its verification link again");
    let statuses: Vec<String> = db
        .exec(
            format!("SELECT status FROM {NOTIFICATIONS_SCHEMA}.emails WHERE user_id = ? AND kind = 'verification'"),
            (user.id.as_str(),),
        )
        .await
        .unwrap();
    assert_eq!(statuses, ["dropped"]);
}

#[tokio::test]
async fn email_turned_off_after_queueing_is_not_sent() {
    let _serial = one_at_a_time().await;
    let app = App::start();
    let (ann, bob) = (register_user(&app.host, "ann").await, register_user(&app.host, "bob").await);
    let address = email_of(&ann.username);
    verify_email(&app, &ann).await;
    let slug = publish(&app.host, &ann).await;
    let sent_before = app.brevo.emails_to(&address).len();

    // The comment's email is queued; before dispatch sends it, Ann turns comment email off.
    let queued = comment_and_find_email(&app.host, &slug, &bob, &ann).await;
    set_preference(&app.host, &ann, "comment", "email", false).await;
    run_dispatch(&app.host, "notifications").await;

    assert_eq!(queued.status, "pending", "{queued:?}");
    assert_eq!(email_row(&queued.id).await.status, "dropped");
    assert_eq!(app.brevo.emails_to(&address).len(), sent_before, "the queued email was not sent");
}
