//! Job descriptions: the job file's shape, its validation, and the job-wide
//! status.
//!
//! The binary reads a TOML job file into [`JobFile`] (serde; unknown keys
//! are refused so a typo is an error, not a silent default) and calls
//! [`JobFile::validate`], which checks every limit and turns text sizes and
//! durations into numbers: the result, [`Job`], is what is stored and sent
//! (postcard, with a `version`). The core does not parse TOML itself; the
//! tests do, with the `toml` crate as a dev-dependency, so the shape below
//! is the one users write:
//!
//! ```toml
//! module = "prog.wasm"        # a path (relative to the job file) or a cairn: capability
//! quorum = 2                  # distinct providers that must agree (default 2, 1..=8)
//! max_attempts = 3            # attempts per replica (default 3, 1..=10)
//! deadline = "10m"            # wall clock per attempt (default 10m, 1s..=7d)
//! memory = "64MiB"            # memory limit per unit (default 64MiB, 64KiB..=4GiB)
//! fuel = 1_000_000_000        # optional fuel limit per attempt
//! estimate = "2m"             # optional expected run time, to fit windows
//! output_dir = true           # also collect files the unit writes under /out (default false)
//! adaptive = false            # adaptive replication for trusted providers (default false)
//! [env]                       # environment for every unit
//! MODE = "fast"
//! [[unit]]
//! name = "u1"                 # 1..=64 of A-Z a-z 0-9 . _ -, not starting with '.'; unique
//! args = ["--size", "10"]
//! stdin = "data/part1.txt"    # optional: a path or a cairn: capability
//! env = { SEED = "1" }        # optional, overrides the job's env
//! ```
//!
//! Unit names become file names (`DIR/<unit>.out`), so they cannot contain
//! a path separator or start with a dot. Arguments and environment entries
//! are C strings in WASI, so they cannot contain NUL.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::resources::{Need, QuantityError, parse_duration, parse_size};
use super::unit::{MAX_ATTEMPTS, MAX_QUORUM, Unit, UnitSpec, UnitState, UnitStatus};
use super::validate::TrustPolicy;
use super::{JobId, UnitId};

/// Format version of a serialized [`Job`].
pub const JOB_VERSION: u16 = 1;
/// Most units in one job.
pub const MAX_UNITS: usize = 10_000;
/// Most arguments per unit.
pub const MAX_ARGS: usize = 256;
/// Longest argument, in bytes.
pub const MAX_ARG_LEN: usize = 4096;
/// Most environment entries (job and unit together).
pub const MAX_ENV: usize = 64;
/// Longest environment key or value, in bytes.
pub const MAX_ENV_LEN: usize = 4096;
/// Longest module or stdin path or capability, in bytes.
pub const MAX_SOURCE_LEN: usize = 4096;
/// Longest unit name, in bytes.
pub const MAX_UNIT_NAME: usize = super::unit::MAX_NAME_LEN;
/// Smallest memory limit: one wasm page.
pub const MIN_MEMORY: u64 = 64 << 10;
/// Largest memory limit: the wasm32 address space.
pub const MAX_MEMORY: u64 = 4 << 30;
/// Longest per-attempt deadline: 7 days.
pub const MAX_DEADLINE_SECS: u64 = 7 * 86_400;
/// Most bytes of names, arguments, environments and sources in one job, so
/// a stored job stays small whatever the per-unit limits multiply to.
pub const MAX_JOB_BYTES: usize = 16 << 20;

fn default_quorum() -> u16 {
    2
}
fn default_max_attempts() -> u16 {
    3
}
fn default_deadline() -> String {
    "10m".into()
}
fn default_memory() -> String {
    "64MiB".into()
}

/// The job file as written (see the module docs for the shape).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    /// The WebAssembly module: a path or a `cairn:` capability.
    pub module: String,
    /// Distinct providers that must agree on each unit's output.
    #[serde(default = "default_quorum")]
    pub quorum: u16,
    /// Attempts per replica slot.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u16,
    /// Wall-clock limit of one attempt, like `10m`.
    #[serde(default = "default_deadline")]
    pub deadline: String,
    /// Memory limit of one unit, like `64MiB`.
    #[serde(default = "default_memory")]
    pub memory: String,
    /// Fuel limit of one attempt.
    #[serde(default)]
    pub fuel: Option<u64>,
    /// Expected run time of one unit, like `2m`.
    #[serde(default)]
    pub estimate: Option<String>,
    /// Collect the files units write under their output dir.
    #[serde(default)]
    pub output_dir: bool,
    /// Adaptive replication (trusted providers run units alone, spot-checked).
    #[serde(default)]
    pub adaptive: bool,
    /// Environment for every unit.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The units.
    #[serde(default, rename = "unit")]
    pub units: Vec<UnitFile>,
}

