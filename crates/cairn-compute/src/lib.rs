//! The compute sandbox (issue 5): runs one work unit, a WebAssembly module
//! using WASI preview 1, in wasmtime, deterministically and within limits.
//!
//! The decisions (which unit runs where, voting on output hashes) live in
//! `cairn_core::compute`; a provider node calls this crate to run what it
//! was assigned. One [`Sandbox`] per node holds the wasmtime engine and an
//! epoch ticker thread; [`Sandbox::compile`] validates a module into a
//! [`Program`]; [`Sandbox::run`] runs it once (blocking: call it from
//! `spawn_blocking`).
//!
//! # What the module sees
//!
//! - WASI preview 1 (`wasi_snapshot_preview1`) and one Cairn import,
//!   `(import "cairn" "checkpoint" (func (result i32)))`. A module that
//!   imports anything else is refused at compile time. It must export
//!   `_start` (a WASI command).
//! - argv is [`RunSpec::program_name`] then [`RunSpec::args`]; the
//!   environment is [`RunSpec::env`] only (nothing of the host's).
//! - Files: the preopened directory `/scratch` (read-write; host
//!   `work_dir/scratch`) and, with [`RunSpec::output_dir`], `/out` (host
//!   `work_dir/out`). wasmtime-wasi resolves paths inside a preopen with
//!   cap-std, so `..`, absolute host paths and symbolic links cannot leave
//!   it. No sockets, no name lookups.
//! - stdin is the file [`RunSpec::stdin`] (read only), or empty. stdout
//!   goes to `work_dir/stdout` and counts against
//!   [`RunSpec::max_output_bytes`]; stderr goes to `work_dir/stderr`, cut
//!   silently at [`STDERR_LIMIT`], and is not part of the output.
//! - Clocks are virtual and randomness is seeded (see below).
//!
//! # Determinism
//!
//! The same module, arguments, environment, stdin, resumed checkpoint and
//! seed give the same output hash on every machine:
//! - Both clocks read one virtual counter of nanoseconds that starts at 0
//!   and moves [`CLOCK_STEP_NS`] per read; a sleep (`poll_oneoff` on clocks
//!   only) jumps it to the deadline instead of sleeping. The wall clock is
//!   the unix epoch ([`WALL_CLOCK_START_SECS`]) plus the counter.
//! - `random_get` is BLAKE3 in keyed XOF mode under [`RunSpec::seed`].
//! - `fd_filestat_get`, `path_filestat_get` and `fd_readdir` report inode 0
//!   and zero timestamps.
//! - Floating-point NaNs are canonicalized, relaxed SIMD is deterministic,
//!   threads and multiple memories are off.
//! - Fuel is counted by wasmtime per instruction, so [`RunOutput::fuel_used`]
//!   is the same everywhere too.
//!
//! One known gap: `fd_readdir` lists a directory in the host file system's
//! order, which differs between machines; a module that lists a directory
//! it wrote should sort the names.
//!
//! # Limits and how a run ends
//!
//! | cause | result |
//! |---|---|
//! | `_start` returns, or `proc_exit(0)` | `Ok(RunOutput)` |
//! | `proc_exit(n)`, n ≠ 0 | [`RunError::Exit`] |
//! | fuel ([`RunSpec::fuel`], default [`DEFAULT_FUEL`]) runs out | [`RunError::OutOfFuel`] |
//! | linear memory beyond [`RunSpec::memory_bytes`], a table beyond [`MAX_TABLE_ELEMENTS`] | [`RunError::OutOfMemory`] |
//! | [`RunSpec::wall_secs`] of wall time (checked every [`EPOCH_TICK`]; time spent storing checkpoints does not count) | [`RunError::TimeLimit`] |
//! | [`RunSpec::cancel`] set (checked every [`EPOCH_TICK`]) | [`RunError::Other`] `"cancelled"` |
//! | stdout plus output files beyond [`RunSpec::max_output_bytes`] | [`RunError::Other`] |
//! | any other trap | [`RunError::Trap`] |
//! | a host failure (disk, missing input) | [`RunError::Other`] |
//!
//! Scratch and output files are not limited while the unit runs (only the
//! output total, afterwards): give `work_dir` a file system the unit cannot
//! hurt.
//!
//! # Checkpoints
//!
//! BOINC's model: the module writes its own state to `/scratch/checkpoint`
//! and calls `cairn.checkpoint()`. The host copies that file (a regular
//! file of at most [`MAX_CHECKPOINT_BYTES`]; otherwise the call returns 1)
//! to `work_dir/checkpoints/<n>` (n counts the calls from 1) and calls
//! `on_checkpoint` with the copy's path; the call returns 0 if it kept it,
//! 1 if not. A copy that was not kept is removed, and so is the previous
//! kept copy once a newer one is kept. With [`RunSpec::resume`], the
//! runtime copies that file to `scratch/checkpoint` before the start, so a
//! module resumes by reading its state file if it is there.
//!
//! # Output hash
//!
//! [`RunOutput::hash`] ([`output_hash`]) is BLAKE3 in derive-key mode with
//! the context [`OUTPUT_HASH_CONTEXT`] over:
//!
//! ```text
//! stdout length (u64 LE) ‖ stdout bytes
//! for each output file, in byte order of its relative path ('/'-separated):
//!     path length (u64 LE) ‖ path bytes ‖ content length (u64 LE) ‖ content bytes
//! ```
//!
//! Output files are the regular files under `/out` (directories are
//! walked, at most [`MAX_OUTPUT_DEPTH`] deep and [`MAX_OUTPUT_FILES`]
//! files; symbolic links and other special files are ignored). Files are
//! hashed as streams, never read whole into memory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use wasmtime::{Config, Engine, ExternType, Linker, Module};

