//! Leases and garbage collection: `remove`, `set_expiry`, `shorten_expiry`, the expiry index,
//! `collect_expired` (order, limit, renewals, crashes at every step) and the upgrade of older
//! stores to the expiry index.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};

use cairn_store::{
    CrashPoint, Expiry, NewPiece, PieceId, PieceKind, PieceStore, StoreError, Usage,
};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

const OWNER: &[u8] = b"peer-owner";
const NOW: u64 = 1_700_000_000;
const CAPACITY: u64 = 1 << 24;

const PIECES: TableDefinition<'_, [u8; 32], &[u8]> = TableDefinition::new("pieces");
const MANIFESTS: TableDefinition<'_, [u8; 32], ()> = TableDefinition::new("manifests");
const PENDING: TableDefinition<'_, [u8; 32], ()> = TableDefinition::new("pending");
const OUTBOARDS: TableDefinition<'_, [u8; 32], u64> = TableDefinition::new("outboards");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const EXPIRY: TableDefinition<'_, (u64, [u8; 32]), ()> = TableDefinition::new("expiry_v1");

fn id(n: u8) -> PieceId {
    PieceId([n; 32])
}

fn data(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed))
        .collect()
}

fn open(dir: &Path) -> PieceStore {
    PieceStore::open(dir, CAPACITY).expect("open store")
}

/// Stores piece `n` (`100 + n` bytes) expiring at `expires_at`; returns its bytes.
fn put(store: &PieceStore, n: u8, expires_at: u64) -> Vec<u8> {
    put_kind(store, n, expires_at, PieceKind::Data)
}

fn put_kind(store: &PieceStore, n: u8, expires_at: u64, kind: PieceKind) -> Vec<u8> {
    let bytes = data(n, 100 + usize::from(n));
    store
        .put(
            NewPiece {
                id: id(n),
                kind,
                data: &bytes,
                expected_hash: None,
                owner: OWNER,
                expires_at,
            },
            NOW,
        )
        .unwrap();
    bytes
}

fn expiry_of(store: &PieceStore, n: u8) -> Option<u64> {
    store.meta(&id(n)).unwrap().map(|m| m.expires_at)
}

/// The whole expiry index, as the store reports it.
fn expiring(store: &PieceStore) -> Vec<(u64, PieceId)> {
    store.expiring(u64::MAX, usize::MAX).unwrap()
}

/// All regular files under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The index of a closed store, read table by table.
#[derive(Debug, Default)]
struct RawIndex {
    /// id → (size, expires_at, is manifest)
    pieces: BTreeMap<[u8; 32], (u64, u64, bool)>,
    manifests: BTreeSet<[u8; 32]>,
    pending: BTreeSet<[u8; 32]>,
    outboards: BTreeSet<[u8; 32]>,
    expiry: BTreeSet<(u64, [u8; 32])>,
    format: u64,
    used: u64,
}

