//! Events between components, through a transactional outbox.
//!
//! **Producer.** A route that changes state other components keep calls
//! [`Outbox::record`] inside its transaction. That bumps the aggregate's
//! version (`event_versions`), writes the event (`outbox_events`) and one
//! delivery row per consumer (`outbox_deliveries`), all committed or none.
//! The deliveries are written already leased to the request for
//! [`PUSH_LEASE_SECONDS`], so a dispatch run leaves them alone while the
//! request pushes them. After the commit the route calls [`Outbox::push`],
//! which sends each delivery over service chaining with a
//! [`PUSH_DEADLINE`] and records the outcome. A failed push never fails the
//! request: the delivery stays pending and [`Outbox::dispatch`] retries it
//! with backoff.
//!
//! **Dispatch.** `POST /ops/<component>/dispatch` claims at most
//! [`DISPATCH_BATCH`] due deliveries with `SELECT … FOR UPDATE SKIP LOCKED`,
//! leases them to the run in the same short transaction, commits, and only
//! then pushes. Two runs at once claim disjoint rows. Settling a delivery
//! checks the lease owner, so a run whose lease expired cannot overwrite a
//! later run's outcome.
//!
//! **Consumer.** [`receive`] serves `POST /internal/<component>/events`.
//! Each event is applied in one transaction that records its id
//! (`event_inbox`, kept [`RETENTION_DAYS`] days: a redelivery within that
//! time changes nothing) and compares its aggregate version with the one
//! stored (`aggregate_state`). Only a newer version is applied; deletions stay
//! as tombstones (a row with `deleted = 1`), so an older event that arrives
//! late cannot bring the aggregate back. [`resync`] rebuilds a consumer that
//! joined late or lost its state from the producer's
//! `GET /internal/<producer>/resync`, through the same version check.
//!
//! Tables: producers create `event_versions`, `outbox_events` and
//! `outbox_deliveries`; consumers `event_inbox`, `aggregate_state` and
//! `resync_state`, each with the columns docs/architecture.md lists.

use std::time::Duration;

use futures::future::join_all;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use spin_sdk::http::{Method, Request};

use crate::config::{self, ConfigError};
use crate::db::{Db, DbError, Param, Row, Statements, Tx, codes};
use crate::error::ApiError;
use crate::http::{Ctx, Response};
use crate::params;
use crate::service::{CallError, ServiceKey};
use crate::time::now_micros;

/// How long a producer's request waits for one push before leaving the
/// delivery to dispatch.
pub const PUSH_DEADLINE: Duration = Duration::from_millis(300);
/// How long a dispatch run waits for one push.
pub const DISPATCH_DEADLINE: Duration = Duration::from_secs(2);
/// How long fresh deliveries stay leased to the request that pushes them.
pub const PUSH_LEASE_SECONDS: i64 = 10;
/// How long a dispatch run's claim lasts; a run that dies frees its rows after this.
pub const DISPATCH_LEASE_SECONDS: i64 = 60;
/// The maximum number of deliveries one dispatch run claims.
pub const DISPATCH_BATCH: u32 = 50;
/// The maximum number of pushes in flight at once within one request.
pub const PUSH_CONCURRENCY: usize = 8;
/// The wait after the first failed retry; it doubles with each further
/// failure up to [`RETRY_CAP_SECONDS`]. A failed push from the producer's
/// request is due again at once, so the next dispatch run retries it.
pub const RETRY_BASE_SECONDS: i64 = 5;
pub const RETRY_CAP_SECONDS: i64 = 600;
/// How long consumers keep processed event ids and producers keep delivered events.
pub const RETENTION_DAYS: i64 = 7;
/// The maximum number of rows one dispatch run purges per table.
pub const PURGE_BATCH: u32 = 1000;
/// Resync page sizes: the default and the most a producer returns.
pub const RESYNC_PAGE: u32 = 100;
pub const RESYNC_MAX_PAGE: u32 = 500;
/// The maximum number of resync pages one dispatch run fetches; the rest continue next run.
pub const RESYNC_PAGES_PER_RUN: u32 = 20;
/// The largest event body a consumer accepts.
pub const EVENT_BODY_LIMIT: usize = 64 * 1024;

const SECOND: i64 = 1_000_000;

