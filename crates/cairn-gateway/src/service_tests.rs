//! The S3 operations against an in-memory fake of the node's control API:
//! the routes the gateway uses, with real account-index merging, so the
//! gateway's logic (LWW settling, multipart checks, cleanup, maintenance)
//! is tested without a network.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use bytes::Bytes;
use cairn_core::index::{Account, Index, IndexId, Merged};
use cairn_core::keys::SecretKey;
use cairn_core::shard::SplitRule;
use cairn_node::frames::{DATA, END, HEADER, frame};
use futures::StreamExt;
use s3s::dto::*;
use s3s::{S3, S3Request};

use crate::indexes::Indexes;
use crate::node::Node;
use crate::s3::{Gateway, Settings};

#[derive(Default)]
struct Fake {
    objects: HashMap<String, Bytes>,
    removed: Vec<String>,
    renewed: Vec<String>,
    indexes: HashMap<String, Index>,
    next: u64,
    /// Puts whose body ended with an error.
    failed_puts: u64,
    /// Index reads answered "unchanged".
    unchanged: u64,
    /// What index reads say of the replicas that answered (`answered/asked`).
    replicas: Option<&'static str>,
}

type Shared = Arc<Mutex<Fake>>;

async fn put(
    State(s): State<Shared>,
    Query(_q): Query<HashMap<String, String>>,
    body: Body,
) -> (StatusCode, String) {
    let mut stream = body.into_data_stream();
    let mut data = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => data.extend_from_slice(&c),
            Err(e) => {
                s.lock().unwrap().failed_puts += 1;
                return (StatusCode::BAD_REQUEST, format!(r#"{{"error": "{e}"}}"#));
            }
        }
    }
    let mut f = s.lock().unwrap();
    f.next += 1;
    let cap = format!("cairn:fake{}", f.next);
    let size = data.len();
    f.objects.insert(cap.clone(), Bytes::from(data));
    (
        StatusCode::OK,
        serde_json::json!({"cap": cap, "size": size, "segments": 1, "k": 1, "n": 1}).to_string(),
    )
}

async fn get_obj(
    State(s): State<Shared>,
    axum::Json(b): axum::Json<serde_json::Value>,
) -> (StatusCode, Vec<u8>) {
    let cap = b["cap"].as_str().unwrap_or_default();
    let Some(data) = s.lock().unwrap().objects.get(cap).cloned() else {
        return (
            StatusCode::NOT_FOUND,
            br#"{"error": "no such object"}"#.to_vec(),
        );
    };
    let size = data.len() as u64;
    let start = b["start"].as_u64().unwrap_or(0).min(size);
    let end = b["end"].as_u64().unwrap_or(size).min(size);
    let header =
        serde_json::json!({"size": size, "segments": 1, "start": start, "length": end - start});
    let mut out = Vec::new();
    for part in frame(HEADER, Bytes::from(header.to_string()))
        .into_iter()
        .chain(frame(DATA, data.slice(start as usize..end as usize)))
        .chain(frame(END, Bytes::new()))
    {
        out.extend_from_slice(&part);
    }
    (StatusCode::OK, out)
}

async fn rm(State(s): State<Shared>, axum::Json(b): axum::Json<serde_json::Value>) -> String {
    let cap = b["cap"].as_str().unwrap_or_default().to_string();
    let mut f = s.lock().unwrap();
    f.objects.remove(&cap);
    f.removed.push(cap);
    r#"{"deleted": true}"#.into()
}

async fn renew(State(s): State<Shared>, axum::Json(b): axum::Json<serde_json::Value>) -> String {
    let cap = b["cap"].as_str().unwrap_or_default().to_string();
    s.lock().unwrap().renewed.push(cap);
    serde_json::json!({"expires_at": crate::now_ms() / 1000 + b["lease_secs"].as_u64().unwrap_or(0)}).to_string()
}

async fn get_index(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut f = s.lock().unwrap();
    let replicas = f.replicas.map(|r| {
        (
            axum::http::HeaderName::from_static(crate::node::INDEX_REPLICAS_HEADER),
            axum::http::HeaderValue::from_static(r),
        )
    });
    let Some(i) = f.indexes.get(&id) else {
        return (
            StatusCode::NOT_FOUND,
            axum::http::HeaderMap::new(),
            br#"{"error": "none"}"#.to_vec(),
        );
    };
    let mut out = axum::http::HeaderMap::new();
    out.extend(replicas);
    // As the node does: the digest of the copy is its ETag.
    let etag = format!("\"{}\"", hex::encode(i.digest()));
    if headers
        .get("if-none-match")
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        f.unchanged += 1;
        return (StatusCode::NOT_MODIFIED, out, vec![]);
    }
    (StatusCode::OK, out, i.encode())
}