mod output;
mod run;
mod stdio;
mod virt;

pub use cairn_core::compute::OutputHash;
pub use cairn_core::compute::unit::RunError;
pub use output::{MAX_OUTPUT_DEPTH, MAX_OUTPUT_FILES, output_hash};
pub use run::MAX_TABLE_ELEMENTS;
pub use virt::{CLOCK_STEP_NS, WALL_CLOCK_START_SECS};

/// The BLAKE3 derive-key context of the output hash.
pub const OUTPUT_HASH_CONTEXT: &str = "cairn v1 compute output";
/// The largest checkpoint file the host copies.
pub const MAX_CHECKPOINT_BYTES: u64 = 64 << 20;
/// Fuel when [`RunSpec::fuel`] is `None`: 2^40, about a trillion wasm
/// instructions (tens of minutes of tight loop on one core).
pub const DEFAULT_FUEL: u64 = 1 << 40;
/// How often the ticker moves the engine's epoch: the granularity of the
/// wall-clock limit and of cancellation.
pub const EPOCH_TICK: Duration = Duration::from_millis(100);
/// stderr beyond this many bytes is dropped.
pub const STDERR_LIMIT: u64 = 1 << 20;
/// The stack of the thread a run executes on (wasm's own stack is
/// wasmtime's default 512 KiB within it).
const RUN_THREAD_STACK: usize = 8 << 20;

/// Why a [`Sandbox`] could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// wasmtime refused the engine configuration.
    #[error("cannot create the wasmtime engine: {message}")]
    Engine {
        /// wasmtime's reason.
        message: String,
    },
    /// The epoch ticker thread could not be started.
    #[error("cannot start the sandbox's epoch ticker thread: {0}")]
    Ticker(#[source] std::io::Error),
}

/// One per node: the wasmtime engine (fuel and epoch interruption on) and
/// an epoch ticker thread that ticks every [`EPOCH_TICK`] and stops when
/// the last clone is dropped. Cloning is cheap. [`Sandbox::lazy`] builds
/// the engine at the first compile or run, so a node that never sees a
/// job does not pay for Cranelift (about 15 MiB of resident memory).
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<OnceLock<Result<Inner, String>>>,
}

struct Inner {
    engine: Engine,
    linker: Linker<run::State>,
    /// See `virt::TRAMPOLINE_WASM`.
    trampoline: Module,
    /// Dropping it stops the ticker.
    stop_ticker: Option<mpsc::Sender<()>>,
    ticker: Option<JoinHandle<()>>,
}