/// An event as it travels between components and as it is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// A UUIDv7 made by the producer; a snapshot from resync has `snapshot`.
    pub id: String,
    /// The component that produced it.
    pub producer: String,
    /// `<aggregate>.<change>`, such as `user.updated` or `follow.deleted`.
    #[serde(rename = "type")]
    pub kind: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// Bumped in the producer's transaction; consumers apply only newer versions.
    pub aggregate_version: u64,
    /// RFC 3339, UTC.
    pub occurred_at: String,
    pub payload: Value,
}

/// The id every resync snapshot carries: it is not an event and is never recorded.
pub const SNAPSHOT_ID: &str = "snapshot";

impl Event {
    /// Deletions (`*.deleted`) leave a tombstone in the consumer's `aggregate_state`.
    pub fn is_deletion(&self) -> bool {
        self.kind.ends_with(".deleted")
    }

    /// Builds a resync snapshot of an aggregate's current state at `version`.
    pub fn snapshot(producer: &str, aggregate_type: &str, aggregate_id: &str, version: u64, payload: Value) -> Self {
        Self {
            id: SNAPSHOT_ID.into(),
            producer: producer.into(),
            kind: format!("{aggregate_type}.snapshot"),
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
            aggregate_version: version,
            occurred_at: crate::time::rfc3339(now_micros()),
            payload,
        }
    }

    fn from_row(producer: &str, row: &Row) -> Result<Self, DbError> {
        let payload: String = row.get("payload")?;
        Ok(Self {
            id: row.get("id")?,
            producer: producer.into(),
            kind: row.get("type")?,
            aggregate_type: row.get("aggregate_type")?,
            aggregate_id: row.get("aggregate_id")?,
            aggregate_version: row.get("aggregate_version")?,
            occurred_at: crate::time::rfc3339(row.get("occurred_at")?),
            payload: serde_json::from_str(&payload).map_err(|_| DbError::decode("event payload is not JSON".into()))?,
        })
    }
}

/// Builds `(?, ?), (?, ?), …` for `count` rows of `width` values.
fn placeholders(count: usize, width: usize) -> String {
    let row = format!("({})", vec!["?"; width].join(", "));
    vec![row; count].join(", ")
}

/// One delivery: an event for one consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Delivery {
    event_id: String,
    consumer: String,
}

/// The outcome of a push or dispatch run, for its response and the log.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct PushReport {
    pub delivered: u32,
    pub failed: u32,
}

/// The producer's side: who consumes this component's events, and the
/// request that records and pushes them.
pub struct Outbox {
    producer: &'static str,
    consumers: Vec<String>,
    /// The consumers of events recorded by [`Outbox::record_for`], by event id.
    narrowed: std::cell::RefCell<std::collections::HashMap<String, Vec<String>>>,
    /// The request id, written as the lease owner of what this request claims.
    owner: String,
}

impl Outbox {
    /// Reads the consumers from the `event_consumers` variable: component
    /// names separated by commas, possibly none.
    pub async fn load(ctx: &Ctx) -> Result<Self, ApiError> {
        let value = match spin_sdk::variables::get("event_consumers").await {
            Ok(value) => value,
            Err(_) => return Err(ConfigError::new("event_consumers", "is required but not set").into()),
        };
        Ok(Self {
            producer: ctx.component,
            consumers: parse_consumers(&value)?,
            narrowed: Default::default(),
            owner: ctx.request_id.clone(),
        })
    }

    /// Records an event in the caller's transaction: bumps the aggregate's
    /// version, writes the event and its deliveries. Returns the event, to
    /// be pushed after the commit.
    pub async fn record(
        &self,
        tx: &Tx<'_>,
        kind: &str,
        aggregate_type: &str,
        aggregate_id: &str,
        payload: Value,
    ) -> Result<Event, DbError> {
        self.record_to(tx, &self.consumers, kind, aggregate_type, aggregate_id, payload).await
    }

