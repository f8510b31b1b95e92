//! One scheduling round: the glue between [`matching`], [`validate`] and
//! the [`unit`] state machines, so the node's scheduler and the simulator
//! run the same round.
//!
//! [`dispatch`] asks every unit what it wants ([`Unit::request`]), matches
//! ([`assign`]), decides per placement whether the provider may
//! stand alone (trusted under the job's [`TrustPolicy`] and the unit not
//! [`spot_check`]ed), feeds [`Event::Assigned`] to the unit and
//! returns the actions, tagged with their unit. A placement the unit
//! refuses (a trusted first replica made the others unnecessary) is
//! dropped: nothing was started, though the matching counted the slot for
//! this round, so with adaptive replication a round can leave a little
//! capacity unused until the next one. Units left waiting get the matching's
//! [`WaitReason`] for their status. [`account`] applies the reliability
//! actions to the scheduler's records.
//!
//! [`matching`]: super::matching
//! [`validate`]: super::validate
//! [`unit`]: mod@super::unit
//! [`WaitReason`]: super::matching::WaitReason

use std::collections::{BTreeMap, HashMap};

use super::matching::{ProviderState, assign};
use super::unit::{Action, Event, Unit};
use super::validate::{Reliability, TrustPolicy, spot_check};
use super::{ProviderId, UnitId};

/// Runs one round at `now` over `units` (one job's, sharing `policy`, the
/// spot-check `secret` and the job's `finish_by`).
pub fn dispatch(
    units: &mut [Unit],
    providers: &[ProviderState],
    policy: &TrustPolicy,
    secret: &[u8; 32],
    finish_by: Option<u64>,
    now: u64,
) -> Vec<(UnitId, Action)> {
    let requests: Vec<_> = units.iter().filter_map(|u| u.request(finish_by)).collect();
    let assignment = assign(&requests, providers, now);
    let index: HashMap<UnitId, usize> = units
        .iter()
        .enumerate()
        .map(|(i, u)| (u.spec().id, i))
        .collect();
    let by_id: HashMap<ProviderId, &ProviderState> = providers.iter().map(|p| (p.id, p)).collect();
    let mut out = Vec::new();
    for placement in &assignment.placements {
        let (Some(&i), Some(p)) = (index.get(&placement.unit), by_id.get(&placement.provider))
        else {
            continue;
        };
        let trusted = p.reliability.is_trusted(policy)
            && !spot_check(secret, &placement.unit, policy.spot_check_percent);
        let event = Event::Assigned {
            provider: p.id,
            operator: p.operator,
            trusted,
            at: now,
        };
        if let Ok(actions) = units[i].handle(event) {
            out.extend(actions.into_iter().map(|a| (placement.unit, a)));
        }
    }
    for waiting in assignment.waiting {
        if let Some(&i) = index.get(&waiting.unit) {
            units[i].note_wait(Some(waiting.reason));
        }
    }
    out
}

