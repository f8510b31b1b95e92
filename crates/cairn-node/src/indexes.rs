//! The account indexes this node keeps as one of their replicas, in
//! `DATA_DIR/indexes.redb`.
//!
//! Table `account_indexes_v1`: key = index id (32 bytes), value = the
//! encoded [`Index`] (its own format carries a version). Every write is a
//! read-merge-write inside one redb write transaction, so two copies that
//! arrive at once can never lose either one's ops. Indexes are checked
//! (format, bounds, every op signed by the account the id commits to) before
//! they are stored; the node never holds the key that opens them. The total
//! bytes kept are bounded: a write that would grow the table past the budget
//! is refused (a merge that brings nothing or shrinks still succeeds: a
//! checkpoint that collects tombstones always fits).
//!
//! Merging is [`Index::merge`]'s, checkpoints included: a copy whose
//! checkpoint is later replaces the stored base, and ops older than the
//! stored checkpoint that are not in its base (a collected tombstone's
//! older puts, from a replica or cache that missed the collection) are
//! dropped, so they never come back here.
//!
//! Indexes live in their own database file, not `records.redb`: redb locks a
//! file per process handle, and this keeps the two stores independent.

use std::path::Path;

use cairn_core::index::{Index, IndexError, IndexId, Merged};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::NodeError;
pub use crate::records::Stored;

const INDEXES: TableDefinition<'_, &[u8; 32], &[u8]> = TableDefinition::new("account_indexes_v1");
/// Running total of the encoded bytes in `INDEXES` (key `"bytes"`).
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("account_indexes_meta_v1");

/// An index could not be stored or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexStoreError {
    /// The index itself was refused (forged, malformed, over its bounds).
    #[error(transparent)]
    Index(#[from] IndexError),
    /// Over this node's index budget.
    #[error("this node keeps at most {budget} bytes of account indexes and is full")]
    Full {
        /// The budget in bytes.
        budget: u64,
    },
    /// Database trouble.
    #[error("account index store: {0}")]
    Db(String),
}

fn db_err(e: impl std::fmt::Display) -> IndexStoreError {
    IndexStoreError::Db(e.to_string())
}

/// The replica's index table.
pub struct IndexStore {
    db: Database,
    budget: u64,
}

impl IndexStore {
    /// Opens or creates the store in `dir`, keeping at most `budget` bytes.
    pub fn open(dir: &Path, budget: u64) -> Result<Self, NodeError> {
        let path = dir.join("indexes.redb");
        let err = |e: &dyn std::fmt::Display| NodeError::Io(format!("{}: {e}", path.display()));
        let db = Database::create(&path).map_err(|e| err(&e))?;
        let tx = db.begin_write().map_err(|e| err(&e))?;
        tx.open_table(INDEXES).map_err(|e| err(&e))?;
        tx.open_table(META).map_err(|e| err(&e))?;
        tx.commit().map_err(|e| err(&e))?;
        Ok(Self { db, budget })
    }

