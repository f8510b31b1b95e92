//! Account indexes: versioned, signed, encrypted maps owned by an account
//! key, kept by the network instead of by any one machine.
//!
//! The S3 gateway keeps its bucket list and each bucket's object index here,
//! so a second gateway with the same account sees the same buckets and the
//! gateway machine holds nothing that is lost with it. This module owns the
//! data type, its merge rule, its keys and its format; storage and
//! replication are the node's (`cairn-node`'s `indexes`).
//!
//! # Keys
//! An account is an Ed25519 key ([`SecretKey`]). From its secret, BLAKE3
//! `derive_key` makes three symmetric keys, one per context string:
//!
//! | context | use |
//! |---|---|
//! | `"cairn v1 account index seal key"` | XChaCha20-Poly1305 key of every entry |
//! | `"cairn v1 account index slot key"` | keyed BLAKE3 of map keys into slots |
//! | `"cairn v1 account index namespace key"` | keyed BLAKE3 of namespace names |
//!
//! Together they are the [`IndexKey`]: whoever holds it can list and read,
//! only the account's signing key can write. A namespace (`"buckets"`, one
//! bucket's object index, …) is named by its keyed hash, and the
//! [`IndexId`] (the DHT key) is BLAKE3 in the `"cairn v1 account index id"`
//! context over the account public key and that hash. The nodes that store
//! an index thus learn neither bucket names nor object keys, only slots,
//! clocks, sizes and ciphertext.
//!
//! # Ops
//! The state is one [`Op`] per slot: `slot` is the keyed hash of the index
//! id and the map key (the id is in it so that one key in two namespaces
//! does not show as the same slot), `clock` a hybrid logical clock (the
//! caller passes `max(now_ms, highest clock seen + 1)`, see [`next_clock`]),
//! `sealed` the map key and value encrypted, `tombstone` whether it deletes.
//! The account signs `(IndexId, slot, clock, tombstone, sealed)` under the
//! `"cairn v1 account index op"` domain.
//!
//! Entries are sealed with XChaCha20-Poly1305 under a random 24-byte nonce
//! (stored in front of the ciphertext), with the index id, slot, clock and
//! tombstone flag as associated data. A random nonce is chosen over
//! AES-GCM with a nonce derived from slot and clock because two gateways
//! may well write the same key at the same millisecond with different
//! values: a derived nonce would then repeat under one key, which breaks
//! GCM outright, while 192 random bits never collide in practice. The
//! associated data means a sealed payload moved to another slot, clock or
//! index does not open; opening also checks that the key inside hashes to
//! the op's slot.
//!
//! # Merge (a state-based CRDT)
//! Merge is the union of ops followed by compaction to one winner per
//! slot: the highest clock, then the op's hash (BLAKE3 of its encoding) as
//! tie-break. The winner of a slot in `A ∪ B` is the winner in `A` or in
//! `B`, so merge is commutative, associative and idempotent
//! (property-tested below), and two gateways that PUT one key concurrently
//! end with the same winner on every replica. A delete is an op like any
//! other (last writer wins) that keeps its slot as a tombstone, so an older
//! put that arrives later still loses. Nodes verify and merge without the
//! [`IndexKey`]: every op must be signed by the account the id commits to.
//! Any subset of an index's ops is itself a valid index, so a writer may
//! send just its new ops (a delta) and let the replicas merge it in.
//!
//! # Checkpoints (collecting tombstones)
//! A tombstone costs about 150 bytes, and dropping it naively would let an
//! older put of its key, still on a replica that missed the delete or in a
//! stale copy, win again. So the owner collects with a [`Checkpoint`]
//! ([`Index::collect`]): signed by the account under the
//! `"cairn v1 account index checkpoint"` domain over (id, `horizon`,
//! `digest`), it names the index's **base**, the exact ops below the
//! horizon it keeps ([`base_digest`]: BLAKE3 over their hashes in slot
//! order; each op is still signed on its own). The base holds live puts
//! only: tombstones below the horizon, and ops the caller leaves out
//! (a later op of the key in another shard supersedes them), are gone.
//! The index is then the base plus `ops`, the LWW map of ops at or past
//! the horizon; a slot reads as its op in `ops` if any, else its base op.
//! The base is kept apart so a later op over a base op leaves the digest
//! true.
//!
//! An op below the horizon that is not the base's own is refused by
//! [`Index::apply`] ([`IndexError::BelowHorizon`], so a writer with a
//! badly skewed clock learns) and dropped by a merge: that is what keeps
//! a collected tombstone's older puts out for good. Merging two states
//! takes the later checkpoint (horizon, then digest) with its base, and the
//! LWW union of both sides' ops at or past its horizon: still commutative,
//! associative and idempotent (property-tested with checkpoints). A new
//! checkpoint must pass the index's current horizon, and
//! [`Index::clock`] never reads below it, so [`next_clock`] makes ops the
//! index takes. The horizon is an HLC clock: the gateway collects at "now
//! minus a grace" (a day) so that writes still in flight are not refused.
//!
//! # Bounds
//! An index holds at most [`MAX_ENTRIES`] ops (base and `ops` together) and encodes to at most
//! [`MAX_INDEX_BYTES`] (8 MiB: room for about 19,000 S3 keys with ~300 bytes of
//! key and metadata each, an op costing ~140 bytes more; [`crate::shard`]
//! spreads a larger namespace over a tree of indexes); keys are at most [`MAX_KEY_BYTES`] and values
//! [`MAX_VALUE_BYTES`]. A put or merge that would pass a bound is refused
//! and leaves the index as it was.
//!
//! # Format
//! | bytes | field |
//! |---|---|
//! | 4 | magic `CRNX` |
//! | 2 | format version, big-endian: 1 without a checkpoint, 2 with one |
//! | rest, version 1 | postcard(`account`, `namespace`, `ops` in increasing slot order) |
//! | rest, version 2 | postcard(`account`, `namespace`, checkpoint (`horizon`, `digest`, `signature`), `base` and then `ops`, each in increasing slot order) |
//!
//! An index without a checkpoint is still written as version 1, so nodes
//! of the previous release keep storing and serving it; they refuse a
//! version 2 index, which only exists once its owner collected it.
//! Decoding refuses trailing bytes, duplicate or unordered slots, bad
//! signatures (ops and checkpoint), a digest that does not match the base,
//! a base op at or past the horizon or an op below it, and anything over
//! the bounds, so an index has one encoding.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use crate::keys::{PublicKey, SecretKey, Signature};
pub use crate::record::Merged;

/// Magic bytes of an encoded index.
pub const MAGIC: &[u8; 4] = b"CRNX";
/// The newest index format this build writes and reads (2: with a
/// checkpoint). An index without a checkpoint is still written as
/// [`INDEX_VERSION_PLAIN`], so nodes that read only that keep working with it.
pub const INDEX_VERSION: u16 = 2;
/// The format of an index without a checkpoint.
pub const INDEX_VERSION_PLAIN: u16 = 1;
/// The largest encoded index accepted.
pub const MAX_INDEX_BYTES: usize = 8 << 20;
/// The most slots (live entries and tombstones) in one index.
pub const MAX_ENTRIES: usize = 65_536;
/// The longest map key (S3's key limit).
pub const MAX_KEY_BYTES: usize = 1024;
/// The longest value.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

const OP_DOMAIN: &str = "cairn v1 account index op";
const CHECKPOINT_DOMAIN: &str = "cairn v1 account index checkpoint";
const ID_CONTEXT: &str = "cairn v1 account index id";
const SEAL_CONTEXT: &str = "cairn v1 account index seal key";
const SLOT_CONTEXT: &str = "cairn v1 account index slot key";
const NAMESPACE_CONTEXT: &str = "cairn v1 account index namespace key";
const AD_PREFIX: &[u8] = b"cairn v1 account index entry";
const NONCE_BYTES: usize = 24;
const TAG_BYTES: usize = 16;
/// Nonce, tag, and the two length prefixes of the plaintext (≤ 3 bytes each).
const MAX_SEALED_BYTES: usize = NONCE_BYTES + TAG_BYTES + 6 + MAX_KEY_BYTES + MAX_VALUE_BYTES;
/// Magic, version, account and namespace.
const HEADER_BYTES: usize = 4 + 2 + 32 + 32;

/// An index's id: the DHT key of its replicas.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IndexId(pub [u8; 32]);

impl IndexId {
    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        crate::hex(&self.0)
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Option<Self> {
        crate::unhex32(s).map(Self)
    }
}

impl fmt::Debug for IndexId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IndexId({})", &self.to_hex()[..12])
    }
}

impl fmt::Display for IndexId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The public name of an index: whose it is and which namespace (as a
/// keyed hash). It travels in every encoded index, so any node can check
/// that the id commits to the account that signed the ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IndexName {
    /// The account key every op must be signed by.
    pub account: PublicKey,
    /// Keyed BLAKE3 of the namespace name ([`IndexKey::namespace`]).
    pub namespace: [u8; 32],
}

