//! Moving bytes: the channel-backed stream that a GetObject answers with
//! and a put streams into the node, and the pump that streams an S3 body
//! to the node while hashing and counting it.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use md5::{Digest, Md5};
use s3s::stream::{ByteStream, RemainingLength};

use crate::error::GatewayError;
use crate::node::{Node, Stored};

/// Chunks buffered between a producer and its consumer (each at most a
/// node frame, 1 MiB, or an HTTP chunk).
pub const CHANNEL_CHUNKS: usize = 8;

/// A stream of the chunks sent into a bounded channel.
pub struct ChannelStream {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    remaining: Option<u64>,
}

impl ChannelStream {
    /// A bounded channel and the stream of what is sent into it;
    /// `length`, if known, is announced as the stream's remaining length.
    pub fn channel(
        length: Option<u64>,
    ) -> (
        tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
        Self,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_CHUNKS);
        (
            tx,
            Self {
                rx,
                remaining: length,
            },
        )
    }
}

impl Stream for ChannelStream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = self.rx.poll_recv(cx);
        if let (Poll::Ready(Some(Ok(b))), Some(r)) = (&item, self.remaining.as_mut()) {
            *r = r.saturating_sub(b.len() as u64);
        }
        item
    }
}

impl ByteStream for ChannelStream {
    fn remaining_length(&self) -> RemainingLength {
        match self.remaining.and_then(|r| usize::try_from(r).ok()) {
            Some(r) => RemainingLength::new_exact(r),
            None => RemainingLength::unknown(),
        }
    }
}

/// What a stored body came to.
#[derive(Debug, Clone)]
pub struct StoredBody {
    /// The node's answer.
    pub stored: Stored,
    /// Hex MD5 of the bytes.
    pub md5: String,
    /// Bytes (of plaintext, when sealed).
    pub size: u64,
}

/// Checks on a body while it streams.
#[derive(Debug, Clone, Copy)]
pub struct BodyRules {
    /// The most bytes accepted.
    pub max: u64,
    /// The declared length, which must be met exactly.
    pub declared: Option<u64>,
    /// The Content-MD5 it must hash to.
    pub md5: Option<[u8; 16]>,
    /// A body that sends nothing for this long is cut.
    pub idle: Duration,
}

/// Streams `body` into one new Cairn object while hashing and counting it.
/// Nothing is stored unless the whole body arrives within the rules: on
/// any failure the node's put is made to fail too (its input ends with an
/// error), and a stored object is removed if one was made anyway.
pub async fn store<S>(
    node: &Node,
    mut body: S,
    rules: BodyRules,
) -> Result<StoredBody, GatewayError>
where
    S: Stream<Item = Result<Bytes, GatewayError>> + Unpin,
{
    if let Some(d) = rules.declared
        && d > rules.max
    {
        return Err(GatewayError::EntityTooLarge {
            size: d,
            max: rules.max,
        });
    }
    let (tx, rx) = ChannelStream::channel(None);
    let put = node.put(rx);
    let pump = async move {
        let mut md5 = Md5::new();
        let mut size = 0u64;
        let result = loop {
            let next = match tokio::time::timeout(rules.idle, body.next()).await {
                Ok(n) => n,
                Err(_) => {
                    break Err(GatewayError::IncompleteBody(format!(
                        "the client sent nothing for {} s",
                        rules.idle.as_secs()
                    )));
                }
            };
            match next {
                Some(Ok(chunk)) => {
                    size += chunk.len() as u64;
                    if size > rules.max || rules.declared.is_some_and(|d| size > d) {
                        break Err(GatewayError::EntityTooLarge {
                            size,
                            max: rules.declared.unwrap_or(rules.max).min(rules.max),
                        });
                    }
                    md5.update(&chunk);
                    if tx.send(Ok(chunk)).await.is_err() {
                        break Err(GatewayError::Internal(
                            "the node stopped reading the upload".into(),
                        ));
                    }
                }
                Some(Err(e)) => break Err(e),
                None => break Ok(()),
            }
        };
        let digest: [u8; 16] = md5.finalize().into();
        let result = result.and_then(|()| {
            if let Some(d) = rules.declared
                && size < d
            {
                return Err(GatewayError::IncompleteBody(format!(
                    "{size} of the declared {d} bytes arrived"
                )));
            }
            if let Some(expected) = rules.md5
                && expected != digest
            {
                return Err(GatewayError::BadDigest {
                    expected: hex::encode(expected),
                    actual: hex::encode(digest),
                });
            }
            Ok(())
        });
        if let Err(e) = &result {
            // The node's put must not complete with a partial or wrong body.
            let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
        }
        drop(tx);
        result.map(|()| (hex::encode(digest), size))
    };
    let (pumped, stored) = tokio::join!(pump, put);
    match (pumped, stored) {
        (Ok((md5, size)), Ok(stored)) => Ok(StoredBody { stored, md5, size }),
        (Err(e), Ok(stored)) => {
            let _ = node.rm(&stored.cap).await;
            Err(e)
        }
        (Err(GatewayError::Internal(_)), Err(node_err)) | (Ok(_), Err(node_err)) => Err(node_err),
        (Err(e), Err(_)) => Err(e),
    }
}

