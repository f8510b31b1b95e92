//! Audit reputation: one node's audit score as seen by one observer (a
//! steward), whether it is vetted or disqualified, and why.
//!
//! This module owns the arithmetic and the record of penalties. It does not
//! decide when to audit, check proofs or keep evidence: the audit code feeds
//! it outcomes ([`AuditOutcome`]) with the time they happened.
//!
//! # The score
//!
//! A β-reputation with forgetting, as in Storj: two numbers `α` (good) and
//! `β` (bad), and after each audit with outcome weight `w`
//!
//! ```text
//! d = λ^w
//! pass:    α ← d·α + w,   β ← d·β
//! failure: α ← d·α,       β ← d·β + w
//! score = α / (α + β)
//! ```
//!
//! With `w = 1` this is Storj's update (`α ← λα + w(1+v)/2`,
//! `β ← λβ + w(1−v)/2`). Raising `λ` to the weight makes a lighter event also
//! forget less, so a timeout is a quarter of a failure in every respect. A
//! pass never lowers the score and a failure never raises it (for `α, β ≥ 0`:
//! a pass adds only to the numerator's side, a failure only to the other).
//! A node is **disqualified** the first time its score falls below 0.96
//! ([`DISQUALIFY_BELOW`]); disqualification is permanent, like Storj's: a
//! node that lost pieces has its pieces repaired elsewhere and is not trusted
//! again by this observer. Placement sees only the current score, which
//! passes can lift back over the line, so callers leave nodes with
//! [`Reputation::is_disqualified`] out of placement's candidates.
//!
//! # Defaults and their arithmetic
//!
//! `λ = 0.99`, pass weight 1, so a long perfect record converges to
//! `α = 1 / (1 − λ) = 100`, `β = 0`. A new node starts there
//! (`α₀ = 100, β₀ = 0`, score 1): how much a new node is trusted is limited by
//! vetting (below) and by placement's unvetted share, not by a low score that
//! one unlucky timeout would sink.
//!
//! From a perfect record, `f` consecutive failures of weight 1 leave
//! `α = 100·λ^f` and `β = 100·(1 − λ^f)`, so the score is exactly `λ^f`:
//!
//! | failures in a row | score  |
//! |-------------------|--------|
//! | 1                 | 0.9900 |
//! | 2                 | 0.9801 |
//! | 3                 | 0.9703 |
//! | 4                 | 0.9606 |
//! | 5                 | 0.9510 (disqualified) |
//!
//! One failure does not disqualify a node with a good history; five in a
//! row do. A failure is forgotten slowly: 100 passes after one failure the
//! score is 0.9963 (still one failure closer to the line than a perfect
//! record). Storj's own `λ = 0.999` needs 41 failures in a row, far more than
//! "a handful"; with `λ = 0.95` a single failure (score 0.95) disqualifies.
//! Any `λ` in `[0.96, 0.9919)` gives "one never, five always"; 0.99 remembers
//! the most within it.
//!
//! Outcome weights: a missing piece and a wrong proof weigh 1 (the node lost
//! or corrupted data, or is lying); a timeout weighs 0.25 (it may have been
//! briefly offline, and a holder that stays away is handled by
//! [`crate::liveness`] and repair, not by disqualification). From a perfect
//! record 17 timeouts in a row disqualify (score 0.9583), 16 do not.
//!
//! # Vetting
//!
//! A node is vetted once it has passed [`ScoreParams::vetting_audits`] audits
//! (default 100, as Storj), and stays vetted unless disqualified. Until then
//! placement gives it only a limited share of pieces
//! ([`crate::placement::Policy::unvetted_share`]).
//!
//! # Explanations
//!
//! Every penalty is kept (the last [`ScoreParams::max_penalties`], default
//! 32) with its time, outcome, piece and the score before and after.
//! [`Reputation::explain`] returns them with the counters as data for the CLI
//! and API; [`Reputation::warning`] says, before a penalty bites, how many
//! more failures would cross the line. The count is exact: it is computed by
//! applying the same update, not by a formula that could round differently.
//!
//! # Persistence
//!
//! [`Reputation`] is serde-serializable with a `version` field
//! ([`REPUTATION_VERSION`]); deserializing checks the version and that `α`
//! and `β` make a valid score.

use std::collections::VecDeque;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::PieceId;

