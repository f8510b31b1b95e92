//! Put, get and stat: the uplink side of a node, run on behalf of the local
//! user through the control API. Keys never leave this process.
//!
//! Put reads the input one segment at a time, so memory is bounded by one
//! segment plus its pieces whatever the file size. Each segment is sealed,
//! coded into n pieces plus spares, and uploaded to distinct nodes found
//! through the DHT ([`UploadPlan`]). The sealed manifest is then stored on
//! the nodes closest to its id, which announce it as DHT providers.
//!
//! Put also writes the object's repair record (keyless: segment table,
//! every coded piece's hash, the holders, the lease), signed by this node as
//! owner, to the [`STEWARDS`] nodes closest to its id; the manifest names
//! it. Pieces are stored with the record's lease as their expiry.
//!
//! Get fetches the manifest, then the repair record, whose holders replace
//! the manifest's (repairs move pieces), then for each segment asks holders
//! for k pieces, and a few more holders only when some are slow
//! ([`FetchPlan`]), checks every piece's hash,
//! decodes, decrypts and hands the plaintext on, one segment at a time.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cairn_core::buf::Buffers;
use cairn_core::manifest::{PieceEntry, SegmentEntry, segment_count};
use cairn_core::params::{self, ParamsError};
use cairn_core::placement::{self, Candidate, NetPrefix, Policy, ZoneId};
use cairn_core::segment::{self, SegmentError, piece_hash};
use cairn_core::transfer::{Action, FailureKind, Failures, FetchPlan, UploadPlan};
use cairn_core::{FileId, FileKey, Manifest, ManifestId, PieceId, ReadCap};
use cairn_net::BufPool;
use cairn_net::libp2p::PeerId;
use cairn_net::{ErrorCode, Request, RequestHeader, ResponseHeader};
use cairn_store::{NewPiece, PieceKind, PieceStore, StoreError};
use futures::stream::{FuturesUnordered, StreamExt};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

use crate::capacity::Capacities;
use crate::catalog::{Catalog, FileRecord};
use crate::net::NetHandle;
use crate::now_secs;
use crate::records::RecordStore;
use crate::steward::STEWARDS;
use cairn_core::keys::{PublicKey, SecretKey};
use cairn_core::record::{Genesis, Record, RecordId, SegmentInfo};

/// How long a put's pieces are kept unless renewed: 90 days. The owner's
/// node renews its files' leases while it runs.
pub const DEFAULT_LEASE_SECS: u64 = 90 * 24 * 3600;
/// Copies of each manifest kept in the network.
pub const MANIFEST_REPLICAS: usize = 5;
/// Segments encoded and uploaded at once by a put. With two, both tend to
/// start and finish together, and the cores idle while the pair's last
/// pieces are fsynced; a third keeps coding going (measured on the 12-node
/// devnet: 3-16 % faster puts, for one more segment and its pieces in memory).
pub const PUT_PIPELINE: usize = 3;
/// Segments fetched and decoded at once by a get.
pub const GET_PIPELINE: usize = 2;
/// Piece requests beyond k sent when a fetch is hedged (see
/// [`FetchPlan`]): a segment whose last pieces take as long again as its
/// first half did asks this many more holders.
pub const FETCH_EXTRA: usize = 2;
/// How long a fetch with k pieces in hand waits for its missing data pieces,
/// given how long the fetch has taken so far. Decoding without them is a
/// Reed-Solomon solve that costs about as long as fetching a segment, so a
/// wait of a fraction of the fetch time pays; the cap bounds a slow holder.
fn linger(elapsed: Duration) -> Duration {
    (elapsed / 2).clamp(Duration::from_millis(2), Duration::from_millis(200))
}

/// How long a fetch whose first half of pieces took `elapsed` waits for
/// the rest before asking more holders: as long again, at least 5 ms (a
/// loopback piece takes a few) and at most 2 s.
fn hedge_delay(elapsed: Duration) -> Duration {
    elapsed.clamp(Duration::from_millis(5), Duration::from_secs(2))
}

/// Spare segment buffers kept for reuse: enough for the segments in flight
/// of a couple of transfers at the default segment size.
const POOL_BYTES: usize = 512 << 20;
/// Time one piece transfer may take.
const PIECE_TIMEOUT: Duration = Duration::from_secs(120);
/// Time a holder has to answer a stat probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Candidates asked of the DHT per segment.
const CANDIDATES: usize = 64;

/// A put, get or stat failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Erasure parameters could not be chosen.
    #[error(transparent)]
    Params(#[from] ParamsError),
    /// Too few nodes have room for a segment's pieces.
    #[error(
        "segment {segment} needs {needed} nodes with room for a {piece_bytes}-byte piece, each on its own network and zone, and only {placeable} have it (by the free space they report); start more nodes, free space, or lower --n"
    )]
    NoRoom {
        /// Segment index.
        segment: u64,
        /// Nodes that could take a piece.
        placeable: usize,
        /// Pieces that must be stored.
        needed: usize,
        /// Size of one piece.
        piece_bytes: u64,
    },
    /// A segment could not be placed.
    #[error(
        "segment {segment} could not be stored: {stored} of {needed} pieces found a node ({failures}); start more nodes or lower --n"
    )]
    Upload {
        /// Segment index.
        segment: u64,
        /// Pieces stored.
        stored: usize,
        /// Pieces needed.
        needed: usize,
        /// Why the rest failed.
        failures: Failures,
    },
    /// The repair record could not be stored on any steward.
    #[error("the file's repair record could not be stored: none of its {wanted} stewards took it")]
    RecordUpload {
        /// Stewards asked.
        wanted: usize,
    },
    /// The manifest could not be stored anywhere.
    #[error("the file's manifest could not be stored: only {stored} of {wanted} nodes took it")]
    ManifestUpload {
        /// Copies stored.
        stored: usize,
        /// Copies wanted.
        wanted: usize,
    },
    /// No node returned a valid manifest.
    #[error(
        "the file's manifest was not found: {asked} nodes were asked and none returned it (is the network reachable, and was the file stored on it?)"
    )]
    ManifestNotFound {
        /// Nodes asked.
        asked: usize,
    },
    /// A segment has too few reachable pieces.
    #[error(
        "segment {segment} cannot be rebuilt: only {reachable} pieces were reachable but {needed} are needed ({failures})"
    )]
    Fetch {
        /// Segment index.
        segment: u64,
        /// Good pieces fetched.
        reachable: usize,
        /// Pieces needed (k).
        needed: usize,
        /// Why the others failed.
        failures: Failures,
    },
    /// Decoding or decrypting failed.
    #[error(transparent)]
    Segment(#[from] SegmentError),
    /// The manifest was unusable.
    #[error(transparent)]
    Manifest(#[from] cairn_core::manifest::ManifestError),
    /// Reading the input failed.
    #[error("reading the input failed: {0}")]
    Input(std::io::Error),
    /// No steward answered with the file's repair record.
    #[error(
        "no steward has the repair record {0} of this file; try again when more nodes are online"
    )]
    RecordNotFound(RecordId),
    /// The file predates repair records (manifest format 1).
    #[error(
        "this file was stored before repair records existed; it has no lease to renew and cannot be deleted network-wide"
    )]
    NoRecord,
    /// Only the node that stored a file may renew or delete it.
    #[error("this node did not store the file; only its owner's node can renew or delete it")]
    NotOwner,
    /// Something inside the node failed.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Options of a put.
