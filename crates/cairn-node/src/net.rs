//! The swarm driver: one task owns the libp2p swarm; everything else talks to
//! it through a cloneable [`NetHandle`] over a bounded channel.
//!
//! The loop is `select! { biased; shutdown, local commands, swarm events }`:
//! local work is served before remote work is accepted. Inbound piece and
//! record requests are handed to the piece service over a bounded channel; a peer
//! with too many requests in flight, or a full channel, gets `Busy` at once
//! instead of queueing without bound.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use cairn_net::libp2p::futures::StreamExt;
use cairn_net::libp2p::kad::{self, GetClosestPeersOk, GetProvidersOk, QueryId, QueryResult};
use cairn_net::libp2p::multiaddr::Protocol;
use cairn_net::libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use cairn_net::libp2p::swarm::SwarmEvent;
use cairn_net::libp2p::{Multiaddr, PeerId, Swarm, identify, mdns};
use cairn_net::{Behaviour, BehaviourEvent, ErrorCode, Lane, Request, Response, WireCodec};
use tokio::sync::{mpsc, oneshot, watch};

/// Most requests (pieces and records) one peer may have in flight at this node.
pub const MAX_INBOUND_PER_PEER: usize = 16;
/// Depth of the command channel.
const COMMAND_QUEUE: usize = 256;
/// Depth of the inbound request channel.
pub const INBOUND_QUEUE: usize = 64;
/// Depth of the inbound compute request channel (its own, so compute
/// traffic cannot crowd out piece requests, nor the reverse).
pub const COMPUTE_QUEUE: usize = 64;

/// A request to a peer failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// No connection could be made.
    #[error("peer {peer} is unreachable: {reason}")]
    Unreachable {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// No answer in time.
    #[error("peer {0} did not answer in time")]
    Timeout(PeerId),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    Closed,
}

/// A snapshot of the swarm.
#[derive(Debug, Clone)]
pub struct NetInfo {
    /// This node.
    pub peer_id: PeerId,
    /// Addresses we listen on.
    pub listen_addrs: Vec<Multiaddr>,
    /// Peers with an open connection.
    pub connected: Vec<PeerId>,
    /// Peers in the DHT routing table.
    pub routing: Vec<PeerId>,
}

/// An inbound request for the piece service.
pub struct Inbound {
    /// What was asked.
    pub request: Request,
    /// Who asked, and where the answer goes (via [`NetHandle::respond`]).
    pub reply: Reply,
}

/// Where the answer to an inbound request goes.
pub struct Reply {
    /// Who asked.
    pub peer: PeerId,
    /// On which protocol; the answer goes back on it.
    lane: Lane,
    channel: ResponseChannel<Response>,
}

