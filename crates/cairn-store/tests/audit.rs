//! Audits from the store: proofs read from the group and the stored outboard, damage reported
//! as `Corrupted`, crash recovery, and version 1 stores.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

use cairn_core::audit::{self, Challenge, GROUP_BYTES};
use cairn_store::{CrashPoint, NewPiece, PieceId, PieceKind, PieceStore, StoreError};
use redb::ReadableDatabase;

const OWNER: &[u8] = b"peer-owner";
const NOW: u64 = 1_700_000_000;
const G: usize = GROUP_BYTES as usize;

fn id(n: u8) -> PieceId {
    PieceId([n; 32])
}

fn data(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 11) as u8 ^ seed)
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

fn open(dir: &Path) -> PieceStore {
    PieceStore::open(dir, 1 << 30).unwrap()
}

/// A challenge of piece `id` that asks for `group` of a `size`-byte piece.
fn challenge_for(id: PieceId, size: usize, group: u64) -> Challenge {
    (0u64..)
        .map(|n| {
            let mut nonce = [0u8; 32];
            nonce[..8].copy_from_slice(&n.to_le_bytes());
            Challenge { piece: id, nonce }
        })
        .find(|c| c.group(size as u64) == group)
        .unwrap()
}

/// Audits `group` of the piece and checks the answer the way a steward would.
fn audit_ok(store: &PieceStore, id: PieceId, bytes: &[u8], group: u64) {
    let c = challenge_for(id, bytes.len(), group);
    let proof = store.audit(&c).unwrap();
    let root = *blake3::hash(bytes).as_bytes();
    assert_eq!(
        audit::verify(&root, bytes.len() as u64, &c, &proof),
        Ok(()),
        "group {group}"
    );
}

fn flip(path: &Path, at: u64) {
    let mut on_disk = fs::read(path).unwrap();
    on_disk[at as usize] ^= 0x40;
    fs::write(path, &on_disk).unwrap();
}

#[test]
fn audits_verify_for_every_size_class() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    for (n, size) in [0, 1, G - 1, G, G + 1, 7 * G + 3, (1 << 20) + 5]
        .into_iter()
        .enumerate()
    {
        let bytes = data(n as u8, size);
        let id = id(n as u8);
        store.put(piece(id, &bytes), NOW).unwrap();
        // The file is the piece, then its outboard.
        let (_, ob) = audit::outboard(&bytes);
        let on_disk = fs::read(store.piece_path(&id)).unwrap();
        assert_eq!(on_disk.len(), size + ob.len(), "size {size}");
        assert_eq!(&on_disk[..size], &bytes[..]);
        assert_eq!(&on_disk[size..], &ob[..]);
        assert_eq!(store.get(&id).unwrap(), bytes);
        let groups = audit::group_count(size as u64);
        for g in (0..groups)
            .step_by((groups / 8).max(1) as usize)
            .chain([groups - 1])
        {
            audit_ok(&store, id, &bytes, g);
        }
    }
    let missing = Challenge {
        piece: id(99),
        nonce: [0; 32],
    };
    assert!(matches!(
        store.audit(&missing),
        Err(StoreError::NotFound(x)) if x == id(99)
    ));
}

#[test]
fn damage_in_the_audited_group_is_corrupted_and_elsewhere_does_not_matter() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let size = 8 * G + 100;
    let bytes = data(1, size);
    store.put(piece(id(1), &bytes), NOW).unwrap();
    let path = store.piece_path(&id(1));

    // One flipped byte in group 3.
    flip(&path, 3 * GROUP_BYTES + 77);
    let c = challenge_for(id(1), size, 3);
    match store.audit(&c) {
        Err(e @ StoreError::Corrupted { .. }) => {
            assert!(e.is_piece_lost());
            let msg = e.to_string();
            assert!(msg.contains("49152..65536"), "{msg}");
            assert!(msg.contains(&id(1).to_hex()), "{msg}");
        }
        other => panic!("expected Corrupted, got {other:?}"),
    }
    // Every other group still proves: audits read their group and the outboard only.
    for g in (0..9).filter(|g| *g != 3) {
        audit_ok(&store, id(1), &bytes, g);
    }
    // A reader of the whole piece sees the damage.
    assert!(matches!(
        store.get(&id(1)),
        Err(StoreError::Corrupted { .. })
    ));
}

#[test]
fn a_damaged_outboard_is_recomputed_from_an_intact_piece() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let size = 8 * G + 100;
    let bytes = data(2, size);
    store.put(piece(id(2), &bytes), NOW).unwrap();
    let path = store.piece_path(&id(2));
    // The first outboard pair is the root's, on every group's path.
    flip(&path, size as u64 + 5);
    for g in 0..9 {
        audit_ok(&store, id(2), &bytes, g);
    }
    assert_eq!(store.get(&id(2)).unwrap(), bytes);

    // With the piece damaged too, nothing can be proven.
    flip(&path, 10);
    let c = challenge_for(id(2), size, 8);
    assert!(matches!(store.audit(&c), Err(StoreError::Corrupted { .. })));

    // A truncated outboard is a wrong file length: checked whole, and the piece is fine.
    fs::write(&path, &bytes).unwrap();
    audit_ok(&store, id(2), &bytes, 4);
    assert!(matches!(
        store.get(&id(2)),
        Err(StoreError::Corrupted { .. })
    ));
}

