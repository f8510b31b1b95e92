//! Cairn's S3-compatible gateway.
//!
//! The gateway speaks S3 to applications (HTTP, XML and SigV4 are the
//! [s3s](https://docs.rs/s3s) crate's) and is itself a client of one node's
//! loopback control API: object data goes in and out as Cairn objects, and
//! everything it knows about buckets and objects lives in the network as
//! account indexes ([`cairn_core::index`]) signed and encrypted with the
//! account key. A second gateway given the same account file sees the same
//! buckets and objects; the gateway machine holds nothing that is lost
//! with it (its redb cache only saves round trips).
//!
//! # Modules
//! - [`s3`]: the S3 operations.
//! - [`indexes`]: reading and writing account indexes through the node, with the cache.
//! - [`meta`]: the versioned values stored in the indexes.
//! - [`body`]: streaming bodies into and out of the node, hashing on the way.
//! - [`node`]: the node API client.
//! - [`listing`]: S3 listing pages as a pure function.
//! - [`rules`]: names, ranges, conditionals, ETags, tags as pure functions.
//! - [`policy`]: ACLs and encryption settings: what is true of Cairn.
//! - [`versioning`]: object versions, delete markers and their listing.
//! - [`keys`]: S3 credentials and the account key on disk; s3s auth and access.
//! - [`sse`]: the second sealing layer of SSE-C and SSE-KMS objects.
//! - [`kms`]: the account's KMS keys (SSE-KMS), kept in its index.
//! - [`server`]: the HTTP server and its limits.
//! - [`error`]: the errors and their one mapping to S3 codes.
//!
//! # Index layout
//! One tree of account indexes per namespace (see the limits below); every
//! value is postcard with a leading `version` (objects 5, uploads 4,
//! bucket policies and lifecycle rules 3, the rest 1; older values are
//! read and upgraded):
//!
//! | namespace | key | value |
//! |---|---|---|
//! | `buckets` | bucket name | [`meta::BucketMeta`] `{version, created_at_ms}` |
//! | `objects/<bucket>` | object key | [`meta::ObjectMeta`] `{version, size, etag, content_type, user_metadata, last_modified_ms, parts: [{cap, size}], lease_expires_at, part_lists, inline, tags, version_id, delete_marker, sse_c, sse_kms: {format, key_id, salt, context, bucket_key}}`: the current version |
//! | `versions/<bucket>` | `<object key>\0<version id>` | [`meta::ObjectMeta`]: every version, once versioning was turned on ([`versioning`]) |
//! | `tags/<bucket>` | object key (the `null` version), or `<object key>\0<version id>` | [`meta::TagsMeta`] `{version, generation, tags}`: tags set after the object or version was written, valid while `generation` is its entry's |
//! | `uploads/<bucket>` | upload id | [`meta::UploadMeta`] `{version, key, initiated_ms, content_type, user_metadata, tags, sse_c, sse_kms}` |
//! | `uploads/<bucket>` | `<upload id>/<part number, 5 digits>` | [`meta::PartMeta`] `{version, cap, size, etag, last_modified_ms}` |
//! | `partlists/<bucket>` | `<list id>/<5 digits>` | [`meta::PartList`] `{version, parts}`: the parts of an object with more than 400, 400 per entry |
//! | `kmskeys` | `key/<id>` | [`kms::KmsKey`] `{version, id, material, description, state, created_ms}`: the account's KMS keys |
//! | `kmskeys` | `alias/aws/s3` | [`kms::KmsAlias`] `{version, key_id, created_ms}`: the default key |
//! | `bucketencryption` | bucket | [`meta::BucketEncryption`] `{version, created_at_ms, kms, kms_key_id, bucket_key}`: the bucket's default encryption, if `aws:kms` |
//!
//! Parts are separate entries because clients upload them concurrently and
//! one entry would lose parts to last-writer-wins. Object data is one Cairn
//! object per PUT or per part, owned by a key derived from the account
//! (`derive_key("cairn v1 gateway object owner key", seed)`, sent to the
//! node as `x-cairn-owner`), stored with `catalog=false` and the gateway's
//! lease. A completed multipart object lists its parts' objects in order
//! (no data is copied); CopyObject streams the source into a new Cairn
//! object, so no Cairn object is ever shared by two S3 objects and a
//! delete may always remove its parts.
//!
//! Objects of at most [`meta::INLINE_MAX`] (4 KiB) put in one request
//! keep their bytes in the entry itself (`inline`): one encrypted index
//! write instead of a Cairn object, so small-object workloads (and
//! listings over thousands of small keys) are not bound by the cost of a
//! whole erasure-coded put.
//!
//! # Consistency
//! An entry is written only after its data is stored, so a listing never
//! shows an incomplete object. Two PUTs of one key: the index's LWW picks
//! one winner everywhere. A writer whose op beats everything its gateway
//! has seen removes the data it displaced at once, and reads the key again
//! 2.5 s later (off the PUT's path, when its cached shard is due for a
//! refresh anyway, so one fetch settles every write to that shard): if a
//! write through another gateway won, it removes its own data then. A
//! writer that loses at once removes its data at once. So a writer only
//! ever removes its own data or data it displaced, never a winner's (best
//! effort: leftovers expire with their lease, which nobody renews).
//!
//! Conditional writes (`If-None-Match: *` to create only, `If-Match` to
//! replace only the ETag read, on PutObject and CompleteMultipartUpload)
//! are checked under a lock of the key's stripe against its entry read
//! afresh from the replicas, then written: through one gateway they are
//! atomic. Two through different gateways in the same instant can both
//! pass, and last-writer-wins keeps one (S3 would refuse the second with
//! 409 `ConditionalRequestConflict`).
//!
//! # Limits (and what is unfinished)
//! - The gateway speaks plain HTTP unless given a certificate and key
//!   (`--tls-cert`, `--tls-key`, re-read when they change), then HTTPS
//!   only ([`tls`]); bucket policies see which as `aws:SecureTransport`.
//! - An object or part is at most [`MAX_OBJECT_BYTES`] (5 GiB).
//! - A bucket is not bounded by one index: each namespace above is a tree
//!   of index shards ([`cairn_core::shard`]) that splits into 16 when a
//!   shard passes 1,024 entries or 512 KiB (`--shard-entries`), so a
//!   million objects is a tree four levels deep. A read of one key reads the
//!   shards on its path; a write goes to its leaf.
//! - Deleted keys leave tombstones; the background pass collects those
//!   older than `--index-gc-grace` (24 h) in every namespace
//!   ([`collect_pass`]): per tree, owner-signed checkpoints written root
//!   first ([`cairn_core::shard::plan_collection`]), only from reads that
//!   heard from every replica (the node's `x-cairn-index-replicas`; a node
//!   that does not send it is trusted, so an op only a silent replica
//!   holds could then be dropped). Shards already split stay split.
//!   Trees of more than 256 shards are not collected yet.
//! - A multipart object of more than 400 parts keeps its part list in
//!   `partlists/<bucket>` entries (written before the object's entry), so
//!   S3's 10,000 parts fit; each 400 parts cost one more index slot.
//! - Listings and scans read a bucket window by window (1,000 keys: the
//!   first ones after the page's start in every shard, merged), keeping
//!   only the page and skipping past a common prefix in one step, so
//!   memory is bounded whatever the bucket's size. But keys are spread
//!   over shards by hash, so each window still reads and decrypts every
//!   shard: a page of a bucket of 100,000 objects reads about 40 MiB of
//!   index (cached for 2 s; the node answers "unchanged" for copies that
//!   are current, so only changed shards move). Range-partitioned shards
//!   would make that cost follow the page instead; they are unfinished.
//! - Small-object PUTs run at about 150-190 objects/s on a 2-core devnet:
//!   each write makes every replica re-store its whole shard. Storing one
//!   row per slot would remove that; it is unfinished.
//! - ACLs work as S3's bucket-owner-enforced mode (the account owns
//!   everything; only `private` is accepted, anything else is
//!   `AccessControlListNotSupported`), and every object not sealed by the
//!   gateway (SSE-C, SSE-KMS) reports `AES256` encryption, which is what
//!   the node does; see [`policy`].
//! - Object versioning (Enabled, Suspended) keeps every version, with
//!   delete markers, GET/HEAD/copy/delete and tagging by version id and
//!   ListObjectVersions; see [`versioning`]. MFA delete is
//!   `NotImplemented`.
//! - Customer-provided keys (SSE-C, over HTTPS only) seal an object a
//!   second time in the gateway, in chunks of 64 KiB that range reads
//!   fetch and open one by one ([`sse`]): PutObject, GetObject, HeadObject,
//!   multipart uploads, CopyObject and UploadPartCopy (source and copy
//!   keys). Only the key's MD5 and a salt are kept. Reads of such an object
//!   read the next part ahead while opening this one, as other reads do
//!   ([`body::PARTS_IN_FLIGHT`]).
//! - SSE-KMS (`aws:kms` in a request, or a bucket's default encryption
//!   from PutBucketEncryption) seals objects the same way under a key of
//!   the account's own key store, kept in its index (namespace `kmskeys`,
//!   managed with `cairn gateway kms`), so any gateway of the account opens
//!   them; `alias/aws/s3` is made on first use ([`kms`]). Reads and HEADs
//!   need no key headers; a disabled key is `KMS.DisabledException`, an
//!   unknown one `KMS.NotFoundException` (both 400). Only the account's
//!   requests signed with Signature Version 4 use KMS keys (S3 refuses
//!   SSE-KMS requests without SigV4; anonymous reads allowed by a public
//!   policy do not open them, as S3's anonymous principal cannot use a
//!   key); plain HTTP is allowed, unlike SSE-C, since no key travels in the
//!   request (the gateway's plain HTTP is for loopback or behind a TLS
//!   proxy). `aws:kms:dsse` is `NotImplemented`. The condition key
//!   `s3:x-amz-server-side-encryption-aws-kms-key-id` sees a bare key id as
//!   its ARN.
//! - Unfinished: lifecycle transitions (`NotImplemented`: one storage
//!   class); KMS key policies, grants, rotation, deletion and aliases other
//!   than `alias/aws/s3`.
//! - Bucket policies (in namespace `bucketpolicy`) are enforced by the
//!   access check: the account's keys may do anything a `Deny` does not
//!   take away, unsigned requests only what an `Allow` for `*` grants
//!   (public reads); `NotPrincipal`, `NotAction`, `NotResource` and
//!   `Condition` blocks (string, numeric, date, `Bool`, IP address,
//!   `BinaryEquals` and `Null` operators, `…IfExists`,
//!   `ForAnyValue:`/`ForAllValues:`) over the keys in [`access::KEYS`]
//!   (client address, time, user agent, referer, principal, listing
//!   prefix, version id, signature type and age, request headers) and
//!   [`access::KEY_PREFIXES`] (object tags: `s3:RequestObjectTag/…` and
//!   `s3:RequestObjectTagKeys` from `x-amz-tagging`, and from
//!   PutObjectTagging's XML body, which s3s parses after its general
//!   access check: that operation alone is decided in the check s3s makes
//!   with the parsed input, [`authorize_tagging`];
//!   `s3:ExistingObjectTag/…` read from the index for object reads,
//!   tagging and ACL requests, copy sources and website reads, only when
//!   the policy names such a key); policy variables (`${aws:username}`,
//!   `${s3:prefix}`, defaults, `${*}`) in resources and string conditions,
//!   filled in per request. The other condition keys AWS documents
//!   (organizations, VPCs, MFA, principal and bucket tags, …) are accepted
//!   and always missing, as AWS treats a key a request
//!   lacks; an undocumented key is `MalformedPolicy`. `CanonicalUser`
//!   principals and `AWS` root ARNs name the account (its owner id); `Service` and
//!   `Federated` ones match no request. See [`access`].
//! - Lifecycle rules expire objects (after days, rounded to midnight UTC as
//!   in S3, or from a date; by prefix, tags and size) and abort incomplete
//!   uploads; the maintenance pass applies them (hourly by default), and
//!   removes an object only if its entry is still the write that expired
//!   ([`lifecycle`]).
//! - Bucket tags (up to 50), CORS rules, lifecycle rules, policies,
//!   websites and the versioning state live in namespaces `buckettags`,
//!   `bucketcors`, `bucketlifecycle`, `bucketpolicy`, `bucketwebsite` and
//!   `bucketversioning` with the creation time of the bucket they were set on,
//!   so a bucket deleted and made again starts without them. The
//!   server answers CORS preflights itself and adds the matching rule's
//!   headers to answers (see [`cors`] and [`server`]).

