//! The store's error type.

use std::path::PathBuf;

use cairn_core::PieceId;

use crate::CrashPoint;

/// Everything that can go wrong in the piece store.
///
/// Messages are written for the operator of the node: each says what happened and, where there
/// is one, what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Storing the piece would exceed the node's configured capacity.
    #[error(
        "node storage is full: piece needs {needed} bytes but only {free} of {capacity} bytes are free"
    )]
    Full {
        /// Size of the piece that was refused.
        needed: u64,
        /// Bytes still free, counting space reserved by uploads in progress as used.
        free: u64,
        /// The configured capacity.
        capacity: u64,
    },

    /// No piece with this id is stored here.
    #[error("piece {0} is not stored on this node")]
    NotFound(PieceId),

    /// The piece file no longer matches the hash recorded when it was stored.
    #[error(
        "piece {id} is corrupted on disk: expected BLAKE3 {expected} but the file hashes to {actual}; \
         the piece must be repaired from other nodes (check the disk for errors)"
    )]
    Corrupted {
        /// The piece.
        id: PieceId,
        /// Hex BLAKE3 recorded in the index.
        expected: String,
        /// Hex BLAKE3 of the file as it is now, or for an audit, which bytes hash to a
        /// different value.
        actual: String,
    },

    /// The index lists the piece but its file is gone (deleted by hand, or lost by the disk).
    #[error(
        "piece {id} is listed in the index but its file {} is missing; \
         the piece must be repaired from other nodes",
        path.display()
    )]
    Missing {
        /// The piece.
        id: PieceId,
        /// Where the file should have been.
        path: PathBuf,
    },

    /// `put` was given an expected hash that the data does not match.
    #[error(
        "the data received for piece {id} does not match its expected BLAKE3 hash; \
         the upload was damaged in transit and must be sent again"
    )]
    HashMismatch {
        /// The piece.
        id: PieceId,
    },

    /// `put` of an id that is already stored with different content.
    #[error(
        "piece {id} is already stored here with different content; pieces are immutable, \
         so new content needs a new id"
    )]
    Conflict {
        /// The piece.
        id: PieceId,
    },

    /// `delete` by a peer that did not upload the piece.
    #[error("only the peer that uploaded piece {id} may delete it")]
    NotOwner {
        /// The piece.
        id: PieceId,
    },

    /// The piece exceeds [`crate::MAX_PIECE_BYTES`].
    #[error("piece is {size} bytes, more than the {max}-byte limit for a single piece; split it")]
    TooLarge {
        /// Size of the refused piece.
        size: u64,
        /// The limit.
        max: u64,
    },

    /// A filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        /// Which operation on which path.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The redb index failed.
    #[error("the piece index failed: {0}")]
    Db(String),

    /// The directory holds a store in an on-disk format this build does not understand.
    #[error(
        "the piece store uses on-disk format version {found}, but this build of cairn only \
         understands versions 1 to {supported}; run a matching cairn release or point the node \
         at another directory"
    )]
    Format {
        /// Version found on disk (0 if the index has no version entry).
        found: u32,
        /// Version this build writes and reads.
        supported: u32,
    },

    /// An audit proof could not be built from a piece that passed its checks (a bug, not
    /// damage: damage is [`StoreError::Corrupted`]).
    #[error("could not answer the audit: {0}")]
    Audit(#[from] cairn_core::audit::AuditError),

    /// A simulated crash from [`crate::PieceStore::set_crash_point`]; never happens in production.
    #[error("simulated crash at step {0:?} (fault injection for tests)")]
    Injected(CrashPoint),
}

impl StoreError {
    /// True if the piece was stored here but is now unreadable (corrupted or missing file), so
    /// the network should repair it from other nodes.
    pub fn is_piece_lost(&self) -> bool {
        matches!(self, Self::Corrupted { .. } | Self::Missing { .. })
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }

    pub(crate) fn db<E: std::fmt::Display>(context: &'static str) -> impl FnOnce(E) -> Self {
        move |e| Self::Db(format!("{context}: {e}"))
    }
}
