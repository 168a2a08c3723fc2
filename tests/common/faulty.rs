//! A storage that misbehaves on purpose: each write batch passes through a
//! fault first, which may change it, fail it before it is written (a short
//! write, a full disk), or fail it after it is written (a failed `fsync`:
//! the data may be there, the writer is told it is not). Reads are the
//! inner store's.

use rill::storage::{
    BatchOp, Keyspace, MemoryStorage, Storage, StorageError, StorageResult, Visitor, WriteBatch,
};

/// Whether `batch` appends records to a stream: a fault meant for an
/// append must not be taken by a background write (the usage tick's, say)
/// that happens to come first.
pub fn writes_records(batch: &WriteBatch) -> bool {
    batch
        .ops
        .iter()
        .any(|op| matches!(op, BatchOp::Put(Keyspace::StreamRecords, ..)))
}

/// What a fault does to one write.
pub enum Fault {
    /// Fails the write; nothing of it is stored.
    Refuse(StorageError),
    /// Stores the write, then fails it anyway.
    FailAfterWriting(StorageError),
}

pub struct FaultyStorage<F, S = MemoryStorage> {
    inner: S,
    fault: F,
}

impl<F> FaultyStorage<F>
where
    F: Fn(&mut WriteBatch) -> Option<Fault> + Send + Sync + 'static,
{
    /// Over a memory store. `fault` sees every batch before it is written:
    /// it may alter it, or say how the write fails.
    pub fn new(fault: F) -> Self {
        Self::over(MemoryStorage::default(), fault)
    }
}

impl<F, S: Storage> FaultyStorage<F, S>
where
    F: Fn(&mut WriteBatch) -> Option<Fault> + Send + Sync + 'static,
{
    pub fn over(inner: S, fault: F) -> Self {
        Self { inner, fault }
    }
}

impl<F, S: Storage> Storage for FaultyStorage<F, S>
where
    F: Fn(&mut WriteBatch) -> Option<Fault> + Send + Sync + 'static,
{
    fn write(&self, mut batch: WriteBatch) -> StorageResult<()> {
        match (self.fault)(&mut batch) {
            None => self.inner.write(batch),
            Some(Fault::Refuse(err)) => Err(err),
            Some(Fault::FailAfterWriting(err)) => {
                self.inner.write(batch)?;
                Err(err)
            }
        }
    }

    /// Refused while the fault would refuse an empty write (as a real
    /// store's probe of the disk would be).
    fn reopen(&self) -> StorageResult<()> {
        match (self.fault)(&mut WriteBatch::default()) {
            Some(Fault::Refuse(err)) => Err(err),
            _ => self.inner.reopen(),
        }
    }

    fn reclaim_space(&self) -> StorageResult<()> {
        self.inner.reclaim_space()
    }

    fn get(&self, keyspace: Keyspace, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        self.inner.get(keyspace, key)
    }

    fn scan(
        &self,
        keyspace: Keyspace,
        start: &[u8],
        end: &[u8],
        visit: &mut Visitor<'_>,
    ) -> StorageResult<()> {
        self.inner.scan(keyspace, start, end, visit)
    }

    fn last_in_range(
        &self,
        keyspace: Keyspace,
        start: &[u8],
        end: &[u8],
    ) -> StorageResult<Option<(Vec<u8>, Vec<u8>)>> {
        self.inner.last_in_range(keyspace, start, end)
    }
}
