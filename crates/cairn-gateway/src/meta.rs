//! The values the gateway keeps in its account indexes (see the crate
//! docs for the layout). Each is postcard with a leading `version` field,
//! so a newer gateway can tell an older value from its own and migrate it
//! ([`Value::upgrade`]): objects are at version 5 (SSE-KMS; 4 added
//! SSE-C, 3 version ids and delete markers, 2 tags), uploads at version 4
//! (SSE-KMS; 3 added SSE-C, 2 tags), bucket encryption at 1, bucket
//! policies at 3 (statements gained `Not*` elements and conditions at 2,
//! policy variables in resources and condition values at 3), lifecycle
//! configurations at 3 (rules gained size filters at 2, version actions
//! at 3), the rest at 1.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::GatewayError;

/// The format of values that have not changed since the first version.
pub const META_VERSION: u16 = 1;

/// A value kept in an index, with its format version.
pub trait Value: Serialize + DeserializeOwned {
    /// The format this build writes.
    const VERSION: u16;
    /// Reads a value of an older format `version` into this one (`None`:
    /// not a format this build knows).
    fn upgrade(version: u16, bytes: &[u8]) -> Option<Result<Self, postcard::Error>> {
        let _ = (version, bytes);
        None
    }
}

impl Value for BucketMeta {
    const VERSION: u16 = META_VERSION;
}
impl Value for PartMeta {
    const VERSION: u16 = META_VERSION;
}
impl Value for PartList {
    const VERSION: u16 = META_VERSION;
}
impl Value for TagsMeta {
    const VERSION: u16 = META_VERSION;
}

/// A per-bucket setting (tags, CORS, lifecycle): kept under the bucket
/// name in namespace [`Self::NS`], and only for the bucket created at
/// [`Self::created_at_ms`], so a bucket deleted and made again starts
/// without it.
pub trait BucketSetting: Value + Send {
    /// The index namespace.
    const NS: &'static str;
    /// [`BucketMeta::created_at_ms`] of the bucket it was set on.
    fn created_at_ms(&self) -> u64;
    /// Marks it as set on the bucket created at `at`.
    fn set_created_at_ms(&mut self, at: u64);
}

macro_rules! bucket_setting {
    ($($ty:ident in $ns:literal;)*) => {
        $(
            impl BucketSetting for $ty {
                const NS: &'static str = $ns;
                fn created_at_ms(&self) -> u64 {
                    self.created_at_ms
                }
                fn set_created_at_ms(&mut self, at: u64) {
                    self.created_at_ms = at;
                }
            }
        )*
    };
}

bucket_setting! {
    BucketTags in "buckettags";
    BucketCors in "bucketcors";
    BucketLifecycle in "bucketlifecycle";
    BucketPolicy in "bucketpolicy";
    BucketWebsite in "bucketwebsite";
    BucketVersioning in "bucketversioning";
    BucketEncryption in "bucketencryption";
}

impl Value for BucketEncryption {
    const VERSION: u16 = META_VERSION;
}

/// A bucket's default encryption (PutBucketEncryption), in namespace
/// `bucketencryption`; like [`BucketTags`], only for the bucket created at
/// `created_at_ms`. Without one a bucket's default is `AES256` (the node's
/// own encryption); with `aws:kms`, new objects that name no encryption are
/// sealed under the KMS key it names ([`crate::kms`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketEncryption {
    /// [`META_VERSION`].
    pub version: u16,
    /// [`BucketMeta::created_at_ms`] of the bucket it was set on.
    pub created_at_ms: u64,
    /// `aws:kms` (else `AES256`).
    pub kms: bool,
    /// `KMSMasterKeyID` as given (an id, key ARN or alias; none: the
    /// default key), resolved at each write so a disabled key is refused.
    pub kms_key_id: Option<String>,
    /// `BucketKeyEnabled`, echoed.
    pub bucket_key: bool,
}

impl Value for BucketWebsite {
    const VERSION: u16 = META_VERSION;
}

