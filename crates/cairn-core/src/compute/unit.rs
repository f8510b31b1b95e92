//! The life of one work unit: replicas, attempts, deadlines, checkpoints,
//! reassignment and validation, as a state machine fed events and time.
//!
//! [`Unit::handle`] takes an [`Event`] and returns [`Action`]s; the node
//! carries them out (start or cancel a run, record reliability, publish the
//! result) and the simulator does the same with fake providers. The
//! scheduler asks [`Unit::request`] for what to match and reports the
//! matching result back as [`Event::Assigned`].
//!
//! # Slots and attempts (what counts)
//!
//! A unit wants results from several distinct providers. Each wanted result
//! is a *slot*; a new unit has `quorum` slots. An *attempt* is one
//! assignment of a slot to a provider ([`Event::Assigned`]). An attempt
//! ends with a result ([`Event::Finished`]: the slot is filled and costs no
//! further attempt, whatever the vote says later) or without one: a failure
//! ([`Event::Failed`]: trap, limit exceeded, bad exit), the provider leaving
//! ([`Event::ProviderLost`]) or the attempt's deadline passing
//! ([`Event::Tick`] at or after `assigned_at + deadline_secs`; the run is
//! cancelled). Those three count alike: the slot goes back to waiting and
//! is reassigned, unless it has had `max_attempts` attempts, in which case
//! the unit gives up (a unit that traps or overruns everywhere fails after
//! `max_attempts` tries, not after every provider in the network).
//!
//! When the results disagree, [`validate::decide`] says how many more
//! agreeing results the leading output needs, and the unit opens that many
//! new slots (each with its own attempts). A unit has at most
//! `quorum × max_attempts` slots, and never more than [`MAX_SLOTS`]; when
//! no quorum can be reached within them it gives up.
//!
//! When `quorum` distinct operators report the same deterministic error
//! ([`RunError::is_deterministic`]: a trap, the fuel or memory limit, an
//! exit code), the error is the unit's own and it fails at once
//! ([`GiveUpReason::UnitFails`]) instead of using up its attempts; a
//! single provider cannot fail a unit this way unless the quorum is 1, the
//! same trust as for outputs.
//!
//! A unit never runs twice on one provider, nor on two providers of one
//! operator, across all its slots and attempts ([`Unit::request`] excludes
//! them and [`Event::Assigned`] refuses them), so votes are independent.
//!
//! # Checkpoints
//!
//! A checkpoint belongs to its slot: the slot keeps the latest checkpoint
//! reference, who made it and the providers whose checkpoints it built on.
//! A slot that is reassigned resumes from its own checkpoint
//! ([`Action::Start`] carries it); another slot never does. So every slot
//! is an independent lineage, and a checkpoint is only a resume hint: a
//! forged or corrupted checkpoint can spoil at most the result of its own
//! slot, which must still agree with other, independent slots to count.
//! When a slot's result loses the vote, every provider in its lineage (the
//! checkpoint makers it resumed from and the finisher) is reported invalid,
//! because the core cannot tell which of them went wrong; an honest
//! provider that resumed a bad checkpoint loses its run of valid results,
//! and the one that made it is caught too.
//!
//! # Adaptive replication
//!
//! [`Event::Assigned`] says whether the provider may stand alone (`trusted`:
//! the scheduler found it trusted and the unit not spot-checked, see
//! [`validate`]). While every assignment was trusted and no results
//! disagree, the unit needs one result; an untrusted assignment or a
//! disagreement restores the full quorum for good.
//!
//! # Bounds
//!
//! `quorum` ≤ [`MAX_QUORUM`], `max_attempts` ≤ [`MAX_ATTEMPTS`], slots ≤
//! [`MAX_SLOTS`], error texts are cut to [`MAX_ERROR_LEN`] bytes, so a
//! unit's state is bounded whatever its providers send.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::matching::{UnitReq, WaitReason};
use super::resources::Need;
use super::validate::{self, Verdict, Vote};
use super::{CheckpointRef, OperatorId, OutputHash, ProviderId, UnitId};
use crate::ids::FileId;

/// Format version of a serialized [`Unit`].
pub const UNIT_VERSION: u16 = 1;
/// Largest quorum.
pub const MAX_QUORUM: u16 = 8;
/// Most attempts per slot.
pub const MAX_ATTEMPTS: u16 = 10;
/// Most slots (replicas) per unit.
pub const MAX_SLOTS: usize = 16;
/// Longest error text kept, in bytes.
pub const MAX_ERROR_LEN: usize = 512;
/// Most assignments a unit can have had: every slot it can have, each
/// with every attempt (slots dropped by adaptive replication included).
pub const MAX_HISTORY: usize = 2 * MAX_SLOTS * MAX_ATTEMPTS as usize;
/// Most input objects per unit.
pub const MAX_UNIT_INPUTS: usize = 64;
/// Longest unit name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// What a unit is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitSpec {
    /// Its id ([`UnitId::of`] job and name).
    pub id: UnitId,
    /// Its name in the job file.
    pub name: String,
    /// What one run needs; `need.deadline_secs` is the per-attempt deadline.
    pub need: Need,
    /// Objects it reads, for compute-near-data.
    pub inputs: Vec<FileId>,
}

/// Why an attempt ended without a result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RunError {
    /// The module trapped.
    Trap {
        /// The trap message.
        message: String,
    },
    /// Fuel ran out.
    OutOfFuel,
    /// The memory limit was hit.
    OutOfMemory,
    /// The wall-clock limit was hit on the provider.
    TimeLimit,
    /// `proc_exit` with a non-zero code.
    Exit {
        /// The exit code.
        code: i32,
    },
    /// Anything else the runtime reports (missing input, bad module).
    Other {
        /// What happened.
        message: String,
    },
}

impl RunError {
    /// Whether every correct provider would hit the same error on the same
    /// inputs: traps, fuel and memory limits and exit codes are functions
    /// of the module and its inputs (the sandbox is deterministic); a wall
    /// clock limit or a runtime failure is not.
    pub fn is_deterministic(&self) -> bool {
        matches!(
            self,
            Self::Trap { .. } | Self::OutOfFuel | Self::OutOfMemory | Self::Exit { .. }
        )
    }

    fn bounded(self) -> Self {
        match self {
            Self::Trap { message } => Self::Trap {
                message: cut(message),
            },
            Self::Other { message } => Self::Other {
                message: cut(message),
            },
            e => e,
        }
    }
}

