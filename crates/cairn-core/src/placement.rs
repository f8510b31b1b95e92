//! Placement: which nodes receive a segment's pieces.
//!
//! Put, repair and the simulator all call [`select`] (or a reused
//! [`Selector`]), so one set of rules decides where every piece goes.
//!
//! # Rules
//!
//! - **Never co-locate.** No two pieces of a segment on one node, on one
//!   network ([`NetPrefix`]: the /24 of an IPv4 address, the /64 of an IPv6
//!   address) or in one declared failure domain ([`ZoneId`], from `--zone`).
//!   This holds within the returned list *and* against `existing`, the sites
//!   of the segment's pieces that are already stored (repair passes the
//!   surviving holders). A network or zone that is unknown (`None`) is not a
//!   constraint: a node cannot be grouped with others by something nobody
//!   knows. Loopback and unspecified addresses have no network, so a devnet of
//!   processes on 127.0.0.1 is not one network; private ranges (10/8,
//!   192.168/16, ...) count like any other /24.
//! - **Exclusions.** A node that reported less free space than the piece, or
//!   whose audit score is below [`Policy::min_audit_score`] (disqualified),
//!   is never chosen. To keep a node out for other reasons (it just failed,
//!   it is being lost), leave it out of `candidates`.
//! - **Preference.** Weighted rendezvous hashing: each eligible candidate gets
//!   `rank = -ln(u) / w`, where `u ∈ (0, 1)` comes from BLAKE3 of the segment
//!   key and the peer id, and `w` is [`weight`]; the list is in increasing
//!   rank. The first place goes to a candidate with probability exactly
//!   `w / Σw`, every uploader computes the same order for a segment, and a
//!   node joining or leaving moves only its own share.
//! - **Vetting.** A candidate that is not vetted (it has not yet passed
//!   enough audits, see [`crate::score`]) gets at most
//!   `⌊count × unvetted_share + r⌋` of the first `count` places, where
//!   `r ∈ [0, 1)` is drawn from the segment key: stochastic rounding, so on
//!   average exactly `unvetted_share` of the chosen pieces go to unvetted
//!   nodes, and never more than `⌈count × unvetted_share⌉` in one segment.
//!   This works for n = 24 (with 6 spares, 30 places: 1 or 2 unvetted) and
//!   for small networks (12 places: 0 or 1, 0.6 on average), where rounding
//!   down would starve new nodes of the pieces they need to get vetted. If
//!   too few vetted candidates exist (a fresh network, where every node is
//!   unvetted), unvetted candidates fill the remaining places, best rank
//!   first, so a new network works.
//!
//! # The list
//!
//! [`select`] returns candidate indices, in order: the first `count` are the
//! choice, the rest (up to [`Policy::fallbacks`] more) are fallbacks in
//! order. Every element is distinct in node, network and zone from every
//! other element and from `existing`, so any subset of the list can be
//! stored together: [`crate::transfer::UploadPlan`], which takes
//! candidates in order and moves to the next one when a piece fails, keeps
//! its one-piece-per-node guarantee and gains the network and zone ones.
//! Fallbacks list the remaining vetted candidates before the remaining
//! unvetted ones, so a failure is replaced by a vetted node whenever one is
//! left. The list is built greedily in rank order; with both networks and
//! zones constrained, a greedy pick can occasionally block two others that
//! would both have fit (a maximum set is a bipartite matching), which only
//! matters on tiny, oddly shaped networks.
//!
//! # Weight
//!
//! `w = capacity × audit × uptime × latency`, each factor in `(0, 1]`
//! (except a capacity of 0 for a node with no free space, never chosen):
//!
//! - `capacity = free / (free + capacity_half_bytes)`: a node with
//!   [`Policy::capacity_half_bytes`] free (default 100 GiB) weighs half as
//!   much as one with unlimited space, a nearly full node little, and large
//!   nodes all about the same (so no single huge node draws every piece).
//!   Unknown free space counts as `capacity_half_bytes` free (0.5).
//! - `audit = max(0.01, (score − min) / (1 − min))` with `min` =
//!   [`Policy::min_audit_score`]: the margin above the disqualification line.
//!   Scores all lie in `[0.96, 1]`, so the raw score would hardly separate a
//!   perfect node from one about to be disqualified; the margin does (a node
//!   at 0.98 weighs half a perfect one). Unknown counts as 1, the starting
//!   score of a new node (see [`crate::score`]).
//! - `uptime = max(0.01, uptime)`: the chance the piece is reachable when
//!   asked. Unknown counts as 1 (innocent until observed; see
//!   [`crate::liveness`]).
//! - `latency = latency_half_ms / (latency_half_ms + latency_ms)`: mild on
//!   purpose (default half point 200 ms: 20 ms gives 0.91, 100 ms 0.67), since
//!   a strong preference for near nodes would concentrate pieces in one
//!   region, which is what failure-domain placement tries to avoid. Unknown
//!   counts as `latency_half_ms` (0.5).
//!
//! The 0.01 floors keep every qualified node possible: a node exactly on the
//! line still gets a hundredth of a perfect node's share.
//!
//! # Cost
//!
//! One keyed BLAKE3 of a peer id and one logarithm per candidate, then a
//! partial sort: `O(c + m log m)` for `c` candidates and a list of `m`
//! (the full sort `O(c log c)` only if conflicts exhaust the head). A reused
//! [`Selector`] keeps its buffers, so steady-state calls do not allocate.

