//! Cairn's three request-response protocols:
//!
//! - `/cairn/piece/3` ([`PIECE_PROTOCOL`]): store, fetch, has, delete,
//!   status and audit of erasure-coded pieces, bodies up to one piece.
//!   Version 3 added `Audit`: a storage-proof challenge answered with a
//!   signed [`AuditAnswer`] in the response header (see
//!   [`cairn_core::audit`]); neither carries a body, and an answer's proof
//!   is at most [`MAX_PROOF_BYTES`].
//! - `/cairn/record/6` ([`RECORD_PROTOCOL`]): put and get of small records,
//!   bodies up to [`MAX_RECORD_BYTES`]: the sealed manifests, addressed by
//!   their [`ManifestId`] (the BLAKE3 of the record), and the repair
//!   records of [`cairn_core::record`], addressed by their
//!   [`RecordId`]. Version 2 added `PutRepair` (a steward merges the
//!   record), `GetRepair`, and `SyncRepair` (a holder reconciles its pieces
//!   of the object with the record: renews their lease, drops pieces
//!   reassigned elsewhere or deleted by the owner), and `Standing` (how a
//!   steward sees a holder: its audit score and why it moved).
//!   Version 3 added `PutIndex` (the receiver merges the body, an encoded
//!   account index of [`cairn_core::index`], into its copy) and `GetIndex`
//!   (answered with `Data` and the encoded index, or `NotFound`). An index
//!   is self-authenticating (every op is signed by the account its
//!   [`IndexId`] commits to), so any node may be asked; an index is at most
//!   [`MAX_INDEX_BYTES`], within the lane's body limit.
//!   Version 4 added `Evidence`: a steward passes the signed evidence of an
//!   audit a holder failed to the record's other stewards (see
//!   [`cairn_core::suspicion`]), a body of at most [`MAX_EVIDENCE_BYTES`].
//!   Version 5 gave `GetIndex` a `have` digest: a replica whose copy has
//!   that [`digest`](cairn_core::index::digest) answers `Unchanged` without
//!   a body, so a reader that is up to date does not move the whole index.
//!   Version 6 added `RepairDigests`: a steward sends a fellow steward the
//!   BLAKE3 of its copy of up to [`MAX_DIGESTS`] records at once and hears,
//!   per record, whether the other's copy is the same, differs or is
//!   missing (`Compared`), so copies that agree cost neither a request
//!   each nor their bytes.
//!
//! - `/cairn/compute/1` ([`COMPUTE_PROTOCOL`]): distributed compute
//!   (see [`cairn_core::compute::task`]). A scheduler asks a provider for
//!   its `Advert`, sends it one attempt of a unit (`RunUnit`, the body a
//!   postcard [`Task`]) or stops one (`CancelUnit`); the provider tells the
//!   scheduler what became of it (`UnitReport`, the body a postcard
//!   [`Report`]). Bodies are at most [`MAX_COMPUTE_BYTES`].
//!
//! All three speak the same envelope; each [`RequestHeader`] belongs to one
//! [`Lane`], and a header sent on the other protocol is refused.
//! One request and one response per stream. Each message is framed as
//!
//! | bytes | field |
//! |---|---|
//! | 4 | header length, big-endian, at most [`MAX_HEADER_BYTES`] |
//! | .. | header: postcard of [`RequestHeader`] or [`ResponseHeader`] |
//! | 4 | body length, big-endian, at most the lane's limit |
//! | .. | body: raw piece or record bytes, else empty |
//!
//! Piece bytes travel outside postcard so they are read straight into one
//! buffer (from a pool, see [`BufPool::take_filled`]). Both lengths are
//! checked before anything is read. The protocol version is in the protocol name; an
//! incompatible change gets a new name and both can be served side by side.

use std::io;

use bytes::Bytes;
use cairn_core::audit::{AuditAnswer, MAX_EVIDENCE_BYTES, MAX_PROOF_BYTES};
use cairn_core::buf::Buffers;
use cairn_core::compute::task::Advert;
#[cfg(doc)]
use cairn_core::compute::task::{Report, Task};
use cairn_core::compute::{JobId, UnitId};
use cairn_core::index::{IndexId, MAX_INDEX_BYTES};
use cairn_core::manifest::MAX_MANIFEST_BYTES;
use cairn_core::params::MAX_PIECE_BYTES;
use cairn_core::record::RecordId;
use cairn_core::{ManifestId, PieceId};
use futures::prelude::*;
use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