fn raw_index(dir: &Path) -> RawIndex {
    let db = redb::Database::create(dir.join("index.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    let mut raw = RawIndex::default();
    for entry in txn.open_table(PIECES).unwrap().iter().unwrap() {
        let (k, v) = entry.unwrap();
        let meta: cairn_store::PieceMeta = postcard::from_bytes(v.value()).unwrap();
        assert_eq!(meta.id.0, k.value());
        raw.pieces.insert(
            k.value(),
            (meta.size, meta.expires_at, meta.kind == PieceKind::Manifest),
        );
    }
    for entry in txn.open_table(MANIFESTS).unwrap().iter().unwrap() {
        raw.manifests.insert(entry.unwrap().0.value());
    }
    for entry in txn.open_table(PENDING).unwrap().iter().unwrap() {
        raw.pending.insert(entry.unwrap().0.value());
    }
    for entry in txn.open_table(OUTBOARDS).unwrap().iter().unwrap() {
        raw.outboards.insert(entry.unwrap().0.value());
    }
    for entry in txn.open_table(EXPIRY).unwrap().iter().unwrap() {
        raw.expiry.insert(entry.unwrap().0.value());
    }
    let meta = txn.open_table(META).unwrap();
    raw.format = meta.get("format").unwrap().unwrap().value();
    raw.used = meta.get("used_bytes").unwrap().unwrap().value();
    raw
}

/// Checks every table of a closed, recovered store against `pieces` and against the piece
/// files on disk: nothing leaked, nothing missing. Returns the stored ids.
fn assert_consistent(dir: &Path) -> BTreeSet<PieceId> {
    let raw = raw_index(dir);
    assert_eq!(raw.format, 3);
    assert!(raw.pending.is_empty(), "intents left: {:?}", raw.pending);
    let ids: BTreeSet<[u8; 32]> = raw.pieces.keys().copied().collect();
    assert_eq!(raw.outboards, ids, "outboards out of step with pieces");
    let manifests: BTreeSet<[u8; 32]> = raw
        .pieces
        .iter()
        .filter(|(_, (_, _, m))| *m)
        .map(|(k, _)| *k)
        .collect();
    assert_eq!(
        raw.manifests, manifests,
        "manifests out of step with pieces"
    );
    let expiry: BTreeSet<(u64, [u8; 32])> = raw
        .pieces
        .iter()
        .filter(|(_, (_, e, _))| *e != 0)
        .map(|(k, (_, e, _))| (*e, *k))
        .collect();
    assert_eq!(raw.expiry, expiry, "expiry index out of step with pieces");
    let used: u64 = raw.pieces.values().map(|(s, _, _)| s).sum();
    assert_eq!(raw.used, used);
    let files: BTreeSet<PieceId> = files_under(&dir.join("pieces"))
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            let mut b = [0u8; 32];
            for (i, byte) in b.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&name[2 * i..2 * i + 2], 16).unwrap();
            }
            PieceId(b)
        })
        .collect();
    let ids: BTreeSet<PieceId> = ids.into_iter().map(PieceId).collect();
    assert_eq!(files, ids, "piece files out of step with the index");
    assert!(files_under(&dir.join("tmp")).is_empty());
    ids
}

#[test]
fn remove_ignores_the_owner_and_uses_the_delete_protocol() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let kept = put(&store, 1, 0);
    put_kind(&store, 2, NOW + 50, PieceKind::Manifest);
    put(&store, 3, NOW + 60);
    let path = store.piece_path(&id(2));
    assert!(path.exists());

    // Owned by OWNER, removed without naming anyone.
    assert!(store.remove(&id(2)).unwrap());
    assert!(!store.has(&id(2)).unwrap());
    assert!(matches!(store.get(&id(2)), Err(StoreError::NotFound(_))));
    assert!(!path.exists());
    assert!(store.manifests().unwrap().is_empty());
    assert_eq!(expiring(&store), vec![(NOW + 60, id(3))]);
    assert_eq!(
        store.usage(),
        Usage {
            pieces: 2,
            used_bytes: 101 + 103,
            capacity: CAPACITY
        }
    );
    assert!(!store.remove(&id(2)).unwrap());
    assert!(!store.remove(&id(9)).unwrap());
    // An expiry change finds nothing to change.
    assert!(!store.set_expiry(&id(2), NOW).unwrap());

    // delete still checks the owner, through the same path.
    assert!(matches!(
        store.delete(&id(3), b"intruder"),
        Err(StoreError::NotOwner { .. })
    ));
    assert_eq!(expiring(&store), vec![(NOW + 60, id(3))]);
    assert!(store.delete(&id(3), OWNER).unwrap());
    assert!(expiring(&store).is_empty());

    drop(store);
    assert_eq!(assert_consistent(tmp.path()), BTreeSet::from([id(1)]));
    let store = open(tmp.path());
    assert_eq!(store.get(&id(1)).unwrap(), kept);
    assert_eq!(store.usage().used_bytes, 101);
}

