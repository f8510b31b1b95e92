//! The steward: keeps the repair records this node is closest to, watches
//! their holders, audits them and repairs segments, without the owner.
//!
//! Every [`StewardConfig::interval`] it walks its records (at most
//! [`StewardConfig::max_records`] per pass, the next ones at the next pass).
//! For each:
//!
//! 1. **Still mine?** The [`STEWARDS`] peers closest to the record id (by
//!    the DHT's metric) are its stewards. A node that is no longer among them
//!    hands the record to those that are and forgets it. The set a DHT walk
//!    found is reused for ten minutes while the routing table knows
//!    nobody closer and every steward answers: a walk is several requests
//!    and a routing-table scan on every peer asked, once per record per
//!    pass was most of an idle network's CPU.
//!    **Anti-entropy.** Each fellow steward is asked once per group of
//!    records how its copies compare with this node's (`RepairDigests`:
//!    the BLAKE3 of each); only copies that differ are fetched (`GetRepair`)
//!    and merged, and one that lacks something gets this node's. Who
//!    answers is who is alive to share the repair work.
//! 2. **Liveness.** Each holder is asked which of its pieces it has (`Has`),
//!    once per group of records (all its pieces of the group in one
//!    request), not once per record;
//!    an answer or its absence feeds that holder's
//!    [`cairn_core::liveness::Liveness`]. A holder unreachable longer than
//!    [`StewardConfig::grace`] counts as lost for repair; one that comes
//!    back counts again, unless its pieces were reassigned meanwhile.
//! 3. **Audits.** A holder that answered and is due gets one storage-proof
//!    challenge for a random piece of its (a fresh nonce each time). Audits
//!    of one holder come at random times, exponential gaps with mean
//!    [`StewardConfig::audit_interval`], through a random one of its
//!    records (records are tended in random order). The
//!    outcome moves its [`cairn_core::score::Reputation`]; a wrong proof or a
//!    missing piece marks that piece lost in the record (an `Unassign` op,
//!    so every steward learns it) and is kept as signed
//!    [`cairn_core::audit::AuditEvidence`], which goes to the record's
//!    other stewards too (`Evidence`): for a day none of them gives that
//!    holder a rebuilt piece ([`cairn_core::suspicion`]).
//! 4. **Repair.** [`cairn_core::repair::assess`] decides which segments
//!    need work; for each, the deterministic [`repairer`] among the
//!    stewards queues it, and the queue is drained most urgent first under
//!    the repair bandwidth limit: download k pieces (hash-checked), rebuild
//!    the missing ones ([`cairn_core::repair::rebuild`], on ciphertext, no
//!    key), store them on nodes [`cairn_core::placement::select`] picks apart
//!    from the surviving holders (never a node already in the segment or one
//!    that failed an audit lately), read each back and check its hash, and
//!    record the new assignments.
//! 5. **Spread.** A record that changed is pushed to the other stewards
//!    (`PutRepair`, merged as a CRDT) and to its holders (`SyncRepair`, so
//!    they renew, keep or drop their pieces).
//!
//! Scores, liveness, the evidence and the counters are kept in
//! `steward.redb` ([`crate::observations`]) at the end of every pass, so a
//! restarted steward remembers who cheated and who is usually up; the API
//! shows them ([`StewardView`]).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_core::PieceId;
use cairn_core::audit::{AuditAnswer, AuditEvidence, Challenge};
use cairn_core::erasure::shard_size;
use cairn_core::keys::{PublicKey, SecretKey};
use cairn_core::liveness::{Liveness, LivenessParams};
use cairn_core::placement::{self, Candidate};
use cairn_core::record::{Change, Record, RecordId};
use cairn_core::repair::{self, RepairPolicy, RepairQueue, TokenBucket, repairer};
use cairn_core::score::{AuditOutcome, Reputation, ScoreParams};
use cairn_core::suspicion::{self, Suspects};
use cairn_net::libp2p::PeerId;
use cairn_net::protocol::{MAX_DIGESTS, MAX_HAS_IDS};
use cairn_net::{Comparison, ErrorCode, Request, RequestHeader, Response, ResponseHeader};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Serialize;

use crate::NodeError;
use crate::client::{Blob, Client};
use crate::net::NetHandle;
use crate::now_secs;
use crate::observations::{Counters, HolderState, MAX_EVIDENCE, ObservationStore};
use crate::records::RecordStore;
use crate::service::allowed_authors;

/// Stewards per record.
pub const STEWARDS: usize = 5;
/// Holders tracked at most; past it the one observed longest ago is
/// forgotten (anyone can join, so this must not grow without end).
const MAX_HOLDERS: usize = 65_536;
/// How long a probe or audit may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest one repair may take before it is retried at a later pass.
const REPAIR_TIMEOUT: Duration = Duration::from_secs(45);
/// Longest a new holder may take to store one rebuilt piece.
const STORE_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest a DHT lookup may hold up a steward pass.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Holders probed at once.
const PROBE_CONCURRENCY: usize = 8;
/// Records whose holders are probed together, at most.
const GROUP_RECORDS: usize = 256;
/// Pieces of the records probed together: once a group has this many it
/// is probed (a group holds its records in memory).
const GROUP_PIECES: usize = 32_768;
/// How long a steward set found by a DHT walk is trusted. Until then the
/// routing table (asked for free) catches a closer newcomer and a steward
/// that stops answering drops the set, so the walk is only for what the
/// routing table cannot know.
const STEWARDS_TTL: Duration = Duration::from_secs(600);
/// Steward sets remembered at most.
const MAX_CACHED_SETS: usize = 65_536;
/// Default mean time between audits of one holder by one steward: ten
/// minutes. An audit costs the holder a 16 KiB read, the piece's outboard
/// and about 0.1 ms of CPU (BENCHMARKS.md).
pub const DEFAULT_AUDIT_SECS: u64 = 600;

/// How a steward works.
#[derive(Clone, Debug)]
pub struct StewardConfig {
    /// Time between passes over the records.
    pub interval: Duration,
    /// How long a holder may be unreachable before its pieces count as lost.
    pub grace: Duration,
    /// Mean time between two audits of one holder by this steward; the
    /// gaps are random (exponential), so a holder cannot tell when the
    /// next challenge comes.
    pub audit_interval: Duration,
    /// When a segment is repaired.
    pub policy: RepairPolicy,
    /// Repair bandwidth limit, bytes per second.
    pub repair_bytes_per_sec: u64,
    /// Records looked at per pass.
    pub max_records: usize,
    /// Repair jobs waiting at most.
    pub max_queue: usize,
}

impl Default for StewardConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            grace: Duration::from_secs(cairn_core::liveness::DEFAULT_GRACE_SECS),
            audit_interval: Duration::from_secs(DEFAULT_AUDIT_SECS),
            policy: RepairPolicy::default(),
            repair_bytes_per_sec: 16 << 20,
            max_records: 1024,
            max_queue: 4096,
        }
    }
}

