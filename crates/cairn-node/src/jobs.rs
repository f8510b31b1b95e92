//! The job scheduler: the node a job is submitted to schedules it, as a
//! BOINC project server does for its own work, without a central service.
//!
//! State: every job, with its units' state machines
//! ([`cairn_core::compute::unit`]), the outputs providers reported and the
//! accepted ones, lives in `DATA_DIR/jobs.redb` and is written after every
//! round that changed it, so a restarted node goes on where it stopped.
//! Providers' validation records (for adaptive replication) are kept there
//! too.
//!
//! A round (every [`ROUND`]): refresh the adverts of known peers (every
//! [`ADVERT_EVERY`]; a provider that stops answering while running units is
//! lost, and its units are reassigned), then, per running job, let time
//! pass for its units (deadlines), run [`dispatch`] (the same matching,
//! trust and spot-check code the simulator runs) and carry out the actions:
//! send `RunUnit` to a provider (or hand it to this node's own provider),
//! `CancelUnit`, update the validation records, keep the accepted output.
//! Reports from providers are applied as they arrive. A provider that
//! refuses a task (busy, out of its window) fails that attempt, and the
//! unit is reassigned elsewhere.
//!
//! Compute near data: at submission the scheduler reads the manifests of
//! the job's module and stdin objects; a provider holding pieces of a
//! unit's inputs is preferred for it.
//!
//! Bounds: at most [`MAX_JOBS`] jobs are kept (the oldest finished one
//! goes first; a submission past the bound with none finished is refused),
//! [`MAX_PROVIDERS`] providers are asked for adverts, reports wait in a
//! queue of [`REPORT_QUEUE`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_core::compute::dispatch::{account, dispatch};
use cairn_core::compute::job::{Job, JobState, JobStatus, Source};
use cairn_core::compute::matching::ProviderState;
use cairn_core::compute::task::{Advert, Blob, Report, TASK_VERSION, Task};
use cairn_core::compute::unit::{Action, Event, Unit, UnitSpec, UnitState, UnitStatus};
use cairn_core::compute::validate::Reliability;
use cairn_core::compute::{JobId, ProviderId, UnitId};
use cairn_core::keys::PublicKey;
use cairn_core::{FileId, ReadCap};
use cairn_net::libp2p::PeerId;
use cairn_net::{ErrorCode, Request, RequestHeader, Response, ResponseHeader};
use futures::StreamExt;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::client::Client;
use crate::net::{Inbound, NetHandle};
use crate::now_secs;
use crate::provider::{LocalReports, Provider, Refusal};

/// Jobs kept.
pub const MAX_JOBS: usize = 256;
/// Time between scheduling rounds.
pub const ROUND: Duration = Duration::from_secs(1);
/// Time between advert refreshes.
pub const ADVERT_EVERY: Duration = Duration::from_secs(5);
/// Peers asked for adverts.
pub const MAX_PROVIDERS: usize = 256;
/// Reports waiting to be applied.
pub const REPORT_QUEUE: usize = 256;
/// Shortest time between two rounds woken by events.
pub const MIN_ROUND_GAP: Duration = Duration::from_millis(10);
/// Longest time changed jobs wait to be written.
pub const PERSIST_EVERY: Duration = Duration::from_secs(1);
/// Consecutive unanswered advert queries after which a provider is lost.
const LOST_AFTER: u32 = 2;
/// Format version of a stored job.
const JOB_RECORD_VERSION: u16 = 1;

const JOBS: TableDefinition<'_, &[u8; 32], &[u8]> = TableDefinition::new("jobs_v1");
const BOOK: TableDefinition<'_, &[u8; 32], &[u8]> = TableDefinition::new("reliability_v1");

/// A job could not be submitted or found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobsError {
    /// The job is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// An input could not be read.
    #[error("{0}")]
    Input(String),
    /// Too many jobs.
    #[error("this node keeps at most {MAX_JOBS} jobs and none of them is finished; cancel one")]
    Full,
    /// Database trouble.
    #[error("job store: {0}")]
    Db(String),
}

fn db_err(e: impl std::fmt::Display) -> JobsError {
    JobsError::Db(e.to_string())
}

/// Where a unit's output is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitOutput {
    /// Its stdout (inline when small).
    pub stdout: Blob,
    /// Output files: name and bytes or read capability.
    pub files: Vec<(String, Blob)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct JobRecord {
    version: u16,
    job: Job,
    units: Vec<Unit>,
    /// Outputs reported, per unit and provider (bounded by the unit's slots).
    results: BTreeMap<UnitId, BTreeMap<ProviderId, UnitOutput>>,
    /// Accepted outputs.
    accepted: BTreeMap<UnitId, UnitOutput>,
    /// Seeds the spot checks.
    secret: [u8; 32],
    submitted_at: u64,
    /// Holders of the job's input objects, for locality.
    holders: Vec<(FileId, Vec<ProviderId>)>,
}