use crate::bufpool::BufPool;

/// The piece protocol; the trailing number is the wire version.
pub const PIECE_PROTOCOL: StreamProtocol = StreamProtocol::new("/cairn/piece/3");
/// The record protocol.
pub const RECORD_PROTOCOL: StreamProtocol = StreamProtocol::new("/cairn/record/6");
/// The compute protocol.
pub const COMPUTE_PROTOCOL: StreamProtocol = StreamProtocol::new("/cairn/compute/1");
/// Largest body on the compute lane: one task (a unit's arguments and
/// environment are at most about 1.3 MiB) or report.
pub const MAX_COMPUTE_BYTES: u32 = 2 << 20;
/// Largest header accepted.
pub const MAX_HEADER_BYTES: u32 = 256 * 1024;
/// Largest body on the piece protocol: one piece.
pub const MAX_BODY_BYTES: u32 = MAX_PIECE_BYTES as u32;
/// Largest body on the record protocol: one sealed manifest.
pub const MAX_RECORD_BYTES: u32 = MAX_MANIFEST_BYTES as u32;
// An account index must fit in one record-lane body.
const _: () = assert!(MAX_INDEX_BYTES <= MAX_RECORD_BYTES as usize);
/// Most ids in one `Has` request.
pub const MAX_HAS_IDS: usize = 4096;
/// Most records in one `RepairDigests` request.
pub const MAX_DIGESTS: usize = 1024;

/// Which protocol a request travels on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lane {
    /// [`PIECE_PROTOCOL`].
    Piece,
    /// [`RECORD_PROTOCOL`].
    Record,
    /// [`COMPUTE_PROTOCOL`].
    Compute,
}

impl Lane {
    /// The lane a protocol name stands for.
    pub fn of(protocol: &StreamProtocol) -> Option<Lane> {
        if *protocol == PIECE_PROTOCOL {
            Some(Lane::Piece)
        } else if *protocol == RECORD_PROTOCOL {
            Some(Lane::Record)
        } else if *protocol == COMPUTE_PROTOCOL {
            Some(Lane::Compute)
        } else {
            None
        }
    }

    /// Largest body on this lane.
    pub fn max_body(self) -> u32 {
        match self {
            Lane::Piece => MAX_BODY_BYTES,
            Lane::Record => MAX_RECORD_BYTES,
            Lane::Compute => MAX_COMPUTE_BYTES,
        }
    }
}

