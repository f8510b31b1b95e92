#![allow(clippy::unwrap_used)]
//! Cost of one matching round and of one dispatch round.
//!
//! `cargo bench -p cairn-core --bench compute`. Units that each want two
//! replicas, against providers with 4 cpus and 8 GiB, a third of them on a
//! night schedule, some holding the units' inputs: the devnet's case (5
//! providers), a mid-sized network (200), and the bounds of one call
//! (4,096 units, 1,024 providers).

use cairn_core::compute::dispatch::dispatch;
use cairn_core::compute::matching::{ProviderState, UnitReq, assign};
use cairn_core::compute::resources::{Need, Offer};
use cairn_core::compute::unit::{Unit, UnitSpec};
use cairn_core::compute::validate::{Reliability, TrustPolicy};
use cairn_core::compute::window::Schedule;
use cairn_core::compute::{JobId, UnitId};
use cairn_core::ids::FileId;
use cairn_core::keys::PublicKey;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

/// Monday 2024-01-01 20:00 UTC: night windows are open.
const NOW: u64 = 1_704_067_200 + 20 * 3600;

fn need() -> Need {
    Need {
        memory_bytes: 64 << 20,
        fuel: None,
        estimate_secs: 60,
        deadline_secs: 600,
    }
}

fn providers(n: u32) -> Vec<ProviderState> {
    let night = Schedule::parse("mon-fri 19:00-07:00; sat,sun all-day").unwrap();
    (0..n)
        .map(|i| {
            let h = *blake3::hash(&i.to_le_bytes()).as_bytes();
            let schedule = if i % 3 == 0 {
                night.clone()
            } else {
                Schedule::always()
            };
            let mut reliability = Reliability::default();
            for _ in 0..h[1] % 20 {
                reliability.record_valid();
            }
            ProviderState {
                id: PublicKey(h),
                operator: PublicKey(h),
                offer: Offer::new(4, 8 << 30, schedule).unwrap(),
                running: u16::from(h[0] % 3),
                memory_in_use: 0,
                idle: true,
                reliability,
                holds: (0..4).map(|j| FileId([h[2].wrapping_add(j); 32])).collect(),
            }
        })
        .collect()
}

fn requests(n: u32) -> Vec<UnitReq> {
    (0..n)
        .map(|i| UnitReq {
            unit: UnitId(*blake3::hash(&(i + 1_000_000).to_le_bytes()).as_bytes()),
            need: need(),
            replicas: 2,
            inputs: vec![FileId([(i % 256) as u8; 32])],
            exclude: vec![],
            exclude_operators: vec![],
            finish_by: None,
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("compute");
    g.sample_size(10);
    for (units, provs) in [(100u32, 5u32), (1_000, 200), (4_096, 1_024)] {
        let reqs = requests(units);
        let ps = providers(provs);
        g.bench_function(
            BenchmarkId::new("assign", format!("{units}x{provs}")),
            |b| b.iter(|| assign(&reqs, &ps, NOW)),
        );
    }
    let job = JobId([1; 32]);
    let ps = providers(200);
    g.bench_function("dispatch/1000x200", |b| {
        b.iter_batched(
            || {
                (0..1_000)
                    .map(|i| {
                        let name = format!("u{i}");
                        let spec = UnitSpec {
                            id: UnitId::of(&job, &name),
                            name,
                            need: need(),
                            inputs: vec![],
                        };
                        Unit::new(spec, 2, 3, 600).unwrap()
                    })
                    .collect::<Vec<_>>()
            },
            |mut units| dispatch(&mut units, &ps, &TrustPolicy::OFF, &[0; 32], None, NOW),
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
