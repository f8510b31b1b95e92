//! Sharded account indexes: one namespace spread over a tree of indexes,
//! so a bucket is not bounded by what one index holds (65,536 slots,
//! 8 MiB, about 19,000 S3 objects).
//!
//! # Layout
//! A namespace's root shard is the index of the namespace itself (so an
//! index written before sharding existed is the root of its tree). A
//! shard that grows past its [`SplitRule`] gets a split marker, the entry
//! [`SPLIT_MARKER`] (a key no S3 key can be: `0xFF` never starts UTF-8),
//! and from then on writes go to its [`FANOUT`] children, named by the
//! next hex digit of the key's path (BLAKE3 of the key in its own
//! context): shard `photos` splits into `photos#0` … `photos#f`, shard
//! `photos#3` into `photos#30` … `photos#3f`. Hashing spreads any key
//! order (backups write keys in ascending order) evenly, so a tree of
//! `N` keys is about `log16(N / 1024)` deep.
//!
//! Nothing moves when a shard splits: its entries stay where they are and
//! every read of a key looks at each shard on the key's path, root to
//! leaf, and takes the latest op ([`Found::order`]: clock, then hash, the
//! index's own merge rule) among them. A write goes to the leaf, with a
//! clock past every op on the path, so it beats the key's older ops
//! higher up; a delete is a tombstone in the leaf that hides them.
//!
//! # Concurrency
//! Every gateway that splits a shard writes the same marker and the
//! children's names follow from the key alone, so two gateways that split
//! one shard at once agree on the tree. A gateway that has not yet seen a
//! split keeps writing to the shard it thinks is the leaf; that write is
//! still on every reader's path, and the latest op wins as in one index.
//!
//! # Collection
//! Deletes leave tombstones, so a bucket with churn would grow for ever.
//! [`plan_collection`] plans a pass over a whole tree: each shard gets a
//! checkpoint ([`crate::index::Checkpoint`]) that drops its tombstones
//! below the pass's horizon and the ops below it that a later op of the
//! same key in another shard supersedes (in an interior shard, the ops a
//! leaf's write or tombstone hides). A leaf's tombstone hides older ops in
//! its ancestors, so it may go only once they are gone: the plans are
//! written root first and the pass stops at the first failure, so no
//! tombstone is gone while an op it hid is still there. A tombstone that
//! still hides an op the pass keeps, or an op in a descendant (a writer
//! that had not seen a split), stays until a later pass.
//!
//! Two passes may run at once (two gateways of one account). A pass that
//! plans from shards read deepest first is safe beside another writing
//! root first: if it reads a shard after the other pass dropped a
//! tombstone there, it reads every ancestor after the other pass dropped
//! what the tombstone hid (property-tested; reading root first instead
//! can bring a deleted key back).
//!
//! [`Walk`] (one key) and [`Survey`] (every key) are state machines: they
//! say which shard to read next and take it when it is read, so the
//! gateway drives them over the network and the tests over a map.

use std::collections::{BTreeMap, BTreeSet};

use crate::index::{Account, Found, Index, IndexError, IndexKey};

/// The map key that marks a shard as split (its value is [`SPLIT_VALUE`]).
pub const SPLIT_MARKER: &[u8] = b"\xffcairn shard split v1";
/// The marker's value: the split format's version.
pub const SPLIT_VALUE: &[u8] = &[1];
/// Children of a split shard: one per hex digit of the key path.
pub const FANOUT: usize = 16;
/// Shards this deep never split (16^8 leaves is more than any bucket).
pub const MAX_DEPTH: usize = 8;
const PATH_CONTEXT: &str = "cairn v1 account index shard path";
const HEX: &[u8; 16] = b"0123456789abcdef";

/// When a shard splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitRule {
    /// Slots (tombstones included).
    pub max_entries: usize,
    /// Encoded bytes.
    pub max_bytes: usize,
}

impl SplitRule {
    /// 1,024 slots or 512 KiB: far inside an index's bounds, so writers
    /// that have not seen the split yet still find room. Every write makes
    /// each replica re-read and re-store its shard, so small shards keep
    /// small-object PUTs cheap; a million objects is still only four
    /// levels deep.
    pub const DEFAULT: Self = Self {
        max_entries: 1024,
        max_bytes: 512 << 10,
    };

    /// Whether `index`, a shard at `depth`, should split now.
    pub fn should_split(&self, index: &Index, depth: usize) -> bool {
        depth < MAX_DEPTH
            && (index.len() >= self.max_entries || index.encoded_len() >= self.max_bytes)
    }
}