#[test]
fn a_deleted_file_is_missing_to_audits() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let bytes = data(3, 3 * G);
    store.put(piece(id(3), &bytes), NOW).unwrap();
    fs::remove_file(store.piece_path(&id(3))).unwrap();
    let err = store.audit(&challenge_for(id(3), 3 * G, 1)).unwrap_err();
    assert!(matches!(err, StoreError::Missing { .. }), "{err:?}");
}

#[test]
fn delete_and_reput_audits_the_new_piece() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let first = data(4, 6 * G);
    store.put(piece(id(4), &first), NOW).unwrap();
    assert!(store.delete(&id(4), OWNER).unwrap());
    assert!(matches!(
        store.audit(&challenge_for(id(4), 6 * G, 0)),
        Err(StoreError::NotFound(_))
    ));
    // Another size, so another outboard length.
    let second = data(5, 3 * G + 1);
    store.put(piece(id(4), &second), NOW).unwrap();
    for g in 0..4 {
        audit_ok(&store, id(4), &second, g);
    }
    drop(store);
    let store = open(tmp.path());
    audit_ok(&store, id(4), &second, 3);
}

#[test]
fn crash_at_every_step_leaves_audits_consistent() {
    for cp in CrashPoint::PUT {
        let tmp = tempfile::tempdir().unwrap();
        let bytes = data(6, 5 * G + 9);
        let store = open(tmp.path());
        store.set_crash_point(Some(cp));
        assert!(matches!(
            store.put(piece(id(6), &bytes), NOW),
            Err(StoreError::Injected(p)) if p == cp
        ));
        drop(store);
        let store = open(tmp.path());
        let c = challenge_for(id(6), bytes.len(), 2);
        if cp == CrashPoint::Indexed {
            audit_ok(&store, id(6), &bytes, 2);
        } else {
            assert!(
                matches!(store.audit(&c), Err(StoreError::NotFound(_))),
                "{cp:?}"
            );
            // A retry stores the piece with its outboard.
            store.put(piece(id(6), &bytes), NOW).unwrap();
            audit_ok(&store, id(6), &bytes, 2);
        }
        drop(store);
        let store = open(tmp.path());
        audit_ok(&store, id(6), &bytes, 5);
    }
}

/// Rewrites a version 3 store as version 1 would have left it: `format` = 1, no `outboards` or
/// `expiry_v1` table, piece files without outboards.
fn downgrade_to_v1(dir: &Path, pieces: &[(PieceId, &[u8])]) {
    let db = redb::Database::create(dir.join("index.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let meta: redb::TableDefinition<'_, &str, u64> = redb::TableDefinition::new("meta");
        txn.open_table(meta).unwrap().insert("format", 1).unwrap();
        let outboards: redb::TableDefinition<'_, [u8; 32], u64> =
            redb::TableDefinition::new("outboards");
        assert!(txn.delete_table(outboards).unwrap());
        let expiry: redb::TableDefinition<'_, (u64, [u8; 32]), ()> =
            redb::TableDefinition::new("expiry_v1");
        assert!(txn.delete_table(expiry).unwrap());
    }
    txn.commit().unwrap();
    for (id, bytes) in pieces {
        let hex = id.to_hex();
        let path = dir
            .join("pieces")
            .join(&hex[..2])
            .join(&hex[2..4])
            .join(&hex);
        fs::write(path, bytes).unwrap();
    }
}

fn format_of(dir: &Path) -> u64 {
    let db = redb::Database::create(dir.join("index.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    let meta: redb::TableDefinition<'_, &str, u64> = redb::TableDefinition::new("meta");
    let table = txn.open_table(meta).unwrap();
    table.get("format").unwrap().unwrap().value()
}

#[test]
fn version_1_stores_open_upgrade_and_audit_the_slow_way() {
    let tmp = tempfile::tempdir().unwrap();
    let small = data(7, 1000);
    let large = data(8, 6 * G + 3);
    let other = data(9, 6 * G + 3);
    {
        let store = open(tmp.path());
        store.put(piece(id(7), &small), NOW).unwrap();
        store.put(piece(id(8), &large), NOW).unwrap();
        store.put(piece(id(9), &other), NOW).unwrap();
    }
    downgrade_to_v1(
        tmp.path(),
        &[(id(7), &small), (id(8), &large), (id(9), &other)],
    );
    assert_eq!(format_of(tmp.path()), 1);

    let store = open(tmp.path());
    assert_eq!(store.get(&id(7)).unwrap(), small);
    assert_eq!(store.get(&id(8)).unwrap(), large);
    audit_ok(&store, id(7), &small, 0);
    for g in 0..7 {
        audit_ok(&store, id(8), &large, g);
    }
    // Without an outboard, damage anywhere fails every audit of the piece.
    flip(&store.piece_path(&id(9)), 5);
    assert!(matches!(
        store.audit(&challenge_for(id(9), other.len(), 6)),
        Err(StoreError::Corrupted { .. })
    ));
    // New pieces get outboards; the old ones keep working.
    let new = data(10, 4 * G);
    store.put(piece(id(10), &new), NOW).unwrap();
    assert_eq!(
        fs::metadata(store.piece_path(&id(10))).unwrap().len(),
        4 * GROUP_BYTES + audit::outboard_len(4 * GROUP_BYTES)
    );
    drop(store);
    assert_eq!(format_of(tmp.path()), 3);
    let store = open(tmp.path());
    audit_ok(&store, id(8), &large, 6);
    audit_ok(&store, id(10), &new, 3);
    assert_eq!(store.usage().pieces, 4);
}
