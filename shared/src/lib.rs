//! What every component of the application uses, one module per concern.
//!
//! - [`http`]: the request wrapper, routing helpers, JSON bodies, responses;
//! - [`error`]: the API's errors and their statuses;
//! - [`json`]: reading fields out of request bodies with per-field messages;
//! - [`cors`]: security headers on every response, CORS for allowed origins;
//! - [`config`]: Spin variables and secrets;
//! - [`db`]: MySQL through `spin:mysql/mysql@3.0.0`;
//! - [`kv`]: the key-value store;
//! - [`money`]: amounts in minor units and ISO 4217 currencies;
//! - [`auth`]: user tokens and roles; [`password`]: Argon2id hashes;
//! - [`service`]: service tokens and calls between components;
//! - [`outbound`]: outbound HTTP with a deadline;
//! - [`events`]: the outbox, event delivery, dispatch and resync;
//! - [`revocation`]: refusing revoked user tokens outside profiles;
//! - [`ratelimit`]: per-address and per-user limits in the key-value store;
//! - [`platform`]: health, events and dispatch for a component without an API yet;
//! - [`query`]: query strings and paging parameters;
//! - [`text`]: normalised keys and limits for what users type;
//! - [`ids`], [`time`]: identifiers and timestamps as the application stores them;
//! - [`telemetry`]: the request log line and its counters.
//!
//! Logic that does not touch the host is plain Rust with unit tests that run natively.

pub mod auth;
pub mod config;
pub mod cors;
pub mod db;
pub mod error;
pub mod events;
pub mod http;
pub mod ids;
pub mod json;
pub mod kv;
pub mod money;
pub mod outbound;
pub mod password;
pub mod platform;
pub mod query;
pub mod ratelimit;
pub mod revocation;
pub mod service;
pub mod telemetry;
pub mod text;
pub mod time;

pub use error::ApiError;
