//! `cairn job`: submit a WebAssembly job, follow it, fetch its results,
//! cancel it; and the compute offer flags of `cairn node run`.
//!
//! `submit` reads the TOML job file, validates it (the core's rules), puts
//! every local file it names (the module, each unit's stdin; paths are
//! relative to the job file, each distinct file uploaded once) and submits
//! the job, with capabilities only, to the node, which schedules it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cairn_core::compute::job::{Job, JobFile, MAX_JOB_BYTES, Source};
use cairn_core::compute::resources::Offer;
use cairn_core::compute::window::Schedule;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::api::Api;
use crate::size::parse_size;

/// The compute offer of `cairn node run`.
#[derive(Args, Clone, Debug)]
pub struct ComputeArgs {
    /// Offer this many cpus for other people's work units (units run at
    /// once); without it the node runs none.
    #[arg(long)]
    pub cpus: Option<u16>,
    /// Memory offered for work units, all together.
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    pub memory: u64,
    /// When work is taken, e.g. "mon-fri 19:00-07:00; sat,sun all-day;
    /// utc+01:00" (times are UTC unless an offset clause says otherwise;
    /// "always" by default).
    #[arg(long, default_value = "always")]
    pub schedule: String,
    /// Take work only while the machine is otherwise idle.
    #[arg(long)]
    pub idle_only: bool,
    /// Fault injection for tests: report wrong outputs for every unit.
    #[arg(long, hide = true)]
    pub fault_wrong_outputs: bool,
}

impl ComputeArgs {
    /// The offer, if the node offers compute.
    pub fn offer(&self) -> Result<Option<Offer>> {
        let Some(cpus) = self.cpus else {
            if self.idle_only || self.schedule != "always" {
                bail!("--schedule and --idle-only shape a compute offer; give --cpus too");
            }
            return Ok(None);
        };
        let schedule = Schedule::parse(&self.schedule)
            .map_err(|e| anyhow::anyhow!("--schedule {:?}: {e}", self.schedule))?;
        let mut offer = Offer::new(cpus, self.memory, schedule)
            .map_err(|e| anyhow::anyhow!("--cpus/--memory: {e}"))?;
        offer.idle_only = self.idle_only;
        Ok(Some(offer))
    }
}

/// `cairn job …`.
#[derive(Subcommand)]
pub enum JobCommand {
    /// Submit a job file (TOML); prints the job id.
    Submit {
        /// The job file.
        file: PathBuf,
        #[command(flatten)]
        api: crate::ApiArg,
    },
    /// Show each unit's state; with --watch, follow until the job ends.
    Status {
        /// The job id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Follow with a progress bar until every unit is done or failed.
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        api: crate::ApiArg,
    },
    /// Write each unit's output to DIR/<unit>.out (and its output files
    /// under DIR/<unit>/).
    Results {
        /// The job id.
        id: String,
        /// Output directory (created if missing).
        #[arg(short, long)]
        output: PathBuf,
        #[command(flatten)]
        api: crate::ApiArg,
    },
    /// Stop every unit of a job.
    Cancel {
        /// The job id.
        id: String,
        #[command(flatten)]
        api: crate::ApiArg,
    },
    /// List the jobs submitted to this node.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: crate::ApiArg,
    },
}

/// Runs a `cairn job` command.
pub async fn run(command: JobCommand) -> Result<()> {
    match command {
        JobCommand::Submit { file, api } => {
            let id = submit(&Api::new(&api.api)?, &file).await?;
            println!("{id}");
            Ok(())
        }
        JobCommand::Status {
            id,
            json,
            watch,
            api,
        } => status(&Api::new(&api.api)?, &id, json, watch).await,
        JobCommand::Results { id, output, api } => {
            results(&Api::new(&api.api)?, &id, &output).await
        }
        JobCommand::Cancel { id, api } => {
            check_id(&id)?;
            let _: Value = Api::new(&api.api)?
                .post_json(&format!("/v1/jobs/{id}/cancel"), &Value::Null)
                .await?;
            eprintln!("cancelled: running units are stopped");
            Ok(())
        }
        JobCommand::Ls { json, api } => {
            let jobs: Vec<Value> = Api::new(&api.api)?.get_json("/v1/jobs").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
            } else {
                for j in &jobs {
                    let total = j["units"].as_array().map_or(0, Vec::len);
                    println!(
                        "{}  {:<7}  {}/{} done",
                        j["id"].as_str().unwrap_or("?"),
                        j["state"].as_str().unwrap_or("?"),
                        j["done"],
                        total
                    );
                }
            }
            Ok(())
        }
    }
}

fn check_id(id: &str) -> Result<()> {
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{id:?} is not a job id (the 64 hex characters `cairn job submit` printed)");
    }
    Ok(())
}

/// Reads, validates, uploads and submits `file`; returns the job id.
async fn submit(api: &Api, file: &Path) -> Result<String> {
    let meta =
        std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?;
    if meta.len() > MAX_JOB_BYTES as u64 {
        bail!(
            "{} is {} bytes; a job file is at most {MAX_JOB_BYTES}",
            file.display(),
            meta.len()
        );
    }
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let parsed: JobFile =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let mut job: Job = parsed
        .validate()
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let base = file.parent().unwrap_or(Path::new("."));
    let mut uploaded: HashMap<PathBuf, String> = HashMap::new();
    job.module = resolve(api, base, &job.module, &mut uploaded, "the module").await?;
    for u in &mut job.units {
        if let Some(s) = &u.stdin {
            let what = format!("stdin of unit {}", u.name);
            u.stdin = Some(resolve(api, base, s, &mut uploaded, &what).await?);
        }
    }
    let body = serde_json::to_value(&job)?;
    let answer: Value = api.post_json("/v1/jobs", &body).await?;
    let id = answer["id"]
        .as_str()
        .context("the node answered without a job id")?;
    eprintln!(
        "submitted {} units; follow with `cairn job status {id} --watch`",
        job.units.len()
    );
    Ok(id.to_string())
}

