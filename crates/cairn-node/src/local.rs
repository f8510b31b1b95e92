//! The local socket: `cairn put FILE` hands the node its open file, and
//! `cairn get CAP -o FILE` the temporary file to fill, instead of moving
//! the bytes over HTTP.
//!
//! The node listens on `DATA_DIR/api.sock`, a Unix stream socket (mode
//! 0600), and names it at `GET /v1/local`. A caller sends one request,
//! `"CRNL" | version u16 | length u32 | JSON` ([`LocalRequest`]: a put's
//! parameters, or a get's capability), with the open file in an
//! `SCM_RIGHTS` control message. The node reads a put's file straight into
//! its segment buffers and writes a get's plaintext straight into the file:
//! one page-cache copy, instead of the CLI's own read or write, two
//! loopback socket copies and the HTTP framing (about a tenth of a put's
//! CPU on a devnet, where every node shares the cores). Because the
//! descriptor travels, not a path, the node reads and writes only what the
//! caller could open itself.
//!
//! The node answers JSON lines ([`Event`]): for a put `{"read": n}` while
//! it reads, then `{"done": PutOutcome}`, `{"read_failed": "..."}`
//! (nothing stored) or `{"error": "..."}`; for a get `{"header": ...}`,
//! `{"written": n}` while it writes, then `{"got": n}` (the caller syncs
//! and renames the file) or `{"error": "..."}`; `"busy"` if it serves as
//! many callers as it takes. A caller that hangs up abandons the transfer,
//! as a cut HTTP connection does; what a put stored is left to garbage
//! collection. Only regular files are taken: a read from a pipe can block a
//! thread for good, so the CLI streams pipes, stdin and stdout over HTTP.
//!
//! Bounds: 16 connections at once (more are told `busy`), a request of at
//! most 64 KiB that must arrive within 10 s, and the API's transfer permits
//! ([`crate::api::MAX_TRANSFERS`]) for the transfers themselves.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Interest};
use tokio::net::{UnixListener, UnixStream};

use crate::api::{ApiError, ApiState, PutQuery};
use crate::client::{FileSource, GetHeader, PutOutcome};

/// The socket's file name in the data dir.
pub const SOCKET_FILE: &str = "api.sock";
/// The request's first bytes.
pub const MAGIC: &[u8; 4] = b"CRNL";
/// The protocol version this node speaks.
pub const VERSION: u16 = 1;
/// Largest request (the JSON after the 10-byte preamble).
pub const MAX_REQUEST: usize = 64 << 10;
/// Largest answer line.
const MAX_LINE: usize = 64 << 10;
/// Connections served at once.
const MAX_CONNECTIONS: usize = 16;
/// How long a caller has to send its request.
const REQUEST_TIME: Duration = Duration::from_secs(10);
/// How often a running put reports how far it has read.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);
/// How long the final answer may take to write.
const ANSWER_TIME: Duration = Duration::from_secs(10);

/// What a caller asks on the local socket.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LocalRequest {
    /// Store the file handed over.
    Put(PutQuery),
    /// Write the file `cap` names into the file handed over, from its
    /// current offset.
    Get {
        /// The read capability.
        cap: String,
    },
}

/// What `GET /v1/local` reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LocalInfo {
    /// The protocol version.
    pub version: u16,
    /// The socket's path.
    pub socket: PathBuf,
    /// Puts taken on the socket since the node started.
    pub puts: u64,
    /// Gets taken on the socket since the node started.
    pub gets: u64,
    /// Puts and gets running on the socket now.
    pub active: u64,
}

/// One line of the node's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// Bytes of the file read so far.
    Read(u64),
    /// The put is complete.
    Done(PutOutcome),
    /// A get: what is coming.
    Header(GetHeader),
    /// A get: bytes written so far.
    Written(u64),
    /// A get is complete: every byte is written (not yet synced: the
    /// caller, who decides where the file goes, syncs it).
    Got(u64),
    /// Reading the file failed; nothing was stored.
    ReadFailed(String),
    /// The put failed; the sentence says why.
    Error(String),
    /// The socket serves as many callers as it takes; use HTTP.
    Busy,
}

