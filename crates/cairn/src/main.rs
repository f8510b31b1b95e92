//! `cairn`: run a node, store and read files, inspect their health, and run a
//! local network.

mod api;
mod bench;
mod bench_compute;
mod bench_repair;
mod devnet;
mod gateway;
mod job;
mod sim;
mod size;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use cairn_node::Multiaddr;
use clap::{Args, Parser, Subcommand};

use crate::api::Api;
use crate::size::{human, parse_duration, parse_repair, parse_size};

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Cairn: a peer-to-peer cloud of encrypted, erasure-coded storage"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct ApiArg {
    /// The node's control API.
    #[arg(
        long,
        env = "CAIRN_API",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    api: String,
}

#[derive(Subcommand)]
enum Command {
    /// Run or inspect a node.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Store a file (or stdin with `-`); prints its capability on stdout.
    ///
    /// A regular file is handed to a node on this machine through its local
    /// socket and the node reads it itself; stdin, a remote node, or
    /// CAIRN_NO_LOCAL_SOCKET=1 send the bytes over HTTP.
    Put {
        /// The file, or `-` for stdin.
        file: String,
        /// Pieces needed to rebuild each segment (default: 16, scaled down on small networks).
        #[arg(long)]
        k: Option<u16>,
        /// Pieces stored per segment (default: 24, scaled down on small networks).
        #[arg(long)]
        n: Option<u16>,
        /// Plaintext bytes per segment.
        #[arg(long, default_value = "64MiB", value_parser = parse_size)]
        segment_size: u64,
        #[command(flatten)]
        api: ApiArg,
    },
    /// Read a file back by its capability.
    ///
    /// A file output is written through a temporary file, renamed onto it
    /// once complete; a node on this machine fills it itself through its
    /// local socket (unless CAIRN_NO_LOCAL_SOCKET=1). Stdout goes over HTTP.
    Get {
        /// The `cairn:` capability.
        cap: String,
        /// Output path, or `-` for stdout.
        #[arg(short, long)]
        output: String,
        #[command(flatten)]
        api: ApiArg,
    },
    /// Show a file's size, layout and the health of every piece.
    Stat {
        /// The `cairn:` capability.
        cap: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArg,
    },
    /// Extend a file's lease, so holders keep its pieces (only its owner's node can).
    Renew {
        /// The `cairn:` capability.
        cap: String,
        /// New lease, from now.
        #[arg(long, default_value = "90d", value_parser = parse_duration)]
        lease: std::time::Duration,
        #[command(flatten)]
        api: ApiArg,
    },
    /// Delete a file: holders drop its pieces and stewards its record (only its owner's node can).
    Rm {
        /// The `cairn:` capability.
        cap: String,
        #[command(flatten)]
        api: ApiArg,
    },
    /// Show the node's peers and storage use.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArg,
    },
    /// List the files this node has put, with their capabilities.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArg,
    },
    /// The S3-compatible gateway and its credentials.
    Gateway {
        #[command(subcommand)]
        command: gateway::GatewayCommand,
    },
    /// Submit WebAssembly jobs to the network and follow them.
    Job {
        #[command(subcommand)]
        command: job::JobCommand,
    },
    /// Run a local network of real node processes on 127.0.0.1.
    Devnet(devnet::DevnetArgs),
    /// Measure the pipeline and a local network; write BENCHMARKS.md.
    Bench(bench::BenchArgs),
    /// Simulate a large network for a year: durability and repair traffic.
    Sim(sim::SimArgs),
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Run a node until Ctrl-C or SIGTERM.
    Run(Box<RunArgs>),
    /// What this node's steward sees: the holders it audits, their scores
    /// and why they moved, repairs done, and evidence of failed audits.
    Score {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArg,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Where the identity, pieces and indexes live.
    #[arg(long)]
    data_dir: PathBuf,
    /// libp2p listen address (repeatable).
    #[arg(long, default_value = "/ip4/0.0.0.0/tcp/4001")]
    listen: Vec<Multiaddr>,
    /// Control API address (loopback only).
    #[arg(long, default_value = "127.0.0.1:7070")]
    api: SocketAddr,
    /// Disk space offered to the network.
    #[arg(long, default_value = "20GiB", value_parser = parse_size)]
    storage: u64,
    /// A peer to join through (repeatable), e.g. /ip4/1.2.3.4/tcp/4001/p2p/12D3…
    #[arg(long)]
    bootstrap: Vec<Multiaddr>,
    /// Do not discover peers on the local network with mDNS.
    #[arg(long)]
    no_mdns: bool,
    /// This node's failure domain (a site, a building, a power circuit): no
    /// two pieces of a segment are stored in one zone.
    #[arg(long)]
    zone: Option<String>,
    #[command(flatten)]
    steward: StewardArgs,
    #[command(flatten)]
    compute: job::ComputeArgs,
}