#[test]
fn set_expiry_renews_moves_the_index_key_and_zero_means_never() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    put(&store, 1, NOW + 100);
    put(&store, 2, 0);
    assert_eq!(expiring(&store), vec![(NOW + 100, id(1))]);

    assert!(store.set_expiry(&id(1), NOW + 500).unwrap());
    assert_eq!(expiry_of(&store, 1), Some(NOW + 500));
    // Setting is not only lengthening.
    assert!(store.set_expiry(&id(1), NOW + 20).unwrap());
    assert_eq!(expiry_of(&store, 1), Some(NOW + 20));
    assert!(store.set_expiry(&id(2), NOW + 300).unwrap());
    assert_eq!(
        expiring(&store),
        vec![(NOW + 20, id(1)), (NOW + 300, id(2))]
    );
    // The same value again is fine.
    assert!(store.set_expiry(&id(2), NOW + 300).unwrap());

    // 0 = never: out of the index, never collected.
    assert!(store.set_expiry(&id(1), 0).unwrap());
    assert_eq!(expiry_of(&store, 1), Some(0));
    assert_eq!(expiring(&store), vec![(NOW + 300, id(2))]);
    assert_eq!(store.collect_expired(u64::MAX, 10).unwrap(), vec![id(2)]);
    assert!(store.has(&id(1)).unwrap());

    assert!(!store.set_expiry(&id(7), NOW).unwrap());
    assert!(!store.has(&id(7)).unwrap());

    // Durable.
    assert!(store.set_expiry(&id(1), NOW + 9).unwrap());
    drop(store);
    assert_consistent(tmp.path());
    let store = open(tmp.path());
    assert_eq!(expiry_of(&store, 1), Some(NOW + 9));
    assert_eq!(expiring(&store), vec![(NOW + 9, id(1))]);
}

#[test]
fn shorten_expiry_takes_the_earlier_and_zero_is_the_latest() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    put(&store, 1, 0);
    put(&store, 2, NOW + 100);

    // Never → anything is earlier.
    assert!(store.shorten_expiry(&id(1), NOW + 500).unwrap());
    assert_eq!(expiry_of(&store, 1), Some(NOW + 500));
    // Later: no change.
    assert!(store.shorten_expiry(&id(1), NOW + 800).unwrap());
    assert_eq!(expiry_of(&store, 1), Some(NOW + 500));
    // Earlier: taken.
    assert!(store.shorten_expiry(&id(1), NOW + 300).unwrap());
    assert_eq!(expiry_of(&store, 1), Some(NOW + 300));
    // 0 means never, which is never earlier: no change, the piece still expires.
    assert!(store.shorten_expiry(&id(1), 0).unwrap());
    assert_eq!(expiry_of(&store, 1), Some(NOW + 300));
    // Equal: no change.
    assert!(store.shorten_expiry(&id(2), NOW + 100).unwrap());
    assert_eq!(expiry_of(&store, 2), Some(NOW + 100));
    assert_eq!(
        expiring(&store),
        vec![(NOW + 100, id(2)), (NOW + 300, id(1))]
    );

    assert!(!store.shorten_expiry(&id(9), NOW).unwrap());
    assert!(!store.has(&id(9)).unwrap());

    drop(store);
    assert_consistent(tmp.path());
    let store = open(tmp.path());
    assert_eq!(expiry_of(&store, 1), Some(NOW + 300));
}

#[test]
fn batched_expiry_changes_apply_each_and_report_missing_pieces() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    put(&store, 1, NOW + 100);
    put(&store, 2, NOW + 100);
    put(&store, 3, 0);
    assert_eq!(
        store.has_many(&[id(1), id(9), id(3)]).unwrap(),
        vec![true, false, true]
    );
    let found = store
        .update_expiries(&[
            (id(1), Expiry::Set(NOW + 900)),
            (id(9), Expiry::Set(NOW)),
            (id(2), Expiry::Shorten(NOW + 50)),
            (id(3), Expiry::Shorten(NOW + 70)),
        ])
        .unwrap();
    assert_eq!(found, vec![true, false, true, true]);
    assert_eq!(
        expiring(&store),
        vec![(NOW + 50, id(2)), (NOW + 70, id(3)), (NOW + 900, id(1))]
    );
    // Nothing to change: still answers which are stored.
    assert_eq!(
        store
            .update_expiries(&[(id(1), Expiry::Set(NOW + 900))])
            .unwrap(),
        vec![true]
    );
    drop(store);
    assert_consistent(tmp.path());
}