/// The node's end: the listener's path and its counters.
#[derive(Debug)]
pub struct LocalSocket {
    path: PathBuf,
    puts: AtomicU64,
    gets: AtomicU64,
    active: AtomicU64,
}

impl LocalSocket {
    /// What `GET /v1/local` answers.
    pub fn info(&self) -> LocalInfo {
        LocalInfo {
            version: VERSION,
            socket: self.path.clone(),
            puts: self.puts.load(Ordering::Relaxed),
            gets: self.gets.load(Ordering::Relaxed),
            active: self.active.load(Ordering::Relaxed),
        }
    }
}

/// Binds `DIR/api.sock` (replacing a stale one: the caller holds the data
/// dir's lock), readable and writable by this user only. `None`, with a
/// warning, where the path is too long for a socket address: callers then
/// use HTTP.
pub fn bind(dir: &Path) -> std::io::Result<Option<(UnixListener, Arc<LocalSocket>)>> {
    let path = std::path::absolute(dir.join(SOCKET_FILE))?;
    // sockaddr_un holds 107 path bytes and a NUL.
    if path.as_os_str().len() > 107 {
        tracing::warn!(path = %path.display(), "the data dir's path is too long for a local socket; puts go over HTTP");
        return Ok(None);
    }
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(Some((
        listener,
        Arc::new(LocalSocket {
            path,
            puts: AtomicU64::new(0),
            gets: AtomicU64::new(0),
            active: AtomicU64::new(0),
        }),
    )))
}

/// Serves puts and gets on `listener` until the task is dropped.
pub async fn serve(listener: UnixListener, socket: Arc<LocalSocket>, state: ApiState) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("local socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Over the bound the caller hears so (at most a short line, never
        // waited for) and falls back to HTTP.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            let _ = stream.try_write(&event_line(&Event::Busy));
            continue;
        };
        let (socket, state) = (socket.clone(), state.clone());
        tokio::spawn(async move {
            serve_one(stream, &socket, state).await;
            drop(slot);
        });
    }
}

/// Counts a running transfer; uncounts it however the transfer ends.
struct Active<'a>(&'a AtomicU64);

impl<'a> Active<'a> {
    fn start(n: &'a AtomicU64) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Self(n)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_one(mut stream: UnixStream, socket: &LocalSocket, state: ApiState) {
    let request = tokio::time::timeout(REQUEST_TIME, recv_request(&mut stream)).await;
    let (request, fd) = match request {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return answer(&mut stream, &Event::Error(e.to_string())).await,
        Err(_) => return,
    };
    let file = std::fs::File::from(fd);
    match file.metadata() {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            let e = "the local socket takes regular files only; stream others over HTTP";
            return answer(&mut stream, &Event::Error(e.into())).await;
        }
        Err(e) => {
            let e = format!("cannot inspect the file handed over: {e}");
            return answer(&mut stream, &Event::Error(e)).await;
        }
    }
    let _permit = match crate::api::transfer_permit(&state).await {
        Ok(p) => p,
        Err(e) => return answer(&mut stream, &Event::Error(e.message().into())).await,
    };
    let query = match request {
        LocalRequest::Put(query) => query,
        LocalRequest::Get { cap } => {
            socket.gets.fetch_add(1, Ordering::Relaxed);
            let _active = Active::start(&socket.active);
            return serve_get(stream, &state, &cap, file).await;
        }
    };
    socket.puts.fetch_add(1, Ordering::Relaxed);
    let _active = Active::start(&socket.active);
    let read = Arc::new(AtomicU64::new(0));
    let put = state
        .client
        .put_from(FileSource::new(file, read.clone()), query.options(None));
    let progress = || Event::Read(read.load(Ordering::Relaxed));
    drive(stream, Vec::new(), put, progress, |outcome| match outcome {
        Ok(o) => Event::Done(o),
        Err(crate::client::ClientError::Input(e)) => Event::ReadFailed(e.to_string()),
        Err(e) => Event::Error(ApiError::from(e).message().into()),
    })
    .await;
}