/// The disqualification line: a score below this disqualifies (Storj's value).
pub const DISQUALIFY_BELOW: f64 = 0.96;
/// Format version of a serialized [`Reputation`].
pub const REPUTATION_VERSION: u16 = 1;
/// Most failures [`Reputation::failures_to_disqualify`] will count before
/// answering "not within reach".
const LOOKAHEAD: u32 = 100_000;

/// What one audit of a holder found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AuditOutcome {
    /// The holder answered with a valid proof in time.
    Passed,
    /// No answer within the deadline (unreachable or too slow).
    Timeout,
    /// The holder said it does not have the piece.
    Missing,
    /// The answer did not verify against the piece's root.
    BadProof,
}

impl AuditOutcome {
    /// Everything but a pass.
    pub fn is_failure(self) -> bool {
        self != Self::Passed
    }
}

impl fmt::Display for AuditOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Passed => "passed",
            Self::Timeout => "timed out",
            Self::Missing => "piece missing",
            Self::BadProof => "wrong proof",
        })
    }
}

/// Score parameters could not be used, or a stored reputation is damaged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ScoreError {
    /// A parameter is out of range.
    #[error("invalid score parameter {name}: {why}")]
    InvalidParams {
        /// The parameter.
        name: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A stored reputation has a format this code does not read.
    #[error("reputation format version {found} is not supported (this build reads {supported})")]
    Version {
        /// Version found.
        found: u16,
        /// Version supported.
        supported: u16,
    },
    /// A stored reputation has values no sequence of audits produces.
    #[error("damaged reputation: {0}")]
    Damaged(&'static str),
}

/// Tunable score parameters; [`ScoreParams::default`] has the documented values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreParams {
    /// Forgetting factor λ in `(0, 1]`. Default 0.99.
    pub lambda: f64,
    /// α of a new node. Default 100, `1 / (1 − λ)`: a perfect record.
    pub initial_alpha: f64,
    /// β of a new node. Default 0.
    pub initial_beta: f64,
    /// Weight of a pass. Default 1.
    pub pass_weight: f64,
    /// Weight of a timeout. Default 0.25.
    pub timeout_weight: f64,
    /// Weight of a missing piece. Default 1.
    pub missing_weight: f64,
    /// Weight of a wrong proof. Default 1.
    pub bad_proof_weight: f64,
    /// Disqualification line. Default [`DISQUALIFY_BELOW`].
    pub disqualify_below: f64,
    /// Passed audits after which a node is vetted. Default 100.
    pub vetting_audits: u64,
    /// Penalties kept for explanations. Default 32.
    pub max_penalties: usize,
    /// [`Reputation::warning`] speaks up once this many failures or fewer
    /// would disqualify. Default 3: from a perfect record, after the second
    /// failure in a row.
    pub warn_within: u32,
}

impl Default for ScoreParams {
    fn default() -> Self {
        Self {
            lambda: 0.99,
            initial_alpha: 100.0,
            initial_beta: 0.0,
            pass_weight: 1.0,
            timeout_weight: 0.25,
            missing_weight: 1.0,
            bad_proof_weight: 1.0,
            disqualify_below: DISQUALIFY_BELOW,
            vetting_audits: 100,
            max_penalties: 32,
            warn_within: 3,
        }
    }
}

impl ScoreParams {
    /// Checks every parameter; call once when configuring.
    pub fn validate(&self) -> Result<(), ScoreError> {
        let bad = |name, why| Err(ScoreError::InvalidParams { name, why });
        if !(self.lambda > 0.0 && self.lambda <= 1.0) {
            return bad("lambda", "must be in (0, 1]");
        }
        for (name, w) in [
            ("pass_weight", self.pass_weight),
            ("timeout_weight", self.timeout_weight),
            ("missing_weight", self.missing_weight),
            ("bad_proof_weight", self.bad_proof_weight),
        ] {
            if !(w > 0.0 && w.is_finite()) {
                return bad(name, "must be positive and finite");
            }
        }
        if !(self.initial_alpha >= 0.0 && self.initial_alpha.is_finite()) {
            return bad("initial_alpha", "must be non-negative and finite");
        }
        if !(self.initial_beta >= 0.0 && self.initial_beta.is_finite()) {
            return bad("initial_beta", "must be non-negative and finite");
        }
        if self.initial_alpha + self.initial_beta <= 0.0 {
            return bad(
                "initial_alpha",
                "initial_alpha + initial_beta must be positive",
            );
        }
        if !(0.0..=1.0).contains(&self.disqualify_below) {
            return bad("disqualify_below", "must be in [0, 1]");
        }
        Ok(())
    }

