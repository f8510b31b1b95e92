//! Repair records: the keyless, signed, mergeable description of a stored
//! object that lets the network audit and repair it without its owner.
//!
//! Like Tahoe-LAFS's verify cap, a record holds no key. It has two parts:
//!
//! - the **genesis**, written once by the owner at upload: file id, k/n,
//!   each segment's sealed length and the BLAKE3 root of every coded piece,
//!   the owner's public key and creation time. Its hash (BLAKE3 in the
//!   `"cairn v1 repair record"` context) is the [`RecordId`]: the DHT key
//!   the stewards are closest to, and the check that nobody altered the
//!   genesis. The owner signs it too, so a record proves whose it is.
//! - a set of signed **ops**, each a batch of [`Change`]s by one author
//!   (the owner or a steward): which node holds piece `(segment, index)`,
//!   that a piece is lost with no replacement yet, the lease's expiry, and the
//!   owner's deletion.
//!
//! # Merge (a state-based CRDT)
//! A record's state is a set of ops; merging is set union followed by
//! compaction. Every change targets a [`Slot`]; the winner of a slot is the
//! change with the greatest order key: `(clock, author, op hash)` for piece
//! slots (last writer wins under a Lamport clock), `(expires_at, …)` for the
//! lease (a lease only grows), and any delete beats everything. Compaction
//! keeps exactly the ops that win at least one slot, so a record stays about
//! as large as its number of pieces however often it is repaired. Because
//! the slot winners of `A ∪ B` are each the winner in `A` or in `B`,
//! `compact(compact(A) ∪ compact(B)) = compact(A ∪ B)`: merge is
//! commutative, associative and idempotent (property-tested below). Two
//! stewards that repair concurrently both produce valid ops; every replica
//! settles on the same winner.
//!
//! # Trust
//! Decoding checks the genesis against the id, the owner's signature, every
//! op's signature, that each op names this record and that every change is
//! in range. Who may author ops is the caller's question (a steward is one of
//! the nodes closest to the record id in the caller's view of the DHT), asked
//! through an [`Authority`]; only the owner may delete. A merge that brings
//! nothing new reports [`Merged::Stale`], so a node can refuse an old copy.
//!
//! # Format
//! | bytes | field |
//! |---|---|
//! | 4 | magic `CRNR` |
//! | 2 | format version, big-endian (1) |
//! | rest | postcard(`genesis`, `genesis signature`, `ops`) |

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::erasure::MAX_PIECES;
use crate::ids::{FileId, PieceId};
use crate::keys::{PublicKey, SecretKey, Signature};

/// Magic bytes of an encoded record.
pub const MAGIC: &[u8; 4] = b"CRNR";
/// The record format this build writes and reads.
pub const RECORD_VERSION: u16 = 1;
/// The largest encoded record accepted (the record protocol's body limit).
pub const MAX_RECORD_BYTES: usize = 32 * 1024 * 1024;
/// The most segments a record may describe.
pub const MAX_SEGMENTS: usize = 1 << 20;

const GENESIS_DOMAIN: &str = "cairn v1 record genesis";
const OP_DOMAIN: &str = "cairn v1 record op";

/// A record's id: the hash of its genesis.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordId(pub [u8; 32]);

impl RecordId {
    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        crate::hex(&self.0)
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Option<Self> {
        crate::unhex32(s).map(Self)
    }
}

impl fmt::Debug for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordId({})", &self.to_hex()[..12])
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// One segment as repair sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentInfo {
    /// Length of the sealed (encrypted) segment the pieces encode.
    pub sealed_len: u64,
    /// BLAKE3 root of every coded piece, by index (`coded` entries).
    pub hashes: Vec<[u8; 32]>,
}

/// The immutable part of a record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    /// The file whose pieces this record tracks (piece ids derive from it).
    pub file_id: FileId,
    /// Who stored the object.
    pub owner: PublicKey,
    /// Pieces needed to rebuild a segment.
    pub k: u16,
    /// Pieces kept per segment when healthy.
    pub n: u16,
    /// Pieces the code defines per segment (indices `0..coded`).
    pub coded: u16,
    /// Unix seconds of the upload.
    pub created_at: u64,
    /// One entry per segment.
    pub segments: Vec<SegmentInfo>,
}