    /// Records an event as [`Outbox::record`] does, delivered only to those
    /// of the configured consumers that `only` names: for events carrying data
    /// that other consumers have no need to see, such as an email address.
    pub async fn record_for(
        &self,
        tx: &Tx<'_>,
        only: &[&str],
        kind: &str,
        aggregate_type: &str,
        aggregate_id: &str,
        payload: Value,
    ) -> Result<Event, DbError> {
        let consumers: Vec<String> = self.consumers.iter().filter(|c| only.contains(&c.as_str())).cloned().collect();
        let event = self.record_to(tx, &consumers, kind, aggregate_type, aggregate_id, payload).await?;
        self.narrowed.borrow_mut().insert(event.id.clone(), consumers);
        Ok(event)
    }

    async fn record_to(
        &self,
        tx: &Tx<'_>,
        consumers: &[String],
        kind: &str,
        aggregate_type: &str,
        aggregate_id: &str,
        payload: Value,
    ) -> Result<Event, DbError> {
        tx.execute(
            "INSERT INTO event_versions (aggregate_type, aggregate_id, version) VALUES (?, ?, 1)
             ON DUPLICATE KEY UPDATE version = version + 1",
            params![aggregate_type, aggregate_id],
        )
        .await?;
        let version: u64 = tx
            .query_one(
                "SELECT version FROM event_versions WHERE aggregate_type = ? AND aggregate_id = ?",
                params![aggregate_type, aggregate_id],
            )
            .await?
            .ok_or_else(|| DbError::decode("the version row just written is missing".into()))?
            .get("version")?;

        let now = now_micros();
        let event = Event {
            id: crate::ids::uuid_v7(),
            producer: self.producer.into(),
            kind: kind.into(),
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
            aggregate_version: version,
            occurred_at: crate::time::rfc3339(now),
            payload,
        };
        tx.execute(
            "INSERT INTO outbox_events (id, type, aggregate_type, aggregate_id, aggregate_version, occurred_at, payload)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
            params![&event.id, kind, aggregate_type, aggregate_id, version, now, event.payload.to_string()],
        )
        .await?;
        if !consumers.is_empty() {
            let statement = format!(
                "INSERT INTO outbox_deliveries (event_id, consumer, next_attempt_at, lease_until, lease_owner) VALUES {}",
                placeholders(consumers.len(), 5)
            );
            let mut values = Vec::with_capacity(consumers.len() * 5);
            for consumer in consumers {
                values.extend(params![&event.id, consumer, now, now + PUSH_LEASE_SECONDS * SECOND, &self.owner]);
            }
            tx.execute(&statement, values).await?;
        }
        Ok(event)
    }

    /// Pushes events recorded by this request, after its commit, to every
    /// consumer within [`PUSH_DEADLINE`], and records the outcomes. Failures
    /// are noted in the request's log line and left to dispatch.
    pub async fn push(&self, ctx: &Ctx, db: &Db, service: &ServiceKey, events: &[Event]) -> PushReport {
        let narrowed = self.narrowed.borrow().clone();
        let deliveries: Vec<(Delivery, &Event)> = events
            .iter()
            .flat_map(|event| {
                let consumers = narrowed.get(&event.id).unwrap_or(&self.consumers).clone();
                consumers.into_iter().map(move |consumer| (Delivery { event_id: event.id.clone(), consumer }, event))
            })
            .collect();
        self.deliver(ctx, db, service, deliveries, PUSH_DEADLINE).await
    }

    async fn deliver(
        &self,
        ctx: &Ctx,
        db: &Db,
        service: &ServiceKey,
        deliveries: Vec<(Delivery, &Event)>,
        deadline: Duration,
    ) -> PushReport {
        let mut outcomes = Vec::with_capacity(deliveries.len());
        for chunk in deliveries.chunks(PUSH_CONCURRENCY) {
            let sends = chunk.iter().map(|(delivery, event)| async move {
                let path = format!("/internal/{}/events", delivery.consumer);
                let body = serde_json::to_value(event).unwrap_or(Value::Null);
                let outcome = service.call(ctx, &delivery.consumer, Method::POST, &path, Some(&body), deadline).await;
                (delivery.clone(), outcome.map(|_| ()))
            });
            outcomes.extend(join_all(sends).await);
        }
        let report = self.settle(ctx, db, &outcomes).await;
        if report.failed > 0 {
            let failures: Vec<String> = outcomes
                .iter()
                .filter_map(|(delivery, outcome)| outcome.as_ref().err().map(|e| format!("{}: {e}", delivery.consumer)))
                .collect();
            ctx.note_error(format!("{} event deliveries pending ({})", report.failed, failures.join(", ")));
        }
        report
    }