fn cut(mut s: String) -> String {
    if s.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Trap { message } => write!(f, "the module trapped: {message}"),
            Self::OutOfFuel => {
                f.write_str("the unit ran out of fuel (raise `fuel` in the job file)")
            }
            Self::OutOfMemory => {
                f.write_str("the unit hit its memory limit (raise `memory` in the job file)")
            }
            Self::TimeLimit => f.write_str("the unit ran past its deadline"),
            Self::Exit { code } => write!(f, "the unit exited with code {code}"),
            Self::Other { message } => f.write_str(message),
        }
    }
}

/// Something that happened to the unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The scheduler gave a waiting slot to `provider`.
    Assigned {
        /// The provider.
        provider: ProviderId,
        /// Its operator.
        operator: OperatorId,
        /// Whether its result may stand alone (trusted provider, unit not
        /// spot-checked).
        trusted: bool,
        /// When.
        at: u64,
    },
    /// A running provider stored a checkpoint.
    Checkpointed {
        /// The provider.
        provider: ProviderId,
        /// Where it is stored.
        checkpoint: CheckpointRef,
        /// When.
        at: u64,
    },
    /// A running provider finished with an output.
    Finished {
        /// The provider.
        provider: ProviderId,
        /// Hash of its output.
        output: OutputHash,
        /// Fuel it reports using.
        fuel_used: u64,
        /// When.
        at: u64,
    },
    /// A running provider's attempt failed.
    Failed {
        /// The provider.
        provider: ProviderId,
        /// Why.
        error: RunError,
        /// When.
        at: u64,
    },
    /// A running provider left the network (liveness says it is lost).
    ProviderLost {
        /// The provider.
        provider: ProviderId,
        /// When.
        at: u64,
    },
    /// Time passes: attempts past their deadline time out.
    Tick {
        /// Now.
        now: u64,
    },
    /// The job was cancelled.
    Cancel {
        /// When.
        at: u64,
    },
}

/// Why a unit failed for good.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum GiveUpReason {
    /// A slot had `max_attempts` attempts, none with a result.
    AttemptsExhausted {
        /// Attempts the slot had.
        attempts: u16,
        /// The last attempt's error ("timed out", "provider left" or the
        /// runtime's).
        last_error: String,
    },
    /// `quorum` distinct providers hit the same deterministic error: the
    /// unit itself fails (see [`RunError::is_deterministic`]).
    UnitFails {
        /// The error.
        error: RunError,
        /// How many providers agree on it.
        providers: usize,
    },
    /// Results disagree and no more replicas are allowed.
    NoQuorum {
        /// Results received.
        results: usize,
        /// Distinct outputs among them.
        distinct: usize,
    },
    /// The job was cancelled.
    Cancelled,
}

impl fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AttemptsExhausted {
                attempts,
                last_error,
            } => write!(f, "{attempts} attempts failed; the last: {last_error}"),
            Self::UnitFails { error, providers } => {
                write!(f, "{error} (the same on {providers} providers)")
            }
            Self::NoQuorum { results, distinct } => write!(
                f,
                "no quorum: {results} results with {distinct} different outputs, and no more replicas allowed"
            ),
            Self::Cancelled => f.write_str("cancelled"),
        }
    }
}

/// What the node should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// The unit has this many waiting slots: match it.
    Schedule {
        /// Providers wanted.
        replicas_needed: u16,
    },
    /// Send the unit to `provider`, resuming from `resume_from` if any.
    Start {
        /// The provider.
        provider: ProviderId,
        /// The slot's latest checkpoint.
        resume_from: Option<CheckpointRef>,
    },
    /// Stop the run on `provider`.
    Cancel {
        /// The provider.
        provider: ProviderId,
    },
    /// `provider` contributed to the accepted output
    /// ([`validate::Reliability::record_valid`]).
    Valid {
        /// The provider.
        provider: ProviderId,
    },
    /// `provider` contributed to an output that lost the vote
    /// ([`validate::Reliability::record_invalid`]).
    Invalid {
        /// The provider.
        provider: ProviderId,
    },
    /// `provider`'s attempt ended without a result
    /// ([`validate::Reliability::record_error`]).
    Errored {
        /// The provider.
        provider: ProviderId,
    },
    /// The unit is done: `output` is its accepted output.
    Done {
        /// The accepted output hash.
        output: OutputHash,
        /// The providers whose results agreed.
        providers: Vec<ProviderId>,
    },
    /// The unit failed for good.
    GiveUp {
        /// Why.
        reason: GiveUpReason,
    },
}

/// An event the unit cannot take. The state is unchanged; a late or
/// duplicate network message is the usual cause, so callers log and go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnitError {
    /// A quorum or attempt count out of range.
    #[error("invalid unit setting {name}: {why}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// What is wrong.
        why: String,
    },
    /// The unit is done or failed.
    #[error("the unit is already {0}")]
    Over(UnitState),
    /// No slot waits for a provider.
    #[error("no replica of the unit is waiting for a provider")]
    NotWanted,
    /// The provider or its operator already had the unit.
    #[error("provider {} (or its operator) already ran this unit", crate::hex(&.0.0))]
    AlreadyRan(ProviderId),
    /// The provider is not running the unit (its attempt already ended).
    #[error("provider {} is not running this unit", crate::hex(&.0.0))]
    NotRunning(ProviderId),
}

/// The state shown to users.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnitState {
    /// Nothing running, no result yet.
    Waiting,
    /// At least one attempt running.
    Running,
    /// Results are in but no quorum yet, and nothing is running.
    Validating,
    /// A quorum agreed.
    Done,
    /// Given up.
    Failed,
}

impl fmt::Display for UnitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Waiting => "waiting",
            Self::Running => "running",
            Self::Validating => "validating",
            Self::Done => "done",
            Self::Failed => "failed",
        })
    }
}