use std::collections::HashSet;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// BLAKE3 key-derivation context of the per-segment rendezvous key.
const RANK_CONTEXT: &str = "cairn v2 placement rank";
/// BLAKE3 key-derivation context of the per-segment unvetted-quota draw.
const QUOTA_CONTEXT: &str = "cairn v2 placement unvetted quota";
/// Smallest audit and uptime factor of a qualified node.
const FACTOR_FLOOR: f64 = 0.01;

/// A network, for the one-piece-per-network rule: the /24 of an IPv4
/// address or the /64 of an IPv6 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NetPrefix {
    /// The first three octets of an IPv4 address.
    V4([u8; 3]),
    /// The first eight bytes of an IPv6 address.
    V6([u8; 8]),
}

impl NetPrefix {
    /// The network of `ip`, or `None` for loopback and unspecified addresses,
    /// which say nothing about where a node is (every process of a local
    /// devnet is on 127.0.0.1). IPv4-mapped IPv6 addresses count as IPv4, so
    /// one host is one network whichever way it is reached.
    pub fn of(ip: IpAddr) -> Option<Self> {
        let ip = ip.to_canonical();
        if ip.is_loopback() || ip.is_unspecified() {
            return None;
        }
        Some(match ip {
            IpAddr::V4(v4) => {
                let [a, b, c, _] = v4.octets();
                Self::V4([a, b, c])
            }
            IpAddr::V6(v6) => {
                let o = v6.octets();
                Self::V6([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
            }
        })
    }
}

impl fmt::Display for NetPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4([a, b, c]) => write!(f, "{a}.{b}.{c}.0/24"),
            Self::V6(p) => {
                let mut o = [0u8; 16];
                o[..8].copy_from_slice(p);
                write!(f, "{}/64", std::net::Ipv6Addr::from(o))
            }
        }
    }
}

/// A declared failure domain (`--zone`), interned as a 64-bit digest of its
/// name so candidates stay cheap to copy and compare. Two different names
/// sharing a digest (odds 2⁻⁶⁴ per pair) would only keep their nodes apart
/// needlessly, never put two pieces together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ZoneId(pub u64);

impl ZoneId {
    /// The zone called `name`. Surrounding white space and ASCII case are
    /// ignored: `"EU-West "` and `"eu-west"` are one zone, since operators
    /// type these by hand.
    pub fn named(name: &str) -> Self {
        let norm = name.trim().to_ascii_lowercase();
        let h = blake3::derive_key("cairn v1 zone id", norm.as_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&h[..8]);
        Self(u64::from_le_bytes(b))
    }
}

