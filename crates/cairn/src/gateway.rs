//! `cairn gateway`: run the S3 gateway against a node, and manage its
//! credentials.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use cairn_gateway::KeyStore;
use clap::{Args, Subcommand};

/// `cairn gateway …`.
#[derive(Subcommand)]
pub enum GatewayCommand {
    /// Run the S3-compatible gateway until Ctrl-C or SIGTERM.
    S3(S3Args),
    /// Create, list or revoke S3 credentials.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Create, list, disable or enable the account's KMS keys (SSE-KMS),
    /// kept in the network where every gateway of the account finds them.
    Kms {
        #[command(subcommand)]
        command: KmsCommand,
    },
}

/// Where the account's KMS keys are: its account key and a node.
#[derive(Args, Clone, Debug)]
pub struct KmsAt {
    /// The node's control API.
    #[arg(long, env = "CAIRN_API", default_value = "http://127.0.0.1:7070")]
    pub api: String,
    #[command(flatten)]
    pub dir: DirArg,
    /// The account key (default DIR/account.key).
    #[arg(long)]
    pub account_file: Option<PathBuf>,
    /// The region ARNs name (the gateway's --region).
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
}

/// `cairn gateway kms …`.
#[derive(Subcommand)]
pub enum KmsCommand {
    /// Make a new key (32 random bytes, enabled); prints its id and ARN.
    Create {
        /// What the key is for.
        #[arg(long, default_value = "")]
        description: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        at: KmsAt,
    },
    /// List the keys: id, state, ARN, description.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        at: KmsAt,
    },
    /// Disable a key: objects sealed under it are refused
    /// (KMS.DisabledException) until it is enabled again.
    Disable {
        /// The key id (or its ARN).
        id: String,
        #[command(flatten)]
        at: KmsAt,
    },
    /// Enable a disabled key.
    Enable {
        /// The key id (or its ARN).
        id: String,
        #[command(flatten)]
        at: KmsAt,
    },
}

/// Where a gateway keeps its keys and cache.
#[derive(Args, Clone, Debug)]
pub struct DirArg {
    /// The gateway's directory (keys.json, account.key, cache.redb, gateway.json).
    #[arg(long, env = "CAIRN_GATEWAY_DIR", default_value = "cairn-gateway")]
    pub dir: PathBuf,
}

/// `cairn gateway s3`.
#[derive(Args, Clone, Debug)]
pub struct S3Args {
    /// Address to serve S3 on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// The node's control API.
    #[arg(long, env = "CAIRN_API", default_value = "http://127.0.0.1:7070")]
    pub api: String,
    #[command(flatten)]
    pub dir: DirArg,
    /// The account key (default DIR/account.key, created on first start).
    /// Give a second gateway the same file to share buckets.
    #[arg(long)]
    pub account_file: Option<PathBuf>,
    /// The region reported to clients.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Multipart uploads older than this are aborted and their parts removed.
    #[arg(long, default_value = "7d", value_parser = crate::size::parse_duration)]
    pub upload_max_age: std::time::Duration,
    /// Tombstones of deleted index entries older than this are collected
    /// by the background pass (at least 1m: writes still in flight, and
    /// gateways whose clocks run behind, must stay younger).
    #[arg(long, default_value = "24h", value_parser = crate::size::parse_duration)]
    pub index_gc_grace: std::time::Duration,
    /// A shard of a bucket's index splits into 16 when it holds this many
    /// entries (or 512 KiB). Smaller shards make writes cheaper and listings
    /// read more shards; the tests use small ones to grow deep trees.
    #[arg(long, env = "CAIRN_GATEWAY_SHARD_ENTRIES", default_value_t = cairn_core::shard::SplitRule::DEFAULT.max_entries)]
    pub shard_entries: usize,
    /// Serve the website of bucket B (PutBucketWebsite) to requests for
    /// host B.DOMAIN on the same port; browsers send `*.localhost` to this
    /// machine, so `http://B.web.localhost:9000/` works with the default.
    #[arg(long, default_value = "web.localhost")]
    pub web_domain: String,
    /// Serve HTTPS with this PEM certificate chain (leaf first); needs
    /// --tls-key. Both files are re-read when they change (renewals need
    /// no restart). Without it the gateway speaks plain HTTP, which is for
    /// loopback or behind a TLS proxy.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// `cairn gateway keys …`.
#[derive(Subcommand)]
pub enum KeysCommand {
    /// Make a new access key id and secret.
    Create {
        #[command(flatten)]
        dir: DirArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List access key ids.
    List {
        #[command(flatten)]
        dir: DirArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key; the running gateway refuses it from its next request.
    Revoke {
        /// The access key id.
        access_key_id: String,
        #[command(flatten)]
        dir: DirArg,
    },
}

/// Runs a `cairn gateway` command.
pub async fn run(command: GatewayCommand) -> Result<()> {
    match command {
        GatewayCommand::S3(a) => serve(a).await,
        GatewayCommand::Keys { command } => keys(command),
        GatewayCommand::Kms { command } => kms(command).await,
    }
}

fn kms_store(at: &KmsAt) -> Result<cairn_gateway::kms::KmsStore> {
    cairn_gateway::kms_store(&at.api, &at.dir.dir, at.account_file.as_deref(), &at.region)
        .with_context(|| {
            format!(
                "cannot open the account's KMS keys (account in {}, node API {})",
                at.dir.dir.display(),
                at.api
            )
        })
}

fn key_json(
    store: &cairn_gateway::kms::KmsStore,
    k: &cairn_gateway::kms::KmsKey,
) -> serde_json::Value {
    serde_json::json!({
        "id": k.id,
        "arn": store.arn(&k.id),
        "description": k.description,
        "state": k.state.as_str(),
        "created_ms": k.created_ms,
    })
}

async fn kms(command: KmsCommand) -> Result<()> {
    use cairn_gateway::kms::KeyState;
    match command {
        KmsCommand::Create {
            description,
            json,
            at,
        } => {
            let store = kms_store(&at)?;
            let key = store.create(&description).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&key_json(&store, &key))?);
            } else {
                println!("key id: {}", key.id);
                println!("arn:    {}", store.arn(&key.id));
            }
        }
        KmsCommand::List { json, at } => {
            let store = kms_store(&at)?;
            let keys = store.list().await?;
            if json {
                let all: Vec<_> = keys.iter().map(|k| key_json(&store, k)).collect();
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if keys.is_empty() {
                eprintln!("no KMS keys; make one with `cairn gateway kms create`");
            } else {
                for k in keys {
                    println!(
                        "{}  {:<8}  {}  {}",
                        k.id,
                        k.state.as_str(),
                        store.arn(&k.id),
                        k.description
                    );
                }
            }
        }
        KmsCommand::Disable { id, at } => {
            let key = kms_store(&at)?.set_state(&id, KeyState::Disabled).await?;
            eprintln!(
                "disabled {} (running gateways refuse it within about 4 s)",
                key.id
            );
        }
        KmsCommand::Enable { id, at } => {
            let key = kms_store(&at)?.set_state(&id, KeyState::Enabled).await?;
            eprintln!("enabled {}", key.id);
        }
    }
    Ok(())
}

fn keys(command: KeysCommand) -> Result<()> {
    match command {
        KeysCommand::Create { dir, json } => {
            let key = KeyStore::new(&dir.dir).create()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&key)?);
            } else {
                println!("access key id:     {}", key.access_key_id);
                println!("secret access key: {}", key.secret_access_key);
            }
        }
        KeysCommand::List { dir, json } => {
            let keys = KeyStore::new(&dir.dir).list()?;
            if json {
                let ids: Vec<_> = keys
                    .iter()
                    .map(|k| serde_json::json!({"access_key_id": k.access_key_id, "created_ms": k.created_ms}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&ids)?);
            } else if keys.is_empty() {
                eprintln!(
                    "no keys; make one with `cairn gateway keys create --dir {}`",
                    dir.dir.display()
                );
            } else {
                for k in keys {
                    println!("{}", k.access_key_id);
                }
            }
        }
        KeysCommand::Revoke { access_key_id, dir } => {
            if !KeyStore::new(&dir.dir).revoke(&access_key_id)? {
                bail!(
                    "there is no key {access_key_id:?} in {}; `cairn gateway keys list` shows them",
                    dir.dir.display()
                );
            }
            eprintln!("revoked {access_key_id}");
        }
    }
    Ok(())
}

