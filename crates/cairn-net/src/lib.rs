//! Cairn's libp2p layer: the piece wire protocol with its codec and limits,
//! and the swarm behaviour (Kademlia, identify, ping, mDNS, connection limits).
//!
//! The codec is runtime-free; only [`build_swarm`] picks tokio.

pub mod behaviour;
pub mod bufpool;
pub mod protocol;

pub use behaviour::{Behaviour, BehaviourEvent, NetConfig, NetError, TransportKind, build_swarm};
pub use bufpool::BufPool;
pub use libp2p;
pub use protocol::{
    BlobKind, ErrorCode, PIECE_PROTOCOL, PieceCodec, Request, RequestHeader, Response,
    ResponseHeader,
};