#[derive(Clone, Debug)]
pub struct PutOptions {
    /// Override k.
    pub k: Option<u16>,
    /// Override n.
    pub n: Option<u16>,
    /// Plaintext bytes per segment.
    pub segment_size: u64,
    /// A name for the local file list.
    pub name: Option<String>,
    /// Seconds the pieces are kept unless the lease is renewed.
    pub lease_secs: u64,
    /// Who owns the object (signs its repair record, may renew and delete
    /// it): this node's key if `None`. The S3 gateway passes a key derived
    /// from its account, so that any node given it can manage the object.
    pub owner: Option<Arc<SecretKey>>,
    /// Whether the file goes on this node's list (`cairn ls`), whose
    /// leases the node renews by itself.
    pub catalog: bool,
}

impl Default for PutOptions {
    fn default() -> Self {
        Self {
            k: None,
            n: None,
            segment_size: params::DEFAULT_SEGMENT_SIZE,
            name: None,
            lease_secs: DEFAULT_LEASE_SECS,
            owner: None,
            catalog: true,
        }
    }
}

/// What a put produced.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct PutOutcome {
    /// The read capability, as text.
    pub cap: String,
    /// Bytes stored.
    pub size: u64,
    /// Segments.
    pub segments: u64,
    /// Pieces needed per segment.
    pub k: u16,
    /// Pieces stored per segment.
    pub n: u16,
}

/// Health of one stored piece.
#[derive(Clone, Debug, Serialize)]
pub struct PieceHealth {
    /// Index in the code.
    pub index: u16,
    /// Holder.
    pub peer_id: String,
    /// The holder answered.
    pub online: bool,
    /// The holder says it has the piece.
    pub present: bool,
}

/// Health of one segment.
#[derive(Clone, Debug, Serialize)]
pub struct SegmentHealth {
    /// Segment index.
    pub index: u64,
    /// Pieces that are online and present.
    pub healthy: usize,
    /// Per-piece detail.
    pub pieces: Vec<PieceHealth>,
}

/// `cairn stat`'s report.
#[derive(Clone, Debug, Serialize)]
pub struct StatReport {
    /// Plaintext bytes.
    pub size: u64,
    /// Pieces needed per segment.
    pub k: u16,
    /// Pieces stored per segment.
    pub n: u16,
    /// Plaintext bytes per segment.
    pub segment_size: u64,
    /// Unix seconds of the upload.
    pub created_at: u64,
    /// Per-segment health.
    pub segments: Vec<SegmentHealth>,
    /// The repair record's id, if the file has one.
    pub record: Option<String>,
    /// Until when holders keep the pieces (unix seconds), from the record.
    pub lease_expires_at: Option<u64>,
}

/// Header of a get: what the stream will carry.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct GetHeader {
    /// Plaintext bytes of the whole file.
    pub size: u64,
    /// Segments the stream carries.
    pub segments: u64,
    /// Offset of the first byte sent.
    pub start: u64,
    /// Bytes sent.
    pub length: u64,
}

/// The uplink of a node.
#[derive(Clone)]
pub struct Client {
    /// This node's declared zone.
    zone: Option<ZoneId>,
    /// The local steward's view of holders: audit scores for placement.
    scores: Option<crate::steward::SharedView>,
    net: NetHandle,
    store: Arc<PieceStore>,
    records: Arc<RecordStore>,
    key: Arc<SecretKey>,
    catalog: Arc<Catalog>,
    buffers: BufPool,
    placement: Policy,
    /// Other nodes' free space, as they report it.
    capacity: Arc<Capacities>,
    /// Lease expiry of this node's own files, by capability, as last seen:
    /// the hourly renewal looks a file up in the network only when its
    /// lease may be due (a restart looks each up once).
    leases: Arc<Mutex<HashMap<String, u64>>>,
    /// Manifests and records read lately, reused by ranged reads.
    manifests: Arc<Mutex<crate::manifests::Recent>>,
    /// Segments decoded lately, shared by ranged reads smaller than a segment.
    decoded: Arc<Mutex<crate::decoded::Decoded>>,
    /// Segments fetched and decoded since start.
    segments_decoded: Arc<std::sync::atomic::AtomicU64>,
}

/// What a transfer moves: a piece (over the piece protocol) or a sealed
/// manifest (over the record protocol). Both are checked against a BLAKE3.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Blob {
    Piece { id: PieceId, hash: [u8; 32] },
    Manifest(ManifestId),
}

impl Blob {
    /// The local store's id, kind and expected hash.
    fn local(self) -> (PieceId, PieceKind, [u8; 32]) {
        match self {
            Blob::Piece { id, hash } => (id, PieceKind::Data, hash),
            Blob::Manifest(m) => (m.piece_id(), PieceKind::Manifest, *m.as_bytes()),
        }
    }
}

fn peer_bytes(p: &PeerId) -> Vec<u8> {
    p.to_bytes()
}

fn failure_of(code: ErrorCode) -> FailureKind {
    match code {
        ErrorCode::NotFound => FailureKind::Missing,
        ErrorCode::Corrupted => FailureKind::Corrupt,
        ErrorCode::Busy | ErrorCode::Full | ErrorCode::Refused | ErrorCode::Internal => {
            FailureKind::Refused
        }
    }
}

/// Replaces the manifest's holders with the repair record's: repairs move
/// pieces and the record knows where. The record's genesis hashes are
/// trusted because the (authenticated) manifest names the record's id.
/// A record that does not describe this file is ignored.
fn apply_record(m: &mut Manifest, record: &Record) {
    let g = record.genesis();
    if g.file_id != m.file_id
        || g.k != m.k
        || g.coded != m.coded
        || g.segments.len() != m.segments.len()
    {
        tracing::warn!(
            "repair record {} does not match its manifest; ignored",
            record.id()
        );
        return;
    }
    for (s, entry) in m.segments.iter_mut().enumerate() {
        let s32 = s as u32;
        let mut pieces: Vec<PieceEntry> = record
            .holders(s32)
            .filter_map(|(index, holder)| {
                Some(PieceEntry {
                    index,
                    hash: g.piece_hash(s32, index)?,
                    holder: holder.to_vec(),
                })
            })
            .collect();
        pieces.sort_by_key(|p| p.index);
        entry.pieces = pieces;
    }
}

/// Where a put's bytes come from.
///
/// A stream (the HTTP body, a file opened by the node) is read through
/// tokio; a regular [`FileSource`] is read straight into the segment buffer
/// on the blocking pool, which saves the CLI's HTTP hop (two socket copies)
/// and tokio's file buffer (one more copy).
pub trait Source: Send {
    /// Appends to `buf` until it holds `want` bytes or the input ends, and
    /// gives the buffer back with the outcome.
    fn fill(
        &mut self,
        buf: Vec<u8>,
        want: usize,
    ) -> impl std::future::Future<Output = (Vec<u8>, std::io::Result<()>)> + Send + '_;
}

/// Any async reader as a [`Source`].
pub struct ReadSource<R>(pub R);

impl<R: AsyncRead + Unpin + Send> Source for ReadSource<R> {
    async fn fill(&mut self, mut buf: Vec<u8>, want: usize) -> (Vec<u8>, std::io::Result<()>) {
        while buf.len() < want {
            match (&mut self.0)
                .take((want - buf.len()) as u64)
                .read_to_end(&mut buf)
                .await
            {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return (buf, Err(e)),
            }
        }
        (buf, Ok(()))
    }
}

/// A regular file, read from its current offset on the blocking pool
/// directly into the segment buffer (no zeroing, no intermediate buffer).
/// `read` counts the bytes read so far, for progress reports.
pub struct FileSource {
    file: Arc<std::fs::File>,
    read: Arc<std::sync::atomic::AtomicU64>,
}

