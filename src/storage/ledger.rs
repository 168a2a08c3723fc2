//! The commit ledger: how many commits were acknowledged, and what the
//! latest ones were, kept beside the store, so that a store that recovers
//! fewer is caught instead of silently serving less than was acknowledged,
//! and can say what it lost.
//!
//! fjall's journal recovery cannot tell a torn final entry (a write that
//! was never acknowledged) from damage in the middle of the journal: it
//! truncates at the first entry it cannot decode either way. So every
//! commit also writes a counter into the store (in the same atomic batch),
//! and after the commit is durable the counter is written here too. The
//! ledger is not fsynced: after a process crash the page cache still holds
//! it, after a power cut it may lag, so it never claims more than was made
//! durable, and a store that recovered a lower counter lost acknowledged
//! commits.
//!
//! Beside the counter, the notes of each commit (what the engine says it
//! wrote, see `WriteBatch::notes`) are appended to a notes log, one line
//! per note: `{commit} {note}`. It is rotated at `NOTES_BYTES` (the
//! previous log kept as `.old`), which covers far more commits than the
//! journal that a damage can cut.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// The ledger's file name in the data directory.
pub const LEDGER_FILE: &str = "commit-ledger";
/// The notes log's file name; the rotated one adds `.old`.
pub const NOTES_FILE: &str = "commit-notes";
/// A notes log is rotated past this size.
const NOTES_BYTES: u64 = 16 * 1024 * 1024;

pub struct Ledger {
    file: File,
    path: PathBuf,
    notes: File,
    notes_len: u64,
    /// Whether the notes log may end in a cut line (a write that failed).
    notes_torn: bool,
}

impl Ledger {
    /// Opens (or creates) the ledger in `dir`, with the count it holds
    /// (`None` for a new one, or one written by a version without it).
    pub fn open(dir: &Path) -> std::io::Result<(Self, Option<u64>)> {
        let path = dir.join(LEDGER_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let count = <[u8; 8]>::try_from(bytes.as_slice())
            .ok()
            .map(u64::from_be_bytes);
        let notes = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(NOTES_FILE))?;
        let notes_len = notes.metadata()?.len();
        // A crash can cut the last line; the next note starts afresh.
        let notes_torn = notes_len > 0 && !ends_with_newline(&dir.join(NOTES_FILE));
        let ledger = Self {
            file,
            path,
            notes,
            notes_len,
            notes_torn,
        };
        Ok((ledger, count))
    }

    /// Records that `count` commits are durable, the last of them with
    /// `notes`. The count comes first: the notes are best effort (a note
    /// that cannot be written is said in the log, and costs nothing else).
    pub fn record(&mut self, count: u64, notes: &[String]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(&count.to_be_bytes(), 0)?;
        if !notes.is_empty() {
            if let Err(err) = self.append_notes(count, notes) {
                tracing::warn!(%err, "cannot append to the commit notes");
            }
        }
        Ok(())
    }

    fn append_notes(&mut self, count: u64, notes: &[String]) -> std::io::Result<()> {
        if self.notes_len > NOTES_BYTES {
            self.rotate_notes()?;
        }
        // A line cut short by an earlier failed write is ended first, so
        // that it cannot swallow this one.
        let mut lines = if self.notes_torn {
            "\n".to_string()
        } else {
            String::new()
        };
        for note in notes {
            // One line per note, whatever the note holds.
            lines.push_str(&format!("{count} {}\n", note.replace('\n', " ")));
        }
        self.notes_torn = true;
        self.notes.write_all(lines.as_bytes())?;
        self.notes_torn = false;
        self.notes_len += lines.len() as u64;
        Ok(())
    }

