//! [`PieceStore`]: piece files plus the redb index. The format is described in the crate docs.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use cairn_core::PieceId;
use cairn_core::audit::{self, AuditError, Challenge};
use cairn_core::buf::{Buffers, Heap};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// The on-disk format version this build writes. It also opens version 1 and 2 stores,
/// upgrading them in place (see the crate docs).
pub const FORMAT_VERSION: u32 = 3;

/// The first format, still opened: piece files without outboards, no expiry index.
const FORMAT_V1: u64 = 1;

/// The second format, still opened: outboards, but no expiry index.
const FORMAT_V2: u64 = 2;

/// Largest piece accepted: 64 MiB of shard plus 64 KiB of framing and encryption overhead.
pub const MAX_PIECE_BYTES: u64 = 64 * 1024 * 1024 + 64 * 1024;

const PIECES: TableDefinition<'_, [u8; 32], &[u8]> = TableDefinition::new("pieces");
const MANIFESTS: TableDefinition<'_, [u8; 32], ()> = TableDefinition::new("manifests");
const PENDING: TableDefinition<'_, [u8; 32], ()> = TableDefinition::new("pending");
const OUTBOARDS: TableDefinition<'_, [u8; 32], u64> = TableDefinition::new("outboards");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
/// `(expires_at, id)` of every piece with an expiry, so garbage collection reads the expired
/// ones in expiry order without walking `pieces`.
const EXPIRY: TableDefinition<'_, (u64, [u8; 32]), ()> = TableDefinition::new("expiry_v1");

const KEY_FORMAT: &str = "format";
const KEY_USED: &str = "used_bytes";

/// What a piece is, as far as the store cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PieceKind {
    /// An erasure-coded shard of encrypted file data.
    Data,
    /// An encrypted manifest record; listed by [`PieceStore::manifests`].
    Manifest,
}

/// The index entry of a stored piece.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceMeta {
    /// The piece id.
    pub id: PieceId,
    /// Data shard or manifest.
    pub kind: PieceKind,
    /// Length of the piece in bytes.
    pub size: u64,
    /// BLAKE3 of the bytes, checked on every read.
    pub hash: [u8; 32],
    /// libp2p `PeerId` bytes of the uploader; only it may delete the piece.
    pub owner: Vec<u8>,
    /// When the piece was stored, unix seconds.
    pub stored_at: u64,
    /// When the piece may be dropped, unix seconds; 0 = never.
    pub expires_at: u64,
}

/// An index entry with the length of the outboard stored after the piece's bytes; `None` for
/// pieces written by format version 1, whose file is the bytes alone.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stored {
    meta: PieceMeta,
    outboard: Option<u64>,
}

impl Stored {
    /// What the piece file's length must be.
    fn file_len(&self) -> u64 {
        self.meta.size.saturating_add(self.outboard.unwrap_or(0))
    }
}

/// How full the store is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Number of stored pieces.
    pub pieces: u64,
    /// Sum of their sizes.
    pub used_bytes: u64,
    /// The configured capacity.
    pub capacity: u64,
}

/// Result of a successful [`PieceStore::put`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The piece was written.
    Stored,
    /// The same bytes were already stored under this id; nothing was written and the existing
    /// metadata (owner, expiry) was kept.
    AlreadyStored,
}

/// A change to a piece's expiry (unix seconds, 0 = never).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// Set it to this.
    Set(u64),
    /// Bring it forward to this if that is earlier (0 changes nothing).
    Shorten(u64),
}

/// A piece to store.
#[derive(Clone, Copy, Debug)]
pub struct NewPiece<'a> {
    /// The piece id.
    pub id: PieceId,
    /// Data shard or manifest.
    pub kind: PieceKind,
    /// The bytes.
    pub data: &'a [u8],
    /// If set, the BLAKE3 the sender claims for `data`; a mismatch refuses the piece.
    pub expected_hash: Option<[u8; 32]>,
    /// libp2p `PeerId` bytes of the uploader.
    pub owner: &'a [u8],
    /// Unix seconds after which the piece may be dropped; 0 = never.
    pub expires_at: u64,
}

/// A step of the write or delete protocol at which the store can be made to "crash" in tests:
/// [`PieceStore::put`] at the first five, [`PieceStore::delete`], [`PieceStore::remove`] and
/// [`PieceStore::collect_expired`] at the last three.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CrashPoint {
    /// After the id was logged in `pending`, before the temp file exists.
    BeforeTemp,
    /// After the bytes were written to the temp file, before it was fsynced.
    TempWritten,
    /// After the temp file was fsynced, before the rename.
    Synced,
    /// After the rename and the directory fsync, before the index transaction.
    Renamed,
    /// After the index transaction committed: the piece is stored.
    Indexed,
    /// Removal: after the transaction that took the pieces out of the index and logged them in
    /// `pending` committed, before any file was unlinked.
    Unindexed,
    /// Removal: after the first file was unlinked, before the others and before any directory
    /// fsync.
    FirstUnlinked,
    /// Removal: after every file was unlinked and its directory fsynced, before the ids were
    /// cleared from `pending`.
    Unlinked,
}

impl CrashPoint {
    /// The crash points of [`PieceStore::put`], in protocol order.
    pub const PUT: [CrashPoint; 5] = [
        CrashPoint::BeforeTemp,
        CrashPoint::TempWritten,
        CrashPoint::Synced,
        CrashPoint::Renamed,
        CrashPoint::Indexed,
    ];

    /// The crash points of a removal ([`PieceStore::delete`], [`PieceStore::remove`],
    /// [`PieceStore::collect_expired`]), in protocol order.
    pub const REMOVE: [CrashPoint; 3] = [
        CrashPoint::Unindexed,
        CrashPoint::FirstUnlinked,
        CrashPoint::Unlinked,
    ];

    /// Every crash point: [`CrashPoint::PUT`], then [`CrashPoint::REMOVE`].
    pub const ALL: [CrashPoint; 8] = [
        CrashPoint::BeforeTemp,
        CrashPoint::TempWritten,
        CrashPoint::Synced,
        CrashPoint::Renamed,
        CrashPoint::Indexed,
        CrashPoint::Unindexed,
        CrashPoint::FirstUnlinked,
        CrashPoint::Unlinked,
    ];
}

/// Why pieces are being removed; decides, inside the removing transaction, which go.
#[derive(Clone, Copy)]
enum Removal<'a> {
    /// [`PieceStore::delete`]: only on behalf of the piece's owner.
    ByOwner(&'a [u8]),
    /// [`PieceStore::remove`]: unconditionally.
    Unchecked,
    /// [`PieceStore::collect_expired`]: only if the piece is still expired at `now`, so a lease
    /// renewed after the scan keeps its piece.
    Expired { now: u64 },
}

