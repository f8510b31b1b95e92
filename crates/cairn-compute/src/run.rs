//! One run: the store, its limits, the checkpoint import, and how a run's
//! end becomes a [`RunError`].

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::{Duration, Instant};

use wasmtime::{Caller, Linker, ResourceLimiter, Store, Trap, UpdateDeadline, WasmBacktrace};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use crate::stdio::{BoundedOutput, Overflow};
use crate::virt::{self, Monotonic, SeededRng, VirtualClock, Wall};
use crate::{MAX_CHECKPOINT_BYTES, RunError, RunSpec, STDERR_LIMIT};

/// At most this many table elements per table.
pub const MAX_TABLE_ELEMENTS: usize = 1 << 20;
/// At most this many tables per instance.
const MAX_TABLES: usize = 64;

/// The store's data.
pub(crate) struct State {
    wasi: WasiP1Ctx,
    limits: Limits,
    /// Why the epoch callback stopped the run.
    stop: Option<Stop>,
    cancel: Arc<AtomicBool>,
    deadline: Instant,
    pub(crate) clock: VirtualClock,
    /// What the WASI shims forward to.
    pub(crate) originals: Option<virt::Originals>,
    checkpoint: Checkpoints,
}

/// Why the host stopped a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
enum Stop {
    #[error("cancelled")]
    Cancelled,
    #[error("the wall-clock limit was hit")]
    TimeLimit,
}

/// Linear memory and table limits. Going over one traps (and the run ends
/// with [`RunError::OutOfMemory`]), unlike a plain growth failure, so that
/// a module cannot mistake the provider's limit for its own maximum.
struct Limits {
    memory_bytes: usize,
    hit: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("the {0} limit was hit")]
struct LimitHit(&'static str);

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.hit = true;
            return Err(wasmtime::Error::new(LimitHit("memory")));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.hit = true;
            return Err(wasmtime::Error::new(LimitHit("table")));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        // The module and the WASI shims' trampoline.
        2
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        1
    }
}

/// The checkpoint import's side: where the module's file is, where copies
/// go, and the channel to the caller's `on_checkpoint`.
struct Checkpoints {
    scratch_file: PathBuf,
    dir: PathBuf,
    /// Calls so far (names the copies).
    calls: u64,
    /// Checkpoints the callback kept.
    kept: u32,
    last_kept: Option<PathBuf>,
    to_caller: SyncSender<PathBuf>,
    from_caller: Receiver<bool>,
}

impl State {
    /// `cairn.checkpoint()`: 0 if the checkpoint was kept, 1 if not.
    fn checkpoint(&mut self) -> i32 {
        let started = Instant::now();
        let kept = self.take_checkpoint();
        // Storing a checkpoint does not use up the unit's wall time.
        self.deadline += started.elapsed();
        if kept { 0 } else { 1 }
    }

    fn take_checkpoint(&mut self) -> bool {
        let c = &mut self.checkpoint;
        c.calls += 1;
        let copy = c.dir.join(c.calls.to_string());
        match copy_checkpoint(&c.scratch_file, &copy) {
            Ok(true) => {}
            Ok(false) | Err(_) => {
                let _ = fs::remove_file(&copy);
                return false;
            }
        }
        let kept = c.to_caller.send(copy.clone()).is_ok() && c.from_caller.recv().unwrap_or(false);
        if kept {
            if let Some(old) = c.last_kept.replace(copy) {
                let _ = fs::remove_file(old);
            }
            c.kept = c.kept.saturating_add(1);
        } else {
            let _ = fs::remove_file(&copy);
        }
        kept
    }
}

/// Copies the module's checkpoint file if it is a regular file (never a
/// link out of the scratch directory) of at most [`MAX_CHECKPOINT_BYTES`].
fn copy_checkpoint(from: &Path, to: &Path) -> io::Result<bool> {
    let meta = fs::symlink_metadata(from)?;
    if !meta.is_file() || meta.len() > MAX_CHECKPOINT_BYTES {
        return Ok(false);
    }
    let src = File::open(from)?;
    let mut dst = File::create(to)?;
    let copied = io::copy(&mut src.take(MAX_CHECKPOINT_BYTES + 1), &mut dst)?;
    dst.sync_all()?;
    Ok(copied <= MAX_CHECKPOINT_BYTES)
}

/// The host files and directories of one run.
pub(crate) struct Prepared {
    pub(crate) stdout_path: PathBuf,
    pub(crate) stdout: BoundedOutput,
    stderr: BoundedOutput,
    stdin: Option<File>,
    scratch: PathBuf,
    pub(crate) out: Option<PathBuf>,
    checkpoints: PathBuf,
}

fn other(message: String) -> RunError {
    RunError::Other { message }
}