/// Reads a body of at most [`crate::meta::INLINE_MAX`] bytes whole, under the
/// same rules as [`store`]; returns it and its MD5 (hex).
pub async fn read_small<S>(mut body: S, rules: BodyRules) -> Result<(Vec<u8>, String), GatewayError>
where
    S: Stream<Item = Result<Bytes, GatewayError>> + Unpin,
{
    let max = rules
        .declared
        .unwrap_or(0)
        .min(crate::meta::INLINE_MAX)
        .min(rules.max);
    let mut out = Vec::new();
    loop {
        let next = match tokio::time::timeout(rules.idle, body.next()).await {
            Ok(n) => n,
            Err(_) => {
                return Err(GatewayError::IncompleteBody(format!(
                    "the client sent nothing for {} s",
                    rules.idle.as_secs()
                )));
            }
        };
        match next {
            Some(Ok(chunk)) => {
                if out.len() as u64 + chunk.len() as u64 > max {
                    return Err(GatewayError::EntityTooLarge {
                        size: out.len() as u64 + chunk.len() as u64,
                        max,
                    });
                }
                out.extend_from_slice(&chunk);
            }
            Some(Err(e)) => return Err(e),
            None => break,
        }
    }
    if let Some(d) = rules.declared
        && (out.len() as u64) < d
    {
        return Err(GatewayError::IncompleteBody(format!(
            "{} of the declared {d} bytes arrived",
            out.len()
        )));
    }
    let digest: [u8; 16] = Md5::digest(&out).into();
    if let Some(expected) = rules.md5
        && expected != digest
    {
        return Err(GatewayError::BadDigest {
            expected: hex::encode(expected),
            actual: hex::encode(digest),
        });
    }
    Ok((out, hex::encode(digest)))
}

/// The parts (cap and size) that bytes `[start, end)` of an object made of
/// `parts` touch: cap, the part's size, and the range within it.
fn slices(
    parts: Vec<(String, u64)>,
    start: u64,
    end: u64,
) -> impl Iterator<Item = (String, u64, u64, u64)> {
    let mut offset = 0u64;
    parts
        .into_iter()
        .map(move |(cap, size)| {
            let at = offset;
            offset += size;
            (cap, size, at)
        })
        .filter(move |&(_, size, at)| size > 0 && at + size > start)
        .take_while(move |&(_, _, at)| at < end)
        .map(move |(cap, size, at)| (cap, size, start.max(at) - at, end.min(at + size) - at))
}

