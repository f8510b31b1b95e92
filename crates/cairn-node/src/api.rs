//! The local HTTP/JSON control API that the `cairn` CLI talks to.
//!
//! It listens on loopback only: whoever can reach it can read every file this
//! node has put. Routes (all under `/v1`):
//!
//! | route | body | answer |
//! |---|---|---|
//! | `GET /v1/status` | | [`StatusReport`] |
//! | `GET /v1/files` | | `[FileRecord]` |
//! | `POST /v1/put?k=&n=&segment_size=&name=&lease_secs=&catalog=` | the raw file, streamed | [`PutOutcome`] |
//! | `GET /v1/local` | | [`LocalInfo`]: the local socket a put or get of a regular file can hand the open file to ([`crate::local`]); 404 if none |
//! | `POST /v1/get` | `{"cap": "cairn:…", "start"?: n, "end"?: n}` | a framed stream of bytes `[start, end)`, see below |
//! | `POST /v1/stat` | `{"cap": "cairn:…"}` | [`StatReport`] |
//! | `POST /v1/renew` | `{"cap": "cairn:…", "lease_secs"?: n}` | `{"expires_at": n}` |
//! | `POST /v1/rm` | `{"cap": "cairn:…"}` | `{"deleted": true}` |
//! | `GET /v1/steward`, `GET /v1/standing` | | the steward's view; this node's standing |
//! | `GET /v1/index/{id}` | | the merged encoded account index (`application/octet-stream`) with its digest as `ETag` and `x-cairn-index-replicas: answered/asked`; 304 without a body if `If-None-Match` names that digest; 404 if no replica has it |
//! | `POST /v1/index/{id}` | an encoded account index (at most 8 MiB) | [`Written`]: `{"acks": n, "peers": m}` |
//!
//! | `POST /v1/jobs` | a validated job (JSON of [`Job`], every source a capability) | `{"id": "<hex>"}` |
//! | `GET /v1/jobs` | | `[JobView]`, newest first |
//! | `GET /v1/compute` | | this node's compute offer and load (an `Advert`), 404 if it offers none |
//! | `GET /v1/compute/providers` | | `[ProviderRecord]`: providers' validation records as this node's scheduler keeps them |
//! | `GET /v1/jobs/{id}` | | [`JobView`] |
//! | `GET /v1/jobs/{id}/results` | | `[UnitResult]`: each unit's accepted output capabilities |
//! | `POST /v1/jobs/{id}/cancel` | | `{"cancelled": true}` |
//!
//! The job routes are the scheduler's ([`crate::jobs`]): this node
//! schedules the jobs submitted to it.
//!
//! The index routes are what the S3 gateway stores its buckets and object
//! lists with: it holds the account key, builds and signs ops itself
//! ([`cairn_core::index`]), and the node only checks, merges and
//! replicates ([`crate::replicas`]). A POST may carry the whole index or
//! just new ops (any subset of an index is one). `{id}` is the index id in hex. A POST
//! whose body is not a valid index for that id is a 400; one that fewer
//! than the quorum of replicas took is a 503 that says how many did.
//!
//! Put, renew and rm act as the object's owner: this node's key, or the key
//! in the `x-cairn-owner` header (64 hex characters; the S3 gateway's
//! account-derived object key), so an object put through one node can be
//! renewed or deleted through another that is given the same key.
//!
//! Errors are `{"error": "<sentence>"}` with a 4xx or 5xx status.
//!
//! A get answers with the frames of [`crate::frames`], so that a failure
//! mid-stream reaches the CLI as a sentence, not a cut connection.
//!
//! [`PutOutcome`]: crate::client::PutOutcome
//! [`LocalInfo`]: crate::local::LocalInfo
//! [`StatReport`]: crate::client::StatReport
//! [`Written`]: crate::replicas::Written
//! [`Job`]: cairn_core::compute::job::Job
//! [`JobView`]: crate::jobs::JobView

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use cairn_core::ReadCap;
use cairn_core::compute::JobId;
use cairn_core::compute::job::{Job, MAX_JOB_BYTES};
use cairn_core::index::{Index, IndexId, MAX_INDEX_BYTES};
use cairn_core::keys::SecretKey;
use cairn_store::PieceStore;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::io::StreamReader;

