//! Identifiers: 32-byte ids for files, segments and pieces.
//!
//! Every id is a BLAKE3 output or a uniformly random value, so ids double as
//! keys in the Kademlia key space and as rendezvous points for placement.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// Lower-case hex, 64 characters.
            pub fn to_hex(&self) -> String {
                crate::hex(&self.0)
            }

            /// Parses 64 hex characters.
            pub fn from_hex(s: &str) -> Option<Self> {
                crate::unhex32(s).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Short form keeps logs readable; ids are uniformly random.
                write!(f, concat!(stringify!($name), "({})"), &self.to_hex()[..12])
            }
        }
    };
}

id_type!(
    /// A file's random id, chosen at upload; pieces and segments derive from it.
    FileId
);
id_type!(
    /// A stored blob on a node: an erasure-coded piece or an encrypted manifest.
    PieceId
);
id_type!(
    /// The BLAKE3 hash of an encrypted manifest: both its DHT locator and its integrity check.
    ManifestId
);

impl FileId {
    /// The id of segment `segment`'s piece `index`.
    pub fn piece_id(&self, segment: u64, index: u32) -> PieceId {
        let mut h = blake3::Hasher::new_derive_key("cairn v1 piece id");
        h.update(&self.0);
        h.update(&segment.to_be_bytes());
        h.update(&index.to_be_bytes());
        PieceId(*h.finalize().as_bytes())
    }

    /// The rendezvous key of a segment, used for DHT lookups and placement.
    pub fn segment_key(&self, segment: u64) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key("cairn v1 segment key");
        h.update(&self.0);
        h.update(&segment.to_be_bytes());
        *h.finalize().as_bytes()
    }
}

impl ManifestId {
    /// A manifest is stored as a blob whose piece id is its manifest id.
    pub fn piece_id(&self) -> PieceId {
        PieceId(self.0)
    }
}

/// Lower-case hex of arbitrary bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// Parses exactly 64 hex characters into 32 bytes.
pub fn unhex32(s: &str) -> Option<[u8; 32]> {
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_roundtrip() {
        let id = PieceId([0xab; 32]);
        assert_eq!(PieceId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(PieceId::from_hex("zz"), None);
    }

    #[test]
    fn piece_ids_differ_by_segment_and_index() {
        let f = FileId([7; 32]);
        assert_ne!(f.piece_id(0, 0), f.piece_id(0, 1));
        assert_ne!(f.piece_id(0, 0), f.piece_id(1, 0));
    }
}
