//! Distributed compute end to end: `cairn job submit/status/results/cancel`
//! against a devnet whose nodes offer compute, with real WebAssembly
//! modules (written in WAT) run by the providers' sandboxes.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::{Devnet, Node, cairn, get_json, ok, stderr};

/// Upper-cases stdin to stdout, 4 KiB at a time.
const UPPER: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (local $n i32) (local $i i32) (local $c i32)
    (loop $read
      (i32.store (i32.const 0) (i32.const 1024))
      (i32.store (i32.const 4) (i32.const 4096))
      (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 16)) (then unreachable))
      (local.set $n (i32.load (i32.const 16)))
      (if (i32.eqz (local.get $n)) (then return))
      (local.set $i (i32.const 0))
      (loop $up
        (local.set $c (i32.load8_u (i32.add (i32.const 1024) (local.get $i))))
        (if (i32.and (i32.ge_u (local.get $c) (i32.const 97)) (i32.le_u (local.get $c) (i32.const 122)))
          (then (i32.store8 (i32.add (i32.const 1024) (local.get $i)) (i32.sub (local.get $c) (i32.const 32)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $up (i32.lt_u (local.get $i) (local.get $n))))
      (i32.store (i32.const 0) (i32.const 1024))
      (i32.store (i32.const 4) (local.get $n))
      (if (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)) (then unreachable))
      (br $read))))
"#;

/// By its first argument: `trap` traps, `spin` loops forever, `exit`
/// exits with code 3, `file` writes `ok` to /out/result.txt (fd 4; fd 3
/// is /scratch), `memory` grows its memory by 64 MiB, anything else
/// prints `ok`.
const MODE: &str = r#"
(module
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 900) "ok\n")
  (data (i32.const 950) "result.txt")
  (func (export "_start")
    (local $c i32)
    (drop (call $sizes (i32.const 0) (i32.const 4)))
    (if (i32.lt_u (i32.load (i32.const 0)) (i32.const 2)) (then unreachable))
    (drop (call $args (i32.const 100) (i32.const 200)))
    (local.set $c (i32.load8_u (i32.load (i32.const 104))))
    (if (i32.eq (local.get $c) (i32.const 116)) (then unreachable))
    (if (i32.eq (local.get $c) (i32.const 115)) (then (loop $forever (br $forever))))
    (if (i32.eq (local.get $c) (i32.const 101)) (then (call $exit (i32.const 3))))
    (if (i32.eq (local.get $c) (i32.const 109)) (then (drop (memory.grow (i32.const 1024)))))
    (i32.store (i32.const 0) (i32.const 900))
    (if (i32.eq (local.get $c) (i32.const 102))
      (then
        (if (call $path_open (i32.const 4) (i32.const 0) (i32.const 950) (i32.const 10) (i32.const 9)
              (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0) (i32.const 500))
          (then unreachable))
        (i32.store (i32.const 4) (i32.const 3))
        (drop (call $fd_write (i32.load (i32.const 500)) (i32.const 0) (i32.const 1) (i32.const 16)))
        (return)))
    (i32.store (i32.const 4) (i32.const 3))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))))
"#;

