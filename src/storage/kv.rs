//! The contract between the engine and a store: keyspaces, atomic write
//! batches, errors, and the `Storage` trait every backend implements.

use std::ops::ControlFlow;

/// The separate ordered key spaces the engine uses. See
/// `docs/ARCHITECTURE.md` for what each one holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Keyspace {
    /// Basin and stream metadata, stream tails, id counters.
    Meta = 0,
    /// Stream records by (stream id, seq num).
    StreamRecords = 1,
    /// Sparse index by (stream id, record timestamp, seq num).
    Timestamps = 2,
    /// Sparse index by (stream id, arrival time, seq num), for retention.
    Arrivals = 3,
    /// Collection documents by (collection id, record id).
    Docs = 4,
    /// A collection's records stream: (collection id, updated_at, record
    /// id). Stored under the name "changes", which it had first.
    RecordsStream = 5,
}

impl Keyspace {
    pub const ALL: [Keyspace; 6] = [
        Keyspace::Meta,
        Keyspace::StreamRecords,
        Keyspace::Timestamps,
        Keyspace::Arrivals,
        Keyspace::Docs,
        Keyspace::RecordsStream,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Keyspace::Meta => "meta",
            Keyspace::StreamRecords => "records",
            Keyspace::Timestamps => "timestamps",
            Keyspace::Arrivals => "arrivals",
            Keyspace::Docs => "docs",
            Keyspace::RecordsStream => "changes",
        }
    }

    /// Position in [`Keyspace::ALL`], for backends that keep an array.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One mutation in a [`WriteBatch`].
#[derive(Clone, Debug)]
pub enum BatchOp {
    Put(Keyspace, Vec<u8>, Vec<u8>),
    Delete(Keyspace, Vec<u8>),
}

/// A set of mutations applied all together or not at all.
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    pub ops: Vec<BatchOp>,
    /// What the batch means, in words ("stream … seq nums 5..8"): a store
    /// with a commit ledger keeps them beside it, so that a store found
    /// damaged can say what it lost (see [`super::ledger`]).
    pub notes: Vec<String>,
}

impl WriteBatch {
    pub fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    pub fn put(&mut self, keyspace: Keyspace, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push(BatchOp::Put(keyspace, key, value));
    }

    pub fn delete(&mut self, keyspace: Keyspace, key: Vec<u8>) {
        self.ops.push(BatchOp::Delete(keyspace, key));
    }

    pub fn extend(&mut self, other: WriteBatch) {
        self.ops.extend(other.ops);
        self.notes.extend(other.notes);
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Approximate bytes the batch will write; used to bound group commits.
    pub fn approximate_size(&self) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                BatchOp::Put(_, k, v) => k.len() + v.len(),
                BatchOp::Delete(_, k) => k.len(),
            })
            .sum()
    }
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage I/O error: {0}")]
    Io(String),
    /// The disk is full: a write could not be made durable.
    #[error("no space left on the storage device: {0}")]
    Full(String),
    /// An earlier write failed; writes are refused until the store is
    /// reopened (the engine does that by itself).
    #[error("writes are paused after a storage failure, until the storage is reopened")]
    Poisoned,
    /// The store is closed between a failed write and its reopening.
    #[error("the storage is being reopened after a failed write; try again shortly")]
    Reopening,
    #[error("corrupt data in storage: {0}")]
    Corrupt(String),
    #[error("the server is shutting down")]
    Closed,
}

pub type StorageResult<T> = Result<T, StorageError>;

/// Called for each key-value pair of a scan; `Break` ends the scan early.
pub type Visitor<'a> = dyn FnMut(&[u8], &[u8]) -> ControlFlow<()> + 'a;

/// An ordered key-value store with durable atomic batches.
pub trait Storage: Send + Sync + 'static {
    /// Applies `batch` atomically and makes it durable before returning.
    /// After an error the store must refuse further writes (fail-stop)
    /// until [`Storage::reopen`]: the engine has already assigned sequence
    /// numbers past what is on disk, and a failed write may have left
    /// part of itself behind.
    fn write(&self, batch: WriteBatch) -> StorageResult<()>;

    /// Recovers from a failed write as a restart would: drops what the
    /// store holds in memory and reads back what is durable, so that
    /// writes can resume. The engine calls it once it has stopped writing
    /// through its old state, and opens that state anew afterwards. An
    /// error leaves the store refusing writes; the engine tries again
    /// later.
    fn reopen(&self) -> StorageResult<()>;

    /// Gives back the disk space of deleted data if enough of it piled
    /// up (upkeep calls it about once a second). Blocking: it may
    /// compact for seconds.
    fn reclaim_space(&self) -> StorageResult<()>;

    /// The bytes the store takes on disk (`None` for one in memory, or
    /// while it cannot tell).
    fn disk_space(&self) -> Option<u64> {
        None
    }

    fn get(&self, keyspace: Keyspace, key: &[u8]) -> StorageResult<Option<Vec<u8>>>;

    /// Visits keys in `[start, end)` in ascending order until `visit` breaks.
    fn scan(
        &self,
        keyspace: Keyspace,
        start: &[u8],
        end: &[u8],
        visit: &mut Visitor<'_>,
    ) -> StorageResult<()>;

    /// The greatest key in `[start, end)`, if any.
    fn last_in_range(
        &self,
        keyspace: Keyspace,
        start: &[u8],
        end: &[u8],
    ) -> StorageResult<Option<(Vec<u8>, Vec<u8>)>>;
}

/// The smallest key greater than every key that starts with `prefix`: the
/// exclusive end of a prefix scan.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xFF: no finite upper bound; use a key longer than any real one.
    vec![u8::MAX; prefix.len() + 1024]
}