    /// The weight of an outcome.
    pub fn weight(&self, outcome: AuditOutcome) -> f64 {
        match outcome {
            AuditOutcome::Passed => self.pass_weight,
            AuditOutcome::Timeout => self.timeout_weight,
            AuditOutcome::Missing => self.missing_weight,
            AuditOutcome::BadProof => self.bad_proof_weight,
        }
    }
}

/// One remembered penalty.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Penalty {
    /// Unix seconds of the audit.
    pub at: u64,
    /// What went wrong.
    pub outcome: AuditOutcome,
    /// The piece audited, if the caller named it.
    pub piece: Option<PieceId>,
    /// Score before.
    pub before: f64,
    /// Score after.
    pub after: f64,
}

impl fmt::Display for Penalty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at {}: {}", self.at, self.outcome)?;
        if let Some(p) = &self.piece {
            write!(f, " (piece {})", &p.to_hex()[..16])?;
        }
        write!(f, ", score {:.4} -> {:.4}", self.before, self.after)
    }
}

/// A penalty that has not bitten yet, but would soon.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Warning {
    /// Failed audits (missing piece or wrong proof) in a row that would
    /// disqualify; one fewer would not.
    pub failures: u32,
    /// The same for timeouts, if within reach.
    pub timeouts: Option<u32>,
    /// Score now.
    pub score: f64,
    /// The disqualification line.
    pub threshold: f64,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = if self.failures == 1 { "" } else { "s" };
        write!(
            f,
            "{} more failed audit{s} would put this node below the {} disqualification line (score {:.4})",
            self.failures, self.threshold, self.score
        )
    }
}

/// Everything about a score, as data for the CLI and the API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// Score now.
    pub score: f64,
    /// The disqualification line.
    pub threshold: f64,
    /// When the node was disqualified, if it was.
    pub disqualified_at: Option<u64>,
    /// Whether it is vetted.
    pub vetted: bool,
    /// Audits passed.
    pub passed: u64,
    /// Passes needed to be vetted.
    pub vetting_audits: u64,
    /// Audits that timed out.
    pub timeouts: u64,
    /// Audits of missing pieces.
    pub missing: u64,
    /// Audits answered with a wrong proof.
    pub bad_proofs: u64,
    /// Failed audits in a row that would disqualify (None: disqualified, or
    /// not within reach).
    pub failures_to_disqualify: Option<u32>,
    /// The last penalties, oldest first.
    pub penalties: Vec<Penalty>,
    /// Set when few failures would disqualify.
    pub warning: Option<Warning>,
}

/// What one recorded audit changed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Recorded {
    /// Score before.
    pub before: f64,
    /// Score after.
    pub after: f64,
    /// This audit made the node vetted.
    pub vetted: bool,
    /// This audit disqualified the node.
    pub disqualified: bool,
}

/// One node's audit reputation, as one observer sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Stored")]
pub struct Reputation {
    version: u16,
    alpha: f64,
    beta: f64,
    passed: u64,
    timeouts: u64,
    missing: u64,
    bad_proofs: u64,
    last_audit_at: Option<u64>,
    disqualified_at: Option<u64>,
    penalties: VecDeque<Penalty>,
}

/// The serialized form, checked on the way in.
#[derive(Deserialize)]
struct Stored {
    version: u16,
    alpha: f64,
    beta: f64,
    passed: u64,
    timeouts: u64,
    missing: u64,
    bad_proofs: u64,
    last_audit_at: Option<u64>,
    disqualified_at: Option<u64>,
    penalties: VecDeque<Penalty>,
}

impl TryFrom<Stored> for Reputation {
    type Error = ScoreError;

    fn try_from(s: Stored) -> Result<Self, ScoreError> {
        if s.version != REPUTATION_VERSION {
            return Err(ScoreError::Version {
                found: s.version,
                supported: REPUTATION_VERSION,
            });
        }
        let ok = |x: f64| x >= 0.0 && x.is_finite();
        if !(ok(s.alpha) && ok(s.beta) && s.alpha + s.beta > 0.0) {
            return Err(ScoreError::Damaged(
                "alpha and beta must be finite, non-negative and not both zero",
            ));
        }
        Ok(Self {
            version: s.version,
            alpha: s.alpha,
            beta: s.beta,
            passed: s.passed,
            timeouts: s.timeouts,
            missing: s.missing,
            bad_proofs: s.bad_proofs,
            last_audit_at: s.last_audit_at,
            disqualified_at: s.disqualified_at,
            penalties: s.penalties,
        })
    }
}

