//! Segments decoded lately, for ranged reads smaller than a segment.
//!
//! A segment is fetched (k pieces over the network, each checked) and
//! decoded (Reed-Solomon, AES-256-GCM) as a whole, whatever part of it a
//! read wants. S3 clients read large objects as many parallel ranges: the
//! aws CLI and boto3 ask for 8 MiB at a time, ten at once, so an object
//! stored with 64 MiB segments (one PUT, or rclone's parts) had each
//! segment fetched and decoded eight times over, eight times the CPU and
//! network of the bytes read. This cache keeps a decoded segment for
//! [`TTL`] and lets concurrent reads of one segment share one fetch (the
//! first starts it, the others wait for it; a failed fetch is not kept,
//! so the next read tries again).
//!
//! Only reads that want part of a segment use it ([`crate::client`]):
//! a read that covers whole segments never asks for one twice, and
//! keeping those would only hold memory. Bounds: [`MAX_BYTES`] of decoded
//! segments and [`MAX_ENTRIES`] entries (fetches in flight included);
//! the oldest go first.
//!
//! Entries are keyed by manifest id and segment index, not by capability:
//! a read reaches the cache only after opening the manifest with its
//! capability's key, and AES-GCM opens it under that one key alone, so
//! whoever finds an entry could have decoded it. An owner's delete
//! through this node forgets the file's entries at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_core::ManifestId;
use tokio::sync::OnceCell;

/// How long a decoded segment is reused.
pub const TTL: Duration = Duration::from_secs(10);
/// Bytes of decoded segments kept at most: three segments of the default
/// 64 MiB, room for the ten 8 MiB ranges an S3 client has in flight.
pub const MAX_BYTES: usize = 192 << 20;
/// Entries kept at most, fetches in flight included.
pub const MAX_ENTRIES: usize = 64;

/// A segment: the manifest it belongs to and its index.
pub type Key = (ManifestId, u64);

/// One segment's decoded plaintext, filled once by whichever read gets
/// there first.
pub type Cell = Arc<OnceCell<Bytes>>;

struct Entry {
    at: Instant,
    cell: Cell,
    /// Decoded bytes once filled; 0 while in flight.
    bytes: usize,
}

/// Decoded segments, bounded by [`MAX_BYTES`] and [`MAX_ENTRIES`].
#[derive(Default)]
pub struct Decoded {
    entries: HashMap<Key, Entry>,
    bytes: usize,
}

impl Decoded {
    /// The cell of segment `key`: the one already kept (filled or being
    /// filled) if it is younger than [`TTL`], else a new, empty one.
    pub fn cell(&mut self, key: Key, now: Instant) -> Cell {
        self.expire(now);
        if let Some(e) = self.entries.get(&key) {
            return e.cell.clone();
        }
        while self.entries.len() >= MAX_ENTRIES && self.drop_oldest(None) {}
        let cell = Cell::default();
        self.entries.insert(
            key,
            Entry {
                at: now,
                cell: cell.clone(),
                bytes: 0,
            },
        );
        cell
    }

    /// Counts `cell`, now filled with `bytes`, against the bound, if it is
    /// still the one kept for `key`; older entries make room for it.
    pub fn filled(&mut self, key: Key, cell: &Cell, bytes: usize, now: Instant) {
        let Some(e) = self.entries.get_mut(&key) else {
            return;
        };
        if !Arc::ptr_eq(&e.cell, cell) || e.bytes != 0 {
            return;
        }
        if bytes > MAX_BYTES {
            self.forget_key(&key);
            return;
        }
        e.bytes = bytes;
        e.at = now;
        self.bytes += bytes;
        while self.bytes > MAX_BYTES && self.drop_oldest(Some(key)) {}
    }

    /// Drops every segment of manifest `id`.
    pub fn forget(&mut self, id: &ManifestId) {
        let gone: Vec<Key> = self
            .entries
            .keys()
            .filter(|(m, _)| m == id)
            .copied()
            .collect();
        for key in gone {
            self.forget_key(&key);
        }
    }