pub mod access;
pub mod body;
pub mod cors;
pub mod error;
pub mod indexes;
pub mod keys;
pub mod kms;
pub mod lifecycle;
pub mod listing;
pub mod meta;
pub mod node;
pub mod policy;
pub mod rules;
pub mod s3;
pub mod server;
#[cfg(test)]
mod service_tests;
pub mod sse;
pub mod tls;
pub mod versioning;
pub mod website;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cairn_core::index::Account;
use cairn_core::keys::SecretKey;

pub use error::GatewayError;
pub use keys::{AccessKey, KeyStore};

/// The largest object or part.
pub const MAX_OBJECT_BYTES: u64 = 5 << 30;
/// The lease of stored data (renewed when a third is left).
pub const DEFAULT_LEASE_SECS: u64 = 90 * 24 * 3600;
/// Uploads older than this are aborted by the sweeper.
pub const DEFAULT_UPLOAD_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Index tombstones older than this are collected by the background pass.
pub const DEFAULT_INDEX_GC_GRACE: Duration = Duration::from_secs(24 * 3600);
const OWNER_CONTEXT: &str = "cairn v1 gateway object owner key";

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How to run a gateway.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The node's control API (`http://127.0.0.1:PORT`).
    pub api: String,
    /// `GATEWAY_DIR`: keys, cache, endpoint file.
    pub dir: PathBuf,
    /// The account key file (default `GATEWAY_DIR/account.key`, created if absent).
    pub account_file: Option<PathBuf>,
    /// The region reported to clients.
    pub region: String,
    /// Lease of stored data.
    pub lease_secs: u64,
    /// Age past which uploads are aborted.
    pub upload_max_age: Duration,
    /// How often the sweeper and lease renewal run.
    pub maintenance_interval: Duration,
    /// Age past which index tombstones are collected.
    pub index_gc_grace: Duration,
    /// Serving limits.
    pub limits: server::Limits,
    /// When a shard of a bucket's index splits.
    pub split: cairn_core::shard::SplitRule,
    /// Bucket websites are served to hosts `BUCKET.web_domain` (none: not served).
    pub web_domain: Option<String>,
    /// Serve HTTPS with this certificate (none: plain HTTP).
    pub tls: Option<tls::Tls>,
    /// How often the certificate's files are checked for a renewal.
    pub tls_check: Duration,
}

