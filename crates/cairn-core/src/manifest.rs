//! File manifests: the encrypted table of contents of a stored file.
//!
//! A manifest lists a file's size, its segment layout, the erasure parameters,
//! and for every segment the pieces that were stored: index, BLAKE3 hash and
//! holder. It is serialized with postcard and sealed with the file's manifest
//! key (see [`crate::crypto`]). Sealed form:
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `CRNM` |
//! | 2 | format version, big-endian (2; version 1 is still read) |
//! | rest | AES-256-GCM(postcard(Manifest)), associated data = the 6 header bytes |
//!
//! The BLAKE3 hash of the sealed bytes is the [`ManifestId`]: the DHT key
//! under which it is stored and the integrity check a reader applies first.
//!
//! Version 2 adds the id of the object's repair record
//! ([`crate::record`]), which says where pieces live after repairs; a
//! version 1 manifest reads as one without a record.

use serde::{Deserialize, Serialize};

use crate::crypto::{FileKey, TAG_LEN};
use crate::erasure::{MAX_PIECES, shard_size};
use crate::ids::{FileId, ManifestId};
use crate::record::RecordId;

/// Magic bytes of a sealed manifest.
pub const MAGIC: &[u8; 4] = b"CRNM";
/// The manifest format this build writes and reads.
pub const MANIFEST_VERSION: u16 = 2;
/// The largest sealed manifest accepted from the network.
pub const MAX_MANIFEST_BYTES: usize = 32 * 1024 * 1024;

/// One stored piece of a segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceEntry {
    /// Index in the code: `< k` original shards, `>= k` recovery shards.
    pub index: u16,
    /// BLAKE3 of the piece bytes.
    pub hash: [u8; 32],
    /// The libp2p peer id (bytes) of the node holding it.
    pub holder: Vec<u8>,
}

/// The pieces of one segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentEntry {
    /// Stored pieces, by ascending index.
    pub pieces: Vec<PieceEntry>,
}

/// A file's table of contents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Random id the piece ids derive from.
    pub file_id: FileId,
    /// Plaintext size in bytes.
    pub size: u64,
    /// Plaintext bytes per segment (the last may be shorter).
    pub segment_size: u64,
    /// Pieces needed to rebuild a segment.
    pub k: u16,
    /// Pieces stored per segment when healthy.
    pub n: u16,
    /// Pieces the code defines per segment (n plus long-tail spares); decoding needs it.
    pub coded: u16,
    /// Unix seconds of the upload.
    pub created_at: u64,
    /// One entry per segment; an empty file has one empty segment.
    pub segments: Vec<SegmentEntry>,
    /// The object's repair record, if it has one (since version 2).
    pub record: Option<RecordId>,
}

/// The version 1 layout, kept to read old manifests.
#[derive(Deserialize)]
struct ManifestV1 {
    file_id: FileId,
    size: u64,
    segment_size: u64,
    k: u16,
    n: u16,
    coded: u16,
    created_at: u64,
    segments: Vec<SegmentEntry>,
}

impl From<ManifestV1> for Manifest {
    fn from(v: ManifestV1) -> Self {
        Manifest {
            file_id: v.file_id,
            size: v.size,
            segment_size: v.segment_size,
            k: v.k,
            n: v.n,
            coded: v.coded,
            created_at: v.created_at,
            segments: v.segments,
            record: None,
        }
    }
}

/// A manifest could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ManifestError {
    /// Its hash is not the one the capability names.
    #[error(
        "manifest hash mismatch: the holder returned different bytes than the capability names"
    )]
    HashMismatch,
    /// Not a sealed manifest.
    #[error("not a Cairn manifest (bad magic bytes)")]
    Magic,
    /// Written by a newer Cairn.
    #[error(
        "manifest format version {0} is not supported (this Cairn reads {MANIFEST_VERSION}); upgrade Cairn"
    )]
    Version(u16),
    /// The AEAD rejected it.
    #[error("manifest failed to decrypt: the capability's key does not match")]
    Auth,
    /// Decrypted but not decodable.
    #[error("manifest is malformed: {0}")]
    Malformed(String),
    /// Too large to store or accept.
    #[error(
        "manifest is {0} bytes, over the {MAX_MANIFEST_BYTES}-byte limit; use a larger segment size"
    )]
    TooLarge(usize),
}

