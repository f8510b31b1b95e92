//! A Cairn node: the services of one machine wired together.
//!
//! - [`identity`]: the persistent Ed25519 key.
//! - [`net`]: the swarm driver actor and its handle.
//! - [`service`]: answers other nodes' piece requests from the local store.
//! - [`client`]: put, get and stat on behalf of the local user.
//! - [`manifests`]: manifests and records reads found lately, reused by ranged reads.
//! - [`catalog`]: the list of files this node has put.
//! - [`capacity`]: other nodes' free space, for placement.
//! - [`records`]: the repair records this node keeps as a steward.
//! - [`indexes`]: the account indexes this node keeps a replica of.
//! - [`replicas`]: quorum writes and repairing reads of account indexes.
//! - [`steward`]: audits, liveness and repair of the records it stewards.
//! - [`observations`]: what the steward learned about holders, kept across restarts.
//! - [`gc`]: reclaims expired pieces, a batch at a time.
//! - [`frames`]: the framing of a get stream, written by the API, read by the CLI.
//! - [`api`]: the loopback HTTP/JSON control API the CLI uses.
//!
//! [`run`] starts them all and stops them cleanly on shutdown.

pub mod api;
pub mod capacity;
pub mod catalog;
pub mod client;
pub mod decoded;
pub mod frames;
pub mod gc;
pub mod identity;
pub mod indexes;
pub mod jobs;
pub mod local;
pub mod manifests;
pub mod net;
pub mod observations;
pub mod provider;
pub mod records;
pub mod replicas;
pub mod service;
pub mod steward;
#[cfg(test)]
mod testnet;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cairn_net::libp2p::multiaddr::Protocol;
use cairn_net::{NetConfig, build_swarm};
use cairn_store::PieceStore;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use cairn_net::BufPool;
pub use cairn_net::libp2p::Multiaddr;
pub use client::{Client, ClientError, PutOptions};

/// Starting or running a node failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// Bad configuration or a damaged file.
    #[error("{0}")]
    Config(String),
    /// File-system or database trouble.
    #[error("{0}")]
    Io(String),
    /// The piece store failed to open.
    #[error(transparent)]
    Store(#[from] cairn_store::StoreError),
    /// The network failed to start.
    #[error(transparent)]
    Net(#[from] cairn_net::NetError),
}

/// How often expired pieces are collected, and how many per batch.
const GC_INTERVAL: Duration = Duration::from_secs(60);
const GC_BATCH: usize = 256;
/// How often the owner's node checks its files' leases.
const RENEW_INTERVAL: Duration = Duration::from_secs(3600);

/// How long the segment buffer pool may sit unused before it is emptied.
const POOL_IDLE: Duration = Duration::from_secs(10);

/// Unix seconds now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How to run a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Where identity, pieces and indexes live.
    pub data_dir: PathBuf,
    /// libp2p listen addresses.
    pub listen: Vec<Multiaddr>,
    /// Control API address (loopback).
    pub api: SocketAddr,
    /// Bytes of disk offered to the network.
    pub storage: u64,
    /// Peers to join through.
    pub bootstrap: Vec<Multiaddr>,
    /// Local-network discovery.
    pub mdns: bool,
    /// How the steward audits and repairs.
    pub steward: steward::StewardConfig,
    /// This node's failure domain (`--zone`): no two pieces of a segment go
    /// to nodes of one zone.
    pub zone: Option<String>,
    /// What this node offers for compute (`--cpus`, `--memory`,
    /// `--schedule`, `--idle-only`); `None` runs no one's work units. A
    /// node schedules the jobs submitted to it either way.
    pub compute: Option<cairn_core::compute::resources::Offer>,
    /// Fault injection for tests: the provider reports wrong outputs.
    pub compute_wrong_outputs: bool,
}

/// What a running node writes to `DATA_DIR/node.json` once it is ready.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Peer id.
    pub peer_id: String,
    /// Process id.
    pub pid: u32,
    /// Control API base URL.
    pub api: String,
    /// Dialable addresses, each ending in `/p2p/<peer id>`.
    pub listen: Vec<String>,
    /// Data directory.
    pub data_dir: PathBuf,
}

/// Path of the readiness file in a data dir.
pub fn info_path(data_dir: &Path) -> PathBuf {
    data_dir.join("node.json")
}