/// Runs `work`, sending `first`, then `progress()` lines every
/// [`PROGRESS_EVERY`], then `last(outcome)`. A caller that hangs up
/// abandons `work` (it is dropped).
async fn drive<T>(
    mut stream: UnixStream,
    first: Vec<u8>,
    work: impl std::future::Future<Output = T>,
    progress: impl Fn() -> Event,
    last: impl FnOnce(T) -> Event,
) {
    tokio::pin!(work);
    let (mut rx, mut tx) = stream.split();
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    let mut probe = [0u8; 1];
    // Lines not yet taken by the socket; a line is never cut.
    let mut pending = first;
    let outcome = loop {
        tokio::select! {
            done = &mut work => break done,
            // The caller sends nothing after its request: readable means it
            // hung up (or broke the protocol), and the work is abandoned.
            _ = rx.read(&mut probe) => {
                tracing::info!("local socket: the caller hung up; its transfer is abandoned");
                return;
            }
            _ = tick.tick() => {
                // Progress never waits on a caller that does not read it.
                if pending.is_empty() {
                    pending = event_line(&progress());
                }
                match tx.try_write(&pending) {
                    Ok(n) => drop(pending.drain(..n)),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        }
    };
    pending.extend_from_slice(&event_line(&last(outcome)));
    let _ = tokio::time::timeout(ANSWER_TIME, tx.write_all(&pending)).await;
}

/// Writes the file `cap` names into `file`.
async fn serve_get(mut stream: UnixStream, state: &ApiState, cap: &str, file: std::fs::File) {
    let cap = match cap.parse::<cairn_core::ReadCap>() {
        Ok(c) => c,
        Err(e) => return answer(&mut stream, &Event::Error(e.to_string())).await,
    };
    let (header, mut rx) = match state.client.get_range(cap, None).await {
        Ok(r) => r,
        Err(e) => {
            let e = ApiError::from(e).message().to_string();
            return answer(&mut stream, &Event::Error(e)).await;
        }
    };
    let written = Arc::new(AtomicU64::new(0));
    let mut writer = Writer::new(file, written.clone());
    let work = async move {
        while let Some(next) = rx.recv().await {
            let data = next.map_err(|e| ApiError::from(e).message().to_string())?;
            writer
                .write(data)
                .await
                .map_err(|e| format!("cannot write the file handed over: {e}"))?;
        }
        Ok::<_, String>(())
    };
    let progress = || Event::Written(written.load(Ordering::Relaxed));
    let first = event_line(&Event::Header(header));
    drive(stream, first, work, progress, |outcome| match outcome {
        Ok(()) => Event::Got(written.load(Ordering::Relaxed)),
        Err(e) => Event::Error(e),
    })
    .await;
}

/// How far a get's writes may run ahead of what is on disk. Behind that,
/// written pages are synced and dropped from the page cache, so a large
/// download neither floods the cache nor piles up dirty pages for the
/// caller's final sync to wait for.
const WRITE_BEHIND: u64 = 64 << 20;

/// Writes a get's bytes in order, on the blocking pool, counting them into
/// `written`.
struct Writer {
    file: Arc<std::fs::File>,
    written: Arc<AtomicU64>,
    synced: u64,
}

impl Writer {
    fn new(file: std::fs::File, written: Arc<AtomicU64>) -> Self {
        Self {
            file: Arc::new(file),
            written,
            synced: 0,
        }
    }

    async fn write(&mut self, data: bytes::Bytes) -> std::io::Result<()> {
        let written = self.written.load(Ordering::Relaxed);
        let (file, synced) = (self.file.clone(), self.synced);
        let len = data.len() as u64;
        let task = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            (&*file).write_all(&data)?;
            let written = written + len;
            if written - synced < WRITE_BEHIND {
                return Ok(synced);
            }
            file.sync_data()?;
            // Advisory: failing to drop cached pages loses nothing.
            let _ = rustix::fs::fadvise(
                &*file,
                0,
                std::num::NonZeroU64::new(written),
                rustix::fs::Advice::DontNeed,
            );
            Ok::<_, std::io::Error>(written)
        });
        self.synced = task
            .await
            .map_err(|e| std::io::Error::other(format!("the writer failed: {e}")))??;
        self.written.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }
}