/// Node reads in flight for one GetObject: the part being sent and the
/// next. A multipart object is one Cairn object per part, and reading the
/// next part while this one is sent keeps the node's pipeline busy across
/// part boundaries (each part starts with a manifest lookup and a segment
/// fetch). Each read buffers at most [`CHANNEL_CHUNKS`] chunks here. Reads
/// of objects sealed under a customer key (SSE-C) are scheduled the same
/// way: the next part's node read runs while this part's chunks are opened.
///
/// The next part is asked for only once the current part's header has
/// arrived, so a read never holds one of the node's transfer permits
/// while an earlier part of the same GetObject waits for one: with more
/// parts ahead, or asked for earlier, GetObjects could fill the node's
/// permits with parts that nobody reads yet.
pub const PARTS_IN_FLIGHT: usize = 2;

/// One part's node read: its chunks, and whether the node began to answer.
struct PartRead {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    started: tokio::sync::oneshot::Receiver<Result<(), GatewayError>>,
}

/// Reports a failed read: on `started` if nothing was sent yet (the S3
/// client gets a proper error), else as the body's last item.
async fn report(
    started: &mut Option<tokio::sync::oneshot::Sender<Result<(), GatewayError>>>,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    err: GatewayError,
) {
    match started.take() {
        Some(st) => {
            let _ = st.send(Err(err));
        }
        None => {
            tracing::warn!("reading an object from the node failed: {err}");
            let _ = tx.send(Err(std::io::Error::other(err.to_string()))).await;
        }
    }
}

/// Starts reading bytes `[s, e)` of the Cairn object `cap` in `tasks`.
fn read_part(
    tasks: &mut tokio::task::JoinSet<()>,
    node: &Node,
    cap: String,
    s: u64,
    e: u64,
) -> PartRead {
    let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_CHUNKS);
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let node = node.clone();
    tasks.spawn(async move {
        let mut started = Some(started_tx);
        if let Err(err) = node.get_into(&cap, s, e, &tx, &mut started).await {
            report(&mut started, &tx, err).await;
        }
    });
    PartRead { rx, started }
}

/// One part of a read: stored bytes `[s, e)` of Cairn object `cap`, and,
/// for a part sealed under a customer key, the opener its chunks go
/// through (none: they are the body's bytes as they come).
struct Slice {
    cap: String,
    s: u64,
    e: u64,
    opener: Option<crate::sse::Opener>,
}

