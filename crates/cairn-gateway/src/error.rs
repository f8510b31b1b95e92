//! The gateway's errors and the one place they become S3 error codes and
//! HTTP statuses.

use s3s::{S3Error, S3ErrorCode};

/// Why a gateway operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// No such bucket.
    #[error("the bucket {0:?} does not exist")]
    NoSuchBucket(String),
    /// No such key.
    #[error("the key {0:?} does not exist")]
    NoSuchKey(String),
    /// No such version of a key.
    #[error("the key {0:?} has no version {1:?}")]
    NoSuchVersion(String, String),
    /// A GET, HEAD or tagging request of a version that is a delete marker.
    #[error("version {1:?} of the key {0:?} is a delete marker: it has no data or tags")]
    DeleteMarker(String, String),
    /// No such multipart upload.
    #[error("the multipart upload {0:?} does not exist (completed, aborted or never started)")]
    NoSuchUpload(String),
    /// The bucket exists (and is this account's).
    #[error("the bucket {0:?} already exists and is yours")]
    BucketAlreadyOwnedByYou(String),
    /// The bucket still holds objects or uploads.
    #[error("the bucket {0:?} is not empty: delete its objects and abort its uploads first")]
    BucketNotEmpty(String),
    /// A bucket name S3 does not allow.
    #[error("{0:?} is not a valid bucket name: {1}")]
    InvalidBucketName(String, String),
    /// A key over 1,024 bytes.
    #[error("an object key of {0} bytes is over S3's 1024-byte limit")]
    KeyTooLong(usize),
    /// The body does not match its Content-MD5.
    #[error("the body's MD5 {actual} does not match Content-MD5 {expected}")]
    BadDigest {
        /// Content-MD5, hex.
        expected: String,
        /// What arrived, hex.
        actual: String,
    },
    /// A Content-MD5 that is not base64 of 16 bytes.
    #[error("Content-MD5 {0:?} is not the base64 of an MD5 digest")]
    InvalidDigest(String),
    /// Over the object or part size limit.
    #[error("{size} bytes is over the {max}-byte limit of one object or part")]
    EntityTooLarge {
        /// Declared or received size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The body ended before its declared length, or stalled.
    #[error("the request body ended early: {0}")]
    IncompleteBody(String),
    /// A range outside the object.
    #[error("the requested range is not satisfiable for an object of {size} bytes")]
    InvalidRange {
        /// The object's size.
        size: u64,
    },
    /// A failed If-Match or If-Unmodified-Since.
    #[error("a precondition (If-Match or If-Unmodified-Since) failed")]
    PreconditionFailed,
    /// If-None-Match matched or If-Modified-Since says unchanged.
    #[error("not modified")]
    NotModified,
    /// A part list that does not match the uploaded parts.
    #[error("invalid part: {0}")]
    InvalidPart(String),
    /// A part but the last is under the smallest part size.
    #[error("part {number} has {size} bytes; every part but the last needs at least {min} bytes")]
    EntityTooSmall {
        /// The part number.
        number: i32,
        /// Its size.
        size: u64,
        /// The smallest allowed.
        min: u64,
    },
    /// A client with too many requests in flight.
    #[error("this client has {0} requests in flight; retry later")]
    SlowDown(usize),
    /// An unsigned request.
    #[error(
        "anonymous requests are refused: sign requests with a key from `cairn gateway keys create`"
    )]
    Anonymous,
    /// An access key that is not in `keys.json` (never made, or revoked).
    #[error("unknown or revoked access key")]
    UnknownAccessKey,
    /// Parts not in ascending order.
    #[error("the part list is not in ascending order of part number")]
    InvalidPartOrder,
    /// Some other bad argument.
    #[error("{0}")]
    InvalidArgument(String),
    /// A request S3 refuses as a whole (a customer key over plain HTTP, an
    /// SSE-C object read without its key).
    #[error("{0}")]
    InvalidRequest(String),
    /// An ACL other than the owner's full control.
    #[error("{0}")]
    AclNotSupported(String),
    /// A feature S3 has and this gateway does not (named in the crate docs).
    #[error("{0}")]
    NotImplemented(String),
    /// The bucket has no policy.
    #[error("the bucket {0:?} has no bucket policy")]
    NoSuchBucketPolicy(String),
    /// A tag set S3 would refuse (too many, too long, repeated, `aws:`).
    #[error("{0}")]
    InvalidTag(String),
    /// A request body S3 would not parse or accept as given.
    #[error("{0}")]
    MalformedXml(String),
    /// A bucket without a CORS configuration was asked for it.
    #[error("the bucket {0:?} has no CORS configuration")]
    NoSuchCorsConfiguration(String),
    /// A browser's cross-origin request that no CORS rule of the bucket allows.
    #[error("CORSResponse: {0}")]
    CorsForbidden(String),
    /// A bucket policy S3 would not accept.
    #[error("{0}")]
    MalformedPolicy(String),
    /// A request the bucket's policy does not permit.
    #[error("{0}")]
    Denied(String),
    /// A bucket without a website configuration was asked for it.
    #[error("the bucket {0:?} has no website configuration")]
    NoSuchWebsiteConfiguration(String),
    /// A bucket without lifecycle rules was asked for them.
    #[error("the bucket {0:?} has no lifecycle configuration")]
    NoSuchLifecycleConfiguration(String),
    /// A bucket without tags was asked for them.
    #[error("the bucket {0:?} has no tag set")]
    NoSuchTagSet(String),
    /// A KMS key id, ARN or alias that names no key of the account
    /// (S3's `KMS.NotFoundException`).
    #[error("{0}")]
    KmsNotFound(String),
    /// A disabled KMS key, for a write or a read (S3's
    /// `KMS.DisabledException`).
    #[error("{0}")]
    KmsDisabled(String),
    /// The bucket's index is at its size limit.
    #[error(
        "the bucket {0:?} is full: one shard of its index passed its bounds before it could split (too many writes at once); retry the request"
    )]
    BucketFull(String),
    /// The node could not be reached or could not reach a quorum.
    #[error("the Cairn node is unavailable: {0}")]
    Unavailable(String),
    /// The node found no Cairn object for a capability the index names
    /// (removed by a newer write this gateway has not seen yet, or lost).
    #[error("the object's data is not in the network: {0}")]
    DataNotFound(String),
    /// Anything else, with the node's sentence.
    #[error("{0}")]
    Internal(String),
}

