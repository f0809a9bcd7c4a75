//! Cache-aside in the component's key-value store, for data that is the same
//! for every viewer: articles by slug, author blocks, the first page of the
//! global list, the article ids of each user's first feed page, and the tag
//! list.
//!
//! Each cached value lives under a key that ends in the current *version
//! token* of what it depends on (`ver:<name>`, a random string). A write
//! that changes the value replaces the token after its commit, so later
//! readers look up a new key and the old entry is never read again. A reader
//! that finds no token writes a fresh one *before* reading the database.
//! Then either a later writer replaces its token, or its database read comes
//! after that writer's commit, so no stale value can stay under a current
//! token. Values and tokens carry their own expiry (the store has
//! none), and in production the store's LRU policy evicts old entries.
//!
//! Every store error reads as a miss and skips caching, so a store outage
//! sends requests to the database and fails none of them. A token that
//! cannot be replaced after a write is deleted instead. If that fails too,
//! the stale value can be served until it expires ([`VALUE_SECONDS`]).

use serde::Serialize;
use serde::de::DeserializeOwned;
use shared::kv::Kv;

/// How long a cached value is served at most.
pub const VALUE_SECONDS: u32 = 300;
/// How long a version token lives; an expired one is simply replaced.
pub const TOKEN_SECONDS: u32 = 86_400;

/// What a cached value depends on; each has one version token.
pub enum Dependency<'a> {
    /// One article, by slug: its fields and favourite count.
    Article(&'a str),
    /// One user's author block.
    Author(&'a str),
    /// The set of articles and their creation order, changed by a creation or deletion.
    ArticleSet,
    /// The content of every list item, changed by every write to an article,
    /// its favourites included. Author blocks are cached on their own.
    ListContent,
    /// Whom one user follows.
    Follows(&'a str),
    /// The tags in use.
    Tags,
}

impl Dependency<'_> {
    fn token_key(&self) -> String {
        match self {
            Self::Article(slug) => format!("ver:article:{slug}"),
            Self::Author(id) => format!("ver:author:{id}"),
            Self::ArticleSet => "ver:articles".into(),
            Self::ListContent => "ver:list-content".into(),
            Self::Follows(id) => format!("ver:follows:{id}"),
            Self::Tags => "ver:tags".into(),
        }
    }
}

pub struct Cache<'a> {
    kv: &'a Kv,
}

impl<'a> Cache<'a> {
    pub fn new(kv: &'a Kv) -> Self {
        Self { kv }
    }

    /// Returns the current token of `dependency`, writing a fresh one when
    /// there is none. `None` when the store fails: then nothing is cached.
    async fn token(&self, dependency: &Dependency<'_>) -> Option<String> {
        let key = dependency.token_key();
        match self.kv.get_fresh::<String>(&key).await {
            Ok(Some(token)) => Some(token),
            Ok(None) => {
                let token = shared::ids::random_hex(8);
                self.kv.set_fresh(&key, &token, TOKEN_SECONDS).await.ok()?;
                Some(token)
            }
            Err(_) => None,
        }
    }

    /// Builds the key of a value named `name` that depends on `dependencies`;
    /// `None` when the store fails.
    pub async fn key(&self, name: &str, dependencies: &[Dependency<'_>]) -> Option<String> {
        let mut key = name.to_string();
        for dependency in dependencies {
            key.push(':');
            key.push_str(&self.token(dependency).await?);
        }
        Some(key)
    }

    /// Reads a value; a missing key, a store error or an expired or
    /// unreadable entry are all a miss.
    pub async fn get<T: DeserializeOwned>(&self, key: Option<&str>) -> Option<T> {
        self.kv.get_fresh(key?).await.ok().flatten()
    }

    /// Stores a value for [`VALUE_SECONDS`]. Errors are ignored: the next
    /// reader misses and reads the database.
    pub async fn put<T: Serialize>(&self, key: Option<&str>, value: &T) {
        if let Some(key) = key {
            let _ = self.kv.set_fresh(key, value, VALUE_SECONDS).await;
        }
    }

    /// Makes every value that depends on `dependency` unreachable; called
    /// after the change committed.
    pub async fn invalidate(&self, dependency: Dependency<'_>) {
        let key = dependency.token_key();
        let token = shared::ids::random_hex(8);
        if self.kv.set_fresh(&key, &token, TOKEN_SECONDS).await.is_err() {
            let _ = self.kv.delete(&key).await;
        }
    }
}
