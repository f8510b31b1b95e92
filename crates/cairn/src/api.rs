//! The CLI's side of the node's control API.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use cairn_node::api::PutQuery;
use cairn_node::frames::{Frame, FrameDecoder};
use cairn_node::local;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::de::DeserializeOwned;
use tokio::io::AsyncWriteExt;

/// Reading the input failed during a put; the caller adds which file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReadFailed(pub std::io::Error);

/// How far a download's disk writes may run ahead of what is known to be on
/// disk. Behind that, written pages are dropped from the page cache, so a
/// large download neither floods the cache nor piles up dirty pages that a
/// final fsync then waits for. Files smaller than this stay cached.
const WRITE_BEHIND: u64 = 64 << 20;

/// Chunks queued for the writer thread (1 MiB frames).
const WRITE_QUEUE: usize = 16;

/// Where a download goes: stdout, or a file written on its own thread.
enum Sink {
    /// Stdout, or a device or pipe named by `-o` (such as `/dev/null`):
    /// written in place, never replaced by a rename.
    Direct(Box<dyn tokio::io::AsyncWrite + Unpin + Send>),
    File {
        tx: tokio::sync::mpsc::Sender<Bytes>,
        writer: tokio::task::JoinHandle<std::io::Result<()>>,
    },
}