impl JobRecord {
    fn status(&self) -> JobStatus {
        JobStatus::of(&self.units)
    }

    /// Whether every unit is done or failed (cheaper than `status`).
    fn finished(&self) -> bool {
        self.units
            .iter()
            .all(|u| matches!(u.state(), UnitState::Done | UnitState::Failed))
    }
}

/// Aborts a task when dropped (the advert loop ends with the scheduler's).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A job as `GET /v1/jobs/{id}` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobView {
    /// The job id (hex).
    pub id: String,
    /// `running`, `done` or `failed`.
    pub state: JobState,
    /// Units done.
    pub done: usize,
    /// Units failed.
    pub failed: usize,
    /// When it was submitted (unix seconds).
    pub submitted_at: u64,
    /// Every unit.
    pub units: Vec<UnitStatus>,
}

/// A unit's accepted output, for `GET /v1/jobs/{id}/results`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UnitResult {
    /// The unit's name.
    pub name: String,
    /// Its state.
    pub state: cairn_core::compute::unit::UnitState,
    /// Its accepted output, once done.
    pub output: Option<UnitOutput>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// A provider's validation record, for `GET /v1/compute/providers`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProviderRecord {
    /// Its peer id.
    pub peer_id: String,
    /// Results that agreed with the accepted output.
    pub valid: u64,
    /// Results that lost a vote.
    pub invalid: u64,
    /// Attempts that ended without a result.
    pub errors: u64,
    /// Valid results since the last invalid one.
    pub consecutive_valid: u32,
}

struct ProviderEntry {
    advert: Advert,
    failures: u32,
    /// Units and memory given to it since its advert.
    assigned: u16,
    assigned_memory: u64,
}

impl ProviderEntry {
    fn new(advert: Advert, inflight: (u16, u64)) -> Self {
        Self {
            advert,
            failures: 0,
            // Tasks sent but not answered yet are not in the advert.
            assigned: inflight.0,
            assigned_memory: inflight.1,
        }
    }

    /// A run on it ended (reported, refused or lost).
    fn release(&mut self, memory: u64) {
        if self.assigned > 0 {
            self.assigned -= 1;
            self.assigned_memory = self.assigned_memory.saturating_sub(memory);
        } else {
            self.advert.running = self.advert.running.saturating_sub(1);
            self.advert.memory_in_use = self.advert.memory_in_use.saturating_sub(memory);
        }
    }
}

#[derive(Default)]
struct State {
    jobs: BTreeMap<JobId, JobRecord>,
    dirty: HashSet<JobId>,
    book: BTreeMap<ProviderId, Reliability>,
    book_dirty: bool,
    providers: HashMap<ProviderId, ProviderEntry>,
    /// Tasks sent to each provider and not answered yet: units and memory.
    inflight: HashMap<ProviderId, (u16, u64)>,
}

enum Effect {
    Start {
        provider: ProviderId,
        task: Task,
    },
    Cancel {
        provider: ProviderId,
        job: JobId,
        unit: UnitId,
    },
}

struct Inner {
    net: NetHandle,
    client: Client,
    /// Compiles submitted modules, so a bad one is refused at submission.
    sandbox: cairn_compute::Sandbox,
    provider: Option<Provider>,
    db: Database,
    state: Mutex<State>,
    reports: LocalReports,
    /// Wakes the loop for a round now.
    wake: tokio::sync::Notify,
}

/// This node's scheduler. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update is applied whole under the lock before anything can
    // panic, so a poisoned lock still guards consistent state.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn provider_of(peer: &PeerId) -> Option<ProviderId> {
    PublicKey::from_peer_bytes(&peer.to_bytes())
}

/// A provider key in hex as its peer id (unchanged if it is not a key).
fn peer_id_text(hex: &str) -> String {
    match cairn_core::unhex32(hex).and_then(|k| peer_of(&PublicKey(k))) {
        Some(peer) => peer.to_string(),
        None => hex.to_string(),
    }
}

fn peer_of(provider: &ProviderId) -> Option<PeerId> {
    PeerId::from_bytes(&provider.peer_bytes()).ok()
}

