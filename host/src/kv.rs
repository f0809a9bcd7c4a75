//! Key-value stores behind `spin:key-value` and `wasi:keyvalue`: an SQLite
//! file (Spin's default) or Redis, chosen per label by the runtime config.
//!
//! Counters follow each backend as Spin implements it: SQLite keeps an
//! `increment`ed value as 8 little-endian bytes, Redis as decimal text. That is
//! why a counter must only ever be written through `increment`.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use redis::AsyncCommands;
use tokio::sync::OnceCell;

/// A store-level failure, reported to the guest as `error::other`.
#[derive(Debug)]
pub struct KvError(pub String);

type KvResult<T> = std::result::Result<T, KvError>;

fn other(context: &str, error: impl std::fmt::Display) -> KvError {
    KvError(format!("{context}: {error}"))
}

/// One configured store (one label).
#[derive(Clone)]
pub enum Store {
    Sqlite(Arc<SqliteStore>),
    Redis(Arc<RedisStore>),
}

pub struct SqliteStore {
    label: String,
    connection: Arc<Mutex<rusqlite::Connection>>,
}

pub struct RedisStore {
    url: String,
    manager: OnceCell<redis::aio::ConnectionManager>,
}

/// Redis calls give up after this long so an outage is an error, not a hang.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

impl Store {
    pub fn sqlite(label: &str, connection: Arc<Mutex<rusqlite::Connection>>) -> Self {
        Self::Sqlite(Arc::new(SqliteStore {
            label: label.to_string(),
            connection,
        }))
    }

    pub fn redis(url: &str) -> Result<Self> {
        redis::Client::open(url).context("invalid Redis URL")?;
        Ok(Self::Redis(Arc::new(RedisStore {
            url: url.to_string(),
            manager: OnceCell::new(),
        })))
    }

    pub async fn get(&self, key: &str) -> KvResult<Option<Vec<u8>>> {
        match self {
            Self::Sqlite(s) => {
                let (label, key) = (s.label.clone(), key.to_string());
                s.blocking(move |c| {
                    c.prepare_cached("SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2")?
                        .query_map(rusqlite::params![label, key], |row| row.get::<_, Vec<u8>>(0))?
                        .next()
                        .transpose()
                })
                .await
            }
            Self::Redis(r) => r.run(|mut c| {
                let key = key.to_string();
                async move { c.get::<_, Option<Vec<u8>>>(key).await }
            }).await,
        }
    }

    pub async fn set(&self, key: &str, value: Vec<u8>) -> KvResult<()> {
        match self {
            Self::Sqlite(s) => {
                let (label, key) = (s.label.clone(), key.to_string());
                s.blocking(move |c| {
                    c.prepare_cached(
                        "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
                         ON CONFLICT(store, key) DO UPDATE SET value = excluded.value",
                    )?
                    .execute(rusqlite::params![label, key, value])
                    .map(drop)
                })
                .await
            }
            Self::Redis(r) => r.run(|mut c| {
                let key = key.to_string();
                async move { c.set::<_, _, ()>(key, value).await }
            }).await,
        }
    }

    pub async fn delete(&self, key: &str) -> KvResult<()> {
        match self {
            Self::Sqlite(s) => {
                let (label, key) = (s.label.clone(), key.to_string());
                s.blocking(move |c| {
                    c.prepare_cached("DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2")?
                        .execute(rusqlite::params![label, key])
                        .map(drop)
                })
                .await
            }
            Self::Redis(r) => r.run(|mut c| {
                let key = key.to_string();
                async move { c.del::<_, ()>(key).await }
            }).await,
        }
    }

    pub async fn exists(&self, key: &str) -> KvResult<bool> {
        Ok(self.get(key).await?.is_some())
    }

    pub async fn keys(&self) -> KvResult<Vec<String>> {
        match self {
            Self::Sqlite(s) => {
                let label = s.label.clone();
                s.blocking(move |c| {
                    c.prepare_cached("SELECT key FROM spin_key_value WHERE store = ?1")?
                        .query_map([label], |row| row.get::<_, String>(0))?
                        .collect()
                })
                .await
            }
            Self::Redis(r) => r.run(|mut c| async move { c.keys::<_, Vec<String>>("*").await }).await,
        }
    }

    /// Atomically adds `delta` and returns the new value.
    pub async fn increment(&self, key: &str, delta: i64) -> KvResult<i64> {
        match self {
            Self::Sqlite(s) => {
                let (label, key) = (s.label.clone(), key.to_string());
                let result = s
                    .blocking(move |c| {
                        let tx = c.transaction()?;
                        let current: Option<Vec<u8>> = tx
                            .prepare_cached("SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2")?
                            .query_map(rusqlite::params![label, key], |row| row.get(0))?
                            .next()
                            .transpose()?;
                        let current = match current {
                            None => Some(0),
                            Some(bytes) => <[u8; 8]>::try_from(bytes.as_slice()).ok().map(i64::from_le_bytes),
                        };
                        let Some(current) = current else {
                            return Ok(None);
                        };
                        let next = current.wrapping_add(delta);
                        tx.prepare_cached(
                            "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
                             ON CONFLICT(store, key) DO UPDATE SET value = excluded.value",
                        )?
                        .execute(rusqlite::params![label, key, next.to_le_bytes().to_vec()])?;
                        tx.commit()?;
                        Ok(Some(next))
                    })
                    .await?;
                // NOTE: Spin 4.0.2 panics here when the value is not a counter; this host reports it.
                result.ok_or_else(|| KvError("value is not a counter written by increment".into()))
            }
            Self::Redis(r) => r.run(|mut c| {
                let key = key.to_string();
                async move { c.incr::<_, _, i64>(key, delta).await }
            }).await,
        }
    }