/// One holder as this steward sees it, for the API.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct HolderView {
    /// Peer id.
    pub peer_id: String,
    /// Audit score in [0, 1].
    pub score: f64,
    /// Audits passed.
    pub passed: u64,
    /// Disqualified by audits.
    pub disqualified: bool,
    /// Counted as lost (unreachable longer than the grace period).
    pub lost: bool,
    /// Seconds unreachable, if it is failing now.
    pub unreachable_secs: Option<u64>,
    /// Share of time it answered (time-weighted, about a week).
    pub uptime: Option<f64>,
    /// Smoothed round-trip time of its answers.
    pub latency_ms: Option<u32>,
    /// Why the score moved, newest last.
    pub penalties: Vec<String>,
    /// A warning before a penalty bites.
    pub warning: Option<String>,
}

/// What the steward shows the API.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StewardView {
    /// Records stewarded here.
    pub records: usize,
    /// Holders audited, by peer id.
    pub holders: Vec<HolderView>,
    /// Repairs finished since start.
    pub repairs: u64,
    /// Pieces rebuilt since start.
    pub pieces_rebuilt: u64,
    /// Repair jobs waiting.
    pub queued: usize,
    /// Audits run since start.
    pub audits: u64,
    /// Passes over the records since this process started.
    pub passes: u64,
    /// DHT walks to find records' stewards since this process started
    /// (a found set is reused while the routing table agrees with it).
    pub lookups: u64,
    /// Liveness probes (`Has` requests) sent since this process started:
    /// one per holder per group of records, not one per record.
    pub probes: u64,
    /// Anti-entropy requests (`RepairDigests`) sent since this process
    /// started: one per fellow steward per group of records; only copies
    /// that differ are then fetched.
    pub digests: u64,
    /// Recent failed audits as hex-encoded signed evidence.
    pub evidence: Vec<String>,
    /// Holders caught failing audits in the last day, by this steward or
    /// by the fellow stewards that sent it their evidence: they get no
    /// rebuilt pieces from this steward.
    pub suspects: Vec<SuspectView>,
}

/// One suspected holder, for the API.
#[derive(Clone, Debug, Serialize)]
pub struct SuspectView {
    /// Peer id.
    pub peer_id: String,
    /// Unix seconds until which it stays suspect.
    pub until: u64,
    /// Peer ids of the stewards whose evidence it is (this node's own among
    /// them if it caught the holder itself).
    pub reported_by: Vec<String>,
}

/// Holders caught failing audits, shared by the steward and the service
/// (which takes fellow stewards' evidence).
pub type SharedSuspects = Arc<Mutex<Suspects>>;

/// The steward's shared view, read by the API.
pub type SharedView = Arc<Mutex<StewardView>>;

struct Holder {
    liveness: Liveness,
    score: Reputation,
    /// When this steward audits it next (milliseconds on the steward's
    /// clock); not kept across restarts, a fresh draw is as good.
    next_audit_ms: u64,
}

/// The steward actor's state.
pub struct Steward {
    net: NetHandle,
    client: Client,
    records: Arc<RecordStore>,
    key: Arc<SecretKey>,
    cfg: StewardConfig,
    holders: HashMap<PeerId, Holder>,
    queue: RepairQueue<(RecordId, u32)>,
    bucket: TokenBucket,
    started: Instant,
    scores: ScoreParams,
    live: LivenessParams,
    evidence: VecDeque<AuditEvidence>,
    repairs: u64,
    rebuilt: u64,
    audits: u64,
    view: SharedView,
    suspects: SharedSuspects,
    /// Where the last pass stopped, when there are more records than one
    /// pass looks at.
    cursor: Option<RecordId>,
    /// Where observations are kept across restarts.
    db: Option<Arc<ObservationStore>>,
    /// Holders observed since the last save.
    dirty: HashSet<PeerId>,
    /// Holders forgotten since the last save.
    forgotten: Vec<PeerId>,
    /// Evidence gathered since the last save.
    fresh_evidence: Vec<AuditEvidence>,
    /// Steward sets found lately.
    cache: StewardCache,
    /// DHT walks for stewards since start.
    lookups: u64,
    /// `Has` requests sent since start.
    probes: u64,
    /// `RepairDigests` requests sent since start.
    digests: u64,
    /// Passes finished since start.
    passes: u64,
}

/// A record between the two halves of its tending: its fellow stewards
/// were asked for their copies, its holders not yet.
struct Tending {
    id: RecordId,
    record: Record,
    authors: HashSet<PublicKey>,
    /// The other stewards.
    others: Vec<PeerId>,
    /// The stewards that answered, this node first.
    live_stewards: Vec<PeerId>,
    /// Stewards whose copy lacks something this one has.
    behind: Vec<PeerId>,
}

/// A record this pass tends, before anti-entropy.
struct Prepared {
    id: RecordId,
    record: Record,
    authors: HashSet<PublicKey>,
    /// The other stewards.
    others: Vec<PeerId>,
    /// BLAKE3 of this node's copy.
    digest: [u8; 32],
}

/// Assigned pieces of `record`.
fn pieces_of(record: &Record) -> usize {
    let segments = record.genesis().segments.len() as u32;
    (0..segments).map(|s| record.holders(s).count()).sum()
}

/// Files a fellow steward's answer to `RepairDigests` by record.
fn record_answers(
    answers: &mut HashMap<(usize, PeerId), Comparison>,
    peer: PeerId,
    records: &[usize],
    compared: Option<Vec<Comparison>>,
) {
    for (r, c) in records.iter().zip(compared.into_iter().flatten()) {
        answers.insert((*r, peer), c);
    }
}

/// What probing a group found for one record: the changes it needs and
/// the evidence of failed audits, by segment and index.
type Found = (Vec<Change>, Vec<(u32, u16, AuditEvidence)>);

/// One holder's probe (and audit, if it was due).
struct Probed {
    peer: PeerId,
    /// Its pieces of the group: (record, segment, index).
    pieces: Vec<(usize, u32, u16)>,
    /// Which of them it has, and the round trip.
    has: Option<(Vec<bool>, Option<u32>)>,
    /// The piece audited if it was due.
    pick: (usize, u32, u16),
    challenge: Challenge,
    root: [u8; 32],
    size: u64,
    audit: Option<Audit>,
}

/// Steward sets found by DHT walks. Without it a pass walks the DHT once
/// per record: each walk is several requests, and a routing-table scan on
/// every peer it asks (an idle 12-node devnet with 150 records, a pass
/// every 5 s, spent both its cores on steward passes).
#[derive(Default)]
struct StewardCache {
    sets: HashMap<RecordId, (Vec<PeerId>, Instant)>,
}

impl StewardCache {
    /// The set found for `id`, unless it is older than [`STEWARDS_TTL`]
    /// or `local` (the routing table's closest peers) has someone closer.
    fn get(&self, id: &RecordId, local: &[PeerId], now: Instant) -> Option<Vec<PeerId>> {
        let (set, at) = self.sets.get(id)?;
        if now.saturating_duration_since(*at) >= STEWARDS_TTL {
            return None;
        }
        still_stewards(id, set, local).then(|| set.clone())
    }

    fn put(&mut self, id: RecordId, set: Vec<PeerId>, now: Instant) {
        if self.sets.len() >= MAX_CACHED_SETS
            && !self.sets.contains_key(&id)
            && let Some(old) = self.sets.keys().next().copied()
        {
            self.sets.remove(&old);
        }
        self.sets.insert(id, (set, now));
    }

