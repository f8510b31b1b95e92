//! Liveness: whether a holder answers, as one observer (a steward) sees it.
//!
//! This module owns, per holder: when it last answered, since when it has
//! been failing, an uptime estimate and a smoothed round-trip time, and the
//! rule that turns a long silence into "lost" for repair. It does not send
//! probes; the caller reports each answer ([`Liveness::answered`]) or miss
//! ([`Liveness::missed`]) with the time it happened, in unix seconds.
//!
//! # Lost
//!
//! A holder is failing from the first miss after its last answer.
//! [`Liveness::is_lost`] is true once it has been failing for at least the
//! grace period; an answer clears it at once, so a holder that comes back
//! counts again (whether its pieces still count is repair's business: they
//! may have been replaced meanwhile). The clock starts at the first *miss*,
//! not at the last answer: the holder may have left any time in between, but
//! counting from the evidence avoids repairing a holder that was merely not
//! asked for a while. Stewards should keep probing a failing holder; the
//! probe interval is the error of this choice.
//!
//! The grace period is the caller's ([`DEFAULT_GRACE_SECS`] is 4 hours,
//! Storj's window after which an unseen node's pieces count as unhealthy for
//! repair). It trades repair traffic against exposure: shorter repairs
//! holders that were only rebooting, longer leaves segments degraded for
//! longer. Repair also waits for a segment to fall to its repair threshold,
//! so a short grace alone does not start repairs. The devnet end-to-end
//! tests use seconds.
//!
//! # Uptime
//!
//! A time-weighted exponential moving average of the observations
//! (answered = 1, missed = 0). An observation at `t` after the previous one
//! at `t₀` moves the estimate `u` by
//!
//! ```text
//! a = 1 − exp(−min(t − t₀, τ) / τ)
//! u ← u + a·(x − u)
//! ```
//!
//! so each observation stands for the time since the previous one, and the
//! estimate is the fraction of time the holder answered, with older time
//! fading with time constant `τ` ([`LivenessParams::uptime_window_secs`],
//! default 7 days). Weighting by time rather than by count means a burst of
//! probes during an outage does not outweigh a quiet week of answers. One
//! observation stands for at most `τ`, so a long unobserved gap is not all
//! attributed to whatever the next probe finds. The first observation sets
//! the estimate; before it the uptime is unknown (`None`), which placement
//! treats as neutral. Example: a holder offline 2 hours a day and probed
//! hourly settles near 22/24 ≈ 0.92.
//!
//! # Latency
//!
//! Round-trip times reported with answers are smoothed as TCP does
//! (RFC 6298): `srtt ← 7/8·srtt + 1/8·rtt`.
//!
//! # Order of reports
//!
//! Reports may arrive out of order (probes run concurrently). A late answer
//! older than the last miss does not clear the failure; a late miss older
//! than the last answer does not start one; neither moves the uptime (its
//! interval is zero). An answer and a miss in the same second: the answer
//! wins.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Default grace period before an unreachable holder counts as lost: 4 hours.
pub const DEFAULT_GRACE_SECS: u64 = 4 * 3600;
/// Default time constant of the uptime average: 7 days.
pub const DEFAULT_UPTIME_WINDOW_SECS: u64 = 7 * 86_400;
/// Format version of a serialized [`Liveness`].
pub const LIVENESS_VERSION: u16 = 1;
/// Weight of a new round-trip sample (RFC 6298's 1/8).
const RTT_GAIN: f64 = 0.125;

/// Tunable liveness parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LivenessParams {
    /// Time constant τ of the uptime average, seconds. 0 means "the last
    /// observation". Default [`DEFAULT_UPTIME_WINDOW_SECS`].
    pub uptime_window_secs: u64,
}

impl Default for LivenessParams {
    fn default() -> Self {
        Self {
            uptime_window_secs: DEFAULT_UPTIME_WINDOW_SECS,
        }
    }
}

/// A stored liveness record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LivenessError {
    /// A format this code does not read.
    #[error("liveness format version {found} is not supported (this build reads {supported})")]
    Version {
        /// Version found.
        found: u16,
        /// Version supported.
        supported: u16,
    },
    /// Values no sequence of observations produces.
    #[error("damaged liveness record: {0}")]
    Damaged(&'static str),
}

/// What one observer knows about whether one holder answers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Stored")]
pub struct Liveness {
    version: u16,
    last_answer: Option<u64>,
    last_miss: Option<u64>,
    failing_since: Option<u64>,
    last_observed: Option<u64>,
    uptime: Option<f64>,
    rtt_ms: Option<f64>,
    answers: u64,
    misses: u64,
}

#[derive(Deserialize)]
struct Stored {
    version: u16,
    last_answer: Option<u64>,
    last_miss: Option<u64>,
    failing_since: Option<u64>,
    last_observed: Option<u64>,
    uptime: Option<f64>,
    rtt_ms: Option<f64>,
    answers: u64,
    misses: u64,
}

impl TryFrom<Stored> for Liveness {
    type Error = LivenessError;

