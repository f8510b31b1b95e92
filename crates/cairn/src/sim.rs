//! `cairn sim`: the durability simulator on the command line.

use std::time::Instant;

use anyhow::{Result, bail};
use cairn_core::repair::{RepairPolicy, Threshold};
use cairn_sim::{Churn, Config, Report};
use clap::Args;

/// Simulate a network for a while and report durability and repair traffic.
#[derive(Args, Debug)]
pub struct SimArgs {
    /// Nodes at the start (the network stays about this size).
    #[arg(long, default_value_t = 10_000)]
    nodes: usize,
    /// Simulated days.
    #[arg(long, default_value_t = 365)]
    days: u64,
    /// Seed: the same seed and settings always give the same report.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Objects stored at the start.
    #[arg(long, default_value_t = 10_000)]
    objects: usize,
    /// Segments per object.
    #[arg(long, default_value_t = 1)]
    segments_per_object: u32,
    /// Pieces needed per segment.
    #[arg(long, default_value_t = 16)]
    k: u16,
    /// Pieces stored per segment.
    #[arg(long, default_value_t = 24)]
    n: u16,
    /// Share of nodes leaving for good per month.
    #[arg(long, default_value_t = Churn::realistic().departures_per_month)]
    departures_per_month: f64,
    /// Chance per node per day of an offline session.
    #[arg(long, default_value_t = Churn::realistic().offline_sessions_per_day)]
    offline_sessions_per_day: f64,
    /// Mean offline session, hours.
    #[arg(long, default_value_t = Churn::realistic().offline_hours)]
    offline_hours: f64,
    /// Whole /24 networks lost per year.
    #[arg(long, default_value_t = Churn::realistic().subnet_losses_per_year)]
    subnet_losses_per_year: f64,
    /// Zone outages per year.
    #[arg(long, default_value_t = Churn::realistic().zone_outages_per_year)]
    zone_outages_per_year: f64,
    /// Length of a zone outage, hours.
    #[arg(long, default_value_t = Churn::realistic().zone_outage_hours)]
    zone_outage_hours: f64,
    /// Share of nodes that silently drop their data.
    #[arg(long, default_value_t = Churn::realistic().dropper_share)]
    dropper_share: f64,
    /// Hours a holder may be unreachable before its pieces count as lost.
    #[arg(long, default_value_t = Config::default().grace_hours)]
    grace_hours: f64,
    /// Repair when healthy pieces fall to this many (default: k + ⌈3(n − k)/8⌉).
    #[arg(long)]
    repair_threshold: Option<u16>,
    /// Audits per node per day.
    #[arg(long, default_value_t = Config::default().audits_per_node_per_day)]
    audits_per_day: f64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: SimArgs) -> Result<()> {
    for (name, v) in [
        ("--departures-per-month", a.departures_per_month),
        ("--offline-sessions-per-day", a.offline_sessions_per_day),
        ("--offline-hours", a.offline_hours),
        ("--subnet-losses-per-year", a.subnet_losses_per_year),
        ("--zone-outages-per-year", a.zone_outages_per_year),
        ("--zone-outage-hours", a.zone_outage_hours),
        ("--dropper-share", a.dropper_share),
        ("--grace-hours", a.grace_hours),
        ("--audits-per-day", a.audits_per_day),
    ] {
        if !v.is_finite() || v < 0.0 {
            bail!("{name} must be a non-negative number, not {v}");
        }
    }
    if a.dropper_share > 1.0 || a.departures_per_month > 1.0 {
        bail!("--dropper-share and --departures-per-month are fractions between 0 and 1");
    }
    let config = Config {
        nodes: a.nodes,
        days: a.days,
        seed: a.seed,
        objects: a.objects,
        segments_per_object: a.segments_per_object,
        k: a.k,
        n: a.n,
        churn: Churn {
            departures_per_month: a.departures_per_month,
            offline_sessions_per_day: a.offline_sessions_per_day,
            offline_hours: a.offline_hours,
            subnet_losses_per_year: a.subnet_losses_per_year,
            zone_outages_per_year: a.zone_outages_per_year,
            zone_outage_hours: a.zone_outage_hours,
            dropper_share: a.dropper_share,
        },
        grace_hours: a.grace_hours,
        audits_per_node_per_day: a.audits_per_day,
        repair: RepairPolicy {
            threshold: a
                .repair_threshold
                .map_or(Threshold::Lazy, Threshold::AtMost),
        },
        ..Config::default()
    };
    let started = Instant::now();
    let report = cairn_sim::run(&config)?;
    let secs = started.elapsed().as_secs_f64();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    // Speed varies by machine, so it stays out of the (deterministic) report.
    eprintln!(
        "simulated {:.0} node-days in {secs:.1} s ({:.0} node-days/s)",
        report.node_days,
        report.node_days / secs.max(1e-9)
    );
    Ok(())
}

fn print_report(r: &Report) {
    let c = &r.config;
    println!(
        "{} nodes, {} days, seed {}, {} objects of {} segment(s), k={} n={} ({:.2}x)",
        c.nodes, c.days, c.seed, r.objects, c.segments_per_object, c.k, c.n, r.expansion
    );
    println!(
        "churn: {:.1} %/month leave, {:.2} offline sessions/day of {:.1} h, {} /24 losses and {} zone outages a year, {:.1} % silent droppers",
        c.churn.departures_per_month * 100.0,
        c.churn.offline_sessions_per_day,
        c.churn.offline_hours,
        c.churn.subnet_losses_per_year,
        c.churn.zone_outages_per_year,
        c.churn.dropper_share * 100.0
    );
    println!();
    println!("objects lost            {}", r.objects_lost);
    println!("segments lost           {}", r.segments_lost);
    println!("segments ever below k   {}", r.segments_below_k);
    println!(
        "durability              {:.1} nines (model); this run alone shows ≥ {:.1}",
        r.durability_nines, r.observed_nines_bound
    );
    println!(
        "repair traffic          {:.1} % of stored bytes per month",
        r.repair_traffic_pct_per_month
    );
    println!(
        "repairs                 {} ({} pieces rebuilt)",
        r.repairs, r.pieces_rebuilt
    );
    let min = |h: f64| h * 60.0;
    println!(
        "repair wait             mean {:.1} min, p50 {:.1} min, p99 {:.1} min, max {:.1} min (queued to rebuilt)",
        min(r.repair_wait_hours.mean),
        min(r.repair_wait_hours.p50),
        min(r.repair_wait_hours.p99),
        min(r.repair_wait_hours.max)
    );
    println!(
        "piece loss              {:.2} % of pieces per month",
        r.piece_loss_per_month * 100.0
    );
    println!(
        "nodes                   {} left, {} joined, {} droppers ({} disqualified), {} honest disqualified",
        r.departures, r.joins, r.droppers, r.droppers_disqualified, r.honest_disqualified
    );
    println!("audits                  {}", r.audits);
    println!();
}
