//! Redundant validation: who agrees on a unit's output, which providers are
//! reliable, and when one replica is enough (BOINC's adaptive replication).
//!
//! # Votes
//!
//! A unit's replicas report output hashes ([`Vote`]). [`decide`] counts one
//! vote per operator (so one operator's many nodes are one voice) and
//! declares a winner when a hash has `quorum` votes; every provider that
//! voted for another hash lost and is marked invalid for the unit. Until
//! then the verdict says how many more agreeing votes the leading hash
//! needs, which is how many more replicas the unit must run.
//!
//! # Reliability and adaptive replication
//!
//! [`Reliability`] is one provider's record as the scheduler saw it:
//! consecutive valid results, and totals of valid, invalid and error
//! results. A provider is *trusted* after [`TrustPolicy::trust_after`]
//! consecutive valid results (default [`TRUST_AFTER`] = 10, BOINC's
//! `consecutive_valid` rule). One invalid result resets the run to zero.
//! An error (trap, limit, bad exit) is counted but does not reset the run:
//! a unit that traps everywhere is the unit's fault, and a provider that
//! errs often loses work through the matching rank, not trust.
//!
//! A unit whose first replica goes to a trusted provider runs with
//! replication 1 ([`decide`] with `relaxed`): that one result is accepted
//! if no other result disagrees. Except for spot checks: [`spot_check`]
//! picks [`TrustPolicy::spot_check_percent`] of units (default
//! [`SPOT_CHECK_PERCENT`] = 10 %) for full replication anyway. The choice is
//! a keyed BLAKE3 of the unit id under a secret the submitter keeps
//! (derived from the job key), so it is reproducible by the scheduler but a
//! provider cannot tell a spot-checked unit from another. Any disagreement
//! turns relaxed validation back into the full quorum, so a trusted
//! provider that turns bad is caught on its first spot-checked unit, loses
//! the vote and its trust.
//!
//! The price: with adaptive replication a trusted provider's wrong result
//! on a unit that is not spot-checked is accepted. That is BOINC's
//! trade-off; jobs that must never accept a wrong output keep it off (the
//! job file's `adaptive`, off by default).

use std::cmp::Reverse;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{OperatorId, OutputHash, ProviderId, UnitId};

/// Format version of a serialized [`Reliability`].
pub const RELIABILITY_VERSION: u16 = 1;
/// Consecutive valid results after which a provider is trusted.
pub const TRUST_AFTER: u32 = 10;
/// Share of a trusted provider's units that are still replicated, in percent.
pub const SPOT_CHECK_PERCENT: u8 = 10;
/// Most votes [`decide`] counts (a unit has at most this many replicas).
pub const MAX_VOTES: usize = 64;

/// When a provider is trusted with a single replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustPolicy {
    /// Consecutive valid results needed; 0 turns adaptive replication off
    /// (never trusted).
    pub trust_after: u32,
    /// Percent of units replicated anyway (0..=100).
    pub spot_check_percent: u8,
}

impl Default for TrustPolicy {
    fn default() -> Self {
        Self {
            trust_after: TRUST_AFTER,
            spot_check_percent: SPOT_CHECK_PERCENT,
        }
    }
}

impl TrustPolicy {
    /// Adaptive replication off: every unit is fully replicated.
    pub const OFF: TrustPolicy = TrustPolicy {
        trust_after: 0,
        spot_check_percent: 100,
    };
}

/// One provider's validation record. Persisted by the scheduler, so
/// versioned; deserializing checks the version and that the valid run is
/// no longer than the valid total.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StoredReliability")]
pub struct Reliability {
    /// Format version, [`RELIABILITY_VERSION`].
    pub version: u16,
    /// Valid results since the last invalid one.
    pub consecutive_valid: u32,
    /// Results that agreed with the quorum.
    pub valid: u64,
    /// Results that lost a vote.
    pub invalid: u64,
    /// Attempts that ended without a result: an error (trap, limit, bad
    /// exit), a timeout, or the provider leaving mid-run.
    pub errors: u64,
}

#[derive(Deserialize)]
struct StoredReliability {
    version: u16,
    consecutive_valid: u32,
    valid: u64,
    invalid: u64,
    errors: u64,
}

/// A stored [`Reliability`] cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReliabilityError {
    /// A format this build does not read.
    #[error(
        "reliability format version {0} is not supported (this build reads {RELIABILITY_VERSION})"
    )]
    Version(u16),
    /// The counters contradict each other.
    #[error("damaged reliability record: {0} consecutive valid results but {1} in all")]
    Inconsistent(u32, u64),
}

impl TryFrom<StoredReliability> for Reliability {
    type Error = ReliabilityError;

    fn try_from(s: StoredReliability) -> Result<Self, ReliabilityError> {
        if s.version != RELIABILITY_VERSION {
            return Err(ReliabilityError::Version(s.version));
        }
        if u64::from(s.consecutive_valid) > s.valid {
            return Err(ReliabilityError::Inconsistent(s.consecutive_valid, s.valid));
        }
        Ok(Self {
            version: s.version,
            consecutive_valid: s.consecutive_valid,
            valid: s.valid,
            invalid: s.invalid,
            errors: s.errors,
        })
    }
}