    fn try_from(s: Stored) -> Result<Self, LivenessError> {
        if s.version != LIVENESS_VERSION {
            return Err(LivenessError::Version {
                found: s.version,
                supported: LIVENESS_VERSION,
            });
        }
        if s.uptime.is_some_and(|u| !(0.0..=1.0).contains(&u)) {
            return Err(LivenessError::Damaged("uptime outside [0, 1]"));
        }
        if s.rtt_ms.is_some_and(|r| !(r >= 0.0 && r.is_finite())) {
            return Err(LivenessError::Damaged(
                "negative or infinite round-trip time",
            ));
        }
        Ok(Self {
            version: s.version,
            last_answer: s.last_answer,
            last_miss: s.last_miss,
            failing_since: s.failing_since,
            last_observed: s.last_observed,
            uptime: s.uptime,
            rtt_ms: s.rtt_ms,
            answers: s.answers,
            misses: s.misses,
        })
    }
}

fn later(t: Option<u64>, now: u64) -> Option<u64> {
    Some(t.map_or(now, |t| t.max(now)))
}

impl Liveness {
    /// A holder never observed.
    pub fn new() -> Self {
        Self {
            version: LIVENESS_VERSION,
            ..Self::default()
        }
    }

    /// The holder answered at `now`, in `rtt_ms` if measured.
    pub fn answered(&mut self, params: &LivenessParams, now: u64, rtt_ms: Option<u32>) {
        self.answers += 1;
        self.observe(params, now, 1.0);
        self.last_answer = later(self.last_answer, now);
        if self.last_miss.is_none_or(|m| now >= m) {
            self.failing_since = None;
        }
        if let Some(rtt) = rtt_ms {
            let rtt = f64::from(rtt);
            self.rtt_ms = Some(self.rtt_ms.map_or(rtt, |s| s + RTT_GAIN * (rtt - s)));
        }
    }

    /// The holder did not answer a probe made at `now`.
    pub fn missed(&mut self, params: &LivenessParams, now: u64) {
        self.misses += 1;
        self.observe(params, now, 0.0);
        self.last_miss = later(self.last_miss, now);
        if self.last_answer.is_none_or(|a| now > a) {
            self.failing_since = Some(self.failing_since.map_or(now, |s| s.min(now)));
        }
    }

    fn observe(&mut self, params: &LivenessParams, now: u64, x: f64) {
        let tau = params.uptime_window_secs;
        self.uptime = Some(match (self.uptime, self.last_observed) {
            (Some(u), Some(t0)) if tau > 0 => {
                let dt = now.saturating_sub(t0).min(tau);
                let a = 1.0 - (-(dt as f64) / tau as f64).exp();
                (u + a * (x - u)).clamp(0.0, 1.0)
            }
            _ => x,
        });
        self.last_observed = later(self.last_observed, now);
    }

    /// Unreachable for at least `grace_secs` at `now`.
    pub fn is_lost(&self, now: u64, grace_secs: u64) -> bool {
        self.unreachable_for(now).is_some_and(|d| d >= grace_secs)
    }

    /// How long the holder has been failing at `now`, if it is.
    pub fn unreachable_for(&self, now: u64) -> Option<u64> {
        self.failing_since.map(|s| now.saturating_sub(s))
    }

    /// Since when it has been failing.
    pub fn failing_since(&self) -> Option<u64> {
        self.failing_since
    }

    /// When it last answered.
    pub fn last_answer(&self) -> Option<u64> {
        self.last_answer
    }

    /// Uptime estimate in `[0, 1]`, `None` before the first observation.
    pub fn uptime(&self) -> Option<f64> {
        self.uptime
    }

    /// Smoothed round-trip time, rounded to a millisecond.
    pub fn latency_ms(&self) -> Option<u32> {
        // Smoothed values of u32 samples fit a u32.
        self.rtt_ms.map(|r| r.round() as u32)
    }

    /// Answers and misses observed.
    pub fn counts(&self) -> (u64, u64) {
        (self.answers, self.misses)
    }
}

