//! Two-sided matching of work units to providers (HTCondor's matchmaking,
//! reduced to what Cairn needs), and why a unit waits.
//!
//! [`assign`] takes the units that want providers now ([`UnitReq`]), the
//! providers the scheduler knows ([`ProviderState`]) and the time, and
//! returns placements and, for every unit left short, a [`WaitReason`] a
//! user can read.
//!
//! # Rules (each property-tested)
//!
//! - A provider never exceeds its offer: running units ≤ cpus, memory in
//!   use ≤ offered memory, counting what this call assigns.
//! - A unit is placed only on a provider that is in its availability window
//!   now, idle if it asked to run only when idle, and whose window stays
//!   open for the unit's expected run ([`Offer::expected_secs`]); and only if
//!   that run ends before the unit's `finish_by`, if any.
//! - A unit never goes to a provider it ran on (or runs on) before, nor to
//!   two providers of one operator, counting earlier attempts
//!   ([`UnitReq::exclude`], [`UnitReq::exclude_operators`]).
//! - Deterministic: the result depends on the sets of units and providers,
//!   not their order, so two schedulers with the same view agree. Units go
//!   earliest `finish_by` first, then by id; for each, eligible providers
//!   are ranked by data locality (inputs it holds pieces of), then
//!   reliability ([`Reliability::rank_key`]), then load (running / cpus,
//!   lower first), then a rendezvous hash of unit and provider id.
//!
//! # Wait reasons
//!
//! Each provider is checked in a fixed order: memory offered, already ran,
//! idle, in window, window long enough, deadline, free capacity. The reason
//! given for a waiting unit is the check at which the providers that got
//! furthest stopped, so it names what would have to change: "no provider
//! offers 8 GiB of memory" only when none does, "all eligible providers are
//! busy" only when some provider passed every other check.
//!
//! # Bounds
//!
//! At most [`MAX_UNITS_PER_CALL`] units are matched per call (the rest wait
//! as [`WaitReason::Queued`]), at most [`MAX_PROVIDERS_PER_CALL`] providers
//! are considered (lowest ids first: callers pass their best candidates),
//! at most [`MAX_REPLICAS_PER_REQUEST`] replicas per unit, and the first
//! [`MAX_INPUTS`] inputs and [`MAX_HOLDINGS`] holdings count for locality.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::resources::{Need, Offer, format_duration, format_size};
use super::validate::Reliability;
use super::{OperatorId, ProviderId, UnitId};
use crate::ids::FileId;

/// Most units matched in one call.
pub const MAX_UNITS_PER_CALL: usize = 4096;
/// Most providers considered in one call.
pub const MAX_PROVIDERS_PER_CALL: usize = 1024;
/// Most replicas one unit gets in one call.
pub const MAX_REPLICAS_PER_REQUEST: u16 = 16;
/// Inputs of a unit counted for locality.
pub const MAX_INPUTS: usize = 64;
/// Holdings of a provider counted for locality.
pub const MAX_HOLDINGS: usize = 4096;

/// A unit that wants providers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitReq {
    /// Which unit.
    pub unit: UnitId,
    /// What one replica needs.
    pub need: Need,
    /// How many more providers it wants now.
    pub replicas: u16,
    /// Objects it reads (stdin, module, checkpoint), for locality.
    pub inputs: Vec<FileId>,
    /// Providers that ran or run it: never again.
    pub exclude: Vec<ProviderId>,
    /// Their operators: never again either.
    pub exclude_operators: Vec<OperatorId>,
    /// An absolute time by which a run must end (the job's own deadline),
    /// if any.
    pub finish_by: Option<u64>,
}

/// A provider as the scheduler sees it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderState {
    /// Its node id.
    pub id: ProviderId,
    /// Who operates it.
    pub operator: OperatorId,
    /// What it offers.
    pub offer: Offer,
    /// Units running on it now.
    pub running: u16,
    /// Memory those units hold.
    pub memory_in_use: u64,
    /// Whether its machine is idle now (matters only with `idle_only`).
    pub idle: bool,
    /// Its validation record.
    pub reliability: Reliability,
    /// Objects it holds pieces of (any order).
    pub holds: Vec<FileId>,
}

/// One replica of one unit goes to one provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The unit.
    pub unit: UnitId,
    /// The provider.
    pub provider: ProviderId,
}