/// Lays out `work_dir`: `scratch/` (with the resumed checkpoint),
/// `out/`, `checkpoints/`, `stdout`, `stderr`.
pub(crate) fn prepare(spec: &RunSpec) -> Result<Prepared, RunError> {
    let w = &spec.work_dir;
    let mkdir = |p: &Path| {
        fs::create_dir_all(p).map_err(|e| other(format!("cannot create {}: {e}", p.display())))
    };
    let scratch = w.join("scratch");
    let checkpoints = w.join("checkpoints");
    mkdir(&scratch)?;
    mkdir(&checkpoints)?;
    let out = if spec.output_dir {
        let out = w.join("out");
        mkdir(&out)?;
        Some(out)
    } else {
        None
    };
    if let Some(resume) = &spec.resume {
        let to = scratch.join("checkpoint");
        fs::copy(resume, &to).map_err(|e| {
            other(format!(
                "cannot copy the checkpoint {} to resume from: {e}",
                resume.display()
            ))
        })?;
    }
    let stdin = match &spec.stdin {
        Some(p) => Some(
            File::open(p)
                .map_err(|e| other(format!("cannot open the unit's stdin {}: {e}", p.display())))?,
        ),
        None => None,
    };
    let create = |name: &str| {
        let p = w.join(name);
        File::create(&p)
            .map(|f| (p.clone(), f))
            .map_err(|e| other(format!("cannot create {}: {e}", p.display())))
    };
    let (stdout_path, stdout) = create("stdout")?;
    let (_, stderr) = create("stderr")?;
    Ok(Prepared {
        stdout_path,
        stdout: BoundedOutput::new(stdout, spec.max_output_bytes, Overflow::Fail),
        stderr: BoundedOutput::new(stderr, STDERR_LIMIT, Overflow::Drop),
        stdin,
        scratch,
        out,
        checkpoints,
    })
}

/// The run thread's line to the thread that called `run`, which serves
/// `on_checkpoint`.
pub(crate) struct CallerLink {
    /// Checkpoint copies to offer.
    pub(crate) requests: SyncSender<PathBuf>,
    /// Whether each was kept.
    pub(crate) replies: Receiver<bool>,
}

/// What a finished run reports.
pub(crate) struct Finished {
    pub(crate) fuel_used: u64,
    pub(crate) checkpoints: u32,
}

