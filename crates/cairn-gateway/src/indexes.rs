//! The gateway's view of its account indexes: reads from the node with a
//! short-lived memory copy and a write-through redb cache
//! (`GATEWAY_DIR/cache.redb`), and writes as deltas (only the new ops).
//!
//! A read older than [`FRESH`] asks the node again and merges its copy into
//! the cached one, so only ops that win a slot have their signatures
//! checked. A write builds its ops over the cached copy (for the clock and
//! the size bounds), sends only them, and enters them in the cache once the
//! node's replicas have taken them. The cache only saves work: deleting it
//! loses nothing.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_core::index::{Account, Index, IndexError, IndexName, Merged};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::GatewayError;
use crate::node::Node;

/// A copy younger than this is used without asking the node.
pub const FRESH: Duration = Duration::from_secs(2);
/// Namespaces kept in memory at once.
const MEMORY_SLOTS: usize = 256;
const TABLE: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("gateway_indexes_v1");

/// One change to an index entry: a value, or `None` to delete.
pub type Change = (Vec<u8>, Option<Vec<u8>>);

struct Cached {
    at: Instant,
    index: Arc<Index>,
}

/// The account's indexes, through one node.
pub struct Indexes {
    node: Node,
    account: Arc<Account>,
    cache: Arc<redb::Database>,
    memory: Mutex<HashMap<[u8; 32], Cached>>,
}

fn cache_err(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::Internal(format!("the gateway's index cache failed: {e}"))
}

impl Indexes {
    /// Opens (or creates) the cache at `path`.
    pub fn open(node: Node, account: Arc<Account>, path: &Path) -> Result<Self, GatewayError> {
        let db = redb::Database::create(path).map_err(cache_err)?;
        let tx = db.begin_write().map_err(cache_err)?;
        tx.open_table(TABLE).map_err(cache_err)?;
        tx.commit().map_err(cache_err)?;
        Ok(Self {
            node,
            account,
            cache: Arc::new(db),
            memory: Mutex::new(HashMap::new()),
        })
    }

    /// The account.
    pub fn account(&self) -> &Account {
        &self.account
    }

    fn name(&self, namespace: &str) -> IndexName {
        self.account.index_name(namespace.as_bytes())
    }

    fn remembered(&self, id: &[u8; 32], max_age: Duration) -> Option<Arc<Index>> {
        let memory = self.memory.lock().ok()?;
        let c = memory.get(id)?;
        (c.at.elapsed() < max_age).then(|| c.index.clone())
    }

    /// Merges `index` (a whole copy or a delta) into the memory copy and
    /// returns the result. Merging, not replacing, keeps concurrent
    /// requests from dropping each other's writes: the copy only grows.
    /// `fetched` marks the result fresh (it includes the network's copy).
    fn remember(&self, index: &Index, fetched: bool) -> Arc<Index> {
        let Ok(mut memory) = self.memory.lock() else {
            return Arc::new(index.clone());
        };
        let id = index.id().0;
        if memory.len() >= MEMORY_SLOTS && !memory.contains_key(&id) {
            // Drop the oldest copy: the cache file still has it.
            if let Some(oldest) = memory.iter().min_by_key(|(_, c)| c.at).map(|(k, _)| *k) {
                memory.remove(&oldest);
            }
        }
        let (merged, at) = match memory.get(&id) {
            Some(c) => {
                let mut m = (*c.index).clone();
                // Both copies were checked; past a bound, keep the newer view.
                if m.merge(index).is_err() {
                    m = index.clone();
                }
                (m, if fetched { Instant::now() } else { c.at })
            }
            // A delta alone is not a whole copy: it is never fresh.
            None if !fetched => (
                index.clone(),
                Instant::now()
                    .checked_sub(FRESH)
                    .unwrap_or_else(Instant::now),
            ),
            None => (index.clone(), Instant::now()),
        };
        let merged = Arc::new(merged);
        memory.insert(
            id,
            Cached {
                at,
                index: merged.clone(),
            },
        );
        merged
    }

    async fn load_cached(&self, name: IndexName) -> Result<Index, GatewayError> {
        let db = self.cache.clone();
        let id = name.id();
        tokio::task::spawn_blocking(move || {
            let tx = db.begin_read().map_err(cache_err)?;
            let table = tx.open_table(TABLE).map_err(cache_err)?;
            match table.get(id.0.as_slice()).map_err(cache_err)? {
                // Checked when it was fetched or written.
                Some(v) => Index::decode_trusted(v.value(), id).or_else(|_| Ok(Index::new(name))),
                None => Ok(Index::new(name)),
            }
        })
        .await
        .map_err(cache_err)?
    }

