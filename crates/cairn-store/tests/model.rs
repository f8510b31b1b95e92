//! Model test: random put/delete/remove/get/reopen sequences, expiry changes and garbage
//! collection (also crashing at every step of it) agree with an in-memory HashMap, and the
//! expiry index always matches the pieces' expiries.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;

use cairn_store::{
    CrashPoint, NewPiece, PieceId, PieceKind, PieceStore, PutOutcome, StoreError, Usage,
};
use proptest::prelude::*;

const CAPACITY: u64 = 1500;
const OWNERS: [&[u8]; 2] = [b"alice", b"bob"];
/// Expiries the ops choose from: 0 = never, and a few times close enough to collide.
const EXPIRIES: [u64; 5] = [0, 10, 20, 30, 40];

#[derive(Clone, Debug)]
enum Op {
    Put {
        id: u8,
        seed: u8,
        len: usize,
        owner: usize,
        manifest: bool,
        expires_at: u64,
    },
    Delete {
        id: u8,
        owner: usize,
    },
    Remove {
        id: u8,
    },
    SetExpiry {
        id: u8,
        expires_at: u64,
    },
    ShortenExpiry {
        id: u8,
        expires_at: u64,
    },
    Collect {
        now: u64,
        limit: usize,
        /// Crash at this step of the removal, then reopen.
        crash: Option<CrashPoint>,
    },
    Get {
        id: u8,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let expiry = || prop::sample::select(EXPIRIES.to_vec());
    prop_oneof![
        4 => (0u8..8, 0u8..3, 0usize..400, 0usize..2, any::<bool>(), expiry()).prop_map(
            |(id, seed, len, owner, manifest, expires_at)| {
                Op::Put { id, seed, len, owner, manifest, expires_at }
            }
        ),
        2 => (0u8..8, 0usize..2).prop_map(|(id, owner)| Op::Delete { id, owner }),
        1 => (0u8..8).prop_map(|id| Op::Remove { id }),
        2 => (0u8..8, expiry()).prop_map(|(id, expires_at)| Op::SetExpiry { id, expires_at }),
        2 => (0u8..8, expiry()).prop_map(|(id, expires_at)| Op::ShortenExpiry { id, expires_at }),
        2 => (0u64..50, 0usize..4, prop::option::weighted(0.25, prop::sample::select(CrashPoint::REMOVE.to_vec())))
            .prop_map(|(now, limit, crash)| Op::Collect { now, limit, crash }),
        3 => (0u8..8).prop_map(|id| Op::Get { id }),
        1 => Just(Op::Reopen),
    ]
}

fn pid(n: u8) -> PieceId {
    let mut b = [0u8; 32];
    b[0] = n;
    b[31] = 0xc4;
    PieceId(b)
}

fn bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(seed.wrapping_add(3)) ^ seed)
        .collect()
}

struct Entry {
    data: Vec<u8>,
    owner: usize,
    manifest: bool,
    expires_at: u64,
}

/// What the expiry index must hold: `(expires_at, id)` of every piece that expires, in order.
fn model_expiring(model: &HashMap<u8, Entry>) -> Vec<(u64, PieceId)> {
    let mut v: Vec<(u64, PieceId)> = model
        .iter()
        .filter(|(_, e)| e.expires_at != 0)
        .map(|(k, e)| (e.expires_at, pid(*k)))
        .collect();
    v.sort();
    v
}

fn open(dir: &Path) -> PieceStore {
    PieceStore::open(dir, CAPACITY).unwrap()
}

