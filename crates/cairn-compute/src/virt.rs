//! What makes a run deterministic: virtual clocks, seeded randomness, and
//! shims over the few WASI preview 1 calls that would show the host.
//!
//! - Clocks: one virtual counter of nanoseconds, starting at 0, advanced
//!   by [`CLOCK_STEP_NS`] on every clock read and, by a sleep, to the sleep's
//!   deadline. The monotonic clock is the counter; the wall clock is
//!   [`WALL_CLOCK_START_SECS`] plus the counter.
//! - `poll_oneoff` with only clock subscriptions (a sleep) never sleeps on
//!   the host: the counter jumps to the earliest deadline and those
//!   subscriptions fire. Polls that wait on a descriptor go to wasmtime-wasi
//!   (our stdin, stdout and files are always ready).
//! - Randomness, secure and insecure: BLAKE3 in keyed XOF mode, keyed by the
//!   run's seed, one stream per kind. BLAKE3 is a fixed function, so the
//!   stream stays the same across versions of the rand crates.
//! - `fd_filestat_get` and `path_filestat_get` report inode 0 and zero
//!   timestamps, and `fd_readdir` reports inode 0: host inode numbers and
//!   file times differ between machines.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasmtime::{Caller, Extern, Func, Instance, Linker, Memory, Module, Store, Val};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

use crate::run::State;

/// How far the virtual clock moves on every read, in nanoseconds.
pub const CLOCK_STEP_NS: u64 = 1_000;

/// The wall clock's value when a run starts: the unix epoch.
pub const WALL_CLOCK_START_SECS: u64 = 0;

const WASI: &str = "wasi_snapshot_preview1";
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_FAULT: i32 = 21;
/// A poll with more subscriptions goes to wasmtime-wasi as is.
const MAX_VIRTUAL_SUBSCRIPTIONS: usize = 1024;
const SUBSCRIPTION_SIZE: usize = 48;
const EVENT_SIZE: usize = 32;
const FILESTAT_SIZE: usize = 64;
const DIRENT_HEADER: usize = 24;

/// The virtual clock shared by both WASI clocks and the sleep shim.
#[derive(Clone, Default)]
pub(crate) struct VirtualClock(Arc<AtomicU64>);

impl VirtualClock {
    fn tick(&self) -> u64 {
        self.0
            .fetch_add(CLOCK_STEP_NS, Ordering::Relaxed)
            .saturating_add(CLOCK_STEP_NS)
    }

    fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn advance_to(&self, t: u64) {
        self.0.fetch_max(t, Ordering::Relaxed);
    }
}

/// The monotonic clock the module sees.
pub(crate) struct Monotonic(pub(crate) VirtualClock);

impl HostMonotonicClock for Monotonic {
    fn resolution(&self) -> u64 {
        CLOCK_STEP_NS
    }

    fn now(&self) -> u64 {
        self.0.tick()
    }
}

/// The wall clock the module sees.
pub(crate) struct Wall(pub(crate) VirtualClock);

impl HostWallClock for Wall {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(CLOCK_STEP_NS)
    }

    fn now(&self) -> Duration {
        Duration::from_secs(WALL_CLOCK_START_SECS) + Duration::from_nanos(self.0.tick())
    }
}

/// A random stream: BLAKE3 keyed by the seed, in XOF mode.
pub(crate) struct SeededRng(blake3::OutputReader);

impl SeededRng {
    pub(crate) fn new(seed: &[u8; 32], kind: &str) -> Self {
        let mut h = blake3::Hasher::new_keyed(seed);
        h.update(b"cairn v1 compute random ");
        h.update(kind.as_bytes());
        Self(h.finalize_xof())
    }
}

impl rand_core::TryRng for SeededRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0; 4];
        self.0.fill(&mut b);
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0; 8];
        self.0.fill(&mut b);
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.0.fill(dst);
        Ok(())
    }
}

/// The seed of wasmtime-wasi's `insecure-seed` (not reachable from preview
/// 1 today, but fixed all the same).
pub(crate) fn insecure_seed(seed: &[u8; 32]) -> u128 {
    let mut b = [0; 16];
    SeededRng::new(seed, "insecure seed").0.fill(&mut b);
    u128::from_le_bytes(b)
}

fn original(
    linker: &Linker<State>,
    store: &mut Store<State>,
    name: &str,
) -> wasmtime::Result<wasmtime::Func> {
    linker
        .get(&mut *store, WASI, name)?
        .into_func()
        .ok_or_else(|| wasmtime::format_err!("wasmtime-wasi has no `{name}`"))
}

fn memory(caller: &mut Caller<'_, State>) -> Option<Memory> {
    caller.get_export("memory").and_then(Extern::into_memory)
}

