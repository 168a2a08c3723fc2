//! The commit counter inside the store: every commit carries its number,
//! so that recovery can tell how many commits the store holds (and the
//! commit ledger can tell whether that is fewer than were acknowledged).
//!
//! The number is a key, not a value: commit `n` puts `\xffcommit/{n}` and
//! deletes `\xffcommit/{n-1}`, so exactly one such key is live. fjall's
//! journal checksums cover a batch's items but not its sequence number, and
//! a damaged sequence number reorders that batch against its neighbours:
//! its writes hide later ones, or are hidden by earlier ones, with no
//! error. Then a put or a delete of a commit key loses out too, and two
//! commit keys are live; recovery refuses such a store.

use fjall::{Keyspace as FjallKeyspace, OwnedWriteBatch};

use super::kv::{prefix_end, StorageError, StorageResult};

/// Prefix of the commit keys in the meta keyspace (no engine tag is 0xFF).
const PREFIX: &[u8] = b"\xffcommit/";
/// Where versions before the key scheme kept the count, as a value.
const LEGACY_KEY: &[u8] = b"\xffcommits";

fn key(commit: u64) -> Vec<u8> {
    let mut key = PREFIX.to_vec();
    key.extend_from_slice(&commit.to_be_bytes());
    key
}

/// Adds commit `commit`'s counter to `batch`.
pub(super) fn add(batch: &mut OwnedWriteBatch, meta: &FjallKeyspace, commit: u64) {
    batch.insert(meta, key(commit), Vec::new());
    batch.remove(meta, key(commit.saturating_sub(1)));
}

/// The number of the last commit the store holds (0 for a new store), or
/// the refusal of a store whose commit keys show reordered batches.
pub(super) fn recover(meta: &FjallKeyspace) -> StorageResult<u64> {
    let damaged =
        |err: fjall::Error| StorageError::Corrupt(format!("cannot read the commit counter: {err}"));
    let mut live = Vec::new();
    for guard in meta.range(PREFIX.to_vec()..prefix_end(PREFIX)) {
        let key = guard.key().map_err(damaged)?;
        let number = <[u8; 8]>::try_from(&key[PREFIX.len()..])
            .map(u64::from_be_bytes)
            .map_err(|_| StorageError::Corrupt("a commit key is malformed".into()))?;
        live.push(number);
    }
    if live.len() > 1 {
        let shown: Vec<String> = live.iter().take(10).map(u64::to_string).collect();
        return Err(StorageError::Corrupt(format!(
            "the journal's batches are out of order: commits {} all look like the last one, \
             which a damaged sequence number in a journal batch does (fjall's checksums do not \
             cover it); the store cannot tell which writes are current. Nothing was served. \
             Keep a copy of the data directory and restore from a backup",
            shown.join(", ")
        )));
    }
    let legacy = meta
        .get(LEGACY_KEY)
        .map_err(damaged)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes);
    Ok(live.first().copied().max(legacy).unwrap_or(0))
}

/// Moves a store written before the key scheme onto it: one durable
/// batch that puts the count as a key and drops the old value.
pub(super) fn migrate(db: &fjall::Database, meta: &FjallKeyspace, count: u64) -> fjall::Result<()> {
    if meta.get(LEGACY_KEY)?.is_none() {
        return Ok(());
    }
    let mut batch = db.batch().durability(Some(fjall::PersistMode::SyncData));
    batch.insert(meta, key(count), Vec::new());
    batch.remove(meta, LEGACY_KEY.to_vec());
    batch.commit()
}
