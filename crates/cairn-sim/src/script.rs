//! Scripted scenarios: replay a sequence of node losses against one object,
//! with the node's own repair decisions, to compare with a real devnet.
//!
//! The devnet test kills holders one at a time and waits for repair; this
//! replays the same initial placement and the same kills, and reports per
//! round which pieces were lost and which indices were rebuilt, decided by
//! [`cairn_core::repair::assess`] and placed by
//! [`cairn_core::placement::select`] on the surviving nodes, as the node
//! does. Which node gets a rebuilt piece depends on the node's view of the
//! DHT, so only the pieces are compared, not the new holders.

use std::collections::BTreeSet;

use cairn_core::ids::FileId;
use cairn_core::keys::SecretKey;
use cairn_core::placement::{Candidate, Policy, select};
use cairn_core::record::{AnyAuthor, Change, Genesis, Record, SegmentInfo};
use cairn_core::repair::{RepairPolicy, assess};

use crate::SimError;

/// A scenario: `nodes` nodes (named 0..nodes), one object whose segment `s`
/// piece `i` starts on `holders[s]` entry `(i, node)`, then `kills` in order.
#[derive(Clone, Debug)]
pub struct Script {
    /// Nodes in the network.
    pub nodes: u32,
    /// Pieces needed.
    pub k: u16,
    /// Pieces kept.
    pub n: u16,
    /// Piece indices the code defines (n plus spares).
    pub coded: u16,
    /// Per segment, `(index, node)` of every stored piece.
    pub holders: Vec<Vec<(u16, u32)>>,
    /// Nodes killed one at a time; repair runs to completion after each.
    pub kills: Vec<u32>,
    /// When segments are repaired.
    pub policy: RepairPolicy,
    /// Where the real network put rebuilt pieces, per round (`(segment,
    /// index)` → node): used instead of this replay's own choice, so later
    /// rounds lose the same pieces as the network did. Empty: choose here.
    pub placed: Vec<std::collections::BTreeMap<(u32, u16), u32>>,
}

/// What happened in one round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Round {
    /// `(segment, index)` whose holder was killed this round.
    pub lost: BTreeSet<(u32, u16)>,
    /// `(segment, index)` rebuilt and placed this round.
    pub rebuilt: BTreeSet<(u32, u16)>,
}

/// Replays `script`.
pub fn replay(script: &Script) -> Result<Vec<Round>, SimError> {
    let owner = SecretKey::from_bytes([0x0b; 32]);
    let steward = SecretKey::from_bytes([0x0c; 32]);
    let peer = |node: u32| node.to_be_bytes().to_vec();
    let genesis = Genesis {
        file_id: FileId([0x5c; 32]),
        owner: owner.public(),
        k: script.k,
        n: script.n,
        coded: script.coded,
        created_at: 0,
        segments: script
            .holders
            .iter()
            .map(|_| SegmentInfo {
                sealed_len: 1 << 20,
                hashes: vec![[0; 32]; usize::from(script.coded)],
            })
            .collect(),
    };
    let assignments = script
        .holders
        .iter()
        .enumerate()
        .flat_map(|(s, seg)| seg.iter().map(move |&(i, node)| (s as u32, i, peer(node))));
    let mut record = Record::create(genesis, &owner, assignments, u64::MAX)
        .map_err(|e| SimError::Config(e.to_string()))?;
    let mut dead = BTreeSet::new();
    let node_of =
        |holder: &[u8]| -> Option<u32> { Some(u32::from_be_bytes(holder.try_into().ok()?)) };
    let mut rounds = Vec::new();
    for (t, &kill) in script.kills.iter().enumerate() {
        let mut lost = BTreeSet::new();
        for s in 0..script.holders.len() as u32 {
            for (i, h) in record.holders(s) {
                if node_of(h) == Some(kill) {
                    lost.insert((s, i));
                }
            }
        }
        dead.insert(kill);
        let mut rebuilt = BTreeSet::new();
        // Repair every segment that needs it (the devnet waits for that).
        let health = assess(&record, |_, _, h| {
            node_of(h).is_some_and(|n| !dead.contains(&n))
        });
        for h in health {
            if !h.needs_repair(&script.policy) || h.rebuild.is_empty() {
                continue;
            }
            let in_segment: BTreeSet<u32> = record
                .holders(h.segment)
                .filter_map(|(_, p)| node_of(p))
                .collect();
            let candidates: Vec<Candidate> = (0..script.nodes)
                .filter(|n| !dead.contains(n) && !in_segment.contains(n))
                .map(|n| Candidate::new(peer(n)))
                .collect();
            let key = record.genesis().file_id.segment_key(u64::from(h.segment));
            let order = select(
                &key,
                h.rebuild.len(),
                0,
                &candidates,
                &[],
                &Policy::default(),
            );
            let given = script.placed.get(t);
            let changes: Vec<Change> = h
                .rebuild
                .iter()
                .zip(order.iter().filter_map(|&c| candidates.get(c)))
                .map(|(&index, c)| {
                    rebuilt.insert((h.segment, index));
                    let holder = match given.and_then(|g| g.get(&(h.segment, index))) {
                        Some(&node) => peer(node),
                        None => c.peer.clone(),
                    };
                    Change::Assign {
                        segment: h.segment,
                        index,
                        holder,
                    }
                })
                .collect();
            if !changes.is_empty() {
                record
                    .update(&steward, t as u64 + 1, changes, &AnyAuthor)
                    .map_err(|e| SimError::Config(e.to_string()))?;
            }
        }
        rounds.push(Round { lost, rebuilt });
    }
    Ok(rounds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::repair::Threshold;

    #[test]
    fn eager_repair_rebuilds_exactly_what_each_kill_lost() {
        // 10 nodes, one segment of 4-of-6 on nodes 0..6.
        let script = Script {
            nodes: 10,
            k: 4,
            n: 6,
            coded: 8,
            holders: vec![(0..6).map(|i| (i as u16, i)).collect()],
            kills: vec![2, 4, 7],
            policy: RepairPolicy {
                threshold: Threshold::Eager,
            },
            placed: Vec::new(),
        };
        let rounds = replay(&script).unwrap();
        assert_eq!(rounds[0].lost, BTreeSet::from([(0, 2)]));
        assert_eq!(rounds[0].rebuilt, rounds[0].lost);
        assert_eq!(rounds[1].lost, BTreeSet::from([(0, 4)]));
        assert_eq!(rounds[1].rebuilt, rounds[1].lost);
        // Node 7 may or may not have received a rebuilt piece; whatever it
        // held is rebuilt again.
        assert_eq!(rounds[2].rebuilt, rounds[2].lost);
    }
}