    /// Records delivered and failed deliveries, for rows this request still leases.
    async fn settle(&self, ctx: &Ctx, db: &Db, outcomes: &[(Delivery, Result<(), CallError>)]) -> PushReport {
        let now = now_micros();
        let delivered: Vec<&Delivery> = outcomes.iter().filter(|(_, o)| o.is_ok()).map(|(d, _)| d).collect();
        let mut report = PushReport { delivered: delivered.len() as u32, failed: 0 };
        if !delivered.is_empty() {
            let statement = format!(
                "UPDATE outbox_deliveries
                 SET attempts = attempts + 1, delivered_at = ?, lease_until = 0, lease_owner = NULL, last_error = NULL
                 WHERE lease_owner = ? AND (event_id, consumer) IN ({})",
                placeholders(delivered.len(), 2)
            );
            let mut values = params![now, &self.owner];
            for delivery in &delivered {
                values.extend(params![&delivery.event_id, &delivery.consumer]);
            }
            if let Err(error) = db.execute(&statement, values).await {
                // The consumers have the events; the lease runs out and a
                // dispatch run sends them again, which the consumers ignore.
                ctx.note_error(format!("recording deliveries failed: {error}"));
            }
        }
        for (delivery, outcome) in outcomes {
            let Err(error) = outcome else { continue };
            report.failed += 1;
            let jitter = i64::from(crate::ids::random_u32() % 1000) * 1000;
            // `next_attempt_at` is assigned before `attempts`, so it reads the old count.
            let result = db
                .execute(
                    "UPDATE outbox_deliveries
                     SET next_attempt_at = ? + IF(attempts = 0, 0, ? + LEAST(?, ? * POW(2, LEAST(attempts - 1, 16)))),
                         attempts = attempts + 1, lease_until = 0, lease_owner = NULL, last_error = ?
                     WHERE event_id = ? AND consumer = ? AND lease_owner = ?",
                    params![
                        now,
                        jitter,
                        RETRY_CAP_SECONDS * SECOND,
                        RETRY_BASE_SECONDS * SECOND,
                        error.to_string(),
                        &delivery.event_id,
                        &delivery.consumer,
                        &self.owner
                    ],
                )
                .await;
            if let Err(error) = result {
                ctx.note_error(format!("recording a failed delivery failed: {error}"));
            }
        }
        report
    }

    /// Runs dispatch on the outbox: claims due deliveries, pushes them,
    /// records the outcomes, then purges delivered events past retention.
    pub async fn dispatch(&self, ctx: &Ctx, db: &Db, service: &ServiceKey) -> Result<Value, ApiError> {
        let now = now_micros();
        let claimed: Vec<Delivery> = db
            .transaction(async |tx| {
                let rows = tx
                    .query(
                        "SELECT event_id, consumer FROM outbox_deliveries
                         WHERE delivered_at IS NULL AND next_attempt_at <= ? AND lease_until <= ?
                         ORDER BY next_attempt_at LIMIT ? FOR UPDATE SKIP LOCKED",
                        params![now, now, DISPATCH_BATCH],
                    )
                    .await?;
                let claimed = rows
                    .iter()
                    .map(|row| Ok(Delivery { event_id: row.get("event_id")?, consumer: row.get("consumer")? }))
                    .collect::<Result<Vec<_>, DbError>>()?;
                if !claimed.is_empty() {
                    let statement = format!(
                        "UPDATE outbox_deliveries SET lease_until = ?, lease_owner = ? WHERE (event_id, consumer) IN ({})",
                        placeholders(claimed.len(), 2)
                    );
                    let mut values = params![now + DISPATCH_LEASE_SECONDS * SECOND, &self.owner];
                    for delivery in &claimed {
                        values.extend(params![&delivery.event_id, &delivery.consumer]);
                    }
                    tx.execute(&statement, values).await?;
                }
                Ok(claimed)
            })
            .await?;

        let mut report = PushReport::default();
        if !claimed.is_empty() {
            let mut ids: Vec<&str> = claimed.iter().map(|d| d.event_id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            let statement = format!(
                "SELECT id, type, aggregate_type, aggregate_id, aggregate_version, occurred_at, payload
                 FROM outbox_events WHERE id IN ({})",
                vec!["?"; ids.len()].join(", ")
            );
            let rows = db.query(&statement, ids.iter().map(|id| Param::from(*id)).collect()).await?;
            let events = rows
                .iter()
                .map(|row| Event::from_row(self.producer, row))
                .collect::<Result<Vec<_>, DbError>>()?;
            let deliveries = claimed
                .into_iter()
                .filter_map(|delivery| {
                    let event = events.iter().find(|e| e.id == delivery.event_id)?;
                    Some((delivery, event))
                })
                .collect();
            report = self.deliver(ctx, db, service, deliveries, DISPATCH_DEADLINE).await;
        }

        db.execute(
            "DELETE FROM outbox_events
             WHERE occurred_at < ?
               AND NOT EXISTS (SELECT 1 FROM outbox_deliveries d WHERE d.event_id = outbox_events.id AND d.delivered_at IS NULL)
             ORDER BY occurred_at LIMIT ?",
            params![now - RETENTION_DAYS * 86_400 * SECOND, PURGE_BATCH],
        )
        .await?;
        Ok(json!({ "delivered": report.delivered, "failed": report.failed }))
    }
}

/// Parses `event_consumers`: names of a-z, 0-9, `-` and `_`, separated by commas.
fn parse_consumers(value: &str) -> Result<Vec<String>, ConfigError> {
    let names: Vec<String> = value.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_string).collect();
    let valid = |name: &String| {
        name.len() <= 32 && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    };
    if names.iter().all(valid) {
        Ok(names)
    } else {
        Err(ConfigError::new("event_consumers", "must be component names separated by commas"))
    }
}

