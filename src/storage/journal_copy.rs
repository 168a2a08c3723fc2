//! A copy of the journals, taken before fjall replays them at start.
//!
//! fjall cuts a journal at the first entry it cannot decode, so after a
//! start that finds damage, the bytes past it would be gone. The copy is
//! kept when the store is refused (moved to `damaged-{unix nanos}` in the
//! data directory, for salvage by hand) and deleted otherwise. The journal
//! replayed at start is capped (see `fjall_store`), and so is the copy.

use std::path::{Path, PathBuf};

use super::kv::{StorageError, StorageResult};

/// Runs `replay` (an opening of the store, which replays its journals)
/// with a copy of the journals taken first: kept if the store is found
/// damaged (the error then says where), deleted otherwise.
pub(super) fn guarded<T>(
    data_dir: &Path,
    replay: impl FnOnce() -> StorageResult<T>,
) -> StorageResult<T> {
    let copy = JournalCopy::take(data_dir);
    let result = replay();
    match (result, copy) {
        (Err(StorageError::Corrupt(why)), Some(copy)) => {
            Err(StorageError::Corrupt(match copy.keep() {
                Some(kept) => format!(
                    "{why}. The journals as they were before the replay are kept in {}",
                    kept.display()
                ),
                None => why,
            }))
        }
        (result, copy) => {
            if let Some(copy) = copy {
                copy.discard();
            }
            result
        }
    }
}

/// A copy of the journals taken before fjall replays (and may cut) them.
struct JournalCopy {
    dir: PathBuf,
}

/// Where the copy is taken, inside the data directory.
const JOURNAL_COPY_DIR: &str = "journals-before-start";

impl JournalCopy {
    /// Copies every journal in `data_dir`; `None` if there is none, or the
    /// copy failed (then said in the log: the start goes on without it).
    fn take(data_dir: &Path) -> Option<Self> {
        let journals: Vec<PathBuf> = std::fs::read_dir(data_dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "jnl"))
            .collect();
        if journals.is_empty() {
            return None;
        }
        let dir = data_dir.join(JOURNAL_COPY_DIR);
        let copied = (|| {
            // Left by a start that was killed while opening, never
            // refused: the journals it copied are still there whole.
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir(&dir)?;
            for journal in &journals {
                if let Some(name) = journal.file_name() {
                    std::fs::copy(journal, dir.join(name))?;
                }
            }
            Ok::<_, std::io::Error>(())
        })();
        match copied {
            Ok(()) => Some(Self { dir }),
            Err(err) => {
                tracing::warn!(%err, "cannot copy the journals before replaying them");
                let _ = std::fs::remove_dir_all(&dir);
                None
            }
        }
    }

    fn discard(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Moves the copy aside, to `damaged-{unix nanos}` beside it, and
    /// returns where. A start refused again (a supervisor restarting in a
    /// loop) copies journals the first refusal already cut: holding
    /// nothing the first copy does not, that copy is dropped and the first
    /// one named.
    fn keep(self) -> Option<PathBuf> {
        let data_dir = self.dir.parent()?.to_path_buf();
        if let Some(latest) = kept_copies(&data_dir).pop() {
            if holds_nothing_new(&self.dir, &latest) {
                self.discard();
                return Some(latest);
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let kept = data_dir.join(format!("damaged-{now}"));
        match std::fs::rename(&self.dir, &kept) {
            Ok(()) => Some(kept),
            Err(_) => Some(self.dir),
        }
    }
}

/// Whether every journal in `copy` is in `kept` too, whole or longer.
fn holds_nothing_new(copy: &Path, kept: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(copy) else {
        return false;
    };
    entries.flatten().all(|entry| {
        match (
            std::fs::read(entry.path()),
            std::fs::read(kept.join(entry.file_name())),
        ) {
            (Ok(new), Ok(old)) => old.len() >= new.len() && old[..new.len()] == new[..],
            _ => false,
        }
    })
}

/// The copies kept by earlier refused starts, oldest first.
pub fn kept_copies(data_dir: &Path) -> Vec<PathBuf> {
    let mut kept: Vec<PathBuf> = std::fs::read_dir(data_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("damaged-"))
        })
        .collect();
    kept.sort();
    kept
}
