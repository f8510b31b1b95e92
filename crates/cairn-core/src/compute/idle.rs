//! Whether a provider's machine is otherwise idle, for providers that offer
//! compute only then ([`Offer::idle_only`]).
//!
//! The node samples what the core cannot see (CPU use by processes other
//! than Cairn, the time of the last keyboard or mouse input where it can
//! tell) and feeds [`IdleDetector::observe`]; the answer goes into
//! [`ProviderState::idle`] and the node's own decision to take work.
//!
//! The rule, BOINC's in spirit: an observation is *quiet* when other
//! processes use at most [`IdlePolicy::busy_above_percent`] of the CPU and
//! there was no input for [`IdlePolicy::input_quiet_secs`]. The machine is
//! idle once observations have been quiet for
//! [`IdlePolicy::idle_after_secs`] without a break, and busy again at the
//! first observation that is not: the owner comes first, so going busy is
//! immediate and going idle is slow (no flapping at the threshold).
//! Time going backwards (a clock step) restarts the quiet period.
//!
//! [`Offer::idle_only`]: super::resources::Offer::idle_only
//! [`ProviderState::idle`]: super::matching::ProviderState::idle

use serde::{Deserialize, Serialize};

/// Default CPU share of other processes above which the machine is busy.
pub const BUSY_ABOVE_PERCENT: u8 = 25;
/// Default quiet time before the machine counts as idle: 3 minutes.
pub const IDLE_AFTER_SECS: u64 = 180;
/// Default time since the last input before it counts as quiet: 3 minutes.
pub const INPUT_QUIET_SECS: u64 = 180;

/// When a machine counts as idle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdlePolicy {
    /// Other processes' CPU use, in percent of all cores, above which an
    /// observation is busy.
    pub busy_above_percent: u8,
    /// Quiet time needed before idle.
    pub idle_after_secs: u64,
    /// Time since the last input before an observation can be quiet.
    pub input_quiet_secs: u64,
}

impl Default for IdlePolicy {
    fn default() -> Self {
        Self {
            busy_above_percent: BUSY_ABOVE_PERCENT,
            idle_after_secs: IDLE_AFTER_SECS,
            input_quiet_secs: INPUT_QUIET_SECS,
        }
    }
}

/// One machine's idle state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdleDetector {
    policy: IdlePolicy,
    /// Start of the current unbroken quiet period.
    quiet_since: Option<u64>,
    last_seen: Option<u64>,
}

impl IdleDetector {
    /// A detector that starts busy (a machine just started is assumed in use).
    pub fn new(policy: IdlePolicy) -> Self {
        Self {
            policy,
            quiet_since: None,
            last_seen: None,
        }
    }

    /// Feeds one observation at `now`: other processes' CPU use in percent
    /// (clamped to 100) and the last input time, if known. Returns whether
    /// the machine is idle now.
    pub fn observe(&mut self, now: u64, other_cpu_percent: u8, last_input: Option<u64>) -> bool {
        if self.last_seen.is_some_and(|t| now < t) {
            self.quiet_since = None;
        }
        self.last_seen = Some(now);
        let cpu_quiet = other_cpu_percent.min(100) <= self.policy.busy_above_percent;
        let input_quiet =
            last_input.is_none_or(|t| t <= now && now - t >= self.policy.input_quiet_secs);
        if cpu_quiet && input_quiet {
            self.quiet_since.get_or_insert(now);
        } else {
            self.quiet_since = None;
        }
        self.is_idle(now)
    }

    /// Whether the machine is idle at `now`, given the observations so far.
    pub fn is_idle(&self, now: u64) -> bool {
        self.quiet_since
            .is_some_and(|s| now.saturating_sub(s) >= self.policy.idle_after_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn idle_is_slow_to_come_and_quick_to_go() {
        let mut d = IdleDetector::new(IdlePolicy::default());
        assert!(!d.observe(0, 5, None));
        assert!(!d.observe(120, 5, None));
        assert!(d.observe(180, 5, None));
        assert!(d.observe(240, 25, None), "at the threshold is quiet");
        assert!(!d.observe(250, 26, None), "busy at once");
        assert!(!d.observe(300, 0, None));
        assert!(d.observe(480, 0, None));
        // Recent input is not quiet, however low the CPU.
        assert!(!d.observe(500, 0, Some(450)));
        assert!(!d.observe(630, 0, Some(450)), "input quiet only from 630");
        assert!(d.observe(810, 0, Some(450)));
        // A clock step backwards restarts the quiet period.
        assert!(!d.observe(100, 0, None));
    }

    proptest! {
        /// Idle exactly when every observation in the last
        /// `idle_after_secs` (and the one that started the period) was quiet.
        #[test]
        fn idle_means_an_unbroken_quiet_period(
            steps in prop::collection::vec((1u64..120, 0u8..60, prop::option::of(0u64..400)), 1..60),
        ) {
            let p = IdlePolicy::default();
            let mut d = IdleDetector::new(p);
            let mut now = 0;
            let mut history: Vec<(u64, bool)> = Vec::new();
            for (dt, cpu, input_ago) in steps {
                now += dt;
                let last_input = input_ago.map(|a| now.saturating_sub(a));
                let idle = d.observe(now, cpu, last_input);
                let quiet = cpu <= p.busy_above_percent
                    && last_input.is_none_or(|t| now - t >= p.input_quiet_secs);
                history.push((now, quiet));
                // The start of the unbroken quiet run ending now.
                let run_start = history
                    .iter()
                    .rev()
                    .take_while(|(_, q)| *q)
                    .last()
                    .map(|(t, _)| *t);
                let expected = run_start.is_some_and(|s| now - s >= p.idle_after_secs);
                prop_assert_eq!(idle, expected);
            }
        }
    }
}
