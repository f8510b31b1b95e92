//! `cairn bench --repair-only`: time from a holder's death to full
//! redundancy on a devnet, written into BENCHMARKS.md's "Repair on the
//! devnet" section.
//!
//! The devnet's stewards are fast (a pass a second, a holder lost after
//! 3 s away, every loss repaired at once). A 16 MiB file in four 4 MiB
//! segments with k = 4, n = 8 is put through node-00; then, three times, a
//! holder (never node-00, which reads `stat`) is killed with SIGKILL and
//! the clock runs until every segment has n pieces on live nodes again, as
//! `stat` through node-00 shows it.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::api::Api;
use crate::size::human;

const SECTION: &str = "## Repair on the devnet";
const FILE_BYTES: u64 = 16 << 20;
const ROUNDS: usize = 3;

/// Runs the repair benchmark on a devnet of `nodes` nodes under `dir`.
pub async fn run(dir: &Path, nodes: usize, output: &Path) -> Result<()> {
    if nodes < 8 + ROUNDS {
        bail!("the repair benchmark needs at least {} nodes", 8 + ROUNDS);
    }
    let mut dev = crate::devnet::DevnetArgs::for_bench(nodes, dir.join("repair"));
    dev.fast_repair();
    eprintln!("starting a {nodes}-node devnet with fast stewards ...");
    let (mut running, _) = crate::devnet::start(&dev).await?;
    let result = async {
        let input = dir.join("repair-input.bin");
        crate::bench::write_random(&input, FILE_BYTES)?;
        let api = running[0].info.api.clone();
        let (_, _, out) = crate::bench::timed_cli(
            &api,
            &[
                "put",
                &input.to_string_lossy(),
                "--k",
                "4",
                "--n",
                "8",
                "--segment-size",
                "4MiB",
            ],
        )
        .await?;
        let _ = std::fs::remove_file(&input);
        let cap = out.trim().to_string();
        let reader = Api::new(&api)?;
        let mut dead = HashSet::new();
        wait_full(&reader, &cap, &dead, Duration::from_secs(60)).await?;
        let mut times = Vec::new();
        for round in 0..ROUNDS {
            let stat = stat(&reader, &cap).await?;
            let victim = running
                .iter()
                .skip(1)
                .find(|n| !dead.contains(&n.info.peer_id) && holds(&stat, &n.info.peer_id))
                .context("no live holder to kill")?;
            eprintln!(
                "round {}: killing {} (pid {}) ...",
                round + 1,
                victim.info.peer_id,
                victim.info.pid
            );
            crate::devnet::signal(victim.info.pid, true);
            let started = Instant::now();
            dead.insert(victim.info.peer_id.clone());
            wait_full(&reader, &cap, &dead, Duration::from_secs(180)).await?;
            let t = started.elapsed();
            eprintln!("  full redundancy again after {:.1} s", t.as_secs_f64());
            times.push(t);
        }
        Ok::<_, anyhow::Error>(times)
    }
    .await;
    crate::devnet::stop(&mut running).await;
    let mut times = result?;
    let each: Vec<String> = times
        .iter()
        .map(|t| format!("{:.1} s", t.as_secs_f64()))
        .collect();
    times.sort();
    let median = times[times.len() / 2];
    let section = format!(
        "{SECTION}\n\n`cargo run --release -p cairn -- bench --repair-only` (machine: {}, {}): \
         time from a holder's death (SIGKILL) until every segment is back to n healthy pieces on \
         live nodes, as `cairn stat` sees it from another node. {nodes}-node devnet with \
         `--steward-interval 1s --audit-interval 1s --grace 3s --repair eager`, a {} file in 4 \
         segments of 4 MiB, k = 4, n = 8 (1 MiB pieces), {ROUNDS} holders killed one after \
         another.\n\n| measure | value |\n|---|---|\n\
         | loss to full redundancy, median | {:.1} s |\n\
         | each round | {} |\n\n\
         The 3 s grace comes first (a holder must stay away that long before its pieces count \
         as lost); the rest is the next steward pass noticing, downloading 4 pieces per segment, \
         rebuilding, storing each new piece, reading it back from its new holder and recording \
         it. With the defaults (`--steward-interval 60s --grace 4h`) the same repair starts 4 h \
         after the loss, at the next pass.\n",
        crate::bench::machine(),
        crate::bench::today(),
        human(FILE_BYTES),
        median.as_secs_f64(),
        each.join(", "),
    );
    eprint!("{section}");
    crate::bench::replace_section(output, SECTION, &section)
}

async fn stat(api: &Api, cap: &str) -> Result<Value> {
    api.post_json("/v1/stat", &serde_json::json!({ "cap": cap }))
        .await
}

/// Whether `peer` holds a piece of the file.
fn holds(stat: &Value, peer: &str) -> bool {
    stat["segments"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["pieces"].as_array().into_iter().flatten())
        .any(|p| p["peer_id"].as_str() == Some(peer))
}

/// Every segment has n pieces, each on a live node that is not `dead`.
fn full(stat: &Value, dead: &HashSet<String>) -> bool {
    let n = stat["n"].as_u64().unwrap_or(0) as usize;
    stat["segments"].as_array().is_some_and(|segs| {
        segs.iter().all(|s| {
            let pieces = s["pieces"].as_array().cloned().unwrap_or_default();
            let live: HashSet<&str> = pieces
                .iter()
                .filter(|p| p["online"].as_bool() == Some(true))
                .filter_map(|p| p["peer_id"].as_str())
                .filter(|p| !dead.contains(*p))
                .collect();
            pieces.len() == n && live.len() == n
        })
    })
}

async fn wait_full(api: &Api, cap: &str, dead: &HashSet<String>, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(s) = stat(api, cap).await
            && full(&s, dead)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the file was not back to full redundancy within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