use crate::catalog::Catalog;
use crate::client::{Client, ClientError, PutOptions};
use crate::frames::{DATA, END, ERROR, HEADER, frame};
use crate::jobs::{JobView, JobsError, UnitResult};
use crate::net::NetHandle;
use crate::replicas::{IndexReplicas, ReplicaError};

/// Largest data frame in a get stream.
const FRAME: usize = 1 << 20;
/// Puts and gets served at once; each holds a few segments in memory, so
/// more wait their turn instead of growing the node's memory without bound.
pub const MAX_TRANSFERS: usize = 4;

/// How much of a failed put's remaining upload is read, and for how long,
/// so the CLI receives the error instead of a reset connection.
const DRAIN_BYTES: u64 = 1 << 30;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);
/// A put whose client sends nothing for this long is abandoned, so a
/// stalled client cannot hold one of the node's transfer slots forever.
const PUT_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct ApiState {
    /// The uplink.
    pub client: Client,
    /// The swarm.
    pub net: NetHandle,
    /// The local store.
    pub store: Arc<PieceStore>,
    /// The local file list.
    pub catalog: Arc<Catalog>,
    /// Permits for concurrent puts and gets ([`MAX_TRANSFERS`]).
    pub transfers: Arc<tokio::sync::Semaphore>,
    /// What the steward sees: holders' scores, repairs, evidence.
    pub steward: crate::steward::SharedView,
    /// Account indexes on their replicas.
    pub indexes: IndexReplicas,
    /// The job scheduler.
    pub jobs: crate::jobs::Scheduler,
    /// This node's compute provider, if it offers compute.
    pub provider: Option<crate::provider::Provider>,
    /// The local socket, if it listens on one.
    pub local: Option<Arc<crate::local::LocalSocket>>,
}

/// `GET /v1/status`.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatusReport {
    /// This node.
    pub peer_id: String,
    /// Listen addresses.
    pub listen: Vec<String>,
    /// Peers with an open connection.
    pub connected_peers: usize,
    /// Peers in the DHT routing table.
    pub known_peers: usize,
    /// Pieces held.
    pub pieces: u64,
    /// Bytes held.
    pub used_bytes: u64,
    /// Bytes offered.
    pub capacity_bytes: u64,
}

/// A JSON error with a status code.
pub struct ApiError(StatusCode, String);