impl Value for BucketTags {
    const VERSION: u16 = META_VERSION;
}
impl Value for BucketCors {
    const VERSION: u16 = META_VERSION;
}
impl Value for BucketLifecycle {
    const VERSION: u16 = 3;
    fn upgrade(version: u16, bytes: &[u8]) -> Option<Result<Self, postcard::Error>> {
        match version {
            1 => Some(
                postcard::from_bytes::<BucketLifecycleV1>(bytes).map(|l| BucketLifecycle {
                    version: Self::VERSION,
                    created_at_ms: l.created_at_ms,
                    rules: l.rules.into_iter().map(Into::into).collect(),
                }),
            ),
            2 => Some(
                postcard::from_bytes::<BucketLifecycleV2>(bytes).map(|l| BucketLifecycle {
                    version: Self::VERSION,
                    created_at_ms: l.created_at_ms,
                    rules: l.rules.into_iter().map(Into::into).collect(),
                }),
            ),
            _ => None,
        }
    }
}

/// [`BucketLifecycle`] as version 2 kept it (rules without version actions).
#[derive(Deserialize)]
struct BucketLifecycleV2 {
    #[allow(dead_code)]
    version: u16,
    created_at_ms: u64,
    rules: Vec<crate::lifecycle::RuleV2>,
}

/// [`BucketLifecycle`] as version 1 kept it (rules without size filters).
#[derive(Deserialize)]
struct BucketLifecycleV1 {
    #[allow(dead_code)]
    version: u16,
    created_at_ms: u64,
    rules: Vec<crate::lifecycle::RuleV1>,
}
impl Value for BucketPolicy {
    const VERSION: u16 = 3;
    fn upgrade(version: u16, bytes: &[u8]) -> Option<Result<Self, postcard::Error>> {
        let upgraded =
            |created_at_ms, text, statements: Vec<crate::access::Statement>| BucketPolicy {
                version: Self::VERSION,
                created_at_ms,
                text,
                policy: crate::access::Policy { statements },
            };
        match version {
            1 => Some(postcard::from_bytes::<BucketPolicyV1>(bytes).map(|p| {
                upgraded(
                    p.created_at_ms,
                    p.text,
                    p.statements.into_iter().map(Into::into).collect(),
                )
            })),
            2 => Some(postcard::from_bytes::<BucketPolicyV2>(bytes).map(|p| {
                upgraded(
                    p.created_at_ms,
                    p.text,
                    p.statements.into_iter().map(Into::into).collect(),
                )
            })),
            _ => None,
        }
    }
}

/// A bucket's website configuration, in namespace `bucketwebsite`; like
/// [`BucketTags`], only for the bucket created at `created_at_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketWebsite {
    /// [`META_VERSION`].
    pub version: u16,
    /// [`BucketMeta::created_at_ms`] of the bucket it was set on.
    pub created_at_ms: u64,
    /// The configuration.
    pub site: crate::website::Site,
}

/// [`BucketPolicy`] as version 1 kept it.
#[derive(Deserialize)]
struct BucketPolicyV1 {
    #[allow(dead_code)]
    version: u16,
    created_at_ms: u64,
    text: String,
    statements: Vec<crate::access::StatementV1>,
}

/// [`BucketPolicy`] as version 2 kept it (strings without policy variables).
#[derive(Deserialize)]
struct BucketPolicyV2 {
    #[allow(dead_code)]
    version: u16,
    created_at_ms: u64,
    text: String,
    statements: Vec<crate::access::StatementV2>,
}

