//! The repair records this node keeps as a steward, in `DATA_DIR/records.redb`.
//!
//! Table `repair_records_v1`: key = record id (32 bytes), value = the
//! encoded [`Record`] (its own format carries a version). Every write is a
//! read-merge-write inside one redb write transaction, so concurrent
//! arrivals of two replicas can never lose either one's ops. The total
//! bytes kept are bounded: a node that is asked to steward more than its
//! budget refuses new records (existing ones still merge).

use std::path::Path;

use cairn_core::record::{Authority, Merged, Record, RecordError, RecordId};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::NodeError;

const RECORDS: TableDefinition<'_, &[u8; 32], &[u8]> = TableDefinition::new("repair_records_v1");
/// Running total of the encoded bytes in `RECORDS` (key `"bytes"`).
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("repair_records_meta_v1");

/// What storing a record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// First copy of this record here.
    New,
    /// Merged into the copy here, which changed.
    Merged,
    /// Nothing new: the copy here already had everything.
    Stale,
}

/// A record could not be stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordStoreError {
    /// The record itself was refused (forged, malformed, unauthorised).
    #[error(transparent)]
    Record(#[from] RecordError),
    /// Over this node's record budget.
    #[error("this node keeps at most {budget} bytes of repair records and is full")]
    Full {
        /// The budget in bytes.
        budget: u64,
    },
    /// Database trouble.
    #[error("repair record store: {0}")]
    Db(String),
}

fn db_err(e: impl std::fmt::Display) -> RecordStoreError {
    RecordStoreError::Db(e.to_string())
}

/// The steward's record table.
pub struct RecordStore {
    db: Database,
    budget: u64,
}

impl RecordStore {
    /// Opens or creates the store in `dir`, keeping at most `budget` bytes.
    pub fn open(dir: &Path, budget: u64) -> Result<Self, NodeError> {
        let path = dir.join("records.redb");
        let err = |e: &dyn std::fmt::Display| NodeError::Io(format!("{}: {e}", path.display()));
        let db = Database::create(&path).map_err(|e| err(&e))?;
        let tx = db.begin_write().map_err(|e| err(&e))?;
        tx.open_table(RECORDS).map_err(|e| err(&e))?;
        tx.open_table(META).map_err(|e| err(&e))?;
        tx.commit().map_err(|e| err(&e))?;
        Ok(Self { db, budget })
    }

