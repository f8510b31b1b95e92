//! Read capabilities: the one string that is all anyone needs to read a file.
//!
//! Text form: `cairn:` followed by unpadded URL-safe base64 of
//!
//! | bytes | field |
//! |---|---|
//! | 1 | format version (1) |
//! | 1 | kind (1 = immutable file, read) |
//! | 32 | file key |
//! | 32 | manifest id: BLAKE3 of the sealed manifest, its DHT locator and integrity hash |
//! | 4 | checksum: first 4 bytes of BLAKE3 over the preceding bytes |
//!
//! The checksum catches typos and truncation before any network traffic; the
//! manifest id and the AEAD catch everything else.

use std::fmt;
use std::str::FromStr;

use data_encoding::BASE64URL_NOPAD;

use crate::crypto::FileKey;
use crate::ids::ManifestId;

/// The prefix of every capability.
pub const PREFIX: &str = "cairn:";
/// The capability format this build writes and reads.
pub const CAP_VERSION: u8 = 1;
const KIND_READ: u8 = 1;
const BODY_LEN: usize = 1 + 1 + 32 + 32;
const LEN: usize = BODY_LEN + 4;

/// A capability string could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CapError {
    /// No `cairn:` prefix.
    #[error("not a Cairn capability: it must start with \"cairn:\"")]
    MissingPrefix,
    /// Not base64url.
    #[error("malformed capability: the text after \"cairn:\" is not URL-safe base64")]
    Encoding,
    /// Too short or too long.
    #[error("malformed capability: it decodes to {0} bytes, expected {LEN} (was it cut off?)")]
    Length(usize),
    /// Written by a newer Cairn.
    #[error(
        "capability format version {0} is not supported by this Cairn (supports {CAP_VERSION}); upgrade Cairn"
    )]
    Version(u8),
    /// A kind this build does not know.
    #[error("capability kind {0} is not supported by this Cairn")]
    Kind(u8),
    /// The checksum does not match.
    #[error("capability checksum mismatch: the string was mistyped or altered")]
    Checksum,
}

/// A read capability for an immutable file.
#[derive(Clone, PartialEq, Eq)]
pub struct ReadCap {
    /// The file key.
    pub key: FileKey,
    /// Locator and integrity hash of the sealed manifest.
    pub manifest: ManifestId,
}

impl fmt::Debug for ReadCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadCap")
            .field("manifest", &self.manifest)
            .finish_non_exhaustive()
    }
}

impl ReadCap {
    /// The binary form.
    pub fn to_bytes(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0] = CAP_VERSION;
        b[1] = KIND_READ;
        b[2..34].copy_from_slice(&self.key.0);
        b[34..66].copy_from_slice(&self.manifest.0);
        let sum = blake3::hash(&b[..BODY_LEN]);
        b[BODY_LEN..].copy_from_slice(&sum.as_bytes()[..4]);
        b
    }

    /// Parses the binary form.
    pub fn from_bytes(b: &[u8]) -> Result<Self, CapError> {
        if let Some(&v) = b.first()
            && v != CAP_VERSION
        {
            return Err(CapError::Version(v));
        }
        if b.len() != LEN {
            return Err(CapError::Length(b.len()));
        }
        if blake3::hash(&b[..BODY_LEN]).as_bytes()[..4] != b[BODY_LEN..] {
            return Err(CapError::Checksum);
        }
        if b[1] != KIND_READ {
            return Err(CapError::Kind(b[1]));
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&b[2..34]);
        let mut m = [0u8; 32];
        m.copy_from_slice(&b[34..66]);
        Ok(Self {
            key: FileKey(key),
            manifest: ManifestId(m),
        })
    }
}

impl fmt::Display for ReadCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", BASE64URL_NOPAD.encode(&self.to_bytes()))
    }
}

impl FromStr for ReadCap {
    type Err = CapError;

    fn from_str(s: &str) -> Result<Self, CapError> {
        let body = s
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(CapError::MissingPrefix)?;
        let bytes = BASE64URL_NOPAD
            .decode(body.as_bytes())
            .map_err(|_| CapError::Encoding)?;
        Self::from_bytes(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn encodes_and_decodes_to_itself(key in any::<[u8; 32]>(), m in any::<[u8; 32]>()) {
            let cap = ReadCap { key: FileKey(key), manifest: ManifestId(m) };
            let s = cap.to_string();
            prop_assert!(s.starts_with("cairn:"));
            prop_assert!(s[6..].bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
            prop_assert_eq!(s.parse::<ReadCap>().unwrap(), cap);
        }

        #[test]
        fn any_altered_byte_is_detected(key in any::<[u8; 32]>(), m in any::<[u8; 32]>(), pos in 1usize..LEN, bit in 0u8..8) {
            let cap = ReadCap { key: FileKey(key), manifest: ManifestId(m) };
            let mut b = cap.to_bytes();
            b[pos] ^= 1 << bit;
            prop_assert!(ReadCap::from_bytes(&b).is_err());
        }
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!("hello".parse::<ReadCap>(), Err(CapError::MissingPrefix));
        assert_eq!("cairn:!!".parse::<ReadCap>(), Err(CapError::Encoding));
        assert_eq!("cairn:AQE".parse::<ReadCap>(), Err(CapError::Length(2)));
        let cap = ReadCap {
            key: FileKey([1; 32]),
            manifest: ManifestId([2; 32]),
        };
        let mut b = cap.to_bytes();
        b[0] = 9;
        assert_eq!(ReadCap::from_bytes(&b), Err(CapError::Version(9)));
        let short = format!(
            "cairn:{}",
            BASE64URL_NOPAD.encode(&cap.to_bytes()[..LEN - 2])
        );
        assert_eq!(short.parse::<ReadCap>(), Err(CapError::Length(LEN - 2)));
        let s = cap.to_string();
        assert!(s[..s.len() - 4].parse::<ReadCap>().is_err());
    }
}