impl Genesis {
    /// The record id of this genesis.
    pub fn id(&self) -> RecordId {
        let mut h = blake3::Hasher::new_derive_key("cairn v1 repair record");
        h.update(&canonical(self));
        RecordId(*h.finalize().as_bytes())
    }

    /// The piece id of `(segment, index)`.
    pub fn piece_id(&self, segment: u32, index: u16) -> PieceId {
        self.file_id.piece_id(u64::from(segment), u32::from(index))
    }

    /// The BLAKE3 root piece `(segment, index)` must hash to.
    pub fn piece_hash(&self, segment: u32, index: u16) -> Option<[u8; 32]> {
        self.segments
            .get(segment as usize)?
            .hashes
            .get(usize::from(index))
            .copied()
    }

    fn validate(&self) -> Result<(), RecordError> {
        let bad = |s: String| Err(RecordError::Malformed(s));
        if self.k == 0 || self.k > self.n || self.n > self.coded || self.coded > MAX_PIECES {
            return bad(format!(
                "k={} n={} coded={} are inconsistent",
                self.k, self.n, self.coded
            ));
        }
        if self.segments.is_empty() || self.segments.len() > MAX_SEGMENTS {
            return bad(format!("{} segments", self.segments.len()));
        }
        if let Some((i, _)) = self
            .segments
            .iter()
            .enumerate()
            .find(|(_, s)| s.hashes.len() != usize::from(self.coded))
        {
            return bad(format!("segment {i} does not list {} hashes", self.coded));
        }
        Ok(())
    }
}

/// What a change targets; each slot has one winning change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Slot {
    /// Piece `index` of `segment`.
    Piece {
        /// Segment number.
        segment: u32,
        /// Piece index.
        index: u16,
    },
    /// The record's lease.
    Lease,
    /// The owner's deletion.
    Delete,
}

/// One change inside an op.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Piece `(segment, index)` is held by `holder` (libp2p peer id bytes).
    Assign {
        /// Segment number.
        segment: u32,
        /// Piece index.
        index: u16,
        /// The holder's peer id bytes.
        holder: Vec<u8>,
    },
    /// Piece `(segment, index)` is lost and not yet replaced.
    Unassign {
        /// Segment number.
        segment: u32,
        /// Piece index.
        index: u16,
    },
    /// Holders keep the pieces until `expires_at` (unix seconds).
    Lease {
        /// Unix seconds.
        expires_at: u64,
    },
    /// The owner deleted the object: holders drop its pieces.
    Delete,
}

impl Change {
    /// The slot this change targets.
    pub fn slot(&self) -> Slot {
        match *self {
            Change::Assign { segment, index, .. } | Change::Unassign { segment, index } => {
                Slot::Piece { segment, index }
            }
            Change::Lease { .. } => Slot::Lease,
            Change::Delete => Slot::Delete,
        }
    }
}

/// The signed part of an op.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpBody {
    /// The record this op belongs to.
    pub record: RecordId,
    /// Lamport clock: one more than the greatest clock its author had seen.
    pub clock: u64,
    /// Who made it.
    pub author: PublicKey,
    /// Unix seconds when it was made (informational; order comes from `clock`).
    pub at: u64,
    /// What it changes.
    pub changes: Vec<Change>,
}

/// A signed batch of changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// The signed content.
    pub body: OpBody,
    /// The author's signature over `body`.
    pub signature: Signature,
}

impl Op {
    /// Signs `body` with `key` (whose public key must be `body.author`).
    pub fn sign(body: OpBody, key: &SecretKey) -> Self {
        let signature = key.sign(OP_DOMAIN, &canonical(&body));
        Op { body, signature }
    }

    /// The op's identity: BLAKE3 of its signed content.
    pub fn hash(&self) -> [u8; 32] {
        *blake3::hash(&canonical(&self.body)).as_bytes()
    }

    fn order(&self, change: &Change) -> OrderKey {
        let primary = match change {
            Change::Lease { expires_at } => *expires_at,
            _ => self.body.clock,
        };
        (primary, self.body.clock, self.body.author, self.hash())
    }
}

type OrderKey = (u64, u64, PublicKey, [u8; 32]);

