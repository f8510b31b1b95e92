#![allow(clippy::unwrap_used)]
//! Cost of compiling a module and fuel throughput of a run.
//!
//! `cargo bench -p cairn-compute --bench sandbox`. `compile`: a WASI
//! module of 64 small functions (cranelift, one thread). `run`: a tight
//! loop of 10 million iterations, from instantiation to the output hash
//! (the throughput is in fuel units, about one per wasm instruction).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use cairn_compute::{RunSpec, Sandbox};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn many_functions(n: usize) -> Vec<u8> {
    let mut funcs = String::new();
    for i in 0..n {
        funcs.push_str(&format!(
            "(func $f{i} (param i32) (result i32) (local $a i32)
               (local.set $a (i32.mul (local.get 0) (i32.const {i})))
               (if (result i32) (i32.gt_u (local.get $a) (i32.const 1000))
                 (then (i32.div_u (local.get $a) (i32.add (local.get 0) (i32.const 1))))
                 (else (i32.add (local.get $a) (i32.load (local.get 0))))))\n"
        ));
    }
    wat::parse_str(format!(
        r#"(module
          (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
          (memory (export "memory") 1)
          {funcs}
          (func (export "_start") (call $exit (call $f1 (i32.const 3)))))"#
    ))
    .unwrap()
}

fn tight_loop(iterations: u32) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
          (memory (export "memory") 1)
          (func (export "_start") (local $i i32)
            (local.set $i (i32.const {iterations}))
            (loop $l
              (local.set $i (i32.sub (local.get $i) (i32.const 1)))
              (br_if $l (local.get $i)))))"#
    ))
    .unwrap()
}

fn spec(dir: &std::path::Path) -> RunSpec {
    RunSpec {
        program_name: "bench".into(),
        args: Vec::new(),
        env: Vec::new(),
        stdin: None,
        work_dir: dir.to_path_buf(),
        memory_bytes: 16 << 20,
        fuel: None,
        wall_secs: 60,
        resume: None,
        seed: [0; 32],
        output_dir: false,
        max_output_bytes: 1 << 20,
        cancel: Arc::new(AtomicBool::new(false)),
    }
}

fn benches(c: &mut Criterion) {
    let sb = Sandbox::new().unwrap();

    let module = many_functions(64);
    let mut g = c.benchmark_group("compile");
    g.throughput(Throughput::Bytes(module.len() as u64));
    g.bench_function("64 functions", |b| {
        b.iter(|| sb.compile(black_box(&module)).unwrap())
    });
    g.finish();

    let program = sb.compile(&tight_loop(10_000_000)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fuel = sb
        .run(&program, spec(&dir.path().join("probe")), &mut |_| false)
        .unwrap()
        .fuel_used;
    let mut g = c.benchmark_group("run");
    g.throughput(Throughput::Elements(fuel));
    let mut i = 0u64;
    g.bench_function("tight loop, 10M iterations", |b| {
        b.iter(|| {
            i += 1;
            let out = sb
                .run(&program, spec(&dir.path().join(i.to_string())), &mut |_| {
                    false
                })
                .unwrap();
            assert_eq!(out.fuel_used, fuel);
        })
    });
    g.finish();
}

criterion_group! {
    name = sandbox;
    config = Criterion::default().sample_size(10);
    targets = benches
}
criterion_main!(sandbox);