impl ApiError {
    /// The sentence the caller sees.
    pub fn message(&self) -> &str {
        &self.1
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> Self {
        let status = match &e {
            ClientError::Params(_) => StatusCode::BAD_REQUEST,
            ClientError::Manifest(_) | ClientError::ManifestNotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            ClientError::Input(_) => StatusCode::BAD_REQUEST,
            ClientError::NotOwner => StatusCode::FORBIDDEN,
            ClientError::NoRecord => StatusCode::CONFLICT,
            ClientError::RecordNotFound(_) => StatusCode::NOT_FOUND,
            ClientError::NoRoom { .. } => StatusCode::INSUFFICIENT_STORAGE,
            ClientError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_GATEWAY,
        };
        ApiError(status, e.to_string())
    }
}

impl From<ReplicaError> for ApiError {
    fn from(e: ReplicaError) -> Self {
        let status = match &e {
            ReplicaError::Index(_) => StatusCode::BAD_REQUEST,
            ReplicaError::Quorum { .. } | ReplicaError::Closed => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

#[derive(Deserialize)]
struct CapBody {
    cap: String,
}

fn parse_cap(s: &str) -> Result<ReadCap, ApiError> {
    s.parse()
        .map_err(|e: cairn_core::CapError| ApiError(StatusCode::BAD_REQUEST, e.to_string()))
}

/// A put's parameters: the query of `POST /v1/put`, and the request of a
/// put on the local socket ([`crate::local`]).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct PutQuery {
    /// Pieces needed per segment (default: chosen for the network).
    pub k: Option<u16>,
    /// Pieces stored per segment.
    pub n: Option<u16>,
    /// Plaintext bytes per segment (default 64 MiB).
    pub segment_size: Option<u64>,
    /// A name for the local file list.
    pub name: Option<String>,
    /// Lease in seconds (default 90 days).
    pub lease_secs: Option<u64>,
    /// Whether the file goes on this node's list (default true).
    pub catalog: Option<bool>,
}

impl PutQuery {
    /// The client's options, with `owner` (this node's key if `None`).
    pub(crate) fn options(self, owner: Option<Arc<SecretKey>>) -> PutOptions {
        let defaults = PutOptions::default();
        PutOptions {
            k: self.k,
            n: self.n,
            segment_size: self.segment_size.unwrap_or(defaults.segment_size),
            name: self.name,
            lease_secs: self.lease_secs.unwrap_or(defaults.lease_secs),
            owner,
            catalog: self.catalog.unwrap_or(true),
        }
    }
}

/// Header naming the owner key of an object (64 hex characters, an Ed25519
/// secret seed) for put, renew and rm; this node's key when absent.
pub const OWNER_HEADER: &str = "x-cairn-owner";

fn owner_of(headers: &axum::http::HeaderMap) -> Result<Option<Arc<SecretKey>>, ApiError> {
    let Some(v) = headers.get(OWNER_HEADER) else {
        return Ok(None);
    };
    let bad = || {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{OWNER_HEADER} must be 64 hex characters (a 32-byte secret key)"),
        )
    };
    let text = v.to_str().map_err(|_| bad())?;
    let seed = cairn_core::unhex32(text).ok_or_else(bad)?;
    Ok(Some(Arc::new(SecretKey::from_bytes(seed))))
}

/// The API's routes.
pub fn router(state: ApiState) -> axum::Router {
    axum::Router::new()
        .route("/v1/status", get(status))
        .route("/v1/steward", get(steward))
        .route("/v1/standing", get(standing))
        .route("/v1/files", get(files))
        .route("/v1/put", post(put))
        .route("/v1/local", get(local_info))
        .route("/v1/get", post(get_file))
        .route("/v1/stat", post(stat))
        .route("/v1/renew", post(renew))
        .route("/v1/rm", post(remove))
        .route(
            "/v1/index/{id}",
            get(get_index)
                .post(post_index)
                .layer(DefaultBodyLimit::max(MAX_INDEX_BYTES)),
        )
        .route(
            "/v1/jobs",
            get(list_jobs)
                .post(submit_job)
                .layer(DefaultBodyLimit::max(2 * MAX_JOB_BYTES)),
        )
        .route("/v1/compute", get(compute))
        .route("/v1/compute/providers", get(compute_providers))
        .route("/v1/jobs/{id}", get(job_status))
        .route("/v1/jobs/{id}/results", get(job_results))
        .route("/v1/jobs/{id}/cancel", post(cancel_job))
        .with_state(state)
}

fn parse_job_id(text: &str) -> Result<JobId, ApiError> {
    cairn_core::unhex32(text).map(JobId).ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{text:?} is not a job id (64 hex characters)"),
        )
    })
}

fn no_job(id: &JobId) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!("no job {id} on this node (a job is known to the node it was submitted to)"),
    )
}

async fn submit_job(
    State(s): State<ApiState>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    // Deserializing checks the version and validates the whole job again.
    let job: Job = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("not a valid job: {e}")))?;
    let id = s.jobs.submit(job).await.map_err(|e| {
        let status = match e {
            JobsError::Invalid(_) | JobsError::Input(_) => StatusCode::BAD_REQUEST,
            JobsError::Full => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    })?;
    Ok(Json(serde_json::json!({ "id": id.to_string() })))
}