#[test]
fn collect_expired_removes_exactly_the_expired_in_expiry_order() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let now = NOW + 60;
    let mut bytes = BTreeMap::new();
    for (n, at) in [
        (1u8, NOW + 50),
        (2, NOW + 10),
        (3, 0),
        (4, NOW + 30),
        (5, NOW + 100),
        (6, NOW + 30), // ties with 4: id order
        (7, now),      // expires exactly now: expired
        (8, now + 1),  // one second left: live
    ] {
        bytes.insert(n, put(&store, n, at));
    }
    put_kind(&store, 9, NOW + 1, PieceKind::Manifest);
    assert_eq!(store.manifests().unwrap(), vec![id(9)]);

    let collected = store.collect_expired(now, 100).unwrap();
    assert_eq!(collected, vec![id(9), id(2), id(4), id(6), id(1), id(7)]);
    for n in [9u8, 2, 4, 6, 1, 7] {
        assert!(!store.has(&id(n)).unwrap(), "{n}");
        assert!(!store.piece_path(&id(n)).exists(), "{n}");
    }
    assert!(store.manifests().unwrap().is_empty());
    for n in [3u8, 5, 8] {
        assert_eq!(store.get(&id(n)).unwrap(), bytes[&n], "{n}");
    }
    assert_eq!(
        store.usage(),
        Usage {
            pieces: 3,
            used_bytes: 103 + 105 + 108,
            capacity: CAPACITY
        }
    );
    assert_eq!(expiring(&store), vec![(now + 1, id(8)), (NOW + 100, id(5))]);
    // Nothing more at the same time.
    assert!(store.collect_expired(now, 100).unwrap().is_empty());

    drop(store);
    assert_eq!(
        assert_consistent(tmp.path()),
        BTreeSet::from([id(3), id(5), id(8)])
    );
}

#[test]
fn collect_expired_respects_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    // Expiries in the reverse of id order, so order by expiry is visible.
    for n in 1..=7u8 {
        put(&store, n, NOW + 100 - u64::from(n));
    }
    put(&store, 8, 0);
    let order: Vec<PieceId> = (1..=7u8).rev().map(id).collect();

    assert!(store.collect_expired(NOW + 100, 0).unwrap().is_empty());
    assert_eq!(store.usage().pieces, 8);
    assert_eq!(store.collect_expired(NOW + 100, 3).unwrap(), order[..3]);
    assert_eq!(store.usage().pieces, 5);
    assert_eq!(store.collect_expired(NOW + 100, 3).unwrap(), order[3..6]);
    assert_eq!(store.collect_expired(NOW + 100, 3).unwrap(), order[6..]);
    assert!(store.collect_expired(NOW + 100, 3).unwrap().is_empty());
    assert_eq!(store.usage().pieces, 1);
    assert!(store.has(&id(8)).unwrap());
}

#[test]
fn renewed_and_shortened_leases_decide_collection() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let renewed = put(&store, 1, NOW + 10);
    put(&store, 2, NOW + 10);
    put(&store, 3, 0);
    assert!(store.set_expiry(&id(1), NOW + 1000).unwrap());
    assert!(store.shorten_expiry(&id(3), NOW + 5).unwrap());

    assert_eq!(
        store.collect_expired(NOW + 20, 10).unwrap(),
        vec![id(3), id(2)]
    );
    assert_eq!(store.get(&id(1)).unwrap(), renewed);
    // Until the renewed lease runs out too.
    assert!(store.collect_expired(NOW + 999, 10).unwrap().is_empty());
    assert_eq!(store.collect_expired(NOW + 1000, 10).unwrap(), vec![id(1)]);
    assert_eq!(store.usage().pieces, 0);
}

