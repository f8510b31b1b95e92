//! The CLI's side of the node's control API.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use bytes::{Buf, BytesMut};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::de::DeserializeOwned;
use tokio::io::AsyncWriteExt;

/// Reading the input failed during a put; the caller adds which file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReadFailed(pub std::io::Error);

/// A node's control API.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

fn progress(total: Option<u64>) -> ProgressBar {
    let pb = match total {
        Some(t) => ProgressBar::new(t),
        None => ProgressBar::no_length(),
    };
    // indicatif draws nothing when stderr is not a terminal.
    pb.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    let style = if total.is_some() {
        "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}"
    } else {
        "{spinner} {bytes} {binary_bytes_per_sec}"
    };
    if let Ok(s) = ProgressStyle::with_template(style) {
        pb.set_style(s);
    }
    pb
}

impl Api {
    /// An API client for `base` (e.g. `http://127.0.0.1:7070`).
    pub fn new(base: &str) -> Result<Self> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--api {base:?} is not a URL; use e.g. http://127.0.0.1:7070");
        }
        let http = reqwest::Client::builder()
            .build()
            .context("cannot create an HTTP client")?;
        Ok(Self { base, http })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn unreachable(&self, e: reqwest::Error) -> anyhow::Error {
        if e.is_connect() {
            anyhow!(
                "cannot reach a Cairn node at {}: is a node running there? Start one with `cairn node run` or `cairn devnet`, or point --api / CAIRN_API at a running node",
                self.base
            )
        } else {
            anyhow!("the request to the node at {} failed: {e}", self.base)
        }
    }

    async fn check(&self, resp: reqwest::Response) -> Result<reqwest::Response> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| format!("the node answered {status}: {text}"));
        Err(anyhow!(msg))
    }

    /// GET a JSON document.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self
            .http
            .get(self.url(path))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        Ok(self.check(resp).await?.json().await?)
    }

    /// POST JSON, read JSON.
    pub async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T> {
        let resp = self
            .http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        Ok(self.check(resp).await?.json().await?)
    }

    /// Streams `input` to the node for storing; returns the put outcome.
    pub async fn put<R>(
        &self,
        input: R,
        total: Option<u64>,
        query: &[(&str, String)],
    ) -> Result<serde_json::Value>
    where
        R: tokio::io::AsyncRead + Send + 'static,
    {
        let pb = progress(total);
        let counter = pb.clone();
        // A read error ends the upload; keep it so the user hears about their
        // file, not about a broken HTTP request.
        let read_error: std::sync::Arc<std::sync::Mutex<Option<std::io::Error>>> =
            Default::default();
        let slot = read_error.clone();
        let stream =
            tokio_util::io::ReaderStream::with_capacity(input, 1 << 20).map(move |chunk| {
                match &chunk {
                    Ok(c) => counter.inc(c.len() as u64),
                    Err(e) => {
                        if let Ok(mut s) = slot.lock() {
                            *s = Some(std::io::Error::new(e.kind(), e.to_string()));
                        }
                    }
                }
                chunk
            });
        let resp = self
            .http
            .post(self.url("/v1/put"))
            .query(query)
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await;
        pb.finish_and_clear();
        if let Some(e) = read_error.lock().ok().and_then(|mut s| s.take()) {
            return Err(ReadFailed(e).into());
        }
        let resp = resp.map_err(|e| self.unreachable(e))?;
        Ok(self.check(resp).await?.json().await?)
    }

    /// Reads a file by capability into `out` (a path, or `-` for stdout).
    ///
    /// A path is written through a temporary file in the same directory that
    /// is renamed onto it only once the whole file arrived and was verified.
    pub async fn get(&self, cap: &str, out: &str) -> Result<u64> {
        let resp = self
            .http
            .post(self.url("/v1/get"))
            .json(&serde_json::json!({ "cap": cap }))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let resp = self.check(resp).await?;
        let mut sink: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = Box::new(tokio::io::stdout());
        let mut tmp: Option<tempfile::TempPath> = None;
        if out != "-" {
            let path = Path::new(out);
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            let named = tempfile::Builder::new()
                .prefix(".cairn-get-")
                .tempfile_in(dir)
                .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
            let (file, path) = named.into_parts();
            sink = Box::new(tokio::fs::File::from_std(file));
            tmp = Some(path);
        }
        let mut body = resp.bytes_stream();
        let mut buf = BytesMut::new();
        let mut written = 0u64;
        let mut pb: Option<ProgressBar> = None;
        let started = Instant::now();
        loop {
            // Parse every complete frame in the buffer.
            while buf.len() >= 5 {
                let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                if buf.len() < 5 + len {
                    break;
                }
                let tag = buf[0];
                buf.advance(5);
                let payload = buf.split_to(len);
                match tag {
                    b'H' => {
                        let h: serde_json::Value = serde_json::from_slice(&payload)?;
                        pb = Some(progress(h.get("size").and_then(|s| s.as_u64())));
                    }
                    b'D' => {
                        sink.write_all(&payload)
                            .await
                            .with_context(|| format!("cannot write to {out}"))?;
                        written += payload.len() as u64;
                        if let Some(pb) = &pb {
                            pb.inc(payload.len() as u64);
                        }
                    }
                    b'E' => {
                        if let Some(pb) = &pb {
                            pb.finish_and_clear();
                        }
                        bail!("{}", String::from_utf8_lossy(&payload));
                    }
                    b'Z' => {
                        if let Some(pb) = &pb {
                            pb.finish_and_clear();
                        }
                        sink.flush().await?;
                        drop(sink);
                        if let Some(tmp) = tmp {
                            std::fs::File::open(&tmp).and_then(|f| f.sync_all()).ok();
                            tmp.persist(out).with_context(|| {
                                format!("cannot move the downloaded file onto {out}")
                            })?;
                        }
                        tracing::debug!(secs = started.elapsed().as_secs_f64(), "get done");
                        return Ok(written);
                    }
                    other => bail!(
                        "the node sent an unknown frame type {other}; is it a different Cairn version?"
                    ),
                }
            }
            match body.next().await {
                Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                Some(Err(e)) => bail!("the connection to the node broke during the download: {e}"),
                None => bail!("the node ended the download early; nothing was written to {out}"),
            }
        }
    }
}
