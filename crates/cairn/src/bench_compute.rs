//! `cairn bench --compute-only`: the compute figures of issue 5, written
//! into BENCHMARKS.md's "Compute on the devnet" section.
//!
//! - Dispatch throughput: a job of trivial units (the `upper` example with
//!   empty stdin) on a devnet whose nodes offer 4 cpus each, quorum 1, from
//!   submission until every unit is done.
//! - Submit-to-first-result latency: a one-unit job, quorum 1 and 2.
//! - WASM against native: the `primes` example in the sandbox against the
//!   same C built natively with the host's `cc -O2`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cairn_core::compute::job::{JobFile, UnitFile};
use serde_json::Value;

use crate::api::Api;

const UPPER_WASM: &[u8] = include_bytes!("../../../examples/jobs/upper/upper.wasm");
const PRIMES_WASM: &[u8] = include_bytes!("../../../examples/jobs/primes/primes.wasm");
const PRIMES_C: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/jobs/primes/primes.c"
);
const PI_WASM: &[u8] = include_bytes!("../../../examples/jobs/pi/pi.wasm");
const PI_C: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/jobs/pi/pi.c");
const SECTION: &str = "## Compute on the devnet";

fn job(module: &str, units: usize, quorum: u16) -> JobFile {
    JobFile {
        module: module.to_string(),
        quorum,
        max_attempts: 3,
        deadline: "10m".into(),
        memory: "1MiB".into(),
        fuel: None,
        estimate: Some("1s".into()),
        output_dir: false,
        adaptive: false,
        env: Default::default(),
        units: (0..units)
            .map(|i| UnitFile {
                name: format!("u{i}"),
                args: Vec::new(),
                stdin: None,
                env: Default::default(),
            })
            .collect(),
    }
}

/// Submits and waits; returns the time to the first finished unit and to
/// the last.
async fn run_job(api: &Api, file: JobFile, poll: Duration) -> Result<(Duration, Duration)> {
    let job = file.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let start = Instant::now();
    let answer: Value = api
        .post_json("/v1/jobs", &serde_json::to_value(&job)?)
        .await?;
    let id = answer["id"].as_str().context("no job id")?.to_string();
    let mut first = None;
    loop {
        let s: Value = api.get_json(&format!("/v1/jobs/{id}")).await?;
        if first.is_none() && s["done"].as_u64().unwrap_or(0) > 0 {
            first = Some(start.elapsed());
        }
        match s["state"].as_str() {
            Some("done") => return Ok((first.unwrap_or(start.elapsed()), start.elapsed())),
            Some("failed") => bail!("the benchmark job failed: {s}"),
            _ => tokio::time::sleep(poll).await,
        }
    }
}

