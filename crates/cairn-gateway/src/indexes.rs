//! The gateway's view of its account indexes: reads from the node with a
//! short-lived memory copy and a redb cache file (`GATEWAY_DIR/cache.redb`)
//! written behind, and writes as deltas (only the new ops).
//!
//! A read older than [`FRESH`] asks the node again, naming the digest of
//! the copy here: the node answers "unchanged" if its merged copy is the
//! same, else sends it, and it is merged into the cached one, so only ops
//! that win a slot have their signatures checked. A write builds its ops
//! over the cached copy (for the clock and the size bounds), sends only
//! them, and enters them in the memory copy once the node's replicas have
//! taken them; [`Indexes::flush`] writes them to the file. The cache only
//! saves work: deleting it, or losing ops not yet flushed, loses nothing.
//!
//! Every namespace is a tree of shards ([`cairn_core::shard`]): a read of
//! one key walks the shards on its path, a listing reads them all (eight
//! at a time), and a write goes to the key's leaf, which splits once it
//! passes the [`SplitRule`]. So a bucket grows past one index's bounds.
//!
//! Tombstones are collected by [`Indexes::collect`], from the background
//! pass: owner-signed checkpoints, per shard, ancestors first
//! ([`shard::plan_collection`]), at a horizon a grace (a day) in the past.
//! The node, the replicas and the cache file here all merge by
//! [`Index::merge`]'s rule, so a stale copy (this cache's, a replica's
//! that missed the pass) never brings a collected key back.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_core::index::{Account, Index, IndexError, IndexName, Merged, next_clock};
use cairn_core::shard::{self, SPLIT_MARKER, SPLIT_VALUE, SplitRule, Step, Survey, Walk};
use futures::StreamExt;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::GatewayError;
use crate::node::{IndexCopy, Node};

/// A copy younger than this is used without asking the node.
pub const FRESH: Duration = Duration::from_secs(2);
/// Bytes of index copies kept in memory (the oldest go first; the cache
/// file still has them). A bucket's shards are at most a few MiB each.
const MEMORY_BYTES: usize = 64 << 20;
/// Memory redb may use to cache pages of `cache.redb`.
const CACHE_FILE_MEMORY: usize = 16 << 20;
/// How often the gateway writes new ops from memory into the cache file.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(2);
/// Keys a window of a listing or scan holds.
pub const WINDOW: usize = 1000;
/// Shards of one tree read at once.
const PARALLEL_READS: usize = 8;
const TABLE: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("gateway_indexes_v1");

/// Shards of one tree a collection pass holds at most.
pub const MAX_COLLECT_SHARDS: usize = 256;

/// What a collection pass did to one tree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// Shards that got a new checkpoint.
    pub shards: usize,
    /// Ops (tombstones, superseded ops) they dropped.
    pub ops: usize,
    /// Trees left for a later pass (a replica did not answer, or too many
    /// shards).
    pub skipped: usize,
}

/// One change to an index entry: a value, or `None` to delete.
pub type Change = (Vec<u8>, Option<Vec<u8>>);

struct Cached {
    at: Instant,
    index: Arc<Index>,
    /// `index`'s digest, once computed.
    digest: Option<[u8; 32]>,
    /// Holds ops the cache file has not had yet.
    dirty: bool,
}

/// Dirty copies evicted from memory that wait for the next flush, at most.
const EVICTED_DIRTY: usize = 64;

/// The memory copies, bounded by their encoded size.
#[derive(Default)]
struct Memory {
    copies: HashMap<[u8; 32], Cached>,
    bytes: usize,
    /// Dirty copies pushed out of memory, for the next flush.
    evicted: Vec<Arc<Index>>,
}

impl Memory {
    fn insert(&mut self, id: [u8; 32], c: Cached) {
        self.bytes += c.index.encoded_len();
        if let Some(old) = self.copies.insert(id, c) {
            self.bytes -= old.index.encoded_len();
        }
        while self.bytes > MEMORY_BYTES && self.copies.len() > 1 {
            let Some(oldest) = self
                .copies
                .iter()
                .filter(|(k, _)| **k != id)
                .min_by_key(|(_, c)| c.at)
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some(old) = self.copies.remove(&oldest) {
                self.bytes -= old.index.encoded_len();
                if old.dirty {
                    // The cache file only saves work: past the bound, the
                    // next read fetches these ops again instead.
                    if self.evicted.len() == EVICTED_DIRTY {
                        self.evicted.remove(0);
                    }
                    self.evicted.push(old.index);
                }
            }
        }
    }
}