impl IndexName {
    /// The id this name commits to.
    pub fn id(&self) -> IndexId {
        let mut h = blake3::Hasher::new_derive_key(ID_CONTEXT);
        h.update(&self.account.0);
        h.update(&self.namespace);
        IndexId(*h.finalize().as_bytes())
    }
}

/// The account holder's read key: opens entries and turns names and map
/// keys into their keyed hashes. Derived from the account secret; it never
/// leaves the account holder (the gateway).
#[derive(Clone)]
pub struct IndexKey {
    seal: [u8; 32],
    slots: [u8; 32],
    names: [u8; 32],
}

impl IndexKey {
    /// The read key of `account` (see the module docs for the contexts).
    pub fn derive(account: &SecretKey) -> Self {
        Self {
            seal: account.derive(SEAL_CONTEXT),
            slots: account.derive(SLOT_CONTEXT),
            names: account.derive(NAMESPACE_CONTEXT),
        }
    }

    /// The keyed hash of namespace `name`.
    pub fn namespace(&self, name: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.names, name).as_bytes()
    }

    /// The slot of map key `key` in index `id`.
    pub fn slot(&self, id: &IndexId, key: &[u8]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.slots);
        h.update(&id.0);
        h.update(key);
        *h.finalize().as_bytes()
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.seal.into())
    }
}

impl fmt::Debug for IndexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IndexKey(…)")
    }
}

/// An account: its signing key and the read key derived from it.
pub struct Account {
    secret: SecretKey,
    public: PublicKey,
    key: IndexKey,
}

impl Account {
    /// The account of this signing key.
    pub fn new(secret: SecretKey) -> Self {
        Self {
            public: secret.public(),
            key: IndexKey::derive(&secret),
            secret,
        }
    }

    /// The account's public key.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The read key.
    pub fn key(&self) -> &IndexKey {
        &self.key
    }

    /// The name of this account's index for namespace `namespace`.
    pub fn index_name(&self, namespace: &[u8]) -> IndexName {
        IndexName {
            account: self.public,
            namespace: self.key.namespace(namespace),
        }
    }
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Account({:?})", self.public)
    }
}

/// The clock for a new op: `now_ms`, unless an op already seen is as late
/// or later (a fast clock elsewhere), then one more than the highest seen.
pub fn next_clock(now_ms: u64, highest_seen: u64) -> u64 {
    now_ms.max(highest_seen.saturating_add(1))
}

/// One signed change to one slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Keyed hash of the index id and the map key.
    pub slot: [u8; 32],
    /// Hybrid logical clock (milliseconds, or one past the highest seen).
    pub clock: u64,
    /// Whether this op deletes the key.
    pub tombstone: bool,
    /// Nonce, then XChaCha20-Poly1305 of postcard(key, value).
    pub sealed: Vec<u8>,
    /// The account's signature.
    pub signature: Signature,
}

#[derive(Serialize)]
struct Signed<'a> {
    id: &'a IndexId,
    slot: &'a [u8; 32],
    clock: u64,
    tombstone: bool,
    sealed: &'a [u8],
}

fn canonical<T: Serialize>(value: &T) -> Vec<u8> {
    // postcard cannot fail on these plain data types with an allocating sink.
    postcard::to_allocvec(value).unwrap_or_default()
}

fn associated_data(id: &IndexId, slot: &[u8; 32], clock: u64, tombstone: bool) -> Vec<u8> {
    let mut ad = Vec::with_capacity(AD_PREFIX.len() + 73);
    ad.extend_from_slice(AD_PREFIX);
    ad.extend_from_slice(&id.0);
    ad.extend_from_slice(slot);
    ad.extend_from_slice(&clock.to_be_bytes());
    ad.push(u8::from(tombstone));
    ad
}

impl Op {
    fn signed_bytes(&self, id: &IndexId) -> Vec<u8> {
        canonical(&Signed {
            id,
            slot: &self.slot,
            clock: self.clock,
            tombstone: self.tombstone,
            sealed: &self.sealed,
        })
    }

    /// Checks the op's shape and that `account` signed it for index `id`.
    pub fn verify(&self, id: &IndexId, account: &PublicKey) -> Result<(), IndexError> {
        if self.sealed.len() < NONCE_BYTES + TAG_BYTES || self.sealed.len() > MAX_SEALED_BYTES {
            return Err(IndexError::Malformed(format!(
                "a sealed entry of {} bytes",
                self.sealed.len()
            )));
        }
        account
            .verify(OP_DOMAIN, &self.signed_bytes(id), &self.signature)
            .map_err(|_| IndexError::Forged { clock: self.clock })
    }

    /// The op's identity and tie-break: BLAKE3 of its encoding.
    pub fn hash(&self) -> [u8; 32] {
        *blake3::hash(&canonical(self)).as_bytes()
    }

    fn order(&self) -> (u64, [u8; 32]) {
        (self.clock, self.hash())
    }

    /// Whether this op wins its slot over `other`: `order() > other.order()`,
    /// without hashing unless the clocks tie and the ops differ (merging a
    /// copy is mostly comparing an op with itself).
    fn beats(&self, other: &Op) -> bool {
        match self.clock.cmp(&other.clock) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => self != other && self.hash() > other.hash(),
        }
    }

    fn encoded_len(&self) -> usize {
        canonical(self).len()
    }
}

/// The owner's statement of an index's base: the exact ops below
/// `horizon` the index keeps, named by `digest` ([`base_digest`]). Every
/// other op below the horizon is gone for good: replicas refuse it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Ops with a clock below this are the base; the rest are merged as usual.
    pub horizon: u64,
    /// [`base_digest`] of the base.
    pub digest: [u8; 32],
    /// The account's signature over index id, horizon and digest.
    pub signature: Signature,
}

#[derive(Serialize)]
struct SignedCheckpoint<'a> {
    id: &'a IndexId,
    horizon: u64,
    digest: &'a [u8; 32],
}

impl Checkpoint {
    fn signed_bytes(id: &IndexId, horizon: u64, digest: &[u8; 32]) -> Vec<u8> {
        canonical(&SignedCheckpoint {
            id,
            horizon,
            digest,
        })
    }

    fn verify(&self, id: &IndexId, account: &PublicKey) -> Result<(), IndexError> {
        account
            .verify(
                CHECKPOINT_DOMAIN,
                &Self::signed_bytes(id, self.horizon, &self.digest),
                &self.signature,
            )
            .map_err(|_| IndexError::ForgedCheckpoint {
                horizon: self.horizon,
            })
    }

    /// The merge order of checkpoints: the later horizon, then the digest.
    fn order(&self) -> (u64, [u8; 32]) {
        (self.horizon, self.digest)
    }
}

/// BLAKE3 over the hashes of `base`'s ops, in slot order: what a
/// checkpoint names.
pub fn base_digest<'a>(base: impl IntoIterator<Item = &'a Op>) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for op in base {
        h.update(&op.hash());
    }
    *h.finalize().as_bytes()
}

/// An index was refused, or an entry could not be made or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// Not an encoded index.
    #[error("not a Cairn account index (bad magic bytes)")]
    Magic,
    /// Written by a newer Cairn.
    #[error(
        "account index format version {0} is not supported (this Cairn reads {INDEX_VERSION_PLAIN} to {INDEX_VERSION})"
    )]
    Version(u16),
    /// The encoding, or the result of a put or merge, is over the byte bound.
    #[error("account index of {0} bytes is over the {MAX_INDEX_BYTES}-byte limit")]
    TooLarge(usize),
    /// The index, or the result of a put or merge, has too many slots.
    #[error("account index of {0} entries is over the {MAX_ENTRIES}-entry limit")]
    TooManyEntries(usize),
    /// A key or value is over its bound.
    #[error("{what} of {len} bytes is over the {max}-byte limit")]
    EntryTooLarge {
        /// `"key"` or `"value"`.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// Undecodable or inconsistent.
    #[error("account index is malformed: {0}")]
    Malformed(String),
    /// The index is not the one asked for.
    #[error("account index is {actual}, not the requested {expected}")]
    WrongId {
        /// What was asked for.
        expected: IndexId,
        /// What its name commits to.
        actual: IndexId,
    },
    /// An op's signature does not verify under the index's account for
    /// this index (forged, altered, or made for another index).
    #[error("account index op with clock {clock} is not signed by the index's account")]
    Forged {
        /// The op's clock.
        clock: u64,
    },
    /// The checkpoint's signature does not verify under the index's account.
    #[error("account index checkpoint at horizon {horizon} is not signed by the index's account")]
    ForgedCheckpoint {
        /// Its horizon.
        horizon: u64,
    },
    /// An op older than the index's checkpoint that is not in its base:
    /// its slot may have been deleted and collected, so it is refused (a
    /// writer whose clock is far behind learns it here).
    #[error(
        "account index op with clock {clock} is older than the index's checkpoint at {horizon}; write with a later clock"
    )]
    BelowHorizon {
        /// The op's clock.
        clock: u64,
        /// The checkpoint's horizon.
        horizon: u64,
    },
    /// A new checkpoint must have a later horizon than the index's.
    #[error("a checkpoint at horizon {horizon} is not past the index's current one at {current}")]
    StaleHorizon {
        /// The horizon asked for.
        horizon: u64,
        /// The index's.
        current: u64,
    },
    /// The signing key is not the index's account.
    #[error("{0:?} does not own this account index")]
    NotOwner(PublicKey),
    /// Two different indexes were merged.
    #[error("cannot merge account index {theirs} into {ours}")]
    DifferentIndex {
        /// This index.
        ours: IndexId,
        /// The other.
        theirs: IndexId,
    },
    /// An entry does not open with this key (wrong key, or a payload that
    /// was moved from another slot, clock or index).
    #[error("an account index entry does not open with this key")]
    Open,
}

