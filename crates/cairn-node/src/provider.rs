//! The compute provider: runs other nodes' work units in the WebAssembly
//! sandbox, never more than this node offers (`--cpus`, `--memory`,
//! `--schedule`, `--idle-only`).
//!
//! A scheduler sends a [`Task`]; [`Provider::accept`] takes it only inside
//! the availability window, while the machine is idle if the offer says so,
//! and while a cpu and the unit's memory are free; otherwise it answers
//! `Busy` with the reason. An accepted attempt runs as one tokio task:
//! fetch the module (compiled programs are cached), the unit's stdin and
//! the checkpoint to resume from into the attempt's work dir, run the
//! sandbox on the blocking pool, store each checkpoint the module takes as
//! an encrypted Cairn object and report it, then store the output and
//! report [`Report::Finished`] (or [`Report::Failed`]). Each offered cpu
//! has one work dir (`DIR/slot-N`), emptied before and after every attempt
//! whatever happened. A cancelled attempt stops at the sandbox's next
//! epoch tick and reports nothing.
//!
//! Outputs of at most [`MAX_INLINE`] bytes travel in the report; larger
//! ones, and checkpoints, are stored with the default lease and off this
//! node's file list: they belong to the job, not to the provider.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cairn_compute::{Program, RunError, RunSpec, Sandbox};
use cairn_core::ReadCap;
use cairn_core::compute::idle::{IdleDetector, IdlePolicy};
use cairn_core::compute::resources::Offer;
use cairn_core::compute::task::{Advert, Blob, MAX_INLINE, Report, TASK_VERSION, Task};
use cairn_core::compute::{CheckpointRef, JobId, OperatorId, UnitId};
use cairn_net::libp2p::PeerId;
use cairn_net::{ErrorCode, Request, RequestHeader, ResponseHeader};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::client::{Client, PutOptions};
use crate::net::NetHandle;
use crate::now_secs;

/// Largest module a provider fetches.
pub const MAX_MODULE_BYTES: u64 = 64 << 20;
/// Largest stdin a provider fetches for one unit.
pub const MAX_STDIN_BYTES: u64 = 4 << 30;
/// Largest output (stdout and output files together) of one unit.
pub const MAX_OUTPUT_BYTES: u64 = 1 << 30;
/// Most bytes a unit's files (stdout, stderr, `/scratch`, `/out`) may take
/// on the provider's disk.
pub const MAX_WORK_BYTES: u64 = 4 << 30;
/// Most files and directories a unit may create.
pub const MAX_WORK_FILES: usize = 100_000;
/// How often a running unit's disk use is measured.
const DISK_CHECK: Duration = Duration::from_secs(1);
/// Compiled modules kept for reuse.
const PROGRAM_CACHE: usize = 8;
/// Attempts to deliver one report, and the pause between them.
const REPORT_TRIES: u32 = 5;
const REPORT_PAUSE: Duration = Duration::from_secs(2);
/// How often the machine's load is sampled for `--idle-only`.
pub const IDLE_SAMPLE: Duration = Duration::from_secs(10);

/// A report on its way to a scheduler: `(scheduler, job, unit, report)`.
pub type Outgoing = (PeerId, JobId, UnitId, Report);

/// Where reports for this node's own scheduler go (a unit the local
/// scheduler placed on the local provider), with the reporting provider.
pub type LocalReports = mpsc::Sender<(PeerId, JobId, UnitId, Report)>;

struct Running {
    scheduler: PeerId,
    memory: u64,
    cancel: Arc<AtomicBool>,
    /// The work dir slot it uses (`DIR/slot-N`, one per offered cpu).
    slot: u16,
}

struct Inner {
    offer: Offer,
    operator: OperatorId,
    sandbox: Sandbox,
    client: Client,
    net: NetHandle,
    dir: PathBuf,
    running: Mutex<HashMap<UnitId, Running>>,
    programs: Mutex<Vec<(String, Program)>>,
    idle: Mutex<(IdleDetector, bool)>,
    local: LocalReports,
    /// Fault injection for tests: report a wrong output for every unit.
    wrong_outputs: bool,
}