impl Default for SplitRule {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Whether `key` is reserved for the tree itself (never a user's key).
pub fn is_reserved(key: &[u8]) -> bool {
    key.first() == Some(&0xFF)
}

/// The hex digits that place `key` in the tree.
pub fn key_path(key: &[u8]) -> [u8; 64] {
    let hash = blake3::Hasher::new_derive_key(PATH_CONTEXT)
        .update(key)
        .finalize();
    let mut out = [0u8; 64];
    for (i, b) in hash.as_bytes().iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 15)];
    }
    out
}

/// The namespace of the shard at `path` (hex digits) under `root`.
pub fn shard_name(root: &str, path: &str) -> String {
    if path.is_empty() {
        root.to_string()
    } else {
        format!("{root}#{path}")
    }
}

/// Whether `index` carries a live split marker.
pub fn is_split(index: &Index, key: &IndexKey) -> Result<bool, IndexError> {
    Ok(index
        .find(key, SPLIT_MARKER)?
        .is_some_and(|f| f.value.is_some()))
}

/// The later of two ops for one key.
fn later(a: Option<Found>, b: Found) -> Found {
    match a {
        Some(a) if a.order >= b.order => a,
        _ => b,
    }
}

/// Finds one key's latest op along its path, and the leaf a write of it
/// goes to.
#[derive(Clone, Debug)]
pub struct Walk {
    root: String,
    path: [u8; 64],
    depth: usize,
    done: bool,
    latest: Option<Found>,
    clock: u64,
}

/// What [`Walk::step`] learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Read [`Walk::shard`] next.
    Descend,
    /// The shard just read is the leaf.
    Leaf,
}

impl Walk {
    /// A walk for `key` in the tree under `root`.
    pub fn new(root: &str, key: &[u8]) -> Self {
        Self {
            root: root.to_string(),
            path: key_path(key),
            depth: 0,
            done: false,
            latest: None,
            clock: 0,
        }
    }

    fn path(&self) -> &str {
        // Hex digits are ASCII.
        std::str::from_utf8(&self.path[..self.depth]).unwrap_or_default()
    }

    /// The shard to read next (or, once done, the leaf).
    pub fn shard(&self) -> String {
        shard_name(&self.root, self.path())
    }

    /// The leaf's depth (once done) or the next shard's.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Takes the shard [`Walk::shard`] named, read, for map key `map_key`.
    pub fn step(
        &mut self,
        index: &Index,
        key: &IndexKey,
        map_key: &[u8],
    ) -> Result<Step, IndexError> {
        if self.done {
            return Ok(Step::Leaf);
        }
        if let Some(f) = index.find(key, map_key)? {
            self.latest = Some(later(self.latest.take(), f));
        }
        self.clock = self.clock.max(index.clock());
        if self.depth < MAX_DEPTH && is_split(index, key)? {
            self.depth += 1;
            Ok(Step::Descend)
        } else {
            self.done = true;
            Ok(Step::Leaf)
        }
    }

    /// The key's latest op on the path read so far.
    pub fn latest(&self) -> Option<&Found> {
        self.latest.as_ref()
    }

    /// The key's value: the latest op, unless it is a tombstone.
    pub fn value(&self) -> Option<&[u8]> {
        self.latest.as_ref().and_then(|f| f.value.as_deref())
    }

    /// The highest clock of any shard on the path: a write's clock must
    /// pass it (see [`crate::index::next_clock`]).
    pub fn clock(&self) -> u64 {
        self.clock
    }
}

/// Reads a tree: every key's latest op over all shards, or, as a
/// window, the first `limit` keys from a bound on (so a listing of a
/// bucket of any size holds one window and one shard in memory).
///
/// A window is exact: if a key is among the first `limit` keys (live or
/// deleted) of the whole tree, it is among the first `limit` of every
/// shard that holds an op for it, so keeping each shard's first `limit`
/// and then the first `limit` of their union loses none of its ops.
#[derive(Debug, Default)]
pub struct Survey {
    root: String,
    pending: Vec<String>,
    merged: BTreeMap<Vec<u8>, Found>,
    shards: usize,
    from: Vec<u8>,
    limit: Option<usize>,
    cut: bool,
}

impl Survey {
    /// A survey of the whole tree under `root`.
    pub fn new(root: &str) -> Self {
        Self {
            root: root.to_string(),
            pending: vec![String::new()],
            ..Self::default()
        }
    }

    /// A survey of the first `limit` (at least 1) keys at or after `from`.
    pub fn window(root: &str, from: &[u8], limit: usize) -> Self {
        Self {
            from: from.to_vec(),
            limit: Some(limit.max(1)),
            ..Self::new(root)
        }
    }

    /// The shards to read next, by path: read each and pass it to
    /// [`Survey::feed`]. Empty once the survey is complete.
    pub fn take_pending(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(|p| (shard_name(&self.root, &p), p))
            .collect()
    }