/// The account's indexes, through one node.
pub struct Indexes {
    node: Node,
    account: Arc<Account>,
    cache: Arc<redb::Database>,
    memory: Mutex<Memory>,
    split: SplitRule,
    window: usize,
}

fn cache_err(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::Internal(format!("the gateway's index cache failed: {e}"))
}

impl Indexes {
    /// Opens (or creates) the cache at `path`.
    pub fn open(node: Node, account: Arc<Account>, path: &Path) -> Result<Self, GatewayError> {
        // redb's page cache would otherwise grow toward 1 GiB with the file.
        let db = redb::Builder::new()
            .set_cache_size(CACHE_FILE_MEMORY)
            .create(path)
            .map_err(cache_err)?;
        Self::with_db(node, account, db)
    }

    /// Opens the indexes with a cache in memory only, for short-lived
    /// clients (the CLI's `cairn gateway kms`) that must not take the
    /// running gateway's cache file, which redb locks.
    pub fn open_in_memory(node: Node, account: Arc<Account>) -> Result<Self, GatewayError> {
        let db = redb::Builder::new()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(cache_err)?;
        Self::with_db(node, account, db)
    }

    fn with_db(
        node: Node,
        account: Arc<Account>,
        db: redb::Database,
    ) -> Result<Self, GatewayError> {
        let tx = db.begin_write().map_err(cache_err)?;
        tx.open_table(TABLE).map_err(cache_err)?;
        tx.commit().map_err(cache_err)?;
        Ok(Self {
            node,
            account,
            cache: Arc::new(db),
            memory: Mutex::new(Memory::default()),
            split: SplitRule::DEFAULT,
            window: WINDOW,
        })
    }

    /// Reads listings and scans `keys` at a time instead of [`WINDOW`]
    /// (tests use small windows to cross many).
    pub fn with_window(mut self, keys: usize) -> Self {
        self.window = keys.max(1);
        self
    }

    /// Keys a listing or scan reads at a time.
    pub fn window_size(&self) -> usize {
        self.window
    }

    /// Splits shards by `rule` instead of [`SplitRule::DEFAULT`] (tests
    /// use small shards to grow deep trees quickly).
    pub fn with_split_rule(mut self, rule: SplitRule) -> Self {
        self.split = rule;
        self
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
        let c = memory.copies.get(id)?;
        (c.at.elapsed() < max_age).then(|| c.index.clone())
    }

    /// Merges `index` (a whole copy or a delta) into the memory copy and
    /// returns the result. Merging, not replacing, keeps concurrent
    /// requests from dropping each other's writes: the copy only grows.
    /// `fetched` marks the result fresh (it includes the network's copy);
    /// `dirty`, that `index` has ops the cache file lacks.
    fn remember(&self, index: &Index, fetched: bool, dirty: bool) -> Arc<Index> {
        let Ok(mut memory) = self.memory.lock() else {
            return Arc::new(index.clone());
        };
        let id = index.id().0;
        let (merged, at, dirty) = match memory.copies.get(&id) {
            Some(c) => {
                let mut m = (*c.index).clone();
                // Both copies were checked; past a bound, keep the newer view.
                if m.merge(index).is_err() {
                    m = index.clone();
                }
                (
                    m,
                    if fetched { Instant::now() } else { c.at },
                    c.dirty || dirty,
                )
            }
            // A delta alone is not a whole copy: it is never fresh.
            None if !fetched => (
                index.clone(),
                Instant::now()
                    .checked_sub(FRESH)
                    .unwrap_or_else(Instant::now),
                dirty,
            ),
            None => (index.clone(), Instant::now(), dirty),
        };
        let merged = Arc::new(merged);
        memory.insert(
            id,
            Cached {
                at,
                index: merged.clone(),
                digest: None,
                dirty,
            },
        );
        merged
    }

    /// The digest of `index`, a memory copy: computed once per copy.
    fn digest_of(&self, index: &Arc<Index>) -> [u8; 32] {
        let id = index.id().0;
        if let Ok(memory) = self.memory.lock()
            && let Some(c) = memory.copies.get(&id)
            && Arc::ptr_eq(&c.index, index)
            && let Some(d) = c.digest
        {
            return d;
        }
        let digest = index.digest();
        if let Ok(mut memory) = self.memory.lock()
            && let Some(c) = memory.copies.get_mut(&id)
            && Arc::ptr_eq(&c.index, index)
        {
            c.digest = Some(digest);
        }
        digest
    }