impl Config {
    /// Defaults for everything but the addresses and directory.
    pub fn new(listen: SocketAddr, api: String, dir: PathBuf) -> Self {
        Self {
            listen,
            api,
            dir,
            account_file: None,
            region: "us-east-1".into(),
            lease_secs: DEFAULT_LEASE_SECS,
            upload_max_age: DEFAULT_UPLOAD_MAX_AGE,
            maintenance_interval: Duration::from_secs(3600),
            index_gc_grace: DEFAULT_INDEX_GC_GRACE,
            limits: server::Limits::default(),
            split: cairn_core::shard::SplitRule::DEFAULT,
            web_domain: None,
            tls: None,
            tls_check: Duration::from_secs(30),
        }
    }
}

/// Why a gateway did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A key file.
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    /// The node client or cache.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// Binding the listen address.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A gateway that is listening.
pub struct Started {
    /// The bound address.
    pub addr: SocketAddr,
    /// `https` when the gateway serves TLS, else `http`.
    pub scheme: &'static str,
    gateway: Arc<s3::Gateway>,
    listener: tokio::net::TcpListener,
    service: s3s::service::S3Service,
    limits: server::Limits,
    config: Config,
}

/// The account key file used by `config`.
pub fn account_path(config_dir: &Path, account_file: Option<&Path>) -> PathBuf {
    account_file.map_or_else(|| config_dir.join("account.key"), Path::to_path_buf)
}

/// The KMS key store of the account in `account_file` (default
/// `dir/account.key`, which must exist), through the node API at `api`,
/// for `cairn gateway kms`: its index cache is in memory, since a running
/// gateway holds `cache.redb`. ARNs name `region`.
pub fn kms_store(
    api: &str,
    dir: &Path,
    account_file: Option<&Path>,
    region: &str,
) -> Result<kms::KmsStore, StartError> {
    let seed = keys::load_account(&account_path(dir, account_file), false)?;
    let owner = blake3::derive_key(OWNER_CONTEXT, &seed);
    let account = Arc::new(Account::new(SecretKey::from_bytes(seed)));
    let node = node::Node::new(api, owner, DEFAULT_LEASE_SECS)?;
    let idx = Arc::new(indexes::Indexes::open_in_memory(node, account)?);
    Ok(kms::KmsStore::new(idx, region))
}

/// Opens the account, cache and keys and binds the listen address.
pub async fn start(config: Config) -> Result<Started, StartError> {
    std::fs::create_dir_all(&config.dir).map_err(|e| {
        StartError::Keys(keys::KeyError::Io {
            path: config.dir.clone(),
            source: e,
        })
    })?;
    let account_file = account_path(&config.dir, config.account_file.as_deref());
    // An explicitly given account file must exist: a typo must not make a new account.
    let seed = keys::load_account(&account_file, config.account_file.is_none())?;
    let owner = blake3::derive_key(OWNER_CONTEXT, &seed);
    let account = Arc::new(Account::new(SecretKey::from_bytes(seed)));
    let node = node::Node::new(&config.api, owner, config.lease_secs)?;
    let idx = Arc::new(
        indexes::Indexes::open(node.clone(), account, &config.dir.join("cache.redb"))?
            .with_split_rule(config.split),
    );
    let gateway = Arc::new(s3::Gateway::new(
        node,
        idx,
        s3::Settings {
            region: config.region.clone(),
            max_object: config.limits.max_body,
            body_idle: config.limits.body_idle,
            min_part: s3::MIN_PART,
            web_domain: config.web_domain.clone(),
        },
    ));
    let mut builder = s3s::service::S3ServiceBuilder::new(SharedGateway(gateway.clone()));
    builder.set_auth(KeyStore::new(&config.dir));
    builder.set_access(PolicyAccess(gateway.clone()));
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.listen,
        source,
    })?;
    Ok(Started {
        addr,
        scheme: if config.tls.is_some() {
            "https"
        } else {
            "http"
        },
        gateway,
        listener,
        service,
        limits: config.limits.clone(),
        config,
    })
}

impl Started {
    /// Serves until `shutdown`, with the maintenance task alongside.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let maintenance = tokio::spawn(maintain(
            self.gateway.clone(),
            self.config.maintenance_interval,
            self.config.upload_max_age,
            self.config.index_gc_grace,
        ));
        let flusher = tokio::spawn(flush_cache(self.gateway.clone()));
        let renewals = self
            .config
            .tls
            .as_ref()
            .map(|t| t.watch(self.config.tls_check));
        server::serve(
            self.listener,
            self.config.tls.clone(),
            self.service,
            self.gateway.clone(),
            self.limits,
            shutdown,
        )
        .await;
        maintenance.abort();
        flusher.abort();
        if let Some(r) = renewals {
            r.abort();
        }
        if let Err(e) = self.gateway.idx.flush().await {
            tracing::warn!("writing the index cache at shutdown failed: {e}");
        }
    }
}

