//! Repair decisions: which segments need work, who does it, in what order
//! and how fast.
//!
//! Everything here is a pure function of a [`Record`], the caller's view of
//! which pieces are healthy, and time passed in, so the node's steward loop
//! and the simulator make the same decisions.
//!
//! - [`assess`]: per segment, the healthy pieces and the indices to rebuild.
//!   A piece is healthy when its holder is assigned, not lost (liveness
//!   grace) and not caught by an audit; the caller decides through a closure.
//! - [`RepairPolicy`]: repair starts when a segment's healthy pieces fall to
//!   the threshold. The default is k + ⌈3(n − k)/8⌉ (19 for 16-of-24, 6 for
//!   4-of-8): lazy enough that one download of k pieces rebuilds five, early
//!   enough that most of the tolerance is still in hand while repair runs
//!   (DURABILITY.md has the trade-off measured). Halfway and eager repair
//!   (threshold n − 1) are settings.
//! - [`stewards`] and [`repairer`]: the stewards of a record are the nodes
//!   closest to its id in Kademlia's metric (SHA-256 of the key, XOR), as the
//!   DHT computes them; among the stewards the caller sees alive, rendezvous
//!   hashing of `(record, segment)` names one repairer, so two stewards with
//!   the same view never race. Views can differ for a while; a duplicate
//!   repair costs bandwidth, never data, because record merges pick one
//!   winner per piece slot and the loser's piece is garbage-collected.
//! - [`RepairQueue`]: a bounded queue ordered by how close a segment is to
//!   loss (healthy − k, fewest first), then by age.
//! - [`TokenBucket`]: the repair bandwidth limit.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use crate::record::{Record, RecordId};

/// When repair starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Threshold {
    /// Repair when healthy pieces ≤ k + ⌈3(n − k) / 8⌉: 19 for 16-of-24,
    /// 6 for 4-of-8. The default: the simulated year on 10,000 nodes with
    /// realistic churn (DURABILITY.md) loses nothing and moves 12 % of the
    /// stored bytes a month, where halfway moves 16.6 %.
    Lazy,
    /// Repair when healthy pieces ≤ k + ⌈(n − k) / 2⌉.
    Halfway,
    /// Repair as soon as one piece is missing.
    Eager,
    /// Repair when healthy pieces ≤ this many (clamped to k..n−1).
    AtMost(u16),
}

/// Repair settings a steward applies to every record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RepairPolicy {
    /// When a segment needs repair.
    pub threshold: Threshold,
}

impl Default for RepairPolicy {
    fn default() -> Self {
        Self {
            threshold: Threshold::Lazy,
        }
    }
}

impl RepairPolicy {
    /// The healthy-piece count at or below which a k-of-n segment is repaired.
    pub fn threshold(&self, k: u16, n: u16) -> u16 {
        let top = n.saturating_sub(1).max(k);
        match self.threshold {
            Threshold::Lazy => (k + (3 * (n - k)).div_ceil(8)).min(top),
            Threshold::Halfway => (k + (n - k).div_ceil(2)).min(top),
            Threshold::Eager => top,
            Threshold::AtMost(t) => t.clamp(k, top),
        }
    }
}

/// The state of one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentHealth {
    /// Segment number.
    pub segment: u32,
    /// Pieces that are assigned and healthy.
    pub healthy: u16,
    /// Pieces needed to rebuild.
    pub k: u16,
    /// Pieces kept when healthy.
    pub n: u16,
    /// Indices to regenerate to get back to `n`: the lost pieces' own
    /// indices first (so each new holder replaces a lost one in the record),
    /// then unassigned indices, lowest (data pieces) first.
    pub rebuild: Vec<u16>,
    /// Indices whose holders are healthy (where repair downloads from).
    pub sources: Vec<u16>,
}

impl SegmentHealth {
    /// Fewer is closer to loss; negative means lost.
    pub fn margin(&self) -> i32 {
        i32::from(self.healthy) - i32::from(self.k)
    }

    /// Whether the segment can no longer be rebuilt.
    pub fn is_lost(&self) -> bool {
        self.healthy < self.k
    }

    /// Whether the policy says to repair it now.
    pub fn needs_repair(&self, policy: &RepairPolicy) -> bool {
        !self.is_lost() && self.healthy <= policy.threshold(self.k, self.n)
    }
}

