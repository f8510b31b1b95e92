//! Replicated account indexes: quorum writes and repairing reads on the
//! nodes closest to an index's id.
//!
//! An index lives on its replica set: the [`REPLICAS`] peers closest to its
//! [`IndexId`] in Kademlia's metric (this node included if it is one of
//! them), found by a DHT lookup bounded in time, else from the routing
//! table, as the steward finds a record's stewards, and reused for
//! [`SET_TTL`] unless a call finds one of them silent. The policy is one value,
//! [`Quorum`]:
//!
//! - a **write** sends the index to every replica (each merges it into its
//!   copy) and succeeds once [`Quorum::acks`] of them (3 of 5; all of them if
//!   fewer exist) answered `Stored`; otherwise it fails and says how many
//!   did. A failed write may still have reached some replicas: the ops are
//!   signed and mergeable, so a later write or read spreads them.
//! - a **read** asks every replica, merges every copy that checks out (so a
//!   read after a partial write still sees it), and writes the merged index
//!   back to each replica that answered with less (read repair). Replicas
//!   that did not answer are left to the next read.
//!   A node that read an index lately asks with the
//!   [`digest`](cairn_core::index::digest) of its copy, and a replica with
//!   the same copy answers `Unchanged` instead of sending it; after a
//!   write, the written ops join that copy, so the replicas that took the
//!   write still answer `Unchanged`.
//!
//! At most [`MAX_CALLS`] reads and writes run at once (each may hold a few
//! 8 MiB copies); more wait their turn.
//!
//! A read checks every signature of the first copy it gets, which for a
//! shard of 4,096 entries is most of a core for a fifth of a second. So the
//! node keeps the merged copies it read lately ([`RECENT_BYTES`] of them)
//! and merges the next read's copies into that: only ops that are new have
//! their signatures checked, as the gateway does with its own cache. The
//! copy only grows by checked ops, so it can never make a read wrong, and
//! if every replica lost an index, the next read writes it back to them.
//!
//! Nothing here holds the account's key: the gateway builds and signs ops,
//! the nodes only check signatures and merge.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_core::index::{Index, IndexError, IndexId};
use cairn_core::record::RecordId;
use cairn_net::libp2p::PeerId;
use cairn_net::{ErrorCode, Request, RequestHeader, ResponseHeader};
use serde::{Deserialize, Serialize};

use crate::indexes::{IndexStore, IndexStoreError};
use crate::net::NetHandle;

/// Copies of each index kept in the network (as many as a record's stewards).
pub const REPLICAS: usize = crate::steward::STEWARDS;

/// Index reads and writes served at once.
pub const MAX_CALLS: usize = 8;
/// How long a replica set found by a DHT lookup is reused.
pub const SET_TTL: Duration = Duration::from_secs(30);
/// Replica sets remembered at most.
const MAX_SETS: usize = 4096;
/// Bytes of recently read, checked index copies kept in memory.
pub const RECENT_BYTES: usize = 32 << 20;

/// How a multi-node index call is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quorum {
    /// Replicas an index is written to and read from.
    pub replicas: usize,
    /// Acknowledgements a write needs (capped at the replicas found).
    pub acks: usize,
    /// Longest wait for the DHT lookup of the replica set.
    pub lookup: Duration,
    /// Longest wait for one replica's answer.
    pub request: Duration,
}

impl Quorum {
    /// The acknowledgements a write to `found` replicas needs.
    pub fn required(&self, found: usize) -> usize {
        self.acks.min(found)
    }
}

impl Default for Quorum {
    /// 3 of 5: a majority, so any later read quorum meets a replica that
    /// took the write even if two of the five were down.
    fn default() -> Self {
        Self {
            replicas: REPLICAS,
            acks: 3,
            lookup: Duration::from_secs(5),
            request: Duration::from_secs(10),
        }
    }
}

/// What a write reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    /// Replicas that stored (merged) the index.
    pub acks: usize,
    /// Replicas asked.
    pub peers: usize,
}