    fn forget(&mut self, id: &RecordId) {
        self.sets.remove(id);
    }

    /// Drops expired sets (of records since handed over or deleted too).
    fn expire(&mut self, now: Instant) {
        self.sets
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < STEWARDS_TTL);
    }
}

/// Whether `cached`, the stewards of `id` found earlier, still are, given
/// `local`, the peers the routing table knows closest to it: none of those
/// is closer than one of them (and the set is not short of one).
fn still_stewards(id: &RecordId, cached: &[PeerId], local: &[PeerId]) -> bool {
    let all: Vec<Vec<u8>> = cached.iter().chain(local).map(|p| p.to_bytes()).collect();
    let best = repair::stewards(id, &all, STEWARDS);
    best.len() == cached.len()
        && best
            .iter()
            .all(|b| cached.iter().any(|c| c.to_bytes().as_slice() == *b))
}

/// Milliseconds since the steward started (the bandwidth bucket's clock).
fn ms(started: Instant) -> u64 {
    started.elapsed().as_millis() as u64
}

fn peer_of(bytes: &[u8]) -> Option<PeerId> {
    PeerId::from_bytes(bytes).ok()
}

impl Steward {
    /// A steward over this node's records.
    pub fn new(
        net: NetHandle,
        client: Client,
        records: Arc<RecordStore>,
        key: Arc<SecretKey>,
        cfg: StewardConfig,
    ) -> Self {
        let started = Instant::now();
        let rate = cfg.repair_bytes_per_sec.max(1);
        Self {
            net,
            client,
            records,
            key,
            queue: RepairQueue::new(cfg.max_queue),
            bucket: TokenBucket::new(rate, rate.saturating_mul(4).max(256 << 20), 0),
            cfg,
            holders: HashMap::new(),
            started,
            scores: ScoreParams::default(),
            live: LivenessParams::default(),
            evidence: VecDeque::new(),
            repairs: 0,
            rebuilt: 0,
            audits: 0,
            view: Arc::new(Mutex::new(StewardView::default())),
            suspects: SharedSuspects::default(),
            cursor: None,
            db: None,
            dirty: HashSet::new(),
            forgotten: Vec::new(),
            fresh_evidence: Vec::new(),
            cache: StewardCache::default(),
            lookups: 0,
            probes: 0,
            digests: 0,
            passes: 0,
        }
    }

    /// A steward that keeps its observations in `db`, starting from what
    /// is there.
    pub fn with_observations(mut self, db: Arc<ObservationStore>) -> Result<Self, NodeError> {
        let loaded = db.load()?;
        for (peer, state) in loaded.holders {
            if let Some(peer) = peer_of(&peer) {
                self.holders.insert(
                    peer,
                    Holder {
                        liveness: state.liveness,
                        score: state.score,
                        next_audit_ms: 0,
                    },
                );
            }
        }
        self.evidence = loaded.evidence.into();
        self.audits = loaded.counters.audits;
        self.repairs = loaded.counters.repairs;
        self.rebuilt = loaded.counters.rebuilt;
        self.db = Some(db);
        self.publish();
        Ok(self)
    }

    /// A steward whose view is `view` (shared with the service beforehand).
    pub fn with_view(mut self, view: SharedView) -> Self {
        self.view = view;
        self
    }

    /// A steward that keeps its suspects in `suspects`, where the service
    /// adds those its fellow stewards report.
    pub fn with_suspects(mut self, suspects: SharedSuspects) -> Self {
        self.suspects = suspects;
        self
    }

