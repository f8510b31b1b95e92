//! k-of-n transfer plans: the decisions of uploading and fetching one segment.
//!
//! These are plain state machines. The caller feeds them outcomes ("piece 3
//! stored", "piece 5 was corrupt") and carries out the actions they return
//! (send a request, cancel one, finish, fail). The same code runs under libp2p
//! and under tests or a simulator, and every decision is unit-testable.
//!
//! - [`UploadPlan`]: all coded pieces (n plus spares) go out in parallel to
//!   distinct nodes; a refused or failed piece is retried on the next
//!   candidate; once n are stored the rest are cancelled (long-tail
//!   cancellation).
//! - [`FetchPlan`]: k pieces are requested in parallel; each failure asks
//!   another holder; once k valid pieces are in, the rest are cancelled.
//!   Slow holders are hedged, not raced from the start: once half the
//!   pieces are in, the plan asks the caller for a timer
//!   ([`Action::Hedge`]), and if the segment is still not complete when it
//!   fires ([`FetchPlan::hedge`]), a few more holders are asked. Asking
//!   k + 2 from the start cost every get 2/k more piece transfers (25 % on
//!   a 12-node network), all of them wasted when no holder is slow. It
//!   fails only after every holder has answered, so the error can say
//!   exactly how many pieces were reachable. Data pieces are worth
//!   waiting for: with all k of them, decoding is a copy instead of a
//!   Reed-Solomon solve. So when k pieces are in but a data piece is still
//!   on its way, the plan asks the caller to linger briefly
//!   ([`Action::Linger`]) and completes as soon as the data pieces are all
//!   in, or when the caller's timer calls [`FetchPlan::finish`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;

/// Why a piece transfer failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The node could not be reached or timed out.
    Unreachable,
    /// The node refused (full, busy, not permitted).
    Refused,
    /// The node does not have the piece.
    Missing,
    /// The bytes failed the hash check.
    Corrupt,
}

/// Tally of failures by kind, for error messages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Failures {
    /// Unreachable or timed out.
    pub unreachable: usize,
    /// Refused.
    pub refused: usize,
    /// Missing.
    pub missing: usize,
    /// Corrupt.
    pub corrupt: usize,
}

impl Failures {
    fn add(&mut self, kind: FailureKind) {
        match kind {
            FailureKind::Unreachable => self.unreachable += 1,
            FailureKind::Refused => self.refused += 1,
            FailureKind::Missing => self.missing += 1,
            FailureKind::Corrupt => self.corrupt += 1,
        }
    }
}

impl std::fmt::Display for Failures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} unreachable, {} refused, {} missing, {} corrupt",
            self.unreachable, self.refused, self.missing, self.corrupt
        )
    }
}

/// What the caller must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action<P> {
    /// Start transferring piece `index` with `peer`.
    Send {
        /// Piece index.
        index: u16,
        /// Node to talk to.
        peer: P,
    },
    /// Stop the transfer of piece `index` with `peer`; its result is no longer needed.
    Cancel {
        /// Piece index.
        index: u16,
        /// Node.
        peer: P,
    },
    /// Done: these pieces succeeded (upload: index and holder; fetch: the k indices to use).
    Complete(Vec<(u16, P)>),
    /// Fetch only: half of the pieces are in. If the plan has not
    /// completed after about as long again, call [`FetchPlan::hedge`].
    Hedge,
    /// Fetch only: k pieces are in, but data pieces are still on their way.
    /// Wait a little, then call [`FetchPlan::finish`] if the plan has not
    /// completed by itself.
    Linger,
    /// Impossible to finish.
    Fail {
        /// Pieces that succeeded.
        succeeded: usize,
        /// Pieces that were needed.
        needed: usize,
        /// Why the others failed.
        failures: Failures,
    },
}

/// Ends a plan successfully: cancels what is still in flight, then
/// completes with `done`, sorted by piece index.
fn complete<P>(in_flight: &mut HashMap<u16, P>, mut done: Vec<(u16, P)>, out: &mut Vec<Action<P>>) {
    let mut cancel: Vec<(u16, P)> = in_flight.drain().collect();
    cancel.sort_by_key(|(i, _)| *i);
    out.extend(
        cancel
            .into_iter()
            .map(|(index, peer)| Action::Cancel { index, peer }),
    );
    done.sort_by_key(|(i, _)| *i);
    out.push(Action::Complete(done));
}

/// Upload of one segment's pieces to distinct nodes.
#[derive(Debug)]
pub struct UploadPlan<P> {
    needed: usize,
    candidates: VecDeque<P>,
    waiting: VecDeque<u16>,
    in_flight: HashMap<u16, P>,
    stored: Vec<(u16, P)>,
    failures: Failures,
    finished: bool,
}

