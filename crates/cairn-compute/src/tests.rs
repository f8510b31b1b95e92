//! Runs small WAT programs through the sandbox.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::*;

/// WASI imports and two helpers: `$write (fd ptr len)` and
/// `$print_u32 (fd n)` (decimal and a newline). Memory 0..16 is the iovec,
/// 990..1001 the digits; programs use 16.. for their own small things and
/// 2048.. for buffers.
fn module(extra_imports: &str, body: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  {extra_imports}
  (memory (export "memory") 1)
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func $print_u32 (param $fd i32) (param $n i32)
    (local $p i32)
    (local.set $p (i32.const 1000))
    (i32.store8 (i32.const 1000) (i32.const 10))
    (loop $l
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $l (local.get $n)))
    (call $write (local.get $fd) (local.get $p) (i32.sub (i32.const 1001) (local.get $p))))
  {body}
)"#
    );
    wat::parse_str(&text).expect("test WAT parses")
}

/// `path_open` in directory fd `dir` with `oflags` (1 create, 8 truncate),
/// all rights; the new fd lands at address 16. Returns the errno.
const OPEN: &str = r#"
  (func $open (param $dir i32) (param $path i32) (param $len i32) (param $oflags i32) (param $follow i32) (result i32)
    (call $path_open (local.get $dir) (local.get $follow) (local.get $path) (local.get $len) (local.get $oflags)
      (i64.const 0x1FFFFFFF) (i64.const 0x1FFFFFFF) (i32.const 0) (i32.const 16)))
"#;

const INFINITE: &str = r#"(func (export "_start") (loop $l (br $l)))"#;

fn sandbox() -> Sandbox {
    Sandbox::new().expect("sandbox")
}

fn spec(dir: &Path) -> RunSpec {
    RunSpec {
        program_name: "prog".into(),
        args: Vec::new(),
        env: Vec::new(),
        stdin: None,
        work_dir: dir.join("work"),
        memory_bytes: 16 << 20,
        fuel: None,
        wall_secs: 60,
        resume: None,
        seed: [7; 32],
        output_dir: false,
        max_output_bytes: 1 << 20,
        cancel: Arc::new(AtomicBool::new(false)),
    }
}

fn no_checkpoints() -> impl FnMut(&Path) -> bool + Send {
    |_: &Path| false
}

fn run(wasm: &[u8], spec: RunSpec) -> Result<RunOutput, RunError> {
    let sb = sandbox();
    let program = sb.compile(wasm).expect("compiles");
    sb.run(&program, spec, &mut no_checkpoints())
}

/// The output hash, computed here without the crate's code.
fn expected_hash(stdout: &[u8], files: &[(&str, &[u8])]) -> OutputHash {
    let mut h = blake3::Hasher::new_derive_key("cairn v1 compute output");
    h.update(&(stdout.len() as u64).to_le_bytes());
    h.update(stdout);
    for (name, content) in files {
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(&(content.len() as u64).to_le_bytes());
        h.update(content);
    }
    OutputHash(*h.finalize().as_bytes())
}