impl Value for ObjectMeta {
    const VERSION: u16 = 5;
    fn upgrade(version: u16, bytes: &[u8]) -> Option<Result<Self, postcard::Error>> {
        // Each older format is read into version 4's, which gains no
        // SSE-KMS.
        let v4 = match version {
            4 => postcard::from_bytes::<ObjectMetaV4>(bytes),
            3 => postcard::from_bytes::<ObjectMetaV3>(bytes).map(|o| ObjectMetaV4 {
                version: 4,
                size: o.size,
                etag: o.etag,
                content_type: o.content_type,
                user_metadata: o.user_metadata,
                last_modified_ms: o.last_modified_ms,
                parts: o.parts,
                lease_expires_at: o.lease_expires_at,
                part_lists: o.part_lists,
                inline: o.inline,
                tags: o.tags,
                version_id: o.version_id,
                delete_marker: o.delete_marker,
                sse_c: None,
            }),
            1 | 2 => {
                let v2 = if version == 1 {
                    postcard::from_bytes::<ObjectMetaV1>(bytes).map(|o| ObjectMetaV2 {
                        version: 2,
                        size: o.size,
                        etag: o.etag,
                        content_type: o.content_type,
                        user_metadata: o.user_metadata,
                        last_modified_ms: o.last_modified_ms,
                        parts: o.parts,
                        lease_expires_at: o.lease_expires_at,
                        part_lists: o.part_lists,
                        inline: o.inline,
                        tags: vec![],
                    })
                } else {
                    postcard::from_bytes::<ObjectMetaV2>(bytes)
                };
                v2.map(|o| ObjectMetaV4 {
                    version: 4,
                    size: o.size,
                    etag: o.etag,
                    content_type: o.content_type,
                    user_metadata: o.user_metadata,
                    last_modified_ms: o.last_modified_ms,
                    parts: o.parts,
                    lease_expires_at: o.lease_expires_at,
                    part_lists: o.part_lists,
                    inline: o.inline,
                    tags: o.tags,
                    version_id: None,
                    delete_marker: false,
                    sse_c: None,
                })
            }
            _ => return None,
        };
        Some(v4.map(|o| ObjectMeta {
            version: Self::VERSION,
            size: o.size,
            etag: o.etag,
            content_type: o.content_type,
            user_metadata: o.user_metadata,
            last_modified_ms: o.last_modified_ms,
            parts: o.parts,
            lease_expires_at: o.lease_expires_at,
            part_lists: o.part_lists,
            inline: o.inline,
            tags: o.tags,
            version_id: o.version_id,
            delete_marker: o.delete_marker,
            sse_c: o.sse_c,
            sse_kms: None,
        }))
    }
}

impl Value for UploadMeta {
    const VERSION: u16 = 4;
    fn upgrade(version: u16, bytes: &[u8]) -> Option<Result<Self, postcard::Error>> {
        let v3 = match version {
            1 => postcard::from_bytes::<UploadMetaV1>(bytes).map(|u| UploadMetaV3 {
                version: 3,
                key: u.key,
                initiated_ms: u.initiated_ms,
                content_type: u.content_type,
                user_metadata: u.user_metadata,
                tags: vec![],
                sse_c: None,
            }),
            2 => postcard::from_bytes::<UploadMetaV2>(bytes).map(|u| UploadMetaV3 {
                version: 3,
                key: u.key,
                initiated_ms: u.initiated_ms,
                content_type: u.content_type,
                user_metadata: u.user_metadata,
                tags: u.tags,
                sse_c: None,
            }),
            3 => postcard::from_bytes::<UploadMetaV3>(bytes),
            _ => return None,
        };
        Some(v3.map(|u| UploadMeta {
            version: Self::VERSION,
            key: u.key,
            initiated_ms: u.initiated_ms,
            content_type: u.content_type,
            user_metadata: u.user_metadata,
            tags: u.tags,
            sse_c: u.sse_c,
            sse_kms: None,
        }))
    }
}

/// [`ObjectMeta`] as version 4 wrote it (SSE-C, no SSE-KMS).
#[derive(Deserialize)]
struct ObjectMetaV4 {
    #[allow(dead_code)]
    version: u16,
    size: u64,
    etag: String,
    content_type: Option<String>,
    user_metadata: Vec<(String, String)>,
    last_modified_ms: u64,
    parts: Vec<PartRef>,
    lease_expires_at: u64,
    part_lists: Vec<String>,
    inline: Option<Vec<u8>>,
    tags: Vec<(String, String)>,
    version_id: Option<String>,
    delete_marker: bool,
    sse_c: Option<crate::sse::SseC>,
}

/// [`UploadMeta`] as version 3 wrote it (SSE-C, no SSE-KMS).
#[derive(Deserialize)]
struct UploadMetaV3 {
    #[allow(dead_code)]
    version: u16,
    key: String,
    initiated_ms: u64,
    content_type: Option<String>,
    user_metadata: Vec<(String, String)>,
    tags: Vec<(String, String)>,
    sse_c: Option<crate::sse::SseC>,
}

/// [`ObjectMeta`] as version 1 wrote it (no tags).
#[derive(Deserialize)]
struct ObjectMetaV1 {
    #[allow(dead_code)]
    version: u16,
    size: u64,
    etag: String,
    content_type: Option<String>,
    user_metadata: Vec<(String, String)>,
    last_modified_ms: u64,
    parts: Vec<PartRef>,
    lease_expires_at: u64,
    part_lists: Vec<String>,
    inline: Option<Vec<u8>>,
}