/// The consumer's side: what it keeps of which producer, and how.
// Used with static dispatch inside one-threaded components only.
#[allow(async_fn_in_trait)]
pub trait Projection {
    /// Returns the `(producer, aggregate type)` pairs this consumer keeps;
    /// events of other aggregates are acknowledged and ignored.
    fn subscriptions(&self) -> &'static [(&'static str, &'static str)];

    /// Returns the subscriptions that [`resync`] rebuilds from their
    /// producers' snapshots: all of them unless a consumer keeps aggregates
    /// whose past it must not replay (notifications would notify again).
    fn resyncs(&self) -> &'static [(&'static str, &'static str)] {
        self.subscriptions()
    }

    /// Applies an event newer than anything stored for its aggregate, inside
    /// the transaction that records it. A deletion must remove what the
    /// aggregate left in the read model.
    async fn apply(&self, tx: &Tx<'_>, event: &Event) -> Result<(), ApiError>;

    /// Runs after the transaction committed (to refresh a cache entry).
    async fn applied(&self, _event: &Event) {}
}

/// What a consumer did with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Applied,
    /// Its id was processed before.
    Duplicate,
    /// The consumer already has this aggregate version or a newer one.
    Stale,
    /// Not an aggregate this consumer keeps.
    Ignored,
}

/// Serves `POST /internal/<component>/events`: checks the service token,
/// reads the event, applies it once.
pub async fn receive(
    db: &Db,
    service: &ServiceKey,
    projection: &impl Projection,
    request: Request,
) -> Result<Response, ApiError> {
    let caller = service.guard(request.headers())?;
    let event = parse_event(crate::http::read_json(request, EVENT_BODY_LIMIT).await?, &caller)?;
    let outcome = apply(db, projection, &event, true).await?;
    Ok(crate::http::json(http::StatusCode::OK, &json!({ "outcome": outcome })))
}

/// Reads an event envelope sent by the component `caller`, which must be
/// its producer: a component may only deliver its own events.
pub fn parse_event(body: Value, caller: &str) -> Result<Event, ApiError> {
    let event: Event = serde_json::from_value(body).map_err(|error| {
        ApiError::invalid("event", format!("is not an event envelope ({})", serde_error_kind(&error)))
    })?;
    if !crate::ids::is_uuid(&event.id) {
        return Err(ApiError::invalid("id", "must be a UUID"));
    }
    if event.producer != caller {
        return Err(ApiError::Forbidden("a component may only deliver its own events".into()));
    }
    Ok(event)
}