#[test]
fn renewals_racing_collection_are_never_lost() {
    // A renewer and a collector on the same expired pieces. Whoever commits first wins, and the
    // store must say so truthfully: a renewal that reports the piece stored has saved it.
    for round in 0..3u8 {
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(open(tmp.path()));
        let count = 120u8;
        for n in 0..count {
            put(&store, n, NOW + u64::from(n) + 1);
        }
        let barrier = Arc::new(Barrier::new(2));
        let renewer = {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                // The collector goes earliest first; start from the other end (and every other
                // piece, on odd rounds) so the two meet somewhere in the middle.
                let order: Vec<u8> = (0..count)
                    .rev()
                    .filter(|n| round % 2 == 0 || n % 2 == 0)
                    .collect();
                order
                    .into_iter()
                    .map(|n| (n, store.set_expiry(&id(n), NOW + 10_000).unwrap()))
                    .collect::<Vec<_>>()
            })
        };
        let collector = {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let mut collected = Vec::new();
                loop {
                    let batch = store.collect_expired(NOW + 1000, 4).unwrap();
                    collected.extend(batch.iter().copied());
                    if batch.len() < 4 {
                        break collected;
                    }
                }
            })
        };
        let renewals = renewer.join().unwrap();
        let collected: BTreeSet<PieceId> = collector.join().unwrap().into_iter().collect();
        let renewed: BTreeMap<u8, bool> = renewals.into_iter().collect();
        for n in 0..count {
            // Not renewed at all counts as losing the race.
            let saved = renewed.get(&n).copied().unwrap_or(false);
            assert_eq!(store.has(&id(n)).unwrap(), saved, "piece {n}");
            assert_eq!(collected.contains(&id(n)), !saved, "piece {n}");
            if saved {
                assert_eq!(expiry_of(&store, n), Some(NOW + 10_000));
            }
        }
        let store = Arc::into_inner(store).unwrap();
        drop(store);
        assert_consistent(tmp.path());
    }
}

/// The pieces of a crash test: (n, expires_at), all in different directories.
const CRASH_SET: [(u8, u64); 7] = [
    (1, 0),
    (2, NOW + 10),
    (3, NOW + 500),
    (4, NOW + 20),
    (5, NOW + 30),
    (6, 0),
    (7, NOW + 40),
];
const CRASH_NOW: u64 = NOW + 100;

fn is_expired(at: u64) -> bool {
    at != 0 && at <= CRASH_NOW
}

/// After a crash and a reopen: live pieces intact and readable; expired ones either fully
/// there or fully gone (`expect_gone` says which this crash point must give); the index and
/// the files agree.
fn check_after_crash(
    dir: &Path,
    bytes: &BTreeMap<u8, Vec<u8>>,
    expect_gone: &[u8],
    cp: CrashPoint,
) {
    let store = open(dir);
    let mut used = 0;
    for &(n, at) in &CRASH_SET {
        let gone = expect_gone.contains(&n);
        assert!(!gone || is_expired(at), "{cp:?}: test bug, {n} is live");
        if gone {
            assert!(!store.has(&id(n)).unwrap(), "{cp:?}: {n} still visible");
            assert!(matches!(store.get(&id(n)), Err(StoreError::NotFound(_))));
            assert!(!store.piece_path(&id(n)).exists(), "{cp:?}: {n} file left");
        } else {
            assert_eq!(store.get(&id(n)).unwrap(), bytes[&n], "{cp:?}: {n}");
            assert_eq!(expiry_of(&store, n), Some(at), "{cp:?}: {n}");
            used += bytes[&n].len() as u64;
        }
    }
    assert_eq!(store.usage().used_bytes, used, "{cp:?}");
    let live: Vec<(u64, PieceId)> = {
        let mut v: Vec<_> = CRASH_SET
            .iter()
            .filter(|(n, at)| *at != 0 && !expect_gone.contains(n))
            .map(|(n, at)| (*at, id(*n)))
            .collect();
        v.sort();
        v
    };
    assert_eq!(expiring(&store), live, "{cp:?}");
    drop(store);
    let ids = assert_consistent(dir);
    let expected: BTreeSet<PieceId> = CRASH_SET
        .iter()
        .filter(|(n, _)| !expect_gone.contains(n))
        .map(|(n, _)| id(*n))
        .collect();
    assert_eq!(ids, expected, "{cp:?}");

    // Collection picks up where it stopped, and still spares the live pieces.
    let store = open(dir);
    store.collect_expired(CRASH_NOW, 100).unwrap();
    for &(n, at) in &CRASH_SET {
        assert_eq!(store.has(&id(n)).unwrap(), !is_expired(at), "{cp:?}: {n}");
        if !is_expired(at) {
            assert_eq!(store.get(&id(n)).unwrap(), bytes[&n]);
        }
    }
    drop(store);
    assert_consistent(dir);
}