/// Who may do what: the account's signed requests unless the bucket's
/// policy denies them, unsigned ones only as it allows (see [`access`]).
/// The bucket list and the policy itself are the account's alone, and an
/// unsigned copy is refused (its source is another object to check).
///
/// s3s asks `check` of every request before it reads the body, and then
/// the operation's own method with the parsed input. Every operation is
/// decided in `check` but PutObjectTagging: its tags, the request tags a
/// policy may test (`s3:RequestObjectTag/…`), are in its XML body, so it is
/// decided once, in `put_object_tagging`, with them ([`authorize_tagging`]).
/// Its body (at most s3s's XML limit) is read before that decision.
pub(crate) struct PolicyAccess(pub(crate) Arc<s3::Gateway>);

/// The operations decided with their parsed input instead of in
/// [`PolicyAccess`]'s `check`.
const DECIDED_WITH_BODY: &[&str] = &["PutObjectTagging"];

#[async_trait::async_trait]
impl s3s::access::S3Access for PolicyAccess {
    async fn check(&self, cx: &mut s3s::access::S3AccessContext<'_>) -> s3s::S3Result<()> {
        use s3s::path::S3Path;
        let op = cx.s3_op().name().to_string();
        if DECIDED_WITH_BODY.contains(&op.as_str()) {
            // Deciding now would miss the body's tags: an allow on them
            // would refuse, a deny on them would pass.
            return Ok(());
        }
        let key_id = cx.credentials().map(|c| c.access_key.clone());
        let (bucket, key) = match cx.s3_path() {
            S3Path::Root => (None, None),
            S3Path::Bucket { bucket } => (Some(bucket.to_string()), None),
            S3Path::Object { bucket, key } => (Some(bucket.to_string()), Some(key.to_string())),
        };
        let client = cx.extensions_mut().get::<server::ClientAddr>().copied();
        let request = AccessRequest {
            op: &op,
            key_id: key_id.as_deref(),
            bucket: bucket.as_deref(),
            key: key.as_deref(),
            headers: cx.headers(),
            uri: cx.uri(),
            client,
            request_tags: None,
        };
        Ok(authorize(&self.0, &request).await?)
    }

    async fn put_object_tagging(
        &self,
        req: &mut s3s::S3Request<s3s::dto::PutObjectTaggingInput>,
    ) -> s3s::S3Result<()> {
        Ok(authorize_tagging(&self.0, req).await?)
    }
}

/// The access decision of a PutObjectTagging (with or without a version
/// id), made once s3s has parsed its body: the tags it sets are its
/// request tags (`s3:RequestObjectTag/…`, `s3:RequestObjectTagKeys`), as a
/// PutObject's `x-amz-tagging` are.
pub(crate) async fn authorize_tagging(
    gw: &s3::Gateway,
    req: &s3s::S3Request<s3s::dto::PutObjectTaggingInput>,
) -> Result<(), GatewayError> {
    let tags = s3::tag_pairs(req.input.tagging.tag_set.clone());
    let request = AccessRequest {
        op: "PutObjectTagging",
        key_id: req.credentials.as_ref().map(|c| c.access_key.as_str()),
        bucket: Some(&req.input.bucket),
        key: Some(&req.input.key),
        headers: &req.headers,
        uri: &req.uri,
        client: req.extensions.get::<server::ClientAddr>().copied(),
        request_tags: Some(&tags),
    };
    authorize(gw, &request).await
}

/// A request as the access check sees it: its headers, and of its body
/// only what [`authorize_tagging`] passes on.
pub(crate) struct AccessRequest<'a> {
    /// The S3 operation (`GetObject`).
    pub op: &'a str,
    /// The signing access key id (none: anonymous).
    pub key_id: Option<&'a str>,
    /// The bucket of the path, if any.
    pub bucket: Option<&'a str>,
    /// The object key of the path, if any.
    pub key: Option<&'a str>,
    /// The request's headers.
    pub headers: &'a hyper::HeaderMap,
    /// The request's URI.
    pub uri: &'a hyper::Uri,
    /// Who connected.
    pub client: Option<server::ClientAddr>,
    /// The tags the request sets, from its body (PutObjectTagging);
    /// headers' tags are read by [`request_context`].
    pub request_tags: Option<&'a [(String, String)]>,
}

/// The operations on one object that have `s3:ExistingObjectTag/…`: the
/// object's reads and its tagging and ACL requests, as in AWS.
const EXISTING_TAG_OPS: &[&str] = &[
    "GetObject",
    "HeadObject",
    "GetObjectTagging",
    "PutObjectTagging",
    "DeleteObjectTagging",
    "GetObjectAcl",
    "PutObjectAcl",
];