/// Plaintext length of segment `i` of a file.
pub fn segment_plain_len(size: u64, segment_size: u64, i: u64) -> u64 {
    size.saturating_sub(i.saturating_mul(segment_size))
        .min(segment_size)
}

/// Number of segments of a file; an empty file has one.
pub fn segment_count(size: u64, segment_size: u64) -> u64 {
    size.div_ceil(segment_size.max(1)).max(1)
}

impl Manifest {
    /// Plaintext length of segment `i`.
    pub fn plain_len(&self, i: u64) -> u64 {
        segment_plain_len(self.size, self.segment_size, i)
    }

    /// Sealed (ciphertext) length of segment `i`.
    pub fn sealed_len(&self, i: u64) -> usize {
        // Validated manifests keep segment_size far below usize::MAX.
        usize::try_from(self.plain_len(i)).unwrap_or(usize::MAX) + TAG_LEN
    }

    /// Bytes of every piece of segment `i`.
    pub fn shard_len(&self, i: u64) -> usize {
        shard_size(self.sealed_len(i), self.k)
    }

    /// Checks internal consistency (defence in depth: sealed manifests are authenticated).
    pub fn validate(&self) -> Result<(), ManifestError> {
        let bad = |s: String| Err(ManifestError::Malformed(s));
        if self.k == 0 || self.k > self.n || self.n > self.coded || self.coded > MAX_PIECES {
            return bad(format!(
                "k={} n={} coded={} are inconsistent",
                self.k, self.n, self.coded
            ));
        }
        if self.segment_size == 0 || self.segment_size > crate::params::MAX_SEGMENT_SIZE {
            return bad(format!("segment size {} out of range", self.segment_size));
        }
        let expected = segment_count(self.size, self.segment_size);
        if self.segments.len() as u64 != expected {
            return bad(format!(
                "{} segments listed, size implies {expected}",
                self.segments.len()
            ));
        }
        for (s, seg) in self.segments.iter().enumerate() {
            let mut last: Option<u16> = None;
            for p in &seg.pieces {
                if p.index >= self.coded || last.is_some_and(|l| p.index <= l) {
                    return bad(format!("segment {s} has a bad piece index {}", p.index));
                }
                last = Some(p.index);
            }
        }
        Ok(())
    }