impl Scheduler {
    /// Opens `DATA_DIR/jobs.redb`. `reports` is the sending side of the
    /// channel [`Scheduler::run`] takes reports from (this node's own
    /// provider sends into it too); `sandbox` compiles submitted modules.
    pub fn open(
        dir: &std::path::Path,
        net: NetHandle,
        client: Client,
        sandbox: cairn_compute::Sandbox,
        provider: Option<Provider>,
        reports: LocalReports,
    ) -> Result<Self, crate::NodeError> {
        let path = dir.join("jobs.redb");
        let err =
            |e: &dyn std::fmt::Display| crate::NodeError::Io(format!("{}: {e}", path.display()));
        let db = Database::create(&path).map_err(|e| err(&e))?;
        let mut state = State::default();
        {
            let w = db.begin_write().map_err(|e| err(&e))?;
            w.open_table(JOBS).map_err(|e| err(&e))?;
            w.open_table(BOOK).map_err(|e| err(&e))?;
            w.commit().map_err(|e| err(&e))?;
            let r = db.begin_read().map_err(|e| err(&e))?;
            let jobs = r.open_table(JOBS).map_err(|e| err(&e))?;
            for row in jobs.iter().map_err(|e| err(&e))? {
                let (k, v) = row.map_err(|e| err(&e))?;
                match postcard::from_bytes::<JobRecord>(v.value()) {
                    Ok(rec) if rec.version == JOB_RECORD_VERSION => {
                        state.jobs.insert(JobId(*k.value()), rec);
                    }
                    _ => tracing::warn!("skipping an unreadable job record"),
                }
            }
            let book = r.open_table(BOOK).map_err(|e| err(&e))?;
            for row in book.iter().map_err(|e| err(&e))? {
                let (k, v) = row.map_err(|e| err(&e))?;
                if let Ok(rel) = postcard::from_bytes::<Reliability>(v.value()) {
                    state.book.insert(PublicKey(*k.value()), rel);
                }
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                net,
                client,
                sandbox,
                provider,
                db,
                state: Mutex::new(state),
                reports,
                wake: tokio::sync::Notify::new(),
            }),
        })
    }

    /// Accepts a validated job whose sources are all capabilities; returns
    /// its id. Reads the inputs' manifests first, so a job with an
    /// unreadable input is refused at once.
    pub async fn submit(&self, job: Job) -> Result<JobId, JobsError> {
        let cap_of = |s: &Source, what: &str| match s {
            Source::Cap(c) => c
                .parse::<ReadCap>()
                .map_err(|e| JobsError::Invalid(format!("the {what} capability: {e}"))),
            Source::Path(p) => Err(JobsError::Invalid(format!(
                "the {what} is a local path ({p}); upload it and give its cairn: capability"
            ))),
        };
        let module = cap_of(&job.module, "module")?;
        let mut caps: Vec<(String, ReadCap)> = vec![("the module".into(), module.clone())];
        for u in &job.units {
            if let Some(s) = &u.stdin {
                caps.push((
                    format!("stdin of unit {}", u.name),
                    cap_of(s, &format!("stdin of unit {}", u.name))?,
                ));
            }
        }
        // One manifest read per distinct object, a few at a time.
        let mut distinct: Vec<(String, ReadCap)> = Vec::new();
        let mut seen = HashSet::new();
        for (what, cap) in caps {
            if seen.insert(cap.manifest) {
                distinct.push((what, cap));
            }
        }
        let client = self.inner.client.clone();
        let manifests: Vec<_> = futures::stream::iter(distinct)
            .map(|(what, cap)| {
                let client = client.clone();
                async move {
                    let m = client.manifest(&cap).await;
                    (what, cap, m)
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut file_of = HashMap::new();
        let mut holders = Vec::new();
        for (what, cap, m) in manifests {
            let m = m.map_err(|e| JobsError::Input(format!("cannot read {what}: {e}")))?;
            file_of.insert(cap.manifest, m.file_id);
            let mut hs: Vec<ProviderId> = m
                .segments
                .iter()
                .flat_map(|s| s.pieces.iter())
                .filter_map(|p| PublicKey::from_peer_bytes(&p.holder))
                .collect();
            hs.sort();
            hs.dedup();
            hs.truncate(cairn_core::compute::matching::MAX_HOLDINGS);
            holders.push((m.file_id, hs));
        }
        self.check_module(&module).await?;
        let mut nonce = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        let mut h = blake3::Hasher::new_derive_key("cairn v1 compute job id");
        h.update(&postcard::to_stdvec(&job).map_err(|e| JobsError::Invalid(e.to_string()))?);
        h.update(&nonce);
        let id = JobId(*h.finalize().as_bytes());
        let module_file = cap_of(&job.module, "module")
            .ok()
            .and_then(|c| file_of.get(&c.manifest).copied());
        let mut units = Vec::with_capacity(job.units.len());
        for u in &job.units {
            let mut inputs: Vec<FileId> = module_file.into_iter().collect();
            if let Some(Source::Cap(c)) = &u.stdin
                && let Ok(cap) = c.parse::<ReadCap>()
                && let Some(f) = file_of.get(&cap.manifest)
            {
                inputs.push(*f);
            }
            let spec = UnitSpec {
                id: UnitId::of(&id, &u.name),
                name: u.name.clone(),
                need: job.need(),
                inputs,
            };
            units.push(
                Unit::new(spec, job.quorum, job.max_attempts, job.deadline_secs)
                    .map_err(|e| JobsError::Invalid(e.to_string()))?,
            );
        }
        let mut secret = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
        let record = JobRecord {
            version: JOB_RECORD_VERSION,
            job,
            units,
            results: BTreeMap::new(),
            accepted: BTreeMap::new(),
            secret,
            submitted_at: now_secs(),
            holders,
        };
        let dropped = {
            let mut st = lock(&self.inner.state);
            let mut dropped = None;
            if st.jobs.len() >= MAX_JOBS {
                let oldest = st
                    .jobs
                    .iter()
                    .filter(|(_, j)| j.status().state != JobState::Running)
                    .min_by_key(|(_, j)| j.submitted_at)
                    .map(|(id, _)| *id)
                    .ok_or(JobsError::Full)?;
                st.jobs.remove(&oldest);
                st.dirty.remove(&oldest);
                dropped = Some(oldest);
            }
            st.jobs.insert(id, record);
            st.dirty.insert(id);
            dropped
        };
        if let Some(old) = dropped {
            self.delete_stored(old).await;
        }
        self.persist().await;
        self.inner.wake.notify_one();
        tracing::info!(job = %id, "job submitted");
        Ok(id)
    }

    /// Reads and compiles the module: one that is not valid WebAssembly,
    /// or imports what the sandbox does not give, is refused now rather
    /// than failing on every provider.
    async fn check_module(&self, cap: &ReadCap) -> Result<(), JobsError> {
        let wasm = crate::provider::read_module(&self.inner.client, &cap.to_string())
            .await
            .map_err(JobsError::Input)?;
        let sandbox = self.inner.sandbox.clone();
        tokio::task::spawn_blocking(move || sandbox.compile(&wasm).map(|_| ()))
            .await
            .map_err(|e| JobsError::Db(format!("the compiler failed: {e}")))?
            .map_err(|e| JobsError::Invalid(format!("the module cannot run: {e}")))
    }

    async fn delete_stored(&self, id: JobId) {
        let this = self.clone();
        let _ = tokio::task::spawn_blocking(move || -> Result<(), JobsError> {
            let w = this.inner.db.begin_write().map_err(db_err)?;
            w.open_table(JOBS)
                .map_err(db_err)?
                .remove(&id.0)
                .map_err(db_err)?;
            w.commit().map_err(db_err)
        })
        .await;
    }

    /// The job's status.
    pub fn status(&self, id: &JobId) -> Option<JobView> {
        let st = lock(&self.inner.state);
        let rec = st.jobs.get(id)?;
        let mut s = rec.status();
        // Users know nodes by their peer ids.
        for u in &mut s.units {
            for p in u.providers.iter_mut().chain(u.running.iter_mut()) {
                *p = peer_id_text(p);
            }
        }
        Some(JobView {
            id: id.to_string(),
            state: s.state,
            done: s.done,
            failed: s.failed,
            submitted_at: rec.submitted_at,
            units: s.units,
        })
    }

    /// Every job's status, newest first.
    pub fn list(&self) -> Vec<JobView> {
        let ids: Vec<JobId> = lock(&self.inner.state).jobs.keys().copied().collect();
        let mut views: Vec<JobView> = ids.iter().filter_map(|id| self.status(id)).collect();
        views.sort_by_key(|v| std::cmp::Reverse(v.submitted_at));
        views
    }

    /// Every provider's validation record, as this scheduler keeps it.
    pub fn providers(&self) -> Vec<ProviderRecord> {
        lock(&self.inner.state)
            .book
            .iter()
            .map(|(id, r)| ProviderRecord {
                peer_id: peer_id_text(&cairn_core::hex(&id.0)),
                valid: r.valid,
                invalid: r.invalid,
                errors: r.errors,
                consecutive_valid: r.consecutive_valid,
            })
            .collect()
    }

    /// Each unit's accepted output.
    pub fn results(&self, id: &JobId) -> Option<Vec<UnitResult>> {
        let st = lock(&self.inner.state);
        let rec = st.jobs.get(id)?;
        Some(
            rec.units
                .iter()
                .map(|u| {
                    let s = u.status();
                    UnitResult {
                        name: s.name,
                        state: s.state,
                        output: rec.accepted.get(&u.spec().id).cloned(),
                        error: s.error,
                    }
                })
                .collect(),
        )
    }

    /// Cancels every unit of the job; false if there is no such job.
    pub async fn cancel(&self, id: &JobId) -> bool {
        let effects = {
            let mut guard = lock(&self.inner.state);
            let st = &mut *guard;
            let Some(rec) = st.jobs.get_mut(id) else {
                return false;
            };
            let mut effects = Vec::new();
            let at = now_secs();
            for i in 0..rec.units.len() {
                if let Ok(actions) = rec.units[i].handle(Event::Cancel { at }) {
                    apply(*id, rec, i, actions, &mut st.book, &mut effects);
                }
            }
            st.dirty.insert(*id);
            effects
        };
        self.execute(effects);
        self.persist().await;
        true
    }

    /// Applies a report from `peer` about its attempt of `unit`.
    pub fn report(
        &self,
        peer: PeerId,
        job: JobId,
        unit: UnitId,
        report: Report,
    ) -> Result<(), Refusal> {
        let refuse = |code, message: &str| {
            Err(Refusal {
                code,
                message: message.to_string(),
            })
        };
        if let Err(e) = report.validate() {
            return refuse(ErrorCode::Refused, &e.to_string());
        }
        let Some(provider) = provider_of(&peer) else {
            return refuse(ErrorCode::Refused, "reports come from Ed25519 nodes");
        };
        let at = now_secs();
        let effects = {
            let mut guard = lock(&self.inner.state);
            let st = &mut *guard;
            let Some(rec) = st.jobs.get_mut(&job) else {
                return refuse(ErrorCode::NotFound, "no such job here");
            };
            let Some(i) = rec.units.iter().position(|u| u.spec().id == unit) else {
                return refuse(ErrorCode::NotFound, "no such unit in the job");
            };
            let event = match report {
                Report::Checkpointed { checkpoint } => Event::Checkpointed {
                    provider,
                    checkpoint,
                    at,
                },
                Report::Finished {
                    output,
                    stdout,
                    files,
                    fuel_used,
                } => {
                    rec.results
                        .entry(unit)
                        .or_default()
                        .insert(provider, UnitOutput { stdout, files });
                    Event::Finished {
                        provider,
                        output,
                        fuel_used,
                        at,
                    }
                }
                Report::Failed { error } => Event::Failed {
                    provider,
                    error,
                    at,
                },
            };
            let finished = matches!(event, Event::Finished { .. });
            let ended = !matches!(event, Event::Checkpointed { .. });
            let memory = rec.job.memory_bytes;
            let actions = match rec.units[i].handle(event) {
                Ok(a) => a,
                Err(e) => {
                    if finished && let Some(r) = rec.results.get_mut(&unit) {
                        r.remove(&provider);
                    }
                    return refuse(ErrorCode::NotFound, &e.to_string());
                }
            };
            let mut effects = Vec::new();
            apply(job, rec, i, actions, &mut st.book, &mut effects);
            st.book_dirty = true;
            st.dirty.insert(job);
            // The run ended: its provider has that room again, before its
            // next advert says so.
            if ended && let Some(e) = st.providers.get_mut(&provider) {
                e.release(memory);
            }
            effects
        };
        self.execute(effects);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Runs rounds and applies reports until the task is dropped.
    ///
    /// A round runs every [`ROUND`], and also as soon as something changed
    /// (a submission, a report), at most once per [`MIN_ROUND_GAP`]: the
    /// reports that arrive in between are applied first, so one round
    /// places the work many finished units made room for. Adverts are
    /// refreshed on their own task, so a slow peer never holds a round up.
    /// Changed jobs are written at most every [`PERSIST_EVERY`].
    pub async fn run(self, mut reports: mpsc::Receiver<(PeerId, JobId, UnitId, Report)>) {
        let adverts = tokio::spawn(self.clone().advert_loop());
        let _stop = AbortOnDrop(adverts);
        let mut tick = tokio::time::interval(ROUND);
        let mut last_persist = Instant::now();
        let mut last_tick = Instant::now();
        let apply = |this: &Self, (peer, job, unit, report)| {
            if let Err(r) = this.report(peer, job, unit, report) {
                tracing::debug!(%unit, "report not applied: {}", r.message);
            }
        };
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.inner.wake.notified() => {
                    tokio::time::sleep(MIN_ROUND_GAP).await;
                }
                Some(r) = reports.recv() => apply(&self, r),
            }
            while let Ok(r) = reports.try_recv() {
                apply(&self, r);
            }
            // Deadlines are in seconds: time passes for the units once per
            // round period, not in every event-driven round.
            let tick_units = last_tick.elapsed() >= ROUND;
            if tick_units {
                last_tick = Instant::now();
            }
            self.round(tick_units);
            if last_persist.elapsed() >= PERSIST_EVERY {
                last_persist = Instant::now();
                self.persist().await;
            }
        }
    }

    async fn advert_loop(self) {
        let mut tick = tokio::time::interval(ADVERT_EVERY);
        loop {
            tick.tick().await;
            self.refresh_adverts().await;
        }
    }

    fn has_running_jobs(&self) -> bool {
        lock(&self.inner.state).jobs.values().any(|j| !j.finished())
    }

    /// Asks known peers what they offer; a provider that stops answering
    /// twice in a row is lost, and its running units are reassigned.
    async fn refresh_adverts(&self) {
        if !self.has_running_jobs() {
            return;
        }
        let net = &self.inner.net;
        let Some(info) = net.info().await else {
            return;
        };
        let mut peers: Vec<PeerId> = info.connected;
        peers.extend(info.routing);
        peers.sort();
        peers.dedup();
        peers.truncate(MAX_PROVIDERS);
        let answers: Vec<(PeerId, Option<Advert>)> = futures::stream::iter(peers)
            .map(|peer| async move {
                let req = Request {
                    header: RequestHeader::Advert,
                    body: Bytes::new(),
                };
                let advert = match net.request(peer, req, Duration::from_secs(3)).await {
                    Ok(Response {
                        header: ResponseHeader::Advert(a),
                        ..
                    }) if a.validate().is_ok() => Some(a),
                    _ => None,
                };
                (peer, advert)
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let at = now_secs();
        let effects = {
            let mut guard = lock(&self.inner.state);
            let st = &mut *guard;
            let mut lost = Vec::new();
            for (peer, advert) in answers {
                let Some(id) = provider_of(&peer) else {
                    continue;
                };
                match advert {
                    Some(advert) => {
                        let inflight = st.inflight.get(&id).copied().unwrap_or_default();
                        st.providers
                            .insert(id, ProviderEntry::new(advert, inflight));
                    }
                    None => {
                        if let Some(e) = st.providers.get_mut(&id) {
                            e.failures += 1;
                            if e.failures >= LOST_AFTER {
                                st.providers.remove(&id);
                                lost.push(id);
                            }
                        }
                    }
                }
            }
            let mut effects = Vec::new();
            for id in lost {
                tracing::info!(provider = %cairn_core::hex(&id.0), "compute provider lost");
                let State {
                    jobs, book, dirty, ..
                } = st;
                for (jid, rec) in jobs.iter_mut() {
                    for i in 0..rec.units.len() {
                        if let Ok(actions) =
                            rec.units[i].handle(Event::ProviderLost { provider: id, at })
                        {
                            apply(*jid, rec, i, actions, book, &mut effects);
                            dirty.insert(*jid);
                        }
                    }
                }
            }
            effects
        };
        self.execute(effects);
    }

    /// One scheduling round over every running job.
    fn round(&self, tick_units: bool) {
        let now = now_secs();
        let local = self
            .inner
            .provider
            .as_ref()
            .map(|p| (provider_of(&self.inner.net.local_peer_id()), p.advert()));
        let effects = {
            let mut guard = lock(&self.inner.state);
            let st = &mut *guard;
            // This node's own provider is asked directly, every round (its
            // tasks start synchronously, so its advert is never behind).
            if let Some((Some(id), advert)) = local {
                st.providers.insert(id, ProviderEntry::new(advert, (0, 0)));
            }
            let mut effects = Vec::new();
            let ids: Vec<JobId> = st.jobs.keys().copied().collect();
            for jid in ids {
                let State {
                    jobs,
                    book,
                    providers,
                    dirty,
                    ..
                } = &mut *st;
                let Some(rec) = jobs.get_mut(&jid) else {
                    continue;
                };
                if rec.finished() {
                    continue;
                }
                let mut changed = false;
                for i in (0..rec.units.len()).filter(|_| tick_units) {
                    if let Ok(actions) = rec.units[i].handle(Event::Tick { now })
                        && !actions.is_empty()
                    {
                        changed = true;
                        apply(jid, rec, i, actions, book, &mut effects);
                    }
                }
                let states: Vec<ProviderState> = providers
                    .iter()
                    .map(|(id, e)| ProviderState {
                        id: *id,
                        operator: e.advert.operator,
                        offer: e.advert.offer.clone(),
                        running: e.advert.running.saturating_add(e.assigned),
                        memory_in_use: e.advert.memory_in_use.saturating_add(e.assigned_memory),
                        idle: e.advert.idle,
                        reliability: book.get(id).cloned().unwrap_or_default(),
                        holds: rec
                            .holders
                            .iter()
                            .filter(|(_, hs)| hs.binary_search(id).is_ok())
                            .map(|(f, _)| *f)
                            .collect(),
                    })
                    .collect();
                let policy = rec.job.trust_policy();
                let tagged = dispatch(&mut rec.units, &states, &policy, &rec.secret, None, now);
                if !tagged.is_empty() {
                    changed = true;
                }
                for (unit, action) in tagged {
                    if let Action::Start { provider, .. } = &action
                        && let Some(e) = providers.get_mut(provider)
                    {
                        e.assigned += 1;
                        e.assigned_memory += rec.job.memory_bytes;
                    }
                    if let Some(i) = rec.units.iter().position(|u| u.spec().id == unit) {
                        apply(jid, rec, i, vec![action], book, &mut effects);
                    }
                }
                if changed {
                    dirty.insert(jid);
                }
            }
            effects
        };
        self.execute(effects);
    }

    /// Sends tasks and cancellations; a task that cannot be started fails
    /// its attempt.
    fn execute(&self, effects: Vec<Effect>) {
        let me = self.inner.net.local_peer_id();
        let refused = |peer, job, unit, why: String| {
            tracing::info!(%unit, %peer, "could not start: {why}");
            let report = Report::Failed {
                error: cairn_core::compute::unit::RunError::Other {
                    message: format!("the provider did not take the unit: {why}"),
                },
            };
            (peer, job, unit, report)
        };
        for effect in effects {
            // This node's own provider starts the task now, so the next
            // round sees it in its advert.
            if let Effect::Start { provider, task } = &effect
                && peer_of(provider) == Some(me)
            {
                let (job, unit) = (task.job, task.unit);
                let result = match &self.inner.provider {
                    Some(p) => p.accept(me, task.clone()).map_err(|r| r.message),
                    None => Err("this node offers no compute".into()),
                };
                if let Err(why) = result {
                    let report = refused(me, job, unit, why);
                    let tx = self.inner.reports.clone();
                    tokio::spawn(async move {
                        let _ = tx.send(report).await;
                    });
                }
                continue;
            }
            if let Effect::Start { provider, task } = &effect {
                let mut st = lock(&self.inner.state);
                let e = st.inflight.entry(*provider).or_default();
                e.0 = e.0.saturating_add(1);
                e.1 = e.1.saturating_add(task.need.memory_bytes);
            }
            let this = self.clone();
            tokio::spawn(async move {
                match effect {
                    Effect::Start { provider, task } => {
                        let (job, unit) = (task.job, task.unit);
                        let memory = task.need.memory_bytes;
                        let Some(peer) = peer_of(&provider) else {
                            return;
                        };
                        let result = this.start(peer, task).await;
                        {
                            let mut st = lock(&this.inner.state);
                            if let Some(e) = st.inflight.get_mut(&provider) {
                                e.0 = e.0.saturating_sub(1);
                                e.1 = e.1.saturating_sub(memory);
                                if e.0 == 0 {
                                    st.inflight.remove(&provider);
                                }
                            }
                        }
                        if let Err(why) = result {
                            let report = refused(peer, job, unit, why);
                            let _ = this.inner.reports.send(report).await;
                        }
                    }
                    Effect::Cancel {
                        provider,
                        job,
                        unit,
                    } => {
                        let Some(peer) = peer_of(&provider) else {
                            return;
                        };
                        let me = this.inner.net.local_peer_id();
                        if peer == me {
                            if let Some(p) = &this.inner.provider {
                                p.cancel(me, &unit);
                            }
                            return;
                        }
                        let req = Request {
                            header: RequestHeader::CancelUnit { job, unit },
                            body: Bytes::new(),
                        };
                        let _ = this
                            .inner
                            .net
                            .request(peer, req, Duration::from_secs(10))
                            .await;
                    }
                }
            });
        }
    }

    async fn start(&self, peer: PeerId, task: Task) -> Result<(), String> {
        let body = postcard::to_stdvec(&task).map_err(|e| e.to_string())?;
        let req = Request {
            header: RequestHeader::RunUnit {
                job: task.job,
                unit: task.unit,
            },
            body: body.into(),
        };
        match self
            .inner
            .net
            .request(peer, req, Duration::from_secs(10))
            .await
        {
            Ok(Response {
                header: ResponseHeader::Stored,
                ..
            }) => Ok(()),
            Ok(Response {
                header: ResponseHeader::Error { message, .. },
                ..
            }) => Err(message),
            Ok(_) => Err("an unexpected answer".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Writes changed jobs and the validation records.
    async fn persist(&self) {
        let (jobs, book) = {
            let mut st = lock(&self.inner.state);
            let dirty: Vec<JobId> = st.dirty.drain().collect();
            let jobs: Vec<(JobId, Vec<u8>)> = dirty
                .iter()
                .filter_map(|id| {
                    let rec = st.jobs.get(id)?;
                    postcard::to_stdvec(rec).ok().map(|b| (*id, b))
                })
                .collect();
            let book: Vec<(ProviderId, Vec<u8>)> = if std::mem::take(&mut st.book_dirty) {
                st.book
                    .iter()
                    .filter_map(|(id, r)| postcard::to_stdvec(r).ok().map(|b| (*id, b)))
                    .collect()
            } else {
                Vec::new()
            };
            (jobs, book)
        };
        if jobs.is_empty() && book.is_empty() {
            return;
        }
        let this = self.clone();
        let res = tokio::task::spawn_blocking(move || -> Result<(), JobsError> {
            let w = this.inner.db.begin_write().map_err(db_err)?;
            {
                let mut t = w.open_table(JOBS).map_err(db_err)?;
                for (id, bytes) in &jobs {
                    t.insert(&id.0, bytes.as_slice()).map_err(db_err)?;
                }
                let mut b = w.open_table(BOOK).map_err(db_err)?;
                for (id, bytes) in &book {
                    b.insert(&id.0, bytes.as_slice()).map_err(db_err)?;
                }
            }
            w.commit().map_err(db_err)
        })
        .await;
        if let Ok(Err(e)) | Err(e) = res.map_err(|e| JobsError::Db(e.to_string())) {
            tracing::warn!("cannot save jobs: {e}");
        }
    }
}

/// Carries out a unit's actions: tasks to start, runs to cancel, the
/// validation records, the accepted output.
fn apply(
    job: JobId,
    rec: &mut JobRecord,
    i: usize,
    actions: Vec<Action>,
    book: &mut BTreeMap<ProviderId, Reliability>,
    effects: &mut Vec<Effect>,
) {
    account(&actions, book);
    let unit = rec.units[i].spec().id;
    for action in actions {
        match action {
            Action::Start {
                provider,
                resume_from,
            } => {
                // Units are built from the job's units, in order.
                let Some(u) = rec.job.units.get(i) else {
                    continue;
                };
                let cap = |s: &Source| match s {
                    Source::Cap(c) | Source::Path(c) => c.clone(),
                };
                let task = Task {
                    version: TASK_VERSION,
                    job,
                    unit,
                    name: u.name.clone(),
                    module: cap(&rec.job.module),
                    args: u.args.clone(),
                    env: u.env.clone(),
                    stdin: u.stdin.as_ref().map(cap),
                    need: rec.job.need(),
                    output_dir: rec.job.output_dir,
                    resume_from,
                };
                effects.push(Effect::Start { provider, task });
            }
            Action::Cancel { provider } => effects.push(Effect::Cancel {
                provider,
                job,
                unit,
            }),
            Action::Done { providers, .. } => {
                if let Some(out) = providers
                    .iter()
                    .find_map(|p| rec.results.get(&unit).and_then(|r| r.get(p)))
                {
                    rec.accepted.insert(unit, out.clone());
                }
            }
            _ => {}
        }
    }
}

/// Serves the compute lane: adverts, tasks and cancellations for this
/// node's provider, reports for its scheduler. Each request is answered
/// without blocking (an accepted task runs on its own), so one loop serves
/// them all; the driver bounds what waits.
pub async fn serve(
    provider: Option<Provider>,
    scheduler: Scheduler,
    net: NetHandle,
    mut inbound: mpsc::Receiver<Inbound>,
) {
    while let Some(Inbound { request, reply }) = inbound.recv().await {
        let peer = reply.peer;
        let no_compute = || Response::error(ErrorCode::Refused, "this node offers no compute");
        let refusal = |r: Refusal| Response::error(r.code, r.message);
        let response = match request.header {
            RequestHeader::Advert => match &provider {
                Some(p) => Response::header(ResponseHeader::Advert(p.advert())),
                None => no_compute(),
            },
            RequestHeader::RunUnit { job, unit } => match &provider {
                None => no_compute(),
                Some(p) => match postcard::from_bytes::<Task>(&request.body) {
                    Ok(task) if task.job == job && task.unit == unit => {
                        match p.accept(peer, task) {
                            Ok(()) => Response::header(ResponseHeader::Stored),
                            Err(r) => refusal(r),
                        }
                    }
                    Ok(_) => Response::error(ErrorCode::Refused, "the task is for another unit"),
                    Err(e) => Response::error(ErrorCode::Refused, format!("malformed task: {e}")),
                },
            },
            RequestHeader::CancelUnit { unit, .. } => {
                let stopped = provider.as_ref().is_some_and(|p| p.cancel(peer, &unit));
                Response::header(ResponseHeader::Deleted(stopped))
            }
            RequestHeader::UnitReport { job, unit } => {
                match postcard::from_bytes::<Report>(&request.body) {
                    Ok(report) => match scheduler.report(peer, job, unit, report) {
                        Ok(()) => Response::header(ResponseHeader::Stored),
                        Err(r) => refusal(r),
                    },
                    Err(e) => Response::error(ErrorCode::Refused, format!("malformed report: {e}")),
                }
            }
            _ => Response::error(ErrorCode::Refused, "not a compute request"),
        };
        net.respond(reply, response).await;
    }
}