/// One `[[unit]]` of a job file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitFile {
    /// Its name, unique in the job.
    pub name: String,
    /// Its arguments (after the program name).
    #[serde(default)]
    pub args: Vec<String>,
    /// Its stdin: a path or a `cairn:` capability.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Environment entries that override the job's.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// Where bytes come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// A local path, relative to the job file (the CLI uploads it).
    Path(String),
    /// A stored object, by its read capability (checked, in canonical
    /// text form).
    Cap(String),
}

/// A validated job: what is stored and sent. Deserializing checks the
/// version and validates again (a job from the network is untrusted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StoredJob")]
pub struct Job {
    /// Format version, [`JOB_VERSION`].
    pub version: u16,
    /// The module.
    pub module: Source,
    /// Distinct providers that must agree.
    pub quorum: u16,
    /// Attempts per replica slot.
    pub max_attempts: u16,
    /// Wall-clock limit of one attempt, in seconds.
    pub deadline_secs: u64,
    /// Memory limit of one unit.
    pub memory_bytes: u64,
    /// Fuel limit of one attempt.
    pub fuel: Option<u64>,
    /// Expected run time, in seconds (0 if not given).
    pub estimate_secs: u64,
    /// Collect output dirs.
    pub output_dir: bool,
    /// Adaptive replication.
    pub adaptive: bool,
    /// The units, in file order.
    pub units: Vec<JobUnit>,
}

/// [`Job`] as it arrives, before it is checked.
#[derive(Deserialize)]
struct StoredJob {
    version: u16,
    module: Source,
    quorum: u16,
    max_attempts: u16,
    deadline_secs: u64,
    memory_bytes: u64,
    fuel: Option<u64>,
    estimate_secs: u64,
    output_dir: bool,
    adaptive: bool,
    units: Vec<JobUnit>,
}

impl TryFrom<StoredJob> for Job {
    type Error = JobError;

    fn try_from(s: StoredJob) -> Result<Self, JobError> {
        if s.version != JOB_VERSION {
            return Err(JobError::Version(s.version));
        }
        let job = Job {
            version: s.version,
            module: s.module,
            quorum: s.quorum,
            max_attempts: s.max_attempts,
            deadline_secs: s.deadline_secs,
            memory_bytes: s.memory_bytes,
            fuel: s.fuel,
            estimate_secs: s.estimate_secs,
            output_dir: s.output_dir,
            adaptive: s.adaptive,
            units: s.units,
        };
        // One set of rules: a stored job must be what validating its own
        // file form gives back.
        if job.to_file().validate()? != job {
            return Err(JobError::NotCanonical);
        }
        Ok(job)
    }
}

/// A validated unit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobUnit {
    /// Its name.
    pub name: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its stdin, if any.
    pub stdin: Option<Source>,
    /// Its whole environment (the job's, overridden by the unit's), sorted.
    pub env: Vec<(String, String)>,
}

