//! In-memory storage for tests and `--in-memory`: nothing survives the process.

use std::collections::BTreeMap;
use std::sync::RwLock;

use super::kv::{BatchOp, Keyspace, Storage, StorageError, StorageResult, Visitor, WriteBatch};

type Tree = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Default)]
pub struct MemoryStorage {
    // One lock over all keyspaces makes each batch atomic for readers.
    trees: RwLock<[Tree; Keyspace::ALL.len()]>,
}

fn poisoned() -> StorageError {
    StorageError::Poisoned
}

impl Storage for MemoryStorage {
    fn write(&self, batch: WriteBatch) -> StorageResult<()> {
        let mut trees = self.trees.write().map_err(|_| poisoned())?;
        for op in batch.ops {
            match op {
                BatchOp::Put(ks, k, v) => {
                    trees[ks.index()].insert(k, v);
                }
                BatchOp::Delete(ks, k) => {
                    trees[ks.index()].remove(&k);
                }
            }
        }
        Ok(())
    }

    /// Nothing to recover: a batch is either applied whole or not at all.
    fn reopen(&self) -> StorageResult<()> {
        Ok(())
    }

    /// Nothing to do: a deleted entry is gone from the map at once.
    fn reclaim_space(&self) -> StorageResult<()> {
        Ok(())
    }

    fn get(&self, keyspace: Keyspace, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        let trees = self.trees.read().map_err(|_| poisoned())?;
        Ok(trees[keyspace.index()].get(key).cloned())
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
        let trees = self.trees.read().map_err(|_| poisoned())?;
        for (k, v) in trees[keyspace.index()].range(start.to_vec()..end.to_vec()) {
            if visit(k, v).is_break() {
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
        let trees = self.trees.read().map_err(|_| poisoned())?;
        Ok(trees[keyspace.index()]
            .range(start.to_vec()..end.to_vec())
            .next_back()
            .map(|(k, v)| (k.clone(), v.clone())))
    }
}
