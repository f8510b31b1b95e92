//! What a scheduler and a provider tell each other on the compute lane
//! (`/cairn/compute/1`): the provider's [`Advert`], one attempt of a unit
//! ([`Task`]) and what became of it ([`Report`]).
//!
//! All three are postcard-encoded with a version and checked on arrival
//! ([`Task::validate`], [`Report::validate`], [`Advert::validate`]): a
//! peer's message is untrusted. A task carries read capabilities (the
//! module, the unit's stdin, the checkpoint to resume from): the provider
//! must read them to run the unit, which is what a submitter hands over by
//! submitting. A report carries the capabilities of what the provider
//! stored (its output, a checkpoint).
//!
//! A task carries no attempt number: the unit state machine never runs a
//! unit twice on one provider, so the pair (unit, provider) names an
//! attempt, and the provider is the authenticated peer of the connection.

use serde::{Deserialize, Serialize};

use super::job::{MAX_ARG_LEN, MAX_ARGS, MAX_ENV, MAX_ENV_LEN, MAX_MEMORY, MAX_UNIT_NAME};
use super::resources::{Need, Offer};
use super::unit::{MAX_ERROR_LEN, RunError};
use super::{CheckpointRef, JobId, OperatorId, OutputHash, UnitId};
use crate::ReadCap;

/// Format version of [`Task`], [`Report`] and [`Advert`].
pub const TASK_VERSION: u16 = 1;
/// Most output files one unit may report (with `output_dir`).
pub const MAX_OUTPUT_FILES: usize = 256;
/// Longest output file name (a path relative to the output dir).
pub const MAX_OUTPUT_NAME: usize = 255;
/// Largest output carried in a report itself instead of stored as an
/// object: small outputs (most units' answers) cost no put and no get.
pub const MAX_INLINE: usize = 4096;

/// An output's bytes: in the report, or stored as a Cairn object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Blob {
    /// The bytes themselves (at most [`MAX_INLINE`]).
    Inline(Vec<u8>),
    /// The read capability of the object holding them.
    Stored(String),
}

impl Blob {
    fn validate(&self, what: &str) -> Result<(), TaskError> {
        match self {
            Blob::Inline(b) if b.len() > MAX_INLINE => Err(TaskError::Invalid(format!(
                "{what} of {} bytes inline (at most {MAX_INLINE})",
                b.len()
            ))),
            Blob::Inline(_) => Ok(()),
            Blob::Stored(cap) => check_cap(what, cap),
        }
    }
}

/// One attempt of one unit, as the scheduler sends it to a provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// [`TASK_VERSION`].
    pub version: u16,
    /// The job.
    pub job: JobId,
    /// The unit ([`UnitId::of`] the job and `name`).
    pub unit: UnitId,
    /// The unit's name (argv\[0\] of the program).
    pub name: String,
    /// The module's read capability.
    pub module: String,
    /// Arguments after the program name.
    pub args: Vec<String>,
    /// The whole environment.
    pub env: Vec<(String, String)>,
    /// The stdin object's read capability, if any.
    pub stdin: Option<String>,
    /// Limits of the attempt.
    pub need: Need,
    /// Collect the files the unit writes under `/out`.
    pub output_dir: bool,
    /// The checkpoint to resume from.
    pub resume_from: Option<CheckpointRef>,
}

/// A message on the compute lane is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// A version this build does not read.
    #[error(
        "compute message format version {0} is not supported (this build reads {TASK_VERSION})"
    )]
    Version(u16),
    /// A field is out of bounds or malformed.
    #[error("{0}")]
    Invalid(String),
}

fn check_cap(what: &str, cap: &str) -> Result<(), TaskError> {
    cap.parse::<ReadCap>()
        .map(|_| ())
        .map_err(|e| TaskError::Invalid(format!("{what} is not a read capability: {e}")))
}

impl Task {
    /// The randomness every replica of the unit gets: the same on every
    /// provider, so honest replicas agree, and different per unit.
    pub fn seed(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key("cairn v1 compute unit seed");
        h.update(&self.unit.0);
        *h.finalize().as_bytes()
    }