impl Removal<'_> {
    /// For logs; the requester's bytes would only be noise.
    fn reason(self) -> &'static str {
        match self {
            Removal::ByOwner(_) => "deleted by its owner",
            Removal::Unchecked => "removed",
            Removal::Expired { .. } => "expired",
        }
    }

    fn allows(self, meta: &PieceMeta) -> Result<bool, StoreError> {
        match self {
            Removal::ByOwner(requester) if meta.owner != requester => {
                Err(StoreError::NotOwner { id: meta.id })
            }
            Removal::ByOwner(_) | Removal::Unchecked => Ok(true),
            Removal::Expired { now } => Ok(is_expired(meta.expires_at, now)),
        }
    }
}

/// Whether a piece expiring at `expires_at` (0 = never) may be collected at `now`.
fn is_expired(expires_at: u64, now: u64) -> bool {
    expires_at != 0 && expires_at <= now
}

/// The earlier of two expiries, where 0 means never (so it is the latest of all).
fn earlier(current: u64, proposed: u64) -> u64 {
    match (current, proposed) {
        (_, 0) => current,
        (0, p) => p,
        (c, p) => c.min(p),
    }
}

#[derive(Default)]
struct State {
    /// Committed bytes, mirrors `meta.used_bytes`.
    used: u64,
    /// Committed pieces, mirrors `pieces.len()`.
    pieces: u64,
    /// Bytes reserved by puts in progress.
    reserved: u64,
    /// Ids with a put or a removal in progress.
    busy: HashSet<PieceId>,
}

/// The local piece store. See the crate docs for the on-disk format and guarantees.
pub struct PieceStore {
    dir: PathBuf,
    pieces_dir: PathBuf,
    tmp_dir: PathBuf,
    db: Database,
    capacity: u64,
    state: Mutex<State>,
    idle: Condvar,
    crash_point: Mutex<Option<CrashPoint>>,
    /// Runs in `collect_expired` between its scan and its removing transaction, so unit tests
    /// can change an expiry at the worst moment.
    #[cfg(test)]
    after_scan: Mutex<Option<ScanHook>>,
}

/// See `PieceStore::after_scan`.
#[cfg(test)]
type ScanHook = Box<dyn FnMut(&PieceStore) + Send>;

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PieceStore>();
};

impl fmt::Debug for PieceStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PieceStore")
            .field("dir", &self.dir)
            .field("usage", &self.usage())
            .finish_non_exhaustive()
    }
}

/// Holds the per-id lock; released on drop.
struct IdLock<'a> {
    store: &'a PieceStore,
    id: PieceId,
}

impl Drop for IdLock<'_> {
    fn drop(&mut self) {
        self.store.state().busy.remove(&self.id);
        self.store.idle.notify_all();
    }
}

/// Space reserved for a put in progress; released on drop unless committed.
struct Reservation<'a> {
    store: &'a PieceStore,
    size: u64,
    active: bool,
}

impl Reservation<'_> {
    /// The piece is indexed: turn the reservation into used space.
    fn commit(mut self) {
        let mut st = self.store.state();
        st.reserved = st.reserved.saturating_sub(self.size);
        st.used = st.used.saturating_add(self.size);
        st.pieces += 1;
        self.active = false;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.active {
            let mut st = self.store.state();
            st.reserved = st.reserved.saturating_sub(self.size);
        }
    }
}

fn encode_meta(meta: &PieceMeta) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(meta).map_err(|e| {
        StoreError::Db(format!(
            "could not encode the index entry of piece {}: {e}",
            meta.id
        ))
    })
}

fn decode_meta(id: &PieceId, bytes: &[u8]) -> Result<PieceMeta, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| {
        StoreError::Db(format!(
            "the index entry of piece {id} is unreadable ({e}); the index may be damaged"
        ))
    })
}

/// Fills the expiry index from `pieces` while upgrading an older store: one walk of the index,
/// never of the files. Returns how many pieces have an expiry.
fn build_expiry_index(
    txn: &WriteTransaction,
    pieces: &redb::Table<'_, [u8; 32], &[u8]>,
) -> Result<u64, StoreError> {
    const CTX: &str = "could not build the expiry index";
    fn db(e: impl fmt::Display) -> StoreError {
        StoreError::Db(format!("{CTX}: {e}"))
    }
    // Older formats never write this table, so one found here is left from some other build;
    // start from nothing rather than trust its keys.
    txn.delete_table(EXPIRY).map_err(db)?;
    let mut expiry = txn.open_table(EXPIRY).map_err(db)?;
    let mut expiring = 0u64;
    for entry in pieces.iter().map_err(db)? {
        let (key, value) = entry.map_err(db)?;
        let id = PieceId(key.value());
        let meta = decode_meta(&id, value.value())?;
        if meta.expires_at != 0 {
            expiry.insert((meta.expires_at, id.0), ()).map_err(db)?;
            expiring += 1;
        }
    }
    Ok(expiring)
}

/// fsyncs a directory so that entries created, renamed or removed in it are durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io(format!(
            "could not fsync directory {}",
            dir.display()
        )))
}

/// Removes a file; Ok(false) if it did not exist.
fn remove_if_exists(path: &Path) -> Result<bool, StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::Io {
            context: format!("could not remove {}", path.display()),
            source: e,
        }),
    }
}