#[test]
fn echo_upper_cases_stdin_and_hashes_stdout() {
    let wasm = module(
        "",
        r#"(func (export "_start")
          (local $n i32) (local $i i32) (local $b i32)
          (block $eof
            (loop $more
              (i32.store (i32.const 16) (i32.const 2048))
              (i32.store (i32.const 20) (i32.const 4096))
              (drop (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24)))
              (local.set $n (i32.load (i32.const 24)))
              (br_if $eof (i32.eqz (local.get $n)))
              (local.set $i (i32.const 0))
              (loop $each
                (local.set $b (i32.load8_u (i32.add (i32.const 2048) (local.get $i))))
                (if (i32.and (i32.ge_u (local.get $b) (i32.const 97)) (i32.le_u (local.get $b) (i32.const 122)))
                  (then (i32.store8 (i32.add (i32.const 2048) (local.get $i)) (i32.sub (local.get $b) (i32.const 32)))))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br_if $each (i32.lt_u (local.get $i) (local.get $n))))
              (call $write (i32.const 1) (i32.const 2048) (local.get $n))
              (br $more))))"#,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let input: Vec<u8> = (0..20_000u32)
        .map(|i| b"hello, Cairn! 0123 xyz\n"[i as usize % 23])
        .collect();
    let stdin = dir.path().join("stdin");
    std::fs::write(&stdin, &input).expect("write stdin");
    let mut s = spec(dir.path());
    s.stdin = Some(stdin);
    let out = run(&wasm, s).expect("runs");
    let stdout = std::fs::read(&out.stdout).expect("stdout");
    assert_eq!(stdout, input.to_ascii_uppercase());
    assert_eq!(out.stdout, dir.path().join("work/stdout"));
    assert!(out.files.is_empty());
    assert_eq!(out.hash, expected_hash(&stdout, &[]));
    assert_eq!(
        output_hash(&out.stdout, &[]).expect("hash"),
        expected_hash(&stdout, &[])
    );
    assert!(out.fuel_used > 20_000, "fuel used {}", out.fuel_used);
    assert_eq!(out.checkpoints, 0);
}

#[test]
fn no_stdin_reads_as_empty() {
    let wasm = module(
        "",
        r#"(func (export "_start")
          (i32.store (i32.const 16) (i32.const 2048))
          (i32.store (i32.const 20) (i32.const 100))
          (i32.store (i32.const 24) (i32.const 77))
          (call $proc_exit (i32.add (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24))
            (i32.load (i32.const 24)))))"#,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    run(&wasm, spec(dir.path())).expect("errno 0 and 0 bytes read");
}

#[test]
fn args_and_env_are_exactly_the_specs() {
    let wasm = module(
        r#"(import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
           (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
           (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
           (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))"#,
        r#"(func (export "_start")
          (drop (call $args_sizes_get (i32.const 16) (i32.const 20)))
          (drop (call $args_get (i32.const 2048) (i32.const 4096)))
          (call $write (i32.const 1) (i32.const 4096) (i32.load (i32.const 20)))
          (drop (call $environ_sizes_get (i32.const 16) (i32.const 20)))
          (drop (call $environ_get (i32.const 2048) (i32.const 8192)))
          (call $write (i32.const 1) (i32.const 8192) (i32.load (i32.const 20))))"#,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = spec(dir.path());
    s.args = vec!["one".into(), "two words".into()];
    s.env = vec![("A".into(), "1".into()), ("B".into(), "x y".into())];
    let out = run(&wasm, s).expect("runs");
    let stdout = std::fs::read(&out.stdout).expect("stdout");
    assert_eq!(stdout, b"prog\0one\0two words\0A=1\0B=x y\0");
}

#[test]
fn proc_exit_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exit = |code: i32| {
        module(
            "",
            &format!(r#"(func (export "_start") (call $proc_exit (i32.const {code})))"#),
        )
    };
    let sb = sandbox();
    for (i, code) in [0, 1, 7, 255].into_iter().enumerate() {
        let program = sb.compile(&exit(code)).expect("compiles");
        let r = sb.run(
            &program,
            spec(&dir.path().join(i.to_string())),
            &mut no_checkpoints(),
        );
        match code {
            0 => assert!(r.is_ok(), "{r:?}"),
            // WASI's range is [0, 126): wasmtime-wasi refuses the rest, a
            // deterministic failure of the module.
            255 => match r {
                Err(RunError::Trap { message }) => {
                    assert!(
                        message.starts_with("exit with invalid exit status"),
                        "{message}"
                    );
                    assert!(!message.contains('\n'), "{message}");
                }
                r => panic!("expected a trap, got {r:?}"),
            },
            c => assert_eq!(r.err(), Some(RunError::Exit { code: c })),
        }
    }
}

#[test]
fn traps_are_reported_with_their_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unreachable = module("", r#"(func $boom (export "_start") unreachable)"#);
    match run(&unreachable, spec(&dir.path().join("a"))) {
        Err(RunError::Trap { message }) => {
            assert!(message.contains("unreachable"), "{message}");
            assert!(message.contains("boom"), "{message}");
        }
        r => panic!("expected a trap, got {r:?}"),
    }
    let div = module(
        "",
        r#"(func (export "_start")
          (drop (i32.div_u (i32.const 1) (i32.load (i32.const 2048)))))"#,
    );
    match run(&div, spec(&dir.path().join("b"))) {
        Err(RunError::Trap { message }) => {
            assert!(message.contains("divide by zero"), "{message}")
        }
        r => panic!("expected a trap, got {r:?}"),
    }
}

