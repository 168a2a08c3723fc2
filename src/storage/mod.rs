//! Storage: an ordered key-value store with atomic, durable batches.
//!
//! The engine needs very little from its store: point reads, ordered range
//! scans, and atomic multi-keyspace write batches that are durable (fsynced)
//! when `write` returns. Keeping the trait this small is what lets a second
//! backend (Postgres, later) slot in without the HTTP layer or the engine
//! noticing. Three implementations live here: [`FjallStorage`] on local
//! disk (the default), [`PostgresStorage`] on a Postgres database
//! (`--storage postgres://…`), and [`MemoryStorage`] for tests and
//! `--in-memory`.
//!
//! Calls are blocking; async callers go through `spawn_blocking` or the
//! dedicated committer thread.

mod commit_counter;
mod fjall_errors;
mod fjall_store;
mod journal_copy;
mod kv;
pub mod ledger;
mod memory;
mod postgres;
mod reclaim;

pub use fjall_store::{FjallStorage, Repair};
pub use kv::{
    prefix_end, BatchOp, Keyspace, Storage, StorageError, StorageResult, Visitor, WriteBatch,
};
pub use memory::MemoryStorage;
pub use postgres::{LeaseHolder, NodeRow, PostgresStorage};

#[cfg(test)]
mod tests {
    use std::ops::ControlFlow;

    use super::*;

    fn exercise(store: &dyn Storage) {
        let mut batch = WriteBatch::default();
        batch.put(Keyspace::StreamRecords, b"a2".to_vec(), b"2".to_vec());
        batch.put(Keyspace::StreamRecords, b"a1".to_vec(), b"1".to_vec());
        batch.put(Keyspace::StreamRecords, b"b1".to_vec(), b"3".to_vec());
        batch.put(Keyspace::Meta, b"a1".to_vec(), b"meta".to_vec());
        store.write(batch).unwrap();

        assert_eq!(
            store.get(Keyspace::StreamRecords, b"a1").unwrap(),
            Some(b"1".to_vec())
        );
        assert_eq!(
            store.get(Keyspace::Meta, b"a1").unwrap(),
            Some(b"meta".to_vec())
        );
        assert_eq!(store.get(Keyspace::Timestamps, b"a1").unwrap(), None);

        let mut seen = Vec::new();
        store
            .scan(Keyspace::StreamRecords, b"a", b"b", &mut |k, v| {
                seen.push((k.to_vec(), v.to_vec()));
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(
            seen,
            vec![
                (b"a1".to_vec(), b"1".to_vec()),
                (b"a2".to_vec(), b"2".to_vec())
            ]
        );

        let mut first = None;
        store
            .scan(Keyspace::StreamRecords, b"a", b"z", &mut |k, _| {
                first = Some(k.to_vec());
                ControlFlow::Break(())
            })
            .unwrap();
        assert_eq!(first, Some(b"a1".to_vec()));

        let last = store
            .last_in_range(Keyspace::StreamRecords, b"a", b"b")
            .unwrap();
        assert_eq!(last, Some((b"a2".to_vec(), b"2".to_vec())));
        assert_eq!(
            store
                .last_in_range(Keyspace::StreamRecords, b"c", b"d")
                .unwrap(),
            None
        );

        let mut batch = WriteBatch::default();
        batch.delete(Keyspace::StreamRecords, b"a1".to_vec());
        store.write(batch).unwrap();
        assert_eq!(store.get(Keyspace::StreamRecords, b"a1").unwrap(), None);
    }

    #[test]
    fn memory_storage_contract() {
        exercise(&MemoryStorage::default());
    }

    #[test]
    fn fjall_storage_contract_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = FjallStorage::open(dir.path()).unwrap();
            exercise(&store);
        }
        let store = FjallStorage::open(dir.path()).unwrap();
        assert_eq!(
            store.get(Keyspace::StreamRecords, b"a2").unwrap(),
            Some(b"2".to_vec())
        );
        assert_eq!(store.get(Keyspace::StreamRecords, b"a1").unwrap(), None);
    }
}