async fn compute(
    State(s): State<ApiState>,
) -> Result<Json<cairn_core::compute::task::Advert>, ApiError> {
    match &s.provider {
        Some(p) => Ok(Json(p.advert())),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            "this node offers no compute (start it with --cpus)".into(),
        )),
    }
}

async fn compute_providers(State(s): State<ApiState>) -> Json<Vec<crate::jobs::ProviderRecord>> {
    Json(s.jobs.providers())
}

async fn list_jobs(State(s): State<ApiState>) -> Json<Vec<JobView>> {
    Json(s.jobs.list())
}

async fn job_status(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let id = parse_job_id(&id)?;
    s.jobs.status(&id).map(Json).ok_or_else(|| no_job(&id))
}

async fn job_results(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<UnitResult>>, ApiError> {
    let id = parse_job_id(&id)?;
    s.jobs.results(&id).map(Json).ok_or_else(|| no_job(&id))
}

async fn cancel_job(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse_job_id(&id)?;
    if !s.jobs.cancel(&id).await {
        return Err(no_job(&id));
    }
    Ok(Json(serde_json::json!({ "cancelled": true })))
}

async fn status(State(s): State<ApiState>) -> Result<Json<StatusReport>, ApiError> {
    let info = s.net.info().await.ok_or(ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        "the node is stopping".into(),
    ))?;
    let usage = s.store.usage();
    Ok(Json(StatusReport {
        peer_id: info.peer_id.to_string(),
        listen: info.listen_addrs.iter().map(|a| a.to_string()).collect(),
        connected_peers: info.connected.len(),
        known_peers: info.routing.len(),
        pieces: usage.pieces,
        used_bytes: usage.used_bytes,
        capacity_bytes: usage.capacity,
    }))
}

async fn steward(State(s): State<ApiState>) -> Json<crate::steward::StewardView> {
    let view = s.steward.lock().map(|v| v.clone()).unwrap_or_default();
    Json(view)
}

/// How one steward sees this node.
#[derive(serde::Serialize)]
struct Standing {
    steward: String,
    #[serde(flatten)]
    view: crate::steward::HolderView,
}

/// Asks the peers this node knows how they, as stewards, see it.
async fn standing(State(s): State<ApiState>) -> Result<Json<Vec<Standing>>, ApiError> {
    let info = s.net.info().await.ok_or(ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        "the node is stopping".into(),
    ))?;
    let me = info.peer_id.to_bytes();
    let mut peers: Vec<_> = info.connected;
    peers.extend(info.routing);
    peers.sort();
    peers.dedup();
    peers.truncate(64);
    let asks = peers.into_iter().map(|peer| {
        let net = s.net.clone();
        let me = me.clone();
        async move {
            let request = cairn_net::Request {
                header: cairn_net::RequestHeader::Standing { peer: me },
                body: bytes::Bytes::new(),
            };
            let r = net
                .request(peer, request, std::time::Duration::from_secs(5))
                .await
                .ok()?;
            let view = serde_json::from_slice(&r.body).ok()?;
            Some(Standing {
                steward: peer.to_string(),
                view,
            })
        }
    });
    let mut out: Vec<Standing> = futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect();
    out.sort_by(|a, b| a.steward.cmp(&b.steward));
    Ok(Json(out))
}

async fn files(
    State(s): State<ApiState>,
) -> Result<Json<Vec<crate::catalog::FileRecord>>, ApiError> {
    let catalog = s.catalog.clone();
    tokio::task::spawn_blocking(move || catalog.list())
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map(Json)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

pub(crate) async fn transfer_permit(
    s: &ApiState,
) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    s.transfers.clone().acquire_owned().await.map_err(|_| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the node is stopping".into(),
        )
    })
}