/// Best of `runs` of an example with `args`, in the sandbox and natively.
fn wasm_vs_native(
    dir: &Path,
    (wasm, c): (&[u8], &str),
    args: &[&str],
    runs: usize,
) -> Result<(Duration, Duration)> {
    use cairn_compute::{RunSpec, Sandbox};
    let sandbox = Sandbox::new()?;
    let program = sandbox.compile(wasm).map_err(|e| anyhow::anyhow!("{e}"))?;
    let native = dir.join("example-native");
    let out = std::process::Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&native)
        .arg(c)
        .output()
        .context("cannot run the C compiler `cc`")?;
    if !out.status.success() {
        bail!("cc failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut wasm_best = Duration::MAX;
    let mut native_best = Duration::MAX;
    let mut answers = Vec::new();
    for i in 0..runs {
        let work = dir.join(format!("wasm-{i}"));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        let spec = RunSpec {
            program_name: "example".into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            stdin: None,
            work_dir: work.clone(),
            memory_bytes: 64 << 20,
            fuel: None,
            wall_secs: 600,
            resume: None,
            seed: [0; 32],
            output_dir: false,
            max_output_bytes: 1 << 20,
            cancel: Default::default(),
        };
        let t = Instant::now();
        let res = sandbox
            .run(&program, spec, &mut |_| true)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        wasm_best = wasm_best.min(t.elapsed());
        answers.push(std::fs::read(&res.stdout)?);
        let cwd = dir.join(format!("native-{i}"));
        let _ = std::fs::remove_dir_all(&cwd);
        std::fs::create_dir_all(&cwd)?;
        let t = Instant::now();
        let out = std::process::Command::new(&native)
            .args(args)
            .current_dir(&cwd)
            .output()?;
        native_best = native_best.min(t.elapsed());
        answers.push(out.stdout);
    }
    if answers.windows(2).any(|w| w[0] != w[1]) {
        bail!("the sandbox and the native build disagree");
    }
    Ok((wasm_best, native_best))
}

/// Runs the compute benchmarks and rewrites their section of `output`.
pub async fn run(dir: &Path, nodes: usize, units: usize, output: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    eprintln!("wasm against native: the primes and pi examples ...");
    let scratch = tempfile::tempdir_in(dir)?;
    let primes = wasm_vs_native(
        scratch.path(),
        (PRIMES_WASM, PRIMES_C),
        &["1000000000", "10000000"],
        3,
    )?;
    let pi = wasm_vs_native(scratch.path(), (PI_WASM, PI_C), &["1", "50000000"], 3)?;

    let mut dev = crate::devnet::DevnetArgs::for_bench(nodes, dir.join("devnet"));
    dev.enable_compute(4);
    eprintln!("starting a {nodes}-node devnet, 4 cpus each ...");
    let (mut running, _) = crate::devnet::start(&dev).await?;
    let result = async {
        let api = Api::new(&running[0].info.api)?;
        let module = dir.join("upper.wasm");
        std::fs::write(&module, UPPER_WASM)?;
        let put = api
            .put(
                tokio::fs::File::open(&module).await?,
                Some(UPPER_WASM.len() as u64),
                &cairn_node::api::PutQuery::default(),
            )
            .await?;
        let cap = put["cap"].as_str().context("no capability")?.to_string();
        // Let the scheduler hear every provider's advert.
        tokio::time::sleep(Duration::from_secs(6)).await;
        eprintln!("first-result latency ...");
        let mut lat1 = Duration::MAX;
        let mut lat2 = Duration::MAX;
        for _ in 0..5 {
            lat1 = lat1.min(
                run_job(&api, job(&cap, 1, 1), Duration::from_millis(5))
                    .await?
                    .0,
            );
            lat2 = lat2.min(
                run_job(&api, job(&cap, 1, 2), Duration::from_millis(5))
                    .await?
                    .0,
            );
        }
        eprintln!("dispatch throughput: {units} trivial units ...");
        let (_, all) = run_job(&api, job(&cap, units, 1), Duration::from_millis(200)).await?;
        let per_sec = units as f64 / all.as_secs_f64();
        Ok::<_, anyhow::Error>((lat1, lat2, per_sec, all))
    }
    .await;
    crate::devnet::stop(&mut running).await;
    let (lat1, lat2, per_sec, all) = result?;

    let mut section = format!(
        "{SECTION}\n\n`cargo run --release -p cairn -- bench --compute-only` (machine: {}, {}):\n\n| measure | value |\n|---|---|\n",
        crate::bench::machine(),
        crate::bench::today()
    );
    section.push_str(&format!(
        "| dispatch throughput, {units} trivial units, quorum 1, {nodes} providers × 4 cpus | {per_sec:.0} units/s ({:.1} s) |\n",
        all.as_secs_f64()
    ));
    section.push_str(&format!(
        "| submit to first result, one unit, quorum 1 / quorum 2 | {} ms / {} ms |\n",
        lat1.as_millis(),
        lat2.as_millis()
    ));
    for (name, (wasm, native)) in [
        ("primes below 10^9, 100 checkpoints", primes),
        ("pi, 50 million samples", pi),
    ] {
        section.push_str(&format!(
            "| {name} (example), sandbox / native `cc -O2` | {:.2} s / {:.2} s = {:.2}× |\n",
            wasm.as_secs_f64(),
            native.as_secs_f64(),
            wasm.as_secs_f64() / native.as_secs_f64()
        ));
    }
    section.push_str(
        "\nTargets (issue 5): dispatch ≥ 1,000 units/s (BOINC's server: about 100/s), WASM ≤ 1.3× native. \
         A trivial unit is a full round trip: the scheduler matches it, sends the task over libp2p, \
         the provider instantiates the module in a fresh sandbox in its cpu slot's work dir, runs it and \
         reports the output inline; every node shares this machine's 2 cores. Sandbox runs are \
         fuel-metered, as on a provider. The compute-bound loop (pi) runs at native speed; the sieve \
         (primes), one byte store per inner iteration, does not reach the target: its inner loop pays \
         for fuel metering on every iteration and for wasm32 address arithmetic, and the checkpoint \
         after each block is a file write and copy.\n",
    );
    eprint!("{section}");
    crate::bench::replace_section(output, SECTION, &section)
}