/// A job file is not acceptable. Each variant names the field and, for a
/// unit, the unit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// `module` is empty or too long.
    #[error("`module` must name a .wasm file or a cairn: capability")]
    Module,
    /// A source is not a usable path or capability.
    #[error("{field} {value:?}: {why}")]
    Source {
        /// `module` or `unit <name>: stdin`.
        field: String,
        /// The value (cut).
        value: String,
        /// What is wrong.
        why: String,
    },
    /// `quorum` out of range.
    #[error("`quorum` is {0}; it must be 1 to {MAX_QUORUM}")]
    Quorum(u16),
    /// `max_attempts` out of range.
    #[error("`max_attempts` is {0}; it must be 1 to {MAX_ATTEMPTS}")]
    MaxAttempts(u16),
    /// A duration field does not parse or is out of range.
    #[error("`{field}`: {why}")]
    Duration {
        /// The field.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
    /// `memory` does not parse or is out of range.
    #[error("`memory`: {0}")]
    Memory(String),
    /// `fuel` is zero.
    #[error("`fuel` must be positive (leave it out for no fuel limit)")]
    Fuel,
    /// No `[[unit]]`.
    #[error("the job has no units: add at least one [[unit]] with a name")]
    NoUnits,
    /// Too many units.
    #[error("the job has {0} units; at most {MAX_UNITS} are accepted (split it into several jobs)")]
    TooManyUnits(usize),
    /// A unit name is not usable.
    #[error("unit name {name:?}: {why}")]
    UnitName {
        /// The name.
        name: String,
        /// What is wrong.
        why: &'static str,
    },
    /// Two units share a name.
    #[error("two units are named {0:?}; unit names must be unique")]
    DuplicateUnit(String),
    /// A unit's arguments are not acceptable.
    #[error("unit {unit:?}: {why}")]
    Args {
        /// The unit.
        unit: String,
        /// What is wrong.
        why: String,
    },
    /// An environment entry is not acceptable.
    #[error("{scope} env {key:?}: {why}")]
    Env {
        /// `job` or `unit <name>`.
        scope: String,
        /// The key (cut).
        key: String,
        /// What is wrong.
        why: &'static str,
    },
    /// The estimate is longer than the deadline.
    #[error(
        "`estimate` ({estimate}s) is longer than `deadline` ({deadline}s): every attempt would time out"
    )]
    EstimatePastDeadline {
        /// The estimate, in seconds.
        estimate: u64,
        /// The deadline, in seconds.
        deadline: u64,
    },
    /// The job's text adds up to more than [`MAX_JOB_BYTES`].
    #[error(
        "the job's names, arguments, environments and inputs add up to more than 16 MiB; split it into several jobs"
    )]
    TooLarge,
    /// A stored or received job has a format this build does not read.
    #[error("job format version {0} is not supported (this build reads {JOB_VERSION})")]
    Version(u16),
    /// A stored or received job is not in the form validation produces
    /// (unsorted or duplicate environment entries, a path that reads as a
    /// capability).
    #[error("the job is not in canonical form")]
    NotCanonical,
}

fn cut(s: &str) -> String {
    s.chars().take(80).collect()
}

fn source(field: String, text: &str) -> Result<Source, JobError> {
    let err = |why: String| JobError::Source {
        field: field.clone(),
        value: cut(text),
        why,
    };
    if text.trim().is_empty() {
        return Err(err("is empty".into()));
    }
    if text.len() > MAX_SOURCE_LEN {
        return Err(err(format!("is longer than {MAX_SOURCE_LEN} bytes")));
    }
    if text.contains('\0') {
        return Err(err("contains a NUL byte".into()));
    }
    if text.starts_with("cairn:") {
        let cap = text
            .parse::<crate::ReadCap>()
            .map_err(|e| err(format!("is not a valid capability ({e})")))?;
        return Ok(Source::Cap(cap.to_string()));
    }
    Ok(Source::Path(text.to_string()))
}

