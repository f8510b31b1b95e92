//! Placement: which nodes receive a segment's pieces.
//!
//! Candidates are ranked by rendezvous (highest-random-weight) hashing of the
//! segment key with each node id, so every uploader computes the same order
//! for a segment, load spreads evenly, and a node joining or leaving moves
//! only its own share. Nodes known to be full are skipped, and a segment never
//! puts two pieces on one node. Later placement rules (network prefixes,
//! failure domains, reputation) belong here so put and repair share them.

use std::collections::HashSet;

/// A node that could hold a piece.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The node's peer id bytes.
    pub peer: Vec<u8>,
    /// Known free bytes, if the node told us.
    pub free_bytes: Option<u64>,
}

fn weight(key: &[u8; 32], peer: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("cairn v1 placement");
    h.update(key);
    h.update(peer);
    *h.finalize().as_bytes()
}

/// Orders candidates for a segment: distinct peers, those with room for
/// `piece_bytes` first by rendezvous weight; `exclude` is never returned.
pub fn rank(
    key: &[u8; 32],
    candidates: &[Candidate],
    piece_bytes: u64,
    exclude: &HashSet<Vec<u8>>,
) -> Vec<Vec<u8>> {
    let mut seen = HashSet::new();
    let mut ranked: Vec<([u8; 32], &Candidate)> = candidates
        .iter()
        .filter(|c| !exclude.contains(&c.peer) && seen.insert(c.peer.as_slice()))
        .filter(|c| c.free_bytes.is_none_or(|f| f >= piece_bytes))
        .map(|c| (weight(key, &c.peer), c))
        .collect();
    ranked.sort_by_key(|a| a.0);
    ranked.into_iter().map(|(_, c)| c.peer.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cands(n: u8) -> Vec<Candidate> {
        (0..n)
            .map(|i| Candidate {
                peer: vec![i],
                free_bytes: None,
            })
            .collect()
    }

    proptest! {
        #[test]
        fn distinct_deterministic_and_excluding(key in any::<[u8; 32]>(), n in 1u8..40, ex in any::<u8>()) {
            let mut c = cands(n);
            c.extend(cands(n)); // duplicates must collapse
            let exclude: HashSet<Vec<u8>> = [vec![ex % n]].into();
            let r = rank(&key, &c, 1, &exclude);
            prop_assert_eq!(r.len(), usize::from(n) - 1);
            prop_assert!(!r.contains(&vec![ex % n]));
            let set: HashSet<_> = r.iter().collect();
            prop_assert_eq!(set.len(), r.len());
            prop_assert_eq!(r, rank(&key, &c, 1, &exclude));
        }
    }

    #[test]
    fn full_nodes_are_skipped_and_load_spreads() {
        let mut c = cands(10);
        c[3].free_bytes = Some(10);
        let r = rank(&[0; 32], &c, 11, &HashSet::new());
        assert!(!r.contains(&vec![3]));
        // Over many segments every node comes first sometimes.
        let mut firsts = HashSet::new();
        for s in 0..200u8 {
            firsts.insert(rank(&[s; 32], &cands(10), 1, &HashSet::new())[0].clone());
        }
        assert_eq!(firsts.len(), 10);
    }
}
