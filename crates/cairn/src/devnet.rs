//! `cairn devnet`: a local network of real node processes on 127.0.0.1, and
//! `--demo`, the guided tour of what Cairn does.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

use crate::api::Api;
use crate::size::{human, parse_size};

/// Arguments of `cairn devnet`.
#[derive(Args)]
pub struct DevnetArgs {
    /// Number of node processes.
    #[arg(long, default_value_t = 12)]
    nodes: usize,
    /// Directory for the nodes' data dirs, logs and devnet.json.
    #[arg(long, default_value = "cairn-devnet")]
    dir: PathBuf,
    /// Disk space each node offers.
    #[arg(long, default_value = "2GiB", value_parser = parse_size)]
    storage: u64,
    /// Run the demo: put a file, stop n−k holders, read it back, compare; then stop the network.
    #[arg(long)]
    demo: bool,
    /// Size of the demo file.
    #[arg(long, default_value = "20MiB", value_parser = parse_size)]
    demo_size: u64,
    /// Keep the network up after the demo until Ctrl-C.
    #[arg(long)]
    keep: bool,
    /// Time between each node's steward passes (audits, liveness, repair).
    #[arg(long, default_value = "5s", value_parser = crate::size::parse_duration)]
    steward_interval: std::time::Duration,
    /// How long a stopped node may stay away before its pieces are rebuilt elsewhere.
    #[arg(long, default_value = "30s", value_parser = crate::size::parse_duration)]
    grace: std::time::Duration,
    /// Mean time between two audits of one holder by one steward (random gaps).
    #[arg(long, default_value = "30s", value_parser = crate::size::parse_duration)]
    audit_interval: std::time::Duration,
    /// When to repair a segment: `lazy`, `halfway`, `eager`, or at a number of healthy pieces.
    #[arg(long, default_value = "lazy", value_parser = crate::size::parse_repair)]
    repair: cairn_core::repair::Threshold,
    /// Spread the nodes over this many zones (`zone-0`, `zone-1`, …; node i in
    /// zone i mod Z); 0 declares none.
    #[arg(long, default_value_t = 0)]
    zones: usize,
    /// Also start an S3 gateway against node-00 (in DIR/gateway) and make
    /// it a key; its endpoint and credentials go into devnet.json.
    #[arg(long)]
    gateway: bool,
    /// Cpus each node offers for compute (work units run at once).
    #[arg(long, default_value_t = 1)]
    cpus: u16,
    /// Memory each node offers for compute.
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    compute_memory: u64,
    /// Nodes offer no compute.
    #[arg(long)]
    no_compute: bool,
}

impl DevnetArgs {
    /// The `cairn node run` flags of the compute offer.
    fn compute_args(&self) -> Vec<String> {
        if self.no_compute {
            return Vec::new();
        }
        vec![
            "--cpus".into(),
            self.cpus.to_string(),
            "--memory".into(),
            self.compute_memory.to_string(),
        ]
    }

    /// Nodes offer `cpus` cpus (and 4 GiB) for compute.
    pub fn enable_compute(&mut self, cpus: u16) {
        self.no_compute = false;
        self.cpus = cpus;
        self.compute_memory = 4 << 30;
    }

    /// Stewards that act within seconds: a pass a second, audits about
    /// once a second, a holder lost after 3 s away, every loss repaired.
    pub fn fast_repair(&mut self) {
        self.steward_interval = std::time::Duration::from_secs(1);
        self.audit_interval = std::time::Duration::from_secs(1);
        self.grace = std::time::Duration::from_secs(3);
        self.repair = cairn_core::repair::Threshold::Eager;
    }

    fn steward(&self) -> crate::StewardArgs {
        crate::StewardArgs {
            steward_interval: self.steward_interval,
            grace: self.grace,
            audit_interval: self.audit_interval,
            repair: self.repair,
            repair_bandwidth: 64 << 20,
        }
    }

    /// Settings for `cairn bench`.
    pub fn for_bench(nodes: usize, dir: PathBuf) -> Self {
        Self {
            nodes,
            dir,
            storage: 1 << 40,
            demo: false,
            demo_size: 0,
            keep: false,
            steward_interval: std::time::Duration::from_secs(60),
            grace: std::time::Duration::from_secs(3600),
            audit_interval: std::time::Duration::from_secs(600),
            repair: cairn_core::repair::Threshold::Lazy,
            zones: 0,
            gateway: false,
            cpus: 1,
            compute_memory: 1 << 30,
            no_compute: true,
        }
    }
}

/// One node of the devnet, as written to `devnet.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DevnetNode {
    /// Peer id.
    pub peer_id: String,
    /// Process id.
    pub pid: u32,
    /// Control API URL.
    pub api: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Dialable addresses.
    pub listen: Vec<String>,
}