    /// Bytes of decoded segments kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Entries kept, fetches in flight included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        let old: Vec<Key> = self
            .entries
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.at) >= TTL)
            .map(|(k, _)| *k)
            .collect();
        for key in old {
            self.forget_key(&key);
        }
    }

    /// Drops the oldest entry other than `keep`; false if there is none.
    fn drop_oldest(&mut self, keep: Option<Key>) -> bool {
        let oldest = self
            .entries
            .iter()
            .filter(|(k, _)| Some(**k) != keep)
            .min_by_key(|(_, e)| e.at)
            .map(|(k, _)| *k);
        match oldest {
            Some(key) => {
                self.forget_key(&key);
                true
            }
            None => false,
        }
    }

    fn forget_key(&mut self, key: &Key) {
        if let Some(e) = self.entries.remove(key) {
            self.bytes -= e.bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(m: u8, s: u64) -> Key {
        (ManifestId([m; 32]), s)
    }

    #[test]
    fn a_segment_is_shared_until_its_ttl_and_forgotten_with_its_file() {
        let t0 = Instant::now();
        let mut d = Decoded::default();
        let a = d.cell(key(1, 0), t0);
        assert!(Arc::ptr_eq(&a, &d.cell(key(1, 0), t0)), "in flight: shared");
        a.set(Bytes::from_static(b"plain")).unwrap();
        d.filled(key(1, 0), &a, 5, t0);
        assert_eq!(d.bytes(), 5);
        let again = d.cell(key(1, 0), t0 + TTL - Duration::from_millis(1));
        assert_eq!(again.get(), Some(&Bytes::from_static(b"plain")));
        // Another segment of the file, and another file, are other cells.
        assert!(!Arc::ptr_eq(&a, &d.cell(key(1, 1), t0)));
        assert!(!Arc::ptr_eq(&a, &d.cell(key(2, 0), t0)));
        // Past the TTL, a new empty cell.
        let later = d.cell(key(1, 0), t0 + TTL);
        assert!(later.get().is_none());
        assert_eq!(d.bytes(), 0);
        // Forgetting a file drops its segments only.
        d.cell(key(2, 0), t0 + TTL);
        d.cell(key(3, 0), t0 + TTL);
        d.forget(&ManifestId([1; 32]));
        assert_eq!(d.len(), 2, "key(2, 0) and key(3, 0) stay");
    }

    #[test]
    fn bytes_and_entries_stay_bounded_and_the_oldest_go_first() {
        let t0 = Instant::now();
        let mut d = Decoded::default();
        let seg = MAX_BYTES / 3;
        let cells: Vec<Cell> = (0..4)
            .map(|i| {
                let at = t0 + Duration::from_millis(i);
                let c = d.cell(key(1, i), at);
                d.filled(key(1, i), &c, seg, at);
                c
            })
            .collect();
        assert!(d.bytes() <= MAX_BYTES);
        assert_eq!(d.len(), 3, "the oldest made room");
        assert!(!Arc::ptr_eq(&cells[0], &d.cell(key(1, 0), t0)));
        // A cell that was replaced does not count when it fills.
        let mut d = Decoded::default();
        let stale = d.cell(key(1, 0), t0);
        d.forget(&ManifestId([1; 32]));
        let fresh = d.cell(key(1, 0), t0);
        d.filled(key(1, 0), &stale, 10, t0);
        assert_eq!(d.bytes(), 0);
        d.filled(key(1, 0), &fresh, 10, t0);
        d.filled(key(1, 0), &fresh, 10, t0);
        assert_eq!(d.bytes(), 10, "counted once");
        // Too large to keep at all.
        let big = d.cell(key(2, 0), t0);
        d.filled(key(2, 0), &big, MAX_BYTES + 1, t0);
        assert_eq!((d.bytes(), d.len()), (10, 1));
        // Entries in flight are bounded too.
        for i in 0..(MAX_ENTRIES as u64 + 10) {
            d.cell(key(9, i), t0);
        }
        assert_eq!(d.len(), MAX_ENTRIES);
    }
}
