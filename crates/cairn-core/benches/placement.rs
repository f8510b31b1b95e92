#![allow(clippy::unwrap_used)]
//! Cost of one placement over a simulator-sized candidate list.
//!
//! `cargo bench -p cairn-core --bench placement`. 10,000 candidates in 2,500
//! /24 networks, a quarter in 200 declared zones, 95 % vetted, with scores, free space and
//! latency known: the simulator's case.

use cairn_core::placement::{Candidate, NetPrefix, Policy, Selector, Site, ZoneId};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

fn candidates(n: u32) -> Vec<Candidate> {
    (0..n)
        .map(|i| {
            let h = blake3::hash(&i.to_le_bytes());
            let b = h.as_bytes();
            Candidate {
                network: Some(NetPrefix::V4([10, b[0] % 10, b[1]])),
                // A quarter of the operators declare one of 200 zones.
                zone: (b[2] < 64).then(|| ZoneId(u64::from(b[8] % 200))),
                free_bytes: Some(u64::from(b[3]) << 32),
                audit_score: Some(0.96 + f64::from(b[4]) / 6400.0),
                uptime: Some(0.9 + f64::from(b[5]) / 2560.0),
                latency_ms: Some(u32::from(b[6])),
                vetted: b[7] >= 13,
                ..Candidate::new(b[..32].to_vec())
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("placement");
    let policy = Policy::default();
    for n in [100u32, 10_000] {
        let cands = candidates(n);
        let mut sel = Selector::new();
        let mut seg = 0u64;
        g.bench_function(BenchmarkId::new("put-30", n), |b| {
            b.iter(|| {
                seg += 1;
                let key = *blake3::hash(&seg.to_le_bytes()).as_bytes();
                sel.select(&key, 30, 4 << 20, &cands, &[], &policy).len()
            })
        });
        // Repair: 20 surviving holders, 4 pieces to place.
        let holders: Vec<Site<'_>> = cands[..20].iter().map(Candidate::site).collect();
        g.bench_function(BenchmarkId::new("repair-4", n), |b| {
            b.iter(|| {
                seg += 1;
                let key = *blake3::hash(&seg.to_le_bytes()).as_bytes();
                sel.select(&key, 4, 4 << 20, &cands, &holders, &policy)
                    .len()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
