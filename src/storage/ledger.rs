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
//! per note: `{commit} {note}`. It is rotated at [`NOTES_BYTES`] (the
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
        let ledger = Self {
            file,
            path,
            notes,
            notes_len,
        };
        Ok((ledger, count))
    }

    /// Records that `count` commits are durable, the last of them with
    /// `notes`.
    pub fn record(&mut self, count: u64, notes: &[String]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        if !notes.is_empty() {
            self.append_notes(count, notes)?;
        }
        self.file.write_all_at(&count.to_be_bytes(), 0)
    }

    fn append_notes(&mut self, count: u64, notes: &[String]) -> std::io::Result<()> {
        if self.notes_len > NOTES_BYTES {
            let dir = self.path.parent().unwrap_or(Path::new("."));
            std::fs::rename(dir.join(NOTES_FILE), dir.join(format!("{NOTES_FILE}.old")))?;
            self.notes = OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(NOTES_FILE))?;
            self.notes_len = 0;
        }
        let mut lines = String::new();
        for note in notes {
            // One line per note, whatever the note holds.
            lines.push_str(&format!("{count} {}\n", note.replace('\n', " ")));
        }
        self.notes.write_all(lines.as_bytes())?;
        self.notes_len += lines.len() as u64;
        Ok(())
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
    }
}
