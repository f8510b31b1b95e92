//! What this node's steward has observed about holders, kept across
//! restarts in `DATA_DIR/steward.redb`: each holder's audit reputation and
//! liveness, the signed evidence of recent failed audits, and the steward's
//! counters. Without it a restarted steward would forget a cheater's record
//! (and start it again at a perfect score) and every holder's uptime.
//!
//! Tables (each value carries its own version):
//! - `holders_v1`: peer id bytes → postcard `{ version: 1, liveness, score }`
//!   ([`Liveness`] and [`Reputation`] check their own version and ranges on
//!   the way in, so a damaged row is skipped, not trusted).
//! - `evidence_v1`: sequence number → [`AuditEvidence`] bytes, at most
//!   [`MAX_EVIDENCE`], oldest dropped first.
//! - `counters_v1`: `"audits"`, `"repairs"`, `"rebuilt"`, `"evidence_seq"`.

use std::path::Path;

use cairn_core::audit::AuditEvidence;
use cairn_core::liveness::Liveness;
use cairn_core::score::Reputation;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::NodeError;

const HOLDERS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("holders_v1");
const EVIDENCE: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("evidence_v1");
const COUNTERS: TableDefinition<'_, &str, u64> = TableDefinition::new("counters_v1");

/// Signed evidence entries kept.
pub const MAX_EVIDENCE: usize = 256;
/// Version of a `holders_v1` value.
const HOLDER_VERSION: u16 = 1;

/// One holder's observed state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HolderState {
    version: u16,
    /// Whether it answers.
    pub liveness: Liveness,
    /// Its audit record.
    pub score: Reputation,
}

impl HolderState {
    /// A state to keep.
    pub fn new(liveness: Liveness, score: Reputation) -> Self {
        Self {
            version: HOLDER_VERSION,
            liveness,
            score,
        }
    }
}

/// The steward's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Audits run.
    pub audits: u64,
    /// Segments repaired.
    pub repairs: u64,
    /// Pieces rebuilt.
    pub rebuilt: u64,
}

/// Everything a steward loads at start.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Holders by peer id bytes (damaged rows skipped).
    pub holders: Vec<(Vec<u8>, HolderState)>,
    /// Evidence, oldest first.
    pub evidence: Vec<AuditEvidence>,
    /// Counters.
    pub counters: Counters,
}

/// The steward's observation database.
pub struct ObservationStore {
    db: Database,
}

fn err(e: impl std::fmt::Display) -> NodeError {
    NodeError::Io(format!("steward.redb: {e}"))
}

impl ObservationStore {
    /// Opens or creates `DIR/steward.redb`.
    pub fn open(dir: &Path) -> Result<Self, NodeError> {
        let db = Database::create(dir.join("steward.redb")).map_err(err)?;
        let tx = db.begin_write().map_err(err)?;
        tx.open_table(HOLDERS).map_err(err)?;
        tx.open_table(EVIDENCE).map_err(err)?;
        tx.open_table(COUNTERS).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(Self { db })
    }

    /// Everything kept.
    pub fn load(&self) -> Result<Loaded, NodeError> {
        let tx = self.db.begin_read().map_err(err)?;
        let mut out = Loaded::default();
        let t = tx.open_table(HOLDERS).map_err(err)?;
        for row in t.iter().map_err(err)? {
            let (k, v) = row.map_err(err)?;
            match postcard::from_bytes::<HolderState>(v.value()) {
                Ok(s) if s.version == HOLDER_VERSION => {
                    out.holders.push((k.value().to_vec(), s));
                }
                _ => tracing::warn!("skipping a damaged holder row in steward.redb"),
            }
        }
        let t = tx.open_table(EVIDENCE).map_err(err)?;
        for row in t.iter().map_err(err)? {
            let (_, v) = row.map_err(err)?;
            if let Ok(e) = AuditEvidence::from_bytes(v.value()) {
                out.evidence.push(e);
            }
        }
        let t = tx.open_table(COUNTERS).map_err(err)?;
        let get = |name: &str| -> Result<u64, NodeError> {
            Ok(t.get(name).map_err(err)?.map_or(0, |v| v.value()))
        };
        out.counters = Counters {
            audits: get("audits")?,
            repairs: get("repairs")?,
            rebuilt: get("rebuilt")?,
        };
        Ok(out)
    }

