//! The commit ledger: how many commits were acknowledged, kept beside the
//! store, so that a store that recovers fewer is caught instead of
//! silently serving less than was acknowledged.
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

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The ledger's file name in the data directory.
pub const LEDGER_FILE: &str = "commit-ledger";

pub struct Ledger {
    file: File,
    path: PathBuf,
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
        Ok((Self { file, path }, count))
    }

    /// Records that `count` commits are durable.
    pub fn record(&mut self, count: u64) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(&count.to_be_bytes(), 0)
    }

    /// Overwrites the count, accepting that the commits past it are gone.
    pub fn reset(&mut self, count: u64) -> std::io::Result<()> {
        self.record(count)?;
        self.file.flush()?;
        self.file.sync_all()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
