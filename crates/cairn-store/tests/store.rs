//! Behaviour of the piece store: roundtrips, crash recovery, capacity, integrity, errors.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};

use cairn_store::{
    CrashPoint, MAX_PIECE_BYTES, NewPiece, PieceId, PieceKind, PieceMeta, PieceStore, PutOutcome,
    StoreError, Usage,
};

const OWNER: &[u8] = b"peer-owner";
const NOW: u64 = 1_700_000_000;

fn id(n: u8) -> PieceId {
    PieceId([n; 32])
}

fn data(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn piece<'a>(id: PieceId, data: &'a [u8]) -> NewPiece<'a> {
    NewPiece {
        id,
        kind: PieceKind::Data,
        data,
        expected_hash: None,
        owner: OWNER,
        expires_at: 0,
    }
}

fn open(dir: &Path, capacity: u64) -> PieceStore {
    PieceStore::open(dir, capacity).expect("open store")
}

/// All regular files under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn put_get_roundtrip_and_meta() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path(), 1 << 20);
    let bytes = data(1, 5000);
    let p = NewPiece {
        expires_at: NOW + 3600,
        expected_hash: Some(*blake3::hash(&bytes).as_bytes()),
        ..piece(id(1), &bytes)
    };
    assert_eq!(store.put(p, NOW).unwrap(), PutOutcome::Stored);
    assert_eq!(store.get(&id(1)).unwrap(), bytes);
    assert_eq!(
        store.meta(&id(1)).unwrap(),
        Some(PieceMeta {
            id: id(1),
            kind: PieceKind::Data,
            size: 5000,
            hash: *blake3::hash(&bytes).as_bytes(),
            owner: OWNER.to_vec(),
            stored_at: NOW,
            expires_at: NOW + 3600,
        })
    );
    assert!(store.has(&id(1)).unwrap());
    assert!(!store.has(&id(2)).unwrap());
    assert_eq!(store.meta(&id(2)).unwrap(), None);
    assert!(matches!(store.get(&id(2)), Err(StoreError::NotFound(x)) if x == id(2)));
    assert_eq!(
        store.usage(),
        Usage {
            pieces: 1,
            used_bytes: 5000,
            capacity: 1 << 20
        }
    );
    // Layout: pieces/ab/cd/<hex>.
    let hex = id(1).to_hex();
    assert_eq!(
        store.piece_path(&id(1)),
        tmp.path()
            .join("pieces")
            .join(&hex[..2])
            .join(&hex[2..4])
            .join(&hex)
    );
    assert_eq!(fs::read(store.piece_path(&id(1))).unwrap(), bytes);

    // Empty pieces are pieces too.
    assert_eq!(
        store.put(piece(id(3), &[]), NOW).unwrap(),
        PutOutcome::Stored
    );
    assert_eq!(store.get(&id(3)).unwrap(), Vec::<u8>::new());
    assert_eq!(store.usage().pieces, 2);
}

#[test]
fn manifests_lists_only_manifest_pieces() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path(), 1 << 20);
    let bytes = data(2, 100);
    for n in [5u8, 1, 9] {
        let p = NewPiece {
            kind: PieceKind::Manifest,
            ..piece(id(n), &bytes)
        };
        store.put(p, NOW).unwrap();
    }
    for n in [2u8, 7] {
        store.put(piece(id(n), &bytes), NOW).unwrap();
    }
    assert_eq!(store.manifests().unwrap(), vec![id(1), id(5), id(9)]);
    assert_eq!(
        store.meta(&id(5)).unwrap().unwrap().kind,
        PieceKind::Manifest
    );
    assert!(store.delete(&id(5), OWNER).unwrap());
    assert_eq!(store.manifests().unwrap(), vec![id(1), id(9)]);
    drop(store);
    let store = open(tmp.path(), 1 << 20);
    assert_eq!(store.manifests().unwrap(), vec![id(1), id(9)]);
}

