//! The piece protocol, `/cairn/piece/1`: store, fetch, has, delete and status.
//!
//! One request and one response per stream. Each message is framed as
//!
//! | bytes | field |
//! |---|---|
//! | 4 | header length, big-endian, at most [`MAX_HEADER_BYTES`] |
//! | .. | header: postcard of [`RequestHeader`] or [`ResponseHeader`] |
//! | 4 | body length, big-endian, at most [`MAX_BODY_BYTES`] |
//! | .. | body: raw piece bytes (store requests and fetch responses), else empty |
//!
//! Piece bytes travel outside postcard so they are read straight into one
//! buffer. Both lengths are checked before anything is read. The body buffer
//! is a zeroed allocation, which the allocator maps as untouched zero pages,
//! so a peer that declares a large body and sends nothing costs no memory. The protocol version is in the protocol name; an
//! incompatible change gets a new name and both can be served side by side.

use std::io;

use bytes::Bytes;
use cairn_core::PieceId;
use cairn_core::buf::Buffers;
use cairn_core::params::MAX_PIECE_BYTES;
use futures::prelude::*;
use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

use crate::bufpool::BufPool;

/// The protocol name; the trailing number is the wire version.
pub const PIECE_PROTOCOL: StreamProtocol = StreamProtocol::new("/cairn/piece/1");
/// Largest header accepted.
pub const MAX_HEADER_BYTES: u32 = 256 * 1024;
/// Largest body accepted: one piece or one manifest.
pub const MAX_BODY_BYTES: u32 = MAX_PIECE_BYTES as u32;
/// Most ids in one `Has` request.
pub const MAX_HAS_IDS: usize = 4096;

/// What a stored blob is; manifests are announced in the DHT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobKind {
    /// An erasure-coded piece.
    Piece,
    /// A sealed manifest.
    Manifest,
}

/// A request header; `Store` carries the piece in the body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestHeader {
    /// Keep the body under `id`; `hash` is its BLAKE3.
    Store {
        /// Piece id.
        id: PieceId,
        /// Piece or manifest.
        kind: BlobKind,
        /// BLAKE3 of the body.
        hash: [u8; 32],
        /// Unix seconds after which the holder may drop it; 0 = no expiry.
        expires_at: u64,
    },
    /// Send back the piece.
    Fetch {
        /// Piece id.
        id: PieceId,
    },
    /// Which of these pieces do you hold?
    Has {
        /// At most [`MAX_HAS_IDS`].
        ids: Vec<PieceId>,
    },
    /// Drop a piece this requester stored.
    Delete {
        /// Piece id.
        id: PieceId,
    },
    /// Report capacity and usage.
    Status,
}

/// Why a request failed, for the requester's decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The node's storage is full.
    Full,
    /// Too many concurrent requests from this peer.
    Busy,
    /// The piece is not here.
    NotFound,
    /// The piece is here but failed its hash check.
    Corrupted,
    /// The request was malformed or not permitted.
    Refused,
    /// Something failed on the node.
    Internal,
}

/// A response header; `Data` carries the piece in the body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseHeader {
    /// The piece is stored (or already was).
    Stored,
    /// The body is the piece.
    Data,
    /// One answer per requested id.
    Has(Vec<bool>),
    /// Whether something was deleted.
    Deleted(bool),
    /// Capacity and usage in bytes.
    Status {
        /// Bytes in use.
        used: u64,
        /// Bytes offered.
        capacity: u64,
        /// Pieces held.
        pieces: u64,
    },
    /// The request failed.
    Error {
        /// Machine-readable reason.
        code: ErrorCode,
        /// Human-readable sentence.
        message: String,
    },
}

/// A request: header plus body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Header.
    pub header: RequestHeader,
    /// Body bytes (store only).
    pub body: Bytes,
}

/// A response: header plus body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Header.
    pub header: ResponseHeader,
    /// Body bytes (data only).
    pub body: Bytes,
}

impl Response {
    /// A header-only response.
    pub fn header(header: ResponseHeader) -> Self {
        Self {
            header,
            body: Bytes::new(),
        }
    }

    /// An error response.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::header(ResponseHeader::Error {
            code,
            message: message.into(),
        })
    }
}

/// Length-prefixed postcard header plus raw body, with size limits.
/// Bodies are read into buffers from a shared pool.
#[derive(Clone, Debug)]
pub struct PieceCodec {
    bodies: BufPool,
}

impl PieceCodec {
    /// A codec that reads bodies into buffers from `bodies`.
    pub fn new(bodies: BufPool) -> Self {
        Self { bodies }
    }
}

