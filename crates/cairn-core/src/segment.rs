//! The per-segment pipeline: seal then erasure-code on put; decode then open on get.

use bytes::Bytes;

use crate::buf::{Buffers, Heap};
use crate::crypto::{AuthError, SegmentKey};
use crate::erasure::{self, ErasureError};
use crate::manifest::Manifest;

/// A sealed, coded segment ready to upload.
#[derive(Debug)]
pub struct EncodedSegment {
    /// Piece bytes, by index (`coded` of them). Data pieces share the sealed
    /// segment's buffer; only recovery pieces (and a padded last data piece)
    /// are separate allocations.
    pub pieces: Vec<Bytes>,
    /// BLAKE3 of each piece.
    pub hashes: Vec<[u8; 32]>,
}

/// A segment could not be rebuilt.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SegmentError {
    /// Erasure decoding failed.
    #[error(transparent)]
    Erasure(#[from] ErasureError),
    /// The rebuilt ciphertext did not authenticate.
    #[error("segment {segment} failed authentication after decoding: {source}")]
    Auth {
        /// Segment index.
        segment: u64,
        /// Cause.
        source: AuthError,
    },
}

/// BLAKE3 of a piece.
pub fn piece_hash(data: &[u8]) -> [u8; 32] {
    *blake3::hash(data).as_bytes()
}

/// Seals `plain` as segment `index` and codes it into `coded` pieces, any `k` of which rebuild it.
pub fn encode(
    key: &SegmentKey,
    index: u64,
    last: bool,
    plain: Vec<u8>,
    k: u16,
    coded: u16,
) -> Result<EncodedSegment, ErasureError> {
    encode_with(key, index, last, plain, k, coded, &Heap)
}

/// [`encode`], with buffers from `bufs`; `plain` should come from it too.
/// The pieces are shared through `bufs`, so a pool gets them back.
pub fn encode_with(
    key: &SegmentKey,
    index: u64,
    last: bool,
    mut plain: Vec<u8>,
    k: u16,
    coded: u16,
    bufs: &impl Buffers,
) -> Result<EncodedSegment, ErasureError> {
    key.seal(index, last, &mut plain);
    let recovery = erasure::recovery_with(&plain, k, coded, bufs)?;
    let shard = erasure::shard_size(plain.len(), k);
    let sealed = bufs.share(plain);
    let mut pieces: Vec<Bytes> = (0..usize::from(k))
        .map(|i| match erasure::data_piece(&sealed, shard, i) {
            std::borrow::Cow::Borrowed(_) => sealed.slice(i * shard..(i + 1) * shard),
            std::borrow::Cow::Owned(padded) => Bytes::from(padded),
        })
        .collect();
    pieces.extend(recovery.into_iter().map(|r| bufs.share(r)));
    let hashes = pieces.iter().map(|p| piece_hash(p)).collect();
    Ok(EncodedSegment { pieces, hashes })
}

/// Rebuilds segment `index` of `manifest` from at least k hash-checked pieces and decrypts it.
pub fn decode(
    key: &SegmentKey,
    manifest: &Manifest,
    index: u64,
    pieces: &[(u16, &[u8])],
) -> Result<Vec<u8>, SegmentError> {
    decode_with(key, manifest, index, pieces, &Heap)
}

/// [`decode`], with buffers from `bufs`.
pub fn decode_with(
    key: &SegmentKey,
    manifest: &Manifest,
    index: u64,
    pieces: &[(u16, &[u8])],
    bufs: &impl Buffers,
) -> Result<Vec<u8>, SegmentError> {
    let len = manifest.sealed_len(index);
    let mut sealed = erasure::decode_with(pieces, manifest.k, manifest.coded, len, bufs)?;
    let last = index + 1 == manifest.segments.len() as u64;
    key.open(index, last, &mut sealed)
        .map_err(|source| SegmentError::Auth {
            segment: index,
            source,
        })?;
    Ok(sealed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::FileKey;
    use crate::ids::FileId;
    use crate::manifest::{PieceEntry, SegmentEntry};

    #[test]
    fn roundtrip_and_tamper_detection() {
        let key = FileKey([4; 32]);
        let plain = vec![7u8; 1000];
        let enc = encode(&key.data_key(), 0, true, plain.clone(), 3, 5).unwrap();
        let m = Manifest {
            record: None,
            file_id: FileId([0; 32]),
            size: 1000,
            segment_size: 4096,
            k: 3,
            n: 5,
            coded: 5,
            created_at: 0,
            segments: vec![SegmentEntry {
                pieces: (0..5u16)
                    .map(|i| PieceEntry {
                        index: i,
                        hash: enc.hashes[usize::from(i)],
                        holder: vec![],
                    })
                    .collect(),
            }],
        };
        let pick: Vec<(u16, &[u8])> = vec![
            (4, &enc.pieces[4]),
            (1, &enc.pieces[1]),
            (3, &enc.pieces[3]),
        ];
        assert_eq!(decode(&key.data_key(), &m, 0, &pick).unwrap(), plain);
        // A piece altered after its hash check (or a lying coder) fails authentication.
        let mut bad = enc.pieces[1].to_vec();
        bad[0] ^= 1;
        let pick: Vec<(u16, &[u8])> = vec![(0, &enc.pieces[0]), (1, &bad), (2, &enc.pieces[2])];
        assert!(matches!(
            decode(&key.data_key(), &m, 0, &pick),
            Err(SegmentError::Auth { segment: 0, .. })
        ));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// A flipped byte in any piece changes its hash, and even if the hash
        /// check were skipped, decoding never returns wrong plaintext.
        #[test]
        fn any_flipped_piece_byte_is_detected(
            len in 0usize..4000,
            piece in 0usize..6,
            pos in proptest::prelude::any::<usize>(),
            bit in 0u8..8,
        ) {
            let key = FileKey([8; 32]);
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let enc = encode(&key.data_key(), 0, true, plain.clone(), 4, 6).unwrap();
            let mut bad = enc.pieces[piece].to_vec();
            let at = pos % bad.len();
            bad[at] ^= 1 << bit;
            proptest::prop_assert_ne!(piece_hash(&bad), enc.hashes[piece]);
            let m = Manifest {
                record: None,
                file_id: FileId([0; 32]), size: len as u64, segment_size: 4096, k: 4, n: 6, coded: 6, created_at: 0,
                segments: vec![SegmentEntry { pieces: vec![] }],
            };
            // Use the bad piece plus three good ones.
            let mut pick: Vec<(u16, &[u8])> = vec![(piece as u16, bad.as_slice())];
            pick.extend((0..6).filter(|i| *i != piece).take(3).map(|i| (i as u16, &enc.pieces[i][..])));
            match decode(&key.data_key(), &m, 0, &pick) {
                Ok(out) => proptest::prop_assert_eq!(out, plain, "decoding returned wrong bytes"),
                Err(SegmentError::Auth { .. }) => {}
                Err(e) => proptest::prop_assert!(false, "unexpected error {e}"),
            }
        }
    }
}