/// Describes a deserialisation error by its category, never by the input.
fn serde_error_kind(error: &serde_json::Error) -> &'static str {
    match error.classify() {
        serde_json::error::Category::Data => "a field is missing, unknown or of the wrong type",
        _ => "unreadable",
    }
}

/// Applies one event if it is newer than what the consumer holds, recording
/// its id when `record` (snapshots from resync are not recorded).
pub async fn apply(db: &Db, projection: &impl Projection, event: &Event, record: bool) -> Result<Outcome, ApiError> {
    let subscribed = projection
        .subscriptions()
        .iter()
        .any(|(producer, aggregate)| *producer == event.producer && *aggregate == event.aggregate_type);
    if !subscribed {
        return Ok(Outcome::Ignored);
    }
    let outcome = db
        .transaction(async |tx| {
            if record {
                let inserted = tx
                    .execute(
                        "INSERT INTO event_inbox (event_id, producer, received_at) VALUES (?, ?, ?)",
                        params![&event.id, &event.producer, now_micros()],
                    )
                    .await;
                match inserted {
                    Err(error) if error.code() == Some(codes::DUPLICATE_KEY) => return Ok(Outcome::Duplicate),
                    other => other?,
                }
            }
            let stored = tx
                .query_one(
                    "SELECT version FROM aggregate_state
                     WHERE producer = ? AND aggregate_type = ? AND aggregate_id = ? FOR UPDATE",
                    params![&event.producer, &event.aggregate_type, &event.aggregate_id],
                )
                .await?;
            if let Some(row) = stored
                && row.get::<u64>("version")? >= event.aggregate_version
            {
                return Ok(Outcome::Stale);
            }
            tx.execute(
                "INSERT INTO aggregate_state (producer, aggregate_type, aggregate_id, version, deleted, updated_at)
                 VALUES (?, ?, ?, ?, ?, ?)
                 ON DUPLICATE KEY UPDATE version = VALUES(version), deleted = VALUES(deleted), updated_at = VALUES(updated_at)",
                params![
                    &event.producer,
                    &event.aggregate_type,
                    &event.aggregate_id,
                    event.aggregate_version,
                    event.is_deletion(),
                    now_micros()
                ],
            )
            .await?;
            projection.apply(tx, event).await?;
            Ok(Outcome::Applied)
        })
        .await?;
    if outcome == Outcome::Applied {
        projection.applied(event).await;
    }
    Ok(outcome)
}

/// A producer's resync request: `?aggregate=<type>&after=<id>&limit=<n>`,
/// or `?aggregate=<type>&id=<id>` for one aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResyncQuery {
    pub aggregate_type: String,
    /// Aggregates with ids after this one, in id order ("" for the first page).
    pub after: String,
    pub limit: u32,
    /// Only this aggregate, for a consumer missing one it needs now.
    pub id: Option<String>,
}

/// Characters allowed in aggregate types and ids on the resync query string,
/// which therefore needs no percent-encoding.
fn is_plain_id(text: &str) -> bool {
    text.len() <= 128 && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

impl ResyncQuery {
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let mut parsed = Self { aggregate_type: String::new(), after: String::new(), limit: RESYNC_PAGE, id: None };
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "aggregate" if is_plain_id(value) => parsed.aggregate_type = value.into(),
                "after" if is_plain_id(value) => parsed.after = value.into(),
                "id" if is_plain_id(value) && !value.is_empty() => parsed.id = Some(value.into()),
                "limit" => {
                    parsed.limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=RESYNC_MAX_PAGE).contains(n))
                        .ok_or_else(|| ApiError::invalid("limit", format!("must be 1 to {RESYNC_MAX_PAGE}")))?;
                }
                "aggregate" | "after" | "id" => {
                    return Err(ApiError::invalid(name, "has characters outside A-Z a-z 0-9 - _ . :"));
                }
                _ => return Err(ApiError::invalid(name, "is not a known parameter")),
            }
        }
        if parsed.aggregate_type.is_empty() {
            return Err(ApiError::invalid("aggregate", "can't be blank"));
        }
        Ok(parsed)
    }

    /// Builds the response: the snapshots, and the cursor of the next page
    /// (`null` on the last one).
    pub fn response(&self, snapshots: Vec<Event>) -> Response {
        let next = (snapshots.len() as u32 >= self.limit)
            .then(|| snapshots.last().map(|e| e.aggregate_id.clone()))
            .flatten();
        crate::http::json(http::StatusCode::OK, &json!({ "events": snapshots, "next": next }))
    }
}