/// One update of `(α, β)`; the only place the formula lives, so the
/// warning's look-ahead and the real update cannot disagree.
fn step(params: &ScoreParams, alpha: f64, beta: f64, outcome: AuditOutcome) -> (f64, f64) {
    let w = params.weight(outcome);
    let d = params.lambda.powf(w);
    if outcome.is_failure() {
        (d * alpha, d * beta + w)
    } else {
        (d * alpha + w, d * beta)
    }
}

/// `α / (α + β)` in `[0, 1]`; 0 for values no valid state has.
fn ratio(alpha: f64, beta: f64) -> f64 {
    let s = alpha / (alpha + beta);
    if s.is_nan() { 0.0 } else { s.clamp(0.0, 1.0) }
}

impl Reputation {
    /// A node never audited: `α₀`, `β₀` from `params`.
    pub fn new(params: &ScoreParams) -> Self {
        Self {
            version: REPUTATION_VERSION,
            alpha: params.initial_alpha,
            beta: params.initial_beta,
            passed: 0,
            timeouts: 0,
            missing: 0,
            bad_proofs: 0,
            last_audit_at: None,
            disqualified_at: None,
            penalties: VecDeque::new(),
        }
    }

    /// The score, `α / (α + β)`, in `[0, 1]`.
    pub fn score(&self) -> f64 {
        ratio(self.alpha, self.beta)
    }

    /// `(α, β)`.
    pub fn alpha_beta(&self) -> (f64, f64) {
        (self.alpha, self.beta)
    }

    /// Audits passed so far.
    pub fn passed(&self) -> u64 {
        self.passed
    }

    /// When the last audit was recorded.
    pub fn last_audit_at(&self) -> Option<u64> {
        self.last_audit_at
    }

    /// When the node was disqualified, if it was.
    pub fn disqualified_at(&self) -> Option<u64> {
        self.disqualified_at
    }

    /// Disqualified: its score fell below the line at some audit.
    pub fn is_disqualified(&self) -> bool {
        self.disqualified_at.is_some()
    }

    /// Vetted: enough passed audits, and not disqualified.
    pub fn is_vetted(&self, params: &ScoreParams) -> bool {
        !self.is_disqualified() && self.passed >= params.vetting_audits
    }

    /// The remembered penalties, oldest first.
    pub fn penalties(&self) -> impl ExactSizeIterator<Item = &Penalty> {
        self.penalties.iter()
    }

    /// Records one audit at `now` (unix seconds) of `piece`.
    pub fn record(
        &mut self,
        params: &ScoreParams,
        now: u64,
        outcome: AuditOutcome,
        piece: Option<PieceId>,
    ) -> Recorded {
        let before = self.score();
        let was_vetted = self.is_vetted(params);
        (self.alpha, self.beta) = step(params, self.alpha, self.beta, outcome);
        let after = self.score();
        match outcome {
            AuditOutcome::Passed => self.passed += 1,
            AuditOutcome::Timeout => self.timeouts += 1,
            AuditOutcome::Missing => self.missing += 1,
            AuditOutcome::BadProof => self.bad_proofs += 1,
        }
        self.last_audit_at = Some(self.last_audit_at.map_or(now, |t| t.max(now)));
        let disqualified = !self.is_disqualified() && after < params.disqualify_below;
        if disqualified {
            self.disqualified_at = Some(now);
        }
        if outcome.is_failure() && params.max_penalties > 0 {
            if self.penalties.len() >= params.max_penalties {
                self.penalties.pop_front();
            }
            self.penalties.push_back(Penalty {
                at: now,
                outcome,
                piece,
                before,
                after,
            });
        }
        // The bound may have shrunk since the penalties were stored.
        while self.penalties.len() > params.max_penalties {
            self.penalties.pop_front();
        }
        Recorded {
            before,
            after,
            vetted: !was_vetted && self.is_vetted(params),
            disqualified,
        }
    }