impl Inner {
    fn build() -> Result<Self, SandboxError> {
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .epoch_interruption(true)
            .cranelift_nan_canonicalization(true)
            .relaxed_simd_deterministic(true)
            .wasm_multi_memory(false)
            .wasm_memory64(false)
            // One frame: the trapping function's name for the message.
            .wasm_backtrace_max_frames(Some(std::num::NonZeroUsize::MIN));
        let engine = Engine::new(&config).map_err(|e| SandboxError::Engine {
            message: format!("{e:#}"),
        })?;
        let linker = run::base_linker(&engine).map_err(|e| SandboxError::Engine {
            message: format!("{e:#}"),
        })?;
        let trampoline =
            Module::new(&engine, virt::TRAMPOLINE_WASM).map_err(|e| SandboxError::Engine {
                message: format!("{e:#}"),
            })?;
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let ticking = engine.clone();
        let ticker = thread::Builder::new()
            .name("cairn-epoch".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(EPOCH_TICK) {
                    ticking.increment_epoch();
                }
            })
            .map_err(SandboxError::Ticker)?;
        Ok(Self {
            engine,
            linker,
            trampoline,
            stop_ticker: Some(stop_tx),
            ticker: Some(ticker),
        })
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_ticker.take();
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

/// A compiled, validated module. Cloning is cheap.
#[derive(Clone)]
pub struct Program {
    module: Module,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program").finish_non_exhaustive()
    }
}

/// One run of a program.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// argv\[0\].
    pub program_name: String,
    /// argv\[1..\].
    pub args: Vec<String>,
    /// The whole environment.
    pub env: Vec<(String, String)>,
    /// A host file streamed as stdin; `None` is an empty stdin.
    pub stdin: Option<PathBuf>,
    /// An empty directory the caller owns; the runtime creates `scratch/`,
    /// `out/`, `checkpoints/`, `stdout` and `stderr` inside.
    pub work_dir: PathBuf,
    /// The linear memory limit in bytes.
    pub memory_bytes: u64,
    /// Fuel; `None` is [`DEFAULT_FUEL`].
    pub fuel: Option<u64>,
    /// The wall-clock limit in seconds.
    pub wall_secs: u64,
    /// A checkpoint file to restore: copied to `scratch/checkpoint` before
    /// the start.
    pub resume: Option<PathBuf>,
    /// The only randomness the module sees.
    pub seed: [u8; 32],
    /// Preopen `/out` and collect its files.
    pub output_dir: bool,
    /// stdout and output files together may not exceed this.
    pub max_output_bytes: u64,
    /// Set it to stop the run at the next epoch tick
    /// (`RunError::Other { message: "cancelled" }`).
    pub cancel: Arc<AtomicBool>,
}

/// A finished run.
#[derive(Clone, Debug)]
pub struct RunOutput {
    /// `work_dir/stdout`.
    pub stdout: PathBuf,
    /// Output-dir files: relative name (sorted) and host path; empty
    /// unless [`RunSpec::output_dir`].
    pub files: Vec<(String, PathBuf)>,
    /// See the crate docs.
    pub hash: OutputHash,
    /// Fuel given minus fuel left.
    pub fuel_used: u64,
    /// How many checkpoints the module took (that `on_checkpoint` kept).
    pub checkpoints: u32,
}

fn other(message: impl Into<String>) -> RunError {
    RunError::Other {
        message: message.into(),
    }
}

pub(crate) fn output_too_large(total: Option<(u64, u64)>) -> RunError {
    other(match total {
        Some((total, limit)) => format!(
            "the unit's output is {total} bytes (stdout and output files together), \
             more than its limit of {limit} bytes"
        ),
        None => "the unit wrote more to stdout than its output limit allows".to_string(),
    })
}

impl Sandbox {
    /// Creates the engine and starts the epoch ticker now.
    pub fn new() -> Result<Self, SandboxError> {
        let sandbox = Self::lazy();
        sandbox.inner()?;
        Ok(sandbox)
    }

    /// A sandbox whose engine is built at its first use; if that fails,
    /// every compile and run says why.
    pub fn lazy() -> Self {
        Self {
            inner: Arc::new(OnceLock::new()),
        }
    }

    fn inner(&self) -> Result<&Inner, SandboxError> {
        self.inner
            .get_or_init(|| Inner::build().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|message| SandboxError::Engine {
                message: message.clone(),
            })
    }