    /// The record with this id, if kept here.
    pub fn get(&self, id: &RecordId) -> Result<Option<Record>, RecordStoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(RECORDS).map_err(db_err)?;
        let Some(v) = t.get(&id.0).map_err(db_err)? else {
            return Ok(None);
        };
        // Records were checked on the way in (signatures, authors): only
        // their format is checked again.
        let record = Record::decode_trusted(v.value(), Some(*id))?;
        Ok(Some(record))
    }

    /// The record with this id as kept (encoded), to send as it is.
    pub fn get_encoded(&self, id: &RecordId) -> Result<Option<Vec<u8>>, RecordStoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(RECORDS).map_err(db_err)?;
        Ok(t.get(&id.0).map_err(db_err)?.map(|v| v.value().to_vec()))
    }

    /// Merges `record` into the stored copy (or stores it).
    pub fn merge(
        &self,
        record: &Record,
        authority: &impl Authority,
    ) -> Result<(Stored, Record), RecordStoreError> {
        let id = record.id();
        let tx = self.db.begin_write().map_err(db_err)?;
        let outcome = {
            let mut t = tx.open_table(RECORDS).map_err(db_err)?;
            let mut meta = tx.open_table(META).map_err(db_err)?;
            let used = meta.get("bytes").map_err(db_err)?.map_or(0, |v| v.value());
            let existing = t.get(&id.0).map_err(db_err)?.map(|v| v.value().to_vec());
            match existing {
                Some(bytes) => {
                    let mut mine = Record::decode_trusted(&bytes, Some(id))?;
                    match mine.merge(record, authority)? {
                        Merged::Stale => (Stored::Stale, mine),
                        Merged::Changed => {
                            let enc = mine.encode();
                            let used = (used + enc.len() as u64).saturating_sub(bytes.len() as u64);
                            t.insert(&id.0, enc.as_slice()).map_err(db_err)?;
                            meta.insert("bytes", used).map_err(db_err)?;
                            (Stored::Merged, mine)
                        }
                    }
                }
                None => {
                    // Check every op's author before keeping a new record.
                    let enc = record.encode();
                    let checked = Record::decode(&enc, Some(id), authority)?;
                    if used + enc.len() as u64 > self.budget {
                        return Err(RecordStoreError::Full {
                            budget: self.budget,
                        });
                    }
                    t.insert(&id.0, enc.as_slice()).map_err(db_err)?;
                    meta.insert("bytes", used + enc.len() as u64)
                        .map_err(db_err)?;
                    (Stored::New, checked)
                }
            }
        };
        tx.commit().map_err(db_err)?;
        Ok(outcome)
    }

    /// Drops a record (its object was deleted, or this node is no longer a steward).
    pub fn remove(&self, id: &RecordId) -> Result<bool, RecordStoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        let removed = {
            let mut t = tx.open_table(RECORDS).map_err(db_err)?;
            let mut meta = tx.open_table(META).map_err(db_err)?;
            let gone = t
                .remove(&id.0)
                .map_err(db_err)?
                .map(|v| v.value().len() as u64);
            if let Some(len) = gone {
                let used = meta.get("bytes").map_err(db_err)?.map_or(0, |v| v.value());
                meta.insert("bytes", used.saturating_sub(len))
                    .map_err(db_err)?;
            }
            gone.is_some()
        };
        tx.commit().map_err(db_err)?;
        Ok(removed)
    }

    /// Ids of every record kept here.
    pub fn ids(&self) -> Result<Vec<RecordId>, RecordStoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(RECORDS).map_err(db_err)?;
        let mut out = Vec::with_capacity(t.len().map_err(db_err)? as usize);
        for row in t.iter().map_err(db_err)? {
            let (k, _) = row.map_err(db_err)?;
            out.push(RecordId(*k.value()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::ids::FileId;
    use cairn_core::keys::SecretKey;
    use cairn_core::record::{AnyAuthor, Change, Genesis, SegmentInfo};

    fn record(owner: &SecretKey) -> Record {
        let g = Genesis {
            file_id: FileId([1; 32]),
            owner: owner.public(),
            k: 1,
            n: 2,
            coded: 2,
            created_at: 0,
            segments: vec![SegmentInfo {
                sealed_len: 10,
                hashes: vec![[0; 32]; 2],
            }],
        };
        Record::create(g, owner, [(0, 0, vec![1]), (0, 1, vec![2])], 100).unwrap()
    }

    #[test]
    fn merge_keeps_both_replicas_ops_and_reports_stale_copies() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::open(dir.path(), 1 << 20).unwrap();
        let owner = SecretKey::from_bytes([1; 32]);
        let base = record(&owner);
        assert_eq!(store.merge(&base, &AnyAuthor).unwrap().0, Stored::New);
        assert_eq!(store.merge(&base, &AnyAuthor).unwrap().0, Stored::Stale);
        let mut a = base.clone();
        a.update(
            &SecretKey::from_bytes([2; 32]),
            1,
            vec![Change::Assign {
                segment: 0,
                index: 0,
                holder: vec![9],
            }],
            &AnyAuthor,
        )
        .unwrap();
        let mut b = base.clone();
        b.update(
            &owner,
            1,
            vec![Change::Lease { expires_at: 500 }],
            &AnyAuthor,
        )
        .unwrap();
        assert_eq!(store.merge(&a, &AnyAuthor).unwrap().0, Stored::Merged);
        assert_eq!(store.merge(&b, &AnyAuthor).unwrap().0, Stored::Merged);
        let kept = store.get(&base.id()).unwrap().unwrap();
        assert_eq!(kept.holder(0, 0), Some(&[9u8][..]));
        assert_eq!(kept.expires_at(), 500);
        assert_eq!(store.ids().unwrap(), vec![base.id()]);
        assert!(store.remove(&base.id()).unwrap());
        assert!(store.get(&base.id()).unwrap().is_none());
    }

    #[test]
    fn unauthorised_stewards_and_a_full_budget_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let owner = SecretKey::from_bytes([1; 32]);
        let mut r = record(&owner);
        r.update(
            &SecretKey::from_bytes([3; 32]),
            1,
            vec![Change::Unassign {
                segment: 0,
                index: 1,
            }],
            &AnyAuthor,
        )
        .unwrap();
        let store = RecordStore::open(dir.path(), 1 << 20).unwrap();
        let nobody = |_: &cairn_core::keys::PublicKey| false;
        assert!(matches!(
            store.merge(&r, &nobody),
            Err(RecordStoreError::Record(RecordError::NotAuthorized(_)))
        ));
        let small = dir.path().join("small");
        std::fs::create_dir_all(&small).unwrap();
        let tiny = RecordStore::open(&small, 10).unwrap();
        assert!(matches!(
            tiny.merge(&record(&owner), &AnyAuthor),
            Err(RecordStoreError::Full { budget: 10 })
        ));
    }
}