#[test]
fn crash_at_every_step_recovers() {
    for cp in CrashPoint::PUT {
        let tmp = tempfile::tempdir().unwrap();
        let before = data(10, 777);
        let bytes = data(11, 4096);
        let store = open(tmp.path(), 1 << 20);
        store.put(piece(id(1), &before), NOW).unwrap();
        store.set_crash_point(Some(cp));
        let err = store.put(piece(id(2), &bytes), NOW).unwrap_err();
        assert!(
            matches!(err, StoreError::Injected(p) if p == cp),
            "{cp:?}: {err}"
        );

        // The crash left what a real crash would leave; recovery must deal with it.
        let final_path = store.piece_path(&id(2));
        let tmp_files = files_under(&tmp.path().join("tmp"));
        match cp {
            CrashPoint::BeforeTemp => assert!(tmp_files.is_empty() && !final_path.exists()),
            CrashPoint::TempWritten | CrashPoint::Synced => {
                assert_eq!(tmp_files.len(), 1, "{cp:?}");
                assert!(!final_path.exists());
            }
            CrashPoint::Renamed | CrashPoint::Indexed => assert!(final_path.exists()),
            other => unreachable!("{other:?} is not a step of put"),
        }
        drop(store);

        let store = open(tmp.path(), 1 << 20);
        assert!(
            files_under(&tmp.path().join("tmp")).is_empty(),
            "{cp:?}: tmp/ not emptied"
        );
        assert_eq!(store.get(&id(1)).unwrap(), before, "{cp:?}");
        if cp == CrashPoint::Indexed {
            assert_eq!(store.get(&id(2)).unwrap(), bytes);
            assert_eq!(store.usage().used_bytes, 777 + 4096);
            assert_eq!(store.usage().pieces, 2);
            assert_eq!(
                store.put(piece(id(2), &bytes), NOW).unwrap(),
                PutOutcome::AlreadyStored
            );
        } else {
            assert!(
                matches!(store.get(&id(2)), Err(StoreError::NotFound(_))),
                "{cp:?}"
            );
            assert!(!store.has(&id(2)).unwrap());
            assert_eq!(store.usage().used_bytes, 777, "{cp:?}");
            assert_eq!(store.usage().pieces, 1);
            assert!(!final_path.exists(), "{cp:?}: orphan piece file left");
            assert_eq!(files_under(&tmp.path().join("pieces")).len(), 1, "{cp:?}");
            // A retry, even with other bytes, stores the piece.
            let other = data(12, 100);
            assert_eq!(
                store.put(piece(id(2), &other), NOW).unwrap(),
                PutOutcome::Stored
            );
            assert_eq!(store.get(&id(2)).unwrap(), other);
            assert_eq!(store.usage().used_bytes, 877);
        }
        // And it survives yet another reopen.
        drop(store);
        let store = open(tmp.path(), 1 << 20);
        assert!(store.get(&id(2)).is_ok(), "{cp:?}");
    }
}

#[test]
fn injected_crash_releases_reservation() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path(), 1000);
    let bytes = data(1, 1000);
    for cp in [
        CrashPoint::BeforeTemp,
        CrashPoint::TempWritten,
        CrashPoint::Synced,
        CrashPoint::Renamed,
    ] {
        store.set_crash_point(Some(cp));
        assert!(matches!(
            store.put(piece(id(1), &bytes), NOW),
            Err(StoreError::Injected(_))
        ));
    }
    store.set_crash_point(None);
    assert_eq!(store.usage().used_bytes, 0);
    // The whole capacity is still available.
    assert_eq!(
        store.put(piece(id(2), &bytes), NOW).unwrap(),
        PutOutcome::Stored
    );
}

