//! Cairn's local piece store: the blobs this node keeps for other peers.
//!
//! This crate owns everything a node has on disk for *other* peers: the piece files, the redb
//! index describing them, the capacity limit the operator configured, and the integrity check on
//! every read, and the answers to storage audits ([`PieceStore::audit`]). It knows nothing about
//! the network, erasure coding or encryption; a piece is an opaque blob of at most
//! [`MAX_PIECE_BYTES`] named by a [`PieceId`].
//!
//! The API is synchronous. [`PieceStore`] is `Send + Sync`; the async node shares it as
//! `Arc<PieceStore>` and calls it from `tokio::task::spawn_blocking`.
//!
//! # On-disk format (version 2)
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
//! | `outboards` | `[u8; 32]`  | `u64`                        | outboard length of each piece written by version 2; the file is `size` + this many bytes |
//! | `meta`      | `&str`      | `u64`                        | `format` = 2, `used_bytes` = sum of `size` over `pieces` |
//!
//! Keys are the raw 32 id bytes. [`PieceMeta`] is encoded with postcard in field order
//! (`id`, `kind`, `size`, `hash`, `owner`, `stored_at`, `expires_at`); `kind` is a varint
//! (0 = Data, 1 = Manifest). Any change to this encoding must bump the format version.
//! `open` refuses a `format` other than 1 or [`FORMAT_VERSION`] with [`StoreError::Format`].
//!
//! ## Version 1
//!
//! Version 1 is version 2 without outboards: no `outboards` table, piece files hold the bytes
//! alone. `open` upgrades it in place by creating the table and setting `format` = 2 in one
//! transaction; nothing else is rewritten. A piece without an `outboards` entry is read as a
//! version 1 piece: audits read it whole and compute its outboard on the fly. The upgrade is
//! one-way: a version 1 build refuses the upgraded directory with [`StoreError::Format`].
//!
//! Invariant (after recovery): a piece is *visible* iff it has a `pieces` entry; every `pieces`
//! entry has a complete, fsynced file at its final path whose first `size` bytes have the
//! recorded BLAKE3 `hash`, followed by exactly their outboard if the piece has an `outboards`
//! entry (unless the disk itself damaged it, which `get` and `audit` detect); every final file
//! without a `pieces` entry has its id in `pending`.
//!
//! ## Write protocol
//!
//! 1. One durable redb transaction inserts the id into `pending`.
//! 2. The bytes are written to `tmp/<hex id>.tmp` and fsynced.
//! 3. The temp file is renamed to its final path and the final directory is fsynced.
//! 4. One durable redb transaction inserts the `pieces` and `outboards` entries (and the
//!    `manifests` entry for a manifest), adds the size to `used_bytes` and removes the id from
//!    `pending`.
//!
//! A crash before step 4 commits leaves the id in `pending` and no `pieces` entry, so the piece
//! is invisible and recovery removes its files. A crash after step 4 commits leaves the whole
//! piece visible. There is no state in between.
//!
//! ## Delete protocol
//!
//! One durable transaction removes the `pieces`/`outboards`/`manifests` entries, subtracts the size from
//! `used_bytes` and inserts the id into `pending`; then the file is unlinked and its directory
//! fsynced; then a (lazily durable) transaction removes the id from `pending`. A crash anywhere
//! leaves the piece either fully present or invisible with its file queued for removal.
//!
//! ## Recovery on open
//!
//! For every id in `pending` that has no `pieces` entry, its final file and temp file are
//! removed (and the directory fsynced); then `pending` is cleared in one transaction. Everything
//! in `tmp/` is removed. Recovery costs O(pending), never a walk of the piece files.
//!
//! ## Concurrency
//!
//! Operations on the same id are serialized by an in-memory per-id lock; operations on
//! different ids run in parallel (redb serializes only the short index transactions). Capacity
//! is reserved in memory before a piece is written, so concurrent uploads can never together
//! exceed the capacity.

mod error;
mod store;

pub use cairn_core::PieceId;
pub use error::StoreError;
pub use store::{
    CrashPoint, FORMAT_VERSION, MAX_PIECE_BYTES, NewPiece, PieceKind, PieceMeta, PieceStore,
    PutOutcome, Usage,
};