/// How a node audits and repairs the objects it stewards.
#[derive(Args, Clone, Debug)]
pub struct StewardArgs {
    /// Time between the steward's passes over its records.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub steward_interval: std::time::Duration,
    /// How long a holder may be unreachable before its pieces are rebuilt elsewhere.
    #[arg(long, default_value = "4h", value_parser = parse_duration)]
    pub grace: std::time::Duration,
    /// Mean time between two audits of one holder by this node; the times
    /// are random, so holders cannot tell when the next challenge comes.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub audit_interval: std::time::Duration,
    /// When to repair a segment: `lazy` (k + ⌈3(n − k)/8⌉ healthy pieces),
    /// `halfway` between k and n, `eager` (at the first loss), or at a
    /// number of healthy pieces.
    #[arg(long, default_value = "lazy", value_parser = parse_repair)]
    pub repair: cairn_core::repair::Threshold,
    /// Repair bandwidth limit per second.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    pub repair_bandwidth: u64,
}

impl StewardArgs {
    /// The node's steward settings.
    pub fn config(&self) -> cairn_node::steward::StewardConfig {
        cairn_node::steward::StewardConfig {
            interval: self.steward_interval,
            grace: self.grace,
            audit_interval: self.audit_interval,
            policy: cairn_core::repair::RepairPolicy {
                threshold: self.repair,
            },
            repair_bytes_per_sec: self.repair_bandwidth,
            ..Default::default()
        }
    }

    /// The same settings as `cairn node run` flags.
    pub fn to_args(&self) -> Vec<String> {
        use cairn_core::repair::Threshold;
        let repair = match self.repair {
            Threshold::Lazy => "lazy".to_string(),
            Threshold::Halfway => "halfway".to_string(),
            Threshold::Eager => "eager".to_string(),
            Threshold::AtMost(n) => n.to_string(),
        };
        vec![
            "--steward-interval".into(),
            format!("{}ms", self.steward_interval.as_millis()),
            "--grace".into(),
            format!("{}ms", self.grace.as_millis()),
            "--audit-interval".into(),
            format!("{}ms", self.audit_interval.as_millis()),
            "--repair".into(),
            repair,
            "--repair-bandwidth".into(),
            self.repair_bandwidth.to_string(),
        ]
    }
}

/// Whether `e` comes from writing to a closed pipe (`cairn ls | head`).
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// A reader that stops reading (`| head`) ends the output quietly, as for
/// any Unix tool, instead of a panic from `println!`.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

