//! Node keys and signatures: what a node signs records, audit answers and
//! evidence with.
//!
//! A node's key is its libp2p Ed25519 identity, so a signer and a peer id are
//! the same thing: [`PublicKey::peer_bytes`] is the libp2p `PeerId` encoding of
//! the key (an identity multihash of the protobuf public key) and
//! [`PublicKey::from_peer_bytes`] takes it back. The core needs no libp2p to
//! check who signed what.
//!
//! Every signature covers a domain string and the message: one key signs many
//! kinds of statement, and a statement of one kind can never be replayed as
//! another.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The libp2p `PeerId` bytes of an Ed25519 key are this prefix and the key:
/// multihash code 0 (identity), length 36, then protobuf
/// `PublicKey { Type = Ed25519 (1), Data = 32 bytes }`.
const PEER_PREFIX: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];

/// A signature did not verify, or a key is not a valid Ed25519 point.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The bytes are not an Ed25519 public key.
    #[error("not a valid Ed25519 public key")]
    BadKey,
    /// The signature does not match the key and message.
    #[error("signature does not verify")]
    BadSignature,
}

/// A node's secret signing key.
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// The key with these 32 secret bytes (libp2p's Ed25519 secret).
    pub fn from_bytes(secret: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&secret))
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        Self::from_bytes(rand::random())
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// A 32-byte symmetric key derived from this secret for `context`
    /// (BLAKE3 `derive_key`). Each context names one use, so no derived key
    /// is another's and none reveals the signing key.
    pub(crate) fn derive(&self, context: &str) -> [u8; 32] {
        blake3::derive_key(context, self.0.as_bytes())
    }

    /// Signs `message` under `domain`.
    pub fn sign(&self, domain: &str, message: &[u8]) -> Signature {
        Signature(self.0.sign(&framed(domain, message)).to_bytes())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {:?})", self.public())
    }
}

/// Domain and message as one unambiguous byte string.
fn framed(domain: &str, message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + domain.len() + message.len());
    out.extend_from_slice(b"cairn\0");
    out.extend_from_slice(&(domain.len() as u32).to_be_bytes());
    out.extend_from_slice(domain.as_bytes());
    out.extend_from_slice(message);
    out
}

/// A node's Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// Checks `signature` over `message` under `domain` (strict: no malleable
    /// or small-order forms).
    pub fn verify(
        &self,
        domain: &str,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), SignatureError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| SignatureError::BadKey)?;
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        key.verify_strict(&framed(domain, message), &sig)
            .map_err(|_| SignatureError::BadSignature)
    }

    /// The libp2p `PeerId` bytes of this key.
    pub fn peer_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PEER_PREFIX.len() + 32);
        out.extend_from_slice(&PEER_PREFIX);
        out.extend_from_slice(&self.0);
        out
    }

    /// The key inside libp2p `PeerId` bytes, if they name an Ed25519 key.
    pub fn from_peer_bytes(peer: &[u8]) -> Option<Self> {
        let key = peer.strip_prefix(PEER_PREFIX.as_slice())?;
        key.try_into().ok().map(Self)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", &crate::hex(&self.0)[..12])
    }
}

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", &crate::hex(&self.0)[..12])
    }
}

// serde implements arrays only up to 32 elements; a signature travels as a
// byte string.
impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Signature;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Signature, E> {
                v.try_into()
                    .map(Signature)
                    .map_err(|_| E::invalid_length(v.len(), &self))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Signature, A::Error> {
                let mut out = [0u8; 64];
                for (i, b) in out.iter_mut().enumerate() {
                    *b = seq
                        .next_element()?
                        .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                }
                Ok(Signature(out))
            }
        }
        d.deserialize_bytes(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn signatures_bind_key_domain_and_message() {
        let key = SecretKey::from_bytes([3; 32]);
        let other = SecretKey::from_bytes([4; 32]);
        let sig = key.sign("test", b"hello");
        assert_eq!(key.public().verify("test", b"hello", &sig), Ok(()));
        assert!(key.public().verify("test", b"hellp", &sig).is_err());
        assert!(key.public().verify("tes", b"thello", &sig).is_err());
        assert!(other.public().verify("test", b"hello", &sig).is_err());
    }

    #[test]
    fn peer_bytes_are_libp2p_peer_ids() {
        // A libp2p PeerId of an Ed25519 key is 38 bytes starting 00 24 08 01 12 20;
        // its base58 form starts "12D3KooW".
        let key = SecretKey::from_bytes([9; 32]).public();
        let peer = key.peer_bytes();
        assert_eq!(peer.len(), 38);
        assert_eq!(PublicKey::from_peer_bytes(&peer), Some(key));
        assert_eq!(PublicKey::from_peer_bytes(&peer[1..]), None);
        assert_eq!(PublicKey::from_peer_bytes(b"short"), None);
    }

    proptest! {
        #[test]
        fn signature_serde_roundtrips(bytes in proptest::collection::vec(any::<u8>(), 64)) {
            let sig = Signature(bytes.try_into().unwrap());
            let enc = postcard::to_allocvec(&sig).unwrap();
            prop_assert_eq!(postcard::from_bytes::<Signature>(&enc).unwrap(), sig);
        }

        #[test]
        fn any_flipped_bit_breaks_a_signature(msg in proptest::collection::vec(any::<u8>(), 0..64), bit in 0usize..512) {
            let key = SecretKey::from_bytes([1; 32]);
            let mut sig = key.sign("d", &msg);
            sig.0[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(key.public().verify("d", &msg, &sig).is_err());
        }
    }
}