impl fmt::Display for Liveness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.uptime {
            Some(u) => write!(f, "uptime {:.1}%", u * 100.0)?,
            None => f.write_str("never observed")?,
        }
        if let Some(s) = self.failing_since {
            write!(f, ", failing since {s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: u64 = 3600;

    #[test]
    fn lost_after_the_grace_period_and_found_again() {
        let p = LivenessParams::default();
        let mut l = Liveness::new();
        assert!(!l.is_lost(1_000_000, 0), "never observed is not lost");
        l.answered(&p, 100, Some(30));
        assert!(!l.is_lost(100 + 10 * DEFAULT_GRACE_SECS, DEFAULT_GRACE_SECS));
        l.missed(&p, 1000);
        l.missed(&p, 2000);
        assert_eq!(l.failing_since(), Some(1000));
        assert!(!l.is_lost(1000 + DEFAULT_GRACE_SECS - 1, DEFAULT_GRACE_SECS));
        assert!(l.is_lost(1000 + DEFAULT_GRACE_SECS, DEFAULT_GRACE_SECS));
        assert_eq!(l.unreachable_for(1500), Some(500));
        l.answered(&p, 1000 + DEFAULT_GRACE_SECS + 5, None);
        assert!(!l.is_lost(1000 + 100 * DEFAULT_GRACE_SECS, DEFAULT_GRACE_SECS));
        assert_eq!(l.last_answer(), Some(1000 + DEFAULT_GRACE_SECS + 5));
        // A holder that never answered is lost a grace after its first miss.
        let mut l = Liveness::new();
        l.missed(&p, 50);
        assert!(l.is_lost(53, 3) && !l.is_lost(52, 3));
    }

    #[test]
    fn late_reports_do_not_rewrite_the_present() {
        let p = LivenessParams::default();
        let mut l = Liveness::new();
        l.answered(&p, 10, None);
        l.missed(&p, 20);
        l.answered(&p, 15, None); // older than the miss
        assert_eq!(l.failing_since(), Some(20));
        l.missed(&p, 12); // older than the last answer (15)
        assert_eq!(l.failing_since(), Some(20));
        l.answered(&p, 20, None); // same second as the miss: the answer wins
        assert_eq!(l.failing_since(), None);
        l.missed(&p, 20);
        assert_eq!(l.failing_since(), None);
        assert_eq!(l.counts(), (3, 3));
    }

    #[test]
    fn a_daily_two_hour_absence_reads_about_ninety_two_percent() {
        let p = LivenessParams::default();
        let mut l = Liveness::new();
        for h in 0..(60 * 24) {
            if h % 24 < 22 {
                l.answered(&p, h * H, None);
            } else {
                l.missed(&p, h * H);
            }
        }
        let u = l.uptime().unwrap();
        assert!((0.89..=0.94).contains(&u), "{u}");
        // A burst of probes in one outage moves it no more than one probe
        // standing for the same time would.
        let mut burst = l.clone();
        let mut single = l.clone();
        let t = 60 * 24 * H;
        for s in 0..=60 {
            burst.missed(&p, t + s * 60);
        }
        single.missed(&p, t + H);
        let (b, s) = (burst.uptime().unwrap(), single.uptime().unwrap());
        assert!((b - s).abs() < 1e-9, "{b} vs {s}");
    }

    #[test]
    fn round_trips_are_smoothed() {
        let p = LivenessParams::default();
        let mut l = Liveness::new();
        assert_eq!(l.latency_ms(), None);
        l.answered(&p, 1, Some(100));
        assert_eq!(l.latency_ms(), Some(100));
        l.answered(&p, 2, Some(180));
        assert_eq!(l.latency_ms(), Some(110));
    }

    #[test]
    fn serde_round_trip_and_checks() {
        let p = LivenessParams::default();
        let mut l = Liveness::new();
        l.answered(&p, 1, Some(5));
        l.missed(&p, 9);
        let bytes = postcard::to_allocvec(&l).unwrap();
        assert_eq!(postcard::from_bytes::<Liveness>(&bytes).unwrap(), l);
        let mut bad = l.clone();
        bad.version = 9;
        let bytes = postcard::to_allocvec(&bad).unwrap();
        assert!(postcard::from_bytes::<Liveness>(&bytes).is_err());
        let mut bad = l;
        bad.uptime = Some(1.5);
        let bytes = postcard::to_allocvec(&bad).unwrap();
        assert!(postcard::from_bytes::<Liveness>(&bytes).is_err());
    }

    proptest! {
        #[test]
        fn liveness_laws(
            events in prop::collection::vec((0u64..20_000, any::<bool>()), 0..200),
            grace in 0u64..50_000,
            later_by in 0u64..100_000,
            tau in prop_oneof![Just(0u64), 1u64..1_000_000],
        ) {
            let p = LivenessParams { uptime_window_secs: tau };
            let mut l = Liveness::new();
            let mut now = 0;
            // The reference: the start of the trailing run of misses.
            // A miss in the same second as an answer does not start one.
            let mut run_start: Option<u64> = None;
            let mut answered_at: Option<u64> = None;
            for (dt, ok) in events {
                now += dt;
                let before = l.uptime();
                if ok {
                    l.answered(&p, now, None);
                    run_start = None;
                    answered_at = Some(now);
                } else {
                    l.missed(&p, now);
                    if answered_at != Some(now) {
                        run_start.get_or_insert(now);
                    }
                }
                let u = l.uptime().unwrap();
                prop_assert!((0.0..=1.0).contains(&u));
                if let Some(b) = before {
                    if ok { prop_assert!(u >= b); } else { prop_assert!(u <= b); }
                }
                prop_assert_eq!(l.failing_since(), run_start);
            }
            let at = now + later_by;
            prop_assert_eq!(
                l.is_lost(at, grace),
                run_start.is_some_and(|s| at - s >= grace)
            );
        }
    }
}