/// Builds the store and runs `_start`. Runs on the sandbox thread.
pub(crate) fn execute(
    base: &Linker<State>,
    trampoline: &wasmtime::Module,
    module: &wasmtime::Module,
    spec: &RunSpec,
    prepared: &Prepared,
    fuel: u64,
    caller: CallerLink,
) -> Result<Finished, RunError> {
    let clock = VirtualClock::default();
    let mut b = WasiCtxBuilder::new();
    // Before the preopens: they take this setting when they are added.
    b.allow_blocking_current_thread(true);
    let argv: Vec<&str> = std::iter::once(spec.program_name.as_str())
        .chain(spec.args.iter().map(String::as_str))
        .collect();
    b.args(&argv);
    b.envs(&spec.env);
    match &prepared.stdin {
        Some(f) => {
            let f = f
                .try_clone()
                .map_err(|e| other(format!("cannot open the unit's stdin: {e}")))?;
            b.stdin(wasmtime_wasi::cli::InputFile::new(f));
        }
        None => {
            b.stdin(MemoryInputPipe::new(Vec::new()));
        }
    }
    b.stdout(prepared.stdout.clone());
    b.stderr(prepared.stderr.clone());
    b.preopened_dir(&prepared.scratch, "/scratch", FsPerms::ReadWrite)
        .map_err(|e| other(format!("cannot open the scratch directory: {e:#}")))?;
    if let Some(out) = &prepared.out {
        b.preopened_dir(out, "/out", FsPerms::ReadWrite)
            .map_err(|e| other(format!("cannot open the output directory: {e:#}")))?;
    }
    b.secure_random(SeededRng::new(&spec.seed, "secure"));
    b.insecure_random(SeededRng::new(&spec.seed, "insecure"));
    b.insecure_random_seed(virt::insecure_seed(&spec.seed));
    b.wall_clock(Wall(clock.clone()));
    b.monotonic_clock(Monotonic(clock.clone()));
    b.allow_tcp(false);
    b.allow_udp(false);
    b.allow_ip_name_lookup(false);

    let state = State {
        wasi: b.build_p1(),
        limits: Limits {
            memory_bytes: usize::try_from(spec.memory_bytes).unwrap_or(usize::MAX),
            hit: false,
        },
        stop: None,
        cancel: spec.cancel.clone(),
        deadline: Instant::now() + Duration::from_secs(spec.wall_secs),
        clock,
        originals: None,
        checkpoint: Checkpoints {
            scratch_file: prepared.scratch.join("checkpoint"),
            dir: prepared.checkpoints.clone(),
            calls: 0,
            kept: 0,
            last_kept: None,
            to_caller: caller.requests,
            from_caller: caller.replies,
        },
    };
    let mut store = Store::new(module.engine(), state);
    store.limiter(|s| &mut s.limits);
    store
        .set_fuel(fuel)
        .map_err(|e| other(format!("cannot set the fuel: {e:#}")))?;
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut ctx| {
        let s = ctx.data_mut();
        let stop = if s.cancel.load(Ordering::Relaxed) {
            Stop::Cancelled
        } else if Instant::now() >= s.deadline {
            Stop::TimeLimit
        } else {
            return Ok(UpdateDeadline::Continue(1));
        };
        s.stop = Some(stop);
        Err(wasmtime::Error::new(stop))
    });

    let mut linker = base.clone();
    virt::add_shims(&mut linker, &mut store, trampoline)
        .map_err(|e| other(format!("cannot set up WASI: {e:#}")))?;

    let ended = match linker.instantiate(&mut store, module) {
        Ok(instance) => {
            let start = instance
                .get_typed_func::<(), ()>(&mut store, "_start")
                .map_err(|e| other(format!("the module's `_start` cannot be called: {e:#}")))?;
            start.call(&mut store, ())
        }
        Err(e) => {
            let s = store.data();
            return Err(if s.limits.hit {
                RunError::OutOfMemory
            } else if let Some(trap) = e.downcast_ref::<Trap>() {
                RunError::Trap {
                    message: format!("wasm trap during instantiation: {trap}"),
                }
            } else {
                other(format!("cannot instantiate the module: {e:#}"))
            });
        }
    };
    let flushed = prepared.stdout.flush_file();
    let result = match ended {
        Ok(()) => Ok(()),
        Err(e) => classify(&e, store.data(), prepared),
    };
    result?;
    // Also when the module swallowed a write error and exited 0.
    check_stdout(prepared)?;
    flushed.map_err(|e| other(format!("cannot write the unit's stdout: {e}")))?;
    let left = store.get_fuel().unwrap_or(0);
    Ok(Finished {
        fuel_used: fuel.saturating_sub(left),
        checkpoints: store.data().checkpoint.kept,
    })
}

fn check_stdout(prepared: &Prepared) -> Result<(), RunError> {
    if prepared.stdout.exceeded() {
        return Err(crate::output_too_large(None));
    }
    if let Some(e) = prepared.stdout.io_failure() {
        return Err(other(format!("cannot write the unit's stdout: {e}")));
    }
    Ok(())
}

/// Turns the error a run ended with into a [`RunError`]. `Ok` for
/// `proc_exit(0)`.
fn classify(e: &wasmtime::Error, state: &State, prepared: &Prepared) -> Result<(), RunError> {
    if let Some(I32Exit(0)) = e.downcast_ref::<I32Exit>() {
        return Ok(());
    }
    check_stdout(prepared)?;
    match state.stop {
        Some(Stop::Cancelled) => return Err(other("cancelled".into())),
        Some(Stop::TimeLimit) => return Err(RunError::TimeLimit),
        None => {}
    }
    if state.limits.hit {
        return Err(RunError::OutOfMemory);
    }
    if let Some(I32Exit(code)) = e.downcast_ref::<I32Exit>() {
        return Err(RunError::Exit { code: *code });
    }
    let place = e
        .downcast_ref::<WasmBacktrace>()
        .and_then(|bt| {
            bt.frames()
                .first()?
                .func_name()
                .map(|f| format!(" in `{f}`"))
        })
        .unwrap_or_default();
    if let Some(trap) = e.downcast_ref::<Trap>() {
        return Err(match trap {
            Trap::OutOfFuel => RunError::OutOfFuel,
            Trap::Interrupt => RunError::TimeLimit,
            t => RunError::Trap {
                message: format!("wasm trap: {t}{place}"),
            },
        });
    }
    // A host call refused the module (a bad pointer, a malformed
    // argument, an exit status out of range): the module's own doing, as
    // deterministic as a trap.
    Err(RunError::Trap {
        message: format!("{}{place}", e.root_cause()),
    })
}

/// The linker every run starts from: WASI preview 1 and `cairn.checkpoint`.
pub(crate) fn base_linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<State>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut State| &mut s.wasi)?;
    linker.func_wrap(
        "cairn",
        "checkpoint",
        |mut caller: Caller<'_, State>| -> i32 { caller.data_mut().checkpoint() },
    )?;
    Ok(linker)
}