/// An index could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicaError {
    /// The index was refused before anything was sent.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// Too few replicas took the write.
    #[error(
        "account index {id} reached only {acks} of {peers} replicas, {required} needed; its ops are kept where they arrived, retry once more nodes are reachable"
    )]
    Quorum {
        /// The index.
        id: IndexId,
        /// Replicas that stored it.
        acks: usize,
        /// Replicas asked.
        peers: usize,
        /// Acknowledgements needed.
        required: usize,
    },
    /// This node's own replica failed.
    #[error(transparent)]
    Store(#[from] IndexStoreError),
    /// The node is shutting down.
    #[error("the node is stopping")]
    Closed,
}

/// Reads and writes account indexes on their replica sets.
#[derive(Clone)]
pub struct IndexReplicas {
    net: NetHandle,
    store: Arc<IndexStore>,
    quorum: Quorum,
    calls: Arc<tokio::sync::Semaphore>,
    recent: Arc<Mutex<Recent>>,
    fetched: Arc<AtomicU64>,
    sets: Arc<Mutex<Sets>>,
}

/// Replica sets found lately, by index.
#[derive(Default)]
struct Sets(HashMap<IndexId, (Instant, Vec<PeerId>)>);

impl Sets {
    fn get(&self, id: &IndexId, now: Instant) -> Option<Vec<PeerId>> {
        let (at, peers) = self.0.get(id)?;
        (now.duration_since(*at) < SET_TTL).then(|| peers.clone())
    }

    fn put(&mut self, id: IndexId, peers: Vec<PeerId>, now: Instant) {
        if self.0.len() >= MAX_SETS {
            self.0
                .retain(|_, (at, _)| now.duration_since(*at) < SET_TTL);
        }
        if self.0.len() < MAX_SETS {
            self.0.insert(id, (now, peers));
        }
    }
}

/// Checked, merged copies of indexes read lately, with their digests,
/// bounded by their size.
#[derive(Default)]
struct Recent {
    copies: HashMap<IndexId, (Instant, Arc<Index>, [u8; 32])>,
    bytes: usize,
}

impl Recent {
    fn get(&self, id: &IndexId) -> Option<(Arc<Index>, [u8; 32])> {
        self.copies.get(id).map(|(_, i, d)| (i.clone(), *d))
    }

    fn put(&mut self, index: Arc<Index>, digest: [u8; 32]) {
        let id = index.id();
        let len = index.encoded_len();
        if len > RECENT_BYTES {
            return;
        }
        self.bytes += len;
        if let Some((_, old, _)) = self.copies.insert(id, (Instant::now(), index, digest)) {
            self.bytes -= old.encoded_len();
        }
        while self.bytes > RECENT_BYTES {
            let Some(oldest) = self
                .copies
                .iter()
                .filter(|(k, _)| **k != id)
                .min_by_key(|(_, (at, _, _))| *at)
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some((_, old, _)) = self.copies.remove(&oldest) {
                self.bytes -= old.encoded_len();
            }
        }
    }
}

/// A read's merged index and its [`digest`](cairn_core::index::digest).
#[derive(Clone, Debug)]
pub struct IndexRead {
    /// The merged index.
    pub index: Arc<Index>,
    /// Its digest.
    pub digest: [u8; 32],
    /// Replicas that answered (with a copy, "unchanged" or "none").
    pub answered: usize,
    /// Replicas asked. A read that heard from all of them holds every op
    /// any replica has: what the gateway's tombstone collection waits for.
    pub asked: usize,
}

/// One replica's answer to a read.
enum Copy {
    /// Its index (as encoded, for comparing with the merged one).
    Found(Vec<u8>),
    /// Its copy has the digest this node asked with.
    Same,
    /// It has none.
    Missing,
    /// It did not answer usefully; left alone.
    Unknown,
}

