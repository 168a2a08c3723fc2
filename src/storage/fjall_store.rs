//! The embedded default: fjall, an LSM-tree store, on local disk.
//!
//! Each [`Keyspace`] is a fjall keyspace. A [`WriteBatch`] becomes one fjall
//! batch committed with `PersistMode::SyncData`: one journal append and one
//! `fdatasync`, atomic across keyspaces. fjall's journal recovery drops a torn
//! final batch, which gives the engine its "wholly there or wholly absent"
//! guarantee for unacknowledged writes.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use fjall::{Database, KeyspaceCreateOptions, PersistMode};

use super::kv::{BatchOp, Keyspace, Storage, StorageError, StorageResult, Visitor, WriteBatch};

pub struct FjallStorage {
    db: Database,
    /// One fjall keyspace per [`Keyspace`], in [`Keyspace::ALL`] order.
    keyspaces: Vec<fjall::Keyspace>,
    poisoned: AtomicBool,
}

/// How much journal a restart may have to replay: fjall's floor.
const MAX_JOURNALING_BYTES: u64 = 64 * 1024 * 1024;

fn io(err: fjall::Error) -> StorageError {
    // A full disk is told apart, wherever in the chain of causes the I/O
    // error sits: the client and the operator get a different answer.
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(current) = cause {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::StorageFull || io.raw_os_error() == Some(28) {
                return StorageError::Full(err.to_string());
            }
        }
        cause = current.source();
    }
    StorageError::Io(err.to_string())
}

impl FjallStorage {
    pub fn open(path: &Path) -> StorageResult<Self> {
        let db = Database::builder(path)
            // We fsync explicitly per group commit; no background syncing.
            .manual_journal_persist(true)
            // Journals past this force memtables to flush, so a restart
            // replays at most this much (fjall's default is 512 MiB).
            .max_journaling_size(MAX_JOURNALING_BYTES)
            .open()
            .map_err(io)?;
        let keyspaces = Keyspace::ALL
            .iter()
            .map(|ks| db.keyspace(ks.name(), KeyspaceCreateOptions::default))
            .collect::<Result<Vec<_>, _>>()
            .map_err(io)?;
        Ok(Self {
            db,
            keyspaces,
            poisoned: AtomicBool::new(false),
        })
    }

    fn keyspace(&self, keyspace: Keyspace) -> &fjall::Keyspace {
        &self.keyspaces[keyspace.index()]
    }
}

impl Storage for FjallStorage {
    fn write(&self, batch: WriteBatch) -> StorageResult<()> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(StorageError::Poisoned);
        }
        let mut fjall_batch = self.db.batch().durability(Some(PersistMode::SyncData));
        for op in batch.ops {
            match op {
                BatchOp::Put(ks, k, v) => fjall_batch.insert(self.keyspace(ks), k, v),
                BatchOp::Delete(ks, k) => fjall_batch.remove(self.keyspace(ks), k),
            }
        }
        fjall_batch.commit().map_err(|err| {
            self.poisoned.store(true, Ordering::Release);
            io(err)
        })
    }

    fn get(&self, keyspace: Keyspace, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        Ok(self
            .keyspace(keyspace)
            .get(key)
            .map_err(io)?
            .map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        keyspace: Keyspace,
        start: &[u8],
        end: &[u8],
        visit: &mut Visitor<'_>,
    ) -> StorageResult<()> {
        if start >= end {
            return Ok(());
        }
        for guard in self.keyspace(keyspace).range(start..end) {
            let (k, v) = guard.into_inner().map_err(io)?;
            if visit(&k, &v).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn last_in_range(
        &self,
        keyspace: Keyspace,
        start: &[u8],
        end: &[u8],
    ) -> StorageResult<Option<(Vec<u8>, Vec<u8>)>> {
        if start >= end {
            return Ok(None);
        }
        match self.keyspace(keyspace).range(start..end).next_back() {
            Some(guard) => {
                let (k, v) = guard.into_inner().map_err(io)?;
                Ok(Some((k.to_vec(), v.to_vec())))
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_told_apart_from_other_io_errors() {
        let full = fjall::Error::Io(std::io::Error::from_raw_os_error(28));
        assert!(matches!(io(full), StorageError::Full(_)));
        let other = fjall::Error::Io(std::io::Error::other("broken"));
        assert!(matches!(io(other), StorageError::Io(_)));
    }
}
