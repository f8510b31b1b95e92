//! The gateway's client of one node's loopback control API (see
//! `cairn_node::api` for the routes): streaming put and ranged get of
//! Cairn objects, rm, renew, and the account index routes.

use std::time::Duration;

use bytes::Bytes;
use cairn_node::frames::{Frame, FrameDecoder};
use futures::{Stream, StreamExt};
use serde::Deserialize;

use crate::error::GatewayError;

/// The header naming the key that owns (signs the repair record of) an object.
const OWNER_HEADER: &str = "x-cairn-owner";
/// Index reads and writes, rm and renew are small; the node's own quorum
/// waits are shorter than this.
const SMALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The node's answer to an index read.
#[derive(Debug)]
pub enum IndexCopy {
    /// The encoded merged index.
    Found(bytes::Bytes),
    /// The same as the copy whose digest the gateway named.
    Unchanged,
    /// No replica has it.
    Missing,
}

/// The node's header that says how many replicas answered an index read
/// (`answered/asked`).
pub const INDEX_REPLICAS_HEADER: &str = "x-cairn-index-replicas";

/// What the node answered to a put.
#[derive(Debug, Clone, Deserialize)]
pub struct Stored {
    /// The Cairn object's read capability.
    pub cap: String,
    /// Bytes stored.
    pub size: u64,
}

#[derive(Deserialize)]
struct RangeHeader {
    length: u64,
}

/// A node's control API.
#[derive(Clone, Debug)]
pub struct Node {
    base: String,
    http: reqwest::Client,
    owner_hex: String,
    lease_secs: u64,
}

impl Node {
    /// A client of the API at `base` (`http://127.0.0.1:PORT`) that stores
    /// objects owned by `owner` (a 32-byte Ed25519 seed) with this lease.
    pub fn new(base: &str, owner: [u8; 32], lease_secs: u64) -> Result<Self, GatewayError> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(GatewayError::InvalidArgument(format!(
                "--api {base:?} is not a URL; use e.g. http://127.0.0.1:7070"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| GatewayError::Internal(format!("cannot create an HTTP client: {e}")))?;
        Ok(Self {
            base,
            http,
            owner_hex: hex::encode(owner),
            lease_secs,
        })
    }

    /// The lease this client puts objects with.
    pub fn lease_secs(&self) -> u64 {
        self.lease_secs
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn send_error(&self, e: reqwest::Error) -> GatewayError {
        if e.is_connect() || e.is_timeout() {
            GatewayError::Unavailable(format!("cannot reach the node at {}: {e}", self.base))
        } else {
            GatewayError::Internal(format!(
                "the request to the node at {} failed: {e}",
                self.base
            ))
        }
    }

    /// The response if it is a success, else the node's sentence as an error.
    async fn check(&self, resp: reqwest::Response) -> Result<reqwest::Response, GatewayError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| format!("the node answered {status}: {text}"));
        Err(match status.as_u16() {
            404 => GatewayError::DataNotFound(msg),
            503 | 502 | 504 | 507 => GatewayError::Unavailable(msg),
            _ => GatewayError::Internal(format!("the node refused: {msg}")),
        })
    }

    /// Stores `body` as one Cairn object.
    pub async fn put<S>(&self, body: S) -> Result<Stored, GatewayError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    {
        let resp = self
            .http
            .post(self.url("/v1/put"))
            .query(&[
                ("lease_secs", self.lease_secs.to_string()),
                ("catalog", "false".into()),
            ])
            .header(OWNER_HEADER, &self.owner_hex)
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await
            .map_err(|e| self.send_error(e))?;
        let resp = self.check(resp).await?;
        resp.json().await.map_err(|e| {
            GatewayError::Internal(format!("the node's put answer does not parse: {e}"))
        })
    }