fn check_state(store: &PieceStore, model: &HashMap<u8, Entry>) -> Result<(), TestCaseError> {
    let used: u64 = model.values().map(|e| e.data.len() as u64).sum();
    prop_assert_eq!(
        store.usage(),
        Usage {
            pieces: model.len() as u64,
            used_bytes: used,
            capacity: CAPACITY
        }
    );
    let mut manifests: Vec<PieceId> = model
        .iter()
        .filter(|(_, e)| e.manifest)
        .map(|(k, _)| pid(*k))
        .collect();
    manifests.sort();
    prop_assert_eq!(store.manifests().unwrap(), manifests);
    for n in 0u8..8 {
        prop_assert_eq!(store.has(&pid(n)).unwrap(), model.contains_key(&n));
        prop_assert_eq!(
            store.meta(&pid(n)).unwrap().map(|m| m.expires_at),
            model.get(&n).map(|e| e.expires_at)
        );
    }
    prop_assert_eq!(
        store.expiring(u64::MAX, usize::MAX).unwrap(),
        model_expiring(model)
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn store_agrees_with_model(ops in prop::collection::vec(op(), 1..40)) {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = open(tmp.path());
        let mut model: HashMap<u8, Entry> = HashMap::new();

        for op in ops {
            match op {
                Op::Put { id, seed, len, owner, manifest, expires_at } => {
                    let data = bytes(seed, len);
                    let piece = NewPiece {
                        id: pid(id),
                        kind: if manifest { PieceKind::Manifest } else { PieceKind::Data },
                        data: &data,
                        expected_hash: None,
                        owner: OWNERS[owner],
                        expires_at,
                    };
                    let got = store.put(piece, 1);
                    let used: u64 = model.values().map(|e| e.data.len() as u64).sum();
                    match model.get(&id) {
                        Some(e) if e.data == data => {
                            prop_assert!(matches!(got, Ok(PutOutcome::AlreadyStored)), "{:?}", got);
                        }
                        Some(_) => prop_assert!(matches!(got, Err(StoreError::Conflict { .. })), "{:?}", got),
                        None if used + len as u64 > CAPACITY => {
                            prop_assert!(
                                matches!(got, Err(StoreError::Full { needed, free, capacity })
                                    if needed == len as u64 && free == CAPACITY - used && capacity == CAPACITY),
                                "{:?}", got
                            );
                        }
                        None => {
                            prop_assert!(matches!(got, Ok(PutOutcome::Stored)), "{:?}", got);
                            model.insert(id, Entry { data, owner, manifest, expires_at });
                        }
                    }
                }
                Op::Delete { id, owner } => {
                    let got = store.delete(&pid(id), OWNERS[owner]);
                    match model.get(&id) {
                        None => prop_assert!(matches!(got, Ok(false)), "{:?}", got),
                        Some(e) if e.owner != owner => {
                            prop_assert!(matches!(got, Err(StoreError::NotOwner { .. })), "{:?}", got);
                        }
                        Some(_) => {
                            prop_assert!(matches!(got, Ok(true)), "{:?}", got);
                            model.remove(&id);
                            prop_assert!(!store.piece_path(&pid(id)).exists());
                        }
                    }
                }
                Op::Remove { id } => {
                    let got = store.remove(&pid(id)).unwrap();
                    prop_assert_eq!(got, model.remove(&id).is_some());
                    prop_assert!(!store.piece_path(&pid(id)).exists());
                }
                Op::SetExpiry { id, expires_at } => {
                    let got = store.set_expiry(&pid(id), expires_at).unwrap();
                    prop_assert_eq!(got, model.contains_key(&id));
                    if let Some(e) = model.get_mut(&id) {
                        e.expires_at = expires_at;
                    }
                }
                Op::ShortenExpiry { id, expires_at } => {
                    let got = store.shorten_expiry(&pid(id), expires_at).unwrap();
                    prop_assert_eq!(got, model.contains_key(&id));
                    if let Some(e) = model.get_mut(&id) {
                        // 0 is never: the latest of all.
                        let as_time = |t: u64| if t == 0 { u64::MAX } else { t };
                        if as_time(expires_at) < as_time(e.expires_at) {
                            e.expires_at = expires_at;
                        }
                    }
                }
                Op::Collect { now, limit, crash } => {
                    let due: Vec<PieceId> = model_expiring(&model)
                        .into_iter()
                        .filter(|(at, _)| *at <= now)
                        .map(|(_, id)| id)
                        .take(limit)
                        .collect();
                    store.set_crash_point(crash);
                    let got = store.collect_expired(now, limit);
                    store.set_crash_point(None);
                    match crash {
                        // A crash happens only once something was taken out of the index, and
                        // then the whole batch is gone: the index transaction is the commit
                        // point.
                        Some(cp) if !due.is_empty() => {
                            prop_assert!(matches!(got, Err(StoreError::Injected(p)) if p == cp), "{:?}", got);
                            drop(store);
                            store = open(tmp.path());
                        }
                        _ => prop_assert_eq!(got.unwrap(), due.clone()),
                    }
                    for id in &due {
                        model.remove(&id.0[0]);
                        prop_assert!(!store.piece_path(id).exists());
                    }
                }
                Op::Get { id } => {
                    let got = store.get(&pid(id));
                    match model.get(&id) {
                        Some(e) => prop_assert_eq!(got.unwrap(), e.data.clone()),
                        None => prop_assert!(matches!(got, Err(StoreError::NotFound(_))), "{:?}", got),
                    }
                }
                Op::Reopen => {
                    drop(store);
                    store = open(tmp.path());
                }
            }
            check_state(&store, &model)?;
        }

        drop(store);
        let store = open(tmp.path());
        check_state(&store, &model)?;
        for (id, e) in &model {
            prop_assert_eq!(&store.get(&pid(*id)).unwrap(), &e.data);
        }
        // No file outlives its piece.
        let mut files = 0;
        for fan in std::fs::read_dir(tmp.path().join("pieces")).unwrap() {
            for leaf in std::fs::read_dir(fan.unwrap().path()).unwrap() {
                files += std::fs::read_dir(leaf.unwrap().path()).unwrap().count();
            }
        }
        prop_assert_eq!(files, model.len());
    }
}
