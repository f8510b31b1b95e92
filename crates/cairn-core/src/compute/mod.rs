//! Distributed compute (issue 5): the decisions, without I/O.
//!
//! A job is a WebAssembly module and a set of work units; providers offer
//! cpus and memory inside availability windows; each unit runs on several
//! distinct providers and is done when a quorum of them agree on its output
//! hash. The sandbox (wasmtime), the network (libp2p) and the store live in
//! other crates; here is only what they decide with, so a node and the
//! simulator make the same decisions from the same events.
//!
//! - [`window`]: availability schedules (`mon-fri 19:00-07:00; sat,sun
//!   all-day`): open now, next open, open until.
//! - [`resources`]: what a provider offers, what a unit needs, and the size
//!   and duration syntax of job files and flags.
//! - [`idle`]: whether the machine is otherwise idle, for idle-only
//!   providers (quiet for a while to start, busy at once to stop).
//! - [`matching`]: two-sided matching of units to providers, and why a unit
//!   waits.
//! - [`validate`]: voting on output hashes, provider reliability and
//!   adaptive replication with spot checks.
//! - [`unit`](mod@unit): the per-unit state machine: attempts, deadlines,
//!   checkpoints, reassignment, validation.
//! - [`job`]: the job file's types, their validation, the job's status.
//! - [`task`]: the messages of the compute lane (advert, task, report).
//! - [`dispatch`]: one scheduling round over a job's units (matching,
//!   trust and spot checks, assignment) and reliability bookkeeping.
//!
//! Time is passed in as unix seconds everywhere. Every collection that comes
//! from outside is bounded (the limits are constants in each module).

use std::fmt;

use serde::{Deserialize, Serialize};

pub mod dispatch;
pub mod idle;
pub mod job;
pub mod matching;
pub mod resources;
pub mod task;
pub mod unit;
pub mod validate;
pub mod window;

/// A provider: the node's signing key, which is its libp2p identity.
pub type ProviderId = crate::keys::PublicKey;

/// Who operates a provider: the account key that signs its offers. Two
/// providers with one operator count as one for validation, so a single
/// operator running many nodes cannot outvote anyone. A node without an
/// account is its own operator.
pub type OperatorId = crate::keys::PublicKey;

macro_rules! compute_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub [u8; 32]);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&crate::hex(&self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), &crate::hex(&self.0)[..12])
            }
        }
    };
}

compute_id!(
    /// A job: BLAKE3 of its submitted description (chosen by the submitter).
    JobId
);
compute_id!(
    /// One work unit of a job; see [`UnitId::of`].
    UnitId
);
compute_id!(
    /// BLAKE3 of a unit's output (stdout, then the output files in a
    /// canonical order, as the runtime defines it). Replicas are compared by
    /// this hash alone.
    OutputHash
);

impl UnitId {
    /// The id of unit `name` of `job`: every scheduler derives the same one.
    pub fn of(job: &JobId, name: &str) -> Self {
        let mut h = blake3::Hasher::new_derive_key("cairn v1 compute unit id");
        h.update(&job.0);
        h.update(name.as_bytes());
        Self(*h.finalize().as_bytes())
    }
}

/// Where a checkpoint is stored: the `cairn:` read capability of the
/// encrypted checkpoint object, as text. Opaque to the core.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CheckpointRef(pub String);

impl fmt::Debug for CheckpointRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A read capability is a secret: never log it whole.
        let head: String = self.0.chars().take(12).collect();
        write!(f, "CheckpointRef({head}…)")
    }
}