impl IndexReplicas {
    /// Replicas over `net`, with this node's own copy in `store`.
    pub fn new(net: NetHandle, store: Arc<IndexStore>) -> Self {
        Self {
            net,
            store,
            quorum: Quorum::default(),
            calls: Arc::new(tokio::sync::Semaphore::new(MAX_CALLS)),
            recent: Arc::default(),
            fetched: Arc::default(),
            sets: Arc::default(),
        }
    }

    /// The same with another policy (tests).
    pub fn with_quorum(mut self, quorum: Quorum) -> Self {
        self.quorum = quorum;
        self
    }

    /// The replica set of `id`: the peers closest to it, this node included
    /// if it is one of them. A set found lately is reused for
    /// [`SET_TTL`]: a burst of writes to one shard costs one DHT lookup,
    /// not one each. A call that finds a replica silent forgets the set.
    pub async fn replica_set(&self, id: &IndexId) -> Vec<PeerId> {
        let now = Instant::now();
        if let Some(peers) = self.sets.lock().ok().and_then(|s| s.get(id, now)) {
            return peers;
        }
        let peers = self.look_up(id).await;
        if let Ok(mut sets) = self.sets.lock() {
            sets.put(*id, peers.clone(), Instant::now());
        }
        peers
    }

    fn forget_set(&self, id: &IndexId) {
        if let Ok(mut sets) = self.sets.lock() {
            sets.0.remove(id);
        }
    }

    async fn look_up(&self, id: &IndexId) -> Vec<PeerId> {
        let count = self.quorum.replicas;
        let mut peers =
            match tokio::time::timeout(self.quorum.lookup, self.net.closest_peers(&id.0, count))
                .await
            {
                Ok(peers) if !peers.is_empty() => peers,
                _ => self.net.closest_local(&id.0, count).await,
            };
        peers.push(self.net.local_peer_id());
        let bytes: Vec<Vec<u8>> = peers.iter().map(|p| p.to_bytes()).collect();
        // The same Kademlia metric as a record's stewards; only the key differs.
        cairn_core::repair::stewards(&RecordId(id.0), &bytes, count)
            .into_iter()
            .filter_map(|b| PeerId::from_bytes(b).ok())
            .collect()
    }

    /// Merges `index` into every replica; `Ok` once the quorum acked.
    pub async fn put(&self, index: &Index) -> Result<Written, ReplicaError> {
        let _permit = self.permit().await?;
        let id = index.id();
        let peers = self.replica_set(&id).await;
        let body = Bytes::from(index.encode());
        let acks = futures::future::join_all(
            peers
                .iter()
                .map(|&peer| self.send(peer, index, body.clone())),
        )
        .await
        .into_iter()
        .filter(|ok| *ok)
        .count();
        if acks < peers.len() {
            self.forget_set(&id);
        }
        let required = self.quorum.required(peers.len());
        if acks < required || acks == 0 {
            return Err(ReplicaError::Quorum {
                id,
                acks,
                peers: peers.len(),
                required: required.max(1),
            });
        }
        self.note_written(index).await;
        Ok(Written {
            acks,
            peers: peers.len(),
        })
    }

    /// Adds a written index to the recent copy of it, if there is one, so
    /// the next read finds the replicas that took the write unchanged. Two
    /// writes at once may drop each other's ops here; that only costs the
    /// next read a whole copy, since the recent copy is a cache.
    async fn note_written(&self, written: &Index) {
        let Some((copy, _)) = self.recent.lock().ok().and_then(|r| r.get(&written.id())) else {
            return;
        };
        let written = written.clone();
        let updated = tokio::task::spawn_blocking(move || {
            let mut m = (*copy).clone();
            m.merge(&written).ok()?;
            let digest = m.digest();
            Some((m, digest))
        })
        .await;
        if let (Ok(Some((m, digest))), Ok(mut r)) = (updated, self.recent.lock()) {
            r.put(Arc::new(m), digest);
        }
    }

