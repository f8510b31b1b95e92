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
    /// Bytes.
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

/// Streams bytes `[start, end)` of the object made of `parts` (cap and
/// size, in order) into `tx`; a failure is sent as the stream's last item.
/// The returned receiver says whether the node began to answer: a failure
/// before the first byte is reported there instead, so the S3 client gets a
/// proper error rather than a cut body.
pub fn spawn_read(
    node: Node,
    parts: Vec<(String, u64)>,
    start: u64,
    end: u64,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> tokio::sync::oneshot::Receiver<Result<(), GatewayError>> {
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut started = Some(started_tx);
        let mut offset = 0u64;
        for (cap, size) in parts {
            let (p_start, p_end) = (offset, offset + size);
            offset = p_end;
            if p_end <= start || size == 0 {
                continue;
            }
            if p_start >= end {
                break;
            }
            let s = start.max(p_start) - p_start;
            let e = end.min(p_end) - p_start;
            if let Err(err) = node.get_into(&cap, s, e, &tx, &mut started).await {
                match started.take() {
                    Some(st) => {
                        let _ = st.send(Err(err));
                    }
                    None => {
                        tracing::warn!("reading an object from the node failed: {err}");
                        let _ = tx.send(Err(std::io::Error::other(err.to_string()))).await;
                    }
                }
                return;
            }
            if tx.is_closed() {
                return;
            }
        }
        // Nothing to fetch (an empty range or object).
        if let Some(st) = started.take() {
            let _ = st.send(Ok(()));
        }
    });
    started_rx
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