/// One key's op, opened ([`Index::find`], [`Index::all`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// `(clock, op hash)`: of two ops for one key, in one index or in two,
    /// the greater is the later write (the merge rule's order).
    pub order: (u64, [u8; 32]),
    /// The value, or `None` if the op deletes the key.
    pub value: Option<Vec<u8>>,
}

/// An account index: the winning op of every slot.
///
/// With a checkpoint, it is the checkpoint's `base` (the ops below its
/// horizon it names, immutable) and `ops`, the LWW map of ops at or past
/// the horizon. A slot reads as its op in `ops` if there is one (it is
/// later than any base op), else its base op. The base is kept apart so an
/// op that supersedes a base op does not change what the digest names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Index {
    name: IndexName,
    id: IndexId,
    /// The owner's checkpoint, if any. Every op in `ops` has a clock at or
    /// past its horizon; every op in `base` one below it.
    checkpoint: Option<Checkpoint>,
    /// Slot → the checkpoint's op for it. Every op here verified under `name`.
    base: BTreeMap<[u8; 32], Op>,
    /// Sum of the base ops' encoded lengths.
    base_bytes: usize,
    /// Slot → its winning op. Every op here verified under `name`.
    ops: BTreeMap<[u8; 32], Op>,
    /// Sum of the ops' encoded lengths (for the byte bound).
    op_bytes: usize,
}

#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    name: IndexName,
    ops: Vec<Cow<'a, Op>>,
}

#[derive(Serialize, Deserialize)]
struct WireV2<'a> {
    name: IndexName,
    checkpoint: Cow<'a, Checkpoint>,
    base: Vec<Cow<'a, Op>>,
    ops: Vec<Cow<'a, Op>>,
}

#[derive(Serialize, Deserialize)]
struct Plain<'a> {
    #[serde(borrow)]
    key: Cow<'a, [u8]>,
    #[serde(borrow)]
    value: Cow<'a, [u8]>,
}

/// An encoded index, checked for everything but signatures.
struct Parsed {
    name: IndexName,
    checkpoint: Option<Checkpoint>,
    base: Vec<Op>,
    ops: Vec<Op>,
}

impl Parsed {
    fn verify(&self) -> Result<(), IndexError> {
        let id = self.name.id();
        if let Some(cp) = &self.checkpoint {
            cp.verify(&id, &self.name.account)?;
        }
        for op in self.base.iter().chain(&self.ops) {
            op.verify(&id, &self.name.account)?;
        }
        Ok(())
    }
}

impl Index {
    /// An empty index.
    pub fn new(name: IndexName) -> Self {
        Self {
            id: name.id(),
            name,
            checkpoint: None,
            base: BTreeMap::new(),
            base_bytes: 0,
            ops: BTreeMap::new(),
            op_bytes: 0,
        }
    }

    /// Its id.
    pub fn id(&self) -> IndexId {
        self.id
    }

    /// Its name.
    pub fn name(&self) -> &IndexName {
        &self.name
    }