/// Applies `Valid`, `Invalid` and `Errored` actions to `book` (providers
/// not yet in it start with an empty record).
pub fn account<'a>(
    actions: impl IntoIterator<Item = &'a Action>,
    book: &mut BTreeMap<ProviderId, Reliability>,
) {
    for a in actions {
        match a {
            Action::Valid { provider } => book.entry(*provider).or_default().record_valid(),
            Action::Invalid { provider } => book.entry(*provider).or_default().record_invalid(),
            Action::Errored { provider } => book.entry(*provider).or_default().record_error(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::resources::{Need, Offer};
    use crate::compute::unit::{RunError, UnitSpec, UnitState};
    use crate::compute::window::Schedule;
    use crate::compute::{CheckpointRef, JobId, OutputHash};
    use crate::keys::PublicKey;
    use proptest::prelude::*;

    /// Monday 2024-01-01 00:00 UTC.
    const MONDAY: u64 = 1_704_067_200;
    const STEP: u64 = 10;
    const CHECKPOINT_EVERY: u64 = 30;

    fn key(i: u8) -> PublicKey {
        PublicKey([i; 32])
    }

    fn honest(unit: &UnitId) -> OutputHash {
        OutputHash(*blake3::hash(&unit.0).as_bytes())
    }

    #[derive(Clone, Debug)]
    struct SimProvider {
        id: u8,
        operator: u8,
        schedule: &'static str,
        cpus: u16,
        /// Outputs a wrong hash (the same one as every other liar: collusion).
        liar: bool,
        /// Leaves the network at this step.
        dies_at: Option<u64>,
        /// Every run on it fails with a runtime error (not the unit's fault).
        flaky: bool,
    }

    struct Sim {
        units: usize,
        work: u64,
        quorum: u16,
        attempts: u16,
        steps: u64,
        providers: Vec<SimProvider>,
    }

    struct Outcome {
        units: Vec<Unit>,
        book: BTreeMap<ProviderId, Reliability>,
        resumed: usize,
    }

    struct Run {
        unit: UnitId,
        provider: ProviderId,
        progress: u64,
    }

    /// Drives a job through `dispatch` and the unit state machines, with
    /// providers that work, checkpoint, lie, fail and die. Asserts on every
    /// step that no provider runs more than it offered and that nothing
    /// starts outside a window.
    fn simulate(sim: &Sim) -> Outcome {
        let job = JobId([1; 32]);
        let need = Need {
            memory_bytes: 64 << 20,
            fuel: None,
            estimate_secs: sim.work,
            deadline_secs: sim.work * 3,
        };
        let mut units: Vec<Unit> = (0..sim.units)
            .map(|i| {
                let name = format!("u{i}");
                let spec = UnitSpec {
                    id: UnitId::of(&job, &name),
                    name,
                    need: need.clone(),
                    inputs: vec![],
                };
                Unit::new(spec, sim.quorum, sim.attempts, need.deadline_secs).unwrap()
            })
            .collect();
        let spec = |id: &ProviderId| sim.providers.iter().find(|p| key(p.id) == *id).unwrap();
        let offers: BTreeMap<ProviderId, Offer> = sim
            .providers
            .iter()
            .map(|p| {
                let schedule = Schedule::parse(p.schedule).unwrap();
                (key(p.id), Offer::new(p.cpus, 1 << 30, schedule).unwrap())
            })
            .collect();
        let mut book: BTreeMap<ProviderId, Reliability> = BTreeMap::new();
        let mut runs: Vec<Run> = Vec::new();
        let mut resumed = 0;
        for step in 0..sim.steps {
            let now = MONDAY + step * STEP;
            let mut actions: Vec<(UnitId, Action)> = Vec::new();
            let mut handle = |units: &mut [Unit], unit: UnitId, event: Event| {
                let u = units.iter_mut().find(|u| u.spec().id == unit).unwrap();
                if let Ok(a) = u.handle(event) {
                    actions.extend(a.into_iter().map(|a| (unit, a)));
                }
            };
            for r in &mut runs {
                let p = spec(&r.provider);
                if p.dies_at == Some(step) {
                    let event = Event::ProviderLost {
                        provider: r.provider,
                        at: now,
                    };
                    handle(&mut units, r.unit, event);
                    r.progress = u64::MAX;
                    continue;
                }
                if p.flaky && r.progress >= STEP {
                    let event = Event::Failed {
                        provider: r.provider,
                        error: RunError::Other {
                            message: "disk full".into(),
                        },
                        at: now,
                    };
                    handle(&mut units, r.unit, event);
                    r.progress = u64::MAX;
                    continue;
                }
                let before = r.progress;
                r.progress += STEP;
                if r.progress / CHECKPOINT_EVERY > before / CHECKPOINT_EVERY
                    && r.progress < sim.work
                {
                    let event = Event::Checkpointed {
                        provider: r.provider,
                        checkpoint: CheckpointRef(format!("cairn:{}", r.progress)),
                        at: now,
                    };
                    handle(&mut units, r.unit, event);
                }
                if r.progress >= sim.work {
                    let output = if p.liar {
                        OutputHash([0xba; 32])
                    } else {
                        honest(&r.unit)
                    };
                    let event = Event::Finished {
                        provider: r.provider,
                        output,
                        fuel_used: sim.work,
                        at: now,
                    };
                    handle(&mut units, r.unit, event);
                }
            }
            runs.retain(|r| r.progress < sim.work);
            for u in &mut units {
                if let Ok(a) = u.handle(Event::Tick { now }) {
                    let id = u.spec().id;
                    actions.extend(a.into_iter().map(|a| (id, a)));
                }
            }
            let providers: Vec<ProviderState> = sim
                .providers
                .iter()
                .filter(|p| p.dies_at.is_none_or(|d| step < d))
                .map(|p| {
                    let id = key(p.id);
                    let running = runs.iter().filter(|r| r.provider == id).count() as u16;
                    ProviderState {
                        id,
                        operator: key(100 + p.operator),
                        offer: offers[&id].clone(),
                        running,
                        memory_in_use: u64::from(running) * need.memory_bytes,
                        idle: true,
                        reliability: book.get(&id).cloned().unwrap_or_default(),
                        holds: vec![],
                    }
                })
                .collect();
            actions.extend(dispatch(
                &mut units,
                &providers,
                &TrustPolicy::OFF,
                &[9; 32],
                None,
                now,
            ));
            account(actions.iter().map(|(_, a)| a), &mut book);
            for (unit, a) in actions {
                match a {
                    Action::Start {
                        provider,
                        resume_from,
                    } => {
                        assert!(
                            offers[&provider].schedule.is_open(now),
                            "started outside a window"
                        );
                        let progress = resume_from
                            .map(|c| c.0.trim_start_matches("cairn:").parse::<u64>().unwrap())
                            .unwrap_or(0);
                        if progress > 0 {
                            resumed += 1;
                        }
                        runs.push(Run {
                            unit,
                            provider,
                            progress,
                        });
                    }
                    Action::Cancel { provider } => {
                        runs.retain(|r| !(r.unit == unit && r.provider == provider))
                    }
                    _ => {}
                }
            }
            for p in &providers {
                let n = runs.iter().filter(|r| r.provider == p.id).count();
                assert!(
                    n <= usize::from(p.offer.cpus),
                    "a provider ran more than it offered"
                );
            }
            if units
                .iter()
                .all(|u| matches!(u.state(), UnitState::Done | UnitState::Failed))
            {
                break;
            }
        }
        Outcome {
            units,
            book,
            resumed,
        }
    }

    fn provider(id: u8) -> SimProvider {
        SimProvider {
            id,
            operator: id,
            schedule: "always",
            cpus: 2,
            liar: false,
            dies_at: None,
            flaky: false,
        }
    }

    /// The devnet scenarios, at the core: five providers, one lies,
    /// one dies mid-unit after a checkpoint, one is outside its window at
    /// the start. Every unit ends with the honest output, the liar is
    /// recorded invalid, the dead provider's units resume from their
    /// checkpoints, and nothing runs outside a window.
    #[test]
    fn five_providers_one_liar_one_death_one_window() {
        let mut providers: Vec<SimProvider> = (1..=5).map(provider).collect();
        providers[4].liar = true;
        providers[1].dies_at = Some(5);
        // Opens at 00:01 Monday, after the first round.
        providers[3].schedule = "daily 00:01-23:00";
        let sim = Sim {
            units: 6,
            work: 100,
            quorum: 2,
            attempts: 3,
            steps: 200,
            providers,
        };
        let out = simulate(&sim);
        for u in &out.units {
            assert_eq!(u.state(), UnitState::Done, "{:?}", u.status());
            assert_eq!(u.output(), Some(honest(&u.spec().id)));
        }
        assert!(out.book[&key(5)].invalid > 0, "the liar was never outvoted");
        assert_eq!(out.book[&key(5)].valid, 0);
        assert!(out.resumed > 0, "no unit resumed from a checkpoint");
        assert!(out.book[&key(2)].errors > 0);
        assert!(
            out.book.get(&key(4)).is_some_and(|r| r.valid > 0),
            "the night provider never worked"
        );
    }

    fn sim_provider() -> impl Strategy<Value = SimProvider> {
        (
            0u8..6,
            prop_oneof![
                Just("always"),
                Just("daily 00:02-23:00"),
                Just("mon 00:00-00:05")
            ],
            1u16..3,
            any::<bool>(),
            prop::option::of(1u64..60),
            prop::bool::weighted(0.15),
        )
            .prop_map(
                |(operator, schedule, cpus, liar, dies_at, flaky)| SimProvider {
                    id: 0,
                    operator,
                    schedule,
                    cpus,
                    liar,
                    dies_at,
                    flaky,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Random networks: liars, deaths, flaky providers, windows. While
        /// fewer operators collude than the quorum, every unit that is done
        /// has the honest output; and with an honest, reliable provider per
        /// quorum seat that never dies, every unit is done.
        #[test]
        fn random_networks_never_accept_a_minority_lie(
            mut providers in prop::collection::vec(sim_provider(), 1..9),
            units in 1usize..8,
            quorum in 1u16..4,
            attempts in 1u16..4,
        ) {
            for (i, p) in providers.iter_mut().enumerate() {
                p.id = i as u8 + 1;
            }
            let liar_operators: std::collections::HashSet<u8> =
                providers.iter().filter(|p| p.liar).map(|p| p.operator).collect();
            let reliable_operators: std::collections::HashSet<u8> = providers
                .iter()
                .filter(|p| !p.liar && !p.flaky && p.dies_at.is_none() && p.schedule == "always")
                .map(|p| p.operator)
                .filter(|o| !liar_operators.contains(o))
                .collect();
            let sim = Sim { units, work: 40, quorum, attempts, steps: 400, providers };
            let out = simulate(&sim);
            for u in &out.units {
                if liar_operators.len() < usize::from(quorum) && u.state() == UnitState::Done {
                    prop_assert_eq!(u.output(), Some(honest(&u.spec().id)));
                }
                if liar_operators.is_empty() && reliable_operators.len() >= usize::from(quorum) {
                    // Failures can still exhaust a slot's attempts; but a
                    // unit never hangs: it ends one way or the other.
                    prop_assert!(matches!(u.state(), UnitState::Done | UnitState::Failed), "{:?}", u.status());
                }
            }
        }
    }
}