/// Who may author ops besides the owner.
pub trait Authority {
    /// Whether `author` may change piece assignments and the lease.
    fn may_write(&self, author: &PublicKey) -> bool;
}

/// Accepts any author with a valid signature (for tests and the simulator).
pub struct AnyAuthor;

impl Authority for AnyAuthor {
    fn may_write(&self, _: &PublicKey) -> bool {
        true
    }
}

impl<F: Fn(&PublicKey) -> bool> Authority for F {
    fn may_write(&self, author: &PublicKey) -> bool {
        self(author)
    }
}

/// A record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Not an encoded record.
    #[error("not a Cairn repair record (bad magic bytes)")]
    Magic,
    /// Written by a newer Cairn.
    #[error(
        "repair record format version {0} is not supported (this Cairn reads {RECORD_VERSION})"
    )]
    Version(u16),
    /// Too large to accept.
    #[error("repair record is {0} bytes, over the {MAX_RECORD_BYTES}-byte limit")]
    TooLarge(usize),
    /// Undecodable or inconsistent.
    #[error("repair record is malformed: {0}")]
    Malformed(String),
    /// The genesis does not hash to the expected id.
    #[error("repair record is for {actual}, not the requested {expected}")]
    WrongId {
        /// What was asked for.
        expected: RecordId,
        /// What the genesis hashes to.
        actual: RecordId,
    },
    /// The owner's signature on the genesis does not verify.
    #[error("repair record genesis is not signed by its owner")]
    ForgedGenesis,
    /// An op's signature does not verify.
    #[error("repair record op by {0:?} has a bad signature")]
    ForgedOp(PublicKey),
    /// An op's author may not write to this record.
    #[error("{0:?} is neither the owner nor a steward of this record")]
    NotAuthorized(PublicKey),
    /// Only the owner may delete.
    #[error("only the owner may delete a record; {0:?} tried")]
    DeleteByNonOwner(PublicKey),
    /// Two records with different genesis were merged.
    #[error("cannot merge records of different objects")]
    DifferentObject,
}

/// What a merge or an applied op changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merged {
    /// Some slot has a new winner.
    Changed,
    /// Nothing new: every incoming op was known or already superseded.
    Stale,
}

/// A repair record: genesis plus the winning ops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    id: RecordId,
    genesis: Genesis,
    genesis_sig: Signature,
    /// Ops by hash: a set, so union is idempotent.
    ops: BTreeMap<[u8; 32], Op>,
    /// Slot → (winning order key, op hash, index of the change in the op).
    winners: BTreeMap<Slot, (OrderKey, [u8; 32], usize)>,
}

#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    genesis: std::borrow::Cow<'a, Genesis>,
    genesis_sig: Signature,
    ops: Vec<std::borrow::Cow<'a, Op>>,
}

fn canonical<T: Serialize>(value: &T) -> Vec<u8> {
    // postcard cannot fail on these plain data types with an allocating sink.
    postcard::to_allocvec(value).unwrap_or_default()
}

impl Record {
    /// A new record signed by its owner, with the initial assignments and lease.
    pub fn create(
        genesis: Genesis,
        owner: &SecretKey,
        assignments: impl IntoIterator<Item = (u32, u16, Vec<u8>)>,
        expires_at: u64,
    ) -> Result<Self, RecordError> {
        if owner.public() != genesis.owner {
            return Err(RecordError::ForgedGenesis);
        }
        genesis.validate()?;
        let genesis_sig = owner.sign(GENESIS_DOMAIN, &canonical(&genesis));
        let mut record = Record {
            id: genesis.id(),
            genesis,
            genesis_sig,
            ops: BTreeMap::new(),
            winners: BTreeMap::new(),
        };
        let mut changes: Vec<Change> = assignments
            .into_iter()
            .map(|(segment, index, holder)| Change::Assign {
                segment,
                index,
                holder,
            })
            .collect();
        changes.push(Change::Lease { expires_at });
        let at = record.genesis.created_at;
        record.update(owner, at, changes, &AnyAuthor)?;
        Ok(record)
    }

    /// The record's id.
    pub fn id(&self) -> RecordId {
        self.id
    }

    /// The immutable part.
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// The ops that currently win some slot.
    pub fn ops(&self) -> impl Iterator<Item = &Op> {
        self.ops.values()
    }