async fn put(
    State(s): State<ApiState>,
    Query(q): Query<PutQuery>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let owner = owner_of(&headers)?;
    let _permit = transfer_permit(&s).await?;
    // Boxed: the reader needs an `Unpin` stream.
    let stream = Box::pin(idle_timeout(
        body.into_data_stream()
            .map(|r| r.map_err(std::io::Error::other)),
        PUT_IDLE,
    ));
    let mut reader = StreamReader::new(stream);
    match s.client.put(&mut reader, q.options(owner)).await {
        Ok(outcome) => Ok(Json(outcome)),
        Err(e) => {
            // Answering while the CLI is still sending makes the kernel
            // reset the connection, and the CLI would lose this error for a
            // bare "connection reset". Read on (boundedly) so it arrives.
            let mut rest = tokio::io::AsyncReadExt::take(&mut reader, DRAIN_BYTES);
            let mut sink = tokio::io::sink();
            let _ = tokio::time::timeout(DRAIN_TIME, tokio::io::copy(&mut rest, &mut sink)).await;
            Err(e.into())
        }
    }
}

async fn local_info(State(s): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    let socket = s.local.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            "this node has no local socket; use HTTP".into(),
        )
    })?;
    Ok(Json(socket.info()))
}

async fn stat(
    State(s): State<ApiState>,
    Json(b): Json<CapBody>,
) -> Result<impl IntoResponse, ApiError> {
    let cap = parse_cap(&b.cap)?;
    Ok(Json(s.client.stat(&cap).await?))
}

#[derive(Deserialize)]
struct RenewBody {
    cap: String,
    /// Seconds from now; the default lease if absent.
    lease_secs: Option<u64>,
}

async fn renew(
    State(s): State<ApiState>,
    headers: axum::http::HeaderMap,
    Json(b): Json<RenewBody>,
) -> Result<impl IntoResponse, ApiError> {
    let owner = owner_of(&headers)?;
    let cap = parse_cap(&b.cap)?;
    let lease = b.lease_secs.unwrap_or(crate::client::DEFAULT_LEASE_SECS);
    let expires_at = s.client.renew(&cap, lease, owner.as_deref()).await?;
    Ok(Json(serde_json::json!({ "expires_at": expires_at })))
}

async fn remove(
    State(s): State<ApiState>,
    headers: axum::http::HeaderMap,
    Json(b): Json<CapBody>,
) -> Result<impl IntoResponse, ApiError> {
    let owner = owner_of(&headers)?;
    let cap = parse_cap(&b.cap)?;
    s.client.remove(&cap, owner.as_deref()).await?;
    Ok(Json(serde_json::json!({ "deleted": true })))
}

#[derive(Deserialize)]
struct GetBody {
    cap: String,
    /// First byte wanted (default 0).
    start: Option<u64>,
    /// One past the last byte wanted (default: the end of the file).
    end: Option<u64>,
}

async fn get_file(State(s): State<ApiState>, Json(b): Json<GetBody>) -> Result<Response, ApiError> {
    let cap = parse_cap(&b.cap)?;
    let range = match (b.start, b.end) {
        (None, None) => None,
        (start, end) => {
            let (start, end) = (start.unwrap_or(0), end.unwrap_or(u64::MAX));
            if start > end {
                return Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("range start {start} is past its end {end}"),
                ));
            }
            Some((start, end))
        }
    };
    let permit = transfer_permit(&s).await?;
    let (header, rx) = s.client.get_range(cap, range).await?;
    let head = serde_json::to_vec(&header)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let stream = futures::stream::unfold(Some((Some(head), rx)), |state| async move {
        let (head, mut rx) = state?;
        if let Some(h) = head {
            return Some((frame(HEADER, Bytes::from(h)).to_vec(), Some((None, rx))));
        }
        match rx.recv().await {
            Some(Ok(data)) => {
                let mut out = Vec::new();
                let mut at = 0;
                while at < data.len() {
                    let end = (at + FRAME).min(data.len());
                    out.extend(frame(DATA, data.slice(at..end)));
                    at = end;
                }
                Some((out, Some((None, rx))))
            }
            Some(Err(e)) => Some((frame(ERROR, Bytes::from(e.to_string())).to_vec(), None)),
            None => Some((frame(END, Bytes::new()).to_vec(), None)),
        }
    })
    .flat_map(move |frames| {
        // The transfer permit lives as long as the response stream.
        let _held = &permit;
        futures::stream::iter(frames.into_iter().map(Ok::<_, std::io::Error>))
    });
    Ok(Body::from_stream(stream).into_response())
}