    /// Its checkpoint, if the owner made one.
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        self.checkpoint.as_ref()
    }

    /// The checkpoint's horizon (0 without one: nothing is below it).
    pub fn horizon(&self) -> u64 {
        self.checkpoint.as_ref().map_or(0, |c| c.horizon)
    }

    /// Slots in use, tombstones included.
    pub fn len(&self) -> usize {
        self.ops().count()
    }

    /// Whether no slot is in use.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.base.is_empty()
    }

    /// Base ops a later op of their slot shadows: the next checkpoint
    /// drops them.
    pub fn shadowed(&self) -> usize {
        self.base
            .keys()
            .filter(|s| self.ops.contains_key(*s))
            .count()
    }

    /// Slots whose op is a tombstone.
    pub fn tombstones(&self) -> usize {
        self.ops().filter(|o| o.tombstone).count()
    }

    /// The winning ops, by slot (a base op unless `ops` has a later one).
    pub fn ops(&self) -> impl Iterator<Item = &Op> {
        let mut base = self.base.values().peekable();
        let mut ops = self.ops.values().peekable();
        std::iter::from_fn(move || match (base.peek(), ops.peek()) {
            (Some(b), Some(o)) => match b.slot.cmp(&o.slot) {
                std::cmp::Ordering::Less => base.next(),
                std::cmp::Ordering::Equal => {
                    base.next();
                    ops.next()
                }
                std::cmp::Ordering::Greater => ops.next(),
            },
            (Some(_), None) => base.next(),
            (None, _) => ops.next(),
        })
    }

    fn winner(&self, slot: &[u8; 32]) -> Option<&Op> {
        self.ops.get(slot).or_else(|| self.base.get(slot))
    }

    /// The highest clock of any op, or one below the checkpoint's horizon
    /// if that is higher (0 if empty), so [`Index::next_clock`] never
    /// makes an op the index would refuse.
    pub fn clock(&self) -> u64 {
        let floor = self
            .checkpoint
            .as_ref()
            .map_or(0, |c| c.horizon.saturating_sub(1));
        self.ops
            .values()
            .chain(self.base.values())
            .map(|o| o.clock)
            .max()
            .unwrap_or(0)
            .max(floor)
    }

    /// The clock for a new op at `now_ms` ([`next_clock`] over this index).
    pub fn next_clock(&self, now_ms: u64) -> u64 {
        next_clock(now_ms, self.clock())
    }

    /// Sets `key` to `value` as of `clock`. `Stale` if the slot already
    /// holds a later op (the put lost).
    pub fn put(
        &mut self,
        account: &Account,
        key: &[u8],
        value: &[u8],
        clock: u64,
    ) -> Result<Merged, IndexError> {
        let op = self.make_op(account, key, value, clock, false, rand::random())?;
        self.apply(op)
    }

    /// Deletes `key` as of `clock` (a tombstone that keeps the slot until
    /// a checkpoint past it collects it).
    pub fn delete(
        &mut self,
        account: &Account,
        key: &[u8],
        clock: u64,
    ) -> Result<Merged, IndexError> {
        let op = self.make_op(account, key, &[], clock, true, rand::random())?;
        self.apply(op)
    }

    fn make_op(
        &self,
        account: &Account,
        key: &[u8],
        value: &[u8],
        clock: u64,
        tombstone: bool,
        nonce: [u8; NONCE_BYTES],
    ) -> Result<Op, IndexError> {
        if account.public != self.name.account {
            return Err(IndexError::NotOwner(account.public));
        }
        for (what, len, max) in [
            ("key", key.len(), MAX_KEY_BYTES),
            ("value", value.len(), MAX_VALUE_BYTES),
        ] {
            if len > max {
                return Err(IndexError::EntryTooLarge { what, len, max });
            }
        }
        let slot = account.key.slot(&self.id, key);
        let plain = canonical(&Plain {
            key: Cow::Borrowed(key),
            value: Cow::Borrowed(value),
        });
        let aad = associated_data(&self.id, &slot, clock, tombstone);
        let nonce = XNonce::from(nonce);
        let ct = account
            .key
            .cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .map_err(|_| IndexError::Malformed("entry too large to seal".into()))?;
        let mut sealed = Vec::with_capacity(NONCE_BYTES + ct.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ct);
        let mut op = Op {
            slot,
            clock,
            tombstone,
            sealed,
            signature: Signature([0; 64]),
        };
        op.signature = account.secret.sign(OP_DOMAIN, &op.signed_bytes(&self.id));
        Ok(op)
    }

    /// Adds one op (from the account, for this index) if it wins its slot.
    /// An op below the checkpoint's horizon is refused
    /// ([`IndexError::BelowHorizon`]) unless it is the base's own op.
    pub fn apply(&mut self, op: Op) -> Result<Merged, IndexError> {
        op.verify(&self.id, &self.name.account)?;
        let horizon = self.horizon();
        if op.clock < horizon {
            if self.base.get(&op.slot) == Some(&op) {
                return Ok(Merged::Stale);
            }
            return Err(IndexError::BelowHorizon {
                clock: op.clock,
                horizon,
            });
        }
        self.absorb([op].into_iter())
    }

    fn checkpoint_order(&self) -> Option<(u64, [u8; 32])> {
        self.checkpoint.as_ref().map(Checkpoint::order)
    }

    /// Merges `other` (an index of the same name) into this one. The later
    /// checkpoint (horizon, then digest) and its base win; ops of either
    /// side below its horizon are dropped, the rest merged by slot.
    pub fn merge(&mut self, other: &Index) -> Result<Merged, IndexError> {
        if other.id != self.id {
            return Err(IndexError::DifferentIndex {
                ours: self.id,
                theirs: other.id,
            });
        }
        // `other`'s ops verified when it was built or decoded.
        if other.checkpoint_order() > self.checkpoint_order() {
            let mut next = other.clone();
            let horizon = next.horizon();
            // Ours past its horizon join theirs; the rest it collected.
            next.absorb(self.ops.values().filter(|o| o.clock >= horizon).cloned())?;
            next.check_bounds()?;
            *self = next;
            return Ok(Merged::Changed);
        }
        let horizon = self.horizon();
        self.absorb(other.ops.values().filter(|o| o.clock >= horizon).cloned())
    }

    /// The encoded length with `ops` of `ops_len` slots and `op_bytes` bytes.
    fn size_with(&self, ops_len: usize, op_bytes: usize) -> usize {
        let checkpoint = match &self.checkpoint {
            Some(cp) => canonical(cp).len() + varint_len(self.base.len()) + self.base_bytes,
            None => 0,
        };
        HEADER_BYTES + checkpoint + varint_len(ops_len) + op_bytes
    }

    fn check_bounds(&self) -> Result<(), IndexError> {
        let entries = self.base.len() + self.ops.len();
        if entries > MAX_ENTRIES {
            return Err(IndexError::TooManyEntries(entries));
        }
        let total = self.encoded_len();
        if total > MAX_INDEX_BYTES {
            return Err(IndexError::TooLarge(total));
        }
        Ok(())
    }

    /// Takes every op that wins its slot, if the result stays in bounds;
    /// otherwise changes nothing. The ops are at or past the horizon, so
    /// they beat any base op.
    fn absorb(&mut self, ops: impl Iterator<Item = Op>) -> Result<Merged, IndexError> {
        let mut winners: BTreeMap<[u8; 32], Op> = BTreeMap::new();
        for op in ops {
            let best = match (winners.get(&op.slot), self.ops.get(&op.slot)) {
                (Some(w), _) => Some(w),
                (None, Some(mine)) => Some(mine),
                (None, None) => None,
            };
            if best.is_none_or(|b| op.beats(b)) {
                winners.insert(op.slot, op);
            }
        }
        if winners.is_empty() {
            return Ok(Merged::Stale);
        }
        let added = winners
            .keys()
            .filter(|s| !self.ops.contains_key(*s))
            .count();
        let ops_len = self.ops.len() + added;
        // Base and ops both count: a slot in both costs both ops' room.
        let entries = self.base.len() + ops_len;
        if entries > MAX_ENTRIES {
            return Err(IndexError::TooManyEntries(entries));
        }
        let mut bytes = self.op_bytes;
        for (slot, op) in &winners {
            bytes += op.encoded_len();
            bytes -= self.ops.get(slot).map_or(0, Op::encoded_len);
        }
        let total = self.size_with(ops_len, bytes);
        if total > MAX_INDEX_BYTES {
            return Err(IndexError::TooLarge(total));
        }
        self.ops.extend(winners);
        self.op_bytes = bytes;
        Ok(Merged::Changed)
    }

    /// A copy of this index with a new checkpoint at `horizon`, signed by
    /// the owner: its base is every winning op below `horizon` that is a
    /// put and that `keep` allows (the shard planner drops ops a later op
    /// in another shard supersedes); tombstones below it are gone. Ops at
    /// or past `horizon` stay as they are. `horizon` must be past the
    /// current checkpoint's, or merges would not take the new one.
    pub fn collect(
        &self,
        account: &Account,
        horizon: u64,
        keep: impl Fn(&Op) -> bool,
    ) -> Result<Index, IndexError> {
        if account.public != self.name.account {
            return Err(IndexError::NotOwner(account.public));
        }
        if let Some(cp) = &self.checkpoint
            && horizon <= cp.horizon
        {
            return Err(IndexError::StaleHorizon {
                horizon,
                current: cp.horizon,
            });
        }
        let mut next = Index::new(self.name);
        for op in self.ops() {
            if op.clock >= horizon {
                next.op_bytes += op.encoded_len();
                next.ops.insert(op.slot, op.clone());
            } else if !op.tombstone && keep(op) {
                next.base_bytes += op.encoded_len();
                next.base.insert(op.slot, op.clone());
            }
        }
        let digest = base_digest(next.base.values());
        next.checkpoint = Some(Checkpoint {
            horizon,
            digest,
            signature: account.secret.sign(
                CHECKPOINT_DOMAIN,
                &Checkpoint::signed_bytes(&self.id, horizon, &digest),
            ),
        });
        next.check_bounds()?;
        Ok(next)
    }

    /// The value of `key`, if it is set (not deleted).
    pub fn get(&self, key: &IndexKey, map_key: &[u8]) -> Result<Option<Vec<u8>>, IndexError> {
        let slot = key.slot(&self.id, map_key);
        match self.winner(&slot) {
            Some(op) if !op.tombstone => Ok(Some(self.open(key, op)?.1)),
            _ => Ok(None),
        }
    }

    /// The op that holds `key`'s slot, opened: its clock and hash (to
    /// compare with the same key's op in another index) and its value, or
    /// `None` in [`Found::value`] for a tombstone.
    pub fn find(&self, key: &IndexKey, map_key: &[u8]) -> Result<Option<Found>, IndexError> {
        let slot = key.slot(&self.id, map_key);
        match self.winner(&slot) {
            Some(op) => Ok(Some(self.found(key, op)?.1)),
            None => Ok(None),
        }
    }

    /// Every op, opened and sorted by key, tombstones included (a
    /// tombstone here may hide the same key's older op in another index).
    pub fn all(&self, key: &IndexKey) -> Result<Vec<(Vec<u8>, Found)>, IndexError> {
        let mut out = self
            .ops()
            .map(|op| self.found(key, op))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn found(&self, key: &IndexKey, op: &Op) -> Result<(Vec<u8>, Found), IndexError> {
        let (k, v) = self.open(key, op)?;
        Ok((
            k,
            Found {
                order: op.order(),
                value: (!op.tombstone).then_some(v),
            },
        ))
    }

    /// Every live entry, `(key, value)` sorted by key; tombstones skipped.
    /// Fails if any entry does not open with `key`.
    pub fn entries(
        &self,
        key: &IndexKey,
    ) -> Result<std::collections::btree_map::IntoIter<Vec<u8>, Vec<u8>>, IndexError> {
        let mut out = BTreeMap::new();
        for op in self.ops().filter(|o| !o.tombstone) {
            let (k, v) = self.open(key, op)?;
            out.insert(k, v);
        }
        Ok(out.into_iter())
    }

    /// Live entries whose key starts with `prefix` and sorts after
    /// `start_after` (if given), in key order: an S3 listing page.
    pub fn list<'a>(
        &self,
        key: &IndexKey,
        prefix: &'a [u8],
        start_after: Option<&'a [u8]>,
    ) -> Result<impl Iterator<Item = (Vec<u8>, Vec<u8>)> + use<'a>, IndexError> {
        Ok(self.entries(key)?.filter(move |(k, _)| {
            k.starts_with(prefix) && start_after.is_none_or(|after| k.as_slice() > after)
        }))
    }

    fn open(&self, key: &IndexKey, op: &Op) -> Result<(Vec<u8>, Vec<u8>), IndexError> {
        let (nonce, ct) = op
            .sealed
            .split_at_checked(NONCE_BYTES)
            .ok_or(IndexError::Open)?;
        let nonce = XNonce::from_slice(nonce);
        let aad = associated_data(&self.id, &op.slot, op.clock, op.tombstone);
        let plain = key
            .cipher()
            .decrypt(nonce, Payload { msg: ct, aad: &aad })
            .map_err(|_| IndexError::Open)?;
        let (p, rest) =
            postcard::take_from_bytes::<Plain<'_>>(&plain).map_err(|_| IndexError::Open)?;
        if !rest.is_empty() || key.slot(&self.id, &p.key) != op.slot {
            return Err(IndexError::Open);
        }
        Ok((p.key.into_owned(), p.value.into_owned()))
    }

    /// The encoded index (see the module docs): version 1 without a
    /// checkpoint, so nodes that know only it still take such an index.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(MAGIC);
        match &self.checkpoint {
            None => {
                out.extend_from_slice(&INDEX_VERSION_PLAIN.to_be_bytes());
                out.extend_from_slice(&canonical(&Wire {
                    name: self.name,
                    ops: self.ops.values().map(Cow::Borrowed).collect(),
                }));
            }
            Some(cp) => {
                out.extend_from_slice(&INDEX_VERSION.to_be_bytes());
                out.extend_from_slice(&canonical(&WireV2 {
                    name: self.name,
                    checkpoint: Cow::Borrowed(cp),
                    base: self.base.values().map(Cow::Borrowed).collect(),
                    ops: self.ops.values().map(Cow::Borrowed).collect(),
                }));
            }
        }
        out
    }

    /// [`digest`] of the encoded index.
    pub fn digest(&self) -> [u8; 32] {
        digest(&self.encode())
    }

    /// The length of [`Index::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        self.size_with(self.ops.len(), self.op_bytes)
    }

    /// Decodes and checks an index: format, bounds, canonical slot order,
    /// the checkpoint (its signature, its digest over the base, base ops
    /// below its horizon and the others at or past it) and every op's
    /// signature by the account its name commits to; if `expected` is
    /// given, the name must commit to it.
    pub fn decode(bytes: &[u8], expected: Option<IndexId>) -> Result<Self, IndexError> {
        let parsed = parse(bytes, expected)?;
        parsed.verify()?;
        Ok(Self::from_parts(parsed))
    }

    /// Decodes an index without checking its signatures again: only for
    /// bytes this process checked with [`Index::decode`] before it stored
    /// them (a node's own database). Everything else is checked.
    pub fn decode_trusted(bytes: &[u8], expected: IndexId) -> Result<Self, IndexError> {
        Ok(Self::from_parts(parse(bytes, Some(expected))?))
    }

    /// Merges an encoded copy of this index. Format, bounds, id and order
    /// are checked as [`Index::decode`] does, but only the ops that would
    /// win their slot have their signatures checked: one that loses, or is
    /// already here, cannot change anything (and a copy that is mostly
    /// what this index holds costs hashes, not signature checks). A forged
    /// op that would win refuses the whole copy; one that would lose is
    /// ignored. A copy with a later checkpoint is checked whole.
    pub fn merge_encoded(&mut self, bytes: &[u8]) -> Result<Merged, IndexError> {
        let parsed = parse(bytes, Some(self.id))?;
        if parsed.checkpoint.as_ref().map(Checkpoint::order) > self.checkpoint_order() {
            parsed.verify()?;
            return self.merge(&Self::from_parts(parsed));
        }
        // Their base is below their horizon, so below ours: dropped.
        let horizon = self.horizon();
        let mut winners = Vec::new();
        for op in parsed.ops {
            if op.clock >= horizon && self.ops.get(&op.slot).is_none_or(|mine| op.beats(mine)) {
                op.verify(&self.id, &parsed.name.account)?;
                winners.push(op);
            }
        }
        self.absorb(winners.into_iter())
    }

    fn from_parts(parsed: Parsed) -> Self {
        let mut index = Index::new(parsed.name);
        index.checkpoint = parsed.checkpoint;
        for op in parsed.base {
            index.base_bytes += op.encoded_len();
            index.base.insert(op.slot, op);
        }
        for op in parsed.ops {
            index.op_bytes += op.encoded_len();
            index.ops.insert(op.slot, op);
        }
        index
    }
}