/// A node that could hold a piece, with what is known about it. `None`
/// means unknown; see the module docs for how unknowns weigh.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// The node's peer id bytes.
    pub peer: Vec<u8>,
    /// Its network, from the address we reach it at.
    pub network: Option<NetPrefix>,
    /// Its declared failure domain.
    pub zone: Option<ZoneId>,
    /// Free bytes it reported.
    pub free_bytes: Option<u64>,
    /// Audit score in `[0, 1]` ([`crate::score::Reputation::score`]).
    pub audit_score: Option<f64>,
    /// Uptime estimate in `[0, 1]` ([`crate::liveness::Liveness::uptime`]).
    pub uptime: Option<f64>,
    /// Round-trip latency.
    pub latency_ms: Option<u32>,
    /// It has passed enough audits to be trusted with an unlimited share.
    pub vetted: bool,
}

impl Candidate {
    /// A node about which nothing is known yet: no network, no zone, neutral
    /// scores, not vetted.
    pub fn new(peer: Vec<u8>) -> Self {
        Self {
            peer,
            network: None,
            zone: None,
            free_bytes: None,
            audit_score: None,
            uptime: None,
            latency_ms: None,
            vetted: false,
        }
    }

    /// Where this node is, for `existing`.
    pub fn site(&self) -> Site<'_> {
        Site {
            peer: &self.peer,
            network: self.network,
            zone: self.zone,
        }
    }
}

/// Where a piece of the segment already is: its node, network and zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Site<'a> {
    /// The holder's peer id bytes.
    pub peer: &'a [u8],
    /// Its network.
    pub network: Option<NetPrefix>,
    /// Its zone.
    pub zone: Option<ZoneId>,
}

/// Tunable placement parameters; [`Policy::default`] documents the defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Average share of the first `count` places that may go to unvetted
    /// nodes while vetted ones are available. Default 0.05, Storj's share
    /// of uploads sent to new nodes: about 1.5 of a default segment's 30
    /// coded pieces (24 + 6 spares), one piece in a segment of 24 that could
    /// lose 8, and 0.6 per segment on a 12-node network.
    pub unvetted_share: f64,
    /// Candidates with an audit score below this are disqualified and never
    /// chosen. Default [`crate::score::DISQUALIFY_BELOW`] (0.96).
    pub min_audit_score: f64,
    /// Fallbacks listed after the first `count`. Default 32: more than the
    /// failures an upload of 30 pieces should ever see, and it bounds the
    /// work per call on a 10,000-node candidate list.
    pub fallbacks: usize,
    /// Free space at which the capacity factor is one half. Default 100 GiB.
    pub capacity_half_bytes: u64,
    /// Latency at which the latency factor is one half. Default 200 ms.
    pub latency_half_ms: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            unvetted_share: 0.05,
            min_audit_score: crate::score::DISQUALIFY_BELOW,
            fallbacks: 32,
            capacity_half_bytes: 100 << 30,
            latency_half_ms: 200,
        }
    }
}

/// Clamps to `[0, 1]`, with NaN as 0.
fn unit(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

/// `x / (x + half)`, or 1 when `half` is 0.
fn saturating(x: f64, half: f64) -> f64 {
    if half <= 0.0 { 1.0 } else { x / (x + half) }
}

/// A candidate's preference weight (see the module docs for the formula);
/// 0 for a node with no free space.
pub fn weight(c: &Candidate, policy: &Policy) -> f64 {
    let half_bytes = policy.capacity_half_bytes as f64;
    let capacity = match c.free_bytes {
        None => 0.5,
        Some(0) => 0.0,
        Some(f) => saturating(f as f64, half_bytes),
    };
    let min = unit(policy.min_audit_score);
    let audit = c.audit_score.map_or(1.0, |s| {
        let margin = if min >= 1.0 {
            1.0
        } else {
            (s - min) / (1.0 - min)
        };
        unit(margin).max(FACTOR_FLOOR)
    });
    let uptime = c.uptime.map_or(1.0, |u| unit(u).max(FACTOR_FLOOR));
    let half_ms = f64::from(policy.latency_half_ms);
    let latency = match c.latency_ms {
        _ if half_ms <= 0.0 => 1.0,
        None => 0.5,
        Some(l) => half_ms / (half_ms + f64::from(l)),
    };
    capacity * audit * uptime * latency
}

/// Whether a candidate may hold a piece of `piece_bytes` at all.
fn eligible(c: &Candidate, piece_bytes: u64, policy: &Policy) -> bool {
    // `!(s < min)` would let NaN through; `s >= min` does not.
    c.free_bytes.is_none_or(|f| f >= piece_bytes)
        && c.audit_score.is_none_or(|s| s >= policy.min_audit_score)
}

/// The most unvetted nodes among the first `count` places of a segment:
/// `count × share` rounded up or down at random, drawn from the key.
fn unvetted_quota(key: &[u8; 32], count: usize, share: f64) -> usize {
    let h = blake3::derive_key(QUOTA_CONTEXT, key);
    let r = unit_interval(&h);
    let q = (count as f64 * unit(share) + r).floor();
    // `q` is a small non-negative integer-valued float; the cast is exact.
    (q as usize).min(count)
}

/// A uniform value in `(0, 1)` from the first 8 bytes of a digest: 53 bits,
/// offset by half a step so neither end is reached (`ln(0)` is infinite).
fn unit_interval(h: &[u8; 32]) -> f64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    let x = u64::from_le_bytes(b) >> 11;
    (x as f64 + 0.5) / (1u64 << 53) as f64
}