/// A request header; `Store` and `PutRecord` carry their bytes in the body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestHeader {
    /// Keep the body under `id`; `hash` is its BLAKE3.
    Store {
        /// Piece id.
        id: PieceId,
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
    /// Record lane: keep the body, whose BLAKE3 is `id`, and announce it in the DHT.
    PutRecord {
        /// The record's id, the BLAKE3 of its bytes.
        id: ManifestId,
        /// Unix seconds after which the holder may drop it; 0 = no expiry.
        expires_at: u64,
    },
    /// Record lane: send back the record.
    GetRecord {
        /// The record's id.
        id: ManifestId,
    },
    /// Record lane: merge the body, an encoded repair record, into your copy
    /// (you are one of its stewards).
    PutRepair {
        /// The record's id (checked against the body).
        id: RecordId,
    },
    /// Record lane: send back your copy of a repair record.
    GetRepair {
        /// The record's id.
        id: RecordId,
    },
    /// Record lane: how do you, as a steward, see holder `peer`? Answered
    /// with `Data` whose body is JSON (score, penalties, warning), or
    /// `NotFound` if you never audited it. Lets a node learn its own standing.
    Standing {
        /// The holder's peer id bytes (at most 64).
        peer: Vec<u8>,
    },
    /// Record lane: the body is the current repair record of an object you
    /// hold pieces of; renew, keep or drop them to match it.
    SyncRepair {
        /// The record's id (checked against the body).
        id: RecordId,
    },
    /// Prove you still hold piece `id`: answer the storage-proof challenge
    /// `(id, nonce)` with [`ResponseHeader::Audited`].
    Audit {
        /// Piece id.
        id: PieceId,
        /// The steward's fresh nonce; it selects the chunk group to prove.
        nonce: [u8; 32],
    },
    /// Record lane: merge the body, an encoded account index, into your
    /// copy (or keep it), and answer `Stored`.
    PutIndex {
        /// The index's id (checked against the body).
        id: IndexId,
    },
    /// Record lane: how does your copy of each of these repair records
    /// compare with mine (the BLAKE3 of its encoding)? Answered with
    /// [`ResponseHeader::Compared`], one [`Comparison`] per entry.
    RepairDigests {
        /// At most [`MAX_DIGESTS`] records and digests.
        entries: Vec<(RecordId, [u8; 32])>,
    },
    /// Record lane: send back your copy of an account index (`Data`), or
    /// `NotFound`; `Unchanged` if its digest is `have`.
    GetIndex {
        /// The index's id.
        id: IndexId,
        /// The [`digest`](cairn_core::index::digest) of the requester's copy.
        have: Option<[u8; 32]>,
    },
    /// Compute lane: what do you offer, and how loaded are you? Answered
    /// with [`ResponseHeader::Advert`].
    Advert,
    /// Compute lane: run one attempt of unit `unit` of job `job`; the body
    /// is the postcard [`Task`]. Answered `Stored` (accepted) or `Error`
    /// (`Busy`: no room now; `Refused`: never).
    RunUnit {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
    },
    /// Compute lane: stop your attempt of `unit`. Answered `Deleted`.
    CancelUnit {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
    },
    /// Compute lane: what became of your attempt of `unit` of `job` (you
    /// are its scheduler); the body is the postcard [`Report`]. Answered
    /// `Stored`, or `Error` (`NotFound` if the scheduler has no such
    /// attempt: stop it).
    UnitReport {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
    },
    /// Record lane (since `/cairn/record/4`): the body is signed
    /// [`AuditEvidence`](cairn_core::audit::AuditEvidence) that you, a
    /// fellow steward of record `id`, caught the holder of piece
    /// `(segment, index)` failing an audit. Answered `Stored`, or `Error`
    /// (`Refused`, `NotFound` if you do not steward `id`).
    Evidence {
        /// The record the piece belongs to.
        id: RecordId,
        /// The piece's segment.
        segment: u32,
        /// The piece's index.
        index: u16,
    },
}

impl RequestHeader {
    /// The protocol this request belongs on.
    pub fn lane(&self) -> Lane {
        match self {
            RequestHeader::PutRecord { .. }
            | RequestHeader::GetRecord { .. }
            | RequestHeader::PutRepair { .. }
            | RequestHeader::GetRepair { .. }
            | RequestHeader::SyncRepair { .. }
            | RequestHeader::Standing { .. }
            | RequestHeader::PutIndex { .. }
            | RequestHeader::GetIndex { .. }
            | RequestHeader::RepairDigests { .. }
            | RequestHeader::Evidence { .. } => Lane::Record,
            RequestHeader::Advert
            | RequestHeader::RunUnit { .. }
            | RequestHeader::CancelUnit { .. }
            | RequestHeader::UnitReport { .. } => Lane::Compute,
            _ => Lane::Piece,
        }
    }

    /// Largest body this request may carry on `lane`: audits, standing
    /// queries and index reads carry none, so a peer cannot attach a large
    /// body to one; an index write carries at most one index.
    fn max_body(&self, lane: Lane) -> u32 {
        match self {
            RequestHeader::Audit { .. }
            | RequestHeader::Standing { .. }
            | RequestHeader::GetIndex { .. }
            | RequestHeader::RepairDigests { .. }
            | RequestHeader::Advert
            | RequestHeader::CancelUnit { .. } => 0,
            // An index is refused past its own bound; do not read more.
            RequestHeader::PutIndex { .. } => lane.max_body().min(MAX_INDEX_BYTES as u32),
            RequestHeader::Evidence { .. } => lane.max_body().min(MAX_EVIDENCE_BYTES as u32),
            _ => lane.max_body(),
        }
    }
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
    /// The piece or record is stored (or already was).
    Stored,
    /// The body is the piece or record.
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
    /// The holder's signed answer to an `Audit` request.
    Audited(AuditAnswer),
    /// The answer to `Advert`.
    Advert(Advert),
    /// The answer to `SyncRepair`: pieces whose lease was renewed, and
    /// pieces dropped because the record no longer assigns them here.
    Synced {
        /// Pieces kept with the record's lease.
        renewed: u32,
        /// Pieces deleted.
        dropped: u32,
    },
    /// The answer to `GetIndex` when the copy's digest is the one the
    /// requester has.
    Unchanged,
    /// The answer to `RepairDigests`: one per entry, in order.
    Compared(Vec<Comparison>),
}

