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
//!
//! After a failed write the store is reopened in place (see
//! [`FjallStorage::reopen`]) rather than written to again: a write cut
//! short by a full disk leaves a torn entry at the journal's end, and a
//! later commit appended after it would be dropped with it on the next
//! recovery. Reopening replays the journal, which cuts the torn entry off.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use fjall::config::BlockSizePolicy;
use fjall::{Database, KeyspaceCreateOptions, PersistMode};

use super::commit_counter;
use super::fjall_errors::{file_error, io};
use super::journal_copy;
use super::kv::{BatchOp, Keyspace, Storage, StorageError, StorageResult, Visitor, WriteBatch};
use super::ledger::{self, Ledger};
use super::reclaim::Reclaimer;

/// Table blocks of stream records: records are read in runs, so a large
/// block serves many of them per load (fjall's default, 4 KiB, holds a
/// few 1 KiB records, or part of one 8 KiB record). Measured with `s2
/// bench` catch-up reads: 64 KiB read 30–50 % faster than 4 KiB; 256 KiB
/// no faster than 64. Applies to keyspaces created with it (new data
/// directories): fjall keeps a keyspace's options.
const RECORD_BLOCK_BYTES: u32 = 64 * 1024;

/// How much journal a restart may have to replay: fjall's floor.
const MAX_JOURNALING_BYTES: u64 = 64 * 1024 * 1024;

/// Memtable size (fjall's default: 64 MiB). A table's flush fsync stalls
/// the group commit's fdatasync behind it (ext4), so smaller flushes mean
/// shorter stalls: ack p99 at 20 MiB/s 29–54 ms instead of 77–184 ms.
const MAX_MEMTABLE_BYTES: u64 = 8 * 1024 * 1024;

/// The file written and synced before a reopen, to see that the disk takes
/// writes again before the open store is let go.
const PROBE_FILE: &str = "reopen-probe";
const PROBE_BYTES: usize = 1024 * 1024;

/// How long a reopen waits for the recovered data to be flushed.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

pub struct FjallStorage {
    path: PathBuf,
    /// The open database. `None` only after a reopen failed part-way,
    /// until the next one succeeds.
    open: RwLock<Option<Open>>,
    /// Commits made durable (the counter each batch carries).
    commits: AtomicU64,
    ledger: Mutex<Ledger>,
    reclaimer: Reclaimer,
    /// Held through a write: the committer's thread is not the only
    /// writer (reclaiming makes a commit of its own), and commit numbers
    /// must be handed out and made durable in order.
    write_lock: Mutex<()>,
}

/// One opening of the database.
struct Open {
    db: Database,
    /// One fjall keyspace per [`Keyspace`], in [`Keyspace::ALL`] order.
    keyspaces: Vec<fjall::Keyspace>,
    /// Set by a failed write: this opening takes no more (see the module).
    failed: AtomicBool,
}

impl Open {
    fn keyspace(&self, keyspace: Keyspace) -> &fjall::Keyspace {
        &self.keyspaces[keyspace.index()]
    }
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

impl FjallStorage {
    /// Opens the store, refusing one that recovered fewer commits than
    /// were acknowledged.
    ///
    /// fjall cuts a journal at the first entry it cannot decode, so the
    /// journals are copied before the replay: if the store is refused,
    /// the copy is kept (moved aside, see `JournalCopy`) with the bytes
    /// past the damage; otherwise it is deleted.
    pub fn open(path: &Path) -> StorageResult<Self> {
        journal_copy::guarded(path, || Self::open_checked(path))
    }

    fn open_checked(path: &Path) -> StorageResult<Self> {
        let journals_before = journal_sizes(path);
        let (storage, acknowledged) = Self::open_unchecked(path)?;
        let recovered = storage.commits.load(Ordering::Acquire);
        if let Some(acknowledged) = acknowledged {
            if acknowledged > recovered {
                return Err(storage.lost_commits(recovered, acknowledged, &journals_before));
            }
        }
        Ok(storage)
    }