/// Compares peers by 128 bits of their keyed digest: equal peers have equal
/// digests, and distinct peers sharing 128 bits of a keyed BLAKE3 output is
/// cryptographically out of reach, so this is node identity without keeping
/// borrowed peer ids in reusable buffers.
fn peer_id(h: &[u8; 32]) -> u128 {
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[8..24]);
    u128::from_le_bytes(b)
}

/// A hasher for the selector's sets. Their keys are digests or short
/// prefixes chosen by nobody who could aim for collisions within one call,
/// so SipHash's flooding resistance buys nothing and its cost showed up as
/// a fifth of a 10,000-candidate placement.
#[derive(Default, Clone, Copy)]
struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        // Final avalanche (splitmix64) so the low bits hashbrown uses are mixed.
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

type FastSet<T> = HashSet<T, BuildHasherDefault<FastHasher>>;

#[derive(Clone, Copy, Debug)]
struct Ranked {
    rank: f64,
    peer: u128,
    index: usize,
}

fn by_rank(a: &Ranked, b: &Ranked) -> std::cmp::Ordering {
    // Ties (2⁻⁵³ odds) fall back to the peer digest, so the order does not
    // depend on the order of the candidate list; then to the index, for
    // duplicate entries of one peer.
    a.rank
        .total_cmp(&b.rank)
        .then(a.peer.cmp(&b.peer))
        .then(a.index.cmp(&b.index))
}

/// Reusable buffers for [`select`]: a simulator placing millions of
/// segments over 10,000 candidates calls [`Selector::select`] on one
/// `Selector` and allocates nothing once the buffers have grown.
#[derive(Debug, Default)]
pub struct Selector {
    ranked: Vec<Ranked>,
    deferred: Vec<usize>,
    out: Vec<usize>,
    peers: FastSet<u128>,
    nets: FastSet<NetPrefix>,
    zones: FastSet<ZoneId>,
}

impl Selector {
    /// A selector with empty buffers.
    pub fn new() -> Self {
        Self::default()
    }

