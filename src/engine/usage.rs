//! The usage history behind S2's metrics API, kept on disk so that a
//! restart loses none of it (a crash, at most the last minute's counts).
//!
//! Every minute (and at a clean shutdown) [`UsageHistory::tick`] moves
//! the counts made since into the [`History`], takes the hour's storage
//! sample if it has none yet, drops what is older than its window, and
//! writes what changed through the committer, one batch a minute:
//!
//! - `Um{minute}` → a minute's counts ([`Bucket`] as JSON), for a day;
//! - `Uh{hour}` → an hour's counts, rewritten while the hour runs, 30 days;
//! - `Ug{hour}` → the hour's [`StorageSample`], 30 days (its per-stream
//!   figures for a day).
//!
//! Each consumer's lag is sampled every tick too, and kept an hour, in
//! memory only (the console draws it; Prometheus is where lag is kept).
//!
//! (`{minute}` and `{hour}` are Unix seconds, big-endian.) Queries take
//! the counts not yet moved first, so they see the last second too.

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::sync::Mutex;

use super::error::EngineResult;
use super::streams::StreamCore;
use crate::engine::streams::keys::{decode_json, encode_json, read_u64};
use crate::metrics::history::{align, Bucket, History, Lags, StorageSample, HOUR};
use crate::metrics::usage::now_secs;
use crate::metrics::Metrics;
use crate::storage::{prefix_end, Keyspace, Storage, WriteBatch};

/// Opens every usage key in the meta keyspace.
pub(super) const USAGE_TAG: u8 = b'U';

/// The three kinds of entry, by the byte after the tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Entry {
    Minute,
    Hour,
    Sample,
}

impl Entry {
    fn tag(self) -> u8 {
        match self {
            Self::Minute => b'm',
            Self::Hour => b'h',
            Self::Sample => b'g',
        }
    }

    fn key(self, at: u64) -> Vec<u8> {
        let mut key = vec![USAGE_TAG, self.tag()];
        key.extend_from_slice(&at.to_be_bytes());
        key
    }
}

/// The history, and which of its entries the disk has not seen yet.
#[derive(Default)]
pub struct UsageHistory {
    state: Mutex<State>,
    /// Held through a whole tick, its write included, so that two ticks
    /// (the minute's and shutdown's) never land out of order.
    ticking: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    history: History,
    /// Entries changed since they were last written.
    dirty: BTreeSet<(Entry, u64)>,
    /// Entries expired whose keys are not deleted yet.
    expired: BTreeSet<(Entry, u64)>,
}

/// What one tick writes: kept, to mark again if the write fails.
struct Written {
    dirty: BTreeSet<(Entry, u64)>,
    expired: BTreeSet<(Entry, u64)>,
}

impl State {
    /// Moves the counts `metrics` has gathered into the history.
    fn absorb(&mut self, metrics: &Metrics) {
        for count in metrics.usage.drain() {
            let (minute, hour) = self.history.add(&count);
            self.dirty.insert((Entry::Minute, minute));
            self.dirty.insert((Entry::Hour, hour));
        }
    }
}

impl State {
    /// Expires old entries; returns the batch that brings the disk up to
    /// date, and the entries it writes (dirty again if it fails).
    fn writes(&mut self, now: u64) -> (WriteBatch, Written) {
        let expired = self.history.expire(now);
        for (entry, ats) in [
            (Entry::Minute, &expired.minutes),
            (Entry::Hour, &expired.hours),
            (Entry::Sample, &expired.samples),
        ] {
            for at in ats {
                self.dirty.remove(&(entry, *at));
                self.expired.insert((entry, *at));
            }
        }
        for at in expired.thinned {
            self.dirty.insert((Entry::Sample, at));
        }
        let mut batch = WriteBatch::default();
        let written = Written {
            dirty: std::mem::take(&mut self.dirty),
            expired: std::mem::take(&mut self.expired),
        };
        for &(entry, at) in &written.expired {
            batch.delete(Keyspace::Meta, entry.key(at));
        }
        for &(entry, at) in &written.dirty {
            let value = match entry {
                Entry::Minute => self.history.minute(at).map(encode_json::<Bucket>),
                Entry::Hour => self.history.hour(at).map(encode_json::<Bucket>),
                Entry::Sample => self.history.sample(at).map(encode_json::<StorageSample>),
            };
            if let Some(value) = value {
                batch.put(Keyspace::Meta, entry.key(at), value);
            }
        }
        (batch, written)
    }
}