/// Streams `slices` in order into `tx`, with [`PARTS_IN_FLIGHT`] node
/// reads at once (plain and sealed reads alike). A failure before the
/// first byte is reported on the returned receiver, a later one as the
/// stream's last item.
fn spawn_slices<I>(
    node: Node,
    mut slices: I,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> tokio::sync::oneshot::Receiver<Result<(), GatewayError>>
where
    I: Iterator<Item = Slice> + Send + 'static,
{
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut started = Some(started_tx);
        // Dropped on return: reads still running are stopped.
        let mut tasks = tokio::task::JoinSet::new();
        // An opener is made with its read, so at most PARTS_IN_FLIGHT exist.
        let mut next = |tasks: &mut tokio::task::JoinSet<()>| {
            slices
                .next()
                .map(|sl| (read_part(tasks, &node, sl.cap, sl.s, sl.e), sl.opener))
        };
        let mut ahead = std::collections::VecDeque::new();
        while let Some((mut part, mut opener)) = ahead.pop_front().or_else(|| next(&mut tasks)) {
            let began = part.started.await.unwrap_or_else(|_| {
                Err(GatewayError::Internal(
                    "a node read ended before it began".into(),
                ))
            });
            if let Err(err) = began {
                report(&mut started, &tx, err).await;
                return;
            }
            if let Some(st) = started.take() {
                let _ = st.send(Ok(()));
            }
            // This part holds its node permit now: the next may ask for one.
            while ahead.len() + 1 < PARTS_IN_FLIGHT
                && let Some(p) = next(&mut tasks)
            {
                ahead.push_back(p);
            }
            while let Some(item) = part.rx.recv().await {
                let chunk = match item {
                    Ok(chunk) => chunk,
                    Err(e) => {
                        // The read failed midway: the body ends with it.
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                let Some(o) = opener.as_mut() else {
                    if tx.send(Ok(chunk)).await.is_err() {
                        // The S3 client went away.
                        return;
                    }
                    continue;
                };
                match o.push(&chunk) {
                    Ok(plain) => {
                        for b in plain {
                            if tx.send(Ok(b)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(err) => return report(&mut started, &tx, err).await,
                }
            }
            if opener.as_ref().is_some_and(|o| !o.finished()) {
                let err = GatewayError::Internal("a sealed part ended early".into());
                return report(&mut started, &tx, err).await;
            }
        }
        // Nothing to fetch (an empty range or object).
        if let Some(st) = started.take() {
            let _ = st.send(Ok(()));
        }
    });
    started_rx
}

/// Streams bytes `[start, end)` of the object made of `parts` (cap and
/// size, in order) into `tx`, with [`PARTS_IN_FLIGHT`] node reads at
/// once; a failure is sent as the stream's last item. The returned
/// receiver says whether the node began to answer: a failure before the
/// first byte is reported there instead, so the S3 client gets a proper
/// error rather than a cut body.
pub fn spawn_read(
    node: Node,
    parts: Vec<(String, u64)>,
    start: u64,
    end: u64,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> tokio::sync::oneshot::Receiver<Result<(), GatewayError>> {
    let slices = slices(parts, start, end).map(|(cap, _, s, e)| Slice {
        cap,
        s,
        e,
        opener: None,
    });
    spawn_slices(node, slices, tx)
}

/// Streams `body` into one new Cairn object sealed under `key` (an SSE-C
/// or SSE-KMS object's data key, [`crate::sse`]): the plaintext is checked
/// against `rules`, the sealed bytes are what the node stores. The
/// answer's `md5` (the ETag) is the sealed bytes' MD5, as S3's ETags of
/// SSE-C and SSE-KMS objects are not the plaintext's; its `size` is the
/// plaintext's.
pub async fn store_sealed<S>(
    node: &Node,
    body: S,
    rules: BodyRules,
    key: &crate::sse::DataKey,
) -> Result<StoredBody, GatewayError>
where
    S: Stream<Item = Result<Bytes, GatewayError>> + Unpin,
{
    let sealer = key.sealer()?;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let sealed = crate::sse::seal_stream(body, sealer, rules, done_tx);
    let mut stored = store(node, sealed, crate::sse::stored_rules(rules)).await?;
    match done_rx.await {
        Ok((_, plain)) => {
            stored.size = plain;
            Ok(stored)
        }
        Err(_) => {
            // Cannot happen: a stream that ends well reports first.
            let _ = node.rm(&stored.stored.cap).await;
            Err(GatewayError::Internal(
                "the sealer ended without its sums".into(),
            ))
        }
    }
}

/// [`spawn_read`] of an object sealed under data key `key` (SSE-C or
/// SSE-KMS): plaintext `[start, end)` of `parts` (cap and plaintext size),
/// each part's node read asking for the sealed chunks that hold its share
/// ([`crate::sse::stored_span`]), opened as they come while the next
/// part's read starts, as for plain reads.
pub fn spawn_read_sealed(
    node: Node,
    parts: Vec<(String, u64)>,
    key: crate::sse::DataKey,
    start: u64,
    end: u64,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> tokio::sync::oneshot::Receiver<Result<(), GatewayError>> {
    use crate::sse::{Opener, stored_span};
    let sealer = match key.sealer() {
        Ok(sealer) => sealer,
        Err(err) => {
            let (started_tx, started_rx) = tokio::sync::oneshot::channel();
            let _ = started_tx.send(Err(err));
            return started_rx;
        }
    };
    let slices = slices(parts, start, end).map(move |(cap, size, s, e)| {
        let (_, stored_s, stored_e) = stored_span(size, s, e);
        Slice {
            cap,
            s: stored_s,
            e: stored_e,
            opener: Some(Opener::new(sealer.clone(), size, s, e)),
        }
    });
    spawn_slices(node, slices, tx)
}

/// The bytes of an S3 request body, with its errors as [`GatewayError`]s.
pub fn s3_body(
    blob: Option<s3s::dto::StreamingBlob>,
) -> impl Stream<Item = Result<Bytes, GatewayError>> + Unpin {
    let stream =
        blob.map(|b| b.map(|r| r.map_err(|e| GatewayError::IncompleteBody(e.to_string()))));
    match stream {
        Some(s) => futures::future::Either::Left(s),
        None => futures::future::Either::Right(futures::stream::empty()),
    }
}

/// A channel stream as a source of bytes for [`store`].
pub fn from_channel(s: ChannelStream) -> impl Stream<Item = Result<Bytes, GatewayError>> + Unpin {
    s.map(|r| r.map_err(|e| GatewayError::Internal(format!("reading the copy source failed: {e}"))))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use axum::body::Body;
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use cairn_node::frames::{DATA, END, HEADER, frame};

    use super::*;

    /// Node reads running now, the most seen at once, the order asked, and
    /// objects stored as given bytes.
    #[derive(Default)]
    struct Seen {
        active: AtomicUsize,
        most: AtomicUsize,
        asked: Mutex<Vec<String>>,
        stored: Mutex<std::collections::HashMap<String, Bytes>>,
    }

    struct Running(Arc<Seen>);

    impl Drop for Running {
        fn drop(&mut self) {
            self.0.active.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// A node whose object `cairn:pN` is 1,000 bytes of `N`, and whose
    /// `stored` objects are their bytes; the header comes at once and the
    /// data 50 ms later. Others (`cairn:gone`) are missing.
    async fn get(
        State(seen): State<Arc<Seen>>,
        axum::Json(b): axum::Json<serde_json::Value>,
    ) -> Response {
        let cap = b["cap"].as_str().unwrap_or_default().to_string();
        seen.asked.lock().unwrap().push(cap.clone());
        let stored = seen.stored.lock().unwrap().get(&cap).cloned();
        let object = match cap
            .strip_prefix("cairn:p")
            .and_then(|n| n.parse::<u8>().ok())
        {
            Some(n) => Bytes::from(vec![n; 1000]),
            None => match stored {
                Some(bytes) => bytes,
                None => {
                    return (StatusCode::NOT_FOUND, r#"{"error": "no such object"}"#)
                        .into_response();
                }
            },
        };
        let now = seen.active.fetch_add(1, Ordering::SeqCst) + 1;
        seen.most.fetch_max(now, Ordering::SeqCst);
        let running = Running(seen.clone());
        let size = object.len() as u64;
        let (s, e) = (
            b["start"].as_u64().unwrap_or(0),
            b["end"].as_u64().unwrap_or(size),
        );
        let header = serde_json::json!({"size": size, "segments": 1, "start": s, "length": e - s});
        let head: Vec<Result<Bytes, std::io::Error>> =
            frame(HEADER, Bytes::from(header.to_string()))
                .into_iter()
                .map(Ok)
                .collect();
        let rest = async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let data = object.slice(s as usize..e as usize);
            let frames: Vec<Result<Bytes, std::io::Error>> = frame(DATA, data)
                .into_iter()
                .chain(frame(END, Bytes::new()))
                .map(Ok)
                .collect();
            drop(running);
            futures::stream::iter(frames)
        };
        let body = futures::stream::iter(head).chain(futures::stream::once(rest).flatten());
        Body::from_stream(body).into_response()
    }

    async fn node() -> (Arc<Seen>, Node) {
        let seen = Arc::new(Seen::default());
        let app = axum::Router::new()
            .route("/v1/get", axum::routing::post(get))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (
            seen,
            Node::new(&format!("http://{addr}"), [7; 32], 3600).unwrap(),
        )
    }

    async fn read(
        node: &Node,
        parts: &[&str],
        start: u64,
        end: u64,
    ) -> (Result<(), GatewayError>, Vec<u8>, bool) {
        let parts = parts.iter().map(|c| (c.to_string(), 1000)).collect();
        let (tx, rx) = ChannelStream::channel(None);
        let started = spawn_read(node.clone(), parts, start, end, tx);
        collect(started, rx).await
    }

    /// What a read came to: whether it began, its bytes, and whether it
    /// ended with an error.
    async fn collect(
        started: tokio::sync::oneshot::Receiver<Result<(), GatewayError>>,
        mut rx: ChannelStream,
    ) -> (Result<(), GatewayError>, Vec<u8>, bool) {
        let started = started.await.unwrap();
        let (mut out, mut failed) = (Vec::new(), false);
        while let Some(item) = rx.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(_) => failed = true,
            }
        }
        (started, out, failed)
    }

    #[tokio::test]
    async fn the_next_part_is_read_while_this_one_is_sent_and_no_more() {
        let (seen, node) = node().await;
        let parts = ["cairn:p1", "cairn:p2", "cairn:p3", "cairn:p4", "cairn:p5"];
        // From the middle of part 2 to the middle of part 5.
        let (started, out, failed) = read(&node, &parts, 1500, 4500).await;
        assert!(started.is_ok() && !failed);
        let mut want = vec![2u8; 500];
        want.extend([3u8; 1000]);
        want.extend([4u8; 1000]);
        want.extend([5u8; 500]);
        assert_eq!(out, want);
        assert_eq!(
            *seen.asked.lock().unwrap(),
            ["cairn:p2", "cairn:p3", "cairn:p4", "cairn:p5"]
        );
        // Two at once: the part being sent and the next.
        assert_eq!(seen.most.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_part_that_fails_ends_the_body_with_an_error_or_fails_before_it() {
        let (_, node) = node().await;
        // A later part: the bytes before it, then an error.
        let (started, out, failed) =
            read(&node, &["cairn:p1", "cairn:gone", "cairn:p3"], 0, 3000).await;
        assert!(started.is_ok());
        assert_eq!(out, vec![1u8; 1000]);
        assert!(failed);
        // The first part: the read fails before any byte, for a proper S3 error.
        let (started, out, failed) = read(&node, &["cairn:gone", "cairn:p2"], 0, 2000).await;
        assert!(started.is_err(), "{started:?}");
        assert!(out.is_empty() && !failed);
    }

    /// The data key of a new object under a customer key (a new salt, so a
    /// new data key, each call).
    fn data_key() -> crate::sse::DataKey {
        use md5::Digest;
        let key = [4u8; 32];
        let md5: [u8; 16] = Md5::digest(key).into();
        let (k, m) = (
            data_encoding::BASE64.encode(&key),
            data_encoding::BASE64.encode(&md5),
        );
        let key = crate::sse::CustomerKey::from_request(Some("AES256"), Some(&k), Some(&m), true)
            .unwrap()
            .unwrap();
        crate::sse::SseC::new(&key)
            .data_key(Some(&key), "o")
            .unwrap()
    }

    /// Plaintext `[start, end)` of an object made of `parts`, sealed under
    /// `key`.
    async fn read_sealed(
        node: &Node,
        key: &crate::sse::DataKey,
        parts: &[(&str, u64)],
        start: u64,
        end: u64,
    ) -> (Result<(), GatewayError>, Vec<u8>, bool) {
        let parts = parts.iter().map(|(c, n)| (c.to_string(), *n)).collect();
        let (tx, rx) = ChannelStream::channel(None);
        let started = spawn_read_sealed(node.clone(), parts, key.clone(), start, end, tx);
        collect(started, rx).await
    }

    #[tokio::test]
    async fn sealed_parts_are_read_ahead_and_open_to_the_exact_bytes() {
        use crate::sse::{CHUNK, seal_all};
        let (seen, node) = node().await;
        let key = data_key();
        let sealer = key.sealer().unwrap();
        // Parts that end inside a chunk, on a chunk's end, and of one byte.
        let sizes = [70_000usize, CHUNK, 1, 140_000, 5_000];
        let mut plain = vec![];
        let mut parts = vec![];
        for (i, &n) in sizes.iter().enumerate() {
            let data: Vec<u8> = (0..n).map(|j| ((i * 7 + j * 31) % 251) as u8).collect();
            let cap = format!("cairn:sealed{i}");
            seen.stored
                .lock()
                .unwrap()
                .insert(cap.clone(), Bytes::from(seal_all(&sealer, &data).unwrap()));
            plain.extend_from_slice(&data);
            parts.push((cap, n as u64));
        }
        let parts: Vec<(&str, u64)> = parts.iter().map(|(c, n)| (c.as_str(), *n)).collect();
        let total = plain.len() as u64;
        for (start, end) in [
            (0, total),
            // From inside part 0's second chunk to inside part 3.
            (66_000, 70_000 + CHUNK as u64 + 1 + 70_000),
            // The one-byte part alone, and a range ending on a chunk.
            (70_000 + CHUNK as u64, 70_000 + CHUNK as u64 + 1),
            (100, 70_000 + CHUNK as u64),
        ] {
            let (started, out, failed) = read_sealed(&node, &key, &parts, start, end).await;
            assert!(started.is_ok() && !failed, "{start}..{end}: {started:?}");
            assert_eq!(out, &plain[start as usize..end as usize], "{start}..{end}");
        }
        // The next part's read ran while this one's chunks were opened,
        // and never more than that.
        assert_eq!(seen.most.load(Ordering::SeqCst), PARTS_IN_FLIGHT);
        assert_eq!(
            seen.asked.lock().unwrap()[..sizes.len()],
            parts.iter().map(|p| p.0.to_string()).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn a_sealed_part_that_fails_ends_the_body_or_fails_before_it() {
        use crate::sse::seal_all;
        let (seen, node) = node().await;
        let key = data_key();
        let sealer = key.sealer().unwrap();
        let data = vec![9u8; 2_000];
        let sealed = Bytes::from(seal_all(&sealer, &data).unwrap());
        let mut damaged = sealed.to_vec();
        damaged[40] ^= 1;
        {
            let mut stored = seen.stored.lock().unwrap();
            stored.insert("cairn:s1".into(), sealed.clone());
            stored.insert("cairn:s3".into(), sealed);
            stored.insert("cairn:bad".into(), Bytes::from(damaged));
        }
        let p = |c: &'static str| (c, 2_000u64);
        // A missing later part: the bytes before it, then an error.
        let (started, out, failed) = read_sealed(
            &node,
            &key,
            &[p("cairn:s1"), p("cairn:gone"), p("cairn:s3")],
            0,
            6_000,
        )
        .await;
        assert!(started.is_ok());
        assert_eq!(out, data);
        assert!(failed);
        // A damaged later part: likewise.
        let (started, out, failed) =
            read_sealed(&node, &key, &[p("cairn:s1"), p("cairn:bad")], 0, 4_000).await;
        assert!(started.is_ok());
        assert_eq!(out, data);
        assert!(failed);
        // A missing first part: the read fails before any byte.
        let (started, out, failed) =
            read_sealed(&node, &key, &[p("cairn:gone"), p("cairn:s1")], 0, 4_000).await;
        assert!(started.is_err(), "{started:?}");
        assert!(out.is_empty() && !failed);
    }
}