fn io_err(what: &str, path: &Path, e: impl std::fmt::Display) -> NodeError {
    NodeError::Io(format!("{what} {}: {e}", path.display()))
}

/// Runs a node until `shutdown` resolves.
pub async fn run(
    cfg: NodeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let dir = &cfg.data_dir;
    std::fs::create_dir_all(dir).map_err(|e| io_err("cannot create data dir", dir, e))?;
    if !cfg.api.ip().is_loopback() {
        return Err(NodeError::Config(format!(
            "--api {} is not a loopback address; the control API gives full access to your files, so it only listens on 127.0.0.1 or ::1",
            cfg.api
        )));
    }
    let lock_path = dir.join("LOCK");
    let lock =
        std::fs::File::create(&lock_path).map_err(|e| io_err("cannot create", &lock_path, e))?;
    if lock.try_lock().is_err() {
        return Err(NodeError::Config(format!(
            "another node is already using data dir {}",
            dir.display()
        )));
    }
    let _ = std::fs::remove_file(info_path(dir));
    let keypair = identity::load_or_create(dir)?;
    let peer_id = keypair.public().to_peer_id();
    let signer = Arc::new(identity::signing_key(&keypair)?);
    let store = Arc::new(PieceStore::open(&dir.join("store"), cfg.storage)?);
    let catalog = Arc::new(catalog::Catalog::open(dir)?);

    if let Some(z) = &cfg.zone
        && (z.is_empty() || z.len() > 64 || z.chars().any(char::is_whitespace))
    {
        return Err(NodeError::Config(format!(
            "--zone {z:?}: use a name of 1 to 64 characters without spaces, e.g. eu-west-1"
        )));
    }
    let net_cfg = NetConfig {
        mdns: cfg.mdns,
        zone: cfg.zone.clone(),
        ..NetConfig::default()
    };
    let mut swarm = build_swarm(keypair, &net_cfg, cairn_net::TransportKind::Tcp)?;
    for addr in &cfg.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NodeError::Config(format!("cannot listen on {addr}: {e}")))?;
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let (net, streams, driver) = net::spawn(swarm, cfg.bootstrap.clone(), stop_rx);
    // Repair records get 1 % of the storage offered, at least 64 MiB.
    let records = Arc::new(records::RecordStore::open(
        dir,
        (cfg.storage / 100).max(64 << 20),
    )?);
    // Account indexes get the same share, separately.
    let indexes = Arc::new(indexes::IndexStore::open(
        dir,
        (cfg.storage / 100).max(64 << 20),
    )?);
    let steward_view = steward::SharedView::default();
    let suspects = steward::SharedSuspects::default();
    let ctx = service::Ctx {
        suspects: suspects.clone(),
        store: store.clone(),
        records: records.clone(),
        indexes: indexes.clone(),
        bodies: net_cfg.bodies.clone(),
        signer: signer.clone(),
        steward: steward_view.clone(),
    };
    let service = tokio::spawn(service::run(ctx, net.clone(), streams.pieces));

    // Re-announce the manifests this node holds, so readers find them after a restart.
    let held = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.manifests())
            .await
            .map_err(|e| NodeError::Io(e.to_string()))??
    };
    for id in held {
        net.provide(id.as_bytes()).await;
    }

    let listener = tokio::net::TcpListener::bind(cfg.api)
        .await
        .map_err(|e| NodeError::Config(format!("cannot bind the API on {}: {e}", cfg.api)))?;
    let api_addr = listener
        .local_addr()
        .map_err(|e| NodeError::Io(e.to_string()))?;
    let client = Client::new(
        net.clone(),
        store.clone(),
        records.clone(),
        signer.clone(),
        catalog.clone(),
    )
    .with_zone(cfg.zone.as_deref())
    .with_scores(steward_view.clone());
    // Compute: this node schedules the jobs submitted to it and, if it
    // offers compute, runs units for any scheduler. One sandbox engine
    // serves both (the scheduler compiles submitted modules to check them);
    // it is built at the first job, so a node without jobs stays small.
    let sandbox = cairn_compute::Sandbox::lazy();
    let (report_tx, report_rx) = tokio::sync::mpsc::channel(jobs::REPORT_QUEUE);
    let provider = match &cfg.compute {
        Some(offer) => Some(provider::Provider::new(
            provider::ProviderSetup {
                offer: offer.clone(),
                operator: signer.public(),
                dir: dir.join("compute"),
                wrong_outputs: cfg.compute_wrong_outputs,
            },
            sandbox.clone(),
            client.clone(),
            net.clone(),
            report_tx.clone(),
        )?),
        None => None,
    };
    let scheduler = jobs::Scheduler::open(
        dir,
        net.clone(),
        client.clone(),
        sandbox,
        provider.clone(),
        report_tx,
    )?;
    let idle_task = provider
        .as_ref()
        .filter(|p| p.offer().idle_only)
        .map(|p| tokio::spawn(p.clone().watch_idle()));
    let compute_service = tokio::spawn(jobs::serve(
        provider.clone(),
        scheduler.clone(),
        net.clone(),
        streams.compute,
    ));
    let scheduler_task = tokio::spawn(scheduler.clone().run(report_rx));
    let steward = steward::Steward::new(
        net.clone(),
        client.clone(),
        records,
        signer,
        cfg.steward.clone(),
    )
    .with_view(steward_view.clone())
    .with_suspects(suspects)
    .with_observations(Arc::new(observations::ObservationStore::open(dir)?))?;
    let steward_task = tokio::spawn(steward.run());
    // Expired pieces (lapsed leases, orphans of repairs) are reclaimed a batch at a time.
    let gc_task = tokio::spawn(gc::run(store.clone(), GC_INTERVAL, GC_BATCH));
    // While this node runs, the files it put keep their leases.
    let renewer = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RENEW_INTERVAL);
            loop {
                tick.tick().await;
                let n = client.renew_own().await;
                if n > 0 {
                    tracing::info!(files = n, "renewed leases");
                }
            }
        })
    };
    // Spare segment buffers go back to the system once transfers stop.
    let pools = [client.buffers().clone(), net_cfg.bodies.clone()];
    let trimmer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(POOL_IDLE);
        loop {
            tick.tick().await;
            for pool in &pools {
                pool.trim_idle(POOL_IDLE);
            }
        }
    });
    let local =
        local::bind(dir).map_err(|e| io_err("cannot listen on the local socket in", dir, e))?;
    let state = api::ApiState {
        client,
        net: net.clone(),
        store: store.clone(),
        catalog,
        transfers: Arc::new(tokio::sync::Semaphore::new(api::MAX_TRANSFERS)),
        steward: steward_view,
        indexes: replicas::IndexReplicas::new(net.clone(), indexes),
        jobs: scheduler,
        provider,
        local: local.as_ref().map(|(_, socket)| socket.clone()),
    };
    let local_task =
        local.map(|(listener, socket)| tokio::spawn(local::serve(listener, socket, state.clone())));
    let app = api::router(state);

    // Ready once the swarm reports its listen addresses.
    let mut listen = Vec::new();
    for _ in 0..100 {
        if let Some(info) = net.info().await
            && !info.listen_addrs.is_empty()
        {
            listen = info
                .listen_addrs
                .into_iter()
                .map(|a| a.with(Protocol::P2p(peer_id)).to_string())
                .collect();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let info = NodeInfo {
        peer_id: peer_id.to_string(),
        pid: std::process::id(),
        api: format!("http://{api_addr}"),
        listen,
        data_dir: dir.clone(),
    };
    write_info(dir, &info)?;
    tracing::info!(peer_id = %info.peer_id, api = %info.api, "node ready");

    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    let _ = stop_tx.send(true);
    let _ = driver.await;
    service.abort();
    compute_service.abort();
    scheduler_task.abort();
    if let Some(t) = idle_task {
        t.abort();
    }
    trimmer.abort();
    if let Some(t) = local_task {
        t.abort();
    }
    let _ = std::fs::remove_file(dir.join(local::SOCKET_FILE));
    steward_task.abort();
    gc_task.abort();
    renewer.abort();
    let _ = std::fs::remove_file(info_path(dir));
    drop(lock);
    served.map_err(|e| NodeError::Io(format!("API server failed: {e}")))
}

fn write_info(dir: &Path, info: &NodeInfo) -> Result<(), NodeError> {
    let path = info_path(dir);
    let tmp = dir.join("node.json.tmp");
    let json = serde_json::to_vec_pretty(info).map_err(|e| NodeError::Io(e.to_string()))?;
    std::fs::write(&tmp, json).map_err(|e| io_err("cannot write", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io_err("cannot write", &path, e))
}