    /// The refusal for a store that recovered fewer commits than the
    /// ledger says were acknowledged.
    fn lost_commits(
        &self,
        recovered: u64,
        acknowledged: u64,
        journals_before: &[(String, u64)],
    ) -> StorageError {
        let ledger = self.lock_ledger().path().display().to_string();
        let cut: Vec<String> = journal_sizes(&self.path)
            .into_iter()
            .filter_map(|(name, now)| {
                let before = journals_before.iter().find(|(n, _)| *n == name)?.1;
                (now < before).then(|| format!("{name} was cut at byte {now} (of {before})"))
            })
            .collect();
        let lost = acknowledged - recovered;
        let path = self.path.display();
        StorageError::Corrupt(format!(
            "the store recovered {recovered} commits but {acknowledged} were acknowledged \
             ({ledger}): {lost} acknowledged commits are unreadable, most likely damage in the \
             journal ({}). Lost: {}. Nothing was served. Keep a copy of {path} before anything \
             else; `rill repair --data-dir {path}` accepts the loss and lets the server start \
             with what is intact",
            if cut.is_empty() {
                "no journal was cut on this start".to_string()
            } else {
                cut.join("; ")
            },
            describe_lost(&self.path, recovered, 10),
        ))
    }

    /// Accepts that the commits the store could not recover are gone:
    /// sets the ledger to what it recovered, and says what was lost.
    pub fn repair(path: &Path) -> StorageResult<Repair> {
        let (storage, acknowledged) = Self::open_unchecked(path)?;
        let recovered = storage.commits.load(Ordering::Acquire);
        let lost = match acknowledged {
            Some(acknowledged) if acknowledged > recovered => {
                Some((acknowledged, ledger::notes_after(path, recovered)))
            }
            _ => None,
        };
        storage
            .lock_ledger()
            .reset(recovered)
            .map_err(|e| StorageError::Io(e.to_string()))?;
        ledger::drop_notes_after(path, recovered).map_err(|e| StorageError::Io(e.to_string()))?;
        Ok(Repair { recovered, lost })
    }

    /// The store, and the count of acknowledged commits its ledger held.
    fn open_unchecked(path: &Path) -> StorageResult<(Self, Option<u64>)> {
        let (open, recovered) = open_database(path)?;
        let (ledger, acknowledged) =
            Ledger::open(path).map_err(|e| StorageError::Io(e.to_string()))?;
        let storage = Self {
            path: path.to_path_buf(),
            open: RwLock::new(Some(open)),
            commits: AtomicU64::new(recovered),
            ledger: Mutex::new(ledger),
            reclaimer: Reclaimer::default(),
            write_lock: Mutex::new(()),
        };
        Ok((storage, acknowledged))
    }