/// Decides request `r` with the policies of the buckets it touches (the
/// access check of [`PolicyAccess`], apart so tests can call it).
pub(crate) async fn authorize(gw: &s3::Gateway, r: &AccessRequest<'_>) -> Result<(), GatewayError> {
    use access::{Target, Who};
    let op = r.op;
    let who = r.key_id.map_or(Who::Anonymous, Who::Key);
    let anonymous = r.key_id.is_none();
    let own_only = matches!(
        op,
        "GetBucketPolicy" | "GetBucketPolicyStatus" | "PutBucketPolicy" | "DeleteBucketPolicy"
    );
    let copies = matches!(op, "CopyObject" | "UploadPartCopy");
    let Some(bucket) = r.bucket.filter(|_| !own_only) else {
        return if anonymous {
            Err(GatewayError::Anonymous)
        } else {
            Ok(())
        };
    };
    if anonymous && copies {
        return Err(GatewayError::Anonymous);
    }
    let query = query_pairs(r.uri);
    let version_id = query
        .iter()
        .find(|(k, _)| k == "versionId")
        .map(|(_, v)| v.as_str());
    let (action, on_object) = access::action_of(op, version_id.is_some());
    let target = match r.key {
        _ if op == "DeleteObjects" => Target::AnyObject,
        Some(k) if on_object => Target::Object(k),
        _ => Target::Bucket,
    };
    let policy = gw.bucket_policy(bucket).await?;
    let mut context = request_context(r.headers, r.uri, r.client, r.key_id, op);
    if let Some(tags) = r.request_tags {
        context.set_request_tags(tags);
    }
    // S3 tests s3:x-amz-server-side-encryption-aws-kms-key-id as the key's
    // ARN, whether the request named the key by its ARN or its bare id.
    if let Some(v) = r
        .headers
        .get("x-amz-server-side-encryption-aws-kms-key-id")
        .and_then(|v| v.to_str().ok())
        && let Ok(kms::KeyRef::Id(id)) = gw.kms.parse(v)
    {
        context.set(
            "s3:x-amz-server-side-encryption-aws-kms-key-id",
            gw.kms.arn(&id),
        );
    }
    let mut object_context = context.clone();
    if let (Some(p), Some(key)) = (&policy, r.key)
        && EXISTING_TAG_OPS.contains(&op)
    {
        add_existing_tags(gw, p, &mut object_context, bucket, key, version_id).await?;
    }
    if !access::permits(
        policy.as_ref(),
        bucket,
        who,
        &action,
        target,
        &object_context,
    ) {
        if anonymous && policy.is_none() {
            return Err(GatewayError::Anonymous);
        }
        return Err(GatewayError::Denied(format!(
            "the policy of bucket {bucket:?} does not permit {action} here"
        )));
    }
    let header = r
        .headers
        .get("x-amz-copy-source")
        .and_then(|v| v.to_str().ok());
    if copies && let Some((sb, sk)) = header.and_then(access::copy_source) {
        let p = gw.bucket_policy(&sb).await?;
        let on_source = Target::Object(&sk);
        // A copy of a named version reads it as GetObjectVersion.
        let source_version = header
            .and_then(|h| h.split_once("?versionId="))
            .and_then(|(_, v)| rules::percent_decode(v));
        let read = if source_version.is_some() {
            "s3:GetObjectVersion"
        } else {
            "s3:GetObject"
        };
        // The source is read: its tags decide as a GetObject's would, or a
        // copy would take a tagged object past a deny on reading it.
        let mut source_context = context;
        if let Some(p) = &p {
            add_existing_tags(
                gw,
                p,
                &mut source_context,
                &sb,
                &sk,
                source_version.as_deref(),
            )
            .await?;
        }
        if !access::permits(p.as_ref(), &sb, who, read, on_source, &source_context) {
            return Err(GatewayError::Denied(format!(
                "the policy of bucket {sb:?} does not permit {read} on the copy source"
            )));
        }
    }
    Ok(())
}

/// Adds to `cx` the tags of `bucket/key` (version `version_id`, or the
/// current one) as `s3:ExistingObjectTag/…`, if `policy` names such a key:
/// otherwise the index reads would be wasted on every request. An object
/// that does not exist has no tags (its request fails on its own).
pub(crate) async fn add_existing_tags(
    gw: &s3::Gateway,
    policy: &access::Policy,
    cx: &mut access::Context,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
) -> Result<(), GatewayError> {
    if !policy.uses_key_prefix(access::EXISTING_OBJECT_TAG) {
        return Ok(());
    }
    let m = match gw.tagged_version(bucket, key, version_id).await {
        Ok(m) => m,
        Err(
            GatewayError::NoSuchBucket(_)
            | GatewayError::NoSuchKey(_)
            | GatewayError::NoSuchVersion(..)
            | GatewayError::DeleteMarker(..)
            | GatewayError::InvalidArgument(_),
        ) => return Ok(()),
        // Not "no tags": a deny on a tag must not pass for a failed read.
        Err(e) => return Err(e),
    };
    cx.set_existing_tags(&gw.tags(bucket, key, &m).await?);
    Ok(())
}