    /// Runs passes forever.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.pass().await;
        }
    }

    /// One pass over the records, then the repair queue.
    ///
    /// Records are tended in groups: each record's stewards are found and
    /// asked for their copies one record at a time, then every holder of
    /// the group is probed (and audited if due) once, with all its pieces
    /// of the group in one `Has`, then each record takes what was found.
    /// A holder of many records costs one request per group, not one per
    /// record.
    pub async fn pass(&mut self) {
        let ids = match self.records.ids() {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!("steward cannot list its records: {e}");
                return;
            }
        };
        self.cache.expire(Instant::now());
        let mut group = Vec::new();
        let mut pieces = 0;
        for id in self.next_batch(ids) {
            match self.prepare(id).await {
                Ok(Some(p)) => {
                    pieces += pieces_of(&p.record);
                    group.push(p);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(record = %id, "steward pass: {e}"),
            }
            if group.len() >= GROUP_RECORDS || pieces >= GROUP_PIECES {
                let tending = self.compare(std::mem::take(&mut group)).await;
                self.tend_group(tending).await;
                pieces = 0;
            }
        }
        if !group.is_empty() {
            let tending = self.compare(group).await;
            self.tend_group(tending).await;
        }
        self.passes += 1;
        self.drain().await;
        self.publish();
        self.save().await;
    }

    /// Probes the holders of `group` and settles each record.
    async fn tend_group(&mut self, group: Vec<Tending>) {
        let now = now_secs();
        let found = self.check_holders(&group, now).await;
        for (t, (changes, evidence)) in group.into_iter().zip(found) {
            let id = t.id;
            if let Err(e) = self.settle(t, changes, evidence, now).await {
                tracing::warn!(record = %id, "steward pass: {e}");
            }
        }
    }

    /// The records this pass tends: at most `max_records`, starting after
    /// where the last pass stopped (so every record gets its turn however
    /// many there are), in random order (so which record a holder is
    /// audited through, and when in the pass, is not predictable).
    fn next_batch(&mut self, mut ids: Vec<RecordId>) -> Vec<RecordId> {
        use rand::seq::SliceRandom;
        ids.sort();
        let start = self
            .cursor
            .map_or(0, |c| ids.partition_point(|id| *id <= c));
        let mut batch: Vec<RecordId> = ids[start..]
            .iter()
            .chain(&ids[..start])
            .take(self.cfg.max_records)
            .copied()
            .collect();
        self.cursor = if batch.len() < ids.len() {
            batch.last().copied()
        } else {
            None
        };
        batch.shuffle(&mut rand::thread_rng());
        batch
    }

    /// Keeps what this pass observed.
    async fn save(&mut self) {
        let Some(db) = self.db.clone() else { return };
        let changed: Vec<(Vec<u8>, HolderState)> = self
            .dirty
            .drain()
            .filter_map(|p| {
                let h = self.holders.get(&p)?;
                Some((
                    p.to_bytes(),
                    HolderState::new(h.liveness.clone(), h.score.clone()),
                ))
            })
            .collect();
        let forgotten: Vec<Vec<u8>> = self.forgotten.drain(..).map(|p| p.to_bytes()).collect();
        let evidence = std::mem::take(&mut self.fresh_evidence);
        let counters = Counters {
            audits: self.audits,
            repairs: self.repairs,
            rebuilt: self.rebuilt,
        };
        let saved =
            tokio::task::spawn_blocking(move || db.save(&changed, &forgotten, &evidence, counters))
                .await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("steward cannot keep its observations: {e}"),
            Err(e) => tracing::warn!("steward cannot keep its observations: {e}"),
        }
    }

    fn holder(&mut self, peer: PeerId) -> &mut Holder {
        self.dirty.insert(peer);
        if self.holders.len() >= MAX_HOLDERS && !self.holders.contains_key(&peer) {
            let oldest = self
                .holders
                .iter()
                .min_by_key(|(_, h)| h.liveness.last_answer().or(h.liveness.failing_since()))
                .map(|(p, _)| *p);
            if let Some(old) = oldest {
                self.holders.remove(&old);
                self.dirty.remove(&old);
                self.forgotten.push(old);
            }
        }
        let scores = &self.scores;
        let first_audit = ms(self.started) + self.audit_gap();
        self.holders.entry(peer).or_insert_with(|| Holder {
            liveness: Liveness::new(),
            score: Reputation::new(scores),
            next_audit_ms: first_audit,
        })
    }

    /// A random gap until the next audit of a holder.
    fn audit_gap(&self) -> u64 {
        let mean = u64::try_from(self.cfg.audit_interval.as_millis()).unwrap_or(u64::MAX);
        suspicion::next_audit_in(mean, rand::random::<f64>())
    }

    /// Whether `peer` is due for an audit now; if so, draws its next one.
    fn audit_due(&mut self, peer: PeerId) -> bool {
        let now = ms(self.started);
        let gap = self.audit_gap();
        let holder = self.holder(peer);
        if holder.next_audit_ms > now {
            return false;
        }
        holder.next_audit_ms = now + gap;
        true
    }

    fn is_healthy(&self, peer: &PeerId, now: u64) -> bool {
        self.holders.get(peer).is_none_or(|h| {
            !h.score.is_disqualified() && !h.liveness.is_lost(now, self.cfg.grace.as_secs())
        })
    }

    /// Peers closest to `key`: a DHT lookup, bounded in time (a lookup
    /// through slow peers can take its full 30 s), else the routing table.
    async fn closest(&self, key: &[u8], count: usize) -> Vec<PeerId> {
        match tokio::time::timeout(LOOKUP_TIMEOUT, self.net.closest_peers(key, count)).await {
            Ok(peers) if !peers.is_empty() => peers,
            _ => self.net.closest_local(key, count).await,
        }
    }

    /// The current stewards of `id` (this node included if it is one):
    /// the set a DHT walk found lately, while the routing table knows
    /// nobody closer; else a fresh walk.
    async fn stewards(&mut self, id: &RecordId) -> Vec<PeerId> {
        let me = self.net.local_peer_id();
        let mut local = self.net.closest_local(&id.0, STEWARDS).await;
        local.push(me);
        let now = Instant::now();
        if let Some(set) = self.cache.get(id, &local, now) {
            return set;
        }
        self.lookups += 1;
        let mut peers = self.closest(&id.0, STEWARDS).await;
        // The routing table's own candidates too: a walk that missed one
        // of them would otherwise be redone at every pass.
        peers.extend(local);
        let bytes: Vec<Vec<u8>> = peers.iter().map(|p| p.to_bytes()).collect();
        let set: Vec<PeerId> = repair::stewards(id, &bytes, STEWARDS)
            .into_iter()
            .filter_map(peer_of)
            .collect();
        self.cache.put(*id, set.clone(), now);
        set
    }

    /// The first step of tending a record: is this node still one of its
    /// stewards (else hand it over)? `None` if there is nothing more to do.
    async fn prepare(&mut self, id: RecordId) -> Result<Option<Prepared>, String> {
        // The digest is of the kept bytes, as a fellow steward hashes its own.
        let Some(kept) = self.records.get_encoded(&id).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let digest = *blake3::hash(&kept).as_bytes();
        let record = Record::decode_trusted(&kept, Some(id)).map_err(|e| e.to_string())?;
        let me = self.net.local_peer_id();
        let stewards = self.stewards(&id).await;
        if !stewards.contains(&me) {
            // Hand over: keep it until at least one current steward has it.
            self.cache.forget(&id);
            if self.push(&record, &stewards).await > 0 {
                let _ = self.records.remove(&id);
            }
            return Ok(None);
        }
        let authors = allowed_authors(&self.net, &id).await;
        let others: Vec<PeerId> = stewards.iter().copied().filter(|p| *p != me).collect();
        Ok(Some(Prepared {
            id,
            record,
            authors,
            others,
            digest,
        }))
    }

    /// Anti-entropy for a group: each fellow steward is asked once (per
    /// [`MAX_DIGESTS`] records) how its copies compare with this node's;
    /// only copies that differ are fetched and merged ([`Self::reconcile`]).
    /// Who answers is also who is alive to share the repair work.
    async fn compare(&mut self, group: Vec<Prepared>) -> Vec<Tending> {
        let mut by_peer: HashMap<PeerId, Vec<usize>> = HashMap::new();
        for (r, p) in group.iter().enumerate() {
            for peer in &p.others {
                by_peer.entry(*peer).or_default().push(r);
            }
        }
        let mut asks = FuturesUnordered::new();
        let mut answers: HashMap<(usize, PeerId), Comparison> = HashMap::new();
        for (peer, records) in by_peer {
            for chunk in records.chunks(MAX_DIGESTS) {
                let entries: Vec<(RecordId, [u8; 32])> = chunk
                    .iter()
                    .map(|&r| (group[r].id, group[r].digest))
                    .collect();
                let chunk = chunk.to_vec();
                let net = self.net.clone();
                self.digests += 1;
                asks.push(async move {
                    let request = Request {
                        header: RequestHeader::RepairDigests { entries },
                        body: Bytes::new(),
                    };
                    let compared = match net.request(peer, request, PROBE_TIMEOUT).await {
                        Ok(Response {
                            header: ResponseHeader::Compared(c),
                            ..
                        }) if c.len() == chunk.len() => Some(c),
                        _ => None,
                    };
                    (peer, chunk, compared)
                });
                if asks.len() >= PROBE_CONCURRENCY
                    && let Some((peer, chunk, compared)) = asks.next().await
                {
                    record_answers(&mut answers, peer, &chunk, compared);
                }
            }
        }
        while let Some((peer, chunk, compared)) = asks.next().await {
            record_answers(&mut answers, peer, &chunk, compared);
        }
        let mut out = Vec::with_capacity(group.len());
        for (r, p) in group.into_iter().enumerate() {
            let id = p.id;
            let found: Vec<(PeerId, Option<Comparison>)> = p
                .others
                .iter()
                .map(|peer| (*peer, answers.get(&(r, *peer)).copied()))
                .collect();
            match self.reconcile(p, found).await {
                Ok(Some(t)) => out.push(t),
                Ok(None) => {}
                Err(e) => tracing::warn!(record = %id, "steward pass: {e}"),
            }
        }
        out
    }

    /// One record's anti-entropy, given how each fellow steward's copy
    /// compares (`None`: it did not answer): fetches and merges the copies
    /// that differ, and says who is behind. `None` if the record turns out
    /// deleted.
    async fn reconcile(
        &mut self,
        p: Prepared,
        found: Vec<(PeerId, Option<Comparison>)>,
    ) -> Result<Option<Tending>, String> {
        let Prepared {
            id,
            mut record,
            authors,
            others,
            ..
        } = p;
        let authority = |k: &PublicKey| authors.contains(k);
        let me = self.net.local_peer_id();
        let mut live_stewards = vec![me];
        let mut same = Vec::new();
        let mut theirs = Vec::new();
        let mut differ = Vec::new();
        for (peer, c) in found {
            match c {
                None => {}
                Some(Comparison::Same) => {
                    live_stewards.push(peer);
                    same.push(peer);
                }
                Some(Comparison::Missing) => {
                    live_stewards.push(peer);
                    theirs.push((peer, None));
                }
                Some(Comparison::Differs) => {
                    live_stewards.push(peer);
                    differ.push(peer);
                }
            }
        }
        let copies = futures::future::join_all(differ.iter().map(|&peer| {
            let net = self.net.clone();
            async move {
                let request = Request {
                    header: RequestHeader::GetRepair { id },
                    body: Bytes::new(),
                };
                match net.request(peer, request, PROBE_TIMEOUT).await {
                    Ok(r) if matches!(r.header, ResponseHeader::Data) => (peer, Some(r.body)),
                    _ => (peer, None),
                }
            }
        }))
        .await;
        let mut merged_in = false;
        for (peer, body) in copies {
            let copy = body.and_then(|b| Record::decode(&b, Some(id), &authority).ok());
            if let Some(copy) = &copy
                && record.merge(copy, &authority) == Ok(cairn_core::record::Merged::Changed)
            {
                merged_in = true;
            }
            theirs.push((peer, copy));
        }
        // Behind: those that lack something the merged record has.
        let mut behind: Vec<PeerId> = theirs
            .into_iter()
            .filter(|(_, copy)| copy.as_ref() != Some(&record))
            .map(|(peer, _)| peer)
            .collect();
        if merged_in {
            behind.extend(same);
        }
        if live_stewards.len() <= others.len() {
            // A steward is gone: walk again at the next pass, someone else
            // may have taken its place.
            self.cache.forget(&id);
        }
        if merged_in {
            record = self
                .records
                .merge(&record, &authority)
                .map_err(|e| e.to_string())?
                .1;
        }
        if record.is_deleted() {
            // Tell holders once, when the tombstone first reaches this
            // steward through anti-entropy (the owner told them already).
            if merged_in {
                self.sync_holders(&record).await;
            }
            return Ok(None);
        }
        Ok(Some(Tending {
            id,
            record,
            authors,
            others,
            live_stewards,
            behind,
        }))
    }

    /// The second half: records what the holders' probes and audits found,
    /// shares the evidence, queues the repairs this steward does and
    /// spreads a changed record.
    async fn settle(
        &mut self,
        t: Tending,
        changes: Vec<Change>,
        evidence: Vec<(u32, u16, AuditEvidence)>,
        now: u64,
    ) -> Result<(), String> {
        let Tending {
            id,
            mut record,
            authors,
            others,
            live_stewards,
            behind,
        } = t;
        let authority = |k: &PublicKey| authors.contains(k);
        let me = self.net.local_peer_id();
        if !evidence.is_empty() {
            // Only those that answered this pass: a dead steward would hold
            // the pass up for the request's timeout.
            let peers: Vec<PeerId> = live_stewards.iter().copied().filter(|p| *p != me).collect();
            self.share(id, &evidence, &peers).await;
        }
        let mut changed = false;
        if !changes.is_empty() {
            self.commit(&mut record, now, changes, &authority)?;
            changed = true;
        }
        // Queue the segments this steward is the repairer of.
        let health = repair::assess(&record, |_, _, holder| {
            peer_of(holder).is_some_and(|p| self.is_healthy(&p, now))
        });
        let live: Vec<Vec<u8>> = live_stewards.iter().map(|p| p.to_bytes()).collect();
        let live: Vec<&[u8]> = live.iter().map(Vec::as_slice).collect();
        let me_bytes = me.to_bytes();
        for h in health {
            if h.needs_repair(&self.cfg.policy)
                && repairer(&id, h.segment, &live) == Some(me_bytes.as_slice())
            {
                self.queue
                    .push((id, h.segment), h.margin(), ms(self.started));
            }
        }
        if changed {
            self.push(&record, &others).await;
            self.sync_holders(&record).await;
        } else if !behind.is_empty() {
            self.push(&record, &behind).await;
        }
        Ok(())
    }

    /// Probes every holder of the `group`'s records once, all its pieces
    /// of the group in one `Has` (or a few, [`MAX_HAS_IDS`] each), and
    /// audits those that are due through one random piece of theirs;
    /// returns, per record, the changes it needs (pieces proven missing or
    /// damaged) and the evidence of those failures, for the other stewards.
    async fn check_holders(&mut self, group: &[Tending], now: u64) -> Vec<Found> {
        // Holder -> its pieces in the group: (record, segment, index).
        let mut by_holder: BTreeMap<Vec<u8>, Vec<(usize, u32, u16)>> = BTreeMap::new();
        for (r, t) in group.iter().enumerate() {
            let g = t.record.genesis();
            for segment in 0..g.segments.len() as u32 {
                for (index, holder) in t.record.holders(segment) {
                    by_holder
                        .entry(holder.to_vec())
                        .or_default()
                        .push((r, segment, index));
                }
            }
        }
        let me = self.net.local_peer_id();
        let mut probes = FuturesUnordered::new();
        let mut results = Vec::new();
        for (holder, pieces) in by_holder {
            let Some(peer) = peer_of(&holder) else {
                continue;
            };
            let ids: Vec<PieceId> = pieces
                .iter()
                .map(|&(r, s, i)| group[r].record.genesis().piece_id(s, i))
                .collect();
            // One random piece is audited when the holder is due.
            let pick = pieces[rand::random::<u64>() as usize % pieces.len()];
            let (r, s, i) = pick;
            let g = group[r].record.genesis();
            let size = g
                .segments
                .get(s as usize)
                .map(|seg| shard_size(seg.sealed_len as usize, g.k) as u64)
                .unwrap_or(0);
            let root = g.piece_hash(s, i).unwrap_or([0; 32]);
            let challenge = Challenge::random(g.piece_id(s, i));
            let due = peer != me && self.audit_due(peer);
            if peer != me {
                self.probes += ids.len().div_ceil(MAX_HAS_IDS) as u64;
            }
            let net = self.net.clone();
            let store = self.client.store().clone();
            probes.push(async move {
                // This node holds pieces too; it does not audit itself
                // (the other stewards do) and reads its own index directly.
                let has = if peer == me {
                    tokio::task::spawn_blocking(move || {
                        let has = ids.iter().map(|id| store.has(id).unwrap_or(false));
                        (has.collect(), None)
                    })
                    .await
                    .ok()
                } else {
                    probe(&net, peer, ids).await
                };
                let audit = match &has {
                    Some(_) if due => Some(audit(&net, peer, challenge, root, size).await),
                    _ => None,
                };
                Probed {
                    peer,
                    pieces,
                    has,
                    pick,
                    challenge,
                    root,
                    size,
                    audit,
                }
            });
            if probes.len() >= PROBE_CONCURRENCY
                && let Some(r) = probes.next().await
            {
                results.push(r);
            }
        }
        while let Some(r) = probes.next().await {
            results.push(r);
        }
        let mut found: Vec<Found> = group.iter().map(|_| Found::default()).collect();
        for p in results {
            let params = self.live.clone();
            let holder = self.holder(p.peer);
            match &p.has {
                Some((_, rtt)) => holder.liveness.answered(&params, now, *rtt),
                None => holder.liveness.missed(&params, now),
            }
            // The holder's own word that it lacks a piece.
            if let Some((has, _)) = &p.has {
                for (&(r, segment, index), there) in p.pieces.iter().zip(has) {
                    if !there {
                        tracing::info!(peer = %p.peer, segment, index, "holder says it lacks a piece");
                        found[r].0.push(Change::Unassign { segment, index });
                    }
                }
            }
            let Some(outcome) = p.audit else { continue };
            let (r, s, i) = p.pick;
            self.audits += 1;
            let scores = self.scores.clone();
            let holder = self.holder(p.peer);
            let piece = p.challenge.piece;
            let recorded = holder
                .score
                .record(&scores, now, outcome.outcome(), Some(piece));
            if recorded.disqualified {
                tracing::warn!(peer = %p.peer, "holder disqualified by audits");
            }
            if let Some(evidence) =
                outcome.evidence(&self.key, p.peer, p.challenge, p.root, p.size, now)
            {
                tracing::info!(peer = %p.peer, piece = %piece, "audit failed: {:?}", outcome.outcome());
                if self.evidence.len() >= MAX_EVIDENCE {
                    self.evidence.pop_front();
                }
                self.evidence.push_back(evidence.clone());
                self.fresh_evidence.push(evidence.clone());
                if matches!(outcome, Audit::Missing | Audit::Wrong(_)) {
                    if let Ok(mut suspects) = self.suspects.lock() {
                        suspects.report(evidence.holder, self.key.public(), evidence.at, now);
                    }
                    found[r].1.push((s, i, evidence));
                }
            }
            if matches!(outcome, Audit::Missing | Audit::Wrong(_)) {
                let unassign = Change::Unassign {
                    segment: s,
                    index: i,
                };
                if !found[r].0.contains(&unassign) {
                    found[r].0.push(unassign);
                }
            }
        }
        found
    }

    /// Sends evidence of failed audits to the record's other stewards, so
    /// they too keep the holder out of repairs (see
    /// [`cairn_core::suspicion`]).
    async fn share(&self, id: RecordId, evidence: &[(u32, u16, AuditEvidence)], peers: &[PeerId]) {
        let sends = evidence.iter().flat_map(|(segment, index, e)| {
            let body = e.to_bytes().map(Bytes::from).ok();
            peers.iter().filter_map(move |&peer| {
                let request = Request {
                    header: RequestHeader::Evidence {
                        id,
                        segment: *segment,
                        index: *index,
                    },
                    body: body.clone()?,
                };
                Some(async move {
                    let answer = self.net.request(peer, request, PROBE_TIMEOUT).await;
                    if !matches!(&answer, Ok(r) if matches!(r.header, ResponseHeader::Stored)) {
                        tracing::debug!(%peer, "a fellow steward did not take evidence: {answer:?}");
                    }
                })
            })
        });
        futures::future::join_all(sends).await;
    }

    /// Signs `changes` into `record` as this steward and keeps the result.
    fn commit(
        &self,
        record: &mut Record,
        now: u64,
        changes: Vec<Change>,
        authority: &impl cairn_core::record::Authority,
    ) -> Result<(), String> {
        record
            .update(&self.key, now, changes, authority)
            .map_err(|e| e.to_string())?;
        self.records
            .merge(record, authority)
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Sends `record` to `peers`; returns how many took it.
    async fn push(&self, record: &Record, peers: &[PeerId]) -> usize {
        let body = Bytes::from(record.encode());
        let me = self.net.local_peer_id();
        // All at once: a slow steward must not hold up the others.
        let sends = peers.iter().map(|&peer| {
            let request = Request {
                header: RequestHeader::PutRepair { id: record.id() },
                body: body.clone(),
            };
            async move {
                peer == me
                    || matches!(
                        self.net.request(peer, request, PROBE_TIMEOUT).await,
                        Ok(r) if matches!(r.header, ResponseHeader::Stored)
                    )
            }
        });
        futures::future::join_all(sends)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count()
    }

    /// Tells every holder of `record` to match it (renew, drop).
    async fn sync_holders(&self, record: &Record) {
        let mut peers = HashSet::new();
        let g = record.genesis();
        for segment in 0..g.segments.len() as u32 {
            for (_, holder) in record.holders(segment) {
                if let Some(p) = peer_of(holder) {
                    peers.insert(p);
                }
            }
        }
        if record.is_deleted() {
            // Every holder that may have a piece: everyone this node knows.
            peers.extend(self.net.closest_local(&record.id().0, 64).await);
        }
        let body = Bytes::from(record.encode());
        let mut syncs = Vec::with_capacity(peers.len());
        for peer in peers {
            let request = Request {
                header: RequestHeader::SyncRepair { id: record.id() },
                body: body.clone(),
            };
            syncs.push(async move {
                let _ = self.net.request(peer, request, PROBE_TIMEOUT).await;
            });
        }
        // Concurrently, as for `push`; at most the peers listed above.
        futures::future::join_all(syncs).await;
    }

    /// Runs queued repairs while the bandwidth allows.
    async fn drain(&mut self) {
        while let Some(job) = self.queue.pop() {
            let (id, segment) = job.key;
            let Ok(Some(record)) = self.records.get(&id) else {
                continue;
            };
            let g = record.genesis();
            let Some(info) = g.segments.get(segment as usize) else {
                continue;
            };
            let piece = shard_size(info.sealed_len as usize, g.k) as u64;
            let bytes = piece * u64::from(g.n);
            if self.bucket.take(bytes, ms(self.started)).is_err() {
                self.queue.push(job.key, job.margin, job.queued_at);
                break;
            }
            // A repair stuck on a slow peer must not stall the steward: the
            // next pass finds the segment again and retries.
            let outcome =
                match tokio::time::timeout(REPAIR_TIMEOUT, self.repair(record, segment)).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("gave up after {REPAIR_TIMEOUT:?}")),
                };
            match outcome {
                Ok(n) => {
                    if n > 0 {
                        self.repairs += 1;
                        self.rebuilt += n as u64;
                        tracing::info!(record = %id, segment, pieces = n, "repaired segment");
                    }
                }
                Err(e) => tracing::warn!(record = %id, segment, "repair failed: {e}"),
            }
        }
    }

    /// Repairs one segment; returns the pieces placed.
    async fn repair(&mut self, mut record: Record, segment: u32) -> Result<usize, String> {
        let now = now_secs();
        let health = repair::assess(&record, |_, _, holder| {
            peer_of(holder).is_some_and(|p| self.is_healthy(&p, now))
        });
        let Some(h) = health.into_iter().nth(segment as usize) else {
            return Ok(0);
        };
        if !h.needs_repair(&self.cfg.policy) || h.rebuild.is_empty() {
            return Ok(0);
        }
        let g = record.genesis().clone();
        // 1. Download k verified pieces (a few extra in flight for speed).
        let mut sources: Vec<(u16, PeerId)> = h
            .sources
            .iter()
            .filter_map(|&i| Some((i, peer_of(record.holder(segment, i)?)?)))
            .collect();
        // Prefer data pieces: decoding from them is a copy.
        sources.sort_by_key(|(i, _)| *i);
        let mut got: Vec<(u16, Bytes)> = Vec::new();
        let mut pending = sources.into_iter();
        let mut running = FuturesUnordered::new();
        let k = usize::from(g.k);
        loop {
            while got.len() + running.len() < k + 1 {
                let Some((i, peer)) = pending.next() else {
                    break;
                };
                let blob = Blob::Piece {
                    id: g.piece_id(segment, i),
                    hash: g.piece_hash(segment, i).unwrap_or([0; 32]),
                };
                let client = &self.client;
                running.push(async move {
                    let got =
                        tokio::time::timeout(STORE_TIMEOUT, client.fetch_blob(peer, blob)).await;
                    (i, got.ok().and_then(Result::ok))
                });
            }
            if got.len() >= k {
                break;
            }
            let Some((i, res)) = running.next().await else {
                return Err(format!(
                    "only {} of the {k} pieces needed could be downloaded",
                    got.len()
                ));
            };
            if let Some(data) = res {
                got.push((i, data));
            }
        }
        drop(running);
        // 2. Rebuild the missing pieces (ciphertext only; no key involved).
        let wanted = h.rebuild.clone();
        tracing::info!(record = %record.id(), segment, ?wanted, sources = ?h.sources, "repairing");
        let rec = record.clone();
        let rebuilt = tokio::task::spawn_blocking(move || {
            let srcs: Vec<(u16, &[u8])> = got.iter().map(|(i, d)| (*i, d.as_ref())).collect();
            repair::rebuild(&rec, segment, &srcs, &wanted)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        // 3. Place them apart from the surviving holders.
        let key = g.file_id.segment_key(u64::from(segment));
        let survivors: HashSet<Vec<u8>> = h
            .sources
            .iter()
            .filter_map(|&i| record.holder(segment, i).map(<[u8]>::to_vec))
            .collect();
        // Never back onto a node already in the segment (healthy or not) or
        // one that failed an audit lately: it may claim a piece it lost.
        let in_segment: HashSet<Vec<u8>> =
            record.holders(segment).map(|(_, h)| h.to_vec()).collect();
        let all = match tokio::time::timeout(LOOKUP_TIMEOUT * 2, self.client.candidates(&key)).await
        {
            Ok(all) => all,
            Err(_) => return Err("no candidates: the DHT lookup timed out".into()),
        };
        let (existing, candidates): (Vec<Candidate>, Vec<Candidate>) =
            all.into_iter().partition(|c| survivors.contains(&c.peer));
        let candidates: Vec<Candidate> = candidates
            .into_iter()
            .filter(|c| {
                !in_segment.contains(&c.peer)
                    && peer_of(&c.peer).is_none_or(|p| !self.is_suspect(&p, now))
            })
            .collect();
        let sites: Vec<_> = existing.iter().map(Candidate::site).collect();
        let piece_bytes = rebuilt.first().map_or(0, |(_, p)| p.len() as u64);
        let order = placement::select(
            &key,
            rebuilt.len(),
            piece_bytes,
            &candidates,
            &sites,
            &placement::Policy::default(),
        );
        let mut targets = order
            .into_iter()
            .filter_map(|i| peer_of(&candidates.get(i)?.peer));
        let expires = record.expires_at();
        let mut changes = Vec::new();
        for (index, data) in rebuilt {
            let blob = Blob::Piece {
                id: g.piece_id(segment, index),
                hash: g.piece_hash(segment, index).unwrap_or([0; 32]),
            };
            let data = Bytes::from(data);
            // Try targets in order until one takes it and proves it holds it.
            for peer in targets.by_ref() {
                let stored = tokio::time::timeout(
                    STORE_TIMEOUT,
                    self.client.store_blob(peer, blob, data.clone(), expires),
                )
                .await;
                if matches!(stored, Ok(Ok(()))) && self.verify_new_holder(peer, blob).await {
                    changes.push(Change::Assign {
                        segment,
                        index,
                        holder: peer.to_bytes(),
                    });
                    break;
                }
            }
        }
        if changes.is_empty() {
            return Err("no node took a rebuilt piece".into());
        }
        // 4. Record the new holders and tell the other stewards.
        let placed = changes.len();
        let id = record.id();
        let authors = allowed_authors(&self.net, &id).await;
        let authority = |k: &PublicKey| authors.contains(k);
        // Merge first: another steward's ops may have arrived meanwhile.
        if let Ok(Some(current)) = self.records.get(&id) {
            let _ = record.merge(&current, &authority);
        }
        self.commit(&mut record, now, changes, &authority)?;
        let me = self.net.local_peer_id();
        let others: Vec<PeerId> = self
            .stewards(&id)
            .await
            .into_iter()
            .filter(|p| *p != me)
            .collect();
        self.push(&record, &others).await;
        self.sync_holders(&record).await;
        Ok(placed)
    }

    /// A holder that failed an audit in the last day (or is disqualified),
    /// by this steward's audits or by a fellow steward's evidence.
    fn is_suspect(&self, peer: &PeerId, now: u64) -> bool {
        let reported = PublicKey::from_peer_bytes(&peer.to_bytes())
            .is_some_and(|k| self.suspects.lock().is_ok_and(|s| s.is_suspect(&k, now)));
        reported
            || self.holders.get(peer).is_some_and(|h| {
                h.score.is_disqualified()
                    || h.score
                        .penalties()
                        .any(|p| p.outcome.is_failure() && p.at + suspicion::SUSPICION_SECS > now)
            })
    }

    /// Reads back a rebuilt piece from the node that just took it: it must
    /// serve bytes that hash right. (A node that lost a piece's file or
    /// corrupted it may claim to "already have" it; an audit of one group
    /// could pass by luck, a full read cannot.)
    async fn verify_new_holder(&self, peer: PeerId, blob: Blob) -> bool {
        matches!(
            tokio::time::timeout(STORE_TIMEOUT, self.client.fetch_blob(peer, blob)).await,
            Ok(Ok(_))
        )
    }

    fn publish(&self) {
        let now = now_secs();
        let mut holders: Vec<HolderView> = self
            .holders
            .iter()
            .map(|(peer, h)| HolderView {
                peer_id: peer.to_string(),
                score: h.score.score(),
                passed: h.score.passed(),
                disqualified: h.score.is_disqualified(),
                lost: h.liveness.is_lost(now, self.cfg.grace.as_secs()),
                unreachable_secs: h.liveness.unreachable_for(now),
                uptime: h.liveness.uptime(),
                latency_ms: h.liveness.latency_ms(),
                penalties: h.score.penalties().map(|p| p.to_string()).collect(),
                warning: h.score.warning(&self.scores).map(|w| w.to_string()),
            })
            .collect();
        holders.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        let peer_name = |k: &PublicKey| {
            PeerId::from_bytes(&k.peer_bytes())
                .map_or_else(|_| cairn_core::hex(&k.0), |p| p.to_string())
        };
        let suspects = self
            .suspects
            .lock()
            .map(|s| s.current(now))
            .unwrap_or_default()
            .into_iter()
            .map(|(k, s)| SuspectView {
                peer_id: peer_name(&k),
                until: s.until(),
                reported_by: s.reporters.iter().map(peer_name).collect(),
            })
            .collect();
        let view = StewardView {
            suspects,
            records: self.records.ids().map(|v| v.len()).unwrap_or(0),
            holders,
            repairs: self.repairs,
            pieces_rebuilt: self.rebuilt,
            queued: self.queue.len(),
            audits: self.audits,
            passes: self.passes,
            lookups: self.lookups,
            probes: self.probes,
            digests: self.digests,
            evidence: self
                .evidence
                .iter()
                .filter_map(|e| e.to_bytes().ok())
                .map(|b| cairn_core::hex(&b))
                .collect(),
        };
        if let Ok(mut v) = self.view.lock() {
            *v = view;
        }
    }
}

/// What an audit came to.
enum Audit {
    Passed,
    Timeout(u64),
    Missing,
    Wrong(Box<AuditAnswer>),
}

impl Audit {
    fn outcome(&self) -> AuditOutcome {
        match self {
            Audit::Passed => AuditOutcome::Passed,
            Audit::Timeout(_) => AuditOutcome::Timeout,
            Audit::Missing => AuditOutcome::Missing,
            Audit::Wrong(_) => AuditOutcome::BadProof,
        }
    }

    /// Signed evidence of a failure.
    fn evidence(
        &self,
        key: &SecretKey,
        peer: PeerId,
        challenge: Challenge,
        root: [u8; 32],
        size: u64,
        now: u64,
    ) -> Option<AuditEvidence> {
        let holder = PublicKey::from_peer_bytes(&peer.to_bytes())?;
        match self {
            Audit::Passed => None,
            Audit::Timeout(waited) => Some(AuditEvidence::timeout(
                key,
                holder,
                challenge,
                root,
                size,
                now,
                u32::try_from(*waited).unwrap_or(u32::MAX),
            )),
            Audit::Missing => Some(AuditEvidence::missing(
                key, holder, challenge, root, size, now,
            )),
            Audit::Wrong(answer) => {
                AuditEvidence::wrong_proof(key, root, size, (**answer).clone(), now).ok()
            }
        }
    }
}

/// Which of `ids` `peer` holds and how long it took to say so (the
/// round trip placement prefers short); `None` if it does not answer.
/// More than [`MAX_HAS_IDS`] ids go in several requests, one after the
/// other; the round trip is the first one's.
async fn probe(
    net: &NetHandle,
    peer: PeerId,
    ids: Vec<PieceId>,
) -> Option<(Vec<bool>, Option<u32>)> {
    let mut all = Vec::with_capacity(ids.len());
    let mut first_rtt = None;
    for chunk in ids.chunks(MAX_HAS_IDS) {
        let request = Request {
            header: RequestHeader::Has {
                ids: chunk.to_vec(),
            },
            body: Bytes::new(),
        };
        let started = Instant::now();
        let answer = net.request(peer, request, PROBE_TIMEOUT).await.ok()?;
        let ResponseHeader::Has(v) = answer.header else {
            return None;
        };
        if v.len() != chunk.len() {
            // A lying or broken holder: not an answer.
            return None;
        }
        let rtt = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
        first_rtt.get_or_insert(rtt);
        all.extend(v);
    }
    Some((all, first_rtt))
}

/// Challenges `peer` for one chunk group of a piece.
async fn audit(
    net: &NetHandle,
    peer: PeerId,
    challenge: Challenge,
    root: [u8; 32],
    size: u64,
) -> Audit {
    let started = Instant::now();
    let request = Request {
        header: RequestHeader::Audit {
            id: challenge.piece,
            nonce: challenge.nonce,
        },
        body: Bytes::new(),
    };
    let Some(holder) = PublicKey::from_peer_bytes(&peer.to_bytes()) else {
        return Audit::Missing;
    };
    match net.request(peer, request, PROBE_TIMEOUT).await {
        Ok(r) => match r.header {
            ResponseHeader::Audited(answer) => {
                if answer.verify(&root, size, &challenge, &holder).is_ok() {
                    Audit::Passed
                } else {
                    Audit::Wrong(Box::new(answer))
                }
            }
            ResponseHeader::Error {
                code: ErrorCode::NotFound | ErrorCode::Corrupted,
                ..
            } => Audit::Missing,
            _ => Audit::Timeout(started.elapsed().as_secs()),
        },
        Err(_) => Audit::Timeout(started.elapsed().as_secs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Eight peers, sorted by distance to `id` (closest first).
    fn ranked(id: &RecordId) -> Vec<PeerId> {
        let peers: Vec<PeerId> = (0..8).map(|_| PeerId::random()).collect();
        let bytes: Vec<Vec<u8>> = peers.iter().map(|p| p.to_bytes()).collect();
        repair::stewards(id, &bytes, bytes.len())
            .into_iter()
            .filter_map(peer_of)
            .collect()
    }

    #[test]
    fn a_steward_set_stands_until_the_routing_table_knows_someone_closer() {
        let id = RecordId([7; 32]);
        let peers = ranked(&id);
        let best = peers[..STEWARDS].to_vec();
        // The routing table knows the same peers, some of them, or farther ones.
        assert!(still_stewards(&id, &best, &best));
        assert!(still_stewards(&id, &best, &peers[3..]));
        assert!(still_stewards(&id, &best, &[]));
        // A set missing the closest peer, which the routing table now knows.
        let stale = peers[1..=STEWARDS].to_vec();
        assert!(still_stewards(&id, &stale, &peers[2..]));
        assert!(!still_stewards(&id, &stale, &peers[..1]));
        // A small network's short set, and a newcomer: walk again.
        let short = peers[..3].to_vec();
        assert!(still_stewards(&id, &short, &peers[..2]));
        assert!(!still_stewards(&id, &short, &peers[7..]));
    }

    #[test]
    fn found_sets_expire_and_a_forgotten_one_is_walked_again() {
        let id = RecordId([1; 32]);
        let set = ranked(&id)[..STEWARDS].to_vec();
        let t0 = Instant::now();
        let mut cache = StewardCache::default();
        cache.put(id, set.clone(), t0);
        assert_eq!(
            cache.get(&id, &set, t0 + STEWARDS_TTL / 2),
            Some(set.clone())
        );
        assert_eq!(cache.get(&id, &set, t0 + STEWARDS_TTL), None);
        assert_eq!(cache.get(&RecordId([2; 32]), &set, t0), None);
        cache.forget(&id);
        assert_eq!(cache.get(&id, &set, t0), None);
        cache.put(id, set.clone(), t0);
        cache.expire(t0 + STEWARDS_TTL);
        assert!(cache.sets.is_empty());
        // Bounded.
        for i in 0..MAX_CACHED_SETS as u32 + 10 {
            let mut k = [0; 32];
            k[..4].copy_from_slice(&i.to_be_bytes());
            cache.put(RecordId(k), Vec::new(), t0);
        }
        assert_eq!(cache.sets.len(), MAX_CACHED_SETS);
    }
}