fn errno(results: &[Val; 1]) -> i32 {
    results[0].i32().unwrap_or(ERRNO_FAULT)
}

/// The module that lets the shims call wasmtime-wasi's own
/// implementations: wasmtime-wasi finds the guest's memory through the
/// calling instance's `memory` export, so a host function cannot simply
/// call another. The trampoline imports the guest's memory, exports it
/// again, and forwards each call. [`TRAMPOLINE_WASM`] is its binary (a
/// test checks that they agree).
#[cfg(test)]
pub(crate) const TRAMPOLINE_WAT: &str = r#"(module
  (import "host" "memory" (memory 0))
  (import "wasi_snapshot_preview1" "fd_filestat_get" (func (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_filestat_get" (func (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_readdir" (func (param i32 i32 i32 i64 i32) (result i32)))
  (export "memory" (memory 0))
  (func (export "fd_filestat_get") (param i32 i32) (result i32)
    (call 0 (local.get 0) (local.get 1)))
  (func (export "path_filestat_get") (param i32 i32 i32 i32 i32) (result i32)
    (call 1 (local.get 0) (local.get 1) (local.get 2) (local.get 3) (local.get 4)))
  (func (export "fd_readdir") (param i32 i32 i32 i64 i32) (result i32)
    (call 2 (local.get 0) (local.get 1) (local.get 2) (local.get 3) (local.get 4))))"#;

/// The binary of the trampoline module.
pub(crate) const TRAMPOLINE_WASM: &[u8] = &[
    0, 97, 115, 109, 1, 0, 0, 0, 1, 25, 3, 96, 2, 127, 127, 1, 127, 96, 5, 127, 127, 127, 127, 127,
    1, 127, 96, 5, 127, 127, 127, 126, 127, 1, 127, 2, 136, 1, 4, 4, 104, 111, 115, 116, 6, 109,
    101, 109, 111, 114, 121, 2, 0, 0, 22, 119, 97, 115, 105, 95, 115, 110, 97, 112, 115, 104, 111,
    116, 95, 112, 114, 101, 118, 105, 101, 119, 49, 15, 102, 100, 95, 102, 105, 108, 101, 115, 116,
    97, 116, 95, 103, 101, 116, 0, 0, 22, 119, 97, 115, 105, 95, 115, 110, 97, 112, 115, 104, 111,
    116, 95, 112, 114, 101, 118, 105, 101, 119, 49, 17, 112, 97, 116, 104, 95, 102, 105, 108, 101,
    115, 116, 97, 116, 95, 103, 101, 116, 0, 1, 22, 119, 97, 115, 105, 95, 115, 110, 97, 112, 115,
    104, 111, 116, 95, 112, 114, 101, 118, 105, 101, 119, 49, 10, 102, 100, 95, 114, 101, 97, 100,
    100, 105, 114, 0, 2, 3, 4, 3, 0, 1, 2, 7, 61, 4, 6, 109, 101, 109, 111, 114, 121, 2, 0, 15,
    102, 100, 95, 102, 105, 108, 101, 115, 116, 97, 116, 95, 103, 101, 116, 0, 3, 17, 112, 97, 116,
    104, 95, 102, 105, 108, 101, 115, 116, 97, 116, 95, 103, 101, 116, 0, 4, 10, 102, 100, 95, 114,
    101, 97, 100, 100, 105, 114, 0, 5, 10, 40, 3, 8, 0, 32, 0, 32, 1, 16, 0, 11, 14, 0, 32, 0, 32,
    1, 32, 2, 32, 3, 32, 4, 16, 1, 11, 14, 0, 32, 0, 32, 1, 32, 2, 32, 3, 32, 4, 16, 2, 11,
];

/// wasmtime-wasi's functions the shims wrap, bound to the run's store,
/// and the trampoline instance once the guest's memory exists.
pub(crate) struct Originals {
    trampoline: Module,
    imports: [Extern; 3],
    forward: Option<[Func; 3]>,
}

const FD_FILESTAT_GET: usize = 0;
const PATH_FILESTAT_GET: usize = 1;
const FD_READDIR: usize = 2;

/// Calls wasmtime-wasi's `which` through the trampoline.
fn forward(caller: &mut Caller<'_, State>, which: usize, args: &[Val]) -> wasmtime::Result<i32> {
    let funcs = match caller.data().originals.as_ref().and_then(|o| o.forward) {
        Some(f) => f,
        None => {
            let mem = memory(caller)
                .ok_or_else(|| wasmtime::format_err!("missing required memory export"))?;
            let o = caller
                .data()
                .originals
                .as_ref()
                .ok_or_else(|| wasmtime::format_err!("the WASI shims are not set up"))?;
            let (module, [a, b, c]) = (o.trampoline.clone(), o.imports.clone());
            let instance = Instance::new(&mut *caller, &module, &[mem.into(), a, b, c])?;
            let mut funcs = Vec::with_capacity(3);
            for name in ["fd_filestat_get", "path_filestat_get", "fd_readdir"] {
                funcs.push(
                    instance
                        .get_func(&mut *caller, name)
                        .ok_or_else(|| wasmtime::format_err!("the trampoline has no `{name}`"))?,
                );
            }
            let funcs: [Func; 3] = funcs
                .try_into()
                .map_err(|_| wasmtime::format_err!("the trampoline has the wrong exports"))?;
            if let Some(o) = caller.data_mut().originals.as_mut() {
                o.forward = Some(funcs);
            }
            funcs
        }
    };
    let mut r = [Val::I32(0)];
    funcs[which].call(&mut *caller, args, &mut r)?;
    Ok(errno(&r))
}

/// Replaces `poll_oneoff`, `fd_filestat_get`, `path_filestat_get` and
/// `fd_readdir` in `linker` (which already has wasmtime-wasi's) with the
/// deterministic versions above. The originals are bound to `store`.
pub(crate) fn add_shims(
    linker: &mut Linker<State>,
    store: &mut Store<State>,
    trampoline: &Module,
) -> wasmtime::Result<()> {
    let imports = [
        original(linker, store, "fd_filestat_get")?.into(),
        original(linker, store, "path_filestat_get")?.into(),
        original(linker, store, "fd_readdir")?.into(),
    ];
    store.data_mut().originals = Some(Originals {
        trampoline: trampoline.clone(),
        imports,
        forward: None,
    });
    linker.allow_shadowing(true);

    linker.func_wrap(
        WASI,
        "poll_oneoff",
        |mut caller: Caller<'_, State>, subs: i32, events: i32, n: i32, out: i32| -> i32 {
            virtual_poll(&mut caller, subs, events, n, out)
        },
    )?;

    linker.func_wrap(
        WASI,
        "fd_filestat_get",
        |mut caller: Caller<'_, State>, fd: i32, buf: i32| -> wasmtime::Result<i32> {
            let e = forward(&mut caller, FD_FILESTAT_GET, &[Val::I32(fd), Val::I32(buf)])?;
            if e == ERRNO_SUCCESS {
                return Ok(scrub_filestat(&mut caller, buf));
            }
            Ok(e)
        },
    )?;

    linker.func_wrap(
        WASI,
        "path_filestat_get",
        |mut caller: Caller<'_, State>,
         fd: i32,
         flags: i32,
         path: i32,
         len: i32,
         buf: i32|
         -> wasmtime::Result<i32> {
            let args = [fd, flags, path, len, buf].map(Val::I32);
            let e = forward(&mut caller, PATH_FILESTAT_GET, &args)?;
            if e == ERRNO_SUCCESS {
                return Ok(scrub_filestat(&mut caller, buf));
            }
            Ok(e)
        },
    )?;

    linker.func_wrap(
        WASI,
        "fd_readdir",
        |mut caller: Caller<'_, State>,
         fd: i32,
         buf: i32,
         len: i32,
         cookie: i64,
         used: i32|
         -> wasmtime::Result<i32> {
            let args = [
                Val::I32(fd),
                Val::I32(buf),
                Val::I32(len),
                Val::I64(cookie),
                Val::I32(used),
            ];
            let e = forward(&mut caller, FD_READDIR, &args)?;
            if e == ERRNO_SUCCESS {
                return Ok(scrub_dirents(&mut caller, buf, used));
            }
            Ok(e)
        },
    )?;
    Ok(())
}