async fn post_index(
    State(s): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> (StatusCode, String) {
    let delta = match Index::decode(&body, IndexId::from_hex(&id)) {
        Ok(d) => d,
        Err(e) => return (StatusCode::BAD_REQUEST, format!(r#"{{"error": "{e}"}}"#)),
    };
    let mut f = s.lock().unwrap();
    let current = f
        .indexes
        .entry(id)
        .or_insert_with(|| Index::new(*delta.name()));
    match current.merge(&delta) {
        Ok(_) => (StatusCode::OK, r#"{"acks": 3, "peers": 3}"#.into()),
        Err(e) => (StatusCode::BAD_REQUEST, format!(r#"{{"error": "{e}"}}"#)),
    }
}

struct Harness {
    fake: Shared,
    gw: Gateway,
    api: String,
    seed: [u8; 32],
    _dir: tempfile::TempDir,
}

async fn fake_node() -> (Shared, String) {
    let fake: Shared = Arc::default();
    let app = axum::Router::new()
        .route("/v1/put", post(put))
        .route("/v1/get", post(get_obj))
        .route("/v1/rm", post(rm))
        .route("/v1/renew", post(renew))
        .route("/v1/index/{id}", get(get_index).post(post_index))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (fake, format!("http://{addr}"))
}

fn gateway(api: &str, seed: [u8; 32], dir: &std::path::Path) -> Gateway {
    gateway_with(api, seed, dir, crate::s3::MIN_PART)
}

fn gateway_with(api: &str, seed: [u8; 32], dir: &std::path::Path, min_part: u64) -> Gateway {
    gateway_split(api, seed, dir, min_part, SplitRule::DEFAULT)
}

fn gateway_split(
    api: &str,
    seed: [u8; 32],
    dir: &std::path::Path,
    min_part: u64,
    rule: SplitRule,
) -> Gateway {
    let node = Node::new(api, [7; 32], 3600).unwrap();
    let account = Arc::new(Account::new(SecretKey::from_bytes(seed)));
    let idx = Arc::new(
        Indexes::open(node.clone(), account, &dir.join("cache.redb"))
            .unwrap()
            .with_split_rule(rule)
            // Small windows, so listings and scans cross many of them.
            .with_window(if rule == SplitRule::DEFAULT { 1000 } else { 10 }),
    );
    Gateway::new(
        node,
        idx,
        Settings {
            region: "us-east-1".into(),
            max_object: 64 << 20,
            body_idle: Duration::from_secs(5),
            min_part,
            web_domain: None,
        },
    )
}

impl Harness {
    /// A harness whose gateway takes multipart parts of any size.
    async fn any_part_size() -> Self {
        let (fake, api) = fake_node().await;
        let dir = tempfile::tempdir().unwrap();
        let gw = gateway_with(&api, [3; 32], dir.path(), 1);
        Self {
            fake,
            gw,
            api,
            seed: [3; 32],
            _dir: dir,
        }
    }

    async fn new() -> Self {
        let (fake, api) = fake_node().await;
        let dir = tempfile::tempdir().unwrap();
        let seed = [9; 32];
        let gw = gateway(&api, seed, dir.path());
        Self {
            fake,
            gw,
            api,
            seed,
            _dir: dir,
        }
    }

    /// Starts a multipart upload of `bucket/key`; returns its id.
    async fn create_upload(&self, bucket: &str, key: &str) -> String {
        self.gw
            .create_multipart_upload(req(CreateMultipartUploadInput {
                bucket: bucket.into(),
                key: key.into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .output
            .upload_id
            .unwrap()
    }

    /// Completes upload `id` of `bucket/key` with `parts` (number, ETag).
    async fn complete(&self, bucket: &str, key: &str, id: String, parts: &[(i32, &str)]) {
        self.gw
            .complete_multipart_upload(req(CompleteMultipartUploadInput {
                bucket: bucket.into(),
                key: key.into(),
                upload_id: id,
                multipart_upload: completed(parts),
                ..Default::default()
            }))
            .await
            .unwrap();
    }

    async fn bucket(&self, name: &str) {
        self.gw
            .create_bucket(req(CreateBucketInput {
                bucket: name.into(),
                ..Default::default()
            }))
            .await
            .unwrap();
    }

    async fn put(&self, bucket: &str, key: &str, data: &[u8]) -> Result<String, s3s::S3Error> {
        let out = self
            .gw
            .put_object(req(PutObjectInput {
                bucket: bucket.into(),
                key: key.into(),
                // No declared length (a streamed upload): the data becomes
                // a Cairn object whatever its size, as the tests here expect.
                content_length: None,
                body: Some(blob(data)),
                ..Default::default()
            }))
            .await?;
        Ok(out.output.e_tag.unwrap().value().to_string())
    }

    /// A PUT with a declared length (small ones are kept inline).
    async fn put_sized(&self, bucket: &str, key: &str, data: &[u8]) -> Result<(), s3s::S3Error> {
        self.gw
            .put_object(req(PutObjectInput {
                bucket: bucket.into(),
                key: key.into(),
                content_length: Some(data.len() as i64),
                body: Some(blob(data)),
                ..Default::default()
            }))
            .await?;
        Ok(())
    }

    async fn get(
        &self,
        bucket: &str,
        key: &str,
        range: Option<&str>,
    ) -> Result<Vec<u8>, s3s::S3Error> {
        self.get_input(GetObjectInput {
            bucket: bucket.into(),
            key: key.into(),
            range: range.map(|r| Range::parse(r).unwrap()),
            ..Default::default()
        })
        .await
    }

    /// The body a GetObject answers.
    async fn get_input(&self, input: GetObjectInput) -> Result<Vec<u8>, s3s::S3Error> {
        let out = self.gw.get_object(req(input)).await?;
        let mut body = out.output.body.unwrap();
        let mut data = Vec::new();
        while let Some(c) = body.next().await {
            data.extend_from_slice(&c.unwrap());
        }
        Ok(data)
    }

    async fn keys(&self, bucket: &str) -> Vec<String> {
        let out = self
            .gw
            .list_objects_v2(req(ListObjectsV2Input {
                bucket: bucket.into(),
                ..Default::default()
            }))
            .await
            .unwrap();
        out.output
            .contents
            .unwrap()
            .into_iter()
            .map(|o| o.key.unwrap())
            .collect()
    }

    fn stored(&self) -> usize {
        self.fake.lock().unwrap().objects.len()
    }
}

/// A tag set as S3 sends it.
fn tagging_of(tags: &[(&str, &str)]) -> Tagging {
    Tagging {
        tag_set: tags
            .iter()
            .map(|(k, v)| Tag {
                key: Some(k.to_string()),
                value: Some(v.to_string()),
            })
            .collect(),
    }
}

fn req<T>(input: T) -> S3Request<T> {
    S3Request {
        input,
        method: hyper::Method::GET,
        uri: hyper::Uri::from_static("/"),
        headers: Default::default(),
        extensions: Default::default(),
        credentials: None,
        region: None,
        service: None,
        trailing_headers: None,
    }
}

fn blob(data: &[u8]) -> StreamingBlob {
    // Two chunks, so streaming is exercised.
    let data = Bytes::copy_from_slice(data);
    let mid = data.len() / 2;
    let chunks = vec![
        Ok::<_, std::io::Error>(data.slice(..mid)),
        Ok(data.slice(mid..)),
    ];
    StreamingBlob::wrap(futures::stream::iter(chunks))
}

fn code(e: s3s::S3Error) -> String {
    e.code().as_str().to_string()
}

#[tokio::test]
async fn objects_round_trip_with_ranges_and_conditionals() {
    let h = Harness::new().await;
    h.bucket("data").await;
    let body: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    let etag = h.put("data", "a/b", &body).await.unwrap();
    assert_eq!(etag, crate::rules::md5_hex(&body));
    assert_eq!(h.get("data", "a/b", None).await.unwrap(), body);
    assert_eq!(
        h.get("data", "a/b", Some("bytes=-10")).await.unwrap(),
        &body[9_990..]
    );
    assert_eq!(
        h.get("data", "a/b", Some("bytes=100-199")).await.unwrap(),
        &body[100..200]
    );
    assert_eq!(
        code(
            h.get("data", "a/b", Some("bytes=10000-"))
                .await
                .unwrap_err()
        ),
        "InvalidRange"
    );
    assert_eq!(
        code(h.get("data", "nope", None).await.unwrap_err()),
        "NoSuchKey"
    );
    assert_eq!(
        code(h.get("nobucket", "a/b", None).await.unwrap_err()),
        "NoSuchBucket"
    );
    let not_modified =
        h.gw.get_object(req(GetObjectInput {
            bucket: "data".into(),
            key: "a/b".into(),
            if_none_match: Some(ETagCondition::ETag(ETag::Strong(etag.clone()))),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(code(not_modified), "NotModified");
    // An empty object.
    h.put("data", "empty", b"").await.unwrap();
    assert_eq!(h.get("data", "empty", None).await.unwrap(), b"");
}

#[tokio::test]
async fn a_bad_digest_stores_nothing_and_shows_nothing() {
    let h = Harness::new().await;
    h.bucket("data").await;
    let err =
        h.gw.put_object(req(PutObjectInput {
            bucket: "data".into(),
            key: "k".into(),
            content_md5: Some("1B2M2Y8AsgTpgAmY7PhCfg==".into()),
            body: Some(blob(b"not empty")),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(code(err), "BadDigest");
    assert!(h.keys("data").await.is_empty());
    assert_eq!(h.stored(), 0, "the node's put failed with the body");
    // A body shorter than declared.
    let err =
        h.gw.put_object(req(PutObjectInput {
            bucket: "data".into(),
            key: "k".into(),
            content_length: Some(100),
            body: Some(blob(b"short")),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(code(err), "IncompleteBody");
    assert_eq!(h.stored(), 0);
}

#[tokio::test]
async fn an_overwrite_removes_the_displaced_data_and_a_delete_its_own() {
    let h = Harness::new().await;
    h.bucket("data").await;
    h.put("data", "k", b"one").await.unwrap();
    h.put("data", "k", b"two").await.unwrap();
    assert_eq!(h.get("data", "k", None).await.unwrap(), b"two");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.stored(), 1, "the first version's data is gone");
    h.gw.delete_object(req(DeleteObjectInput {
        bucket: "data".into(),
        key: "k".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    // Idempotent.
    h.gw.delete_object(req(DeleteObjectInput {
        bucket: "data".into(),
        key: "k".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.stored(), 0);
    assert!(h.keys("data").await.is_empty());
}

#[tokio::test]
async fn two_gateways_share_an_account_and_concurrent_puts_keep_one_winner() {
    let h = Harness::new().await;
    let dir2 = tempfile::tempdir().unwrap();
    let other = gateway(&h.api, h.seed, dir2.path());
    h.bucket("shared").await;
    // The second gateway sees the bucket (its cache is cold).
    let (a, b) = futures::join!(
        h.put("shared", "race", b"from the first gateway"),
        other.put_object(req(PutObjectInput {
            bucket: "shared".into(),
            key: "race".into(),
            body: Some(blob(b"from the second gateway")),
            ..Default::default()
        }))
    );
    a.unwrap();
    b.unwrap();
    // Each write is settled a few seconds later, off the PUT's path: the
    // loser removes its data then.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while h.stored() > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(h.stored(), 1, "the loser removed its data");
    // The first gateway's cached copy may still name its own, removed,
    // data: the read notices and reads the entry afresh.
    let seen = h.get("shared", "race", None).await.unwrap();
    assert!(seen == b"from the first gateway" || seen == b"from the second gateway");
    let via_other = other
        .get_object(req(GetObjectInput {
            bucket: "shared".into(),
            key: "race".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(via_other.output.content_length, Some(seen.len() as i64));
}

/// A PUT or CompleteMultipartUpload with `If-None-Match: *` or `If-Match`.
fn conditional_put(key: &str, data: &[u8], if_match: Option<&str>, create: bool) -> PutObjectInput {
    PutObjectInput {
        bucket: "cond".into(),
        key: key.into(),
        body: Some(blob(data)),
        if_match: if_match.map(|e| ETagCondition::ETag(ETag::Strong(e.into()))),
        if_none_match: create.then_some(ETagCondition::Any),
        ..Default::default()
    }
}

#[tokio::test]
async fn conditional_writes_create_only_or_replace_only_the_etag_read() {
    let h = Harness::new().await;
    h.bucket("cond").await;
    let put = |input| h.gw.put_object(req(input));
    // Create only: the first write wins, the second is refused and stores
    // nothing.
    put(conditional_put("once", b"first", None, true))
        .await
        .unwrap();
    let e = put(conditional_put("once", b"second", None, true))
        .await
        .unwrap_err();
    assert_eq!(code(e), "PreconditionFailed");
    assert_eq!(h.get("cond", "once", None).await.unwrap(), b"first");
    assert_eq!(h.stored(), 1);
    // Replace only the version read (its ETag).
    let first = h.put("cond", "k", b"one").await.unwrap();
    let e = put(conditional_put(
        "k",
        b"two",
        Some("0123456789abcdef0123456789abcdef"),
        false,
    ))
    .await
    .unwrap_err();
    assert_eq!(code(e), "PreconditionFailed");
    put(conditional_put(
        "k",
        b"two",
        Some(first.trim_matches('"')),
        false,
    ))
    .await
    .unwrap();
    assert_eq!(h.get("cond", "k", None).await.unwrap(), b"two");
    let e = put(conditional_put("absent", b"x", Some(&first), false))
        .await
        .unwrap_err();
    assert_eq!(code(e), "NoSuchKey");

    // The check that counts is made at the index write, on the key's entry
    // read afresh: here the gateway's cache says the key is free (it read
    // the shard just before), but a second gateway wrote it meanwhile.
    let dir2 = tempfile::tempdir().unwrap();
    let other = gateway(&h.api, h.seed, dir2.path());
    assert!(h.get("cond", "late", None).await.is_err());
    other
        .put_object(req(PutObjectInput {
            bucket: "cond".into(),
            key: "late".into(),
            body: Some(blob(b"from the other gateway")),
            ..Default::default()
        }))
        .await
        .unwrap();
    let before = h.stored();
    let e = put(conditional_put("late", b"mine", None, true))
        .await
        .unwrap_err();
    assert_eq!(code(e), "PreconditionFailed");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.stored(), before, "the refused write's data was removed");

    // A multipart upload completed with If-None-Match over an object is
    // refused and stays open, to be aborted or completed otherwise.
    let id = h.create_upload("cond", "once").await;
    let etag = upload_part_to(&h, ("cond", "once"), &id, 1, b"part").await;
    let complete = |create: bool| CompleteMultipartUploadInput {
        bucket: "cond".into(),
        key: "once".into(),
        upload_id: id.clone(),
        multipart_upload: completed(&[(1, &etag)]),
        if_none_match: create.then_some(ETagCondition::Any),
        ..Default::default()
    };
    let e =
        h.gw.complete_multipart_upload(req(complete(true)))
            .await
            .unwrap_err();
    assert_eq!(code(e), "PreconditionFailed");
    h.gw.complete_multipart_upload(req(complete(false)))
        .await
        .unwrap();
    assert_eq!(h.get("cond", "once", None).await.unwrap(), b"part");
}

/// A write through one gateway that another gateway's write (which did
/// not see it) beat is found out when it is settled, and its data removed.
#[tokio::test]
async fn a_write_that_lost_to_another_gateway_is_settled_later() {
    let h = Harness::new().await;
    let dir2 = tempfile::tempdir().unwrap();
    let other = gateway(&h.api, h.seed, dir2.path());
    h.bucket("shared").await;
    let get_other = || {
        other.get_object(req(GetObjectInput {
            bucket: "shared".into(),
            key: "race".into(),
            ..Default::default()
        }))
    };
    // The second gateway reads the key (it is not there) and keeps that copy.
    assert_eq!(code(get_other().await.unwrap_err()), "NoSuchKey");
    h.put("shared", "race", b"first").await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    // Its write does not see the first one, so it replaces nothing, and
    // both writers think they won.
    other
        .put_object(req(PutObjectInput {
            bucket: "shared".into(),
            key: "race".into(),
            body: Some(blob(b"second")),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(h.stored(), 2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while h.stored() > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        h.stored(),
        1,
        "the first write's data went when it was settled"
    );
    assert_eq!(h.get("shared", "race", None).await.unwrap(), b"second");
}

async fn upload_part(h: &Harness, id: &str, n: i32, data: &[u8]) -> String {
    upload_part_to(h, ("mpu", "big"), id, n, data).await
}

/// Uploads part `n` of upload `id` of `(bucket, key)`; returns its ETag.
async fn upload_part_to(
    h: &Harness,
    (bucket, key): (&str, &str),
    id: &str,
    n: i32,
    data: &[u8],
) -> String {
    h.gw.upload_part(req(UploadPartInput {
        bucket: bucket.into(),
        key: key.into(),
        upload_id: id.into(),
        part_number: n,
        body: Some(blob(data)),
        ..Default::default()
    }))
    .await
    .unwrap()
    .output
    .e_tag
    .unwrap()
    .value()
    .to_string()
}

fn completed(parts: &[(i32, &str)]) -> Option<CompletedMultipartUpload> {
    Some(CompletedMultipartUpload {
        parts: Some(
            parts
                .iter()
                .map(|(n, e)| CompletedPart {
                    part_number: Some(*n),
                    e_tag: Some(ETag::Strong(e.to_string())),
                    ..Default::default()
                })
                .collect(),
        ),
    })
}

#[tokio::test]
async fn multipart_checks_its_part_list_stitches_and_cleans_up() {
    let h = Harness::new().await;
    h.bucket("mpu").await;
    let id = h.create_upload("mpu", "big").await;
    let p1: Vec<u8> = vec![1; 5 << 20];
    let p2: Vec<u8> = vec![2; 1000];
    let (e1, e2) = (
        upload_part(&h, &id, 1, &p1).await,
        upload_part(&h, &id, 2, &p2).await,
    );
    upload_part(&h, &id, 3, b"unused").await;
    // Not visible before completion.
    assert!(h.keys("mpu").await.is_empty());
    let complete = |parts: Option<CompletedMultipartUpload>| {
        h.gw.complete_multipart_upload(req(CompleteMultipartUploadInput {
            bucket: "mpu".into(),
            key: "big".into(),
            upload_id: id.clone(),
            multipart_upload: parts,
            ..Default::default()
        }))
    };
    assert_eq!(
        code(
            complete(completed(&[(2, &e2), (1, &e1)]))
                .await
                .unwrap_err()
        ),
        "InvalidPartOrder"
    );
    assert_eq!(
        code(
            complete(completed(&[(1, &e2), (2, &e2)]))
                .await
                .unwrap_err()
        ),
        "InvalidPart"
    );
    assert_eq!(
        code(
            complete(completed(&[(1, &e1), (4, &e2)]))
                .await
                .unwrap_err()
        ),
        "InvalidPart"
    );
    assert_eq!(
        code(
            complete(completed(&[(1, &e1), (3, "x")]))
                .await
                .unwrap_err()
        ),
        "InvalidPart"
    );
    let small_first = upload_part(&h, &id, 4, b"tiny").await;
    assert_eq!(
        code(
            complete(completed(&[(2, &e2), (4, &small_first)]))
                .await
                .unwrap_err()
        ),
        "EntityTooSmall"
    );
    let out = complete(completed(&[(1, &e1), (2, &e2)])).await.unwrap();
    let etag = out.output.e_tag.unwrap().value().to_string();
    assert_eq!(etag, crate::rules::multipart_etag(&[&e1, &e2]).unwrap());
    let mut whole = p1.clone();
    whole.extend(&p2);
    assert_eq!(h.get("mpu", "big", None).await.unwrap(), whole);
    // A range across the part boundary.
    let at = (5 << 20) - 3;
    assert_eq!(
        h.get("mpu", "big", Some(&format!("bytes={at}-{}", at + 5)))
            .await
            .unwrap(),
        &whole[at..at + 6]
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.stored(), 2, "the unused parts are removed");
    let uploads =
        h.gw.list_multipart_uploads(req(ListMultipartUploadsInput {
            bucket: "mpu".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert!(uploads.output.uploads.unwrap().is_empty());
}

#[tokio::test]
async fn the_sweeper_aborts_old_uploads_and_leases_are_renewed() {
    let h = Harness::new().await;
    h.bucket("mpu").await;
    let id = h.create_upload("mpu", "big").await;
    upload_part(&h, &id, 1, b"abandoned").await;
    // Leases of 3600 s: a fresh object is not due; after the pass with a
    // zero max age the upload is gone.
    h.put("mpu", "obj", b"kept").await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    crate::maintenance_pass(&h.gw, Duration::ZERO)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let parts =
        h.gw.list_parts(req(ListPartsInput {
            bucket: "mpu".into(),
            key: "big".into(),
            upload_id: id.clone(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(code(parts), "NoSuchUpload");
    assert_eq!(
        h.stored(),
        1,
        "the abandoned part is removed, the object kept"
    );
    assert!(h.fake.lock().unwrap().renewed.is_empty(), "nothing was due");
}

#[tokio::test]
async fn buckets_are_validated_unique_and_only_deleted_when_empty() {
    let h = Harness::new().await;
    let bad =
        h.gw.create_bucket(req(CreateBucketInput {
            bucket: "Bad_Name".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(code(bad), "InvalidBucketName");
    h.bucket("b1x").await;
    let again =
        h.gw.create_bucket(req(CreateBucketInput {
            bucket: "b1x".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(code(again), "BucketAlreadyOwnedByYou");
    h.put("b1x", "k", b"v").await.unwrap();
    let del = |b: &str| {
        h.gw.delete_bucket(req(DeleteBucketInput {
            bucket: b.into(),
            ..Default::default()
        }))
    };
    assert_eq!(code(del("b1x").await.unwrap_err()), "BucketNotEmpty");
    h.gw.delete_object(req(DeleteObjectInput {
        bucket: "b1x".into(),
        key: "k".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    del("b1x").await.unwrap();
    let list =
        h.gw.list_buckets(req(ListBucketsInput::default()))
            .await
            .unwrap();
    assert!(list.output.buckets.unwrap().is_empty());
    assert_eq!(code(del("b1x").await.unwrap_err()), "NoSuchBucket");
}

#[tokio::test]
async fn listings_page_through_many_keys() {
    let h = Harness::new().await;
    h.bucket("many").await;
    for i in 0..25 {
        h.put("many", &format!("d{}/k{i:02}", i % 3), b"x")
            .await
            .unwrap();
    }
    let mut token = None;
    let mut seen = vec![];
    loop {
        let out =
            h.gw.list_objects_v2(req(ListObjectsV2Input {
                bucket: "many".into(),
                max_keys: Some(7),
                continuation_token: token.clone(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .output;
        assert!(out.key_count.unwrap() <= 7);
        seen.extend(out.contents.unwrap().into_iter().map(|o| o.key.unwrap()));
        if !out.is_truncated.unwrap() {
            break;
        }
        token = out.next_continuation_token;
    }
    assert_eq!(seen.len(), 25);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    let grouped =
        h.gw.list_objects(req(ListObjectsInput {
            bucket: "many".into(),
            delimiter: Some("/".into()),
            ..Default::default()
        }))
        .await
        .unwrap()
        .output;
    let prefixes: Vec<String> = grouped
        .common_prefixes
        .unwrap()
        .into_iter()
        .map(|p| p.prefix.unwrap())
        .collect();
    assert_eq!(prefixes, vec!["d0/", "d1/", "d2/"]);
}

/// Regression: concurrent UploadParts each replaced the cached index with
/// their own snapshot plus their part, so a completion right after saw
/// only some parts ("part 1 was not uploaded" from `aws s3 cp`).
#[tokio::test]
async fn concurrent_part_uploads_are_all_seen_by_the_completion() {
    let h = Harness::new().await;
    h.bucket("mpu").await;
    let id = h.create_upload("mpu", "big").await;
    let data: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 5 << 20]).collect();
    let etags = futures::future::join_all(
        data.iter()
            .enumerate()
            .map(|(i, d)| upload_part(&h, &id, i as i32 + 1, d)),
    )
    .await;
    let list: Vec<(i32, &str)> = etags
        .iter()
        .enumerate()
        .map(|(i, e)| (i as i32 + 1, e.as_str()))
        .collect();
    h.complete("mpu", "big", id, &list).await;
    assert_eq!(h.get("mpu", "big", None).await.unwrap(), data.concat());
}

async fn raw_request(addr: std::net::SocketAddr, text: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(text.as_bytes()).await.unwrap();
    let mut out = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut out))
        .await
        .expect("the gateway answers")
        .unwrap();
    String::from_utf8_lossy(&out[..n]).into_owned()
}

#[tokio::test]
async fn the_server_refuses_anonymous_oversized_and_slow_requests() {
    let (_fake, api) = fake_node().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::Config::new(
        "127.0.0.1:0".parse().unwrap(),
        api,
        dir.path().to_path_buf(),
    );
    config.limits.header_timeout = Duration::from_millis(500);
    let started = crate::start(config).await.unwrap();
    let addr = started.addr;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(started.run(async {
        let _ = stop_rx.await;
    }));
    assert!(dir.path().join("account.key").exists());

    let anon = raw_request(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(anon.starts_with("HTTP/1.1 403"), "{anon}");
    assert!(anon.contains("AccessDenied"), "{anon}");

    let huge = raw_request(
        addr,
        "PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: 6442450944\r\n\r\n",
    )
    .await;
    assert!(huge.starts_with("HTTP/1.1 400"), "{huge}");
    assert!(huge.contains("EntityTooLarge"), "{huge}");

    // A request refused before its body is read leaves no byte of that body
    // to be taken for the next request on the connection (which would then
    // fail its signature with a method like "xxGET"): the next one is
    // answered as itself, or the connection is closed.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for body in ["xx", &"y".repeat(300_000)] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let two = format!(
            "PUT /bucket/k HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}GET /bucket HTTP/1.1\r\nHost: x\r\n\r\n",
            body.len()
        );
        s.write_all(two.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out);
        let answers: Vec<&str> = text.matches("HTTP/1.1 ").collect();
        assert!(text.starts_with("HTTP/1.1 403"), "{text}");
        assert!(answers.len() <= 2, "{text}");
        if answers.len() == 2 {
            let second = &text[text.rfind("HTTP/1.1 ").unwrap()..];
            assert!(second.starts_with("HTTP/1.1 403"), "{second}");
            assert!(second.contains("AccessDenied"), "{second}");
        }
    }

    // Headers that never finish: the connection is closed, not held.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("the gateway gives up on slow headers")
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
    let _ = stop_tx.send(());
}

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM
/// files into `dir`: (the certificate's DER, cert path, key path).
fn self_signed(
    dir: &std::path::Path,
) -> (
    rustls::pki_types::CertificateDer<'static>,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    (made.cert.der().clone(), cert, key)
}

#[tokio::test]
async fn the_server_speaks_tls_drops_silent_handshakes_and_reloads_renewed_certificates() {
    use futures::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::compat::TokioAsyncReadCompatExt;
    let (_fake, api) = fake_node().await;
    let dir = tempfile::tempdir().unwrap();
    let (der, cert, key) = self_signed(dir.path());
    // A key that is not the certificate's is refused when the gateway starts.
    let other = tempfile::tempdir().unwrap();
    let (_, _, other_key) = self_signed(other.path());
    let mismatch = crate::tls::Tls::from_pem_files(&cert, &other_key).unwrap_err();
    assert!(
        matches!(mismatch, crate::tls::TlsError::Config(_)),
        "{mismatch}"
    );

    let mut config = crate::Config::new(
        "127.0.0.1:0".parse().unwrap(),
        api,
        dir.path().to_path_buf(),
    );
    config.limits.header_timeout = Duration::from_millis(500);
    config.tls = Some(crate::tls::Tls::from_pem_files(&cert, &key).unwrap());
    config.tls_check = Duration::from_millis(100);
    let started = crate::start(config).await.unwrap();
    assert_eq!(started.scheme, "https");
    let addr = started.addr;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(started.run(async {
        let _ = stop_rx.await;
    }));

    // A client that trusts the certificate gets S3 answers over TLS.
    let trusting = |der: rustls::pki_types::CertificateDer<'static>| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        futures_rustls::TlsConnector::from(Arc::new(client))
    };
    let handshake = |connector: futures_rustls::TlsConnector| async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        connector.connect(name, tcp.compat()).await
    };
    let mut tls = handshake(trusting(der.clone())).await.unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut out))
        .await
        .expect("the gateway answers over TLS")
        .unwrap();
    let anon = String::from_utf8_lossy(&out[..n]);
    assert!(anon.starts_with("HTTP/1.1 403"), "{anon}");
    assert!(anon.contains("AccessDenied"), "{anon}");

    // Plain HTTP to the TLS port is not answered as HTTP, and the
    // connection is closed rather than held.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut got))
        .await
        .expect("a plain request to the TLS port is closed");
    assert!(!got.starts_with(b"HTTP/1.1"), "{got:?}");

    // A client that connects and never starts its handshake is dropped
    // after the header read time.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("the gateway gives up on a silent handshake")
        .unwrap_or(0);
    assert_eq!(n, 0);

    // A renewed certificate (new files) is served without a restart.
    let renewed = tempfile::tempdir().unwrap();
    let (der2, cert2, key2) = self_signed(renewed.path());
    std::fs::copy(&key2, &key).unwrap();
    std::fs::copy(&cert2, &cert).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while handshake(trusting(der2.clone())).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "not reloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(handshake(trusting(der.clone())).await.is_err());
    // A broken renewal keeps the pair that works.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nhalf").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(handshake(trusting(der2)).await.is_ok());
    let _ = stop_tx.send(());
}

#[tokio::test]
async fn copies_are_independent_and_batch_deletes_report_each_key() {
    let h = Harness::new().await;
    h.bucket("src").await;
    h.bucket("dst").await;
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    h.put("src", "orig", &data).await.unwrap();
    let out =
        h.gw.copy_object(req(CopyObjectInput::builder()
            .bucket("dst".into())
            .key("copy".into())
            .copy_source(CopySource::Bucket {
                bucket: "src".into(),
                key: "orig".into(),
                version_id: None,
            })
            .build()
            .unwrap()))
            .await
            .unwrap();
    let etag = out.output.copy_object_result.unwrap().e_tag.unwrap();
    assert_eq!(etag.value(), crate::rules::md5_hex(&data));
    // Deleting the source leaves the copy whole.
    let del =
        h.gw.delete_objects(req(DeleteObjectsInput::builder()
            .bucket("src".into())
            .delete(Delete {
                objects: ["orig", "never-existed"]
                    .map(|k| ObjectIdentifier {
                        key: k.into(),
                        ..Default::default()
                    })
                    .to_vec(),
                quiet: None,
            })
            .build()
            .unwrap()))
            .await
            .unwrap()
            .output;
    assert_eq!(
        del.deleted.unwrap().len(),
        2,
        "S3 reports absent keys as deleted"
    );
    assert!(del.errors.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(h.keys("src").await.is_empty());
    assert_eq!(h.get("dst", "copy", None).await.unwrap(), data);

    // UploadPartCopy of a range, completed as the last (only) part.
    let id = h.create_upload("dst", "slice").await;
    let part =
        h.gw.upload_part_copy(req(UploadPartCopyInput::builder()
            .bucket("dst".into())
            .key("slice".into())
            .upload_id(id.clone())
            .part_number(1)
            .copy_source(CopySource::Bucket {
                bucket: "dst".into(),
                key: "copy".into(),
                version_id: None,
            })
            .copy_source_range(Some("bytes=100-1099".into()))
            .build()
            .unwrap()))
            .await
            .unwrap()
            .output;
    let e = part
        .copy_part_result
        .unwrap()
        .e_tag
        .unwrap()
        .value()
        .to_string();
    h.complete("dst", "slice", id, &[(1, &e)]).await;
    assert_eq!(h.get("dst", "slice", None).await.unwrap(), &data[100..1100]);
}

#[tokio::test]
async fn url_encoded_listings_encode_keys_and_prefixes() {
    let h = Harness::new().await;
    h.bucket("enc").await;
    h.put("enc", "a b/c+d", b"x").await.unwrap();
    let out =
        h.gw.list_objects_v2(req(ListObjectsV2Input {
            bucket: "enc".into(),
            encoding_type: Some(EncodingType::from_static(EncodingType::URL)),
            delimiter: Some("/".into()),
            ..Default::default()
        }))
        .await
        .unwrap()
        .output;
    let prefixes: Vec<String> = out
        .common_prefixes
        .unwrap()
        .into_iter()
        .map(|p| p.prefix.unwrap())
        .collect();
    assert_eq!(prefixes, vec!["a%20b/"]);
    let out =
        h.gw.list_objects_v2(req(ListObjectsV2Input {
            bucket: "enc".into(),
            encoding_type: Some(EncodingType::from_static(EncodingType::URL)),
            ..Default::default()
        }))
        .await
        .unwrap()
        .output;
    assert_eq!(out.contents.unwrap()[0].key.as_deref(), Some("a%20b/c%2Bd"));
}

#[tokio::test]
async fn an_upload_of_more_parts_than_one_entry_holds_keeps_them_in_part_lists() {
    let h = Harness::any_part_size().await;
    h.bucket("mpu").await;
    let id = h.create_upload("mpu", "big").await;
    let n = crate::meta::PARTS_PER_LIST * 2 + 10;
    let mut etags = vec![];
    for i in 0..n {
        etags.push(upload_part(&h, &id, i as i32 + 1, &(i as u32).to_be_bytes()).await);
    }
    let list: Vec<(i32, &str)> = etags
        .iter()
        .enumerate()
        .map(|(i, e)| (i as i32 + 1, e.as_str()))
        .collect();
    h.complete("mpu", "big", id, &list).await;
    let want: Vec<u8> = (0..n as u32).flat_map(|i| i.to_be_bytes()).collect();
    assert_eq!(h.get("mpu", "big", None).await.unwrap(), want);
    assert_eq!(
        h.get("mpu", "big", Some("bytes=1600-1607")).await.unwrap(),
        &want[1600..1608]
    );
    // Deleting it removes every part and its lists.
    h.gw.delete_object(req(DeleteObjectInput {
        bucket: "mpu".into(),
        key: "big".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.stored(), 0);
    let lists =
        h.gw.idx
            .entries_aged("partlists/mpu", Duration::ZERO)
            .await
            .unwrap();
    assert!(lists.is_empty(), "{} part lists left", lists.len());
}

#[tokio::test]
async fn small_objects_live_in_their_index_entry() {
    let h = Harness::new().await;
    h.bucket("small").await;
    let small = vec![7u8; crate::meta::INLINE_MAX as usize];
    h.put_sized("small", "s", &small).await.unwrap();
    assert_eq!(h.stored(), 0, "no Cairn object for a small object");
    assert_eq!(h.get("small", "s", None).await.unwrap(), small);
    assert_eq!(
        h.get("small", "s", Some("bytes=10-19")).await.unwrap(),
        small[10..20]
    );
    let big = vec![8u8; crate::meta::INLINE_MAX as usize + 1];
    h.put_sized("small", "b", &big).await.unwrap();
    assert_eq!(h.stored(), 1, "a larger one is a Cairn object");
    assert_eq!(h.get("small", "b", None).await.unwrap(), big);
    // Deleting an inline object leaves nothing to clean up.
    h.gw.delete_object(req(DeleteObjectInput {
        bucket: "small".into(),
        key: "s".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    assert!(h.get("small", "s", None).await.is_err());
    assert_eq!(h.stored(), 1);
}

/// A bucket outgrows one index: its shards split (here after 16 slots)
/// and it still lists, reads, overwrites and deletes as one bucket, from
/// this gateway and from a second one with a cold cache.
#[tokio::test]
async fn a_bucket_splits_into_shards_and_still_reads_as_one() {
    let mut h = Harness::new().await;
    let rule = SplitRule {
        max_entries: 16,
        max_bytes: 1 << 20,
    };
    let dir = tempfile::tempdir().unwrap();
    h.gw = gateway_split(&h.api, h.seed, dir.path(), 1, rule);
    h.bucket("big").await;
    let key = |i: usize| format!("k/{i:04}");
    for i in 0..400 {
        h.put_sized("big", &key(i), format!("v{i}").as_bytes())
            .await
            .unwrap();
    }
    {
        let f = h.fake.lock().unwrap();
        // The root, its 16 children and more: a tree, not one index.
        assert!(f.indexes.len() > 17, "{} indexes", f.indexes.len());
        let largest = f.indexes.values().map(|i| i.len()).max().unwrap();
        assert!(largest <= 17, "a shard of {largest} slots did not split");
    }
    assert_eq!(list(&h.gw).await, (0..400).map(key).collect::<Vec<_>>());
    for i in (0..400).step_by(4) {
        h.gw.delete_object(req(DeleteObjectInput {
            bucket: "big".into(),
            key: key(i),
            ..Default::default()
        }))
        .await
        .unwrap();
    }
    for i in (1..400).step_by(8) {
        h.put_sized("big", &key(i), b"rewritten").await.unwrap();
    }
    let live: Vec<String> = (0..400).filter(|i| i % 4 != 0).map(key).collect();
    assert_eq!(list(&h.gw).await, live);
    // Grouped by a delimiter, window by window: the 300 keys under `k/`
    // are one common prefix, whichever window they fall in.
    for k in ["a/1", "a/2", "m", "z/1"] {
        h.put_sized("big", k, b"x").await.unwrap();
    }
    let mut token = None;
    let mut pages = vec![];
    loop {
        let out =
            h.gw.list_objects_v2(req(ListObjectsV2Input {
                bucket: "big".into(),
                delimiter: Some("/".into()),
                max_keys: Some(2),
                continuation_token: token.clone(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .output;
        let mut page: Vec<String> = out
            .common_prefixes
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.prefix.unwrap())
            .collect();
        page.extend(
            out.contents
                .unwrap_or_default()
                .into_iter()
                .map(|o| o.key.unwrap()),
        );
        page.sort();
        pages.push(page);
        if !out.is_truncated.unwrap() {
            break;
        }
        token = out.next_continuation_token;
    }
    assert_eq!(pages, [vec!["a/", "k/"], vec!["m", "z/"]]);
    let under_k =
        h.gw.list_objects_v2(req(ListObjectsV2Input {
            bucket: "big".into(),
            prefix: Some("k/01".into()),
            start_after: Some("k/0105".into()),
            max_keys: Some(3),
            ..Default::default()
        }))
        .await
        .unwrap()
        .output;
    let keys: Vec<String> = under_k
        .contents
        .unwrap()
        .into_iter()
        .map(|o| o.key.unwrap())
        .collect();
    assert_eq!(keys, ["k/0106", "k/0107", "k/0109"]);
    assert_eq!(under_k.is_truncated, Some(true));
    // An upload of more parts than a window: completion finds them all.
    let id = h.create_upload("big", "mp").await;
    let mut parts = vec![];
    for n in 1..=25 {
        let e =
            h.gw.upload_part(req(UploadPartInput {
                bucket: "big".into(),
                key: "mp".into(),
                upload_id: id.clone(),
                part_number: n,
                body: Some(blob(format!("{n:03}").as_bytes())),
                ..Default::default()
            }))
            .await
            .unwrap()
            .output
            .e_tag
            .unwrap();
        parts.push((n, e.value().to_string()));
    }
    let parts_ref: Vec<(i32, &str)> = parts.iter().map(|(n, e)| (*n, e.as_str())).collect();
    h.complete("big", "mp", id, &parts_ref).await;
    let whole: String = (1..=25).map(|n| format!("{n:03}")).collect();
    assert_eq!(read(&h.gw, "mp".into()).await.unwrap(), whole.as_bytes());
    for k in ["a/1", "a/2", "m", "z/1", "mp"] {
        h.gw.delete_object(req(DeleteObjectInput {
            bucket: "big".into(),
            key: k.into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    }
    let dir2 = tempfile::tempdir().unwrap();
    let other = gateway(&h.api, h.seed, dir2.path());
    assert_eq!(list(&other).await, live);
    assert_eq!(read(&other, key(9)).await.unwrap(), b"rewritten");
    assert_eq!(read(&other, key(10)).await.unwrap(), b"v10");
    assert_eq!(code(read(&other, key(8)).await.unwrap_err()), "NoSuchKey");
    let refused = other
        .delete_bucket(req(DeleteBucketInput {
            bucket: "big".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(code(refused), "BucketNotEmpty");
    for chunk in live.chunks(100) {
        other
            .delete_objects(req(DeleteObjectsInput::builder()
                .bucket("big".into())
                .delete(Delete {
                    objects: chunk
                        .iter()
                        .map(|k| ObjectIdentifier {
                            key: k.clone(),
                            ..Default::default()
                        })
                        .collect(),
                    quiet: Some(true),
                })
                .build()
                .unwrap()))
            .await
            .unwrap();
    }
    assert!(list(&other).await.is_empty());
    other
        .delete_bucket(req(DeleteBucketInput {
            bucket: "big".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
}

/// Every key of bucket `big`, paging 37 at a time.
async fn list(gw: &Gateway) -> Vec<String> {
    let mut token = None;
    let mut seen = vec![];
    loop {
        let out = gw
            .list_objects_v2(req(ListObjectsV2Input {
                bucket: "big".into(),
                max_keys: Some(37),
                continuation_token: token.clone(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .output;
        seen.extend(
            out.contents
                .unwrap_or_default()
                .into_iter()
                .map(|o| o.key.unwrap()),
        );
        if !out.is_truncated.unwrap() {
            return seen;
        }
        token = out.next_continuation_token;
    }
}

/// Object `key` of bucket `big`.
async fn read(gw: &Gateway, key: String) -> Result<Vec<u8>, s3s::S3Error> {
    let out = gw
        .get_object(req(GetObjectInput {
            bucket: "big".into(),
            key,
            ..Default::default()
        }))
        .await?;
    let mut body = out.output.body.unwrap();
    let mut data = Vec::new();
    while let Some(c) = body.next().await {
        data.extend_from_slice(&c.unwrap());
    }
    Ok(data)
}

impl Harness {
    async fn tags(&self, bucket: &str, key: &str) -> Result<Vec<(String, String)>, s3s::S3Error> {
        let out = self
            .gw
            .get_object_tagging(req(GetObjectTaggingInput {
                bucket: bucket.into(),
                key: key.into(),
                ..Default::default()
            }))
            .await?;
        Ok(out
            .output
            .tag_set
            .into_iter()
            .map(|t| (t.key.unwrap(), t.value.unwrap()))
            .collect())
    }

    async fn set_tags(
        &self,
        bucket: &str,
        key: &str,
        tags: &[(&str, &str)],
    ) -> Result<(), s3s::S3Error> {
        self.gw
            .put_object_tagging(req(PutObjectTaggingInput::builder()
                .bucket(bucket.into())
                .key(key.into())
                .tagging(tagging_of(tags))
                .build()
                .unwrap()))
            .await?;
        Ok(())
    }
}

fn pairs(tags: &[(&str, &str)]) -> Vec<(String, String)> {
    tags.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Tags given at PUT, set and removed later, copied or replaced by a copy,
/// carried through a multipart upload; a new PUT starts with its own tags
/// and a delete takes the object's tag entry with it.
#[tokio::test]
async fn objects_keep_tags_through_puts_copies_and_uploads() {
    let h = Harness::new().await;
    h.bucket("tags").await;
    h.gw.put_object(req(PutObjectInput {
        bucket: "tags".into(),
        key: "a".into(),
        body: Some(blob(b"tagged")),
        tagging: Some("project=cairn&team=storage+core".into()),
        ..Default::default()
    }))
    .await
    .unwrap();
    assert_eq!(
        h.tags("tags", "a").await.unwrap(),
        pairs(&[("project", "cairn"), ("team", "storage core")])
    );
    let got =
        h.gw.get_object(req(GetObjectInput {
            bucket: "tags".into(),
            key: "a".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(got.output.tag_count, Some(2));
    h.set_tags("tags", "a", &[("x", "y")]).await.unwrap();
    assert_eq!(h.tags("tags", "a").await.unwrap(), pairs(&[("x", "y")]));
    // A copy takes the source's current tags unless told to replace them.
    let copy = |key: &str, replace: Option<&str>| {
        let mut b = CopyObjectInput::builder();
        b.set_bucket("tags".into());
        b.set_key(key.into());
        b.set_copy_source(CopySource::Bucket {
            bucket: "tags".into(),
            key: "a".into(),
            version_id: None,
        });
        if let Some(r) = replace {
            b.set_tagging_directive(Some(TaggingDirective::from_static(
                TaggingDirective::REPLACE,
            )));
            b.set_tagging(Some(r.into()));
        }
        h.gw.copy_object(req(b.build().unwrap()))
    };
    copy("copied", None).await.unwrap();
    copy("replaced", Some("k=v")).await.unwrap();
    assert_eq!(
        h.tags("tags", "copied").await.unwrap(),
        pairs(&[("x", "y")])
    );
    assert_eq!(
        h.tags("tags", "replaced").await.unwrap(),
        pairs(&[("k", "v")])
    );
    // A new PUT of the key is a new object: the old tag entry no longer applies.
    h.put("tags", "a", b"again").await.unwrap();
    assert!(h.tags("tags", "a").await.unwrap().is_empty());
    h.set_tags("tags", "a", &[("n", "1")]).await.unwrap();
    h.gw.delete_object_tagging(req(DeleteObjectTaggingInput {
        bucket: "tags".into(),
        key: "a".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    assert!(h.tags("tags", "a").await.unwrap().is_empty());
    // S3's limits, and only existing objects.
    let eleven: Vec<(String, String)> = (0..11).map(|i| (format!("k{i}"), "v".into())).collect();
    let eleven: Vec<(&str, &str)> = eleven
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        code(h.set_tags("tags", "a", &eleven).await.unwrap_err()),
        "InvalidTag"
    );
    assert_eq!(
        code(
            h.set_tags("tags", "a", &[("aws:x", "1")])
                .await
                .unwrap_err()
        ),
        "InvalidTag"
    );
    assert_eq!(
        code(
            h.set_tags("tags", "ghost", &[("k", "v")])
                .await
                .unwrap_err()
        ),
        "NoSuchKey"
    );
    let refused =
        h.gw.put_object(req(PutObjectInput {
            bucket: "tags".into(),
            key: "dup".into(),
            body: Some(blob(b"x")),
            tagging: Some("a=1&a=2".into()),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(code(refused), "InvalidTag");
    assert!(!h.keys("tags").await.contains(&"dup".to_string()));
    // Multipart: the upload's tags are the object's.
    let id =
        h.gw.create_multipart_upload(req(CreateMultipartUploadInput {
            bucket: "tags".into(),
            key: "mpu".into(),
            tagging: Some("stage=final".into()),
            ..Default::default()
        }))
        .await
        .unwrap()
        .output
        .upload_id
        .unwrap();
    let e = upload_part_to(&h, ("tags", "mpu"), &id, 1, b"only part").await;
    h.complete("tags", "mpu", id, &[(1, &e)]).await;
    assert_eq!(
        h.tags("tags", "mpu").await.unwrap(),
        pairs(&[("stage", "final")])
    );
    // Deleting an object removes its tag entry.
    h.set_tags("tags", "copied", &[("k", "v")]).await.unwrap();
    h.gw.delete_object(req(DeleteObjectInput {
        bucket: "tags".into(),
        key: "copied".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    let left =
        h.gw.idx
            .entries_aged(&crate::s3::tags_ns("tags"), Duration::ZERO)
            .await
            .unwrap();
    let left: Vec<String> = left
        .into_iter()
        .map(|(k, _)| String::from_utf8(k).unwrap())
        .collect();
    assert_eq!(left, ["a"]);
}

/// A PUT with a customer key (SSE-C), a KMS key or a public ACL is refused
/// before its body is read, and nothing is stored.
#[tokio::test]
async fn partial_customer_keys_kms_and_public_acls_are_refused_and_store_nothing() {
    let h = Harness::new().await;
    h.bucket("settings").await;
    let put = |f: fn(&mut PutObjectInput)| {
        let mut input = PutObjectInput {
            bucket: "settings".into(),
            key: "k".into(),
            body: Some(blob(b"secret")),
            ..Default::default()
        };
        f(&mut input);
        h.gw.put_object(req(input))
    };
    // A customer key needs all three headers.
    let e = put(|i| i.sse_customer_algorithm = Some("AES256".into()))
        .await
        .unwrap_err();
    assert_eq!(code(e), "InvalidArgument");
    // KMS keys are for the account's signed requests only.
    let e = put(|i| {
        i.server_side_encryption = Some(ServerSideEncryption::from_static(
            ServerSideEncryption::AWS_KMS,
        ))
    })
    .await
    .unwrap_err();
    assert_eq!(code(e), "AccessDenied");
    let e = put(|i| {
        i.server_side_encryption = Some(ServerSideEncryption::from_static(
            ServerSideEncryption::AWS_KMS_DSSE,
        ))
    })
    .await
    .unwrap_err();
    assert_eq!(code(e), "NotImplemented");
    let e = put(|i| i.acl = Some(ObjectCannedACL::from_static(ObjectCannedACL::PUBLIC_READ)))
        .await
        .unwrap_err();
    assert_eq!(code(e), "AccessControlListNotSupported");
    let e =
        put(|i| i.grant_read = Some("uri=http://acs.amazonaws.com/groups/global/AllUsers".into()))
            .await
            .unwrap_err();
    assert_eq!(code(e), "AccessControlListNotSupported");
    assert_eq!(h.stored(), 0);
    assert!(h.keys("settings").await.is_empty());
    let ok = put(|i| {
        i.server_side_encryption = Some(ServerSideEncryption::from_static(
            ServerSideEncryption::AES256,
        ))
    })
    .await
    .unwrap();
    assert_eq!(
        ok.output
            .server_side_encryption
            .as_ref()
            .map(ServerSideEncryption::as_str),
        Some("AES256")
    );
}

/// An up-to-date copy is not sent again; new ops reach the cache file at
/// the next flush, so a gateway that restarts with the node unreachable
/// still has them.
#[tokio::test]
async fn unchanged_indexes_are_not_resent_and_the_cache_file_is_written_behind() {
    let (fake, api) = fake_node().await;
    let dir = tempfile::tempdir().unwrap();
    let seed = [4; 32];
    let open = |api: &str, dir: &std::path::Path| {
        let node = Node::new(api, [7; 32], 3600).unwrap();
        let account = Arc::new(Account::new(SecretKey::from_bytes(seed)));
        Indexes::open(node, account, &dir.join("cache.redb")).unwrap()
    };
    let gw = open(&api, dir.path());
    gw.write("objects/b", "b", &[(b"k".to_vec(), Some(b"v1".to_vec()))])
        .await
        .unwrap();
    // The write joined the copy here, which is the node's: no copy moves.
    assert_eq!(read_fresh(&gw, "k").await.as_deref(), Some(&b"v1"[..]));
    assert_eq!(fake.lock().unwrap().unchanged, 1);
    // Another gateway's write changes the node's copy: it is sent again.
    let other = tempfile::tempdir().unwrap();
    let gw2 = open(&api, other.path());
    gw2.write("objects/b", "b", &[(b"k".to_vec(), Some(b"v2".to_vec()))])
        .await
        .unwrap();
    assert_eq!(read_fresh(&gw, "k").await.as_deref(), Some(&b"v2"[..]));
    assert_eq!(fake.lock().unwrap().unchanged, 1);
    assert_eq!(read_fresh(&gw, "k").await.as_deref(), Some(&b"v2"[..]));
    assert_eq!(fake.lock().unwrap().unchanged, 2);

    // Written behind: the first write is in the file only after a flush.
    gw.write("objects/b", "b", &[(b"new".to_vec(), Some(b"n".to_vec()))])
        .await
        .unwrap();
    assert!(gw.flush().await.unwrap() >= 1);
    assert_eq!(gw.flush().await.unwrap(), 0, "nothing is left to write");
    gw2.write("objects/b", "b", &[(b"late".to_vec(), Some(b"l".to_vec()))])
        .await
        .unwrap();
    drop((gw, gw2));
    // Reopened over a node that has nothing: only the cache file answers.
    let (_empty, empty_api) = fake_node().await;
    let back = open(&empty_api, dir.path());
    let new = back.get("objects/b", "new").await.unwrap();
    assert_eq!(new.as_deref(), Some(&b"n"[..]));
    let back2 = open(&empty_api, other.path());
    let late = back2.get("objects/b", "late").await.unwrap();
    assert_eq!(late, None, "an unflushed write is not in the file");
}

async fn read_fresh(idx: &Indexes, key: &str) -> Option<Vec<u8>> {
    idx.get_aged("objects/b", key, Duration::ZERO)
        .await
        .unwrap()
}

/// Bucket tags: set, read, replaced, removed; S3's limits; none on a
/// missing bucket; and a bucket deleted and made again starts without them.
#[tokio::test]
async fn buckets_keep_tags_until_removed_or_the_bucket_goes() {
    let h = Harness::new().await;
    h.bucket("tagged").await;
    let get = |b: &str| {
        h.gw.get_bucket_tagging(req(GetBucketTaggingInput {
            bucket: b.into(),
            ..Default::default()
        }))
    };
    let put = |b: &str, tags: Vec<(String, String)>| {
        let mut input = PutBucketTaggingInput::builder();
        input.set_bucket(b.into());
        input.set_tagging(Tagging {
            tag_set: tags
                .into_iter()
                .map(|(k, v)| Tag {
                    key: Some(k),
                    value: Some(v),
                })
                .collect(),
        });
        h.gw.put_bucket_tagging(req(input.build().unwrap()))
    };
    let set = |out: GetBucketTaggingOutput| -> Vec<(String, String)> {
        out.tag_set
            .into_iter()
            .map(|t| (t.key.unwrap(), t.value.unwrap()))
            .collect()
    };
    assert_eq!(code(get("tagged").await.unwrap_err()), "NoSuchTagSet");
    put("tagged", pairs(&[("cost-center", "42"), ("env", "prod")]))
        .await
        .unwrap();
    assert_eq!(
        set(get("tagged").await.unwrap().output),
        pairs(&[("cost-center", "42"), ("env", "prod")])
    );
    // A put replaces the whole set.
    put("tagged", pairs(&[("env", "test")])).await.unwrap();
    assert_eq!(
        set(get("tagged").await.unwrap().output),
        pairs(&[("env", "test")])
    );
    // Up to 50 tags on a bucket (objects take 10), checked like objects'.
    let many = |n: usize| (0..n).map(|i| (format!("k{i}"), "v".to_string())).collect();
    put("tagged", many(50)).await.unwrap();
    assert_eq!(set(get("tagged").await.unwrap().output).len(), 50);
    assert_eq!(
        code(put("tagged", many(51)).await.unwrap_err()),
        "InvalidTag"
    );
    assert_eq!(
        code(put("tagged", pairs(&[("aws:x", "1")])).await.unwrap_err()),
        "InvalidTag"
    );
    assert_eq!(
        set(get("tagged").await.unwrap().output).len(),
        50,
        "a refused set changes nothing"
    );
    h.gw.delete_bucket_tagging(req(DeleteBucketTaggingInput {
        bucket: "tagged".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    assert_eq!(code(get("tagged").await.unwrap_err()), "NoSuchTagSet");
    assert_eq!(code(get("ghost").await.unwrap_err()), "NoSuchBucket");
    assert_eq!(
        code(put("ghost", pairs(&[("k", "v")])).await.unwrap_err()),
        "NoSuchBucket"
    );
    // Deleting the bucket takes its tags: a new bucket of the name has none.
    put("tagged", pairs(&[("k", "v")])).await.unwrap();
    h.gw.delete_bucket(req(DeleteBucketInput {
        bucket: "tagged".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    h.bucket("tagged").await;
    assert_eq!(code(get("tagged").await.unwrap_err()), "NoSuchTagSet");
}

/// CORS rules: set, read back as given, checked, removed, and gone with
/// the bucket; the server's lookup sees what was set.
#[tokio::test]
async fn buckets_keep_cors_rules_until_removed_or_the_bucket_goes() {
    let h = Harness::new().await;
    h.bucket("web").await;
    let get = || {
        h.gw.get_bucket_cors(req(GetBucketCorsInput {
            bucket: "web".into(),
            ..Default::default()
        }))
    };
    let put = |methods: &[&str]| {
        let mut input = PutBucketCorsInput::builder();
        input.set_bucket("web".into());
        input.set_cors_configuration(CORSConfiguration {
            cors_rules: vec![CORSRule {
                id: Some("app".into()),
                allowed_origins: vec!["https://app.example.com".into()],
                allowed_methods: methods.iter().map(|m| m.to_string()).collect(),
                allowed_headers: Some(vec!["*".into()]),
                expose_headers: None,
                max_age_seconds: Some(60),
            }],
        });
        h.gw.put_bucket_cors(req(input.build().unwrap()))
    };
    assert_eq!(code(get().await.unwrap_err()), "NoSuchCORSConfiguration");
    assert!(h.gw.cors_rules("web").await.unwrap().is_empty());
    put(&["GET", "PUT"]).await.unwrap();
    let rules = get().await.unwrap().output.cors_rules.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].allowed_methods, ["GET", "PUT"]);
    assert_eq!(
        rules[0].allowed_headers.as_deref(),
        Some(&["*".to_string()][..])
    );
    assert_eq!(rules[0].expose_headers, None);
    assert_eq!(rules[0].max_age_seconds, Some(60));
    let seen = h.gw.cors_rules("web").await.unwrap();
    assert!(crate::cors::find(&seen, "https://app.example.com", "PUT", &["x-amz-date"]).is_some());
    assert_eq!(code(put(&["PATCH"]).await.unwrap_err()), "InvalidArgument");
    assert_eq!(
        get().await.unwrap().output.cors_rules.unwrap()[0].allowed_methods,
        ["GET", "PUT"]
    );
    h.gw.delete_bucket_cors(req(DeleteBucketCorsInput {
        bucket: "web".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    assert_eq!(code(get().await.unwrap_err()), "NoSuchCORSConfiguration");
    // Gone with the bucket: a new bucket of the name has no rules.
    put(&["GET"]).await.unwrap();
    h.gw.delete_bucket(req(DeleteBucketInput {
        bucket: "web".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    assert!(
        h.gw.cors_rules("web").await.unwrap().is_empty(),
        "no bucket, no rules"
    );
    h.bucket("web").await;
    assert_eq!(code(get().await.unwrap_err()), "NoSuchCORSConfiguration");
}

/// Lifecycle rules: stored and read back; the maintenance pass removes the
/// objects they expire (by prefix and tags) and keeps the rest; a removal
/// never takes an object a PUT has replaced since; what Cairn cannot do
/// (transitions) is refused.
#[tokio::test]
async fn lifecycle_rules_expire_matching_objects_in_the_maintenance_pass() {
    let h = Harness::new().await;
    h.bucket("life").await;
    let rule = |id: &str, prefix: &str, tag: Option<(&str, &str)>, exp: LifecycleExpiration| {
        LifecycleRule {
            id: Some(id.into()),
            status: ExpirationStatus::from_static(ExpirationStatus::ENABLED),
            filter: Some(match tag {
                None => LifecycleRuleFilter {
                    prefix: Some(prefix.into()),
                    ..Default::default()
                },
                Some((k, v)) => LifecycleRuleFilter {
                    and: Some(LifecycleRuleAndOperator {
                        prefix: Some(prefix.into()),
                        tags: Some(vec![Tag {
                            key: Some(k.into()),
                            value: Some(v.into()),
                        }]),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            }),
            expiration: Some(exp),
            abort_incomplete_multipart_upload: None,
            noncurrent_version_expiration: None,
            noncurrent_version_transitions: None,
            prefix: None,
            transitions: None,
        }
    };
    let past_again = || LifecycleExpiration {
        date: Some(crate::s3::ms_to_ts(1_600_000_000_000)),
        ..Default::default()
    };
    let past = past_again();
    let month = LifecycleExpiration {
        days: Some(30),
        ..Default::default()
    };
    let put_rules = |rules: Vec<LifecycleRule>| {
        let mut input = PutBucketLifecycleConfigurationInput::builder();
        input.set_bucket("life".into());
        input.set_lifecycle_configuration(Some(BucketLifecycleConfiguration { rules }));
        h.gw.put_bucket_lifecycle_configuration(req(input.build().unwrap()))
    };
    let get_rules = || {
        h.gw.get_bucket_lifecycle_configuration(req(GetBucketLifecycleConfigurationInput {
            bucket: "life".into(),
            ..Default::default()
        }))
    };
    assert_eq!(
        code(get_rules().await.unwrap_err()),
        "NoSuchLifecycleConfiguration"
    );
    put_rules(vec![
        rule("old-tmp", "tmp/", None, past.clone()),
        rule("tagged", "logs/", Some(("retain", "no")), past),
        rule("month", "logs/", None, month),
    ])
    .await
    .unwrap();
    let got = get_rules().await.unwrap().output.rules.unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[2].expiration.as_ref().unwrap().days, Some(30));
    assert_eq!(
        got[1]
            .filter
            .as_ref()
            .unwrap()
            .and
            .as_ref()
            .unwrap()
            .tags
            .as_ref()
            .unwrap()[0]
            .key
            .as_deref(),
        Some("retain")
    );
    for key in ["tmp/a", "tmp/b", "logs/kept", "logs/dropped", "data/x"] {
        h.put("life", key, b"bytes").await.unwrap();
    }
    h.set_tags("life", "logs/dropped", &[("retain", "no")])
        .await
        .unwrap();
    h.set_tags("life", "logs/kept", &[("retain", "yes")])
        .await
        .unwrap();
    // A removal names the write it expires: a newer one is left alone.
    assert!(
        !h.gw
            .remove_object("life", "data/x", Some("not-this-write"))
            .await
            .unwrap()
    );
    crate::maintenance_pass(&h.gw, Duration::from_secs(3600))
        .await
        .unwrap();
    let mut keys = h.keys("life").await;
    keys.sort();
    assert_eq!(keys, ["data/x", "logs/kept"]);
    // A size filter: only the large object under the prefix expires.
    let mut big = rule("big", "sized/", None, past_again());
    big.filter = Some(LifecycleRuleFilter {
        and: Some(LifecycleRuleAndOperator {
            prefix: Some("sized/".into()),
            object_size_greater_than: Some(10),
            ..Default::default()
        }),
        ..Default::default()
    });
    put_rules(vec![big]).await.unwrap();
    h.put("life", "sized/small", b"tiny").await.unwrap();
    h.put("life", "sized/large", b"more than ten bytes")
        .await
        .unwrap();
    crate::maintenance_pass(&h.gw, Duration::from_secs(3600))
        .await
        .unwrap();
    let mut keys = h.keys("life").await;
    keys.sort();
    assert_eq!(keys, ["data/x", "logs/kept", "sized/small"]);
    // Transitions need storage classes Cairn does not have.
    let mut with_transition = rule("t", "", None, LifecycleExpiration::default());
    with_transition.expiration = None;
    with_transition.transitions = Some(vec![Transition {
        days: Some(30),
        storage_class: Some(TransitionStorageClass::from_static(
            TransitionStorageClass::GLACIER,
        )),
        ..Default::default()
    }]);
    assert_eq!(
        code(put_rules(vec![with_transition]).await.unwrap_err()),
        "NotImplemented"
    );
    h.gw.delete_bucket_lifecycle(req(DeleteBucketLifecycleInput {
        bucket: "life".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    assert_eq!(
        code(get_rules().await.unwrap_err()),
        "NoSuchLifecycleConfiguration"
    );
}

async fn set_versioning(h: &Harness, bucket: &str, status: &'static str) {
    let mut input = PutBucketVersioningInput::builder();
    input.set_bucket(bucket.into());
    input.set_versioning_configuration(VersioningConfiguration {
        status: Some(BucketVersioningStatus::from_static(status)),
        ..Default::default()
    });
    h.gw.put_bucket_versioning(req(input.build().unwrap()))
        .await
        .unwrap();
}

async fn get_version(h: &Harness, key: &str, version: &str) -> Result<Vec<u8>, s3s::S3Error> {
    h.get_input(GetObjectInput {
        bucket: "ver".into(),
        key: key.into(),
        version_id: Some(version.into()),
        ..Default::default()
    })
    .await
}

async fn delete(h: &Harness, key: &str, version: Option<&str>) -> DeleteObjectOutput {
    h.gw.delete_object(req(DeleteObjectInput {
        bucket: "ver".into(),
        key: key.into(),
        version_id: version.map(Into::into),
        ..Default::default()
    }))
    .await
    .unwrap()
    .output
}

/// (key, version id, is latest, is a delete marker), in listing order.
async fn versions(h: &Harness, max: i32) -> Vec<(String, String, bool, bool)> {
    let mut out = vec![];
    let (mut km, mut vm) = (None, None);
    loop {
        let page =
            h.gw.list_object_versions(req(ListObjectVersionsInput {
                bucket: "ver".into(),
                key_marker: km.clone(),
                version_id_marker: vm.clone(),
                max_keys: Some(max),
                ..Default::default()
            }))
            .await
            .unwrap()
            .output;
        let mut got = vec![];
        for v in page.versions.unwrap_or_default() {
            got.push((
                (v.key.unwrap(), v.last_modified.unwrap()),
                (v.version_id.unwrap(), v.is_latest.unwrap(), false),
            ));
        }
        for m in page.delete_markers.unwrap_or_default() {
            got.push((
                (m.key.unwrap(), m.last_modified.unwrap()),
                (m.version_id.unwrap(), m.is_latest.unwrap(), true),
            ));
        }
        // S3 interleaves them by key, newest first; s3s answers versions
        // and markers apart, each in listing order, so they are merged
        // back by time (stable: the listing's order within each).
        got.sort_by(|a, b| (&a.0.0, &b.0.1).cmp(&(&b.0.0, &a.0.1)));
        out.extend(got.into_iter().map(|((k, _), (id, l, m))| (k, id, l, m)));
        if !page.is_truncated.unwrap() {
            return out;
        }
        km = page.next_key_marker;
        vm = page.next_version_id_marker;
    }
}

#[tokio::test]
async fn a_write_that_beats_the_first_enablings_copy_keeps_the_null_version() {
    let h = Harness::new().await;
    h.bucket("ver").await;
    h.put("ver", "k", b"before").await.unwrap();
    h.put("ver", "gone", b"deleted after").await.unwrap();
    // Versioning is on, but the first enabling's copy of the current
    // objects has not reached these keys yet (the setting is stored first).
    h.gw.set_bucket_setting(
        "ver",
        Some(crate::meta::BucketVersioning {
            version: crate::meta::META_VERSION,
            created_at_ms: 0,
            enabled: true,
        }),
    )
    .await
    .unwrap();
    h.put("ver", "k", b"after").await.unwrap();
    h.gw.delete_object(req(DeleteObjectInput {
        bucket: "ver".into(),
        key: "gone".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    // Both null versions are kept, data and all.
    assert_eq!(get_version(&h, "k", "null").await.unwrap(), b"before");
    assert_eq!(
        get_version(&h, "gone", "null").await.unwrap(),
        b"deleted after"
    );
    assert_eq!(h.get("ver", "k", None).await.unwrap(), b"after");
    let listed = versions(&h, 1000).await;
    let of = |key: &str| -> Vec<(String, bool, bool)> {
        listed
            .iter()
            .filter(|v| v.0 == key)
            .map(|v| (v.1.clone(), v.2, v.3))
            .collect()
    };
    assert_eq!(of("k").len(), 2, "{listed:?}");
    assert!(
        of("k").contains(&("null".into(), false, false)),
        "{listed:?}"
    );
    assert_eq!(of("gone").len(), 2, "{listed:?}");
    assert!(
        of("gone").contains(&("null".into(), false, false)),
        "{listed:?}"
    );
    assert!(
        of("gone").iter().any(|v| v.1 && v.2),
        "a current marker: {listed:?}"
    );
    assert_eq!(h.stored(), 3);
}

#[tokio::test]
async fn versioning_keeps_every_version_until_it_is_deleted_by_id() {
    let h = Harness::new().await;
    h.bucket("ver").await;
    h.put("ver", "k", b"before").await.unwrap();
    h.put_sized("ver", "small", b"tiny").await.unwrap();
    let status = || {
        h.gw.get_bucket_versioning(req(GetBucketVersioningInput {
            bucket: "ver".into(),
            ..Default::default()
        }))
    };
    assert!(status().await.unwrap().output.status.is_none());
    // Never versioned: each object lists as its key's null version.
    let nulls = vec![
        ("k".to_string(), "null".to_string(), true, false),
        ("small".to_string(), "null".to_string(), true, false),
    ];
    assert_eq!(versions(&h, 1000).await, nulls);
    assert_eq!(versions(&h, 1).await, nulls);
    set_versioning(&h, "ver", BucketVersioningStatus::ENABLED).await;
    assert_eq!(
        status().await.unwrap().output.status.unwrap().as_str(),
        "Enabled"
    );
    // Objects from before are their null version.
    assert_eq!(get_version(&h, "k", "null").await.unwrap(), b"before");
    let put = |data: &'static [u8]| {
        h.gw.put_object(req(PutObjectInput {
            bucket: "ver".into(),
            key: "k".into(),
            body: Some(blob(data)),
            ..Default::default()
        }))
    };
    let v1 = put(b"one").await.unwrap().output.version_id.unwrap();
    let v2 = put(b"two").await.unwrap().output.version_id.unwrap();
    assert!(v2 < v1, "newer versions sort first");
    assert_eq!(h.get("ver", "k", None).await.unwrap(), b"two");
    assert_eq!(get_version(&h, "k", &v1).await.unwrap(), b"one");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.stored(), 3, "no version's data was removed");
    // A delete writes a marker: the key reads as gone, its versions stay.
    let d = delete(&h, "k", None).await;
    assert_eq!(d.delete_marker, Some(true));
    let marker = d.version_id.unwrap();
    assert_eq!(
        code(h.get("ver", "k", None).await.unwrap_err()),
        "NoSuchKey"
    );
    assert_eq!(
        code(get_version(&h, "k", &marker).await.unwrap_err()),
        "MethodNotAllowed"
    );
    assert_eq!(
        code(
            get_version(&h, "k", "0000000000000000deadbeef")
                .await
                .unwrap_err()
        ),
        "NoSuchVersion"
    );
    assert_eq!(
        code(get_version(&h, "k", "../x").await.unwrap_err()),
        "InvalidArgument"
    );
    assert_eq!(h.keys("ver").await, ["small"]);
    let all = versions(&h, 1000).await;
    let expect = vec![
        ("k".to_string(), marker.clone(), true, true),
        ("k".to_string(), v2.clone(), false, false),
        ("k".to_string(), v1.clone(), false, false),
        ("k".to_string(), "null".to_string(), false, false),
        ("small".to_string(), "null".to_string(), true, false),
    ];
    assert_eq!(all, expect);
    // Pages of one or two entries, continued by key and version markers,
    // list the same.
    assert_eq!(versions(&h, 1).await, expect);
    assert_eq!(versions(&h, 2).await, expect);
    // The bucket is not empty while versions remain.
    let e =
        h.gw.delete_bucket(req(DeleteBucketInput {
            bucket: "ver".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(code(e), "BucketNotEmpty");
    // Deleting the marker brings the newest version back.
    let d = delete(&h, "k", Some(&marker)).await;
    assert_eq!(d.delete_marker, Some(true));
    assert_eq!(h.get("ver", "k", None).await.unwrap(), b"two");
    // Deleting the current version by id: the one before becomes current,
    // and the deleted version's data goes.
    delete(&h, "k", Some(&v2)).await;
    assert_eq!(h.get("ver", "k", None).await.unwrap(), b"one");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.stored(), 2, "v2's data is removed");
    // A copy of an old version is a new version.
    let copied =
        h.gw.copy_object(req(CopyObjectInput::builder()
            .bucket("ver".into())
            .key("k".into())
            .copy_source(CopySource::Bucket {
                bucket: "ver".into(),
                key: "k".into(),
                version_id: Some("null".into()),
            })
            .build()
            .unwrap()))
            .await
            .unwrap()
            .output;
    assert_eq!(copied.copy_source_version_id.as_deref(), Some("null"));
    let v3 = copied.version_id.unwrap();
    assert_eq!(h.get("ver", "k", None).await.unwrap(), b"before");
    // Suspended: writes replace the null version (and its data); versions
    // with ids stay.
    set_versioning(&h, "ver", BucketVersioningStatus::SUSPENDED).await;
    let out = put(b"suspended").await.unwrap().output;
    assert_eq!(out.version_id, None);
    assert_eq!(get_version(&h, "k", "null").await.unwrap(), b"suspended");
    assert_eq!(get_version(&h, "k", &v3).await.unwrap(), b"before");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // v1, v3 and the new null version (and no old null data).
    assert_eq!(h.stored(), 3);
    let all = versions(&h, 1000).await;
    let k: Vec<(&str, bool)> = all
        .iter()
        .filter(|v| v.0 == "k")
        .map(|v| (v.1.as_str(), v.2))
        .collect();
    // The null version is the newest: it lists first, as the latest.
    assert_eq!(
        k,
        [("null", true), (v3.as_str(), false), (v1.as_str(), false)]
    );
    // Remove every version: the key, its data and the bucket can go.
    for (key, id, _, _) in versions(&h, 1000).await {
        delete(&h, &key, Some(&id)).await;
    }
    assert!(versions(&h, 1000).await.is_empty());
    assert!(h.keys("ver").await.is_empty());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.stored(), 0);
    h.gw.delete_bucket(req(DeleteBucketInput {
        bucket: "ver".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
}

/// The tags of version `version` of `ver/key` (none: the current one),
/// and the version id the answer names.
async fn version_tags(
    h: &Harness,
    key: &str,
    version: Option<&str>,
) -> Result<(Vec<(String, String)>, Option<String>), s3s::S3Error> {
    let out =
        h.gw.get_object_tagging(req(GetObjectTaggingInput {
            bucket: "ver".into(),
            key: key.into(),
            version_id: version.map(Into::into),
            ..Default::default()
        }))
        .await?
        .output;
    let tags = out
        .tag_set
        .into_iter()
        .map(|t| (t.key.unwrap(), t.value.unwrap()))
        .collect();
    Ok((tags, out.version_id))
}

/// PutObjectTagging of version `version` of `ver/key`; returns the
/// version id the answer names.
async fn set_version_tags(
    h: &Harness,
    key: &str,
    version: &str,
    tags: &[(&str, &str)],
) -> Result<Option<String>, s3s::S3Error> {
    let mut input = PutObjectTaggingInput::builder()
        .bucket("ver".into())
        .key(key.into())
        .tagging(tagging_of(tags))
        .build()
        .unwrap();
    input.version_id = Some(version.into());
    Ok(h.gw.put_object_tagging(req(input)).await?.output.version_id)
}

/// DeleteObjectTagging of version `version` of `ver/key`; returns the
/// version id the answer names.
async fn delete_version_tags(
    h: &Harness,
    key: &str,
    version: &str,
) -> Result<Option<String>, s3s::S3Error> {
    Ok(h.gw
        .delete_object_tagging(req(DeleteObjectTaggingInput {
            bucket: "ver".into(),
            key: key.into(),
            version_id: Some(version.into()),
            ..Default::default()
        }))
        .await?
        .output
        .version_id)
}

/// Tags by version id, as S3 keeps them: every version has its own,
/// current or not (the null version's carry over from before versioning),
/// a change to one leaves the others alone, a delete marker has none
/// (MethodNotAllowed), and lifecycle rules for noncurrent versions filter
/// by a version's tags as they are now, not as it was written.
#[tokio::test]
async fn noncurrent_versions_are_tagged_by_version_id() {
    let h = Harness::new().await;
    h.bucket("ver").await;
    h.put("ver", "k", b"before").await.unwrap();
    h.set_tags("ver", "k", &[("era", "unversioned")])
        .await
        .unwrap();
    set_versioning(&h, "ver", BucketVersioningStatus::ENABLED).await;
    let put = |data: &'static [u8], tagging: Option<&str>| {
        h.gw.put_object(req(PutObjectInput {
            bucket: "ver".into(),
            key: "k".into(),
            body: Some(blob(data)),
            tagging: tagging.map(Into::into),
            ..Default::default()
        }))
    };
    let v1 = put(b"one", Some("v=1"))
        .await
        .unwrap()
        .output
        .version_id
        .unwrap();
    let v2 = put(b"two", Some("v=2"))
        .await
        .unwrap()
        .output
        .version_id
        .unwrap();
    let tags_of = |v: &str| {
        let v = v.to_string();
        let h = &h;
        async move { version_tags(h, "k", Some(&v)).await.unwrap().0 }
    };
    assert_eq!(
        version_tags(&h, "k", Some(&v1)).await.unwrap(),
        (pairs(&[("v", "1")]), Some(v1.clone()))
    );
    assert_eq!(
        version_tags(&h, "k", Some("null")).await.unwrap(),
        (pairs(&[("era", "unversioned")]), Some("null".into())),
        "the null version keeps the tags set before versioning"
    );
    assert_eq!(
        version_tags(&h, "k", None).await.unwrap(),
        (pairs(&[("v", "2")]), Some(v2.clone()))
    );
    // A noncurrent version's tags change; the current version's do not.
    let answered = set_version_tags(&h, "k", &v1, &[("state", "archived"), ("owner", "ops")])
        .await
        .unwrap();
    assert_eq!(answered, Some(v1.clone()));
    assert_eq!(
        tags_of(&v1).await,
        pairs(&[("state", "archived"), ("owner", "ops")])
    );
    assert_eq!(h.tags("ver", "k").await.unwrap(), pairs(&[("v", "2")]));
    assert_eq!(tags_of(&v2).await, pairs(&[("v", "2")]));
    let tag_count = |v: Option<&str>| {
        h.gw.get_object(req(GetObjectInput {
            bucket: "ver".into(),
            key: "k".into(),
            version_id: v.map(Into::into),
            ..Default::default()
        }))
    };
    assert_eq!(
        tag_count(Some(&v1)).await.unwrap().output.tag_count,
        Some(2)
    );
    assert_eq!(tag_count(None).await.unwrap().output.tag_count, Some(1));
    // The current version by id or without one is the same change.
    set_version_tags(&h, "k", &v2, &[("via", "id")])
        .await
        .unwrap();
    assert_eq!(h.tags("ver", "k").await.unwrap(), pairs(&[("via", "id")]));
    h.set_tags("ver", "k", &[("via", "current")]).await.unwrap();
    assert_eq!(tags_of(&v2).await, pairs(&[("via", "current")]));
    assert_eq!(
        set_version_tags(&h, "k", "null", &[("n", "1")])
            .await
            .unwrap(),
        Some("null".into())
    );
    assert_eq!(tags_of("null").await, pairs(&[("n", "1")]));
    // A new version starts with its own tags; the one it replaced keeps its.
    let v3 = put(b"three", None)
        .await
        .unwrap()
        .output
        .version_id
        .unwrap();
    assert!(h.tags("ver", "k").await.unwrap().is_empty());
    assert_eq!(tags_of(&v2).await, pairs(&[("via", "current")]));
    // A delete marker has no tags; a missing version is NoSuchVersion.
    let marker = delete(&h, "k", None).await.version_id.unwrap();
    for v in [marker.as_str(), "0000000000000000deadbeef", "../x"] {
        let want = match v {
            "../x" => "InvalidArgument",
            _ if v == marker => "MethodNotAllowed",
            _ => "NoSuchVersion",
        };
        let got = [
            code(version_tags(&h, "k", Some(v)).await.unwrap_err()),
            code(
                set_version_tags(&h, "k", v, &[("a", "b")])
                    .await
                    .unwrap_err(),
            ),
            code(delete_version_tags(&h, "k", v).await.unwrap_err()),
        ];
        assert_eq!(got, [want; 3], "version {v}");
    }
    assert_eq!(
        code(h.set_tags("ver", "k", &[("a", "b")]).await.unwrap_err()),
        "NoSuchKey"
    );
    // The marker changed no version's tags.
    assert_eq!(tags_of(&v2).await, pairs(&[("via", "current")]));
    assert_eq!(tags_of("null").await, pairs(&[("n", "1")]));
    assert_eq!(
        delete_version_tags(&h, "k", &v1).await.unwrap(),
        Some(v1.clone())
    );
    assert!(tags_of(&v1).await.is_empty());
    assert_eq!(tags_of(&v2).await, pairs(&[("via", "current")]));
    // Removing the marker makes v3 current again, untagged as it was; a
    // copy of v2 by id takes v2's tags.
    delete(&h, "k", Some(&marker)).await;
    assert!(h.tags("ver", "k").await.unwrap().is_empty());
    h.gw.copy_object(req(CopyObjectInput::builder()
        .bucket("ver".into())
        .key("copy".into())
        .copy_source(CopySource::Bucket {
            bucket: "ver".into(),
            key: "k".into(),
            version_id: Some(v2.clone().into()),
        })
        .build()
        .unwrap()))
        .await
        .unwrap();
    assert_eq!(
        h.tags("ver", "copy").await.unwrap(),
        pairs(&[("via", "current")])
    );
    // Deleting a version removes its tag entry.
    delete(&h, "k", Some(&v2)).await;
    let left: Vec<String> =
        h.gw.idx
            .entries_aged(&crate::s3::tags_ns("ver"), Duration::ZERO)
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| String::from_utf8(k).unwrap())
            .collect();
    assert_eq!(left, ["k".to_string(), format!("k\0{v1}")]);
    // Lifecycle: noncurrent versions tagged expire=yes now go, whatever
    // they were written with.
    let v4 = put(b"four", Some("expire=yes"))
        .await
        .unwrap()
        .output
        .version_id
        .unwrap();
    let v5 = put(b"five", None).await.unwrap().output.version_id.unwrap();
    set_version_tags(&h, "k", &v4, &[("expire", "no")])
        .await
        .unwrap();
    set_version_tags(&h, "k", &v1, &[("expire", "yes")])
        .await
        .unwrap();
    let mut input = PutBucketLifecycleConfigurationInput::builder();
    input.set_bucket("ver".into());
    input.set_lifecycle_configuration(Some(BucketLifecycleConfiguration {
        rules: vec![LifecycleRule {
            id: Some("tagged".into()),
            status: ExpirationStatus::from_static(ExpirationStatus::ENABLED),
            filter: Some(LifecycleRuleFilter {
                tag: Some(Tag {
                    key: Some("expire".into()),
                    value: Some("yes".into()),
                }),
                ..Default::default()
            }),
            expiration: None,
            abort_incomplete_multipart_upload: None,
            noncurrent_version_expiration: Some(NoncurrentVersionExpiration {
                noncurrent_days: Some(1),
                newer_noncurrent_versions: None,
            }),
            noncurrent_version_transitions: None,
            prefix: None,
            transitions: None,
        }],
    }));
    h.gw.put_bucket_lifecycle_configuration(req(input.build().unwrap()))
        .await
        .unwrap();
    let later = crate::now_ms() + 3 * 86_400_000;
    crate::maintenance_pass_at(&h.gw, Duration::from_secs(3600), later)
        .await
        .unwrap();
    let ids: Vec<String> = versions(&h, 1000)
        .await
        .into_iter()
        .filter(|v| v.0 == "k")
        .map(|v| v.1)
        .collect();
    assert_eq!(ids, [v5, v4, v3, "null".to_string()], "only v1 expired");
    // Policies name tagging and ACLs by version id as their own actions,
    // as S3 does.
    for (op, action) in [
        ("GetObjectTagging", "s3:GetObjectVersionTagging"),
        ("PutObjectTagging", "s3:PutObjectVersionTagging"),
        ("DeleteObjectTagging", "s3:DeleteObjectVersionTagging"),
        ("GetObjectAcl", "s3:GetObjectVersionAcl"),
        ("PutObjectAcl", "s3:PutObjectVersionAcl"),
    ] {
        assert_eq!(
            crate::access::action_of(op, true),
            (action.to_string(), true)
        );
        assert_eq!(
            crate::access::action_of(op, false),
            (format!("s3:{op}"), true)
        );
    }
}

#[tokio::test]
async fn lifecycle_rules_expire_noncurrent_versions_and_lone_delete_markers() {
    let h = Harness::new().await;
    h.bucket("ver").await;
    set_versioning(&h, "ver", BucketVersioningStatus::ENABLED).await;
    for data in [&b"k1"[..], b"k2", b"k3"] {
        h.put("ver", "k", data).await.unwrap();
    }
    h.put("ver", "m", b"m1").await.unwrap();
    delete(&h, "m", None).await;
    h.put("ver", "e", b"e1").await.unwrap();
    let rule = |id: &str, prefix: &str, newer: Option<i32>, marker: bool| LifecycleRule {
        id: Some(id.into()),
        status: ExpirationStatus::from_static(ExpirationStatus::ENABLED),
        filter: Some(LifecycleRuleFilter {
            prefix: Some(prefix.into()),
            ..Default::default()
        }),
        expiration: marker.then(|| LifecycleExpiration {
            expired_object_delete_marker: Some(true),
            ..Default::default()
        }),
        abort_incomplete_multipart_upload: None,
        noncurrent_version_expiration: Some(NoncurrentVersionExpiration {
            noncurrent_days: Some(1),
            newer_noncurrent_versions: newer,
        }),
        noncurrent_version_transitions: None,
        prefix: None,
        transitions: None,
    };
    let mut input = PutBucketLifecycleConfigurationInput::builder();
    input.set_bucket("ver".into());
    input.set_lifecycle_configuration(Some(BucketLifecycleConfiguration {
        rules: vec![
            rule("keep-one", "k", Some(1), false),
            rule("markers", "m", None, true),
            LifecycleRule {
                expiration: Some(LifecycleExpiration {
                    date: Some(crate::s3::ms_to_ts(1_600_000_000_000)),
                    ..Default::default()
                }),
                noncurrent_version_expiration: None,
                ..rule("expire", "e", None, false)
            },
        ],
    }));
    h.gw.put_bucket_lifecycle_configuration(req(input.build().unwrap()))
        .await
        .unwrap();
    let got =
        h.gw.get_bucket_lifecycle_configuration(req(GetBucketLifecycleConfigurationInput {
            bucket: "ver".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .output
        .rules
        .unwrap();
    let nv = got[0].noncurrent_version_expiration.as_ref().unwrap();
    assert_eq!(
        (nv.noncurrent_days, nv.newer_noncurrent_versions),
        (Some(1), Some(1))
    );
    assert_eq!(
        got[1]
            .expiration
            .as_ref()
            .unwrap()
            .expired_object_delete_marker,
        Some(true)
    );
    let shape = |v: Vec<(String, String, bool, bool)>| -> Vec<(String, bool, bool)> {
        v.into_iter().map(|(k, _, l, m)| (k, l, m)).collect()
    };
    let km = |v: Vec<(String, String, bool, bool)>| -> Vec<(String, String, bool, bool)> {
        v.into_iter().filter(|v| v.0 != "e").collect()
    };
    let before = km(versions(&h, 1000).await);
    // Today nothing is a day noncurrent; but e expires, and in a
    // versioned bucket that leaves a delete marker over its version.
    crate::maintenance_pass_at(&h.gw, Duration::from_secs(3600), crate::now_ms())
        .await
        .unwrap();
    let all = versions(&h, 1000).await;
    assert_eq!(km(all.clone()), before);
    let e: Vec<(bool, bool)> = all
        .iter()
        .filter(|v| v.0 == "e")
        .map(|v| (v.2, v.3))
        .collect();
    assert_eq!(e, [(true, true), (false, false)]);
    assert_eq!(
        code(h.get("ver", "e", None).await.unwrap_err()),
        "NoSuchKey"
    );
    let later = crate::now_ms() + 3 * 86_400_000;
    crate::maintenance_pass_at(&h.gw, Duration::from_secs(3600), later)
        .await
        .unwrap();
    // k keeps its current and newest noncurrent version; m loses its
    // noncurrent version, which leaves the marker alone.
    let after = km(versions(&h, 1000).await);
    assert_eq!(
        shape(after.clone()),
        [
            ("k".to_string(), true, false),
            ("k".to_string(), false, false),
            ("m".to_string(), true, true),
        ]
    );
    assert_eq!(
        &after[..2],
        &before[..2],
        "the two newest versions of k stay"
    );
    assert_eq!(h.get("ver", "k", None).await.unwrap(), b"k3");
    // The next pass removes the lone marker.
    crate::maintenance_pass_at(&h.gw, Duration::from_secs(3600), later)
        .await
        .unwrap();
    assert_eq!(
        shape(km(versions(&h, 1000).await)),
        [
            ("k".to_string(), true, false),
            ("k".to_string(), false, false)
        ]
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    // k's two newest versions and e's, which its rule does not remove.
    assert_eq!(h.stored(), 3, "the expired versions' data is removed");
}

/// The ids (and whether latest) of `key`'s versions, in listing order, in
/// pages of `max` continued by key and version markers.
async fn ordered_versions(h: &Harness, key: &str, max: i32) -> Vec<(String, bool)> {
    let mut out = vec![];
    let (mut km, mut vm) = (None, None);
    loop {
        let page =
            h.gw.list_object_versions(req(ListObjectVersionsInput {
                bucket: "ver".into(),
                prefix: Some(key.into()),
                key_marker: km.clone(),
                version_id_marker: vm.clone(),
                max_keys: Some(max),
                ..Default::default()
            }))
            .await
            .unwrap()
            .output;
        assert!(page.delete_markers.is_none(), "no markers here");
        for v in page.versions.unwrap_or_default() {
            assert_eq!(v.key.as_deref(), Some(key));
            out.push((v.version_id.unwrap(), v.is_latest.unwrap()));
        }
        if !page.is_truncated.unwrap() {
            return out;
        }
        km = page.next_key_marker;
        vm = page.next_version_id_marker;
    }
}

/// S3 lists a key's versions newest first, the `null` version too: written
/// after versioning was suspended, it is the latest and lists first; one
/// written between two versions lists between them. Pages of one (the
/// `null` version as a version-id marker) and windows that end before a
/// key's `null` entry list the same.
#[tokio::test]
async fn the_null_version_lists_in_the_order_it_was_written() {
    let mut h = Harness::new().await;
    // Windows of 10 keys: a key of more versions crosses them.
    let rule = SplitRule {
        max_entries: 16,
        max_bytes: 1 << 20,
    };
    let dir = tempfile::tempdir().unwrap();
    h.gw = gateway_split(&h.api, h.seed, dir.path(), 1, rule);
    h.bucket("ver").await;
    set_versioning(&h, "ver", BucketVersioningStatus::ENABLED).await;
    let put = async |key: &str, data: &[u8]| {
        h.gw.put_object(req(PutObjectInput {
            bucket: "ver".into(),
            key: key.into(),
            body: Some(blob(data)),
            ..Default::default()
        }))
        .await
        .unwrap()
        .output
        .version_id
    };
    // Each write a millisecond apart at least, so times order them.
    let tick = || tokio::time::sleep(Duration::from_millis(3));
    let v1 = put("k", b"v1").await.unwrap();
    tick().await;
    let v2 = put("k", b"v2").await.unwrap();
    tick().await;
    set_versioning(&h, "ver", BucketVersioningStatus::SUSPENDED).await;
    assert_eq!(put("k", b"null").await, None);
    let expect = vec![
        ("null".to_string(), true),
        (v2.clone(), false),
        (v1.clone(), false),
    ];
    for max in [1000, 1, 2] {
        assert_eq!(
            ordered_versions(&h, "k", max).await,
            expect,
            "pages of {max}"
        );
    }
    // Enabled again: a new version lists before the null one, which stays
    // between the versions written around it.
    tick().await;
    set_versioning(&h, "ver", BucketVersioningStatus::ENABLED).await;
    let v3 = put("k", b"v3").await.unwrap();
    let expect = vec![
        (v3.clone(), true),
        ("null".to_string(), false),
        (v2.clone(), false),
        (v1.clone(), false),
    ];
    for max in [1000, 1, 3] {
        assert_eq!(
            ordered_versions(&h, "k", max).await,
            expect,
            "pages of {max}"
        );
    }
    // Deleting the latest by id makes the one listed next current.
    delete(&h, "k", Some(&v3)).await;
    assert_eq!(h.get("ver", "k", None).await.unwrap(), b"null");
    assert_eq!(
        ordered_versions(&h, "k", 1).await,
        [("null".to_string(), true), (v2, false), (v1, false)]
    );

    // More versions than a window holds, then a null one: its entry comes
    // in a later window than the versions it lists before.
    let mut ids = vec![];
    for i in 0..12 {
        ids.push(put("many", format!("{i}").as_bytes()).await.unwrap());
        tick().await;
    }
    set_versioning(&h, "ver", BucketVersioningStatus::SUSPENDED).await;
    put("many", b"last").await;
    let mut expect = vec![("null".to_string(), true)];
    expect.extend(ids.iter().rev().map(|id| (id.clone(), false)));
    for max in [1000, 1, 5, 11] {
        assert_eq!(
            ordered_versions(&h, "many", max).await,
            expect,
            "pages of {max}"
        );
    }
    // The whole bucket: each key's entries in that order, paged.
    let all: Vec<(String, String)> = versions(&h, 1)
        .await
        .into_iter()
        .map(|v| (v.0, v.1))
        .collect();
    let mut want: Vec<(String, String)> = ordered_versions(&h, "k", 1000)
        .await
        .into_iter()
        .map(|v| ("k".to_string(), v.0))
        .collect();
    want.extend(expect.into_iter().map(|v| ("many".to_string(), v.0)));
    assert_eq!(all, want);
}

/// ListObjectVersions over a bucket read in windows of 10 keys, split into
/// shards: every version once, in order, however the pages are cut, and
/// common prefixes skipped in one step.
#[tokio::test]
async fn version_listings_page_through_windows_and_common_prefixes() {
    let mut h = Harness::new().await;
    let rule = SplitRule {
        max_entries: 16,
        max_bytes: 1 << 20,
    };
    let dir = tempfile::tempdir().unwrap();
    h.gw = gateway_split(&h.api, h.seed, dir.path(), 1, rule);
    h.bucket("ver").await;
    set_versioning(&h, "ver", BucketVersioningStatus::ENABLED).await;
    let mut keys = vec![];
    for i in 0..15 {
        keys.push(format!("a/{i:02}"));
        keys.push(format!("b/{i:02}"));
    }
    keys.push("c".into());
    for round in 0..2 {
        for k in &keys {
            h.put_sized("ver", k, format!("{k} {round}").as_bytes())
                .await
                .unwrap();
        }
    }
    let all = versions(&h, 1000).await;
    assert_eq!(all.len(), 2 * keys.len());
    // Each key: its newest version first and latest, then the older one.
    for pair in all.chunks(2) {
        assert_eq!(pair[0].0, pair[1].0);
        assert!(pair[0].2 && !pair[1].2, "{pair:?}");
    }
    for max in [1, 3, 7] {
        assert_eq!(versions(&h, max).await, all, "pages of {max}");
    }
    // With a delimiter: two common prefixes, then c's two versions.
    let mut seen: (Vec<String>, Vec<String>) = (vec![], vec![]);
    let (mut km, mut vm) = (None, None);
    loop {
        let page =
            h.gw.list_object_versions(req(ListObjectVersionsInput {
                bucket: "ver".into(),
                delimiter: Some("/".into()),
                key_marker: km.clone(),
                version_id_marker: vm.clone(),
                max_keys: Some(1),
                ..Default::default()
            }))
            .await
            .unwrap()
            .output;
        for p in page.common_prefixes.unwrap_or_default() {
            seen.0.push(p.prefix.unwrap());
        }
        for v in page.versions.unwrap_or_default() {
            seen.1.push(v.key.unwrap());
        }
        if !page.is_truncated.unwrap() {
            break;
        }
        km = page.next_key_marker;
        vm = page.next_version_id_marker;
    }
    assert_eq!(seen.0, ["a/", "b/"]);
    assert_eq!(seen.1, ["c", "c"]);
}

/// A `CanonicalUser` principal is the account when it names the owner id
/// the gateway reports (GetBucketAcl, ListBuckets); a policy naming a key
/// the gateway does not document is refused and leaves the policy as it was.
#[tokio::test]
async fn bucket_policies_name_the_account_by_the_owner_id_it_reports() {
    use crate::access::{Context, Target, Who, permits};
    let h = Harness::new().await;
    h.bucket("pol").await;
    let owner =
        h.gw.get_bucket_acl(req(GetBucketAclInput {
            bucket: "pol".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .output
        .owner
        .and_then(|o| o.id)
        .unwrap();
    let put = |policy: String| {
        h.gw.put_bucket_policy(req(PutBucketPolicyInput {
            bucket: "pol".into(),
            policy,
            ..Default::default()
        }))
    };
    let deny = |principal: &str, condition: &str| {
        format!(
            r#"{{"Version": "2012-10-17", "Statement": {{"Effect": "Deny",
            "Principal": {principal}, "Action": "s3:DeleteObject",
            "Resource": "arn:aws:s3:::pol/*", "Condition": {condition}}}}}"#
        )
    };
    put(deny(&format!(r#"{{"CanonicalUser": "{owner}"}}"#), "{}"))
        .await
        .unwrap();
    let policy = h.gw.bucket_policy("pol").await.unwrap();
    let delete = |who| {
        permits(
            policy.as_ref(),
            "pol",
            who,
            "s3:DeleteObject",
            Target::Object("k"),
            &Context::new(),
        )
    };
    assert!(!delete(Who::Key("CKANY")), "every key of the account");
    // A misspelt key is refused and stores nothing.
    let typo = deny(r#""*""#, r#"{"StringEquals": {"aws:SoruceIp": "y"}}"#);
    assert_eq!(code(put(typo).await.unwrap_err()), "MalformedPolicy");
    assert_eq!(h.gw.bucket_policy("pol").await.unwrap(), policy);
}

/// What a request carries becomes its condition keys.
#[test]
fn request_context_holds_what_the_request_carries() {
    use crate::access::{Context, Target, Who, parse, permits};
    let mut headers = hyper::HeaderMap::new();
    let signed = time::OffsetDateTime::now_utc() - Duration::from_secs(120);
    let stamp = signed
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap();
    headers.insert("x-amz-date", stamp.parse().unwrap());
    headers.insert("if-none-match", "*".parse().unwrap());
    headers.insert("x-amz-grant-read", "id=someone".parse().unwrap());
    headers.insert("x-amz-object-lock-mode", "GOVERNANCE".parse().unwrap());
    let uri: hyper::Uri = "/b/k?versionId=v7".parse().unwrap();
    let cx = crate::request_context(&headers, &uri, None, Some("CKANN"), "PutObject");
    let anon = crate::request_context(&headers, &uri, None, None, "GetObject");
    // Each condition names one key; a policy of allows for everyone on
    // it tells whether the request has it with that value.
    let has = |cx: &Context, condition: &str| {
        let text = format!(
            r#"{{"Version": "2012-10-17", "Statement": {{"Effect": "Allow", "Principal": "*",
            "Action": "s3:*", "Resource": "arn:aws:s3:::b/*", "Condition": {condition}}}}}"#
        );
        let p = parse(&text, "b", "00").unwrap();
        permits(
            Some(&p),
            "b",
            Who::Anonymous,
            "s3:GetObject",
            Target::Object("k"),
            cx,
        )
    };
    for c in [
        r#"{"StringEquals": {"aws:userid": "CKANN"}}"#,
        r#"{"Bool": {"aws:PrincipalIsAWSService": "false"}}"#,
        r#"{"Bool": {"aws:ViaAWSService": "false"}}"#,
        r#"{"StringEquals": {"s3:VersionId": "v7"}}"#,
        r#"{"NumericGreaterThanEquals": {"s3:signatureAge": 110000}}"#,
        r#"{"NumericLessThan": {"s3:signatureAge": 600000}}"#,
        r#"{"Bool": {"s3:ObjectCreationOperation": "true"}}"#,
        r#"{"StringEquals": {"s3:if-none-match": "*"}}"#,
        r#"{"StringEquals": {"s3:x-amz-grant-read": "id=someone"}}"#,
        r#"{"StringEquals": {"s3:object-lock-mode": "GOVERNANCE"}}"#,
        r#"{"Null": {"s3:TlsVersion": "true", "aws:PrincipalOrgID": "true"}}"#,
    ] {
        assert!(has(&cx, c), "{c}");
    }
    for c in [
        r#"{"StringEquals": {"aws:userid": "anonymous"}}"#,
        r#"{"Null": {"aws:PrincipalIsAWSService": "true", "s3:signatureAge": "true"}}"#,
        r#"{"Null": {"s3:ObjectCreationOperation": "true", "s3:if-none-match": "true"}}"#,
    ] {
        assert!(has(&anon, c), "{c}");
    }
    assert!(!has(&anon, r#"{"StringEquals": {"aws:userid": "CKANN"}}"#));
    // aws:SecureTransport and aws:SourceIp say how the request came.
    let client = |tls| crate::server::ClientAddr {
        addr: "192.0.2.7:5000".parse().unwrap(),
        tls,
    };
    let over_tls = crate::request_context(&headers, &uri, Some(client(true)), None, "GetObject");
    let plain = crate::request_context(&headers, &uri, Some(client(false)), None, "GetObject");
    let secure = r#"{"Bool": {"aws:SecureTransport": "true"}}"#;
    assert!(has(&over_tls, secure));
    assert!(!has(&plain, secure));
    assert!(!has(&anon, secure));
    assert!(has(
        &plain,
        r#"{"IpAddress": {"aws:SourceIp": "192.0.2.0/24"}}"#
    ));
}

/// The tags a write sets in `x-amz-tagging` (URL-encoded, several) are
/// `s3:RequestObjectTag/…` and `s3:RequestObjectTagKeys`, on the writes
/// that set tags from it, and on no other request.
#[test]
fn request_context_holds_the_tags_a_write_sets() {
    use crate::access::{Context, Target, Who, parse, permits};
    let has = |cx: &Context, condition: &str| {
        let text = format!(
            r#"{{"Version": "2012-10-17", "Statement": {{"Effect": "Allow", "Principal": "*",
            "Action": "s3:*", "Resource": "arn:aws:s3:::b/*", "Condition": {condition}}}}}"#
        );
        let p = parse(&text, "b", "00").unwrap();
        permits(
            Some(&p),
            "b",
            Who::Anonymous,
            "s3:PutObject",
            Target::Object("k"),
            cx,
        )
    };
    let uri: hyper::Uri = "/b/k".parse().unwrap();
    let mut headers = hyper::HeaderMap::new();
    headers.insert(
        "x-amz-tagging",
        "team=storage+core&%C3%A9t%C3%A9=%3D&env=prod"
            .parse()
            .unwrap(),
    );
    let cx = |headers: &hyper::HeaderMap, op: &str| {
        crate::request_context(headers, &uri, None, Some("CK"), op)
    };
    for op in ["PutObject", "CreateMultipartUpload"] {
        let cx = cx(&headers, op);
        for c in [
            r#"{"StringEquals": {"s3:RequestObjectTag/team": "storage core"}}"#,
            r#"{"StringEquals": {"s3:RequestObjectTag/Env": "prod"}}"#,
            r#"{"StringEquals": {"s3:RequestObjectTag/été": "="}}"#,
            r#"{"ForAnyValue:StringEquals": {"s3:RequestObjectTagKeys": "env"}}"#,
            r#"{"ForAllValues:StringEquals": {"s3:RequestObjectTagKeys": ["team", "env", "été"]}}"#,
            r#"{"Null": {"s3:RequestObjectTag/other": "true"}}"#,
        ] {
            assert!(has(&cx, c), "{op}: {c}");
        }
        for c in [
            r#"{"StringNotEquals": {"s3:RequestObjectTag/team": "storage core"}}"#,
            r#"{"ForAllValues:StringEquals": {"s3:RequestObjectTagKeys": ["team", "env"]}}"#,
        ] {
            assert!(!has(&cx, c), "{op}: {c}");
        }
    }
    let missing =
        r#"{"Null": {"s3:RequestObjectTag/team": "true", "s3:RequestObjectTagKeys": "true"}}"#;
    // A copy sets the header's tags only when it replaces the source's.
    assert!(has(&cx(&headers, "CopyObject"), missing));
    assert!(has(&cx(&headers, "GetObject"), missing));
    assert!(has(&cx(&hyper::HeaderMap::new(), "PutObject"), missing));
    let mut replace = headers.clone();
    replace.insert("x-amz-tagging-directive", "REPLACE".parse().unwrap());
    assert!(!has(&cx(&replace, "CopyObject"), missing));
    // A malformed header (the write fails on it) sets nothing.
    let mut bad = hyper::HeaderMap::new();
    bad.insert("x-amz-tagging", "team=%zz".parse().unwrap());
    assert!(has(&cx(&bad, "PutObject"), missing));
}

/// A policy on object tags: a deny of reading objects tagged secret
/// refuses them, by the tags they were written with or set later, and not
/// the rest; a deny of untagged writes refuses a PUT without
/// `team=storage` in its `x-amz-tagging`.
#[tokio::test]
async fn bucket_policies_decide_by_object_tags() {
    let h = Harness::new().await;
    h.bucket("tagged").await;
    let put = |key: &'static str, tagging: Option<&'static str>| {
        h.gw.put_object(req(PutObjectInput {
            bucket: "tagged".into(),
            key: key.into(),
            body: Some(blob(b"data")),
            tagging: tagging.map(Into::into),
            ..Default::default()
        }))
    };
    put("secret", Some("classification=secret")).await.unwrap();
    put("public", Some("classification=public&team=storage"))
        .await
        .unwrap();
    put("untagged", None).await.unwrap();
    h.gw.put_bucket_policy(req(PutBucketPolicyInput {
        bucket: "tagged".into(),
        policy: r#"{"Version": "2012-10-17", "Statement": [
            {"Effect": "Deny", "Principal": "*", "Action": ["s3:GetObject", "s3:GetObjectVersion"],
             "Resource": "arn:aws:s3:::tagged/*",
             "Condition": {"StringEquals": {"s3:ExistingObjectTag/classification": "secret"}}},
            {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
             "Resource": "arn:aws:s3:::tagged/*",
             "Condition": {"StringNotEquals": {"s3:RequestObjectTag/team": "storage"}}}
        ]}"#
        .into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    let decide = async |op: &str, key: &str, headers: &[(&'static str, &str)]| {
        let mut map = hyper::HeaderMap::new();
        for (k, v) in headers {
            map.insert(*k, v.parse().unwrap());
        }
        // `key?versionId=…` names a version.
        let uri: hyper::Uri = format!("/tagged/{key}").parse().unwrap();
        let r = crate::AccessRequest {
            op,
            key_id: Some("CK"),
            bucket: Some("tagged"),
            key: Some(key.split('?').next().unwrap_or(key)),
            headers: &map,
            uri: &uri,
            client: None,
            request_tags: None,
        };
        match crate::authorize(&h.gw, &r).await {
            Ok(()) => Ok(()),
            Err(e) => Err(code(e.into())),
        }
    };
    let denied = Err("AccessDenied".to_string());
    assert_eq!(decide("GetObject", "secret", &[]).await, denied);
    assert_eq!(decide("HeadObject", "secret", &[]).await, denied);
    assert_eq!(
        decide("GetObject", "secret?versionId=null", &[]).await,
        denied
    );
    assert_eq!(decide("GetObjectAcl", "secret", &[]).await, Ok(()));
    // An unknown version has no tags (the read fails with NoSuchVersion).
    assert_eq!(
        decide("GetObject", "secret?versionId=v9", &[]).await,
        Ok(())
    );
    assert_eq!(decide("GetObject", "public", &[]).await, Ok(()));
    assert_eq!(decide("GetObject", "untagged", &[]).await, Ok(()));
    // No object, no tags: the read fails on its own with NoSuchKey.
    assert_eq!(decide("GetObject", "absent", &[]).await, Ok(()));
    // Tags set after the write count, and so do tags taken away.
    h.set_tags("tagged", "public", &[("classification", "secret")])
        .await
        .unwrap();
    assert_eq!(decide("GetObject", "public", &[]).await, denied);
    h.set_tags("tagged", "secret", &[]).await.unwrap();
    assert_eq!(decide("GetObject", "secret", &[]).await, Ok(()));
    // A copy reads its source as a GetObject would.
    let copy = [
        ("x-amz-copy-source", "/tagged/public"),
        ("x-amz-tagging", "team=storage"),
    ];
    let replace = ("x-amz-tagging-directive", "REPLACE");
    let mut copy_replace = copy.to_vec();
    copy_replace.push(replace);
    assert_eq!(decide("CopyObject", "c", &copy_replace).await, denied);
    let from_secret = [
        ("x-amz-copy-source", "/tagged/secret"),
        ("x-amz-tagging", "team=storage"),
        replace,
    ];
    assert_eq!(decide("CopyObject", "c", &from_secret).await, Ok(()));
    // Writes must carry team=storage.
    assert_eq!(decide("PutObject", "new", &[]).await, denied);
    assert_eq!(
        decide("PutObject", "new", &[("x-amz-tagging", "team=other")]).await,
        denied
    );
    assert_eq!(
        decide(
            "PutObject",
            "new",
            &[("x-amz-tagging", "a=1&team=st%6Frage")]
        )
        .await,
        Ok(())
    );
    assert_eq!(
        decide(
            "CreateMultipartUpload",
            "new",
            &[("x-amz-tagging", "team=storage")]
        )
        .await,
        Ok(())
    );
    // Without a policy naming existing tags, the check reads no tags.
    h.gw.put_bucket_policy(req(PutBucketPolicyInput {
        bucket: "tagged".into(),
        policy: r#"{"Version": "2012-10-17", "Statement": {"Effect": "Deny",
            "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::tagged/x",
            "Condition": {"StringEquals": {"s3:RequestObjectTag/a": "b"}}}}"#
            .into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    let policy = h.gw.bucket_policy("tagged").await.unwrap().unwrap();
    let mut cx = crate::access::Context::new();
    crate::add_existing_tags(&h.gw, &policy, &mut cx, "tagged", "public", None)
        .await
        .unwrap();
    assert_eq!(cx, crate::access::Context::new());
}

/// PutObjectTagging's tags are in its XML body, which s3s parses after
/// its general access check: the request is decided once the body is
/// parsed, with those tags as `s3:RequestObjectTag/…`, so a deny on them
/// refuses it (by version id too) and an allow on them lets anyone tag.
#[tokio::test]
async fn put_object_tagging_is_decided_by_the_tags_in_its_body() {
    use s3s::access::S3Access;
    let (_fake, api) = fake_node().await;
    let dir = tempfile::tempdir().unwrap();
    let config = crate::Config::new(
        "127.0.0.1:0".parse().unwrap(),
        api,
        dir.path().to_path_buf(),
    );
    let started = crate::start(config).await.unwrap();
    let (addr, gw) = (started.addr, started.gateway.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(started.run(async {
        let _ = stop_rx.await;
    }));
    gw.create_bucket(req(CreateBucketInput {
        bucket: "tagged".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    gw.put_object(req(PutObjectInput {
        bucket: "tagged".into(),
        key: "k".into(),
        body: Some(blob(b"data")),
        ..Default::default()
    }))
    .await
    .unwrap();
    gw.put_bucket_policy(req(PutBucketPolicyInput {
        bucket: "tagged".into(),
        policy: r#"{"Version": "2012-10-17", "Statement": [
            {"Effect": "Deny", "Principal": "*",
             "Action": ["s3:PutObjectTagging", "s3:PutObjectVersionTagging"],
             "Resource": "arn:aws:s3:::tagged/*",
             "Condition": {"StringEquals": {"s3:RequestObjectTag/classification": "secret"}}},
            {"Effect": "Allow", "Principal": "*",
             "Action": ["s3:PutObjectTagging", "s3:PutObjectVersionTagging"],
             "Resource": "arn:aws:s3:::tagged/*",
             "Condition": {"StringEquals": {"s3:RequestObjectTag/classification": "public"}}}
        ]}"#
        .into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    let tags = async || {
        gw.get_object_tagging(req(GetObjectTaggingInput {
            bucket: "tagged".into(),
            key: "k".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .output
        .tag_set
    };
    // The account's keys: the check s3s makes with the parsed input.
    let access = crate::PolicyAccess(gw.clone());
    let signed = |value: &str, version: Option<&str>| {
        let mut r = req(PutObjectTaggingInput::builder()
            .bucket("tagged".into())
            .key("k".into())
            .version_id(version.map(Into::into))
            .tagging(tagging_of(&[("classification", value)]))
            .build()
            .unwrap());
        r.credentials = Some(s3s::auth::Credentials {
            access_key: "CK".into(),
            secret_key: "secret".into(),
        });
        let query = version.map(|v| format!("&versionId={v}"));
        r.uri = format!("/tagged/k?tagging{}", query.unwrap_or_default())
            .parse()
            .unwrap();
        r
    };
    for version in [None, Some("null")] {
        let e = access
            .put_object_tagging(&mut signed("secret", version))
            .await
            .unwrap_err();
        assert_eq!(code(e), "AccessDenied", "{version:?}");
        for value in ["public", "other"] {
            access
                .put_object_tagging(&mut signed(value, version))
                .await
                .unwrap();
        }
    }
    // Unsigned requests through the server: what the allow names, and
    // nothing else.
    let anonymous = async |query: &str, value: &str| {
        let body = format!(
            "<Tagging><TagSet><Tag><Key>classification</Key><Value>{value}</Value></Tag></TagSet></Tagging>"
        );
        raw_request(
            addr,
            &format!(
                "PUT /tagged/k?{query} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        )
        .await
    };
    let answer = anonymous("tagging", "public").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(
        tags().await,
        tagging_of(&[("classification", "public")]).tag_set
    );
    for (query, value) in [
        ("tagging", "secret"),
        ("tagging", "other"),
        ("tagging&versionId=null", "secret"),
    ] {
        let answer = anonymous(query, value).await;
        assert!(
            answer.starts_with("HTTP/1.1 403"),
            "{query} {value}: {answer}"
        );
        assert!(answer.contains("AccessDenied"), "{answer}");
    }
    let answer = anonymous("tagging&versionId=null", "public").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(
        tags().await,
        tagging_of(&[("classification", "public")]).tag_set
    );
    let _ = stop_tx.send(());
}

/// A request that came over TLS, as customer keys must.
fn over_tls<T>(input: T) -> S3Request<T> {
    let mut r = req(input);
    r.extensions.insert(crate::server::ClientAddr {
        addr: "127.0.0.1:5000".parse().unwrap(),
        tls: true,
    });
    r
}

/// The three SSE-C headers of a key of 32 `byte`s.
fn sse_c(byte: u8) -> (Option<String>, Option<String>, Option<String>) {
    use md5::Digest;
    let key = [byte; 32];
    let md5: [u8; 16] = md5::Md5::digest(key).into();
    (
        Some("AES256".into()),
        Some(data_encoding::BASE64.encode(&key)),
        Some(data_encoding::BASE64.encode(&md5)),
    )
}

async fn get_sse(
    h: &Harness,
    key: &str,
    byte: Option<u8>,
    range: Option<&str>,
) -> Result<Vec<u8>, s3s::S3Error> {
    let (a, k, m) = byte.map(sse_c).unwrap_or_default();
    let out =
        h.gw.get_object(over_tls(GetObjectInput {
            bucket: "sec".into(),
            key: key.into(),
            range: range.map(|r| Range::parse(r).unwrap()),
            sse_customer_algorithm: a,
            sse_customer_key: k,
            sse_customer_key_md5: m,
            ..Default::default()
        }))
        .await?;
    assert_eq!(out.output.sse_customer_key_md5, sse_c(byte.unwrap()).2);
    assert!(out.output.server_side_encryption.is_none());
    let mut body = out.output.body.unwrap();
    let mut data = Vec::new();
    while let Some(c) = body.next().await {
        data.extend_from_slice(&c.unwrap());
    }
    Ok(data)
}

#[tokio::test]
async fn customer_keys_seal_objects_that_only_that_key_opens() {
    // Small parts, so a multipart object of two can be made.
    let h = Harness::any_part_size().await;
    h.bucket("sec").await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let put = |key: &str, data: &[u8], length: Option<i64>, byte: u8| {
        let (a, k, m) = sse_c(byte);
        PutObjectInput {
            bucket: "sec".into(),
            key: key.into(),
            body: Some(blob(data)),
            content_length: length,
            sse_customer_algorithm: a,
            sse_customer_key: k,
            sse_customer_key_md5: m,
            ..Default::default()
        }
    };
    // Keys travel only over TLS.
    let e =
        h.gw.put_object(req(put("k", &data, None, 1)))
            .await
            .unwrap_err();
    assert_eq!(code(e), "InvalidRequest");
    assert_eq!(h.stored(), 0);
    let out =
        h.gw.put_object(over_tls(put("k", &data, None, 1)))
            .await
            .unwrap()
            .output;
    assert_eq!(out.sse_customer_key_md5, sse_c(1).2);
    // What the node stores is sealed: longer, and not the plaintext.
    {
        let fake = h.fake.lock().unwrap();
        let stored = fake.objects.values().next().unwrap();
        assert_eq!(
            stored.len() as u64,
            crate::sse::sealed_len(data.len() as u64)
        );
        assert!(!stored.windows(64).any(|w| w == &data[1000..1064]));
    }
    assert_eq!(get_sse(&h, "k", Some(1), None).await.unwrap(), data);
    assert_eq!(
        get_sse(&h, "k", Some(1), Some("bytes=65530-131080"))
            .await
            .unwrap(),
        &data[65530..=131080]
    );
    assert_eq!(
        get_sse(&h, "k", Some(1), Some("bytes=-10")).await.unwrap(),
        &data[data.len() - 10..]
    );
    // Without the key, or with another, nothing is read (HEAD neither).
    let e = get_sse(&h, "k", None, None).await.unwrap_err();
    assert_eq!(code(e), "InvalidRequest");
    let e = get_sse(&h, "k", Some(2), None).await.unwrap_err();
    assert_eq!(code(e), "AccessDenied");
    let e =
        h.gw.head_object(over_tls(HeadObjectInput {
            bucket: "sec".into(),
            key: "k".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(code(e), "InvalidRequest");
    let (a, k, m) = sse_c(1);
    let head =
        h.gw.head_object(over_tls(HeadObjectInput {
            bucket: "sec".into(),
            key: "k".into(),
            sse_customer_algorithm: a,
            sse_customer_key: k,
            sse_customer_key_md5: m,
            ..Default::default()
        }))
        .await
        .unwrap()
        .output;
    assert_eq!(head.content_length, Some(data.len() as i64));
    // A small object lives sealed in its index entry.
    h.gw.put_object(over_tls(put("small", b"tiny secret", Some(11), 1)))
        .await
        .unwrap();
    assert_eq!(
        get_sse(&h, "small", Some(1), None).await.unwrap(),
        b"tiny secret"
    );
    assert_eq!(
        code(get_sse(&h, "small", Some(3), None).await.unwrap_err()),
        "AccessDenied"
    );
    // A wrong Content-MD5 is checked on the plaintext and stores nothing.
    let before = h.stored();
    let mut bad = put("bad", &data, None, 1);
    bad.content_md5 = Some("1B2M2Y8AsgTpgAmY7PhCfg==".into());
    let e = h.gw.put_object(over_tls(bad)).await.unwrap_err();
    assert_eq!(code(e), "BadDigest");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.stored(), before);

    // Multipart: every part carries the upload's key.
    let (a, k, m) = sse_c(5);
    let id =
        h.gw.create_multipart_upload(over_tls(CreateMultipartUploadInput {
            bucket: "sec".into(),
            key: "mpu".into(),
            sse_customer_algorithm: a,
            sse_customer_key: k,
            sse_customer_key_md5: m,
            ..Default::default()
        }))
        .await
        .unwrap()
        .output
        .upload_id
        .unwrap();
    let part = |n: i32, body: &[u8], byte: Option<u8>| {
        let (a, k, m) = byte.map(sse_c).unwrap_or_default();
        UploadPartInput {
            bucket: "sec".into(),
            key: "mpu".into(),
            upload_id: id.clone(),
            part_number: n,
            body: Some(blob(body)),
            sse_customer_algorithm: a,
            sse_customer_key: k,
            sse_customer_key_md5: m,
            ..Default::default()
        }
    };
    let e =
        h.gw.upload_part(over_tls(part(1, &data, None)))
            .await
            .unwrap_err();
    assert_eq!(code(e), "InvalidRequest");
    let e =
        h.gw.upload_part(over_tls(part(1, &data, Some(6))))
            .await
            .unwrap_err();
    assert_eq!(code(e), "AccessDenied");
    let mut etags = vec![];
    for (n, body) in [(1, &data[..200_000]), (2, &data[200_000..])] {
        let out =
            h.gw.upload_part(over_tls(part(n, body, Some(5))))
                .await
                .unwrap();
        etags.push(out.output.e_tag.unwrap().value().to_string());
    }
    h.complete("sec", "mpu", id.clone(), &[(1, &etags[0]), (2, &etags[1])])
        .await;
    assert_eq!(get_sse(&h, "mpu", Some(5), None).await.unwrap(), data);
    assert_eq!(
        get_sse(&h, "mpu", Some(5), Some("bytes=199990-200010"))
            .await
            .unwrap(),
        &data[199_990..=200_010]
    );
    assert_eq!(
        code(get_sse(&h, "mpu", None, None).await.unwrap_err()),
        "InvalidRequest"
    );

    // Copies open the source with its key and seal the copy as asked.
    let (sa, sk, sm) = sse_c(1);
    let copy = |dest: &str, byte: Option<u8>| {
        let (a, k, m) = byte.map(sse_c).unwrap_or_default();
        let mut b = CopyObjectInput::builder();
        b.set_bucket("sec".into());
        b.set_key(dest.into());
        b.set_copy_source(CopySource::Bucket {
            bucket: "sec".into(),
            key: "k".into(),
            version_id: None,
        });
        b.set_copy_source_sse_customer_algorithm(sa.clone());
        b.set_copy_source_sse_customer_key(sk.clone());
        b.set_copy_source_sse_customer_key_md5(sm.clone());
        b.set_sse_customer_algorithm(a);
        b.set_sse_customer_key(k);
        b.set_sse_customer_key_md5(m);
        b.build().unwrap()
    };
    h.gw.copy_object(over_tls(copy("plain-copy", None)))
        .await
        .unwrap();
    assert_eq!(h.get("sec", "plain-copy", None).await.unwrap(), data);
    h.gw.copy_object(over_tls(copy("rekeyed", Some(9))))
        .await
        .unwrap();
    assert_eq!(get_sse(&h, "rekeyed", Some(9), None).await.unwrap(), data);
    let mut no_source_key = copy("x", None);
    no_source_key.copy_source_sse_customer_algorithm = None;
    no_source_key.copy_source_sse_customer_key = None;
    no_source_key.copy_source_sse_customer_key_md5 = None;
    let e = h.gw.copy_object(over_tls(no_source_key)).await.unwrap_err();
    assert_eq!(code(e), "InvalidRequest");
}

/// A request signed by one of the account's keys with Signature Version
/// 4, as the use of KMS keys requires.
fn signed<T>(input: T) -> S3Request<T> {
    let mut r = req(input);
    r.credentials = Some(s3s::auth::Credentials {
        access_key: "CKTEST".into(),
        secret_key: s3s::auth::SecretKey::from("secret".to_string()),
    });
    r.headers.insert(
        "authorization",
        "AWS4-HMAC-SHA256 Credential=CKTEST/20260101/us-east-1/s3/aws4_request, \
         SignedHeaders=host, Signature=00"
            .parse()
            .unwrap(),
    );
    r
}

fn code_status(e: s3s::S3Error) -> (String, Option<u16>) {
    (
        e.code().as_str().to_string(),
        e.status_code().map(|s| s.as_u16()),
    )
}

fn aws_kms() -> Option<ServerSideEncryption> {
    Some(ServerSideEncryption::from_static(
        ServerSideEncryption::AWS_KMS,
    ))
}

/// A PutObject of `data` to `bucket/key` asking for `aws:kms` under
/// `key_id` (none: the default key).
fn kms_put(bucket: &str, key: &str, data: &[u8], key_id: Option<&str>) -> PutObjectInput {
    PutObjectInput {
        bucket: bucket.into(),
        key: key.into(),
        body: Some(blob(data)),
        server_side_encryption: aws_kms(),
        ssekms_key_id: key_id.map(Into::into),
        ..Default::default()
    }
}

/// A signed GET of `bucket/key` through `gw`: the body and the key ARN
/// it answers.
async fn kms_get(
    gw: &Gateway,
    bucket: &str,
    key: &str,
    range: Option<&str>,
) -> Result<(Vec<u8>, Option<String>), s3s::S3Error> {
    let out = gw
        .get_object(signed(GetObjectInput {
            bucket: bucket.into(),
            key: key.into(),
            range: range.map(|r| Range::parse(r).unwrap()),
            ..Default::default()
        }))
        .await?;
    let mut body = out.output.body.unwrap();
    let mut data = Vec::new();
    while let Some(c) = body.next().await {
        data.extend_from_slice(&c.unwrap());
    }
    Ok((data, out.output.ssekms_key_id))
}

/// Whether no Cairn object the fake node holds contains `window`.
fn nowhere_stored(h: &Harness, window: &[u8]) -> bool {
    let fake = h.fake.lock().unwrap();
    !fake
        .objects
        .values()
        .any(|o| o.windows(window.len()).any(|w| w == window))
}

#[tokio::test]
async fn kms_keys_seal_objects_that_every_gateway_of_the_account_opens() {
    use crate::kms::KeyState;
    // Small parts, so a multipart object of two can be made.
    let h = Harness::any_part_size().await;
    h.bucket("vault").await;
    let key = h.gw.kms.create("test key").await.unwrap();
    let arn = h.gw.kms.arn(&key.id);
    assert!(
        arn.starts_with("arn:aws:kms:us-east-1:") && arn.ends_with(&format!(":key/{}", key.id)),
        "{arn}"
    );
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    // Only the account's signed requests (SigV4) may use a KMS key.
    let e =
        h.gw.put_object(req(kms_put("vault", "k", &data, Some(&key.id))))
            .await
            .unwrap_err();
    assert_eq!(code(e), "AccessDenied");
    let mut v2 = signed(kms_put("vault", "k", &data, Some(&key.id)));
    v2.headers
        .insert("authorization", "AWS CKTEST:sig".parse().unwrap());
    assert_eq!(
        code(h.gw.put_object(v2).await.unwrap_err()),
        "InvalidArgument"
    );
    assert_eq!(h.stored(), 0);
    let out =
        h.gw.put_object(signed(kms_put("vault", "k", &data, Some(&key.id))))
            .await
            .unwrap()
            .output;
    assert_eq!(out.server_side_encryption, aws_kms());
    assert_eq!(out.ssekms_key_id.as_deref(), Some(arn.as_str()));
    // What the node stores is sealed: longer, and not the plaintext.
    assert_eq!(h.stored(), 1);
    {
        let fake = h.fake.lock().unwrap();
        let stored = fake.objects.values().next().unwrap();
        assert_eq!(
            stored.len() as u64,
            crate::sse::sealed_len(data.len() as u64)
        );
    }
    assert!(nowhere_stored(&h, &data[1000..1064]));
    let get = |k: &'static str, range: Option<&'static str>| kms_get(&h.gw, "vault", k, range);
    assert_eq!(
        get("k", None).await.unwrap(),
        (data.clone(), Some(arn.clone()))
    );
    assert_eq!(
        get("k", Some("bytes=65530-131080")).await.unwrap().0,
        &data[65530..=131080]
    );
    assert_eq!(
        get("k", Some("bytes=-10")).await.unwrap().0,
        &data[data.len() - 10..]
    );
    // An anonymous read (a public bucket policy) does not open it.
    let e =
        h.gw.get_object(req(GetObjectInput {
            bucket: "vault".into(),
            key: "k".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(code(e), "AccessDenied");
    // HEAD needs no key headers and names the key.
    let head = || {
        h.gw.head_object(signed(HeadObjectInput {
            bucket: "vault".into(),
            key: "k".into(),
            ..Default::default()
        }))
    };
    let out = head().await.unwrap().output;
    assert_eq!(out.server_side_encryption, aws_kms());
    assert_eq!(out.ssekms_key_id.as_deref(), Some(arn.as_str()));
    assert_eq!(out.content_length, Some(data.len() as i64));

    // By ARN, with an encryption context and a bucket key; small enough to
    // live sealed in its entry.
    let context = r#"{"team":"storage"}"#;
    let context_b64 = data_encoding::BASE64.encode(context.as_bytes());
    let mut small = kms_put("vault", "small", b"tiny secret", Some(&arn));
    small.content_length = Some(11);
    small.ssekms_encryption_context = Some(context_b64.clone());
    small.bucket_key_enabled = Some(true);
    let out = h.gw.put_object(signed(small)).await.unwrap().output;
    assert_eq!(out.ssekms_encryption_context, Some(context_b64));
    assert_eq!(out.bucket_key_enabled, Some(true));
    assert_eq!(h.stored(), 1, "inline");
    let entry = h.gw.object("vault", "small").await.unwrap().unwrap();
    let sse = entry.sse_kms.clone().unwrap();
    assert_eq!(
        (sse.key_id.as_str(), sse.context.as_deref()),
        (key.id.as_str(), Some(context))
    );
    assert!(
        !entry
            .inline
            .as_ref()
            .unwrap()
            .windows(11)
            .any(|w| w == b"tiny secret")
    );
    assert_eq!(get("small", None).await.unwrap().0, b"tiny secret");
    let bad_context = {
        let mut i = kms_put("vault", "c", b"x", Some(&key.id));
        i.ssekms_encryption_context = Some("not base64 json".into());
        i
    };
    assert_eq!(
        code(h.gw.put_object(signed(bad_context)).await.unwrap_err()),
        "InvalidArgument"
    );

    // An unknown key is refused, and stores nothing.
    for unknown in [crate::kms::new_key_id(), "alias/mine".into()] {
        let e =
            h.gw.put_object(signed(kms_put("vault", "u", &data, Some(&unknown))))
                .await
                .unwrap_err();
        assert_eq!(
            code_status(e),
            ("KMS.NotFoundException".into(), Some(400)),
            "{unknown}"
        );
    }
    assert_eq!(h.stored(), 1);

    // A disabled key refuses writes and reads (not HEAD), until enabled.
    h.gw.kms
        .set_state(&key.id, KeyState::Disabled)
        .await
        .unwrap();
    let e = get("k", None).await.unwrap_err();
    assert_eq!(code_status(e), ("KMS.DisabledException".into(), Some(400)));
    assert_eq!(
        code(get("small", None).await.unwrap_err()),
        "KMS.DisabledException"
    );
    let e =
        h.gw.put_object(signed(kms_put("vault", "d", &data, Some(&key.id))))
            .await
            .unwrap_err();
    assert_eq!(code(e), "KMS.DisabledException");
    assert_eq!(h.stored(), 1);
    assert!(head().await.is_ok());
    h.gw.kms
        .set_state(&key.id, KeyState::Enabled)
        .await
        .unwrap();
    assert_eq!(get("k", None).await.unwrap().0, data);

    // aws:kms without a key: the account's default key, made on first use.
    let out =
        h.gw.put_object(signed(kms_put("vault", "default", b"by default", None)))
            .await
            .unwrap()
            .output;
    let default_id = h.gw.kms.default_key_id().await.unwrap();
    assert_ne!(default_id, key.id);
    assert_eq!(out.ssekms_key_id, Some(h.gw.kms.arn(&default_id)));
    assert_eq!(get("default", None).await.unwrap().0, b"by default");
    let mut by_alias = kms_put("vault", "alias", b"by alias", Some("alias/aws/s3"));
    by_alias.content_length = Some(8);
    let out = h.gw.put_object(signed(by_alias)).await.unwrap().output;
    assert_eq!(out.ssekms_key_id, Some(h.gw.kms.arn(&default_id)));
    assert_eq!(h.gw.kms.list().await.unwrap().len(), 2);

    // A second gateway of the account (cold cache) reads every one, and
    // its default key is the same.
    let dir2 = tempfile::tempdir().unwrap();
    let other = gateway_with(&h.api, h.seed, dir2.path(), 1);
    assert_eq!(
        kms_get(&other, "vault", "k", Some("bytes=100000-200000"))
            .await
            .unwrap()
            .0,
        &data[100_000..=200_000]
    );
    assert_eq!(
        kms_get(&other, "vault", "small", None).await.unwrap().0,
        b"tiny secret"
    );
    let out = other
        .put_object(signed(kms_put("vault", "from-other", b"other", None)))
        .await
        .unwrap()
        .output;
    assert_eq!(out.ssekms_key_id, Some(h.gw.kms.arn(&default_id)));
    // (The first gateway's copy of the bucket's shard may be 2 s old.)
    tokio::time::sleep(crate::indexes::FRESH + Duration::from_millis(100)).await;
    assert_eq!(get("from-other", None).await.unwrap().0, b"other");
    // A key disabled through one gateway is refused by the other once its
    // cached copy is due (2 s).
    other
        .kms
        .set_state(&key.id, KeyState::Disabled)
        .await
        .unwrap();
    tokio::time::sleep(crate::indexes::FRESH + Duration::from_millis(100)).await;
    assert_eq!(
        code(get("k", None).await.unwrap_err()),
        "KMS.DisabledException"
    );
    h.gw.kms
        .set_state(&key.id, KeyState::Enabled)
        .await
        .unwrap();

    // Multipart: the key is chosen at CreateMultipartUpload, every part is
    // sealed under it.
    let id =
        h.gw.create_multipart_upload(signed(CreateMultipartUploadInput {
            bucket: "vault".into(),
            key: "mpu".into(),
            server_side_encryption: aws_kms(),
            ssekms_key_id: Some(key.id.clone()),
            ..Default::default()
        }))
        .await
        .unwrap()
        .output
        .upload_id
        .unwrap();
    let mut etags = vec![];
    for (n, body) in [(1, &data[..200_000]), (2, &data[200_000..])] {
        let out =
            h.gw.upload_part(signed(UploadPartInput {
                bucket: "vault".into(),
                key: "mpu".into(),
                upload_id: id.clone(),
                part_number: n,
                body: Some(blob(body)),
                ..Default::default()
            }))
            .await
            .unwrap()
            .output;
        assert_eq!(out.ssekms_key_id.as_deref(), Some(arn.as_str()));
        etags.push(out.e_tag.unwrap().value().to_string());
    }
    h.complete("vault", "mpu", id, &[(1, &etags[0]), (2, &etags[1])])
        .await;
    assert!(nowhere_stored(&h, &data[250_000..250_064]));
    assert_eq!(
        get("mpu", None).await.unwrap(),
        (data.clone(), Some(arn.clone()))
    );
    assert_eq!(
        get("mpu", Some("bytes=199990-200010")).await.unwrap().0,
        &data[199_990..=200_010]
    );

    // Copies open the source by themselves and seal the copy as asked.
    let copy = |dest: &str, sse: Option<ServerSideEncryption>, key_id: Option<String>| {
        let mut b = CopyObjectInput::builder();
        b.set_bucket("vault".into());
        b.set_key(dest.into());
        b.set_copy_source(CopySource::Bucket {
            bucket: "vault".into(),
            key: "k".into(),
            version_id: None,
        });
        b.set_server_side_encryption(sse);
        b.set_ssekms_key_id(key_id);
        b.build().unwrap()
    };
    let out =
        h.gw.copy_object(signed(copy("plain-copy", None, None)))
            .await
            .unwrap()
            .output;
    assert_eq!(out.ssekms_key_id, None);
    assert_eq!(h.get("vault", "plain-copy", None).await.unwrap(), data);
    let out =
        h.gw.copy_object(signed(copy("rekeyed", aws_kms(), None)))
            .await
            .unwrap()
            .output;
    assert_eq!(out.ssekms_key_id, Some(h.gw.kms.arn(&default_id)));
    assert_eq!(get("rekeyed", None).await.unwrap().0, data);
    // An anonymous copy cannot open the source.
    let e =
        h.gw.copy_object(req(copy("x", None, None)))
            .await
            .unwrap_err();
    assert_eq!(code(e), "AccessDenied");
    // UploadPartCopy from a KMS object into a KMS upload.
    let id =
        h.gw.create_multipart_upload(signed(CreateMultipartUploadInput {
            bucket: "vault".into(),
            key: "mpc".into(),
            server_side_encryption: aws_kms(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .output
        .upload_id
        .unwrap();
    let mut b = UploadPartCopyInput::builder();
    b.set_bucket("vault".into());
    b.set_key("mpc".into());
    b.set_upload_id(id.clone());
    b.set_part_number(1);
    b.set_copy_source(CopySource::Bucket {
        bucket: "vault".into(),
        key: "k".into(),
        version_id: None,
    });
    b.set_copy_source_range(Some("bytes=1000-1999".into()));
    let out =
        h.gw.upload_part_copy(signed(b.build().unwrap()))
            .await
            .unwrap()
            .output;
    let e = out
        .copy_part_result
        .unwrap()
        .e_tag
        .unwrap()
        .value()
        .to_string();
    h.complete("vault", "mpc", id, &[(1, &e)]).await;
    assert_eq!(get("mpc", None).await.unwrap().0, &data[1000..2000]);
}

#[tokio::test]
async fn a_bucket_default_of_aws_kms_seals_new_objects_that_name_no_encryption() {
    let h = Harness::new().await;
    h.bucket("dflt").await;
    let key = h.gw.kms.create("bucket key").await.unwrap();
    let arn = h.gw.kms.arn(&key.id);
    let put_config = |algorithm: &'static str, key_id: Option<String>| {
        let mut b = PutBucketEncryptionInput::builder();
        b.set_bucket("dflt".into());
        b.set_server_side_encryption_configuration(ServerSideEncryptionConfiguration {
            rules: vec![ServerSideEncryptionRule {
                apply_server_side_encryption_by_default: Some(ServerSideEncryptionByDefault {
                    kms_master_key_id: key_id,
                    sse_algorithm: ServerSideEncryption::from_static(algorithm),
                }),
                bucket_key_enabled: Some(true),
            }],
        });
        h.gw.put_bucket_encryption(signed(b.build().unwrap()))
    };
    let config = || async {
        let c =
            h.gw.get_bucket_encryption(signed(GetBucketEncryptionInput {
                bucket: "dflt".into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .output
            .server_side_encryption_configuration
            .unwrap();
        let d = c.rules[0]
            .apply_server_side_encryption_by_default
            .clone()
            .unwrap();
        (d.sse_algorithm.as_str().to_string(), d.kms_master_key_id)
    };
    assert_eq!(config().await, ("AES256".into(), None));
    assert_eq!(
        code(
            put_config(ServerSideEncryption::AWS_KMS_DSSE, None)
                .await
                .unwrap_err()
        ),
        "NotImplemented"
    );
    assert_eq!(
        code(
            put_config(ServerSideEncryption::AWS_KMS, Some("alias/nope".into()))
                .await
                .unwrap_err()
        ),
        "KMS.NotFoundException"
    );
    put_config(ServerSideEncryption::AWS_KMS, Some(arn.clone()))
        .await
        .unwrap();
    assert_eq!(config().await, ("aws:kms".into(), Some(arn.clone())));
    let data = vec![42u8; 100_000];
    let plain_put = |k: &str| PutObjectInput {
        bucket: "dflt".into(),
        key: k.into(),
        body: Some(blob(&data)),
        ..Default::default()
    };
    let out =
        h.gw.put_object(signed(plain_put("a")))
            .await
            .unwrap()
            .output;
    assert_eq!(out.server_side_encryption, aws_kms());
    assert_eq!(out.ssekms_key_id.as_deref(), Some(arn.as_str()));
    assert_eq!(out.bucket_key_enabled, Some(true));
    assert!(nowhere_stored(&h, &data[..64]));
    assert_eq!(
        kms_get(&h.gw, "dflt", "a", None).await.unwrap(),
        (data.clone(), Some(arn.clone()))
    );
    // A request that names AES256 is what it asks for.
    let mut aes = plain_put("b");
    aes.server_side_encryption = Some(ServerSideEncryption::from_static(
        ServerSideEncryption::AES256,
    ));
    let out = h.gw.put_object(signed(aes)).await.unwrap().output;
    assert_eq!(out.ssekms_key_id, None);
    assert!(!nowhere_stored(&h, &data[..64]));
    // A disabled bucket key refuses the writes it would seal.
    h.gw.kms
        .set_state(&key.id, crate::kms::KeyState::Disabled)
        .await
        .unwrap();
    assert_eq!(
        code(h.gw.put_object(signed(plain_put("c"))).await.unwrap_err()),
        "KMS.DisabledException"
    );
    // Without the setting the bucket is back to AES256.
    h.gw.delete_bucket_encryption(signed(DeleteBucketEncryptionInput {
        bucket: "dflt".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    assert_eq!(config().await, ("AES256".into(), None));
    let out =
        h.gw.put_object(signed(plain_put("c")))
            .await
            .unwrap()
            .output;
    assert_eq!(out.ssekms_key_id, None);
    // aws:kms without a key id: the account's default key.
    put_config(ServerSideEncryption::AWS_KMS, None)
        .await
        .unwrap();
    let out =
        h.gw.put_object(signed(plain_put("d")))
            .await
            .unwrap()
            .output;
    let default_id = h.gw.kms.default_key_id().await.unwrap();
    assert_eq!(out.ssekms_key_id, Some(h.gw.kms.arn(&default_id)));
}

/// The KMS condition keys see the request's values, the key id as its
/// ARN however the request named it.
#[tokio::test]
async fn bucket_policies_decide_by_the_kms_key_a_write_names() {
    let h = Harness::new().await;
    h.bucket("pkms").await;
    let key = h.gw.kms.create("allowed").await.unwrap();
    let arn = h.gw.kms.arn(&key.id);
    h.gw.put_bucket_policy(req(PutBucketPolicyInput {
        bucket: "pkms".into(),
        policy: format!(
            r#"{{"Version": "2012-10-17", "Statement": [
            {{"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
             "Resource": "arn:aws:s3:::pkms/*",
             "Condition": {{"StringNotEquals": {{"s3:x-amz-server-side-encryption": "aws:kms"}}}}}},
            {{"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
             "Resource": "arn:aws:s3:::pkms/*",
             "Condition": {{"StringNotEquals": {{"s3:x-amz-server-side-encryption-aws-kms-key-id": "{arn}"}},
                            "Null": {{"s3:x-amz-server-side-encryption-aws-kms-key-id": "false"}}}}}}
        ]}}"#
        ),
        ..Default::default()
    }))
    .await
    .unwrap();
    let decide = async |headers: &[(&'static str, &str)]| {
        let mut map = hyper::HeaderMap::new();
        for (k, v) in headers {
            map.insert(*k, v.parse().unwrap());
        }
        let uri: hyper::Uri = "/pkms/k".parse().unwrap();
        let r = crate::AccessRequest {
            op: "PutObject",
            key_id: Some("CK"),
            bucket: Some("pkms"),
            key: Some("k"),
            headers: &map,
            uri: &uri,
            client: None,
            request_tags: None,
        };
        crate::authorize(&h.gw, &r).await.is_ok()
    };
    const SSE: &str = "x-amz-server-side-encryption";
    const KEY: &str = "x-amz-server-side-encryption-aws-kms-key-id";
    assert!(!decide(&[]).await);
    assert!(!decide(&[(SSE, "AES256")]).await);
    assert!(decide(&[(SSE, "aws:kms")]).await);
    assert!(decide(&[(SSE, "aws:kms"), (KEY, &arn)]).await);
    assert!(
        decide(&[(SSE, "aws:kms"), (KEY, &key.id)]).await,
        "a bare id is its ARN"
    );
    let other = crate::kms::new_key_id();
    assert!(!decide(&[(SSE, "aws:kms"), (KEY, &other)]).await);
}

/// Two gateways that make the default key at once settle on one alias,
/// and what each sealed under the key it used opens through both.
#[tokio::test]
async fn two_gateways_making_the_default_key_at_once_converge() {
    let h = Harness::new().await;
    h.bucket("race").await;
    let dir2 = tempfile::tempdir().unwrap();
    let other = gateway(&h.api, h.seed, dir2.path());
    // Both found no alias and make one: the first reads its own back, the
    // second's write comes later and wins the alias.
    let ka = h.gw.kms.make_default().await.unwrap();
    let kb = other.kms.make_default().await.unwrap();
    assert_ne!(ka, kb);
    // The first still seals under its own key while its copy is fresh.
    let a =
        h.gw.put_object(signed(kms_put("race", "a", b"sealed by a", None)))
            .await
            .unwrap()
            .output;
    assert_eq!(a.ssekms_key_id, Some(h.gw.kms.arn(&ka)));
    let b = other
        .put_object(signed(kms_put("race", "b", b"sealed by b", None)))
        .await
        .unwrap()
        .output;
    assert_eq!(b.ssekms_key_id, Some(h.gw.kms.arn(&kb)));
    // Past the 2 s both may serve their copies for, both name one key.
    tokio::time::sleep(crate::indexes::FRESH + Duration::from_millis(100)).await;
    assert_eq!(h.gw.kms.default_key_id().await.unwrap(), kb);
    assert_eq!(other.kms.default_key_id().await.unwrap(), kb);
    // The key the alias no longer names stays a key: every object opens.
    assert_eq!(h.gw.kms.list().await.unwrap().len(), 2);
    for key in ["a", "b"] {
        for gw in [&h.gw, &other] {
            let (body, _) = kms_get(gw, "race", key, None).await.unwrap();
            assert_eq!(body, format!("sealed by {key}").as_bytes());
        }
    }
    let c =
        h.gw.put_object(signed(kms_put("race", "c", b"c", None)))
            .await
            .unwrap()
            .output;
    assert_eq!(c.ssekms_key_id, Some(h.gw.kms.arn(&kb)));
}

/// The bucket `big` of the churn test reads as `live` (of `k/0000` … `k/0299`).
async fn check_churned(h: &Harness, live: &[String]) {
    assert_eq!(list(&h.gw).await, live);
    for i in 0..300 {
        let key = format!("k/{i:04}");
        let got = h.get("big", &key, None).await;
        if live.contains(&key) {
            assert_eq!(got.unwrap(), format!("v{i}").as_bytes(), "{key}");
        } else {
            assert_eq!(code(got.unwrap_err()), "NoSuchKey", "{key}");
        }
    }
}

/// A bucket with churn: 300 objects over a split tree, 250 deleted. The
/// background collection pass drops every tombstone (once its reads hear
/// from every replica), the shards shrink, listings and GETs are exactly
/// what they were, and no pre-pass copy of a shard (a replica's that
/// missed the pass, this gateway's cache file) brings a deleted object back.
#[tokio::test]
async fn collecting_a_buckets_tombstones_shrinks_it_and_brings_nothing_back() {
    use crate::indexes::Collected;
    let mut h = Harness::new().await;
    let rule = SplitRule {
        max_entries: 16,
        max_bytes: 1 << 20,
    };
    let dir = tempfile::tempdir().unwrap();
    h.gw = gateway_split(&h.api, h.seed, dir.path(), 1, rule);
    h.bucket("big").await;
    // A bucket that held objects and is gone: its namespaces are
    // collected too (its name is a tombstone in the bucket list).
    h.bucket("gone").await;
    for i in 0..20 {
        h.put_sized("gone", &format!("o{i}"), b"x").await.unwrap();
    }
    for i in 0..20 {
        h.gw.delete_object(req(DeleteObjectInput {
            bucket: "gone".into(),
            key: format!("o{i}"),
            ..Default::default()
        }))
        .await
        .unwrap();
    }
    h.gw.delete_bucket(req(DeleteBucketInput {
        bucket: "gone".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    let key = |i: usize| format!("k/{i:04}");
    for i in 0..300 {
        h.put_sized("big", &key(i), format!("v{i}").as_bytes())
            .await
            .unwrap();
    }
    for i in (0..300).filter(|i| i % 6 != 0) {
        h.gw.delete_object(req(DeleteObjectInput {
            bucket: "big".into(),
            key: key(i),
            ..Default::default()
        }))
        .await
        .unwrap();
    }
    let live: Vec<String> = (0..300).filter(|i| i % 6 == 0).map(key).collect();
    assert_eq!(live.len(), 50);
    check_churned(&h, &live).await;
    h.gw.idx.flush().await.unwrap();
    let before: HashMap<String, Index> = h.fake.lock().unwrap().indexes.clone();
    let tombstones = |f: &Fake| f.indexes.values().map(Index::tombstones).sum::<usize>();
    let bytes = |f: &Fake| f.indexes.values().map(Index::encoded_len).sum::<usize>();
    let (tombstones_before, bytes_before) = {
        let f = h.fake.lock().unwrap();
        (tombstones(&f), bytes(&f))
    };
    assert!(tombstones_before >= 271, "{tombstones_before}");
    assert!(before.len() > 17, "the bucket split: {}", before.len());
    // The clocks of a burst of writes run ahead of the wall clock: collect
    // as if a little later, with no grace.
    let later = crate::now_ms() + 10_000;
    // A node whose read missed a replica: nothing is collected.
    h.fake.lock().unwrap().replicas = Some("2/3");
    let none = crate::collect_pass_at(&h.gw, Duration::ZERO, later)
        .await
        .unwrap();
    assert_eq!((none.shards, none.ops), (0, 0));
    assert!(none.skipped > 0);
    assert_eq!(tombstones(&h.fake.lock().unwrap()), tombstones_before);
    h.fake.lock().unwrap().replicas = Some("3/3");
    let done = crate::collect_pass_at(&h.gw, Duration::ZERO, later)
        .await
        .unwrap();
    assert!(done.ops >= 271 && done.shards > 1, "{done:?}");
    assert_eq!(done.skipped, 0);
    {
        let f = h.fake.lock().unwrap();
        assert_eq!(tombstones(&f), 0);
        assert!(
            bytes(&f) < bytes_before / 2,
            "{} of {bytes_before}",
            bytes(&f)
        );
        for (id, old) in &before {
            let now = &f.indexes[id];
            if old.tombstones() > 0 {
                assert!(now.encoded_len() < old.encoded_len(), "{id}");
            }
        }
    }
    check_churned(&h, &live).await;
    // A second pass finds nothing left.
    let again = crate::collect_pass_at(&h.gw, Duration::ZERO, later + 1)
        .await
        .unwrap();
    assert_eq!(again, Collected::default());
    // Every pre-pass copy, merged back into the node's store (as a replica
    // that missed the pass would), brings nothing back.
    for (id, old) in &before {
        h.gw.node.post_index(id, old.encode()).await.unwrap();
    }
    {
        let f = h.fake.lock().unwrap();
        assert_eq!(tombstones(&f), 0);
        for (id, old) in &before {
            let mut now = f.indexes[id].clone();
            assert_eq!(now.merge(old), Ok(Merged::Stale), "{id}");
        }
    }
    check_churned(&h, &live).await;
    // The cache file held the pre-pass copies; merged with the collected
    // ones, it keeps the collection, and a pre-pass copy stored again
    // changes nothing there either.
    h.gw.idx.flush().await.unwrap();
    for old in before.values() {
        h.gw.idx.store_cached(old).await.unwrap();
        let cached = h.gw.idx.cache_file_copy(*old.name()).await.unwrap();
        let f = h.fake.lock().unwrap();
        assert_eq!(&cached, &f.indexes[&old.id().to_hex()]);
    }
    // A second gateway with a cold cache reads the same.
    let dir2 = tempfile::tempdir().unwrap();
    let second = Harness {
        fake: h.fake.clone(),
        gw: gateway_split(&h.api, h.seed, dir2.path(), 1, rule),
        api: h.api.clone(),
        seed: h.seed,
        _dir: dir2,
    };
    check_churned(&second, &live).await;
    // Deleted keys can be written again; the rest stay.
    h.put_sized("big", &key(1), b"again").await.unwrap();
    assert_eq!(h.get("big", &key(1), None).await.unwrap(), b"again");
    assert_eq!(
        code(h.get("big", &key(2), None).await.unwrap_err()),
        "NoSuchKey"
    );
}