    /// The greatest Lamport clock in the record.
    pub fn clock(&self) -> u64 {
        self.ops.values().map(|o| o.body.clock).max().unwrap_or(0)
    }

    fn winning_change(&self, slot: Slot) -> Option<(&Op, &Change)> {
        let (_, hash, i) = self.winners.get(&slot)?;
        let op = self.ops.get(hash)?;
        Some((op, op.body.changes.get(*i)?))
    }

    /// Who holds piece `(segment, index)` now, if anyone.
    pub fn holder(&self, segment: u32, index: u16) -> Option<&[u8]> {
        match self.winning_change(Slot::Piece { segment, index })? {
            (_, Change::Assign { holder, .. }) => Some(holder),
            _ => None,
        }
    }

    /// Every assigned piece of `segment`: `(index, holder)` by index.
    pub fn holders(&self, segment: u32) -> impl Iterator<Item = (u16, &[u8])> {
        let lo = Slot::Piece { segment, index: 0 };
        let hi = Slot::Piece {
            segment,
            index: u16::MAX,
        };
        self.winners
            .range(lo..=hi)
            .filter_map(move |(slot, _)| match slot {
                Slot::Piece { index, .. } => Some((*index, self.holder(segment, *index)?)),
                _ => None,
            })
    }

    /// Unix seconds until which holders keep the pieces.
    pub fn expires_at(&self) -> u64 {
        match self.winning_change(Slot::Lease) {
            Some((_, Change::Lease { expires_at })) => *expires_at,
            _ => 0,
        }
    }

    /// Whether the owner deleted the object.
    pub fn is_deleted(&self) -> bool {
        self.winners.contains_key(&Slot::Delete)
    }

    /// Makes, applies and returns a new op by `author` with `changes`.
    pub fn update(
        &mut self,
        author: &SecretKey,
        at: u64,
        changes: Vec<Change>,
        authority: &impl Authority,
    ) -> Result<Op, RecordError> {
        let body = OpBody {
            record: self.id,
            clock: self.clock() + 1,
            author: author.public(),
            at,
            changes,
        };
        let op = Op::sign(body, author);
        self.apply(op.clone(), authority)?;
        Ok(op)
    }

    /// Checks and adds one op.
    pub fn apply(&mut self, op: Op, authority: &impl Authority) -> Result<Merged, RecordError> {
        self.check_op(&op, authority)?;
        Ok(self.insert(vec![op]))
    }

    /// Merges another replica of the same record into this one.
    pub fn merge(
        &mut self,
        other: &Record,
        authority: &impl Authority,
    ) -> Result<Merged, RecordError> {
        if other.id != self.id {
            return Err(RecordError::DifferentObject);
        }
        let mut incoming = Vec::new();
        for (hash, op) in &other.ops {
            if !self.ops.contains_key(hash) {
                self.check_op(op, authority)?;
                incoming.push(op.clone());
            }
        }
        Ok(self.insert(incoming))
    }