/// The devnet's S3 gateway, as written to `devnet.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DevnetGateway {
    /// S3 endpoint URL.
    pub endpoint: String,
    /// A key made for it.
    pub access_key_id: String,
    /// Its secret.
    pub secret_access_key: String,
    /// The gateway's directory (keys, account, cache, log).
    pub dir: PathBuf,
    /// Process id.
    pub pid: u32,
}

/// `devnet.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DevnetFile {
    /// The nodes, in start order.
    pub nodes: Vec<DevnetNode>,
    /// The S3 gateway, with `--gateway`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<DevnetGateway>,
}

/// The devnet's gateway process.
pub struct GatewayProcess {
    child: Child,
    /// What it reported.
    pub info: DevnetGateway,
}

impl GatewayProcess {
    /// Stops it: SIGTERM, then SIGKILL after 5 s.
    pub async fn stop(mut self) {
        signal(self.info.pid, false);
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Starts `cairn gateway s3` against `api` in `dir` and makes it a key.
async fn start_gateway(dir: &Path, api: &str) -> Result<GatewayProcess> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let _ = std::fs::remove_file(dir.join("gateway.json"));
    let key = cairn_gateway::KeyStore::new(dir)
        .create()
        .context("cannot create a gateway key")?;
    let log = std::fs::File::create(dir.join("gateway.log"))
        .with_context(|| format!("cannot create a log in {}", dir.display()))?;
    let exe = std::env::current_exe().context("cannot find the cairn executable")?;
    let mut child = Command::new(exe)
        .args([
            "gateway",
            "s3",
            "--listen",
            "127.0.0.1:0",
            "--api",
            api,
            "--dir",
        ])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the gateway process")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(bytes) = std::fs::read(dir.join("gateway.json"))
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes)
            && let Some(endpoint) = v["endpoint"].as_str()
        {
            let pid = child.id().unwrap_or(0);
            return Ok(GatewayProcess {
                child,
                info: DevnetGateway {
                    endpoint: endpoint.to_string(),
                    access_key_id: key.access_key_id,
                    secret_access_key: key.secret_access_key,
                    dir: dir.to_path_buf(),
                    pid,
                },
            });
        }
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(dir.join("gateway.log")).unwrap_or_default();
            bail!("the gateway exited ({status}) before it was ready:\n{log}");
        }
        if Instant::now() > deadline {
            bail!(
                "the gateway did not start within 30 s; see {}",
                dir.join("gateway.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A node process the devnet started.
pub struct Running {
    child: Child,
    /// What the node reported.
    pub info: DevnetNode,
}

fn spawn_node(
    dir: &Path,
    storage: u64,
    bootstrap: Option<&str>,
    steward: &crate::StewardArgs,
    zone: Option<String>,
    compute: &[String],
) -> Result<Child> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let log = std::fs::File::create(dir.join("node.log"))
        .with_context(|| format!("cannot create a log in {}", dir.display()))?;
    let exe = std::env::current_exe().context("cannot find the cairn executable")?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "node",
        "run",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--api",
        "127.0.0.1:0",
        "--no-mdns",
    ])
    .arg("--data-dir")
    .arg(dir)
    .arg("--storage")
    .arg(storage.to_string())
    .args(steward.to_args())
    .args(compute)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(log)
    .kill_on_drop(true);
    if let Some(b) = bootstrap {
        cmd.args(["--bootstrap", b]);
    }
    if let Some(z) = zone {
        cmd.args(["--zone", &z]);
    }
    cmd.spawn().context("cannot start a node process")
}

