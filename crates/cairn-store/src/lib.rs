//! Cairn's local piece store: the blobs this node keeps for other peers.
//!
//! This crate owns everything a node has on disk for *other* peers: the piece files, the redb
//! index describing them, the capacity limit the operator configured, and the integrity check on
//! every read, the answers to storage audits ([`PieceStore::audit`]), and the pieces' leases:
//! their expiry, its renewal ([`PieceStore::set_expiry`], [`PieceStore::shorten_expiry`]) and
//! the removal of expired pieces ([`PieceStore::collect_expired`]). It knows nothing about
//! the network, erasure coding or encryption; a piece is an opaque blob of at most
//! [`MAX_PIECE_BYTES`] named by a [`PieceId`]. It decides nothing about time either: callers
//! pass `now`, and when to collect is the node's business.
//!
//! The API is synchronous. [`PieceStore`] is `Send + Sync`; the async node shares it as
//! `Arc<PieceStore>` and calls it from `tokio::task::spawn_blocking`.
//!
//! # On-disk format (version 3)
//!
//! ```text
//! <dir>/
//!   index.redb                 redb database, see "Index" below
//!   pieces/ab/cd/<hex id>      one file per piece: its raw bytes, then its outboard; ab and cd
//!                              are the first two bytes of the id in hex (65 536 leaf
//!                              directories at most)
//!   tmp/<hex id>.tmp           a piece being written; never meaningful after a restart
//! ```
//!
//! The outboard is the piece's BLAKE3 hash tree down to 16 KiB chunk groups, in bao-tree's
//! pre-order layout ([`cairn_core::audit::outboard`]): 64 bytes per group after the first, 0.4 %
//! of the piece, nothing for pieces of 16 KiB or less. It lets [`PieceStore::audit`] prove one
//! group by reading that group and the outboard instead of the whole piece. Its root is the
//! piece's BLAKE3, so computing it on `put` replaces the hash the store computed anyway. It
//! lives in the piece file so the write protocol below covers it unchanged. Capacity counts
//! piece bytes only; outboards, like the index, are overhead on top.
//!
//! ## Index
//!
//! | table       | key         | value                        | meaning                                   |
//! |-------------|-------------|------------------------------|-------------------------------------------|
//! | `pieces`    | `[u8; 32]`  | `&[u8]`: postcard [`PieceMeta`] | every stored piece, the source of truth |
//! | `manifests` | `[u8; 32]`  | `()`                         | the subset of `pieces` of kind `Manifest` |
//! | `pending`   | `[u8; 32]`  | `()`                         | intent log: ids whose file may be out of step with `pieces` |
//! | `outboards` | `[u8; 32]`  | `u64`                        | outboard length of each piece written by version 2 or later; the file is `size` + this many bytes |
//! | `expiry_v1` | `(u64, [u8; 32])` | `()`                   | `(expires_at, id)` of every piece in `pieces` whose `expires_at` is not 0 (version 3) |
//! | `meta`      | `&str`      | `u64`                        | `format` = 3, `used_bytes` = sum of `size` over `pieces` |
//!
//! Keys are the raw 32 id bytes. [`PieceMeta`] is encoded with postcard in field order
//! (`id`, `kind`, `size`, `hash`, `owner`, `stored_at`, `expires_at`); `kind` is a varint
//! (0 = Data, 1 = Manifest). Any change to this encoding must bump the format version.
//! `open` refuses a `format` other than 1, 2 or [`FORMAT_VERSION`] with [`StoreError::Format`].
//!
//! `expiry_v1` keys sort by expiry, then id, so the pieces due at `now` are one range at the
//! start of the table. Every change of a piece's `pieces` entry (put, delete, remove, an
//! expiry change, collection) updates its `expiry_v1` key in the same transaction.
//!
//! ## Versions 1 and 2
//!
//! Version 2 is version 3 without `expiry_v1`. `open` upgrades it in place: in one
//! transaction it builds `expiry_v1` from the `pieces` entries (a walk of the index, not of the
//! files; an `expiry_v1` table already there is dropped first, since no version 2 build
//! maintained it) and sets `format` = 3. A crash before that commits leaves version 2, upgraded
//! again on the next open; after it, the version says the index exists and it is never rebuilt.
//!
//! Version 1 is version 2 without outboards: no `outboards` table, piece files hold the bytes
//! alone. `open` upgrades it the same way, creating `outboards` too; nothing else is
//! rewritten. A piece without an `outboards` entry is read as a version 1 piece: audits read
//! it whole and compute its outboard on the fly.
//!
//! Upgrades are one-way: an older build refuses the upgraded directory with
//! [`StoreError::Format`], which is the point, since it would not keep `expiry_v1` in step.
//!
//! Invariant (after recovery): a piece is *visible* iff it has a `pieces` entry; every `pieces`
//! entry has a complete, fsynced file at its final path whose first `size` bytes have the
//! recorded BLAKE3 `hash`, followed by exactly their outboard if the piece has an `outboards`
//! entry (unless the disk itself damaged it, which `get` and `audit` detect); every final file
//! without a `pieces` entry has its id in `pending`; `expiry_v1` holds exactly
//! `(expires_at, id)` for every `pieces` entry whose `expires_at` is not 0.
//!
//! ## Write protocol
//!
//! 1. One durable redb transaction inserts the id into `pending`.
//! 2. The bytes are written to `tmp/<hex id>.tmp` and fsynced.
//! 3. The temp file is renamed to its final path and the final directory is fsynced.
//! 4. One durable redb transaction inserts the `pieces` and `outboards` entries (and the
//!    `manifests` entry for a manifest, the `expiry_v1` key for a piece that expires), adds the
//!    size to `used_bytes` and removes the id from `pending`.
//!
//! A crash before step 4 commits leaves the id in `pending` and no `pieces` entry, so the piece
//! is invisible and recovery removes its files. A crash after step 4 commits leaves the whole
//! piece visible. There is no state in between.
//!
//! ## Delete protocol
//!
//! [`PieceStore::delete`] (by the owner), [`PieceStore::remove`] (by anyone the node trusts)
//! and [`PieceStore::collect_expired`] (a batch of expired pieces) share one protocol:
//!
//! 1. One durable transaction removes the `pieces`/`outboards`/`manifests`/`expiry_v1`
//!    entries of every piece, subtracts their sizes from `used_bytes` and inserts their ids
//!    into `pending`.
//! 2. The files are unlinked and their directories fsynced.
//! 3. A lazily durable transaction removes the ids from `pending`.
//!
//! A crash before 1 commits changes nothing; after it, the pieces are invisible with their
//! files queued for removal by recovery. So a crash anywhere leaves each piece either fully
//! present or invisible, never half-deleted, and touches no piece outside the batch.
//! [`CrashPoint::REMOVE`] are the steps tests crash at.
//!
//! ## Leases and garbage collection
//!
//! Each piece has an `expires_at` (unix seconds, 0 = never), set by `put` and changed by
//! [`PieceStore::set_expiry`] (renew, or any new value) and [`PieceStore::shorten_expiry`]
//! (only ever earlier; 0 counts as the latest of all). A re-put of a stored piece keeps its
//! expiry. [`PieceStore::collect_expired`]`(now, limit)` reads up to `limit` keys of
//! `expiry_v1` in `(0, now]`, earliest first, and removes those pieces in one delete-protocol
//! transaction, checking each piece's `expires_at` again inside it: a lease renewed after the
//! scan keeps its piece. Its cost is O(limit) index reads, whatever the store's size; the
//! caller collects incrementally by calling it again while it returns `limit` ids.
//!
//! ## Recovery on open
//!
//! For every id in `pending` that has no `pieces` entry, its final file and temp file are
//! removed (and the directory fsynced); then `pending` is cleared in one transaction. Everything
//! in `tmp/` is removed. Recovery costs O(pending), never a walk of the piece files.
//!
//! ## Concurrency
//!
//! Puts and removals of the same id are serialized by an in-memory per-id lock; operations on
//! different ids run in parallel (redb serializes only the short index transactions). Garbage
//! collection skips ids whose lock is taken instead of waiting behind an upload; the next call
//! gets them. Expiry changes touch only the index, in one transaction, so they take no lock:
//! redb orders them against the removing transaction, which re-checks the expiry. Capacity
//! is reserved in memory before a piece is written, so concurrent uploads can never together
//! exceed the capacity.

mod error;
mod store;

pub use cairn_core::PieceId;
pub use error::StoreError;
pub use store::{
    CrashPoint, Expiry, FORMAT_VERSION, MAX_PIECE_BYTES, NewPiece, PieceKind, PieceMeta,
    PieceStore, PutOutcome, Usage,
};