/// The query parameters of `uri`, decoded (a pair with a bad escape is
/// left out).
fn query_pairs(uri: &hyper::Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    Some((rules::percent_decode(k)?, rules::percent_decode(v)?))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What a bucket policy's conditions may test of a request
/// ([`access::KEYS`]): from `client`, signed with `key_id`
/// (none: anonymous), for S3 operation `op`. The access check and the
/// website server both decide with it.
pub(crate) fn request_context(
    headers: &hyper::HeaderMap,
    uri: &hyper::Uri,
    client: Option<server::ClientAddr>,
    key_id: Option<&str>,
    op: &str,
) -> access::Context {
    let mut c = access::Context::new();
    if let Some(client) = client {
        c.set("aws:SourceIp", client.addr.ip().to_string());
    }
    let tls = client.is_some_and(|c| c.tls);
    c.set("aws:SecureTransport", if tls { "true" } else { "false" });
    let now = time::OffsetDateTime::now_utc();
    c.set("aws:EpochTime", now.unix_timestamp().to_string());
    if let Ok(t) = now.format(&time::format_description::well_known::Rfc3339) {
        c.set("aws:CurrentTime", t);
    }
    let query = query_pairs(uri);
    // No AWS service ever calls the gateway, for itself or for a user.
    c.set("aws:ViaAWSService", "false");
    match key_id {
        Some(key) => {
            c.set("aws:PrincipalType", "User");
            c.set("aws:username", key);
            c.set("aws:userid", key);
            c.set("aws:PrincipalIsAWSService", "false");
            // Signature version 2 signs with `Signature=` in a presigned URL
            // and `AWS id:sig` in the header; version 4 otherwise.
            let v2 = query.iter().any(|(k, _)| k == "Signature")
                || headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|a| a.starts_with("AWS "));
            c.set(
                "s3:signatureversion",
                if v2 { "AWS" } else { "AWS4-HMAC-SHA256" },
            );
            let presigned = query
                .iter()
                .any(|(k, _)| k == "X-Amz-Signature" || k == "Signature");
            c.set(
                "s3:authType",
                if presigned {
                    "REST-QUERY-STRING"
                } else {
                    "REST-HEADER"
                },
            );
            let signed_at = query
                .iter()
                .find(|(k, _)| k == "X-Amz-Date")
                .map(|(_, v)| v.as_str())
                .or_else(|| headers.get("x-amz-date").and_then(|v| v.to_str().ok()));
            if !v2 && let Some(age) = signed_at.and_then(|t| signature_age_ms(t, now)) {
                c.set("s3:signatureAge", age.to_string());
            }
        }
        None => {
            c.set("aws:PrincipalType", "Anonymous");
            c.set("aws:userid", "anonymous");
        }
    }
    if let Some((_, v)) = query.iter().find(|(k, _)| k == "versionId") {
        c.set("s3:VersionId", v.clone());
    }
    let creates = match op {
        "PutObject" | "CopyObject" | "CompleteMultipartUpload" => Some(true),
        "CreateMultipartUpload" | "UploadPart" | "UploadPartCopy" => Some(false),
        _ => None,
    };
    if let Some(creates) = creates {
        c.set("s3:ObjectCreationOperation", creates.to_string());
    }
    if matches!(op, "PutObject" | "CompleteMultipartUpload") {
        for (header, key) in [
            ("if-match", "s3:if-match"),
            ("if-none-match", "s3:if-none-match"),
        ] {
            if let Some(v) = headers.get(header).and_then(|v| v.to_str().ok()) {
                c.set(key, v);
            }
        }
    }
    // The tags a write sets; a malformed header leaves them missing (the
    // write itself is refused with InvalidTag).
    let replaces_tags = headers
        .get("x-amz-tagging-directive")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|d| d.eq_ignore_ascii_case("REPLACE"));
    let sets_tags = match op {
        "PutObject" | "CreateMultipartUpload" => true,
        "CopyObject" => replaces_tags,
        _ => false,
    };
    if sets_tags
        && let Some(Ok(tags)) = headers
            .get("x-amz-tagging")
            .and_then(|v| v.to_str().ok())
            .map(rules::parse_tagging)
    {
        c.set_request_tags(&tags);
    }
    if matches!(op, "ListObjects" | "ListObjectsV2") {
        for (param, key) in [
            ("prefix", "s3:prefix"),
            ("delimiter", "s3:delimiter"),
            ("max-keys", "s3:max-keys"),
        ] {
            if let Some((_, v)) = query.iter().find(|(k, _)| k == param) {
                c.set(key, v.clone());
            }
        }
    }
    for (header, key) in [
        ("user-agent", "aws:UserAgent"),
        ("referer", "aws:Referer"),
        ("x-amz-acl", "s3:x-amz-acl"),
        ("x-amz-content-sha256", "s3:x-amz-content-sha256"),
        ("x-amz-copy-source", "s3:x-amz-copy-source"),
        ("x-amz-metadata-directive", "s3:x-amz-metadata-directive"),
        (
            "x-amz-server-side-encryption",
            "s3:x-amz-server-side-encryption",
        ),
        (
            "x-amz-server-side-encryption-aws-kms-key-id",
            "s3:x-amz-server-side-encryption-aws-kms-key-id",
        ),
        (
            "x-amz-server-side-encryption-customer-algorithm",
            "s3:x-amz-server-side-encryption-customer-algorithm",
        ),
        ("x-amz-storage-class", "s3:x-amz-storage-class"),
        ("x-amz-grant-full-control", "s3:x-amz-grant-full-control"),
        ("x-amz-grant-read", "s3:x-amz-grant-read"),
        ("x-amz-grant-read-acp", "s3:x-amz-grant-read-acp"),
        ("x-amz-grant-write", "s3:x-amz-grant-write"),
        ("x-amz-grant-write-acp", "s3:x-amz-grant-write-acp"),
        ("x-amz-object-ownership", "s3:x-amz-object-ownership"),
        (
            "x-amz-website-redirect-location",
            "s3:x-amz-website-redirect-location",
        ),
        ("x-amz-object-lock-mode", "s3:object-lock-mode"),
        (
            "x-amz-object-lock-retain-until-date",
            "s3:object-lock-retain-until-date",
        ),
        ("x-amz-object-lock-legal-hold", "s3:object-lock-legal-hold"),
    ] {
        if let Some(v) = headers.get(header).and_then(|v| v.to_str().ok()) {
            c.set(key, v);
        }
    }
    c
}

/// Milliseconds from a version 4 signature's time (`X-Amz-Date`,
/// `20261207T120000Z`) to `now`; a signature from the future (clock skew)
/// is 0 ms old.
fn signature_age_ms(signed_at: &str, now: time::OffsetDateTime) -> Option<i128> {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let t = time::PrimitiveDateTime::parse(signed_at, format)
        .ok()?
        .assume_utc();
    Some((now - t).whole_milliseconds().max(0))
}

/// s3s wants the service by value; the gateway is shared with maintenance.
struct SharedGateway(Arc<s3::Gateway>);

macro_rules! delegate {
    ($($name:ident: $input:ident => $output:ident;)*) => {
        #[async_trait::async_trait]
        impl s3s::S3 for SharedGateway {
            $(
                async fn $name(
                    &self,
                    req: s3s::S3Request<s3s::dto::$input>,
                ) -> s3s::S3Result<s3s::S3Response<s3s::dto::$output>> {
                    s3s::S3::$name(&*self.0, req).await
                }
            )*
        }
    };
}

delegate! {
    create_bucket: CreateBucketInput => CreateBucketOutput;
    delete_bucket: DeleteBucketInput => DeleteBucketOutput;
    head_bucket: HeadBucketInput => HeadBucketOutput;
    get_bucket_location: GetBucketLocationInput => GetBucketLocationOutput;
    list_buckets: ListBucketsInput => ListBucketsOutput;
    put_object: PutObjectInput => PutObjectOutput;
    get_object: GetObjectInput => GetObjectOutput;
    head_object: HeadObjectInput => HeadObjectOutput;
    delete_object: DeleteObjectInput => DeleteObjectOutput;
    get_object_tagging: GetObjectTaggingInput => GetObjectTaggingOutput;
    put_object_tagging: PutObjectTaggingInput => PutObjectTaggingOutput;
    delete_object_tagging: DeleteObjectTaggingInput => DeleteObjectTaggingOutput;
    get_bucket_tagging: GetBucketTaggingInput => GetBucketTaggingOutput;
    put_bucket_tagging: PutBucketTaggingInput => PutBucketTaggingOutput;
    delete_bucket_tagging: DeleteBucketTaggingInput => DeleteBucketTaggingOutput;
    get_bucket_cors: GetBucketCorsInput => GetBucketCorsOutput;
    put_bucket_cors: PutBucketCorsInput => PutBucketCorsOutput;
    delete_bucket_cors: DeleteBucketCorsInput => DeleteBucketCorsOutput;
    get_bucket_website: GetBucketWebsiteInput => GetBucketWebsiteOutput;
    put_bucket_website: PutBucketWebsiteInput => PutBucketWebsiteOutput;
    delete_bucket_website: DeleteBucketWebsiteInput => DeleteBucketWebsiteOutput;
    get_bucket_lifecycle_configuration: GetBucketLifecycleConfigurationInput => GetBucketLifecycleConfigurationOutput;
    put_bucket_lifecycle_configuration: PutBucketLifecycleConfigurationInput => PutBucketLifecycleConfigurationOutput;
    delete_bucket_lifecycle: DeleteBucketLifecycleInput => DeleteBucketLifecycleOutput;
    get_bucket_acl: GetBucketAclInput => GetBucketAclOutput;
    put_bucket_acl: PutBucketAclInput => PutBucketAclOutput;
    get_object_acl: GetObjectAclInput => GetObjectAclOutput;
    put_object_acl: PutObjectAclInput => PutObjectAclOutput;
    get_bucket_ownership_controls: GetBucketOwnershipControlsInput => GetBucketOwnershipControlsOutput;
    get_bucket_versioning: GetBucketVersioningInput => GetBucketVersioningOutput;
    put_bucket_versioning: PutBucketVersioningInput => PutBucketVersioningOutput;
    get_bucket_policy: GetBucketPolicyInput => GetBucketPolicyOutput;
    get_bucket_policy_status: GetBucketPolicyStatusInput => GetBucketPolicyStatusOutput;
    put_bucket_policy: PutBucketPolicyInput => PutBucketPolicyOutput;
    delete_bucket_policy: DeleteBucketPolicyInput => DeleteBucketPolicyOutput;
    get_bucket_encryption: GetBucketEncryptionInput => GetBucketEncryptionOutput;
    put_bucket_encryption: PutBucketEncryptionInput => PutBucketEncryptionOutput;
    delete_bucket_encryption: DeleteBucketEncryptionInput => DeleteBucketEncryptionOutput;
    delete_objects: DeleteObjectsInput => DeleteObjectsOutput;
    copy_object: CopyObjectInput => CopyObjectOutput;
    list_objects_v2: ListObjectsV2Input => ListObjectsV2Output;
    list_objects: ListObjectsInput => ListObjectsOutput;
    create_multipart_upload: CreateMultipartUploadInput => CreateMultipartUploadOutput;
    upload_part: UploadPartInput => UploadPartOutput;
    upload_part_copy: UploadPartCopyInput => UploadPartCopyOutput;
    complete_multipart_upload: CompleteMultipartUploadInput => CompleteMultipartUploadOutput;
    abort_multipart_upload: AbortMultipartUploadInput => AbortMultipartUploadOutput;
    list_parts: ListPartsInput => ListPartsOutput;
    list_multipart_uploads: ListMultipartUploadsInput => ListMultipartUploadsOutput;
    list_object_versions: ListObjectVersionsInput => ListObjectVersionsOutput;
}