/// Creates `dir` if missing and makes its entry in `parent` durable.
fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(StoreError::Io {
                context: format!("could not create directory {}", dir.display()),
                source: e,
            });
        }
    }
    match dir.parent() {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

impl PieceStore {
    /// Opens (creating if needed) the store in `dir`, limited to `capacity_bytes` of piece data,
    /// and recovers from any interrupted write or delete.
    ///
    /// Fails with [`StoreError::Format`] if `dir` holds a store of another format version, and
    /// with [`StoreError::Db`] if another process has the index open.
    pub fn open(dir: &Path, capacity_bytes: u64) -> Result<Self, StoreError> {
        let pieces_dir = dir.join("pieces");
        let tmp_dir = dir.join("tmp");
        for d in [dir, &pieces_dir, &tmp_dir] {
            fs::create_dir_all(d).map_err(StoreError::io(format!(
                "could not create the piece store directory {}",
                d.display()
            )))?;
        }
        let db_path = dir.join("index.redb");
        let db = Database::create(&db_path).map_err(|e| {
            StoreError::Db(format!(
                "could not open the index {} ({e}); is another cairn node using this directory?",
                db_path.display()
            ))
        })?;
        let store = Self {
            dir: dir.to_path_buf(),
            pieces_dir,
            tmp_dir,
            db,
            capacity: capacity_bytes,
            state: Mutex::new(State::default()),
            idle: Condvar::new(),
            crash_point: Mutex::new(None),
            #[cfg(test)]
            after_scan: Mutex::new(None),
        };
        store.init_index()?;
        store.recover()?;
        store.load_usage()?;
        Ok(store)
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes `put` or a removal (`delete`, `remove`, `collect_expired`) fail with
    /// [`StoreError::Injected`] at `p`, leaving everything on disk as a crash at that step would.
    /// For tests only; `None` turns it off.
    #[doc(hidden)]
    pub fn set_crash_point(&self, p: Option<CrashPoint>) {
        *self
            .crash_point
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = p;
    }

    /// Stores a piece, durably, at unix time `now`.
    ///
    /// Same id with the same bytes → [`PutOutcome::AlreadyStored`]; with other bytes →
    /// [`StoreError::Conflict`]. Refused with [`StoreError::TooLarge`],
    /// [`StoreError::HashMismatch`] or [`StoreError::Full`] before anything is written.
    pub fn put(&self, piece: NewPiece<'_>, now: u64) -> Result<PutOutcome, StoreError> {
        let id = piece.id;
        let size = u64::try_from(piece.data.len()).unwrap_or(u64::MAX);
        if size > MAX_PIECE_BYTES {
            return Err(StoreError::TooLarge {
                size,
                max: MAX_PIECE_BYTES,
            });
        }
        // The outboard's root is the piece's BLAKE3, so this is the hash the store always
        // computed, plus the tree an audit needs: about 1.3x the CPU of the bare hash (BLAKE3
        // hashes each 16 KiB group on its own), 4-5 ms per 64 MiB, small next to write + fsync.
        let (hash, outboard) = audit::outboard(piece.data);
        if let Some(expected) = piece.expected_hash
            && expected != hash
        {
            return Err(StoreError::HashMismatch { id });
        }

        let _lock = self.lock_id(id);
        if let Some(existing) = self.entry(&id)? {
            if existing.meta.hash != hash || existing.meta.size != size {
                return Err(StoreError::Conflict { id });
            }
            // "Already stored" must mean it: a piece whose file went missing
            // or was cut short is not accepted again as if it were here
            // (a repairer would record a holder that cannot serve it).
            let path = self.piece_path(&id);
            let on_disk = std::fs::metadata(&path).map(|m| m.len()).ok();
            if on_disk != Some(existing.file_len()) {
                return Err(StoreError::Missing { id, path });
            }
            return Ok(PutOutcome::AlreadyStored);
        }
        let reservation = self.reserve(size)?;
        let meta = PieceMeta {
            id,
            kind: piece.kind,
            size,
            hash,
            owner: piece.owner.to_vec(),
            stored_at: now,
            expires_at: piece.expires_at,
        };
        let value = encode_meta(&meta)?;

        // (1) intent log
        self.write_txn("could not log a piece write", |txn| {
            txn.open_table(PENDING)?.insert(id.0, ())?;
            Ok(())
        })?;
        self.crash(CrashPoint::BeforeTemp)?;

        // (2) + (3) temp file, fsync, rename, fsync dir
        let tmp = self.tmp_path(&id);
        if let Err(e) = self.write_file(&id, &tmp, piece.data, &outboard) {
            if !matches!(e, StoreError::Injected(_)) {
                // Best effort; recovery on the next open removes it otherwise.
                let _ = fs::remove_file(&tmp);
            }
            return Err(e);
        }

        // (4) index
        self.write_txn("could not index a stored piece", |txn| {
            txn.open_table(PIECES)?.insert(id.0, value.as_slice())?;
            txn.open_table(OUTBOARDS)?
                .insert(id.0, u64::try_from(outboard.len()).unwrap_or(u64::MAX))?;
            if meta.kind == PieceKind::Manifest {
                txn.open_table(MANIFESTS)?.insert(id.0, ())?;
            }
            if meta.expires_at != 0 {
                txn.open_table(EXPIRY)?
                    .insert((meta.expires_at, id.0), ())?;
            }
            let mut m = txn.open_table(META)?;
            let used = m.get(KEY_USED)?.map(|g| g.value()).unwrap_or(0);
            m.insert(KEY_USED, used.saturating_add(size))?;
            txn.open_table(PENDING)?.remove(id.0)?;
            Ok(())
        })?;
        reservation.commit();
        self.crash(CrashPoint::Indexed)?;
        tracing::debug!(piece = %id, size, "stored piece");
        Ok(PutOutcome::Stored)
    }

    /// Reads a piece and checks it against the BLAKE3 recorded when it was stored.
    ///
    /// Never returns bytes that fail the check: [`StoreError::Corrupted`] instead, or
    /// [`StoreError::Missing`] if the file is gone.
    pub fn get(&self, id: &PieceId) -> Result<Vec<u8>, StoreError> {
        self.get_with(id, &Heap)
    }

    /// [`PieceStore::get`], reading into a buffer from `bufs`.
    pub fn get_with(&self, id: &PieceId, bufs: &impl Buffers) -> Result<Vec<u8>, StoreError> {
        // A concurrent delete + re-put of the same id can swap the file between reading the
        // index and the file; retry when the index entry changed under us.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let Some(stored) = self.entry(id)? else {
                return Err(StoreError::NotFound(*id));
            };
            match self.read_verified(&stored, bufs) {
                Err(e) if e.is_piece_lost() => {
                    let now = self.entry(id)?;
                    if now.as_ref() == Some(&stored) || attempts >= 3 {
                        tracing::warn!(piece = %id, "{e}");
                        return Err(e);
                    }
                }
                other => return other,
            }
        }
    }

    /// The index entry of a piece, if stored.
    pub fn meta(&self, id: &PieceId) -> Result<Option<PieceMeta>, StoreError> {
        const CTX: &str = "could not read the piece index";
        let txn = self.db.begin_read().map_err(StoreError::db(CTX))?;
        let table = txn.open_table(PIECES).map_err(StoreError::db(CTX))?;
        match table.get(id.0).map_err(StoreError::db(CTX))? {
            None => Ok(None),
            Some(guard) => decode_meta(id, guard.value()).map(Some),
        }
    }

    /// Answers an audit: the proof (see [`cairn_core::audit`]) of the chunk group `challenge`
    /// selects in the piece it names.
    ///
    /// Reads the group and the outboard stored after the piece (16 KiB plus 0.4 % of the
    /// piece), never the whole piece, and checks both against the piece's BLAKE3 while building
    /// the proof: a damaged group gives [`StoreError::Corrupted`], never a bad proof, and damage
    /// elsewhere in the piece does not stop audits of other groups. Pieces written by format
    /// version 1 have no stored outboard, and a damaged outboard is useless: then the whole
    /// piece is read, checked, and its outboard recomputed for this answer.
    pub fn audit(&self, challenge: &Challenge) -> Result<Vec<u8>, StoreError> {
        let id = challenge.piece;
        // As in `get_with`: a concurrent delete + re-put can swap the file under us.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let Some(stored) = self.entry(&id)? else {
                return Err(StoreError::NotFound(id));
            };
            match self.prove_stored(&stored, challenge) {
                Err(e) if e.is_piece_lost() => {
                    let now = self.entry(&id)?;
                    if now.as_ref() == Some(&stored) || attempts >= 3 {
                        tracing::warn!(piece = %id, "audit failed: {e}");
                        return Err(e);
                    }
                }
                other => return other,
            }
        }
    }

    /// The index entry of a piece and the length of its stored outboard, read together.
    fn entry(&self, id: &PieceId) -> Result<Option<Stored>, StoreError> {
        const CTX: &str = "could not read the piece index";
        let txn = self.db.begin_read().map_err(StoreError::db(CTX))?;
        let table = txn.open_table(PIECES).map_err(StoreError::db(CTX))?;
        let Some(meta) = table.get(id.0).map_err(StoreError::db(CTX))? else {
            return Ok(None);
        };
        let meta = decode_meta(id, meta.value())?;
        let outboard = txn
            .open_table(OUTBOARDS)
            .map_err(StoreError::db(CTX))?
            .get(id.0)
            .map_err(StoreError::db(CTX))?
            .map(|g| g.value());
        Ok(Some(Stored { meta, outboard }))
    }

    /// Whether the piece is stored (index lookup only; the file is not checked).
    pub fn has(&self, id: &PieceId) -> Result<bool, StoreError> {
        const CTX: &str = "could not read the piece index";
        let txn = self.db.begin_read().map_err(StoreError::db(CTX))?;
        let table = txn.open_table(PIECES).map_err(StoreError::db(CTX))?;
        Ok(table.get(id.0).map_err(StoreError::db(CTX))?.is_some())
    }

    /// Which of `ids` are stored, in order, read in one transaction.
    pub fn has_many(&self, ids: &[PieceId]) -> Result<Vec<bool>, StoreError> {
        const CTX: &str = "could not read the piece index";
        let txn = self.db.begin_read().map_err(StoreError::db(CTX))?;
        let table = txn.open_table(PIECES).map_err(StoreError::db(CTX))?;
        ids.iter()
            .map(|id| Ok(table.get(id.0).map_err(StoreError::db(CTX))?.is_some()))
            .collect()
    }

    /// Deletes a piece on behalf of `requester` (libp2p `PeerId` bytes), which must be the
    /// piece's owner ([`StoreError::NotOwner`] otherwise). `Ok(false)` if the piece was not
    /// stored.
    pub fn delete(&self, id: &PieceId, requester: &[u8]) -> Result<bool, StoreError> {
        let _lock = self.lock_id(*id);
        let gone = self.remove_locked(&[(*id, None)], Removal::ByOwner(requester))?;
        Ok(!gone.is_empty())
    }

    /// Deletes a piece whoever uploaded it: for a signed repair record saying its owner deleted
    /// the object, and for garbage collection. `Ok(false)` if the piece was not stored. Same
    /// crash-safe protocol as [`PieceStore::delete`].
    pub fn remove(&self, id: &PieceId) -> Result<bool, StoreError> {
        let _lock = self.lock_id(*id);
        let gone = self.remove_locked(&[(*id, None)], Removal::Unchecked)?;
        Ok(!gone.is_empty())
    }

    /// Sets when a piece may be dropped (unix seconds, 0 = never): renews its lease, or shortens
    /// it. `Ok(false)` if the piece is not stored.
    ///
    /// One durable index transaction; a concurrent [`PieceStore::collect_expired`] re-checks
    /// the expiry in its own transaction, so a renewal that commits first always saves the piece.
    pub fn set_expiry(&self, id: &PieceId, expires_at: u64) -> Result<bool, StoreError> {
        Ok(self.update_expiries(&[(*id, Expiry::Set(expires_at))])?[0])
    }

    /// Brings a piece's expiry forward to `expires_at` if that is earlier: the expiry becomes
    /// the earlier of the two, where 0 means never. So a piece that never expired now expires at
    /// `expires_at`, and `expires_at` = 0 changes nothing. `Ok(false)` if the piece is not
    /// stored.
    pub fn shorten_expiry(&self, id: &PieceId, expires_at: u64) -> Result<bool, StoreError> {
        Ok(self.update_expiries(&[(*id, Expiry::Shorten(expires_at))])?[0])
    }

    /// Changes the expiry of many pieces in one durable transaction (one
    /// fsync, not one per piece: a holder syncs a whole record's pieces at
    /// once). Returns, in order, whether each piece is stored.
    pub fn update_expiries(&self, changes: &[(PieceId, Expiry)]) -> Result<Vec<bool>, StoreError> {
        const CTX: &str = "could not change the expiry of a piece";
        fn db(e: impl fmt::Display) -> StoreError {
            StoreError::Db(format!("{CTX}: {e}"))
        }
        self.txn(CTX, |txn| {
            let mut pieces = txn.open_table(PIECES).map_err(db)?;
            let mut expiry = txn.open_table(EXPIRY).map_err(db)?;
            let mut found = Vec::with_capacity(changes.len());
            let mut wrote = false;
            for (id, change) in changes {
                let mut meta = match pieces.get(id.0).map_err(db)? {
                    None => {
                        found.push(false);
                        continue;
                    }
                    Some(guard) => decode_meta(id, guard.value())?,
                };
                found.push(true);
                let old = meta.expires_at;
                meta.expires_at = match *change {
                    Expiry::Set(at) => at,
                    Expiry::Shorten(at) => earlier(old, at),
                };
                if meta.expires_at == old {
                    continue;
                }
                pieces
                    .insert(id.0, encode_meta(&meta)?.as_slice())
                    .map_err(db)?;
                if old != 0 {
                    expiry.remove((old, id.0)).map_err(db)?;
                }
                if meta.expires_at != 0 {
                    expiry.insert((meta.expires_at, id.0), ()).map_err(db)?;
                }
                wrote = true;
            }
            // Nothing changed: skip the commit's fsync.
            Ok((found, wrote))
        })
    }

    /// Pieces whose expiry is in `(0, until]`, as `(expires_at, id)`, earliest first (ties in id
    /// order), at most `limit`. Reads only that range of the expiry index.
    pub fn expiring(&self, until: u64, limit: usize) -> Result<Vec<(u64, PieceId)>, StoreError> {
        Ok(self
            .expiry_range(None, until, limit)?
            .into_iter()
            .map(|(at, id)| (at, PieceId(id)))
            .collect())
    }

    /// Garbage collection: removes up to `limit` pieces whose expiry is in `(0, now]`, earliest
    /// expiry first, and returns their ids in that order.
    ///
    /// Reads only the expired range of the expiry index, never every piece or file. Each piece's
    /// expiry is checked again inside the transaction that removes it, so a piece renewed after
    /// the scan stays. Pieces busy with a put or another removal at that moment are skipped and
    /// left to the next call; so fewer than `limit` ids back means nothing else was collectable
    /// now. Removal follows the delete protocol (one transaction per batch of `limit`): a crash
    /// at any point leaves each expired piece either fully stored or invisible with its file
    /// queued for removal on the next open, and never touches a live piece.
    pub fn collect_expired(&self, now: u64, limit: usize) -> Result<Vec<PieceId>, StoreError> {
        let mut collected = Vec::new();
        let mut after = None;
        while collected.len() < limit {
            let want = limit - collected.len();
            let keys = self.expiry_range(after, now, want)?;
            let Some(&last) = keys.last() else { break };
            // The next pass starts past everything seen, so pieces skipped here (busy, renewed)
            // cannot make this loop spin.
            after = Some(last);
            #[cfg(test)]
            if let Some(hook) = self
                .after_scan
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_mut()
            {
                hook(self);
            }
            let mut locks = Vec::with_capacity(keys.len());
            let mut targets = Vec::with_capacity(keys.len());
            for &(at, id) in &keys {
                let id = PieceId(id);
                // Waiting for a busy id would stall collection behind an upload; the next call
                // gets it.
                if let Some(lock) = self.try_lock_id(id) {
                    locks.push(lock);
                    targets.push((id, Some(at)));
                }
            }
            let gone = self.remove_locked(&targets, Removal::Expired { now })?;
            drop(locks);
            collected.extend(gone.iter().map(|m| m.id));
            if keys.len() < want {
                break;
            }
        }
        if !collected.is_empty() {
            tracing::debug!(count = collected.len(), now, "collected expired pieces");
        }
        Ok(collected)
    }

    /// Up to `limit` keys of the expiry index after `after` with an expiry in `(0, until]`.
    fn expiry_range(
        &self,
        after: Option<(u64, [u8; 32])>,
        until: u64,
        limit: usize,
    ) -> Result<Vec<(u64, [u8; 32])>, StoreError> {
        const CTX: &str = "could not read the expiry index";
        fn db(e: impl fmt::Display) -> StoreError {
            StoreError::Db(format!("{CTX}: {e}"))
        }
        if limit == 0 || until == 0 {
            return Ok(Vec::new());
        }
        let start = match after {
            Some(key) => Bound::Excluded(key),
            // 0 means never and is not in the index; start past it all the same.
            None => Bound::Included((1, [0; 32])),
        };
        let txn = self.db.begin_read().map_err(db)?;
        let table = txn.open_table(EXPIRY).map_err(db)?;
        let mut keys = Vec::new();
        for entry in table
            .range((start, Bound::Included((until, [0xff; 32]))))
            .map_err(db)?
            .take(limit)
        {
            keys.push(entry.map_err(db)?.0.value());
        }
        Ok(keys)
    }

    /// The delete protocol for `targets`, whose per-id locks the caller holds. Each target may
    /// carry the expiry index key a scan found it under, which goes whatever happens to the
    /// piece: it is either the piece's own key (removed with the piece) or stale.
    ///
    /// 1. One durable transaction removes the index entries of every target `why` allows,
    ///    subtracts their sizes from `used_bytes` and logs their ids in `pending`.
    /// 2. Their files are unlinked and their directories fsynced.
    /// 3. A lazily durable transaction clears the ids from `pending`.
    ///
    /// A crash before 1 commits changes nothing; after it, the pieces are invisible and
    /// recovery finishes unlinking whatever files are left. Returns the removed entries.
    fn remove_locked(
        &self,
        targets: &[(PieceId, Option<u64>)],
        why: Removal<'_>,
    ) -> Result<Vec<PieceMeta>, StoreError> {
        const CTX: &str = "could not remove pieces from the index";
        fn db(e: impl fmt::Display) -> StoreError {
            StoreError::Db(format!("{CTX}: {e}"))
        }
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        // (1) index entries out, intents in, in one transaction
        let gone = self.txn(CTX, |txn| {
            let mut pieces = txn.open_table(PIECES).map_err(db)?;
            let mut outboards = txn.open_table(OUTBOARDS).map_err(db)?;
            let mut manifests = txn.open_table(MANIFESTS).map_err(db)?;
            let mut expiry = txn.open_table(EXPIRY).map_err(db)?;
            let mut pending = txn.open_table(PENDING).map_err(db)?;
            let mut gone = Vec::new();
            let mut changed = false;
            for &(id, seen) in targets {
                let meta = match pieces.get(id.0).map_err(db)? {
                    None => None,
                    Some(guard) => Some(decode_meta(&id, guard.value())?),
                };
                if let Some(seen) = seen
                    && expiry.remove((seen, id.0)).map_err(db)?.is_some()
                    && meta.as_ref().is_none_or(|m| m.expires_at != seen)
                {
                    // Only a bug or a damaged index gets here: every change of an expiry moves
                    // its key in the same transaction.
                    tracing::warn!(piece = %id, "removed a stale expiry index entry");
                    changed = true;
                }
                let Some(meta) = meta else { continue };
                if !why.allows(&meta)? {
                    continue;
                }
                pieces.remove(id.0).map_err(db)?;
                outboards.remove(id.0).map_err(db)?;
                manifests.remove(id.0).map_err(db)?;
                if meta.expires_at != 0 {
                    expiry.remove((meta.expires_at, id.0)).map_err(db)?;
                }
                pending.insert(id.0, ()).map_err(db)?;
                gone.push(meta);
                changed = true;
            }
            if !gone.is_empty() {
                let freed = gone.iter().fold(0u64, |s, m| s.saturating_add(m.size));
                let mut m = txn.open_table(META).map_err(db)?;
                let used = m.get(KEY_USED).map_err(db)?.map(|g| g.value()).unwrap_or(0);
                m.insert(KEY_USED, used.saturating_sub(freed)).map_err(db)?;
            }
            Ok((gone, changed))
        })?;
        if gone.is_empty() {
            return Ok(gone);
        }
        {
            let freed = gone.iter().fold(0u64, |s, m| s.saturating_add(m.size));
            let mut st = self.state();
            st.used = st.used.saturating_sub(freed);
            st.pieces = st
                .pieces
                .saturating_sub(u64::try_from(gone.len()).unwrap_or(u64::MAX));
        }
        self.crash(CrashPoint::Unindexed)?;

        // (2) files. The pieces are gone from the index; failing to remove a file only leaks
        // disk space until the next open, which retries (its id stays in `pending`).
        let mut unlinked = Vec::with_capacity(gone.len());
        let mut dirs = BTreeSet::new();
        for (i, meta) in gone.iter().enumerate() {
            let path = self.piece_path(&meta.id);
            match remove_if_exists(&path) {
                Ok(_) => {
                    if let Some(parent) = path.parent() {
                        dirs.insert(parent.to_path_buf());
                    }
                    unlinked.push(meta.id);
                }
                Err(e) => {
                    tracing::warn!(piece = %meta.id, "piece removed from the index but not from disk: {e}")
                }
            }
            if i == 0 {
                self.crash(CrashPoint::FirstUnlinked)?;
            }
        }
        for dir in &dirs {
            if let Err(e) = sync_dir(dir) {
                // Until the directory is durable an unlink may be undone by a crash; keep the
                // intents of its pieces so recovery repeats it.
                tracing::warn!("piece files removed but not made durable: {e}");
                unlinked.retain(|id| self.piece_path(id).parent() != Some(dir.as_path()));
            }
        }
        self.crash(CrashPoint::Unlinked)?;

        // (3) intents
        if !unlinked.is_empty() {
            let cleared = self
                .db
                .begin_write()
                .map_err(redb::Error::from)
                .and_then(|mut txn| {
                    // Losing this commit in a crash is harmless: recovery redoes it.
                    txn.set_durability(Durability::None)?;
                    {
                        let mut pending = txn.open_table(PENDING)?;
                        for id in &unlinked {
                            pending.remove(id.0)?;
                        }
                    }
                    txn.commit()?;
                    Ok(())
                });
            if let Err(e) = cleared {
                tracing::warn!("could not clear removed pieces from the intent log: {e}");
            }
        }
        for meta in &gone {
            tracing::debug!(piece = %meta.id, size = meta.size, reason = why.reason(), "removed piece");
        }
        Ok(gone)
    }

    /// One durable transaction changing a piece's expiry to `change(current)` and moving its
    /// expiry index key with it. `Ok(false)` if the piece is not stored.
    /// Pieces stored, bytes used, and the capacity.
    pub fn usage(&self) -> Usage {
        let st = self.state();
        Usage {
            pieces: st.pieces,
            used_bytes: st.used,
            capacity: self.capacity,
        }
    }

    /// Ids of all stored pieces of kind [`PieceKind::Manifest`], in id order.
    pub fn manifests(&self) -> Result<Vec<PieceId>, StoreError> {
        const CTX: &str = "could not list manifests";
        let txn = self.db.begin_read().map_err(StoreError::db(CTX))?;
        let table = txn.open_table(MANIFESTS).map_err(StoreError::db(CTX))?;
        let mut ids = Vec::new();
        for entry in table.iter().map_err(StoreError::db(CTX))? {
            let (key, _) = entry.map_err(StoreError::db(CTX))?;
            ids.push(PieceId(key.value()));
        }
        Ok(ids)
    }

    /// Where the file of piece `id` lives: `pieces/ab/cd/<hex id>`. It holds the piece's bytes,
    /// then (from format version 2) its outboard.
    pub fn piece_path(&self, id: &PieceId) -> PathBuf {
        let hex = id.to_hex();
        self.pieces_dir.join(&hex[0..2]).join(&hex[2..4]).join(&hex)
    }

    // ---- internals ----

    fn tmp_path(&self, id: &PieceId) -> PathBuf {
        self.tmp_dir.join(format!("{}.tmp", id.to_hex()))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is plain counters; a panic elsewhere cannot leave it half-updated in a way
        // that matters more than refusing to serve.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn crash(&self, at: CrashPoint) -> Result<(), StoreError> {
        if *self
            .crash_point
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            == Some(at)
        {
            Err(StoreError::Injected(at))
        } else {
            Ok(())
        }
    }

    /// Waits until no other put or removal of `id` is in progress, then claims it.
    fn lock_id(&self, id: PieceId) -> IdLock<'_> {
        let mut st = self.state();
        while st.busy.contains(&id) {
            st = self.idle.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        st.busy.insert(id);
        IdLock { store: self, id }
    }

    /// Claims `id` if no other put or removal of it is in progress.
    fn try_lock_id(&self, id: PieceId) -> Option<IdLock<'_>> {
        // Not `then_some`: building an `IdLock` for an id someone else holds would release
        // their claim when it is dropped.
        if self.state().busy.insert(id) {
            Some(IdLock { store: self, id })
        } else {
            None
        }
    }

    fn reserve(&self, size: u64) -> Result<Reservation<'_>, StoreError> {
        let mut st = self.state();
        let taken = st.used.saturating_add(st.reserved);
        if taken.saturating_add(size) > self.capacity {
            return Err(StoreError::Full {
                needed: size,
                free: self.capacity.saturating_sub(taken),
                capacity: self.capacity,
            });
        }
        st.reserved += size;
        Ok(Reservation {
            store: self,
            size,
            active: true,
        })
    }

    /// Steps (2) and (3) of the write protocol: the piece's bytes, then its outboard.
    fn write_file(
        &self,
        id: &PieceId,
        tmp: &Path,
        data: &[u8],
        outboard: &[u8],
    ) -> Result<(), StoreError> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp)
            .map_err(StoreError::io(format!(
                "could not create temp file {}",
                tmp.display()
            )))?;
        file.write_all(data)
            .and_then(|()| file.write_all(outboard))
            .map_err(StoreError::io(format!(
                "could not write temp file {}",
                tmp.display()
            )))?;
        self.crash(CrashPoint::TempWritten)?;
        file.sync_all().map_err(StoreError::io(format!(
            "could not fsync temp file {}",
            tmp.display()
        )))?;
        // The piece is now clean on disk. Drop it from the page cache: a
        // node stores far more than it reads back soon, and keeping cold
        // pieces cached would evict its owner's working set. Advisory only.
        let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
        drop(file);
        self.crash(CrashPoint::Synced)?;

        let dest = self.piece_path(id);
        let leaf = dest.parent().ok_or_else(|| StoreError::Io {
            context: format!("piece path {} has no parent directory", dest.display()),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
        if let Some(fan) = leaf.parent() {
            ensure_dir(fan)?;
        }
        ensure_dir(leaf)?;
        fs::rename(tmp, &dest).map_err(StoreError::io(format!(
            "could not move {} to {}",
            tmp.display(),
            dest.display()
        )))?;
        sync_dir(leaf)?;
        self.crash(CrashPoint::Renamed)?;
        Ok(())
    }

    fn verify_failed(meta: &PieceMeta, actual: blake3::Hash) -> StoreError {
        StoreError::Corrupted {
            id: meta.id,
            expected: cairn_core::hex(&meta.hash),
            actual: actual.to_hex().to_string(),
        }
    }

    /// Opens a piece file, telling a missing file apart from other failures.
    fn open_piece(&self, meta: &PieceMeta) -> Result<(File, PathBuf), StoreError> {
        let path = self.piece_path(&meta.id);
        match File::open(&path) {
            Ok(f) => Ok((f, path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::Missing { id: meta.id, path })
            }
            Err(e) => Err(StoreError::Io {
                context: format!("could not open piece file {}", path.display()),
                source: e,
            }),
        }
    }

    fn read_verified(&self, stored: &Stored, bufs: &impl Buffers) -> Result<Vec<u8>, StoreError> {
        let meta = &stored.meta;
        let (mut file, path) = self.open_piece(meta)?;
        let read_err = || StoreError::io(format!("could not read piece file {}", path.display()));
        let len = file.metadata().map_err(read_err())?.len();
        if len != stored.file_len() {
            let mut hasher = blake3::Hasher::new();
            hasher
                .update_reader((&mut file).take(meta.size))
                .map_err(read_err())?;
            return Err(Self::verify_failed(meta, hasher.finalize()));
        }
        let mut buf = bufs.take(usize::try_from(meta.size).unwrap_or(0));
        // The outboard after the piece's bytes is for audits, not readers.
        (&mut file)
            .take(meta.size)
            .read_to_end(&mut buf)
            .map_err(read_err())?;
        let actual = blake3::hash(&buf);
        if actual.as_bytes() != &meta.hash || u64::try_from(buf.len()).ok() != Some(meta.size) {
            bufs.give(buf);
            return Err(Self::verify_failed(meta, actual));
        }
        Ok(buf)
    }

    /// One attempt of [`PieceStore::audit`].
    fn prove_stored(&self, stored: &Stored, challenge: &Challenge) -> Result<Vec<u8>, StoreError> {
        let meta = &stored.meta;
        let (mut file, path) = self.open_piece(meta)?;
        let read_err = || StoreError::io(format!("could not read piece file {}", path.display()));
        let len = file.metadata().map_err(read_err())?.len();
        let range = challenge.byte_range(meta.size);
        let group_len = usize::try_from(range.end - range.start).unwrap_or(0);
        if let Some(ob_len) = stored.outboard
            && len == stored.file_len()
        {
            let mut group = vec![0u8; group_len];
            let mut outboard = vec![0u8; usize::try_from(ob_len).unwrap_or(0)];
            file.seek(SeekFrom::Start(range.start))
                .and_then(|_| file.read_exact(&mut group))
                .and_then(|()| file.seek(SeekFrom::Start(meta.size)))
                .and_then(|_| file.read_exact(&mut outboard))
                .map_err(read_err())?;
            match audit::prove(&meta.hash, meta.size, challenge, &group, &outboard) {
                Ok(proof) => return Ok(proof),
                Err(AuditError::GroupMismatch { range, .. }) => {
                    return Err(StoreError::Corrupted {
                        id: meta.id,
                        expected: cairn_core::hex(&meta.hash),
                        actual: format!(
                            "a different value over bytes {}..{}",
                            range.start, range.end
                        ),
                    });
                }
                // The outboard is damaged; the piece may not be. Fall through to the slow path,
                // which decides from the piece itself.
                Err(e) => {
                    tracing::warn!(piece = %meta.id, "recomputing the outboard for an audit: {e}")
                }
            }
        } else if stored.outboard.is_some() {
            tracing::warn!(
                piece = %meta.id,
                "piece file is {len} bytes, expected {}; checking the piece whole for an audit",
                stored.file_len()
            );
        }
        // A version 1 piece, or a damaged outboard or file length: read and check the whole
        // piece, then prove from an outboard computed from it.
        if len < meta.size {
            let mut hasher = blake3::Hasher::new();
            file.rewind().map_err(read_err())?;
            hasher.update_reader(&mut file).map_err(read_err())?;
            return Err(Self::verify_failed(meta, hasher.finalize()));
        }
        let mut body = Vec::with_capacity(usize::try_from(meta.size).unwrap_or(0));
        file.rewind()
            .and_then(|()| (&mut file).take(meta.size).read_to_end(&mut body))
            .map_err(read_err())?;
        let (root, outboard) = audit::outboard(&body);
        if root != meta.hash {
            return Err(Self::verify_failed(meta, blake3::Hash::from_bytes(root)));
        }
        let group = body
            .get(usize::try_from(range.start).unwrap_or(usize::MAX)..)
            .and_then(|rest| rest.get(..group_len))
            .unwrap_or_default();
        Ok(audit::prove(
            &meta.hash, meta.size, challenge, group, &outboard,
        )?)
    }

    /// Runs `f` in a durable write transaction and commits it.
    fn write_txn(
        &self,
        context: &'static str,
        f: impl FnOnce(&WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), StoreError> {
        self.write_txn_with(context, |txn| {
            f(txn).map_err(StoreError::db(context)).map(Some)
        })
        .map(|_: Option<()>| ())
    }

    /// Runs `f` in a durable write transaction; commits if it returns `Ok(Some(_))`, aborts if it
    /// returns `Ok(None)` or an error.
    fn write_txn_with<T>(
        &self,
        context: &'static str,
        f: impl FnOnce(&WriteTransaction) -> Result<Option<T>, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        self.txn(context, |txn| {
            f(txn).map(|v| {
                let commit = v.is_some();
                (v, commit)
            })
        })
    }

    /// Runs `f` in a durable write transaction; commits if it returns `Ok((_, true))`, aborts if
    /// it returns `Ok((_, false))` (nothing to write: no fsync) or an error.
    fn txn<T>(
        &self,
        context: &'static str,
        f: impl FnOnce(&WriteTransaction) -> Result<(T, bool), StoreError>,
    ) -> Result<T, StoreError> {
        let txn = self.db.begin_write().map_err(StoreError::db(context))?;
        match f(&txn) {
            Ok((v, true)) => {
                txn.commit().map_err(StoreError::db(context))?;
                Ok(v)
            }
            Ok((v, false)) => {
                txn.abort().map_err(StoreError::db(context))?;
                Ok(v)
            }
            Err(e) => {
                if let Err(abort) = txn.abort() {
                    tracing::warn!("could not abort an index transaction: {abort}");
                }
                Err(e)
            }
        }
    }

    /// Creates the tables on first open, checks the format version otherwise.
    fn init_index(&self) -> Result<(), StoreError> {
        const CTX: &str = "could not initialise the piece index";
        fn db(e: impl fmt::Display) -> StoreError {
            StoreError::Db(format!("{CTX}: {e}"))
        }
        self.txn(CTX, |txn| {
            let mut meta = txn.open_table(META).map_err(db)?;
            let pieces = txn.open_table(PIECES).map_err(db)?;
            txn.open_table(MANIFESTS).map_err(db)?;
            txn.open_table(PENDING).map_err(db)?;
            txn.open_table(OUTBOARDS).map_err(db)?;
            let format = meta.get(KEY_FORMAT).map_err(db)?.map(|g| g.value());
            match format {
                Some(v) if v == u64::from(FORMAT_VERSION) => {
                    txn.open_table(EXPIRY).map_err(db)?;
                }
                // Version 2 is version 3 without the expiry index, version 1 is version 2
                // without outboards (its pieces have no `outboards` entry and are audited the
                // slow way). Upgrading builds the expiry index from `pieces` (never from the
                // files) and sets the version, in this one transaction: a crash in between
                // leaves the old version, and the next open upgrades again.
                Some(old @ (FORMAT_V1 | FORMAT_V2)) => {
                    let expiring = build_expiry_index(txn, &pieces)?;
                    meta.insert(KEY_FORMAT, u64::from(FORMAT_VERSION))
                        .map_err(db)?;
                    tracing::info!(
                        expiring,
                        "upgraded the piece store from format {old} to {FORMAT_VERSION}"
                    );
                    if old == FORMAT_V1 {
                        tracing::info!(
                            "pieces stored by format 1 have no outboard and are audited by \
                             reading them whole"
                        );
                    }
                }
                Some(v) => {
                    return Err(StoreError::Format {
                        found: u32::try_from(v).unwrap_or(u32::MAX),
                        supported: FORMAT_VERSION,
                    });
                }
                None if !pieces.is_empty().map_err(db)? => {
                    return Err(StoreError::Format {
                        found: 0,
                        supported: FORMAT_VERSION,
                    });
                }
                None => {
                    txn.open_table(EXPIRY).map_err(db)?;
                    meta.insert(KEY_FORMAT, u64::from(FORMAT_VERSION))
                        .map_err(db)?;
                    meta.insert(KEY_USED, 0).map_err(db)?;
                }
            }
            Ok(((), true))
        })
    }

    /// Undoes interrupted puts and finishes interrupted deletes; empties `tmp/`.
    fn recover(&self) -> Result<(), StoreError> {
        const CTX: &str = "could not read the intent log";
        let mut pending = Vec::new();
        let mut orphans = Vec::new();
        {
            let txn = self.db.begin_read().map_err(StoreError::db(CTX))?;
            let log = txn.open_table(PENDING).map_err(StoreError::db(CTX))?;
            let pieces = txn.open_table(PIECES).map_err(StoreError::db(CTX))?;
            for entry in log.iter().map_err(StoreError::db(CTX))? {
                let id = PieceId(entry.map_err(StoreError::db(CTX))?.0.value());
                pending.push(id);
                if pieces.get(id.0).map_err(StoreError::db(CTX))?.is_none() {
                    orphans.push(id);
                }
            }
        }
        for id in &orphans {
            let path = self.piece_path(id);
            if remove_if_exists(&path)? {
                if let Some(parent) = path.parent() {
                    sync_dir(parent)?;
                }
                tracing::info!(piece = %id, "removed the file of an interrupted write or delete");
            }
            remove_if_exists(&self.tmp_path(id))?;
        }
        let entries = fs::read_dir(&self.tmp_dir).map_err(StoreError::io(format!(
            "could not list temp directory {}",
            self.tmp_dir.display()
        )))?;
        for entry in entries {
            let entry = entry.map_err(StoreError::io(format!(
                "could not list temp directory {}",
                self.tmp_dir.display()
            )))?;
            let path = entry.path();
            let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(StoreError::io(format!(
                "could not remove leftover temp file {}",
                path.display()
            )))?;
        }
        if !pending.is_empty() {
            self.write_txn("could not clear the intent log", |txn| {
                let mut log = txn.open_table(PENDING)?;
                for id in &pending {
                    log.remove(id.0)?;
                }
                Ok(())
            })?;
            tracing::info!(count = pending.len(), "recovered interrupted piece writes");
        }
        Ok(())
    }

    fn load_usage(&self) -> Result<(), StoreError> {
        const CTX: &str = "could not read store usage";
        let txn = self.db.begin_read().map_err(StoreError::db(CTX))?;
        let meta = txn.open_table(META).map_err(StoreError::db(CTX))?;
        let used = meta
            .get(KEY_USED)
            .map_err(StoreError::db(CTX))?
            .map(|g| g.value())
            .unwrap_or(0);
        let pieces = txn
            .open_table(PIECES)
            .map_err(StoreError::db(CTX))?
            .len()
            .map_err(StoreError::db(CTX))?;
        let mut st = self.state();
        st.used = used;
        st.pieces = pieces;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The races `collect_expired` must survive, made deterministic by running the competing
    //! operation between its scan and its removing transaction.

    #![allow(clippy::unwrap_used)]

    use super::*;

    fn id(n: u8) -> PieceId {
        PieceId([n; 32])
    }

    fn store_with(dir: &Path, expiries: &[(u8, u64)]) -> PieceStore {
        let store = PieceStore::open(dir, 1 << 20).unwrap();
        for &(n, expires_at) in expiries {
            let data = vec![n; 50];
            let piece = NewPiece {
                id: id(n),
                kind: PieceKind::Data,
                data: &data,
                expected_hash: None,
                owner: b"owner",
                expires_at,
            };
            store.put(piece, 1).unwrap();
        }
        store
    }

    fn after_scan(store: &PieceStore, hook: impl FnMut(&PieceStore) + Send + 'static) {
        *store.after_scan.lock().unwrap() = Some(Box::new(hook));
    }

    #[test]
    fn a_lease_renewed_after_the_scan_keeps_its_piece() {
        let tmp = tempfile::tempdir().unwrap();
        let store = store_with(tmp.path(), &[(1, 10), (2, 20), (3, 30)]);
        after_scan(&store, |s| {
            assert!(s.set_expiry(&id(2), 1000).unwrap());
        });
        // The scan saw all three as expired; the transaction sees 2 renewed.
        assert_eq!(store.collect_expired(50, 10).unwrap(), vec![id(1), id(3)]);
        assert_eq!(store.get(&id(2)).unwrap(), vec![2; 50]);
        assert_eq!(store.expiring(u64::MAX, 10).unwrap(), vec![(1000, id(2))]);
        assert_eq!(store.usage().pieces, 1);
    }

    #[test]
    fn a_piece_removed_after_the_scan_is_not_reported_collected() {
        let tmp = tempfile::tempdir().unwrap();
        let store = store_with(tmp.path(), &[(1, 10), (2, 20), (3, 30)]);
        after_scan(&store, |s| {
            s.remove(&id(1)).unwrap();
        });
        assert_eq!(store.collect_expired(50, 10).unwrap(), vec![id(2), id(3)]);
        assert_eq!(store.usage().pieces, 0);
        assert_eq!(store.usage().used_bytes, 0);
    }

    #[test]
    fn busy_pieces_are_skipped_and_the_scan_goes_on() {
        let tmp = tempfile::tempdir().unwrap();
        let store = store_with(tmp.path(), &[(1, 10), (2, 20), (3, 30), (4, 40)]);
        {
            // As if a put or delete of piece 1 were in progress.
            let _busy = store.lock_id(id(1));
            assert_eq!(store.collect_expired(50, 2).unwrap(), vec![id(2), id(3)]);
            assert!(store.has(&id(1)).unwrap());
            // Skipping did not release the other holder's claim.
            assert_eq!(store.state().busy, HashSet::from([id(1)]));
        }
        assert_eq!(store.collect_expired(50, 2).unwrap(), vec![id(1), id(4)]);
        assert!(store.state().busy.is_empty());
    }

    #[test]
    fn earlier_treats_zero_as_never() {
        assert_eq!(earlier(0, 5), 5);
        assert_eq!(earlier(5, 0), 5);
        assert_eq!(earlier(0, 0), 0);
        assert_eq!(earlier(5, 7), 5);
        assert_eq!(earlier(7, 5), 5);
    }
}