    /// [`select`], returning a slice of this selector's buffer.
    pub fn select(
        &mut self,
        key: &[u8; 32],
        count: usize,
        piece_bytes: u64,
        candidates: &[Candidate],
        existing: &[Site<'_>],
        policy: &Policy,
    ) -> &[usize] {
        self.ranked.clear();
        self.deferred.clear();
        self.out.clear();
        self.peers.clear();
        self.nets.clear();
        self.zones.clear();

        let seg = blake3::derive_key(RANK_CONTEXT, key);
        let limit = count.saturating_add(policy.fallbacks);
        for s in existing {
            self.peers
                .insert(peer_id(blake3::keyed_hash(&seg, s.peer).as_bytes()));
            self.nets.extend(s.network);
            self.zones.extend(s.zone);
        }
        for (index, c) in candidates.iter().enumerate() {
            if !eligible(c, piece_bytes, policy) {
                continue;
            }
            let w = weight(c, policy);
            if !(w > 0.0 && w.is_finite()) {
                continue;
            }
            let h = blake3::keyed_hash(&seg, &c.peer);
            let h = h.as_bytes();
            self.ranked.push(Ranked {
                rank: -unit_interval(h).ln() / w,
                peer: peer_id(h),
                index,
            });
        }

        // Only the head of the order is usually needed: partition it off in
        // linear time and sort just that. Conflicts and deferrals may walk
        // past it; then the next, four times larger, slice is partitioned off
        // and sorted. Either way the walk sees the same total order.
        let n = self.ranked.len();
        let mut sorted = 0;
        let mut grow = limit.saturating_mul(2).saturating_add(16);

        let quota = unvetted_quota(key, count, policy.unvetted_share);
        let mut unvetted = 0;
        let mut i = 0;
        while self.out.len() < limit {
            if i == sorted {
                if sorted == n {
                    break;
                }
                let end = sorted.saturating_add(grow).min(n);
                let rest = &mut self.ranked[sorted..];
                if end < n {
                    rest.select_nth_unstable_by(end - sorted, by_rank);
                }
                rest[..end - sorted].sort_unstable_by(by_rank);
                sorted = end;
                grow = grow.saturating_mul(4);
            }
            let r = self.ranked[i];
            i += 1;
            let Some(c) = candidates.get(r.index) else {
                continue;
            };
            if self.conflicts(r.peer, c) {
                continue;
            }
            if c.vetted {
                self.take(r, c);
            } else if unvetted < quota && self.out.len() < count {
                unvetted += 1;
                self.take(r, c);
            } else {
                // Waits until every vetted candidate has had its turn.
                self.deferred.push(i - 1);
            }
        }
        let mut d = 0;
        while self.out.len() < limit && d < self.deferred.len() {
            let r = self.ranked[self.deferred[d]];
            d += 1;
            if let Some(c) = candidates.get(r.index)
                && !self.conflicts(r.peer, c)
            {
                self.take(r, c);
            }
        }
        &self.out
    }

    fn conflicts(&self, peer: u128, c: &Candidate) -> bool {
        self.peers.contains(&peer)
            || c.network.is_some_and(|n| self.nets.contains(&n))
            || c.zone.is_some_and(|z| self.zones.contains(&z))
    }

    fn take(&mut self, r: Ranked, c: &Candidate) {
        self.peers.insert(r.peer);
        self.nets.extend(c.network);
        self.zones.extend(c.zone);
        self.out.push(r.index);
    }
}

/// Chooses nodes for `count` pieces of the segment with rendezvous key
/// `key`, each piece `piece_bytes` long, among `candidates`, given the
/// segment's pieces already stored at `existing`. Returns indices into
/// `candidates`: the first `count` (or fewer, if fewer fit) are the choice,
/// then up to `policy.fallbacks` fallbacks, all pairwise apart in node,
/// network and zone, and apart from `existing`. Deterministic: the same
/// inputs give the same list.
pub fn select(
    key: &[u8; 32],
    count: usize,
    piece_bytes: u64,
    candidates: &[Candidate],
    existing: &[Site<'_>],
    policy: &Policy,
) -> Vec<usize> {
    Selector::new()
        .select(key, count, piece_bytes, candidates, existing, policy)
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn cand(i: u32) -> Candidate {
        Candidate::new(i.to_be_bytes().to_vec())
    }

    fn vetted(n: u32) -> Vec<Candidate> {
        (0..n)
            .map(|i| Candidate {
                vetted: true,
                ..cand(i)
            })
            .collect()
    }

    fn key(i: u32) -> [u8; 32] {
        blake3::hash(&i.to_le_bytes()).into()
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> Option<NetPrefix> {
        NetPrefix::of(IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
    }

    #[test]
    fn networks_are_slash_24_and_slash_64_and_loopback_is_none() {
        assert_eq!(v4(10, 0, 0, 1), v4(10, 0, 0, 200));
        assert_ne!(v4(10, 0, 0, 1), v4(10, 0, 1, 1));
        assert_eq!(v4(192, 168, 1, 7), Some(NetPrefix::V4([192, 168, 1])));
        assert_eq!(v4(127, 0, 0, 1), None);
        assert_eq!(v4(127, 3, 2, 1), None);
        assert_eq!(v4(0, 0, 0, 0), None);
        assert_eq!(NetPrefix::of(IpAddr::V6(Ipv6Addr::LOCALHOST)), None);
        assert_eq!(NetPrefix::of(IpAddr::V6(Ipv6Addr::UNSPECIFIED)), None);
        let a: Ipv6Addr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        let (a, b, c) = (
            NetPrefix::of(a.into()),
            NetPrefix::of(b.into()),
            NetPrefix::of(c.into()),
        );
        assert!(a.is_some());
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mapped: Ipv6Addr = "::ffff:10.0.0.9".parse().unwrap();
        assert_eq!(NetPrefix::of(mapped.into()), v4(10, 0, 0, 1));
        assert_eq!(v4(10, 0, 0, 1).unwrap().to_string(), "10.0.0.0/24");
        assert_eq!(a.unwrap().to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn zone_names_ignore_case_and_spaces() {
        assert_eq!(ZoneId::named("EU-West "), ZoneId::named("eu-west"));
        assert_ne!(ZoneId::named("eu-west"), ZoneId::named("eu-east"));
    }

    /// Candidates drawn from few networks and zones, so conflicts are common.
    fn crowded() -> impl Strategy<Value = Vec<Candidate>> {
        prop::collection::vec(
            (
                0u32..60,
                prop::option::of(0u8..8),
                prop::option::of(0u64..6),
                any::<bool>(),
                prop::option::of(0.9f64..1.0),
                prop::option::of(0u64..4),
            ),
            0..60,
        )
        .prop_map(|v| {
            v.into_iter()
                .map(|(p, net, zone, vet, score, free)| Candidate {
                    network: net.map(|n| NetPrefix::V4([10, 0, n])),
                    zone: zone.map(ZoneId),
                    vetted: vet,
                    audit_score: score,
                    free_bytes: free,
                    ..cand(p)
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn never_co_locates_and_respects_exclusions(
            k in any::<[u8; 32]>(),
            cands in crowded(),
            existing in crowded(),
            count in 0usize..30,
            fallbacks in 0usize..40,
            piece in 0u64..3,
        ) {
            let existing: Vec<Candidate> = existing.into_iter().take(5).collect();
            let sites: Vec<Site<'_>> = existing.iter().map(Candidate::site).collect();
            let policy = Policy { fallbacks, ..Policy::default() };
            let list = select(&k, count, piece, &cands, &sites, &policy);
            prop_assert!(list.len() <= count + fallbacks);
            let mut peers = HashSet::new();
            let mut nets = HashSet::new();
            let mut zones = HashSet::new();
            for s in &sites {
                peers.insert(s.peer.to_vec());
                nets.extend(s.network);
                zones.extend(s.zone);
            }
            for &i in &list {
                let c = &cands[i];
                prop_assert!(peers.insert(c.peer.clone()), "node twice");
                if let Some(n) = c.network { prop_assert!(nets.insert(n), "network twice"); }
                if let Some(z) = c.zone { prop_assert!(zones.insert(z), "zone twice"); }
                prop_assert!(c.free_bytes.is_none_or(|f| f >= piece), "full node chosen");
                prop_assert!(c.audit_score.is_none_or(|s| s >= 0.96), "disqualified node chosen");
            }
            // Deterministic, also through a reused selector.
            prop_assert_eq!(&list, &select(&k, count, piece, &cands, &sites, &policy));
            let mut sel = Selector::new();
            sel.select(&key(1), 5, 0, &cands, &[], &policy);
            prop_assert_eq!(&list[..], sel.select(&k, count, piece, &cands, &sites, &policy));
        }

        #[test]
        fn the_list_is_maximal_and_a_shorter_limit_is_a_prefix(
            k in any::<[u8; 32]>(),
            cands in crowded(),
            count in 0usize..30,
            fallbacks in 0usize..20,
        ) {
            let all = Policy { fallbacks: usize::MAX, ..Policy::default() };
            let full = select(&k, count, 1, &cands, &[], &all);
            let short = select(&k, count, 1, &cands, &[], &Policy { fallbacks, ..Policy::default() });
            prop_assert_eq!(&full[..short.len()], &short[..]);
            prop_assert_eq!(short.len(), full.len().min(count + fallbacks));
            // Every eligible candidate left out conflicts with one listed.
            for (i, c) in cands.iter().enumerate() {
                if full.contains(&i) || !eligible(c, 1, &all) { continue; }
                let clash = full.iter().any(|&j| {
                    let o = &cands[j];
                    o.peer == c.peer
                        || (c.network.is_some() && o.network == c.network)
                        || (c.zone.is_some() && o.zone == c.zone)
                });
                prop_assert!(clash, "candidate {} left out without a conflict", i);
            }
        }

        #[test]
        fn unvetted_share_holds_whenever_vetted_nodes_remain(
            k in any::<[u8; 32]>(),
            cands in crowded(),
            count in 1usize..30,
            share in 0.0f64..0.5,
        ) {
            let policy = Policy { unvetted_share: share, fallbacks: usize::MAX, ..Policy::default() };
            let list = select(&k, count, 1, &cands, &[], &policy);
            let vetted_listed = list.iter().filter(|&&i| cands[i].vetted).count();
            let head = &list[..count.min(list.len())];
            let unvetted_head = head.iter().filter(|&&i| !cands[i].vetted).count();
            let cap = (count as f64 * share).ceil() as usize;
            // Over the quota only as far as vetted nodes ran out.
            prop_assert!(unvetted_head <= cap.max(count.saturating_sub(vetted_listed)));
            // Fallbacks: vetted ones before unvetted ones.
            let tail = &list[head.len()..];
            if let Some(first_unvetted) = tail.iter().position(|&i| !cands[i].vetted) {
                prop_assert!(tail[first_unvetted..].iter().all(|&i| !cands[i].vetted));
            }
        }
    }

    #[test]
    fn unvetted_quota_is_honoured_and_averages_the_share() {
        // 40 vetted and 40 unvetted nodes, no shared networks or zones.
        let mut cands = vetted(40);
        cands.extend((40..80).map(cand));
        let policy = Policy::default();
        for count in [12usize, 30] {
            let mut total = 0;
            let keys = 4000;
            for s in 0..keys {
                let list = select(&key(s), count, 1, &cands, &[], &policy);
                assert_eq!(list.len(), count + policy.fallbacks);
                let u = list[..count].iter().filter(|&&i| !cands[i].vetted).count();
                assert!(
                    u <= (count as f64 * 0.05).ceil() as usize,
                    "{u} unvetted of {count}"
                );
                total += u;
            }
            let mean = total as f64 / f64::from(keys);
            let want = count as f64 * 0.05;
            assert!(
                (mean - want).abs() < 0.05,
                "count {count}: mean {mean}, want {want}"
            );
        }
    }

    #[test]
    fn a_fresh_network_of_unvetted_nodes_still_fills_every_place() {
        let cands: Vec<Candidate> = (0..12).map(cand).collect();
        for s in 0..50 {
            let list = select(&key(s), 12, 1, &cands, &[], &Policy::default());
            assert_eq!(list.len(), 12);
        }
        // With a few vetted nodes, those come first and unvetted ones fill up.
        let mut cands = vetted(3);
        cands.extend((3..40).map(cand));
        let list = select(&key(0), 30, 1, &cands, &[], &Policy::default());
        assert_eq!(list.len(), 40);
        assert!(list[..30].iter().filter(|&&i| cands[i].vetted).count() == 3);
    }

    #[test]
    fn existing_holders_and_their_domains_are_avoided() {
        let mut cands = vetted(10);
        cands[1].network = v4(192, 168, 0, 1);
        cands[2].zone = Some(ZoneId::named("a"));
        let holder = Candidate {
            network: v4(192, 168, 0, 99),
            zone: Some(ZoneId::named("A")),
            ..cand(0)
        };
        let list = select(&key(0), 10, 1, &cands, &[holder.site()], &Policy::default());
        let mut got: Vec<usize> = list.clone();
        got.sort_unstable();
        assert_eq!(got, vec![3, 4, 5, 6, 7, 8, 9]);
    }

    #[test]
    fn full_and_disqualified_nodes_are_never_chosen() {
        let mut cands = vetted(10);
        cands[3].free_bytes = Some(10);
        cands[4].audit_score = Some(0.959);
        cands[5].audit_score = Some(f64::NAN);
        cands[6].free_bytes = Some(11);
        cands[7].audit_score = Some(0.96);
        for s in 0..200 {
            let list = select(&key(s), 10, 11, &cands, &[], &Policy::default());
            assert_eq!(list.len(), 7);
            assert!(!list.iter().any(|i| [3, 4, 5].contains(i)));
        }
    }

    #[test]
    fn load_spreads_over_every_node() {
        let cands = vetted(20);
        let mut firsts = HashSet::new();
        for s in 0..400 {
            firsts.insert(select(&key(s), 1, 1, &cands, &[], &Policy::default())[0]);
        }
        assert_eq!(firsts.len(), 20);
    }

    #[test]
    fn first_place_goes_in_proportion_to_weight() {
        // Ten nodes of weight 1 and ten of weight 1/4: heavy ones should come
        // first 10 / (10 + 2.5) = 80 % of the time.
        let mut cands = vetted(20);
        for c in &mut cands[10..] {
            c.uptime = Some(0.25);
        }
        let p = Policy::default();
        assert!((weight(&cands[10], &p) / weight(&cands[0], &p) - 0.25).abs() < 1e-12);
        let keys = 20_000;
        let heavy = (0..keys)
            .filter(|&s| select(&key(s), 1, 1, &cands, &[], &p)[0] < 10)
            .count();
        let share = heavy as f64 / f64::from(keys);
        assert!((share - 0.8).abs() < 0.015, "heavy first {share}");
    }

    #[test]
    fn weight_follows_the_documented_factors() {
        let p = Policy::default();
        let mut c = cand(0);
        // Unknown: capacity 0.5, audit 1, uptime 1, latency 0.5.
        assert!((weight(&c, &p) - 0.25).abs() < 1e-12);
        c.free_bytes = Some(p.capacity_half_bytes);
        c.latency_ms = Some(p.latency_half_ms);
        assert!((weight(&c, &p) - 0.25).abs() < 1e-12);
        c.free_bytes = Some(3 * p.capacity_half_bytes);
        c.latency_ms = Some(0);
        assert!((weight(&c, &p) - 0.75).abs() < 1e-12);
        c.audit_score = Some(0.98);
        assert!((weight(&c, &p) - 0.375).abs() < 1e-9);
        c.audit_score = Some(0.96);
        c.uptime = Some(0.0);
        assert!((weight(&c, &p) - 0.75 * 0.01 * 0.01).abs() < 1e-12);
        c.free_bytes = Some(0);
        assert_eq!(weight(&c, &p), 0.0);
    }

    #[test]
    fn walking_past_the_sorted_head_keeps_the_order() {
        // 190 nodes share one network and 10 have their own: the head sorted
        // for a short list is mostly conflicts, so the walk must go on into
        // the rest, in the same order a full sort gives.
        let mut cands = vetted(200);
        for (i, c) in cands.iter_mut().enumerate() {
            let own = u8::try_from(i).unwrap();
            c.network = Some(NetPrefix::V4([10, 0, if i < 10 { own } else { 200 }]));
        }
        let short = Policy {
            fallbacks: 0,
            ..Policy::default()
        };
        let all = Policy {
            fallbacks: usize::MAX,
            ..Policy::default()
        };
        for s in 0..50 {
            let got = select(&key(s), 8, 1, &cands, &[], &short);
            let full = select(&key(s), 8, 1, &cands, &[], &all);
            assert_eq!(full.len(), 11);
            assert_eq!(got, full[..8]);
        }
    }

    #[test]
    fn candidate_order_does_not_change_the_choice() {
        let cands = vetted(30);
        let mut rev = cands.clone();
        rev.reverse();
        for s in 0..50 {
            let a: Vec<&[u8]> = select(&key(s), 10, 1, &cands, &[], &Policy::default())
                .into_iter()
                .map(|i| cands[i].peer.as_slice())
                .collect();
            let b: Vec<&[u8]> = select(&key(s), 10, 1, &rev, &[], &Policy::default())
                .into_iter()
                .map(|i| rev[i].peer.as_slice())
                .collect();
            assert_eq!(a, b);
        }
    }
}