fn main() {
    quiet_on_broken_pipe();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
                // s3s logs every refused client request as an error; the gateway
                // logs its own failures (5xx) instead.
                .unwrap_or_else(|_| {
                    "warn,cairn=info,cairn_node=info,cairn_gateway=info,s3s=off".into()
                }),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(cli)) {
        if is_broken_pipe(&e) {
            std::process::exit(0);
        }
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Node {
            command: NodeCommand::Run(a),
        } => node_run(*a).await,
        Command::Node {
            command: NodeCommand::Score { json, api },
        } => score(&Api::new(&api.api)?, json).await,
        Command::Put {
            file,
            k,
            n,
            segment_size,
            api,
        } => put(&Api::new(&api.api)?, &file, k, n, segment_size).await,
        Command::Get { cap, output, api } => {
            check_cap(&cap)?;
            Api::new(&api.api)?.get(&cap, &output).await.map(|_| ())
        }
        Command::Stat { cap, json, api } => stat(&Api::new(&api.api)?, &cap, json).await,
        Command::Renew { cap, lease, api } => {
            check_cap(&cap)?;
            let r: serde_json::Value = Api::new(&api.api)?
                .post_json(
                    "/v1/renew",
                    &serde_json::json!({ "cap": cap, "lease_secs": lease.as_secs() }),
                )
                .await?;
            println!("lease renewed until unix time {}", r["expires_at"]);
            Ok(())
        }
        Command::Rm { cap, api } => {
            check_cap(&cap)?;
            let _: serde_json::Value = Api::new(&api.api)?
                .post_json("/v1/rm", &serde_json::json!({ "cap": cap }))
                .await?;
            eprintln!("deleted: holders drop the pieces, stewards keep only a tombstone");
            Ok(())
        }
        Command::Status { json, api } => status(&Api::new(&api.api)?, json).await,
        Command::Ls { json, api } => ls(&Api::new(&api.api)?, json).await,
        Command::Gateway { command } => gateway::run(command).await,
        Command::Job { command } => job::run(command).await,
        Command::Devnet(a) => devnet::run(a).await,
        Command::Bench(a) => bench::run(a).await,
        Command::Sim(a) => sim::run(a),
    }
}

