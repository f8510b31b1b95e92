//! A deterministic, seeded, discrete-event simulator of a Cairn network.
//!
//! It drives the node's own decision code from `cairn-core` (placement,
//! audit scores, repair records, the repair threshold, queue and bandwidth
//! limit) over thousands of simulated nodes for a simulated year, under a
//! churn model ([`Churn`]), and reports what happened ([`Report`]): objects
//! lost, segments that dipped below k, repair traffic, how long repairs
//! waited, and a durability estimate in nines.
//!
//! What is modelled, and what is not:
//! - Nodes join, go offline for daily sessions, leave for good, lose a whole
//!   /24 or zone together, and some silently drop all their data at a
//!   random moment.
//! - Stewards see a holder as lost once it has been unreachable for the
//!   grace period (they probe far more often than the grace period, so the
//!   simulator uses the true offline time) and see a piece as bad once an
//!   audit of it fails. Audits hit random pieces of each reachable node at
//!   a fixed rate (as in the node, an unreachable holder is not audited:
//!   liveness handles it); scores move with [`cairn_core::score`] and
//!   disqualified nodes' pieces are repaired.
//! - A segment is repaired when [`cairn_core::repair::assess`] says so;
//!   repairs wait in a [`cairn_core::repair::RepairQueue`] behind a
//!   network-wide [`cairn_core::repair::TokenBucket`], download k pieces
//!   from holders that really have them, and place the rebuilt pieces with
//!   [`cairn_core::placement::select`], as the node does.
//! - Not modelled: steward failure (a record lives on five stewards that
//!   hand it on every pass; DURABILITY.md bounds the chance all five leave
//!   at once), network latency beyond a per-repair transfer time, and
//!   disk-full nodes.
//!
//! The same [`Config`] (including the seed) always gives the same
//! [`Report`]: every random draw comes from one seeded generator and every
//! collection is iterated in a fixed order.

pub mod script;
mod world;

use serde::{Deserialize, Serialize};

pub use script::{Round, Script, replay};
pub use world::run;

/// The churn model: how nodes come, go and fail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Churn {
    /// Share of nodes that leave for good each month (and are replaced by
    /// newcomers), e.g. 0.03.
    pub departures_per_month: f64,
    /// Chance per node per day of an offline session.
    pub offline_sessions_per_day: f64,
    /// Mean length of an offline session, hours (exponential).
    pub offline_hours: f64,
    /// Whole /24 networks lost for good per year (every node in it leaves).
    pub subnet_losses_per_year: f64,
    /// Zone outages per year (every node in the zone offline together).
    pub zone_outages_per_year: f64,
    /// Length of a zone outage, hours.
    pub zone_outage_hours: f64,
    /// Share of nodes that silently drop all their data at a random moment.
    pub dropper_share: f64,
}

impl Churn {
    /// A home-and-small-office network: 3 % leave per month, a 2-hour
    /// offline session every few days, a /24 lost monthly, a zone outage per
    /// quarter, 1 % of nodes silently drop their data.
    pub fn realistic() -> Self {
        Self {
            departures_per_month: 0.03,
            offline_sessions_per_day: 0.3,
            offline_hours: 2.0,
            subnet_losses_per_year: 12.0,
            zone_outages_per_year: 4.0,
            zone_outage_hours: 6.0,
            dropper_share: 0.01,
        }
    }
}

/// What to simulate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Nodes at the start (the network stays about this size).
    pub nodes: usize,
    /// Simulated days.
    pub days: u64,
    /// Seed of every random draw.
    pub seed: u64,
    /// Objects stored at the start.
    pub objects: usize,
    /// Segments per object.
    pub segments_per_object: u32,
    /// Pieces needed per segment.
    pub k: u16,
    /// Pieces stored per segment.
    pub n: u16,
    /// Bytes per segment (pieces are `segment_bytes / k`).
    pub segment_bytes: u64,
    /// The churn model.
    pub churn: Churn,
    /// Failure zones the nodes are spread over.
    pub zones: u16,
    /// Mean nodes per /24 network.
    pub nodes_per_subnet: f64,
    /// Audits per node per day.
    pub audits_per_node_per_day: f64,
    /// Hours a holder may be unreachable before its pieces count as lost.
    pub grace_hours: f64,
    /// When a segment is repaired.
    pub repair: cairn_core::repair::RepairPolicy,
    /// Network-wide repair bandwidth limit, bytes per second per node.
    pub repair_bytes_per_sec_per_node: u64,
    /// Transfer speed of one repair, bytes per second.
    pub repairer_bytes_per_sec: u64,
    /// How often stewards look for segments to repair, seconds.
    pub check_interval_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nodes: 10_000,
            days: 365,
            seed: 7,
            objects: 10_000,
            segments_per_object: 1,
            k: 16,
            n: 24,
            segment_bytes: 64 << 20,
            churn: Churn::realistic(),
            zones: 40,
            nodes_per_subnet: 2.0,
            audits_per_node_per_day: 6.0,
            grace_hours: 8.0,
            repair: cairn_core::repair::RepairPolicy::default(),
            repair_bytes_per_sec_per_node: 256 * 1024,
            repairer_bytes_per_sec: 8 << 20,
            check_interval_secs: 3600,
        }
    }
}

/// A configuration the simulator cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// k, n or the node count do not fit together.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Repair waiting times, hours.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Waits {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Longest.
    pub max: f64,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The configuration that produced this report.
    pub config: Config,
    /// n / k.
    pub expansion: f64,
    /// Objects stored.
    pub objects: usize,
    /// Objects with a segment that lost more than n − k pieces for good.
    pub objects_lost: usize,
    /// Segments lost for good.
    pub segments_lost: usize,
    /// Segments that had fewer than k reachable pieces at some moment
    /// (including while holders were only offline).
    pub segments_below_k: usize,
    /// Estimated durability per object-year, in nines (see `DURABILITY.md`
    /// for the model); capped at 20.
    pub durability_nines: f64,
    /// Nines the run itself demonstrates: −log10 of the 95 % upper bound on
    /// the yearly object loss rate (rule of three when nothing was lost).
    pub observed_nines_bound: f64,
    /// Bytes moved by repair (downloads + uploads) per month, as a
    /// percentage of the bytes stored.
    pub repair_traffic_pct_per_month: f64,
    /// Repairs completed.
    pub repairs: u64,
    /// Pieces rebuilt and placed.
    pub pieces_rebuilt: u64,
    /// From a segment reaching the repair threshold to its repair.
    pub repair_wait_hours: Waits,
    /// Pieces lost for good per month, as a share of pieces stored.
    pub piece_loss_per_month: f64,
    /// Permanent departures (including /24 losses).
    pub departures: u64,
    /// Newcomers.
    pub joins: u64,
    /// Nodes that silently dropped their data.
    pub droppers: u64,
    /// Droppers disqualified by audits.
    pub droppers_disqualified: u64,
    /// Honest nodes disqualified (false positives; should be 0).
    pub honest_disqualified: u64,
    /// Audits run.
    pub audits: u64,
    /// Node-days simulated.
    pub node_days: f64,
}