/// The health of every segment of `record`; `healthy(segment, index,
/// holder)` says whether an assigned piece counts.
pub fn assess(
    record: &Record,
    mut healthy: impl FnMut(u32, u16, &[u8]) -> bool,
) -> Vec<SegmentHealth> {
    let g = record.genesis();
    (0..g.segments.len() as u32)
        .map(|segment| {
            let mut ok = vec![false; usize::from(g.coded)];
            let mut assigned = vec![false; usize::from(g.coded)];
            for (index, holder) in record.holders(segment) {
                if let Some(slot) = ok.get_mut(usize::from(index)) {
                    *slot = healthy(segment, index, holder);
                    assigned[usize::from(index)] = true;
                }
            }
            let sources: Vec<u16> = (0..g.coded).filter(|&i| ok[usize::from(i)]).collect();
            let count = sources.len() as u16;
            // Lost pieces are rebuilt under their own index first, so the
            // new holder replaces the lost one in the record; then never
            // stored or unassigned indices, data pieces first.
            let lost = (0..g.coded).filter(|&i| assigned[usize::from(i)] && !ok[usize::from(i)]);
            let free = (0..g.coded).filter(|&i| !assigned[usize::from(i)]);
            let rebuild = lost
                .chain(free)
                .take(usize::from(g.n.saturating_sub(count)))
                .collect();
            SegmentHealth {
                segment,
                healthy: count,
                k: g.k,
                n: g.n,
                rebuild,
                sources,
            }
        })
        .collect()
}

/// Kademlia's key for some bytes: SHA-256, as libp2p-kad hashes peer ids
/// and record keys before comparing them.
pub fn kad_key(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

/// The `count` peers (peer id bytes) closest to `record` in Kademlia's metric.
pub fn stewards<'a>(record: &RecordId, peers: &'a [Vec<u8>], count: usize) -> Vec<&'a [u8]> {
    let target = kad_key(&record.0);
    let mut ranked: Vec<([u8; 32], &[u8])> = peers
        .iter()
        .map(|p| (xor(&target, &kad_key(p)), p.as_slice()))
        .collect();
    ranked.sort_unstable();
    ranked.dedup_by(|a, b| a.1 == b.1);
    ranked.into_iter().take(count).map(|(_, p)| p).collect()
}

/// Which of the live `stewards` repairs `segment` of `record`.
pub fn repairer<'a>(record: &RecordId, segment: u32, stewards: &[&'a [u8]]) -> Option<&'a [u8]> {
    stewards
        .iter()
        .map(|s| {
            let mut h = blake3::Hasher::new_derive_key("cairn v1 repairer");
            h.update(&record.0);
            h.update(&segment.to_be_bytes());
            h.update(s);
            (*h.finalize().as_bytes(), *s)
        })
        .max()
        .map(|(_, s)| s)
}

/// Rebuilding pieces failed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RebuildError {
    /// The downloaded pieces could not be decoded.
    #[error(transparent)]
    Erasure(#[from] crate::erasure::ErasureError),
    /// The record has no such segment or piece.
    #[error("segment {segment} piece {index} is not in the record")]
    Unknown {
        /// Segment number.
        segment: u32,
        /// Piece index.
        index: u16,
    },
    /// A rebuilt piece does not hash to the record's root: the sources
    /// were wrong in a way their own hashes did not show (never expected).
    #[error("rebuilt piece {index} of segment {segment} does not match its recorded hash")]
    Mismatch {
        /// Segment number.
        segment: u32,
        /// Piece index.
        index: u16,
    },
}

/// Rebuilds pieces `wanted` of `segment` from at least k verified `sources`
/// `(index, bytes)`. Works on ciphertext: decoding gives back the sealed
/// segment, re-encoding gives every piece, and each rebuilt piece must hash
/// to the root the record names, so a repairer can never store a wrong one.
pub fn rebuild(
    record: &Record,
    segment: u32,
    sources: &[(u16, &[u8])],
    wanted: &[u16],
) -> Result<Vec<(u16, Vec<u8>)>, RebuildError> {
    let g = record.genesis();
    let info = g
        .segments
        .get(segment as usize)
        .ok_or(RebuildError::Unknown { segment, index: 0 })?;
    let len = usize::try_from(info.sealed_len)
        .map_err(|_| RebuildError::Unknown { segment, index: 0 })?;
    let sealed = crate::erasure::decode(sources, g.k, g.coded, len)?;
    let shard = crate::erasure::shard_size(len, g.k);
    let needs_recovery = wanted.iter().any(|&i| i >= g.k);
    let recovery = if needs_recovery {
        crate::erasure::recovery(&sealed, g.k, g.coded)?
    } else {
        Vec::new()
    };
    let mut out = Vec::with_capacity(wanted.len());
    for &index in wanted {
        let piece = if index < g.k {
            crate::erasure::data_piece(&sealed, shard, usize::from(index)).into_owned()
        } else {
            recovery
                .get(usize::from(index - g.k))
                .cloned()
                .ok_or(RebuildError::Unknown { segment, index })?
        };
        let expected = g
            .piece_hash(segment, index)
            .ok_or(RebuildError::Unknown { segment, index })?;
        if *blake3::hash(&piece).as_bytes() != expected {
            return Err(RebuildError::Mismatch { segment, index });
        }
        out.push((index, piece));
    }
    Ok(out)
}