    fn check_op(&self, op: &Op, authority: &impl Authority) -> Result<(), RecordError> {
        let body = &op.body;
        if body.record != self.id {
            return Err(RecordError::Malformed("op names another record".into()));
        }
        body.author
            .verify(OP_DOMAIN, &canonical(body), &op.signature)
            .map_err(|_| RecordError::ForgedOp(body.author))?;
        let owner = body.author == self.genesis.owner;
        if !owner && !authority.may_write(&body.author) {
            return Err(RecordError::NotAuthorized(body.author));
        }
        for change in &body.changes {
            match change {
                Change::Delete if !owner => {
                    return Err(RecordError::DeleteByNonOwner(body.author));
                }
                Change::Assign { segment, index, .. } | Change::Unassign { segment, index }
                    if *segment as usize >= self.genesis.segments.len()
                        || *index >= self.genesis.coded =>
                {
                    return Err(RecordError::Malformed(format!(
                        "piece ({segment}, {index}) is out of range"
                    )));
                }
                Change::Assign { holder, .. } if holder.len() > 128 => {
                    return Err(RecordError::Malformed("holder id too long".into()));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Adds checked ops, recomputes winners and drops ops that win nothing.
    fn insert(&mut self, ops: Vec<Op>) -> Merged {
        let before: Vec<_> = self.winners.values().map(|(_, h, i)| (*h, *i)).collect();
        for op in ops {
            self.ops.entry(op.hash()).or_insert(op);
        }
        self.recompute();
        let after: Vec<_> = self.winners.values().map(|(_, h, i)| (*h, *i)).collect();
        if before == after {
            Merged::Stale
        } else {
            Merged::Changed
        }
    }

    fn recompute(&mut self) {
        let mut winners: BTreeMap<Slot, (OrderKey, [u8; 32], usize)> = BTreeMap::new();
        for (hash, op) in &self.ops {
            for (i, change) in op.body.changes.iter().enumerate() {
                let key = op.order(change);
                let entry = winners.entry(change.slot());
                match entry {
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert((key, *hash, i));
                    }
                    std::collections::btree_map::Entry::Occupied(mut o) => {
                        if (key, *hash, i) > *o.get() {
                            o.insert((key, *hash, i));
                        }
                    }
                }
            }
        }
        // A deleted record keeps only its winning delete: everything else
        // is moot and the tombstone stays small.
        if let Some(delete) = winners.get(&Slot::Delete).copied() {
            winners.retain(|slot, _| *slot == Slot::Delete);
            winners.insert(Slot::Delete, delete);
        }
        let live: BTreeSet<[u8; 32]> = winners.values().map(|(_, h, _)| *h).collect();
        self.ops.retain(|h, _| live.contains(h));
        self.winners = winners;
    }

    /// The encoded record.
    pub fn encode(&self) -> Vec<u8> {
        let wire = Wire {
            genesis: std::borrow::Cow::Borrowed(&self.genesis),
            genesis_sig: self.genesis_sig,
            ops: self.ops.values().map(std::borrow::Cow::Borrowed).collect(),
        };
        let mut out = Vec::with_capacity(64 + self.ops.len() * 128);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&RECORD_VERSION.to_be_bytes());
        out.extend_from_slice(&canonical(&wire));
        out
    }

    /// Decodes and checks a record: id (if `expected` is given), owner
    /// signature, every op's signature and authority.
    pub fn decode(
        bytes: &[u8],
        expected: Option<RecordId>,
        authority: &impl Authority,
    ) -> Result<Self, RecordError> {
        Self::decode_with(bytes, expected, Some(authority))
    }

    /// Decodes a record this node checked with [`Record::decode`] before
    /// keeping it: the format, the genesis and the id are checked, the
    /// signatures and authors are not. Verifying every op's signature again
    /// at each read was most of an idle steward's CPU; never use this on
    /// bytes from the network.
    pub fn decode_trusted(bytes: &[u8], expected: Option<RecordId>) -> Result<Self, RecordError> {
        Self::decode_with(bytes, expected, None::<&AnyAuthor>)
    }

    fn decode_with(
        bytes: &[u8],
        expected: Option<RecordId>,
        authority: Option<&impl Authority>,
    ) -> Result<Self, RecordError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(RecordError::TooLarge(bytes.len()));
        }
        if bytes.len() < 6 || &bytes[..4] != MAGIC {
            return Err(RecordError::Magic);
        }
        let version = u16::from_be_bytes([bytes[4], bytes[5]]);
        if version != RECORD_VERSION {
            return Err(RecordError::Version(version));
        }
        let (wire, rest): (Wire<'static>, _) = postcard::take_from_bytes(&bytes[6..])
            .map_err(|e| RecordError::Malformed(e.to_string()))?;
        // Trailing bytes would let two encodings mean one record.
        if !rest.is_empty() {
            return Err(RecordError::Malformed(format!(
                "{} bytes after the record",
                rest.len()
            )));
        }
        let genesis = wire.genesis.into_owned();
        genesis.validate()?;
        let id = genesis.id();
        if let Some(expected) = expected
            && expected != id
        {
            return Err(RecordError::WrongId {
                expected,
                actual: id,
            });
        }
        if authority.is_some() {
            genesis
                .owner
                .verify(GENESIS_DOMAIN, &canonical(&genesis), &wire.genesis_sig)
                .map_err(|_| RecordError::ForgedGenesis)?;
        }
        let mut record = Record {
            id,
            genesis,
            genesis_sig: wire.genesis_sig,
            ops: BTreeMap::new(),
            winners: BTreeMap::new(),
        };
        let ops: Vec<Op> = wire.ops.into_iter().map(|o| o.into_owned()).collect();
        let max_ops = record.genesis.segments.len() * usize::from(record.genesis.coded) + 2;
        if ops.len() > max_ops {
            return Err(RecordError::Malformed(format!(
                "{} ops, more than its {max_ops} slots",
                ops.len()
            )));
        }
        if let Some(authority) = authority {
            for op in &ops {
                record.check_op(op, authority)?;
            }
        }
        record.insert(ops);
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(i: u8) -> SecretKey {
        SecretKey::from_bytes([i + 1; 32])
    }

    fn genesis(segments: usize) -> Genesis {
        Genesis {
            file_id: FileId([5; 32]),
            owner: key(0).public(),
            k: 2,
            n: 4,
            coded: 5,
            created_at: 1000,
            segments: (0..segments)
                .map(|s| SegmentInfo {
                    sealed_len: 100,
                    hashes: (0..5).map(|i| [s as u8 * 16 + i; 32]).collect(),
                })
                .collect(),
        }
    }

    fn record() -> Record {
        let assign = (0..2u32).flat_map(|s| (0..4u16).map(move |i| (s, i, vec![i as u8])));
        Record::create(genesis(2), &key(0), assign, 5000).unwrap()
    }

    #[test]
    fn create_sets_holders_and_lease() {
        let r = record();
        assert_eq!(r.holder(1, 3), Some(&[3u8][..]));
        assert_eq!(r.holder(1, 4), None);
        assert_eq!(r.holders(0).count(), 4);
        assert_eq!(r.expires_at(), 5000);
        assert!(!r.is_deleted());
        assert_eq!(r.ops().count(), 1);
    }

    #[test]
    fn encode_decode_roundtrip_checks_id() {
        let r = record();
        let bytes = r.encode();
        assert_eq!(
            Record::decode(&bytes, Some(r.id()), &AnyAuthor),
            Ok(r.clone())
        );
        let other = RecordId([0; 32]);
        assert!(matches!(
            Record::decode(&bytes, Some(other), &AnyAuthor),
            Err(RecordError::WrongId { .. })
        ));
        let mut v = bytes.clone();
        v[4..6].copy_from_slice(&9u16.to_be_bytes());
        assert_eq!(
            Record::decode(&v, None, &AnyAuthor),
            Err(RecordError::Version(9))
        );
        assert_eq!(
            Record::decode(b"CRNM\0\x01", None, &AnyAuthor),
            Err(RecordError::Magic)
        );
    }

    #[test]
    fn a_newer_assignment_wins_and_the_old_op_is_compacted_only_when_superseded() {
        let mut r = record();
        let steward = key(7);
        r.update(
            &steward,
            2000,
            vec![Change::Assign {
                segment: 0,
                index: 1,
                holder: vec![42],
            }],
            &AnyAuthor,
        )
        .unwrap();
        assert_eq!(r.holder(0, 1), Some(&[42u8][..]));
        // The genesis op still wins the other slots.
        assert_eq!(r.ops().count(), 2);
        assert_eq!(r.holder(0, 0), Some(&[0u8][..]));
    }

    #[test]
    fn unauthorised_forged_and_out_of_range_ops_are_rejected() {
        let mut r = record();
        let stranger = key(9);
        let nobody = |_: &PublicKey| false;
        let change = vec![Change::Unassign {
            segment: 0,
            index: 0,
        }];
        assert_eq!(
            r.update(&stranger, 1, change.clone(), &nobody),
            Err(RecordError::NotAuthorized(stranger.public()))
        );
        // The owner needs no authority.
        assert!(r.update(&key(0), 1, change, &nobody).is_ok());
        // A steward may not delete.
        assert_eq!(
            r.update(&stranger, 1, vec![Change::Delete], &AnyAuthor),
            Err(RecordError::DeleteByNonOwner(stranger.public()))
        );
        let out = vec![Change::Unassign {
            segment: 2,
            index: 0,
        }];
        assert!(matches!(
            r.update(&stranger, 1, out, &AnyAuthor),
            Err(RecordError::Malformed(_))
        ));
        // A tampered op: signature no longer matches.
        let mut op = Op::sign(
            OpBody {
                record: r.id(),
                clock: 50,
                author: stranger.public(),
                at: 1,
                changes: vec![Change::Lease { expires_at: 9 }],
            },
            &stranger,
        );
        op.body.changes = vec![Change::Lease {
            expires_at: u64::MAX,
        }];
        assert_eq!(
            r.apply(op, &AnyAuthor),
            Err(RecordError::ForgedOp(stranger.public()))
        );
    }

    #[test]
    fn a_forged_genesis_is_rejected() {
        let r = record();
        let mut bytes = r.encode();
        // Re-sign nothing, but claim another owner: the id changes and the
        // owner signature no longer verifies.
        let wire: Wire<'_> = postcard::from_bytes(&bytes[6..]).unwrap();
        let mut g = wire.genesis.into_owned();
        g.owner = key(3).public();
        let forged = Wire {
            genesis: std::borrow::Cow::Owned(g),
            genesis_sig: wire.genesis_sig,
            ops: wire.ops,
        };
        bytes.truncate(6);
        bytes.extend_from_slice(&postcard::to_allocvec(&forged).unwrap());
        assert!(matches!(
            Record::decode(&bytes, None, &AnyAuthor),
            Err(RecordError::ForgedGenesis | RecordError::ForgedOp(_))
        ));
        assert!(matches!(
            Record::decode(&bytes, Some(r.id()), &AnyAuthor),
            Err(RecordError::WrongId { .. })
        ));
    }

    #[test]
    fn a_kept_record_decodes_without_its_signatures_but_not_without_its_format() {
        let mut r = record();
        r.update(
            &key(7),
            2,
            vec![Change::Lease { expires_at: 9000 }],
            &AnyAuthor,
        )
        .unwrap();
        let bytes = r.encode();
        assert_eq!(Record::decode_trusted(&bytes, Some(r.id())).unwrap(), r);
        assert_eq!(
            Record::decode_trusted(&bytes, Some(r.id())).unwrap(),
            Record::decode(&bytes, Some(r.id()), &AnyAuthor).unwrap()
        );
        // A flipped signature byte: the checked decode refuses it, the kept
        // one does not look (the bytes were checked before they were kept).
        let mut wire: Wire<'_> = postcard::from_bytes(&bytes[6..]).unwrap();
        let mut op = wire.ops[0].clone().into_owned();
        op.signature.0[0] ^= 1;
        wire.ops[0] = std::borrow::Cow::Owned(op);
        let mut tampered = bytes[..6].to_vec();
        tampered.extend_from_slice(&postcard::to_allocvec(&wire).unwrap());
        assert!(Record::decode(&tampered, Some(r.id()), &AnyAuthor).is_err());
        assert!(Record::decode_trusted(&tampered, Some(r.id())).is_ok());
        // Everything else is still checked: the id, the magic, the version,
        // trailing bytes.
        assert!(matches!(
            Record::decode_trusted(&bytes, Some(RecordId([9; 32]))),
            Err(RecordError::WrongId { .. })
        ));
        let mut bad = bytes.clone();
        bad[0] ^= 1;
        assert_eq!(Record::decode_trusted(&bad, None), Err(RecordError::Magic));
        let mut bad = bytes.clone();
        bad[5] ^= 1;
        assert!(matches!(
            Record::decode_trusted(&bad, None),
            Err(RecordError::Version(_))
        ));
        let mut bad = bytes.clone();
        bad.push(0);
        assert!(matches!(
            Record::decode_trusted(&bad, None),
            Err(RecordError::Malformed(_))
        ));
    }

    #[test]
    fn a_stale_copy_brings_nothing() {
        let old = record();
        let mut new = old.clone();
        new.update(
            &key(7),
            2,
            vec![Change::Unassign {
                segment: 1,
                index: 2,
            }],
            &AnyAuthor,
        )
        .unwrap();
        let mut merged = new.clone();
        assert_eq!(merged.merge(&old, &AnyAuthor), Ok(Merged::Stale));
        assert_eq!(merged, new);
        let mut behind = old.clone();
        assert_eq!(behind.merge(&new, &AnyAuthor), Ok(Merged::Changed));
        assert_eq!(behind, new);
    }

    #[test]
    fn the_lease_only_grows_and_delete_wins() {
        let mut r = record();
        r.update(
            &key(7),
            2,
            vec![Change::Lease { expires_at: 10 }],
            &AnyAuthor,
        )
        .unwrap();
        assert_eq!(r.expires_at(), 5000);
        r.update(
            &key(7),
            2,
            vec![Change::Lease { expires_at: 9000 }],
            &AnyAuthor,
        )
        .unwrap();
        assert_eq!(r.expires_at(), 9000);
        r.update(&key(0), 3, vec![Change::Delete], &AnyAuthor)
            .unwrap();
        assert!(r.is_deleted());
        assert_eq!(r.holder(0, 0), None);
        assert_eq!(r.ops().count(), 1);
        // A later assignment does not resurrect it.
        r.update(
            &key(7),
            4,
            vec![Change::Assign {
                segment: 0,
                index: 0,
                holder: vec![1],
            }],
            &AnyAuthor,
        )
        .unwrap();
        assert!(r.is_deleted());
        assert_eq!(r.holder(0, 0), None);
    }

    /// A random op by one of four authors on a 2×5 slot space.
    fn arb_op(base: &Record) -> impl Strategy<Value = Op> + use<> {
        let id = base.id();
        (
            0u8..4,
            1u64..6,
            proptest::collection::vec((0u32..2, 0u16..5, 0u8..4, 0u8..10), 1..4),
        )
            .prop_map(move |(author, clock, changes)| {
                let key = key(author);
                let changes = changes
                    .into_iter()
                    .map(|(segment, index, kind, v)| match kind {
                        0 | 1 => Change::Assign {
                            segment,
                            index,
                            holder: vec![v],
                        },
                        2 => Change::Unassign { segment, index },
                        // Only author 0 (the owner) may delete.
                        _ if author == 0 && v == 0 => Change::Delete,
                        _ => Change::Lease {
                            expires_at: u64::from(v) * 1000,
                        },
                    })
                    .collect();
                Op::sign(
                    OpBody {
                        record: id,
                        clock,
                        author: key.public(),
                        at: 0,
                        changes,
                    },
                    &key,
                )
            })
    }

    fn replica(base: &Record, ops: &[Op]) -> Record {
        let mut r = base.clone();
        for op in ops {
            r.apply(op.clone(), &AnyAuthor).unwrap();
        }
        r
    }

    fn merged(a: &Record, b: &Record) -> Record {
        let mut m = a.clone();
        m.merge(b, &AnyAuthor).unwrap();
        m
    }

    /// Regression: flipping the op count to 0 left a shorter record that
    /// decoded (postcard ignores trailing bytes).
    #[test]
    fn no_single_bit_flip_decodes_to_another_record() {
        let r = record();
        let bytes = r.encode();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                if let Ok(d) = Record::decode(&b, Some(r.id()), &AnyAuthor) {
                    assert_eq!(d, r, "flip at {i} bit {bit} of {}", bytes.len());
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn merge_is_commutative_associative_and_idempotent(
            a in proptest::collection::vec(arb_op(&record()), 0..6),
            b in proptest::collection::vec(arb_op(&record()), 0..6),
            c in proptest::collection::vec(arb_op(&record()), 0..6),
        ) {
            let base = record();
            let (a, b, c) = (replica(&base, &a), replica(&base, &b), replica(&base, &c));
            prop_assert_eq!(merged(&a, &b), merged(&b, &a));
            prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
            prop_assert_eq!(merged(&a, &a), a.clone());
            // Encoding is canonical: equal replicas encode to equal bytes.
            prop_assert_eq!(merged(&a, &b).encode(), merged(&b, &a).encode());
        }

        #[test]
        fn order_of_delivery_does_not_matter(ops in proptest::collection::vec(arb_op(&record()), 0..8)) {
            let base = record();
            let forward = replica(&base, &ops);
            let mut rev = ops.clone();
            rev.reverse();
            prop_assert_eq!(&forward, &replica(&base, &rev));
            // Compaction keeps at most one op per slot.
            prop_assert!(forward.ops().count() <= 2 * 5 + 2);
            let bytes = forward.encode();
            prop_assert_eq!(Record::decode(&bytes, Some(base.id()), &AnyAuthor).unwrap(), forward);
        }

    }
}