#[derive(Deserialize)]
struct ResyncPage {
    events: Vec<Event>,
    next: Option<String>,
}

/// Rebuilds what the consumer keeps of each subscription whose resync has
/// not finished, from the producers' resync endpoints, at most `max_pages`
/// pages in all. A subscription without a `resync_state` row (a consumer
/// that just joined, or one whose state was emptied) starts from the first
/// page. Returns how many snapshots were applied.
pub async fn resync(
    ctx: &Ctx,
    db: &Db,
    service: &ServiceKey,
    projection: &impl Projection,
    max_pages: u32,
) -> Result<u32, ApiError> {
    let mut pages = 0;
    let mut applied = 0;
    for (producer, aggregate_type) in projection.resyncs() {
        let state = db
            .query_one(
                "SELECT after_id, finished_at FROM resync_state WHERE producer = ? AND aggregate_type = ?",
                params![*producer, *aggregate_type],
            )
            .await?;
        let mut after = match state {
            Some(row) if row.get::<Option<i64>>("finished_at")?.is_some() => continue,
            Some(row) => row.get::<String>("after_id")?,
            None => String::new(),
        };
        while pages < max_pages {
            pages += 1;
            let path = format!("/internal/{producer}/resync?aggregate={aggregate_type}&after={after}&limit={RESYNC_PAGE}");
            let body = service
                .call(ctx, producer, Method::GET, &path, None, DISPATCH_DEADLINE)
                .await
                .map_err(|error| ApiError::Unavailable(format!("resync from {producer} failed: {error}")))?;
            let page: ResyncPage = serde_json::from_slice(&body)
                .map_err(|_| ApiError::Internal(anyhow::anyhow!("resync page from {producer} is not readable")))?;
            for event in &page.events {
                if event.producer != *producer || event.aggregate_type != *aggregate_type || !is_plain_id(&event.aggregate_id) {
                    return Err(ApiError::Internal(anyhow::anyhow!("resync page from {producer} has an aggregate of another type or producer")));
                }
                if apply(db, projection, event, false).await? == Outcome::Applied {
                    applied += 1;
                }
            }
            let finished = page.next.is_none();
            after = page.next.unwrap_or(after);
            db.execute(
                "INSERT INTO resync_state (producer, aggregate_type, after_id, finished_at) VALUES (?, ?, ?, ?)
                 ON DUPLICATE KEY UPDATE after_id = VALUES(after_id), finished_at = VALUES(finished_at)",
                params![*producer, *aggregate_type, &after, finished.then(now_micros)],
            )
            .await?;
            if finished {
                break;
            }
        }
    }
    Ok(applied)
}

/// Fetches one aggregate from its producer's resync endpoint and applies it,
/// for a consumer that needs an aggregate whose event has not arrived yet
/// (a user who registered while this component was down). Returns whether
/// the producer has it.
pub async fn fetch_aggregate(
    ctx: &Ctx,
    db: &Db,
    service: &ServiceKey,
    projection: &impl Projection,
    (producer, aggregate_type): (&str, &str),
    aggregate_id: &str,
) -> Result<bool, ApiError> {
    if !is_plain_id(aggregate_id) {
        return Ok(false);
    }
    let path = format!("/internal/{producer}/resync?aggregate={aggregate_type}&id={aggregate_id}");
    let body = service
        .call(ctx, producer, Method::GET, &path, None, PUSH_DEADLINE)
        .await
        .map_err(|error| ApiError::Unavailable(format!("fetching from {producer} failed: {error}")))?;
    let page: ResyncPage = serde_json::from_slice(&body)
        .map_err(|_| ApiError::Internal(anyhow::anyhow!("resync page from {producer} is not readable")))?;
    let Some(event) = page.events.into_iter().find(|event| event.aggregate_id == aggregate_id) else {
        return Ok(false);
    };
    if event.producer != producer || event.aggregate_type != aggregate_type {
        return Err(ApiError::Internal(anyhow::anyhow!("resync page from {producer} has an aggregate of another type or producer")));
    }
    apply(db, projection, &event, false).await?;
    Ok(true)
}

