//! Replicated account indexes: quorum writes and repairing reads on the
//! nodes closest to an index's id.
//!
//! An index lives on its replica set: the [`REPLICAS`] peers closest to its
//! [`IndexId`] in Kademlia's metric (this node included if it is one of
//! them), found by a DHT lookup bounded in time, else from the routing
//! table, as the steward finds a record's stewards. The policy is one value,
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
}

/// Checked, merged copies of indexes read lately, bounded by their size.
#[derive(Default)]
struct Recent {
    copies: HashMap<IndexId, (Instant, Arc<Index>)>,
    bytes: usize,
}

impl Recent {
    fn get(&self, id: &IndexId) -> Option<Arc<Index>> {
        self.copies.get(id).map(|(_, i)| i.clone())
    }

    fn put(&mut self, index: Arc<Index>) {
        let id = index.id();
        let len = index.encoded_len();
        if len > RECENT_BYTES {
            return;
        }
        self.bytes += len;
        if let Some((_, old)) = self.copies.insert(id, (Instant::now(), index)) {
            self.bytes -= old.encoded_len();
        }
        while self.bytes > RECENT_BYTES {
            let Some(oldest) = self
                .copies
                .iter()
                .filter(|(k, _)| **k != id)
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some((_, old)) = self.copies.remove(&oldest) {
                self.bytes -= old.encoded_len();
            }
        }
    }
}

/// One replica's answer to a read.
enum Copy {
    /// Its index (as encoded, for comparing with the merged one).
    Found(Vec<u8>),
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
        }
    }

    /// The same with another policy (tests).
    pub fn with_quorum(mut self, quorum: Quorum) -> Self {
        self.quorum = quorum;
        self
    }

    /// The replica set of `id`: the peers closest to it, this node included
    /// if it is one of them.
    pub async fn replica_set(&self, id: &IndexId) -> Vec<PeerId> {
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
        let required = self.quorum.required(peers.len());
        if acks < required || acks == 0 {
            return Err(ReplicaError::Quorum {
                id,
                acks,
                peers: peers.len(),
                required: required.max(1),
            });
        }
        Ok(Written {
            acks,
            peers: peers.len(),
        })
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

    /// Asks `peer` (or this node's store) for its copy of `id`.
    async fn fetch(&self, peer: PeerId, id: IndexId) -> Copy {
        if peer == self.net.local_peer_id() {
            let store = self.store.clone();
            return match tokio::task::spawn_blocking(move || store.get_encoded(&id)).await {
                Ok(Ok(Some(bytes))) => Copy::Found(bytes),
                Ok(Ok(None)) => Copy::Missing,
                _ => Copy::Unknown,
            };
        }
        let request = Request {
            header: RequestHeader::GetIndex { id },
            body: Bytes::new(),
        };
        match self.net.request(peer, request, self.quorum.request).await {
            Ok(r) => match r.header {
                ResponseHeader::Data => Copy::Found(r.body.to_vec()),
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
    pub async fn get(&self, id: &IndexId) -> Result<Option<Index>, ReplicaError> {
        let _permit = self.permit().await?;
        let id = *id;
        let peers = self.replica_set(&id).await;
        let copies = futures::future::join_all(peers.iter().map(|&p| self.fetch(p, id))).await;
        let recent = self.recent.lock().ok().and_then(|r| r.get(&id));
        // Checking signatures is CPU work: off the async threads.
        let (merged, copies) = tokio::task::spawn_blocking(move || {
            let mut merged: Option<Index> = recent.map(|r| (*r).clone());
            for copy in &copies {
                let Copy::Found(bytes) = copy else { continue };
                // The first good copy is checked whole (unless a recent
                // read's copy is here); the rest only for the ops they
                // add. A bad copy (damaged, or a liar's) is skipped.
                let result = match merged.as_mut() {
                    Some(m) => m.merge_encoded(bytes).map(|_| ()),
                    None => Index::decode(bytes, Some(id)).map(|i| merged = Some(i)),
                };
                if let Err(e) = result {
                    tracing::warn!("a replica's copy of account index {id} is refused: {e}");
                }
            }
            (merged, copies)
        })
        .await
        .map_err(|_| ReplicaError::Closed)?;
        let Some(merged) = merged else {
            return Ok(None);
        };
        if let Ok(mut r) = self.recent.lock() {
            r.put(Arc::new(merged.clone()));
        }
        // Read repair: whoever answered with less gets the merged index.
        let body = Bytes::from(merged.encode());
        let behind = peers
            .iter()
            .zip(&copies)
            .filter_map(|(&peer, copy)| match copy {
                Copy::Found(bytes) if bytes[..] == body[..] => None,
                Copy::Found(_) | Copy::Missing => Some(peer),
                Copy::Unknown => None,
            });
        let repairs = behind.map(|peer| self.send(peer, &merged, body.clone()));
        let repaired = futures::future::join_all(repairs).await;
        if !repaired.is_empty() {
            tracing::debug!(
                "account index {id}: read repair reached {} of {} replicas",
                repaired.iter().filter(|ok| **ok).count(),
                repaired.len()
            );
        }
        Ok(Some(merged))
    }
}