fn crash_store(dir: &Path) -> (PieceStore, BTreeMap<u8, Vec<u8>>) {
    let store = open(dir);
    let bytes = CRASH_SET
        .iter()
        .map(|&(n, at)| (n, put(&store, n, at)))
        .collect();
    (store, bytes)
}

#[test]
fn crash_at_every_collection_step_loses_no_live_piece() {
    for cp in CrashPoint::REMOVE {
        let tmp = tempfile::tempdir().unwrap();
        let (store, bytes) = crash_store(tmp.path());
        // A batch of 3 of the 4 expired pieces: 2, 4, 5 go, 7 waits for the next call.
        store.set_crash_point(Some(cp));
        let err = store.collect_expired(CRASH_NOW, 3).unwrap_err();
        assert!(
            matches!(err, StoreError::Injected(p) if p == cp),
            "{cp:?}: {err}"
        );
        // What the crash left on disk before recovery.
        let exists: Vec<bool> = [2u8, 4, 5]
            .iter()
            .map(|n| store.piece_path(&id(*n)).exists())
            .collect();
        match cp {
            CrashPoint::Unindexed => assert_eq!(exists, [true; 3], "{cp:?}"),
            CrashPoint::FirstUnlinked => assert_eq!(exists, [false, true, true], "{cp:?}"),
            CrashPoint::Unlinked => assert_eq!(exists, [false; 3], "{cp:?}"),
            _ => unreachable!(),
        }
        assert!(store.piece_path(&id(7)).exists());
        drop(store);
        let raw = raw_index(tmp.path());
        let logged: BTreeSet<[u8; 32]> = [2u8, 4, 5].iter().map(|n| id(*n).0).collect();
        assert_eq!(raw.pending, logged, "{cp:?}: intents");
        // The index transaction is the commit point: past it, the pieces are invisible.
        check_after_crash(tmp.path(), &bytes, &[2, 4, 5], cp);
    }
}

#[test]
fn crash_at_every_step_of_remove_and_delete_recovers() {
    for cp in CrashPoint::REMOVE {
        for by_owner in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            let (store, bytes) = crash_store(tmp.path());
            store.set_crash_point(Some(cp));
            let err = if by_owner {
                store.delete(&id(4), OWNER).unwrap_err()
            } else {
                store.remove(&id(4)).unwrap_err()
            };
            assert!(matches!(err, StoreError::Injected(p) if p == cp), "{cp:?}");
            assert_eq!(
                store.piece_path(&id(4)).exists(),
                cp == CrashPoint::Unindexed,
                "{cp:?}"
            );
            drop(store);
            check_after_crash(tmp.path(), &bytes, &[4], cp);
        }
    }
}