enum Command {
    Request {
        peer: PeerId,
        request: Request,
        reply: oneshot::Sender<Result<Response, RequestError>>,
    },
    Respond {
        peer: PeerId,
        lane: Lane,
        channel: ResponseChannel<Response>,
        response: Response,
    },
    Closest {
        key: Vec<u8>,
        count: usize,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    ClosestLocal {
        key: Vec<u8>,
        count: usize,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Providers {
        key: Vec<u8>,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Provide {
        key: Vec<u8>,
    },
    Info {
        reply: oneshot::Sender<NetInfo>,
    },
    Zones {
        peers: Vec<PeerId>,
        reply: oneshot::Sender<Vec<Option<String>>>,
    },
    RemoteIps {
        peers: Vec<PeerId>,
        reply: oneshot::Sender<Vec<Option<IpAddr>>>,
    },
}

/// The only way to use the swarm from outside the driver.
#[derive(Clone)]
pub struct NetHandle {
    tx: mpsc::Sender<Command>,
    local: PeerId,
}

impl NetHandle {
    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Sends a request (on its header's protocol) and waits for the answer (at most `timeout`).
    pub async fn request(
        &self,
        peer: PeerId,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, RequestError> {
        let fut = self.call(|reply| Command::Request {
            peer,
            request,
            reply,
        });
        match tokio::time::timeout(timeout, fut).await {
            Ok(Some(r)) => r,
            Ok(None) => Err(RequestError::Closed),
            Err(_) => Err(RequestError::Timeout(peer)),
        }
    }

    /// Answers an inbound request.
    pub async fn respond(&self, reply: Reply, response: Response) {
        let Reply {
            peer,
            lane,
            channel,
        } = reply;
        // If the driver is gone the node is stopping; the answer has nowhere to go.
        let _ = self
            .tx
            .send(Command::Respond {
                peer,
                lane,
                channel,
                response,
            })
            .await;
    }

    /// Up to `count` peers closest to `key` in the DHT (excluding this node).
    pub async fn closest_peers(&self, key: &[u8], count: usize) -> Vec<PeerId> {
        self.call(|reply| Command::Closest {
            key: key.to_vec(),
            count,
            reply,
        })
        .await
        .unwrap_or_default()
    }

    /// Up to `count` peers closest to `key` in this node's routing table,
    /// without asking the network (cheap; for checking who is a steward).
    pub async fn closest_local(&self, key: &[u8], count: usize) -> Vec<PeerId> {
        self.call(|reply| Command::ClosestLocal {
            key: key.to_vec(),
            count,
            reply,
        })
        .await
        .unwrap_or_default()
    }

    /// Peers that announced they hold `key`.
    pub async fn providers(&self, key: &[u8]) -> Vec<PeerId> {
        self.call(|reply| Command::Providers {
            key: key.to_vec(),
            reply,
        })
        .await
        .unwrap_or_default()
    }

    /// Announces that this node holds `key`.
    pub async fn provide(&self, key: &[u8]) {
        let _ = self.tx.send(Command::Provide { key: key.to_vec() }).await;
    }

    /// A snapshot of the swarm.
    pub async fn info(&self) -> Option<NetInfo> {
        self.call(|reply| Command::Info { reply }).await
    }

    /// The zone each peer declared (via identify), if any, in order;
    /// connected peers only. A zone is the operator's own declaration (as in
    /// Storj's placement rules); the /24 rule, which comes from the
    /// connection, applies whatever a peer declares.
    pub async fn zones(&self, peers: &[PeerId]) -> Vec<Option<String>> {
        let peers = peers.to_vec();
        self.call(|reply| Command::Zones { peers, reply })
            .await
            .unwrap_or_default()
    }

    /// The IP address each of `peers` is connected from or at, in order;
    /// `None` for a peer without an open connection. Placement groups nodes
    /// by these, so they come from the connection, not from what a peer says
    /// about itself.
    pub async fn remote_ips(&self, peers: &[PeerId]) -> Vec<Option<IpAddr>> {
        let peers = peers.to_vec();
        self.call(|reply| Command::RemoteIps { peers, reply })
            .await
            .unwrap_or_default()
    }
}

/// The IP address in a multiaddr, if it has one (DNS names do not count).
fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

type Parked = Vec<(
    PeerId,
    Request,
    oneshot::Sender<Result<Response, RequestError>>,
)>;

struct Driver {
    swarm: Swarm<Behaviour>,
    inbound: mpsc::Sender<Inbound>,
    compute: mpsc::Sender<Inbound>,
    inbound_per_peer: HashMap<PeerId, usize>,
    /// Request ids are per protocol, so the lane is part of the key.
    pending: HashMap<(Lane, OutboundRequestId), oneshot::Sender<Result<Response, RequestError>>>,
    /// Requests to peers whose address we do not know yet, waiting for a DHT lookup.
    parked: HashMap<QueryId, Parked>,
    closest: HashMap<QueryId, (usize, oneshot::Sender<Vec<PeerId>>)>,
    providers: HashMap<QueryId, (HashSet<PeerId>, oneshot::Sender<Vec<PeerId>>)>,
    /// The remote IP of each connected peer (its latest connection's).
    remote: HashMap<PeerId, IpAddr>,
    /// Declared zones of connected peers (bounded by the connection limit).
    zones: HashMap<PeerId, String>,
}

/// The inbound request streams of a node.
pub struct InboundStreams {
    /// Piece and record requests, for the piece service.
    pub pieces: mpsc::Receiver<Inbound>,
    /// Compute requests, for the compute service.
    pub compute: mpsc::Receiver<Inbound>,
}

/// Starts the driver task; returns its handle and the inbound request streams.
pub fn spawn(
    mut swarm: Swarm<Behaviour>,
    bootstrap: Vec<Multiaddr>,
    mut shutdown: watch::Receiver<bool>,
) -> (NetHandle, InboundStreams, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel(COMMAND_QUEUE);
    let (in_tx, in_rx) = mpsc::channel(INBOUND_QUEUE);
    let (compute_tx, compute_rx) = mpsc::channel(COMPUTE_QUEUE);
    let local = *swarm.local_peer_id();
    for addr in bootstrap {
        if let Err(e) = swarm.dial(addr.clone()) {
            tracing::warn!(%addr, "cannot dial bootstrap address: {e}");
        }
    }
    let mut d = Driver {
        swarm,
        inbound: in_tx,
        compute: compute_tx,
        inbound_per_peer: HashMap::new(),
        pending: HashMap::new(),
        parked: HashMap::new(),
        closest: HashMap::new(),
        providers: HashMap::new(),
        remote: HashMap::new(),
        zones: HashMap::new(),
    };
    let task = tokio::spawn(async move {
        let mut refresh = tokio::time::interval(Duration::from_secs(30));
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                cmd = rx.recv() => match cmd {
                    Some(cmd) => d.command(cmd),
                    None => break,
                },
                ev = d.swarm.select_next_some() => d.event(ev),
                _ = refresh.tick() => {
                    // Keeps the routing table fresh as nodes come and go.
                    let _ = d.swarm.behaviour_mut().kad.bootstrap();
                }
            }
        }
    });
    let streams = InboundStreams {
        pieces: in_rx,
        compute: compute_rx,
    };
    (NetHandle { tx, local }, streams, task)
}

impl Driver {
    fn lane(&mut self, lane: Lane) -> &mut request_response::Behaviour<WireCodec> {
        let b = self.swarm.behaviour_mut();
        match lane {
            Lane::Piece => &mut b.piece,
            Lane::Record => &mut b.record,
            Lane::Compute => &mut b.compute,
        }
    }

    fn knows(&mut self, peer: &PeerId) -> bool {
        if self.swarm.is_connected(peer) {
            return true;
        }
        self.swarm
            .behaviour_mut()
            .kad
            .kbucket(*peer)
            .is_some_and(|b| b.iter().any(|e| e.node.key.preimage() == peer))
    }

    fn send(
        &mut self,
        peer: PeerId,
        request: Request,
        reply: oneshot::Sender<Result<Response, RequestError>>,
    ) {
        let lane = request.header.lane();
        let id = self.lane(lane).send_request(&peer, request);
        self.pending.insert((lane, id), reply);
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Request {
                peer,
                request,
                reply,
            } => {
                if peer == *self.swarm.local_peer_id() {
                    let _ = reply.send(Err(RequestError::Unreachable {
                        peer,
                        reason: "that is this node".into(),
                    }));
                } else if self.knows(&peer) {
                    self.send(peer, request, reply);
                } else {
                    let q = self.swarm.behaviour_mut().kad.get_closest_peers(peer);
                    self.parked
                        .entry(q)
                        .or_default()
                        .push((peer, request, reply));
                }
            }
            Command::Respond {
                peer,
                lane,
                channel,
                response,
            } => {
                if let Some(n) = self.inbound_per_peer.get_mut(&peer) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.inbound_per_peer.remove(&peer);
                    }
                }
                let _ = self.lane(lane).send_response(channel, response);
            }
            Command::Closest { key, count, reply } => {
                let n = NonZeroUsize::new(count).unwrap_or(NonZeroUsize::MIN);
                let q = self.swarm.behaviour_mut().kad.get_n_closest_peers(key, n);
                self.closest.insert(q, (count, reply));
            }
            Command::ClosestLocal { key, count, reply } => {
                let target = cairn_net::libp2p::kad::KBucketKey::new(key);
                let peers = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_closest_local_peers(&target)
                    .take(count)
                    .map(|k| *k.preimage())
                    .collect();
                let _ = reply.send(peers);
            }
            Command::Providers { key, reply } => {
                let q = self.swarm.behaviour_mut().kad.get_providers(key.into());
                self.providers.insert(q, (HashSet::new(), reply));
            }
            Command::Provide { key } => {
                if let Err(e) = self.swarm.behaviour_mut().kad.start_providing(key.into()) {
                    tracing::warn!("cannot announce a manifest: {e}");
                }
            }
            Command::Info { reply } => {
                let swarm = &mut self.swarm;
                let mut routing = Vec::new();
                for bucket in swarm.behaviour_mut().kad.kbuckets() {
                    routing.extend(bucket.iter().map(|e| *e.node.key.preimage()));
                }
                let _ = reply.send(NetInfo {
                    peer_id: *swarm.local_peer_id(),
                    listen_addrs: swarm.listeners().cloned().collect(),
                    connected: swarm.connected_peers().copied().collect(),
                    routing,
                });
            }
            Command::RemoteIps { peers, reply } => {
                let ips = peers.iter().map(|p| self.remote.get(p).copied()).collect();
                let _ = reply.send(ips);
            }
            Command::Zones { peers, reply } => {
                let zones = peers.iter().map(|p| self.zones.get(p).cloned()).collect();
                let _ = reply.send(zones);
            }
        }
    }