fn parse_index_id(s: &str) -> Result<IndexId, ApiError> {
    IndexId::from_hex(s).ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{s:?} is not an account index id (64 hex characters)"),
        )
    })
}

/// The header of a `GET /v1/index/{id}` answer that says how many of the
/// index's replicas answered the read, of how many asked (`3/5`).
pub const INDEX_REPLICAS_HEADER: &str = "x-cairn-index-replicas";

async fn get_index(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_index_id(&id)?;
    match s.indexes.get(&id).await? {
        Some(read) => {
            let etag = format!("\"{}\"", cairn_core::ids::hex(&read.digest));
            let unchanged = headers
                .get(axum::http::header::IF_NONE_MATCH)
                .is_some_and(|v| v.as_bytes() == etag.as_bytes());
            let headers = [
                (
                    axum::http::header::CONTENT_TYPE,
                    "application/octet-stream".to_string(),
                ),
                (axum::http::header::ETAG, etag),
                (
                    axum::http::HeaderName::from_static(INDEX_REPLICAS_HEADER),
                    format!("{}/{}", read.answered, read.asked),
                ),
            ];
            if unchanged {
                return Ok((StatusCode::NOT_MODIFIED, headers).into_response());
            }
            Ok((headers, read.index.encode()).into_response())
        }
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no replica has account index {id}"),
        )),
    }
}

async fn post_index(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_index_id(&id)?;
    // Checked here so a bad index is a 400 before anything is sent.
    let index = Index::decode(&body, Some(id)).map_err(ReplicaError::from)?;
    Ok(Json(s.indexes.put(&index).await?))
}

/// `stream`, ended with a `TimedOut` error when no item arrives for `idle`.
fn idle_timeout<S>(
    stream: S,
    idle: std::time::Duration,
) -> impl futures::Stream<Item = std::io::Result<Bytes>>
where
    S: futures::Stream<Item = std::io::Result<Bytes>> + Unpin,
{
    futures::stream::unfold(Some(stream), move |state| async move {
        let mut stream = state?;
        match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(item)) => Some((item, Some(stream))),
            Ok(None) => None,
            Err(_) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the client sent nothing for {} s", idle.as_secs()),
                )),
                None,
            )),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_stalled_upload_ends_with_a_timeout() {
        let (tx, rx) = futures::channel::mpsc::channel::<std::io::Result<Bytes>>(4);
        let mut tx = tx;
        futures::SinkExt::send(&mut tx, Ok(Bytes::from_static(b"abc")))
            .await
            .unwrap();
        let mut s = Box::pin(idle_timeout(rx, Duration::from_millis(100)));
        assert_eq!(s.next().await.unwrap().unwrap(), Bytes::from_static(b"abc"));
        // The sender is alive but silent.
        let err = s.next().await.unwrap().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(s.next().await.is_none());
        drop(tx);
    }

    #[tokio::test]
    async fn a_steady_upload_is_not_cut() {
        let items: Vec<std::io::Result<Bytes>> =
            (0..3).map(|i| Ok(Bytes::from(vec![i; 4]))).collect();
        let s = idle_timeout(futures::stream::iter(items), Duration::from_millis(100));
        let got: Vec<_> = s.collect().await;
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(Result::is_ok));
    }
}