/// How a steward's copy of a record compares with a fellow steward's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Comparison {
    /// The same bytes.
    Same,
    /// Another copy (older, newer, or each with ops the other lacks).
    Differs,
    /// No copy here.
    Missing,
}

impl ResponseHeader {
    /// Largest body this response may carry on `lane`.
    fn max_body(&self, lane: Lane) -> u32 {
        match self {
            ResponseHeader::Audited(_)
            | ResponseHeader::Advert(_)
            | ResponseHeader::Unchanged
            | ResponseHeader::Compared(_) => 0,
            _ => lane.max_body(),
        }
    }
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

/// Length-prefixed postcard header plus raw body, with each lane's size
/// limits. Bodies are read into buffers from a shared pool.
#[derive(Clone, Debug)]
pub struct WireCodec {
    bodies: BufPool,
}

impl WireCodec {
    /// A codec that reads bodies into buffers from `bodies`.
    pub fn new(bodies: BufPool) -> Self {
        Self { bodies }
    }
}

impl Default for WireCodec {
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

/// Reads one frame; `max_body` gives the body limit for the header read, so
/// it is known before the body length is accepted.
async fn read_frame<T, H>(
    io: &mut T,
    bodies: &BufPool,
    max_body: impl FnOnce(&H) -> u32,
) -> io::Result<(H, Bytes)>
where
    T: AsyncRead + Unpin,
    H: for<'de> Deserialize<'de>,
{
    let hlen = read_len(io, MAX_HEADER_BYTES, "header").await?;
    let mut header = vec![0u8; hlen];
    io.read_exact(&mut header).await?;
    let header = postcard::from_bytes(&header).map_err(|e| invalid(format!("bad header: {e}")))?;
    let blen = read_len(io, max_body(&header), "body").await?;
    let mut body = bodies.take_filled(blen);
    io.read_exact(&mut body).await?;
    Ok((header, bodies.share(body)))
}

async fn write_frame<T, H>(io: &mut T, header: &H, body: &[u8], max_body: u32) -> io::Result<()>
where
    T: AsyncWrite + Unpin,
    H: Serialize,
{
    let header = postcard::to_stdvec(header).map_err(|e| invalid(e.to_string()))?;
    let hlen = u32::try_from(header.len())
        .ok()
        .filter(|l| *l <= MAX_HEADER_BYTES);
    let blen = u32::try_from(body.len()).ok().filter(|l| *l <= max_body);
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

fn lane(protocol: &StreamProtocol) -> io::Result<Lane> {
    Lane::of(protocol).ok_or_else(|| invalid(format!("unknown protocol {protocol}")))
}

impl libp2p::request_response::Codec for WireCodec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T>(&mut self, proto: &StreamProtocol, io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        let lane = lane(proto)?;
        let (header, body): (RequestHeader, _) =
            read_frame(io, &self.bodies, |h: &RequestHeader| h.max_body(lane)).await?;
        if header.lane() != lane {
            return Err(invalid(format!("that request does not belong on {proto}")));
        }
        if let RequestHeader::Has { ids } = &header
            && ids.len() > MAX_HAS_IDS
        {
            return Err(invalid("too many ids in one has request"));
        }
        if let RequestHeader::RepairDigests { entries } = &header
            && entries.len() > MAX_DIGESTS
        {
            return Err(invalid("too many records in one digests request"));
        }
        Ok(Request { header, body })
    }

    async fn read_response<T>(&mut self, proto: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        let lane = lane(proto)?;
        let (header, body): (ResponseHeader, _) =
            read_frame(io, &self.bodies, |h: &ResponseHeader| h.max_body(lane)).await?;
        // The header limit already bounded the allocation; this keeps an
        // answer within what any real proof can be.
        if let ResponseHeader::Audited(answer) = &header
            && answer.proof.len() > MAX_PROOF_BYTES
        {
            return Err(invalid(format!(
                "audit proof of {} bytes exceeds the {MAX_PROOF_BYTES}-byte limit",
                answer.proof.len()
            )));
        }
        Ok(Response { header, body })
    }

    async fn write_request<T>(
        &mut self,
        proto: &StreamProtocol,
        io: &mut T,
        req: Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let lane = lane(proto)?;
        if req.header.lane() != lane {
            return Err(invalid(format!("that request does not belong on {proto}")));
        }
        write_frame(io, &req.header, &req.body, lane.max_body()).await
    }

    async fn write_response<T>(
        &mut self,
        proto: &StreamProtocol,
        io: &mut T,
        res: Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res.header, &res.body, lane(proto)?.max_body()).await
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

    fn encode(proto: &StreamProtocol, req: Request) -> io::Result<Vec<u8>> {
        let mut buf = Cursor::new(Vec::new());
        block(WireCodec::default().write_request(proto, &mut buf, req))?;
        Ok(buf.into_inner())
    }

    fn decode(proto: &StreamProtocol, bytes: Vec<u8>) -> io::Result<Request> {
        block(WireCodec::default().read_request(proto, &mut Cursor::new(bytes)))
    }

    #[test]
    fn frames_roundtrip_on_both_lanes() {
        let piece = Request {
            header: RequestHeader::Store {
                id: PieceId([1; 32]),
                hash: [2; 32],
                expires_at: 9,
            },
            body: Bytes::from(vec![5; 1000]),
        };
        let record = Request {
            header: RequestHeader::PutRecord {
                id: ManifestId([3; 32]),
                expires_at: 0,
            },
            body: Bytes::from(vec![6; 1000]),
        };
        for (proto, req) in [(PIECE_PROTOCOL, piece), (RECORD_PROTOCOL, record)] {
            let bytes = encode(&proto, req.clone()).unwrap();
            assert_eq!(decode(&proto, bytes).unwrap(), req);
        }
    }

    #[test]
    fn compute_requests_travel_on_compute_1_only_within_its_limits() {
        assert_eq!(COMPUTE_PROTOCOL.as_ref(), "/cairn/compute/1");
        let job = JobId([1; 32]);
        let unit = UnitId([2; 32]);
        let run = Request {
            header: RequestHeader::RunUnit { job, unit },
            body: Bytes::from(vec![7; 4096]),
        };
        let advert = Request {
            header: RequestHeader::Advert,
            body: Bytes::new(),
        };
        for req in [run, advert.clone()] {
            let bytes = encode(&COMPUTE_PROTOCOL, req.clone()).unwrap();
            assert_eq!(decode(&COMPUTE_PROTOCOL, bytes).unwrap(), req);
            assert!(encode(&RECORD_PROTOCOL, req.clone()).is_err());
            assert!(encode(&PIECE_PROTOCOL, req).is_err());
        }
        // An advert query or a cancel carries no body.
        let err = decode(&COMPUTE_PROTOCOL, head_only(&advert.header, 1)).unwrap_err();
        assert!(err.to_string().contains("0-byte limit"), "{err}");
        let cancel = RequestHeader::CancelUnit { job, unit };
        assert!(decode(&COMPUTE_PROTOCOL, head_only(&cancel, 1)).is_err());
        // A task body is bounded by the lane.
        let report = RequestHeader::UnitReport { job, unit };
        let err = decode(&COMPUTE_PROTOCOL, head_only(&report, MAX_COMPUTE_BYTES + 1)).unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
    }

    #[test]
    fn index_requests_travel_on_the_record_lane_only() {
        assert_eq!(RECORD_PROTOCOL.as_ref(), "/cairn/record/6");
        let put = Request {
            header: RequestHeader::PutIndex {
                id: IndexId([4; 32]),
            },
            body: Bytes::from(vec![7; 4096]),
        };
        let get = Request {
            header: RequestHeader::GetIndex {
                id: IndexId([4; 32]),
                have: Some([9; 32]),
            },
            body: Bytes::new(),
        };
        for req in [put, get.clone()] {
            let bytes = encode(&RECORD_PROTOCOL, req.clone()).unwrap();
            assert_eq!(decode(&RECORD_PROTOCOL, bytes).unwrap(), req);
            assert!(encode(&PIECE_PROTOCOL, req).is_err());
        }
        // A get carries no body; a peer cannot attach one.
        let err = decode(&RECORD_PROTOCOL, head_only(&get.header, 1)).unwrap_err();
        assert!(
            err.to_string().contains("exceeds the 0-byte limit"),
            "{err}"
        );
        // A put carries one index at most, not a whole manifest's worth.
        let put = RequestHeader::PutIndex {
            id: IndexId([4; 32]),
        };
        let err = decode(
            &RECORD_PROTOCOL,
            head_only(&put, MAX_INDEX_BYTES as u32 + 1),
        )
        .unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
        let err = decode(&RECORD_PROTOCOL, head_only(&put, MAX_INDEX_BYTES as u32)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    }

    #[test]
    fn evidence_travels_on_the_record_lane_with_at_most_one_piece_of_evidence() {
        let evidence = RequestHeader::Evidence {
            id: RecordId([4; 32]),
            segment: 3,
            index: 7,
        };
        let req = Request {
            header: evidence.clone(),
            body: Bytes::from(vec![1; 300]),
        };
        let bytes = encode(&RECORD_PROTOCOL, req.clone()).unwrap();
        assert_eq!(decode(&RECORD_PROTOCOL, bytes).unwrap(), req);
        assert!(encode(&PIECE_PROTOCOL, req).is_err());
        let err = decode(
            &RECORD_PROTOCOL,
            head_only(&evidence, MAX_EVIDENCE_BYTES as u32 + 1),
        )
        .unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
        let err = decode(
            &RECORD_PROTOCOL,
            head_only(&evidence, MAX_EVIDENCE_BYTES as u32),
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    }

    #[test]
    fn digests_travel_on_the_record_lane_a_bounded_number_at_once() {
        let entries = |n: usize| RequestHeader::RepairDigests {
            entries: (0..n).map(|i| (RecordId([i as u8; 32]), [7; 32])).collect(),
        };
        let req = Request {
            header: entries(MAX_DIGESTS),
            body: Bytes::new(),
        };
        let bytes = encode(&RECORD_PROTOCOL, req.clone()).unwrap();
        assert_eq!(decode(&RECORD_PROTOCOL, bytes).unwrap(), req);
        assert!(encode(&PIECE_PROTOCOL, req).is_err());
        let over = encode(
            &RECORD_PROTOCOL,
            Request {
                header: entries(MAX_DIGESTS + 1),
                body: Bytes::new(),
            },
        )
        .unwrap();
        let err = decode(&RECORD_PROTOCOL, over).unwrap_err();
        assert!(err.to_string().contains("too many records"), "{err}");
        // The answer carries no body.
        let answer = Response {
            header: ResponseHeader::Compared(vec![
                Comparison::Same,
                Comparison::Differs,
                Comparison::Missing,
            ]),
            body: Bytes::new(),
        };
        let mut buf = Cursor::new(Vec::new());
        block(WireCodec::default().write_response(&RECORD_PROTOCOL, &mut buf, answer.clone()))
            .unwrap();
        let mut read = Cursor::new(buf.into_inner());
        let back = block(WireCodec::default().read_response(&RECORD_PROTOCOL, &mut read)).unwrap();
        assert_eq!(back, answer);
    }

    #[test]
    fn requests_are_refused_on_the_other_lane() {
        let get = Request {
            header: RequestHeader::GetRecord {
                id: ManifestId([3; 32]),
            },
            body: Bytes::new(),
        };
        let fetch = Request {
            header: RequestHeader::Fetch {
                id: PieceId([1; 32]),
            },
            body: Bytes::new(),
        };
        // Neither side sends or accepts a request on the wrong protocol.
        assert!(encode(&PIECE_PROTOCOL, get.clone()).is_err());
        assert!(encode(&RECORD_PROTOCOL, fetch.clone()).is_err());
        let on_record = encode(&RECORD_PROTOCOL, get).unwrap();
        let err = decode(&PIECE_PROTOCOL, on_record).unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
        let on_piece = encode(&PIECE_PROTOCOL, fetch).unwrap();
        assert!(decode(&RECORD_PROTOCOL, on_piece).is_err());
    }

    /// A request head declaring a body of `body_len` bytes, with no body.
    fn head_only(header: &RequestHeader, body_len: u32) -> Vec<u8> {
        let header = postcard::to_stdvec(header).unwrap();
        let mut msg = (header.len() as u32).to_be_bytes().to_vec();
        msg.extend_from_slice(&header);
        msg.extend_from_slice(&body_len.to_be_bytes());
        msg
    }

    #[test]
    fn each_lane_has_its_body_limit() {
        let put = RequestHeader::PutRecord {
            id: ManifestId([3; 32]),
            expires_at: 0,
        };
        let err = decode(&RECORD_PROTOCOL, head_only(&put, MAX_RECORD_BYTES + 1)).unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
        // The same length is within the piece lane's limit: reading goes on
        // (and here runs out of bytes) instead of refusing the size.
        let store = RequestHeader::Store {
            id: PieceId([1; 32]),
            hash: [2; 32],
            expires_at: 0,
        };
        let err = decode(&PIECE_PROTOCOL, head_only(&store, MAX_RECORD_BYTES + 1)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    }

    fn encode_response(res: Response) -> io::Result<Vec<u8>> {
        let mut buf = Cursor::new(Vec::new());
        block(WireCodec::default().write_response(&PIECE_PROTOCOL, &mut buf, res))?;
        Ok(buf.into_inner())
    }

    fn decode_response(bytes: Vec<u8>) -> io::Result<Response> {
        block(WireCodec::default().read_response(&PIECE_PROTOCOL, &mut Cursor::new(bytes)))
    }

    #[test]
    fn audits_travel_on_the_piece_lane_without_bodies() {
        use cairn_core::audit::Challenge;
        use cairn_core::keys::SecretKey;

        let audit = RequestHeader::Audit {
            id: PieceId([1; 32]),
            nonce: [2; 32],
        };
        let req = Request {
            header: audit.clone(),
            body: Bytes::new(),
        };
        let bytes = encode(&PIECE_PROTOCOL, req.clone()).unwrap();
        // Two lengths, the variant, the id and the nonce: an audit costs 73 bytes out.
        assert_eq!(bytes.len(), 4 + 1 + 32 + 32 + 4);
        assert_eq!(decode(&PIECE_PROTOCOL, bytes).unwrap(), req);
        assert!(encode(&RECORD_PROTOCOL, req).is_err());
        // A body declared on an audit is refused by its length, before it is read.
        let err = decode(&PIECE_PROTOCOL, head_only(&audit, 1)).unwrap_err();
        assert!(
            err.to_string().contains("exceeds the 0-byte limit"),
            "{err}"
        );

        let key = SecretKey::from_bytes([3; 32]);
        let challenge = Challenge {
            piece: PieceId([1; 32]),
            nonce: [2; 32],
        };
        let answer = AuditAnswer::sign(&key, challenge, vec![7; MAX_PROOF_BYTES]);
        let answer_len = answer.to_bytes().unwrap().len();
        let res = Response::header(ResponseHeader::Audited(answer));
        let bytes = encode_response(res.clone()).unwrap();
        // The answer travels as its own postcard bytes behind the variant.
        assert_eq!(bytes.len(), 4 + 1 + answer_len + 4);
        assert_eq!(decode_response(bytes).unwrap(), res);

        let too_big = AuditAnswer::sign(&key, challenge, vec![7; MAX_PROOF_BYTES + 1]);
        let bytes = encode_response(Response::header(ResponseHeader::Audited(too_big))).unwrap();
        let err = decode_response(bytes).unwrap_err();
        assert!(err.to_string().contains("audit proof"), "{err}");
        // An answer with a body is refused like an audit request with one.
        let with_body = Response {
            header: res.header,
            body: Bytes::from_static(b"x"),
        };
        let bytes = encode_response(with_body).unwrap();
        let err = decode_response(bytes).unwrap_err();
        assert!(
            err.to_string().contains("exceeds the 0-byte limit"),
            "{err}"
        );
    }

    #[test]
    fn oversized_and_truncated_frames_are_refused() {
        let mut huge = Vec::new();
        huge.extend_from_slice(&(MAX_HEADER_BYTES + 1).to_be_bytes());
        let err = block(WireCodec::default().read_request(&PIECE_PROTOCOL, &mut Cursor::new(huge)))
            .unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");

        let msg = head_only(&RequestHeader::Status, MAX_BODY_BYTES + 1);
        let err = block(
            WireCodec::default().read_request(&PIECE_PROTOCOL, &mut Cursor::new(msg.clone())),
        )
        .unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");

        let mut short = msg[..msg.len() - 4].to_vec();
        short.extend_from_slice(&100u32.to_be_bytes());
        short.extend_from_slice(&[0; 10]);
        let err =
            block(WireCodec::default().read_request(&PIECE_PROTOCOL, &mut Cursor::new(short)))
                .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