impl Default for PieceCodec {
    fn default() -> Self {
        Self::new(BufPool::new(BODY_POOL_BYTES))
    }
}

/// Spare body buffers a default codec keeps: sixteen 4 MiB pieces.
pub const BODY_POOL_BYTES: usize = 64 << 20;

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

async fn read_len<T: AsyncRead + Unpin>(io: &mut T, max: u32, what: &str) -> io::Result<usize> {
    let mut b = [0u8; 4];
    io.read_exact(&mut b).await?;
    let len = u32::from_be_bytes(b);
    if len > max {
        return Err(invalid(format!(
            "{what} of {len} bytes exceeds the {max}-byte limit"
        )));
    }
    Ok(len as usize)
}

async fn read_frame<T, H>(io: &mut T, bodies: &BufPool) -> io::Result<(H, Bytes)>
where
    T: AsyncRead + Unpin,
    H: for<'de> Deserialize<'de>,
{
    let hlen = read_len(io, MAX_HEADER_BYTES, "header").await?;
    let mut header = vec![0u8; hlen];
    io.read_exact(&mut header).await?;
    let header = postcard::from_bytes(&header).map_err(|e| invalid(format!("bad header: {e}")))?;
    let blen = read_len(io, MAX_BODY_BYTES, "body").await?;
    let mut body = bodies.take_zeroed(blen);
    io.read_exact(&mut body).await?;
    Ok((header, bodies.share(body)))
}

async fn write_frame<T, H>(io: &mut T, header: &H, body: &[u8]) -> io::Result<()>
where
    T: AsyncWrite + Unpin,
    H: Serialize,
{
    let header = postcard::to_stdvec(header).map_err(|e| invalid(e.to_string()))?;
    let hlen = u32::try_from(header.len())
        .ok()
        .filter(|l| *l <= MAX_HEADER_BYTES);
    let blen = u32::try_from(body.len())
        .ok()
        .filter(|l| *l <= MAX_BODY_BYTES);
    let (Some(hlen), Some(blen)) = (hlen, blen) else {
        return Err(invalid("message exceeds the protocol's size limits"));
    };
    io.write_all(&hlen.to_be_bytes()).await?;
    io.write_all(&header).await?;
    io.write_all(&blen.to_be_bytes()).await?;
    io.write_all(body).await?;
    io.flush().await?;
    io.close().await
}

impl libp2p::request_response::Codec for PieceCodec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        let (header, body) = read_frame(io, &self.bodies).await?;
        if let RequestHeader::Has { ids } = &header
            && ids.len() > MAX_HAS_IDS
        {
            return Err(invalid("too many ids in one has request"));
        }
        Ok(Request { header, body })
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        let (header, body) = read_frame(io, &self.bodies).await?;
        Ok(Response { header, body })
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req.header, &req.body).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res.header, &res.body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;
    use libp2p::request_response::Codec;

    fn block<F: Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    #[test]
    fn frames_roundtrip() {
        let req = Request {
            header: RequestHeader::Store {
                id: PieceId([1; 32]),
                kind: BlobKind::Piece,
                hash: [2; 32],
                expires_at: 9,
            },
            body: Bytes::from(vec![5; 1000]),
        };
        let mut buf = Cursor::new(Vec::new());
        block(PieceCodec::default().write_request(&PIECE_PROTOCOL, &mut buf, req.clone())).unwrap();
        let mut rd = Cursor::new(buf.into_inner());
        assert_eq!(
            block(PieceCodec::default().read_request(&PIECE_PROTOCOL, &mut rd)).unwrap(),
            req
        );
    }

    #[test]
    fn oversized_and_truncated_frames_are_refused() {
        let mut huge = Vec::new();
        huge.extend_from_slice(&(MAX_HEADER_BYTES + 1).to_be_bytes());
        let err =
            block(PieceCodec::default().read_request(&PIECE_PROTOCOL, &mut Cursor::new(huge)))
                .unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");

        let header = postcard::to_stdvec(&RequestHeader::Status).unwrap();
        let mut msg = (header.len() as u32).to_be_bytes().to_vec();
        msg.extend_from_slice(&header);
        msg.extend_from_slice(&(MAX_BODY_BYTES + 1).to_be_bytes());
        let err = block(
            PieceCodec::default().read_request(&PIECE_PROTOCOL, &mut Cursor::new(msg.clone())),
        )
        .unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");

        let mut short = msg[..msg.len() - 4].to_vec();
        short.extend_from_slice(&100u32.to_be_bytes());
        short.extend_from_slice(&[0; 10]);
        let err =
            block(PieceCodec::default().read_request(&PIECE_PROTOCOL, &mut Cursor::new(short)))
                .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
