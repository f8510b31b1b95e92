#![allow(clippy::unwrap_used)]
//! Per-core throughput of the put and get pipelines and their stages.
//!
//! `cargo bench -p cairn-core`. Input: one 64 MiB segment, k = 16, n = 24.

use cairn_core::crypto::FileKey;
use cairn_core::erasure;
use cairn_core::ids::FileId;
use cairn_core::manifest::{Manifest, PieceEntry, SegmentEntry};
use cairn_core::segment;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const SEG: usize = 64 << 20;
const K: u16 = 16;
const N: u16 = 24;

fn input() -> Vec<u8> {
    (0..SEG)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

fn bench(c: &mut Criterion) {
    let plain = input();
    let key = FileKey([7; 32]);
    let dk = key.data_key();
    let mut g = c.benchmark_group("segment-64MiB");
    g.throughput(Throughput::Bytes(SEG as u64));
    g.sample_size(10);

    g.bench_function("encrypt-aes256gcm", |b| {
        let mut buf = plain.clone();
        b.iter(|| {
            buf.truncate(SEG);
            dk.seal(0, true, &mut buf);
        })
    });
    g.bench_function("hash-blake3", |b| b.iter(|| blake3::hash(&plain)));
    let mut sealed = plain.clone();
    dk.seal(0, true, &mut sealed);
    g.bench_function("encode-rs-16-24", |b| {
        b.iter(|| erasure::encode(&sealed, K, N).unwrap())
    });
    let pieces = erasure::encode(&sealed, K, N).unwrap();
    // Worst case: the first n-k data pieces are lost.
    let survivors: Vec<(u16, &[u8])> = (N - K..N)
        .map(|i| (i, pieces[usize::from(i)].as_slice()))
        .collect();
    g.bench_function("decode-rs-16-24-worst", |b| {
        b.iter(|| erasure::decode(&survivors, K, N, sealed.len()).unwrap())
    });
    g.bench_function("put-pipeline", |b| {
        b.iter(|| segment::encode(&dk, 0, true, plain.clone(), K, N).unwrap())
    });
    let enc = segment::encode(&dk, 0, true, plain.clone(), K, N).unwrap();
    let manifest = Manifest {
        record: None,
        file_id: FileId([1; 32]),
        size: SEG as u64,
        segment_size: SEG as u64,
        k: K,
        n: N,
        coded: N,
        created_at: 0,
        segments: vec![SegmentEntry {
            pieces: (0..N)
                .map(|i| PieceEntry {
                    index: i,
                    hash: enc.hashes[usize::from(i)],
                    holder: vec![],
                })
                .collect(),
        }],
    };
    let chosen: Vec<(u16, &[u8])> = (N - K..N)
        .map(|i| (i, &enc.pieces[usize::from(i)][..]))
        .collect();
    g.bench_function("get-pipeline-worst", |b| {
        b.iter(|| {
            for (i, p) in &chosen {
                assert_eq!(segment::piece_hash(p), enc.hashes[usize::from(*i)]);
            }
            segment::decode(&dk, &manifest, 0, &chosen).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