impl Default for Reliability {
    fn default() -> Self {
        Self {
            version: RELIABILITY_VERSION,
            consecutive_valid: 0,
            valid: 0,
            invalid: 0,
            errors: 0,
        }
    }
}

impl Reliability {
    /// A result agreed with the quorum.
    pub fn record_valid(&mut self) {
        self.consecutive_valid = self.consecutive_valid.saturating_add(1);
        self.valid = self.valid.saturating_add(1);
    }

    /// A result lost a vote: trust is gone until a new run of valid results.
    pub fn record_invalid(&mut self) {
        self.consecutive_valid = 0;
        self.invalid = self.invalid.saturating_add(1);
    }

    /// An attempt failed or timed out (does not reset trust; see the module
    /// docs).
    pub fn record_error(&mut self) {
        self.errors = self.errors.saturating_add(1);
    }

    /// Whether a unit may run on this provider alone (unless spot-checked).
    pub fn is_trusted(&self, policy: &TrustPolicy) -> bool {
        policy.trust_after > 0 && self.consecutive_valid >= policy.trust_after
    }

    /// Orders providers for matching, best first when sorted descending:
    /// longer valid run, then fewer invalid results, then fewer errors.
    pub fn rank_key(&self) -> (u32, Reverse<u64>, Reverse<u64>) {
        (
            self.consecutive_valid,
            Reverse(self.invalid),
            Reverse(self.errors),
        )
    }
}

/// Whether `unit` is replicated in full even on a trusted provider: true
/// for `percent` % of units, chosen by a keyed hash under the submitter's
/// `secret` (see the module docs).
pub fn spot_check(secret: &[u8; 32], unit: &UnitId, percent: u8) -> bool {
    let h = blake3::keyed_hash(secret, &unit.0);
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.as_bytes()[..8]);
    // 2^64 is not a multiple of 100; the bias is below 1e-17.
    u64::from_le_bytes(first) % 100 < u64::from(percent)
}

/// One replica's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// Who ran it.
    pub provider: ProviderId,
    /// Who operates that provider.
    pub operator: OperatorId,
    /// What it produced.
    pub output: OutputHash,
}

/// What the votes so far decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// `output` has a quorum.
    Agreed {
        /// The accepted output.
        output: OutputHash,
        /// Providers that voted for it, in vote order.
        winners: Vec<ProviderId>,
        /// Providers that voted for something else: invalid for this unit.
        losers: Vec<ProviderId>,
    },
    /// No quorum yet.
    Open {
        /// Agreeing votes the leading output still needs (≥ 1): the least
        /// number of further replicas that could settle the unit.
        missing: u16,
        /// Distinct outputs seen.
        distinct: usize,
    },
}

