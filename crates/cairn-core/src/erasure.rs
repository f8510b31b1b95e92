//! Reed-Solomon coding of sealed segments into pieces.
//!
//! A sealed segment of `len` bytes is zero-padded to `k * shard_size` and split
//! into `k` original shards; `coded - k` recovery shards are computed from them.
//! Piece `i < k` is original shard `i`, piece `i >= k` is recovery shard `i - k`.
//! Any `k` distinct pieces rebuild the segment. Coding runs on ciphertext, so
//! a node repairing pieces never needs the file key.

use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

/// The largest number of pieces a segment may be coded into.
pub const MAX_PIECES: u16 = 1024;

/// An erasure-coding failure.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErasureError {
    /// The parameters cannot be used.
    #[error(
        "invalid erasure parameters k={k}, coded={coded}: need 1 <= k <= coded <= {MAX_PIECES}"
    )]
    Params {
        /// Pieces needed.
        k: u16,
        /// Pieces coded.
        coded: u16,
    },
    /// Fewer than k usable pieces.
    #[error("{have} distinct pieces are available but {k} are needed")]
    TooFewPieces {
        /// Pieces supplied.
        have: usize,
        /// Pieces needed.
        k: u16,
    },
    /// A piece has the wrong length or index.
    #[error("piece {index} is malformed: {reason}")]
    BadPiece {
        /// Piece index.
        index: u16,
        /// What is wrong.
        reason: &'static str,
    },
    /// The underlying coder failed.
    #[error("reed-solomon: {0}")]
    Coder(String),
}

/// The shard size for a sealed segment of `len` bytes split `k` ways: even and non-zero.
pub fn shard_size(len: usize, k: u16) -> usize {
    let per = len.div_ceil(usize::from(k.max(1))).max(1);
    per + (per & 1)
}

fn check(k: u16, coded: u16) -> Result<(), ErasureError> {
    if k == 0 || k > coded || coded > MAX_PIECES {
        return Err(ErasureError::Params { k, coded });
    }
    Ok(())
}

/// Splits `data` into `coded` pieces, any `k` of which rebuild it.
pub fn encode(data: &[u8], k: u16, coded: u16) -> Result<Vec<Vec<u8>>, ErasureError> {
    check(k, coded)?;
    let shard = shard_size(data.len(), k);
    let mut pieces: Vec<Vec<u8>> = Vec::with_capacity(usize::from(coded));
    for i in 0..usize::from(k) {
        let start = (i * shard).min(data.len());
        let end = ((i + 1) * shard).min(data.len());
        let mut p = Vec::with_capacity(shard);
        p.extend_from_slice(&data[start..end]);
        p.resize(shard, 0);
        pieces.push(p);
    }
    if coded > k {
        let coder = |e: reed_solomon_simd::Error| ErasureError::Coder(e.to_string());
        let mut enc = ReedSolomonEncoder::new(usize::from(k), usize::from(coded - k), shard)
            .map_err(coder)?;
        for p in &pieces {
            enc.add_original_shard(p).map_err(coder)?;
        }
        let result = enc.encode().map_err(coder)?;
        let recovery: Vec<Vec<u8>> = result.recovery_iter().map(<[u8]>::to_vec).collect();
        pieces.extend(recovery);
    }
    Ok(pieces)
}

/// Rebuilds `len` bytes of data from at least `k` distinct pieces `(index, bytes)`.
pub fn decode(
    pieces: &[(u16, &[u8])],
    k: u16,
    coded: u16,
    len: usize,
) -> Result<Vec<u8>, ErasureError> {
    check(k, coded)?;
    let shard = shard_size(len, k);
    let mut originals: Vec<Option<&[u8]>> = vec![None; usize::from(k)];
    let mut recovery: Vec<(usize, &[u8])> = Vec::new();
    let mut seen = vec![false; usize::from(coded)];
    for &(index, bytes) in pieces {
        if index >= coded {
            return Err(ErasureError::BadPiece {
                index,
                reason: "index out of range",
            });
        }
        if bytes.len() != shard {
            return Err(ErasureError::BadPiece {
                index,
                reason: "wrong length",
            });
        }
        if std::mem::replace(&mut seen[usize::from(index)], true) {
            continue;
        }
        if index < k {
            originals[usize::from(index)] = Some(bytes);
        } else {
            recovery.push((usize::from(index - k), bytes));
        }
    }
    let have = seen.iter().filter(|s| **s).count();
    if have < usize::from(k) {
        return Err(ErasureError::TooFewPieces { have, k });
    }
    let mut out = Vec::with_capacity(usize::from(k) * shard);
    let missing = originals.iter().filter(|o| o.is_none()).count();
    if missing == 0 {
        for o in originals.iter().flatten() {
            out.extend_from_slice(o);
        }
    } else {
        let coder = |e: reed_solomon_simd::Error| ErasureError::Coder(e.to_string());
        let mut dec = ReedSolomonDecoder::new(usize::from(k), usize::from(coded - k), shard)
            .map_err(coder)?;
        for (i, o) in originals.iter().enumerate() {
            if let Some(o) = o {
                dec.add_original_shard(i, o).map_err(coder)?;
            }
        }
        for (i, r) in recovery.iter().take(missing) {
            dec.add_recovery_shard(*i, r).map_err(coder)?;
        }
        let result = dec.decode().map_err(coder)?;
        for (i, o) in originals.iter().enumerate() {
            match o {
                Some(o) => out.extend_from_slice(o),
                None => out.extend_from_slice(
                    result
                        .restored_original(i)
                        .ok_or(ErasureError::Coder(format!("shard {i} was not restored")))?,
                ),
            }
        }
    }
    out.truncate(len);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_k_of_n_pieces_rebuild(
            data in proptest::collection::vec(any::<u8>(), 0..5000),
            k in 1u16..12,
            extra in 0u16..8,
            seed in any::<u64>(),
        ) {
            let coded = k + extra;
            let pieces = encode(&data, k, coded).unwrap();
            prop_assert_eq!(pieces.len(), usize::from(coded));
            // A seeded shuffle picks which k pieces survive.
            let mut order: Vec<u16> = (0..coded).collect();
            let mut s = seed;
            for i in (1..order.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                order.swap(i, (s >> 33) as usize % (i + 1));
            }
            let chosen: Vec<(u16, &[u8])> = order[..usize::from(k)].iter().map(|&i| (i, pieces[usize::from(i)].as_slice())).collect();
            prop_assert_eq!(decode(&chosen, k, coded, data.len()).unwrap(), data);
        }
    }

    #[test]
    fn too_few_pieces_is_an_error() {
        let pieces = encode(b"some data here", 3, 5).unwrap();
        let two: Vec<(u16, &[u8])> = vec![(0, &pieces[0]), (4, &pieces[4])];
        assert_eq!(
            decode(&two, 3, 5, 14),
            Err(ErasureError::TooFewPieces { have: 2, k: 3 })
        );
        let dup: Vec<(u16, &[u8])> = vec![(0, &pieces[0]), (0, &pieces[0]), (4, &pieces[4])];
        assert_eq!(
            decode(&dup, 3, 5, 14),
            Err(ErasureError::TooFewPieces { have: 2, k: 3 })
        );
    }

    #[test]
    fn bad_params_are_refused() {
        assert!(encode(b"x", 0, 3).is_err());
        assert!(encode(b"x", 4, 3).is_err());
    }
}