/// [`ObjectMeta`] as version 2 wrote it (no version id, no delete markers).
#[derive(Deserialize)]
struct ObjectMetaV2 {
    #[allow(dead_code)]
    version: u16,
    size: u64,
    etag: String,
    content_type: Option<String>,
    user_metadata: Vec<(String, String)>,
    last_modified_ms: u64,
    parts: Vec<PartRef>,
    lease_expires_at: u64,
    part_lists: Vec<String>,
    inline: Option<Vec<u8>>,
    tags: Vec<(String, String)>,
}

/// [`ObjectMeta`] as version 3 wrote it (no SSE-C).
#[derive(Deserialize)]
struct ObjectMetaV3 {
    #[allow(dead_code)]
    version: u16,
    size: u64,
    etag: String,
    content_type: Option<String>,
    user_metadata: Vec<(String, String)>,
    last_modified_ms: u64,
    parts: Vec<PartRef>,
    lease_expires_at: u64,
    part_lists: Vec<String>,
    inline: Option<Vec<u8>>,
    tags: Vec<(String, String)>,
    version_id: Option<String>,
    delete_marker: bool,
}

/// [`UploadMeta`] as version 2 wrote it (no SSE-C).
#[derive(Deserialize)]
struct UploadMetaV2 {
    #[allow(dead_code)]
    version: u16,
    key: String,
    initiated_ms: u64,
    content_type: Option<String>,
    user_metadata: Vec<(String, String)>,
    tags: Vec<(String, String)>,
}

/// [`UploadMeta`] as version 1 wrote it (no tags).
#[derive(Deserialize)]
struct UploadMetaV1 {
    #[allow(dead_code)]
    version: u16,
    key: String,
    initiated_ms: u64,
    content_type: Option<String>,
    user_metadata: Vec<(String, String)>,
}

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
    /// The tags it was written with (`x-amz-tagging`); a later
    /// PutObjectTagging keeps its set in a [`TagsMeta`] instead.
    pub tags: Vec<(String, String)>,
    /// Its S3 version id, written while the bucket's versioning is
    /// enabled (`None`: the `null` version).
    pub version_id: Option<String>,
    /// Whether this version is a delete marker (no data; the key reads as
    /// deleted while it is the current version).
    pub delete_marker: bool,
    /// Sealed under a customer-provided key (SSE-C): every part (and
    /// `inline`) is in [`crate::sse`]'s stored format.
    pub sse_c: Option<crate::sse::SseC>,
    /// Sealed under a KMS key of the account (SSE-KMS, [`crate::kms`]), in
    /// the same stored format. At most one of `sse_c` and `sse_kms`.
    pub sse_kms: Option<crate::kms::SseKms>,
}

impl ObjectMeta {
    /// A delete marker made at `now_ms`.
    pub fn marker(now_ms: u64, version_id: Option<String>) -> Self {
        ObjectMeta {
            version: Self::VERSION,
            size: 0,
            etag: String::new(),
            content_type: None,
            user_metadata: vec![],
            last_modified_ms: now_ms,
            parts: vec![],
            lease_expires_at: u64::MAX,
            part_lists: vec![],
            inline: None,
            tags: vec![],
            version_id,
            delete_marker: true,
            sse_c: None,
            sse_kms: None,
        }
    }

    /// The version id S3 shows for it (`null` for the null version).
    pub fn shown_version(&self) -> &str {
        self.version_id.as_deref().unwrap_or(NULL_VERSION)
    }
}

/// The version id of an object written while versioning was off or
/// suspended.
pub const NULL_VERSION: &str = "null";

/// Whether a bucket keeps versions (PutBucketVersioning), in namespace
/// `bucketversioning`; like [`BucketTags`], only for the bucket created
/// at `created_at_ms`. Once on, it is never off again, only suspended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketVersioning {
    /// [`META_VERSION`].
    pub version: u16,
    /// [`BucketMeta::created_at_ms`] of the bucket it was set on.
    pub created_at_ms: u64,
    /// Whether new writes get version ids (`Enabled`) or replace the null
    /// version (`Suspended`); both keep the versions already made.
    pub enabled: bool,
}

impl Value for BucketVersioning {
    const VERSION: u16 = META_VERSION;
}

