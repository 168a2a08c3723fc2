//! The embedded default: fjall, an LSM-tree store, on local disk.
//!
//! Each [`Keyspace`] is a fjall keyspace. A [`WriteBatch`] becomes one fjall
//! batch committed with `PersistMode::SyncData`: one journal append and one
//! `fdatasync`, atomic across keyspaces. fjall's journal recovery drops a torn
//! final batch, which gives the engine its "wholly there or wholly absent"
//! guarantee for unacknowledged writes. Damage anywhere else in the
//! journal is caught by the commit ledger (see [`super::ledger`]): the
//! store refuses to open rather than serve less than was acknowledged.
//! Its journals are capped at [`MAX_JOURNALING_BYTES`], so a restart
//! replays at most that much.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use fjall::{Database, KeyspaceCreateOptions, PersistMode};

use super::kv::{BatchOp, Keyspace, Storage, StorageError, StorageResult, Visitor, WriteBatch};
use super::ledger::Ledger;

/// The commit counter's key in the meta keyspace (no engine tag is 0xFF).
const COMMIT_KEY: &[u8] = b"\xffcommits";

pub struct FjallStorage {
    db: Database,
    /// One fjall keyspace per [`Keyspace`], in [`Keyspace::ALL`] order.
    keyspaces: Vec<fjall::Keyspace>,
    poisoned: AtomicBool,
    /// Commits made durable (the counter each batch carries).
    commits: AtomicU64,
    ledger: Mutex<Ledger>,
}

/// Sizes of the journal files in `dir`, by name.
fn journal_sizes(dir: &Path) -> Vec<(String, u64)> {
    let mut sizes: Vec<(String, u64)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "jnl"))
        .filter_map(|e| {
            Some((
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().ok()?.len(),
            ))
        })
        .collect();
    sizes.sort();
    sizes
}

/// How much journal a restart may have to replay: fjall's floor.
const MAX_JOURNALING_BYTES: u64 = 64 * 1024 * 1024;

fn io(err: fjall::Error) -> StorageError {
    if matches!(err, fjall::Error::JournalRecovery(_)) {
        return StorageError::Corrupt(format!(
            "the storage journal is damaged and fjall will not replay it ({err}); keep a copy \
             of the data directory: nothing was served"
        ));
    }
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
    /// Opens the store, refusing one that recovered fewer commits than
    /// were acknowledged.
    pub fn open(path: &Path) -> StorageResult<Self> {
        let journals_before = journal_sizes(path);
        let (storage, acknowledged) = Self::open_unchecked(path)?;
        let recovered = storage.commits.load(Ordering::Acquire);
        if let Some(acknowledged) = acknowledged {
            if acknowledged > recovered {
                let ledger = storage
                    .ledger
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .path()
                    .display()
                    .to_string();
                let cut: Vec<String> = journal_sizes(path)
                    .into_iter()
                    .filter_map(|(name, now)| {
                        let before = journals_before.iter().find(|(n, _)| *n == name)?.1;
                        (now < before)
                            .then(|| format!("{name} was cut at byte {now} (of {before})"))
                    })
                    .collect();
                let lost = acknowledged - recovered;
                return Err(StorageError::Corrupt(format!(
                    "the store recovered {recovered} commits but {acknowledged} were acknowledged \
                     ({ledger}): {lost} acknowledged commits are unreadable, most likely damage \
                     in the journal ({}). Nothing was served. Keep a copy of {} before anything \
                     else; `rill repair --data-dir {}` accepts the loss and lets the server start \
                     with what is intact",
                    if cut.is_empty() {
                        "no journal was cut on this start".to_string()
                    } else {
                        cut.join("; ")
                    },
                    path.display(),
                    path.display()
                )));
            }
        }
        Ok(storage)
    }

    /// Accepts that the commits the store could not recover are gone:
    /// sets the ledger to what it recovered. Returns (recovered,
    /// acknowledged before).
    pub fn repair(path: &Path) -> StorageResult<(u64, Option<u64>)> {
        let (storage, acknowledged) = Self::open_unchecked(path)?;
        let recovered = storage.commits.load(Ordering::Acquire);
        storage
            .ledger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reset(recovered)
            .map_err(|e| StorageError::Io(e.to_string()))?;
        Ok((recovered, acknowledged))
    }

    /// The store, and the count of acknowledged commits its ledger held.
    fn open_unchecked(path: &Path) -> StorageResult<(Self, Option<u64>)> {
        let open = || {
            Database::builder(path)
                // We fsync explicitly per group commit; no background syncing.
                .manual_journal_persist(true)
                // Journals past this force memtables to flush, so a restart
                // replays at most this much (fjall's default is 512 MiB).
                .max_journaling_size(MAX_JOURNALING_BYTES)
                .open()
        };
        // fjall asserts on some damaged journal entries instead of
        // returning an error: that is damage too, and is said so.
        let db = std::panic::catch_unwind(std::panic::AssertUnwindSafe(open))
            .map_err(|_| {
                StorageError::Corrupt(
                    "the storage journal is damaged: fjall failed while replaying it (see the \
                     panic above); keep a copy of the data directory: nothing was served"
                        .into(),
                )
            })?
            .map_err(io)?;
        let keyspaces = Keyspace::ALL
            .iter()
            .map(|ks| db.keyspace(ks.name(), KeyspaceCreateOptions::default))
            .collect::<Result<Vec<_>, _>>()
            .map_err(io)?;
        let recovered = keyspaces[Keyspace::Meta.index()]
            .get(COMMIT_KEY)
            .map_err(io)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes);
        let (ledger, acknowledged) =
            Ledger::open(path).map_err(|e| StorageError::Io(e.to_string()))?;
        let storage = Self {
            db,
            keyspaces,
            poisoned: AtomicBool::new(false),
            commits: AtomicU64::new(recovered),
            ledger: Mutex::new(ledger),
        };
        Ok((storage, acknowledged))
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
        let commit = self.commits.load(Ordering::Acquire) + 1;
        let mut fjall_batch = self.db.batch().durability(Some(PersistMode::SyncData));
        fjall_batch.insert(
            self.keyspace(Keyspace::Meta),
            COMMIT_KEY.to_vec(),
            commit.to_be_bytes().to_vec(),
        );
        for op in batch.ops {
            match op {
                BatchOp::Put(ks, k, v) => fjall_batch.insert(self.keyspace(ks), k, v),
                BatchOp::Delete(ks, k) => fjall_batch.remove(self.keyspace(ks), k),
            }
        }
        fjall_batch.commit().map_err(|err| {
            self.poisoned.store(true, Ordering::Release);
            io(err)
        })?;
        self.commits.store(commit, Ordering::Release);
        // Only now, with the commit durable. Not fsynced: see the ledger.
        let mut ledger = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(err) = ledger.record(commit) {
            tracing::warn!(%err, "cannot update the commit ledger");
        }
        Ok(())
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