    /// Writes the holders that changed, the evidence that is new, drops the
    /// holders forgotten and sets the counters, in one transaction (a crash
    /// keeps the last pass or this one, never a mix).
    pub fn save(
        &self,
        changed: &[(Vec<u8>, HolderState)],
        forgotten: &[Vec<u8>],
        new_evidence: &[AuditEvidence],
        counters: Counters,
    ) -> Result<(), NodeError> {
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut t = tx.open_table(HOLDERS).map_err(err)?;
            for (peer, state) in changed {
                let bytes = postcard::to_allocvec(state).map_err(err)?;
                t.insert(peer.as_slice(), bytes.as_slice()).map_err(err)?;
            }
            for peer in forgotten {
                t.remove(peer.as_slice()).map_err(err)?;
            }
            let mut c = tx.open_table(COUNTERS).map_err(err)?;
            let mut seq = c.get("evidence_seq").map_err(err)?.map_or(0, |v| v.value());
            let mut e = tx.open_table(EVIDENCE).map_err(err)?;
            for ev in new_evidence {
                let Ok(bytes) = ev.to_bytes() else { continue };
                e.insert(seq, bytes.as_slice()).map_err(err)?;
                seq += 1;
            }
            while e.len().map_err(err)? > MAX_EVIDENCE as u64 {
                if e.pop_first().map_err(err)?.is_none() {
                    break;
                }
            }
            c.insert("evidence_seq", seq).map_err(err)?;
            c.insert("audits", counters.audits).map_err(err)?;
            c.insert("repairs", counters.repairs).map_err(err)?;
            c.insert("rebuilt", counters.rebuilt).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::audit::Challenge;
    use cairn_core::keys::SecretKey;
    use cairn_core::liveness::LivenessParams;
    use cairn_core::score::{AuditOutcome, ScoreParams};

    fn evidence(key: &SecretKey, at: u64) -> AuditEvidence {
        let holder = SecretKey::generate().public();
        AuditEvidence::missing(
            key,
            holder,
            Challenge::random(cairn_core::PieceId([at as u8; 32])),
            [1; 32],
            1 << 20,
            at,
        )
    }

    #[test]
    fn holders_evidence_and_counters_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let params = ScoreParams::default();
        let mut score = Reputation::new(&params);
        for t in 0..3 {
            score.record(&params, 100 + t, AuditOutcome::Missing, None);
        }
        let mut live = Liveness::new();
        live.answered(&LivenessParams::default(), 50, Some(12));
        live.missed(&LivenessParams::default(), 60);
        let state = HolderState::new(live, score);
        let key = SecretKey::generate();
        let kept = vec![evidence(&key, 1), evidence(&key, 2)];
        let counters = Counters {
            audits: 7,
            repairs: 2,
            rebuilt: 5,
        };
        {
            let s = ObservationStore::open(dir.path()).unwrap();
            s.save(&[(b"peer-a".to_vec(), state.clone())], &[], &kept, counters)
                .unwrap();
        }
        let s = ObservationStore::open(dir.path()).unwrap();
        let loaded = s.load().unwrap();
        assert_eq!(loaded.holders, vec![(b"peer-a".to_vec(), state)]);
        assert_eq!(loaded.counters, counters);
        assert_eq!(loaded.evidence, kept);
        assert_eq!(loaded.holders[0].1.score.penalties().len(), 3);
        // Forgetting a holder removes it.
        s.save(&[], &[b"peer-a".to_vec()], &[], counters).unwrap();
        assert!(s.load().unwrap().holders.is_empty());
    }

    #[test]
    fn evidence_is_bounded_oldest_dropped_first() {
        let dir = tempfile::tempdir().unwrap();
        let s = ObservationStore::open(dir.path()).unwrap();
        let key = SecretKey::generate();
        let all: Vec<AuditEvidence> = (0..MAX_EVIDENCE as u64 + 10)
            .map(|t| evidence(&key, t))
            .collect();
        for chunk in all.chunks(50) {
            s.save(&[], &[], chunk, Counters::default()).unwrap();
        }
        let kept = s.load().unwrap().evidence;
        assert_eq!(kept.len(), MAX_EVIDENCE);
        assert_eq!(kept.first(), all.get(10));
        assert_eq!(kept.last(), all.last());
    }

    #[test]
    fn a_damaged_holder_row_is_skipped_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let s = ObservationStore::open(dir.path()).unwrap();
        let tx = s.db.begin_write().unwrap();
        {
            let mut t = tx.open_table(HOLDERS).unwrap();
            t.insert(b"bad".as_slice(), [9u8, 9, 9].as_slice()).unwrap();
        }
        tx.commit().unwrap();
        assert!(s.load().unwrap().holders.is_empty());
    }
}
