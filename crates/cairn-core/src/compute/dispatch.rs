//! One scheduling round: the glue between [`matching`], [`validate`] and
//! the [`unit`] state machines, so the node's scheduler and the simulator
//! run the same round.
//!
//! [`dispatch`] asks every unit what it wants ([`Unit::request`]), matches
//! ([`matching::assign`]), decides per placement whether the provider may
//! stand alone (trusted under the job's [`TrustPolicy`] and the unit not
//! [`validate::spot_check`]ed), feeds [`Event::Assigned`] to the unit and
//! returns the actions, tagged with their unit. A placement the unit
//! refuses (a trusted first replica made the others unnecessary) is
//! dropped: nothing was started. Units left waiting get the matching's
//! [`WaitReason`] for their status. [`account`] applies the reliability
//! actions to the scheduler's records.
//!
//! [`matching`]: super::matching
//! [`validate`]: super::validate
//! [`unit`]: super::unit
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
    use crate::compute::unit::{UnitSpec, UnitState};
    use crate::compute::window::Schedule;
    use crate::compute::{CheckpointRef, JobId, OutputHash};
    use crate::keys::PublicKey;

    /// Monday 2024-01-01 00:00 UTC.
    const MONDAY: u64 = 1_704_067_200;
    const WORK: u64 = 100;
    const CHECKPOINT_EVERY: u64 = 30;

    fn key(i: u8) -> PublicKey {
        PublicKey([i; 32])
    }

    fn honest(unit: &UnitId) -> OutputHash {
        OutputHash(*blake3::hash(&unit.0).as_bytes())
    }

    struct Run {
        unit: UnitId,
        provider: ProviderId,
        progress: u64,
    }

    /// The devnet scenarios, at the core: five providers, one lies,
    /// one dies mid-unit after a checkpoint, one is outside its window at
    /// the start. Every unit ends with the honest output, the liar is
    /// recorded invalid, the dead provider's units resume from their
    /// checkpoints, and nothing runs outside a window.
    #[test]
    fn five_providers_one_liar_one_death_one_window() {
        let job = JobId([1; 32]);
        let need = Need {
            memory_bytes: 64 << 20,
            fuel: None,
            estimate_secs: WORK,
            deadline_secs: 600,
        };
        let mut units: Vec<Unit> = (0..6)
            .map(|i| {
                let name = format!("u{i}");
                let spec = UnitSpec {
                    id: UnitId::of(&job, &name),
                    name,
                    need: need.clone(),
                    inputs: vec![],
                };
                Unit::new(spec, 2, 3, 600).unwrap()
            })
            .collect();
        let liar = key(5);
        let doomed = key(2);
        let night = key(4);
        let offers: Vec<(ProviderId, Offer)> = (1..=5)
            .map(|i| {
                // Provider 4 opens at 00:01 Monday.
                let schedule = if key(i) == night {
                    "daily 00:01-23:00"
                } else {
                    "always"
                };
                let offer = Offer::new(2, 1 << 30, Schedule::parse(schedule).unwrap()).unwrap();
                (key(i), offer)
            })
            .collect();
        let mut book: BTreeMap<ProviderId, Reliability> = BTreeMap::new();
        let mut runs: Vec<Run> = Vec::new();
        let mut alive: Vec<ProviderId> = offers.iter().map(|o| o.0).collect();
        let mut resumed = 0;
        let policy = TrustPolicy::OFF;
        for step in 0..200 {
            let now = MONDAY + step * 10;
            let mut actions: Vec<(UnitId, Action)> = Vec::new();
            if step == 5 {
                // Provider 2 dies at 50 s, after its first checkpoint.
                alive.retain(|p| *p != doomed);
                for r in runs.iter().filter(|r| r.provider == doomed) {
                    let u = units.iter_mut().find(|u| u.spec().id == r.unit).unwrap();
                    if let Ok(a) = u.handle(Event::ProviderLost {
                        provider: doomed,
                        at: now,
                    }) {
                        actions.extend(a.into_iter().map(|a| (r.unit, a)));
                    }
                }
                runs.retain(|r| r.provider != doomed);
            }
            // Runs progress; they checkpoint and finish.
            for r in &mut runs {
                let before = r.progress;
                r.progress += 10;
                let u = units.iter_mut().find(|u| u.spec().id == r.unit).unwrap();
                if r.progress / CHECKPOINT_EVERY > before / CHECKPOINT_EVERY && r.progress < WORK {
                    let checkpoint = CheckpointRef(format!("cairn:{}", r.progress));
                    let a = u
                        .handle(Event::Checkpointed {
                            provider: r.provider,
                            checkpoint,
                            at: now,
                        })
                        .unwrap();
                    actions.extend(a.into_iter().map(|a| (r.unit, a)));
                }
                if r.progress >= WORK {
                    let output = if r.provider == liar {
                        OutputHash([0xba; 32])
                    } else {
                        honest(&r.unit)
                    };
                    if let Ok(a) = u.handle(Event::Finished {
                        provider: r.provider,
                        output,
                        fuel_used: WORK,
                        at: now,
                    }) {
                        actions.extend(a.into_iter().map(|a| (r.unit, a)));
                    }
                }
            }
            runs.retain(|r| r.progress < WORK);
            for u in &mut units {
                if let Ok(a) = u.handle(Event::Tick { now }) {
                    let id = u.spec().id;
                    actions.extend(a.into_iter().map(|a| (id, a)));
                }
            }
            let providers: Vec<ProviderState> = offers
                .iter()
                .filter(|(id, _)| alive.contains(id))
                .map(|(id, offer)| {
                    let running = runs.iter().filter(|r| r.provider == *id).count() as u16;
                    ProviderState {
                        id: *id,
                        operator: *id,
                        offer: offer.clone(),
                        running,
                        memory_in_use: u64::from(running) * need.memory_bytes,
                        idle: true,
                        reliability: book.get(id).cloned().unwrap_or_default(),
                        holds: vec![],
                    }
                })
                .collect();
            actions.extend(dispatch(
                &mut units, &providers, &policy, &[9; 32], None, now,
            ));
            account(actions.iter().map(|(_, a)| a), &mut book);
            for (unit, a) in actions {
                match a {
                    Action::Start {
                        provider,
                        resume_from,
                    } => {
                        let offer = &offers.iter().find(|o| o.0 == provider).unwrap().1;
                        assert!(offer.schedule.is_open(now), "started outside a window");
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
            let capacity_ok = providers.iter().all(|p| {
                runs.iter().filter(|r| r.provider == p.id).count() <= usize::from(p.offer.cpus)
            });
            assert!(capacity_ok, "a provider ran more than it offered");
            if units.iter().all(|u| u.state() == UnitState::Done) {
                break;
            }
        }
        for u in &units {
            assert_eq!(u.state(), UnitState::Done, "{:?}", u.status());
            assert_eq!(u.output(), Some(honest(&u.spec().id)));
        }
        assert!(book[&liar].invalid > 0, "the liar was never outvoted");
        assert_eq!(book[&liar].valid, 0);
        assert!(resumed > 0, "no unit resumed from a checkpoint");
        assert!(book[&doomed].errors > 0);
        assert!(
            book.get(&night).is_some_and(|r| r.valid > 0),
            "the night provider never worked"
        );
    }
}