    /// Takes the shard at `path`.
    pub fn feed(&mut self, path: &str, index: &Index, key: &IndexKey) -> Result<(), IndexError> {
        self.shards += 1;
        let limit = self.limit.unwrap_or(usize::MAX);
        let mut taken = 0;
        for (k, f) in index.all(key)? {
            if is_reserved(&k) || k < self.from {
                continue;
            }
            if taken == limit {
                self.cut = true;
                break;
            }
            taken += 1;
            let f = later(self.merged.remove(&k), f);
            self.merged.insert(k, f);
        }
        while self.merged.len() > limit {
            self.merged.pop_last();
            self.cut = true;
        }
        if path.len() < MAX_DEPTH && is_split(index, key)? {
            for &digit in HEX {
                let mut child = path.to_string();
                child.push(char::from(digit));
                self.pending.push(child);
            }
        }
        Ok(())
    }

    /// Shards read.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// Every live key and value, sorted by key.
    pub fn finish(self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.finish_window().0
    }

    /// The keys whose latest op deletes them (tombstones not collected
    /// yet), sorted.
    pub fn finish_deleted(self) -> Vec<Vec<u8>> {
        self.merged
            .into_iter()
            .filter_map(|(k, f)| f.value.is_none().then_some(k))
            .collect()
    }

    /// The live keys and values of the window, sorted by key, and the
    /// bound the next window starts from (`None`: the tree holds no more).
    pub fn finish_window(self) -> Window {
        let next = if self.cut {
            self.merged.last_key_value().map(|(k, _)| after(k))
        } else {
            None
        };
        let live = self
            .merged
            .into_iter()
            .filter_map(|(k, f)| f.value.map(|v| (k, v)))
            .collect();
        (live, next)
    }
}

/// A window's live entries (key, value), and where the next one starts.
pub type Window = (Vec<(Vec<u8>, Vec<u8>)>, Option<Vec<u8>>);

/// The least byte string greater than `key`.
pub fn after(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.push(0);
    k
}

/// The least byte string greater than every string that starts with
/// `prefix` (`None`: there is none, `prefix` is empty or all `0xFF`).
pub fn past_prefix(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut p = prefix.to_vec();
    while let Some(last) = p.pop() {
        if last < 0xFF {
            p.push(last + 1);
            return Some(p);
        }
    }
    None
}

/// What a collection pass does to one shard ([`plan_collection`]): a
/// checkpoint at `horizon` that leaves out the ops of `drop` (a later op
/// for their key lives in another shard) and every tombstone below it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Collect {
    /// The shard's path (hex digits; empty for the root).
    pub path: String,
    /// The checkpoint's horizon: the pass's, or lower where a tombstone
    /// below it must stay for now.
    pub horizon: u64,
    /// Slots whose op is superseded by a later op in another shard.
    drop: BTreeSet<[u8; 32]>,
    /// Ops the checkpoint removes (tombstones, superseded and shadowed ops).
    pub collected: usize,
}

impl Collect {
    /// The shard's new state: `index` (the shard as read) with the
    /// checkpoint, signed by `account`.
    pub fn apply(&self, index: &Index, account: &Account) -> Result<Index, IndexError> {
        index.collect(account, self.horizon, |op| !self.drop.contains(&op.slot))
    }
}

/// One op of a key, in one shard, as the planner sees it.
struct Held {
    path: String,
    order: (u64, [u8; 32]),
    tombstone: bool,
    slot: [u8; 32],
    /// Whether the planned pass leaves it in its shard.
    survives: bool,
}

/// Whether shard `a` is an ancestor of shard `b` (a proper prefix).
fn is_ancestor(a: &str, b: &str) -> bool {
    a.len() < b.len() && b.starts_with(a)
}

