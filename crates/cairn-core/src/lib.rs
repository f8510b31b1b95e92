//! Cairn's core: everything that can be decided without I/O.
//!
//! Layout:
//! - [`ids`]: file, piece and manifest ids.
//!
//! Nothing here touches the network, the disk or a clock; callers pass time in.

pub mod ids;

pub use ids::{FileId, ManifestId, PieceId, hex, unhex32};