    /// Bytes of index copies this node has received from other replicas
    /// (unchanged answers carry none).
    pub fn fetched_bytes(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, ReplicaError> {
        self.calls.acquire().await.map_err(|_| ReplicaError::Closed)
    }

    /// Stores `index` on `peer` (this node's store if it is this node).
    async fn send(&self, peer: PeerId, index: &Index, body: Bytes) -> bool {
        if peer == self.net.local_peer_id() {
            let store = self.store.clone();
            let index = index.clone();
            let id = index.id();
            return match tokio::task::spawn_blocking(move || store.merge(&index)).await {
                Ok(Ok(_)) => true,
                Ok(Err(e)) => {
                    tracing::warn!("account index {id} not stored here: {e}");
                    false
                }
                Err(_) => false,
            };
        }
        let request = Request {
            header: RequestHeader::PutIndex { id: index.id() },
            body,
        };
        match self.net.request(peer, request, self.quorum.request).await {
            Ok(r) if r.header == ResponseHeader::Stored => true,
            Ok(r) => {
                tracing::debug!(%peer, "account index refused: {:?}", r.header);
                false
            }
            Err(e) => {
                tracing::debug!("account index not stored: {e}");
                false
            }
        }
    }

    /// Asks `peer` (or this node's store) for its copy of `id`, unless its
    /// digest is `have`.
    async fn fetch(&self, peer: PeerId, id: IndexId, have: Option<[u8; 32]>) -> Copy {
        if peer == self.net.local_peer_id() {
            let store = self.store.clone();
            return match tokio::task::spawn_blocking(move || store.get_encoded(&id)).await {
                Ok(Ok(Some(bytes))) if have == Some(cairn_core::index::digest(&bytes)) => {
                    Copy::Same
                }
                Ok(Ok(Some(bytes))) => Copy::Found(bytes),
                Ok(Ok(None)) => Copy::Missing,
                _ => Copy::Unknown,
            };
        }
        let request = Request {
            header: RequestHeader::GetIndex { id, have },
            body: Bytes::new(),
        };
        match self.net.request(peer, request, self.quorum.request).await {
            Ok(r) => match r.header {
                ResponseHeader::Data => {
                    self.fetched
                        .fetch_add(r.body.len() as u64, Ordering::Relaxed);
                    Copy::Found(r.body.to_vec())
                }
                ResponseHeader::Unchanged if have.is_some() => Copy::Same,
                ResponseHeader::Error {
                    code: ErrorCode::NotFound,
                    ..
                } => Copy::Missing,
                _ => Copy::Unknown,
            },
            Err(_) => Copy::Unknown,
        }
    }

    /// Every copy of `id` the replica set has, merged; replicas that were
    /// behind get the merged index back. `None` if no replica has it.
    ///
    /// With a recent copy of `id`, each replica is asked with its digest
    /// and one that has the same copy answers without sending it.
    pub async fn get(&self, id: &IndexId) -> Result<Option<IndexRead>, ReplicaError> {
        let _permit = self.permit().await?;
        let id = *id;
        let peers = self.replica_set(&id).await;
        let recent = self.recent.lock().ok().and_then(|r| r.get(&id));
        let have = recent.as_ref().map(|(_, d)| *d);
        let copies =
            futures::future::join_all(peers.iter().map(|&p| self.fetch(p, id, have))).await;
        if copies.iter().any(|c| matches!(c, Copy::Unknown)) {
            self.forget_set(&id);
        }
        let found = copies.iter().any(|c| matches!(c, Copy::Found(_)));
        let answered = copies
            .iter()
            .filter(|c| !matches!(c, Copy::Unknown))
            .count();
        let asked = peers.len();
        let missing = copies.iter().any(|c| matches!(c, Copy::Missing));
        let (read, body, copies) = match recent {
            // Every replica that answered has this node's copy (or none).
            Some((index, digest)) if !found => {
                let body = missing.then(|| Bytes::from(index.encode()));
                (
                    IndexRead {
                        index,
                        digest,
                        answered,
                        asked,
                    },
                    body,
                    copies,
                )
            }
            recent => {
                // Checking signatures is CPU work: off the async threads.
                let merged = tokio::task::spawn_blocking(move || {
                    let mut merged: Option<Index> = recent.map(|(r, _)| (*r).clone());
                    for copy in &copies {
                        let Copy::Found(bytes) = copy else { continue };
                        // The first good copy is checked whole (unless a
                        // recent read's copy is here); the rest only for the
                        // ops they add. A bad copy (damaged, or a liar's) is
                        // skipped.
                        let result = match merged.as_mut() {
                            Some(m) => m.merge_encoded(bytes).map(|_| ()),
                            None => Index::decode(bytes, Some(id)).map(|i| merged = Some(i)),
                        };
                        if let Err(e) = result {
                            tracing::warn!(
                                "a replica's copy of account index {id} is refused: {e}"
                            );
                        }
                    }
                    merged.map(|m| {
                        let body = Bytes::from(m.encode());
                        let digest = cairn_core::index::digest(&body);
                        (m, body, digest, copies)
                    })
                })
                .await
                .map_err(|_| ReplicaError::Closed)?;
                let Some((merged, body, digest, copies)) = merged else {
                    return Ok(None);
                };
                let index = Arc::new(merged);
                if let Ok(mut r) = self.recent.lock() {
                    r.put(index.clone(), digest);
                }
                (
                    IndexRead {
                        index,
                        digest,
                        answered,
                        asked,
                    },
                    Some(body),
                    copies,
                )
            }
        };
        // Read repair: whoever answered with less gets the merged index.
        let behind: Vec<PeerId> = peers
            .iter()
            .zip(&copies)
            .filter_map(|(&peer, copy)| match copy {
                Copy::Found(bytes) if Some(&bytes[..]) == body.as_deref() => None,
                Copy::Same if have == Some(read.digest) => None,
                Copy::Found(_) | Copy::Same | Copy::Missing => Some(peer),
                Copy::Unknown => None,
            })
            .collect();
        if let Some(body) = body.filter(|_| !behind.is_empty()) {
            let repairs = behind
                .iter()
                .map(|&peer| self.send(peer, &read.index, body.clone()));
            let repaired = futures::future::join_all(repairs).await;
            tracing::debug!(
                "account index {id}: read repair reached {} of {} replicas",
                repaired.iter().filter(|ok| **ok).count(),
                repaired.len()
            );
        }
        Ok(Some(read))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_sets_are_reused_for_their_ttl_and_bounded() {
        let t0 = Instant::now();
        let peers = vec![PeerId::random(), PeerId::random()];
        let mut sets = Sets::default();
        let id = IndexId([1; 32]);
        sets.put(id, peers.clone(), t0);
        assert_eq!(sets.get(&id, t0 + SET_TTL / 2), Some(peers.clone()));
        assert_eq!(sets.get(&id, t0 + SET_TTL), None, "looked up again");
        assert_eq!(sets.get(&IndexId([2; 32]), t0), None);
        // Full: expired sets make room, live ones are kept.
        for i in 0..MAX_SETS as u32 {
            let mut b = [0; 32];
            b[..4].copy_from_slice(&i.to_be_bytes());
            b[31] = 9;
            sets.put(IndexId(b), peers.clone(), t0 + SET_TTL);
        }
        assert!(sets.0.len() <= MAX_SETS);
        let late = t0 + SET_TTL + SET_TTL / 2;
        sets.put(IndexId([3; 32]), peers.clone(), late);
        assert_eq!(
            sets.0.len(),
            MAX_SETS,
            "nothing had expired: the new set is not kept"
        );
        assert_eq!(sets.get(&IndexId([3; 32]), late), None);
        let later = t0 + 3 * SET_TTL;
        sets.put(IndexId([3; 32]), peers.clone(), later);
        assert_eq!(sets.get(&IndexId([3; 32]), later), Some(peers));
        assert_eq!(sets.0.len(), 1);
    }
}
