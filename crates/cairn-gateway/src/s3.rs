//! The S3 operations (s3s's [`S3`] trait) over the account indexes and the
//! node's objects. Each handler checks its input with [`crate::rules`],
//! reads or writes index entries ([`crate::indexes`]) and moves bytes with
//! [`crate::body`]; errors become S3 errors only in [`crate::error`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result};

use crate::body::{self, BodyRules, ChannelStream};
use crate::error::GatewayError;
use crate::indexes::{Change, Indexes};
use crate::kms::{KeyRef, KmsStore, SseKms};
use crate::listing::{self, ListParams, list_page, uploads_page};
use crate::meta::{
    self, BucketCors, BucketLifecycle, BucketMeta, BucketPolicy, BucketSetting, BucketTags,
    INLINE_MAX, META_VERSION, ObjectMeta, PARTS_PER_LIST, PartList, PartMeta, PartRef, TagsMeta,
    UploadMeta, Value,
};
use crate::meta::{BucketEncryption, BucketVersioning, BucketWebsite};
use crate::node::Node;
use crate::policy::{self, AclRequest};
use crate::rules::{self, Condition, Conditions};
use crate::sse::{self, CustomerKey, DataKey, SseC};
use crate::versioning::{Versioning, tags_key, versions_ns};
use cairn_core::shard;

/// The index namespace of the bucket list.
pub const BUCKETS: &str = "buckets";

/// S3's smallest part, except the last.
pub const MIN_PART: u64 = 5 << 20;
/// How long a GET waits for the node to begin sending (it fetches and
/// decodes the first segment first).
const FIRST_ANSWER: Duration = Duration::from_secs(120);
/// S3's part numbers.
const MAX_PART_NUMBER: i32 = 10_000;

/// The index namespace of a bucket's objects.
pub fn objects_ns(bucket: &str) -> String {
    format!("objects/{bucket}")
}

/// The index namespace of a bucket's multipart uploads.
pub fn uploads_ns(bucket: &str) -> String {
    format!("uploads/{bucket}")
}

/// The index namespace of tags set on a bucket's existing objects (and
/// object versions: see [`crate::versioning::tags_key`]).
pub fn tags_ns(bucket: &str) -> String {
    format!("tags/{bucket}")
}

/// The index namespace of a bucket's long part lists.
pub fn partlists_ns(bucket: &str) -> String {
    format!("partlists/{bucket}")
}

/// What describes a new object: Content-Type, user metadata, tags.
type Described = (Option<String>, Vec<(String, String)>, Vec<(String, String)>);

/// What every object is: encrypted with AES-256 (by the node, before coding).
fn encrypted() -> ServerSideEncryption {
    ServerSideEncryption::from_static(ServerSideEncryption::AES256)
}

/// `x-amz-tagging`, checked.
fn tagging(header: Option<&str>) -> Result<Vec<(String, String)>, GatewayError> {
    header.map_or(Ok(vec![]), rules::parse_tagging)
}

/// How the gateway behaves.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The region it reports.
    pub region: String,
    /// The largest object or part.
    pub max_object: u64,
    /// A request body that sends nothing this long is cut.
    pub body_idle: Duration,
    /// The smallest part but the last of a multipart upload ([`MIN_PART`]).
    pub min_part: u64,
    /// Bucket websites are served to hosts `BUCKET.web_domain`.
    pub web_domain: Option<String>,
}

/// The S3 service.
pub struct Gateway {
    pub(crate) node: Node,
    pub(crate) idx: Arc<Indexes>,
    /// The account's KMS keys (SSE-KMS).
    pub(crate) kms: KmsStore,
    settings: Settings,
    cleanup: tokio::sync::mpsc::Sender<Cleanup>,
    settle: tokio::sync::mpsc::Sender<Settle>,
    /// Copies running at once. A copy holds two of the node's transfer
    /// slots (a get feeding a put); unbounded, concurrent copies could hold
    /// every slot with puts whose gets then wait forever.
    copies: Arc<tokio::sync::Semaphore>,
    /// Conditional writes take the lock of their key's stripe from their
    /// check to their index write, so two through this gateway cannot both
    /// pass (see [`Gateway::commit_checked`]).
    write_locks: Arc<[tokio::sync::Mutex<()>]>,
}

/// Copies at once: half of the node's transfer slots at most.
const COPIES: usize = 2;

/// Lock stripes of conditional writes.
const WRITE_LOCKS: usize = 64;

/// Data and part lists no entry names any more, removed in the background.
enum Cleanup {
    Caps(Vec<String>),
    Lists { bucket: String, keys: Vec<String> },
}

/// A write to settle later: whether it won its key (see
/// [`Gateway::commit_object`]).
struct Settle {
    due: tokio::time::Instant,
    bucket: String,
    key: String,
    generation: String,
    caps: Vec<String>,
    lists: Vec<String>,
}

/// Writes waiting to be settled; past this a write is settled at once.
const SETTLE_QUEUE: usize = 4096;
/// How long after a write its winner is read: past the 2 s a cached index
/// copy serves, so one fetch of a shard settles every write to it in that
/// time instead of one fetch per write.
const SETTLE_AFTER: Duration = Duration::from_millis(2500);

/// Reads each write's key once it is due and removes the write's data if
/// another write won the key.
async fn settle_worker(
    idx: Arc<Indexes>,
    cleanup: tokio::sync::mpsc::Sender<Cleanup>,
    mut rx: tokio::sync::mpsc::Receiver<Settle>,
) {
    // Jobs arrive in the order they fall due.
    while let Some(s) = rx.recv().await {
        tokio::time::sleep_until(s.due).await;
        let now = match idx.get(&objects_ns(&s.bucket), &s.key).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("settling a write to {}/{}: {e}", s.bucket, s.key);
                continue;
            }
        };
        // Deleted since: the delete removed what it replaced.
        let Some(now) = now else { continue };
        let won =
            meta::decode::<ObjectMeta>(&now).is_ok_and(|w| meta::generation(&w) == s.generation);
        if !won {
            tracing::debug!("{}/{}: a concurrent write won", s.bucket, s.key);
            let jobs = [
                Cleanup::Caps(s.caps),
                Cleanup::Lists {
                    bucket: s.bucket,
                    keys: s.lists,
                },
            ];
            for job in jobs {
                if cleanup.try_send(job).is_err() {
                    tracing::warn!(
                        "the cleanup queue is full; unreferenced data expires with its lease instead"
                    );
                }
            }
        }
    }
}

/// Whether a write of `generation` lost its key, which now holds `now`.
/// A key deleted since did not lose it: the delete removed what it
/// replaced.
fn lost(now: Option<&[u8]>, generation: &str) -> bool {
    now.is_some_and(|v| {
        !meta::decode::<ObjectMeta>(v).is_ok_and(|w| meta::generation(&w) == generation)
    })
}

/// Cleanups waiting; past this they are dropped (with a warning): the data
/// expires with its lease, which nobody renews.
const CLEANUP_QUEUE: usize = 1024;
/// Removals run at once by the cleanup worker.
const CLEANUP_PARALLEL: usize = 8;

/// Removes what it is sent, a bounded number at a time.
async fn cleanup_worker(
    node: Node,
    idx: Arc<Indexes>,
    mut rx: tokio::sync::mpsc::Receiver<Cleanup>,
) {
    use futures::StreamExt;
    while let Some(job) = rx.recv().await {
        match job {
            Cleanup::Caps(caps) => {
                futures::stream::iter(caps)
                    .for_each_concurrent(CLEANUP_PARALLEL, |cap| {
                        let node = node.clone();
                        async move {
                            if let Err(e) = node.rm(&cap).await {
                                tracing::warn!(
                                    "removing unreferenced data failed (it expires with its lease): {e}"
                                );
                            }
                        }
                    })
                    .await;
            }
            Cleanup::Lists { bucket, keys } => {
                let changes: Vec<Change> =
                    keys.into_iter().map(|k| (k.into_bytes(), None)).collect();
                if let Err(e) = idx.write(&partlists_ns(&bucket), &bucket, &changes).await {
                    tracing::warn!("removing part lists of {bucket} failed: {e}");
                }
            }
        }
    }
}

pub(crate) fn ms_to_ts(ms: u64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms))
}

fn ts_secs(ts: Timestamp) -> i64 {
    time::OffsetDateTime::from(ts).unix_timestamp()
}

/// A lifecycle rule as S3 sends it, checked for what Cairn can do: it has
/// one storage class, so transitions (`Transition`,
/// `NoncurrentVersionTransition`) are `NotImplemented`.
fn lifecycle_from_s3(r: LifecycleRule) -> Result<crate::lifecycle::Rule, GatewayError> {
    let unsupported = |what: &str| {
        Err(GatewayError::NotImplemented(format!(
            "lifecycle {what} are not supported: Cairn has one storage class"
        )))
    };
    if r.transitions.as_ref().is_some_and(|t| !t.is_empty())
        || r.noncurrent_version_transitions
            .as_ref()
            .is_some_and(|t| !t.is_empty())
    {
        return unsupported("transitions");
    }
    let expiration = r.expiration.unwrap_or_default();
    let noncurrent = r.noncurrent_version_expiration.unwrap_or_default();
    let size = |v: Option<i64>| -> Result<Option<u64>, GatewayError> {
        v.map(|v| {
            u64::try_from(v).map_err(|_| {
                GatewayError::InvalidArgument("an object size filter is not negative".into())
            })
        })
        .transpose()
    };
    let (mut prefix, mut tags) = (r.prefix.unwrap_or_default(), vec![]);
    let (mut greater, mut less) = (None, None);
    if let Some(f) = r.filter {
        let tag = |t: Tag| (t.key.unwrap_or_default(), t.value.unwrap_or_default());
        if let Some(p) = f.prefix {
            prefix = p;
        }
        if let Some(t) = f.tag {
            tags.push(tag(t));
        }
        greater = size(f.object_size_greater_than)?;
        less = size(f.object_size_less_than)?;
        if let Some(and) = f.and {
            if let Some(p) = and.prefix {
                prefix = p;
            }
            tags.extend(and.tags.unwrap_or_default().into_iter().map(tag));
            greater = size(and.object_size_greater_than)?.or(greater);
            less = size(and.object_size_less_than)?.or(less);
        }
    }
    let days = |d: Option<i32>| -> Result<Option<u32>, GatewayError> {
        d.map(|d| {
            u32::try_from(d).map_err(|_| {
                GatewayError::InvalidArgument("lifecycle days must be a positive integer".into())
            })
        })
        .transpose()
    };
    let expire_at_ms = expiration
        .date
        .map(|d| u64::try_from(ts_secs(d)).unwrap_or(0).saturating_mul(1000));
    Ok(crate::lifecycle::Rule {
        id: r.id,
        enabled: r.status.as_str() == ExpirationStatus::ENABLED,
        prefix,
        tags,
        size_greater_than: greater,
        size_less_than: less,
        expire_days: days(expiration.days)?,
        expire_at_ms,
        abort_days: days(
            r.abort_incomplete_multipart_upload
                .and_then(|a| a.days_after_initiation),
        )?,
        noncurrent_days: days(noncurrent.noncurrent_days)?,
        newer_noncurrent: days(noncurrent.newer_noncurrent_versions)?,
        expired_marker: expiration.expired_object_delete_marker == Some(true),
    })
}

/// A lifecycle rule as S3 reports it.
fn lifecycle_to_s3(r: &crate::lifecycle::Rule) -> LifecycleRule {
    let tag = |(k, v): &(String, String)| Tag {
        key: Some(k.clone()),
        value: Some(v.clone()),
    };
    let size = |v: Option<u64>| v.and_then(|v| i64::try_from(v).ok());
    let (gt, lt) = (size(r.size_greater_than), size(r.size_less_than));
    let conditions = usize::from(!r.prefix.is_empty())
        + r.tags.len()
        + usize::from(gt.is_some())
        + usize::from(lt.is_some());
    let filter = match r.tags.as_slice() {
        [] if conditions <= 1 => LifecycleRuleFilter {
            prefix: (gt.is_none() && lt.is_none()).then(|| r.prefix.clone()),
            object_size_greater_than: gt,
            object_size_less_than: lt,
            ..Default::default()
        },
        [one] if conditions == 1 => LifecycleRuleFilter {
            tag: Some(tag(one)),
            ..Default::default()
        },
        many => LifecycleRuleFilter {
            and: Some(LifecycleRuleAndOperator {
                prefix: Some(r.prefix.clone()),
                tags: (!many.is_empty()).then(|| many.iter().map(tag).collect()),
                object_size_greater_than: gt,
                object_size_less_than: lt,
            }),
            ..Default::default()
        },
    };
    let expiration = (r.expire_days.is_some() || r.expire_at_ms.is_some() || r.expired_marker)
        .then(|| LifecycleExpiration {
            days: r.expire_days.and_then(|d| i32::try_from(d).ok()),
            date: r.expire_at_ms.map(ms_to_ts),
            expired_object_delete_marker: r.expired_marker.then_some(true),
        });
    LifecycleRule {
        id: r.id.clone(),
        status: ExpirationStatus::from_static(if r.enabled {
            ExpirationStatus::ENABLED
        } else {
            ExpirationStatus::DISABLED
        }),
        filter: Some(filter),
        expiration,
        abort_incomplete_multipart_upload: r.abort_days.map(|d| AbortIncompleteMultipartUpload {
            days_after_initiation: i32::try_from(d).ok(),
        }),
        noncurrent_version_expiration: r.noncurrent_days.map(|d| NoncurrentVersionExpiration {
            noncurrent_days: i32::try_from(d).ok(),
            newer_noncurrent_versions: r.newer_noncurrent.and_then(|n| i32::try_from(n).ok()),
        }),
        noncurrent_version_transitions: None,
        prefix: None,
        transitions: None,
    }
}

/// Tags as S3 sends them.
fn tag_set(tags: Vec<(String, String)>) -> Vec<Tag> {
    tags.into_iter()
        .map(|(k, v)| Tag {
            key: Some(k),
            value: Some(v),
        })
        .collect()
}

/// Tags as S3 sent them.
pub(crate) fn tag_pairs(set: Vec<Tag>) -> Vec<(String, String)> {
    set.into_iter()
        .map(|t| (t.key.unwrap_or_default(), t.value.unwrap_or_default()))
        .collect()
}

fn etag(s: &str) -> ETag {
    ETag::Strong(s.to_string())
}

fn ok<T>(output: T) -> S3Result<S3Response<T>> {
    Ok(S3Response::new(output))
}

fn sorted_metadata(m: Option<Metadata>) -> Vec<(String, String)> {
    let mut v: Vec<_> = m.unwrap_or_default().into_iter().collect();
    v.sort();
    v
}

fn to_metadata(v: &[(String, String)]) -> Option<Metadata> {
    (!v.is_empty()).then(|| v.iter().cloned().collect::<HashMap<_, _>>())
}