    /// How many audits with `outcome` in a row would disqualify this node,
    /// exactly: that many cross the line, one fewer does not. `None` if it is
    /// already disqualified, `outcome` is a pass, or it would take more than
    /// 100,000.
    pub fn failures_to_disqualify(
        &self,
        params: &ScoreParams,
        outcome: AuditOutcome,
    ) -> Option<u32> {
        if self.is_disqualified() || !outcome.is_failure() {
            return None;
        }
        let (mut a, mut b) = (self.alpha, self.beta);
        for n in 1..=LOOKAHEAD {
            (a, b) = step(params, a, b, outcome);
            if ratio(a, b) < params.disqualify_below {
                return Some(n);
            }
        }
        None
    }

    /// Failed audits (missing piece or wrong proof, whichever weighs more)
    /// in a row that would disqualify.
    fn failures_left(&self, params: &ScoreParams) -> Option<u32> {
        let m = self.failures_to_disqualify(params, AuditOutcome::Missing);
        let b = self.failures_to_disqualify(params, AuditOutcome::BadProof);
        match (m, b) {
            (Some(m), Some(b)) => Some(m.min(b)),
            (m, b) => m.or(b),
        }
    }

    /// A warning when [`ScoreParams::warn_within`] or fewer failed audits
    /// would disqualify the node.
    pub fn warning(&self, params: &ScoreParams) -> Option<Warning> {
        let failures = self
            .failures_left(params)
            .filter(|&n| n <= params.warn_within)?;
        Some(Warning {
            failures,
            timeouts: self.failures_to_disqualify(params, AuditOutcome::Timeout),
            score: self.score(),
            threshold: params.disqualify_below,
        })
    }