    fn event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::Behaviour(BehaviourEvent::Piece(ev)) => self.request_event(Lane::Piece, ev),
            SwarmEvent::Behaviour(BehaviourEvent::Record(ev)) => {
                self.request_event(Lane::Record, ev)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Compute(ev)) => {
                self.request_event(Lane::Compute, ev)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result,
                step,
                ..
            })) => self.query_event(id, result, step.last),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) if info.protocols.contains(&cairn_net::behaviour::KAD_PROTOCOL) => {
                // A declared zone keeps pieces of one segment out of it together.
                match cairn_net::behaviour::zone_of(&info.agent_version) {
                    Some(z) => {
                        self.zones.insert(peer_id, z.to_string());
                    }
                    None => {
                        self.zones.remove(&peer_id);
                    }
                }
                // Only Cairn nodes enter the routing table.
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr);
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => tracing::info!(%address, "listening"),
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                // Dialled: the address we reached; accepted: where it came from.
                if let Some(ip) = ip_of(endpoint.get_remote_address()) {
                    self.remote.insert(peer_id, ip);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.remote.remove(&peer_id);
                self.zones.remove(&peer_id);
            }
            _ => {}
        }
    }

    fn request_event(&mut self, lane: Lane, ev: request_response::Event<Request, Response>) {
        use request_response::{Event, Message};
        match ev {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let n = self.inbound_per_peer.entry(peer).or_default();
                if *n >= MAX_INBOUND_PER_PEER {
                    let busy = Response::error(
                        ErrorCode::Busy,
                        "too many requests in flight from your node; retry later",
                    );
                    let _ = self.lane(lane).send_response(channel, busy);
                    return;
                }
                *n += 1;
                let queue = match lane {
                    Lane::Compute => &self.compute,
                    Lane::Piece | Lane::Record => &self.inbound,
                };
                if let Err(e) = queue.try_send(Inbound {
                    request,
                    reply: Reply {
                        peer,
                        lane,
                        channel,
                    },
                }) {
                    if let Some(n) = self.inbound_per_peer.get_mut(&peer) {
                        *n = n.saturating_sub(1);
                    }
                    let busy = Response::error(ErrorCode::Busy, "this node is busy; retry later");
                    let channel = match e {
                        mpsc::error::TrySendError::Full(i)
                        | mpsc::error::TrySendError::Closed(i) => i.reply.channel,
                    };
                    let _ = self.lane(lane).send_response(channel, busy);
                }
            }
            Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(reply) = self.pending.remove(&(lane, request_id)) {
                    let _ = reply.send(Ok(response));
                }
            }
            Event::OutboundFailure {
                request_id,
                error,
                peer,
                ..
            } => {
                if let Some(reply) = self.pending.remove(&(lane, request_id)) {
                    let err = match error {
                        request_response::OutboundFailure::Timeout => RequestError::Timeout(peer),
                        other => RequestError::Unreachable {
                            peer,
                            reason: other.to_string(),
                        },
                    };
                    let _ = reply.send(Err(err));
                }
            }
            Event::InboundFailure { peer, .. } => {
                // The stream died before we answered; forget it so the peer's quota frees up.
                if let Some(n) = self.inbound_per_peer.get_mut(&peer) {
                    *n = n.saturating_sub(1);
                }
            }
            Event::ResponseSent { .. } => {}
        }
    }

    fn query_event(&mut self, id: QueryId, result: QueryResult, last: bool) {
        match result {
            QueryResult::GetClosestPeers(r) => {
                let peers: Vec<PeerId> = match r {
                    Ok(GetClosestPeersOk { peers, .. }) => {
                        peers.into_iter().map(|p| p.peer_id).collect()
                    }
                    Err(kad::GetClosestPeersError::Timeout { peers, .. }) => {
                        peers.into_iter().map(|p| p.peer_id).collect()
                    }
                };
                if let Some(parked) = self.parked.remove(&id) {
                    for (peer, request, reply) in parked {
                        // If the lookup found no address the dial fails and the caller hears why.
                        self.send(peer, request, reply);
                    }
                }
                if let Some((count, reply)) = self.closest.remove(&id) {
                    let mut peers = peers;
                    peers.truncate(count);
                    let _ = reply.send(peers);
                }
            }
            QueryResult::GetProviders(r) => {
                if let Some((found, _)) = self.providers.get_mut(&id)
                    && let Ok(GetProvidersOk::FoundProviders { providers, .. }) = r
                {
                    found.extend(providers);
                }
                if last && let Some((found, reply)) = self.providers.remove(&id) {
                    let _ = reply.send(found.into_iter().collect());
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_ips_come_from_ip_multiaddrs_only() {
        let ip = |s: &str| ip_of(&s.parse().unwrap());
        assert_eq!(
            ip("/ip4/10.1.2.3/tcp/4001"),
            Some("10.1.2.3".parse().unwrap())
        );
        assert_eq!(
            ip("/ip6/2001:db8::7/tcp/4001"),
            Some("2001:db8::7".parse().unwrap())
        );
        assert_eq!(ip("/dns4/example.com/tcp/4001"), None);
        assert_eq!(ip("/memory/1234"), None);
    }
}