    /// Writes the memory copies holding ops the cache file lacks into it
    /// (each merged with the file's copy). Writes add ops to memory only,
    /// so a burst of PUTs to one shard costs one file write per flush
    /// rather than one per PUT; the gateway flushes every
    /// [`FLUSH_INTERVAL`] and when it stops.
    pub async fn flush(&self) -> Result<usize, GatewayError> {
        let dirty: Vec<Arc<Index>> = match self.memory.lock() {
            Ok(mut memory) => {
                let mut out = std::mem::take(&mut memory.evicted);
                for c in memory.copies.values_mut().filter(|c| c.dirty) {
                    c.dirty = false;
                    out.push(c.index.clone());
                }
                out
            }
            Err(_) => return Ok(0),
        };
        for index in &dirty {
            self.store_cached(index).await?;
        }
        Ok(dirty.len())
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

    /// The cache file's copy of index `name` (tests).
    #[cfg(test)]
    pub(crate) async fn cache_file_copy(&self, name: IndexName) -> Result<Index, GatewayError> {
        self.load_cached(name).await
    }

    /// Merges `index` into the cache file (read, merge and write in one
    /// transaction, so concurrent writers never drop each other's ops).
    pub(crate) async fn store_cached(&self, index: &Index) -> Result<(), GatewayError> {
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

    /// The shard index named `namespace`, at most `max_age` old. The node
    /// is asked with the digest of the copy here and answers "unchanged"
    /// if it has the same, so an up-to-date copy is not sent again.
    async fn read(&self, namespace: &str, max_age: Duration) -> Result<Arc<Index>, GatewayError> {
        let name = self.name(namespace);
        if let Some(index) = self.remembered(&name.id().0, max_age) {
            return Ok(index);
        }
        self.fetch(name).await.map(|(index, _)| index)
    }

    /// Asks the node for index `name` (naming the digest of the copy
    /// here) and merges its copy in; also how many replicas answered the
    /// node's read, of how many it asked, if the node says.
    async fn fetch(
        &self,
        name: IndexName,
    ) -> Result<(Arc<Index>, Option<(usize, usize)>), GatewayError> {
        let id = name.id();
        let held = match self.remembered(&id.0, Duration::MAX) {
            Some(i) => i,
            None => Arc::new(self.load_cached(name).await?),
        };
        let have = self.digest_of(&held);
        let (copy, replicas) = self
            .node
            .get_index_counted(&id.to_hex(), Some(have))
            .await?;
        let index = match copy {
            IndexCopy::Unchanged | IndexCopy::Missing => Ok(self.refresh(held)),
            IndexCopy::Found(bytes) => {
                let mut index = (*held).clone();
                let merged = index.merge_encoded(&bytes).map_err(|e| {
                    GatewayError::Internal(format!(
                        "the network's copy of an index was refused: {e}"
                    ))
                })?;
                if merged == Merged::Changed {
                    self.store_cached(&index).await?;
                }
                Ok(self.remember(&index, true, false))
            }
        };
        index.map(|i| (i, replicas))
    }

    /// Marks the memory copy of `index` fresh (entering `index` if there
    /// is none) and returns it: the node had nothing it lacks.
    fn refresh(&self, index: Arc<Index>) -> Arc<Index> {
        let Ok(mut memory) = self.memory.lock() else {
            return index;
        };
        let id = index.id().0;
        if let Some(c) = memory.copies.get_mut(&id) {
            c.at = Instant::now();
            return c.index.clone();
        }
        memory.insert(
            id,
            Cached {
                at: Instant::now(),
                index: index.clone(),
                digest: None,
                dirty: false,
            },
        );
        index
    }

    /// Walks `key`'s path in the tree of `namespace`, reading each shard
    /// at most `max_age` old.
    async fn walk(
        &self,
        namespace: &str,
        key: &[u8],
        max_age: Duration,
    ) -> Result<Walk, GatewayError> {
        let mut walk = Walk::new(namespace, key);
        loop {
            let index = self.read(&walk.shard(), max_age).await?;
            if walk
                .step(&index, self.account.key(), key)
                .map_err(open_err)?
                == Step::Leaf
            {
                return Ok(walk);
            }
        }
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
        let walk = self.walk(namespace, key.as_bytes(), max_age).await?;
        Ok(walk.value().map(<[u8]>::to_vec))
    }

    /// Every live entry of `namespace`, sorted by key.
    pub async fn entries(&self, namespace: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>, GatewayError> {
        self.entries_aged(namespace, FRESH).await
    }

    /// Every live entry of `namespace` (all its shards), read at most
    /// `max_age` ago. Holds them all: for namespaces that stay small
    /// (buckets, one upload's parts); listings use [`Indexes::window`].
    pub async fn entries_aged(
        &self,
        namespace: &str,
        max_age: Duration,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, GatewayError> {
        self.survey(Survey::new(namespace), max_age)
            .await
            .map(|(entries, _)| entries)
    }

    /// The live entries among the first `limit` keys (live or deleted) at
    /// or after `from`, sorted, and where the next window starts (`None`:
    /// no more). Memory stays at one window and the shards being read.
    pub async fn window(
        &self,
        namespace: &str,
        from: &[u8],
        limit: usize,
    ) -> Result<shard::Window, GatewayError> {
        self.survey(Survey::window(namespace, from, limit), FRESH)
            .await
    }

    /// Every live entry whose key starts with `prefix`, sorted, read
    /// window by window (the first window's shards at most `max_age` old;
    /// later windows reuse those copies), so memory holds the matches and
    /// one window, not the whole namespace.
    pub async fn prefixed(
        &self,
        namespace: &str,
        prefix: &[u8],
        max_age: Duration,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, GatewayError> {
        let mut out = vec![];
        let mut from = prefix.to_vec();
        let mut age = max_age;
        loop {
            let survey = Survey::window(namespace, &from, self.window);
            let (live, next) = self.survey(survey, age).await?;
            age = FRESH.max(max_age);
            out.extend(live.into_iter().filter(|(k, _)| k.starts_with(prefix)));
            // Every key is at or after the prefix: once the window ends
            // past the keys that start with it, none are left.
            match next {
                Some(n) if n.starts_with(prefix) => from = n,
                _ => return Ok(out),
            }
        }
    }

    /// The keys of `namespace` whose latest op deletes them (their
    /// tombstones not collected yet), sorted. Holds them all: for the
    /// bucket list.
    pub async fn deleted(&self, namespace: &str) -> Result<Vec<Vec<u8>>, GatewayError> {
        let mut survey = Survey::new(namespace);
        loop {
            let pending = survey.take_pending();
            if pending.is_empty() {
                return Ok(survey.finish_deleted());
            }
            for (name, path) in pending {
                let index = self.read(&name, FRESH).await?;
                survey
                    .feed(&path, &index, self.account.key())
                    .map_err(open_err)?;
            }
        }
    }

    /// Whether `namespace` has any live entry.
    pub async fn any(&self, namespace: &str) -> Result<bool, GatewayError> {
        let mut from = vec![];
        loop {
            let (live, next) = self.window(namespace, &from, self.window).await?;
            if !live.is_empty() {
                return Ok(true);
            }
            match next {
                Some(n) => from = n,
                None => return Ok(false),
            }
        }
    }

    async fn survey(
        &self,
        mut survey: Survey,
        max_age: Duration,
    ) -> Result<shard::Window, GatewayError> {
        loop {
            let pending = survey.take_pending();
            if pending.is_empty() {
                return Ok(survey.finish_window());
            }
            let read: Vec<_> = futures::stream::iter(pending)
                .map(|(name, path)| async move { (path, self.read(&name, max_age).await) })
                .buffer_unordered(PARALLEL_READS)
                .collect()
                .await;
            for (path, index) in read {
                survey
                    .feed(&path, &*index?, self.account.key())
                    .map_err(open_err)?;
            }
        }
    }

    /// Applies `changes` to `namespace`: each goes to its key's leaf
    /// shard, one delta per leaf. `bucket` names the bucket in a "full"
    /// error. Returns whether every change won its slot here (a later
    /// write by another gateway may still win later).
    pub async fn write(
        &self,
        namespace: &str,
        bucket: &str,
        changes: &[Change],
    ) -> Result<bool, GatewayError> {
        // Leaf → (its depth, the highest clock on the paths, its changes).
        let mut leaves: BTreeMap<String, (usize, u64, Vec<&Change>)> = BTreeMap::new();
        for change in changes {
            let walk = self.walk(namespace, &change.0, FRESH).await?;
            let leaf = leaves
                .entry(walk.shard())
                .or_insert((walk.depth(), 0, vec![]));
            leaf.1 = leaf.1.max(walk.clock());
            leaf.2.push(change);
        }
        let mut all_won = true;
        for (leaf, (depth, clock, changes)) in leaves {
            all_won &= self
                .write_shard(&leaf, depth, clock, bucket, &changes)
                .await?;
        }
        Ok(all_won)
    }

    /// Writes `changes` to the shard `namespace` at `depth` with clocks
    /// past `path_clock`, then splits the shard if it has grown past the
    /// rule.
    async fn write_shard(
        &self,
        namespace: &str,
        depth: usize,
        path_clock: u64,
        bucket: &str,
        changes: &[&Change],
    ) -> Result<bool, GatewayError> {
        let current = self.read(namespace, FRESH).await?;
        let clock = current.next_clock(next_clock(crate::now_ms(), path_clock));
        let mut delta = Index::new(*current.name());
        let mut all_won = true;
        for (key, value) in changes.iter().copied() {
            let r = match value {
                Some(v) => delta.put(&self.account, key, v, clock),
                None => delta.delete(&self.account, key, clock),
            };
            all_won &= r.map_err(|e| bound_err(e, bucket))? == Merged::Changed;
        }
        // Checked against the bounds before anything is sent.
        let mut merged = (*current).clone();
        all_won &= merged.merge(&delta).map_err(|e| bound_err(e, bucket))? == Merged::Changed;
        self.send(&delta).await?;
        if self.split.should_split(&merged, depth)
            && !shard::is_split(&merged, self.account.key()).map_err(open_err)?
        {
            // Every gateway that splits writes the same marker; from now
            // on writes go to the children.
            let mut marker = Index::new(*current.name());
            marker
                .put(&self.account, SPLIT_MARKER, SPLIT_VALUE, clock + 1)
                .map_err(|e| bound_err(e, bucket))?;
            self.send(&marker).await?;
            tracing::debug!(
                namespace,
                depth,
                slots = merged.len(),
                "split an index shard"
            );
        }
        Ok(all_won)
    }

    /// Collects the tombstones of `namespace`'s tree older than `horizon`
    /// (a clock: now minus a grace), and the ops they and later writes in
    /// other shards supersede ([`shard::plan_collection`]).
    ///
    /// The tree is found root first, then every shard is read again,
    /// deepest first, each from the node afresh; a namespace whose reads
    /// did not hear from every replica is left for the next pass (an op
    /// that only a silent replica holds would be dropped). Reading
    /// descendants before their ancestors matters when two gateways
    /// collect at once: a descendant read after another pass dropped a
    /// tombstone there comes with an ancestor read after that pass dropped
    /// what the tombstone hid, since passes write ancestors first. The
    /// checkpoints are then written root first, stopping at the first
    /// failure. Trees of more than [`MAX_COLLECT_SHARDS`] shards are left
    /// alone (the whole tree is held while planning).
    pub async fn collect(&self, namespace: &str, horizon: u64) -> Result<Collected, GatewayError> {
        let key = self.account.key();
        let mut paths = vec![];
        let mut pending = vec![String::new()];
        while let Some(path) = pending.pop() {
            if paths.len() == MAX_COLLECT_SHARDS {
                tracing::info!(namespace, "too many shards to collect tombstones yet");
                return Ok(Collected {
                    skipped: 1,
                    ..Collected::default()
                });
            }
            let index = self
                .read(&shard::shard_name(namespace, &path), Duration::ZERO)
                .await?;
            if path.len() < shard::MAX_DEPTH && shard::is_split(&index, key).map_err(open_err)? {
                for digit in "0123456789abcdef".chars() {
                    pending.push(format!("{path}{digit}"));
                }
            }
            paths.push(path);
        }
        paths.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        let mut shards = BTreeMap::new();
        for path in paths {
            let name = self.name(&shard::shard_name(namespace, &path));
            let (index, replicas) = self.fetch(name).await?;
            if let Some((answered, asked)) = replicas
                && answered < asked
            {
                tracing::info!(
                    namespace,
                    answered,
                    asked,
                    "not collecting tombstones: a replica did not answer"
                );
                return Ok(Collected {
                    skipped: 1,
                    ..Collected::default()
                });
            }
            shards.insert(path, (*index).clone());
        }
        let plans = shard::plan_collection(&shards, key, horizon).map_err(open_err)?;
        let mut done = Collected::default();
        for plan in plans {
            let Some(index) = shards.get(&plan.path) else {
                continue;
            };
            let next = plan
                .apply(index, &self.account)
                .map_err(|e| GatewayError::Internal(format!("collecting {namespace}: {e}")))?;
            // A failure stops the pass: a descendant's tombstones may go
            // only after its ancestors' checkpoints are written.
            self.send(&next).await?;
            done.shards += 1;
            done.ops += plan.collected;
        }
        if done.shards > 0 {
            tracing::info!(
                namespace,
                shards = done.shards,
                ops = done.ops,
                "collected index tombstones"
            );
        }
        Ok(done)
    }

    /// Sends a delta to the node's replicas, then enters it in the memory
    /// copy (the cache file gets it at the next [`Indexes::flush`]).
    async fn send(&self, delta: &Index) -> Result<(), GatewayError> {
        self.node
            .post_index(&delta.id().to_hex(), delta.encode())
            .await?;
        self.remember(delta, false, true);
        Ok(())
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