/// Counts steps 0..STEPS, burning CPU in each; after every step it writes
/// its counter to /scratch/checkpoint and calls `cairn.checkpoint`. It
/// starts from the checkpoint file if there is one. Its stdout is 8 bytes:
/// the step it started from and the step it ended at (u32 LE each).
const COUNT: &str = r#"
(module
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "cairn" "checkpoint" (func $checkpoint (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 300) "checkpoint")
  (global $steps i32 (i32.const STEPS))
  (global $work i32 (i32.const WORK))
  ;; Opens /scratch/checkpoint (fd 3 is /scratch) with `oflags`; -1 if it cannot.
  (func $open (param $oflags i32) (result i32)
    (if (call $path_open (i32.const 3) (i32.const 0) (i32.const 300) (i32.const 10)
          (local.get $oflags) (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0) (i32.const 500))
      (then (return (i32.const -1))))
    (i32.load (i32.const 500)))
  ;; iovec at 0 over [ptr, ptr+4)
  (func $io (param $ptr i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (i32.const 4)))
  (func (export "_start")
    (local $fd i32) (local $i i32) (local $j i32) (local $acc i32)
    ;; resume: counter at 400 from the checkpoint, else 0
    (i32.store (i32.const 400) (i32.const 0))
    (local.set $fd (call $open (i32.const 0)))
    (if (i32.ge_s (local.get $fd) (i32.const 0))
      (then
        (call $io (i32.const 400))
        (drop (call $fd_read (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 16)))
        (drop (call $fd_close (local.get $fd)))))
    (i32.store (i32.const 404) (i32.load (i32.const 400)))
    (local.set $i (i32.load (i32.const 400)))
    (block $done
      (loop $step
        (br_if $done (i32.ge_u (local.get $i) (global.get $steps)))
        (local.set $j (i32.const 0))
        (loop $burn
          (local.set $acc (i32.add (local.get $acc) (local.get $j)))
          (local.set $j (i32.add (local.get $j) (i32.const 1)))
          (br_if $burn (i32.lt_u (local.get $j) (global.get $work))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (i32.store (i32.const 400) (local.get $i))
        ;; write the checkpoint: O_CREAT|O_TRUNC
        (local.set $fd (call $open (i32.const 9)))
        (if (i32.lt_s (local.get $fd) (i32.const 0)) (then unreachable))
        (call $io (i32.const 400))
        (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 16)))
        (drop (call $fd_close (local.get $fd)))
        (drop (call $checkpoint))
        (br $step)))
    (i32.store (i32.const 408) (local.get $i))
    (i32.store (i32.const 0) (i32.const 404))
    (i32.store (i32.const 4) (i32.const 8))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))
    ;; keep $acc alive so the loop is not optimised away
    (if (i32.eq (local.get $acc) (i32.const 7)) (then (drop (call $checkpoint))))))
"#;

fn write_wasm(dir: &Path, name: &str, wat: &str) {
    let bytes = wat::parse_str(wat).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// Submits a job file; returns the job id.
fn submit(api: &str, job: &Path) -> String {
    let id = ok(cairn(api, &["job", "submit", job.to_str().unwrap()]))
        .trim()
        .to_string();
    assert_eq!(id.len(), 64, "a job id: {id}");
    id
}

/// Writes every unit's output of job `id` under `out`.
fn results(api: &str, id: &str, out: &Path) {
    ok(cairn(
        api,
        &["job", "results", id, "-o", out.to_str().unwrap()],
    ));
}

fn status(api: &str, id: &str) -> serde_json::Value {
    serde_json::from_str(&ok(cairn(api, &["job", "status", id, "--json"]))).unwrap()
}

/// Polls the job until `done(status)` or the deadline; returns the last status.
fn wait_for(
    api: &str,
    id: &str,
    secs: u64,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = status(api, id);
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "job did not get there: {s:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn unit<'a>(s: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    s["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == name)
        .unwrap_or_else(|| panic!("no unit {name} in {s:#}"))
}

#[test]
fn a_job_runs_on_two_providers_per_unit_and_its_results_come_back() {
    let net = Devnet::start(5, "1GiB");
    let api = net.api(0);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    write_wasm(dir, "upper.wasm", UPPER);
    std::fs::create_dir(dir.join("data")).unwrap();
    let inputs = [
        ("a", "hello, cairn\n".to_string()),
        ("b", "the quick brown fox\n".repeat(3000)),
        ("c", String::new()),
    ];
    let mut toml = String::from(
        "module = \"upper.wasm\"\nquorum = 2\nmax_attempts = 3\ndeadline = \"2m\"\nmemory = \"16MiB\"\n",
    );
    for (name, text) in &inputs {
        std::fs::write(dir.join(format!("data/{name}.txt")), text).unwrap();
        toml.push_str(&format!(
            "[[unit]]\nname = \"{name}\"\nstdin = \"data/{name}.txt\"\n"
        ));
    }
    std::fs::write(dir.join("job.toml"), toml).unwrap();
    let id = submit(api, &dir.join("job.toml"));
    assert_eq!(id.len(), 64, "a job id: {id}");

    let s = wait_for(api, &id, 120, |s| s["state"] != "running");
    assert_eq!(s["state"], "done", "{s:#}");
    for (name, _) in &inputs {
        let u = unit(&s, name);
        assert_eq!(u["state"], "done");
        // Quorum 2: two distinct providers ran it and agreed.
        let providers = u["providers"].as_array().unwrap();
        assert!(providers.len() >= 2, "{u:#}");
        assert_ne!(providers[0], providers[1]);
        assert!(u["results"].as_u64().unwrap() >= 2, "{u:#}");
        assert!(
            u["fuel_used"].as_u64().unwrap() > 0,
            "fuel is counted: {u:#}"
        );
        // Providers are shown as the peer ids users see elsewhere.
        let peers: Vec<&str> = net.nodes.iter().map(|n| n.peer_id.as_str()).collect();
        assert!(
            providers
                .iter()
                .all(|p| peers.contains(&p.as_str().unwrap())),
            "{u:#}"
        );
    }

    let out = dir.join("out");
    results(api, &id, &out);
    for (name, text) in &inputs {
        let got = std::fs::read_to_string(out.join(format!("{name}.out"))).unwrap();
        assert_eq!(got, text.to_uppercase(), "unit {name}");
    }
    // The README's example job gives its inputs back upper-cased.
    let example = example_dir();
    let id = submit(api, &example.join("job.toml"));
    let s = wait_for(api, &id, 120, |s| s["state"] != "running");
    assert_eq!(s["state"], "done", "{s:#}");
    let out = dir.join("example-out");
    results(api, &id, &out);
    for name in ["greeting", "pangram", "empty"] {
        let input = std::fs::read_to_string(example.join(format!("data/{name}.txt"))).unwrap();
        let got = std::fs::read_to_string(out.join(format!("{name}.out"))).unwrap();
        assert_eq!(got, input.to_uppercase(), "example unit {name}");
    }
    // The human status names every unit and its state.
    let human = ok(cairn(api, &["job", "status", &id]));
    assert!(
        human
            .lines()
            .any(|l| l.starts_with("greeting ") && l.contains("done")),
        "{human}"
    );
}