impl UsageHistory {
    /// Reads the history back from disk. An entry that does not decode is
    /// skipped with a warning: losing a minute of figures is better than
    /// refusing to start.
    pub(super) fn load(storage: &dyn Storage) -> EngineResult<Self> {
        let mut history = History::default();
        let prefix = [USAGE_TAG];
        storage.scan(
            Keyspace::Meta,
            &prefix,
            &prefix_end(&prefix),
            &mut |key, value| {
                let at = key.get(2..).and_then(read_u64);
                let loaded = match (key.get(1), at) {
                    (Some(b'm'), Some(at)) => {
                        decode_json(value).map(|b| history.load_minute(at, b))
                    }
                    (Some(b'h'), Some(at)) => decode_json(value).map(|b| history.load_hour(at, b)),
                    (Some(b'g'), Some(at)) => {
                        decode_json(value).map(|s| history.load_sample(at, s))
                    }
                    _ => Ok(()),
                };
                if let Err(err) = loaded {
                    tracing::warn!(%err, "skipping a usage history entry that does not decode");
                }
                ControlFlow::Continue(())
            },
        )?;
        Ok(Self {
            state: Mutex::new(State {
                history,
                ..Default::default()
            }),
            ticking: Default::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        super::locks::lock(&self.state)
    }
}

impl UsageHistory {
    /// Answers `query` from the history, the counts `metrics` holds so
    /// far included.
    pub(super) fn query<T>(&self, metrics: &Metrics, query: impl FnOnce(&History) -> T) -> T {
        let mut state = self.lock();
        state.absorb(metrics);
        query(&state.history)
    }

    /// Moves the counts into the history, samples storage once an hour,
    /// expires old entries, and writes what changed through `core`.
    pub(super) async fn tick(&self, metrics: &Metrics, core: &StreamCore, lags: Lags) {
        let _one_at_a_time = self.ticking.lock().await;
        let now = now_secs();
        if !lags.is_empty() {
            self.lock().history.record_lags(now, lags);
        }
        let hour = align(now, HOUR);
        let needs_sample = !self.lock().history.has_storage_sample(hour);
        // Scans every stream's counters: not under the lock.
        let sample = match needs_sample.then(|| core.all_stored_bytes()) {
            Some(Ok(all)) => Some(storage_sample(all)),
            Some(Err(err)) => {
                tracing::warn!(%err, "sampling stored bytes failed; trying again next minute");
                None
            }
            None => None,
        };
        let (batch, written) = {
            let mut state = self.lock();
            state.absorb(metrics);
            if let Some(sample) = sample {
                state.history.record_storage(hour, sample);
                state.dirty.insert((Entry::Sample, hour));
            }
            state.writes(now)
        };
        if batch.is_empty() {
            return;
        }
        if let Err(err) = core.committer().commit(batch).await {
            tracing::warn!(%err, "writing the usage history failed; trying again next minute");
            let mut state = self.lock();
            state.dirty.extend(written.dirty);
            state.expired.extend(written.expired);
        }
    }
}

/// A sample of stored bytes: per basin (every basin with a stream), and
/// per stream (those storing anything).
fn storage_sample(all: crate::engine::streams::StoredBytes) -> StorageSample {
    let mut sample = StorageSample {
        streams: Some(Default::default()),
        ..Default::default()
    };
    for (basin, streams) in all {
        if streams.is_empty() {
            continue;
        }
        sample
            .basins
            .insert(basin.clone(), streams.values().sum::<u64>());
        let stored: std::collections::BTreeMap<_, _> = streams
            .into_iter()
            .filter(|(_, bytes)| *bytes > 0)
            .collect();
        if let (false, Some(by_basin)) = (stored.is_empty(), sample.streams.as_mut()) {
            by_basin.insert(basin, stored);
        }
    }
    sample
}
