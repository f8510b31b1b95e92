#![allow(clippy::unwrap_used)]
//! Cost of storage proofs on a 64 MiB piece.
//!
//! `cargo bench -p cairn-core --bench audit`. Measures what a holder pays
//! when it stores a piece (the outboard, next to the BLAKE3 the store always
//! computed) and per challenge (prove, sign), and what a steward pays
//! (verify the signed answer). Prints the proof and answer sizes.

use cairn_core::PieceId;
use cairn_core::audit::{self, AuditAnswer, Challenge};
use cairn_core::keys::SecretKey;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const PIECE: usize = 64 << 20;

fn input() -> Vec<u8> {
    (0..PIECE)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

fn challenge(n: u64) -> Challenge {
    let mut nonce = [0u8; 32];
    nonce[..8].copy_from_slice(&n.to_le_bytes());
    Challenge {
        piece: PieceId([7; 32]),
        nonce,
    }
}

fn bench(c: &mut Criterion) {
    let piece = input();
    let size = PIECE as u64;
    let (root, ob) = audit::outboard(&piece);
    let key = SecretKey::from_bytes([1; 32]);

    let first = challenge(0);
    let r = first.byte_range(size);
    let proof = audit::prove(
        &root,
        size,
        &first,
        &piece[r.start as usize..r.end as usize],
        &ob,
    )
    .unwrap();
    let answer = AuditAnswer::sign(&key, first, proof.clone());
    println!(
        "64 MiB piece: outboard {} bytes, proof {} bytes, signed answer {} bytes",
        ob.len(),
        proof.len(),
        answer.to_bytes().unwrap().len()
    );

    let mut g = c.benchmark_group("store-64MiB");
    g.throughput(Throughput::Bytes(size));
    g.sample_size(10);
    g.bench_function("hash-blake3", |b| b.iter(|| blake3::hash(&piece)));
    g.bench_function("outboard", |b| b.iter(|| audit::outboard(&piece)));
    g.finish();

    let mut g = c.benchmark_group("audit-64MiB");
    let mut n = 0u64;
    g.bench_function("prove", |b| {
        b.iter(|| {
            n += 1;
            let ch = challenge(n);
            let r = ch.byte_range(size);
            audit::prove(
                &root,
                size,
                &ch,
                &piece[r.start as usize..r.end as usize],
                &ob,
            )
            .unwrap()
        })
    });
    g.bench_function("verify", |b| {
        b.iter(|| audit::verify(&root, size, &first, &proof).unwrap())
    });
    g.bench_function("prove+verify", |b| {
        b.iter(|| {
            n += 1;
            let ch = challenge(n);
            let r = ch.byte_range(size);
            let p = audit::prove(
                &root,
                size,
                &ch,
                &piece[r.start as usize..r.end as usize],
                &ob,
            )
            .unwrap();
            audit::verify(&root, size, &ch, &p).unwrap()
        })
    });
    g.bench_function("prove+sign+verify-answer", |b| {
        b.iter(|| {
            n += 1;
            let ch = challenge(n);
            let r = ch.byte_range(size);
            let p = audit::prove(
                &root,
                size,
                &ch,
                &piece[r.start as usize..r.end as usize],
                &ob,
            )
            .unwrap();
            let a = AuditAnswer::sign(&key, ch, p);
            a.verify(&root, size, &ch, &key.public()).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