impl<P: Clone + Eq + Hash> UploadPlan<P> {
    /// Plans uploading pieces `0..coded`, of which `needed` must be stored, to
    /// `candidates` in preference order (duplicates are ignored).
    pub fn new(coded: u16, needed: u16, candidates: impl IntoIterator<Item = P>) -> Self {
        let mut seen = HashSet::new();
        let candidates = candidates
            .into_iter()
            .filter(|c| seen.insert(c.clone()))
            .collect();
        Self {
            needed: usize::from(needed),
            candidates,
            waiting: (0..coded).collect(),
            in_flight: HashMap::new(),
            stored: Vec::new(),
            failures: Failures::default(),
            finished: false,
        }
    }

    /// The initial requests.
    pub fn start(&mut self) -> Vec<Action<P>> {
        let mut out = Vec::new();
        self.assign(&mut out);
        self.check(&mut out);
        out
    }

    fn assign(&mut self, out: &mut Vec<Action<P>>) {
        while !self.waiting.is_empty() && !self.candidates.is_empty() {
            if let (Some(index), Some(peer)) =
                (self.waiting.pop_front(), self.candidates.pop_front())
            {
                self.in_flight.insert(index, peer.clone());
                out.push(Action::Send { index, peer });
            }
        }
    }

    fn check(&mut self, out: &mut Vec<Action<P>>) {
        if self.finished {
            return;
        }
        if self.stored.len() >= self.needed {
            self.finished = true;
            complete(&mut self.in_flight, std::mem::take(&mut self.stored), out);
        } else if self.stored.len() + self.in_flight.len() < self.needed {
            self.finished = true;
            out.push(Action::Fail {
                succeeded: self.stored.len(),
                needed: self.needed,
                failures: self.failures.clone(),
            });
        }
    }

    /// Piece `index` was stored.
    pub fn on_stored(&mut self, index: u16) -> Vec<Action<P>> {
        let mut out = Vec::new();
        if let Some(peer) = self.in_flight.remove(&index) {
            self.stored.push((index, peer));
            self.check(&mut out);
        }
        out
    }

    /// Storing piece `index` failed; it is retried on another candidate.
    pub fn on_failed(&mut self, index: u16, kind: FailureKind) -> Vec<Action<P>> {
        let mut out = Vec::new();
        if self.in_flight.remove(&index).is_some() && !self.finished {
            self.failures.add(kind);
            self.waiting.push_front(index);
            self.assign(&mut out);
            self.check(&mut out);
        }
        out
    }
}

/// Fetch of k pieces of one segment from its holders.
#[derive(Debug)]
pub struct FetchPlan<P> {
    needed: usize,
    parallel: usize,
    extra: usize,
    hedge_asked: bool,
    sources: VecDeque<(u16, P)>,
    in_flight: HashMap<u16, P>,
    got: Vec<(u16, P)>,
    failures: Failures,
    finished: bool,
    lingering: bool,
}

impl<P: Clone + Eq + Hash> FetchPlan<P> {
    /// Plans fetching `k` of `sources` (index, holder): k requests in
    /// flight, `extra` more once the plan is hedged.
    pub fn new(k: u16, extra: usize, sources: impl IntoIterator<Item = (u16, P)>) -> Self {
        let mut seen = HashSet::new();
        Self {
            needed: usize::from(k),
            parallel: usize::from(k),
            extra,
            hedge_asked: false,
            sources: sources
                .into_iter()
                .filter(|(i, _)| seen.insert(*i))
                .collect(),
            in_flight: HashMap::new(),
            got: Vec::new(),
            failures: Failures::default(),
            finished: false,
            lingering: false,
        }
    }

    /// The initial requests.
    pub fn start(&mut self) -> Vec<Action<P>> {
        let mut out = Vec::new();
        self.fill(&mut out);
        self.check(&mut out);
        out
    }

    fn fill(&mut self, out: &mut Vec<Action<P>>) {
        while self.got.len() < self.needed && self.got.len() + self.in_flight.len() < self.parallel
        {
            let Some((index, peer)) = self.sources.pop_front() else {
                break;
            };
            self.in_flight.insert(index, peer.clone());
            out.push(Action::Send { index, peer });
        }
    }

    fn check(&mut self, out: &mut Vec<Action<P>>) {
        if self.finished {
            return;
        }
        if !self.hedge_asked
            && self.extra > 0
            && self.got.len() < self.needed
            && self.got.len() * 2 >= self.needed
            && !self.sources.is_empty()
        {
            self.hedge_asked = true;
            out.push(Action::Hedge);
        }
        if self.got.len() >= self.needed {
            let k = self.needed;
            let data_in = self.got.iter().filter(|(i, _)| usize::from(*i) < k).count();
            let data_coming = self
                .in_flight
                .keys()
                .filter(|i| usize::from(**i) < k)
                .count();
            if data_in == k {
                // Every data piece is in: use just those.
                self.got.retain(|(i, _)| usize::from(*i) < k);
                self.complete(out);
            } else if data_in + data_coming == k {
                // The rest of the data pieces are in flight: worth a short wait.
                if !self.lingering {
                    self.lingering = true;
                    out.push(Action::Linger);
                }
            } else {
                self.complete(out);
            }
        } else if self.in_flight.is_empty() && self.sources.is_empty() {
            // Fail only once every holder has answered, so the error reports
            // exactly how many pieces were reachable.
            self.finished = true;
            out.push(Action::Fail {
                succeeded: self.got.len(),
                needed: self.needed,
                failures: self.failures.clone(),
            });
        }
    }

