//! Client-side encryption: per-file keys, key derivation and the segment AEAD.
//!
//! Every file gets a fresh random 256-bit [`FileKey`]. Two subkeys are derived
//! from it with BLAKE3's key-derivation mode, one for segment data and one for
//! the manifest, so the two never share a (key, nonce) pair:
//!
//! - data key     = BLAKE3-derive_key("cairn v1 segment data key", file key)
//! - manifest key = BLAKE3-derive_key("cairn v1 manifest key", file key)
//!
//! Segments are sealed with AES-256-GCM (ring). Because each key is used for
//! exactly one file, nonces can be deterministic: the 96-bit nonce of segment
//! `i` is four zero bytes followed by `i` as a big-endian u64, and the manifest
//! uses the all-zero nonce under its own key. The associated data binds each
//! segment to its position and to whether it is the last one, so segments
//! cannot be reordered, and a file cannot be silently truncated.

use rand::RngCore;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

/// Bytes the AEAD adds to every sealed message.
pub const TAG_LEN: usize = 16;

/// A file's secret: whoever holds it can decrypt the file.
#[derive(Clone, PartialEq, Eq)]
pub struct FileKey(pub [u8; 32]);

impl std::fmt::Debug for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.write_str("FileKey(..)")
    }
}

/// Decryption failed: wrong key, or the ciphertext or its context was altered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("authentication failed: the data was altered or does not belong to this capability")]
pub struct AuthError;

impl FileKey {
    /// A fresh random key from the OS generator.
    pub fn random() -> Self {
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        Self(k)
    }

    fn subkey(&self, context: &str) -> LessSafeKey {
        let bytes = blake3::derive_key(context, &self.0);
        // AES-256 takes exactly 32 bytes, which derive_key always returns.
        let unbound = UnboundKey::new(&AES_256_GCM, &bytes).unwrap_or_else(|_| unreachable!());
        LessSafeKey::new(unbound)
    }

    /// The key that seals segments.
    pub fn data_key(&self) -> SegmentKey {
        SegmentKey(self.subkey("cairn v1 segment data key"))
    }

    /// Seals a manifest in place (appends the tag).
    pub fn seal_manifest(&self, aad: &[u8], buf: &mut Vec<u8>) {
        let key = self.subkey("cairn v1 manifest key");
        seal(&key, [0u8; 12], aad, buf);
    }

    /// Opens a sealed manifest in place (removes the tag).
    pub fn open_manifest(&self, aad: &[u8], buf: &mut Vec<u8>) -> Result<(), AuthError> {
        let key = self.subkey("cairn v1 manifest key");
        open(&key, [0u8; 12], aad, buf)
    }
}

/// The derived segment key of one file.
pub struct SegmentKey(LessSafeKey);

fn segment_nonce(segment: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&segment.to_be_bytes());
    n
}

fn segment_aad(segment: u64, last: bool) -> [u8; 21] {
    let mut aad = [0u8; 21];
    aad[..12].copy_from_slice(b"cairn seg v1");
    aad[12..20].copy_from_slice(&segment.to_be_bytes());
    aad[20] = u8::from(last);
    aad
}

impl SegmentKey {
    /// Encrypts segment `segment` in place and appends the tag.
    pub fn seal(&self, segment: u64, last: bool, buf: &mut Vec<u8>) {
        seal(
            &self.0,
            segment_nonce(segment),
            &segment_aad(segment, last),
            buf,
        );
    }

    /// Decrypts segment `segment` in place and strips the tag.
    pub fn open(&self, segment: u64, last: bool, buf: &mut Vec<u8>) -> Result<(), AuthError> {
        open(
            &self.0,
            segment_nonce(segment),
            &segment_aad(segment, last),
            buf,
        )
    }
}

fn seal(key: &LessSafeKey, nonce: [u8; 12], aad: &[u8], buf: &mut Vec<u8>) {
    let tag = key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf)
        // ring only fails for inputs beyond GCM's 64 GiB limit; segments are far smaller.
        .unwrap_or_else(|_| unreachable!("segment exceeds AES-GCM limit"));
    buf.extend_from_slice(tag.as_ref());
}

fn open(
    key: &LessSafeKey,
    nonce: [u8; 12],
    aad: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(), AuthError> {
    let len = key
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf)
        .map_err(|_| AuthError)?
        .len();
    buf.truncate(len);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn segments_are_bound_to_position() {
        let key = FileKey([1; 32]).data_key();
        let mut buf = b"hello".to_vec();
        key.seal(3, false, &mut buf);
        let sealed = buf.clone();
        assert_eq!(key.open(4, false, &mut buf.clone()), Err(AuthError));
        assert_eq!(key.open(3, true, &mut buf.clone()), Err(AuthError));
        key.open(3, false, &mut buf).unwrap();
        assert_eq!(buf, b"hello");
        let other = FileKey([2; 32]).data_key();
        assert_eq!(other.open(3, false, &mut sealed.clone()), Err(AuthError));
    }

    proptest! {
        #[test]
        fn any_flipped_ciphertext_byte_is_detected(data in proptest::collection::vec(any::<u8>(), 0..512), pos in any::<usize>(), bit in 0u8..8) {
            let key = FileKey([9; 32]).data_key();
            let mut buf = data.clone();
            key.seal(0, true, &mut buf);
            let i = pos % buf.len();
            buf[i] ^= 1 << bit;
            prop_assert_eq!(key.open(0, true, &mut buf), Err(AuthError));
        }
    }
}
