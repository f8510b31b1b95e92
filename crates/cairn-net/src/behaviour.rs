//! The libp2p behaviour of a Cairn node and the swarm that carries it.

use std::num::NonZeroUsize;
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::kad::store::{MemoryStore, MemoryStoreConfig};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, Swarm, connection_limits, identify, kad, mdns, noise, ping, request_response,
    tcp, yamux,
};

use crate::bufpool::BufPool;
use crate::protocol::{COMPUTE_PROTOCOL, PIECE_PROTOCOL, RECORD_PROTOCOL, WireCodec};

/// Kademlia under Cairn's own protocol name, so Cairn nodes form their own DHT.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/cairn/kad/1");
/// Identify protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/cairn/id/1";

/// The identify agent string: `cairn/VERSION`, plus ` zone=NAME` when the
/// node declares a failure domain.
pub fn agent_version(zone: Option<&str>) -> String {
    let base = format!("cairn/{}", env!("CARGO_PKG_VERSION"));
    match zone {
        Some(z) => format!("{base} zone={z}"),
        None => base,
    }
}

/// The zone a peer declared in its identify agent string, if any (at most
/// 64 characters; anything longer is ignored).
pub fn zone_of(agent_version: &str) -> Option<&str> {
    let zone = agent_version
        .split(' ')
        .find_map(|w| w.strip_prefix("zone="))?;
    (!zone.is_empty() && zone.len() <= 64).then_some(zone)
}

#[cfg(test)]
mod zone_tests {
    use super::*;

    #[test]
    fn zones_round_trip_through_the_agent_string() {
        assert_eq!(zone_of(&agent_version(Some("eu-west"))), Some("eu-west"));
        assert_eq!(zone_of(&agent_version(None)), None);
        assert_eq!(zone_of("cairn/0.1.0 zone="), None);
        assert_eq!(
            zone_of(&format!("cairn/0.1.0 zone={}", "x".repeat(65))),
            None
        );
    }
}

/// Swarm settings.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Discover peers on the local network with mDNS.
    pub mdns: bool,
    /// Most established connections in total.
    pub max_connections: u32,
    /// Most established connections per peer.
    pub max_connections_per_peer: u32,
    /// Most concurrent request streams per connection.
    pub max_streams: usize,
    /// Time a piece request may take.
    pub request_timeout: Duration,
    /// Where piece bodies off the wire are read into.
    pub bodies: BufPool,
    /// This node's declared failure domain (`--zone`), told to peers in the
    /// identify agent string as ` zone=NAME`.
    pub zone: Option<String>,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            mdns: true,
            max_connections: 512,
            max_connections_per_peer: 2,
            max_streams: 64,
            request_timeout: Duration::from_secs(120),
            bodies: BufPool::new(crate::protocol::BODY_POOL_BYTES),
            zone: None,
        }
    }
}

/// Building the swarm failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// Transport setup failed.
    #[error("could not set up the network transport: {0}")]
    Transport(String),
    /// mDNS setup failed.
    #[error("could not start mDNS discovery: {0}")]
    Mdns(String),
}

/// Everything a Cairn node speaks.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Caps connections so anyone connecting cannot exhaust the node.
    pub limits: connection_limits::Behaviour,
    /// The DHT: peer routing, and provider records for manifests.
    pub kad: kad::Behaviour<MemoryStore>,
    /// Exchanges listen addresses and protocols.
    pub identify: identify::Behaviour,
    /// Keeps connections alive and measures latency.
    pub ping: ping::Behaviour,
    /// Local-network discovery, optional.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// The piece protocol.
    pub piece: request_response::Behaviour<WireCodec>,
    /// The record protocol (manifests).
    pub record: request_response::Behaviour<WireCodec>,
    /// The compute protocol (adverts, tasks, reports).
    pub compute: request_response::Behaviour<WireCodec>,
}