    /// Compiles and validates a module. A module that is not valid
    /// WebAssembly, imports anything but WASI preview 1 and
    /// `cairn.checkpoint` (or those with the wrong types), or has no
    /// `_start` is refused with [`RunError::Other`].
    pub fn compile(&self, wasm: &[u8]) -> Result<Program, RunError> {
        let inner = self.inner().map_err(|e| other(e.to_string()))?;
        let module = Module::new(&inner.engine, wasm)
            .map_err(|e| other(format!("the module is not valid WebAssembly: {e:#}")))?;
        for import in module.imports() {
            let allowed = import.module() == "wasi_snapshot_preview1"
                || (import.module() == "cairn" && import.name() == "checkpoint");
            if !allowed {
                return Err(other(format!(
                    "the module imports `{}` `{}`; a work unit may import only WASI preview 1 \
                     (`wasi_snapshot_preview1`) and `cairn` `checkpoint`",
                    import.module(),
                    import.name()
                )));
            }
        }
        let has_start = module
            .exports()
            .any(|e| e.name() == "_start" && matches!(e.ty(), ExternType::Func(_)));
        if !has_start {
            return Err(other(
                "the module exports no `_start` function; a work unit is a WASI command",
            ));
        }
        inner.linker.instantiate_pre(&module).map_err(|e| {
            other(format!(
                "the module's imports do not match the sandbox's: {e:#}"
            ))
        })?;
        Ok(Program { module })
    }

    /// Runs `program` once. Blocking (callers use `spawn_blocking`); the
    /// module executes on a thread of its own while this thread serves
    /// `on_checkpoint`, which is called from inside the module's
    /// `cairn.checkpoint()` with the path of a stable copy of the
    /// checkpoint file and returns whether it kept it. It may block.
    pub fn run(
        &self,
        program: &Program,
        spec: RunSpec,
        on_checkpoint: &mut (dyn FnMut(&Path) -> bool + Send),
    ) -> Result<RunOutput, RunError> {
        let prepared = run::prepare(&spec)?;
        if spec.cancel.load(Ordering::Relaxed) {
            return Err(other("cancelled"));
        }
        let fuel = spec.fuel.unwrap_or(DEFAULT_FUEL);
        let (to_caller, requests) = mpsc::sync_channel::<PathBuf>(0);
        let (replies, from_caller) = mpsc::sync_channel::<bool>(1);
        let inner = self.inner().map_err(|e| other(e.to_string()))?;
        let (linker, trampoline) = (&inner.linker, &inner.trampoline);
        let (spec_ref, prepared_ref) = (&spec, &prepared);
        let finished = thread::scope(|s| {
            let handle = thread::Builder::new()
                .name("cairn-run".into())
                .stack_size(RUN_THREAD_STACK)
                .spawn_scoped(s, move || {
                    run::execute(
                        linker,
                        trampoline,
                        &program.module,
                        spec_ref,
                        prepared_ref,
                        fuel,
                        run::CallerLink {
                            requests: to_caller,
                            replies: from_caller,
                        },
                    )
                })
                .map_err(|e| other(format!("cannot start the sandbox thread: {e}")))?;
            // Ends when the run drops its sender, i.e. when it is over.
            for path in requests.iter() {
                let kept = on_checkpoint(&path);
                if replies.send(kept).is_err() {
                    break;
                }
            }
            handle
                .join()
                .map_err(|_| other("the sandbox thread panicked"))?
        })?;

        let files = match &prepared.out {
            Some(out) => output::collect(out)?,
            None => Vec::new(),
        };
        let stdout_len = std::fs::metadata(&prepared.stdout_path)
            .map_err(|e| other(format!("cannot read the unit's stdout: {e}")))?
            .len();
        let total = stdout_len.saturating_add(output::total_size(&files)?);
        if total > spec.max_output_bytes {
            return Err(output_too_large(Some((total, spec.max_output_bytes))));
        }
        let hash = output_hash(&prepared.stdout_path, &files)
            .map_err(|e| other(format!("cannot hash the unit's output: {e}")))?;
        Ok(RunOutput {
            stdout: prepared.stdout_path.clone(),
            files,
            hash,
            fuel_used: finished.fuel_used,
            checkpoints: finished.checkpoints,
        })
    }
}

#[cfg(test)]
mod tests;