impl From<GatewayError> for S3Error {
    fn from(e: GatewayError) -> Self {
        use GatewayError as G;
        let code = match &e {
            G::NoSuchBucket(_) => S3ErrorCode::NoSuchBucket,
            G::NoSuchKey(_) => S3ErrorCode::NoSuchKey,
            G::NoSuchUpload(_) => S3ErrorCode::NoSuchUpload,
            G::NoSuchVersion(..) => S3ErrorCode::NoSuchVersion,
            G::DeleteMarker(..) => S3ErrorCode::MethodNotAllowed,
            G::BucketAlreadyOwnedByYou(_) => S3ErrorCode::BucketAlreadyOwnedByYou,
            G::BucketNotEmpty(_) => S3ErrorCode::BucketNotEmpty,
            G::InvalidBucketName(..) => S3ErrorCode::InvalidBucketName,
            G::KeyTooLong(_) => S3ErrorCode::KeyTooLongError,
            G::BadDigest { .. } => S3ErrorCode::BadDigest,
            G::InvalidDigest(_) => S3ErrorCode::InvalidDigest,
            G::EntityTooLarge { .. } => S3ErrorCode::EntityTooLarge,
            G::IncompleteBody(_) => S3ErrorCode::IncompleteBody,
            G::InvalidRange { .. } => S3ErrorCode::InvalidRange,
            G::PreconditionFailed => S3ErrorCode::PreconditionFailed,
            G::NotModified => S3ErrorCode::NotModified,
            G::InvalidPart(_) => S3ErrorCode::InvalidPart,
            G::InvalidPartOrder => S3ErrorCode::InvalidPartOrder,
            G::EntityTooSmall { .. } => S3ErrorCode::EntityTooSmall,
            G::SlowDown(_) => S3ErrorCode::SlowDown,
            G::Anonymous => S3ErrorCode::AccessDenied,
            G::UnknownAccessKey => S3ErrorCode::InvalidAccessKeyId,
            G::InvalidArgument(_) => S3ErrorCode::InvalidArgument,
            G::InvalidRequest(_) => S3ErrorCode::InvalidRequest,
            G::InvalidTag(_) => S3ErrorCode::InvalidTag,
            G::NoSuchTagSet(_) => S3ErrorCode::NoSuchTagSet,
            G::MalformedPolicy(_) => S3ErrorCode::MalformedPolicy,
            G::Denied(_) => S3ErrorCode::AccessDenied,
            G::NoSuchLifecycleConfiguration(_) => S3ErrorCode::NoSuchLifecycleConfiguration,
            G::MalformedXml(_) => S3ErrorCode::MalformedXML,
            G::NoSuchCorsConfiguration(_) => S3ErrorCode::NoSuchCORSConfiguration,
            G::NoSuchWebsiteConfiguration(_) => S3ErrorCode::NoSuchWebsiteConfiguration,
            G::CorsForbidden(_) => S3ErrorCode::AccessDenied,
            G::AclNotSupported(_) => S3ErrorCode::AccessControlListNotSupported,
            G::NotImplemented(_) => S3ErrorCode::NotImplemented,
            G::NoSuchBucketPolicy(_) => S3ErrorCode::NoSuchBucketPolicy,
            G::BucketFull(_) => S3ErrorCode::Custom("BucketFull".into()),
            G::KmsNotFound(_) => S3ErrorCode::Custom("KMS.NotFoundException".into()),
            G::KmsDisabled(_) => S3ErrorCode::Custom("KMS.DisabledException".into()),
            G::Unavailable(_) => S3ErrorCode::ServiceUnavailable,
            G::DataNotFound(_) | G::Internal(_) => S3ErrorCode::InternalError,
        };
        let mut err = S3Error::with_message(code, e.to_string());
        match e {
            // 507 Insufficient Storage: clients do not retry it.
            G::BucketFull(_) => err.set_status_code(hyper::StatusCode::INSUFFICIENT_STORAGE),
            // As S3 answers KMS's refusals: a client error, not retried.
            G::KmsNotFound(_) | G::KmsDisabled(_) => {
                err.set_status_code(hyper::StatusCode::BAD_REQUEST);
            }
            _ => {}
        }
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(e: GatewayError) -> (String, u16) {
        let e = S3Error::from(e);
        let status = e
            .status_code()
            .or_else(|| e.code().status_code())
            .map_or(0, |s| s.as_u16());
        (e.code().as_str().to_string(), status)
    }

    #[test]
    fn errors_map_to_s3_codes_and_statuses() {
        let cases = [
            (GatewayError::NoSuchBucket("b".into()), "NoSuchBucket", 404),
            (GatewayError::NoSuchKey("k".into()), "NoSuchKey", 404),
            (GatewayError::NoSuchUpload("u".into()), "NoSuchUpload", 404),
            (
                GatewayError::NoSuchVersion("k".into(), "v".into()),
                "NoSuchVersion",
                404,
            ),
            (
                GatewayError::DeleteMarker("k".into(), "v".into()),
                "MethodNotAllowed",
                405,
            ),
            (
                GatewayError::BucketAlreadyOwnedByYou("b".into()),
                "BucketAlreadyOwnedByYou",
                409,
            ),
            (
                GatewayError::BucketNotEmpty("b".into()),
                "BucketNotEmpty",
                409,
            ),
            (
                GatewayError::InvalidBucketName("B".into(), "x".into()),
                "InvalidBucketName",
                400,
            ),
            (GatewayError::KeyTooLong(2000), "KeyTooLongError", 400),
            (
                GatewayError::BadDigest {
                    expected: "a".into(),
                    actual: "b".into(),
                },
                "BadDigest",
                400,
            ),
            (
                GatewayError::InvalidDigest("x".into()),
                "InvalidDigest",
                400,
            ),
            (
                GatewayError::EntityTooLarge { size: 2, max: 1 },
                "EntityTooLarge",
                400,
            ),
            (
                GatewayError::IncompleteBody("cut".into()),
                "IncompleteBody",
                400,
            ),
            (GatewayError::InvalidRange { size: 1 }, "InvalidRange", 416),
            (GatewayError::PreconditionFailed, "PreconditionFailed", 412),
            (GatewayError::NotModified, "NotModified", 304),
            (GatewayError::InvalidPart("p".into()), "InvalidPart", 400),
            (GatewayError::InvalidPartOrder, "InvalidPartOrder", 400),
            (
                GatewayError::InvalidRequest("r".into()),
                "InvalidRequest",
                400,
            ),
            (
                GatewayError::EntityTooSmall {
                    number: 1,
                    size: 1,
                    min: 2,
                },
                "EntityTooSmall",
                400,
            ),
            (GatewayError::SlowDown(64), "SlowDown", 503),
            (GatewayError::Anonymous, "AccessDenied", 403),
            (GatewayError::UnknownAccessKey, "InvalidAccessKeyId", 403),
            (GatewayError::BucketFull("b".into()), "BucketFull", 507),
            (
                GatewayError::KmsNotFound("k".into()),
                "KMS.NotFoundException",
                400,
            ),
            (
                GatewayError::KmsDisabled("k".into()),
                "KMS.DisabledException",
                400,
            ),
            (GatewayError::InvalidTag("t".into()), "InvalidTag", 400),
            (GatewayError::NoSuchTagSet("b".into()), "NoSuchTagSet", 404),
            (
                GatewayError::MalformedPolicy("p".into()),
                "MalformedPolicy",
                400,
            ),
            (GatewayError::Denied("d".into()), "AccessDenied", 403),
            (
                GatewayError::NoSuchLifecycleConfiguration("b".into()),
                "NoSuchLifecycleConfiguration",
                404,
            ),
            (GatewayError::MalformedXml("x".into()), "MalformedXML", 400),
            (
                GatewayError::NoSuchCorsConfiguration("b".into()),
                "NoSuchCORSConfiguration",
                404,
            ),
            (GatewayError::CorsForbidden("c".into()), "AccessDenied", 403),
            (
                GatewayError::AclNotSupported("a".into()),
                "AccessControlListNotSupported",
                400,
            ),
            (
                GatewayError::NotImplemented("n".into()),
                "NotImplemented",
                501,
            ),
            (
                GatewayError::NoSuchBucketPolicy("b".into()),
                "NoSuchBucketPolicy",
                404,
            ),
            (
                GatewayError::Unavailable("down".into()),
                "ServiceUnavailable",
                503,
            ),
            (GatewayError::Internal("oops".into()), "InternalError", 500),
        ];
        for (e, code, st) in cases {
            assert_eq!(status(e), (code.to_string(), st));
        }
    }

    #[test]
    fn the_message_carries_the_nodes_sentence() {
        let e = S3Error::from(GatewayError::Unavailable(
            "only 2 of 3 replicas took the write".into(),
        ));
        assert!(e.message().unwrap().contains("only 2 of 3 replicas"));
    }
}