/// The example job of the README.
fn example_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/jobs/upper")
}

#[test]
fn the_example_module_is_its_source_compiled() {
    let dir = example_dir();
    let compiled = wat::parse_file(dir.join("upper.wat")).unwrap();
    if std::env::var_os("CAIRN_BLESS").is_some() {
        std::fs::write(dir.join("upper.wasm"), &compiled).unwrap();
    }
    let stored = std::fs::read(dir.join("upper.wasm")).unwrap();
    assert_eq!(
        stored, compiled,
        "examples/jobs/upper/upper.wasm is stale: rerun this test with CAIRN_BLESS=1"
    );
    // The test's own copy is the same program.
    assert_eq!(wat::parse_str(UPPER).unwrap(), compiled);
}

#[test]
fn failing_units_get_their_own_errors_and_the_others_finish() {
    let net = Devnet::start(4, "1GiB");
    let api = net.api(0);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    write_wasm(dir, "mode.wasm", MODE);
    std::fs::write(
        dir.join("job.toml"),
        r#"
module = "mode.wasm"
quorum = 2
max_attempts = 1
deadline = "3s"
memory = "1MiB"
output_dir = true
[[unit]]
name = "fine"
args = ["ok"]
[[unit]]
name = "file"
args = ["file"]
[[unit]]
name = "memory"
args = ["memory"]
[[unit]]
name = "trap"
args = ["trap"]
[[unit]]
name = "spin"
args = ["spin"]
[[unit]]
name = "exit"
args = ["exit"]
"#,
    )
    .unwrap();
    let id = submit(api, &dir.join("job.toml"));
    let s = wait_for(api, &id, 120, |s| s["state"] != "running");
    assert_eq!(s["state"], "failed", "one failed unit fails the job: {s:#}");
    assert_eq!(unit(&s, "fine")["state"], "done");
    let err = |name: &str| unit(&s, name)["error"].as_str().unwrap_or("").to_string();
    assert_eq!(unit(&s, "trap")["state"], "failed");
    assert!(err("trap").contains("trapped"), "{}", err("trap"));
    assert_eq!(unit(&s, "exit")["state"], "failed");
    assert!(err("exit").contains("code 3"), "{}", err("exit"));
    assert_eq!(unit(&s, "memory")["state"], "failed");
    assert!(err("memory").contains("memory limit"), "{}", err("memory"));
    assert_eq!(unit(&s, "spin")["state"], "failed");
    // The provider stops it at the deadline, or the scheduler gives up on
    // it there, whichever comes first.
    let spin = err("spin");
    assert!(
        spin.contains("deadline") || spin.contains("timed out"),
        "{spin}"
    );

    // Results: the good unit's output is written; the command says which
    // units have none, and fails.
    let out = dir.join("out");
    let r = cairn(api, &["job", "results", &id, "-o", out.to_str().unwrap()]);
    assert!(!r.status.success());
    assert!(stderr(&r).contains("trap:"), "{}", stderr(&r));
    assert_eq!(
        std::fs::read_to_string(out.join("fine.out")).unwrap(),
        "ok\n"
    );
    // A file written under /out comes back under DIR/<unit>/.
    assert_eq!(unit(&s, "file")["state"], "done");
    assert_eq!(std::fs::read_to_string(out.join("file.out")).unwrap(), "");
    assert_eq!(
        std::fs::read_to_string(out.join("file/result.txt")).unwrap(),
        "ok\n"
    );

    // Bad input gets a clear error before anything runs.
    std::fs::write(dir.join("bad.toml"), "module = \"mode.wasm\"\nquorum = 0\n").unwrap();
    let r = cairn(
        api,
        &["job", "submit", dir.join("bad.toml").to_str().unwrap()],
    );
    assert!(!r.status.success());
    assert!(stderr(&r).contains("quorum"), "{}", stderr(&r));
    std::fs::write(
        dir.join("missing.toml"),
        "module = \"nope.wasm\"\n[[unit]]\nname = \"u\"\n",
    )
    .unwrap();
    let r = cairn(
        api,
        &["job", "submit", dir.join("missing.toml").to_str().unwrap()],
    );
    assert!(stderr(&r).contains("nope.wasm"), "{}", stderr(&r));
    // A module that is not WebAssembly is refused at submission.
    std::fs::write(dir.join("junk.wasm"), b"\0asm but not really").unwrap();
    std::fs::write(
        dir.join("junk.toml"),
        "module = \"junk.wasm\"\n[[unit]]\nname = \"u\"\n",
    )
    .unwrap();
    let r = cairn(
        api,
        &["job", "submit", dir.join("junk.toml").to_str().unwrap()],
    );
    assert!(!r.status.success());
    assert!(stderr(&r).contains("module cannot run"), "{}", stderr(&r));
    // So is a stdin capability that names nothing stored.
    let nothing = cairn_core::ReadCap {
        key: cairn_core::FileKey([7; 32]),
        manifest: cairn_core::ManifestId([9; 32]),
    };
    std::fs::write(
        dir.join("nothing.toml"),
        format!("module = \"mode.wasm\"\n[[unit]]\nname = \"u\"\nstdin = \"{nothing}\"\n"),
    )
    .unwrap();
    let r = cairn(
        api,
        &["job", "submit", dir.join("nothing.toml").to_str().unwrap()],
    );
    assert!(!r.status.success());
    assert!(
        stderr(&r).contains("cannot read stdin of unit u"),
        "{}",
        stderr(&r)
    );
    let r = cairn(api, &["job", "status", "abc"]);
    assert!(stderr(&r).contains("not a job id"), "{}", stderr(&r));
    let r = cairn(api, &["job", "status", &"0".repeat(64)]);
    assert!(stderr(&r).contains("no job"), "{}", stderr(&r));

    // A job-wide fuel limit stops a unit that loops, with its own error.
    std::fs::write(
        dir.join("fuel.toml"),
        "module = \"mode.wasm\"\nquorum = 1\nfuel = 1000000\nmemory = \"1MiB\"\n[[unit]]\nname = \"spin\"\nargs = [\"spin\"]\n",
    )
    .unwrap();
    let id = submit(api, &dir.join("fuel.toml"));
    let s = wait_for(api, &id, 60, |s| s["state"] != "running");
    let e = unit(&s, "spin")["error"].as_str().unwrap_or("").to_string();
    assert!(e.contains("ran out of fuel"), "{s:#}");
}