/// Tags set on an existing object or version (PutObjectTagging,
/// DeleteObjectTagging), in namespace `tags/<bucket>` under the object key
/// (the `null` version) or `<key>\0<version id>` (a version with an id;
/// see [`crate::versioning::tags_key`]). They are an entry of their own,
/// not a rewrite of the object's or version's entry, so setting tags can
/// never bring back the data of an object that a concurrent PUT replaced
/// or a version a concurrent DELETE removed; they apply only while the
/// entry is the write they were set on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagsMeta {
    /// [`META_VERSION`].
    pub version: u16,
    /// [`generation`] of the object entry the tags belong to.
    pub generation: String,
    /// The tags, in the order given.
    pub tags: Vec<(String, String)>,
}

/// A bucket's tags (PutBucketTagging), in namespace `buckettags` under the
/// bucket name. They apply only to the bucket created at `created_at_ms`:
/// a bucket deleted and made again starts without tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketTags {
    /// [`META_VERSION`].
    pub version: u16,
    /// [`BucketMeta::created_at_ms`] of the bucket they were set on.
    pub created_at_ms: u64,
    /// The tags, in the order given.
    pub tags: Vec<(String, String)>,
}

/// A bucket's CORS rules (PutBucketCors), in namespace `bucketcors` under
/// the bucket name; like [`BucketTags`], only for the bucket created at
/// `created_at_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketCors {
    /// [`META_VERSION`].
    pub version: u16,
    /// [`BucketMeta::created_at_ms`] of the bucket they were set on.
    pub created_at_ms: u64,
    /// The rules, in the order given (the first that matches applies).
    pub rules: Vec<crate::cors::Rule>,
}

/// A bucket's lifecycle rules, in namespace `bucketlifecycle` under the
/// bucket name; like [`BucketTags`], only for the bucket created at
/// `created_at_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketLifecycle {
    /// [`META_VERSION`].
    pub version: u16,
    /// [`BucketMeta::created_at_ms`] of the bucket they were set on.
    pub created_at_ms: u64,
    /// The rules, in the order given.
    pub rules: Vec<crate::lifecycle::Rule>,
}

/// A bucket's policy: the text as given (GetBucketPolicy returns it) and
/// as parsed, in namespace `bucketpolicy`; like [`BucketTags`], only for
/// the bucket created at `created_at_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketPolicy {
    /// 3 (version 1 statements had no `Not*` elements or conditions,
    /// version 2 strings no policy variables).
    pub version: u16,
    /// [`BucketMeta::created_at_ms`] of the bucket it was set on.
    pub created_at_ms: u64,
    /// The JSON as the client sent it.
    pub text: String,
    /// What it says.
    pub policy: crate::access::Policy,
}