    fn complete(&mut self, out: &mut Vec<Action<P>>) {
        self.finished = true;
        complete(&mut self.in_flight, std::mem::take(&mut self.got), out);
    }

    /// Stops lingering: completes with the pieces in hand. Does nothing
    /// unless the plan asked to linger and has not completed since.
    pub fn finish(&mut self) -> Vec<Action<P>> {
        let mut out = Vec::new();
        if self.lingering && !self.finished {
            self.complete(&mut out);
        }
        out
    }

    /// The hedge timer fired: asks up to `extra` more holders. Does nothing
    /// once the plan has completed, or if it was hedged before.
    pub fn hedge(&mut self) -> Vec<Action<P>> {
        let mut out = Vec::new();
        if !self.finished && self.parallel == self.needed {
            self.parallel = self.needed + self.extra;
            self.fill(&mut out);
        }
        out
    }

    /// Piece `index` arrived and passed its hash check.
    pub fn on_piece(&mut self, index: u16) -> Vec<Action<P>> {
        let mut out = Vec::new();
        if let Some(peer) = self.in_flight.remove(&index) {
            self.got.push((index, peer));
            self.check(&mut out);
        }
        out
    }

    /// Fetching piece `index` failed; another holder is asked.
    pub fn on_failed(&mut self, index: u16, kind: FailureKind) -> Vec<Action<P>> {
        let mut out = Vec::new();
        if self.in_flight.remove(&index).is_some() && !self.finished {
            self.failures.add(kind);
            self.fill(&mut out);
            self.check(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sends<P: Clone>(a: &[Action<P>]) -> Vec<(u16, P)> {
        a.iter()
            .filter_map(|a| match a {
                Action::Send { index, peer } => Some((*index, peer.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn upload_cancels_the_long_tail() {
        let mut plan = UploadPlan::new(5, 3, ["a", "b", "c", "d", "e", "f"]);
        let a = plan.start();
        assert_eq!(
            sends(&a),
            vec![(0, "a"), (1, "b"), (2, "c"), (3, "d"), (4, "e")]
        );
        assert!(plan.on_stored(0).is_empty());
        assert!(plan.on_stored(3).is_empty());
        let done = plan.on_stored(1);
        assert_eq!(
            done,
            vec![
                Action::Cancel {
                    index: 2,
                    peer: "c"
                },
                Action::Cancel {
                    index: 4,
                    peer: "e"
                },
                Action::Complete(vec![(0, "a"), (1, "b"), (3, "d")])
            ]
        );
        // Late results after completion change nothing.
        assert!(plan.on_stored(2).is_empty());
    }

    #[test]
    fn upload_moves_refused_pieces_to_the_next_node() {
        let mut plan = UploadPlan::new(2, 2, ["full", "b", "c"]);
        assert_eq!(sends(&plan.start()), vec![(0, "full"), (1, "b")]);
        assert_eq!(
            sends(&plan.on_failed(0, FailureKind::Refused)),
            vec![(0, "c")]
        );
        plan.on_stored(1);
        assert_eq!(
            plan.on_stored(0),
            vec![Action::Complete(vec![(0, "c"), (1, "b")])]
        );
    }

    #[test]
    fn upload_fails_when_nodes_run_out() {
        let mut plan = UploadPlan::new(3, 3, ["a", "b", "c"]);
        plan.start();
        plan.on_stored(0);
        let a = plan.on_failed(1, FailureKind::Refused);
        assert_eq!(
            a,
            vec![Action::Fail {
                succeeded: 1,
                needed: 3,
                failures: Failures {
                    refused: 1,
                    ..Default::default()
                }
            }]
        );
        let mut few = UploadPlan::new(3, 3, ["a", "a"]);
        assert!(matches!(
            few.start().last(),
            Some(Action::Fail { needed: 3, .. })
        ));
    }

    #[test]
    fn fetch_hedges_and_replaces_bad_pieces() {
        let holders = [(0, "a"), (1, "b"), (2, "c"), (3, "d"), (4, "e")];
        let mut plan = FetchPlan::new(2, 1, holders);
        assert_eq!(sends(&plan.start()), vec![(0, "a"), (1, "b")]);
        assert_eq!(
            sends(&plan.on_failed(1, FailureKind::Corrupt)),
            vec![(2, "c")]
        );
        // Half the pieces in: the caller is asked for a hedge timer.
        assert_eq!(plan.on_piece(2), vec![Action::Hedge]);
        // It fires: one more holder is asked, once.
        assert_eq!(sends(&plan.hedge()), vec![(3, "d")]);
        assert!(plan.hedge().is_empty());
        assert_eq!(
            plan.on_piece(3),
            vec![
                Action::Cancel {
                    index: 0,
                    peer: "a"
                },
                Action::Complete(vec![(2, "c"), (3, "d")])
            ]
        );
    }

    #[test]
    fn fetch_lingers_for_data_pieces_and_then_uses_only_them() {
        // k = 3: data pieces 0..3, recovery pieces 3 and 4.
        let holders = [(0, "a"), (1, "b"), (2, "c"), (3, "d"), (4, "e")];
        let mut plan = FetchPlan::new(3, 2, holders);
        assert_eq!(sends(&plan.start()), vec![(0, "a"), (1, "b"), (2, "c")]);
        assert!(plan.on_piece(0).is_empty());
        assert_eq!(plan.on_piece(1), vec![Action::Hedge]);
        // Piece 2 is slow: the hedge asks both recovery holders.
        assert_eq!(sends(&plan.hedge()), vec![(3, "d"), (4, "e")]);
        // k pieces are in, data piece 2 is in flight: linger once.
        assert_eq!(plan.on_piece(3), vec![Action::Linger]);
        assert!(plan.on_piece(4).is_empty());
        // The last data piece completes the plan with the data pieces only.
        assert_eq!(
            plan.on_piece(2),
            vec![Action::Complete(vec![(0, "a"), (1, "b"), (2, "c")])]
        );
        assert!(
            plan.finish().is_empty(),
            "finish after completion does nothing"
        );
        assert!(plan.hedge().is_empty(), "nor does a late hedge");
    }

    #[test]
    fn fetch_asks_only_k_holders_when_none_is_slow() {
        let holders = [(0, "a"), (1, "b"), (2, "c"), (3, "d")];
        let mut plan = FetchPlan::new(2, 2, holders);
        assert_eq!(sends(&plan.start()).len(), 2);
        assert_eq!(plan.on_piece(1), vec![Action::Hedge]);
        // The hedge timer has not fired: no holder beyond k was asked.
        assert_eq!(
            plan.on_piece(0),
            vec![Action::Complete(vec![(0, "a"), (1, "b")])]
        );
    }

    #[test]
    fn fetch_linger_ends_on_timer_or_a_lost_data_piece() {
        let holders = [(0, "a"), (1, "b"), (2, "c"), (3, "d")];
        let lingering = || {
            let mut plan = FetchPlan::new(2, 2, holders);
            plan.start();
            assert_eq!(plan.on_piece(0), vec![Action::Hedge]);
            assert_eq!(sends(&plan.hedge()), vec![(2, "c"), (3, "d")]);
            assert_eq!(plan.on_piece(2), vec![Action::Linger]);
            plan
        };
        // The caller's timer fires: complete with what is in, cancel the rest.
        assert_eq!(
            lingering().finish(),
            vec![
                Action::Cancel {
                    index: 1,
                    peer: "b"
                },
                Action::Cancel {
                    index: 3,
                    peer: "d"
                },
                Action::Complete(vec![(0, "a"), (2, "c")])
            ]
        );
        // Data piece 1 failed: waiting cannot help any more, and no new
        // requests go out since k pieces are in.
        assert_eq!(
            lingering().on_failed(1, FailureKind::Unreachable),
            vec![
                Action::Cancel {
                    index: 3,
                    peer: "d"
                },
                Action::Complete(vec![(0, "a"), (2, "c")])
            ]
        );
    }

    #[test]
    fn fetch_fails_with_counts() {
        let mut plan = FetchPlan::new(3, 2, [(0, "a"), (1, "b"), (2, "c"), (3, "d")]);
        plan.start();
        plan.on_piece(0);
        plan.on_failed(1, FailureKind::Unreachable);
        // Success is impossible now, but the last answer is awaited for an exact count.
        assert!(plan.on_failed(2, FailureKind::Corrupt).is_empty());
        assert_eq!(
            plan.on_piece(3),
            vec![Action::Fail {
                succeeded: 2,
                needed: 3,
                failures: Failures {
                    unreachable: 1,
                    corrupt: 1,
                    ..Default::default()
                }
            }]
        );
        let mut none = FetchPlan::<&str>::new(1, 0, []);
        assert!(matches!(
            none.start()[..],
            [Action::Fail {
                succeeded: 0,
                needed: 1,
                ..
            }]
        ));
    }
}