async fn wait_ready(dir: &Path, child: &mut Child) -> Result<DevnetNode> {
    let path = dir.join("node.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(bytes) = std::fs::read(&path)
            && let Ok(info) = serde_json::from_slice::<cairn_node::NodeInfo>(&bytes)
        {
            return Ok(DevnetNode {
                peer_id: info.peer_id,
                pid: info.pid,
                api: info.api,
                data_dir: info.data_dir,
                listen: info.listen,
            });
        }
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
            bail!(
                "node in {} exited ({status}) before it was ready:\n{log}",
                dir.display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "node in {} did not become ready within 60 s; see its node.log",
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends SIGTERM (or kills outright with `hard`).
pub fn signal(pid: u32, hard: bool) {
    use rustix::process::{Pid, Signal, kill_process};
    let sig = if hard { Signal::KILL } else { Signal::TERM };
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        // The process may already be gone; that is what we wanted.
        let _ = kill_process(pid, sig);
    }
}

/// Starts the nodes (and with `--gateway` a gateway against node-00) and
/// waits until they know each other.
pub async fn start(args: &DevnetArgs) -> Result<(Vec<Running>, Option<GatewayProcess>)> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let _ = std::fs::remove_file(args.dir.join("devnet.json"));
    let mut nodes = Vec::new();
    let d0 = args.dir.join("node-00");
    let steward = args.steward();
    let compute = args.compute_args();
    let zone = |i: usize| (args.zones > 0).then(|| format!("zone-{}", i % args.zones));
    let mut c0 = spawn_node(&d0, args.storage, None, &steward, zone(0), &compute)?;
    let i0 = wait_ready(&d0, &mut c0).await?;
    let boot = i0
        .listen
        .first()
        .cloned()
        .context("the first node reported no listen address")?;
    nodes.push(Running {
        child: c0,
        info: i0,
    });
    let mut pending = Vec::new();
    for i in 1..args.nodes {
        let d = args.dir.join(format!("node-{i:02}"));
        pending.push((
            d.clone(),
            spawn_node(&d, args.storage, Some(&boot), &steward, zone(i), &compute)?,
        ));
    }
    for (d, mut c) in pending {
        let info = wait_ready(&d, &mut c).await?;
        nodes.push(Running { child: c, info });
    }
    // Wait until every node's routing table holds the whole network, so the
    // first put already sees every node.
    let want = args.nodes - 1;
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in &nodes {
        let api = Api::new(&n.info.api)?;
        loop {
            let s: serde_json::Value = api.get_json("/v1/status").await?;
            if s["known_peers"].as_u64().unwrap_or(0) as usize >= want || Instant::now() > deadline
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let gateway = if args.gateway {
        let api = nodes[0].info.api.clone();
        Some(start_gateway(&args.dir.join("gateway"), &api).await?)
    } else {
        None
    };
    // Written last, through a rename: its presence means the network is ready.
    let file = DevnetFile {
        nodes: nodes.iter().map(|n| n.info.clone()).collect(),
        gateway: gateway.as_ref().map(|g| g.info.clone()),
    };
    let path = args.dir.join("devnet.json");
    let tmp = args.dir.join("devnet.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&file)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok((nodes, gateway))
}

/// Stops the nodes: SIGTERM, then SIGKILL after 10 s.
pub async fn stop(nodes: &mut [Running]) {
    for n in nodes.iter_mut() {
        if n.child.try_wait().ok().flatten().is_none() {
            signal(n.info.pid, false);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in nodes.iter_mut() {
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, n.child.wait()).await.is_err() {
            let _ = n.child.kill().await;
        }
    }
}

/// Runs `cairn devnet`.
pub async fn run(args: DevnetArgs) -> Result<()> {
    eprintln!(
        "starting {} Cairn nodes in {} ...",
        args.nodes,
        args.dir.display()
    );
    let (mut nodes, gateway) = start(&args).await?;
    eprintln!("{} nodes are up and know each other:", nodes.len());
    for (i, n) in nodes.iter().enumerate() {
        eprintln!(
            "  node-{i:02}  {}  api {}  pid {}",
            n.info.peer_id, n.info.api, n.info.pid
        );
    }
    if let Some(g) = &gateway {
        eprintln!(
            "S3 gateway on node-00: {} (dir {})",
            g.info.endpoint,
            g.info.dir.display()
        );
        eprintln!("  AWS_ACCESS_KEY_ID={}", g.info.access_key_id);
        eprintln!("  AWS_SECRET_ACCESS_KEY={}", g.info.secret_access_key);
        eprintln!("  aws --endpoint-url {} s3 ls", g.info.endpoint);
    }
    eprintln!("wrote {}", args.dir.join("devnet.json").display());
    let result = if args.demo {
        demo(&args, &nodes).await
    } else {
        Ok(())
    };
    if !args.demo || args.keep {
        let api = &nodes[0].info.api;
        eprintln!();
        eprintln!("try it (in another terminal):");
        eprintln!("  export CAIRN_API={api}");
        eprintln!("  cairn put FILE            # prints a capability");
        eprintln!(
            "  cairn stat CAP            # where every piece is and whether its node answers"
        );
        eprintln!("  cairn get CAP -o OUT      # from any node: --api of another node works too");
        eprintln!("  cairn status / cairn ls");
        eprintln!("press Ctrl-C to stop the network");
        crate::shutdown_signal().await;
    }
    if let Some(g) = gateway {
        g.stop().await;
    }
    eprintln!("stopping the nodes ...");
    stop(&mut nodes).await;
    eprintln!("stopped");
    result
}

fn step(n: u32, text: &str) {
    eprintln!();
    eprintln!("== step {n}: {text}");
}

async fn demo(args: &DevnetArgs, nodes: &[Running]) -> Result<()> {
    let uploader = Api::new(&nodes[0].info.api)?;
    step(1, "write a file of random bytes");
    let input = args.dir.join("demo-input.bin");
    crate::bench::write_random(&input, args.demo_size)?;
    let original = crate::bench::hash_file(&input)?;
    eprintln!(
        "   {} ({}), BLAKE3 {}",
        input.display(),
        human(args.demo_size),
        &original.to_hex()[..16]
    );

    step(
        2,
        "put it through node-00: it is encrypted, erasure-coded and spread over the network",
    );
    let started = Instant::now();
    let query = cairn_node::api::PutQuery {
        name: Some("demo-input.bin".into()),
        ..Default::default()
    };
    let out = uploader.put_path(&input, &query).await?;
    let cap = out["cap"]
        .as_str()
        .context("no capability in the answer")?
        .to_string();
    let (k, n) = (
        out["k"].as_u64().unwrap_or(0),
        out["n"].as_u64().unwrap_or(0),
    );
    eprintln!(
        "   stored in {:.2} s as {} segment(s), any {k} of {n} pieces rebuild each",
        started.elapsed().as_secs_f64(),
        out["segments"]
    );
    eprintln!("   the capability, all anyone needs to read the file:");
    println!("{cap}");

    step(3, "ask the network where the pieces are (cairn stat)");
    let stat: serde_json::Value = uploader
        .post_json("/v1/stat", &serde_json::json!({ "cap": cap }))
        .await?;
    let by_peer: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.info.peer_id.as_str(), i))
        .collect();
    let mut holders_per_segment: Vec<Vec<usize>> = Vec::new();
    for s in stat["segments"].as_array().into_iter().flatten() {
        let holders: Vec<usize> = s["pieces"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                p["peer_id"]
                    .as_str()
                    .and_then(|id| by_peer.get(id).copied())
            })
            .collect();
        eprintln!(
            "   segment {}: {} pieces on nodes {}",
            s["index"],
            holders.len(),
            holders
                .iter()
                .map(|h| format!("{h:02}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        holders_per_segment.push(holders);
    }

    // Stop as many holders as the code tolerates, never the node we read through.
    let reader = nodes.len() - 1;
    let tolerated = (n - k) as usize;
    let mut victims: Vec<usize> = Vec::new();
    let mut order: Vec<usize> = (1..nodes.len()).filter(|i| *i != reader).collect();
    order.sort_by_key(|i| {
        std::cmp::Reverse(holders_per_segment.iter().filter(|h| h.contains(i)).count())
    });
    for cand in order {
        if victims.len() == tolerated {
            break;
        }
        let ok = holders_per_segment.iter().all(|h| {
            h.iter()
                .filter(|x| victims.contains(x) || **x == cand)
                .count()
                <= tolerated
        });
        if ok && holders_per_segment.iter().any(|h| h.contains(&cand)) {
            victims.push(cand);
        }
    }
    step(
        4,
        &format!(
            "kill {} holder nodes outright (SIGKILL), as if their machines died",
            victims.len()
        ),
    );
    for &v in &victims {
        signal(nodes[v].info.pid, true);
        eprintln!("   killed node-{v:02} (pid {})", nodes[v].info.pid);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let reader_api = Api::new(&nodes[reader].info.api)?;
    step(5, &format!("check health from node-{reader:02}"));
    let stat: serde_json::Value = reader_api
        .post_json("/v1/stat", &serde_json::json!({ "cap": cap }))
        .await?;
    for s in stat["segments"].as_array().into_iter().flatten() {
        eprintln!(
            "   segment {}: {} of {n} pieces reachable, {k} needed",
            s["index"], s["healthy"]
        );
    }

    step(
        6,
        &format!("read the file back through node-{reader:02}, using only the capability"),
    );
    let output = args.dir.join("demo-output.bin");
    let started = Instant::now();
    reader_api.get(&cap, &output.to_string_lossy()).await?;
    let secs = started.elapsed().as_secs_f64();
    let back = crate::bench::hash_file(&output)?;
    eprintln!(
        "   {} in {secs:.2} s, BLAKE3 {}",
        output.display(),
        &back.to_hex()[..16]
    );

    step(7, "what happened");
    let lost: HashSet<usize> = victims.iter().copied().collect();
    if back == original {
        eprintln!(
            "   The file was encrypted on node-00 with a fresh key, cut into {n} pieces per segment\n   \
             of which any {k} suffice, and spread over {} nodes. {} of them were killed, yet the file\n   \
             came back byte for byte through another node, found with nothing but its capability.",
            nodes.len(),
            lost.len()
        );
        eprintln!("   RESULT: identical");
        Ok(())
    } else {
        bail!("the file read back differs from the original")
    }
}