    /// Starts a new notes log, keeping the current one as `.old`.
    fn rotate_notes(&mut self) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let (current, old) = (dir.join(NOTES_FILE), dir.join(format!("{NOTES_FILE}.old")));
        std::fs::rename(&current, &old)?;
        match OpenOptions::new().create(true).append(true).open(&current) {
            Ok(file) => {
                self.notes = file;
                self.notes_len = 0;
                Ok(())
            }
            Err(err) => {
                // Back as it was: the next note tries again.
                let _ = std::fs::rename(&old, &current);
                Err(err)
            }
        }
    }

    /// Overwrites the count, accepting that the commits past it are gone.
    pub fn reset(&mut self, count: u64) -> std::io::Result<()> {
        self.record(count, &[])?;
        self.file.flush()?;
        self.file.sync_all()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn ends_with_newline(path: &Path) -> bool {
    use std::io::{Seek, SeekFrom};
    let mut last = [0u8; 1];
    File::open(path)
        .and_then(|mut f| {
            f.seek(SeekFrom::End(-1))?;
            f.read_exact(&mut last)
        })
        .is_ok_and(|()| last[0] == b'\n')
}

/// Keeps only the notes of commits up to `count`: after a repair, later
/// commit numbers are used again, and the notes of the lost ones would
/// be taken for theirs.
pub fn drop_notes_after(dir: &Path, count: u64) -> std::io::Result<()> {
    let kept: String = notes_after(dir, 0)
        .into_iter()
        .filter(|(commit, _)| *commit <= count)
        .map(|(commit, note)| format!("{commit} {note}\n"))
        .collect();
    let staged = dir.join(format!("{NOTES_FILE}.new"));
    std::fs::write(&staged, kept)?;
    std::fs::rename(&staged, dir.join(NOTES_FILE))?;
    match std::fs::remove_file(dir.join(format!("{NOTES_FILE}.old"))) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// The notes of commits after `after`, oldest first, from the notes logs
/// in `dir`: what a store that recovered only `after` commits lost.
pub fn notes_after(dir: &Path, after: u64) -> Vec<(u64, String)> {
    let mut found = Vec::new();
    for name in [format!("{NOTES_FILE}.old"), NOTES_FILE.to_string()] {
        let Ok(file) = File::open(dir.join(name)) else {
            continue;
        };
        for line in BufReader::new(file).lines().map_while(Result::ok) {
            let Some((commit, note)) = line.split_once(' ') else {
                continue;
            };
            match commit.parse::<u64>() {
                Ok(commit) if commit > after => found.push((commit, note.to_string())),
                _ => {}
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_after_a_point_are_found_across_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ledger, count) = Ledger::open(dir.path()).unwrap();
        assert_eq!(count, None);
        ledger.record(1, &["one".into()]).unwrap();
        ledger.record(2, &[]).unwrap();
        ledger
            .record(3, &["three\nlines".into(), "3b".into()])
            .unwrap();
        // Past the rotation size, the next note starts a new log.
        ledger.notes_len = NOTES_BYTES + 1;
        ledger.record(4, &["four".into()]).unwrap();
        drop(ledger);
        let (_, count) = Ledger::open(dir.path()).unwrap();
        assert_eq!(count, Some(4));
        assert_eq!(
            notes_after(dir.path(), 1),
            vec![
                (3, "three lines".to_string()),
                (3, "3b".to_string()),
                (4, "four".to_string())
            ]
        );
        assert!(dir.path().join(format!("{NOTES_FILE}.old")).exists());

        // After a repair to commit 3, the lost commits' notes are gone.
        drop_notes_after(dir.path(), 3).unwrap();
        assert_eq!(notes_after(dir.path(), 0).len(), 3);
        assert!(!dir.path().join(format!("{NOTES_FILE}.old")).exists());
    }

    #[test]
    fn a_note_cut_short_by_a_crash_does_not_swallow_the_next() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(NOTES_FILE), "5 cut sh").unwrap();
        let (mut ledger, _) = Ledger::open(dir.path()).unwrap();
        ledger.record(6, &["six".into()]).unwrap();
        assert_eq!(
            notes_after(dir.path(), 0),
            vec![(5, "cut sh".to_string()), (6, "six".to_string())]
        );
    }
}
