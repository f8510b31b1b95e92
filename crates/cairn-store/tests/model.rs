//! Model test: random put/delete/get/reopen sequences agree with an in-memory HashMap.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;

use cairn_store::{NewPiece, PieceId, PieceKind, PieceStore, PutOutcome, StoreError, Usage};
use proptest::prelude::*;

const CAPACITY: u64 = 1500;
const OWNERS: [&[u8]; 2] = [b"alice", b"bob"];

#[derive(Clone, Debug)]
enum Op {
    Put {
        id: u8,
        seed: u8,
        len: usize,
        owner: usize,
        manifest: bool,
    },
    Delete {
        id: u8,
        owner: usize,
    },
    Get {
        id: u8,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..8, 0u8..3, 0usize..400, 0usize..2, any::<bool>()).prop_map(
            |(id, seed, len, owner, manifest)| Op::Put { id, seed, len, owner, manifest }
        ),
        2 => (0u8..8, 0usize..2).prop_map(|(id, owner)| Op::Delete { id, owner }),
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
    }
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
                Op::Put { id, seed, len, owner, manifest } => {
                    let data = bytes(seed, len);
                    let piece = NewPiece {
                        id: pid(id),
                        kind: if manifest { PieceKind::Manifest } else { PieceKind::Data },
                        data: &data,
                        expected_hash: None,
                        owner: OWNERS[owner],
                        expires_at: 0,
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
                            model.insert(id, Entry { data, owner, manifest });
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
    }
}