/// Writes new index ops into the cache file every [`indexes::FLUSH_INTERVAL`].
async fn flush_cache(gw: Arc<s3::Gateway>) {
    loop {
        tokio::time::sleep(indexes::FLUSH_INTERVAL).await;
        if let Err(e) = gw.idx.flush().await {
            tracing::warn!("writing the index cache failed (retried): {e}");
        }
    }
}

/// Every `interval`: aborts uploads older than `max_age` or than their
/// bucket's lifecycle rules allow, removes the objects those rules expire,
/// and renews the leases of objects with less than a third of their lease
/// left; then collects index tombstones older than `grace`.
async fn maintain(gw: Arc<s3::Gateway>, interval: Duration, max_age: Duration, grace: Duration) {
    // Not at once: a restarting gateway should serve first.
    tokio::time::sleep(Duration::from_secs(60).min(interval)).await;
    loop {
        if let Err(e) = maintenance_pass(&gw, max_age).await {
            tracing::warn!("gateway maintenance pass failed (retried next interval): {e}");
        }
        if let Err(e) = collect_pass(&gw, grace).await {
            tracing::warn!("index tombstone collection failed (retried next interval): {e}");
        }
        tokio::time::sleep(interval).await;
    }
}

/// Collects the index tombstones older than `grace` in every namespace of
/// the account: the bucket settings, the KMS keys, each bucket's objects, versions,
/// uploads, tags and part lists (deleted buckets' too: their names are
/// the bucket list's tombstones), and last the bucket list itself, only
/// if all the others succeeded (none skipped), so a deleted bucket's name is not
/// forgotten while its namespaces still hold tombstones
/// ([`indexes::Indexes::collect`]). A namespace that fails is left as it
/// is (its pass stops where it failed); the others still run, and the
/// first error is returned.
pub async fn collect_pass(
    gw: &s3::Gateway,
    grace: Duration,
) -> Result<indexes::Collected, GatewayError> {
    collect_pass_at(gw, grace, now_ms()).await
}