#[test]
fn a_unit_whose_provider_dies_resumes_elsewhere_from_its_checkpoint() {
    let net = Devnet::start(4, "1GiB");
    // The submitter's own node offers no compute, so every unit runs on a
    // devnet node that the test can kill.
    let home = tempfile::tempdir().unwrap();
    let submitter = Node::start(
        &home.path().join("submitter"),
        "1GiB",
        Some(&net.nodes[0].listen[0]),
    );
    let api = submitter.info.api.as_str();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let steps = 40;
    let wat = COUNT
        .replace("STEPS", &steps.to_string())
        .replace("WORK", "20000000");
    write_wasm(dir, "count.wasm", &wat);
    std::fs::write(
        dir.join("job.toml"),
        "module = \"count.wasm\"\nquorum = 1\nmax_attempts = 3\ndeadline = \"5m\"\nmemory = \"1MiB\"\n[[unit]]\nname = \"count\"\n",
    )
    .unwrap();
    let id = submit(api, &dir.join("job.toml"));
    // Once the unit has a checkpoint, kill the node running it.
    let s = wait_for(api, &id, 120, |s| {
        !unit(s, "count")["checkpoint_at"].is_null() || s["state"] != "running"
    });
    assert_eq!(
        s["state"], "running",
        "the unit must still be running: {s:#}"
    );
    let first = unit(&s, "count")["running"][0]
        .as_str()
        .unwrap()
        .to_string();
    let victim = net
        .nodes
        .iter()
        .position(|n| n.peer_id == first)
        .expect("the provider is a devnet node");
    net.kill_node(victim);

    let s = wait_for(api, &id, 180, |s| s["state"] != "running");
    assert_eq!(s["state"], "done", "{s:#}");
    let u = unit(&s, "count");
    let providers: Vec<&str> = u["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(providers[0], first);
    assert!(providers.len() >= 2, "reassigned: {u:#}");
    assert!(!providers[1..].contains(&first.as_str()));

    let out = dir.join("out");
    results(api, &id, &out);
    let bytes = std::fs::read(out.join("count.out")).unwrap();
    assert_eq!(bytes.len(), 8, "{bytes:?}");
    let start = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
    let end = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
    assert_eq!(end, steps, "it counted to the end");
    assert!(start > 0, "it resumed from a checkpoint, not from zero");
    assert!(start < steps);
}

#[test]
fn cancel_stops_a_running_job() {
    let net = Devnet::start(3, "1GiB");
    let api = net.api(0);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    write_wasm(dir, "mode.wasm", MODE);
    std::fs::write(
        dir.join("job.toml"),
        "module = \"mode.wasm\"\nquorum = 2\ndeadline = \"10m\"\nmemory = \"1MiB\"\n[[unit]]\nname = \"spin\"\nargs = [\"spin\"]\n",
    )
    .unwrap();
    let id = submit(api, &dir.join("job.toml"));
    wait_for(api, &id, 60, |s| unit(s, "spin")["state"] == "running");
    ok(cairn(api, &["job", "cancel", &id]));
    let s = status(api, &id);
    assert_eq!(s["state"], "failed", "{s:#}");
    assert!(
        unit(&s, "spin")["error"]
            .as_str()
            .unwrap()
            .contains("cancelled")
    );
    // The providers stop: none reports the unit running any more, and
    // the cancelled unit never comes back.
    let s = status(api, &id);
    assert!(
        unit(&s, "spin")["running"].as_array().unwrap().is_empty(),
        "{s:#}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let busy: u64 = (0..net.nodes.len())
            .map(|i| {
                get_json(&format!("{}/v1/compute", net.api(i)))["running"]
                    .as_u64()
                    .unwrap()
            })
            .sum();
        if busy == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{busy} units still run after cancel"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_provider_that_returns_wrong_outputs_is_outvoted_and_recorded() {
    let net = Devnet::start(4, "1GiB");
    let api = net.api(0);
    let home = tempfile::tempdir().unwrap();
    // A fifth provider that lies about every output, with room for many
    // units so that it gets some.
    let liar = Node::start_with(
        &home.path().join("liar"),
        "1GiB",
        Some(&net.nodes[1].listen[0]),
        &["--cpus", "4", "--memory", "1GiB", "--fault-wrong-outputs"],
    );
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    write_wasm(dir, "upper.wasm", UPPER);
    let mut toml = String::from(
        "module = \"upper.wasm\"\nquorum = 2\nmax_attempts = 3\ndeadline = \"2m\"\nmemory = \"16MiB\"\n",
    );
    let names: Vec<String> = (0..6).map(|i| format!("u{i}")).collect();
    for name in &names {
        std::fs::write(
            dir.join(format!("{name}.txt")),
            format!("input of {name}\n"),
        )
        .unwrap();
        toml.push_str(&format!(
            "[[unit]]\nname = \"{name}\"\nstdin = \"{name}.txt\"\n"
        ));
    }
    std::fs::write(dir.join("job.toml"), toml).unwrap();
    // Let the scheduler learn of the liar before the job is placed.
    std::thread::sleep(Duration::from_secs(6));
    let id = submit(api, &dir.join("job.toml"));
    let s = wait_for(api, &id, 180, |s| s["state"] != "running");
    assert_eq!(s["state"], "done", "{s:#}");
    let liar_id = liar.info.peer_id.as_str();
    let lied_in: Vec<&serde_json::Value> = s["units"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| {
            u["providers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p == liar_id)
        })
        .collect();
    assert!(!lied_in.is_empty(), "the liar ran no unit: {s:#}");
    for u in &lied_in {
        // Its result was outvoted: more replicas ran until two agreed.
        assert!(u["results"].as_u64().unwrap() >= 3, "{u:#}");
    }
    let out = dir.join("out");
    results(api, &id, &out);
    for name in &names {
        let got = std::fs::read_to_string(out.join(format!("{name}.out"))).unwrap();
        assert_eq!(got, format!("INPUT OF {}\n", name.to_uppercase()));
    }
    // The scheduler recorded the lost votes.
    let book = get_json(&format!("{api}/v1/compute/providers"));
    let record = book
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["peer_id"] == liar_id)
        .unwrap_or_else(|| panic!("no record of the liar: {book:#}"));
    assert!(record["invalid"].as_u64().unwrap() >= 1, "{record:#}");
    assert_eq!(record["valid"], 0, "{record:#}");
}

#[test]
fn a_provider_outside_its_window_takes_no_work_and_status_says_why() {
    // One provider, whose only window is two days from today.
    let home = tempfile::tempdir().unwrap();
    let days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // 1970-01-01 was a Thursday.
    let today = ((now / 86_400 + 3) % 7) as usize;
    let schedule = format!("{} all-day", days[(today + 2) % 7]);
    let node = Node::start_with(
        &home.path().join("n0"),
        "1GiB",
        None,
        &["--cpus", "2", "--schedule", &schedule],
    );
    let api = node.info.api.as_str();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    write_wasm(dir, "mode.wasm", MODE);
    std::fs::write(
        dir.join("job.toml"),
        "module = \"mode.wasm\"\nquorum = 1\ndeadline = \"1m\"\nmemory = \"1MiB\"\n[[unit]]\nname = \"u\"\nargs = [\"ok\"]\n",
    )
    .unwrap();
    let id = submit(api, &dir.join("job.toml"));
    let s = wait_for(api, &id, 30, |s| !unit(s, "u")["wait"].is_null());
    let u = unit(&s, "u");
    assert_eq!(u["state"], "waiting");
    let wait = u["wait"].as_str().unwrap();
    assert!(wait.contains("availability window"), "{wait}");
    // It keeps waiting: nothing runs outside the window.
    std::thread::sleep(Duration::from_secs(3));
    let s = status(api, &id);
    assert!(
        unit(&s, "u")["providers"].as_array().unwrap().is_empty(),
        "{s:#}"
    );
    assert_eq!(get_json(&format!("{api}/v1/compute"))["running"], 0);
}

/// Builds `examples/jobs/NAME/NAME.c` natively with the host's C compiler
/// (the one Rust links with) into `dir`.
fn native(dir: &Path, name: &str) -> std::path::PathBuf {
    let src =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../examples/jobs/{name}/{name}.c"));
    let exe = dir.join(format!("{name}-native"));
    let out = std::process::Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("a C compiler `cc` (Rust links with it)");
    assert!(
        out.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

fn run_native(exe: &Path, args: &[&str], stdin: Option<&Path>, cwd: &Path) -> Vec<u8> {
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args).current_dir(cwd);
    if let Some(p) = stdin {
        cmd.stdin(std::fs::File::open(p).unwrap());
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn submit_and_collect(api: &str, job: &Path, out: &Path) -> serde_json::Value {
    let id = submit(api, job);
    let s = wait_for(api, &id, 300, |s| s["state"] != "running");
    assert_eq!(s["state"], "done", "{s:#}");
    results(api, &id, out);
    s
}

#[test]
fn the_c_examples_give_what_their_native_builds_give() {
    let net = Devnet::start(5, "1GiB");
    let api = net.api(0);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/jobs");

    // Monte-Carlo pi: every unit's counts, byte for byte.
    let pi = native(dir, "pi");
    let job: toml_job::Job = toml_job::read(&examples.join("pi/job.toml"));
    let out = dir.join("pi");
    submit_and_collect(api, &examples.join("pi/job.toml"), &out);
    let mut inside = 0u64;
    let mut total = 0u64;
    for (name, args) in &job.units {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let want = run_native(&pi, &args, None, dir);
        let got = std::fs::read(out.join(format!("{name}.out"))).unwrap();
        assert_eq!(got, want, "pi unit {name}");
        let fields: Vec<u64> = String::from_utf8(got)
            .unwrap()
            .split_whitespace()
            .map(|f| f.parse().unwrap())
            .collect();
        inside += fields[1];
        total += fields[2];
    }
    let estimate = 4.0 * inside as f64 / total as f64;
    assert!(
        (estimate - std::f64::consts::PI).abs() < 0.001,
        "{estimate}"
    );

    // Word count: the map units, then a reduce unit over their outputs.
    let wc = native(dir, "wordcount");
    let out = dir.join("map");
    submit_and_collect(api, &examples.join("wordcount/map.toml"), &out);
    let mut pairs = Vec::new();
    for part in ["part1", "part2", "part3"] {
        let input = examples.join(format!("wordcount/data/{part}.txt"));
        let want = run_native(&wc, &["map"], Some(&input), dir);
        let got = std::fs::read(out.join(format!("{part}.out"))).unwrap();
        assert_eq!(got, want, "map unit {part}");
        pairs.extend_from_slice(&got);
    }
    std::fs::write(dir.join("pairs.txt"), &pairs).unwrap();
    std::fs::copy(
        examples.join("wordcount/wordcount.wasm"),
        dir.join("wordcount.wasm"),
    )
    .unwrap();
    std::fs::write(
        dir.join("reduce.toml"),
        "module = \"wordcount.wasm\"\nmemory = \"64MiB\"\n[[unit]]\nname = \"total\"\nargs = [\"reduce\"]\nstdin = \"pairs.txt\"\n",
    )
    .unwrap();
    let out = dir.join("reduce");
    submit_and_collect(api, &dir.join("reduce.toml"), &out);
    let want = run_native(&wc, &["reduce"], Some(&dir.join("pairs.txt")), dir);
    let got = std::fs::read(out.join("total.out")).unwrap();
    assert_eq!(got, want, "reduce");
    assert!(
        String::from_utf8(got).unwrap().contains("cairn "),
        "a word of the texts"
    );

    // Primes with a checkpoint after every block.
    let primes = native(dir, "primes");
    std::fs::copy(examples.join("primes/primes.wasm"), dir.join("primes.wasm")).unwrap();
    std::fs::write(
        dir.join("primes.toml"),
        "module = \"primes.wasm\"\nmemory = \"64MiB\"\n[[unit]]\nname = \"p\"\nargs = [\"20000000\", \"4000000\"]\n",
    )
    .unwrap();
    let out = dir.join("primes");
    let s = submit_and_collect(api, &dir.join("primes.toml"), &out);
    assert!(
        !unit(&s, "p")["checkpoint_at"].is_null(),
        "it checkpointed: {s:#}"
    );
    let scratch = tempfile::tempdir().unwrap();
    let want = run_native(&primes, &["20000000", "4000000"], None, scratch.path());
    assert_eq!(want, b"1270607 primes below 20000000\n");
    assert_eq!(std::fs::read(out.join("p.out")).unwrap(), want);
}

/// Reads the units of an example job file (names and arguments).
mod toml_job {
    pub struct Job {
        pub units: Vec<(String, Vec<String>)>,
    }

    pub fn read(path: &std::path::Path) -> Job {
        let file: cairn_core::compute::job::JobFile =
            toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        Job {
            units: file.units.into_iter().map(|u| (u.name, u.args)).collect(),
        }
    }
}

#[test]
fn a_scheduler_killed_mid_job_goes_on_after_a_restart() {
    let net = Devnet::start(3, "1GiB");
    let home = tempfile::tempdir().unwrap();
    let dir_a = home.path().join("submitter");
    let boot = net.nodes[0].listen[0].clone();
    let mut submitter = Node::start(&dir_a, "1GiB", Some(&boot));
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let wat = COUNT.replace("STEPS", "20").replace("WORK", "20000000");
    write_wasm(dir, "count.wasm", &wat);
    std::fs::write(
        dir.join("job.toml"),
        "module = \"count.wasm\"\nquorum = 2\ndeadline = \"2m\"\nmemory = \"1MiB\"\n[[unit]]\nname = \"a\"\n[[unit]]\nname = \"b\"\n",
    )
    .unwrap();
    let api = submitter.info.api.clone();
    let id = submit(&api, &dir.join("job.toml"));
    wait_for(&api, &id, 60, |s| unit(s, "a")["state"] == "running");
    // Kill the scheduler while its units run, and start it again on its data dir.
    submitter.kill();
    let _ = std::fs::remove_file(dir_a.join("node.json"));
    submitter = Node::start(&dir_a, "1GiB", Some(&boot));
    let api = submitter.info.api.clone();
    let s = wait_for(&api, &id, 180, |s| s["state"] != "running");
    assert_eq!(s["state"], "done", "{s:#}");
    let out = dir.join("out");
    results(&api, &id, &out);
    for name in ["a", "b"] {
        let bytes = std::fs::read(out.join(format!("{name}.out"))).unwrap();
        assert_eq!(
            &bytes[4..8],
            &20u32.to_le_bytes(),
            "unit {name} counted to the end"
        );
    }
}

#[test]
fn an_idle_only_provider_waits_for_its_machine_to_be_idle() {
    // A machine counts as idle only after three quiet minutes, so a
    // provider that just started takes no work yet, and says so.
    let home = tempfile::tempdir().unwrap();
    let node = Node::start_with(
        &home.path().join("n0"),
        "1GiB",
        None,
        &["--cpus", "1", "--idle-only"],
    );
    let api = node.info.api.as_str();
    assert_eq!(get_json(&format!("{api}/v1/compute"))["idle"], false);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    write_wasm(dir, "mode.wasm", MODE);
    std::fs::write(
        dir.join("job.toml"),
        "module = \"mode.wasm\"\nquorum = 1\nmemory = \"1MiB\"\n[[unit]]\nname = \"u\"\nargs = [\"ok\"]\n",
    )
    .unwrap();
    let id = submit(api, &dir.join("job.toml"));
    let s = wait_for(api, &id, 30, |s| !unit(s, "u")["wait"].is_null());
    let wait = unit(&s, "u")["wait"].as_str().unwrap().to_string();
    assert!(wait.contains("only when idle"), "{wait}");
    assert!(unit(&s, "u")["providers"].as_array().unwrap().is_empty());
    // --idle-only without --cpus is a mistake, said plainly.
    let r = cairn(
        api,
        &["node", "run", "--data-dir", "/nonexistent", "--idle-only"],
    );
    assert!(!r.status.success());
    assert!(stderr(&r).contains("--cpus"), "{}", stderr(&r));
}

#[test]
fn with_adaptive_replication_trusted_providers_run_units_alone() {
    let net = Devnet::start(3, "1GiB");
    let api = net.api(0);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    write_wasm(dir, "mode.wasm", MODE);
    // First a replicated job that gives every provider a record of valid
    // results, then an adaptive one.
    let mut plain = String::from("module = \"mode.wasm\"\nquorum = 2\nmemory = \"1MiB\"\n");
    for i in 0..24 {
        plain.push_str(&format!("[[unit]]\nname = \"w{i}\"\nargs = [\"ok\"]\n"));
    }
    std::fs::write(dir.join("warm.toml"), &plain).unwrap();
    let id = submit(api, &dir.join("warm.toml"));
    let s = wait_for(api, &id, 120, |s| s["state"] != "running");
    assert_eq!(s["state"], "done");
    // Without `adaptive`, every unit ran on two providers.
    assert!(
        s["units"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["results"] == 2),
        "{s:#}"
    );
    let book = get_json(&format!("{api}/v1/compute/providers"));
    let trusted = book
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["consecutive_valid"].as_u64().unwrap() >= 10)
        .count();
    assert!(
        trusted >= 2,
        "providers with 10 valid results in a row: {book:#}"
    );

    let adaptive = plain.replacen("quorum = 2\n", "quorum = 2\nadaptive = true\n", 1);
    std::fs::write(dir.join("adaptive.toml"), adaptive).unwrap();
    let id = submit(api, &dir.join("adaptive.toml"));
    let s = wait_for(api, &id, 120, |s| s["state"] != "running");
    assert_eq!(s["state"], "done", "{s:#}");
    let units = s["units"].as_array().unwrap();
    let alone = units.iter().filter(|u| u["results"] == 1).count();
    // Most units ran once on a trusted provider; a spot-checked share
    // (10 %) still ran twice.
    assert!(
        alone >= units.len() / 2,
        "{alone} of {} ran alone: {s:#}",
        units.len()
    );
}