async fn answer(stream: &mut UnixStream, event: &Event) {
    let _ = tokio::time::timeout(ANSWER_TIME, stream.write_all(&event_line(event))).await;
}

fn event_line(event: &Event) -> Vec<u8> {
    let mut line = serde_json::to_vec(event).unwrap_or_else(|_| b"{}".to_vec());
    line.push(b'\n');
    line
}

/// Reads a request and the one descriptor that came with it.
async fn recv_request(stream: &mut UnixStream) -> std::io::Result<(LocalRequest, OwnedFd)> {
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut buf = vec![0u8; 10 + MAX_REQUEST];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    // The descriptor comes with the first bytes of the request.
    let (got, fd) = {
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let msg = stream
            .async_io(Interest::READABLE, || {
                rustix::net::recvmsg(
                    &*stream,
                    &mut [IoSliceMut::new(&mut buf)],
                    &mut control,
                    RecvFlags::CMSG_CLOEXEC,
                )
                .map_err(std::io::Error::from)
            })
            .await?;
        let mut fds = Vec::new();
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(rights) = m {
                fds.extend(rights);
            }
        }
        if msg.flags.contains(rustix::net::ReturnFlags::CTRUNC) || fds.len() > 1 {
            return Err(bad("a local request carries exactly one file".into()));
        }
        (msg.bytes, fds.pop())
    };
    let Some(fd) = fd else {
        return Err(bad(
            "a local request carries the open file it is about".into()
        ));
    };
    let mut have = got;
    while have < 10 {
        let n = stream.read(&mut buf[have..10]).await?;
        if n == 0 {
            return Err(bad("the local request was cut short".into()));
        }
        have += n;
    }
    if &buf[..4] != MAGIC {
        return Err(bad("not a Cairn local request".into()));
    }
    let version = u16::from_be_bytes([buf[4], buf[5]]);
    if version != VERSION {
        return Err(bad(format!(
            "local protocol version {version} is not spoken here (this node speaks {VERSION})"
        )));
    }
    let len = u32::from_be_bytes([buf[6], buf[7], buf[8], buf[9]]) as usize;
    if len > MAX_REQUEST {
        return Err(bad(format!(
            "a local request of {len} bytes is over the {MAX_REQUEST}-byte limit"
        )));
    }
    let end = 10 + len;
    if have > end {
        return Err(bad("the caller sent more than its request".into()));
    }
    stream.read_exact(&mut buf[have..end]).await?;
    let query = serde_json::from_slice(&buf[10..end])
        .map_err(|e| bad(format!("a malformed local request: {e}")))?;
    Ok((query, fd))
}

/// The caller's end of a request on the local socket.
pub struct LocalCall {
    lines: BufReader<UnixStream>,
    line: Vec<u8>,
}