impl Sink {
    fn file(file: std::fs::File) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(WRITE_QUEUE);
        let writer = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut file = file;
            let (mut written, mut synced) = (0u64, 0u64);
            while let Some(chunk) = rx.blocking_recv() {
                file.write_all(&chunk)?;
                written += chunk.len() as u64;
                if written - synced >= WRITE_BEHIND {
                    file.sync_data()?;
                    synced = written;
                    // Advisory: failing to drop cached pages loses nothing.
                    let _ = rustix::fs::fadvise(
                        &file,
                        0,
                        std::num::NonZeroU64::new(synced),
                        rustix::fs::Advice::DontNeed,
                    );
                }
            }
            file.sync_all()
        });
        Sink::File { tx, writer }
    }

    async fn write(&mut self, chunk: Bytes) -> std::io::Result<()> {
        match self {
            Sink::Direct(out) => out.write_all(&chunk).await,
            Sink::File { tx, writer } => {
                if tx.send(chunk).await.is_ok() {
                    return Ok(());
                }
                // The writer stopped early, so the download ends here: report why.
                match writer.await {
                    Ok(Err(e)) => Err(e),
                    _ => Err(std::io::Error::other("the file writer stopped")),
                }
            }
        }
    }

    /// Flushes everything; a file is fsynced.
    async fn finish(self) -> std::io::Result<()> {
        match self {
            Sink::Direct(mut out) => out.flush().await,
            Sink::File { tx, writer } => {
                drop(tx);
                writer
                    .await
                    .map_err(|e| std::io::Error::other(format!("the file writer failed: {e}")))?
            }
        }
    }
}

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

    /// Stores the file at `path`: a regular file is handed to the node,
    /// which reads it itself ([`Api::put_local`]); pipes, devices, and nodes
    /// without a usable local socket (or `CAIRN_NO_LOCAL_SOCKET` set) get
    /// the bytes over HTTP. Errors name the file.
    pub async fn put_path(&self, path: &Path, query: &PutQuery) -> Result<serde_json::Value> {
        let shown = path.display();
        let f = std::fs::File::open(path).with_context(|| format!("cannot read {shown}"))?;
        let meta = f
            .metadata()
            .with_context(|| format!("cannot read {shown}"))?;
        if meta.is_dir() {
            bail!("{shown} is a directory; cairn put stores one file (or stdin with -)");
        }
        let read_failed = |e: anyhow::Error| match e.downcast::<ReadFailed>() {
            Ok(r) => anyhow!("cannot read {shown}: {}; nothing was stored", r.0),
            Err(e) => e,
        };
        if meta.is_file() {
            let handed = self.put_local(&f, meta.len(), query).await;
            if let Some(outcome) = handed.map_err(read_failed)? {
                return Ok(outcome);
            }
        }
        let f = tokio::fs::File::from_std(f);
        self.put(f, Some(meta.len()), query)
            .await
            .map_err(read_failed)
    }

    /// Hands the open regular `file` to the node through its local socket
    /// ([`cairn_node::local`]), so the node reads it itself; `None` if the
    /// node has no socket this process can use (an older or a remote node, a
    /// busy socket), and nothing was sent.
    async fn put_local(
        &self,
        file: &std::fs::File,
        total: u64,
        query: &PutQuery,
    ) -> Result<Option<serde_json::Value>> {
        let request = local::LocalRequest::Put(query.clone());
        let Some(mut put) = self.local_call(file, &request).await else {
            return Ok(None);
        };
        let pb = progress(Some(total));
        let outcome = loop {
            match put.next().await {
                Ok(local::Event::Read(n)) => pb.set_position(n),
                Ok(local::Event::Done(o)) => break Ok(Some(serde_json::to_value(o)?)),
                Ok(local::Event::ReadFailed(e)) => {
                    break Err(ReadFailed(std::io::Error::other(e)).into());
                }
                Ok(local::Event::Error(e)) => break Err(anyhow!(e)),
                Ok(local::Event::Busy) => break Ok(None),
                Ok(other) => break Err(anyhow!("the node answered a put with {other:?}")),
                Err(e) => {
                    break Err(anyhow!(
                        "the node at {} stopped answering during the put: {e}",
                        self.base
                    ));
                }
            }
        };
        pb.finish_and_clear();
        outcome
    }

    /// `request` with `file`, sent on the node's local socket; `None`, with
    /// nothing sent, if the node has none this process may use (any failure
    /// to learn or reach it leaves the answer to HTTP).
    async fn local_call(
        &self,
        file: &std::fs::File,
        request: &local::LocalRequest,
    ) -> Option<local::LocalCall> {
        if std::env::var_os("CAIRN_NO_LOCAL_SOCKET").is_some() {
            return None;
        }
        let resp = self.http.get(self.url("/v1/local")).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let info = resp.json::<local::LocalInfo>().await.ok()?;
        if info.version != local::VERSION {
            return None;
        }
        local::LocalCall::start(&info.socket, file, request)
            .await
            .ok()
    }

    /// Has the node write the file `cap` names into `file` (a fresh
    /// temporary file) through its local socket; the bytes written, or
    /// `None` if the node has no socket this process can use, and nothing
    /// was written.
    async fn get_local(&self, file: &std::fs::File, cap: &str) -> Result<Option<u64>> {
        let request = local::LocalRequest::Get { cap: cap.into() };
        let Some(mut get) = self.local_call(file, &request).await else {
            return Ok(None);
        };
        let mut pb: Option<ProgressBar> = None;
        let outcome = loop {
            match get.next().await {
                Ok(local::Event::Header(h)) => pb = Some(progress(Some(h.size))),
                Ok(local::Event::Written(n)) => {
                    if let Some(pb) = &pb {
                        pb.set_position(n);
                    }
                }
                Ok(local::Event::Got(n)) => break Ok(Some(n)),
                Ok(local::Event::Busy) => break Ok(None),
                Ok(local::Event::Error(e) | local::Event::ReadFailed(e)) => break Err(anyhow!(e)),
                Ok(other) => break Err(anyhow!("the node answered a get with {other:?}")),
                Err(e) => {
                    break Err(anyhow!(
                        "the node at {} stopped answering during the download: {e}",
                        self.base
                    ));
                }
            }
        };
        if let Some(pb) = pb {
            pb.finish_and_clear();
        }
        outcome
    }

    /// Streams `input` to the node for storing; returns the put outcome.
    pub async fn put<R>(
        &self,
        input: R,
        total: Option<u64>,
        query: &PutQuery,
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
    /// A device or pipe (`/dev/null`, a FIFO) is written in place.
    pub async fn get(&self, cap: &str, out: &str) -> Result<u64> {
        let special = match std::fs::metadata(out) {
            _ if out == "-" => false,
            Ok(md) if md.is_dir() => {
                bail!("{out} is a directory; name the file to write (or - for stdout)")
            }
            Ok(md) => !md.is_file(),
            Err(_) => false,
        };
        // A file is written through a temporary one, which the node fills
        // itself through its local socket when it can.
        let mut named = None;
        if !special && out != "-" {
            let path = Path::new(out);
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            let tmp = tempfile::Builder::new()
                .prefix(".cairn-get-")
                .tempfile_in(dir)
                .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
            if let Some(n) = self.get_local(tmp.as_file(), cap).await? {
                tmp.as_file()
                    .sync_all()
                    .with_context(|| format!("cannot write to {out}"))?;
                tmp.persist(out)
                    .with_context(|| format!("cannot move the downloaded file onto {out}"))?;
                return Ok(n);
            }
            named = Some(tmp);
        }
        let resp = self
            .http
            .post(self.url("/v1/get"))
            .json(&serde_json::json!({ "cap": cap }))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let resp = self.check(resp).await?;
        let mut sink = Sink::Direct(Box::new(tokio::io::stdout()));
        let mut tmp: Option<tempfile::TempPath> = None;
        if special {
            let file = tokio::fs::OpenOptions::new()
                .write(true)
                .open(out)
                .await
                .with_context(|| format!("cannot open {out} to write"))?;
            sink = Sink::Direct(Box::new(file));
        } else if let Some(named) = named {
            let (file, path) = named.into_parts();
            sink = Sink::file(file);
            tmp = Some(path);
        }
        let mut body = resp.bytes_stream();
        let mut frames = FrameDecoder::default();
        let mut written = 0u64;
        let mut pb: Option<ProgressBar> = None;
        let started = Instant::now();
        loop {
            let mut chunk = match body.next().await {
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => bail!("the connection to the node broke during the download: {e}"),
                None => bail!("the node ended the download early; nothing was written to {out}"),
            };
            while let Some(frame) = frames.next(&mut chunk)? {
                match frame {
                    Frame::Header(h) => {
                        let h: serde_json::Value = serde_json::from_slice(&h)?;
                        pb = Some(progress(h.get("size").and_then(|s| s.as_u64())));
                    }
                    Frame::Data(part) => {
                        let n = part.len() as u64;
                        sink.write(part)
                            .await
                            .with_context(|| format!("cannot write to {out}"))?;
                        written += n;
                        if let Some(pb) = &pb {
                            pb.inc(n);
                        }
                    }
                    Frame::Error(msg) => {
                        if let Some(pb) = &pb {
                            pb.finish_and_clear();
                        }
                        bail!("{}", String::from_utf8_lossy(&msg));
                    }
                    Frame::End => {
                        if let Some(pb) = &pb {
                            pb.finish_and_clear();
                        }
                        sink.finish()
                            .await
                            .with_context(|| format!("cannot write to {out}"))?;
                        if let Some(tmp) = tmp {
                            tmp.persist(out).with_context(|| {
                                format!("cannot move the downloaded file onto {out}")
                            })?;
                        }
                        tracing::debug!(secs = started.elapsed().as_secs_f64(), "get done");
                        return Ok(written);
                    }
                }
            }
        }
    }
}