/// A queued repair, as [`RepairQueue::pop`] returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job<K> {
    /// What to repair (e.g. record id and segment).
    pub key: K,
    /// Healthy pieces minus k when queued (or last updated).
    pub margin: i32,
    /// When it was first queued (milliseconds, caller's clock).
    pub queued_at: u64,
}

/// A bounded repair queue, most urgent first.
///
/// Pushing a key already queued updates its urgency and keeps its age. When
/// full, a job more urgent than the least urgent one evicts it; otherwise the
/// push is refused (the caller finds the segment again on its next pass).
#[derive(Debug)]
pub struct RepairQueue<K: Ord + Hash + Clone> {
    capacity: usize,
    /// Ordered by (margin, queued_at, key): the first entry is the most urgent.
    order: BTreeMap<(i32, u64, K), ()>,
    index: HashMap<K, (i32, u64)>,
}

impl<K: Ord + Hash + Clone> RepairQueue<K> {
    /// A queue holding at most `capacity` jobs.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            order: BTreeMap::new(),
            index: HashMap::new(),
        }
    }

    /// Jobs waiting.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Queues or updates a job; returns whether it is queued afterwards.
    pub fn push(&mut self, key: K, margin: i32, now: u64) -> bool {
        if let Some(&(old_margin, queued_at)) = self.index.get(&key) {
            self.order.remove(&(old_margin, queued_at, key.clone()));
            self.order.insert((margin, queued_at, key.clone()), ());
            self.index.insert(key, (margin, queued_at));
            return true;
        }
        if self.index.len() >= self.capacity {
            let Some(((worst_margin, worst_at, worst), _)) =
                self.order.last_key_value().map(|(k, v)| (k.clone(), *v))
            else {
                return false;
            };
            if (margin, now) >= (worst_margin, worst_at) {
                return false;
            }
            self.order.remove(&(worst_margin, worst_at, worst.clone()));
            self.index.remove(&worst);
        }
        self.order.insert((margin, now, key.clone()), ());
        self.index.insert(key, (margin, now));
        true
    }

    /// Removes and returns the most urgent job.
    pub fn pop(&mut self) -> Option<Job<K>> {
        let ((margin, queued_at, key), ()) = self.order.pop_first()?;
        self.index.remove(&key);
        Some(Job {
            key,
            margin,
            queued_at,
        })
    }

    /// Drops a job (repaired by someone else, record deleted).
    pub fn remove(&mut self, key: &K) {
        if let Some((margin, at)) = self.index.remove(key) {
            self.order.remove(&(margin, at, key.clone()));
        }
    }
}