/// Refuses a malformed capability before any network traffic.
fn check_cap(cap: &str) -> Result<()> {
    cap.parse::<cairn_core::ReadCap>()
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Resolves when Ctrl-C or SIGTERM arrives.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn node_run(a: RunArgs) -> Result<()> {
    let cfg = cairn_node::NodeConfig {
        data_dir: a.data_dir,
        listen: a.listen,
        api: a.api,
        storage: a.storage,
        bootstrap: a.bootstrap,
        mdns: !a.no_mdns,
        steward: a.steward.config(),
        zone: a.zone,
        compute: a.compute.offer()?,
        compute_wrong_outputs: a.compute.fault_wrong_outputs,
    };
    cairn_node::run(cfg, shutdown_signal()).await?;
    Ok(())
}

async fn put(
    api: &Api,
    file: &str,
    k: Option<u16>,
    n: Option<u16>,
    segment_size: u64,
) -> Result<()> {
    let mut query = cairn_node::api::PutQuery {
        k,
        n,
        segment_size: Some(segment_size),
        ..Default::default()
    };
    let outcome = if file == "-" {
        api.put(tokio::io::stdin(), None, &query).await?
    } else {
        if let Some(name) = std::path::Path::new(file).file_name() {
            query.name = Some(name.to_string_lossy().into_owned());
        }
        api.put_path(std::path::Path::new(file), &query).await?
    };
    let cap = outcome
        .get("cap")
        .and_then(|c| c.as_str())
        .context("the node's answer has no capability")?;
    println!("{cap}");
    Ok(())
}

async fn stat(api: &Api, cap: &str, json: bool) -> Result<()> {
    check_cap(cap)?;
    let r: serde_json::Value = api
        .post_json("/v1/stat", &serde_json::json!({ "cap": cap }))
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let g = |k: &str| r.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    let segs = r
        .get("segments")
        .and_then(|s| s.as_array())
        .cloned()
        .unwrap_or_default();
    println!("size      {} ({})", g("size"), human(g("size")));
    println!("segments  {} of {}", segs.len(), human(g("segment_size")));
    println!(
        "coding    any {} of {} pieces rebuild a segment",
        g("k"),
        g("n")
    );
    for s in &segs {
        let healthy = s.get("healthy").and_then(|v| v.as_u64()).unwrap_or(0);
        let verdict = if healthy >= g("n") {
            "healthy"
        } else if healthy >= g("k") {
            "degraded"
        } else {
            "UNRECOVERABLE"
        };
        println!(
            "segment {}: {healthy}/{} pieces available ({verdict})",
            s["index"],
            g("n")
        );
        for p in s
            .get("pieces")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
        {
            let state = match (p["online"].as_bool(), p["present"].as_bool()) {
                (Some(true), Some(true)) => "ok",
                (Some(true), _) => "missing",
                _ => "offline",
            };
            println!(
                "  piece {:>3}  {}  {state}",
                p["index"],
                p["peer_id"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(())
}

async fn status(api: &Api, json: bool) -> Result<()> {
    let r: serde_json::Value = api.get_json("/v1/status").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let g = |k: &str| r.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    println!("peer id    {}", r["peer_id"].as_str().unwrap_or("?"));
    for a in r["listen"].as_array().into_iter().flatten() {
        println!("listening  {}", a.as_str().unwrap_or("?"));
    }
    println!(
        "peers      {} connected, {} known",
        g("connected_peers"),
        g("known_peers")
    );
    println!("pieces     {}", g("pieces"));
    println!(
        "storage    {} of {} used",
        human(g("used_bytes")),
        human(g("capacity_bytes"))
    );
    Ok(())
}

async fn score(api: &Api, json: bool) -> Result<()> {
    let mut r: serde_json::Value = api.get_json("/v1/steward").await?;
    let standing: serde_json::Value = api.get_json("/v1/standing").await?;
    if json {
        r["standing"] = standing;
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let views = standing.as_array().cloned().unwrap_or_default();
    if views.is_empty() {
        println!("this node: no steward has audited it yet");
    } else {
        println!("this node, as its stewards see it:");
    }
    for v in views {
        println!(
            "  by {}  score {:.4}  passed {}{}",
            v["steward"].as_str().unwrap_or("?"),
            v["score"].as_f64().unwrap_or(0.0),
            v["passed"].as_u64().unwrap_or(0),
            if v["disqualified"].as_bool() == Some(true) {
                "  DISQUALIFIED"
            } else {
                ""
            }
        );
        for p in v["penalties"].as_array().into_iter().flatten() {
            println!("      {}", p.as_str().unwrap_or("?"));
        }
        if let Some(w) = v["warning"].as_str() {
            println!("      warning: {w}");
        }
    }
    println!();
    let g = |k: &str| r.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    println!(
        "stewarding {} records; {} audits, {} repairs ({} pieces rebuilt), {} queued",
        g("records"),
        g("audits"),
        g("repairs"),
        g("pieces_rebuilt"),
        g("queued")
    );
    println!(
        "{} passes since start: {} DHT walks for stewards, {} holder probes, {} anti-entropy requests",
        g("passes"),
        g("lookups"),
        g("probes"),
        g("digests")
    );
    let holders = r["holders"].as_array().cloned().unwrap_or_default();
    if holders.is_empty() {
        println!("no holders audited yet");
    }
    for h in holders {
        let state = if h["disqualified"].as_bool() == Some(true) {
            "disqualified"
        } else if h["lost"].as_bool() == Some(true) {
            "lost (unreachable past the grace period)"
        } else {
            "ok"
        };
        println!(
            "{}  score {:.4}  passed {}  {state}",
            h["peer_id"].as_str().unwrap_or("?"),
            h["score"].as_f64().unwrap_or(0.0),
            h["passed"].as_u64().unwrap_or(0)
        );
        for p in h["penalties"].as_array().into_iter().flatten() {
            println!("    {}", p.as_str().unwrap_or("?"));
        }
        if let Some(w) = h["warning"].as_str() {
            println!("    warning: {w}");
        }
    }
    for s in r["suspects"].as_array().into_iter().flatten() {
        let by: Vec<&str> = s["reported_by"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str())
            .collect();
        println!(
            "suspect {} (failed an audit; no rebuilt pieces for it until {}), caught by {}",
            s["peer_id"].as_str().unwrap_or("?"),
            s["until"].as_u64().unwrap_or(0),
            by.join(", ")
        );
    }
    Ok(())
}

async fn ls(api: &Api, json: bool) -> Result<()> {
    let r: Vec<serde_json::Value> = api.get_json("/v1/files").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    if r.is_empty() {
        println!("this node has not put any files yet");
    }
    for f in r {
        let name = f["name"].as_str().unwrap_or("(stdin)");
        println!(
            "{name}\t{}\t{}",
            human(f["size"].as_u64().unwrap_or(0)),
            f["cap"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}
