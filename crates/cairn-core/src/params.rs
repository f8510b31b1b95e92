//! Choosing erasure parameters and segment sizes.
//!
//! Defaults: k = 16 data pieces, n = 24 stored pieces per segment: 1.5×
//! expansion, and any 8 of a segment's holders can be lost. On a network with
//! fewer than 24 reachable nodes, n shrinks to the nodes available (each piece
//! of a segment needs its own node) and k to about n / 1.5, so expansion stays
//! near 1.5×: 12 nodes give k = 8, n = 12. Uploads also code a few spare
//! pieces beyond n for long-tail cancellation (see [`spares`]).

use crate::erasure::MAX_PIECES;

/// Default pieces needed to rebuild a segment.
pub const DEFAULT_K: u16 = 16;
/// Default pieces stored per segment.
pub const DEFAULT_N: u16 = 24;
/// Default plaintext bytes per segment.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 * 1024 * 1024;
/// Largest segment size accepted.
pub const MAX_SEGMENT_SIZE: u64 = 256 * 1024 * 1024;
/// Largest piece a node stores or sends (a 64 MiB shard plus headroom).
pub const MAX_PIECE_BYTES: u64 = 64 * 1024 * 1024 + 64 * 1024;

/// Parameters could not be chosen.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParamsError {
    /// k or n out of range.
    #[error("invalid --k {k} / --n {n}: need 1 <= k <= n <= {MAX_PIECES}")]
    Invalid {
        /// Requested k.
        k: u16,
        /// Requested n.
        n: u16,
    },
    /// Not enough distinct nodes.
    #[error(
        "{n} pieces per segment need {n} distinct nodes, but only {available} are reachable; start more nodes or lower --n"
    )]
    TooFewNodes {
        /// Pieces per segment.
        n: u16,
        /// Nodes reachable.
        available: usize,
    },
    /// Segment size out of range.
    #[error(
        "segment size {size} is out of range: it must be between 1 byte and {MAX_SEGMENT_SIZE} bytes, and at most {MAX_PIECE_BYTES} bytes per piece"
    )]
    SegmentSize {
        /// Requested size.
        size: u64,
    },
}

/// Erasure parameters for one upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Pieces needed.
    pub k: u16,
    /// Pieces stored.
    pub n: u16,
}

/// Chooses k and n for a network where `available` distinct nodes (this one included) can hold pieces.
pub fn choose(available: usize, k: Option<u16>, n: Option<u16>) -> Result<Params, ParamsError> {
    let cap = u16::try_from(available.min(usize::from(MAX_PIECES))).unwrap_or(MAX_PIECES);
    let (k, n) = match (k, n) {
        (Some(k), Some(n)) => (k, n),
        (None, Some(n)) => (scaled_k(n), n),
        (Some(k), None) => (
            k,
            (k.saturating_mul(3).div_ceil(2))
                .clamp(k, DEFAULT_N.max(k))
                .min(cap.max(k)),
        ),
        (None, None) => {
            let n = DEFAULT_N.min(cap).max(1);
            (scaled_k(n), n)
        }
    };
    if k == 0 || k > n || n > MAX_PIECES {
        return Err(ParamsError::Invalid { k, n });
    }
    if usize::from(n) > available {
        return Err(ParamsError::TooFewNodes { n, available });
    }
    Ok(Params { k, n })
}

/// About n / 1.5, at least 1.
fn scaled_k(n: u16) -> u16 {
    ((u32::from(n) * 2 + 1) / 3).max(1) as u16
}

/// Spare pieces to code and upload beyond n: they absorb slow or refusing
/// nodes, and the slowest uploads are cancelled once n have succeeded.
pub fn spares(n: u16, available: usize) -> u16 {
    let want = (n / 4).max(2);
    let room = available.saturating_sub(usize::from(n));
    want.min(u16::try_from(room).unwrap_or(u16::MAX))
        .min(MAX_PIECES - n)
}

/// Checks a segment size against k.
pub fn check_segment_size(size: u64, k: u16) -> Result<(), ParamsError> {
    let per_piece = (size + crate::crypto::TAG_LEN as u64).div_ceil(u64::from(k.max(1))) + 1;
    if size == 0 || size > MAX_SEGMENT_SIZE || per_piece > MAX_PIECE_BYTES {
        return Err(ParamsError::SegmentSize { size });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_on_a_large_network() {
        let p = choose(1000, None, None).unwrap();
        assert_eq!((p.k, p.n), (16, 24));
        assert!(p.n - p.k >= 8);
        assert_eq!(spares(24, 1000), 6);
    }

    #[test]
    fn small_networks_scale_down_near_one_and_a_half() {
        assert_eq!(choose(12, None, None).unwrap(), Params { k: 8, n: 12 });
        assert_eq!(choose(3, None, None).unwrap(), Params { k: 2, n: 3 });
        assert_eq!(choose(1, None, None).unwrap(), Params { k: 1, n: 1 });
        assert_eq!(spares(12, 12), 0);
        assert_eq!(spares(8, 12), 2);
        for a in 2..=24 {
            let p = choose(a, None, None).unwrap();
            let ratio = f64::from(p.n) / f64::from(p.k);
            assert!((1.3..=2.0).contains(&ratio), "{a} nodes: {p:?}");
        }
    }

    #[test]
    fn overrides_and_errors() {
        assert_eq!(choose(12, Some(4), Some(8)).unwrap(), Params { k: 4, n: 8 });
        assert_eq!(
            choose(5, Some(4), Some(8)),
            Err(ParamsError::TooFewNodes { n: 8, available: 5 })
        );
        assert_eq!(
            choose(12, Some(5), Some(4)),
            Err(ParamsError::Invalid { k: 5, n: 4 })
        );
        assert_eq!(choose(12, None, Some(6)).unwrap(), Params { k: 4, n: 6 });
        assert_eq!(choose(12, Some(4), None).unwrap(), Params { k: 4, n: 6 });
        assert!(check_segment_size(0, 4).is_err());
        assert!(check_segment_size(DEFAULT_SEGMENT_SIZE, 1).is_ok());
        assert!(check_segment_size(MAX_SEGMENT_SIZE, 1).is_err());
    }
}