/// A unit that got fewer providers than it wanted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// The unit.
    pub unit: UnitId,
    /// Replicas still unplaced.
    pub missing: u16,
    /// Why.
    pub reason: WaitReason,
}

/// The result of one matching round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assignment {
    /// Placements, in matching order.
    pub placements: Vec<Placement>,
    /// Units left short, in matching order.
    pub waiting: Vec<Waiting>,
}

/// Why a unit waits; [`fmt::Display`] is the sentence `cairn job status`
/// shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum WaitReason {
    /// No provider is known at all.
    NoProviders,
    /// No provider offers this much memory.
    NoMemory {
        /// Memory the unit needs.
        memory: u64,
    },
    /// Every provider with enough memory ran (or runs) it already, or
    /// shares an operator with one that did.
    AlreadyRan,
    /// The providers with enough memory run only when idle and are not.
    NotIdle {
        /// Memory the unit needs.
        memory: u64,
    },
    /// No provider with enough memory is in its window now.
    Closed {
        /// Memory the unit needs.
        memory: u64,
        /// Seconds until the first of them opens.
        opens_in: u64,
    },
    /// Windows are open but close before the expected run would end.
    WindowTooShort {
        /// Memory the unit needs.
        memory: u64,
        /// The run's expected length in seconds (on the provider that came
        /// closest).
        needs_secs: u64,
    },
    /// No provider can finish it before its `finish_by`.
    TooLate,
    /// Every eligible provider is at its cpu or memory limit.
    Busy,
    /// More units than one round matches; it is considered next round.
    Queued,
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoProviders => f.write_str("no provider offers compute"),
            Self::NoMemory { memory } => {
                write!(f, "no provider offers {} of memory", format_size(*memory))
            }
            Self::AlreadyRan => f.write_str(
                "already ran or runs on every eligible provider (a unit runs once per provider and operator)",
            ),
            Self::NotIdle { memory } => write!(
                f,
                "every provider with {} runs work only when idle, and none is idle now",
                format_size(*memory)
            ),
            Self::Closed { memory, opens_in } => write!(
                f,
                "no provider with {} is in its availability window now (next opens in {})",
                format_size(*memory),
                format_duration(*opens_in)
            ),
            Self::WindowTooShort { memory, needs_secs } => write!(
                f,
                "no provider with {} has {} left in its availability window",
                format_size(*memory),
                format_duration(*needs_secs)
            ),
            Self::TooLate => f.write_str("no provider can finish it before its deadline"),
            Self::Busy => f.write_str("all eligible providers are busy"),
            Self::Queued => f.write_str("queued behind other units"),
        }
    }
}

/// Why one provider cannot take one unit, in check order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reject {
    Memory,
    Ran,
    NotIdle,
    Closed { next: u64 },
    WindowShort { needs: u64 },
    TooLate,
    Busy,
}

impl Reject {
    fn stage(self) -> u8 {
        match self {
            Self::Memory => 0,
            Self::Ran => 1,
            Self::NotIdle => 2,
            Self::Closed { .. } => 3,
            Self::WindowShort { .. } => 4,
            Self::TooLate => 5,
            Self::Busy => 6,
        }
    }
}

struct Candidate<'a> {
    state: &'a ProviderState,
    running: u16,
    memory_in_use: u64,
    holds: HashSet<FileId>,
}

fn check(
    req: &UnitReq,
    c: &Candidate<'_>,
    excluded: &HashSet<ProviderId>,
    operators: &HashSet<OperatorId>,
    now: u64,
) -> Result<(), Reject> {
    let p = c.state;
    let offer = &p.offer;
    let need = &req.need;
    if offer.memory_bytes < need.memory_bytes {
        return Err(Reject::Memory);
    }
    if excluded.contains(&p.id) || operators.contains(&p.operator) {
        return Err(Reject::Ran);
    }
    if offer.idle_only && !p.idle {
        return Err(Reject::NotIdle);
    }
    let Some(closes) = offer.schedule.open_until(now) else {
        let next = offer.schedule.next_open(now).unwrap_or(u64::MAX);
        return Err(Reject::Closed { next });
    };
    let needs = offer.expected_secs(need);
    let ends = now.saturating_add(needs);
    if ends > closes {
        return Err(Reject::WindowShort { needs });
    }
    if req.finish_by.is_some_and(|d| ends > d) {
        return Err(Reject::TooLate);
    }
    let memory_after = c.memory_in_use.saturating_add(need.memory_bytes);
    if c.running >= offer.cpus || memory_after > offer.memory_bytes {
        return Err(Reject::Busy);
    }
    Ok(())
}