impl FileSource {
    /// Reads `file`, counting into `read`.
    pub fn new(file: std::fs::File, read: Arc<std::sync::atomic::AtomicU64>) -> Self {
        Self {
            file: Arc::new(file),
            read,
        }
    }
}

impl Source for FileSource {
    async fn fill(&mut self, mut buf: Vec<u8>, want: usize) -> (Vec<u8>, std::io::Result<()>) {
        let (file, read) = (self.file.clone(), self.read.clone());
        let cap = buf.capacity();
        let task = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let before = buf.len();
            let mut res = Ok(());
            while buf.len() < want {
                match (&*file)
                    .take((want - buf.len()) as u64)
                    .read_to_end(&mut buf)
                {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        res = Err(e);
                        break;
                    }
                }
            }
            read.fetch_add(
                (buf.len() - before) as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            (buf, res)
        });
        match task.await {
            Ok(done) => done,
            Err(e) => (
                Vec::with_capacity(cap),
                Err(std::io::Error::other(format!(
                    "the file reader failed: {e}"
                ))),
            ),
        }
    }
}

impl Client {
    /// A client over this node's network and store.
    pub fn new(
        net: NetHandle,
        store: Arc<PieceStore>,
        records: Arc<RecordStore>,
        key: Arc<SecretKey>,
        catalog: Arc<Catalog>,
    ) -> Self {
        Self {
            zone: None,
            scores: None,
            net,
            store,
            records,
            key,
            catalog,
            buffers: BufPool::new(POOL_BYTES),
            placement: Policy::default(),
            capacity: Arc::default(),
            leases: Arc::default(),
            manifests: Arc::default(),
            decoded: Arc::default(),
            segments_decoded: Arc::default(),
        }
    }

    /// This node's zone, for its own candidacy.
    pub fn with_zone(mut self, zone: Option<&str>) -> Self {
        self.zone = zone.map(ZoneId::named);
        self
    }

    /// Audit scores from this node's steward, for placement.
    pub fn with_scores(mut self, view: crate::steward::SharedView) -> Self {
        self.scores = Some(view);
        self
    }

    /// The segment buffer pool (the node trims it when idle).
    pub fn buffers(&self) -> &BufPool {
        &self.buffers
    }

    fn local(&self) -> PeerId {
        self.net.local_peer_id()
    }