    /// Checks every bound (a task from the network is untrusted).
    pub fn validate(&self) -> Result<(), TaskError> {
        if self.version != TASK_VERSION {
            return Err(TaskError::Version(self.version));
        }
        let bad = |m: String| Err(TaskError::Invalid(m));
        if self.name.is_empty() || self.name.len() > MAX_UNIT_NAME || self.name.contains('\0') {
            return bad(format!("unit name of {} bytes", self.name.len()));
        }
        if UnitId::of(&self.job, &self.name) != self.unit {
            return bad("the unit id is not the job's unit of that name".into());
        }
        if self.args.len() > MAX_ARGS
            || self
                .args
                .iter()
                .any(|a| a.len() > MAX_ARG_LEN || a.contains('\0'))
        {
            return bad("too many or too long arguments".into());
        }
        if self.env.len() > MAX_ENV
            || self.env.iter().any(|(k, v)| {
                k.is_empty()
                    || k.len() + v.len() > MAX_ENV_LEN
                    || k.contains(['=', '\0'])
                    || v.contains('\0')
            })
        {
            return bad("too many or malformed environment entries".into());
        }
        if self.need.memory_bytes == 0 || self.need.memory_bytes > MAX_MEMORY {
            return bad(format!("memory limit of {} bytes", self.need.memory_bytes));
        }
        if self.need.deadline_secs == 0 || self.need.deadline_secs > super::job::MAX_DEADLINE_SECS {
            return bad(format!("deadline of {} s", self.need.deadline_secs));
        }
        check_cap("module", &self.module)?;
        if let Some(s) = &self.stdin {
            check_cap("stdin", s)?;
        }
        if let Some(c) = &self.resume_from {
            check_cap("checkpoint", &c.0)?;
        }
        Ok(())
    }
}

/// What became of an attempt, as the provider tells its scheduler.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Report {
    /// The unit stored a checkpoint.
    Checkpointed {
        /// Where.
        checkpoint: CheckpointRef,
    },
    /// The unit finished.
    Finished {
        /// Hash of its output (see `cairn-compute`): replicas are compared
        /// by it.
        output: OutputHash,
        /// Its stdout.
        stdout: Blob,
        /// Output files (name relative to `/out`), sorted.
        files: Vec<(String, Blob)>,
        /// Fuel it used.
        fuel_used: u64,
    },
    /// The attempt failed.
    Failed {
        /// Why.
        error: RunError,
    },
}

impl Report {
    /// Checks every bound.
    pub fn validate(&self) -> Result<(), TaskError> {
        match self {
            Report::Checkpointed { checkpoint } => check_cap("checkpoint", &checkpoint.0),
            Report::Finished { stdout, files, .. } => {
                stdout.validate("stdout")?;
                if files.len() > MAX_OUTPUT_FILES {
                    return Err(TaskError::Invalid(format!("{} output files", files.len())));
                }
                for (name, cap) in files {
                    if name.is_empty()
                        || name.len() > MAX_OUTPUT_NAME
                        || name.starts_with('/')
                        || name
                            .split('/')
                            .any(|c| c.is_empty() || c == "." || c == "..")
                    {
                        return Err(TaskError::Invalid(format!("output file name {name:?}")));
                    }
                    cap.validate("output file")?;
                }
                Ok(())
            }
            Report::Failed { error } => match error {
                RunError::Trap { message } | RunError::Other { message }
                    if message.len() > MAX_ERROR_LEN + 4 =>
                {
                    Err(TaskError::Invalid("error message too long".into()))
                }
                _ => Ok(()),
            },
        }
    }
}

/// What a provider tells a scheduler that asks: its offer and its load.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advert {
    /// [`TASK_VERSION`].
    pub version: u16,
    /// Who operates it (a node without an account: its own key).
    pub operator: OperatorId,
    /// What it offers.
    pub offer: Offer,
    /// Units running on it now.
    pub running: u16,
    /// Memory those units hold.
    pub memory_in_use: u64,
    /// Whether its machine is otherwise idle now.
    pub idle: bool,
}