/// Runs dispatch on the consumer's side: continues unfinished resyncs and
/// purges processed event ids past retention.
pub async fn dispatch_inbox(
    ctx: &Ctx,
    db: &Db,
    service: &ServiceKey,
    projection: &impl Projection,
) -> Result<Value, ApiError> {
    let resynced = resync(ctx, db, service, projection, RESYNC_PAGES_PER_RUN).await?;
    db.execute(
        "DELETE FROM event_inbox WHERE received_at < ? ORDER BY received_at LIMIT ?",
        params![now_micros() - RETENTION_DAYS * 86_400 * SECOND, PURGE_BATCH],
    )
    .await?;
    Ok(json!({ "resynced": resynced }))
}

/// Checks the scheduler token of a `POST /ops/<component>/dispatch` request
/// against the `scheduler_token` variable.
pub async fn authorize_dispatch(request: &Request) -> Result<(), ApiError> {
    let expected = config::required_secret("scheduler_token").await?;
    crate::service::check_scheduler_token(request.headers(), &expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumers_are_a_comma_separated_list() {
        assert_eq!(parse_consumers("").unwrap(), Vec::<String>::new());
        assert_eq!(parse_consumers(" feed, payments ,").unwrap(), ["feed", "payments"]);
        assert!(parse_consumers("feed,Pay ments").is_err());
        assert!(parse_consumers("feed/../x").is_err());
    }

    #[test]
    fn placeholders_cover_every_value() {
        assert_eq!(placeholders(2, 3), "(?, ?, ?), (?, ?, ?)");
        assert_eq!(placeholders(1, 1), "(?)");
    }

    #[test]
    fn resync_query_is_strict() {
        let query = ResyncQuery::parse(Some("aggregate=follow&after=0190-a:0190-b&limit=20")).unwrap();
        assert_eq!(
            query,
            ResyncQuery { aggregate_type: "follow".into(), after: "0190-a:0190-b".into(), limit: 20, id: None }
        );
        assert_eq!(ResyncQuery::parse(Some("aggregate=user&id=u-1")).unwrap().id.as_deref(), Some("u-1"));
        assert_eq!(ResyncQuery::parse(Some("aggregate=user")).unwrap().limit, RESYNC_PAGE);

        for bad in [None, Some("after=x"), Some("aggregate=user&limit=0"), Some("aggregate=user&limit=501"), Some("aggregate=us%20er"), Some("aggregate=user&x=1"), Some("aggregate=user&id=")] {
            assert!(matches!(ResyncQuery::parse(bad), Err(ApiError::Validation(_))), "{bad:?}");
        }
    }

    #[test]
    fn resync_cursor_is_the_last_aggregate() {
        let query = ResyncQuery { aggregate_type: "user".into(), after: String::new(), limit: 2, id: None };
        let snapshot = |id: &str| Event::snapshot("profiles", "user", id, 1, json!({}));

        let full = query.response(vec![snapshot("a"), snapshot("b")]);
        let last = query.response(vec![snapshot("c")]);

        assert_eq!(next_of(full), json!("b"));
        assert_eq!(next_of(last), Value::Null);
    }

    fn next_of(response: Response) -> Value {
        use http_body::Body;
        let mut body = std::pin::pin!(response.into_body());
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        let std::task::Poll::Ready(Some(Ok(frame))) = body.as_mut().poll_frame(&mut context) else { panic!("no body") };
        let page: Value = serde_json::from_slice(&frame.into_data().unwrap()).unwrap();
        page["next"].clone()
    }

    #[test]
    fn envelopes_round_trip_and_reject_unknown_fields() {
        let event = Event::snapshot("profiles", "user", "u-1", 3, json!({"username": "jose"}));
        let text = serde_json::to_string(&event).unwrap();

        assert!(text.contains(r#""type":"user.snapshot""#), "{text}");
        assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), event);
        let mut extra: Value = serde_json::from_str(&text).unwrap();
        extra["extra"] = json!(1);
        assert!(serde_json::from_value::<Event>(extra).is_err());
        assert!(!event.is_deletion());
    }
}