/// BLAKE3 of an encoded index. The encoding is canonical, so two copies
/// with one digest hold the same ops: a replica whose copy has the digest a
/// reader names can answer "unchanged" instead of sending it.
pub fn digest(encoded: &[u8]) -> [u8; 32] {
    *blake3::hash(encoded).as_bytes()
}

/// Checks one list of ops for order and shape, and takes ownership.
fn checked_ops(ops: Vec<Cow<'_, Op>>) -> Result<Vec<Op>, IndexError> {
    let mut out: Vec<Op> = Vec::with_capacity(ops.len());
    for op in ops {
        if out.last().is_some_and(|last| last.slot >= op.slot) {
            return Err(IndexError::Malformed("slots out of order".into()));
        }
        if op.sealed.len() < NONCE_BYTES + TAG_BYTES || op.sealed.len() > MAX_SEALED_BYTES {
            return Err(IndexError::Malformed(format!(
                "a sealed entry of {} bytes",
                op.sealed.len()
            )));
        }
        out.push(op.into_owned());
    }
    Ok(out)
}

/// An encoded index's parts, checked for everything but signatures.
fn parse(bytes: &[u8], expected: Option<IndexId>) -> Result<Parsed, IndexError> {
    if bytes.len() > MAX_INDEX_BYTES {
        return Err(IndexError::TooLarge(bytes.len()));
    }
    if bytes.len() < 6 || &bytes[..4] != MAGIC {
        return Err(IndexError::Magic);
    }
    let version = u16::from_be_bytes([bytes[4], bytes[5]]);
    let malformed = |e: postcard::Error| IndexError::Malformed(e.to_string());
    let (name, checkpoint, base, ops, rest) = match version {
        INDEX_VERSION_PLAIN => {
            let (w, rest) =
                postcard::take_from_bytes::<Wire<'_>>(&bytes[6..]).map_err(malformed)?;
            (w.name, None, vec![], w.ops, rest)
        }
        INDEX_VERSION => {
            let (w, rest) =
                postcard::take_from_bytes::<WireV2<'_>>(&bytes[6..]).map_err(malformed)?;
            (w.name, Some(w.checkpoint.into_owned()), w.base, w.ops, rest)
        }
        v => return Err(IndexError::Version(v)),
    };
    if !rest.is_empty() {
        return Err(IndexError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    let entries = base.len() + ops.len();
    if entries > MAX_ENTRIES {
        return Err(IndexError::TooManyEntries(entries));
    }
    let id = name.id();
    if let Some(expected) = expected
        && expected != id
    {
        return Err(IndexError::WrongId {
            expected,
            actual: id,
        });
    }
    let base = checked_ops(base)?;
    let ops = checked_ops(ops)?;
    if let Some(cp) = &checkpoint {
        if base.iter().any(|o| o.clock >= cp.horizon) || ops.iter().any(|o| o.clock < cp.horizon) {
            return Err(IndexError::Malformed(
                "an op on the wrong side of the checkpoint's horizon".into(),
            ));
        }
        if base.iter().any(|o| o.tombstone) {
            return Err(IndexError::Malformed(
                "a tombstone in a checkpoint's base".into(),
            ));
        }
        if base_digest(&base) != cp.digest {
            return Err(IndexError::Malformed(
                "the checkpoint does not name its base".into(),
            ));
        }
    }
    Ok(Parsed {
        name,
        checkpoint,
        base,
        ops,
    })
}

/// Bytes of postcard's varint for `n`.
fn varint_len(n: usize) -> usize {
    let bits = usize::BITS - n.leading_zeros();
    (bits.max(1) as usize).div_ceil(7)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    fn account(seed: u8) -> Account {
        Account::new(SecretKey::from_bytes([seed; 32]))
    }

    fn bucket(a: &Account) -> Index {
        Index::new(a.index_name(b"bucket/photos"))
    }

    #[test]
    fn put_get_delete_and_sorted_listing() {
        let a = account(1);
        let mut ix = bucket(&a);
        for (i, k) in ["b/2", "a", "b/1", "c", "b/3"].iter().enumerate() {
            let v = format!("value {k}");
            assert_eq!(
                ix.put(&a, k.as_bytes(), v.as_bytes(), 10 + i as u64),
                Ok(Merged::Changed)
            );
        }
        assert_eq!(ix.get(a.key(), b"a").unwrap(), Some(b"value a".to_vec()));
        assert_eq!(ix.get(a.key(), b"zzz").unwrap(), None);
        assert_eq!(ix.delete(&a, b"c", 20), Ok(Merged::Changed));
        assert_eq!(ix.get(a.key(), b"c").unwrap(), None);
        let keys: Vec<Vec<u8>> = ix.entries(a.key()).unwrap().map(|(k, _)| k).collect();
        assert_eq!(keys, [&b"a"[..], b"b/1", b"b/2", b"b/3"]);
        let page: Vec<Vec<u8>> = ix
            .list(a.key(), b"b/", Some(b"b/1"))
            .unwrap()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(page, [&b"b/2"[..], b"b/3"]);
        // The tombstone keeps its slot.
        assert_eq!(ix.len(), 5);
        assert_eq!(ix.clock(), 20);
        assert_eq!(ix.next_clock(5), 21);
        assert_eq!(ix.next_clock(1_000), 1_000);
        let back = Index::decode(&ix.encode(), Some(ix.id())).unwrap();
        assert_eq!(back, ix);
        assert_eq!(ix.encode().len(), ix.encoded_len());
    }

    proptest! {
        /// The fast comparison is the merge order.
        #[test]
        fn beats_is_the_merge_order(a in arb_op(), b in arb_op(), same_clock in any::<bool>()) {
            let mut b = b;
            if same_clock {
                b.clock = a.clock;
            }
            prop_assert_eq!(a.beats(&b), a.order() > b.order());
            prop_assert!(!a.beats(&a.clone()));
        }
    }

    #[test]
    fn find_and_all_show_tombstones_and_order_ops_across_indexes() {
        let a = account(1);
        let mut parent = bucket(&a);
        let mut child = Index::new(a.index_name(b"bucket/photos#3"));
        parent.put(&a, b"k", b"old", 10).unwrap();
        parent.put(&a, b"j", b"kept", 11).unwrap();
        child.delete(&a, b"k", 12).unwrap();
        let old = parent.find(a.key(), b"k").unwrap().unwrap();
        let gone = child.find(a.key(), b"k").unwrap().unwrap();
        assert_eq!(old.value.as_deref(), Some(&b"old"[..]));
        assert_eq!(gone.value, None);
        // The later op wins, whichever index holds it.
        assert!(gone.order > old.order);
        assert_eq!(child.find(a.key(), b"j").unwrap(), None);
        let all = child.all(a.key()).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].0, b"k");
        let keys: Vec<Vec<u8>> = parent
            .all(a.key())
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, [&b"j"[..], b"k"]);
        assert_eq!(parent.all(account(2).key()).err(), Some(IndexError::Open));
    }

    #[test]
    fn names_and_keys_are_hidden_from_the_nodes() {
        let a = account(1);
        let ix = {
            let mut ix = bucket(&a);
            ix.put(&a, b"secret-object-name", b"secret-meta", 1)
                .unwrap();
            ix
        };
        let bytes = ix.encode();
        for needle in [&b"secret"[..], b"photos"] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle));
        }
        // Another account's namespace of the same name is another index.
        assert_ne!(account(2).index_name(b"bucket/photos").id(), ix.id());
        assert_ne!(a.index_name(b"bucket/other").id(), ix.id());
        // One key in two namespaces is two unrelated slots.
        let other = Index::new(a.index_name(b"bucket/other"));
        assert_ne!(
            a.key().slot(&ix.id(), b"k"),
            a.key().slot(&other.id(), b"k")
        );
        // Without the account's key nothing opens.
        assert_eq!(ix.entries(account(2).key()).err(), Some(IndexError::Open));
    }

    #[test]
    fn later_clock_wins_and_tombstones_beat_older_puts() {
        let a = account(1);
        let mut ix = bucket(&a);
        ix.put(&a, b"k", b"new", 10).unwrap();
        assert_eq!(ix.put(&a, b"k", b"old", 5), Ok(Merged::Stale));
        assert_eq!(ix.get(a.key(), b"k").unwrap(), Some(b"new".to_vec()));
        ix.delete(&a, b"k", 11).unwrap();
        // An older put arriving after the delete loses.
        let mut late = bucket(&a);
        late.put(&a, b"k", b"older", 10).unwrap();
        assert_eq!(ix.merge(&late), Ok(Merged::Stale));
        assert_eq!(ix.get(a.key(), b"k").unwrap(), None);
        // A later put resurrects it.
        ix.put(&a, b"k", b"again", 12).unwrap();
        assert_eq!(ix.get(a.key(), b"k").unwrap(), Some(b"again".to_vec()));
    }

    #[test]
    fn concurrent_puts_at_one_clock_resolve_to_one_winner_everywhere() {
        let a = account(1);
        for round in 0..20u64 {
            let mut g1 = bucket(&a);
            let mut g2 = bucket(&a);
            g1.put(&a, b"k", b"from gateway 1", round).unwrap();
            g2.put(&a, b"k", b"from gateway 2", round).unwrap();
            let mut x = g1.clone();
            x.merge(&g2).unwrap();
            let mut y = g2.clone();
            y.merge(&g1).unwrap();
            assert_eq!(x, y);
            let winner = x.get(a.key(), b"k").unwrap().unwrap();
            let expected = if g1.ops().next().unwrap().hash() > g2.ops().next().unwrap().hash() {
                b"from gateway 1".to_vec()
            } else {
                b"from gateway 2".to_vec()
            };
            assert_eq!(winner, expected);
        }
    }

    #[test]
    fn forged_and_misdirected_ops_are_refused() {
        let a = account(1);
        let mallory = account(9);
        let mut ix = bucket(&a);
        ix.put(&a, b"k", b"v", 1).unwrap();
        // Mallory cannot write to a's index.
        assert_eq!(
            ix.put(&mallory, b"k", b"x", 2),
            Err(IndexError::NotOwner(mallory.public()))
        );
        // An op she signs herself for a's index id does not verify.
        let mut hers = Index::new(IndexName {
            account: mallory.public(),
            namespace: ix.name().namespace,
        });
        hers.put(&mallory, b"k", b"x", 2).unwrap();
        let forged = hers.ops().next().unwrap().clone();
        assert_eq!(
            ix.apply(forged.clone()),
            Err(IndexError::Forged { clock: 2 })
        );
        // An encoded index claiming a's name with her op is refused.
        let mut wire = ix.encode();
        let mine = ix.ops().next().unwrap().clone();
        let (m, f) = (canonical(&mine), canonical(&forged));
        let at = wire.windows(m.len()).position(|w| w == m).unwrap();
        wire.splice(at..at + m.len(), f);
        assert!(matches!(
            Index::decode(&wire, Some(ix.id())),
            Err(IndexError::Forged { .. } | IndexError::Malformed(_))
        ));
        // A genuine op of a's other index is refused here: it is signed for that id.
        let mut other = Index::new(a.index_name(b"bucket/other"));
        other.put(&a, b"k", b"v", 3).unwrap();
        let moved = other.ops().next().unwrap().clone();
        assert_eq!(ix.apply(moved), Err(IndexError::Forged { clock: 3 }));
        assert!(matches!(
            ix.merge(&other),
            Err(IndexError::DifferentIndex { .. })
        ));
        assert!(matches!(
            Index::decode(&other.encode(), Some(ix.id())),
            Err(IndexError::WrongId { .. })
        ));
    }

    #[test]
    fn merging_an_encoded_copy_checks_every_op_that_would_win() {
        let a = account(1);
        let mallory = account(9);
        let mut ix = bucket(&a);
        ix.put(&a, b"k", b"v", 10).unwrap();
        let id = ix.id();
        // Mallory's op claims a's slot in a copy that names a's index.
        let forged = |clock: u64| {
            let mut hers = bucket(&a);
            let mut op = hers.make_op(&a, b"k", b"x", clock, false, [3; 24]).unwrap();
            op.signature = mallory.secret.sign(OP_DOMAIN, &op.signed_bytes(&id));
            hers.ops.insert(op.slot, op.clone());
            hers.op_bytes = op.encoded_len();
            hers.encode()
        };
        // Winning: the whole copy is refused and nothing changes.
        let before = ix.clone();
        assert_eq!(
            ix.merge_encoded(&forged(11)),
            Err(IndexError::Forged { clock: 11 })
        );
        assert_eq!(ix, before);
        // Losing: it cannot change anything, so it is ignored.
        assert_eq!(ix.merge_encoded(&forged(9)), Ok(Merged::Stale));
        assert_eq!(ix, before);
        // Another index's copy is refused by its id.
        let other = Index::new(a.index_name(b"bucket/other"));
        assert!(matches!(
            ix.merge_encoded(&other.encode()),
            Err(IndexError::WrongId { .. })
        ));
        let mut flipped = before.encode();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        // Into an empty replica every op would win, so a damaged signature is caught.
        assert!(Index::new(*before.name()).merge_encoded(&flipped).is_err());
    }

    #[test]
    fn a_payload_swapped_between_slots_does_not_open() {
        let a = account(1);
        let mut ix = bucket(&a);
        ix.put(&a, b"one", b"1", 1).unwrap();
        ix.put(&a, b"two", b"2", 1).unwrap();
        let ops: Vec<Op> = ix.ops().cloned().collect();
        // Even re-signed by the owner, a payload sealed for another slot (or
        // another clock) fails its associated data.
        for (sealed_from, clock) in [(&ops[1], ops[0].clock), (&ops[0], ops[0].clock + 1)] {
            let mut swapped = Op {
                slot: ops[0].slot,
                clock,
                tombstone: false,
                sealed: sealed_from.sealed.clone(),
                signature: Signature([0; 64]),
            };
            swapped.signature = a.secret.sign(OP_DOMAIN, &swapped.signed_bytes(&ix.id()));
            let mut bad = bucket(&a);
            bad.apply(swapped).unwrap();
            assert_eq!(bad.entries(a.key()).err(), Some(IndexError::Open));
        }
    }

    /// Regression guard like the repair record's: postcard ignores trailing
    /// bytes, so a shortened count must not decode to a smaller index.
    #[test]
    fn no_single_bit_flip_decodes_to_another_index() {
        let a = account(1);
        let mut ix = bucket(&a);
        ix.put(&a, b"alpha", b"1", 7).unwrap();
        ix.delete(&a, b"beta", 8).unwrap();
        let mut checkpointed = ix.clone();
        checkpointed.put(&a, b"gamma", b"3", 9).unwrap();
        checkpointed.delete(&a, b"delta", 12).unwrap();
        let checkpointed = checkpointed.collect(&a, 10, |_| true).unwrap();
        assert_flips_are_refused(&checkpointed);
        let bytes = ix.encode();
        assert_flips_are_refused(&ix);
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            Index::decode(&trailing, None),
            Err(IndexError::Malformed(_))
        ));
        assert_eq!(Index::decode(b"CRNR\0\x01", None), Err(IndexError::Magic));
        assert_eq!(
            Index::decode(b"CRNX\0\x03", None),
            Err(IndexError::Version(3))
        );
        assert!(bytes.starts_with(b"CRNX\0\x01"), "no checkpoint: version 1");
        assert!(checkpointed.encode().starts_with(b"CRNX\0\x02"));
    }

    fn assert_flips_are_refused(ix: &Index) {
        let bytes = ix.encode();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                // Without an expected id a flipped name must still fail the signatures.
                for expected in [Some(ix.id()), None] {
                    if let Ok(d) = Index::decode(&b, expected) {
                        assert_eq!(&d, ix, "flip at {i} bit {bit}");
                    }
                }
                // Merged into an empty replica or a full one, it brings nothing false.
                for base in [Index::new(*ix.name()), ix.clone()] {
                    let mut m = base;
                    if m.merge_encoded(&b).is_ok() {
                        assert_eq!(&m, ix, "flip at {i} bit {bit} merged");
                    }
                }
            }
        }
    }

    #[test]
    fn size_bounds_hold() {
        let a = account(1);
        let mut ix = bucket(&a);
        let big = vec![7u8; MAX_VALUE_BYTES];
        assert!(matches!(
            ix.put(&a, &vec![1; MAX_KEY_BYTES + 1], b"", 1),
            Err(IndexError::EntryTooLarge { what: "key", .. })
        ));
        assert!(matches!(
            ix.put(&a, b"k", &vec![1; MAX_VALUE_BYTES + 1], 1),
            Err(IndexError::EntryTooLarge { what: "value", .. })
        ));
        let mut i = 0u32;
        let err = loop {
            match ix.put(&a, &i.to_be_bytes(), &big, 1) {
                Ok(_) => i += 1,
                Err(e) => break e,
            }
        };
        assert!(
            matches!(err, IndexError::TooLarge(n) if n > MAX_INDEX_BYTES),
            "{err}"
        );
        // The refused put changed nothing, and the full index still decodes.
        assert_eq!(ix.len(), i as usize);
        assert!(ix.encoded_len() <= MAX_INDEX_BYTES);
        assert_eq!(ix.encode().len(), ix.encoded_len());
        assert_eq!(Index::decode(&ix.encode(), Some(ix.id())).unwrap(), ix);
        let mut over = ix.encode();
        over.resize(MAX_INDEX_BYTES + 1, 0);
        assert_eq!(
            Index::decode(&over, None),
            Err(IndexError::TooLarge(MAX_INDEX_BYTES + 1))
        );
        // 10,000 S3-sized entries (~300 bytes of key and metadata) fit.
        let mut s3 = bucket(&a);
        for i in 0..10_000u32 {
            let key = format!("photos/2026/{i:08}.jpg");
            s3.put(&a, key.as_bytes(), &[0u8; 270], u64::from(i))
                .unwrap();
        }
        // About 440 bytes each with the op's slot, clock, nonce, tag and signature.
        assert!(s3.encoded_len() < 10_000 * 450, "{}", s3.encoded_len());
    }

    #[test]
    fn a_checkpoint_drops_tombstones_and_refuses_older_ops_for_good() {
        let a = account(1);
        let mut ix = bucket(&a);
        ix.put(&a, b"a", b"1", 10).unwrap();
        let old_put = ix.ops().next().unwrap().clone();
        ix.put(&a, b"b", b"2", 11).unwrap();
        ix.delete(&a, b"a", 12).unwrap();
        ix.delete(&a, b"gone", 13).unwrap();
        ix.put(&a, b"c", b"3", 20).unwrap();
        ix.delete(&a, b"late", 21).unwrap();
        let pre = ix.clone();
        let cp = ix.collect(&a, 15, |_| true).unwrap();
        // The tombstones below the horizon are gone; the later one stays.
        assert_eq!((cp.len(), cp.tombstones()), (3, 1));
        assert!(cp.encoded_len() < pre.encoded_len());
        assert_eq!(cp.encode().len(), cp.encoded_len());
        let live = |ix: &Index| ix.entries(a.key()).unwrap().collect::<Vec<_>>();
        assert_eq!(live(&cp), live(&pre));
        assert_eq!(cp.horizon(), 15);
        assert!(cp.next_clock(0) >= 21);
        // The deleted key's older put is refused, and so is any op below
        // the horizon that is not the base's own.
        let mut c = cp.clone();
        assert_eq!(
            c.apply(old_put.clone()),
            Err(IndexError::BelowHorizon {
                clock: 10,
                horizon: 15
            })
        );
        assert!(matches!(
            c.put(&a, b"a", b"skewed", 14),
            Err(IndexError::BelowHorizon { .. })
        ));
        let base_op = c.ops().find(|o| o.clock == 11).unwrap().clone();
        assert_eq!(c.apply(base_op), Ok(Merged::Stale));
        // A copy from before the checkpoint brings nothing back, as an
        // index or encoded.
        assert_eq!(c.merge(&pre), Ok(Merged::Stale));
        assert_eq!(c.merge_encoded(&pre.encode()), Ok(Merged::Stale));
        let mut only_old = bucket(&a);
        only_old.apply(old_put).unwrap();
        assert_eq!(c.merge(&only_old), Ok(Merged::Stale));
        assert_eq!(c, cp);
        assert_eq!(c.get(a.key(), b"a").unwrap(), None);
        // ... and the old copy takes the checkpoint when merged with it.
        let mut p = pre.clone();
        assert_eq!(p.merge(&cp), Ok(Merged::Changed));
        assert_eq!(p, cp);
        let mut p = pre.clone();
        assert_eq!(p.merge_encoded(&cp.encode()), Ok(Merged::Changed));
        assert_eq!(p, cp);
        assert_eq!(Index::decode(&cp.encode(), Some(cp.id())).unwrap(), cp);
        assert_eq!(Index::decode_trusted(&cp.encode(), cp.id()).unwrap(), cp);
        // A later op over a base op wins without touching the base.
        c.put(&a, b"b", b"newer", 22).unwrap();
        c.put(&a, b"a", b"again", 23).unwrap();
        assert_eq!(c.get(a.key(), b"b").unwrap(), Some(b"newer".to_vec()));
        assert_eq!(c.get(a.key(), b"a").unwrap(), Some(b"again".to_vec()));
        assert_eq!(c.checkpoint(), cp.checkpoint());
        assert_eq!(c.shadowed(), 1);
        assert_eq!(Index::decode(&c.encode(), Some(c.id())).unwrap(), c);
        // A new checkpoint must pass the old one; the next one collects the
        // superseded base op too.
        assert!(matches!(
            c.collect(&a, 15, |_| true),
            Err(IndexError::StaleHorizon { .. })
        ));
        assert!(matches!(
            c.collect(&account(2), 30, |_| true),
            Err(IndexError::NotOwner(_))
        ));
        let next = c.collect(&a, 30, |_| true).unwrap();
        assert_eq!((next.len(), next.tombstones(), next.shadowed()), (3, 0, 0));
        // `keep` leaves out ops a later op elsewhere supersedes.
        let slot_c = a.key().slot(&c.id(), b"c");
        let kept = c.collect(&a, 30, |o| o.slot != slot_c).unwrap();
        assert_eq!(kept.get(a.key(), b"c").unwrap(), None);
        assert_eq!(kept.len(), 2);
    }

    #[test]
    fn a_checkpoint_is_checked_whole() {
        let a = account(1);
        let mallory = account(9);
        let mut ix = bucket(&a);
        ix.put(&a, b"a", b"1", 10).unwrap();
        ix.put(&a, b"b", b"2", 11).unwrap();
        ix.put(&a, b"c", b"3", 20).unwrap();
        let cp = ix.collect(&a, 15, |_| true).unwrap();
        let check = |bad: &Index| {
            let r = Index::decode(&bad.encode(), Some(cp.id()));
            assert!(r.is_err(), "{bad:?}");
            // Into a replica with the old state, it would win: checked whole.
            let mut m = ix.clone();
            assert!(m.merge_encoded(&bad.encode()).is_err());
            assert_eq!(m, ix);
            r.err()
        };
        // A checkpoint Mallory signs is not the owner's.
        let mut forged = cp.clone();
        let c = forged.checkpoint.as_mut().unwrap();
        c.horizon = 16;
        c.signature = mallory.secret.sign(
            CHECKPOINT_DOMAIN,
            &Checkpoint::signed_bytes(&cp.id(), 16, &c.digest),
        );
        assert_eq!(
            check(&forged),
            Some(IndexError::ForgedCheckpoint { horizon: 16 })
        );
        // A base op left out no longer matches the digest.
        let mut short = cp.clone();
        short.base.pop_first();
        assert!(matches!(check(&short), Some(IndexError::Malformed(_))));
        // An op on the wrong side of the horizon.
        let mut wrong = cp.clone();
        let (slot, op) = wrong.ops.pop_first().unwrap();
        wrong.base.insert(slot, op);
        let c = wrong.checkpoint.as_mut().unwrap();
        c.digest = base_digest(wrong.base.values());
        c.signature = a.secret.sign(
            CHECKPOINT_DOMAIN,
            &Checkpoint::signed_bytes(&cp.id(), 15, &c.digest),
        );
        assert!(matches!(check(&wrong), Some(IndexError::Malformed(_))));
        // A tombstone in the base (a checkpoint keeps only puts), even
        // one the owner signed and named.
        let mut dead = cp.clone();
        let mut t = bucket(&a);
        t.delete(&a, b"a", 12).unwrap();
        let tomb = t.ops().next().unwrap().clone();
        dead.base.insert(tomb.slot, tomb);
        let c = dead.checkpoint.as_mut().unwrap();
        c.digest = base_digest(dead.base.values());
        c.signature = a.secret.sign(
            CHECKPOINT_DOMAIN,
            &Checkpoint::signed_bytes(&cp.id(), 15, &c.digest),
        );
        assert!(matches!(check(&dead), Some(IndexError::Malformed(_))));
        // The same checkpoint for another index does not verify there.
        let mut other = Index::new(a.index_name(b"bucket/other"));
        other.put(&a, b"a", b"1", 10).unwrap();
        let mut moved = other.collect(&a, 15, |_| true).unwrap();
        moved.checkpoint = cp.checkpoint.clone();
        moved.base.clear();
        moved.base_bytes = 0;
        let c = moved.checkpoint.as_mut().unwrap();
        c.digest = base_digest(std::iter::empty());
        assert!(Index::decode(&moved.encode(), None).is_err());
    }

    /// A state: ops applied, then (maybe) a checkpoint at `horizon` that
    /// keeps the base ops `mask` allows.
    fn state(ops: &[Op], checkpoint: Option<(u64, u8)>) -> Index {
        let ix = replica(ops);
        match checkpoint {
            Some((horizon, mask)) => ix
                .collect(&account(1), horizon, |o| mask & (1 << (o.slot[0] % 8)) != 0)
                .unwrap(),
            None => ix,
        }
    }

    fn arb_state() -> impl Strategy<Value = Index> {
        (
            proptest::collection::vec(arb_op(), 0..6),
            proptest::option::of((1u64..6, any::<u8>())),
        )
            .prop_map(|(ops, cp)| state(&ops, cp))
    }

    /// A random op on a 4-key space, built deterministically from its inputs.
    fn arb_op() -> impl Strategy<Value = Op> {
        (
            0u8..4,
            1u64..5,
            any::<bool>(),
            any::<u8>(),
            any::<[u8; NONCE_BYTES]>(),
        )
            .prop_map(|(key, clock, tombstone, value, nonce)| {
                let a = account(1);
                bucket(&a)
                    .make_op(&a, &[key], &[value], clock, tombstone, nonce)
                    .unwrap()
            })
    }

    fn replica(ops: &[Op]) -> Index {
        let mut ix = bucket(&account(1));
        for op in ops {
            ix.apply(op.clone()).unwrap();
        }
        ix
    }

    fn merged(a: &Index, b: &Index) -> Index {
        let mut m = a.clone();
        m.merge(b).unwrap();
        m
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn merge_is_commutative_associative_and_idempotent(
            a in proptest::collection::vec(arb_op(), 0..6),
            b in proptest::collection::vec(arb_op(), 0..6),
            c in proptest::collection::vec(arb_op(), 0..6),
        ) {
            let (a, b, c) = (replica(&a), replica(&b), replica(&c));
            prop_assert_eq!(merged(&a, &b), merged(&b, &a));
            prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
            prop_assert_eq!(merged(&a, &a), a.clone());
            prop_assert_eq!(merged(&a, &b).encode(), merged(&b, &a).encode());
            // One digest for one state, whatever the merge order; another
            // state has another digest.
            prop_assert_eq!(merged(&a, &b).digest(), merged(&b, &a).digest());
            prop_assert_eq!(merged(&a, &b).digest() == a.digest(), merged(&a, &b) == a);
            // Merging something already contained is Stale.
            let mut ab = merged(&a, &b);
            prop_assert_eq!(ab.merge(&b), Ok(Merged::Stale));
            // Merging the encoded copy is the same merge.
            let mut from_bytes = a.clone();
            let mut from_index = a.clone();
            prop_assert_eq!(from_bytes.merge_encoded(&b.encode()), from_index.merge(&b));
            prop_assert_eq!(&from_bytes, &from_index);
            prop_assert_eq!(Index::decode_trusted(&from_bytes.encode(), a.id()).unwrap(), from_index);
        }

        #[test]
        fn merge_with_checkpoints_is_commutative_associative_and_idempotent(
            a in arb_state(),
            b in arb_state(),
            c in arb_state(),
        ) {
            prop_assert_eq!(merged(&a, &b), merged(&b, &a));
            prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
            prop_assert_eq!(merged(&a, &a), a.clone());
            prop_assert_eq!(merged(&a, &b).digest(), merged(&b, &a).digest());
            let ab = merged(&a, &b);
            prop_assert_eq!(ab.encode().len(), ab.encoded_len());
            prop_assert_eq!(merged(&a, &b).digest() == a.digest(), merged(&a, &b) == a);
            let mut ab = merged(&a, &b);
            prop_assert_eq!(ab.merge(&b), Ok(Merged::Stale));
            let mut from_bytes = a.clone();
            let mut from_index = a.clone();
            prop_assert_eq!(from_bytes.merge_encoded(&b.encode()), from_index.merge(&b));
            prop_assert_eq!(&from_bytes, &from_index);
            prop_assert_eq!(Index::decode(&from_bytes.encode(), Some(a.id())).unwrap(), from_index);
        }

        /// A checkpoint reads as the state it was made from (keeping
        /// every live op), and no copy of any of that state's ops, merged
        /// or applied, changes it: a collected tombstone stays collected.
        #[test]
        fn nothing_from_before_a_checkpoint_comes_back(
            ops in proptest::collection::vec(arb_op(), 1..10),
            subset in proptest::collection::vec(any::<bool>(), 10),
            horizon in 1u64..6,
        ) {
            let a = account(1);
            let before = replica(&ops);
            let after = before.collect(&a, horizon, |_| true).unwrap();
            prop_assert_eq!(after.tombstones(), before.ops().filter(|o| o.tombstone && o.clock >= horizon).count());
            for key in 0u8..4 {
                prop_assert_eq!(after.get(a.key(), &[key]).unwrap(), before.get(a.key(), &[key]).unwrap());
            }
            let old: Vec<Op> = ops.iter().zip(&subset).filter(|(_, s)| **s).map(|(o, _)| o.clone()).collect();
            prop_assert_eq!(merged(&after, &replica(&old)), after.clone());
            prop_assert_eq!(merged(&replica(&old), &after), after.clone());
            for op in ops {
                let mut m = after.clone();
                let r = m.apply(op);
                prop_assert!(matches!(r, Ok(Merged::Stale) | Err(IndexError::BelowHorizon { .. })), "{:?}", r);
                prop_assert_eq!(&m, &after);
            }
        }

        #[test]
        fn every_replica_agrees_with_the_last_writer(ops in proptest::collection::vec(arb_op(), 1..10)) {
            let a = account(1);
            let forward = replica(&ops);
            let mut rev = ops.clone();
            rev.reverse();
            prop_assert_eq!(&forward, &replica(&rev));
            prop_assert!(forward.len() <= 4);
            // Each key shows the op with the greatest (clock, hash), or nothing if that deletes.
            for key in 0u8..4 {
                let slot = a.key().slot(&forward.id(), &[key]);
                let want = ops.iter().filter(|o| o.slot == slot).max_by_key(|o| o.order());
                let got = forward.get(a.key(), &[key]).unwrap();
                match want {
                    Some(o) if !o.tombstone => {
                        prop_assert_eq!(got, Some(forward.open(a.key(), o).unwrap().1));
                    }
                    _ => prop_assert_eq!(got, None),
                }
            }
            let listed: Vec<Vec<u8>> = forward.entries(a.key()).unwrap().map(|(k, _)| k).collect();
            let mut sorted = listed.clone();
            sorted.sort();
            prop_assert_eq!(listed, sorted);
            prop_assert_eq!(Index::decode(&forward.encode(), Some(forward.id())).unwrap(), forward);
        }
    }
}