#[test]
fn capacity_is_enforced_and_delete_frees_space() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path(), 1000);
    store.put(piece(id(1), &data(1, 600)), NOW).unwrap();
    match store.put(piece(id(2), &data(2, 401)), NOW) {
        Err(StoreError::Full {
            needed,
            free,
            capacity,
        }) => assert_eq!((needed, free, capacity), (401, 400, 1000)),
        other => panic!("expected Full, got {other:?}"),
    }
    assert!(!store.has(&id(2)).unwrap());
    store.put(piece(id(2), &data(2, 400)), NOW).unwrap();
    assert_eq!(store.usage().used_bytes, 1000);
    let err = store.put(piece(id(3), &data(3, 1)), NOW).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Full {
                needed: 1,
                free: 0,
                capacity: 1000
            }
        ),
        "{err:?}"
    );
    // Re-putting a stored piece needs no space.
    assert_eq!(
        store.put(piece(id(2), &data(2, 400)), NOW).unwrap(),
        PutOutcome::AlreadyStored
    );

    assert!(store.delete(&id(1), OWNER).unwrap());
    assert_eq!(store.usage().used_bytes, 400);
    store.put(piece(id(3), &data(3, 600)), NOW).unwrap();
    assert_eq!(store.usage().used_bytes, 1000);

    // The accounting survives a reopen.
    drop(store);
    let store = open(tmp.path(), 1000);
    assert_eq!(
        store.usage(),
        Usage {
            pieces: 2,
            used_bytes: 1000,
            capacity: 1000
        }
    );
    assert!(matches!(
        store.put(piece(id(4), &[0]), NOW),
        Err(StoreError::Full { .. })
    ));
}

#[test]
fn full_message_is_actionable() {
    let err = StoreError::Full {
        needed: 4_194_304,
        free: 1000,
        capacity: 20_000_000,
    };
    assert_eq!(
        err.to_string(),
        "node storage is full: piece needs 4194304 bytes but only 1000 of 20000000 bytes are free"
    );
}

#[test]
fn concurrent_puts_never_exceed_capacity() {
    let tmp = tempfile::tempdir().unwrap();
    let capacity = 10_000;
    let store = Arc::new(open(tmp.path(), capacity));
    let threads = 8;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut stored = 0u64;
                for round in 0..3u8 {
                    let bytes = data(t as u8, 3000 + usize::from(round) * 100);
                    barrier.wait();
                    match store.put(piece(id(t as u8 * 10 + round), &bytes), NOW) {
                        Ok(PutOutcome::Stored) => stored += bytes.len() as u64,
                        Ok(PutOutcome::AlreadyStored) => panic!("unexpected AlreadyStored"),
                        Err(StoreError::Full { .. }) => {}
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
                stored
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let usage = store.usage();
    assert!(total <= capacity, "stored {total} bytes in {capacity}");
    assert_eq!(usage.used_bytes, total);
    assert!(usage.used_bytes <= capacity);
    assert!(total > 0);
    drop(store);
    let store = open(tmp.path(), capacity);
    assert_eq!(store.usage().used_bytes, total);
}

#[test]
fn concurrent_puts_of_the_same_id_store_it_once() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(open(tmp.path(), 1 << 20));
    let bytes = Arc::new(data(7, 10_000));
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let store = Arc::clone(&store);
            let bytes = Arc::clone(&bytes);
            std::thread::spawn(move || store.put(piece(id(1), &bytes), NOW).unwrap())
        })
        .collect();
    let outcomes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == PutOutcome::Stored)
            .count(),
        1
    );
    assert_eq!(store.usage().used_bytes, 10_000);
    assert_eq!(store.get(&id(1)).unwrap(), *bytes);
}

#[test]
fn flipped_byte_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path(), 1 << 20);
    let bytes = data(1, 2048);
    store.put(piece(id(1), &bytes), NOW).unwrap();
    let path = store.piece_path(&id(1));
    let mut on_disk = fs::read(&path).unwrap();
    on_disk[1000] ^= 0x01;
    fs::write(&path, &on_disk).unwrap();
    match store.get(&id(1)) {
        Err(e @ StoreError::Corrupted { .. }) => {
            assert!(e.is_piece_lost());
            let StoreError::Corrupted {
                id: got,
                expected,
                actual,
            } = e
            else {
                unreachable!()
            };
            assert_eq!(got, id(1));
            assert_eq!(expected, blake3::hash(&bytes).to_hex().to_string());
            assert_eq!(actual, blake3::hash(&on_disk).to_hex().to_string());
        }
        other => panic!("expected Corrupted, got {other:?}"),
    }
}

