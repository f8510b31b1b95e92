//! The values the gateway keeps in its account indexes (see the crate
//! docs for the layout). Each is postcard with a leading `version` field,
//! so a newer gateway can tell an older value from its own and migrate it.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::GatewayError;

/// The value format this build writes and reads.
pub const META_VERSION: u16 = 1;

/// A bucket, in namespace `buckets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketMeta {
    /// [`META_VERSION`].
    pub version: u16,
    /// When it was created (Unix ms).
    pub created_at_ms: u64,
}

/// One Cairn object holding a stretch of an S3 object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRef {
    /// Its read capability.
    pub cap: String,
    /// Its size in bytes.
    pub size: u64,
}

/// An object, in namespace `objects/<bucket>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// [`META_VERSION`].
    pub version: u16,
    /// Bytes.
    pub size: u64,
    /// S3 ETag, without quotes.
    pub etag: String,
    /// `Content-Type`, if the client gave one.
    pub content_type: Option<String>,
    /// `x-amz-meta-*`, sorted by name.
    pub user_metadata: Vec<(String, String)>,
    /// Last-Modified (Unix ms).
    pub last_modified_ms: u64,
    /// The data, in order: one part for a single PUT, the upload's parts
    /// for a completed multipart upload.
    pub parts: Vec<PartRef>,
    /// When the parts' lease ends (Unix seconds); renewed in the background.
    pub lease_expires_at: u64,
    /// Keys of [`PartList`] entries in namespace `partlists/<bucket>` that
    /// hold the parts instead, in order, when there are too many for one
    /// index value (then `parts` is empty here).
    pub part_lists: Vec<String>,
    /// The bytes themselves, for an object of at most [`INLINE_MAX`] bytes
    /// put in one request (then `parts` is empty): a tiny object costs one
    /// encrypted index entry instead of a Cairn object of its own, as
    /// Garage keeps small objects in its metadata.
    pub inline: Option<Vec<u8>>,
}

/// Objects up to this size are kept inline in their index entry.
pub const INLINE_MAX: u64 = 4096;

/// Up to [`PARTS_PER_LIST`] parts of a large multipart object, in
/// namespace `partlists/<bucket>` under `<list id>/<5-digit n>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartList {
    /// [`META_VERSION`].
    pub version: u16,
    /// The parts.
    pub parts: Vec<PartRef>,
}

/// Parts kept in an object's own entry, and in each [`PartList`]: about
/// 106 bytes each, so a list stays well under the 64 KiB value bound.
pub const PARTS_PER_LIST: usize = 400;

/// A multipart upload in progress, in namespace `uploads/<bucket>` under its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadMeta {
    /// [`META_VERSION`].
    pub version: u16,
    /// The object key it will complete to.
    pub key: String,
    /// When it began (Unix ms).
    pub initiated_ms: u64,
    /// `Content-Type` for the object.
    pub content_type: Option<String>,
    /// `x-amz-meta-*` for the object.
    pub user_metadata: Vec<(String, String)>,
}

/// One uploaded part, in namespace `uploads/<bucket>` under
/// `<upload id>/<part number, 5 digits>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartMeta {
    /// [`META_VERSION`].
    pub version: u16,
    /// Its read capability.
    pub cap: String,
    /// Bytes.
    pub size: u64,
    /// Hex MD5.
    pub etag: String,
    /// When it was stored (Unix ms).
    pub last_modified_ms: u64,
}

/// Encodes a value.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, GatewayError> {
    postcard::to_allocvec(value)
        .map_err(|e| GatewayError::Internal(format!("cannot encode an index value: {e}")))
}

/// Decodes a value of this build's version.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, GatewayError> {
    let (version, _) = postcard::take_from_bytes::<u16>(bytes)
        .map_err(|e| GatewayError::Internal(format!("an index value does not decode: {e}")))?;
    if version != META_VERSION {
        return Err(GatewayError::Internal(format!(
            "an index value has format version {version}; this gateway reads {META_VERSION}: upgrade it"
        )));
    }
    postcard::from_bytes(bytes)
        .map_err(|e| GatewayError::Internal(format!("an index value does not decode: {e}")))
}

/// The map key of part `number` of upload `upload_id`.
pub fn part_key(upload_id: &str, number: i32) -> String {
    format!("{upload_id}/{number:05}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_carry_their_version() {
        let m = ObjectMeta {
            version: META_VERSION,
            size: 5,
            etag: "abc".into(),
            content_type: Some("text/plain".into()),
            user_metadata: vec![("a".into(), "b".into())],
            last_modified_ms: 7,
            parts: vec![PartRef {
                cap: "cairn:x".into(),
                size: 5,
            }],
            lease_expires_at: 9,
            part_lists: vec![],
            inline: None,
        };
        let bytes = encode(&m).unwrap();
        assert_eq!(decode::<ObjectMeta>(&bytes).unwrap(), m);
        let mut newer = bytes.clone();
        newer[0] = 2;
        assert!(decode::<ObjectMeta>(&newer).is_err());
    }

    #[test]
    fn part_keys_sort_by_number() {
        assert!(part_key("u", 9) < part_key("u", 10));
        assert_eq!(part_key("u", 10000), "u/10000");
    }
}