fn check_env(scope: &str, env: &BTreeMap<String, String>) -> Result<(), JobError> {
    for (k, v) in env {
        let err = |why| JobError::Env {
            scope: scope.to_string(),
            key: cut(k),
            why,
        };
        if k.is_empty() {
            return Err(err("the key is empty"));
        }
        if k.contains('=') || k.contains('\0') {
            return Err(err("keys cannot contain '=' or NUL"));
        }
        if v.contains('\0') {
            return Err(err("values cannot contain NUL"));
        }
        if k.len() > MAX_ENV_LEN || v.len() > MAX_ENV_LEN {
            return Err(err("keys and values are at most 4096 bytes"));
        }
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), JobError> {
    let err = |why| JobError::UnitName {
        name: cut(name),
        why,
    };
    if name.is_empty() || name.len() > MAX_UNIT_NAME {
        return Err(err("a name is 1 to 64 bytes"));
    }
    if name.starts_with('.') {
        return Err(err("a name cannot start with '.' (it becomes a file name)"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(err(
            "use only letters, digits, '.', '_' and '-' (it becomes a file name)",
        ));
    }
    Ok(())
}

impl JobFile {
    /// Checks every field and limit; returns the job to store and send.
    pub fn validate(&self) -> Result<Job, JobError> {
        if self.module.trim().is_empty() {
            return Err(JobError::Module);
        }
        let module = source("`module`".into(), &self.module)?;
        if self.quorum == 0 || self.quorum > MAX_QUORUM {
            return Err(JobError::Quorum(self.quorum));
        }
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS {
            return Err(JobError::MaxAttempts(self.max_attempts));
        }
        let duration = |field, text: &str| {
            let secs = parse_duration(text).map_err(|e: QuantityError| JobError::Duration {
                field,
                why: e.to_string(),
            })?;
            if secs == 0 || secs > MAX_DEADLINE_SECS {
                return Err(JobError::Duration {
                    field,
                    why: format!("{text:?} must be between 1s and 7d"),
                });
            }
            Ok(secs)
        };
        let deadline_secs = duration("deadline", &self.deadline)?;
        let estimate_secs = match &self.estimate {
            Some(e) => duration("estimate", e)?,
            None => 0,
        };
        if estimate_secs > deadline_secs {
            return Err(JobError::EstimatePastDeadline {
                estimate: estimate_secs,
                deadline: deadline_secs,
            });
        }
        let memory_bytes = parse_size(&self.memory).map_err(|e| JobError::Memory(e.to_string()))?;
        if !(MIN_MEMORY..=MAX_MEMORY).contains(&memory_bytes) {
            return Err(JobError::Memory(format!(
                "{:?} must be between 64KiB (one wasm page) and 4GiB (all a wasm32 module can address)",
                self.memory
            )));
        }
        if self.fuel == Some(0) {
            return Err(JobError::Fuel);
        }
        check_env("job", &self.env)?;
        if self.units.is_empty() {
            return Err(JobError::NoUnits);
        }
        if self.units.len() > MAX_UNITS {
            return Err(JobError::TooManyUnits(self.units.len()));
        }
        let mut names = HashSet::new();
        let mut units = Vec::with_capacity(self.units.len());
        let mut bytes = self.module.len();
        for u in &self.units {
            check_name(&u.name)?;
            if !names.insert(u.name.as_str()) {
                return Err(JobError::DuplicateUnit(u.name.clone()));
            }
            let args_err = |why: String| JobError::Args {
                unit: u.name.clone(),
                why,
            };
            if u.args.len() > MAX_ARGS {
                return Err(args_err(format!(
                    "{} arguments; at most {MAX_ARGS}",
                    u.args.len()
                )));
            }
            for (i, a) in u.args.iter().enumerate() {
                if a.len() > MAX_ARG_LEN {
                    return Err(args_err(format!(
                        "argument {} is longer than {MAX_ARG_LEN} bytes",
                        i + 1
                    )));
                }
                if a.contains('\0') {
                    return Err(args_err(format!("argument {} contains a NUL byte", i + 1)));
                }
            }
            let scope = format!("unit {:?}", u.name);
            check_env(&scope, &u.env)?;
            let mut env = self.env.clone();
            env.extend(u.env.clone());
            if env.len() > MAX_ENV {
                return Err(JobError::Env {
                    scope,
                    key: String::new(),
                    why: "more than 64 environment entries",
                });
            }
            bytes += u.name.len()
                + u.args.iter().map(String::len).sum::<usize>()
                + env.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
                + u.stdin.as_ref().map_or(0, String::len);
            if bytes > MAX_JOB_BYTES {
                return Err(JobError::TooLarge);
            }
            let stdin = match &u.stdin {
                Some(s) => Some(source(format!("unit {:?}: `stdin`", u.name), s)?),
                None => None,
            };
            units.push(JobUnit {
                name: u.name.clone(),
                args: u.args.clone(),
                stdin,
                env: env.into_iter().collect(),
            });
        }
        Ok(Job {
            version: JOB_VERSION,
            module,
            quorum: self.quorum,
            max_attempts: self.max_attempts,
            deadline_secs,
            memory_bytes,
            fuel: self.fuel,
            estimate_secs,
            output_dir: self.output_dir,
            adaptive: self.adaptive,
            units,
        })
    }
}

impl Job {
    /// The job file that validates to this job (sizes in bytes, durations
    /// in seconds, the environment on each unit).
    pub fn to_file(&self) -> JobFile {
        let text = |s: &Source| match s {
            Source::Path(p) | Source::Cap(p) => p.clone(),
        };
        JobFile {
            module: text(&self.module),
            quorum: self.quorum,
            max_attempts: self.max_attempts,
            deadline: self.deadline_secs.to_string(),
            memory: self.memory_bytes.to_string(),
            fuel: self.fuel,
            estimate: (self.estimate_secs > 0).then(|| self.estimate_secs.to_string()),
            output_dir: self.output_dir,
            adaptive: self.adaptive,
            env: BTreeMap::new(),
            units: self
                .units
                .iter()
                .map(|u| UnitFile {
                    name: u.name.clone(),
                    args: u.args.clone(),
                    stdin: u.stdin.as_ref().map(text),
                    env: u.env.iter().cloned().collect(),
                })
                .collect(),
        }
    }

    /// What one unit needs.
    pub fn need(&self) -> Need {
        Need {
            memory_bytes: self.memory_bytes,
            fuel: self.fuel,
            estimate_secs: self.estimate_secs,
            deadline_secs: self.deadline_secs,
        }
    }

    /// The adaptive-replication policy: the default when `adaptive`, off
    /// otherwise.
    pub fn trust_policy(&self) -> TrustPolicy {
        if self.adaptive {
            TrustPolicy::default()
        } else {
            TrustPolicy::OFF
        }
    }

    /// A fresh state machine for every unit of job `id`, in file order.
    /// Inputs for locality are left to the caller, who knows which objects
    /// the sources resolved to.
    pub fn units(&self, id: &JobId) -> Result<Vec<Unit>, super::unit::UnitError> {
        self.units
            .iter()
            .map(|u| {
                Unit::new(
                    UnitSpec {
                        id: UnitId::of(id, &u.name),
                        name: u.name.clone(),
                        need: self.need(),
                        inputs: Vec::new(),
                    },
                    self.quorum,
                    self.max_attempts,
                    self.deadline_secs,
                )
            })
            .collect()
    }
}

/// A job's overall state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Some unit is not finished.
    Running,
    /// Every unit is done.
    Done,
    /// Every unit is finished and at least one failed.
    Failed,
}

/// `cairn job status --json`: `{"state": …, "units": [{"name", "state",
/// "attempts", "providers", …}]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    /// The job's state.
    pub state: JobState,
    /// Units done.
    pub done: usize,
    /// Units failed.
    pub failed: usize,
    /// Every unit, in the order given.
    pub units: Vec<UnitStatus>,
}

impl JobStatus {
    /// The status of a job made of `units`. A job keeps running while any
    /// unit may still finish, so one failed unit does not stop the others.
    pub fn of<'a>(units: impl IntoIterator<Item = &'a Unit>) -> Self {
        let units: Vec<UnitStatus> = units.into_iter().map(Unit::status).collect();
        let done = units.iter().filter(|u| u.state == UnitState::Done).count();
        let failed = units
            .iter()
            .filter(|u| u.state == UnitState::Failed)
            .count();
        let state = if done + failed < units.len() {
            JobState::Running
        } else if failed > 0 {
            JobState::Failed
        } else {
            JobState::Done
        };
        Self {
            state,
            done,
            failed,
            units,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::unit::Event;
    use crate::compute::{OutputHash, unit::Action};
    use crate::keys::PublicKey;
    use proptest::prelude::*;

    const ISSUE_EXAMPLE: &str = r#"
module = "prog.wasm"
quorum = 2            # distinct providers that must agree
max_attempts = 3
deadline = "10m"      # per unit
memory = "64MiB"
[[unit]]
name = "u1"
args = ["--size", "10"]
stdin = "data/part1.txt"
"#;

    fn parse(text: &str) -> Result<Job, String> {
        let file: JobFile = toml::from_str(text).map_err(|e| e.to_string())?;
        file.validate().map_err(|e| e.to_string())
    }

    fn cap() -> String {
        crate::ReadCap {
            key: crate::FileKey([1; 32]),
            manifest: crate::ManifestId([2; 32]),
        }
        .to_string()
    }

    #[test]
    fn the_issue_example_parses() {
        let job = parse(ISSUE_EXAMPLE).unwrap();
        assert_eq!(job.module, Source::Path("prog.wasm".into()));
        assert_eq!((job.quorum, job.max_attempts), (2, 3));
        assert_eq!((job.deadline_secs, job.memory_bytes), (600, 64 << 20));
        assert_eq!(job.units.len(), 1);
        let u = &job.units[0];
        assert_eq!(u.args, ["--size", "10"]);
        assert_eq!(u.stdin, Some(Source::Path("data/part1.txt".into())));
        assert_eq!(job.trust_policy(), TrustPolicy::OFF);
    }

    #[test]
    fn defaults_and_extras() {
        let text = format!(
            r#"
module = "{}"
fuel = 1_000_000
estimate = "2m"
output_dir = true
adaptive = true
env = {{ MODE = "fast", SEED = "0" }}
[[unit]]
name = "map-1"
stdin = "{}"
env = {{ SEED = "1" }}
[[unit]]
name = "reduce"
"#,
            cap(),
            cap()
        );
        let job = parse(&text).unwrap();
        assert_eq!((job.quorum, job.max_attempts), (2, 3));
        assert_eq!((job.deadline_secs, job.memory_bytes), (600, 64 << 20));
        assert_eq!((job.fuel, job.estimate_secs), (Some(1_000_000), 120));
        assert!(job.output_dir && job.adaptive);
        assert_eq!(job.trust_policy(), TrustPolicy::default());
        assert!(matches!(job.module, Source::Cap(_)));
        assert_eq!(
            job.units[0].env,
            vec![("MODE".into(), "fast".into()), ("SEED".into(), "1".into())]
        );
        assert_eq!(job.units[1].env[1], ("SEED".into(), "0".into()));
        // Stored and sent with postcard.
        let bytes = postcard::to_allocvec(&job).unwrap();
        assert_eq!(postcard::from_bytes::<Job>(&bytes).unwrap(), job);
        // A received job is checked again.
        let mut bad = job.clone();
        bad.quorum = 99;
        let bytes = postcard::to_allocvec(&bad).unwrap();
        assert!(postcard::from_bytes::<Job>(&bytes).is_err());
        let mut bad = job.clone();
        bad.units[0].env.push(("MODE".into(), "again".into()));
        let json = serde_json::to_string(&bad).unwrap();
        let err = serde_json::from_str::<Job>(&json).unwrap_err().to_string();
        assert!(err.contains("canonical"), "{err}");
        let mut old = job.clone();
        old.version = 0;
        let json = serde_json::to_string(&old).unwrap();
        assert!(
            serde_json::from_str::<Job>(&json)
                .unwrap_err()
                .to_string()
                .contains("version 0")
        );
    }

    #[test]
    fn bad_job_files_say_what_is_wrong() {
        let base = "module = \"p.wasm\"\n";
        let unit = "[[unit]]\nname = \"u1\"\n";
        let err = |extra: &str, units: &str| parse(&format!("{base}{extra}\n{units}")).unwrap_err();
        assert!(err("quorom = 2", unit).contains("unknown field `quorom`"));
        assert!(err("", "").contains("no units"));
        assert!(err("quorum = 0", unit).contains("`quorum` is 0"));
        assert!(err("max_attempts = 11", unit).contains("`max_attempts` is 11"));
        assert!(err("deadline = \"10 minutes\"", unit).contains("`deadline`"));
        assert!(err("deadline = \"0s\"", unit).contains("between 1s and 7d"));
        assert!(err("memory = \"8GiB\"", unit).contains("4GiB"));
        assert!(err("memory = \"lots\"", unit).contains("`memory`"));
        assert!(err("fuel = 0", unit).contains("`fuel` must be positive"));
        assert!(err("estimate = \"1h\"", unit).contains("every attempt would time out"));
        assert!(err("", &format!("{unit}{unit}")).contains("two units are named \"u1\""));
        assert!(err("", "[[unit]]\nname = \"a/../../b\"\n").contains("only letters"));
        assert!(err("", "[[unit]]\nname = \".hidden\"\n").contains("cannot start with '.'"));
        assert!(err("", "[[unit]]\nname = \"\"\n").contains("1 to 64 bytes"));
        assert!(
            err("", "[[unit]]\nname = \"u\"\nstdin = \"cairn:AAAA\"\n")
                .contains("not a valid capability")
        );
        assert!(err("", "[[unit]]\nname = \"u\"\nargs = [\"a\\u0000b\"]\n").contains("NUL"));
        assert!(err("env = { \"A=B\" = \"1\" }", unit).contains("'='"));
        assert!(
            parse("module = \"\"\n[[unit]]\nname = \"u\"\n")
                .unwrap_err()
                .contains("`module`")
        );
        let many: String = (0..MAX_ARGS + 1).map(|i| format!("\"{i}\",")).collect();
        assert!(
            err("", &format!("[[unit]]\nname = \"u\"\nargs = [{many}]\n")).contains("arguments")
        );
    }

    #[test]
    fn a_job_is_bounded_as_a_whole() {
        let arg = "x".repeat(MAX_ARG_LEN);
        let unit = |i: usize| UnitFile {
            name: format!("u{i}"),
            args: vec![arg.clone(); MAX_ARGS],
            stdin: None,
            env: BTreeMap::new(),
        };
        let mut file: JobFile = toml::from_str(ISSUE_EXAMPLE).unwrap();
        file.units = (0..15).map(unit).collect();
        assert!(file.validate().is_ok(), "15 MiB of arguments");
        file.units = (0..17).map(unit).collect();
        assert_eq!(file.validate(), Err(JobError::TooLarge));
    }

    #[test]
    fn status_follows_the_units() {
        let job = parse(&format!(
            "{ISSUE_EXAMPLE}[[unit]]\nname = \"u2\"\nargs = []\n"
        ))
        .unwrap();
        let id = JobId([4; 32]);
        let mut units = job.units(&id).unwrap();
        assert_eq!(units[0].spec().id, UnitId::of(&id, "u1"));
        assert_eq!(units[0].spec().need.deadline_secs, 600);
        let s = JobStatus::of(&units);
        assert_eq!(s.state, JobState::Running);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["state"], "running");
        assert_eq!(json["units"][0]["name"], "u1");
        assert_eq!(json["units"][0]["state"], "waiting");
        assert_eq!(json["units"][0]["attempts"], 0);
        assert!(json["units"][0]["providers"].as_array().unwrap().is_empty());

        let key = |i| PublicKey([i; 32]);
        for (p, out) in [(1, 1), (2, 1)] {
            units[0]
                .handle(Event::Assigned {
                    provider: key(p),
                    operator: key(p),
                    trusted: false,
                    at: 0,
                })
                .unwrap();
            units[0]
                .handle(Event::Finished {
                    provider: key(p),
                    output: OutputHash([out; 32]),
                    fuel_used: 5,
                    at: 1,
                })
                .unwrap();
        }
        assert_eq!(units[0].state(), UnitState::Done);
        let a = units[1].handle(Event::Cancel { at: 2 }).unwrap();
        assert!(matches!(a.last(), Some(Action::GiveUp { .. })));
        let s = JobStatus::of(&units);
        assert_eq!((s.state, s.done, s.failed), (JobState::Failed, 1, 1));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["state"], "failed");
        assert_eq!(json["units"][0]["state"], "done");
        assert_eq!(json["units"][0]["providers"].as_array().unwrap().len(), 2);
    }

    proptest! {
        /// Validation never panics, and what it accepts is within bounds.
        #[test]
        fn validation_bounds(
            quorum in 0u16..12,
            attempts in 0u16..12,
            deadline in "[0-9]{1,4}[smhd]?",
            memory in "[0-9]{1,5}(KiB|MiB|GiB|B)?",
            names in prop::collection::vec("[a-z0-9._/-]{0,8}", 0..6),
        ) {
            let file = JobFile {
                module: "m.wasm".into(),
                quorum,
                max_attempts: attempts,
                deadline,
                memory,
                fuel: None,
                estimate: None,
                output_dir: false,
                adaptive: false,
                env: BTreeMap::new(),
                units: names
                    .into_iter()
                    .map(|name| UnitFile { name, args: vec![], stdin: None, env: BTreeMap::new() })
                    .collect(),
            };
            if let Ok(job) = file.validate() {
                prop_assert!((1..=MAX_QUORUM).contains(&job.quorum));
                prop_assert!((1..=MAX_ATTEMPTS).contains(&job.max_attempts));
                prop_assert!((1..=MAX_DEADLINE_SECS).contains(&job.deadline_secs));
                prop_assert!((MIN_MEMORY..=MAX_MEMORY).contains(&job.memory_bytes));
                prop_assert!(!job.units.is_empty());
                let mut seen = HashSet::new();
                for u in &job.units {
                    prop_assert!(!u.name.contains('/') && !u.name.starts_with('.'));
                    prop_assert!(seen.insert(u.name.clone()));
                }
                // Every validated job makes valid unit state machines.
                prop_assert!(job.units(&JobId([0; 32])).is_ok());
            }
        }
    }
}
