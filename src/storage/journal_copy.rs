//! A copy of the journals, taken before fjall replays them at start.
//!
//! fjall cuts a journal at the first entry it cannot decode, so after a
//! start that finds damage, the bytes past it would be gone. The copy is
//! kept when the store is refused (moved to `damaged-{unix time}` in the
//! data directory, for salvage by hand) and deleted otherwise. The journal
//! replayed at start is capped (see `fjall_store`), and so is the copy.

use std::path::{Path, PathBuf};

/// A copy of the journals taken before fjall replays (and may cut) them.
pub(super) struct JournalCopy {
    dir: PathBuf,
}

/// Where the copy is taken, inside the data directory.
const JOURNAL_COPY_DIR: &str = "journals-before-start";

impl JournalCopy {
    /// Copies every journal in `data_dir`; `None` if there is none, or the
    /// copy failed (then said in the log: the start goes on without it).
    pub(super) fn take(data_dir: &Path) -> Option<Self> {
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

    pub(super) fn discard(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Moves the copy aside, to `damaged-{unix time}` beside it.
    pub(super) fn keep(self) -> Option<PathBuf> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let kept = self.dir.with_file_name(format!("damaged-{now}"));
        std::fs::rename(&self.dir, &kept).ok()?;
        Some(kept)
    }
}