fn rendezvous(unit: &UnitId, provider: &ProviderId) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("cairn v1 compute match");
    h.update(&unit.0);
    h.update(&provider.0);
    *h.finalize().as_bytes()
}

/// Matches `units` to `providers` at time `now` (see the module docs).
pub fn assign(units: &[UnitReq], providers: &[ProviderState], now: u64) -> Assignment {
    let mut sorted: Vec<&ProviderState> = providers
        .iter()
        .filter(|p| p.offer.validate().is_ok())
        .collect();
    sorted.sort_by_key(|p| p.id);
    sorted.dedup_by_key(|p| p.id);
    sorted.truncate(MAX_PROVIDERS_PER_CALL);
    // Locality sets are built only when some unit has inputs to look up.
    let locality = units.iter().any(|u| !u.inputs.is_empty());
    let mut candidates: Vec<Candidate<'_>> = sorted
        .into_iter()
        .map(|p| Candidate {
            state: p,
            running: p.running,
            memory_in_use: p.memory_in_use,
            holds: if locality {
                p.holds.iter().take(MAX_HOLDINGS).copied().collect()
            } else {
                HashSet::new()
            },
        })
        .collect();

    let mut order: Vec<&UnitReq> = units.iter().filter(|u| u.replicas > 0).collect();
    // Earliest deadline first; ids break ties so input order never matters.
    order.sort_by_key(|u| (u.finish_by.unwrap_or(u64::MAX), u.unit));
    // A unit listed twice is matched once, as its first entry in that order.
    let mut seen = HashSet::new();
    order.retain(|u| seen.insert(u.unit));

    let mut out = Assignment::default();
    for (i, req) in order.into_iter().enumerate() {
        let want = req.replicas.min(MAX_REPLICAS_PER_REQUEST);
        if i >= MAX_UNITS_PER_CALL {
            out.waiting.push(Waiting {
                unit: req.unit,
                missing: want,
                reason: WaitReason::Queued,
            });
            continue;
        }
        let mut excluded: HashSet<ProviderId> = req.exclude.iter().copied().collect();
        let mut operators: HashSet<OperatorId> = req.exclude_operators.iter().copied().collect();
        let inputs: BTreeSet<FileId> = req.inputs.iter().take(MAX_INPUTS).copied().collect();
        let mut placed = 0;
        while placed < want {
            let best = candidates
                .iter()
                .enumerate()
                .filter(|(_, c)| check(req, c, &excluded, &operators, now).is_ok())
                .max_by_key(|(_, c)| {
                    let locality = inputs.iter().filter(|f| c.holds.contains(f)).count();
                    // Load as a fraction of cpus, in millionths.
                    let load = u64::from(c.running) * 1_000_000 / u64::from(c.state.offer.cpus);
                    (
                        locality,
                        c.state.reliability.rank_key(),
                        Reverse(load),
                        rendezvous(&req.unit, &c.state.id),
                    )
                })
                .map(|(i, _)| i);
            let Some(best) = best else { break };
            let c = &mut candidates[best];
            c.running += 1;
            c.memory_in_use = c.memory_in_use.saturating_add(req.need.memory_bytes);
            excluded.insert(c.state.id);
            operators.insert(c.state.operator);
            out.placements.push(Placement {
                unit: req.unit,
                provider: c.state.id,
            });
            placed += 1;
        }
        if placed < want {
            out.waiting.push(Waiting {
                unit: req.unit,
                missing: want - placed,
                reason: explain(req, &candidates, &excluded, &operators, now),
            });
        }
    }
    out
}

