//! The local list of files this node has put (`cairn ls`), in `DATA_DIR/node.redb`.
//!
//! It holds capabilities, which are secrets, so the database file is made
//! mode 0600. Table `files_v1`: key = a sequence number (u64, ascending),
//! value = JSON of [`FileRecord`]. A new record layout gets a new table name.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::NodeError;

const FILES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("files_v1");

/// One file put through this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Name given at put time, if any.
    pub name: Option<String>,
    /// Plaintext bytes.
    pub size: u64,
    /// Read capability.
    pub cap: String,
    /// Unix seconds.
    pub created_at: u64,
}

/// The file list.
pub struct Catalog {
    db: Database,
}

fn db_err(e: impl std::fmt::Display) -> NodeError {
    NodeError::Io(format!("file catalog: {e}"))
}

impl Catalog {
    /// Opens or creates the catalog in `dir`.
    pub fn open(dir: &Path) -> Result<Self, NodeError> {
        let path = dir.join("node.redb");
        let db = Database::create(&path).map_err(db_err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(db_err)?;
        }
        let tx = db.begin_write().map_err(db_err)?;
        tx.open_table(FILES).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(Self { db })
    }

    /// Appends a record.
    pub fn add(&self, record: &FileRecord) -> Result<(), NodeError> {
        let value = serde_json::to_vec(record).map_err(db_err)?;
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = tx.open_table(FILES).map_err(db_err)?;
            let next = t
                .last()
                .map_err(db_err)?
                .map(|(k, _)| k.value() + 1)
                .unwrap_or(0);
            t.insert(next, value.as_slice()).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    /// Removes every record with capability `cap`; returns how many.
    pub fn remove(&self, cap: &str) -> Result<usize, NodeError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        let mut removed = 0;
        {
            let mut t = tx.open_table(FILES).map_err(db_err)?;
            let mut doomed = Vec::new();
            for row in t.iter().map_err(db_err)? {
                let (k, v) = row.map_err(db_err)?;
                let r: FileRecord = serde_json::from_slice(v.value()).map_err(db_err)?;
                if r.cap == cap {
                    doomed.push(k.value());
                }
            }
            for k in doomed {
                t.remove(k).map_err(db_err)?;
                removed += 1;
            }
        }
        tx.commit().map_err(db_err)?;
        Ok(removed)
    }

    /// All records, oldest first.
    pub fn list(&self) -> Result<Vec<FileRecord>, NodeError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(FILES).map_err(db_err)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db_err)? {
            let (_, v) = row.map_err(db_err)?;
            out.push(serde_json::from_slice(v.value()).map_err(db_err)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_persist_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let r = |n: u64| FileRecord {
            name: Some(format!("f{n}")),
            size: n,
            cap: format!("cairn:{n}"),
            created_at: n,
        };
        {
            let c = Catalog::open(dir.path()).unwrap();
            c.add(&r(1)).unwrap();
            c.add(&r(2)).unwrap();
        }
        assert_eq!(
            Catalog::open(dir.path()).unwrap().list().unwrap(),
            vec![r(1), r(2)]
        );
    }
}
