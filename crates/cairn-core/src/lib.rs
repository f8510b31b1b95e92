//! Cairn's core: everything that can be decided without I/O.
//!
//! - [`ids`]: file, piece and manifest ids.
//! - [`audit`]: storage proofs: challenges, bao proofs, signed answers and evidence.
//! - [`buf`]: where the pipeline's large buffers come from.
//! - [`crypto`]: per-file keys, key derivation, the segment AEAD.
//! - [`keys`]: node signing keys, signatures, peer ids.
//! - [`index`]: signed, encrypted, mergeable account indexes (the S3 gateway's buckets).
//! - [`shard`]: one namespace over a tree of indexes that splits as it grows.
//! - [`erasure`]: Reed-Solomon coding of sealed segments into pieces.
//! - [`capability`]: the `cairn:` read capability and its text form.
//! - [`compute`]: distributed compute: schedules, matching, unit state
//!   machines, redundant validation, job files.
//! - [`manifest`]: the sealed, versioned table of contents of a file.
//! - [`params`]: choosing k, n and segment sizes.
//! - [`placement`]: which nodes get a segment's pieces.
//! - [`record`]: the keyless, signed, mergeable repair record of an object.
//! - [`repair`]: which segments to repair, by whom, in what order, how fast.
//! - [`score`]: audit reputation, vetting and disqualification.
//! - [`suspicion`]: audit failures stewards share, and when audits happen.
//! - [`liveness`]: whether a holder answers; when it counts as lost.
//! - [`transfer`]: k-of-n upload and fetch state machines.
//! - [`segment`]: the per-segment pipeline (seal + encode, decode + open).
//!
//! Nothing here touches the network, the disk or a clock; callers pass time in.

pub mod audit;
pub mod buf;
pub mod capability;
pub mod compute;
pub mod crypto;
pub mod erasure;
pub mod ids;
pub mod index;
pub mod keys;
pub mod liveness;
pub mod manifest;
pub mod params;
pub mod placement;
pub mod record;
pub mod repair;
pub mod score;
pub mod segment;
pub mod shard;
pub mod suspicion;
pub mod transfer;

pub use capability::{CapError, ReadCap};
pub use crypto::FileKey;
pub use ids::{FileId, ManifestId, PieceId, hex, unhex32};
pub use manifest::Manifest;
