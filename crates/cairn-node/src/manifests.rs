//! Manifests read lately, for reads only.
//!
//! Finding a manifest costs requests to the peers near it (and DHT walks
//! when those do not have it), and its repair record a request to the
//! stewards. S3 clients read large objects as many parallel ranges, so
//! without this every range paid for those lookups again. The cache keeps the sealed
//! bytes (each read still opens them with its own capability's key, so a
//! wrong key fails as before) and the record found with them, for [`TTL`].
//!
//! A record changes when a repair moves pieces or the owner renews or
//! deletes: a copy at most [`TTL`] old names at worst holders that have
//! left. A segment read survives some like any offline holder (it asks k
//! plus a few); when the kept copy's holders cannot rebuild a segment, the
//! read asks the network for the current copy and tries once more. Owner
//! updates made through this node forget the entry at once. Health views
//! (`stat`) and owner updates always read the network's current copy.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_core::ManifestId;
use cairn_core::record::{Record, RecordId};

/// How long a manifest and its record are reused.
pub const TTL: Duration = Duration::from_secs(15);
/// Bytes of sealed manifests and encoded records kept at most.
pub const MAX_BYTES: usize = 16 << 20;

struct Entry {
    at: Instant,
    sealed: Bytes,
    record: Option<Record>,
    record_id: Option<RecordId>,
    bytes: usize,
}

/// Sealed manifests and their records, bounded by [`MAX_BYTES`].
#[derive(Default)]
pub struct Recent {
    entries: HashMap<ManifestId, Entry>,
    bytes: usize,
}

impl Recent {
    /// The sealed manifest `id` and its record, if read less than [`TTL`]
    /// before `now`.
    pub fn get(&self, id: &ManifestId, now: Instant) -> Option<(Bytes, Option<Record>)> {
        let e = self.entries.get(id)?;
        (now.saturating_duration_since(e.at) < TTL).then(|| (e.sealed.clone(), e.record.clone()))
    }

    /// Keeps what a read found: the sealed manifest `id`, the id of the
    /// record it names and the record itself (if one was found).
    pub fn put(
        &mut self,
        id: ManifestId,
        sealed: Bytes,
        record_id: Option<RecordId>,
        record: Option<Record>,
        now: Instant,
    ) {
        let bytes = sealed.len() + record.as_ref().map_or(0, |r| r.encode().len());
        if bytes > MAX_BYTES {
            return;
        }
        self.forget(&id);
        self.bytes += bytes;
        self.entries.insert(
            id,
            Entry {
                at: now,
                sealed,
                record,
                record_id,
                bytes,
            },
        );
        while self.bytes > MAX_BYTES {
            let Some(oldest) = self
                .entries
                .iter()
                .filter(|(k, _)| **k != id)
                .min_by_key(|(_, e)| e.at)
                .map(|(k, _)| *k)
            else {
                break;
            };
            self.forget(&oldest);
        }
    }

    /// Drops manifest `id`.
    pub fn forget(&mut self, id: &ManifestId) {
        if let Some(e) = self.entries.remove(id) {
            self.bytes -= e.bytes;
        }
    }

    /// Drops every manifest whose record is `record`.
    pub fn forget_record(&mut self, record: &RecordId) {
        let gone: Vec<ManifestId> = self
            .entries
            .iter()
            .filter(|(_, e)| e.record_id.as_ref() == Some(record))
            .map(|(k, _)| *k)
            .collect();
        for id in gone {
            self.forget(&id);
        }
    }

    /// Bytes kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mid(b: u8) -> ManifestId {
        ManifestId([b; 32])
    }

    #[test]
    fn entries_expire_after_the_ttl_and_can_be_forgotten() {
        let t0 = Instant::now();
        let mut r = Recent::default();
        let rid = RecordId([7; 32]);
        r.put(mid(1), Bytes::from_static(b"sealed"), Some(rid), None, t0);
        assert_eq!(
            r.get(&mid(1), t0 + TTL - Duration::from_millis(1))
                .map(|(s, _)| s),
            Some(Bytes::from_static(b"sealed"))
        );
        assert!(r.get(&mid(1), t0 + TTL).is_none());
        assert!(r.get(&mid(2), t0).is_none());
        r.forget_record(&RecordId([8; 32]));
        assert!(r.get(&mid(1), t0).is_some());
        r.forget_record(&rid);
        assert!(r.get(&mid(1), t0).is_none());
        assert_eq!(r.bytes(), 0);
    }

    #[test]
    fn bytes_stay_bounded_and_the_oldest_go_first() {
        let t0 = Instant::now();
        let mut r = Recent::default();
        let big = Bytes::from(vec![0u8; MAX_BYTES / 3]);
        for i in 0..5u8 {
            r.put(
                mid(i),
                big.clone(),
                None,
                None,
                t0 + Duration::from_millis(u64::from(i)),
            );
            assert!(r.bytes() <= MAX_BYTES);
        }
        assert!(r.get(&mid(0), t0).is_none());
        assert!(r.get(&mid(1), t0).is_none());
        assert!(r.get(&mid(4), t0).is_some());
        // Replacing an entry does not count it twice.
        r.put(mid(4), Bytes::from_static(b"x"), None, None, t0);
        assert_eq!(r.bytes(), 2 * big.len() + 1);
        // One too big for the whole cache is not kept.
        r.put(
            mid(9),
            Bytes::from(vec![0u8; MAX_BYTES + 1]),
            None,
            None,
            t0,
        );
        assert!(r.get(&mid(9), t0).is_none());
    }
}