    /// Starts a compare-and-swap on `key`. Redis gets a connection of its
    /// own, because `WATCH` applies to the connection that sent it.
    pub async fn begin_cas(&self, key: &str) -> KvResult<Cas> {
        match self {
            Self::Sqlite(s) => Ok(Cas::Sqlite {
                store: s.clone(),
                key: key.to_string(),
                seen: None,
            }),
            Self::Redis(r) => {
                let client = redis::Client::open(r.url.as_str()).map_err(|e| other("redis", e))?;
                let connection = tokio::time::timeout(REDIS_TIMEOUT, client.get_multiplexed_async_connection())
                    .await
                    .map_err(|_| KvError("redis: timed out".into()))?
                    .map_err(|e| other("redis", e))?;
                Ok(Cas::Redis {
                    connection,
                    key: key.to_string(),
                })
            }
        }
    }
}

/// A compare-and-swap with Spin 4.0.2's semantics. `current` reads the value
/// and, on Redis, `WATCH`es the key. `swap` writes only if the key still
/// contains what `current` read. Without a prior `current`, or when `current`
/// found no value, the SQLite store writes unconditionally, as Spin's does.
pub enum Cas {
    Sqlite {
        store: Arc<SqliteStore>,
        key: String,
        /// `Some` once `current` has run: the value it read.
        seen: Option<Option<Vec<u8>>>,
    },
    Redis {
        connection: redis::aio::MultiplexedConnection,
        key: String,
    },
}

impl Cas {
    pub async fn current(&mut self) -> KvResult<Option<Vec<u8>>> {
        match self {
            Self::Sqlite { store, key, seen } => {
                let value = Store::Sqlite(store.clone()).get(key).await?;
                *seen = Some(value.clone());
                Ok(value)
            }
            Self::Redis { connection, key } => {
                let attempt = async {
                    redis::cmd("WATCH").arg(&*key).query_async::<()>(connection).await?;
                    connection.get::<_, Option<Vec<u8>>>(&*key).await
                };
                tokio::time::timeout(REDIS_TIMEOUT, attempt)
                    .await
                    .map_err(|_| KvError("redis: timed out".into()))?
                    .map_err(|e| other("redis", e))
            }
        }
    }

    /// Returns false when the key changed since `current`.
    pub async fn swap(&mut self, value: Vec<u8>) -> KvResult<bool> {
        match self {
            Self::Sqlite { store, key, seen } => {
                let (label, key, expected) = (store.label.clone(), key.clone(), seen.clone().flatten());
                store
                    .blocking(move |c| {
                        let changed = match expected {
                            Some(old) => c
                                .prepare_cached(
                                    "UPDATE spin_key_value SET value = ?3 WHERE store = ?1 AND key = ?2 AND value = ?4",
                                )?
                                .execute(rusqlite::params![label, key, value, old])?,
                            None => c
                                .prepare_cached(
                                    "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
                                     ON CONFLICT(store, key) DO UPDATE SET value = excluded.value",
                                )?
                                .execute(rusqlite::params![label, key, value])?,
                        };
                        Ok(changed == 1)
                    })
                    .await
            }
            Self::Redis { connection, key } => {
                let attempt = async {
                    // EXEC returns nil when a watched key changed, because the transaction did not run.
                    let result: Option<()> = redis::pipe()
                        .atomic()
                        .set(&*key, value)
                        .ignore()
                        .query_async(connection)
                        .await?;
                    redis::cmd("UNWATCH").query_async::<()>(connection).await?;
                    Ok::<bool, redis::RedisError>(result.is_some())
                };
                tokio::time::timeout(REDIS_TIMEOUT, attempt)
                    .await
                    .map_err(|_| KvError("redis: timed out".into()))?
                    .map_err(|e| other("redis", e))
            }
        }
    }
}

impl SqliteStore {
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> KvResult<T> {
        let connection = self.connection.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = connection.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            work(&mut guard)
        })
        .await
        .map_err(|e| other("sqlite", e))?
        .map_err(|e| other("sqlite", e))
    }
}

impl RedisStore {
    async fn run<T, F, Fut>(&self, op: F) -> KvResult<T>
    where
        F: FnOnce(redis::aio::ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let attempt = async {
            let manager = self
                .manager
                .get_or_try_init(|| async {
                    let client = redis::Client::open(self.url.as_str())?;
                    let config = redis::aio::ConnectionManagerConfig::new()
                        .set_connection_timeout(REDIS_TIMEOUT)
                        .set_response_timeout(REDIS_TIMEOUT)
                        .set_number_of_retries(1);
                    redis::aio::ConnectionManager::new_with_config(client, config).await
                })
                .await?
                .clone();
            op(manager).await
        };
        tokio::time::timeout(REDIS_TIMEOUT * 2, attempt)
            .await
            .map_err(|_| KvError("redis: timed out".into()))?
            .map_err(|e| other("redis", e))
    }
}

/// Opens (creating if needed) the SQLite file that contains every `spin` store.
pub fn open_sqlite(path: &Path) -> Result<Arc<Mutex<rusqlite::Connection>>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let connection = rusqlite::Connection::open(path)
        .with_context(|| format!("cannot open key-value file {}", path.display()))?;
    connection.busy_timeout(Duration::from_secs(5))?;
    connection.execute_batch(
        "CREATE TABLE IF NOT EXISTS spin_key_value (
            store TEXT NOT NULL,
            key TEXT NOT NULL,
            value BLOB NOT NULL,
            PRIMARY KEY (store, key)
        )",
    )?;
    Ok(Arc::new(Mutex::new(connection)))
}