impl Advert {
    /// Checks the version and the offer's bounds.
    pub fn validate(&self) -> Result<(), TaskError> {
        if self.version != TASK_VERSION {
            return Err(TaskError::Version(self.version));
        }
        self.offer
            .validate()
            .map_err(|e| TaskError::Invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::window::Schedule;

    fn cap(b: u8) -> String {
        ReadCap {
            key: crate::FileKey([b; 32]),
            manifest: crate::ManifestId([b; 32]),
        }
        .to_string()
    }

    fn task() -> Task {
        let job = JobId([1; 32]);
        Task {
            version: TASK_VERSION,
            job,
            unit: UnitId::of(&job, "u1"),
            name: "u1".into(),
            module: cap(1),
            args: vec!["--size".into(), "10".into()],
            env: vec![("A".into(), "b".into())],
            stdin: Some(cap(2)),
            need: Need {
                memory_bytes: 64 << 20,
                fuel: None,
                estimate_secs: 0,
                deadline_secs: 600,
            },
            output_dir: false,
            resume_from: None,
        }
    }

    #[test]
    fn a_good_task_round_trips_and_validates() {
        let t = task();
        t.validate().unwrap();
        let bytes = postcard::to_allocvec(&t).unwrap();
        assert_eq!(postcard::from_bytes::<Task>(&bytes).unwrap(), t);
    }

    #[test]
    fn bad_tasks_are_refused_with_the_field_named() {
        let mut t = task();
        t.version = 9;
        assert_eq!(t.validate(), Err(TaskError::Version(9)));
        let mut t = task();
        t.name = "u2".into();
        assert!(t.validate().unwrap_err().to_string().contains("unit id"));
        let mut t = task();
        t.module = "cairn:nonsense".into();
        assert!(t.validate().unwrap_err().to_string().contains("module"));
        let mut t = task();
        t.stdin = Some("x".into());
        assert!(t.validate().unwrap_err().to_string().contains("stdin"));
        let mut t = task();
        t.args = vec!["a\0b".into()];
        assert!(t.validate().is_err());
        let mut t = task();
        t.env = vec![("A=B".into(), "c".into())];
        assert!(t.validate().is_err());
        let mut t = task();
        t.need.memory_bytes = MAX_MEMORY + 1;
        assert!(t.validate().unwrap_err().to_string().contains("memory"));
        let mut t = task();
        t.need.deadline_secs = 0;
        assert!(t.validate().unwrap_err().to_string().contains("deadline"));
    }

    #[test]
    fn the_seed_is_per_unit_not_per_provider() {
        let a = task();
        let mut b = task();
        b.module = cap(3);
        assert_eq!(a.seed(), b.seed());
        let mut c = task();
        c.name = "u2".into();
        c.unit = UnitId::of(&c.job, "u2");
        assert_ne!(a.seed(), c.seed());
    }

    #[test]
    fn reports_with_bad_names_or_caps_are_refused() {
        let ok = |files: Vec<(String, Blob)>| Report::Finished {
            output: OutputHash([0; 32]),
            stdout: Blob::Stored(cap(1)),
            files,
            fuel_used: 1,
        };
        let stored = |b| Blob::Stored(cap(b));
        ok(vec![("a/b.txt".into(), stored(2))]).validate().unwrap();
        ok(vec![("a".into(), Blob::Inline(vec![1; MAX_INLINE]))])
            .validate()
            .unwrap();
        assert!(
            ok(vec![("a".into(), Blob::Inline(vec![1; MAX_INLINE + 1]))])
                .validate()
                .is_err()
        );
        for name in ["", "/etc/passwd", "../x", "a//b", "a/./b"] {
            assert!(
                ok(vec![(name.into(), stored(2))]).validate().is_err(),
                "{name}"
            );
        }
        assert!(
            ok(vec![("a".into(), Blob::Stored("nope".into()))])
                .validate()
                .is_err()
        );
        let many = (0..=MAX_OUTPUT_FILES)
            .map(|i| (format!("f{i}"), stored(2)))
            .collect();
        assert!(ok(many).validate().is_err());
        let long = Report::Failed {
            error: RunError::Trap {
                message: "x".repeat(10_000),
            },
        };
        assert!(long.validate().is_err());
    }

    #[test]
    fn adverts_check_their_offer() {
        let mut a = Advert {
            version: TASK_VERSION,
            operator: crate::keys::PublicKey([1; 32]),
            offer: Offer::new(2, 1 << 30, Schedule::always()).unwrap(),
            running: 0,
            memory_in_use: 0,
            idle: true,
        };
        a.validate().unwrap();
        a.offer.cpus = 0;
        assert!(a.validate().is_err());
        a.offer.cpus = 1;
        a.version = 2;
        assert_eq!(a.validate(), Err(TaskError::Version(2)));
    }
}