/// A slot's latest checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Where it is stored.
    pub reference: CheckpointRef,
    /// Who made it.
    pub provider: ProviderId,
    /// When.
    pub at: u64,
    /// Everyone whose work it contains: earlier checkpoint makers it
    /// resumed from, then `provider`.
    pub lineage: Vec<ProviderId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum SlotState {
    Waiting,
    Running {
        provider: ProviderId,
        operator: OperatorId,
        since: u64,
        /// Providers whose checkpoints this attempt resumed from.
        lineage: Vec<ProviderId>,
    },
    Reported {
        vote: Vote,
        lineage: Vec<ProviderId>,
        fuel_used: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Slot {
    attempts: u16,
    state: SlotState,
    checkpoint: Option<Checkpoint>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Outcome {
    Done {
        output: OutputHash,
        providers: Vec<ProviderId>,
    },
    Failed(GiveUpReason),
}

/// One unit's state. Persisted by the scheduler, so versioned; reading it
/// back checks the version and the bounds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StoredUnit")]
pub struct Unit {
    version: u16,
    spec: UnitSpec,
    quorum: u16,
    max_attempts: u16,
    relaxed: bool,
    /// Whether any assignment happened yet (relaxing is decided on the first).
    assigned_once: bool,
    slots: Vec<Slot>,
    /// Every provider and operator ever assigned, in order.
    history: Vec<(ProviderId, OperatorId)>,
    attempts: u32,
    last_error: Option<String>,
    /// Deterministic errors reported, one per operator.
    errors: Vec<(OperatorId, RunError)>,
    wait: Option<WaitReason>,
    outcome: Option<Outcome>,
}

/// [`Unit`] as read back, before it is checked.
#[derive(Deserialize)]
struct StoredUnit {
    version: u16,
    spec: UnitSpec,
    quorum: u16,
    max_attempts: u16,
    relaxed: bool,
    assigned_once: bool,
    slots: Vec<Slot>,
    history: Vec<(ProviderId, OperatorId)>,
    attempts: u32,
    last_error: Option<String>,
    errors: Vec<(OperatorId, RunError)>,
    wait: Option<WaitReason>,
    outcome: Option<Outcome>,
}

impl TryFrom<StoredUnit> for Unit {
    type Error = UnitError;

    fn try_from(s: StoredUnit) -> Result<Self, UnitError> {
        if s.version != UNIT_VERSION {
            return Err(UnitError::Invalid {
                name: "version",
                why: format!(
                    "{} is not supported (this build reads {UNIT_VERSION})",
                    s.version
                ),
            });
        }
        // The same checks as a new unit, then the state's own bounds.
        let fresh = Unit::new(
            s.spec.clone(),
            s.quorum,
            s.max_attempts,
            s.spec.need.deadline_secs,
        )?;
        let bad = |why: &str| {
            Err(UnitError::Invalid {
                name: "state",
                why: why.to_string(),
            })
        };
        if s.slots.len() > MAX_SLOTS {
            return bad("too many slots");
        }
        if s.slots.iter().any(|slot| slot.attempts > s.max_attempts) {
            return bad("a slot has more attempts than allowed");
        }
        if s.history.len() > MAX_HISTORY || s.errors.len() > MAX_HISTORY {
            return bad("too many assignments");
        }
        Ok(Unit {
            slots: s.slots,
            relaxed: s.relaxed,
            assigned_once: s.assigned_once,
            history: s.history,
            attempts: s.attempts,
            last_error: s.last_error.map(cut),
            errors: s
                .errors
                .into_iter()
                .map(|(o, e)| (o, e.bounded()))
                .collect(),
            wait: s.wait,
            outcome: s.outcome,
            ..fresh
        })
    }
}

/// A unit as `cairn job status --json` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitStatus {
    /// The unit's name.
    pub name: String,
    /// Its state.
    pub state: UnitState,
    /// Attempts so far, over all slots.
    pub attempts: u32,
    /// Every provider it was assigned to, in order (hex node keys).
    pub providers: Vec<String>,
    /// Providers running it now.
    pub running: Vec<String>,
    /// Results received.
    pub results: usize,
    /// Fuel the results report using, summed (a credit unit later).
    pub fuel_used: u64,
    /// Results the unit wants in agreement.
    pub quorum: u16,
    /// Why it waits, when it does and the scheduler said.
    pub wait: Option<String>,
    /// The accepted output hash (hex), when done.
    pub output: Option<String>,
    /// Why it failed, or the last attempt's error.
    pub error: Option<String>,
    /// When the newest checkpoint of any slot was made.
    pub checkpoint_at: Option<u64>,
}

impl Unit {
    /// A new unit wanting `quorum` agreeing results, with at most
    /// `max_attempts` attempts per slot, each with `deadline_secs` of wall
    /// clock (stored as `spec.need.deadline_secs`). It starts waiting with
    /// `quorum` slots: [`Unit::request`] asks for them; no action is
    /// emitted for that.
    pub fn new(
        mut spec: UnitSpec,
        quorum: u16,
        max_attempts: u16,
        deadline_secs: u64,
    ) -> Result<Self, UnitError> {
        let invalid = |name, why: String| Err(UnitError::Invalid { name, why });
        if quorum == 0 || quorum > MAX_QUORUM {
            return invalid("quorum", format!("{quorum} is not in 1..={MAX_QUORUM}"));
        }
        if max_attempts == 0 || max_attempts > MAX_ATTEMPTS {
            return invalid(
                "max_attempts",
                format!("{max_attempts} is not in 1..={MAX_ATTEMPTS}"),
            );
        }
        if deadline_secs == 0 {
            return invalid("deadline", "must be at least one second".into());
        }
        if spec.inputs.len() > MAX_UNIT_INPUTS {
            return invalid("inputs", format!("more than {MAX_UNIT_INPUTS}"));
        }
        if spec.name.is_empty() || spec.name.len() > MAX_NAME_LEN {
            return invalid("name", format!("must be 1 to {MAX_NAME_LEN} bytes"));
        }
        spec.need.deadline_secs = deadline_secs;
        Ok(Self {
            version: UNIT_VERSION,
            spec,
            quorum,
            max_attempts,
            relaxed: false,
            assigned_once: false,
            slots: (0..quorum).map(|_| Slot::new()).collect(),
            history: Vec::new(),
            attempts: 0,
            last_error: None,
            errors: Vec::new(),
            wait: None,
            outcome: None,
        })
    }

    /// What the unit is.
    pub fn spec(&self) -> &UnitSpec {
        &self.spec
    }

    /// Slots waiting for a provider (0 once done or failed).
    pub fn replicas_needed(&self) -> u16 {
        if self.outcome.is_some() {
            return 0;
        }
        self.slots
            .iter()
            .filter(|s| s.state == SlotState::Waiting)
            .count() as u16
    }

    /// The matching request, if the unit wants providers. `finish_by` is
    /// the job's own deadline, if any.
    pub fn request(&self, finish_by: Option<u64>) -> Option<UnitReq> {
        let replicas = self.replicas_needed();
        (replicas > 0).then(|| UnitReq {
            unit: self.spec.id,
            need: self.spec.need.clone(),
            replicas,
            inputs: self.spec.inputs.clone(),
            exclude: self.history.iter().map(|h| h.0).collect(),
            exclude_operators: self.history.iter().map(|h| h.1).collect(),
            finish_by,
        })
    }

    /// Records why the scheduler could not place the unit (shown by
    /// [`Unit::status`]); `None` when it was placed.
    pub fn note_wait(&mut self, reason: Option<WaitReason>) {
        self.wait = reason;
    }

    /// The user-facing state.
    pub fn state(&self) -> UnitState {
        match &self.outcome {
            Some(Outcome::Done { .. }) => return UnitState::Done,
            Some(Outcome::Failed(_)) => return UnitState::Failed,
            None => {}
        }
        if self.running().next().is_some() {
            UnitState::Running
        } else if self.votes().next().is_some() {
            UnitState::Validating
        } else {
            UnitState::Waiting
        }
    }

    /// The accepted output, once done.
    pub fn output(&self) -> Option<OutputHash> {
        match &self.outcome {
            Some(Outcome::Done { output, .. }) => Some(*output),
            _ => None,
        }
    }

    /// The latest checkpoint of each slot that has one.
    pub fn checkpoints(&self) -> impl Iterator<Item = &Checkpoint> {
        self.slots.iter().filter_map(|s| s.checkpoint.as_ref())
    }

    /// Providers running the unit. None once it is done or failed: every
    /// run still going was told to stop when it finished.
    fn running(&self) -> impl Iterator<Item = &ProviderId> {
        let finished = self.outcome.is_some();
        self.slots.iter().filter_map(move |s| match &s.state {
            SlotState::Running { provider, .. } if !finished => Some(provider),
            _ => None,
        })
    }

    fn votes(&self) -> impl Iterator<Item = &Vote> {
        self.slots.iter().filter_map(|s| match &s.state {
            SlotState::Reported { vote, .. } => Some(vote),
            _ => None,
        })
    }

    /// The status view.
    pub fn status(&self) -> UnitStatus {
        let hex = |p: &ProviderId| crate::hex(&p.0);
        let state = self.state();
        UnitStatus {
            name: self.spec.name.clone(),
            state,
            attempts: self.attempts,
            providers: self.history.iter().map(|h| hex(&h.0)).collect(),
            running: self.running().map(hex).collect(),
            results: self.votes().count(),
            fuel_used: self
                .slots
                .iter()
                .map(|s| match &s.state {
                    SlotState::Reported { fuel_used, .. } => *fuel_used,
                    _ => 0,
                })
                .fold(0u64, u64::saturating_add),
            quorum: if self.relaxed { 1 } else { self.quorum },
            wait: match state {
                UnitState::Waiting | UnitState::Validating => {
                    self.wait.as_ref().map(ToString::to_string)
                }
                _ => None,
            },
            output: self.output().map(|o| crate::hex(&o.0)),
            error: match &self.outcome {
                Some(Outcome::Failed(r)) => Some(r.to_string()),
                _ => self.last_error.clone(),
            },
            checkpoint_at: self.checkpoints().map(|c| c.at).max(),
        }
    }

    /// Applies `event`; returns what to do.
    pub fn handle(&mut self, event: Event) -> Result<Vec<Action>, UnitError> {
        if self.outcome.is_some() {
            return Err(UnitError::Over(self.state()));
        }
        let mut out = Vec::new();
        match event {
            Event::Assigned {
                provider,
                operator,
                trusted,
                at,
            } => self.assigned(provider, operator, trusted, at, &mut out)?,
            Event::Checkpointed {
                provider,
                checkpoint,
                at,
            } => {
                let slot = self.slot_of(&provider)?;
                let s = &mut self.slots[slot];
                if let SlotState::Running { lineage, .. } = &s.state {
                    let mut lineage = lineage.clone();
                    lineage.push(provider);
                    s.checkpoint = Some(Checkpoint {
                        reference: checkpoint,
                        provider,
                        at,
                        lineage,
                    });
                }
            }
            Event::Finished {
                provider,
                output,
                fuel_used,
                at: _,
            } => {
                let slot = self.slot_of(&provider)?;
                let baseline = self.replicas_needed();
                let s = &mut self.slots[slot];
                if let SlotState::Running {
                    operator, lineage, ..
                } = &s.state
                {
                    s.state = SlotState::Reported {
                        vote: Vote {
                            provider,
                            operator: *operator,
                            output,
                        },
                        lineage: lineage.clone(),
                        fuel_used,
                    };
                }
                self.settle(baseline, &mut out);
            }
            Event::Failed {
                provider,
                error,
                at: _,
            } => {
                let slot = self.slot_of(&provider)?;
                let error = error.bounded();
                if error.is_deterministic()
                    && let SlotState::Running { operator, .. } = &self.slots[slot].state
                {
                    let operator = *operator;
                    if !self.errors.iter().any(|(o, _)| *o == operator) {
                        self.errors.push((operator, error.clone()));
                    }
                    let agree = self.errors.iter().filter(|(_, e)| *e == error).count();
                    if agree >= usize::from(self.quorum) {
                        // The unit's own fault: retrying elsewhere would
                        // fail the same way.
                        self.slots[slot].state = SlotState::Waiting;
                        out.push(Action::Errored { provider });
                        for p in self.running().copied().collect::<Vec<_>>() {
                            out.push(Action::Cancel { provider: p });
                        }
                        self.last_error = Some(error.to_string());
                        self.give_up(
                            GiveUpReason::UnitFails {
                                error,
                                providers: agree,
                            },
                            &mut out,
                        );
                        return Ok(out);
                    }
                }
                self.end_attempt(slot, provider, error.to_string(), false, &mut out);
            }
            Event::ProviderLost { provider, at: _ } => {
                let slot = self.slot_of(&provider)?;
                self.end_attempt(slot, provider, "the provider left".into(), false, &mut out);
            }
            Event::Tick { now } => {
                let deadline = self.spec.need.deadline_secs;
                let late: Vec<ProviderId> = self
                    .slots
                    .iter()
                    .filter_map(|s| match &s.state {
                        SlotState::Running {
                            provider, since, ..
                        } if now >= since.saturating_add(deadline) => Some(*provider),
                        _ => None,
                    })
                    .collect();
                for provider in late {
                    // Ending one attempt may give up or reorder slots:
                    // look each one up again.
                    if self.outcome.is_some() {
                        break;
                    }
                    if let Ok(slot) = self.slot_of(&provider) {
                        self.end_attempt(slot, provider, "timed out".into(), true, &mut out);
                    }
                }
            }
            Event::Cancel { at: _ } => {
                for p in self.running().copied().collect::<Vec<_>>() {
                    out.push(Action::Cancel { provider: p });
                }
                self.give_up(GiveUpReason::Cancelled, &mut out);
            }
        }
        Ok(out)
    }

    fn assigned(
        &mut self,
        provider: ProviderId,
        operator: OperatorId,
        trusted: bool,
        at: u64,
        out: &mut Vec<Action>,
    ) -> Result<(), UnitError> {
        if self
            .history
            .iter()
            .any(|&(p, o)| p == provider || o == operator)
        {
            return Err(UnitError::AlreadyRan(provider));
        }
        let slot = self
            .slots
            .iter()
            .position(|s| s.state == SlotState::Waiting)
            .ok_or(UnitError::NotWanted)?;
        let baseline = self.replicas_needed() - 1;
        if !self.assigned_once {
            self.relaxed = trusted;
            self.assigned_once = true;
        } else if !trusted {
            self.relaxed = false;
        }
        self.history.push((provider, operator));
        self.attempts += 1;
        let s = &mut self.slots[slot];
        s.attempts += 1;
        let (resume_from, lineage) = match &s.checkpoint {
            Some(c) => (Some(c.reference.clone()), c.lineage.clone()),
            None => (None, Vec::new()),
        };
        s.state = SlotState::Running {
            provider,
            operator,
            since: at,
            lineage,
        };
        self.wait = None;
        out.push(Action::Start {
            provider,
            resume_from,
        });
        // A relaxed unit drops its surplus waiting slots; an unrelaxed one
        // may need them back.
        self.settle(baseline, out);
        Ok(())
    }

    fn slot_of(&self, provider: &ProviderId) -> Result<usize, UnitError> {
        self.slots
            .iter()
            .position(
                |s| matches!(&s.state, SlotState::Running { provider: p, .. } if p == provider),
            )
            .ok_or(UnitError::NotRunning(*provider))
    }

    /// An attempt ended without a result.
    fn end_attempt(
        &mut self,
        slot: usize,
        provider: ProviderId,
        error: String,
        cancel: bool,
        out: &mut Vec<Action>,
    ) {
        if cancel {
            out.push(Action::Cancel { provider });
        }
        out.push(Action::Errored { provider });
        let baseline = self.replicas_needed();
        let s = &mut self.slots[slot];
        s.state = SlotState::Waiting;
        let attempts = s.attempts;
        self.last_error = Some(error.clone());
        if attempts >= self.max_attempts {
            for p in self.running().copied().collect::<Vec<_>>() {
                out.push(Action::Cancel { provider: p });
            }
            self.give_up(
                GiveUpReason::AttemptsExhausted {
                    attempts,
                    last_error: error,
                },
                out,
            );
            return;
        }
        self.settle(baseline, out);
    }

    /// Counts votes; finishes the unit or adjusts its slots.
    /// Emits [`Action::Schedule`] when more slots wait than `baseline`.
    fn settle(&mut self, baseline: u16, out: &mut Vec<Action>) {
        let votes: Vec<Vote> = self.votes().copied().collect();
        let verdict = validate::decide(&votes, self.quorum, self.relaxed);
        match verdict {
            Verdict::Agreed {
                output,
                winners,
                losers,
            } => {
                for p in self.running().copied().collect::<Vec<_>>() {
                    out.push(Action::Cancel { provider: p });
                }
                for s in &self.slots {
                    if let SlotState::Reported { vote, lineage, .. } = &s.state {
                        let won = winners.contains(&vote.provider);
                        let lost = losers.contains(&vote.provider);
                        for &p in lineage.iter().chain(std::iter::once(&vote.provider)) {
                            if won {
                                out.push(Action::Valid { provider: p });
                            } else if lost {
                                out.push(Action::Invalid { provider: p });
                            }
                        }
                    }
                }
                out.push(Action::Done {
                    output,
                    providers: winners.clone(),
                });
                self.outcome = Some(Outcome::Done {
                    output,
                    providers: winners,
                });
            }
            Verdict::Open { missing, distinct } => {
                if distinct > 1 {
                    // A disagreement: someone lies or errs; trust no one alone.
                    self.relaxed = false;
                }
                let missing = usize::from(missing);
                let active = |slots: &[Slot]| {
                    slots
                        .iter()
                        .filter(|s| !matches!(s.state, SlotState::Reported { .. }))
                        .count()
                };
                // Drop surplus waiting slots (a relaxed unit needs one run):
                // those without a checkpoint first, newest first.
                while active(&self.slots) > missing {
                    let waiting = |s: &Slot| s.state == SlotState::Waiting;
                    let surplus = self
                        .slots
                        .iter()
                        .rposition(|s| waiting(s) && s.checkpoint.is_none())
                        .or_else(|| self.slots.iter().rposition(waiting));
                    match surplus {
                        Some(i) => {
                            self.slots.remove(i);
                        }
                        None => break,
                    }
                }
                let cap = MAX_SLOTS.min(usize::from(self.quorum) * usize::from(self.max_attempts));
                while active(&self.slots) < missing && self.slots.len() < cap {
                    self.slots.push(Slot::new());
                }
                if active(&self.slots) < missing {
                    for p in self.running().copied().collect::<Vec<_>>() {
                        out.push(Action::Cancel { provider: p });
                    }
                    self.give_up(
                        GiveUpReason::NoQuorum {
                            results: votes.len(),
                            distinct,
                        },
                        out,
                    );
                    return;
                }
                let replicas_needed = self.replicas_needed();
                if replicas_needed > baseline {
                    out.push(Action::Schedule { replicas_needed });
                }
            }
        }
    }

    fn give_up(&mut self, reason: GiveUpReason, out: &mut Vec<Action>) {
        out.push(Action::GiveUp {
            reason: reason.clone(),
        });
        self.outcome = Some(Outcome::Failed(reason));
    }
}

impl Slot {
    fn new() -> Self {
        Self {
            attempts: 0,
            state: SlotState::Waiting,
            checkpoint: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::JobId;
    use crate::compute::validate::{Reliability, TrustPolicy, spot_check};
    use crate::keys::PublicKey;
    use proptest::prelude::*;
    use std::collections::HashMap;

    const HONEST: OutputHash = OutputHash([1; 32]);
    const WRONG: OutputHash = OutputHash([66; 32]);

    fn key(i: u8) -> PublicKey {
        PublicKey([i; 32])
    }

    fn spec(name: &str) -> UnitSpec {
        UnitSpec {
            id: UnitId::of(&JobId([7; 32]), name),
            name: name.into(),
            need: Need {
                memory_bytes: 64 << 20,
                fuel: None,
                estimate_secs: 0,
                deadline_secs: 0,
            },
            inputs: vec![],
        }
    }

    fn unit(quorum: u16, max_attempts: u16) -> Unit {
        Unit::new(spec("u1"), quorum, max_attempts, 600).unwrap()
    }

    fn assign(u: &mut Unit, p: u8, at: u64) -> Vec<Action> {
        u.handle(Event::Assigned {
            provider: key(p),
            operator: key(p),
            trusted: false,
            at,
        })
        .unwrap()
    }

    fn finish(u: &mut Unit, p: u8, output: OutputHash, at: u64) -> Vec<Action> {
        u.handle(Event::Finished {
            provider: key(p),
            output,
            fuel_used: 10,
            at,
        })
        .unwrap()
    }

    fn done(actions: &[Action]) -> Option<(OutputHash, Vec<ProviderId>)> {
        actions.iter().find_map(|a| match a {
            Action::Done { output, providers } => Some((*output, providers.clone())),
            _ => None,
        })
    }

    #[test]
    fn two_agreeing_replicas_finish_the_unit() {
        let mut u = unit(2, 3);
        assert_eq!(u.replicas_needed(), 2);
        assert_eq!(u.state(), UnitState::Waiting);
        let req = u.request(None).unwrap();
        assert_eq!((req.replicas, req.need.deadline_secs), (2, 600));
        assert_eq!(
            assign(&mut u, 1, 0),
            vec![Action::Start {
                provider: key(1),
                resume_from: None
            }]
        );
        assign(&mut u, 2, 0);
        assert_eq!(u.replicas_needed(), 0);
        assert!(u.request(None).is_none());
        assert_eq!(u.state(), UnitState::Running);
        assert_eq!(finish(&mut u, 1, HONEST, 10), vec![]);
        let a = finish(&mut u, 2, HONEST, 20);
        assert_eq!(done(&a), Some((HONEST, vec![key(1), key(2)])));
        assert!(a.contains(&Action::Valid { provider: key(1) }));
        assert!(a.contains(&Action::Valid { provider: key(2) }));
        assert_eq!(u.state(), UnitState::Done);
        assert_eq!(u.output(), Some(HONEST));
        let s = u.status();
        assert_eq!((s.attempts, s.results, s.fuel_used), (2, 2, 20));
        assert_eq!(s.output, Some(crate::hex(&HONEST.0)));
        assert_eq!(
            u.handle(Event::Tick { now: 10_000 }),
            Err(UnitError::Over(UnitState::Done))
        );
    }

    #[test]
    fn quorum_two_with_one_liar_needs_a_third_replica() {
        let mut u = unit(2, 3);
        assign(&mut u, 1, 0);
        assign(&mut u, 2, 0);
        finish(&mut u, 1, HONEST, 10);
        let a = finish(&mut u, 2, WRONG, 11);
        assert_eq!(a, vec![Action::Schedule { replicas_needed: 1 }]);
        assert_eq!(u.state(), UnitState::Validating);
        let req = u.request(None).unwrap();
        assert_eq!(req.exclude, vec![key(1), key(2)]);
        assign(&mut u, 3, 12);
        let a = finish(&mut u, 3, HONEST, 20);
        assert_eq!(done(&a), Some((HONEST, vec![key(1), key(3)])));
        assert!(a.contains(&Action::Invalid { provider: key(2) }));
        assert!(!a.contains(&Action::Valid { provider: key(2) }));
    }

    #[test]
    fn timeouts_reassign_until_attempts_run_out() {
        let mut u = unit(1, 2);
        assign(&mut u, 1, 100);
        assert_eq!(u.handle(Event::Tick { now: 699 }).unwrap(), vec![]);
        assert_eq!(
            u.handle(Event::Tick { now: 700 }).unwrap(),
            vec![
                Action::Cancel { provider: key(1) },
                Action::Errored { provider: key(1) },
                Action::Schedule { replicas_needed: 1 }
            ]
        );
        assert_eq!(u.status().error.as_deref(), Some("timed out"));
        // The late result of the cancelled run is refused.
        assert_eq!(
            u.handle(Event::Finished {
                provider: key(1),
                output: HONEST,
                fuel_used: 1,
                at: 701
            }),
            Err(UnitError::NotRunning(key(1)))
        );
        assign(&mut u, 2, 800);
        let a = u
            .handle(Event::Failed {
                provider: key(2),
                error: RunError::Other {
                    message: "the stdin object is missing".into(),
                },
                at: 900,
            })
            .unwrap();
        assert_eq!(
            a.last(),
            Some(&Action::GiveUp {
                reason: GiveUpReason::AttemptsExhausted {
                    attempts: 2,
                    last_error: "the stdin object is missing".into()
                }
            })
        );
        assert_eq!(u.state(), UnitState::Failed);
        assert!(
            u.status()
                .error
                .unwrap()
                .contains("stdin object is missing")
        );
        assert_eq!(u.replicas_needed(), 0);
    }

    #[test]
    fn a_reassigned_slot_resumes_from_its_own_checkpoint() {
        let mut u = unit(2, 3);
        assign(&mut u, 1, 0);
        assign(&mut u, 2, 0);
        let c1 = CheckpointRef("cairn:checkpoint-1".into());
        u.handle(Event::Checkpointed {
            provider: key(1),
            checkpoint: c1.clone(),
            at: 50,
        })
        .unwrap();
        assert_eq!(u.status().checkpoint_at, Some(50));
        let a = u
            .handle(Event::ProviderLost {
                provider: key(1),
                at: 60,
            })
            .unwrap();
        assert_eq!(
            a,
            vec![
                Action::Errored { provider: key(1) },
                Action::Schedule { replicas_needed: 1 }
            ]
        );
        assert_eq!(
            assign(&mut u, 3, 70),
            vec![Action::Start {
                provider: key(3),
                resume_from: Some(c1)
            }]
        );
        let a = finish(&mut u, 3, HONEST, 80);
        assert!(done(&a).is_none());
        let a = finish(&mut u, 2, HONEST, 90);
        assert_eq!(done(&a), Some((HONEST, vec![key(3), key(2)])));
        // The checkpoint maker's work was part of an accepted result.
        assert!(a.contains(&Action::Valid { provider: key(1) }));
    }

    #[test]
    fn a_bad_checkpoint_spoils_only_its_own_slot() {
        let mut u = unit(2, 3);
        assign(&mut u, 1, 0);
        assign(&mut u, 2, 0);
        u.handle(Event::Checkpointed {
            provider: key(1),
            checkpoint: CheckpointRef("cairn:forged".into()),
            at: 5,
        })
        .unwrap();
        u.handle(Event::ProviderLost {
            provider: key(1),
            at: 6,
        })
        .unwrap();
        // The honest provider 3 resumes the forged state and gets it wrong.
        assign(&mut u, 3, 7);
        finish(&mut u, 3, WRONG, 8);
        finish(&mut u, 2, HONEST, 9);
        // Slot 2's lineage never saw the forged checkpoint.
        let a = assign(&mut u, 4, 10);
        assert_eq!(
            a[0],
            Action::Start {
                provider: key(4),
                resume_from: None
            }
        );
        let a = finish(&mut u, 4, HONEST, 11);
        assert_eq!(done(&a), Some((HONEST, vec![key(2), key(4)])));
        assert!(a.contains(&Action::Invalid { provider: key(1) }));
        assert!(a.contains(&Action::Invalid { provider: key(3) }));
    }

    #[test]
    fn one_provider_or_operator_never_runs_a_unit_twice() {
        let mut u = unit(2, 3);
        assign(&mut u, 1, 0);
        let again = Event::Assigned {
            provider: key(1),
            operator: key(1),
            trusted: false,
            at: 1,
        };
        assert_eq!(u.handle(again), Err(UnitError::AlreadyRan(key(1))));
        let same_operator = Event::Assigned {
            provider: key(9),
            operator: key(1),
            trusted: false,
            at: 1,
        };
        assert_eq!(u.handle(same_operator), Err(UnitError::AlreadyRan(key(9))));
        assign(&mut u, 2, 0);
        assert_eq!(
            u.handle(Event::Assigned {
                provider: key(3),
                operator: key(3),
                trusted: false,
                at: 1
            }),
            Err(UnitError::NotWanted)
        );
        assert_eq!(u.status().providers.len(), 2);
    }

    #[test]
    fn disagreement_beyond_the_slot_cap_gives_up() {
        // quorum 2 × 1 attempt: two slots, no room for a third.
        let mut u = unit(2, 1);
        assign(&mut u, 1, 0);
        assign(&mut u, 2, 0);
        finish(&mut u, 1, HONEST, 1);
        let a = finish(&mut u, 2, WRONG, 2);
        assert_eq!(
            a,
            vec![Action::GiveUp {
                reason: GiveUpReason::NoQuorum {
                    results: 2,
                    distinct: 2
                }
            }]
        );
    }

    #[test]
    fn state_survives_a_restart() {
        let mut u = unit(2, 3);
        assign(&mut u, 1, 0);
        u.handle(Event::Checkpointed {
            provider: key(1),
            checkpoint: CheckpointRef("cairn:c".into()),
            at: 3,
        })
        .unwrap();
        finish(&mut u, 1, HONEST, 5);
        let bytes = postcard::to_allocvec(&u).unwrap();
        let mut back: Unit = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, u);
        assign(&mut back, 2, 6);
        assert!(done(&finish(&mut back, 2, HONEST, 7)).is_some());
        let mut bad = u.clone();
        bad.version = 9;
        assert!(postcard::from_bytes::<Unit>(&postcard::to_allocvec(&bad).unwrap()).is_err());
        let mut bad = u.clone();
        bad.slots[0].attempts = 50;
        assert!(postcard::from_bytes::<Unit>(&postcard::to_allocvec(&bad).unwrap()).is_err());
    }

    #[test]
    fn a_deterministic_error_on_a_quorum_fails_the_unit_at_once() {
        let mut u = unit(2, 3);
        assign(&mut u, 1, 0);
        assign(&mut u, 2, 0);
        let fail = |u: &mut Unit, p, error| {
            u.handle(Event::Failed {
                provider: key(p),
                error,
                at: 1,
            })
            .unwrap()
        };
        let a = fail(&mut u, 1, RunError::OutOfFuel);
        assert!(a.contains(&Action::Schedule { replicas_needed: 1 }));
        // A different error does not agree with it.
        let a = fail(&mut u, 2, RunError::Exit { code: 3 });
        assert!(a.contains(&Action::Schedule { replicas_needed: 2 }));
        assign(&mut u, 3, 2);
        assign(&mut u, 4, 2);
        // A wall-clock error is not evidence about the unit.
        fail(&mut u, 4, RunError::TimeLimit);
        let a = fail(&mut u, 3, RunError::OutOfFuel);
        assert_eq!(
            a.last(),
            Some(&Action::GiveUp {
                reason: GiveUpReason::UnitFails {
                    error: RunError::OutOfFuel,
                    providers: 2
                }
            })
        );
        assert!(u.status().error.unwrap().contains("fuel (raise `fuel`"));
    }

    #[test]
    fn cancel_stops_every_run() {
        let mut u = unit(2, 3);
        assign(&mut u, 1, 0);
        let a = u.handle(Event::Cancel { at: 1 }).unwrap();
        assert_eq!(
            a,
            vec![
                Action::Cancel { provider: key(1) },
                Action::GiveUp {
                    reason: GiveUpReason::Cancelled
                }
            ]
        );
        assert_eq!(u.status().state, UnitState::Failed);
        assert!(
            u.status().running.is_empty(),
            "a cancelled unit runs nowhere"
        );
    }

    #[test]
    fn settings_are_bounded() {
        assert!(Unit::new(spec("u"), 0, 3, 600).is_err());
        assert!(Unit::new(spec("u"), MAX_QUORUM + 1, 3, 600).is_err());
        assert!(Unit::new(spec("u"), 2, 0, 600).is_err());
        assert!(Unit::new(spec("u"), 2, MAX_ATTEMPTS + 1, 600).is_err());
        assert!(Unit::new(spec("u"), 2, 3, 0).is_err());
        let long = RunError::Trap {
            message: "é".repeat(1000),
        }
        .bounded();
        assert!(long.to_string().len() < MAX_ERROR_LEN + 40);
    }

    #[test]
    fn trusted_first_replica_runs_alone() {
        let mut u = unit(2, 3);
        let a = u
            .handle(Event::Assigned {
                provider: key(1),
                operator: key(1),
                trusted: true,
                at: 0,
            })
            .unwrap();
        assert_eq!(a.len(), 1, "no more replicas wanted: {a:?}");
        assert_eq!(u.replicas_needed(), 0);
        assert_eq!(u.status().quorum, 1);
        let a = finish(&mut u, 1, HONEST, 5);
        assert_eq!(done(&a), Some((HONEST, vec![key(1)])));
    }

    #[test]
    fn an_untrusted_reassignment_restores_the_quorum() {
        let mut u = unit(2, 3);
        u.handle(Event::Assigned {
            provider: key(1),
            operator: key(1),
            trusted: true,
            at: 0,
        })
        .unwrap();
        u.handle(Event::ProviderLost {
            provider: key(1),
            at: 1,
        })
        .unwrap();
        assert_eq!(u.replicas_needed(), 1);
        let a = assign(&mut u, 2, 2);
        assert!(a.contains(&Action::Schedule { replicas_needed: 1 }));
        assert_eq!(u.status().quorum, 2);
        assert!(done(&finish(&mut u, 2, HONEST, 3)).is_none());
    }

    /// A small network run unit after unit with adaptive replication: honest
    /// trusted providers cut replicas to about 1.1 a unit; a trusted
    /// provider that turns bad is caught by a spot check, loses its trust,
    /// and from then on cannot get a wrong output accepted.
    #[test]
    fn adaptive_replication_with_spot_checks() {
        let policy = TrustPolicy::default();
        let secret = [3u8; 32];
        let mut rel: HashMap<PublicKey, Reliability> = HashMap::new();
        let trusted_run = Reliability {
            consecutive_valid: 50,
            ..Reliability::default()
        };
        for p in 1..=4 {
            rel.insert(key(p), trusted_run.clone());
        }
        // Runs unit `i`, first replica on `first`; provider 1 lies when `bad`.
        let run = |i: u32, first: u8, bad: bool, rel: &mut HashMap<PublicKey, Reliability>| {
            let mut u = Unit::new(spec(&format!("u{i}")), 2, 3, 600).unwrap();
            let spot = spot_check(&secret, &u.spec().id, policy.spot_check_percent);
            let mut providers = vec![first];
            providers.extend((1..=4).filter(|&p| p != first));
            let mut replicas = 0;
            let mut actions = Vec::new();
            for p in providers {
                if u.replicas_needed() == 0 {
                    break;
                }
                let trusted = rel[&key(p)].is_trusted(&policy) && !spot;
                actions.extend(
                    u.handle(Event::Assigned {
                        provider: key(p),
                        operator: key(p),
                        trusted,
                        at: 0,
                    })
                    .unwrap(),
                );
                replicas += 1;
                let out = if bad && p == 1 { WRONG } else { HONEST };
                actions.extend(finish(&mut u, p, out, 1));
            }
            for a in &actions {
                match a {
                    Action::Valid { provider } => rel.get_mut(provider).unwrap().record_valid(),
                    Action::Invalid { provider } => rel.get_mut(provider).unwrap().record_invalid(),
                    _ => {}
                }
            }
            (u.output(), replicas)
        };
        let mut total = 0;
        for i in 0..200 {
            let (out, replicas) = run(i, 1 + (i % 4) as u8, false, &mut rel);
            assert_eq!(out, Some(HONEST));
            total += replicas;
        }
        assert!(total < 200 * 13 / 10, "{total} replicas for 200 units");
        // Provider 1 turns bad and always gets the first replica.
        let mut accepted_wrong = 0;
        let mut caught_at = None;
        for i in 200..400 {
            let (out, _) = run(i, 1, true, &mut rel);
            assert!(out.is_some());
            if out == Some(WRONG) {
                accepted_wrong += 1;
                assert!(
                    caught_at.is_none(),
                    "a wrong output after the liar was caught"
                );
            }
            if caught_at.is_none() && !rel[&key(1)].is_trusted(&policy) {
                caught_at = Some(i);
            }
        }
        let caught_at = caught_at.expect("the spot checks never caught the liar");
        assert!(caught_at < 260, "caught only at unit {caught_at}");
        assert_eq!(accepted_wrong, caught_at - 200);
        assert_eq!(rel[&key(1)].invalid, 200 - accepted_wrong as u64);
    }

    #[derive(Clone, Debug)]
    enum Step {
        Assign(u8, bool),
        Finish(u8),
        Fail(u8),
        Lose(u8),
        Checkpoint(u8),
        Tick(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0u8..10, any::<bool>()).prop_map(|(p, t)| Step::Assign(p, t)),
            3 => (0u8..10).prop_map(Step::Finish),
            1 => (0u8..10).prop_map(Step::Fail),
            1 => (0u8..10).prop_map(Step::Lose),
            1 => (0u8..10).prop_map(Step::Checkpoint),
            1 => (0u64..1000).prop_map(Step::Tick),
        ]
    }

    proptest! {
        /// Whatever happens, in any order: state stays bounded, no provider
        /// or operator runs the unit twice, and with fewer colluding liars
        /// than the quorum a wrong output is never accepted, even when
        /// honest providers are trusted with single replicas.
        #[test]
        fn unit_invariants(
            quorum in 1u16..4,
            max_attempts in 1u16..4,
            liars in 0u8..3,
            steps in prop::collection::vec(step(), 0..80),
        ) {
            let mut u = unit(quorum, max_attempts);
            let mut now = 0;
            // Liars are the even providers below 2 × liars, one per operator
            // pair (operator = 100 + p / 2).
            let is_liar = |p: u8| p < liars * 2 && p.is_multiple_of(2);
            for s in steps {
                let event = match s {
                    // Providers 0..10; operators pair them up (p / 2), so
                    // operator collisions happen.
                    Step::Assign(p, trusted) => Event::Assigned {
                        provider: key(p),
                        operator: key(100 + p / 2),
                        // Only honest providers earn trust.
                        trusted: trusted && !is_liar(p),
                        at: now,
                    },
                    Step::Finish(p) => Event::Finished {
                        provider: key(p),
                        output: if is_liar(p) { WRONG } else { HONEST },
                        fuel_used: 1,
                        at: now,
                    },
                    Step::Fail(p) => Event::Failed { provider: key(p), error: RunError::OutOfMemory, at: now },
                    Step::Lose(p) => Event::ProviderLost { provider: key(p), at: now },
                    Step::Checkpoint(p) => Event::Checkpointed {
                        provider: key(p),
                        checkpoint: CheckpointRef(format!("cairn:c{p}")),
                        at: now,
                    },
                    Step::Tick(dt) => {
                        now += dt;
                        Event::Tick { now }
                    }
                };
                let before = u.clone();
                match u.handle(event) {
                    Ok(actions) => {
                        for a in &actions {
                            if let Action::Done { output, providers } = a {
                                let needed = if u.relaxed { 1 } else { usize::from(quorum) };
                                prop_assert!(providers.len() >= needed);
                                if liars < quorum.min(u8::MAX as u16) as u8 {
                                    prop_assert_eq!(*output, HONEST);
                                }
                            }
                        }
                    }
                    // A refused event changes nothing.
                    Err(_) => prop_assert_eq!(&u, &before),
                }
                prop_assert!(u.slots.len() <= MAX_SLOTS);
                prop_assert!(u.slots.len() <= usize::from(quorum) * usize::from(max_attempts));
                prop_assert!(u.slots.iter().all(|s| s.attempts <= max_attempts));
                let mut seen_p = std::collections::HashSet::new();
                let mut seen_o = std::collections::HashSet::new();
                for (p, o) in &u.history {
                    prop_assert!(seen_p.insert(*p));
                    prop_assert!(seen_o.insert(*o));
                }
                let st = u.status();
                prop_assert_eq!(st.state, u.state());
                prop_assert_eq!(st.providers.len(), u.history.len());
            }
        }
    }
}