#[test]
fn fuel_stops_an_infinite_loop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = spec(dir.path());
    s.fuel = Some(1_000_000);
    let started = Instant::now();
    assert_eq!(
        run(&module("", INFINITE), s).err(),
        Some(RunError::OutOfFuel)
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn wall_time_stops_an_infinite_loop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = spec(dir.path());
    s.wall_secs = 1;
    let started = Instant::now();
    assert_eq!(
        run(&module("", INFINITE), s).err(),
        Some(RunError::TimeLimit)
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

#[test]
fn cancel_stops_a_run_at_the_next_tick() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = spec(dir.path());
    let cancel = s.cancel.clone();
    let setter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        cancel.store(true, Ordering::Relaxed);
    });
    let started = Instant::now();
    let r = run(&module("", INFINITE), s);
    let took = started.elapsed();
    setter.join().expect("setter");
    assert_eq!(
        r.err(),
        Some(RunError::Other {
            message: "cancelled".into()
        })
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn memory_beyond_the_limit_is_out_of_memory() {
    let wasm = module(
        "",
        r#"(func (export "_start")
          (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then (call $proc_exit (i32.const 3))))
          (drop (memory.grow (i32.const 100)))
          (call $proc_exit (i32.const 4)))"#,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = spec(dir.path());
    s.memory_bytes = 4 * 65536;
    assert_eq!(run(&wasm, s).err(), Some(RunError::OutOfMemory));
    // Within the limit the same module gets its pages and exits 4.
    let mut s = spec(&dir.path().join("big"));
    s.memory_bytes = 200 * 65536;
    assert_eq!(run(&wasm, s).err(), Some(RunError::Exit { code: 4 }));
}

#[test]
fn stdout_beyond_the_output_limit_fails_the_run() {
    let wasm = module(
        "",
        r#"(data (i32.const 64) "0123456789")
        (func (export "_start") (local $i i32)
          (loop $l
            (call $write (i32.const 1) (i32.const 64) (i32.const 10))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br_if $l (i32.lt_u (local.get $i) (i32.const 1000)))))"#,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = spec(dir.path());
    s.max_output_bytes = 5_000;
    match run(&wasm, s) {
        Err(RunError::Other { message }) => assert!(message.contains("output"), "{message}"),
        r => panic!("expected an output error, got {r:?}"),
    }
    let stdout = std::fs::metadata(dir.path().join("work/stdout")).expect("stdout");
    assert!(stdout.len() <= 5_000);
    // With room, the same program succeeds.
    let mut s = spec(&dir.path().join("roomy"));
    s.max_output_bytes = 10_000;
    let out = run(&wasm, s).expect("runs");
    assert_eq!(std::fs::read(&out.stdout).expect("stdout").len(), 10_000);
}