#[test]
fn truncated_or_extended_file_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path(), 1 << 20);
    let bytes = data(1, 2048);
    store.put(piece(id(1), &bytes), NOW).unwrap();
    let path = store.piece_path(&id(1));
    fs::write(&path, &bytes[..2047]).unwrap();
    assert!(matches!(
        store.get(&id(1)),
        Err(StoreError::Corrupted { .. })
    ));
    let mut longer = bytes.clone();
    longer.push(0);
    fs::write(&path, &longer).unwrap();
    assert!(matches!(
        store.get(&id(1)),
        Err(StoreError::Corrupted { .. })
    ));
    fs::write(&path, &bytes).unwrap();
    assert_eq!(store.get(&id(1)).unwrap(), bytes);
}

#[test]
fn missing_file_is_an_error_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path(), 1 << 20);
    store.put(piece(id(1), &data(1, 100)), NOW).unwrap();
    fs::remove_file(store.piece_path(&id(1))).unwrap();
    let err = store.get(&id(1)).unwrap_err();
    assert!(matches!(err, StoreError::Missing { .. }), "{err:?}");
    assert!(err.is_piece_lost());
    assert!(err.to_string().contains(&id(1).to_hex()));
    // The owner can still drop the lost piece and free its space.
    assert!(store.delete(&id(1), OWNER).unwrap());
    assert_eq!(store.usage().used_bytes, 0);
}

#[test]
fn already_stored_and_conflict() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path(), 1 << 20);
    let bytes = data(1, 300);
    store.put(piece(id(1), &bytes), NOW).unwrap();
    let mtime = fs::metadata(store.piece_path(&id(1)))
        .unwrap()
        .modified()
        .unwrap();
    let again = NewPiece {
        owner: b"someone else",
        ..piece(id(1), &bytes)
    };
    assert_eq!(
        store.put(again, NOW + 10).unwrap(),
        PutOutcome::AlreadyStored
    );
    // Not rewritten, original metadata kept.
    assert_eq!(
        fs::metadata(store.piece_path(&id(1)))
            .unwrap()
            .modified()
            .unwrap(),
        mtime
    );
    let meta = store.meta(&id(1)).unwrap().unwrap();
    assert_eq!((meta.owner.as_slice(), meta.stored_at), (OWNER, NOW));

    let other = data(2, 300);
    assert!(matches!(
        store.put(piece(id(1), &other), NOW),
        Err(StoreError::Conflict { id: x }) if x == id(1)
    ));
    assert_eq!(store.get(&id(1)).unwrap(), bytes);
    assert_eq!(store.usage().used_bytes, 300);
}

#[test]
fn hash_mismatch_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path(), 1 << 20);
    let bytes = data(1, 300);
    let p = NewPiece {
        expected_hash: Some(*blake3::hash(b"something else").as_bytes()),
        ..piece(id(1), &bytes)
    };
    assert!(matches!(
        store.put(p, NOW),
        Err(StoreError::HashMismatch { id: x }) if x == id(1)
    ));
    assert!(!store.has(&id(1)).unwrap());
    assert!(files_under(&tmp.path().join("pieces")).is_empty());
    assert!(files_under(&tmp.path().join("tmp")).is_empty());
    assert_eq!(store.usage().used_bytes, 0);
}