/// Counts `votes` (the first vote of each operator, the first
/// [`MAX_VOTES`]) against `quorum`. With `relaxed` (the first replica went
/// to a trusted provider and the unit is not spot-checked), one vote is
/// enough as long as every vote agrees; a disagreement restores `quorum`.
pub fn decide(votes: &[Vote], quorum: u16, relaxed: bool) -> Verdict {
    let mut seen = Vec::new();
    let mut counted = Vec::new();
    for v in votes.iter().take(MAX_VOTES) {
        if !seen.contains(&v.operator) {
            seen.push(v.operator);
            counted.push(v);
        }
    }
    let mut tally: BTreeMap<OutputHash, u16> = BTreeMap::new();
    for v in &counted {
        *tally.entry(v.output).or_default() += 1;
    }
    let distinct = tally.len();
    let needed = if relaxed && distinct <= 1 {
        1
    } else {
        quorum.max(1)
    };
    // The leader: most votes, then the output seen first (deterministic).
    let leader = counted.iter().map(|v| v.output).max_by_key(|h| {
        let first = counted.iter().position(|v| v.output == *h).unwrap_or(0);
        (tally.get(h).copied().unwrap_or(0), Reverse(first))
    });
    let Some(output) = leader else {
        return Verdict::Open {
            missing: needed,
            distinct,
        };
    };
    let votes_for = tally.get(&output).copied().unwrap_or(0);
    if votes_for >= needed {
        let (winners, losers) = counted
            .iter()
            .partition::<Vec<&&Vote>, _>(|v| v.output == output);
        Verdict::Agreed {
            output,
            winners: winners.into_iter().map(|v| v.provider).collect(),
            losers: losers.into_iter().map(|v| v.provider).collect(),
        }
    } else {
        Verdict::Open {
            missing: needed - votes_for,
            distinct,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PublicKey;
    use proptest::prelude::*;

    fn key(i: u8) -> PublicKey {
        PublicKey([i; 32])
    }

    fn vote(i: u8, out: u8) -> Vote {
        Vote {
            provider: key(i),
            operator: key(i),
            output: OutputHash([out; 32]),
        }
    }

    #[test]
    fn quorum_of_two_with_one_liar_needs_a_third() {
        let honest = OutputHash([1; 32]);
        let mut votes = vec![vote(1, 1), vote(2, 9)];
        assert_eq!(
            decide(&votes, 2, false),
            Verdict::Open {
                missing: 1,
                distinct: 2
            }
        );
        votes.push(vote(3, 1));
        assert_eq!(
            decide(&votes, 2, false),
            Verdict::Agreed {
                output: honest,
                winners: vec![key(1), key(3)],
                losers: vec![key(2)],
            }
        );
    }

    #[test]
    fn one_operator_is_one_vote() {
        let mut a = vote(1, 7);
        let mut b = vote(2, 7);
        a.operator = key(100);
        b.operator = key(100);
        assert!(matches!(
            decide(&[a, b], 2, false),
            Verdict::Open { missing: 1, .. }
        ));
    }

    #[test]
    fn relaxed_accepts_one_agreeing_vote_only() {
        assert!(matches!(
            decide(&[vote(1, 1)], 2, true),
            Verdict::Agreed { .. }
        ));
        assert!(matches!(
            decide(&[vote(1, 1), vote(2, 2)], 2, true),
            Verdict::Open { missing: 1, .. }
        ));
        assert!(matches!(
            decide(&[], 2, true),
            Verdict::Open { missing: 1, .. }
        ));
        assert!(matches!(
            decide(&[], 3, false),
            Verdict::Open { missing: 3, .. }
        ));
    }

    #[test]
    fn trust_comes_after_a_run_and_goes_with_one_invalid() {
        let p = TrustPolicy::default();
        let mut r = Reliability::default();
        for _ in 0..9 {
            r.record_valid();
        }
        assert!(!r.is_trusted(&p));
        r.record_valid();
        assert!(r.is_trusted(&p));
        r.record_error();
        assert!(r.is_trusted(&p), "errors do not reset trust");
        r.record_invalid();
        assert!(!r.is_trusted(&p));
        assert_eq!((r.valid, r.invalid, r.errors), (10, 1, 1));
        for _ in 0..100 {
            r.record_valid();
        }
        assert!(!r.is_trusted(&TrustPolicy::OFF));
        let bytes = postcard::to_allocvec(&r).unwrap();
        assert_eq!(postcard::from_bytes::<Reliability>(&bytes).unwrap(), r);
        r.consecutive_valid = 1000;
        let bytes = postcard::to_allocvec(&r).unwrap();
        assert!(postcard::from_bytes::<Reliability>(&bytes).is_err());
    }

    #[test]
    fn spot_checks_hit_the_documented_rate() {
        let secret = [42u8; 32];
        let hits = (0u32..10_000)
            .filter(|i| {
                let unit = UnitId::of(&super::super::JobId([0; 32]), &format!("u{i}"));
                spot_check(&secret, &unit, SPOT_CHECK_PERCENT)
            })
            .count();
        assert!((900..1100).contains(&hits), "{hits} of 10000");
        let unit = UnitId([5; 32]);
        assert!(!spot_check(&secret, &unit, 0));
        assert!(spot_check(&secret, &unit, 100));
        assert_eq!(
            spot_check(&secret, &unit, 50),
            spot_check(&secret, &unit, 50)
        );
    }

    proptest! {
        /// An honest majority of at least `quorum` always wins, and every
        /// liar is a loser.
        #[test]
        fn a_cheating_minority_is_outvoted(
            (quorum, honest, liars) in (1u16..6, 0usize..4).prop_flat_map(|(q, extra)| {
                let honest = usize::from(q) + extra;
                (Just(q), Just(honest), prop::collection::vec(2u8..5, 0..honest))
            }),
            seed in any::<u64>(),
        ) {
            let mut votes: Vec<Vote> = (0..honest).map(|i| vote(i as u8, 1)).collect();
            votes.extend(liars.iter().enumerate().map(|(i, &o)| vote(100 + i as u8, o)));
            // Any arrival order.
            let mut rng = seed;
            for i in (1..votes.len()).rev() {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                votes.swap(i, (rng >> 33) as usize % (i + 1));
            }
            match decide(&votes, quorum, false) {
                Verdict::Agreed { output, winners, losers } => {
                    prop_assert_eq!(output, OutputHash([1; 32]));
                    prop_assert_eq!(winners.len(), honest);
                    prop_assert_eq!(losers.len(), liars.len());
                }
                v => prop_assert!(false, "no verdict: {:?}", v),
            }
        }

        /// Fewer than `quorum` agreeing votes never decide (without relaxing).
        #[test]
        fn no_quorum_no_verdict(quorum in 2u16..6, outs in prop::collection::vec(0u8..3, 0..12)) {
            let votes: Vec<Vote> = outs.iter().enumerate().map(|(i, &o)| vote(i as u8, o)).collect();
            let max = (0u8..3).map(|o| outs.iter().filter(|&&x| x == o).count()).max().unwrap_or(0);
            let verdict = decide(&votes, quorum, false);
            prop_assert_eq!(matches!(verdict, Verdict::Agreed { .. }), max >= usize::from(quorum));
        }
    }
}