#[test]
fn nothing_to_collect_writes_nothing_and_never_crashes() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, bytes) = crash_store(tmp.path());
    // The crash points lie after the index commit; with nothing to remove there is no commit.
    store.set_crash_point(Some(CrashPoint::Unindexed));
    assert!(store.collect_expired(NOW, 10).unwrap().is_empty());
    assert!(!store.remove(&id(99)).unwrap());
    drop(store);
    check_after_crash(tmp.path(), &bytes, &[], CrashPoint::Unindexed);
}

fn set_format(dir: &Path, format: u64) {
    let db = redb::Database::create(dir.join("index.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(META)
        .unwrap()
        .insert("format", format)
        .unwrap();
    txn.commit().unwrap();
}

fn insert_expiry_key(dir: &Path, key: (u64, [u8; 32])) {
    let db = redb::Database::create(dir.join("index.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(EXPIRY).unwrap().insert(key, ()).unwrap();
    txn.commit().unwrap();
}

#[test]
fn version_2_stores_build_the_expiry_index_once() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes: BTreeMap<u8, Vec<u8>> = {
        let store = open(tmp.path());
        [(1u8, NOW + 30), (2, 0), (3, NOW + 10), (4, NOW + 30)]
            .into_iter()
            .map(|(n, at)| (n, put(&store, n, at)))
            .collect()
    };
    // As a version 2 store: format 2 and whatever sits in a table it never wrote. A stale key
    // left there must not survive the upgrade.
    set_format(tmp.path(), 2);
    {
        let db = redb::Database::create(tmp.path().join("index.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        assert!(txn.delete_table(EXPIRY).unwrap());
        txn.open_table(EXPIRY)
            .unwrap()
            .insert((NOW + 1, id(2).0), ())
            .unwrap();
        txn.commit().unwrap();
    }
    assert_eq!(raw_index(tmp.path()).expiry.len(), 1);

    let store = open(tmp.path());
    let index = vec![(NOW + 10, id(3)), (NOW + 30, id(1)), (NOW + 30, id(4))];
    assert_eq!(expiring(&store), index);
    drop(store);
    assert_eq!(raw_index(tmp.path()).format, 3);
    assert_consistent(tmp.path());

    // Recorded: later opens do not rebuild. A key slipped in now stays until collection
    // finds it stale (for a piece that never expires), and collection goes on past it.
    insert_expiry_key(tmp.path(), (NOW + 5, id(2).0));
    let store = open(tmp.path());
    assert_eq!(expiring(&store)[0], (NOW + 5, id(2)));
    assert_eq!(store.collect_expired(NOW + 10, 10).unwrap(), vec![id(3)]);
    assert_eq!(store.get(&id(2)).unwrap(), bytes[&2]);
    assert_eq!(expiring(&store), index[1..]);
    drop(store);
    assert_consistent(tmp.path());
}

#[test]
fn version_1_pieces_are_indexed_and_collected() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes: BTreeMap<u8, Vec<u8>> = {
        let store = open(tmp.path());
        [(1u8, NOW + 30), (2, 0), (3, NOW + 10)]
            .into_iter()
            .map(|(n, at)| (n, put(&store, n, at)))
            .collect()
    };
    // As version 1 left it: no outboards or expiry index, files without outboards.
    {
        let db = redb::Database::create(tmp.path().join("index.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert("format", 1).unwrap();
        assert!(txn.delete_table(OUTBOARDS).unwrap());
        assert!(txn.delete_table(EXPIRY).unwrap());
        txn.commit().unwrap();
    }
    {
        let store = open(tmp.path());
        drop(store);
    }
    let raw = raw_index(tmp.path());
    assert_eq!(raw.format, 3);
    assert_eq!(
        raw.expiry,
        BTreeSet::from([(NOW + 10, id(3).0), (NOW + 30, id(1).0)])
    );
    let store = open(tmp.path());
    assert_eq!(
        store.collect_expired(NOW + 30, 10).unwrap(),
        vec![id(3), id(1)]
    );
    assert_eq!(store.get(&id(2)).unwrap(), bytes[&2]);
    assert_eq!(store.usage().pieces, 1);
    drop(store);
    assert!(raw_index(tmp.path()).expiry.is_empty());
}
