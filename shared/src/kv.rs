//! The component's key-value store, with every call counted for the request's
//! log line.
//!
//! The store has no expiry of its own, so cached values carry theirs
//! ([`Kv::get_fresh`], [`Kv::set_fresh`]). Counters are written only through
//! [`Kv::increment`] (Spin's SQLite store keeps them as 8 little-endian
//! bytes, Redis as text, so reading one with `get` would depend on the store).
//! Errors are returned, not hidden: a cache caller treats an error as a miss,
//! and nothing that must be exact lives only here.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use spin_sdk::key_value::Store;

use crate::telemetry::Stats;

/// A failed store call. `Display` names the operation and the error's kind only
/// (keys can hold user ids).
#[derive(Debug, Clone)]
pub struct KvError {
    operation: &'static str,
    kind: &'static str,
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key-value {} failed ({})", self.operation, self.kind)
    }
}

impl std::error::Error for KvError {}

fn kind_of(error: &spin_sdk::key_value::Error) -> &'static str {
    use spin_sdk::key_value::Error;
    match error {
        Error::StoreTableFull => "store full",
        Error::NoSuchStore => "no such store",
        Error::AccessDenied => "access denied",
        Error::Other(_) => "store error",
    }
}

/// A value stored with its own expiry.
#[derive(Serialize, Deserialize)]
struct Expiring<T> {
    /// Microseconds since the epoch after which the value is stale.
    exp: i64,
    value: T,
}

/// Decodes an expiring entry; stale or undecodable entries read as missing.
fn decode_fresh<T: DeserializeOwned>(bytes: &[u8], now_micros: i64) -> Option<T> {
    let entry: Expiring<T> = serde_json::from_slice(bytes).ok()?;
    (entry.exp > now_micros).then_some(entry.value)
}

/// A request's handle on one store label, opened on first use.
pub struct Kv {
    label: &'static str,
    store: RefCell<Option<Rc<Store>>>,
    stats: Rc<Stats>,
}

impl Kv {
    pub fn new(label: &'static str, stats: Rc<Stats>) -> Self {
        Self { label, store: RefCell::new(None), stats }
    }

    async fn store(&self) -> Result<Rc<Store>, KvError> {
        if let Some(store) = self.store.borrow().as_ref() {
            return Ok(store.clone());
        }
        self.stats.kv_call();
        let store = Store::open(self.label)
            .await
            .map(Rc::new)
            .map_err(|e| KvError { operation: "open", kind: kind_of(&e) })?;
        *self.store.borrow_mut() = Some(store.clone());
        Ok(store)
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let store = self.store().await?;
        self.stats.kv_call();
        store.get(key).await.map_err(|e| KvError { operation: "get", kind: kind_of(&e) })
    }

    pub async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        let store = self.store().await?;
        self.stats.kv_call();
        store.set(key, value).await.map_err(|e| KvError { operation: "set", kind: kind_of(&e) })
    }

    pub async fn delete(&self, key: &str) -> Result<(), KvError> {
        let store = self.store().await?;
        self.stats.kv_call();
        store.delete(key).await.map_err(|e| KvError { operation: "delete", kind: kind_of(&e) })
    }

    /// Reads a value written by [`Kv::set_fresh`]; an expired one reads as missing.
    pub async fn get_fresh<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, KvError> {
        Ok(self
            .get(key)
            .await?
            .and_then(|bytes| decode_fresh(&bytes, crate::time::now_micros())))
    }

    /// Writes a value that reads as missing after `ttl_seconds`.
    pub async fn set_fresh<T: Serialize>(&self, key: &str, value: &T, ttl_seconds: u32) -> Result<(), KvError> {
        let exp = crate::time::now_micros() + i64::from(ttl_seconds) * 1_000_000;
        let bytes = serde_json::to_vec(&Expiring { exp, value })
            .map_err(|_| KvError { operation: "set", kind: "value not serialisable" })?;
        self.set(key, &bytes).await
    }

    /// Adds `delta` to a counter atomically and returns the new value
    /// (`wasi:keyvalue/atomics`; the call does not await).
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        use spin_sdk::experimental::wasi::keyvalue::{atomics, store};
        self.stats.kv_call();
        let failed = |kind| KvError { operation: "increment", kind };
        let bucket = store::open(self.label).map_err(|_| failed("open failed"))?;
        atomics::increment(&bucket, key, delta).map_err(|_| failed("store error"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_read_until_their_expiry() {
        let bytes = serde_json::to_vec(&Expiring { exp: 1_000, value: "cached" }).unwrap();

        assert_eq!(decode_fresh::<String>(&bytes, 999).as_deref(), Some("cached"));
        assert_eq!(decode_fresh::<String>(&bytes, 1_000), None);
        assert_eq!(decode_fresh::<String>(b"not json", 0), None);
    }
}