#[test]
fn only_the_owner_may_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path(), 1 << 20);
    let bytes = data(1, 300);
    store.put(piece(id(1), &bytes), NOW).unwrap();
    assert!(matches!(
        store.delete(&id(1), b"intruder"),
        Err(StoreError::NotOwner { id: x }) if x == id(1)
    ));
    assert_eq!(store.get(&id(1)).unwrap(), bytes);
    assert_eq!(store.usage().used_bytes, 300);

    assert!(store.delete(&id(1), OWNER).unwrap());
    assert!(!store.has(&id(1)).unwrap());
    assert!(!store.piece_path(&id(1)).exists());
    assert_eq!(
        store.usage(),
        Usage {
            pieces: 0,
            used_bytes: 0,
            capacity: 1 << 20
        }
    );
    assert!(!store.delete(&id(1), OWNER).unwrap());
    assert!(!store.delete(&id(9), b"anyone").unwrap());

    drop(store);
    let store = open(tmp.path(), 1 << 20);
    assert!(!store.has(&id(1)).unwrap());
    assert_eq!(store.usage().used_bytes, 0);
}

#[test]
fn too_large_is_refused_and_max_is_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path(), 2 * MAX_PIECE_BYTES);
    assert_eq!(MAX_PIECE_BYTES, 64 * 1024 * 1024 + 64 * 1024);
    let mut big = vec![0u8; usize::try_from(MAX_PIECE_BYTES).unwrap() + 1];
    big[0] = 1;
    match store.put(piece(id(1), &big), NOW) {
        Err(StoreError::TooLarge { size, max }) => {
            assert_eq!((size, max), (MAX_PIECE_BYTES + 1, MAX_PIECE_BYTES));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(!store.has(&id(1)).unwrap());
    big.pop();
    assert_eq!(
        store.put(piece(id(1), &big), NOW).unwrap(),
        PutOutcome::Stored
    );
    assert_eq!(store.get(&id(1)).unwrap().len(), big.len());
}

#[test]
fn unknown_format_version_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    drop(open(tmp.path(), 1000));
    {
        let db = redb::Database::create(tmp.path().join("index.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<'_, &str, u64> = redb::TableDefinition::new("meta");
            let mut meta = txn.open_table(def).unwrap();
            meta.insert("format", 4).unwrap();
        }
        txn.commit().unwrap();
    }
    match PieceStore::open(tmp.path(), 1000) {
        Err(e @ StoreError::Format { .. }) => {
            assert!(matches!(
                e,
                StoreError::Format {
                    found: 4,
                    supported: 3
                }
            ));
            assert!(e.to_string().contains("version 4"), "{e}");
        }
        other => panic!("expected Format, got {other:?}"),
    }
}

#[test]
fn second_open_of_the_same_dir_fails_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let _store = open(tmp.path(), 1000);
    assert!(matches!(
        PieceStore::open(tmp.path(), 1000),
        Err(StoreError::Db(_))
    ));
}

#[test]
fn data_survives_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let pieces: Vec<(PieceId, Vec<u8>)> = (1..=20u8)
        .map(|n| (id(n), data(n, usize::from(n) * 97)))
        .collect();
    {
        let store = open(tmp.path(), 1 << 20);
        for (i, b) in &pieces {
            store.put(piece(*i, b), NOW).unwrap();
        }
    }
    let store = open(tmp.path(), 1 << 20);
    for (i, b) in &pieces {
        assert_eq!(&store.get(i).unwrap(), b);
    }
    let total: u64 = pieces.iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(
        store.usage(),
        Usage {
            pieces: 20,
            used_bytes: total,
            capacity: 1 << 20
        }
    );
}

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PieceStore>();
    assert_send_sync::<Arc<PieceStore>>();
}

#[test]
fn open_empties_tmp_dir() {
    let tmp = tempfile::tempdir().unwrap();
    drop(open(tmp.path(), 1000));
    let stray = tmp.path().join("tmp").join("leftover.tmp");
    fs::write(&stray, b"half a piece").unwrap();
    fs::create_dir(tmp.path().join("tmp").join("subdir")).unwrap();
    let _store = open(tmp.path(), 1000);
    assert!(
        fs::read_dir(tmp.path().join("tmp"))
            .unwrap()
            .next()
            .is_none()
    );
}