/// A source as a capability: a local file is put first (once per path).
async fn resolve(
    api: &Api,
    base: &Path,
    source: &Source,
    uploaded: &mut HashMap<PathBuf, String>,
    what: &str,
) -> Result<Source> {
    let rel = match source {
        Source::Cap(_) => return Ok(source.clone()),
        Source::Path(p) => p,
    };
    let path = base.join(rel);
    if let Some(cap) = uploaded.get(&path) {
        return Ok(Source::Cap(cap.clone()));
    }
    let query = cairn_node::api::PutQuery {
        name: path.file_name().map(|n| n.to_string_lossy().into_owned()),
        ..Default::default()
    };
    let outcome = api
        .put_path(&path, &query)
        .await
        .with_context(|| format!("cannot store {what}, {}", path.display()))?;
    let cap = outcome["cap"]
        .as_str()
        .context("the node answered a put without a capability")?
        .to_string();
    uploaded.insert(path, cap.clone());
    Ok(Source::Cap(cap))
}

fn print_units(job: &Value) {
    let units = job["units"].as_array().cloned().unwrap_or_default();
    for u in &units {
        let providers = u["providers"].as_array().map_or(0, Vec::len);
        let mut line = format!(
            "{:<20} {:<10} attempts {:<3} providers {:<2} results {}/{}",
            u["name"].as_str().unwrap_or("?"),
            u["state"].as_str().unwrap_or("?"),
            u["attempts"],
            providers,
            u["results"],
            u["quorum"],
        );
        if let Some(w) = u["wait"].as_str() {
            line.push_str(&format!("  waiting: {w}"));
        }
        if let Some(e) = u["error"].as_str() {
            line.push_str(&format!("  error: {e}"));
        }
        println!("{line}");
    }
}

async fn status(api: &Api, id: &str, json: bool, watch: bool) -> Result<()> {
    check_id(id)?;
    let path = format!("/v1/jobs/{id}");
    let mut job: Value = api.get_json(&path).await?;
    if watch {
        let total = job["units"].as_array().map_or(0, Vec::len) as u64;
        let pb = ProgressBar::new(total);
        pb.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        if let Ok(s) = ProgressStyle::with_template("{bar:40} {pos}/{len} units finished {msg}") {
            pb.set_style(s);
        }
        while job["state"] == "running" {
            let finished = job["done"].as_u64().unwrap_or(0) + job["failed"].as_u64().unwrap_or(0);
            pb.set_position(finished);
            tokio::time::sleep(Duration::from_secs(1)).await;
            job = api.get_json(&path).await?;
        }
        pb.finish_and_clear();
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&job)?);
    } else {
        let total = job["units"].as_array().map_or(0, Vec::len);
        println!(
            "job {id}: {} ({} of {total} units done, {} failed)",
            job["state"].as_str().unwrap_or("?"),
            job["done"],
            job["failed"]
        );
        print_units(&job);
    }
    if watch && job["state"] == "failed" {
        bail!("the job failed");
    }
    Ok(())
}

/// Writes an output to `target`: its bytes if the report carried them,
/// else the object they were stored as.
async fn write_blob(api: &Api, blob: &Value, target: &Path) -> Result<()> {
    if let Some(cap) = blob["stored"].as_str() {
        api.get(cap, &target.to_string_lossy()).await?;
        return Ok(());
    }
    let bytes: Vec<u8> = serde_json::from_value(blob["inline"].clone())
        .context("the node returned an output that is neither inline nor stored")?;
    let tmp = target.with_extension("out.part");
    std::fs::write(&tmp, &bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, target).with_context(|| format!("cannot write {}", target.display()))
}

async fn results(api: &Api, id: &str, dir: &Path) -> Result<()> {
    check_id(id)?;
    let units: Vec<Value> = api.get_json(&format!("/v1/jobs/{id}/results")).await?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut missing = Vec::new();
    for u in &units {
        let name = u["name"].as_str().unwrap_or_default();
        // Unit names are checked at submission: no separators, no leading dot.
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            bail!("the node returned a unit named {name:?}");
        }
        let Some(out) = u.get("output").filter(|o| !o.is_null()) else {
            let why = u["error"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("it is {}", u["state"].as_str().unwrap_or("?")));
            missing.push(format!("{name}: {why}"));
            continue;
        };
        let target = dir.join(format!("{name}.out"));
        write_blob(api, &out["stdout"], &target).await?;
        for f in out["files"].as_array().into_iter().flatten() {
            let Some(rel) = f[0].as_str() else {
                continue;
            };
            if rel
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
            {
                bail!("the node returned an output file named {rel:?}");
            }
            let target = dir.join(name).join(rel);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            write_blob(api, &f[1], &target).await?;
        }
    }
    let written = units.len() - missing.len();
    eprintln!("wrote {written} unit outputs to {}", dir.display());
    if !missing.is_empty() {
        bail!(
            "{} units have no output:\n  {}",
            missing.len(),
            missing.join("\n  ")
        );
    }
    Ok(())
}