/// Plans a collection pass at `horizon` over one namespace's tree: every
/// shard (by path, as a [`Survey`] finds them), read. Returns what to
/// write, root first, leaving out shards with nothing to collect.
///
/// In every shard, an op below the horizon stays (in the checkpoint's
/// base) only if it is a put and the latest op of its key in the tree, so
/// ops a later op elsewhere on the path supersedes go, and so do
/// tombstones. A tombstone hides its key's older ops in other shards, so
/// it may go only once they are gone: the plans must be written in the
/// order given (ancestors first), stopping at the first that fails, and a
/// tombstone goes only if every other op of its key is in an ancestor
/// shard and goes with it. A tombstone that still hides an op in a
/// descendant (written there by a writer that had not seen the split) or
/// one an ancestor keeps caps its shard's horizon below itself; the next
/// pass collects it, once this one removed what it hid. Split markers stay
/// (they are puts, and each shard's is its own).
pub fn plan_collection(
    shards: &BTreeMap<String, Index>,
    key: &IndexKey,
    horizon: u64,
) -> Result<Vec<Collect>, IndexError> {
    // Every key's ops across the tree.
    let mut held: BTreeMap<Vec<u8>, Vec<Held>> = BTreeMap::new();
    for (path, index) in shards {
        for (k, f) in index.all(key)? {
            if is_reserved(&k) {
                continue;
            }
            let slot = key.slot(&index.id(), &k);
            held.entry(k).or_default().push(Held {
                path: path.clone(),
                order: f.order,
                tombstone: f.value.is_none(),
                slot,
                survives: true,
            });
        }
    }
    let winners: BTreeMap<Vec<u8>, (u64, [u8; 32])> = held
        .iter()
        .filter_map(|(k, ops)| ops.iter().map(|h| h.order).max().map(|o| (k.clone(), o)))
        .collect();
    // Each key a shard holds, to plan one shard at a time.
    let mut by_shard: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for (k, ops) in &held {
        for h in ops {
            by_shard.entry(h.path.clone()).or_default().push(k.clone());
        }
    }
    let mut order: Vec<&String> = shards.keys().collect();
    order.sort_by_key(|p| (p.len(), p.as_str()));
    let mut plans = vec![];
    for path in order {
        let Some(index) = shards.get(path) else {
            continue;
        };
        let keys = by_shard.get(path).cloned().unwrap_or_default();
        // The horizon, lowered below each tombstone that must stay.
        let mut h = horizon;
        for k in &keys {
            let ops = &held[k];
            let Some(mine) = ops.iter().find(|o| &o.path == path) else {
                continue;
            };
            if !mine.tombstone || mine.order.0 >= h || Some(&mine.order) != winners.get(k) {
                continue;
            }
            let pinned = ops
                .iter()
                .any(|o| &o.path != path && (!is_ancestor(&o.path, path) || o.survives));
            if pinned {
                h = h.min(mine.order.0);
            }
        }
        let current = index.checkpoint().map(|c| c.horizon);
        let mut drop = BTreeSet::new();
        let mut collected = 0;
        if current.is_none_or(|c| h > c) {
            // Base ops a later op in this shard shadows go too.
            collected += index.shadowed();
            for k in &keys {
                let winner = winners.get(k);
                let Some(mine) = held
                    .get_mut(k)
                    .and_then(|ops| ops.iter_mut().find(|o| &o.path == path))
                else {
                    continue;
                };
                if mine.order.0 >= h {
                    continue;
                }
                let latest = Some(&mine.order) == winner;
                if !latest {
                    drop.insert(mine.slot);
                }
                if mine.tombstone || !latest {
                    mine.survives = false;
                    collected += 1;
                }
            }
        }
        if collected > 0 {
            plans.push(Collect {
                path: path.clone(),
                horizon: h,
                drop,
                collected,
            });
        }
    }
    Ok(plans)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use super::*;
    use crate::index::next_clock;
    use crate::keys::SecretKey;
    use proptest::prelude::*;

    /// A tree of shards in memory, written the way the gateway writes.
    struct Tree {
        account: Account,
        shards: HashMap<String, Index>,
        rule: SplitRule,
    }

    impl Tree {
        fn new(rule: SplitRule) -> Self {
            Self {
                account: Account::new(SecretKey::from_bytes([5; 32])),
                shards: HashMap::new(),
                rule,
            }
        }

        fn shard(&mut self, name: &str) -> &mut Index {
            let account = &self.account;
            self.shards
                .entry(name.to_string())
                .or_insert_with(|| Index::new(account.index_name(name.as_bytes())))
        }

        fn walk(&mut self, key: &[u8]) -> Walk {
            let mut w = Walk::new("objects/b", key);
            loop {
                let name = w.shard();
                let ix = self.shard(&name).clone();
                if w.step(&ix, self.account.key(), key).unwrap() == Step::Leaf {
                    return w;
                }
            }
        }

        /// Writes `value` (None: delete) to `key`'s leaf, or, if `stale`
        /// is set, to a shard that many levels above it (a writer that
        /// has not seen the splits yet).
        fn write(&mut self, key: &[u8], value: Option<&[u8]>, now: u64, stale: usize) {
            let w = self.walk(key);
            let depth = w.depth().saturating_sub(stale);
            let path = std::str::from_utf8(&key_path(key)[..depth])
                .unwrap()
                .to_string();
            let name = shard_name("objects/b", &path);
            let clock = next_clock(now, if stale > 0 { 0 } else { w.clock() });
            let account = Account::new(SecretKey::from_bytes([5; 32]));
            let rule = self.rule;
            let ix = self.shard(&name);
            let clock = ix.next_clock(clock);
            match value {
                Some(v) => ix.put(&account, key, v, clock).unwrap(),
                None => ix.delete(&account, key, clock).unwrap(),
            };
            if rule.should_split(ix, depth) && !is_split(ix, account.key()).unwrap() {
                ix.put(&account, SPLIT_MARKER, SPLIT_VALUE, clock + 1)
                    .unwrap();
            }
        }

        fn survey(&mut self) -> Vec<(Vec<u8>, Vec<u8>)> {
            let mut s = Survey::new("objects/b");
            loop {
                let pending = s.take_pending();
                if pending.is_empty() {
                    return s.finish();
                }
                for (name, path) in pending {
                    let ix = self.shard(&name).clone();
                    s.feed(&path, &ix, self.account.key()).unwrap();
                }
            }
        }
    }

    #[test]
    fn a_tree_holds_far_more_than_one_index_and_stays_shallow() {
        let mut t = Tree::new(SplitRule {
            max_entries: 64,
            max_bytes: 1 << 20,
        });
        // Ascending keys, as a backup tool writes them.
        for i in 0..5_000u32 {
            let k = format!("data/{i:08}");
            t.write(k.as_bytes(), Some(k.as_bytes()), 1_000 + u64::from(i), 0);
        }
        let all = t.survey();
        assert_eq!(all.len(), 5_000);
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
        // 5,000 / 64 keys a shard: two or three levels of 16, not a spine.
        let deepest = t
            .shards
            .keys()
            .map(|n| n.len() - "objects/b".len())
            .max()
            .unwrap();
        assert!(deepest <= 4, "{deepest}");
        assert!(t.shards.values().all(|ix| ix.len() <= 64 + 1));
        let w = t.walk(b"data/00000123");
        assert_eq!(w.value(), Some(&b"data/00000123"[..]));
        assert_eq!(t.walk(b"data/x").value(), None);
    }

    impl Tree {
        /// Every live entry, read window by window.
        fn windows(&mut self, limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
            let mut out = vec![];
            let mut from = vec![];
            loop {
                let mut s = Survey::window("objects/b", &from, limit);
                loop {
                    let pending = s.take_pending();
                    if pending.is_empty() {
                        break;
                    }
                    for (name, path) in pending {
                        let ix = self.shard(&name).clone();
                        s.feed(&path, &ix, self.account.key()).unwrap();
                    }
                }
                let (live, next) = s.finish_window();
                assert!(live.len() <= limit);
                if let (Some((last, _)), Some((first, _))) = (out.last(), live.first()) {
                    assert!(last < first, "windows overlap");
                }
                out.extend(live);
                match next {
                    Some(n) => from = n,
                    None => return out,
                }
            }
        }
    }

    #[test]
    fn bounds_after_a_key_and_past_a_prefix() {
        assert_eq!(after(b"a"), b"a\0");
        assert_eq!(past_prefix(b"d0/"), Some(b"d00".to_vec()));
        assert_eq!(past_prefix(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(past_prefix(b"\xff"), None);
        assert_eq!(past_prefix(b""), None);
        assert!(b"d0/zzz".as_slice() < past_prefix(b"d0/").unwrap().as_slice());
    }

    #[test]
    fn the_split_marker_is_not_a_key_and_no_utf8_key_is_reserved() {
        assert!(is_reserved(SPLIT_MARKER));
        assert!(!is_reserved("ÿ".as_bytes()));
        assert!(!is_reserved(b""));
        assert_eq!(shard_name("objects/b", ""), "objects/b");
        assert_eq!(shard_name("objects/b", "3a"), "objects/b#3a");
        let p = key_path(b"k");
        assert!(p.iter().all(|c| HEX.contains(c)));
        assert_ne!(key_path(b"k"), key_path(b"l"));
    }

    impl Tree {
        /// Every shard by path.
        fn by_path(&self) -> BTreeMap<String, Index> {
            self.shards
                .iter()
                .map(|(name, ix)| {
                    let path = name["objects/b".len()..].trim_start_matches('#');
                    (path.to_string(), ix.clone())
                })
                .collect()
        }

        /// A collection pass at `horizon` that writes its first `limit`
        /// plans (the rest failed): the number written.
        fn collect(&mut self, horizon: u64, limit: usize) -> usize {
            let plans = plan_collection(&self.by_path(), self.account.key(), horizon).unwrap();
            let account = Account::new(SecretKey::from_bytes([5; 32]));
            let mut written = 0;
            for plan in plans.iter().take(limit) {
                let name = shard_name("objects/b", &plan.path);
                let ix = self.shard(&name);
                let next = plan.apply(ix, &account).unwrap();
                let held = |ix: &Index| ix.len() + ix.shadowed();
                assert_eq!(held(ix) - held(&next), plan.collected, "{plan:?}");
                // Written as the gateway writes it: merged into the replica.
                assert_eq!(ix.merge(&next), Ok(Merged::Changed));
                assert_eq!(*ix, next);
                written += 1;
            }
            written
        }

        fn tombstones(&self) -> usize {
            self.shards.values().map(Index::tombstones).sum()
        }

        fn assert_reads(&mut self, model: &BTreeMap<Vec<u8>, Vec<u8>>, keys: &[Vec<u8>]) {
            let expected: Vec<(Vec<u8>, Vec<u8>)> = model.clone().into_iter().collect();
            assert_eq!(self.survey(), expected);
            assert_eq!(self.windows(5), expected);
            for key in keys {
                assert_eq!(
                    self.walk(key).value(),
                    model.get(key).map(Vec::as_slice),
                    "{}",
                    String::from_utf8_lossy(key)
                );
            }
        }
    }

    use crate::index::Merged;

    #[test]
    fn a_collection_pass_drops_every_tombstone_of_a_split_tree() {
        let mut t = Tree::new(SplitRule {
            max_entries: 16,
            max_bytes: 1 << 20,
        });
        let keys: Vec<Vec<u8>> = (0..300u32)
            .map(|i| format!("backup/{i:05}").into_bytes())
            .collect();
        let mut model = BTreeMap::new();
        for (i, k) in keys.iter().enumerate() {
            t.write(k, Some(b"v"), 1_000 + i as u64, 0);
            model.insert(k.clone(), b"v".to_vec());
        }
        // Deletes spread over the tree, old and new shards alike.
        for (i, k) in keys.iter().enumerate().filter(|(i, _)| i % 6 != 0) {
            t.write(k, None, 2_000 + i as u64, 0);
            model.remove(k);
        }
        assert_eq!(model.len(), 50);
        assert!(t.shards.len() > 16, "the tree split");
        let before = t.shards.clone();
        let bytes = |t: &Tree| t.shards.values().map(Index::encoded_len).sum::<usize>();
        let (bytes_before, tombstones_before) = (bytes(&t), t.tombstones());
        assert_eq!(tombstones_before, 250);
        // A pass that stops after any shard's write still reads right:
        // ancestors are written first.
        let plans = plan_collection(&t.by_path(), t.account.key(), 10_000).unwrap();
        assert!(plans.windows(2).all(|w| w[0].path.len() <= w[1].path.len()));
        for limit in [1, 2, plans.len() / 2] {
            let mut partial = Tree::new(t.rule);
            partial.shards = before.clone();
            partial.collect(10_000, limit);
            partial.assert_reads(&model, &keys);
        }
        assert_eq!(t.collect(10_000, usize::MAX), plans.len());
        t.assert_reads(&model, &keys);
        assert_eq!(t.tombstones(), 0);
        assert!(
            bytes(&t) < bytes_before / 2,
            "{} of {bytes_before}",
            bytes(&t)
        );
        // Ancestor ops the deletes hid are gone too: the 50 keys, and the
        // split markers, are all that is left.
        let slots: usize = t.shards.values().map(Index::len).sum();
        let markers = t
            .shards
            .values()
            .filter(|ix| is_split(ix, t.account.key()).unwrap())
            .count();
        assert_eq!(slots, 50 + markers);
        // A second pass finds nothing to do.
        assert!(
            plan_collection(&t.by_path(), t.account.key(), 10_001)
                .unwrap()
                .is_empty()
        );
        // Merging any pre-pass copy of any shard back brings nothing back.
        for (name, old) in &before {
            assert_eq!(t.shard(name).merge(old), Ok(Merged::Stale), "{name}");
        }
        t.assert_reads(&model, &keys);
        // Writes go on past the horizon.
        t.write(&keys[1], Some(b"again"), 10_500, 0);
        model.insert(keys[1].clone(), b"again".to_vec());
        t.write(&keys[0], None, 10_501, 0);
        model.remove(&keys[0]);
        t.assert_reads(&model, &keys);
    }

    #[test]
    fn a_tombstone_that_still_hides_a_descendants_op_waits_a_pass() {
        let mut t = Tree::new(SplitRule {
            max_entries: 4,
            max_bytes: 1 << 20,
        });
        let keys: Vec<Vec<u8>> = (0..40u32).map(|i| format!("k{i}").into_bytes()).collect();
        for (i, k) in keys.iter().enumerate() {
            t.write(k, Some(b"v"), 100 + i as u64, 0);
        }
        // A writer that has not seen the split deletes in the root, over
        // a put that lives in a child.
        let k = keys[39].clone();
        assert!(t.walk(&k).depth() > 0);
        t.write(&k, None, 500, 1);
        assert_eq!(t.walk(&k).value(), None);
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = keys[..39]
            .iter()
            .map(|k| (k.clone(), b"v".to_vec()))
            .collect();
        t.assert_reads(&model, &keys);
        // The first pass keeps the tombstone (the child is written after
        // it) and drops the put it hides; the second drops the tombstone.
        t.collect(1_000, usize::MAX);
        t.assert_reads(&model, &keys);
        assert_eq!(t.tombstones(), 1);
        t.collect(1_001, usize::MAX);
        t.assert_reads(&model, &keys);
        assert_eq!(t.tombstones(), 0);
        t.write(&k, Some(b"back"), 1_100, 0);
        model.insert(k, b"back".to_vec());
        t.assert_reads(&model, &keys);
    }

    #[derive(Clone, Debug)]
    enum Action {
        Put(u8, u8),
        Delete(u8),
        /// A writer that missed the last split(s) puts to an ancestor.
        StalePut(u8, u8, usize),
    }

    fn action() -> impl Strategy<Value = Action> {
        prop_oneof![
            4 => (0u8..200, any::<u8>()).prop_map(|(k, v)| Action::Put(k, v)),
            2 => (0u8..200).prop_map(Action::Delete),
            1 => (0u8..200, any::<u8>(), 1usize..3).prop_map(|(k, v, s)| Action::StalePut(k, v, s)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Collection passes (some stopping part way) at any horizon
        /// leave the tree reading as the model, bring nothing back when
        /// pre-pass copies are merged in, and in the end leave no
        /// tombstone below the horizon.
        #[test]
        fn collection_passes_keep_the_map_and_end_every_old_tombstone(
            actions in prop::collection::vec(action(), 1..300),
            cut in 0usize..20,
            at in 1u64..100,
        ) {
            let mut t = Tree::new(SplitRule { max_entries: 8, max_bytes: 1 << 20 });
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            let keys: Vec<Vec<u8>> = (0u8..200).map(|k| format!("k{k:03}").into_bytes()).collect();
            let end = 10 * actions.len() as u64 + 10;
            let horizon = end * at / 100 + 1;
            for (i, a) in actions.iter().enumerate() {
                let now = 10 * i as u64 + 10;
                match *a {
                    Action::Put(k, v) => {
                        t.write(&keys[usize::from(k)], Some(&[v]), now, 0);
                        model.insert(keys[usize::from(k)].clone(), vec![v]);
                    }
                    Action::Delete(k) => {
                        // Some deletes come from writers that missed splits.
                        t.write(&keys[usize::from(k)], None, now, usize::from(k % 3 == 0));
                        model.remove(&keys[usize::from(k)]);
                    }
                    Action::StalePut(k, v, s) => {
                        t.write(&keys[usize::from(k)], Some(&[v]), now, s);
                        model.insert(keys[usize::from(k)].clone(), vec![v]);
                    }
                }
            }
            let before = t.shards.clone();
            t.collect(horizon, cut);
            t.assert_reads(&model, &keys);
            for (name, old) in &before {
                t.shard(name).merge(old).unwrap();
            }
            t.assert_reads(&model, &keys);
            // Whole passes until nothing is left to collect.
            for pass in 1..=MAX_DEPTH as u64 + 2 {
                t.collect(horizon + pass, usize::MAX);
                t.assert_reads(&model, &keys);
            }
            let old = t.shards.values().flat_map(|ix| ix.ops().filter(|o| o.tombstone && o.clock < horizon).cloned().collect::<Vec<_>>()).count();
            prop_assert_eq!(old, 0);
            for (name, old) in &before {
                t.shard(name).merge(old).unwrap();
            }
            t.assert_reads(&model, &keys);
        }

        /// Two gateways collect at once: one plans from a read of the whole
        /// tree and writes root first; the other reads shard by shard,
        /// deepest first, in between those writes, then plans and writes
        /// from its reads. Whatever the interleaving, the tree still reads
        /// as the model (reading root first instead can bring a deleted
        /// key back: an ancestor read before the first pass dropped what a
        /// tombstone hid, and the tombstone's shard read after it was
        /// dropped).
        #[test]
        fn two_collection_passes_at_once_keep_the_map(
            actions in prop::collection::vec(action(), 1..200),
            steps in prop::collection::vec(any::<bool>(), 0..80),
            at in 30u64..100,
            second_later in any::<bool>(),
        ) {
            let mut t = Tree::new(SplitRule { max_entries: 8, max_bytes: 1 << 20 });
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            let keys: Vec<Vec<u8>> = (0u8..200).map(|k| format!("k{k:03}").into_bytes()).collect();
            for (i, a) in actions.iter().enumerate() {
                let now = 10 * i as u64 + 10;
                match *a {
                    Action::Put(k, v) => {
                        t.write(&keys[usize::from(k)], Some(&[v]), now, 0);
                        model.insert(keys[usize::from(k)].clone(), vec![v]);
                    }
                    Action::Delete(k) => {
                        t.write(&keys[usize::from(k)], None, now, usize::from(k % 3 == 0));
                        model.remove(&keys[usize::from(k)]);
                    }
                    Action::StalePut(k, v, s) => {
                        t.write(&keys[usize::from(k)], Some(&[v]), now, s);
                        model.insert(keys[usize::from(k)].clone(), vec![v]);
                    }
                }
            }
            let end = 10 * actions.len() as u64 + 10;
            let h1 = end * at / 100 + 1;
            let h2 = if second_later { h1 + 5 } else { h1 };
            let account = Account::new(SecretKey::from_bytes([5; 32]));
            let first = plan_collection(&t.by_path(), account.key(), h1).unwrap();
            let mut first = first.into_iter();
            let mut paths: Vec<String> = t.by_path().into_keys().collect();
            paths.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
            let mut paths = paths.into_iter();
            let mut read: BTreeMap<String, Index> = BTreeMap::new();
            let mut steps = steps.into_iter();
            loop {
                let write = steps.next().unwrap_or(true);
                if write && let Some(plan) = first.next() {
                    let name = shard_name("objects/b", &plan.path);
                    let ix = t.shard(&name);
                    let next = plan.apply(ix, &account).unwrap();
                    ix.merge(&next).unwrap();
                } else if let Some(path) = paths.next() {
                    let ix = t.shard(&shard_name("objects/b", &path)).clone();
                    read.insert(path, ix);
                } else if first.len() == 0 {
                    break;
                }
            }
            for plan in plan_collection(&read, account.key(), h2).unwrap() {
                let name = shard_name("objects/b", &plan.path);
                let next = plan.apply(&read[&plan.path], &account).unwrap();
                t.shard(&name).merge(&next).unwrap();
            }
            t.assert_reads(&model, &keys);
        }

        /// Whatever splits happen and whoever writes where, the tree reads
        /// as one map with last-writer-wins: what a model map says.
        #[test]
        fn the_tree_reads_as_one_last_writer_wins_map(actions in prop::collection::vec(action(), 1..400)) {
            let mut t = Tree::new(SplitRule { max_entries: 8, max_bytes: 1 << 20 });
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            for (i, a) in actions.iter().enumerate() {
                let now = 10 * i as u64 + 10;
                match *a {
                    Action::Put(k, v) => {
                        let key = format!("k{k:03}").into_bytes();
                        t.write(&key, Some(&[v]), now, 0);
                        model.insert(key, vec![v]);
                    }
                    Action::Delete(k) => {
                        let key = format!("k{k:03}").into_bytes();
                        t.write(&key, None, now, 0);
                        model.remove(&key);
                    }
                    Action::StalePut(k, v, s) => {
                        let key = format!("k{k:03}").into_bytes();
                        // Its clock is still the latest in real time.
                        t.write(&key, Some(&[v]), now, s);
                        model.insert(key, vec![v]);
                    }
                }
            }
            let all = t.survey();
            let expected: Vec<(Vec<u8>, Vec<u8>)> = model.clone().into_iter().collect();
            prop_assert_eq!(&all, &expected);
            // The deleted keys: written at some point, not in the model.
            let mut s = Survey::new("objects/b");
            loop {
                let pending = s.take_pending();
                if pending.is_empty() {
                    break;
                }
                for (name, path) in pending {
                    let ix = t.shard(&name).clone();
                    s.feed(&path, &ix, t.account.key()).unwrap();
                }
            }
            let written: std::collections::BTreeSet<u8> = actions
                .iter()
                .map(|a| match *a {
                    Action::Put(k, _) | Action::Delete(k) | Action::StalePut(k, _, _) => k,
                })
                .collect();
            let deleted: Vec<Vec<u8>> = written
                .into_iter()
                .map(|k| format!("k{k:03}").into_bytes())
                .filter(|k| !model.contains_key(k))
                .collect();
            prop_assert_eq!(s.finish_deleted(), deleted);
            for k in 0u8..200 {
                let key = format!("k{k:03}").into_bytes();
                let w = t.walk(&key);
                prop_assert_eq!(w.value(), model.get(&key).map(Vec::as_slice));
            }
            // Window by window, the same entries, each window bounded.
            for limit in [1, 7, 64] {
                let windowed = t.windows(limit);
                prop_assert_eq!(&windowed, &expected);
            }
        }
    }
}