    /// Serializes and seals; returns the sealed bytes and their id.
    pub fn seal(&self, key: &FileKey) -> Result<(Vec<u8>, ManifestId), ManifestError> {
        let mut buf = Vec::with_capacity(64 + self.segments.len() * 64);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&MANIFEST_VERSION.to_be_bytes());
        let mut body =
            postcard::to_stdvec(self).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        key.seal_manifest(&buf[..6], &mut body);
        buf.extend_from_slice(&body);
        if buf.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge(buf.len()));
        }
        let id = ManifestId(*blake3::hash(&buf).as_bytes());
        Ok((buf, id))
    }

    /// Verifies the hash, decrypts and decodes sealed bytes.
    pub fn open(sealed: &[u8], id: &ManifestId, key: &FileKey) -> Result<Self, ManifestError> {
        if sealed.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge(sealed.len()));
        }
        if blake3::hash(sealed).as_bytes() != id.as_bytes() {
            return Err(ManifestError::HashMismatch);
        }
        if sealed.len() < 6 + TAG_LEN || &sealed[..4] != MAGIC {
            return Err(ManifestError::Magic);
        }
        let version = u16::from_be_bytes([sealed[4], sealed[5]]);
        if version == 0 || version > MANIFEST_VERSION {
            return Err(ManifestError::Version(version));
        }
        let mut body = sealed[6..].to_vec();
        key.open_manifest(&sealed[..6], &mut body)
            .map_err(|_| ManifestError::Auth)?;
        let malformed = |e: postcard::Error| ManifestError::Malformed(e.to_string());
        let m: Manifest = if version == 1 {
            postcard::from_bytes::<ManifestV1>(&body)
                .map_err(malformed)?
                .into()
        } else {
            postcard::from_bytes(&body).map_err(malformed)?
        };
        m.validate()?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Manifest {
        Manifest {
            file_id: FileId([3; 32]),
            size: 10,
            segment_size: 4,
            k: 2,
            n: 3,
            coded: 4,
            created_at: 1,
            segments: (0..3)
                .map(|_| SegmentEntry {
                    pieces: (0..3)
                        .map(|i| PieceEntry {
                            index: i,
                            hash: [i as u8; 32],
                            holder: vec![1, 2, 3],
                        })
                        .collect(),
                })
                .collect(),
            record: Some(RecordId([8; 32])),
        }
    }

    #[test]
    fn seal_open_roundtrip_and_lengths() {
        let key = FileKey([5; 32]);
        let m = sample();
        let (sealed, id) = m.seal(&key).unwrap();
        assert_eq!(Manifest::open(&sealed, &id, &key).unwrap(), m);
        assert_eq!((m.plain_len(0), m.plain_len(2)), (4, 2));
        assert_eq!(segment_count(0, 4), 1);
        assert_eq!(segment_count(8, 4), 2);
        assert!(matches!(
            Manifest::open(&sealed, &id, &FileKey([6; 32])),
            Err(ManifestError::Auth)
        ));
    }

    #[test]
    fn versioned() {
        let key = FileKey([5; 32]);
        let (mut sealed, _) = sample().seal(&key).unwrap();
        assert_eq!(&sealed[..6], b"CRNM\0\x02");
        sealed[5] = 3;
        let id = ManifestId(*blake3::hash(&sealed).as_bytes());
        assert_eq!(
            Manifest::open(&sealed, &id, &key),
            Err(ManifestError::Version(3))
        );
    }

    #[test]
    fn version_1_manifests_still_open() {
        // A version 1 body is the version 2 body without the record field.
        let key = FileKey([5; 32]);
        let m = Manifest {
            record: None,
            ..sample()
        };
        let mut body = postcard::to_stdvec(&m).unwrap();
        assert_eq!(body.pop(), Some(0)); // the `None` tag
        let mut sealed = b"CRNM\0\x01".to_vec();
        key.seal_manifest(&sealed[..6], &mut body);
        sealed.extend_from_slice(&body);
        let id = ManifestId(*blake3::hash(&sealed).as_bytes());
        assert_eq!(Manifest::open(&sealed, &id, &key).unwrap(), m);
    }

    #[test]
    fn inconsistent_manifests_are_refused() {
        let mut m = sample();
        m.segments.pop();
        assert!(m.validate().is_err());
        let mut m = sample();
        m.segments[0].pieces[1].index = 0;
        assert!(m.validate().is_err());
    }

    proptest! {
        #[test]
        fn any_flipped_manifest_byte_is_detected(pos in any::<usize>(), bit in 0u8..8) {
            let key = FileKey([5; 32]);
            let (mut sealed, id) = sample().seal(&key).unwrap();
            let i = pos % sealed.len();
            sealed[i] ^= 1 << bit;
            prop_assert!(Manifest::open(&sealed, &id, &key).is_err());
            // Even with a recomputed id, the AEAD or header check refuses it.
            let id2 = ManifestId(*blake3::hash(&sealed).as_bytes());
            prop_assert!(Manifest::open(&sealed, &id2, &key).is_err());
        }
    }
}