    /// The encoded index with this id, as stored (checked on the way in).
    pub fn get_encoded(&self, id: &IndexId) -> Result<Option<Vec<u8>>, IndexStoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(INDEXES).map_err(db_err)?;
        Ok(t.get(&id.0).map_err(db_err)?.map(|v| v.value().to_vec()))
    }

    /// The index with this id, if kept here.
    pub fn get(&self, id: &IndexId) -> Result<Option<Index>, IndexStoreError> {
        match self.get_encoded(id)? {
            // Checked on the way in; redb checksums its pages.
            Some(bytes) => Ok(Some(Index::decode_trusted(&bytes, *id)?)),
            None => Ok(None),
        }
    }

    /// Bytes of indexes kept.
    pub fn used(&self) -> Result<u64, IndexStoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let meta = tx.open_table(META).map_err(db_err)?;
        Ok(meta.get("bytes").map_err(db_err)?.map_or(0, |v| v.value()))
    }

    /// Merges `index` (already decoded, so checked) into the stored copy,
    /// or stores it; returns what happened and the copy now kept.
    pub fn merge(&self, index: &Index) -> Result<(Stored, Index), IndexStoreError> {
        self.write(index.id(), |mine| match mine {
            Some(mut mine) => Ok(match mine.merge(index)? {
                Merged::Stale => (Stored::Stale, mine),
                Merged::Changed => (Stored::Merged, mine),
            }),
            None => Ok((Stored::New, index.clone())),
        })
    }

    /// Merges an encoded index (a peer's `PutIndex` body) into the stored
    /// copy, checking only the signatures of ops that change it
    /// ([`Index::merge_encoded`]), or checks all of it and stores it.
    pub fn merge_encoded(
        &self,
        id: IndexId,
        bytes: &[u8],
    ) -> Result<(Stored, Index), IndexStoreError> {
        self.write(id, |mine| match mine {
            Some(mut mine) => Ok(match mine.merge_encoded(bytes)? {
                Merged::Stale => (Stored::Stale, mine),
                Merged::Changed => (Stored::Merged, mine),
            }),
            None => Ok((Stored::New, Index::decode(bytes, Some(id))?)),
        })
    }

    /// Read-merge-write of index `id` in one write transaction: `merge`
    /// gets the stored copy and returns what to keep.
    fn write(
        &self,
        id: IndexId,
        merge: impl FnOnce(Option<Index>) -> Result<(Stored, Index), IndexStoreError>,
    ) -> Result<(Stored, Index), IndexStoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        let outcome = {
            let mut t = tx.open_table(INDEXES).map_err(db_err)?;
            let mut meta = tx.open_table(META).map_err(db_err)?;
            let used = meta.get("bytes").map_err(db_err)?.map_or(0, |v| v.value());
            let existing = t.get(&id.0).map_err(db_err)?.map(|v| v.value().to_vec());
            let old_len = existing.as_ref().map_or(0, |b| b.len() as u64);
            let mine = match existing {
                Some(bytes) => Some(Index::decode_trusted(&bytes, id)?),
                None => None,
            };
            let (stored, kept) = merge(mine)?;
            if stored == Stored::Stale {
                return Ok((stored, kept));
            }
            let enc = kept.encode();
            let new_used = (used + enc.len() as u64).saturating_sub(old_len);
            if new_used > used && new_used > self.budget {
                return Err(IndexStoreError::Full {
                    budget: self.budget,
                });
            }
            t.insert(&id.0, enc.as_slice()).map_err(db_err)?;
            meta.insert("bytes", new_used).map_err(db_err)?;
            (stored, kept)
        };
        tx.commit().map_err(db_err)?;
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::index::Account;
    use cairn_core::keys::SecretKey;

    fn account() -> Account {
        Account::new(SecretKey::from_bytes([5; 32]))
    }

    #[test]
    fn merges_in_one_transaction_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let a = account();
        let name = a.index_name(b"buckets");
        let mut one = Index::new(name);
        one.put(&a, b"photos", b"1", 10).unwrap();
        let mut two = Index::new(name);
        two.put(&a, b"videos", b"2", 11).unwrap();
        two.put(&a, b"photos", b"newer", 12).unwrap();
        {
            let store = IndexStore::open(dir.path(), 1 << 20).unwrap();
            assert_eq!(store.get(&name.id()).unwrap(), None);
            assert_eq!(store.merge(&one).unwrap().0, Stored::New);
            assert_eq!(store.merge(&one).unwrap().0, Stored::Stale);
            let (outcome, kept) = store.merge(&two).unwrap();
            assert_eq!(outcome, Stored::Merged);
            assert_eq!(
                kept.get(a.key(), b"photos").unwrap(),
                Some(b"newer".to_vec())
            );
            // An older copy merges into nothing new.
            assert_eq!(store.merge(&one).unwrap().0, Stored::Stale);
            assert_eq!(store.used().unwrap(), kept.encoded_len() as u64);
        }
        let store = IndexStore::open(dir.path(), 1 << 20).unwrap();
        let back = store.get(&name.id()).unwrap().unwrap();
        let listed: Vec<_> = back.entries(a.key()).unwrap().collect();
        assert_eq!(
            listed,
            [
                (b"photos".to_vec(), b"newer".to_vec()),
                (b"videos".to_vec(), b"2".to_vec())
            ]
        );
        assert_eq!(store.get_encoded(&name.id()).unwrap(), Some(back.encode()));
    }

    #[test]
    fn encoded_copies_from_peers_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = IndexStore::open(dir.path(), 1 << 20).unwrap();
        let a = account();
        let name = a.index_name(b"buckets");
        let mut ix = Index::new(name);
        ix.put(&a, b"photos", b"1", 10).unwrap();
        let mut bytes = ix.encode();
        // A damaged first copy is refused whole and nothing is stored.
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(
            store.merge_encoded(name.id(), &bytes),
            Err(IndexStoreError::Index(_))
        ));
        assert_eq!(store.get(&name.id()).unwrap(), None);
        assert_eq!(store.used().unwrap(), 0);
        let (outcome, _) = store.merge_encoded(name.id(), &ix.encode()).unwrap();
        assert_eq!(outcome, Stored::New);
        // A copy under another id is refused.
        let other = a.index_name(b"bucket/x").id();
        assert!(store.merge_encoded(other, &ix.encode()).is_err());
        ix.put(&a, b"videos", b"2", 11).unwrap();
        let (outcome, kept) = store.merge_encoded(name.id(), &ix.encode()).unwrap();
        assert_eq!((outcome, &kept), (Stored::Merged, &ix));
        assert_eq!(
            store.merge_encoded(name.id(), &ix.encode()).unwrap().0,
            Stored::Stale
        );
    }

    #[test]
    fn a_checkpointed_replica_drops_tombstones_and_refuses_older_puts() {
        let dir = tempfile::tempdir().unwrap();
        let a = account();
        let mut ix = Index::new(a.index_name(b"bucket/b"));
        for i in 0..20u64 {
            ix.put(&a, format!("k{i}").as_bytes(), &[0; 100], 10 + i)
                .unwrap();
        }
        let before_deletes = ix.clone();
        for i in 0..15u64 {
            ix.delete(&a, format!("k{i}").as_bytes(), 100 + i).unwrap();
        }
        // Exactly the room the tombstones need: the smaller checkpointed
        // copy must still fit, though the budget is full.
        let store = IndexStore::open(dir.path(), ix.encoded_len() as u64).unwrap();
        store.merge(&ix).unwrap();
        let collected = ix.collect(&a, 1_000, |_| true).unwrap();
        assert!(collected.encoded_len() < ix.encoded_len());
        let (outcome, kept) = store.merge_encoded(ix.id(), &collected.encode()).unwrap();
        assert_eq!((outcome, &kept), (Stored::Merged, &collected));
        assert_eq!(kept.tombstones(), 0);
        assert_eq!(store.used().unwrap(), collected.encoded_len() as u64);
        // Copies from before the deletes (a replica that missed them, a
        // stale cache) bring back none of the deleted keys.
        assert_eq!(store.merge(&before_deletes).unwrap().0, Stored::Stale);
        assert_eq!(
            store
                .merge_encoded(ix.id(), &before_deletes.encode())
                .unwrap()
                .0,
            Stored::Stale
        );
        let mut old_put = Index::new(*ix.name());
        old_put.put(&a, b"k3", b"late, old clock", 500).unwrap();
        assert_eq!(store.merge(&old_put).unwrap().0, Stored::Stale);
        let back = store.get(&ix.id()).unwrap().unwrap();
        assert_eq!(back, collected);
        assert_eq!(back.get(a.key(), b"k3").unwrap(), None);
        assert_eq!(back.entries(a.key()).unwrap().count(), 5);
        // A later put is taken as ever.
        let mut new_put = Index::new(*ix.name());
        new_put.put(&a, b"k3", b"new", 2_000).unwrap();
        assert_eq!(store.merge(&new_put).unwrap().0, Stored::Merged);
        // A replica that never had the index takes the checkpointed copy whole.
        let dir2 = tempfile::tempdir().unwrap();
        let fresh = IndexStore::open(dir2.path(), 1 << 20).unwrap();
        assert_eq!(
            fresh.merge_encoded(ix.id(), &collected.encode()).unwrap().0,
            Stored::New
        );
        assert_eq!(fresh.merge(&before_deletes).unwrap().0, Stored::Stale);
    }

    #[test]
    fn a_full_budget_refuses_growth_but_not_stale_copies() {
        let dir = tempfile::tempdir().unwrap();
        let a = account();
        let mut ix = Index::new(a.index_name(b"bucket/b"));
        ix.put(&a, b"k", &[0; 300], 1).unwrap();
        let budget = ix.encoded_len() as u64 + 100;
        let store = IndexStore::open(dir.path(), budget).unwrap();
        store.merge(&ix).unwrap();
        let small = ix.clone();
        ix.put(&a, b"k2", &[0; 300], 2).unwrap();
        assert!(matches!(
            store.merge(&ix),
            Err(IndexStoreError::Full { budget: b }) if b == budget
        ));
        // The refused write left the stored copy and the total as they were.
        assert_eq!(store.get(&ix.id()).unwrap(), Some(small.clone()));
        assert_eq!(store.used().unwrap(), small.encoded_len() as u64);
        assert_eq!(store.merge(&small).unwrap().0, Stored::Stale);
        // A same-size overwrite (a newer value for the same key) still fits.
        let mut newer = small.clone();
        newer.put(&a, b"k", &[1; 300], 3).unwrap();
        assert_eq!(store.merge(&newer).unwrap().0, Stored::Merged);
    }
}