    /// Nodes that can hold pieces for `key`, this node included. Their
    /// network is the /24 or /64 of the address we are connected to them at,
    /// their zone what they declare, their free space what they last
    /// reported ([`Capacities`]); audit scores, uptime and latency are what
    /// this node's steward observed of them (unknown, so neutral, for nodes
    /// it never audited; those are not vetted).
    pub(crate) async fn candidates(&self, key: &[u8; 32]) -> Vec<Candidate> {
        let peers = self.net.closest_peers(key, CANDIDATES).await;
        let ips = self.net.remote_ips(&peers).await;
        let zones = self.net.zones(&peers).await;
        let free = self.capacity.free(&self.net, &peers).await;
        // What this node's steward learned by auditing them.
        let seen: HashMap<String, crate::steward::HolderView> = self
            .scores
            .as_ref()
            .and_then(|v| v.lock().ok().map(|v| v.holders.clone()))
            .unwrap_or_default()
            .into_iter()
            .map(|h| (h.peer_id.clone(), h))
            .collect();
        let vetting = cairn_core::score::ScoreParams::default().vetting_audits;
        let mut out: Vec<Candidate> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let view = seen.get(&p.to_string());
                Candidate {
                    network: ips.get(i).copied().flatten().and_then(NetPrefix::of),
                    zone: zones.get(i).cloned().flatten().map(|z| ZoneId::named(&z)),
                    audit_score: view.map(|v| if v.disqualified { 0.0 } else { v.score }),
                    uptime: view.and_then(|v| v.uptime),
                    latency_ms: view.and_then(|v| v.latency_ms),
                    vetted: view.is_some_and(|v| v.passed >= vetting),
                    free_bytes: free.get(i).copied().flatten(),
                    ..Candidate::new(peer_bytes(p))
                }
            })
            .collect();
        // This node's own public address is not known (it listens on
        // unspecified addresses), so it has no network either.
        let usage = self.store.usage();
        out.push(Candidate {
            zone: self.zone,
            free_bytes: Some(usage.capacity.saturating_sub(usage.used_bytes)),
            ..Candidate::new(peer_bytes(&self.local()))
        });
        out
    }

    /// How many of `candidates` can hold one piece each of a segment without
    /// sharing a node, network or zone.
    fn placeable(&self, key: &[u8; 32], candidates: &[Candidate]) -> usize {
        placement::select(key, candidates.len(), 0, candidates, &[], &self.placement).len()
    }

    /// This node's list of files it put.
    #[cfg(test)]
    pub(crate) fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// This node's piece store.
    pub(crate) fn store(&self) -> &Arc<PieceStore> {
        &self.store
    }

    pub(crate) async fn store_blob(
        &self,
        peer: PeerId,
        blob: Blob,
        data: Bytes,
        expires_at: u64,
    ) -> Result<(), FailureKind> {
        if peer == self.local() {
            let store = self.store.clone();
            let owner = peer_bytes(&peer);
            let (id, kind, hash) = blob.local();
            let res = tokio::task::spawn_blocking(move || {
                store.put(
                    NewPiece {
                        id,
                        kind,
                        data: &data,
                        expected_hash: Some(hash),
                        owner: &owner,
                        expires_at,
                    },
                    now_secs(),
                )
            })
            .await;
            return match res {
                Ok(Ok(_)) => {
                    if let Blob::Manifest(m) = blob {
                        self.net.provide(m.as_bytes()).await;
                    }
                    Ok(())
                }
                Ok(Err(e)) => {
                    tracing::debug!("local store refused piece {id}: {e}");
                    Err(FailureKind::Refused)
                }
                Err(_) => Err(FailureKind::Refused),
            };
        }
        let header = match blob {
            Blob::Piece { id, hash } => RequestHeader::Store {
                id,
                hash,
                expires_at,
            },
            Blob::Manifest(id) => RequestHeader::PutRecord { id, expires_at },
        };
        let request = Request { header, body: data };
        match self.net.request(peer, request, PIECE_TIMEOUT).await {
            Ok(r) => match r.header {
                ResponseHeader::Stored => Ok(()),
                ResponseHeader::Error { code, message } => {
                    tracing::debug!(%peer, "store refused: {message}");
                    if code == ErrorCode::Full {
                        self.capacity.full(peer);
                    }
                    Err(failure_of(code))
                }
                _ => Err(FailureKind::Refused),
            },
            Err(e) => {
                tracing::debug!("store failed: {e}");
                Err(FailureKind::Unreachable)
            }
        }
    }

    pub(crate) async fn fetch_blob(&self, peer: PeerId, blob: Blob) -> Result<Bytes, FailureKind> {
        let (id, _, hash) = blob.local();
        let data = if peer == self.local() {
            let store = self.store.clone();
            match tokio::task::spawn_blocking(move || store.get(&id)).await {
                Ok(Ok(d)) => Bytes::from(d),
                Ok(Err(StoreError::NotFound(_))) => return Err(FailureKind::Missing),
                Ok(Err(StoreError::Corrupted { .. } | StoreError::Missing { .. })) => {
                    return Err(FailureKind::Corrupt);
                }
                _ => return Err(FailureKind::Refused),
            }
        } else {
            match self
                .net
                .request(
                    peer,
                    Request {
                        header: match blob {
                            Blob::Piece { id, .. } => RequestHeader::Fetch { id },
                            Blob::Manifest(id) => RequestHeader::GetRecord { id },
                        },
                        body: Bytes::new(),
                    },
                    PIECE_TIMEOUT,
                )
                .await
            {
                Ok(r) => match r.header {
                    ResponseHeader::Data => r.body,
                    ResponseHeader::Error { code, .. } => return Err(failure_of(code)),
                    _ => return Err(FailureKind::Refused),
                },
                Err(_) => return Err(FailureKind::Unreachable),
            }
        };
        // Never trust a holder: the bytes must hash to what the manifest says.
        if hash != piece_hash(&data) {
            tracing::warn!(%peer, "piece {id} failed its hash check");
            return Err(FailureKind::Corrupt);
        }
        Ok(data)
    }

    /// Stores everything `input` yields; returns the capability.
    pub async fn put<R: AsyncRead + Unpin + Send>(
        &self,
        input: R,
        opts: PutOptions,
    ) -> Result<PutOutcome, ClientError> {
        self.put_from(ReadSource(input), opts).await
    }

    /// Stores everything `input` yields; returns the capability.
    pub async fn put_from<S: Source>(
        &self,
        input: S,
        opts: PutOptions,
    ) -> Result<PutOutcome, ClientError> {
        let key = FileKey::random();
        let mut file_id = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut file_id);
        let file_id = FileId(file_id);
        let seg_size =
            usize::try_from(opts.segment_size).map_err(|_| ParamsError::SegmentSize {
                size: opts.segment_size,
            })?;

        let first = self.candidates(&file_id.segment_key(0)).await;
        let available = self.placeable(&file_id.segment_key(0), &first);
        let p = params::choose(available, opts.k, opts.n)?;
        params::check_segment_size(opts.segment_size, p.k)?;

        // One code length for the whole file: decoding needs it, and the manifest has one.
        let coded = p.n + params::spares(p.n, available);
        // Segments are read one after another; up to PUT_PIPELINE of them are
        // encoded and uploaded at once, so reading and coding one overlaps
        // the upload of the others. `buffered` keeps them in order.
        let pool = self.buffers.clone();
        let reads = futures::stream::unfold(
            (input, None::<u8>, 0u64, false),
            move |(mut input, carry, index, done)| {
                let pool = pool.clone();
                async move {
                    if done {
                        return None;
                    }
                    // One byte of read-ahead tells whether this segment is the last;
                    // room for it and the AEAD tag means sealing never reallocates.
                    let mut buf = Buffers::take(&pool, seg_size + 1 + cairn_core::crypto::TAG_LEN);
                    buf.extend(carry);
                    let (mut buf, read) = input.fill(buf, seg_size + 1).await;
                    if let Err(e) = read {
                        return Some((Err(ClientError::Input(e)), (input, None, index, true)));
                    }
                    let carry = if buf.len() > seg_size {
                        buf.pop()
                    } else {
                        None
                    };
                    let last = carry.is_none();
                    Some((Ok((index, last, buf)), (input, carry, index + 1, last)))
                }
            },
        );
        let created_at = now_secs();
        let expires_at = created_at.saturating_add(opts.lease_secs);
        let (key_ref, first_ref) = (&key, &first);
        let uploads = reads
            .map(|item| async move {
                let (index, last, buf) = item?;
                let len = buf.len() as u64;
                let candidates = if index == 0 {
                    first_ref.clone()
                } else {
                    self.candidates(&file_id.segment_key(index)).await
                };
                let entry = self
                    .put_segment(
                        key_ref,
                        file_id,
                        index,
                        last,
                        buf,
                        p,
                        coded,
                        &candidates,
                        expires_at,
                    )
                    .await?;
                Ok::<_, ClientError>((entry, len))
            })
            .buffered(PUT_PIPELINE);
        let mut uploads = Box::pin(uploads);
        let mut segments = Vec::new();
        let mut infos = Vec::new();
        let mut size: u64 = 0;
        while let Some(done) = uploads.next().await {
            let ((entry, hashes), len) = done?;
            segments.push(entry);
            infos.push(SegmentInfo {
                sealed_len: len + cairn_core::crypto::TAG_LEN as u64,
                hashes,
            });
            size += len;
        }
        drop(uploads);
        let genesis = Genesis {
            file_id,
            owner: opts.owner.as_deref().unwrap_or(&self.key).public(),
            k: p.k,
            n: p.n,
            coded,
            created_at,
            segments: infos,
        };
        let assignments: Vec<(u32, u16, Vec<u8>)> = segments
            .iter()
            .enumerate()
            .flat_map(|(s, seg)| {
                seg.pieces
                    .iter()
                    .map(move |piece| (s as u32, piece.index, piece.holder.clone()))
            })
            .collect();
        let signer = opts.owner.as_deref().unwrap_or(&self.key);
        let tail = std::time::Instant::now();
        let record = Record::create(genesis, signer, assignments, expires_at)
            .map_err(|e| ClientError::Internal(format!("cannot build the repair record: {e}")))?;
        let manifest = Manifest {
            file_id,
            size,
            segment_size: opts.segment_size,
            k: p.k,
            n: p.n,
            coded,
            created_at,
            segments,
            record: Some(record.id()),
        };
        debug_assert_eq!(
            manifest.segments.len() as u64,
            segment_count(size, opts.segment_size)
        );
        let (sealed, manifest_id) = manifest.seal(&key)?;
        // Record and manifest go out together: both are needed before the
        // capability is handed out, and each costs a DHT walk. If one fails,
        // the other is an orphan that expires with its lease.
        tokio::try_join!(
            self.put_record(&record),
            self.put_manifest(manifest_id, Bytes::from(sealed)),
        )?;
        tracing::debug!(tail = ?tail.elapsed(), "record and manifest stored");
        let cap = ReadCap {
            key,
            manifest: manifest_id,
        }
        .to_string();
        let outcome = PutOutcome {
            cap,
            size,
            segments: manifest.segments.len() as u64,
            k: p.k,
            n: p.n,
        };
        if !opts.catalog {
            return Ok(outcome);
        }
        self.lease_seen(&outcome.cap, expires_at);
        let record = FileRecord {
            name: opts.name,
            size,
            cap: outcome.cap.clone(),
            created_at: manifest.created_at,
        };
        let catalog = self.catalog.clone();
        tokio::task::spawn_blocking(move || catalog.add(&record))
            .await
            .map_err(|e| ClientError::Internal(e.to_string()))?
            .map_err(|e| ClientError::Internal(e.to_string()))?;
        Ok(outcome)
    }

    #[allow(clippy::too_many_arguments)]
    async fn put_segment(
        &self,
        key: &FileKey,
        file_id: FileId,
        index: u64,
        last: bool,
        plain: Vec<u8>,
        p: params::Params,
        coded: u16,
        candidates: &[Candidate],
        expires_at: u64,
    ) -> Result<(SegmentEntry, Vec<[u8; 32]>), ClientError> {
        let seg_key = file_id.segment_key(index);
        // Coding is CPU-bound: keep it off the async workers.
        let key = key.clone();
        let started = std::time::Instant::now();
        let pool = self.buffers.clone();
        let enc = tokio::task::spawn_blocking(move || {
            segment::encode_with(&key.data_key(), index, last, plain, p.k, coded, &pool)
        })
        .await
        .map_err(|e| ClientError::Internal(e.to_string()))?
        .map_err(|e| ClientError::Internal(e.to_string()))?;
        let encoded = started.elapsed();
        let (pieces, hashes) = (enc.pieces, enc.hashes);
        let piece_bytes = pieces.first().map_or(0, |p| p.len() as u64);
        // The first `coded` go out at once; the rest are fallbacks in order.
        let peers: Vec<PeerId> = placement::select(
            &seg_key,
            usize::from(coded),
            piece_bytes,
            candidates,
            &[],
            &self.placement,
        )
        .into_iter()
        .filter_map(|i| candidates.get(i))
        .filter_map(|c| PeerId::from_bytes(&c.peer).ok())
        .collect();
        if peers.len() < usize::from(p.n) {
            return Err(ClientError::NoRoom {
                segment: index,
                placeable: peers.len(),
                needed: usize::from(p.n),
                piece_bytes,
            });
        }
        let mut plan = UploadPlan::new(coded, p.n, peers);
        let mut running = FuturesUnordered::new();
        let mut actions = plan.start();
        loop {
            for action in actions.drain(..) {
                match action {
                    Action::Send { index: i, peer } => {
                        let blob = Blob::Piece {
                            id: file_id.piece_id(index, u32::from(i)),
                            hash: hashes[usize::from(i)],
                        };
                        let data = pieces[usize::from(i)].clone();
                        running.push(async move {
                            (i, peer, self.store_blob(peer, blob, data, expires_at).await)
                        });
                    }
                    // Dropping `running` below cancels whatever is still in flight.
                    Action::Cancel { .. } | Action::Linger | Action::Hedge => {}
                    Action::Complete(stored) => {
                        tracing::debug!(segment = index, ?encoded, uploaded = ?(started.elapsed() - encoded), "segment stored");
                        let pieces = stored
                            .into_iter()
                            .map(|(i, peer)| PieceEntry {
                                index: i,
                                hash: hashes[usize::from(i)],
                                holder: peer_bytes(&peer),
                            })
                            .collect();
                        return Ok((SegmentEntry { pieces }, hashes.to_vec()));
                    }
                    Action::Fail {
                        succeeded,
                        needed,
                        failures,
                    } => {
                        return Err(ClientError::Upload {
                            segment: index,
                            stored: succeeded,
                            needed,
                            failures,
                        });
                    }
                }
            }
            let Some((i, _peer, res)) = running.next().await else {
                return Err(ClientError::Internal("upload plan stalled".into()));
            };
            actions = match res {
                Ok(()) => plan.on_stored(i),
                Err(kind) => plan.on_failed(i, kind),
            };
        }
    }

    async fn manifest_holders(&self, id: &ManifestId) -> Vec<PeerId> {
        let mut peers = vec![self.local()];
        peers.extend(
            self.net
                .closest_peers(id.as_bytes(), MANIFEST_REPLICAS * 2)
                .await,
        );
        peers
    }

    async fn put_manifest(&self, id: ManifestId, sealed: Bytes) -> Result<(), ClientError> {
        let peers = self.manifest_holders(&id).await;
        let wanted = MANIFEST_REPLICAS.min(peers.len());
        let mut plan = UploadPlan::new(wanted as u16, wanted as u16, peers);
        let mut running = FuturesUnordered::new();
        let mut actions = plan.start();
        loop {
            for action in actions.drain(..) {
                match action {
                    Action::Send { index, peer } => {
                        let data = sealed.clone();
                        running.push(async move {
                            (
                                index,
                                self.store_blob(peer, Blob::Manifest(id), data, 0).await,
                            )
                        });
                    }
                    Action::Cancel { .. } | Action::Linger | Action::Hedge => {}
                    Action::Complete(_) => return Ok(()),
                    // A manifest on fewer nodes than wanted is still readable; two copies is the floor.
                    Action::Fail { succeeded, .. } if succeeded >= wanted.min(2) => return Ok(()),
                    Action::Fail { succeeded, .. } => {
                        return Err(ClientError::ManifestUpload {
                            stored: succeeded,
                            wanted,
                        });
                    }
                }
            }
            let Some((i, res)) = running.next().await else {
                return Err(ClientError::ManifestUpload { stored: 0, wanted });
            };
            actions = match res {
                Ok(()) => plan.on_stored(i),
                Err(kind) => plan.on_failed(i, kind),
            };
        }
    }

    /// Finds, verifies and decrypts the manifest a capability names, with
    /// the newest copy of its repair record applied, from the network.
    pub async fn manifest(&self, cap: &ReadCap) -> Result<Manifest, ClientError> {
        self.manifest_with(cap, false).await
    }

    /// [`Self::manifest`]; `for_read` looks the record up among the
    /// stewards this node knows ([`Self::record_for_read`]).
    async fn manifest_with(&self, cap: &ReadCap, for_read: bool) -> Result<Manifest, ClientError> {
        let t = std::time::Instant::now();
        let (sealed, mut m) = self.fetch_manifest(cap).await?;
        let found = t.elapsed();
        let record = match m.record {
            Some(rid) if for_read => self.record_for_read(&rid).await,
            Some(rid) => self.record(&rid).await,
            None => None,
        };
        tracing::debug!(
            manifest_ms = found.as_millis() as u64,
            record_ms = (t.elapsed() - found).as_millis() as u64,
            "manifest read from the network"
        );
        if let Some(r) = &record {
            apply_record(&mut m, r);
        }
        if let Ok(mut recent) = self.manifests.lock() {
            recent.put(
                cap.manifest,
                sealed,
                m.record,
                record,
                std::time::Instant::now(),
            );
        }
        Ok(m)
    }

    /// [`Self::manifest`] for reads of data, which ask again with the full
    /// lookup when the holders it names cannot rebuild a segment: a copy
    /// read in the last [`crate::manifests::TTL`] is reused (see
    /// [`crate::manifests`]), and the record comes from the first steward
    /// that answers (`record_for_read`).
    pub async fn manifest_for_read(&self, cap: &ReadCap) -> Result<Manifest, ClientError> {
        let hit = self
            .manifests
            .lock()
            .ok()
            .and_then(|r| r.get(&cap.manifest, std::time::Instant::now()));
        match hit {
            Some((sealed, record)) => {
                // Opened with this capability's key: a wrong key fails as
                // it would on a fresh copy.
                let mut m = Manifest::open(&sealed, &cap.manifest, &cap.key)?;
                if let Some(r) = &record {
                    apply_record(&mut m, r);
                }
                Ok(m)
            }
            None => self.manifest_with(cap, true).await,
        }
    }

    /// The sealed manifest a capability names, from the first holder whose
    /// copy opens, and the manifest.
    ///
    /// The peers closest to the manifest in this node's routing table are
    /// asked at once; the DHT walks (closest peers, then providers) run
    /// alongside, and whoever they add is asked too. In a network whose
    /// routing tables are current, the first answer comes from a known
    /// peer and the walks are not waited for: under load a walk takes
    /// 100–300 ms, which every part of a multipart object paid twice.
    async fn fetch_manifest(&self, cap: &ReadCap) -> Result<(Bytes, Manifest), ClientError> {
        let id = cap.manifest;
        let fetch = |p: PeerId| async move { self.fetch_blob(p, Blob::Manifest(id)).await };
        let mut asked = HashSet::new();
        let mut running = FuturesUnordered::new();
        let mut known = vec![self.local()];
        known.extend(
            self.net
                .closest_local(id.as_bytes(), MANIFEST_REPLICAS * 2)
                .await,
        );
        for p in known {
            if asked.insert(p) {
                running.push(fetch(p));
            }
        }
        let walks = async {
            let (mut closest, providers) = futures::join!(
                self.net.closest_peers(id.as_bytes(), MANIFEST_REPLICAS * 2),
                self.net.providers(id.as_bytes())
            );
            closest.extend(providers);
            closest
        };
        futures::pin_mut!(walks);
        let mut walked = false;
        let mut last_err = None;
        loop {
            tokio::select! {
                Some(res) = running.next() => {
                    if let Ok(bytes) = res {
                        match Manifest::open(&bytes, &id, &cap.key) {
                            Ok(m) => return Ok((bytes, m)),
                            Err(e) => last_err = Some(e),
                        }
                    }
                }
                found = &mut walks, if !walked => {
                    walked = true;
                    for p in found {
                        if asked.insert(p) {
                            running.push(fetch(p));
                        }
                    }
                }
                else => break,
            }
        }
        match last_err {
            Some(e) => Err(e.into()),
            None => Err(ClientError::ManifestNotFound { asked: asked.len() }),
        }
    }

    /// Forgets the manifests read lately whose record is `id` (it changed).
    fn forget_record(&self, id: &RecordId) {
        if let Ok(mut recent) = self.manifests.lock() {
            recent.forget_record(id);
        }
    }

    /// Stores a new repair record on its stewards (this node included if it
    /// is one of them); at least one must take it.
    async fn put_record(&self, record: &Record) -> Result<(), ClientError> {
        let id = record.id();
        let me = self.local();
        let mut peers = self.net.closest_peers(&id.0, STEWARDS).await;
        peers.push(me);
        let bytes: Vec<Vec<u8>> = peers.iter().map(|p| p.to_bytes()).collect();
        let stewards: Vec<PeerId> = cairn_core::repair::stewards(&id, &bytes, STEWARDS)
            .into_iter()
            .filter_map(|b| PeerId::from_bytes(b).ok())
            .collect();
        let body = Bytes::from(record.encode());
        let sends = stewards.iter().map(|&peer| {
            let body = body.clone();
            async move {
                if peer == me {
                    let records = self.records.clone();
                    let record = record.clone();
                    let mine = self.key.public();
                    return tokio::task::spawn_blocking(move || {
                        records.merge(&record, &|k: &PublicKey| *k == mine).is_ok()
                    })
                    .await
                    .unwrap_or(false);
                }
                let request = Request {
                    header: RequestHeader::PutRepair { id },
                    body,
                };
                matches!(
                    self.net.request(peer, request, PIECE_TIMEOUT).await,
                    Ok(r) if matches!(r.header, ResponseHeader::Stored)
                )
            }
        });
        let stored = futures::future::join_all(sends)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count();
        if stored == 0 {
            return Err(ClientError::RecordUpload {
                wanted: stewards.len(),
            });
        }
        Ok(())
    }

    /// The newest repair record `id` this node can find: its own copy merged
    /// with its stewards' (ops only from the owner or peers close to it).
    pub async fn record(&self, id: &RecordId) -> Option<Record> {
        let peers = self.net.closest_peers(&id.0, STEWARDS).await;
        self.record_from(id, peers, usize::MAX).await
    }

    /// The record for a read of data: this node's copy merged with the
    /// first that a steward in its routing table sends, without a DHT walk
    /// or waiting for every steward (the slowest of five answers set the
    /// pace of every part read); the full lookup ([`Self::record`]) when
    /// none of them has it. Stewards pass every update to each other, so
    /// one copy is current but for an update still spreading: a read whose
    /// holders then cannot rebuild a segment asks again with the full
    /// lookup (see [`Self::get_range`]).
    async fn record_for_read(&self, id: &RecordId) -> Option<Record> {
        let peers = self.net.closest_local(&id.0, STEWARDS).await;
        match self.record_from(id, peers, 1).await {
            Some(r) => Some(r),
            None => self.record(id).await,
        }
    }

    /// This node's copy of record `id` merged with those `peers` send,
    /// stopping after `enough` valid copies have arrived (all of them if
    /// `enough` is `usize::MAX`).
    async fn record_from(
        &self,
        id: &RecordId,
        peers: Vec<PeerId>,
        enough: usize,
    ) -> Option<Record> {
        let authors = crate::service::allowed_authors(&self.net, id).await;
        let authority = |k: &PublicKey| authors.contains(k);
        let records = self.records.clone();
        let rid = *id;
        let mut best = tokio::task::spawn_blocking(move || records.get(&rid).ok().flatten())
            .await
            .ok()
            .flatten();
        let mut asks: FuturesUnordered<_> = peers
            .into_iter()
            .map(|peer| async move {
                let request = Request {
                    header: RequestHeader::GetRepair { id: *id },
                    body: Bytes::new(),
                };
                match self.net.request(peer, request, PIECE_TIMEOUT).await {
                    Ok(r) if matches!(r.header, ResponseHeader::Data) => Some(r.body),
                    _ => None,
                }
            })
            .collect();
        let mut got = 0;
        while got < enough
            && let Some(answer) = asks.next().await
        {
            let Some(Ok(r)) = answer.map(|body| Record::decode(&body, Some(*id), &authority))
            else {
                continue;
            };
            got += 1;
            match best.as_mut() {
                Some(b) => {
                    let _ = b.merge(&r, &authority);
                }
                None => best = Some(r),
            }
        }
        best
    }

    /// The repair record of the file `cap` names, newest copy found.
    pub(crate) async fn record_of(&self, cap: &ReadCap) -> Result<Record, ClientError> {
        let m = self.manifest(cap).await?;
        let id = m.record.ok_or(ClientError::NoRecord)?;
        self.record(&id)
            .await
            .ok_or(ClientError::RecordNotFound(id))
    }

    /// Signs `change` into the record as its owner and spreads it: to the
    /// stewards, then to every holder (which renews or drops its pieces).
    async fn owner_update(
        &self,
        mut record: Record,
        change: cairn_core::record::Change,
        owner: Option<&SecretKey>,
    ) -> Result<Record, ClientError> {
        let signer = owner.unwrap_or(&self.key);
        if record.genesis().owner != signer.public() {
            return Err(ClientError::NotOwner);
        }
        let mine = signer.public();
        record
            .update(signer, now_secs(), vec![change], &|k: &PublicKey| {
                *k == mine
            })
            .map_err(|e| ClientError::Internal(e.to_string()))?;
        self.forget_record(&record.id());
        self.put_record(&record).await?;
        let body = Bytes::from(record.encode());
        let g = record.genesis();
        let mut holders: HashSet<PeerId> = (0..g.segments.len() as u32)
            .flat_map(|s| {
                record
                    .holders(s)
                    .filter_map(|(_, h)| PeerId::from_bytes(h).ok())
                    .collect::<Vec<_>>()
            })
            .collect();
        if record.is_deleted() {
            // After a delete the record names no holders: ask every peer near
            // each segment (where pieces were placed) and this node.
            for s in 0..g.segments.len() as u64 {
                holders.extend(
                    self.net
                        .closest_peers(&g.file_id.segment_key(s), CANDIDATES)
                        .await,
                );
            }
        }
        holders.insert(self.local());
        let syncs = holders.into_iter().map(|peer| {
            let body = body.clone();
            let id = record.id();
            async move {
                if peer == self.local() {
                    return;
                }
                let request = Request {
                    header: RequestHeader::SyncRepair { id },
                    body,
                };
                let _ = self.net.request(peer, request, PIECE_TIMEOUT).await;
            }
        });
        futures::future::join_all(syncs).await;
        Ok(record)
    }

    /// Extends the lease of the file `cap` names to `lease_secs` from now,
    /// as its owner (`owner`, or this node's key). Returns the new expiry
    /// (unix seconds).
    pub async fn renew(
        &self,
        cap: &ReadCap,
        lease_secs: u64,
        owner: Option<&SecretKey>,
    ) -> Result<u64, ClientError> {
        let record = self.record_of(cap).await?;
        let expires_at = now_secs().saturating_add(lease_secs);
        let record = self
            .owner_update(
                record,
                cairn_core::record::Change::Lease { expires_at },
                owner,
            )
            .await?;
        Ok(record.expires_at())
    }

    /// Renews the leases of the files this node put whose lease has less
    /// than a third of [`DEFAULT_LEASE_SECS`] left; returns how many.
    pub async fn renew_own(&self) -> usize {
        let catalog = self.catalog.clone();
        let Ok(Ok(files)) = tokio::task::spawn_blocking(move || catalog.list()).await else {
            return 0;
        };
        let due = |expires_at: u64| expires_at.saturating_sub(now_secs()) <= DEFAULT_LEASE_SECS / 3;
        let mut renewed = 0;
        for f in files {
            let known = self.leases.lock().ok().and_then(|l| l.get(&f.cap).copied());
            if known.is_some_and(|e| !due(e)) {
                continue;
            }
            let Ok(cap) = f.cap.parse::<ReadCap>() else {
                continue;
            };
            let Ok(record) = self.record_of(&cap).await else {
                continue;
            };
            if record.is_deleted() {
                // Deleted elsewhere: never due again.
                self.lease_seen(&f.cap, u64::MAX);
                continue;
            }
            self.lease_seen(&f.cap, record.expires_at());
            if !due(record.expires_at()) {
                continue;
            }
            match self.renew(&cap, DEFAULT_LEASE_SECS, None).await {
                Ok(expires_at) => {
                    self.lease_seen(&f.cap, expires_at);
                    renewed += 1;
                }
                Err(e) => tracing::warn!("cannot renew the lease of {}: {e}", record.id()),
            }
        }
        renewed
    }

    /// Remembers that the file `cap` is leased until `expires_at`.
    fn lease_seen(&self, cap: &str, expires_at: u64) {
        if let Ok(mut l) = self.leases.lock() {
            l.insert(cap.to_string(), expires_at);
        }
    }

    /// Deletes the file `cap` names: the owner's signed delete goes to the
    /// stewards and the holders, which drop the pieces; the manifest copies
    /// are deleted and the file leaves this node's list.
    pub async fn remove(
        &self,
        cap: &ReadCap,
        owner: Option<&SecretKey>,
    ) -> Result<(), ClientError> {
        let record = self.record_of(cap).await?;
        if let Ok(mut l) = self.leases.lock() {
            l.remove(&cap.to_string());
        }
        if let Ok(mut d) = self.decoded.lock() {
            d.forget(&cap.manifest);
        }
        let g = record.genesis().clone();
        let record = self
            .owner_update(record, cairn_core::record::Change::Delete, owner)
            .await?;
        // This node's own pieces and record copy.
        let store = self.store.clone();
        let records = self.records.clone();
        let mine = owner.unwrap_or(&self.key).public();
        let _ = tokio::task::spawn_blocking(move || {
            for s in 0..g.segments.len() as u32 {
                for i in 0..g.coded {
                    let _ = store.remove(&g.piece_id(s, i));
                }
            }
            let _ = records.merge(&record, &|k: &PublicKey| *k == mine);
        })
        .await;
        // The manifest copies: this node stored them, so it may delete them.
        let id = cap.manifest;
        for peer in self.manifest_holders(&id).await {
            if peer == self.local() {
                let store = self.store.clone();
                let owner = peer_bytes(&peer);
                let _ =
                    tokio::task::spawn_blocking(move || store.delete(&id.piece_id(), &owner)).await;
                continue;
            }
            let request = Request {
                header: RequestHeader::Delete { id: id.piece_id() },
                body: Bytes::new(),
            };
            let _ = self.net.request(peer, request, PIECE_TIMEOUT).await;
        }
        let catalog = self.catalog.clone();
        let text = cap.to_string();
        tokio::task::spawn_blocking(move || catalog.remove(&text))
            .await
            .map_err(|e| ClientError::Internal(e.to_string()))?
            .map_err(|e| ClientError::Internal(e.to_string()))?;
        Ok(())
    }

    /// Fetches and decodes segment `index`.
    pub async fn get_segment(
        &self,
        cap: &ReadCap,
        m: &Manifest,
        index: u64,
    ) -> Result<Bytes, ClientError> {
        let entry = &m.segments
            [usize::try_from(index).map_err(|e| ClientError::Internal(e.to_string()))?];
        let hashes: HashMap<u16, [u8; 32]> =
            entry.pieces.iter().map(|p| (p.index, p.hash)).collect();
        let sources = entry.pieces.iter().filter_map(|p| {
            PeerId::from_bytes(&p.holder)
                .ok()
                .map(|peer| (p.index, peer))
        });
        let mut plan = FetchPlan::new(m.k, FETCH_EXTRA, sources);
        let mut got: HashMap<u16, Bytes> = HashMap::new();
        let mut running = FuturesUnordered::new();
        let started = tokio::time::Instant::now();
        let mut linger_until: Option<tokio::time::Instant> = None;
        let mut hedge_at: Option<tokio::time::Instant> = None;
        let mut actions = plan.start();
        loop {
            for action in actions.drain(..) {
                match action {
                    Action::Send { index: i, peer } => {
                        // Sources come from the manifest's entries, so every index has a hash.
                        let Some(&hash) = hashes.get(&i) else {
                            continue;
                        };
                        let blob = Blob::Piece {
                            id: m.file_id.piece_id(index, u32::from(i)),
                            hash,
                        };
                        running.push(async move { (i, self.fetch_blob(peer, blob).await) });
                    }
                    Action::Cancel { .. } => {}
                    Action::Linger => {
                        linger_until =
                            Some(tokio::time::Instant::now() + linger(started.elapsed()));
                    }
                    Action::Hedge => {
                        // Half the pieces took this long; a holder slower
                        // than twice that is a straggler worth hedging.
                        hedge_at =
                            Some(tokio::time::Instant::now() + hedge_delay(started.elapsed()));
                    }
                    Action::Complete(use_) => {
                        drop(running);
                        let chosen: Vec<(u16, Bytes)> = use_
                            .into_iter()
                            .filter_map(|(i, _)| got.remove(&i).map(|d| (i, d)))
                            .collect();
                        let key = cap.key.data_key();
                        let m = m.clone();
                        let pool = self.buffers.clone();
                        let plain = tokio::task::spawn_blocking(move || {
                            let refs: Vec<(u16, &[u8])> =
                                chosen.iter().map(|(i, d)| (*i, &d[..])).collect();
                            segment::decode_with(&key, &m, index, &refs, &pool)
                                .map(|plain| Buffers::share(&pool, plain))
                        })
                        .await
                        .map_err(|e| ClientError::Internal(e.to_string()))?
                        .map_err(ClientError::from)?;
                        self.segments_decoded
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return Ok(plain);
                    }
                    Action::Fail {
                        succeeded,
                        needed,
                        failures,
                    } => {
                        return Err(ClientError::Fetch {
                            segment: index,
                            reachable: succeeded,
                            needed,
                            failures,
                        });
                    }
                }
            }
            let next = match (linger_until, hedge_at) {
                (Some(until), _) => tokio::select! {
                    next = running.next() => next,
                    () = tokio::time::sleep_until(until) => {
                        linger_until = None;
                        actions = plan.finish();
                        continue;
                    }
                },
                (None, Some(at)) => tokio::select! {
                    next = running.next() => next,
                    () = tokio::time::sleep_until(at) => {
                        hedge_at = None;
                        actions = plan.hedge();
                        continue;
                    }
                },
                (None, None) => running.next().await,
            };
            let Some((i, res)) = next else {
                return Err(ClientError::Internal("fetch plan stalled".into()));
            };
            actions = match res {
                Ok(data) => {
                    got.insert(i, data);
                    plan.on_piece(i)
                }
                Err(kind) => plan.on_failed(i, kind),
            };
        }
    }

    /// Segment `index` for a read: with the holders `m` names, else (they
    /// may have left since a kept copy or the first steward's was read)
    /// once more with the full lookup's.
    async fn segment_for_read(
        &self,
        cap: &ReadCap,
        m: &Manifest,
        index: u64,
    ) -> Result<Bytes, ClientError> {
        match self.get_segment(cap, m, index).await {
            Ok(d) => Ok(d),
            Err(_) => {
                let fresh = self.manifest(cap).await?;
                self.get_segment(cap, &fresh, index).await
            }
        }
    }

    /// [`Self::segment_for_read`] through the cache of segments decoded
    /// lately ([`crate::decoded`]): concurrent reads of one segment share
    /// one fetch, and a read within the TTL reuses it.
    async fn segment_shared(
        &self,
        cap: &ReadCap,
        m: &Manifest,
        index: u64,
    ) -> Result<Bytes, ClientError> {
        let key = (cap.manifest, index);
        let cell = self
            .decoded
            .lock()
            .ok()
            .map(|mut d| d.cell(key, std::time::Instant::now()));
        let Some(cell) = cell else {
            return self.segment_for_read(cap, m, index).await;
        };
        let data = cell
            .get_or_try_init(|| self.segment_for_read(cap, m, index))
            .await?
            .clone();
        if let Ok(mut d) = self.decoded.lock() {
            d.filled(key, &cell, data.len(), std::time::Instant::now());
        }
        Ok(data)
    }

    /// Segments kept by the cache of segments decoded lately.
    #[cfg(test)]
    pub(crate) fn decoded_len(&self) -> usize {
        self.decoded.lock().map_or(0, |d| d.len())
    }

    /// Segments this node has fetched and decoded for reads since it
    /// started (a segment shared by several ranged reads counts once).
    pub fn segments_decoded(&self) -> u64 {
        self.segments_decoded
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Starts a get: returns the header and a stream of plaintext chunks
    /// (one per segment) that ends with an error if a segment cannot be rebuilt.
    pub async fn get(
        &self,
        cap: ReadCap,
    ) -> Result<(GetHeader, mpsc::Receiver<Result<Bytes, ClientError>>), ClientError> {
        self.get_range(cap, None).await
    }

    /// A get of bytes `[start, end)` of the file (clipped to its size; `None`
    /// for all of it). Only the segments the range touches are fetched.
    pub async fn get_range(
        &self,
        cap: ReadCap,
        range: Option<(u64, u64)>,
    ) -> Result<(GetHeader, mpsc::Receiver<Result<Bytes, ClientError>>), ClientError> {
        let m = self.manifest_for_read(&cap).await?;
        let (start, end) = match range {
            Some((s, e)) => (s.min(m.size), e.min(m.size).max(s.min(m.size))),
            None => (0, m.size),
        };
        let seg = m.segment_size.max(1);
        // Segments holding [start, end); none for an empty range.
        let (first, last) = if start < end {
            (start / seg, (end - 1) / seg + 1)
        } else {
            (0, 0)
        };
        let last = last.min(m.segments.len() as u64);
        let header = GetHeader {
            size: m.size,
            segments: last.saturating_sub(first),
            start,
            length: end - start,
        };
        // Depth 1: one decoded segment waits while the next is fetched.
        let (tx, rx) = mpsc::channel(1);
        let this = self.clone();
        tokio::spawn(async move {
            let (this, cap, m) = (&this, &cap, &m);
            // Fetch the next segment while this one is decoded and sent.
            let segments = futures::stream::iter(first..last)
                .map(|i| async move {
                    let at = i * seg;
                    // Part of a segment: parallel ranges of one segment
                    // (S3 clients' 8 MiB reads) share one fetch.
                    let partial = start > at || end < (at + seg).min(m.size);
                    let data = if partial {
                        this.segment_shared(cap, m, i).await?
                    } else {
                        this.segment_for_read(cap, m, i).await?
                    };
                    // Trim the first and last segments to the range.
                    let from = start.saturating_sub(at).min(data.len() as u64) as usize;
                    let to = (end - at).min(data.len() as u64) as usize;
                    Ok(data.slice(from..to.max(from)))
                })
                .buffered(GET_PIPELINE);
            futures::pin_mut!(segments);
            while let Some(res) = segments.next().await {
                let failed = res.is_err();
                if tx.send(res).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok((header, rx))
    }

    /// Per-piece health of a file: which holders answer and still have their pieces.
    pub async fn stat(&self, cap: &ReadCap) -> Result<StatReport, ClientError> {
        let m = self.manifest(cap).await?;
        let mut by_holder: HashMap<PeerId, Vec<PieceId>> = HashMap::new();
        for (s, seg) in m.segments.iter().enumerate() {
            for p in &seg.pieces {
                if let Ok(peer) = PeerId::from_bytes(&p.holder) {
                    by_holder
                        .entry(peer)
                        .or_default()
                        .push(m.file_id.piece_id(s as u64, u32::from(p.index)));
                }
            }
        }
        let probes = by_holder.into_iter().map(|(peer, ids)| async move {
            let answer = self.probe(peer, &ids).await;
            (peer, ids, answer)
        });
        let mut present: HashMap<PieceId, bool> = HashMap::new();
        let mut online: HashSet<PeerId> = HashSet::new();
        for (peer, ids, answer) in futures::future::join_all(probes).await {
            if let Some(has) = answer {
                online.insert(peer);
                present.extend(ids.into_iter().zip(has));
            }
        }
        let segments = m
            .segments
            .iter()
            .enumerate()
            .map(|(s, seg)| {
                let pieces: Vec<PieceHealth> = seg
                    .pieces
                    .iter()
                    .map(|p| {
                        let peer = PeerId::from_bytes(&p.holder).ok();
                        let id = m.file_id.piece_id(s as u64, u32::from(p.index));
                        PieceHealth {
                            index: p.index,
                            peer_id: peer
                                .map(|p| p.to_string())
                                .unwrap_or_else(|| "invalid".into()),
                            online: peer.is_some_and(|p| online.contains(&p)),
                            present: present.get(&id).copied().unwrap_or(false),
                        }
                    })
                    .collect();
                SegmentHealth {
                    index: s as u64,
                    healthy: pieces.iter().filter(|p| p.online && p.present).count(),
                    pieces,
                }
            })
            .collect();
        let lease_expires_at = match m.record {
            Some(id) => self.record(&id).await.map(|r| r.expires_at()),
            None => None,
        };
        Ok(StatReport {
            size: m.size,
            k: m.k,
            n: m.n,
            segment_size: m.segment_size,
            created_at: m.created_at,
            segments,
            record: m.record.map(|r| r.to_hex()),
            lease_expires_at,
        })
    }

    /// Asks a holder which of `ids` it has; `None` if it does not answer.
    async fn probe(&self, peer: PeerId, ids: &[PieceId]) -> Option<Vec<bool>> {
        if peer == self.local() {
            return Some(
                ids.iter()
                    .map(|id| self.store.has(id).unwrap_or(false))
                    .collect(),
            );
        }
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(cairn_net::protocol::MAX_HAS_IDS) {
            let req = Request {
                header: RequestHeader::Has {
                    ids: chunk.to_vec(),
                },
                body: Bytes::new(),
            };
            match self.net.request(peer, req, PROBE_TIMEOUT).await {
                Ok(r) => match r.header {
                    ResponseHeader::Has(h) if h.len() == chunk.len() => out.extend(h),
                    _ => return None,
                },
                Err(_) => return None,
            }
        }
        Some(out)
    }
}