/// [`collect_pass`] as if it were `now` (Unix ms).
pub async fn collect_pass_at(
    gw: &s3::Gateway,
    grace: Duration,
    now: u64,
) -> Result<indexes::Collected, GatewayError> {
    use meta::BucketSetting;
    let horizon = now.saturating_sub(u64::try_from(grace.as_millis()).unwrap_or(u64::MAX));
    let mut namespaces: Vec<String> = [
        meta::BucketTags::NS,
        meta::BucketCors::NS,
        meta::BucketLifecycle::NS,
        meta::BucketPolicy::NS,
        meta::BucketWebsite::NS,
        meta::BucketVersioning::NS,
        meta::BucketEncryption::NS,
        kms::NS,
    ]
    .map(String::from)
    .into();
    let live = gw
        .idx
        .entries(s3::BUCKETS)
        .await?
        .into_iter()
        .map(|(b, _)| b);
    let gone = gw.idx.deleted(s3::BUCKETS).await?;
    for bucket in live.chain(gone) {
        let bucket = String::from_utf8_lossy(&bucket).into_owned();
        namespaces.extend([
            s3::objects_ns(&bucket),
            versioning::versions_ns(&bucket),
            s3::uploads_ns(&bucket),
            s3::tags_ns(&bucket),
            s3::partlists_ns(&bucket),
        ]);
    }
    let mut total = indexes::Collected::default();
    let mut first_error = None;
    for ns in namespaces {
        match gw.idx.collect(&ns, horizon).await {
            Ok(c) => {
                total.shards += c.shards;
                total.ops += c.ops;
                total.skipped += c.skipped;
            }
            Err(e) => {
                tracing::warn!("collecting the tombstones of {ns} failed: {e}");
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    if total.skipped > 0 {
        // A deleted bucket's name must outlive its namespaces' tombstones.
        total.skipped += 1;
        return Ok(total);
    }
    let buckets = gw.idx.collect(s3::BUCKETS, horizon).await?;
    total.shards += buckets.shards;
    total.ops += buckets.ops;
    total.skipped += buckets.skipped;
    Ok(total)
}

/// One pass of the sweeper and lease renewal.
pub async fn maintenance_pass(gw: &s3::Gateway, max_age: Duration) -> Result<(), GatewayError> {
    maintenance_pass_at(gw, max_age, now_ms()).await
}

/// [`maintenance_pass`] as if it were `now` (Unix ms).
pub async fn maintenance_pass_at(
    gw: &s3::Gateway,
    max_age: Duration,
    now: u64,
) -> Result<(), GatewayError> {
    let cutoff = now.saturating_sub(u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX));
    let lease = gw.node.lease_secs();
    for (bucket, _) in gw.idx.entries(s3::BUCKETS).await? {
        let bucket = String::from_utf8_lossy(&bucket).into_owned();
        let rules = gw.lifecycle_rules(&bucket).await?;
        for (id, value) in gw.idx.entries(&s3::uploads_ns(&bucket)).await? {
            if id.contains(&b'/') {
                continue;
            }
            let Ok(u) = meta::decode::<meta::UploadMeta>(&value) else {
                continue;
            };
            if u.initiated_ms < cutoff || lifecycle::abort_due(&rules, &u.key, u.initiated_ms, now)
            {
                let id = String::from_utf8_lossy(&id).into_owned();
                tracing::info!("aborting abandoned upload {id} of {bucket}/{}", u.key);
                gw.abort(&bucket, &id).await?;
            }
        }
        // With versioning, every version (the current ones too) is in the
        // versions, and leases are renewed there.
        let versioned = gw.versioning(&bucket).await? != versioning::Versioning::Off;
        let ns = s3::objects_ns(&bucket);
        // Window by window: a bucket of any size is renewed in bounded memory.
        let mut from = vec![];
        loop {
            let (live, next) = gw.idx.window(&ns, &from, gw.idx.window_size()).await?;
            let live = expire_window(gw, &bucket, &rules, live, now).await?;
            if !versioned {
                renew_window(gw, &bucket, &ns, live, now, lease).await?;
            }
            match next {
                Some(n) => from = n,
                None => break,
            }
        }
        if versioned {
            tend_versions(gw, &bucket, &rules, now, lease).await?;
        }
    }
    Ok(())
}

/// Renews the leases of a versioned bucket's versions, and applies its
/// lifecycle rules for noncurrent versions and delete markers, key by key
/// (a key's versions are adjacent; one key's are held at a time).
async fn tend_versions(
    gw: &s3::Gateway,
    bucket: &str,
    rules: &[lifecycle::Rule],
    now: u64,
    lease: u64,
) -> Result<(), GatewayError> {
    let ns = versioning::versions_ns(bucket);
    let check = lifecycle::uses_versions(rules);
    let (mut key, mut versions) = (String::new(), vec![]);
    let mut from = vec![];
    loop {
        let (live, next) = gw.idx.window(&ns, &from, gw.idx.window_size()).await?;
        let parsed: Vec<(String, String, meta::ObjectMeta)> = if check {
            live.iter()
                .filter_map(|(k, v)| {
                    let (k, id) = versioning::split_version_key(k)?;
                    let m = meta::decode::<meta::ObjectMeta>(v).ok()?;
                    Some((k.to_string(), id.to_string(), m))
                })
                .collect()
        } else {
            vec![]
        };
        // Renewed before the removals below: their data goes in the
        // background, which a renewal after them would race.
        renew_window(gw, bucket, &ns, live, now, lease).await?;
        for (k, id, m) in parsed {
            if k != key && !versions.is_empty() {
                gw.expire_versions(bucket, rules, &key, std::mem::take(&mut versions), now)
                    .await?;
            }
            key = k;
            versions.push((id, m));
        }
        match next {
            Some(n) => from = n,
            None => break,
        }
    }
    if !versions.is_empty() {
        gw.expire_versions(bucket, rules, &key, versions, now)
            .await?;
    }
    Ok(())
}

/// Removes the objects of `live` that `rules` expire at `now`; returns
/// the rest.
async fn expire_window(
    gw: &s3::Gateway,
    bucket: &str,
    rules: &[lifecycle::Rule],
    live: Vec<(Vec<u8>, Vec<u8>)>,
    now: u64,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>, GatewayError> {
    if rules.is_empty() {
        return Ok(live);
    }
    let mut kept = Vec::with_capacity(live.len());
    for (key, value) in live {
        let (Ok(k), Ok(m)) = (
            std::str::from_utf8(&key),
            meta::decode::<meta::ObjectMeta>(&value),
        ) else {
            kept.push((key, value));
            continue;
        };
        if m.delete_marker {
            kept.push((key, value));
            continue;
        }
        let tags = gw.rule_tags(bucket, k, &m, rules).await?;
        if lifecycle::expired(rules, k, &tags, m.size, m.last_modified_ms, now) {
            if gw
                .remove_object(bucket, k, Some(&meta::generation(&m)))
                .await?
            {
                tracing::info!("{bucket}/{k} expired under the bucket's lifecycle rules");
            }
            continue;
        }
        kept.push((key, value));
    }
    Ok(kept)
}

/// Renews the objects among `live` (a window of `ns`) whose lease is
/// more than two thirds gone.
async fn renew_window(
    gw: &s3::Gateway,
    bucket: &str,
    ns: &str,
    live: Vec<(Vec<u8>, Vec<u8>)>,
    now: u64,
    lease: u64,
) -> Result<(), GatewayError> {
    for (key, value) in live {
        let Ok(mut m) = meta::decode::<meta::ObjectMeta>(&value) else {
            continue;
        };
        if m.lease_expires_at.saturating_sub(now / 1000) > lease / 3 {
            continue;
        }
        let parts = match gw.resolve(bucket, m.clone()).await {
            Ok(r) => r.parts,
            Err(e) => {
                tracing::warn!("renewing {bucket}/{}: {e}", String::from_utf8_lossy(&key));
                continue;
            }
        };
        let mut expires = u64::MAX;
        let mut renewed = true;
        for p in &parts {
            match gw.node.renew(&p.cap).await {
                Ok(e) => expires = expires.min(e),
                Err(e) => {
                    // The next pass tries again; one object must not stop the rest.
                    tracing::warn!(
                        "renewing {bucket}/{} failed: {e}",
                        String::from_utf8_lossy(&key)
                    );
                    renewed = false;
                    break;
                }
            }
        }
        if !renewed {
            continue;
        }
        m.lease_expires_at = if parts.is_empty() {
            now / 1000 + lease
        } else {
            expires
        };
        // Only if the entry is unchanged: a newer PUT must not be overwritten.
        let k = String::from_utf8_lossy(&key).into_owned();
        if gw.idx.get_aged(ns, &k, Duration::ZERO).await?.as_deref() == Some(value.as_slice()) {
            gw.idx
                .write(ns, bucket, &[(key, Some(meta::encode(&m)?))])
                .await?;
        }
    }
    Ok(())
}