    /// Everything about the score, for the CLI and the API.
    pub fn explain(&self, params: &ScoreParams) -> Explanation {
        Explanation {
            score: self.score(),
            threshold: params.disqualify_below,
            disqualified_at: self.disqualified_at,
            vetted: self.is_vetted(params),
            passed: self.passed,
            vetting_audits: params.vetting_audits,
            timeouts: self.timeouts,
            missing: self.missing,
            bad_proofs: self.bad_proofs,
            failures_to_disqualify: self.failures_left(params),
            penalties: self.penalties.iter().cloned().collect(),
            warning: self.warning(params),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn outcome() -> impl Strategy<Value = AuditOutcome> {
        prop_oneof![
            6 => Just(AuditOutcome::Passed),
            1 => Just(AuditOutcome::Timeout),
            1 => Just(AuditOutcome::Missing),
            1 => Just(AuditOutcome::BadProof),
        ]
    }

    fn params() -> impl Strategy<Value = ScoreParams> {
        (
            0.9f64..=1.0,
            0.0f64..200.0,
            0.0f64..5.0,
            0.05f64..2.0,
            0.5f64..=0.99,
        )
            .prop_map(|(lambda, a, b, tw, dq)| ScoreParams {
                lambda,
                initial_alpha: a + 0.1,
                initial_beta: b,
                timeout_weight: tw,
                disqualify_below: dq,
                ..ScoreParams::default()
            })
    }

    fn failures(r: &mut Reputation, p: &ScoreParams, o: AuditOutcome, n: u32) {
        for t in 0..n {
            r.record(p, u64::from(t), o, None);
        }
    }

    #[test]
    fn the_documented_arithmetic_holds() {
        let p = ScoreParams::default();
        p.validate().unwrap();
        let fresh = Reputation::new(&p);
        assert_eq!(fresh.score(), 1.0);
        assert_eq!(
            fresh.failures_to_disqualify(&p, AuditOutcome::BadProof),
            Some(5)
        );
        assert_eq!(
            fresh.failures_to_disqualify(&p, AuditOutcome::Missing),
            Some(5)
        );
        assert_eq!(
            fresh.failures_to_disqualify(&p, AuditOutcome::Timeout),
            Some(17)
        );
        let mut r = fresh.clone();
        for (f, want) in [0.99, 0.9801, 0.970299, 0.96059601].into_iter().enumerate() {
            let rec = r.record(&p, f as u64, AuditOutcome::BadProof, None);
            assert!((rec.after - want).abs() < 1e-12, "{f}: {}", rec.after);
            assert!(!r.is_disqualified());
        }
        let rec = r.record(&p, 9, AuditOutcome::Missing, None);
        assert!(rec.disqualified && r.is_disqualified());
        assert!((r.score() - 0.9509900499).abs() < 1e-9);
        assert_eq!(r.disqualified_at(), Some(9));
        // 16 timeouts stay above the line, 17 do not.
        let mut r = fresh.clone();
        failures(&mut r, &p, AuditOutcome::Timeout, 16);
        assert!(!r.is_disqualified());
        failures(&mut r, &p, AuditOutcome::Timeout, 1);
        assert!(r.is_disqualified());
        // 100 passes after one failure: 0.9963.
        let mut r = fresh;
        r.record(&p, 0, AuditOutcome::BadProof, None);
        failures(&mut r, &p, AuditOutcome::Passed, 100);
        assert!((r.score() - 0.99634).abs() < 1e-4, "{}", r.score());
    }

    #[test]
    fn a_score_exactly_on_the_line_is_not_disqualified() {
        // No forgetting, α₀ = 24: one failure leaves 24 / 25 = 0.96 exactly.
        let p = ScoreParams {
            lambda: 1.0,
            initial_alpha: 24.0,
            ..ScoreParams::default()
        };
        let mut r = Reputation::new(&p);
        assert_eq!(r.failures_to_disqualify(&p, AuditOutcome::Missing), Some(2));
        r.record(&p, 1, AuditOutcome::Missing, None);
        assert_eq!(r.score(), DISQUALIFY_BELOW);
        assert!(!r.is_disqualified());
        assert_eq!(r.warning(&p).map(|w| w.failures), Some(1));
        r.record(&p, 2, AuditOutcome::Missing, None);
        assert!(r.is_disqualified());
        assert!(r.warning(&p).is_none() && r.explain(&p).failures_to_disqualify.is_none());
    }

    #[test]
    fn one_failure_after_a_good_history_does_not_disqualify() {
        let p = ScoreParams::default();
        let mut r = Reputation::new(&p);
        failures(&mut r, &p, AuditOutcome::Passed, 1000);
        r.record(&p, 1000, AuditOutcome::BadProof, None);
        assert!(!r.is_disqualified());
        assert!(r.score() > 0.98);
    }

    #[test]
    fn vetting_after_the_documented_number_of_passes() {
        let p = ScoreParams::default();
        let mut r = Reputation::new(&p);
        for t in 0..99 {
            assert!(!r.record(&p, t, AuditOutcome::Passed, None).vetted);
            if t % 10 == 0 {
                // Failures do not count towards vetting, nor undo passes.
                r.record(&p, t, AuditOutcome::Timeout, None);
            }
        }
        assert!(!r.is_vetted(&p));
        assert!(r.record(&p, 99, AuditOutcome::Passed, None).vetted);
        assert!(r.is_vetted(&p));
        assert!(!r.record(&p, 100, AuditOutcome::Passed, None).vetted);
        failures(&mut r, &p, AuditOutcome::BadProof, 10);
        assert!(r.is_disqualified() && !r.is_vetted(&p));
    }

    #[test]
    fn explanations_keep_the_last_penalties_and_warn_in_time() {
        let p = ScoreParams {
            max_penalties: 3,
            ..ScoreParams::default()
        };
        let piece = PieceId([7; 32]);
        let mut r = Reputation::new(&p);
        r.record(&p, 10, AuditOutcome::Passed, None);
        assert!(r.penalties().len() == 0 && r.warning(&p).is_none());
        r.record(&p, 20, AuditOutcome::BadProof, Some(piece));
        assert!(r.warning(&p).is_none(), "4 left is not within 3");
        r.record(&p, 30, AuditOutcome::BadProof, Some(piece));
        let w = r.warning(&p).unwrap();
        assert_eq!(w.failures, 3);
        assert_eq!(w.timeouts, Some(9));
        assert_eq!(
            w.to_string().split(" (").next().unwrap(),
            "3 more failed audits would put this node below the 0.96 disqualification line"
        );
        r.record(&p, 40, AuditOutcome::Timeout, None);
        r.record(&p, 50, AuditOutcome::Missing, None);
        let e = r.explain(&p);
        assert_eq!(
            e.penalties.iter().map(|x| x.at).collect::<Vec<_>>(),
            vec![30, 40, 50]
        );
        assert_eq!(e.penalties[0].outcome, AuditOutcome::BadProof);
        assert_eq!(e.penalties[1].outcome, AuditOutcome::Timeout);
        assert_eq!(e.penalties[0].piece, Some(piece));
        assert!(e.penalties[0].before > e.penalties[0].after);
        assert_eq!(e.penalties[2].before, e.penalties[1].after);
        assert_eq!(
            (e.passed, e.timeouts, e.missing, e.bad_proofs),
            (1, 1, 1, 2)
        );
        assert_eq!(e.failures_to_disqualify, Some(1));
        assert!(!e.vetted && e.disqualified_at.is_none());
        assert_eq!(
            e.warning.unwrap().to_string().split(" (").next().unwrap(),
            "1 more failed audit would put this node below the 0.96 disqualification line"
        );
        assert!(
            e.penalties[0]
                .to_string()
                .contains("wrong proof (piece 0707")
        );
    }

    #[test]
    fn serde_round_trip_and_checks() {
        let p = ScoreParams::default();
        let mut r = Reputation::new(&p);
        r.record(&p, 5, AuditOutcome::BadProof, Some(PieceId([1; 32])));
        let bytes = postcard::to_allocvec(&r).unwrap();
        let back: Reputation = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, r);
        let mut bad = r.clone();
        bad.version = 2;
        let bytes = postcard::to_allocvec(&bad).unwrap();
        assert!(postcard::from_bytes::<Reputation>(&bytes).is_err());
        let mut bad = r;
        bad.alpha = 0.0;
        bad.beta = 0.0;
        let bytes = postcard::to_allocvec(&bad).unwrap();
        assert!(postcard::from_bytes::<Reputation>(&bytes).is_err());
    }

    #[test]
    fn invalid_params_are_named() {
        let p = ScoreParams {
            lambda: 1.5,
            ..ScoreParams::default()
        };
        assert!(matches!(
            p.validate(),
            Err(ScoreError::InvalidParams { name: "lambda", .. })
        ));
        let p = ScoreParams {
            initial_alpha: 0.0,
            ..ScoreParams::default()
        };
        assert!(p.validate().is_err());
        let p = ScoreParams {
            timeout_weight: 0.0,
            ..ScoreParams::default()
        };
        assert!(p.validate().is_err());
    }

    proptest! {
        #[test]
        fn score_laws(p in params(), events in prop::collection::vec(outcome(), 0..400)) {
            prop_assert!(p.validate().is_ok());
            let mut r = Reputation::new(&p);
            let mut seen_below = false;
            let mut last = r.score();
            for (t, o) in events.into_iter().enumerate() {
                let rec = r.record(&p, t as u64, o, None);
                prop_assert!((0.0..=1.0).contains(&rec.after));
                prop_assert_eq!(rec.before, last);
                prop_assert_eq!(rec.after, r.score());
                last = rec.after;
                if o.is_failure() {
                    prop_assert!(rec.after <= rec.before, "failure raised {} -> {}", rec.before, rec.after);
                } else {
                    prop_assert!(rec.after >= rec.before, "pass lowered {} -> {}", rec.before, rec.after);
                }
                // Disqualified exactly when the score first dips below the line.
                let below = rec.after < p.disqualify_below;
                prop_assert_eq!(rec.disqualified, below && !seen_below);
                seen_below |= below;
                prop_assert_eq!(r.is_disqualified(), seen_below);
            }
        }

        #[test]
        fn the_warning_count_is_exact(
            p in params(),
            history in prop::collection::vec(outcome(), 0..200),
            kind in prop_oneof![Just(AuditOutcome::Timeout), Just(AuditOutcome::Missing), Just(AuditOutcome::BadProof)],
        ) {
            let mut r = Reputation::new(&p);
            for (t, o) in history.into_iter().enumerate() {
                r.record(&p, t as u64, o, None);
            }
            if let Some(n) = r.failures_to_disqualify(&p, kind) {
                prop_assert!(n >= 1);
                let mut short = r.clone();
                failures(&mut short, &p, kind, n - 1);
                prop_assert!(!short.is_disqualified());
                let mut full = short;
                failures(&mut full, &p, kind, 1);
                prop_assert!(full.is_disqualified());
            } else {
                prop_assert!(r.is_disqualified());
            }
            if let Some(w) = r.warning(&p) {
                prop_assert!(w.failures <= p.warn_within);
                let mut full = r.clone();
                failures(&mut full, &p, AuditOutcome::BadProof, w.failures);
                prop_assert!(full.is_disqualified());
            }
        }
    }
}