/// The endpoint file a running gateway writes (like a node's node.json).
pub fn write_endpoint(dir: &Path, endpoint: &str) -> Result<()> {
    let info = serde_json::json!({ "version": 1, "endpoint": endpoint, "pid": std::process::id() });
    cairn_gateway::keys::write_private(
        &dir.join("gateway.json"),
        serde_json::to_vec_pretty(&info)?.as_slice(),
    )
    .context("cannot write gateway.json")
}

async fn serve(a: S3Args) -> Result<()> {
    let mut config = cairn_gateway::Config::new(a.listen, a.api.clone(), a.dir.dir.clone());
    config.account_file = a.account_file;
    config.region = a.region;
    config.upload_max_age = a.upload_max_age;
    // Writes in flight (and clocks a little behind) must stay above the
    // horizon, or their ops are refused.
    if a.index_gc_grace < std::time::Duration::from_secs(60) {
        bail!(
            "--index-gc-grace {:?} is too short: tombstones younger than a minute may belong to writes still in flight",
            a.index_gc_grace
        );
    }
    config.index_gc_grace = a.index_gc_grace;
    config.web_domain = (!a.web_domain.is_empty()).then(|| a.web_domain.clone());
    if !(16..=60_000).contains(&a.shard_entries) {
        bail!(
            "--shard-entries {} is out of range: a shard splits at 16 to 60,000 entries (an index holds 65,536)",
            a.shard_entries
        );
    }
    config.split.max_entries = a.shard_entries;
    if let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) {
        config.tls = Some(
            cairn_gateway::tls::Tls::from_pem_files(cert, key)
                .context("cannot serve TLS with --tls-cert and --tls-key")?,
        );
    }
    let started = cairn_gateway::start(config)
        .await
        .with_context(|| format!("the S3 gateway did not start (node API {})", a.api))?;
    let endpoint = format!("{}://{}", started.scheme, started.addr);
    write_endpoint(&a.dir.dir, &endpoint)?;
    eprintln!(
        "S3 gateway listening on {endpoint} (node API {}, dir {})",
        a.api,
        a.dir.dir.display()
    );
    if !a.web_domain.is_empty() {
        eprintln!(
            "bucket websites at {}://BUCKET.{}:{}/",
            started.scheme,
            a.web_domain,
            started.addr.port()
        );
    }
    if KeyStore::new(&a.dir.dir).list()?.is_empty() {
        eprintln!(
            "no credentials yet: make one with `cairn gateway keys create --dir {}`",
            a.dir.dir.display()
        );
    }
    started.run(crate::shutdown_signal()).await;
    Ok(())
}
