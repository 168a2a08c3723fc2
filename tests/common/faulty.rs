//! A storage that misbehaves on purpose: each write batch passes through a
//! fault first, which may change it or fail it; reads are the memory
//! store's.

use rill::storage::{
    Keyspace, MemoryStorage, Storage, StorageError, StorageResult, Visitor, WriteBatch,
};

pub struct FaultyStorage<F> {
    inner: MemoryStorage,
    fault: F,
}

impl<F> FaultyStorage<F>
where
    F: Fn(&mut WriteBatch) -> Option<StorageError> + Send + Sync + 'static,
{
    /// `fault` sees every batch before it is written: it may alter it, or
    /// return the error the write fails with instead.
    pub fn new(fault: F) -> Self {
        Self {
            inner: MemoryStorage::default(),
            fault,
        }
    }
}

impl<F> Storage for FaultyStorage<F>
where
    F: Fn(&mut WriteBatch) -> Option<StorageError> + Send + Sync + 'static,
{
    fn write(&self, mut batch: WriteBatch) -> StorageResult<()> {
        match (self.fault)(&mut batch) {
            Some(err) => Err(err),
            None => self.inner.write(batch),
        }
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