/// What a provider is.
#[derive(Clone, Debug)]
pub struct ProviderSetup {
    /// What it offers.
    pub offer: Offer,
    /// Who operates it.
    pub operator: OperatorId,
    /// Where its cpu slots' work dirs live (emptied at start: attempts of
    /// an earlier run are gone with their process).
    pub dir: PathBuf,
    /// Fault injection for tests of validation: every output it reports is
    /// wrong (the same wrong bytes for every unit, as colluding cheaters
    /// would send).
    pub wrong_outputs: bool,
}

/// This node's compute provider. Cheap to clone.
#[derive(Clone)]
pub struct Provider {
    inner: Arc<Inner>,
}

/// Why a task was not taken.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// `Busy` (try elsewhere or later) or `Refused` (never).
    pub code: ErrorCode,
    /// The sentence.
    pub message: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the maps inconsistent
    // (each update is one insert or remove), so a poisoned lock is used as is.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Provider {
    /// A provider as `setup` says, running units in `sandbox`.
    pub fn new(
        setup: ProviderSetup,
        sandbox: Sandbox,
        client: Client,
        net: NetHandle,
        local: LocalReports,
    ) -> Result<Self, crate::NodeError> {
        let ProviderSetup {
            offer,
            operator,
            dir,
            wrong_outputs,
        } = setup;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| crate::NodeError::Io(format!("cannot create {}: {e}", dir.display())))?;
        if wrong_outputs {
            tracing::warn!("fault injection: this node reports wrong compute outputs");
        }
        Ok(Self {
            inner: Arc::new(Inner {
                offer,
                operator,
                sandbox,
                client,
                net,
                dir,
                running: Mutex::new(HashMap::new()),
                programs: Mutex::new(Vec::new()),
                idle: Mutex::new((IdleDetector::new(IdlePolicy::default()), false)),
                local,
                wrong_outputs,
            }),
        })
    }

    /// What this provider offers.
    pub fn offer(&self) -> &Offer {
        &self.inner.offer
    }

    /// The advert a scheduler asks for.
    pub fn advert(&self) -> Advert {
        let running = lock(&self.inner.running);
        Advert {
            version: TASK_VERSION,
            operator: self.inner.operator,
            offer: self.inner.offer.clone(),
            running: running.len() as u16,
            memory_in_use: running.values().map(|r| r.memory).sum(),
            idle: self.is_idle(),
        }
    }

    fn is_idle(&self) -> bool {
        !self.inner.offer.idle_only || lock(&self.inner.idle).1
    }

    /// Samples the machine's load for `--idle-only` until the task is dropped.
    pub async fn watch_idle(self) {
        let mut last = cpu_times();
        let mut tick = tokio::time::interval(IDLE_SAMPLE);
        loop {
            tick.tick().await;
            let now_times = cpu_times();
            let other = match (last, now_times) {
                (Some(a), Some(b)) => other_cpu_percent(a, b),
                _ => 100,
            };
            last = now_times;
            let mut idle = lock(&self.inner.idle);
            let is = idle.0.observe(now_secs(), other, None);
            if is != idle.1 {
                tracing::info!(idle = is, "the machine's idle state changed");
            }
            idle.1 = is;
        }
    }

    /// Takes `task` from `scheduler` if there is room now, and starts it.
    pub fn accept(&self, scheduler: PeerId, task: Task) -> Result<(), Refusal> {
        let refuse = |code, message: String| Err(Refusal { code, message });
        if let Err(e) = task.validate() {
            return refuse(ErrorCode::Refused, e.to_string());
        }
        let offer = &self.inner.offer;
        if !offer.schedule.is_open(now_secs()) {
            return refuse(
                ErrorCode::Busy,
                "outside this node's compute availability window".into(),
            );
        }
        if !self.is_idle() {
            return refuse(
                ErrorCode::Busy,
                "this node runs work only while its machine is idle, and it is in use".into(),
            );
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let slot = {
            let mut running = lock(&self.inner.running);
            if running.contains_key(&task.unit) {
                // A repeated request (the first answer was lost): it runs.
                return Ok(());
            }
            let in_use: u64 = running.values().map(|r| r.memory).sum();
            if running.len() >= usize::from(offer.cpus) {
                return refuse(
                    ErrorCode::Busy,
                    format!("all {} offered cpus are busy", offer.cpus),
                );
            }
            if in_use + task.need.memory_bytes > offer.memory_bytes {
                return refuse(
                    ErrorCode::Busy,
                    "not enough offered memory is free for this unit".into(),
                );
            }
            let Some(slot) = (0..offer.cpus).find(|k| !running.values().any(|r| r.slot == *k))
            else {
                return refuse(ErrorCode::Busy, "no free work slot".into());
            };
            running.insert(
                task.unit,
                Running {
                    scheduler,
                    memory: task.need.memory_bytes,
                    cancel: cancel.clone(),
                    slot,
                },
            );
            slot
        };
        let this = self.clone();
        tokio::spawn(async move {
            let (job, unit) = (task.job, task.unit);
            let report = this.attempt(scheduler, task, slot, cancel.clone()).await;
            lock(&this.inner.running).remove(&unit);
            if cancel.load(Ordering::Relaxed) {
                tracing::info!(%unit, "attempt cancelled");
                return;
            }
            this.report(scheduler, job, unit, report).await;
        });
        Ok(())
    }

    /// Stops the attempt of `unit` if `scheduler` started it.
    pub fn cancel(&self, scheduler: PeerId, unit: &UnitId) -> bool {
        match lock(&self.inner.running).get(unit) {
            Some(r) if r.scheduler == scheduler => {
                r.cancel.store(true, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Delivers a report to its scheduler, retrying a few times.
    async fn report(&self, scheduler: PeerId, job: JobId, unit: UnitId, report: Report) {
        let me = self.inner.net.local_peer_id();
        if scheduler == me {
            let _ = self.inner.local.send((me, job, unit, report)).await;
            return;
        }
        let Ok(body) = postcard::to_stdvec(&report) else {
            return;
        };
        let body = Bytes::from(body);
        for _ in 0..REPORT_TRIES {
            let request = Request {
                header: RequestHeader::UnitReport { job, unit },
                body: body.clone(),
            };
            match self
                .inner
                .net
                .request(scheduler, request, Duration::from_secs(30))
                .await
            {
                Ok(r) => match r.header {
                    ResponseHeader::Stored => return,
                    ResponseHeader::Error { code, message } => {
                        tracing::warn!(%unit, ?code, "the scheduler refused a report: {message}");
                        if code != ErrorCode::Busy {
                            return;
                        }
                    }
                    _ => return,
                },
                Err(e) => tracing::warn!(%unit, "cannot reach the scheduler: {e}"),
            }
            tokio::time::sleep(REPORT_PAUSE).await;
        }
    }

    /// One attempt, from fetching the inputs to storing the output.
    ///
    /// Each cpu slot keeps its work dir from one attempt to the next and
    /// only empties it: creating and deleting a handful of directories and
    /// files per unit made inode allocation the most expensive part of a
    /// short unit. Nothing of one unit is visible to the next: `scratch/`
    /// and `out/` are emptied before every run, stdout and stderr are
    /// truncated when the sandbox opens them, and inputs are removed after.
    async fn attempt(
        &self,
        scheduler: PeerId,
        task: Task,
        slot: u16,
        cancel: Arc<AtomicBool>,
    ) -> Report {
        let work = self.inner.dir.join(format!("slot-{slot}"));
        let result = match empty_work_dir(&work).await {
            Ok(()) => self.attempt_in(&work, scheduler, &task, cancel).await,
            Err(e) => Err(RunError::Other {
                message: format!("cannot prepare the work dir {}: {e}", work.display()),
            }),
        };
        // Do not keep a unit's inputs and outputs on disk after its run.
        if let Err(e) = empty_work_dir(&work).await {
            tracing::warn!("cannot empty {}: {e}; removing it", work.display());
            let _ = tokio::fs::remove_dir_all(&work).await;
        }
        match result {
            Ok(report) => report,
            Err(error) => {
                tracing::info!(unit = %task.unit, "attempt failed: {error}");
                Report::Failed { error }
            }
        }
    }

    async fn attempt_in(
        &self,
        work: &Path,
        scheduler: PeerId,
        task: &Task,
        cancel: Arc<AtomicBool>,
    ) -> Result<Report, RunError> {
        let other = |m: String| RunError::Other { message: m };
        tokio::fs::create_dir_all(work)
            .await
            .map_err(|e| other(format!("cannot create the work dir: {e}")))?;
        let program = self.program(&task.module).await?;
        let stdin = match &task.stdin {
            Some(cap) => {
                let path = work.join("stdin");
                self.fetch(cap, &path, MAX_STDIN_BYTES, "stdin").await?;
                Some(path)
            }
            None => None,
        };
        let resume = match &task.resume_from {
            Some(c) => {
                let path = work.join("resume");
                self.fetch(
                    &c.0,
                    &path,
                    cairn_compute::MAX_CHECKPOINT_BYTES,
                    "checkpoint",
                )
                .await?;
                Some(path)
            }
            None => None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let run_dir = work.join("run");
        tokio::fs::create_dir_all(&run_dir)
            .await
            .map_err(|e| other(format!("cannot create the run dir: {e}")))?;
        let spec = RunSpec {
            program_name: task.name.clone(),
            args: task.args.clone(),
            env: task.env.clone(),
            stdin,
            work_dir: run_dir,
            memory_bytes: task.need.memory_bytes,
            fuel: task.need.fuel,
            wall_secs: task.need.deadline_secs,
            resume,
            seed: task.seed(),
            output_dir: task.output_dir,
            max_output_bytes: MAX_OUTPUT_BYTES,
            // The run stops on this: set when the job is cancelled, or
            // when the unit's files outgrow their bound (the sandbox cannot
            // limit disk use inside its preopened dirs, so a watchdog
            // measures it).
            cancel: stop.clone(),
        };
        let exceeded = Arc::new(AtomicBool::new(false));
        let watchdog = tokio::spawn(watch_disk(work.join("run"), cancel, stop, exceeded.clone()));
        let sandbox = self.inner.sandbox.clone();
        let rt = tokio::runtime::Handle::current();
        let this = self.clone();
        let (job, unit) = (task.job, task.unit);
        let out = tokio::task::spawn_blocking(move || {
            let mut on_checkpoint = |path: &Path| -> bool {
                // The module waits while its checkpoint is stored: a
                // checkpoint only counts once it is safe in the network.
                rt.block_on(async {
                    match this.store(path, "checkpoint").await {
                        Ok(cap) => {
                            let report = Report::Checkpointed {
                                checkpoint: CheckpointRef(cap),
                            };
                            this.report(scheduler, job, unit, report).await;
                            true
                        }
                        Err(e) => {
                            tracing::warn!(%unit, "cannot store a checkpoint: {e}");
                            false
                        }
                    }
                })
            };
            sandbox.run(&program, spec, &mut on_checkpoint)
        })
        .await;
        watchdog.abort();
        if exceeded.load(Ordering::Relaxed) {
            return Err(other(format!(
                "the unit wrote more than {} or {MAX_WORK_FILES} files under /scratch and /out",
                cairn_core::compute::resources::format_size(MAX_WORK_BYTES)
            )));
        }
        let out = out.map_err(|e| other(format!("the sandbox failed: {e}")))??;
        let mut out = out;
        if self.inner.wrong_outputs {
            let lie = b"a wrong answer\n";
            tokio::fs::write(&out.stdout, lie)
                .await
                .map_err(|e| other(format!("cannot write: {e}")))?;
            out.hash = cairn_core::compute::OutputHash(*blake3::hash(lie).as_bytes());
        }
        if out.files.len() > cairn_core::compute::task::MAX_OUTPUT_FILES {
            return Err(other(format!(
                "the unit wrote {} output files; at most {} are collected",
                out.files.len(),
                cairn_core::compute::task::MAX_OUTPUT_FILES
            )));
        }
        let stdout = self
            .blob(&out.stdout, "output")
            .await
            .map_err(|e| other(format!("cannot store the output: {e}")))?;
        let mut files = Vec::with_capacity(out.files.len());
        for (name, path) in &out.files {
            let blob = self
                .blob(path, "output file")
                .await
                .map_err(|e| other(format!("cannot store output file {name}: {e}")))?;
            files.push((name.clone(), blob));
        }
        Ok(Report::Finished {
            output: out.hash,
            stdout,
            files,
            fuel_used: out.fuel_used,
        })
    }

    /// The compiled module behind `cap`, from the cache or fetched.
    async fn program(&self, cap: &str) -> Result<Program, RunError> {
        if let Some((_, p)) = lock(&self.inner.programs).iter().find(|(c, _)| c == cap) {
            return Ok(p.clone());
        }
        let bytes = read_module(&self.inner.client, cap)
            .await
            .map_err(|message| RunError::Other { message })?;
        let sandbox = self.inner.sandbox.clone();
        let program = tokio::task::spawn_blocking(move || sandbox.compile(&bytes))
            .await
            .map_err(|e| RunError::Other {
                message: format!("the compiler failed: {e}"),
            })??;
        let mut cache = lock(&self.inner.programs);
        if cache.len() >= PROGRAM_CACHE {
            cache.remove(0);
        }
        cache.push((cap.to_string(), program.clone()));
        Ok(program)
    }

    async fn fetch(&self, cap: &str, path: &Path, limit: u64, what: &str) -> Result<(), RunError> {
        let other = |m: String| RunError::Other { message: m };
        let mut rx = open(&self.inner.client, cap, limit, what)
            .await
            .map_err(other)?;
        let mut file = tokio::fs::File::create(path)
            .await
            .map_err(|e| other(format!("cannot write the {what}: {e}")))?;
        while let Some(chunk) = rx.recv().await {
            let chunk = chunk.map_err(|e| other(format!("cannot read the {what}: {e}")))?;
            file.write_all(&chunk)
                .await
                .map_err(|e| other(format!("cannot write the {what}: {e}")))?;
        }
        file.flush()
            .await
            .map_err(|e| other(format!("cannot write the {what}: {e}")))
    }

    /// The file at `path` as a report carries it: inline if small, else
    /// stored as an object.
    async fn blob(&self, path: &Path, what: &str) -> Result<Blob, String> {
        let len = tokio::fs::metadata(path)
            .await
            .map_err(|e| format!("cannot read the {what}: {e}"))?
            .len();
        if len <= MAX_INLINE as u64 {
            let bytes = tokio::fs::read(path)
                .await
                .map_err(|e| format!("cannot read the {what}: {e}"))?;
            // The file cannot have grown: the run is over.
            if bytes.len() <= MAX_INLINE {
                return Ok(Blob::Inline(bytes));
            }
        }
        self.store(path, what).await.map(Blob::Stored)
    }

    /// Stores the file at `path` as a Cairn object; returns its capability.
    async fn store(&self, path: &Path, what: &str) -> Result<String, String> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| format!("cannot open the {what}: {e}"))?;
        let opts = PutOptions {
            catalog: false,
            ..PutOptions::default()
        };
        self.inner
            .client
            .put(file, opts)
            .await
            .map(|o| o.cap)
            .map_err(|e| e.to_string())
    }
}

/// Starts reading the object `cap` (the `what` of a unit), refusing one
/// larger than `limit`.
async fn open(
    client: &Client,
    cap: &str,
    limit: u64,
    what: &str,
) -> Result<mpsc::Receiver<Result<Bytes, crate::client::ClientError>>, String> {
    let cap: ReadCap = cap
        .parse()
        .map_err(|e| format!("the {what} capability is malformed: {e}"))?;
    let (header, rx) = client
        .get(cap)
        .await
        .map_err(|e| format!("cannot read the {what}: {e}"))?;
    if header.size > limit {
        return Err(format!(
            "the {what} is {} bytes, over the {limit}-byte limit",
            header.size
        ));
    }
    Ok(rx)
}

/// Reads a job's module (at most [`MAX_MODULE_BYTES`]) into memory, for
/// compiling.
pub async fn read_module(client: &Client, cap: &str) -> Result<Vec<u8>, String> {
    let what = "module";
    let mut rx = open(client, cap, MAX_MODULE_BYTES, what).await?;
    let mut out = Vec::new();
    while let Some(chunk) = rx.recv().await {
        let chunk = chunk.map_err(|e| format!("cannot read the {what}: {e}"))?;
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Watches a running unit: passes a job cancellation on to the sandbox at
/// once, and stops the run if its files outgrow [`MAX_WORK_BYTES`] or
/// [`MAX_WORK_FILES`] (measured every [`DISK_CHECK`]).
async fn watch_disk(
    run: std::path::PathBuf,
    cancel: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    exceeded: Arc<AtomicBool>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut last_check = std::time::Instant::now();
    loop {
        tick.tick().await;
        if cancel.load(Ordering::Relaxed) {
            stop.store(true, Ordering::Relaxed);
            return;
        }
        if last_check.elapsed() < DISK_CHECK {
            continue;
        }
        last_check = std::time::Instant::now();
        let dir = run.clone();
        let over = tokio::task::spawn_blocking(move || {
            disk_use_over(&dir, MAX_WORK_BYTES, MAX_WORK_FILES)
        })
        .await
        .unwrap_or(false);
        if over {
            exceeded.store(true, Ordering::Relaxed);
            stop.store(true, Ordering::Relaxed);
            return;
        }
    }
}

/// Whether the files under `dir` exceed `max_bytes` or `max_files` (the
/// walk stops as soon as they do).
fn disk_use_over(dir: &Path, max_bytes: u64, max_files: usize) -> bool {
    let (mut bytes, mut files) = (0u64, 0usize);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            files += 1;
            if files > max_files {
                return true;
            }
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => {
                    bytes += m.len();
                    if bytes > max_bytes {
                        return true;
                    }
                }
                Err(_) => {}
            }
        }
    }
    false
}

/// Empties a slot's work dir, keeping its directories and its stdout and
/// stderr files (truncated) so the next run creates nothing.
async fn empty_work_dir(work: &Path) -> std::io::Result<()> {
    let work = work.to_path_buf();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        for input in ["stdin", "resume"] {
            match std::fs::remove_file(work.join(input)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        let run = work.join("run");
        for dir in ["scratch", "out", "checkpoints"] {
            let dir = run.join(dir);
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                if entry.file_type()?.is_dir() {
                    std::fs::remove_dir_all(entry.path())?;
                } else {
                    std::fs::remove_file(entry.path())?;
                }
            }
        }
        for file in ["stdout", "stderr"] {
            match std::fs::OpenOptions::new().write(true).open(run.join(file)) {
                Ok(f) => f.set_len(0)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })
    .await
    .map_err(std::io::Error::other)?
}

/// `(busy, total)` jiffies of the whole machine and this process's own.
type CpuTimes = (u64, u64, u64);

fn cpu_times() -> Option<CpuTimes> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    // idle and iowait are the 4th and 5th fields.
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    let own = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces): utime and
    // stime are the 12th and 13th after the closing parenthesis.
    let after = own.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let own_busy = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some((total - idle, total, own_busy))
}

/// Other processes' share of all cores between two samples, in percent.
fn other_cpu_percent(a: CpuTimes, b: CpuTimes) -> u8 {
    let total = b.1.saturating_sub(a.1);
    if total == 0 {
        return 0;
    }
    let busy = b.0.saturating_sub(a.0);
    let own = b.2.saturating_sub(a.2);
    (busy.saturating_sub(own) * 100 / total).min(100) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_use_counts_nested_files_and_their_number() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("scratch/a/b")).unwrap();
        std::fs::write(d.join("stdout"), vec![0; 100]).unwrap();
        std::fs::write(d.join("scratch/a/b/deep"), vec![0; 900]).unwrap();
        // 1,000 bytes in 5 entries (3 of them directories).
        assert!(!disk_use_over(d, 1000, 5));
        assert!(disk_use_over(d, 999, 5));
        assert!(disk_use_over(d, 1000, 4));
        assert!(!disk_use_over(&d.join("missing"), 0, 0));
    }

    #[test]
    fn other_cpu_excludes_our_own_use() {
        // 1000 jiffies passed, 600 busy, 500 of them ours: others used 10 %.
        assert_eq!(other_cpu_percent((0, 0, 0), (600, 1000, 500)), 10);
        assert_eq!(other_cpu_percent((0, 0, 0), (0, 0, 0)), 0);
        // Our own count may run ahead of the machine's between reads.
        assert_eq!(other_cpu_percent((0, 0, 0), (100, 1000, 200)), 0);
        assert!(cpu_times().is_some(), "/proc/stat is readable on Linux");
    }
}