    /// Merges `index` into the cache file (read, merge and write in one
    /// transaction, so concurrent writers never drop each other's ops).
    async fn store_cached(&self, index: &Index) -> Result<(), GatewayError> {
        let db = self.cache.clone();
        let index = index.clone();
        tokio::task::spawn_blocking(move || {
            let id = index.id();
            let tx = db.begin_write().map_err(cache_err)?;
            {
                let mut table = tx.open_table(TABLE).map_err(cache_err)?;
                let stored = table
                    .get(id.0.as_slice())
                    .map_err(cache_err)?
                    .and_then(|v| Index::decode_trusted(v.value(), id).ok());
                let merged = match stored {
                    Some(mut m) => match m.merge(&index) {
                        Ok(_) => m,
                        Err(_) => index,
                    },
                    None => index,
                };
                table
                    .insert(id.0.as_slice(), merged.encode().as_slice())
                    .map_err(cache_err)?;
            }
            tx.commit().map_err(cache_err)
        })
        .await
        .map_err(cache_err)?
    }

    /// The index of `namespace`, at most `max_age` old.
    pub async fn read(
        &self,
        namespace: &str,
        max_age: Duration,
    ) -> Result<Arc<Index>, GatewayError> {
        let name = self.name(namespace);
        let id = name.id();
        if let Some(index) = self.remembered(&id.0, max_age) {
            return Ok(index);
        }
        let mut index = match self.remembered(&id.0, Duration::MAX) {
            Some(i) => (*i).clone(),
            None => self.load_cached(name).await?,
        };
        if let Some(bytes) = self.node.get_index(&id.to_hex()).await? {
            let merged = index.merge_encoded(&bytes).map_err(|e| {
                GatewayError::Internal(format!("the network's copy of an index was refused: {e}"))
            })?;
            if merged == Merged::Changed {
                self.store_cached(&index).await?;
            }
        }
        Ok(self.remember(&index, true))
    }

    /// The value of `key` in `namespace` (read at most [`FRESH`] old).
    pub async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, GatewayError> {
        self.get_aged(namespace, key, FRESH).await
    }

    /// The value of `key`, at most `max_age` old.
    pub async fn get_aged(
        &self,
        namespace: &str,
        key: &str,
        max_age: Duration,
    ) -> Result<Option<Vec<u8>>, GatewayError> {
        let index = self.read(namespace, max_age).await?;
        index
            .get(self.account.key(), key.as_bytes())
            .map_err(open_err)
    }

    /// Every live entry of `namespace`, sorted by key.
    pub async fn entries(&self, namespace: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>, GatewayError> {
        self.entries_aged(namespace, FRESH).await
    }

    /// Every live entry of `namespace`, read at most `max_age` ago.
    pub async fn entries_aged(
        &self,
        namespace: &str,
        max_age: Duration,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, GatewayError> {
        let index = self.read(namespace, max_age).await?;
        Ok(index
            .entries(self.account.key())
            .map_err(open_err)?
            .collect())
    }

    /// Applies `changes` to `namespace` in one delta. `bucket` names the
    /// bucket in a "full" error. Returns whether every change won its slot
    /// here (a later write by another gateway may still win later).
    pub async fn write(
        &self,
        namespace: &str,
        bucket: &str,
        changes: &[Change],
    ) -> Result<bool, GatewayError> {
        if changes.is_empty() {
            return Ok(true);
        }
        let current = self.read(namespace, FRESH).await?;
        let clock = current.next_clock(crate::now_ms());
        let mut delta = Index::new(*current.name());
        let mut all_won = true;
        for (key, value) in changes {
            let r = match value {
                Some(v) => delta.put(&self.account, key, v, clock),
                None => delta.delete(&self.account, key, clock),
            };
            all_won &= r.map_err(|e| bound_err(e, bucket))? == Merged::Changed;
        }
        // Checked against the bounds before anything is sent.
        let mut merged = (*current).clone();
        all_won &= merged.merge(&delta).map_err(|e| bound_err(e, bucket))? == Merged::Changed;
        self.node
            .post_index(&delta.id().to_hex(), delta.encode())
            .await?;
        self.store_cached(&delta).await?;
        self.remember(&delta, false);
        Ok(all_won)
    }
}

fn open_err(e: IndexError) -> GatewayError {
    GatewayError::Internal(format!(
        "an index entry does not open with this account's key: {e}"
    ))
}

fn bound_err(e: IndexError, bucket: &str) -> GatewayError {
    match e {
        IndexError::TooLarge(_) | IndexError::TooManyEntries(_) => {
            GatewayError::BucketFull(bucket.into())
        }
        IndexError::EntryTooLarge { what, len, max } => GatewayError::InvalidArgument(format!(
            "the object's index {what} of {len} bytes is over the {max}-byte limit (too many parts or too much metadata)"
        )),
        e => GatewayError::Internal(e.to_string()),
    }
}