/// Which write of an object `m` is: a hash of its ETag, time, size and
/// data (its part lists' random ids, or else its parts' capabilities), so
/// every PUT, copy or completion is a new generation, and `m` with its part
/// lists read in is the same generation as without.
pub fn generation(m: &ObjectMeta) -> String {
    let caps: Vec<&str> = if m.part_lists.is_empty() {
        m.parts.iter().map(|p| p.cap.as_str()).collect()
    } else {
        vec![]
    };
    let described =
        postcard::to_allocvec(&(&m.etag, m.last_modified_ms, m.size, &m.part_lists, caps))
            .unwrap_or_default();
    hex::encode(&blake3::hash(&described).as_bytes()[..16])
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
    /// `x-amz-tagging` for the object.
    pub tags: Vec<(String, String)>,
    /// The customer key (SSE-C) every part is sealed under.
    pub sse_c: Option<crate::sse::SseC>,
    /// The KMS key (SSE-KMS) every part is sealed under, chosen at
    /// CreateMultipartUpload.
    pub sse_kms: Option<crate::kms::SseKms>,
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

/// Decodes a value of this build's version or an older one it knows.
pub fn decode<T: Value>(bytes: &[u8]) -> Result<T, GatewayError> {
    let bad =
        |e: postcard::Error| GatewayError::Internal(format!("an index value does not decode: {e}"));
    let (version, _) = postcard::take_from_bytes::<u16>(bytes).map_err(bad)?;
    if version == T::VERSION {
        return postcard::from_bytes(bytes).map_err(bad);
    }
    match T::upgrade(version, bytes) {
        Some(v) => v.map_err(bad),
        None => Err(GatewayError::Internal(format!(
            "an index value has format version {version}; this gateway reads up to {}: upgrade it",
            T::VERSION
        ))),
    }
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
            version: ObjectMeta::VERSION,
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
            tags: vec![("k".into(), "v".into())],
            version_id: Some("00ff".into()),
            delete_marker: false,
            sse_c: Some(crate::sse::SseC {
                format: crate::sse::SSE_FORMAT,
                key_md5: [3; 16],
                salt: [4; 32],
            }),
            sse_kms: None,
        };
        let bytes = encode(&m).unwrap();
        assert_eq!(decode::<ObjectMeta>(&bytes).unwrap(), m);
        let kms = ObjectMeta {
            sse_c: None,
            sse_kms: Some(crate::kms::SseKms {
                format: crate::kms::KMS_FORMAT,
                key_id: crate::kms::new_key_id(),
                salt: [5; 32],
                context: Some(r#"{"a":"b"}"#.into()),
                bucket_key: true,
            }),
            ..m.clone()
        };
        assert_eq!(decode::<ObjectMeta>(&encode(&kms).unwrap()).unwrap(), kms);
        let e = BucketEncryption {
            version: META_VERSION,
            created_at_ms: 3,
            kms: true,
            kms_key_id: Some("alias/aws/s3".into()),
            bucket_key: false,
        };
        assert_eq!(decode::<BucketEncryption>(&encode(&e).unwrap()).unwrap(), e);
        let marker = ObjectMeta::marker(9, None);
        assert_eq!(
            decode::<ObjectMeta>(&encode(&marker).unwrap()).unwrap(),
            marker
        );
        assert_eq!(marker.shown_version(), NULL_VERSION);
        let mut newer = bytes.clone();
        newer[0] = 6;
        assert!(decode::<ObjectMeta>(&newer).is_err());
    }

    /// Lifecycle rules kept by version 1 (before size filters) still read.
    #[test]
    fn version_1_lifecycle_rules_upgrade() {
        use crate::lifecycle::RuleV1;
        let old = postcard::to_allocvec(&(
            1u16,
            9u64,
            vec![RuleV1 {
                id: Some("logs".into()),
                enabled: true,
                prefix: "logs/".into(),
                tags: vec![],
                expire_days: Some(30),
                expire_at_ms: None,
                abort_days: None,
            }],
        ))
        .unwrap();
        let l = decode::<BucketLifecycle>(&old).unwrap();
        assert_eq!((l.version, l.created_at_ms), (3, 9));
        let r = &l.rules[0];
        assert_eq!((r.prefix.as_str(), r.expire_days), ("logs/", Some(30)));
        assert_eq!((r.size_greater_than, r.size_less_than), (None, None));
        assert_eq!((r.noncurrent_days, r.expired_marker), (None, false));
        assert_eq!(decode::<BucketLifecycle>(&encode(&l).unwrap()).unwrap(), l);
        // Version 2 (size filters, no version actions) too.
        let v2 = postcard::to_allocvec(&(
            2u16,
            9u64,
            vec![crate::lifecycle::RuleV2 {
                id: None,
                enabled: true,
                prefix: "big/".into(),
                tags: vec![],
                size_greater_than: Some(10),
                size_less_than: None,
                expire_days: Some(3),
                expire_at_ms: None,
                abort_days: None,
            }],
        ))
        .unwrap();
        let l2 = decode::<BucketLifecycle>(&v2).unwrap();
        assert_eq!(l2.rules[0].size_greater_than, Some(10));
        assert_eq!(l2.rules[0].noncurrent_days, None);
    }

    /// A policy kept by version 1 (statements without `Not*` elements or
    /// conditions) still reads, and means what it meant.
    #[test]
    fn version_1_bucket_policies_upgrade() {
        use crate::access::template::Template;
        use crate::access::{Principals, StatementV1};
        let old = postcard::to_allocvec(&(
            1u16,
            7u64,
            "{...}",
            vec![StatementV1 {
                allow: true,
                principals: Principals::Anyone,
                actions: vec!["s3:GetObject".into()],
                resources: vec!["arn:aws:s3:::b/*".into()],
            }],
        ))
        .unwrap();
        let p = decode::<BucketPolicy>(&old).unwrap();
        assert_eq!(
            (p.version, p.created_at_ms, p.text.as_str()),
            (3, 7, "{...}")
        );
        let s = &p.policy.statements[0];
        assert!(s.allow && !s.not_principals && !s.not_actions && !s.not_resources);
        assert!(s.conditions.is_empty());
        assert_eq!(s.resources, [Template::text("arn:aws:s3:::b/*")]);
        // And the current version round-trips.
        assert_eq!(decode::<BucketPolicy>(&encode(&p).unwrap()).unwrap(), p);
    }

    /// A policy kept by version 2 (plain strings, before policy variables)
    /// still reads, and means what it meant: version 2 took a resource's
    /// `${` as text, so it still does.
    #[test]
    fn version_2_bucket_policies_upgrade() {
        use crate::access::template::Template;
        use crate::access::{
            Condition, ConditionV2, Context, Principals, Set, StatementV2, Target, Test, Who,
        };
        let old = postcard::to_allocvec(&(
            2u16,
            8u64,
            "{...}",
            vec![StatementV2 {
                allow: true,
                principals: Principals::Anyone,
                not_principals: false,
                actions: vec!["s3:GetObject".into()],
                not_actions: false,
                resources: vec!["arn:aws:s3:::b/${aws:username}/*".into()],
                not_resources: false,
                conditions: vec![ConditionV2 {
                    test: Test::StringLike,
                    negated: false,
                    if_exists: true,
                    set: Set::Single,
                    key: "aws:referer".into(),
                    values: vec!["https://*".into()],
                }],
            }],
        ))
        .unwrap();
        let p = decode::<BucketPolicy>(&old).unwrap();
        assert_eq!((p.version, p.created_at_ms), (3, 8));
        let s = &p.policy.statements[0];
        assert_eq!(
            s.resources,
            [Template::text("arn:aws:s3:::b/${aws:username}/*")]
        );
        assert_eq!(
            s.conditions,
            [Condition {
                test: Test::StringLike,
                negated: false,
                if_exists: true,
                set: Set::Single,
                key: "aws:referer".into(),
                values: vec![Template::text("https://*")],
            }]
        );
        let mut cx = Context::new();
        cx.set("aws:username", "ann");
        let get = |key| {
            crate::access::permits(
                Some(&p.policy),
                "b",
                Who::Anonymous,
                "s3:GetObject",
                Target::Object(key),
                &cx,
            )
        };
        assert!(get("${aws:username}/x"));
        assert!(!get("ann/x"));
        assert_eq!(decode::<BucketPolicy>(&encode(&p).unwrap()).unwrap(), p);
    }

    /// Entries written by version 1 (before tags) still read, with no tags.
    #[test]
    fn version_1_objects_and_uploads_upgrade() {
        #[derive(Serialize)]
        struct V1<'a> {
            version: u16,
            size: u64,
            etag: &'a str,
            content_type: Option<&'a str>,
            user_metadata: Vec<(&'a str, &'a str)>,
            last_modified_ms: u64,
            parts: Vec<PartRef>,
            lease_expires_at: u64,
            part_lists: Vec<String>,
            inline: Option<Vec<u8>>,
        }
        let old = postcard::to_allocvec(&V1 {
            version: 1,
            size: 3,
            etag: "e",
            content_type: None,
            user_metadata: vec![("a", "b")],
            last_modified_ms: 5,
            parts: vec![],
            lease_expires_at: 6,
            part_lists: vec![],
            inline: Some(b"abc".to_vec()),
        })
        .unwrap();
        let m = decode::<ObjectMeta>(&old).unwrap();
        assert_eq!(
            (m.version, m.size, m.inline.as_deref()),
            (5, 3, Some(&b"abc"[..]))
        );
        assert!(m.sse_c.is_none() && m.sse_kms.is_none());
        assert_eq!(m.user_metadata, [("a".to_string(), "b".to_string())]);
        assert!(m.tags.is_empty());
        assert!(m.version_id.is_none() && !m.delete_marker);
        // Version 2 (tags, no versions) reads as the null version.
        let v2 = postcard::to_allocvec(&(
            2u16,
            3u64,
            "e",
            None::<&str>,
            Vec::<(String, String)>::new(),
            5u64,
            Vec::<PartRef>::new(),
            6u64,
            Vec::<String>::new(),
            Some(b"abc".to_vec()),
            vec![("t", "u")],
        ))
        .unwrap();
        let m2 = decode::<ObjectMeta>(&v2).unwrap();
        assert_eq!(
            (m2.version, m2.tags.len(), m2.version_id.as_deref()),
            (5, 1, None)
        );
        assert!(!m2.delete_marker);
        // Version 3 (versions, no SSE-C) keeps its version id and marker.
        let v3 = postcard::to_allocvec(&(
            3u16,
            0u64,
            "",
            None::<&str>,
            Vec::<(String, String)>::new(),
            5u64,
            Vec::<PartRef>::new(),
            6u64,
            Vec::<String>::new(),
            None::<Vec<u8>>,
            Vec::<(String, String)>::new(),
            Some("00aa"),
            true,
        ))
        .unwrap();
        let m3 = decode::<ObjectMeta>(&v3).unwrap();
        assert_eq!((m3.version, m3.version_id.as_deref()), (5, Some("00aa")));
        assert!(m3.delete_marker && m3.sse_c.is_none() && m3.sse_kms.is_none());
        // Version 4 (SSE-C, no SSE-KMS) keeps its customer key's record.
        let sse_c = crate::sse::SseC {
            format: crate::sse::SSE_FORMAT,
            key_md5: [1; 16],
            salt: [2; 32],
        };
        let v4 = postcard::to_allocvec(&(
            4u16,
            7u64,
            "e4",
            Some("text/plain"),
            Vec::<(String, String)>::new(),
            5u64,
            vec![PartRef {
                cap: "cairn:p".into(),
                size: 7,
            }],
            6u64,
            Vec::<String>::new(),
            None::<Vec<u8>>,
            Vec::<(String, String)>::new(),
            Some("00bb"),
            false,
            Some(&sse_c),
        ))
        .unwrap();
        let m4 = decode::<ObjectMeta>(&v4).unwrap();
        assert_eq!(
            (m4.version, m4.size, m4.version_id.as_deref()),
            (5, 7, Some("00bb"))
        );
        assert_eq!(
            (m4.sse_c.as_ref(), m4.sse_kms.as_ref()),
            (Some(&sse_c), None)
        );
        assert_eq!(m4.parts.len(), 1);
        let upload = postcard::to_allocvec(&(
            1u16,
            "key",
            9u64,
            Some("text/plain"),
            Vec::<(String, String)>::new(),
        ))
        .unwrap();
        let u = decode::<UploadMeta>(&upload).unwrap();
        assert_eq!(
            (u.key.as_str(), u.initiated_ms, u.tags.len()),
            ("key", 9, 0)
        );
        assert!(u.sse_c.is_none());
        let upload2 = postcard::to_allocvec(&(
            2u16,
            "key",
            9u64,
            None::<&str>,
            Vec::<(String, String)>::new(),
            vec![("t", "u")],
        ))
        .unwrap();
        let u2 = decode::<UploadMeta>(&upload2).unwrap();
        assert_eq!((u2.version, u2.tags.len()), (4, 1));
        assert!(u2.sse_c.is_none() && u2.sse_kms.is_none());
        // Version 3 (SSE-C, no SSE-KMS) keeps its customer key's record.
        let upload3 = postcard::to_allocvec(&(
            3u16,
            "key",
            9u64,
            None::<&str>,
            Vec::<(String, String)>::new(),
            Vec::<(String, String)>::new(),
            Some(&sse_c),
        ))
        .unwrap();
        let u3 = decode::<UploadMeta>(&upload3).unwrap();
        assert_eq!((u3.version, u3.sse_c.as_ref()), (4, Some(&sse_c)));
        assert!(u3.sse_kms.is_none());
        // Values that never changed stay at version 1.
        let b = encode(&BucketMeta {
            version: META_VERSION,
            created_at_ms: 1,
        })
        .unwrap();
        assert_eq!(decode::<BucketMeta>(&b).unwrap().created_at_ms, 1);
        let mut again = m.clone();
        assert_eq!(generation(&again), generation(&m));
        again.last_modified_ms += 1;
        assert_ne!(generation(&again), generation(&m));
    }

    #[test]
    fn part_keys_sort_by_number() {
        assert!(part_key("u", 9) < part_key("u", 10));
        assert_eq!(part_key("u", 10000), "u/10000");
    }
}