/// Percent-encodes for `encoding-type=url` listings (all but unreserved and `/`).
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn encode_token(marker: &str) -> String {
    hex::encode(marker)
}

fn decode_token(token: &str) -> Result<String, GatewayError> {
    hex::decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            GatewayError::InvalidArgument(
                "the continuation token is not one this gateway gave".into(),
            )
        })
}

impl Gateway {
    /// A gateway over these indexes and node.
    /// Must be called within a tokio runtime (it starts the cleanup worker).
    pub fn new(node: Node, idx: Arc<Indexes>, settings: Settings) -> Self {
        let (cleanup, rx) = tokio::sync::mpsc::channel(CLEANUP_QUEUE);
        tokio::spawn(cleanup_worker(node.clone(), idx.clone(), rx));
        let (settle, rx) = tokio::sync::mpsc::channel(SETTLE_QUEUE);
        tokio::spawn(settle_worker(idx.clone(), cleanup.clone(), rx));
        Self {
            node,
            kms: KmsStore::new(idx.clone(), &settings.region),
            idx,
            settings,
            cleanup,
            settle,
            copies: Arc::new(tokio::sync::Semaphore::new(COPIES)),
            write_locks: (0..WRITE_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    fn enqueue(&self, job: Cleanup) {
        if self.cleanup.try_send(job).is_err() {
            tracing::warn!(
                "the cleanup queue is full; unreferenced data expires with its lease instead"
            );
        }
    }

    pub(crate) async fn require_bucket(&self, bucket: &str) -> Result<(), GatewayError> {
        self.bucket_meta(bucket).await.map(|_| ())
    }

    async fn bucket_meta(&self, bucket: &str) -> Result<BucketMeta, GatewayError> {
        match self.idx.get(BUCKETS, bucket).await? {
            Some(v) => meta::decode(&v),
            None => Err(GatewayError::NoSuchBucket(bucket.into())),
        }
    }

    /// A per-bucket setting, if it was set on the bucket of that name there
    /// is now.
    pub(crate) async fn bucket_setting<T: BucketSetting>(
        &self,
        bucket: &str,
    ) -> Result<Option<T>, GatewayError> {
        let b = self.bucket_meta(bucket).await?;
        match self.idx.get(T::NS, bucket).await? {
            Some(v) => {
                let t: T = meta::decode(&v)?;
                Ok((t.created_at_ms() == b.created_at_ms).then_some(t))
            }
            None => Ok(None),
        }
    }

    /// Sets a setting of the existing `bucket`, or removes it (`None`).
    pub(crate) async fn set_bucket_setting<T: BucketSetting>(
        &self,
        bucket: &str,
        value: Option<T>,
    ) -> Result<(), GatewayError> {
        let b = self.bucket_meta(bucket).await?;
        let value = match value {
            Some(mut v) => {
                v.set_created_at_ms(b.created_at_ms);
                Some(meta::encode(&v)?)
            }
            None => None,
        };
        self.idx
            .write(T::NS, bucket, &[(bucket.as_bytes().to_vec(), value)])
            .await?;
        Ok(())
    }

    /// The policy of `bucket` (none for a missing bucket).
    pub async fn bucket_policy(
        &self,
        bucket: &str,
    ) -> Result<Option<crate::access::Policy>, GatewayError> {
        match self.bucket_setting::<BucketPolicy>(bucket).await {
            Ok(p) => Ok(p.map(|p| p.policy)),
            Err(GatewayError::NoSuchBucket(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The lifecycle rules of `bucket` (none for a missing bucket).
    pub async fn lifecycle_rules(
        &self,
        bucket: &str,
    ) -> Result<Vec<crate::lifecycle::Rule>, GatewayError> {
        match self.bucket_setting::<BucketLifecycle>(bucket).await {
            Ok(c) => Ok(c.map(|c| c.rules).unwrap_or_default()),
            Err(GatewayError::NoSuchBucket(_)) => Ok(vec![]),
            Err(e) => Err(e),
        }
    }

    /// Removes object `bucket/key` as DeleteObject does; with `generation`,
    /// only if the entry there is still that write (a lifecycle rule must
    /// not remove an object a PUT has just replaced). Says whether it did.
    pub(crate) async fn remove_object(
        &self,
        bucket: &str,
        key: &str,
        generation: Option<&str>,
    ) -> Result<bool, GatewayError> {
        let Some(m) = self.object(bucket, key).await? else {
            return Ok(false);
        };
        if generation.is_some_and(|g| g != meta::generation(&m)) {
            return Ok(false);
        }
        let mode = self.versioning(bucket).await?;
        if mode != Versioning::Off {
            // The object stays as a noncurrent version.
            self.mark_deleted(bucket, key, mode).await?;
            return Ok(true);
        }
        self.idx
            .write(
                &objects_ns(bucket),
                bucket,
                &[(key.as_bytes().to_vec(), None)],
            )
            .await?;
        self.forget_lists(bucket, m.part_lists.clone());
        self.forget(m.parts.into_iter().map(|p| p.cap).collect());
        self.forget_tags(bucket, &[key]).await?;
        Ok(true)
    }

    /// The domain bucket websites are served under, if they are.
    pub fn web_domain(&self) -> Option<&str> {
        self.settings.web_domain.as_deref()
    }

    /// The website configuration of `bucket` (none for a missing bucket).
    pub async fn website(
        &self,
        bucket: &str,
    ) -> Result<Option<crate::website::Site>, GatewayError> {
        match self.bucket_setting::<BucketWebsite>(bucket).await {
            Ok(w) => Ok(w.map(|w| w.site)),
            Err(GatewayError::NoSuchBucket(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether object `bucket/key` exists (for a website's `/dir` → `/dir/`).
    pub(crate) async fn website_exists(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<bool, GatewayError> {
        // The entry alone says it: no part lists to read in.
        Ok(match self.idx.get(&objects_ns(bucket), key).await? {
            Some(v) => !meta::decode::<ObjectMeta>(&v)?.delete_marker,
            None => false,
        })
    }

    /// Object `bucket/key` as a website answers it, or `None` if there is
    /// no such object: streamed, the headers only for `HEAD`; a browser's
    /// `If-None-Match` or `If-Modified-Since` that still holds is a 304,
    /// and a `Range` (`bytes=a-b`, `bytes=-n`) a 206 (416 if unsatisfiable).
    pub(crate) async fn website_object(
        &self,
        bucket: &str,
        key: &str,
        head: bool,
        request: &hyper::HeaderMap,
    ) -> Result<Option<hyper::Response<s3s::Body>>, GatewayError> {
        let Some(m) = self.object(bucket, key).await? else {
            return Ok(None);
        };
        let header = |name: &str| request.get(name).and_then(|v| v.to_str().ok());
        let date = |name: &str| {
            header(name)
                .and_then(|v| Timestamp::parse(TimestampFormat::HttpDate, v).ok())
                .map(ts_secs)
        };
        let etag_header = |name: &str| {
            header(name).and_then(|v| ETagCondition::parse_http_header(v.as_bytes()).ok())
        };
        let conditions = Conditions {
            if_match: etag_header("if-match"),
            if_none_match: etag_header("if-none-match"),
            if_modified_since: date("if-modified-since"),
            if_unmodified_since: date("if-unmodified-since"),
        };
        let mut modified = Vec::new();
        let _ = ms_to_ts(m.last_modified_ms).format(TimestampFormat::HttpDate, &mut modified);
        let quoted = format!("\"{}\"", m.etag);
        let answer = |status: u16| {
            hyper::Response::builder()
                .status(status)
                .header("etag", quoted.as_str())
                .header("last-modified", modified.as_slice())
                .header("accept-ranges", "bytes")
        };
        let build = |r: hyper::http::response::Builder, body| {
            r.body(body)
                .map_err(|e| GatewayError::Internal(format!("a website answer: {e}")))
        };
        match rules::evaluate(&conditions, &m.etag, m.last_modified_ms) {
            Condition::Proceed => {}
            Condition::NotModified => return build(answer(304), s3s::Body::empty()).map(Some),
            Condition::PreconditionFailed => {
                return build(answer(412), s3s::Body::empty()).map(Some);
            }
        }
        let range = match header("range").map(Range::parse) {
            None => None,
            Some(Ok(r)) => match rules::resolve_range(&r, m.size) {
                Ok(r) => Some(r),
                Err(_) => {
                    let r = answer(416).header("content-range", format!("bytes */{}", m.size));
                    return build(r, s3s::Body::empty()).map(Some);
                }
            },
            // A Range header that does not parse is ignored, as HTTP says.
            Some(Err(_)) => None,
        };
        let (start, end) = range.unwrap_or((0, m.size));
        let body = if head || start == end {
            s3s::Body::empty()
        } else {
            // An SSE-C object needs its key, which a browser never sends;
            // an SSE-KMS one a signed request, which it never makes.
            s3s::Body::from(StreamingBlob::wrap(
                self.open_read(&m, start, end, (None, Signed::Anonymous))
                    .await?,
            ))
        };
        let mut r = answer(if range.is_some() { 206 } else { 200 })
            .header(
                "content-type",
                m.content_type.as_deref().unwrap_or("binary/octet-stream"),
            )
            .header("content-length", end - start);
        if range.is_some() {
            r = r.header(
                "content-range",
                format!("bytes {start}-{}/{}", end.saturating_sub(1), m.size),
            );
        }
        for (k, v) in &m.user_metadata {
            r = r.header(format!("x-amz-meta-{k}"), v);
        }
        build(r, body).map(Some)
    }

    /// The CORS rules of `bucket` (none for a missing bucket).
    pub async fn cors_rules(&self, bucket: &str) -> Result<Vec<crate::cors::Rule>, GatewayError> {
        match self.bucket_setting::<BucketCors>(bucket).await {
            Ok(c) => Ok(c.map(|c| c.rules).unwrap_or_default()),
            Err(GatewayError::NoSuchBucket(_)) => Ok(vec![]),
            Err(e) => Err(e),
        }
    }

    /// The current version of `bucket/key`, unless there is none or it is
    /// a delete marker.
    pub(crate) async fn object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<ObjectMeta>, GatewayError> {
        Ok(self
            .current(bucket, key)
            .await?
            .filter(|m| !m.delete_marker))
    }

    /// The current version of `bucket/key`, delete markers included.
    pub(crate) async fn current(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<ObjectMeta>, GatewayError> {
        match self.idx.get(&objects_ns(bucket), key).await? {
            Some(v) => Ok(Some(self.resolve(bucket, meta::decode(&v)?).await?)),
            None => Ok(None),
        }
    }

    /// `m` with its parts in `parts`, read from its part lists if it has any.
    pub(crate) async fn resolve(
        &self,
        bucket: &str,
        mut m: ObjectMeta,
    ) -> Result<ObjectMeta, GatewayError> {
        let ns = partlists_ns(bucket);
        for key in &m.part_lists {
            let value = match self.idx.get(&ns, key).await? {
                Some(v) => Some(v),
                // Written just before the object entry, maybe by another gateway.
                None => self.idx.get_aged(&ns, key, Duration::ZERO).await?,
            };
            let value = value.ok_or_else(|| {
                GatewayError::Internal(format!("the object's part list {key} is missing"))
            })?;
            m.parts.extend(meta::decode::<PartList>(&value)?.parts);
        }
        Ok(m)
    }

    /// Tombstones part lists in the background (best effort: a leftover
    /// entry costs index room, not data).
    pub(crate) fn forget_lists(&self, bucket: &str, lists: Vec<String>) {
        if !lists.is_empty() {
            self.enqueue(Cleanup::Lists {
                bucket: bucket.to_string(),
                keys: lists,
            });
        }
    }

    /// The current object `bucket/key`: `NoSuchKey` if there is none (or
    /// it is a delete marker).
    pub(crate) async fn existing_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<ObjectMeta, GatewayError> {
        match self.object(bucket, key).await? {
            Some(m) => Ok(m),
            None => {
                self.require_bucket(bucket).await?;
                Err(GatewayError::NoSuchKey(key.into()))
            }
        }
    }

    /// The tags of `m`, an object or version of `bucket/key`: those last
    /// set on it since it was written, or else those it was written with.
    pub(crate) async fn tags(
        &self,
        bucket: &str,
        key: &str,
        m: &ObjectMeta,
    ) -> Result<Vec<(String, String)>, GatewayError> {
        let ns = tags_ns(bucket);
        let generation = meta::generation(m);
        let slot = tags_key(key, m);
        // A version with an id may also have tags that an older gateway
        // (without version tag entries) set under the object key while the
        // version was current.
        let older = m.version_id.is_some().then_some(key);
        for k in std::iter::once(slot.as_str()).chain(older) {
            if let Some(v) = self.idx.get(&ns, k).await? {
                let set: TagsMeta = meta::decode(&v)?;
                if set.generation == generation {
                    return Ok(set.tags);
                }
            }
        }
        Ok(m.tags.clone())
    }

    /// The tags of version `m` of `bucket/key` that lifecycle `rules` need:
    /// none unless a rule filters by tags (then each is an index read).
    pub(crate) async fn rule_tags(
        &self,
        bucket: &str,
        key: &str,
        m: &ObjectMeta,
        rules: &[crate::lifecycle::Rule],
    ) -> Result<Vec<(String, String)>, GatewayError> {
        if crate::lifecycle::uses_tags(rules) {
            self.tags(bucket, key, m).await
        } else {
            Ok(vec![])
        }
    }

    /// Sets the tags of `m`, an existing object or version of
    /// `bucket/key`, in its own tag entry (never a rewrite of its entry).
    async fn set_tags(
        &self,
        bucket: &str,
        key: &str,
        m: &ObjectMeta,
        tags: Vec<(String, String)>,
    ) -> Result<(), GatewayError> {
        let set = TagsMeta {
            version: TagsMeta::VERSION,
            generation: meta::generation(m),
            tags,
        };
        self.idx
            .write(
                &tags_ns(bucket),
                bucket,
                &[(tags_key(key, m).into_bytes(), Some(meta::encode(&set)?))],
            )
            .await?;
        Ok(())
    }

    /// Removes the tag entries of deleted `keys` that have one (they
    /// would apply to nothing, but cost index room).
    pub(crate) async fn forget_tags(
        &self,
        bucket: &str,
        keys: &[&str],
    ) -> Result<(), GatewayError> {
        let ns = tags_ns(bucket);
        let mut changes: Vec<Change> = vec![];
        for key in keys {
            if self.idx.get(&ns, key).await?.is_some() {
                changes.push((key.as_bytes().to_vec(), None));
            }
        }
        self.idx.write(&ns, bucket, &changes).await?;
        Ok(())
    }

    /// Refuses any ACL but the account's own full control.
    fn check_acl(&self, acl: &AclRequest<'_>) -> Result<(), GatewayError> {
        policy::check_acl(acl, &self.idx.account().public())
    }

    /// Checks a new object's ACL and encryption headers; returns the
    /// encryption asked for.
    fn check_new_object(
        &self,
        acl: AclRequest<'_>,
        sse: Option<&ServerSideEncryption>,
        kms_key: bool,
        customer_key: bool,
    ) -> Result<policy::Asked, GatewayError> {
        self.check_acl(&acl)?;
        policy::check_sse(sse, kms_key, customer_key)
    }

    /// How a new object (or multipart upload) in `bucket` is sealed: under
    /// the request's customer key, under the KMS key it asks for, or, if
    /// it asks for nothing, as the bucket's default encryption says.
    async fn new_seal(
        &self,
        bucket: &str,
        asked: policy::Asked,
        kms: KmsAsk<'_>,
        customer: Option<&CustomerKey>,
    ) -> Result<Option<Seal>, GatewayError> {
        use policy::Asked;
        match asked {
            Asked::Customer => {
                let k = customer.ok_or_else(|| {
                    GatewayError::Internal("an SSE-C write without its key".into())
                })?;
                let sse = SseC::new(k);
                let key = sse.data_key(Some(k), "the object")?;
                Ok(Some(Seal {
                    sse_c: Some(sse),
                    sse_kms: None,
                    key,
                }))
            }
            Asked::Aes256 => Ok(None),
            Asked::Kms => self.kms_seal(kms).await.map(Some),
            Asked::Default => match self.bucket_setting::<BucketEncryption>(bucket).await? {
                Some(d) if d.kms => {
                    let kms = KmsAsk {
                        key_id: d.kms_key_id.as_deref(),
                        bucket_key: kms.bucket_key.or(Some(d.bucket_key)),
                        ..kms
                    };
                    self.kms_seal(kms).await.map(Some)
                }
                _ => Ok(None),
            },
        }
    }

    /// A new object's sealing under the KMS key `kms` names (the default
    /// key if none), which must be enabled.
    async fn kms_seal(&self, kms: KmsAsk<'_>) -> Result<Seal, GatewayError> {
        kms.signed.check()?;
        let context = kms.context.map(crate::kms::parse_context).transpose()?;
        let named = match kms.key_id {
            Some(id) => self.kms.parse(id)?,
            None => KeyRef::Default,
        };
        let key = self.kms.resolve(&named).await?;
        let sse = SseKms::new(&key, context, kms.bucket_key.unwrap_or(false));
        let data_key = sse.data_key(&key)?;
        Ok(Seal {
            sse_c: None,
            sse_kms: Some(sse),
            key: data_key,
        })
    }

    /// The data key that opens `m`: from the request's customer key for
    /// an SSE-C object, from the account's KMS key (which must be enabled,
    /// and the request signed) for an SSE-KMS one; none for the rest.
    async fn open_key(
        &self,
        m: &ObjectMeta,
        customer: Option<&CustomerKey>,
        signed: Signed,
    ) -> Result<Option<DataKey>, GatewayError> {
        if let Some(sse) = &m.sse_c {
            return sse.data_key(customer, "the object").map(Some);
        }
        if let Some(sse) = &m.sse_kms {
            signed.check()?;
            let key = self.kms.usable(&sse.key_id).await?;
            return sse.data_key(&key).map(Some);
        }
        Ok(None)
    }

    /// What S3 answers about the encryption of an object (or upload)
    /// sealed as `sse_c` or `sse_kms` say; `plain` for one that is not.
    fn sse_answer(
        &self,
        sse_c: Option<&SseC>,
        sse_kms: Option<&SseKms>,
        plain: Option<ServerSideEncryption>,
    ) -> SseAnswer {
        if let Some(s) = sse_c {
            return SseAnswer {
                customer_algorithm: Some("AES256".into()),
                customer_key_md5: Some(s.md5_base64()),
                ..Default::default()
            };
        }
        if let Some(k) = sse_kms {
            return SseAnswer {
                sse: Some(ServerSideEncryption::from_static(
                    ServerSideEncryption::AWS_KMS,
                )),
                kms_key_id: Some(self.kms.arn(&k.key_id)),
                context: k.context_base64(),
                bucket_key: Some(k.bucket_key),
                ..Default::default()
            };
        }
        SseAnswer {
            sse: plain,
            ..Default::default()
        }
    }

    /// How a multipart upload's part is sealed: under the upload's
    /// customer key, which every part must carry; under its KMS key; or
    /// not at all.
    async fn part_seal(
        &self,
        upload: &UploadMeta,
        customer: Option<&CustomerKey>,
        signed: Signed,
    ) -> Result<Option<Seal>, GatewayError> {
        match (&upload.sse_c, customer) {
            (Some(s), Some(k)) => {
                return Ok(Some(Seal {
                    sse_c: Some(s.clone()),
                    sse_kms: None,
                    key: s.data_key(Some(k), "the upload")?,
                }));
            }
            (Some(_), None) => {
                return Err(GatewayError::InvalidRequest(
                    "the upload was started with a customer key (SSE-C): send it with every part"
                        .into(),
                ));
            }
            (None, Some(_)) => {
                return Err(GatewayError::InvalidArgument(
                    "the upload was started without a customer key (SSE-C)".into(),
                ));
            }
            (None, None) => {}
        }
        match &upload.sse_kms {
            Some(sse) => {
                signed.check()?;
                let key = self.kms.usable(&sse.key_id).await?;
                Ok(Some(Seal {
                    sse_c: None,
                    sse_kms: Some(sse.clone()),
                    key: sse.data_key(&key)?,
                }))
            }
            None => Ok(None),
        }
    }

    /// Stores `body` as one Cairn object, sealed under `seal`'s data key
    /// (SSE-C or SSE-KMS) if there is one.
    async fn store_as<S>(
        &self,
        body: S,
        rules: BodyRules,
        seal: Option<&Seal>,
    ) -> Result<body::StoredBody, GatewayError>
    where
        S: futures::Stream<Item = Result<Bytes, GatewayError>> + Unpin,
    {
        match seal {
            Some(s) => body::store_sealed(&self.node, body, rules, &s.key).await,
            None => body::store(&self.node, body, rules).await,
        }
    }

    fn rules(&self, declared: Option<i64>, md5: Option<&str>) -> Result<BodyRules, GatewayError> {
        Ok(BodyRules {
            max: self.settings.max_object,
            declared: declared.and_then(|d| u64::try_from(d).ok()),
            md5: md5.map(rules::parse_content_md5).transpose()?,
            idle: self.settings.body_idle,
        })
    }

    /// Removes Cairn objects in the background (best effort: an object
    /// left behind expires with its lease).
    pub(crate) fn forget(&self, caps: Vec<String>) {
        if !caps.is_empty() {
            self.enqueue(Cleanup::Caps(caps));
        }
    }

    /// Writes an object's entry (with the version id the bucket's
    /// versioning gives it, set in `meta`). Unversioned, it then settles
    /// who won: if a concurrent write to the key won, our data is removed;
    /// if ours won, the data of the object it replaced is. Versioned, the
    /// replaced object stays as a noncurrent version (see
    /// [`crate::versioning`]).
    pub(crate) async fn commit_object(
        &self,
        bucket: &str,
        key: &str,
        meta: &mut ObjectMeta,
        previous: Option<ObjectMeta>,
    ) -> Result<(), GatewayError> {
        match self.versioning(bucket).await? {
            Versioning::Off => {
                meta.version_id = None;
                self.commit_entry(bucket, key, meta, previous.filter(|p| !p.delete_marker))
                    .await
            }
            mode => self.commit_version(bucket, key, meta, previous, mode).await,
        }
    }

    /// [`Self::commit_object`] for a write with `conditions`: checked
    /// against the key's current entry read afresh from its replicas (not
    /// the cache, which may be 2 s behind another gateway's write), under
    /// the key's write lock, so two conditional writes through this gateway
    /// never both pass. Two through different gateways at the same moment
    /// can: the index's last-writer-wins keeps one, as for plain writes.
    pub(crate) async fn commit_checked(
        &self,
        bucket: &str,
        key: &str,
        meta: &mut ObjectMeta,
        previous: Option<ObjectMeta>,
        conditions: &rules::WriteConditions,
    ) -> Result<(), GatewayError> {
        if conditions.is_empty() {
            return self.commit_object(bucket, key, meta, previous).await;
        }
        let stripe = blake3::hash(format!("{bucket}/{key}").as_bytes()).as_bytes()[0] as usize
            % self.write_locks.len();
        let _held = self.write_locks[stripe].lock().await;
        let current = self
            .idx
            .get_aged(&objects_ns(bucket), key, Duration::ZERO)
            .await?
            .map(|v| meta::decode::<ObjectMeta>(&v))
            .transpose()?
            .filter(|m| !m.delete_marker);
        conditions.check(key, current.as_ref().map(|m| m.etag.as_str()))?;
        let current = match current {
            Some(c) => Some(self.resolve(bucket, c).await?),
            None => None,
        };
        self.commit_object(bucket, key, meta, current).await
    }

    /// `meta` as its entry keeps it: with more parts than one entry holds,
    /// they go to part lists first (written here), so an entry never names
    /// a list that is not there.
    pub(crate) async fn stored_form(
        &self,
        bucket: &str,
        meta: &ObjectMeta,
    ) -> Result<ObjectMeta, GatewayError> {
        let mut stored = meta.clone();
        if meta.parts.len() > PARTS_PER_LIST {
            let id = hex::encode(rand::random::<[u8; 8]>());
            let mut changes: Vec<Change> = vec![];
            for (n, chunk) in meta.parts.chunks(PARTS_PER_LIST).enumerate() {
                let key = format!("{id}/{n:05}");
                let list = PartList {
                    version: META_VERSION,
                    parts: chunk.to_vec(),
                };
                changes.push((key.clone().into_bytes(), Some(meta::encode(&list)?)));
                stored.part_lists.push(key);
            }
            stored.parts.clear();
            self.idx
                .write(&partlists_ns(bucket), bucket, &changes)
                .await?;
        }
        Ok(stored)
    }

    /// [`Self::commit_object`] in a bucket without versioning.
    async fn commit_entry(
        &self,
        bucket: &str,
        key: &str,
        meta: &ObjectMeta,
        previous: Option<ObjectMeta>,
    ) -> Result<(), GatewayError> {
        let ns = objects_ns(bucket);
        let resolved_parts = meta.parts.clone();
        let meta = &self.stored_form(bucket, meta).await?;
        let value = meta::encode(meta)?;
        let won = self
            .idx
            .write(
                &ns,
                bucket,
                &[(key.as_bytes().to_vec(), Some(value.clone()))],
            )
            .await?;
        let mine: Vec<String> = resolved_parts.iter().map(|p| p.cap.clone()).collect();
        if won {
            // Won against every op this gateway has seen. A write through
            // another gateway may still win; that is settled later, off
            // the PUT's path (a write that loses removes only its own
            // data, so whoever settles late never removes a winner's).
            let job = Settle {
                due: tokio::time::Instant::now() + SETTLE_AFTER,
                bucket: bucket.to_string(),
                key: key.to_string(),
                generation: meta::generation(meta),
                caps: mine.clone(),
                lists: meta.part_lists.clone(),
            };
            if let Err(e) = self.settle.try_send(job) {
                self.settle_now(e.into_inner()).await?;
            }
            if let Some(old) = previous {
                self.forget_data(bucket, old, &mine);
            }
            return Ok(());
        }
        let now = self.idx.get_aged(&ns, key, Duration::ZERO).await?;
        if now.as_deref() != Some(value.as_slice()) {
            // Another PUT of this key won the index's last-writer-wins.
            let winner: Option<ObjectMeta> = match now.as_deref().map(meta::decode::<ObjectMeta>) {
                Some(Ok(w)) => self.resolve(bucket, w).await.ok(),
                _ => None,
            };
            self.forget_lists(bucket, meta.part_lists.clone());
            let keep: Vec<&String> = winner
                .iter()
                .flat_map(|w| w.parts.iter().map(|p| &p.cap))
                .collect();
            self.forget(mine.into_iter().filter(|c| !keep.contains(&c)).collect());
            return Ok(());
        }
        if let Some(old) = previous {
            self.forget_data(bucket, old, &mine);
        }
        Ok(())
    }

    /// Settles a write at once (the settle queue is full): reads the key
    /// afresh and removes the write's data if another write won.
    async fn settle_now(&self, job: Settle) -> Result<(), GatewayError> {
        let now = self
            .idx
            .get_aged(&objects_ns(&job.bucket), &job.key, Duration::ZERO)
            .await?;
        if lost(now.as_deref(), &job.generation) {
            self.forget_lists(&job.bucket, job.lists);
            self.forget(job.caps);
        }
        Ok(())
    }

    /// Removes the data and part lists of `old` in the background, but
    /// not the capabilities in `keep`.
    pub(crate) fn forget_data(&self, bucket: &str, old: ObjectMeta, keep: &[String]) {
        self.forget_lists(bucket, old.part_lists);
        self.forget(
            old.parts
                .into_iter()
                .map(|p| p.cap)
                .filter(|c| !keep.contains(c))
                .collect(),
        );
    }

    /// Indexes one stored Cairn object as `bucket/key` with its content
    /// type and user metadata, over the object it replaces and if the
    /// write's conditions hold; if that fails the data is removed (it is
    /// not visible, so it must not linger either).
    async fn commit_stored(
        &self,
        bucket: &str,
        key: &str,
        stored: body::StoredBody,
        (content_type, user_metadata, tags): Described,
        (modified_ms, seal): (u64, Option<&Seal>),
        (previous, conditions): (Option<ObjectMeta>, &rules::WriteConditions),
    ) -> Result<ObjectMeta, GatewayError> {
        let mut meta = ObjectMeta {
            version: ObjectMeta::VERSION,
            size: stored.size,
            etag: stored.md5.clone(),
            content_type,
            user_metadata,
            last_modified_ms: modified_ms,
            parts: vec![PartRef {
                cap: stored.stored.cap.clone(),
                size: stored.size,
            }],
            sse_c: seal.and_then(|s| s.sse_c.clone()),
            sse_kms: seal.and_then(|s| s.sse_kms.clone()),
            lease_expires_at: self.lease_end(),
            part_lists: vec![],
            inline: None,
            tags,
            version_id: None,
            delete_marker: false,
        };
        if let Err(e) = self
            .commit_checked(bucket, key, &mut meta, previous, conditions)
            .await
        {
            self.forget(vec![stored.stored.cap]);
            return Err(e);
        }
        Ok(meta)
    }

    fn lease_end(&self) -> u64 {
        crate::now_ms() / 1000 + self.node.lease_secs()
    }

    /// A slot to copy in (see [`COPIES`]).
    async fn copy_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, GatewayError> {
        self.copies
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| GatewayError::Internal("the gateway is stopping".into()))
    }

    fn start_read(
        &self,
        src: &ObjectMeta,
        start: u64,
        end: u64,
        key: Option<DataKey>,
    ) -> Result<
        (
            ChannelStream,
            tokio::sync::oneshot::Receiver<Result<(), GatewayError>>,
        ),
        GatewayError,
    > {
        let (tx, rx) = ChannelStream::channel(Some(end - start));
        // A sealed object opens only with its data key (so no path reads
        // one without it).
        if (src.sse_c.is_some() || src.sse_kms.is_some()) != key.is_some() {
            return Err(GatewayError::Internal(
                "a sealed object read without its key, or a plain one with a key".into(),
            ));
        }
        if let Some(data) = &src.inline {
            let opened;
            let data = match &key {
                Some(k) => {
                    opened = sse::open_all(k.sealer()?, src.size, data)?;
                    &opened
                }
                None => data,
            };
            let (started_tx, started_rx) = tokio::sync::oneshot::channel();
            let from = usize::try_from(start).unwrap_or(usize::MAX).min(data.len());
            let to = usize::try_from(end)
                .unwrap_or(usize::MAX)
                .clamp(from, data.len());
            let bytes = Bytes::copy_from_slice(&data[from..to]);
            // The channel holds a few chunks, so this one fits at once.
            let _ = tx.try_send(Ok(bytes));
            let _ = started_tx.send(Ok(()));
            return Ok((rx, started_rx));
        }
        let parts = src.parts.iter().map(|p| (p.cap.clone(), p.size)).collect();
        let started = match key {
            Some(k) => body::spawn_read_sealed(self.node.clone(), parts, k, start, end, tx),
            None => body::spawn_read(self.node.clone(), parts, start, end, tx),
        };
        Ok((rx, started))
    }

    /// Starts reading bytes `[start, end)` of `m` and waits until the node
    /// answers. Data that is not found may have been replaced by a newer
    /// write from another gateway that this one's cached index does not
    /// show yet: the caller re-reads the entry once.
    async fn open_read(
        &self,
        m: &ObjectMeta,
        start: u64,
        end: u64,
        (key, signed): (Option<&CustomerKey>, Signed),
    ) -> Result<ChannelStream, GatewayError> {
        let key = self.open_key(m, key, signed).await?;
        let (stream, started) = self.start_read(m, start, end, key)?;
        match tokio::time::timeout(FIRST_ANSWER, started).await {
            Ok(Ok(Ok(()))) => Ok(stream),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(GatewayError::Internal("the object reader stopped".into())),
            Err(_) => Err(GatewayError::Unavailable(format!(
                "the node did not begin to send the object within {} s",
                FIRST_ANSWER.as_secs()
            ))),
        }
    }

    async fn copy_source(
        &self,
        source: &CopySource,
    ) -> Result<(String, String, ObjectMeta), GatewayError> {
        let CopySource::Bucket {
            bucket,
            key,
            version_id,
        } = source
        else {
            return Err(GatewayError::InvalidArgument(
                "only bucket/key copy sources are supported".into(),
            ));
        };
        let m = match version_id {
            Some(v) => self.readable_version(bucket, key, v).await?,
            None => self.existing_object(bucket, key).await?,
        };
        Ok((bucket.to_string(), key.to_string(), m))
    }

    async fn upload(
        &self,
        bucket: &str,
        upload_id: &str,
        key: &str,
    ) -> Result<UploadMeta, GatewayError> {
        self.require_bucket(bucket).await?;
        if upload_id.contains('/') {
            return Err(GatewayError::NoSuchUpload(upload_id.into()));
        }
        let u: UploadMeta = match self.idx.get(&uploads_ns(bucket), upload_id).await? {
            Some(v) => meta::decode(&v)?,
            None => return Err(GatewayError::NoSuchUpload(upload_id.into())),
        };
        if u.key != key {
            return Err(GatewayError::NoSuchUpload(upload_id.into()));
        }
        Ok(u)
    }

    /// The parts of an upload; `fresh` reads the network's copy now (to
    /// complete an upload whose parts other gateways may have taken).
    async fn upload_parts(
        &self,
        bucket: &str,
        upload_id: &str,
        fresh: bool,
    ) -> Result<Vec<(i32, PartMeta)>, GatewayError> {
        let prefix = format!("{upload_id}/");
        let age = if fresh {
            Duration::ZERO
        } else {
            crate::indexes::FRESH
        };
        let mut out = vec![];
        for (k, v) in self
            .idx
            .prefixed(&uploads_ns(bucket), prefix.as_bytes(), age)
            .await?
        {
            let Some(num) = std::str::from_utf8(&k)
                .ok()
                .and_then(|k| k.strip_prefix(&prefix))
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            out.push((num, meta::decode::<PartMeta>(&v)?));
        }
        out.sort_by_key(|(n, _)| *n);
        Ok(out)
    }

    async fn store_part(
        &self,
        bucket: &str,
        upload_id: &str,
        number: i32,
        stored: body::StoredBody,
    ) -> Result<String, GatewayError> {
        let ns = uploads_ns(bucket);
        let key = meta::part_key(upload_id, number);
        let old: Option<PartMeta> = self
            .idx
            .get(&ns, &key)
            .await?
            .map(|v| meta::decode(&v))
            .transpose()?;
        let part = PartMeta {
            version: META_VERSION,
            cap: stored.stored.cap.clone(),
            size: stored.size,
            etag: stored.md5.clone(),
            last_modified_ms: crate::now_ms(),
        };
        let value = meta::encode(&part)?;
        let won = self
            .idx
            .write(
                &ns,
                bucket,
                &[(key.clone().into_bytes(), Some(value.clone()))],
            )
            .await?;
        if !won {
            self.forget(vec![part.cap]);
        } else if let Some(old) = old.filter(|o| o.cap != part.cap) {
            self.forget(vec![old.cap]);
        }
        Ok(stored.md5)
    }

    /// Aborts an upload: its entries become tombstones, its parts are removed.
    pub(crate) async fn abort(&self, bucket: &str, upload_id: &str) -> Result<(), GatewayError> {
        let parts = self.upload_parts(bucket, upload_id, false).await?;
        let mut changes: Vec<Change> = vec![(upload_id.as_bytes().to_vec(), None)];
        changes.extend(
            parts
                .iter()
                .map(|(n, _)| (meta::part_key(upload_id, *n).into_bytes(), None)),
        );
        self.idx
            .write(&uploads_ns(bucket), bucket, &changes)
            .await?;
        self.forget(parts.into_iter().map(|(_, p)| p.cap).collect());
        Ok(())
    }

    fn check_conditions(&self, c: &Conditions, m: &ObjectMeta) -> Result<(), GatewayError> {
        match rules::evaluate(c, &m.etag, m.last_modified_ms) {
            Condition::Proceed => Ok(()),
            Condition::NotModified => Err(GatewayError::NotModified),
            Condition::PreconditionFailed => Err(GatewayError::PreconditionFailed),
        }
    }

    fn object_entry(&self, key: String, m: &ObjectMeta, url: bool) -> Object {
        Object {
            key: Some(if url { url_encode(&key) } else { key }),
            size: Some(i64::try_from(m.size).unwrap_or(i64::MAX)),
            e_tag: Some(etag(&m.etag)),
            last_modified: Some(ms_to_ts(m.last_modified_ms)),
            storage_class: Some(ObjectStorageClass::from_static(
                ObjectStorageClass::STANDARD,
            )),
            ..Default::default()
        }
    }

    /// One listing page of a bucket.
    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<&str>,
        max_keys: Option<i32>,
        url: bool,
    ) -> Result<(Vec<Object>, Vec<CommonPrefix>, bool, Option<String>, i32), GatewayError> {
        self.require_bucket(bucket).await?;
        let max = max_keys.unwrap_or(1000).clamp(0, 1000);
        let params = ListParams {
            prefix,
            delimiter,
            after,
            max_keys: usize::try_from(max).unwrap_or(0),
        };
        // Only a bucket whose versioning was turned on has delete markers.
        let markers = self.versioning(bucket).await? != Versioning::Off;
        let (kept, page) = self
            .list_window(&objects_ns(bucket), &params, markers)
            .await?;
        let mut objects = Vec::with_capacity(page.objects.len());
        for i in page.objects {
            let m: ObjectMeta = meta::decode(&kept[i].1)?;
            objects.push(self.object_entry(kept[i].0.clone(), &m, url));
        }
        let prefixes = page
            .prefixes
            .into_iter()
            .map(|p| CommonPrefix {
                prefix: Some(if url { url_encode(&p) } else { p }),
            })
            .collect();
        Ok((objects, prefixes, page.truncated, page.next_marker, max))
    }
}

/// An entry a listing keeps: its key and value.
#[derive(Default)]
pub(crate) struct Kept(pub(crate) String, pub(crate) Vec<u8>);

impl AsRef<str> for Kept {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Windowed for Kept {}

/// An item of a listing read window by window ([`Gateway::page_windows`]):
/// by default items list in index order, as windows bring them.
pub(crate) trait Windowed: Default + AsRef<str> + Sized {
    /// The index key of an entry at or after `next`, where the next window
    /// starts, that may list among the items read so far (a page cut now
    /// would miss it); it is read at once.
    fn read_ahead(_next: &[u8]) -> Option<String> {
        None
    }

    /// Puts `kept` (index order, an entry read ahead perhaps twice) in
    /// listing order, without duplicates.
    fn arrange(_kept: &mut Vec<Self>) {}
}

/// What a listing page is made of, for [`Gateway::page_windows`]: the
/// indices of its items and its common prefixes, in order, and whether it
/// is cut short.
pub(crate) trait Paged {
    /// Indices of the page's items.
    fn items(&self) -> &[usize];
    /// The page's common prefixes.
    fn prefixes(&self) -> &[String];
    /// Whether entries remain after the page.
    fn truncated(&self) -> bool;
}

impl Paged for listing::Page {
    fn items(&self) -> &[usize] {
        &self.objects
    }
    fn prefixes(&self) -> &[String] {
        &self.prefixes
    }
    fn truncated(&self) -> bool {
        self.truncated
    }
}

impl Paged for listing::UploadsPage {
    fn items(&self) -> &[usize] {
        &self.uploads
    }
    fn prefixes(&self) -> &[String] {
        &self.prefixes
    }
    fn truncated(&self) -> bool {
        self.truncated
    }
}

impl Gateway {
    /// One listing page of namespace `ns`, read window by window so that
    /// memory holds one window and the page, whatever the bucket's size:
    /// after each window only the page's objects and one key per common
    /// prefix are kept, and a common prefix is skipped past in one step.
    /// Returns the kept entries and the page (indices into them). With
    /// `markers`, entries that are delete markers are left out (which
    /// costs decoding every entry, so only versioned buckets ask).
    pub(crate) async fn list_window(
        &self,
        ns: &str,
        params: &ListParams<'_>,
        markers: bool,
    ) -> Result<(Vec<Kept>, listing::Page), GatewayError> {
        let mut from = params.prefix.as_bytes().to_vec();
        if let Some(a) = params.after {
            from = from.max(shard::after(a.as_bytes()));
        }
        self.page_windows(
            ns,
            from,
            params.prefix,
            params.max_keys,
            |k, v| {
                // A key whose current version is a delete marker is not listed.
                if markers && meta::decode::<ObjectMeta>(&v).is_ok_and(|m| m.delete_marker) {
                    return None;
                }
                Some(Kept(String::from_utf8_lossy(&k).into_owned(), v))
            },
            |kept| list_page(kept, params),
        )
        .await
    }

    /// The window loop of a page of at most `max` entries over namespace
    /// `ns` from `from`, up to the end of `prefix`: `item` turns an entry
    /// into an item (or skips it), `page` cuts the page from the items so
    /// far (sorted by their listing key, `as_ref`, then as
    /// [`Windowed::arrange`] puts them). After each window only the page's
    /// items and the first item under each common prefix are kept, and a
    /// page that ends with a common prefix continues past everything under
    /// it.
    pub(crate) async fn page_windows<T: Windowed, P: Paged>(
        &self,
        ns: &str,
        mut from: Vec<u8>,
        prefix: &str,
        max: usize,
        item: impl Fn(Vec<u8>, Vec<u8>) -> Option<T>,
        page: impl Fn(&[T]) -> P,
    ) -> Result<(Vec<T>, P), GatewayError> {
        let end = shard::past_prefix(prefix.as_bytes());
        let limit = self.idx.window_size().max(max + 1);
        let mut kept: Vec<T> = vec![];
        loop {
            let (entries, next) = self.idx.window(ns, &from, limit).await?;
            let mut done = next.is_none() || max == 0;
            for (k, v) in entries {
                if end.as_ref().is_some_and(|e| &k >= e) {
                    done = true;
                    break;
                }
                if let Some(t) = item(k, v) {
                    kept.push(t);
                }
            }
            if !done
                && let Some(n) = &next
                && let Some(ahead) = T::read_ahead(n)
                && end.as_ref().is_none_or(|e| ahead.as_bytes() < e.as_slice())
                && let Some(v) = self.idx.get(ns, &ahead).await?
                && let Some(t) = item(ahead.into_bytes(), v)
            {
                kept.push(t);
            }
            T::arrange(&mut kept);
            let cut = page(&kept);
            if cut.truncated() || done {
                return Ok((kept, cut));
            }
            // The page's last entry, if it is a common prefix: nothing
            // under it can add to the page.
            let last_prefix = match (cut.prefixes().last(), cut.items().last()) {
                (Some(cp), Some(&i)) => (cp.as_str() > kept[i].as_ref()).then(|| cp.clone()),
                (Some(cp), None) => Some(cp.clone()),
                _ => None,
            };
            // Keep what the page is made of: its items, and the first
            // item under each of its common prefixes.
            let mut used: Vec<usize> = cut.items().to_vec();
            for cp in cut.prefixes() {
                if let Some(i) = kept
                    .iter()
                    .position(|k| k.as_ref().starts_with(cp.as_str()))
                {
                    used.push(i);
                }
            }
            used.sort_unstable();
            used.dedup();
            kept = used
                .into_iter()
                .map(|i| std::mem::take(&mut kept[i]))
                .collect();
            let Some(mut next) = next else {
                let cut = page(&kept);
                return Ok((kept, cut));
            };
            if let Some(cp) = last_prefix {
                match shard::past_prefix(cp.as_bytes()) {
                    Some(past) => next = next.max(past),
                    None => {
                        let cut = page(&kept);
                        return Ok((kept, cut));
                    }
                }
            }
            from = next;
        }
    }
}

/// The version a copy read: the one it named, else the source's current
/// one if it has an id.
fn source_version(source: &CopySource, src: &ObjectMeta) -> Option<String> {
    let named = matches!(
        source,
        CopySource::Bucket {
            version_id: Some(_),
            ..
        }
    );
    answered_version(named, src)
}

/// Whether a request came over the gateway's TLS (customer keys travel
/// only so).
fn over_tls(extensions: &hyper::http::Extensions) -> bool {
    extensions
        .get::<crate::server::ClientAddr>()
        .is_some_and(|c| c.tls)
}

/// The customer key (SSE-C) of an S3 input's three `sse_customer_*`
/// fields (or, with `copy_source`, its `copy_source_sse_customer_*` ones).
macro_rules! request_key {
    ($input:ident, $tls:expr) => {
        customer_key(
            (
                &$input.sse_customer_algorithm,
                &$input.sse_customer_key,
                &$input.sse_customer_key_md5,
            ),
            $tls,
        )
    };
    ($input:ident, $tls:expr, copy_source) => {
        customer_key(
            (
                &$input.copy_source_sse_customer_algorithm,
                &$input.copy_source_sse_customer_key,
                &$input.copy_source_sse_customer_key_md5,
            ),
            $tls,
        )
    };
}

/// The [`KmsAsk`] of a request that makes an object: PutObject,
/// CopyObject and CreateMultipartUpload name its fields alike.
macro_rules! kms_ask {
    ($input:expr, $signed:expr) => {
        KmsAsk {
            key_id: $input.ssekms_key_id.as_deref(),
            context: $input.ssekms_encryption_context.as_deref(),
            bucket_key: $input.bucket_key_enabled,
            signed: $signed,
        }
    };
}

/// A request's customer key (SSE-C) from its three headers.
fn customer_key(
    (algorithm, key, md5): (&Option<String>, &Option<String>, &Option<String>),
    tls: bool,
) -> Result<Option<CustomerKey>, GatewayError> {
    CustomerKey::from_request(algorithm.as_deref(), key.as_deref(), md5.as_deref(), tls)
}

/// How a new object is sealed by the gateway: what its entry keeps (one
/// of the two) and its data key.
pub(crate) struct Seal {
    sse_c: Option<SseC>,
    sse_kms: Option<SseKms>,
    key: DataKey,
}

/// What a write says of KMS keys: `x-amz-server-side-encryption-aws-kms-key-id`,
/// `-context` and `-bucket-key-enabled`, and how it was signed.
#[derive(Clone, Copy)]
struct KmsAsk<'a> {
    key_id: Option<&'a str>,
    context: Option<&'a str>,
    bucket_key: Option<bool>,
    signed: Signed,
}

/// How a request was signed. Only the account's signed requests may use
/// its KMS keys (an anonymous one, allowed by a public bucket policy,
/// must not read SSE-KMS objects, as in S3 where it cannot use the key),
/// and, as S3 has it, only with Signature Version 4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signed {
    Anonymous,
    V2,
    V4,
}

impl Signed {
    fn of<T>(req: &S3Request<T>) -> Self {
        if req.credentials.is_none() {
            return Self::Anonymous;
        }
        let header_v4 = req
            .headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256"));
        let query_v4 = req
            .uri
            .query()
            .is_some_and(|q| q.contains("X-Amz-Algorithm=AWS4-HMAC-SHA256"));
        if header_v4 || query_v4 {
            Self::V4
        } else {
            Self::V2
        }
    }

    /// Whether the request may use a KMS key.
    fn check(self) -> Result<(), GatewayError> {
        match self {
            Self::V4 => Ok(()),
            Self::V2 => Err(GatewayError::InvalidArgument(
                "requests specifying server-side encryption with KMS keys (SSE-KMS) require \
                 AWS Signature Version 4"
                    .into(),
            )),
            Self::Anonymous => Err(GatewayError::Denied(
                "objects encrypted with KMS keys (SSE-KMS) are only for the account's signed \
                 requests"
                    .into(),
            )),
        }
    }
}

/// What S3 answers about an object's encryption.
#[derive(Default)]
struct SseAnswer {
    sse: Option<ServerSideEncryption>,
    customer_algorithm: Option<String>,
    customer_key_md5: Option<String>,
    /// The KMS key's ARN.
    kms_key_id: Option<String>,
    /// The encryption context, base64.
    context: Option<String>,
    bucket_key: Option<bool>,
}

/// The `x-amz-version-id` S3 answers for version `m` of a request: `m`'s
/// id (`null` too) if the request named one, else `m`'s id if it has one.
fn answered_version(named: bool, m: &ObjectMeta) -> Option<String> {
    if named {
        Some(m.shown_version().to_string())
    } else {
        m.version_id.clone()
    }
}

fn is_url(e: &Option<EncodingType>) -> bool {
    e.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL)
}

#[async_trait::async_trait]
impl S3 for Gateway {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let i = req.input;
        let bucket = i.bucket;
        rules::validate_bucket_name(&bucket)?;
        self.check_acl(&AclRequest {
            canned: i.acl.as_ref().map(BucketCannedACL::as_str),
            grants: policy::any_grant(&[
                &i.grant_full_control,
                &i.grant_read,
                &i.grant_read_acp,
                &i.grant_write,
                &i.grant_write_acp,
            ]),
            policy: None,
        })?;
        if let Some(o) = &i.object_ownership
            && o.as_str() != ObjectOwnership::BUCKET_OWNER_ENFORCED
        {
            return Err(GatewayError::AclNotSupported(format!(
                "object ownership {:?} is not supported: objects are always owned by the bucket's account (BucketOwnerEnforced)",
                o.as_str()
            ))
            .into());
        }
        if self
            .idx
            .get_aged(BUCKETS, &bucket, Duration::ZERO)
            .await?
            .is_some()
        {
            return Err(GatewayError::BucketAlreadyOwnedByYou(bucket).into());
        }
        let value = meta::encode(&BucketMeta {
            version: META_VERSION,
            created_at_ms: crate::now_ms(),
        })?;
        self.idx
            .write(
                BUCKETS,
                &bucket,
                &[(bucket.clone().into_bytes(), Some(value))],
            )
            .await?;
        ok(CreateBucketOutput {
            location: Some(format!("/{bucket}")),
        })
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let bucket = req.input.bucket;
        self.require_bucket(&bucket).await?;
        // Delete markers and noncurrent versions count, as in S3.
        if self.idx.any(&objects_ns(&bucket)).await?
            || self.idx.any(&versions_ns(&bucket)).await?
            || self.idx.any(&uploads_ns(&bucket)).await?
        {
            return Err(GatewayError::BucketNotEmpty(bucket).into());
        }
        self.idx
            .write(BUCKETS, &bucket, &[(bucket.clone().into_bytes(), None)])
            .await?;
        // Settings of a deleted bucket apply to nothing (a new bucket of
        // the name is newer than them); they only cost room.
        for ns in [
            BucketTags::NS,
            BucketCors::NS,
            BucketLifecycle::NS,
            BucketPolicy::NS,
            BucketWebsite::NS,
            BucketVersioning::NS,
        ] {
            if self.idx.get(ns, &bucket).await?.is_some() {
                self.idx
                    .write(ns, &bucket, &[(bucket.clone().into_bytes(), None)])
                    .await?;
            }
        }
        ok(DeleteBucketOutput {})
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        ok(HeadBucketOutput {
            bucket_region: Some(self.settings.region.clone()),
            ..Default::default()
        })
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        // S3 reports us-east-1 as an empty constraint.
        let location_constraint = (self.settings.region != "us-east-1")
            .then(|| BucketLocationConstraint::from(self.settings.region.clone()));
        ok(GetBucketLocationOutput {
            location_constraint,
        })
    }

    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let mut buckets = vec![];
        for (name, value) in self.idx.entries(BUCKETS).await? {
            let m: BucketMeta = meta::decode(&value)?;
            buckets.push(Bucket {
                name: Some(String::from_utf8_lossy(&name).into_owned()),
                creation_date: Some(ms_to_ts(m.created_at_ms)),
                bucket_region: Some(self.settings.region.clone()),
            });
        }
        ok(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(Owner {
                display_name: Some("cairn".into()),
                id: Some(
                    self.idx
                        .account()
                        .public()
                        .0
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect(),
                ),
            }),
            ..Default::default()
        })
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let tls = over_tls(&req.extensions);
        let signed = Signed::of(&req);
        let input = req.input;
        rules::validate_key(&input.key)?;
        let key = request_key!(input, tls)?;
        self.require_bucket(&input.bucket).await?;
        let rules = self.rules(input.content_length, input.content_md5.as_deref())?;
        let tags = tagging(input.tagging.as_deref())?;
        let asked = self.check_new_object(
            AclRequest {
                canned: input.acl.as_ref().map(ObjectCannedACL::as_str),
                grants: policy::any_grant(&[
                    &input.grant_full_control,
                    &input.grant_read,
                    &input.grant_read_acp,
                    &input.grant_write_acp,
                ]),
                policy: None,
            },
            input.server_side_encryption.as_ref(),
            input.ssekms_key_id.is_some(),
            key.is_some(),
        )?;
        let kms = kms_ask!(input, signed);
        let seal = self
            .new_seal(&input.bucket, asked, kms, key.as_ref())
            .await?;
        let answer = self.sse_answer(
            seal.as_ref().and_then(|s| s.sse_c.as_ref()),
            seal.as_ref().and_then(|s| s.sse_kms.as_ref()),
            input.server_side_encryption.clone(),
        );
        let previous = self.object(&input.bucket, &input.key).await?;
        let conditions = rules::WriteConditions {
            if_match: input.if_match,
            if_none_match: input.if_none_match,
        };
        // Failing early saves the upload; the check that counts is made
        // again at the index write.
        conditions.check(
            &input.key,
            previous
                .as_ref()
                .filter(|p| !p.delete_marker)
                .map(|p| p.etag.as_str()),
        )?;
        if rules.declared.is_some_and(|d| d <= INLINE_MAX) {
            // Small enough to live in its index entry.
            let (data, md5) = body::read_small(body::s3_body(input.body), rules).await?;
            let size = data.len() as u64;
            let (data, md5) = match &seal {
                Some(s) => {
                    let sealed = sse::seal_all(&s.key.sealer()?, &data)?;
                    let md5 =
                        hex::encode(<[u8; 16]>::from(<md5::Md5 as md5::Digest>::digest(&sealed)));
                    (sealed, md5)
                }
                None => (data, md5),
            };
            let mut meta = ObjectMeta {
                version: ObjectMeta::VERSION,
                size,
                etag: md5,
                content_type: input.content_type,
                user_metadata: sorted_metadata(input.metadata),
                last_modified_ms: crate::now_ms(),
                parts: vec![],
                // No Cairn object to renew: it lives as long as its entry.
                lease_expires_at: u64::MAX,
                part_lists: vec![],
                inline: Some(data),
                tags,
                version_id: None,
                delete_marker: false,
                sse_c: seal.as_ref().and_then(|s| s.sse_c.clone()),
                sse_kms: seal.as_ref().and_then(|s| s.sse_kms.clone()),
            };
            self.commit_checked(&input.bucket, &input.key, &mut meta, previous, &conditions)
                .await?;
            return ok(PutObjectOutput {
                e_tag: Some(etag(&meta.etag)),
                server_side_encryption: answer.sse,
                sse_customer_algorithm: answer.customer_algorithm,
                sse_customer_key_md5: answer.customer_key_md5,
                ssekms_key_id: answer.kms_key_id,
                ssekms_encryption_context: answer.context,
                bucket_key_enabled: answer.bucket_key,
                version_id: meta.version_id,
                ..Default::default()
            });
        }
        let stored = self
            .store_as(body::s3_body(input.body), rules, seal.as_ref())
            .await?;
        let meta = self
            .commit_stored(
                &input.bucket,
                &input.key,
                stored,
                (input.content_type, sorted_metadata(input.metadata), tags),
                (crate::now_ms(), seal.as_ref()),
                (previous, &conditions),
            )
            .await?;
        ok(PutObjectOutput {
            e_tag: Some(etag(&meta.etag)),
            server_side_encryption: answer.sse,
            sse_customer_algorithm: answer.customer_algorithm,
            sse_customer_key_md5: answer.customer_key_md5,
            ssekms_key_id: answer.kms_key_id,
            ssekms_encryption_context: answer.context,
            bucket_key_enabled: answer.bucket_key,
            version_id: meta.version_id,
            ..Default::default()
        })
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let tls = over_tls(&req.extensions);
        let signed = Signed::of(&req);
        let input = req.input;
        let key = request_key!(input, tls)?;
        let conditions = Conditions {
            if_match: input.if_match,
            if_none_match: input.if_none_match,
            if_modified_since: input.if_modified_since.map(ts_secs),
            if_unmodified_since: input.if_unmodified_since.map(ts_secs),
        };
        let mut fresh = false;
        let (m, start, end, stream) = loop {
            let m = if let Some(v) = &input.version_id {
                self.readable_version(&input.bucket, &input.key, v).await?
            } else if fresh {
                let m = self
                    .idx
                    .get_aged(&objects_ns(&input.bucket), &input.key, Duration::ZERO)
                    .await?
                    .map(|v| meta::decode::<ObjectMeta>(&v))
                    .transpose()?
                    .filter(|m| !m.delete_marker)
                    .ok_or_else(|| GatewayError::NoSuchKey(input.key.clone()))?;
                self.resolve(&input.bucket, m).await?
            } else {
                self.existing_object(&input.bucket, &input.key).await?
            };
            self.check_conditions(&conditions, &m)?;
            let (start, end) = match &input.range {
                Some(r) => rules::resolve_range(r, m.size)?,
                None => (0, m.size),
            };
            match self.open_read(&m, start, end, (key.as_ref(), signed)).await {
                Ok(stream) => break (m, start, end, stream),
                // Replaced through another gateway: read the entry afresh, once.
                Err(GatewayError::DataNotFound(_)) if !fresh && input.version_id.is_none() => {
                    fresh = true
                }
                Err(e) => return Err(e.into()),
            }
        };
        let content_range = input
            .range
            .is_some()
            .then(|| format!("bytes {start}-{}/{}", end.saturating_sub(1), m.size));
        let tag_count = self.tags(&input.bucket, &input.key, &m).await?.len();
        let answer = self.sse_answer(m.sse_c.as_ref(), m.sse_kms.as_ref(), Some(encrypted()));
        ok(GetObjectOutput {
            body: Some(StreamingBlob::wrap(stream)),
            content_length: Some(i64::try_from(end - start).unwrap_or(i64::MAX)),
            content_range,
            accept_ranges: Some("bytes".into()),
            e_tag: Some(etag(&m.etag)),
            last_modified: Some(ms_to_ts(m.last_modified_ms)),
            content_type: Some(
                m.content_type
                    .clone()
                    .unwrap_or_else(|| "binary/octet-stream".into()),
            ),
            metadata: to_metadata(&m.user_metadata),
            parts_count: (m.parts.len() > 1)
                .then(|| i32::try_from(m.parts.len()).unwrap_or(i32::MAX)),
            tag_count: (tag_count > 0).then(|| i32::try_from(tag_count).unwrap_or(i32::MAX)),
            server_side_encryption: answer.sse,
            sse_customer_algorithm: answer.customer_algorithm,
            sse_customer_key_md5: answer.customer_key_md5,
            ssekms_key_id: answer.kms_key_id,
            bucket_key_enabled: answer.bucket_key,
            version_id: m.version_id.clone(),
            ..Default::default()
        })
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let tls = over_tls(&req.extensions);
        let input = req.input;
        let key = request_key!(input, tls)?;
        let m = match &input.version_id {
            Some(v) => self.readable_version(&input.bucket, &input.key, v).await?,
            None => self.existing_object(&input.bucket, &input.key).await?,
        };
        // HEAD of an SSE-C object needs its key too, as in S3.
        if let Some(sse) = &m.sse_c {
            sse.sealer(key.as_ref(), "the object")?;
        }
        // An SSE-KMS object's HEAD needs no key (S3 answers it without
        // asking KMS), so a disabled key does not hide it.
        let answer = self.sse_answer(m.sse_c.as_ref(), m.sse_kms.as_ref(), Some(encrypted()));
        self.check_conditions(
            &Conditions {
                if_match: input.if_match,
                if_none_match: input.if_none_match,
                if_modified_since: input.if_modified_since.map(ts_secs),
                if_unmodified_since: input.if_unmodified_since.map(ts_secs),
            },
            &m,
        )?;
        ok(HeadObjectOutput {
            content_length: Some(i64::try_from(m.size).unwrap_or(i64::MAX)),
            accept_ranges: Some("bytes".into()),
            e_tag: Some(etag(&m.etag)),
            last_modified: Some(ms_to_ts(m.last_modified_ms)),
            content_type: Some(
                m.content_type
                    .clone()
                    .unwrap_or_else(|| "binary/octet-stream".into()),
            ),
            metadata: to_metadata(&m.user_metadata),
            server_side_encryption: answer.sse,
            sse_customer_algorithm: answer.customer_algorithm,
            sse_customer_key_md5: answer.customer_key_md5,
            ssekms_key_id: answer.kms_key_id,
            bucket_key_enabled: answer.bucket_key,
            version_id: m.version_id.clone(),
            ..Default::default()
        })
    }

    async fn get_bucket_acl(
        &self,
        req: S3Request<GetBucketAclInput>,
    ) -> S3Result<S3Response<GetBucketAclOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        let me = self.idx.account().public();
        ok(GetBucketAclOutput {
            grants: Some(policy::owner_grants(&me)),
            owner: Some(policy::owner(&me)),
        })
    }

    async fn put_bucket_acl(
        &self,
        req: S3Request<PutBucketAclInput>,
    ) -> S3Result<S3Response<PutBucketAclOutput>> {
        let i = req.input;
        self.require_bucket(&i.bucket).await?;
        let grants = policy::any_grant(&[
            &i.grant_full_control,
            &i.grant_read,
            &i.grant_read_acp,
            &i.grant_write,
            &i.grant_write_acp,
        ]);
        self.check_acl(&AclRequest {
            canned: i.acl.as_ref().map(BucketCannedACL::as_str),
            grants,
            policy: i.access_control_policy.as_ref(),
        })?;
        ok(PutBucketAclOutput::default())
    }

    async fn get_object_acl(
        &self,
        req: S3Request<GetObjectAclInput>,
    ) -> S3Result<S3Response<GetObjectAclOutput>> {
        self.existing_object(&req.input.bucket, &req.input.key)
            .await?;
        let me = self.idx.account().public();
        ok(GetObjectAclOutput {
            grants: Some(policy::owner_grants(&me)),
            owner: Some(policy::owner(&me)),
            request_charged: None,
        })
    }

    async fn put_object_acl(
        &self,
        req: S3Request<PutObjectAclInput>,
    ) -> S3Result<S3Response<PutObjectAclOutput>> {
        let i = req.input;
        self.existing_object(&i.bucket, &i.key).await?;
        let grants = policy::any_grant(&[
            &i.grant_full_control,
            &i.grant_read,
            &i.grant_read_acp,
            &i.grant_write,
            &i.grant_write_acp,
        ]);
        self.check_acl(&AclRequest {
            canned: i.acl.as_ref().map(ObjectCannedACL::as_str),
            grants,
            policy: i.access_control_policy.as_ref(),
        })?;
        ok(PutObjectAclOutput::default())
    }

    async fn get_bucket_ownership_controls(
        &self,
        req: S3Request<GetBucketOwnershipControlsInput>,
    ) -> S3Result<S3Response<GetBucketOwnershipControlsOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        ok(GetBucketOwnershipControlsOutput {
            ownership_controls: Some(OwnershipControls {
                rules: vec![OwnershipControlsRule {
                    object_ownership: ObjectOwnership::from_static(
                        ObjectOwnership::BUCKET_OWNER_ENFORCED,
                    ),
                }],
            }),
        })
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        let status = match self.versioning(&req.input.bucket).await? {
            Versioning::Off => None,
            Versioning::Enabled => Some(BucketVersioningStatus::ENABLED),
            Versioning::Suspended => Some(BucketVersioningStatus::SUSPENDED),
        };
        ok(GetBucketVersioningOutput {
            status: status.map(BucketVersioningStatus::from_static),
            ..Default::default()
        })
    }

    async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        let input = req.input;
        self.require_bucket(&input.bucket).await?;
        let c = input.versioning_configuration;
        if c.mfa_delete
            .as_ref()
            .is_some_and(|m| m.as_str() == MFADelete::ENABLED)
        {
            return Err(GatewayError::NotImplemented(
                "MFA delete is not supported: the gateway has no MFA devices".into(),
            )
            .into());
        }
        let enabled = match c.status.as_ref().map(BucketVersioningStatus::as_str) {
            Some(BucketVersioningStatus::ENABLED) => true,
            Some(BucketVersioningStatus::SUSPENDED) => false,
            _ => {
                return Err(GatewayError::MalformedXml(
                    "versioning Status must be Enabled or Suspended".into(),
                )
                .into());
            }
        };
        self.set_versioning(&input.bucket, enabled).await?;
        ok(PutBucketVersioningOutput::default())
    }

    async fn get_bucket_policy(
        &self,
        req: S3Request<GetBucketPolicyInput>,
    ) -> S3Result<S3Response<GetBucketPolicyOutput>> {
        let bucket = req.input.bucket;
        match self.bucket_setting::<BucketPolicy>(&bucket).await? {
            Some(p) => ok(GetBucketPolicyOutput {
                policy: Some(p.text),
            }),
            None => Err(GatewayError::NoSuchBucketPolicy(bucket).into()),
        }
    }

    async fn get_bucket_policy_status(
        &self,
        req: S3Request<GetBucketPolicyStatusInput>,
    ) -> S3Result<S3Response<GetBucketPolicyStatusOutput>> {
        let bucket = req.input.bucket;
        match self.bucket_setting::<BucketPolicy>(&bucket).await? {
            Some(p) => ok(GetBucketPolicyStatusOutput {
                policy_status: Some(PolicyStatus {
                    is_public: Some(crate::access::is_public(&p.policy)),
                }),
            }),
            None => Err(GatewayError::NoSuchBucketPolicy(bucket).into()),
        }
    }

    async fn put_bucket_policy(
        &self,
        req: S3Request<PutBucketPolicyInput>,
    ) -> S3Result<S3Response<PutBucketPolicyOutput>> {
        let input = req.input;
        let account = policy::canonical_id(&self.idx.account().public());
        let policy = crate::access::parse(&input.policy, &input.bucket, &account)?;
        let set = BucketPolicy {
            version: BucketPolicy::VERSION,
            created_at_ms: 0,
            text: input.policy,
            policy,
        };
        self.set_bucket_setting(&input.bucket, Some(set)).await?;
        ok(PutBucketPolicyOutput::default())
    }

    async fn delete_bucket_policy(
        &self,
        req: S3Request<DeleteBucketPolicyInput>,
    ) -> S3Result<S3Response<DeleteBucketPolicyOutput>> {
        self.set_bucket_setting::<BucketPolicy>(&req.input.bucket, None)
            .await?;
        ok(DeleteBucketPolicyOutput::default())
    }

    async fn get_bucket_encryption(
        &self,
        req: S3Request<GetBucketEncryptionInput>,
    ) -> S3Result<S3Response<GetBucketEncryptionOutput>> {
        let kms = self
            .bucket_setting::<BucketEncryption>(&req.input.bucket)
            .await?
            .filter(|e| e.kms)
            .map(|e| (e.kms_key_id, e.bucket_key));
        ok(GetBucketEncryptionOutput {
            server_side_encryption_configuration: Some(policy::encryption(kms)),
        })
    }

    /// `AES256` is what every object has: the setting is removed. `aws:kms`
    /// is kept (its key id checked for form here, resolved at each write).
    async fn put_bucket_encryption(
        &self,
        req: S3Request<PutBucketEncryptionInput>,
    ) -> S3Result<S3Response<PutBucketEncryptionOutput>> {
        let bucket = req.input.bucket;
        self.require_bucket(&bucket).await?;
        let setting =
            match policy::check_encryption(&req.input.server_side_encryption_configuration)? {
                Some((key_id, bucket_key)) => {
                    if let Some(id) = &key_id {
                        self.kms.parse(id)?;
                    }
                    Some(BucketEncryption {
                        version: BucketEncryption::VERSION,
                        created_at_ms: 0,
                        kms: true,
                        kms_key_id: key_id,
                        bucket_key,
                    })
                }
                None => None,
            };
        self.set_bucket_setting(&bucket, setting).await?;
        ok(PutBucketEncryptionOutput::default())
    }

    /// Encryption stays on (as S3's does: it falls back to AES256).
    async fn delete_bucket_encryption(
        &self,
        req: S3Request<DeleteBucketEncryptionInput>,
    ) -> S3Result<S3Response<DeleteBucketEncryptionOutput>> {
        self.set_bucket_setting::<BucketEncryption>(&req.input.bucket, None)
            .await?;
        ok(DeleteBucketEncryptionOutput::default())
    }

    async fn get_bucket_tagging(
        &self,
        req: S3Request<GetBucketTaggingInput>,
    ) -> S3Result<S3Response<GetBucketTaggingOutput>> {
        let bucket = req.input.bucket;
        let Some(set) = self.bucket_setting::<BucketTags>(&bucket).await? else {
            return Err(GatewayError::NoSuchTagSet(bucket).into());
        };
        let tags = set.tags;
        ok(GetBucketTaggingOutput {
            tag_set: tag_set(tags),
        })
    }

    async fn put_bucket_tagging(
        &self,
        req: S3Request<PutBucketTaggingInput>,
    ) -> S3Result<S3Response<PutBucketTaggingOutput>> {
        let input = req.input;
        let tags = rules::check_bucket_tags(tag_pairs(input.tagging.tag_set))?;
        // An empty set is no set, as in S3.
        let set = (!tags.is_empty()).then_some(BucketTags {
            version: BucketTags::VERSION,
            created_at_ms: 0,
            tags,
        });
        self.set_bucket_setting(&input.bucket, set).await?;
        ok(PutBucketTaggingOutput::default())
    }

    async fn delete_bucket_tagging(
        &self,
        req: S3Request<DeleteBucketTaggingInput>,
    ) -> S3Result<S3Response<DeleteBucketTaggingOutput>> {
        self.set_bucket_setting::<BucketTags>(&req.input.bucket, None)
            .await?;
        ok(DeleteBucketTaggingOutput::default())
    }

    async fn get_bucket_cors(
        &self,
        req: S3Request<GetBucketCorsInput>,
    ) -> S3Result<S3Response<GetBucketCorsOutput>> {
        let bucket = req.input.bucket;
        let Some(c) = self.bucket_setting::<BucketCors>(&bucket).await? else {
            return Err(GatewayError::NoSuchCorsConfiguration(bucket).into());
        };
        let some = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        ok(GetBucketCorsOutput {
            cors_rules: Some(
                c.rules
                    .iter()
                    .map(|r| CORSRule {
                        id: r.id.clone(),
                        allowed_origins: r.origins.clone(),
                        allowed_methods: r.methods.clone(),
                        allowed_headers: some(&r.headers),
                        expose_headers: some(&r.expose),
                        max_age_seconds: r.max_age_secs,
                    })
                    .collect(),
            ),
        })
    }

    async fn put_bucket_cors(
        &self,
        req: S3Request<PutBucketCorsInput>,
    ) -> S3Result<S3Response<PutBucketCorsOutput>> {
        let input = req.input;
        let rules: Vec<crate::cors::Rule> = input
            .cors_configuration
            .cors_rules
            .into_iter()
            .map(|r| crate::cors::Rule {
                id: r.id,
                origins: r.allowed_origins,
                methods: r.allowed_methods,
                headers: r.allowed_headers.unwrap_or_default(),
                expose: r.expose_headers.unwrap_or_default(),
                max_age_secs: r.max_age_seconds,
            })
            .collect();
        crate::cors::check(&rules)?;
        let set = BucketCors {
            version: BucketCors::VERSION,
            created_at_ms: 0,
            rules,
        };
        self.set_bucket_setting(&input.bucket, Some(set)).await?;
        ok(PutBucketCorsOutput::default())
    }

    async fn delete_bucket_cors(
        &self,
        req: S3Request<DeleteBucketCorsInput>,
    ) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
        self.set_bucket_setting::<BucketCors>(&req.input.bucket, None)
            .await?;
        ok(DeleteBucketCorsOutput::default())
    }

    async fn get_bucket_website(
        &self,
        req: S3Request<GetBucketWebsiteInput>,
    ) -> S3Result<S3Response<GetBucketWebsiteOutput>> {
        let bucket = req.input.bucket;
        let Some(w) = self.bucket_setting::<BucketWebsite>(&bucket).await? else {
            return Err(GatewayError::NoSuchWebsiteConfiguration(bucket).into());
        };
        let site = w.site;
        let rules: Vec<RoutingRule> = site
            .rules
            .iter()
            .map(|r| RoutingRule {
                condition: (r.key_prefix.is_some() || r.error_code.is_some()).then(|| {
                    s3s::dto::Condition {
                        http_error_code_returned_equals: r.error_code.map(|c| c.to_string()),
                        key_prefix_equals: r.key_prefix.clone(),
                    }
                }),
                redirect: s3s::dto::Redirect {
                    host_name: r.redirect.host.clone(),
                    http_redirect_code: r.redirect.code.map(|c| c.to_string()),
                    protocol: r.redirect.protocol.clone().map(Protocol::from),
                    replace_key_prefix_with: r.redirect.replace_prefix.clone(),
                    replace_key_with: r.redirect.replace_key.clone(),
                },
            })
            .collect();
        ok(GetBucketWebsiteOutput {
            error_document: site.error_key.map(|key| ErrorDocument { key }),
            index_document: site.index.map(|suffix| IndexDocument { suffix }),
            redirect_all_requests_to: site.redirect_all.map(|(host_name, protocol)| {
                RedirectAllRequestsTo {
                    host_name,
                    protocol: protocol.map(Protocol::from),
                }
            }),
            routing_rules: (!rules.is_empty()).then_some(rules),
        })
    }

    async fn put_bucket_website(
        &self,
        req: S3Request<PutBucketWebsiteInput>,
    ) -> S3Result<S3Response<PutBucketWebsiteOutput>> {
        let input = req.input;
        let c = input.website_configuration;
        let code = |s: &Option<String>, what: &str| -> Result<Option<u16>, GatewayError> {
            s.as_deref()
                .map(|v| {
                    v.trim().parse::<u16>().map_err(|_| {
                        GatewayError::InvalidArgument(format!("{what} {v:?} is not an HTTP status"))
                    })
                })
                .transpose()
        };
        let mut rules = Vec::new();
        for r in c.routing_rules.unwrap_or_default() {
            let cond = r.condition.unwrap_or_default();
            rules.push(crate::website::Rule {
                key_prefix: cond.key_prefix_equals,
                error_code: code(
                    &cond.http_error_code_returned_equals,
                    "HttpErrorCodeReturnedEquals",
                )?,
                redirect: crate::website::Redirect {
                    host: r.redirect.host_name,
                    protocol: r.redirect.protocol.map(|p| p.as_str().to_string()),
                    code: code(&r.redirect.http_redirect_code, "HttpRedirectCode")?,
                    replace_prefix: r.redirect.replace_key_prefix_with,
                    replace_key: r.redirect.replace_key_with,
                },
            });
        }
        let site = crate::website::Site {
            index: c.index_document.map(|d| d.suffix),
            error_key: c.error_document.map(|d| d.key),
            redirect_all: c
                .redirect_all_requests_to
                .map(|r| (r.host_name, r.protocol.map(|p| p.as_str().to_string()))),
            rules,
        };
        crate::website::check(&site)?;
        let set = BucketWebsite {
            version: BucketWebsite::VERSION,
            created_at_ms: 0,
            site,
        };
        self.set_bucket_setting(&input.bucket, Some(set)).await?;
        ok(PutBucketWebsiteOutput::default())
    }

    async fn delete_bucket_website(
        &self,
        req: S3Request<DeleteBucketWebsiteInput>,
    ) -> S3Result<S3Response<DeleteBucketWebsiteOutput>> {
        self.set_bucket_setting::<BucketWebsite>(&req.input.bucket, None)
            .await?;
        ok(DeleteBucketWebsiteOutput::default())
    }

    async fn get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
        let bucket = req.input.bucket;
        let Some(c) = self.bucket_setting::<BucketLifecycle>(&bucket).await? else {
            return Err(GatewayError::NoSuchLifecycleConfiguration(bucket).into());
        };
        ok(GetBucketLifecycleConfigurationOutput {
            rules: Some(c.rules.iter().map(lifecycle_to_s3).collect()),
            ..Default::default()
        })
    }

    async fn put_bucket_lifecycle_configuration(
        &self,
        req: S3Request<PutBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
        let input = req.input;
        let rules = input
            .lifecycle_configuration
            .map(|c| c.rules)
            .unwrap_or_default()
            .into_iter()
            .map(lifecycle_from_s3)
            .collect::<Result<Vec<_>, _>>()?;
        crate::lifecycle::check(&rules)?;
        let set = BucketLifecycle {
            version: BucketLifecycle::VERSION,
            created_at_ms: 0,
            rules,
        };
        self.set_bucket_setting(&input.bucket, Some(set)).await?;
        ok(PutBucketLifecycleConfigurationOutput::default())
    }

    async fn delete_bucket_lifecycle(
        &self,
        req: S3Request<DeleteBucketLifecycleInput>,
    ) -> S3Result<S3Response<DeleteBucketLifecycleOutput>> {
        self.set_bucket_setting::<BucketLifecycle>(&req.input.bucket, None)
            .await?;
        ok(DeleteBucketLifecycleOutput::default())
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        let input = req.input;
        let named = input.version_id.as_deref();
        let m = self
            .tagged_version(&input.bucket, &input.key, named)
            .await?;
        let tags = self.tags(&input.bucket, &input.key, &m).await?;
        ok(GetObjectTaggingOutput {
            tag_set: tag_set(tags),
            version_id: answered_version(named.is_some(), &m),
        })
    }

    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        let input = req.input;
        let tags = rules::check_tags(tag_pairs(input.tagging.tag_set))?;
        let named = input.version_id.as_deref();
        let m = self
            .tagged_version(&input.bucket, &input.key, named)
            .await?;
        self.set_tags(&input.bucket, &input.key, &m, tags).await?;
        ok(PutObjectTaggingOutput {
            version_id: answered_version(named.is_some(), &m),
        })
    }

    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        let input = req.input;
        let named = input.version_id.as_deref();
        let m = self
            .tagged_version(&input.bucket, &input.key, named)
            .await?;
        self.set_tags(&input.bucket, &input.key, &m, vec![]).await?;
        ok(DeleteObjectTaggingOutput {
            version_id: answered_version(named.is_some(), &m),
        })
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        self.require_bucket(&input.bucket).await?;
        let done = match &input.version_id {
            Some(v) => self.delete_version(&input.bucket, &input.key, v).await?,
            None => self.delete_current(&input.bucket, &input.key).await?,
        };
        ok(DeleteObjectOutput {
            delete_marker: done.delete_marker.then_some(true),
            version_id: done.version_id,
            ..Default::default()
        })
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        self.require_bucket(&input.bucket).await?;
        let quiet = input.delete.quiet.unwrap_or(false);
        if self.versioning(&input.bucket).await? != Versioning::Off
            || input.delete.objects.iter().any(|o| o.version_id.is_some())
        {
            // One at a time: each may write a marker or promote a version.
            let (mut deleted, mut errors) = (vec![], vec![]);
            for o in input.delete.objects {
                let done = match &o.version_id {
                    Some(v) => self.delete_version(&input.bucket, &o.key, v).await,
                    None => self.delete_current(&input.bucket, &o.key).await,
                };
                match done {
                    Ok(d) if !quiet => deleted.push(DeletedObject {
                        key: Some(o.key),
                        delete_marker: d.delete_marker.then_some(true),
                        delete_marker_version_id: if o.version_id.is_none() && d.delete_marker {
                            d.version_id.clone()
                        } else {
                            None
                        },
                        version_id: o.version_id,
                    }),
                    Ok(_) => {}
                    Err(e) => {
                        let message = e.to_string();
                        errors.push(Error {
                            code: Some(s3s::S3Error::from(e).code().as_str().to_owned()),
                            key: Some(o.key),
                            version_id: o.version_id,
                            message: Some(message),
                        });
                    }
                }
            }
            return ok(DeleteObjectsOutput {
                deleted: Some(deleted),
                errors: Some(errors),
                ..Default::default()
            });
        }
        let ns = objects_ns(&input.bucket);
        let mut changes = vec![];
        let mut caps = vec![];
        let mut lists = vec![];
        let mut deleted = vec![];
        for o in input.delete.objects {
            if let Some(v) = self.idx.get(&ns, &o.key).await? {
                if let Ok(m) = meta::decode::<ObjectMeta>(&v)
                    && let Ok(m) = self.resolve(&input.bucket, m).await
                {
                    lists.extend(m.part_lists);
                    caps.extend(m.parts.into_iter().map(|p| p.cap));
                }
                changes.push((o.key.clone().into_bytes(), None));
            }
            if !quiet {
                deleted.push(DeletedObject {
                    key: Some(o.key),
                    ..Default::default()
                });
            }
        }
        // One delta for the whole batch.
        let errors = match self.idx.write(&ns, &input.bucket, &changes).await {
            Ok(_) => {
                self.forget(caps);
                self.forget_lists(&input.bucket, lists);
                let keys: Vec<&str> = changes
                    .iter()
                    .filter_map(|(k, _)| std::str::from_utf8(k).ok())
                    .collect();
                if let Err(e) = self.forget_tags(&input.bucket, &keys).await {
                    // The objects are gone; a leftover tag entry applies to nothing.
                    tracing::warn!("could not remove the tags of deleted objects: {e}");
                }
                vec![]
            }
            Err(e) => {
                let message = e.to_string();
                let errs = changes
                    .iter()
                    .map(|(k, _)| Error {
                        code: Some("InternalError".into()),
                        key: Some(String::from_utf8_lossy(k).into_owned()),
                        message: Some(message.clone()),
                        ..Default::default()
                    })
                    .collect();
                deleted.retain(|d| {
                    !changes
                        .iter()
                        .any(|(k, _)| d.key.as_deref().map(str::as_bytes) == Some(k.as_slice()))
                });
                errs
            }
        };
        ok(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..Default::default()
        })
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let tls = over_tls(&req.extensions);
        let signed = Signed::of(&req);
        let input = req.input;
        rules::validate_key(&input.key)?;
        let key = request_key!(input, tls)?;
        let source_key = request_key!(input, tls, copy_source)?;
        self.require_bucket(&input.bucket).await?;
        let asked = self.check_new_object(
            AclRequest {
                canned: input.acl.as_ref().map(ObjectCannedACL::as_str),
                grants: policy::any_grant(&[
                    &input.grant_full_control,
                    &input.grant_read,
                    &input.grant_read_acp,
                    &input.grant_write_acp,
                ]),
                policy: None,
            },
            input.server_side_encryption.as_ref(),
            input.ssekms_key_id.is_some(),
            key.is_some(),
        )?;
        // A copy is a new Cairn object, so it is sealed anew (or not) as the
        // request (or the bucket's default) says, whatever its source was.
        let kms = kms_ask!(input, signed);
        let seal = self
            .new_seal(&input.bucket, asked, kms, key.as_ref())
            .await?;
        let answer = self.sse_answer(
            seal.as_ref().and_then(|s| s.sse_c.as_ref()),
            seal.as_ref().and_then(|s| s.sse_kms.as_ref()),
            input.server_side_encryption.clone(),
        );
        let (src_bucket, src_key, src) = self.copy_source(&input.copy_source).await?;
        self.check_conditions(
            &Conditions {
                if_match: input.copy_source_if_match,
                if_none_match: input.copy_source_if_none_match,
                if_modified_since: input.copy_source_if_modified_since.map(ts_secs),
                if_unmodified_since: input.copy_source_if_unmodified_since.map(ts_secs),
            },
            &src,
        )
        .map_err(|e| match e {
            GatewayError::NotModified => GatewayError::PreconditionFailed,
            e => e,
        })?;
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        let tags = if input
            .tagging_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == TaggingDirective::REPLACE)
        {
            tagging(input.tagging.as_deref())?
        } else {
            self.tags(&src_bucket, &src_key, &src).await?
        };
        let previous = self.object(&input.bucket, &input.key).await?;
        // A copy is a new Cairn object: parts are never shared between S3
        // objects, so deleting one never affects another.
        let _copy = self.copy_permit().await?;
        // The get first, so it holds its node slot before the put takes one.
        let stream = self
            .open_read(&src, 0, src.size, (source_key.as_ref(), signed))
            .await?;
        let rules = BodyRules {
            max: self.settings.max_object.max(src.size),
            declared: Some(src.size),
            md5: None,
            idle: self.settings.body_idle,
        };
        let stored = self
            .store_as(body::from_channel(stream), rules, seal.as_ref())
            .await?;
        let now = crate::now_ms();
        let described = if replace {
            (input.content_type, sorted_metadata(input.metadata), tags)
        } else {
            (src.content_type.clone(), src.user_metadata.clone(), tags)
        };
        let meta = self
            .commit_stored(
                &input.bucket,
                &input.key,
                stored,
                described,
                (now, seal.as_ref()),
                (previous, &rules::WriteConditions::default()),
            )
            .await?;
        ok(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&meta.etag)),
                last_modified: Some(ms_to_ts(now)),
                ..Default::default()
            }),
            server_side_encryption: answer.sse,
            sse_customer_algorithm: answer.customer_algorithm,
            sse_customer_key_md5: answer.customer_key_md5,
            ssekms_key_id: answer.kms_key_id,
            ssekms_encryption_context: answer.context,
            bucket_key_enabled: answer.bucket_key,
            copy_source_version_id: source_version(&input.copy_source, &src),
            version_id: meta.version_id,
            ..Default::default()
        })
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let url = is_url(&input.encoding_type);
        let token = input
            .continuation_token
            .as_deref()
            .map(decode_token)
            .transpose()?;
        let after = token.as_deref().or(input.start_after.as_deref());
        let prefix = input.prefix.clone().unwrap_or_default();
        let (objects, prefixes, truncated, next, max) = self
            .list(
                &input.bucket,
                &prefix,
                input.delimiter.as_deref(),
                after,
                input.max_keys,
                url,
            )
            .await?;
        let key_count = i32::try_from(objects.len() + prefixes.len()).unwrap_or(i32::MAX);
        ok(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(if url { url_encode(&prefix) } else { prefix }),
            max_keys: Some(max),
            key_count: Some(key_count),
            continuation_token: input.continuation_token,
            is_truncated: Some(truncated),
            next_continuation_token: next.map(|n| encode_token(&n)),
            contents: Some(objects),
            common_prefixes: Some(prefixes),
            delimiter: input
                .delimiter
                .map(|d| if url { url_encode(&d) } else { d }),
            encoding_type: input.encoding_type,
            start_after: input
                .start_after
                .map(|s| if url { url_encode(&s) } else { s }),
            ..Default::default()
        })
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let url = is_url(&input.encoding_type);
        let prefix = input.prefix.clone().unwrap_or_default();
        let (objects, prefixes, truncated, next, max) = self
            .list(
                &input.bucket,
                &prefix,
                input.delimiter.as_deref(),
                input.marker.as_deref().filter(|m| !m.is_empty()),
                input.max_keys,
                url,
            )
            .await?;
        ok(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(if url { url_encode(&prefix) } else { prefix }),
            marker: input.marker,
            max_keys: Some(max),
            is_truncated: Some(truncated),
            contents: Some(objects),
            common_prefixes: Some(prefixes),
            delimiter: input.delimiter,
            next_marker: next.map(|n| if url { url_encode(&n) } else { n }),
            encoding_type: input.encoding_type,
            ..Default::default()
        })
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let tls = over_tls(&req.extensions);
        let signed = Signed::of(&req);
        let input = req.input;
        rules::validate_key(&input.key)?;
        let key = request_key!(input, tls)?;
        let asked = self.check_new_object(
            AclRequest {
                canned: input.acl.as_ref().map(ObjectCannedACL::as_str),
                grants: policy::any_grant(&[
                    &input.grant_full_control,
                    &input.grant_read,
                    &input.grant_read_acp,
                    &input.grant_write_acp,
                ]),
                policy: None,
            },
            input.server_side_encryption.as_ref(),
            input.ssekms_key_id.is_some(),
            key.is_some(),
        )?;
        self.require_bucket(&input.bucket).await?;
        // Every part is sealed under the one key and salt of the upload,
        // chosen (and for KMS, checked enabled) now.
        let kms = kms_ask!(input, signed);
        let seal = self
            .new_seal(&input.bucket, asked, kms, key.as_ref())
            .await?;
        let (sse_c, sse_kms) = match seal {
            Some(s) => (s.sse_c, s.sse_kms),
            None => (None, None),
        };
        let answer = self.sse_answer(
            sse_c.as_ref(),
            sse_kms.as_ref(),
            input.server_side_encryption.clone(),
        );
        let upload_id = hex::encode(rand::random::<[u8; 16]>());
        let value = meta::encode(&UploadMeta {
            version: UploadMeta::VERSION,
            key: input.key.clone(),
            initiated_ms: crate::now_ms(),
            content_type: input.content_type,
            user_metadata: sorted_metadata(input.metadata),
            tags: tagging(input.tagging.as_deref())?,
            sse_c,
            sse_kms,
        })?;
        self.idx
            .write(
                &uploads_ns(&input.bucket),
                &input.bucket,
                &[(upload_id.clone().into_bytes(), Some(value))],
            )
            .await?;
        ok(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            server_side_encryption: answer.sse,
            sse_customer_algorithm: answer.customer_algorithm,
            sse_customer_key_md5: answer.customer_key_md5,
            ssekms_key_id: answer.kms_key_id,
            ssekms_encryption_context: answer.context,
            bucket_key_enabled: answer.bucket_key,
            ..Default::default()
        })
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let tls = over_tls(&req.extensions);
        let signed = Signed::of(&req);
        let input = req.input;
        let key = request_key!(input, tls)?;
        if !(1..=MAX_PART_NUMBER).contains(&input.part_number) {
            return Err(GatewayError::InvalidArgument(
                "a part number is between 1 and 10000".into(),
            )
            .into());
        }
        let upload = self
            .upload(&input.bucket, &input.upload_id, &input.key)
            .await?;
        let seal = self.part_seal(&upload, key.as_ref(), signed).await?;
        let answer = self.sse_answer(upload.sse_c.as_ref(), upload.sse_kms.as_ref(), None);
        let rules = self.rules(input.content_length, input.content_md5.as_deref())?;
        let stored = self
            .store_as(body::s3_body(input.body), rules, seal.as_ref())
            .await?;
        let md5 = self
            .store_part(&input.bucket, &input.upload_id, input.part_number, stored)
            .await?;
        ok(UploadPartOutput {
            e_tag: Some(etag(&md5)),
            server_side_encryption: answer.sse,
            sse_customer_algorithm: answer.customer_algorithm,
            sse_customer_key_md5: answer.customer_key_md5,
            ssekms_key_id: answer.kms_key_id,
            bucket_key_enabled: answer.bucket_key,
            ..Default::default()
        })
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let tls = over_tls(&req.extensions);
        let signed = Signed::of(&req);
        let input = req.input;
        let key = request_key!(input, tls)?;
        let source_key = request_key!(input, tls, copy_source)?;
        if !(1..=MAX_PART_NUMBER).contains(&input.part_number) {
            return Err(GatewayError::InvalidArgument(
                "a part number is between 1 and 10000".into(),
            )
            .into());
        }
        let upload = self
            .upload(&input.bucket, &input.upload_id, &input.key)
            .await?;
        let seal = self.part_seal(&upload, key.as_ref(), signed).await?;
        let answer = self.sse_answer(upload.sse_c.as_ref(), upload.sse_kms.as_ref(), None);
        let (_, _, src) = self.copy_source(&input.copy_source).await?;
        let (start, end) = match input.copy_source_range.as_deref() {
            Some(r) => {
                let range = Range::parse(r).map_err(|_| {
                    GatewayError::InvalidArgument(format!("{r:?} is not a byte range"))
                })?;
                rules::resolve_range(&range, src.size)?
            }
            None => (0, src.size),
        };
        let rules = BodyRules {
            max: self.settings.max_object,
            declared: Some(end - start),
            md5: None,
            idle: self.settings.body_idle,
        };
        let _copy = self.copy_permit().await?;
        let stream = self
            .open_read(&src, start, end, (source_key.as_ref(), signed))
            .await?;
        let stored = self
            .store_as(body::from_channel(stream), rules, seal.as_ref())
            .await?;
        let md5 = self
            .store_part(&input.bucket, &input.upload_id, input.part_number, stored)
            .await?;
        ok(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(etag(&md5)),
                last_modified: Some(ms_to_ts(crate::now_ms())),
                ..Default::default()
            }),
            copy_source_version_id: source_version(&input.copy_source, &src),
            server_side_encryption: answer.sse,
            sse_customer_algorithm: answer.customer_algorithm,
            sse_customer_key_md5: answer.customer_key_md5,
            ssekms_key_id: answer.kms_key_id,
            bucket_key_enabled: answer.bucket_key,
            ..Default::default()
        })
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let conditions = rules::WriteConditions {
            if_match: input.if_match,
            if_none_match: input.if_none_match,
        };
        let (bucket, key, upload_id) = (input.bucket, input.key, input.upload_id);
        let upload = self.upload(&bucket, &upload_id, &key).await?;
        let asked = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default();
        if asked.is_empty() {
            return Err(GatewayError::InvalidArgument(
                "a completed upload lists at least one part".into(),
            )
            .into());
        }
        let have: HashMap<i32, PartMeta> = self
            .upload_parts(&bucket, &upload_id, true)
            .await?
            .into_iter()
            .collect();
        let numbers: Vec<i32> = asked.iter().map(|p| p.part_number.unwrap_or(0)).collect();
        if numbers.first().is_some_and(|&n| n < 1) || !numbers.windows(2).all(|w| w[0] < w[1]) {
            return Err(GatewayError::InvalidPartOrder.into());
        }
        let mut chosen: Vec<&PartMeta> = vec![];
        for (i, (p, &n)) in asked.iter().zip(&numbers).enumerate() {
            let part = have
                .get(&n)
                .ok_or_else(|| GatewayError::InvalidPart(format!("part {n} was not uploaded")))?;
            if let Some(e) = &p.e_tag
                && e.value().trim_matches('"') != part.etag
            {
                return Err(GatewayError::InvalidPart(format!(
                    "part {n}'s ETag is not {}",
                    e.value()
                ))
                .into());
            }
            if i + 1 < asked.len() && part.size < self.settings.min_part {
                return Err(GatewayError::EntityTooSmall {
                    number: n,
                    size: part.size,
                    min: self.settings.min_part,
                }
                .into());
            }
            chosen.push(part);
        }
        let etags: Vec<&str> = chosen.iter().map(|p| p.etag.as_str()).collect();
        let etag_value = rules::multipart_etag(&etags)?;
        let previous = self.object(&bucket, &key).await?;
        let mut meta = ObjectMeta {
            version: ObjectMeta::VERSION,
            size: chosen.iter().map(|p| p.size).sum(),
            etag: etag_value.clone(),
            content_type: upload.content_type,
            user_metadata: upload.user_metadata,
            last_modified_ms: crate::now_ms(),
            parts: chosen
                .iter()
                .map(|p| PartRef {
                    cap: p.cap.clone(),
                    size: p.size,
                })
                .collect(),
            lease_expires_at: self.lease_end(),
            part_lists: vec![],
            inline: None,
            tags: upload.tags,
            version_id: None,
            delete_marker: false,
            sse_c: upload.sse_c.clone(),
            sse_kms: upload.sse_kms.clone(),
        };
        // A failed condition leaves the upload as it was, to abort or retry.
        self.commit_checked(&bucket, &key, &mut meta, previous, &conditions)
            .await?;
        // The upload's entries go; parts it did not use are removed.
        let used: Vec<&String> = meta.parts.iter().map(|p| &p.cap).collect();
        let unused: Vec<String> = have
            .values()
            .map(|p| p.cap.clone())
            .filter(|c| !used.contains(&c))
            .collect();
        let mut changes: Vec<Change> = vec![(upload_id.clone().into_bytes(), None)];
        changes.extend(
            have.keys()
                .map(|n| (meta::part_key(&upload_id, *n).into_bytes(), None)),
        );
        if let Err(e) = self
            .idx
            .write(&uploads_ns(&bucket), &bucket, &changes)
            .await
        {
            // The object is complete; the sweeper clears the upload later.
            tracing::warn!("clearing completed upload {upload_id} failed: {e}");
        }
        self.forget(unused);
        ok(CompleteMultipartUploadOutput {
            bucket: Some(bucket.clone()),
            key: Some(key.clone()),
            e_tag: Some(etag(&etag_value)),
            location: Some(format!("/{bucket}/{key}")),
            server_side_encryption: meta
                .sse_kms
                .is_some()
                .then(|| ServerSideEncryption::from_static(ServerSideEncryption::AWS_KMS)),
            ssekms_key_id: meta.sse_kms.as_ref().map(|k| self.kms.arn(&k.key_id)),
            bucket_key_enabled: meta.sse_kms.as_ref().map(|k| k.bucket_key),
            version_id: meta.version_id,
            ..Default::default()
        })
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        self.upload(&input.bucket, &input.upload_id, &input.key)
            .await?;
        self.abort(&input.bucket, &input.upload_id).await?;
        ok(AbortMultipartUploadOutput::default())
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        self.upload(&input.bucket, &input.upload_id, &input.key)
            .await?;
        let marker = input.part_number_marker.unwrap_or(0);
        let max = input.max_parts.unwrap_or(1000).clamp(1, 1000);
        let all: Vec<(i32, PartMeta)> = self
            .upload_parts(&input.bucket, &input.upload_id, false)
            .await?
            .into_iter()
            .filter(|(n, _)| *n > marker)
            .collect();
        let truncated = all.len() > usize::try_from(max).unwrap_or(1000);
        let page: Vec<_> = all
            .into_iter()
            .take(usize::try_from(max).unwrap_or(1000))
            .collect();
        let next = truncated.then(|| page.last().map_or(0, |(n, _)| *n));
        ok(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: next,
            max_parts: Some(max),
            is_truncated: Some(truncated),
            parts: Some(
                page.into_iter()
                    .map(|(n, p)| Part {
                        part_number: Some(n),
                        e_tag: Some(etag(&p.etag)),
                        size: Some(i64::try_from(p.size).unwrap_or(i64::MAX)),
                        last_modified: Some(ms_to_ts(p.last_modified_ms)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        })
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let input = req.input;
        let url = is_url(&input.encoding_type);
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = input.max_keys.unwrap_or(1000).clamp(0, 1000);
        let page = self
            .list_versions(
                &input.bucket,
                &prefix,
                input.delimiter.as_deref(),
                (
                    input.key_marker.as_deref(),
                    input.version_id_marker.as_deref(),
                ),
                usize::try_from(max).unwrap_or(0),
            )
            .await?;
        let shown = |k: &str| if url { url_encode(k) } else { k.to_string() };
        let (mut versions, mut markers) = (vec![], vec![]);
        for v in page.versions {
            let m = &v.meta;
            if m.delete_marker {
                markers.push(DeleteMarkerEntry {
                    is_latest: Some(v.is_latest),
                    key: Some(shown(&v.key)),
                    last_modified: Some(ms_to_ts(m.last_modified_ms)),
                    version_id: Some(m.shown_version().to_string()),
                    ..Default::default()
                });
            } else {
                versions.push(ObjectVersion {
                    e_tag: Some(etag(&m.etag)),
                    is_latest: Some(v.is_latest),
                    key: Some(shown(&v.key)),
                    last_modified: Some(ms_to_ts(m.last_modified_ms)),
                    size: Some(i64::try_from(m.size).unwrap_or(i64::MAX)),
                    storage_class: Some(ObjectVersionStorageClass::from_static(
                        ObjectVersionStorageClass::STANDARD,
                    )),
                    version_id: Some(m.shown_version().to_string()),
                    ..Default::default()
                });
            }
        }
        let (next_key, next_version) = match page.next {
            Some((k, v)) => (Some(shown(&k)), v),
            None => (None, None),
        };
        let prefixes: Vec<CommonPrefix> = page
            .prefixes
            .into_iter()
            .map(|p| CommonPrefix {
                prefix: Some(shown(&p)),
            })
            .collect();
        ok(ListObjectVersionsOutput {
            name: Some(input.bucket),
            prefix: input.prefix,
            delimiter: input.delimiter,
            encoding_type: input.encoding_type,
            key_marker: input.key_marker,
            version_id_marker: input.version_id_marker,
            max_keys: Some(max),
            is_truncated: Some(page.truncated),
            next_key_marker: next_key,
            next_version_id_marker: next_version,
            common_prefixes: (!prefixes.is_empty()).then_some(prefixes),
            versions: (!versions.is_empty()).then_some(versions),
            delete_markers: (!markers.is_empty()).then_some(markers),
            ..Default::default()
        })
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        self.require_bucket(&input.bucket).await?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let mut uploads: Vec<(String, String, UploadMeta)> = vec![];
        for (k, v) in self.idx.entries(&uploads_ns(&input.bucket)).await? {
            if k.contains(&b'/') {
                continue;
            }
            let u: UploadMeta = meta::decode(&v)?;
            if u.key.starts_with(&prefix) {
                uploads.push((u.key.clone(), String::from_utf8_lossy(&k).into_owned(), u));
            }
        }
        uploads.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let max = input.max_uploads.unwrap_or(1000).clamp(1, 1000);
        let keys: Vec<(&str, &str)> = uploads
            .iter()
            .map(|(k, id, _)| (k.as_str(), id.as_str()))
            .collect();
        let page = uploads_page(
            &keys,
            &prefix,
            input.delimiter.as_deref(),
            (
                input.key_marker.as_deref(),
                input.upload_id_marker.as_deref(),
            ),
            usize::try_from(max).unwrap_or(1000),
        );
        let (next_key, next_id) = match page.next {
            Some((k, id)) => (Some(k), id),
            None => (None, None),
        };
        let truncated = page.truncated;
        let prefixes = page
            .prefixes
            .into_iter()
            .map(|p| CommonPrefix { prefix: Some(p) })
            .collect::<Vec<_>>();
        let mut uploads: Vec<Option<(String, String, UploadMeta)>> =
            uploads.into_iter().map(Some).collect();
        let uploads: Vec<(String, String, UploadMeta)> = page
            .uploads
            .iter()
            .filter_map(|&i| uploads.get_mut(i)?.take())
            .collect();
        ok(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            delimiter: input.delimiter,
            common_prefixes: (!prefixes.is_empty()).then_some(prefixes),
            key_marker: input.key_marker,
            upload_id_marker: input.upload_id_marker,
            max_uploads: Some(max),
            is_truncated: Some(truncated),
            next_key_marker: next_key,
            next_upload_id_marker: next_id,
            uploads: Some(
                uploads
                    .into_iter()
                    .map(|(k, id, u)| MultipartUpload {
                        key: Some(k),
                        upload_id: Some(id),
                        initiated: Some(ms_to_ts(u.initiated_ms)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        })
    }
}