/// A token bucket: `rate` bytes per second, bursts up to `burst` bytes.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: u64,
    burst: u64,
    tokens: u64,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket at time `now_ms`.
    pub fn new(rate: u64, burst: u64, now_ms: u64) -> Self {
        let burst = burst.max(1);
        Self {
            rate: rate.max(1),
            burst,
            tokens: burst,
            last_ms: now_ms,
        }
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        let add = u128::from(elapsed) * u128::from(self.rate) / 1000;
        self.tokens = (u128::from(self.tokens) + add).min(u128::from(self.burst)) as u64;
        // Advance only once something is credited, so many tiny steps still add up.
        if add > 0 || self.tokens == self.burst {
            self.last_ms = now_ms;
        }
    }

    /// Takes `bytes` (at most one burst) if available; otherwise the
    /// milliseconds to wait before they will be.
    pub fn take(&mut self, bytes: u64, now_ms: u64) -> Result<(), u64> {
        self.refill(now_ms);
        let bytes = bytes.min(self.burst);
        if self.tokens >= bytes {
            self.tokens -= bytes;
            Ok(())
        } else {
            let missing = bytes - self.tokens;
            Err((missing * 1000).div_ceil(self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::FileId;
    use crate::keys::SecretKey;
    use crate::record::{AnyAuthor, Change, Genesis, SegmentInfo};
    use proptest::prelude::*;

    fn record(k: u16, n: u16, coded: u16, segments: u32) -> Record {
        let owner = SecretKey::from_bytes([1; 32]);
        let genesis = Genesis {
            file_id: FileId([2; 32]),
            owner: owner.public(),
            k,
            n,
            coded,
            created_at: 0,
            segments: (0..segments)
                .map(|_| SegmentInfo {
                    sealed_len: 1,
                    hashes: vec![[0; 32]; usize::from(coded)],
                })
                .collect(),
        };
        let assign = (0..segments).flat_map(|s| (0..n).map(move |i| (s, i, vec![i as u8])));
        Record::create(genesis, &owner, assign, 10).unwrap()
    }

    #[test]
    fn thresholds() {
        let p = RepairPolicy::default();
        assert_eq!(p.threshold(16, 24), 19);
        assert_eq!(p.threshold(4, 8), 6);
        assert_eq!(p.threshold(3, 3), 3);
        let halfway = RepairPolicy {
            threshold: Threshold::Halfway,
        };
        assert_eq!(halfway.threshold(16, 24), 20);
        let eager = RepairPolicy {
            threshold: Threshold::Eager,
        };
        assert_eq!(eager.threshold(4, 8), 7);
        let at = |t| RepairPolicy {
            threshold: Threshold::AtMost(t),
        };
        assert_eq!(at(1).threshold(4, 8), 4);
        assert_eq!(at(30).threshold(4, 8), 7);
    }

    #[test]
    fn assess_counts_healthy_and_rebuilds_lowest_missing_indices() {
        let r = record(4, 8, 10, 2);
        // Holders 1 and 5 are gone.
        let h = assess(&r, |_, _, holder| holder != [1] && holder != [5]);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].healthy, 6);
        assert_eq!(h[0].rebuild, vec![1, 5]);
        assert_eq!(h[0].sources, vec![0, 2, 3, 4, 6, 7]);
        assert!(h[0].needs_repair(&RepairPolicy::default()));
        // Index 3 was never stored (e.g. a spare): lost indices come first.
        let owner = SecretKey::from_bytes([1; 32]);
        let mut sparse = r.clone();
        sparse
            .update(
                &owner,
                5,
                vec![Change::Unassign {
                    segment: 0,
                    index: 3,
                }],
                &AnyAuthor,
            )
            .unwrap();
        let h = assess(&sparse, |_, _, holder| holder != [6]);
        assert_eq!(h[0].healthy, 6);
        assert_eq!(h[0].rebuild, vec![6, 3]);
        // Only one missing: not yet under the halfway threshold, but eager repairs.
        let h = assess(&r, |_, _, holder| holder != [1]);
        assert!(!h[0].needs_repair(&RepairPolicy::default()));
        assert!(h[0].needs_repair(&RepairPolicy {
            threshold: Threshold::Eager
        }));
        assert_eq!(h[0].rebuild, vec![1]);
        // Below k: lost, and no repair is attempted.
        let h = assess(&r, |_, i, _| i < 3);
        assert!(h[0].is_lost());
        assert!(!h[0].needs_repair(&RepairPolicy::default()));
    }

    #[test]
    fn stewards_follow_kademlia_distance() {
        let peers: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; 38]).collect();
        let id = RecordId([9; 32]);
        let s = stewards(&id, &peers, 5);
        assert_eq!(s.len(), 5);
        let target = kad_key(&id.0);
        let worst = xor(&target, &kad_key(s[4]));
        for p in &peers {
            if !s.contains(&p.as_slice()) {
                assert!(xor(&target, &kad_key(p)) > worst);
            }
        }
    }

    proptest! {
        #[test]
        fn exactly_one_repairer_whatever_the_order(seg in any::<u32>(), mut order in Just((0..8u8).collect::<Vec<_>>()).prop_shuffle()) {
            let peers: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i]).collect();
            let view: Vec<&[u8]> = peers.iter().map(|p| p.as_slice()).collect();
            let chosen = repairer(&RecordId([3; 32]), seg, &view).unwrap().to_vec();
            order.truncate(8);
            let shuffled: Vec<&[u8]> = order.iter().map(|&i| peers[usize::from(i)].as_slice()).collect();
            prop_assert_eq!(repairer(&RecordId([3; 32]), seg, &shuffled).unwrap(), chosen.as_slice());
        }

        #[test]
        fn queue_pops_most_urgent_first_and_stays_bounded(jobs in proptest::collection::vec((0u8..50, -2i32..8), 0..100)) {
            let mut q = RepairQueue::new(10);
            for (t, (key, margin)) in jobs.iter().enumerate() {
                q.push(*key, *margin, t as u64);
                prop_assert!(q.len() <= 10);
            }
            let mut last = i32::MIN;
            while let Some(job) = q.pop() {
                prop_assert!(job.margin >= last);
                last = job.margin;
            }
        }

        #[test]
        fn bucket_never_exceeds_its_rate(takes in proptest::collection::vec((1u64..5_000, 0u64..50), 1..200)) {
            let rate = 10_000; // bytes per second
            let mut b = TokenBucket::new(rate, 5_000, 0);
            let mut now = 0;
            let mut granted = 0u64;
            for (bytes, step) in takes {
                now += step;
                match b.take(bytes, now) {
                    Ok(()) => granted += bytes,
                    Err(wait) => prop_assert!(wait > 0),
                }
            }
            // Burst plus what the elapsed time allows.
            prop_assert!(granted <= 5_000 + now * rate / 1000);
        }
    }

    #[test]
    fn a_full_queue_evicts_the_least_urgent() {
        let mut q = RepairQueue::new(2);
        assert!(q.push("a", 3, 0));
        assert!(q.push("b", 1, 1));
        assert!(!q.push("c", 5, 2)); // less urgent than everything: refused
        assert!(q.push("d", 0, 3)); // evicts "a"
        assert_eq!(q.pop().map(|j| j.key), Some("d"));
        assert_eq!(q.pop().map(|j| j.key), Some("b"));
        assert!(q.is_empty());
        // Updating keeps the original age.
        q.push("x", 4, 10);
        q.push("x", 2, 20);
        assert_eq!(
            q.pop(),
            Some(Job {
                key: "x",
                margin: 2,
                queued_at: 10
            })
        );
    }

    #[test]
    fn rebuild_regenerates_exactly_the_lost_pieces() {
        let sealed: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (k, coded) = (4u16, 7u16);
        let pieces = crate::erasure::encode(&sealed, k, coded).unwrap();
        let owner = SecretKey::from_bytes([1; 32]);
        let genesis = Genesis {
            file_id: FileId([2; 32]),
            owner: owner.public(),
            k,
            n: 6,
            coded,
            created_at: 0,
            segments: vec![SegmentInfo {
                sealed_len: sealed.len() as u64,
                hashes: pieces.iter().map(|p| *blake3::hash(p).as_bytes()).collect(),
            }],
        };
        let r = Record::create(genesis, &owner, [], 1).unwrap();
        // Lost: data piece 1 and recovery piece 5; sources: any other four.
        let sources: Vec<(u16, &[u8])> = [0u16, 2, 4, 6]
            .iter()
            .map(|&i| (i, pieces[usize::from(i)].as_slice()))
            .collect();
        let rebuilt = rebuild(&r, 0, &sources, &[1, 5]).unwrap();
        assert_eq!(
            rebuilt,
            vec![(1, pieces[1].clone()), (5, pieces[5].clone())]
        );
        // A source that lies (right length, wrong bytes) is caught by the hash check.
        let mut bad = pieces[0].clone();
        bad[3] ^= 1;
        let lying: Vec<(u16, &[u8])> =
            vec![(0, &bad), (2, &pieces[2]), (4, &pieces[4]), (6, &pieces[6])];
        assert!(matches!(
            rebuild(&r, 0, &lying, &[1]),
            Err(RebuildError::Mismatch {
                segment: 0,
                index: 1
            })
        ));
        // Too few sources.
        assert!(matches!(
            rebuild(&r, 0, &sources[..3], &[1]),
            Err(RebuildError::Erasure(_))
        ));
    }

    #[test]
    fn bucket_waits_then_grants() {
        let mut b = TokenBucket::new(1000, 1000, 0);
        assert_eq!(b.take(1000, 0), Ok(()));
        assert_eq!(b.take(500, 0), Err(500));
        assert_eq!(b.take(500, 499), Err(1));
        assert_eq!(b.take(500, 500), Ok(()));
    }
}