    fn lock_ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open database, or the error that says why there is none.
    fn opened(&self) -> StorageResult<OpenGuard<'_>> {
        let guard = self.open.read().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            return Err(StorageError::Reopening);
        }
        Ok(OpenGuard(guard))
    }

    /// Writes what a reopen recovered from the journal out to table
    /// files. After a failed `fsync` the page cache may hold journal pages
    /// that never reached the disk, and recovery reads them back as if
    /// they had; flushed to new, synced table files, what was recovered no
    /// longer depends on them. It also makes a reopen wait for room to
    /// flush, which fjall's next background flush would need anyway.
    fn flush_recovered(&self, open: &Open) -> StorageResult<()> {
        self.flush(open, &open.keyspaces)
    }

    /// Writes the memtables of `keyspaces` out to table files and waits,
    /// a bounded time, until they are.
    fn flush(&self, open: &Open, keyspaces: &[fjall::Keyspace]) -> StorageResult<()> {
        for keyspace in keyspaces {
            keyspace.rotate_memtable().map_err(|e| self.explain(e))?;
        }
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        while keyspaces.iter().any(|k| k.sealed_memtable_count() > 0) {
            // A failed flush stops fjall's workers and poisons the
            // database: no use waiting then.
            open.db
                .persist(PersistMode::Buffer)
                .map_err(|e| self.explain(e))?;
            if Instant::now() > deadline {
                return Err(StorageError::Io(format!(
                    "memtables were not flushed to table files within {FLUSH_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// A failed commit's error. fjall stops taking writes ("poisoned")
    /// when one of its background flushes or compactions fails, and says
    /// no more; a full disk is the common cause, and is found out here
    /// with a probe, so that the client hears "full" rather than a bare
    /// I/O error.
    fn explain(&self, err: fjall::Error) -> StorageError {
        if !matches!(err, fjall::Error::Poisoned) {
            return io(err);
        }
        match self.probe() {
            Err(StorageError::Full(why)) => StorageError::Full(format!(
                "a background flush or compaction failed and the disk is full ({why})"
            )),
            _ => StorageError::Io(
                "fjall refuses writes after an earlier write, flush or compaction failed (see \
                 the log for why)"
                    .into(),
            ),
        }
    }

    /// Writes and syncs a probe file: whether the disk takes writes again.
    fn probe(&self) -> StorageResult<()> {
        use std::io::Write;
        let path = self.path.join(PROBE_FILE);
        let result = (|| {
            let mut file = std::fs::File::create(&path)?;
            file.write_all(&vec![0u8; PROBE_BYTES])?;
            file.sync_data()
        })();
        let _ = std::fs::remove_file(&path);
        result.map_err(file_error)
    }
}

/// What `rill repair` did.
pub struct Repair {
    /// Commits the store keeps.
    pub recovered: u64,
    /// If commits were lost: how many had been acknowledged, and the
    /// notes of the lost ones (what they wrote).
    pub lost: Option<(u64, Vec<(u64, String)>)>,
}

/// The notes of the commits after `recovered`, at most `max`, in a line.
fn describe_lost(dir: &Path, recovered: u64, max: usize) -> String {
    let notes = ledger::notes_after(dir, recovered);
    if notes.is_empty() {
        return "no notes of those commits were kept".into();
    }
    let mut said: Vec<String> = notes
        .iter()
        .take(max)
        .map(|(commit, note)| format!("commit {commit}: {note}"))
        .collect();
    if notes.len() > max {
        said.push(format!(
            "and {} more (see `rill repair`)",
            notes.len() - max
        ));
    }
    said.join("; ")
}

/// A read guard on an open database (checked to be there).
struct OpenGuard<'a>(RwLockReadGuard<'a, Option<Open>>);

impl std::ops::Deref for OpenGuard<'_> {
    type Target = Open;
    fn deref(&self) -> &Open {
        self.0.as_ref().expect("checked in FjallStorage::opened")
    }
}

/// Opens the database in `path` (replaying its journal), with the commit
/// counter it recovered.
fn open_database(path: &Path) -> StorageResult<(Open, u64)> {
    let open = || {
        Database::builder(path)
            // We fsync explicitly per group commit; no background syncing.
            .manual_journal_persist(true)
            // Journals past this force memtables to flush, so a restart
            // replays at most this much (fjall's default is 512 MiB).
            .max_journaling_size(MAX_JOURNALING_BYTES)
            .open()
    };
    // fjall asserts on some damaged journal entries instead of returning
    // an error: that is damage too, and is said so.
    let db = std::panic::catch_unwind(std::panic::AssertUnwindSafe(open))
        .map_err(|_| {
            StorageError::Corrupt(
                "the storage journal is damaged: fjall failed while replaying it (see the panic \
                 above); keep a copy of the data directory: nothing was served"
                    .into(),
            )
        })?
        .map_err(io)?;
    let keyspaces = Keyspace::ALL
        .iter()
        .map(|ks| {
            db.keyspace(ks.name(), || {
                let options =
                    KeyspaceCreateOptions::default().max_memtable_size(MAX_MEMTABLE_BYTES);
                if *ks == Keyspace::StreamRecords {
                    options.data_block_size_policy(BlockSizePolicy::all(RECORD_BLOCK_BYTES))
                } else {
                    options
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)?;
    let meta = &keyspaces[Keyspace::Meta.index()];
    let recovered = commit_counter::recover(meta)?;
    commit_counter::migrate(&db, meta, recovered).map_err(io)?;
    let open = Open {
        db,
        keyspaces,
        failed: AtomicBool::new(false),
    };
    Ok((open, recovered))
}

impl Storage for FjallStorage {
    fn write(&self, mut batch: WriteBatch) -> StorageResult<()> {
        let notes = std::mem::take(&mut batch.notes);
        let _one_writer = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let open = self.opened()?;
        if open.failed.load(Ordering::Acquire) {
            return Err(StorageError::Poisoned);
        }
        let commit = self.commits.load(Ordering::Acquire) + 1;
        let mut fjall_batch = open.db.batch().durability(Some(PersistMode::SyncData));
        commit_counter::add(&mut fjall_batch, open.keyspace(Keyspace::Meta), commit);
        let mut deletes = [0u64; Keyspace::ALL.len()];
        for op in batch.ops {
            match op {
                BatchOp::Put(ks, k, v) => fjall_batch.insert(open.keyspace(ks), k, v),
                BatchOp::Delete(ks, k) => {
                    deletes[ks.index()] += 1;
                    fjall_batch.remove(open.keyspace(ks), k)
                }
            }
        }
        fjall_batch.commit().map_err(|err| {
            open.failed.store(true, Ordering::Release);
            self.explain(err)
        })?;
        self.commits.store(commit, Ordering::Release);
        for keyspace in Keyspace::ALL {
            let count = deletes[keyspace.index()];
            if count > 0 {
                self.reclaimer
                    .deleted(keyspace, open.keyspace(keyspace), count);
            }
        }
        // Only now, with the commit durable. Not fsynced: see the ledger.
        if let Err(err) = self.lock_ledger().record(commit, &notes) {
            tracing::warn!(%err, "cannot update the commit ledger");
        }
        Ok(())
    }

    /// Lets the database go and opens it again, as a restart would: the
    /// journal is replayed (a torn entry at its end cut off, files a
    /// failed flush or compaction left behind deleted), checked against
    /// the commits acknowledged so far, and flushed. Reads are served
    /// again as soon as it is open; writes only once a probe file can be
    /// written and synced and the flush went through: until then it is
    /// an error, and the store stays refusing writes.
    fn reopen(&self) -> StorageResult<()> {
        let mut slot = self.open.write().unwrap_or_else(|e| e.into_inner());
        let journals_before = journal_sizes(&self.path);
        // Dropped first: it holds fjall's lock file, and its background
        // threads stop with it.
        *slot = None;
        // As at start: the journals are kept if the replay finds damage.
        let (open, recovered) = journal_copy::guarded(&self.path, || {
            let (open, recovered) = open_database(&self.path)?;
            let acknowledged = self.commits.load(Ordering::Acquire);
            if recovered < acknowledged {
                return Err(self.lost_commits(recovered, acknowledged, &journals_before));
            }
            Ok((open, recovered))
        })?;
        // A failed write may have reached the disk after all: it counts.
        self.commits.store(recovered, Ordering::Release);
        if let Err(err) = self.lock_ledger().record(recovered, &[]) {
            tracing::warn!(%err, "cannot update the commit ledger");
        }
        // Refusing writes until the checks below pass.
        open.failed.store(true, Ordering::Release);
        *slot = Some(open);
        drop(slot);
        let open = self.opened()?;
        self.probe()?;
        self.flush_recovered(&open)?;
        open.failed.store(false, Ordering::Release);
        Ok(())
    }

    fn disk_space(&self) -> Option<u64> {
        self.opened().ok()?.db.disk_space().ok()
    }

    /// See `storage/reclaim.rs`. Not while the store refuses writes: a
    /// flush or compaction would fail the same way.
    fn reclaim_space(&self) -> StorageResult<()> {
        let open = self.opened()?;
        if open.failed.load(Ordering::Acquire) {
            return Ok(());
        }
        let (compacted, result) = self.reclaimer.run(
            &self.path,
            &open.keyspaces,
            |keyspace| self.flush(&open, std::slice::from_ref(keyspace)),
            |err| self.explain(err),
        );
        if compacted {
            // The replaced table files are deleted once fjall lets go of
            // the versions that list them, which it checks when a
            // memtable is flushed, against the newest sequence number
            // no snapshot needs. On an idle server neither moves on its
            // own: one empty commit and one flush make both happen now.
            // (Should that commit fail, the store refuses writes from
            // then on, and the engine's next write finds out and restarts
            // it, as after any failed write.)
            drop(open);
            self.write(WriteBatch::default())?;
            let open = self.opened()?;
            self.flush(&open, &open.keyspaces[Keyspace::Meta.index()..][..1])?;
        }
        result
    }

    fn get(&self, keyspace: Keyspace, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        Ok(self
            .opened()?
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
        let open = self.opened()?;
        for guard in open.keyspace(keyspace).range(start..end) {
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
        let open = self.opened()?;
        let last = open.keyspace(keyspace).range(start..end).next_back();
        match last {
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
    fn a_store_with_the_old_commit_counter_is_moved_onto_commit_keys() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::builder(dir.path()).open().unwrap();
            let meta = db
                .keyspace(Keyspace::Meta.name(), KeyspaceCreateOptions::default)
                .unwrap();
            meta.insert(b"\xffcommits", 5u64.to_be_bytes()).unwrap();
            db.persist(PersistMode::SyncAll).unwrap();
        }
        let store = FjallStorage::open(dir.path()).unwrap();
        assert_eq!(store.commits.load(Ordering::Acquire), 5);
        store.write(WriteBatch::default()).unwrap();
        drop(store);
        let store = FjallStorage::open(dir.path()).unwrap();
        assert_eq!(store.commits.load(Ordering::Acquire), 6);
        let meta = store.opened().unwrap().keyspace(Keyspace::Meta).clone();
        assert!(meta.get(b"\xffcommits").unwrap().is_none());
    }
}