#[test]
fn the_module_cannot_leave_scratch() {
    let wasm = module(
        r#"(import "wasi_snapshot_preview1" "path_create_directory" (func $mkdir (param i32 i32 i32) (result i32)))
           (import "wasi_snapshot_preview1" "path_symlink" (func $symlink (param i32 i32 i32 i32 i32) (result i32)))"#,
        &format!(
            r#"{OPEN}
        (data (i32.const 64) "../escape")
        (data (i32.const 80) "/etc/passwd")
        (data (i32.const 96) "a/../../escape2")
        (data (i32.const 128) "inside")
        (data (i32.const 144) "/etc")
        (data (i32.const 160) "link")
        (data (i32.const 176) "link/passwd")
        (data (i32.const 192) "a")
        (func (export "_start")
          (drop (call $mkdir (i32.const 3) (i32.const 192) (i32.const 1)))
          (if (i32.eqz (call $open (i32.const 3) (i32.const 64) (i32.const 9) (i32.const 1) (i32.const 0)))
            (then (call $proc_exit (i32.const 10))))
          (if (i32.eqz (call $open (i32.const 3) (i32.const 80) (i32.const 11) (i32.const 0) (i32.const 0)))
            (then (call $proc_exit (i32.const 11))))
          (if (i32.eqz (call $open (i32.const 3) (i32.const 96) (i32.const 15) (i32.const 1) (i32.const 0)))
            (then (call $proc_exit (i32.const 12))))
          (if (call $open (i32.const 3) (i32.const 128) (i32.const 6) (i32.const 1) (i32.const 0))
            (then (call $proc_exit (i32.const 13))))
          (drop (call $symlink (i32.const 144) (i32.const 4) (i32.const 3) (i32.const 160) (i32.const 4)))
          (if (i32.eqz (call $open (i32.const 3) (i32.const 176) (i32.const 11) (i32.const 0) (i32.const 1)))
            (then (call $proc_exit (i32.const 14))))
          (call $proc_exit (i32.const 42)))"#
        ),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    // 42: every escape failed and the file inside was created.
    assert_eq!(
        run(&wasm, spec(dir.path())).err(),
        Some(RunError::Exit { code: 42 })
    );
    assert!(dir.path().join("work/scratch/inside").is_file());
    assert!(!dir.path().join("work/escape").exists());
    assert!(!dir.path().join("work/escape2").exists());
}

/// Reads both clocks, sleeps 10 s, reads the monotonic clock again, draws
/// 32 random bytes and stats a file it made; prints it all raw.
fn clocks_and_random() -> Vec<u8> {
    module(
        r#"(import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
           (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
           (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
           (import "wasi_snapshot_preview1" "fd_filestat_get" (func $fstat (param i32 i32) (result i32)))"#,
        &format!(
            r#"{OPEN}
        (data (i32.const 64) "f")
        (func (export "_start")
          (drop (call $clock (i32.const 0) (i64.const 1) (i32.const 2048)))
          (drop (call $clock (i32.const 1) (i64.const 1) (i32.const 2056)))
          (drop (call $random (i32.const 2064) (i32.const 32)))
          (i64.store (i32.const 3000) (i64.const 7))
          (i32.store8 (i32.const 3008) (i32.const 0))
          (i32.store (i32.const 3016) (i32.const 1))
          (i64.store (i32.const 3024) (i64.const 10000000000))
          (i32.store (i32.const 2096) (call $poll (i32.const 3000) (i32.const 2104) (i32.const 1) (i32.const 2100)))
          (drop (call $clock (i32.const 1) (i64.const 1) (i32.const 2136)))
          (if (call $open (i32.const 3) (i32.const 64) (i32.const 1) (i32.const 1) (i32.const 0))
            (then (call $proc_exit (i32.const 30))))
          (call $write (i32.load (i32.const 16)) (i32.const 64) (i32.const 1))
          (drop (call $fstat (i32.load (i32.const 16)) (i32.const 2144)))
          (call $write (i32.const 1) (i32.const 2048) (i32.const 160)))"#
        ),
    )
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[test]
fn clocks_and_random_are_deterministic() {
    let wasm = clocks_and_random();
    let dir = tempfile::tempdir().expect("tempdir");
    let sb = sandbox();
    let program = sb.compile(&wasm).expect("compiles");
    let go = |name: &str, seed: u8| {
        let mut s = spec(&dir.path().join(name));
        s.seed = [seed; 32];
        let started = Instant::now();
        let out = sb.run(&program, s, &mut no_checkpoints()).expect("runs");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the 10 s sleep was real"
        );
        let stdout = std::fs::read(&out.stdout).expect("stdout");
        (out, stdout)
    };
    let (a, sa) = go("a", 1);
    std::thread::sleep(Duration::from_millis(20));
    let (b, sb_) = go("b", 1);
    let (c, sc) = go("c", 2);
    assert_eq!(sa.len(), 160);
    // Realtime: the epoch plus one step; monotonic: the second step.
    assert_eq!(
        u64_at(&sa, 0),
        WALL_CLOCK_START_SECS * 1_000_000_000 + CLOCK_STEP_NS
    );
    assert_eq!(u64_at(&sa, 8), 2 * CLOCK_STEP_NS);
    // The sleep returned at once, fired its one event (userdata 7), and
    // moved the clock past its deadline.
    assert_eq!(u32::from_le_bytes(sa[48..52].try_into().expect("4")), 0);
    assert_eq!(u32::from_le_bytes(sa[52..56].try_into().expect("4")), 1);
    assert_eq!(u64_at(&sa, 56), 7);
    assert!(u64_at(&sa, 88) >= 10_000_000_000 + 2 * CLOCK_STEP_NS);
    // The stat: no inode, no times, but the size.
    let stat = &sa[96..160];
    assert_eq!(u64_at(stat, 8), 0, "inode");
    assert_eq!(u64_at(stat, 32), 1, "size");
    assert_eq!(&stat[40..64], &[0; 24], "times");
    // Same seed, same everything; another seed, other random bytes.
    assert_eq!(sa, sb_);
    assert_eq!(a.hash, b.hash);
    assert_eq!(a.fuel_used, b.fuel_used);
    assert_ne!(sa[16..48], sc[16..48]);
    assert_ne!(a.hash, c.hash);
}

/// Counts to `n`, a costly step at a time; every `k` steps writes the
/// counter to /scratch/checkpoint and calls `cairn.checkpoint`. Starts from
/// the checkpoint file if there is one (and says so on stderr). Prints
/// "done <n>".
fn counter(n: u32, k: u32) -> Vec<u8> {
    module(
        r#"(import "cairn" "checkpoint" (func $checkpoint (result i32)))"#,
        &format!(
            r#"{OPEN}
        (data (i32.const 64) "checkpoint")
        (data (i32.const 80) "done ")
        (data (i32.const 96) "start ")
        (global $counter (mut i32) (i32.const 0))
        (func $load
          (if (i32.eqz (call $open (i32.const 3) (i32.const 64) (i32.const 10) (i32.const 0) (i32.const 0)))
            (then
              (i32.store (i32.const 32) (i32.const 40))
              (i32.store (i32.const 36) (i32.const 4))
              (drop (call $fd_read (i32.load (i32.const 16)) (i32.const 32) (i32.const 1) (i32.const 48)))
              (if (i32.eq (i32.load (i32.const 48)) (i32.const 4))
                (then (global.set $counter (i32.load (i32.const 40)))))
              (drop (call $fd_close (i32.load (i32.const 16)))))))
        (func $save
          (if (call $open (i32.const 3) (i32.const 64) (i32.const 10) (i32.const 9) (i32.const 0))
            (then (call $proc_exit (i32.const 20))))
          (i32.store (i32.const 40) (global.get $counter))
          (call $write (i32.load (i32.const 16)) (i32.const 40) (i32.const 4))
          (drop (call $fd_close (i32.load (i32.const 16)))))
        (func $work (local $i i32)
          (local.set $i (i32.const 5000000))
          (loop $l
            (local.set $i (i32.sub (local.get $i) (i32.const 1)))
            (br_if $l (local.get $i))))
        (func (export "_start")
          (call $load)
          (call $write (i32.const 2) (i32.const 96) (i32.const 6))
          (call $print_u32 (i32.const 2) (global.get $counter))
          (block $done
            (loop $step
              (br_if $done (i32.ge_u (global.get $counter) (i32.const {n})))
              (call $work)
              (global.set $counter (i32.add (global.get $counter) (i32.const 1)))
              (if (i32.eqz (i32.rem_u (global.get $counter) (i32.const {k})))
                (then
                  (call $save)
                  (if (call $checkpoint) (then (call $proc_exit (i32.const 21))))))
              (br $step)))
          (call $write (i32.const 1) (i32.const 80) (i32.const 5))
          (call $print_u32 (i32.const 1) (global.get $counter)))"#
        ),
    )
}

#[test]
fn a_checkpointed_run_resumes_where_it_stopped() {
    let sb = sandbox();
    let program = sb.compile(&counter(12, 3)).expect("compiles");
    let dir = tempfile::tempdir().expect("tempdir");

    // Uninterrupted.
    let mut calls = 0u32;
    let whole = sb
        .run(
            &program,
            spec(&dir.path().join("whole")),
            &mut |p: &Path| {
                calls += 1;
                assert_eq!(std::fs::read(p).expect("copy"), (calls * 3).to_le_bytes());
                true
            },
        )
        .expect("runs");
    assert_eq!(whole.checkpoints, 4);
    assert_eq!(std::fs::read(&whole.stdout).expect("stdout"), b"done 12\n");
    assert_eq!(
        std::fs::read(dir.path().join("whole/work/stderr")).expect("stderr"),
        b"start 0\n"
    );
    // Only the last kept copy stays.
    assert!(dir.path().join("whole/work/checkpoints/4").is_file());
    assert!(!dir.path().join("whole/work/checkpoints/3").exists());

    // Cancelled after its second checkpoint.
    let s = spec(&dir.path().join("first"));
    let cancel = s.cancel.clone();
    let mut kept: Vec<PathBuf> = Vec::new();
    let r = sb.run(&program, s, &mut |p: &Path| {
        kept.push(p.to_path_buf());
        if kept.len() == 2 {
            cancel.store(true, Ordering::Relaxed);
            // Let the epoch tick so the module stops right after this call.
            std::thread::sleep(3 * EPOCH_TICK);
        }
        true
    });
    assert_eq!(
        r.err(),
        Some(RunError::Other {
            message: "cancelled".into()
        })
    );
    assert_eq!(kept.len(), 2);
    let last = kept.pop().expect("a checkpoint");
    assert_eq!(
        std::fs::read(&last).expect("checkpoint"),
        6u32.to_le_bytes()
    );

    // Resumed from it.
    let mut s = spec(&dir.path().join("second"));
    s.resume = Some(last);
    let resumed = sb.run(&program, s, &mut |_: &Path| true).expect("runs");
    assert_eq!(
        std::fs::read(dir.path().join("second/work/stderr")).expect("stderr"),
        b"start 6\n"
    );
    assert_eq!(
        std::fs::read(&resumed.stdout).expect("stdout"),
        std::fs::read(&whole.stdout).expect("stdout")
    );
    assert_eq!(resumed.hash, whole.hash);
    assert_eq!(resumed.checkpoints, 2);
    assert!(
        resumed.fuel_used < whole.fuel_used * 6 / 10,
        "{} vs {}",
        resumed.fuel_used,
        whole.fuel_used
    );
}

#[test]
fn a_checkpoint_not_kept_returns_1_to_the_module() {
    let sb = sandbox();
    let program = sb.compile(&counter(3, 3)).expect("compiles");
    let dir = tempfile::tempdir().expect("tempdir");
    let r = sb.run(&program, spec(dir.path()), &mut |_: &Path| false);
    assert_eq!(r.err(), Some(RunError::Exit { code: 21 }));
    assert!(!dir.path().join("work/checkpoints/1").exists());
}

fn writes_outputs() -> Vec<u8> {
    module(
        r#"(import "wasi_snapshot_preview1" "path_create_directory" (func $mkdir (param i32 i32 i32) (result i32)))"#,
        &format!(
            r#"{OPEN}
        (data (i32.const 64) "b.txt")
        (data (i32.const 72) "a.txt")
        (data (i32.const 80) "sub")
        (data (i32.const 88) "sub/c")
        (data (i32.const 96) "bee")
        (data (i32.const 100) "ay")
        (data (i32.const 104) "see")
        (data (i32.const 108) "hi")
        (func $put (param $path i32) (param $len i32) (param $data i32) (param $dlen i32)
          (if (call $open (i32.const 4) (local.get $path) (local.get $len) (i32.const 9) (i32.const 0))
            (then (call $proc_exit (i32.const 40))))
          (call $write (i32.load (i32.const 16)) (local.get $data) (local.get $dlen))
          (drop (call $fd_close (i32.load (i32.const 16)))))
        (func (export "_start")
          (call $put (i32.const 64) (i32.const 5) (i32.const 96) (i32.const 3))
          (call $put (i32.const 72) (i32.const 5) (i32.const 100) (i32.const 2))
          (drop (call $mkdir (i32.const 4) (i32.const 80) (i32.const 3)))
          (call $put (i32.const 88) (i32.const 5) (i32.const 104) (i32.const 3))
          (call $write (i32.const 1) (i32.const 108) (i32.const 2)))"#
        ),
    )
}

#[test]
fn output_files_are_collected_sorted_and_hashed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = spec(dir.path());
    s.output_dir = true;
    let out = run(&writes_outputs(), s).expect("runs");
    let names: Vec<&str> = out.files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a.txt", "b.txt", "sub/c"]);
    assert_eq!(out.files[2].1, dir.path().join("work/out/sub/c"));
    assert_eq!(
        out.hash,
        expected_hash(
            b"hi",
            &[("a.txt", b"ay"), ("b.txt", b"bee"), ("sub/c", b"see")]
        )
    );

    // 2 bytes of stdout and 8 of files: over a limit of 9.
    let mut s = spec(&dir.path().join("tight"));
    s.output_dir = true;
    s.max_output_bytes = 9;
    match run(&writes_outputs(), s) {
        Err(RunError::Other { message }) => assert!(message.contains("10 bytes"), "{message}"),
        r => panic!("expected an output error, got {r:?}"),
    }

    // Without the output dir, /out does not exist for the module.
    assert_eq!(
        run(&writes_outputs(), spec(&dir.path().join("none"))).err(),
        Some(RunError::Exit { code: 40 })
    );
}

#[test]
fn foreign_imports_are_refused_at_compile() {
    let sb = sandbox();
    let wasm = wat::parse_str(
        r#"(module (import "env" "foo" (func)) (memory (export "memory") 1) (func (export "_start")))"#,
    )
    .expect("wat");
    match sb.compile(&wasm) {
        Err(RunError::Other { message }) => {
            assert!(
                message.contains("`env` `foo`") && message.contains("only WASI"),
                "{message}"
            )
        }
        r => panic!("expected a refusal, got {:?}", r.map(|_| ())),
    }
    // A WASI name with the wrong type.
    let wasm = wat::parse_str(
        r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func (param i64))) (func (export "_start")))"#,
    )
    .expect("wat");
    assert!(matches!(sb.compile(&wasm), Err(RunError::Other { .. })));
    // Not WebAssembly at all; no `_start`.
    match sb.compile(b"not wasm") {
        Err(RunError::Other { message }) => assert!(message.contains("not valid"), "{message}"),
        r => panic!("expected a refusal, got {:?}", r.map(|_| ())),
    }
    let wasm = wat::parse_str("(module)").expect("wat");
    assert!(matches!(sb.compile(&wasm), Err(RunError::Other { .. })));
}

#[test]
fn sandbox_and_program_are_shareable() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<Sandbox>();
    shareable::<Program>();
}

#[test]
fn the_trampoline_binary_is_its_text() {
    assert_eq!(
        wat::parse_str(crate::virt::TRAMPOLINE_WAT).expect("wat"),
        crate::virt::TRAMPOLINE_WASM
    );
}
