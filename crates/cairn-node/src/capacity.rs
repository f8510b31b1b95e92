//! Free space of other nodes, as they last reported it, for placement.
//!
//! Placement prefers nodes with room and never picks one too full for the
//! piece ([`cairn_core::placement`]). A node learns a peer's free space by
//! asking it (`Status`, one small request) when it has no answer younger
//! than [`FRESH`], and marks a peer full at once when a store is refused
//! for lack of space. What a peer says about itself is only a preference:
//! a node that claims room it does not have is refused by its own store
//! and the piece goes elsewhere.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_net::libp2p::PeerId;
use cairn_net::{Request, RequestHeader, ResponseHeader};

use crate::net::NetHandle;

/// How long a reported free space is used before asking again.
pub const FRESH: Duration = Duration::from_secs(60);
/// How long one `Status` question may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// Peers remembered at most (anyone can join: bounded).
const MAX_PEERS: usize = 4096;

/// Peers' free bytes, with when each was learned.
#[derive(Default)]
pub struct Capacities {
    /// `None`: it did not answer (not asked again until stale either, so an
    /// unreachable peer costs one timeout a minute, not one per segment).
    known: Mutex<HashMap<PeerId, (Option<u64>, Instant)>>,
}

impl Capacities {
    /// Free bytes of each of `peers`, in order: fresh answers from memory,
    /// the rest asked now, concurrently; `None` for a peer that does not say.
    pub async fn free(&self, net: &NetHandle, peers: &[PeerId]) -> Vec<Option<u64>> {
        let now = Instant::now();
        let known = self.lookup(peers, now);
        let ask: Vec<usize> = (0..peers.len()).filter(|&i| known[i].is_none()).collect();
        let answers =
            futures::future::join_all(ask.iter().map(|&i| ask_status(net, peers[i]))).await;
        let mut out: Vec<Option<u64>> = known.into_iter().map(Option::flatten).collect();
        for (i, free) in ask.into_iter().zip(answers) {
            self.learn(peers[i], free, now);
            out[i] = free;
        }
        out
    }

    /// The fresh entries for `peers` (outer None where stale or unknown).
    fn lookup(&self, peers: &[PeerId], now: Instant) -> Vec<Option<Option<u64>>> {
        let Ok(known) = self.known.lock() else {
            return vec![None; peers.len()];
        };
        peers
            .iter()
            .map(|p| {
                known
                    .get(p)
                    .filter(|(_, at)| now.duration_since(*at) < FRESH)
                    .map(|(free, _)| *free)
            })
            .collect()
    }

    /// Records that `peer` has `free` bytes (or did not say), as of `now`.
    pub fn learn(&self, peer: PeerId, free: Option<u64>, now: Instant) {
        let Ok(mut known) = self.known.lock() else {
            return;
        };
        if known.len() >= MAX_PEERS && !known.contains_key(&peer) {
            known.retain(|_, (_, at)| now.duration_since(*at) < FRESH);
            if known.len() >= MAX_PEERS {
                known.clear();
            }
        }
        known.insert(peer, (free, now));
    }

    /// `peer` refused a piece for lack of space.
    pub fn full(&self, peer: PeerId) {
        self.learn(peer, Some(0), Instant::now());
    }
}

/// A peer's free bytes, by its own `Status` answer.
async fn ask_status(net: &NetHandle, peer: PeerId) -> Option<u64> {
    let request = Request {
        header: RequestHeader::Status,
        body: Bytes::new(),
    };
    match net.request(peer, request, ASK_TIMEOUT).await {
        Ok(r) => match r.header {
            ResponseHeader::Status { used, capacity, .. } => Some(capacity.saturating_sub(used)),
            _ => None,
        },
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_used_while_fresh_then_asked_again() {
        let c = Capacities::default();
        let p = PeerId::random();
        let q = PeerId::random();
        let t0 = Instant::now();
        c.learn(p, Some(1000), t0);
        assert_eq!(c.lookup(&[p, q], t0), vec![Some(Some(1000)), None]);
        assert_eq!(
            c.lookup(&[p], t0 + FRESH - Duration::from_secs(1)),
            vec![Some(Some(1000))]
        );
        assert_eq!(c.lookup(&[p], t0 + FRESH), vec![None]);
        c.full(q);
        assert_eq!(c.lookup(&[q], Instant::now()), vec![Some(Some(0))]);
        // A silent peer is remembered as silent, not asked at every segment.
        c.learn(p, None, t0);
        assert_eq!(c.lookup(&[p], t0), vec![Some(None)]);
    }

    #[test]
    fn memory_is_bounded() {
        let c = Capacities::default();
        let now = Instant::now();
        for _ in 0..MAX_PEERS + 10 {
            c.learn(PeerId::random(), Some(1), now);
        }
        assert!(c.known.lock().unwrap().len() <= MAX_PEERS);
    }
}