    /// Streams bytes `[start, end)` of a Cairn object into `out`; returns
    /// when all have been sent. Each item is a slice of the node's frames.
    /// `started`, if still set, is told once the node has begun to answer.
    pub async fn get_into(
        &self,
        cap: &str,
        start: u64,
        end: u64,
        out: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
        started: &mut Option<tokio::sync::oneshot::Sender<Result<(), GatewayError>>>,
    ) -> Result<(), GatewayError> {
        let resp = self
            .http
            .post(self.url("/v1/get"))
            .json(&serde_json::json!({ "cap": cap, "start": start, "end": end }))
            .send()
            .await
            .map_err(|e| self.send_error(e))?;
        let resp = self.check(resp).await?;
        let mut stream = resp.bytes_stream();
        let mut decoder = FrameDecoder::default();
        let mut left: Option<u64> = None;
        while let Some(chunk) = stream.next().await {
            let mut chunk = chunk
                .map_err(|e| GatewayError::Internal(format!("the node's get stream broke: {e}")))?;
            while let Some(frame) = decoder
                .next(&mut chunk)
                .map_err(|e| GatewayError::Internal(e.to_string()))?
            {
                match frame {
                    Frame::Header(h) => {
                        let h: RangeHeader = serde_json::from_slice(&h).map_err(|e| {
                            GatewayError::Internal(format!(
                                "the node's get header does not parse: {e}"
                            ))
                        })?;
                        left = Some(h.length);
                        if let Some(tx) = started.take() {
                            let _ = tx.send(Ok(()));
                        }
                    }
                    Frame::Data(d) => {
                        let n = d.len() as u64;
                        match left.as_mut() {
                            Some(l) if *l >= n => *l -= n,
                            _ => {
                                return Err(GatewayError::Internal(
                                    "the node sent more data than it announced".into(),
                                ));
                            }
                        }
                        if out.send(Ok(d)).await.is_err() {
                            // The S3 client went away; stop fetching.
                            return Ok(());
                        }
                    }
                    Frame::Error(e) => {
                        return Err(GatewayError::Internal(format!(
                            "the node could not read the object: {}",
                            String::from_utf8_lossy(&e)
                        )));
                    }
                    Frame::End => {
                        return match left {
                            Some(0) => Ok(()),
                            _ => Err(GatewayError::Internal(
                                "the node ended the stream before all announced bytes".into(),
                            )),
                        };
                    }
                }
            }
        }
        Err(GatewayError::Internal(
            "the node's get stream ended without its end frame".into(),
        ))
    }

    async fn post_small(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, GatewayError> {
        let resp = self
            .http
            .post(self.url(path))
            .header(OWNER_HEADER, &self.owner_hex)
            .timeout(SMALL_TIMEOUT)
            .json(&body)
            .send()
            .await
            .map_err(|e| self.send_error(e))?;
        let resp = self.check(resp).await?;
        resp.json()
            .await
            .map_err(|e| GatewayError::Internal(format!("the node's answer does not parse: {e}")))
    }

    /// Deletes a Cairn object.
    pub async fn rm(&self, cap: &str) -> Result<(), GatewayError> {
        self.post_small("/v1/rm", serde_json::json!({ "cap": cap }))
            .await
            .map(drop)
    }

    /// Extends a Cairn object's lease; returns the new expiry (Unix s).
    pub async fn renew(&self, cap: &str) -> Result<u64, GatewayError> {
        let v = self
            .post_small(
                "/v1/renew",
                serde_json::json!({ "cap": cap, "lease_secs": self.lease_secs }),
            )
            .await?;
        v.get("expires_at")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| {
                GatewayError::Internal("the node's renew answer has no expires_at".into())
            })
    }

    /// The node's merged copy of account index `id` (hex), unless its
    /// digest is `have`.
    pub async fn get_index(
        &self,
        id: &str,
        have: Option<[u8; 32]>,
    ) -> Result<IndexCopy, GatewayError> {
        self.get_index_counted(id, have).await.map(|(copy, _)| copy)
    }

    /// [`Node::get_index`], and how many of the index's replicas answered
    /// the node's read, of how many it asked (`None`: a node that does not
    /// say, or no replica had it).
    pub async fn get_index_counted(
        &self,
        id: &str,
        have: Option<[u8; 32]>,
    ) -> Result<(IndexCopy, Option<(usize, usize)>), GatewayError> {
        let mut req = self
            .http
            .get(self.url(&format!("/v1/index/{id}")))
            .timeout(SMALL_TIMEOUT);
        if let Some(d) = have {
            req = req.header(
                reqwest::header::IF_NONE_MATCH,
                format!("\"{}\"", hex::encode(d)),
            );
        }
        let resp = req.send().await.map_err(|e| self.send_error(e))?;
        let replicas = resp
            .headers()
            .get(INDEX_REPLICAS_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once('/'))
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
        match resp.status() {
            reqwest::StatusCode::NOT_FOUND => return Ok((IndexCopy::Missing, None)),
            reqwest::StatusCode::NOT_MODIFIED if have.is_some() => {
                return Ok((IndexCopy::Unchanged, replicas));
            }
            _ => {}
        }
        let resp = self.check(resp).await?;
        let bytes = resp.bytes().await.map_err(|e| {
            GatewayError::Unavailable(format!("reading an index from the node failed: {e}"))
        })?;
        Ok((IndexCopy::Found(bytes), replicas))
    }

    /// Writes (merges) encoded index ops into index `id`.
    pub async fn post_index(&self, id: &str, encoded: Vec<u8>) -> Result<(), GatewayError> {
        let resp = self
            .http
            .post(self.url(&format!("/v1/index/{id}")))
            .timeout(SMALL_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(encoded)
            .send()
            .await
            .map_err(|e| self.send_error(e))?;
        self.check(resp).await.map(drop)
    }
}