/// The most specific reason `req` cannot get another provider.
fn explain(
    req: &UnitReq,
    candidates: &[Candidate<'_>],
    excluded: &HashSet<ProviderId>,
    operators: &HashSet<OperatorId>,
    now: u64,
) -> WaitReason {
    let memory = req.need.memory_bytes;
    let rejects: Vec<Reject> = candidates
        .iter()
        .filter_map(|c| check(req, c, excluded, operators, now).err())
        .collect();
    let Some(furthest) = rejects.iter().map(|r| r.stage()).max() else {
        return WaitReason::NoProviders;
    };
    let at = |stage| rejects.iter().filter(move |r| r.stage() == stage);
    match furthest {
        0 => WaitReason::NoMemory { memory },
        1 => WaitReason::AlreadyRan,
        2 => WaitReason::NotIdle { memory },
        3 => {
            let next = at(3)
                .filter_map(|r| match r {
                    Reject::Closed { next } => Some(*next),
                    _ => None,
                })
                .min()
                .unwrap_or(u64::MAX);
            WaitReason::Closed {
                memory,
                opens_in: next.saturating_sub(now),
            }
        }
        4 => WaitReason::WindowTooShort {
            memory,
            needs_secs: at(4)
                .filter_map(|r| match r {
                    Reject::WindowShort { needs } => Some(*needs),
                    _ => None,
                })
                .min()
                .unwrap_or(0),
        },
        5 => WaitReason::TooLate,
        _ => WaitReason::Busy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::window::Schedule;
    use crate::keys::PublicKey;
    use proptest::prelude::*;
    use std::collections::HashMap;

    const GIB: u64 = 1 << 30;
    /// Monday 2024-01-01 12:00 UTC.
    const NOON: u64 = 1_704_067_200 + 12 * 3600;

    fn key(i: u8) -> PublicKey {
        PublicKey([i; 32])
    }

    fn provider(i: u8, cpus: u16, memory: u64, schedule: &str) -> ProviderState {
        ProviderState {
            id: key(i),
            operator: key(i),
            offer: Offer::new(cpus, memory, Schedule::parse(schedule).unwrap()).unwrap(),
            running: 0,
            memory_in_use: 0,
            idle: true,
            reliability: Reliability::default(),
            holds: vec![],
        }
    }

    fn unit(i: u8, memory: u64, replicas: u16) -> UnitReq {
        UnitReq {
            unit: UnitId([i; 32]),
            need: Need {
                memory_bytes: memory,
                fuel: None,
                estimate_secs: 60,
                deadline_secs: 600,
            },
            replicas,
            inputs: vec![],
            exclude: vec![],
            exclude_operators: vec![],
            finish_by: None,
        }
    }

    fn reason(a: &Assignment) -> String {
        a.waiting[0].reason.to_string()
    }

    #[test]
    fn wait_reasons_are_the_most_specific() {
        let u = unit(1, 8 * GIB, 1);
        assert_eq!(
            reason(&assign(std::slice::from_ref(&u), &[], NOON)),
            "no provider offers compute"
        );
        let small = provider(1, 4, 4 * GIB, "always");
        assert_eq!(
            reason(&assign(
                std::slice::from_ref(&u),
                std::slice::from_ref(&small),
                NOON
            )),
            "no provider offers 8 GiB of memory"
        );
        let night = provider(2, 4, 16 * GIB, "mon-fri 19:00-07:00");
        let a = assign(
            std::slice::from_ref(&u),
            &[small.clone(), night.clone()],
            NOON,
        );
        assert_eq!(
            reason(&a),
            "no provider with 8 GiB is in its availability window now (next opens in 7 h)"
        );
        let mut ran = u.clone();
        ran.exclude = vec![key(2)];
        assert_eq!(
            reason(&assign(&[ran], &[small.clone(), night.clone()], NOON)),
            "already ran or runs on every eligible provider (a unit runs once per provider and operator)"
        );
        let mut short = u.clone();
        short.need.estimate_secs = 2 * 3600;
        short.need.deadline_secs = 3 * 3600;
        let closes_soon = provider(3, 4, 16 * GIB, "mon 11:00-13:00");
        assert_eq!(
            reason(&assign(&[short], &[closes_soon], NOON)),
            "no provider with 8 GiB has 2 h left in its availability window"
        );
        let mut late = u.clone();
        late.finish_by = Some(NOON + 30);
        assert_eq!(
            reason(&assign(
                &[late],
                &[provider(4, 1, 16 * GIB, "always")],
                NOON
            )),
            "no provider can finish it before its deadline"
        );
        let mut busy = provider(5, 1, 16 * GIB, "always");
        busy.running = 1;
        assert_eq!(
            reason(&assign(std::slice::from_ref(&u), &[busy, night], NOON)),
            "all eligible providers are busy"
        );
        let mut lazy = provider(6, 1, 16 * GIB, "always");
        lazy.offer.idle_only = true;
        lazy.idle = false;
        assert_eq!(
            reason(&assign(&[u], &[lazy], NOON)),
            "every provider with 8 GiB runs work only when idle, and none is idle now"
        );
    }

    #[test]
    fn replicas_go_to_distinct_operators() {
        let mut a = provider(1, 4, 4 * GIB, "always");
        let mut b = provider(2, 4, 4 * GIB, "always");
        let c = provider(3, 4, 4 * GIB, "always");
        a.operator = key(200);
        b.operator = key(200);
        let out = assign(&[unit(1, GIB, 3)], &[a, b, c], NOON);
        assert_eq!(out.placements.len(), 2);
        assert_eq!(out.waiting[0].missing, 1);
        assert_eq!(out.waiting[0].reason, WaitReason::AlreadyRan);
    }

    #[test]
    fn locality_then_reliability_then_load() {
        let input = FileId([9; 32]);
        let mut near = provider(1, 4, 4 * GIB, "always");
        near.holds = vec![input];
        near.running = 3;
        let mut good = provider(2, 4, 4 * GIB, "always");
        for _ in 0..5 {
            good.reliability.record_valid();
        }
        let idle = provider(3, 4, 4 * GIB, "always");
        let mut busy = provider(4, 4, 4 * GIB, "always");
        busy.running = 2;
        let mut u = unit(1, GIB, 1);
        u.inputs = vec![input];
        let all = [near.clone(), good.clone(), idle.clone(), busy.clone()];
        assert_eq!(
            assign(std::slice::from_ref(&u), &all, NOON).placements[0].provider,
            key(1)
        );
        u.inputs.clear();
        assert_eq!(
            assign(std::slice::from_ref(&u), &all, NOON).placements[0].provider,
            key(2)
        );
        let all = [near, idle, busy];
        assert_eq!(assign(&[u], &all, NOON).placements[0].provider, key(3));
    }

    #[test]
    fn earliest_deadline_first_gets_the_last_slot() {
        let p = provider(1, 1, 4 * GIB, "always");
        let mut early = unit(2, GIB, 1);
        early.finish_by = Some(NOON + 3600);
        let late = unit(1, GIB, 1);
        let out = assign(&[late, early], &[p], NOON);
        assert_eq!(out.placements[0].unit, UnitId([2; 32]));
        assert_eq!(out.waiting[0].reason, WaitReason::Busy);
    }

    #[test]
    fn queued_past_the_bound() {
        let units: Vec<UnitReq> = (0..MAX_UNITS_PER_CALL + 2)
            .map(|i| {
                let mut u = unit(0, GIB, 1);
                u.unit = UnitId(*blake3::hash(&i.to_le_bytes()).as_bytes());
                u
            })
            .collect();
        let out = assign(&units, &[provider(1, 1, GIB, "always")], NOON);
        assert_eq!(out.placements.len(), 1);
        assert_eq!(
            out.waiting
                .iter()
                .filter(|w| w.reason == WaitReason::Queued)
                .count(),
            2
        );
    }

    const SCHEDULES: [&str; 5] = [
        "always",
        "mon-fri 19:00-07:00; sat,sun all-day",
        "daily 09:00-17:00",
        "mon,wed 11:00-12:30",
        "tue-thu 00:00-06:00; utc+05:30",
    ];

    fn providers() -> impl Strategy<Value = Vec<ProviderState>> {
        prop::collection::vec(
            (
                0u8..40,
                0u8..6,
                1u16..4,
                1u64..8,
                0usize..SCHEDULES.len(),
                any::<bool>(),
                any::<bool>(),
                0u16..4,
                prop::collection::vec(0u8..4, 0..3),
                0u32..12,
            ),
            0..12,
        )
        .prop_map(|v| {
            v.into_iter()
                .map(
                    |(id, op, cpus, mem, s, idle_only, idle, running, holds, valid)| {
                        let mut p = provider(id, cpus, mem * GIB, SCHEDULES[s]);
                        p.operator = key(100 + op);
                        p.offer.idle_only = idle_only;
                        p.idle = idle;
                        p.running = running.min(cpus);
                        p.memory_in_use = u64::from(p.running) * GIB / 2;
                        p.holds = holds.into_iter().map(|h| FileId([h; 32])).collect();
                        for _ in 0..valid {
                            p.reliability.record_valid();
                        }
                        p
                    },
                )
                .collect()
        })
    }

    fn units() -> impl Strategy<Value = Vec<UnitReq>> {
        prop::collection::vec(
            (
                0u8..30,
                1u64..6,
                1u16..4,
                0u64..20_000,
                prop::collection::vec(0u8..40, 0..3),
                prop::option::of(0u64..30_000),
                prop::collection::vec(0u8..4, 0..2),
            ),
            0..12,
        )
        .prop_map(|v| {
            v.into_iter()
                .map(|(id, mem, replicas, est, exclude, finish, inputs)| {
                    let mut u = unit(id, mem * GIB / 2, replicas);
                    u.need.estimate_secs = est;
                    u.need.deadline_secs = 20_000;
                    u.exclude = exclude.into_iter().map(key).collect();
                    u.finish_by = finish.map(|f| NOON + f);
                    u.inputs = inputs.into_iter().map(|h| FileId([h; 32])).collect();
                    u
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn matching_invariants(
            units in units(),
            providers in providers(),
            at in 0u64..(7 * 86_400),
            seed in any::<u64>(),
        ) {
            let now = NOON + at;
            let out = assign(&units, &providers, now);
            // The first state seen for each id, as assign deduplicates.
            let mut by_id: HashMap<ProviderId, &ProviderState> = HashMap::new();
            let mut sorted: Vec<&ProviderState> = providers.iter().collect();
            sorted.sort_by_key(|p| p.id);
            for p in sorted {
                by_id.entry(p.id).or_insert(p);
            }
            let mut unit_by_id: HashMap<UnitId, &UnitReq> = HashMap::new();
            let mut su: Vec<&UnitReq> = units.iter().collect();
            su.sort_by_key(|u| (u.finish_by.unwrap_or(u64::MAX), u.unit));
            for u in su {
                unit_by_id.entry(u.unit).or_insert(u);
            }
            let mut load: HashMap<ProviderId, (u16, u64)> = HashMap::new();
            let mut per_unit: HashMap<UnitId, Vec<ProviderId>> = HashMap::new();
            for pl in &out.placements {
                let p = by_id[&pl.provider];
                let u = unit_by_id[&pl.unit];
                let l = load.entry(p.id).or_insert((p.running, p.memory_in_use));
                l.0 += 1;
                l.1 += u.need.memory_bytes;
                // Never over capacity.
                prop_assert!(l.0 <= p.offer.cpus);
                prop_assert!(l.1 <= p.offer.memory_bytes);
                // Never outside a window, and the run fits in it.
                let closes = p.offer.schedule.open_until(now);
                prop_assert!(closes.is_some());
                prop_assert!(closes.unwrap_or(0) >= now + p.offer.expected_secs(&u.need));
                prop_assert!(!p.offer.idle_only || p.idle);
                prop_assert!(u.finish_by.is_none_or(|d| now + p.offer.expected_secs(&u.need) <= d));
                // Never a provider it ran on.
                prop_assert!(!u.exclude.contains(&p.id));
                per_unit.entry(u.unit).or_default().push(p.id);
            }
            for (u, ps) in &per_unit {
                let ops: HashSet<OperatorId> = ps.iter().map(|p| by_id[p].operator).collect();
                prop_assert_eq!(ops.len(), ps.len(), "two replicas of {:?} on one operator", u);
                prop_assert!(ps.len() <= usize::from(unit_by_id[u].replicas));
            }
            // Every unit is placed in full or says why not.
            for (id, u) in &unit_by_id {
                let placed = per_unit.get(id).map_or(0, Vec::len) as u16;
                let short = out.waiting.iter().find(|w| w.unit == *id);
                match short {
                    Some(w) => prop_assert_eq!(w.missing + placed, u.replicas),
                    None => prop_assert_eq!(placed, u.replicas),
                }
            }
            // Deterministic, whatever the input order.
            let mut shuffled_units = units.clone();
            let mut shuffled_providers = providers.clone();
            let mut rng = seed;
            let mut next = |n: usize| {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (rng >> 33) as usize % n
            };
            for i in (1..shuffled_units.len()).rev() {
                let j = next(i + 1);
                shuffled_units.swap(i, j);
            }
            for i in (1..shuffled_providers.len()).rev() {
                let j = next(i + 1);
                shuffled_providers.swap(i, j);
            }
            // Only when ids are unique is the input a set.
            let unique_p = by_id.len() == providers.len();
            let unique_u = unit_by_id.len() == units.len();
            if unique_p && unique_u {
                prop_assert_eq!(assign(&shuffled_units, &shuffled_providers, now), out);
            }
        }
    }
}