impl LocalCall {
    /// Connects to the socket at `path` and hands it `file` with `request`.
    /// An error here means nothing was sent: the caller may fall back to
    /// HTTP.
    pub async fn start(
        path: &Path,
        file: &std::fs::File,
        request: &LocalRequest,
    ) -> std::io::Result<Self> {
        let json = serde_json::to_vec(request).map_err(std::io::Error::other)?;
        if json.len() > MAX_REQUEST {
            return Err(std::io::Error::other("the request is too large"));
        }
        let mut msg = Vec::with_capacity(10 + json.len());
        msg.extend_from_slice(MAGIC);
        msg.extend_from_slice(&VERSION.to_be_bytes());
        msg.extend_from_slice(&(json.len() as u32).to_be_bytes());
        msg.extend_from_slice(&json);
        let mut stream = UnixStream::connect(path).await?;
        let fds = [std::os::fd::AsFd::as_fd(file)];
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let sent = {
            let mut control = SendAncillaryBuffer::new(&mut space);
            if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
                return Err(std::io::Error::other("cannot attach the file"));
            }
            stream
                .async_io(Interest::WRITABLE, || {
                    rustix::net::sendmsg(
                        &stream,
                        &[IoSlice::new(&msg)],
                        &mut control,
                        SendFlags::NOSIGNAL,
                    )
                    .map_err(std::io::Error::from)
                })
                .await?
        };
        stream.write_all(&msg[sent..]).await?;
        Ok(Self {
            lines: BufReader::new(stream),
            line: Vec::new(),
        })
    }

    /// The node's next answer; `Err` if the node went away without one.
    pub async fn next(&mut self) -> std::io::Result<Event> {
        self.line.clear();
        let n = (&mut self.lines)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut self.line)
            .await?;
        if n == 0 || self.line.last() != Some(&b'\n') {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the node closed the local socket without an answer",
            ));
        }
        serde_json::from_slice(&self.line).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the node's answer is malformed: {e}"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (tempfile::TempDir, UnixListener, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        (dir, listener, path)
    }

    #[tokio::test]
    async fn the_file_and_the_request_arrive_together() {
        let (dir, listener, path) = pair();
        let file_path = dir.path().join("data");
        std::fs::write(&file_path, b"hello, node").unwrap();
        let file = std::fs::File::open(&file_path).unwrap();
        let query = PutQuery {
            k: Some(3),
            name: Some("data".into()),
            ..PutQuery::default()
        };
        let request = LocalRequest::Put(query);
        let client = tokio::spawn(async move { LocalCall::start(&path, &file, &request).await });
        let (mut server, _) = listener.accept().await.unwrap();
        let (LocalRequest::Put(got), fd) = recv_request(&mut server).await.unwrap() else {
            panic!("not a put");
        };
        client.await.unwrap().unwrap();
        assert_eq!((got.k, got.name.as_deref()), (Some(3), Some("data")));
        // The descriptor is the caller's open file, not a path.
        std::fs::remove_file(&file_path).unwrap();
        let mut read = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut read).unwrap();
        assert_eq!(read, "hello, node");
    }

    async fn refused(raw: Vec<u8>, with_fd: bool) -> String {
        let (dir, listener, path) = pair();
        let file_path = dir.path().join("data");
        std::fs::write(&file_path, b"x").unwrap();
        let file = std::fs::File::open(&file_path).unwrap();
        let client = tokio::spawn(async move {
            let stream = UnixStream::connect(&path).await.unwrap();
            let fds = [std::os::fd::AsFd::as_fd(&file)];
            let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            if with_fd {
                assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
            }
            stream.writable().await.unwrap();
            rustix::net::sendmsg(
                &stream,
                &[IoSlice::new(&raw)],
                &mut control,
                SendFlags::NOSIGNAL,
            )
            .unwrap();
            stream
        });
        let (mut server, _) = listener.accept().await.unwrap();
        let _keep = client.await.unwrap();
        recv_request(&mut server).await.unwrap_err().to_string()
    }

    fn request(magic: &[u8; 4], version: u16, json: &[u8], declared: u32) -> Vec<u8> {
        let mut m = magic.to_vec();
        m.extend_from_slice(&version.to_be_bytes());
        m.extend_from_slice(&declared.to_be_bytes());
        m.extend_from_slice(json);
        m
    }

    #[tokio::test]
    async fn bad_requests_are_refused_with_a_reason() {
        let ok = br#"{"op":"put","k":2}"#;
        let e = refused(request(MAGIC, VERSION, ok, ok.len() as u32), false).await;
        assert!(e.contains("carries the open file"), "{e}");
        let e = refused(request(b"HTTP", VERSION, ok, ok.len() as u32), true).await;
        assert!(e.contains("not a Cairn local request"), "{e}");
        let e = refused(request(MAGIC, 9, ok, ok.len() as u32), true).await;
        assert!(e.contains("version 9"), "{e}");
        let e = refused(request(MAGIC, VERSION, ok, 1 << 20), true).await;
        assert!(e.contains("over the 65536-byte limit"), "{e}");
        let e = refused(request(MAGIC, VERSION, b"{\"op\":\"mv\"}", 11), true).await;
        assert!(e.contains("malformed"), "{e}");
        let e = refused(request(MAGIC, VERSION, ok, 3), true).await;
        assert!(e.contains("more than its request"), "{e}");
    }
}
