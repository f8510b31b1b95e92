//! Reed-Solomon coding of sealed segments into pieces.
//!
//! A sealed segment of `len` bytes is zero-padded to `k * shard_size` and split
//! into `k` original shards; `coded - k` recovery shards are computed from them.
//! Piece `i < k` is original shard `i`, piece `i >= k` is recovery shard `i - k`.
//! Any `k` distinct pieces rebuild the segment. Coding runs on ciphertext, so
//! a node repairing pieces never needs the file key.

use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

use crate::buf::{Buffers, Heap};

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

/// Column width of one coding stripe. The coder's cost per call is fixed and
/// its working set is `coded * STRIPE` bytes, so pieces are coded in stripes
/// of this width to stay in cache (about 5× faster than whole 4 MiB shards).
pub const STRIPE: usize = 64 * 1024;

fn coder_err(e: reed_solomon_simd::Error) -> ErasureError {
    ErasureError::Coder(e.to_string())
}

/// Data piece `i` of `data`: a borrowed slice, or a zero-padded copy at the end.
pub fn data_piece(data: &[u8], shard: usize, i: usize) -> std::borrow::Cow<'_, [u8]> {
    let start = (i * shard).min(data.len());
    let end = ((i + 1) * shard).min(data.len());
    if end - start == shard {
        std::borrow::Cow::Borrowed(&data[start..end])
    } else {
        let mut p = Vec::with_capacity(shard);
        p.extend_from_slice(&data[start..end]);
        p.resize(shard, 0);
        std::borrow::Cow::Owned(p)
    }
}

/// Splits `data` into `coded` pieces, any `k` of which rebuild it.
///
/// Data piece `i` is bytes `[i*L, (i+1)*L)` of the zero-padded data, where
/// `L = shard_size(len, k)` (see [`data_piece`]); the rest come from [`recovery`].
pub fn encode(data: &[u8], k: u16, coded: u16) -> Result<Vec<Vec<u8>>, ErasureError> {
    check(k, coded)?;
    let shard = shard_size(data.len(), k);
    let mut pieces: Vec<Vec<u8>> = (0..usize::from(k))
        .map(|i| data_piece(data, shard, i).into_owned())
        .collect();
    pieces.extend(recovery(data, k, coded)?);
    Ok(pieces)
}

/// The `coded - k` recovery pieces of `data`. Recovery piece `r` is, stripe by
/// stripe, the Reed-Solomon recovery shard `r` of columns
/// `[j*STRIPE, (j+1)*STRIPE)` of the data pieces.
pub fn recovery(data: &[u8], k: u16, coded: u16) -> Result<Vec<Vec<u8>>, ErasureError> {
    recovery_with(data, k, coded, &Heap)
}

/// [`recovery`], with the pieces' buffers taken from `bufs`.
pub fn recovery_with(
    data: &[u8],
    k: u16,
    coded: u16,
    bufs: &impl Buffers,
) -> Result<Vec<Vec<u8>>, ErasureError> {
    check(k, coded)?;
    let shard = shard_size(data.len(), k);
    let count = usize::from(coded - k);
    if count == 0 {
        return Ok(Vec::new());
    }
    let originals: Vec<std::borrow::Cow<'_, [u8]>> = (0..usize::from(k))
        .map(|i| data_piece(data, shard, i))
        .collect();
    let mut out: Vec<Vec<u8>> = (0..count).map(|_| bufs.take(shard)).collect();
    let mut enc: Option<ReedSolomonEncoder> = None;
    let mut at = 0;
    while at < shard {
        let width = STRIPE.min(shard - at);
        let e = match enc.as_mut() {
            Some(e) => {
                e.reset(usize::from(k), count, width).map_err(coder_err)?;
                e
            }
            None => enc
                .insert(ReedSolomonEncoder::new(usize::from(k), count, width).map_err(coder_err)?),
        };
        for p in &originals {
            e.add_original_shard(&p[at..at + width])
                .map_err(coder_err)?;
        }
        let result = e.encode().map_err(coder_err)?;
        for (o, r) in out.iter_mut().zip(result.recovery_iter()) {
            o.extend_from_slice(r);
        }
        at += width;
    }
    Ok(out)
}

/// Rebuilds `len` bytes of data from at least `k` distinct pieces `(index, bytes)`.
pub fn decode(
    pieces: &[(u16, &[u8])],
    k: u16,
    coded: u16,
    len: usize,
) -> Result<Vec<u8>, ErasureError> {
    decode_with(pieces, k, coded, len, &Heap)
}

/// [`decode`], with its buffers taken from `bufs`.
pub fn decode_with(
    pieces: &[(u16, &[u8])],
    k: u16,
    coded: u16,
    len: usize,
    bufs: &impl Buffers,
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
    let missing: Vec<usize> = (0..usize::from(k))
        .filter(|i| originals[*i].is_none())
        .collect();
    // Rebuilt data pieces, filled stripe by stripe.
    let mut rebuilt: Vec<Vec<u8>> = missing.iter().map(|_| bufs.take(shard)).collect();
    if !missing.is_empty() {
        let mut dec: Option<ReedSolomonDecoder> = None;
        let mut at = 0;
        while at < shard {
            let width = STRIPE.min(shard - at);
            let d = match dec.as_mut() {
                Some(d) => {
                    d.reset(usize::from(k), usize::from(coded - k), width)
                        .map_err(coder_err)?;
                    d
                }
                None => dec.insert(
                    ReedSolomonDecoder::new(usize::from(k), usize::from(coded - k), width)
                        .map_err(coder_err)?,
                ),
            };
            for (i, o) in originals.iter().enumerate() {
                if let Some(o) = o {
                    d.add_original_shard(i, &o[at..at + width])
                        .map_err(coder_err)?;
                }
            }
            for (i, r) in recovery.iter().take(missing.len()) {
                d.add_recovery_shard(*i, &r[at..at + width])
                    .map_err(coder_err)?;
            }
            let result = d.decode().map_err(coder_err)?;
            for (slot, &i) in rebuilt.iter_mut().zip(&missing) {
                let part = result
                    .restored_original(i)
                    .ok_or_else(|| ErasureError::Coder(format!("shard {i} was not restored")))?;
                slot.extend_from_slice(part);
            }
            at += width;
        }
    }
    let mut out = bufs.take(len);
    let mut next_rebuilt = rebuilt.iter();
    for o in &originals {
        match o {
            Some(o) => out.extend_from_slice(o),
            None => {
                out.extend_from_slice(next_rebuilt.next().map(Vec::as_slice).unwrap_or_default())
            }
        }
        if out.len() >= len {
            break;
        }
    }
    out.truncate(len);
    for r in rebuilt {
        bufs.give(r);
    }
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
    fn multi_stripe_pieces_rebuild_from_recovery_only() {
        // Pieces of 2.5 stripes, so full and partial stripes are both coded.
        let data: Vec<u8> = (0..(5 * STRIPE) as u32).map(|i| (i % 251) as u8).collect();
        let pieces = encode(&data, 2, 4).unwrap();
        assert_eq!(pieces[0].len(), 5 * STRIPE / 2);
        let rec: Vec<(u16, &[u8])> = vec![(3, &pieces[3]), (2, &pieces[2])];
        assert_eq!(decode(&rec, 2, 4, data.len()).unwrap(), data);
        let mixed: Vec<(u16, &[u8])> = vec![(1, &pieces[1]), (2, &pieces[2])];
        assert_eq!(decode(&mixed, 2, 4, data.len()).unwrap(), data);
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