/// Which transport a swarm uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TransportKind {
    /// TCP + Noise + Yamux, and QUIC (TLS 1.3 inside): real sockets.
    #[default]
    Tcp,
    /// In-process memory transport + Noise + Yamux, for fast multi-node unit tests.
    Memory,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn behaviour(key: &Keypair, cfg: &NetConfig) -> Result<Behaviour, BoxError> {
    let peer_id = key.public().to_peer_id();
    let limits = connection_limits::Behaviour::new(
        connection_limits::ConnectionLimits::default()
            .with_max_established(Some(cfg.max_connections))
            .with_max_established_per_peer(Some(cfg.max_connections_per_peer))
            .with_max_pending_incoming(Some(64)),
    );
    let mut kad_cfg = kad::Config::new(KAD_PROTOCOL);
    kad_cfg.set_query_timeout(Duration::from_secs(30));
    kad_cfg.set_max_packet_size(64 * 1024);
    kad_cfg.set_replication_factor(NonZeroUsize::new(20).unwrap_or(NonZeroUsize::MIN));
    let store = MemoryStore::with_config(
        peer_id,
        MemoryStoreConfig {
            max_records: 1024,
            max_provided_keys: 1 << 20,
            ..Default::default()
        },
    );
    let mut kad = kad::Behaviour::with_config(peer_id, store, kad_cfg);
    // Loopback and LAN nodes cannot confirm an external address, so force
    // server mode: every Cairn node answers DHT queries.
    kad.set_mode(Some(kad::Mode::Server));
    let identify = identify::Behaviour::new(
        identify::Config::new(IDENTIFY_PROTOCOL.to_string(), key.public())
            .with_agent_version(agent_version(cfg.zone.as_deref())),
    );
    let mdns = if cfg.mdns {
        Some(mdns::tokio::Behaviour::new(
            mdns::Config::default(),
            peer_id,
        )?)
    } else {
        None
    };
    let lane = |protocol| {
        request_response::Behaviour::with_codec(
            WireCodec::new(cfg.bodies.clone()),
            [(protocol, request_response::ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(cfg.request_timeout)
                .with_max_concurrent_streams(cfg.max_streams),
        )
    };
    let piece = lane(PIECE_PROTOCOL);
    let record = lane(RECORD_PROTOCOL);
    let compute = lane(COMPUTE_PROTOCOL);
    Ok(Behaviour {
        limits,
        kad,
        identify,
        ping: ping::Behaviour::default(),
        mdns: mdns.into(),
        piece,
        record,
        compute,
    })
}

/// Builds a swarm running [`Behaviour`] on tokio over the chosen transport.
pub fn build_swarm(
    keypair: Keypair,
    cfg: &NetConfig,
    transport: TransportKind,
) -> Result<Swarm<Behaviour>, NetError> {
    let idle = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(120));
    let builder = libp2p::SwarmBuilder::with_existing_identity(keypair).with_tokio();
    let swarm = match transport {
        TransportKind::Tcp => builder
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| NetError::Transport(e.to_string()))?
            // QUIC beside TCP: a node listens on whichever addresses it is
            // given (`/udp/PORT/quic-v1` for QUIC) and dials either.
            .with_quic()
            .with_behaviour(|key| behaviour(key, cfg))
            .map_err(|e| NetError::Mdns(e.to_string()))?
            .with_swarm_config(idle)
            .build(),
        TransportKind::Memory => builder
            .with_other_transport(|key| {
                use libp2p::core::Transport;
                use libp2p::core::transport::MemoryTransport;
                use libp2p::core::upgrade::Version;
                Ok::<_, BoxError>(
                    MemoryTransport::default()
                        .upgrade(Version::V1)
                        .authenticate(noise::Config::new(key)?)
                        .multiplex(yamux::Config::default())
                        .boxed(),
                )
            })
            .map_err(|e| NetError::Transport(e.to_string()))?
            .with_behaviour(|key| behaviour(key, cfg))
            .map_err(|e| NetError::Mdns(e.to_string()))?
            .with_swarm_config(idle)
            .build(),
    };
    Ok(swarm)
}
