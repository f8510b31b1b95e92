//! Cairn's libp2p layer: the piece, record and compute wire protocols with their codec and limits,
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
    COMPUTE_PROTOCOL, Comparison, ErrorCode, Lane, PIECE_PROTOCOL, RECORD_PROTOCOL, Request,
    RequestHeader, Response, ResponseHeader, WireCodec,
};