fn addr(ptr: i32) -> usize {
    // WASI pointers are unsigned 32-bit offsets.
    ptr as u32 as usize
}

/// `poll_oneoff` without waiting on the host. Descriptor subscriptions
/// (the module's files, stdin and stdout are all regular files or
/// buffers) are ready at once, with 0 bytes reported; if there are none,
/// the virtual clock jumps to the earliest clock deadline and the clock
/// subscriptions due by then fire. Deterministic, and never blocks the
/// host thread.
fn virtual_poll(caller: &mut Caller<'_, State>, subs: i32, events: i32, n: i32, out: i32) -> i32 {
    const ERRNO_INVAL: i32 = 28;
    let Some(n) = usize::try_from(n)
        .ok()
        .filter(|n| (1..=MAX_VIRTUAL_SUBSCRIPTIONS).contains(n))
    else {
        return ERRNO_INVAL;
    };
    let Some(mem) = memory(caller) else {
        return ERRNO_FAULT;
    };
    let mut raw = vec![0u8; n * SUBSCRIPTION_SIZE];
    if mem.read(&*caller, addr(subs), &mut raw).is_err() {
        return ERRNO_FAULT;
    }
    let clock = caller.data().clock.clone();
    let now = clock.now();
    // (userdata, type, deadline if a clock)
    let mut parsed = Vec::with_capacity(n);
    for sub in raw.chunks_exact(SUBSCRIPTION_SIZE) {
        let userdata = le_u64(&sub[0..8]);
        let tag = sub[8];
        if tag != 0 {
            parsed.push((userdata, tag, None));
            continue;
        }
        let id = u32::from_le_bytes([sub[16], sub[17], sub[18], sub[19]]);
        let timeout = le_u64(&sub[24..32]);
        let absolute = sub[40] & 1 == 1;
        let at = match (absolute, id) {
            (false, _) => now.saturating_add(timeout),
            // The realtime clock is the start time plus the counter.
            (true, 0) => {
                timeout.saturating_sub(WALL_CLOCK_START_SECS.saturating_mul(1_000_000_000))
            }
            (true, _) => timeout,
        };
        parsed.push((userdata, tag, Some(at)));
    }
    let any_fd = parsed.iter().any(|&(_, _, at)| at.is_none());
    let wake = if any_fd {
        now
    } else {
        let first = parsed
            .iter()
            .filter_map(|&(_, _, at)| at)
            .min()
            .unwrap_or(now);
        first.max(now)
    };
    clock.advance_to(wake);
    let mut written = 0u32;
    let mut ev = Vec::with_capacity(n * EVENT_SIZE);
    for (userdata, tag, at) in parsed {
        if at.is_some_and(|at| at > wake) {
            continue;
        }
        let mut e = [0u8; EVENT_SIZE];
        e[0..8].copy_from_slice(&userdata.to_le_bytes());
        // error 0 (bytes 8..10); type (byte 10) is the subscription's tag;
        // fd_readwrite.nbytes (16..24) and flags (24..26) stay 0.
        e[10] = tag;
        ev.extend_from_slice(&e);
        written += 1;
    }
    if mem.write(&mut *caller, addr(events), &ev).is_err()
        || mem
            .write(&mut *caller, addr(out), &written.to_le_bytes())
            .is_err()
    {
        return ERRNO_FAULT;
    }
    ERRNO_SUCCESS
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Zeroes the inode and the three timestamps of a `filestat` wasmtime-wasi
/// just wrote at `buf`.
fn scrub_filestat(caller: &mut Caller<'_, State>, buf: i32) -> i32 {
    let Some(mem) = memory(caller) else {
        return ERRNO_FAULT;
    };
    let base = addr(buf);
    let mut stat = [0u8; FILESTAT_SIZE];
    if mem.read(&*caller, base, &mut stat).is_err() {
        return ERRNO_FAULT;
    }
    // dev @0, ino @8, filetype @16, nlink @24, size @32, atim @40, mtim @48, ctim @56.
    stat[8..16].fill(0);
    stat[40..64].fill(0);
    if mem.write(&mut *caller, base, &stat).is_err() {
        return ERRNO_FAULT;
    }
    ERRNO_SUCCESS
}

/// Zeroes `d_ino` in the dirents wasmtime-wasi just wrote at `buf`
/// (`*used` bytes; the last entry may be cut short).
fn scrub_dirents(caller: &mut Caller<'_, State>, buf: i32, used: i32) -> i32 {
    let Some(mem) = memory(caller) else {
        return ERRNO_FAULT;
    };
    let mut n = [0u8; 4];
    if mem.read(&*caller, addr(used), &mut n).is_err() {
        return ERRNO_FAULT;
    }
    let used = u32::from_le_bytes(n) as usize;
    let mut raw = vec![0u8; used];
    if mem.read(&*caller, addr(buf), &mut raw).is_err() {
        return ERRNO_FAULT;
    }
    let mut at = 0usize;
    while at + 16 <= raw.len() {
        raw[at + 8..at + 16].fill(0);
        if at + DIRENT_HEADER > raw.len() {
            break;
        }
        let namlen = u32::from_le_bytes([raw[at + 16], raw[at + 17], raw[at + 18], raw[at + 19]]);
        at = at
            .saturating_add(DIRENT_HEADER)
            .saturating_add(namlen as usize);
    }
    if mem.write(&mut *caller, addr(buf), &raw).is_err() {
        return ERRNO_FAULT;
    }
    ERRNO_SUCCESS
}
