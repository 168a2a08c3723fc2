//! The usage history S2's metrics API answers from: counts per minute for
//! the last day, per hour for the last 30 days, and the bytes stored,
//! sampled once an hour (in the hour's first minute the server runs; per
//! basin for 30 days, per stream for the last day).
//!
//! Bounded by time, not by how busy the server is: a minute, an hour or a
//! sample is one entry however many counts went into it, and entries
//! older than their window are dropped by [`History::expire`]. Per entry,
//! the size grows with the basins (and, for a day, the streams) that did
//! something in it.
//!
//! This is plain data: `engine/usage.rs` fills it, keeps it on disk (one
//! key per entry) and reads it back at start.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::usage::Count;

pub const MINUTE: u64 = 60;
pub const HOUR: u64 = 3600;
pub const DAY: u64 = 86_400;
/// How long minute counts are kept.
pub const MINUTES_KEPT: u64 = DAY;
/// How long hour counts, and each basin's stored bytes, are kept: the
/// longest range S2's API answers.
pub const HOURS_KEPT: u64 = 30 * DAY;
/// How long each stream's stored bytes are kept (there may be many).
pub const STREAM_STORAGE_KEPT: u64 = DAY;

/// Counts in one minute or hour: by scope (a basin, or the account), then
/// by series key (`{set}/{name}`).
pub type Bucket = BTreeMap<String, BTreeMap<String, u64>>;

/// Stored bytes observed at the start of an hour.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageSample {
    /// Every basin that had a stream then.
    pub basins: BTreeMap<String, u64>,
    /// By basin, then stream (streams storing nothing left out); `None`
    /// once the sample is older than [`STREAM_STORAGE_KEPT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streams: Option<BTreeMap<String, BTreeMap<String, u64>>>,
}

/// The step of a time series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interval {
    Minute,
    Hour,
    Day,
}

impl Interval {
    pub fn secs(self) -> u64 {
        match self {
            Self::Minute => MINUTE,
            Self::Hour => HOUR,
            Self::Day => DAY,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }
}

/// What [`History::expire`] dropped or changed, for the copy on disk.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expired {
    pub minutes: Vec<u64>,
    pub hours: Vec<u64>,
    pub samples: Vec<u64>,
    /// Samples that lost their per-stream figures (and stay otherwise).
    pub thinned: Vec<u64>,
}

/// How long each consumer's lag, sampled every minute, is kept (in
/// memory only: it draws the console's lag chart; Prometheus keeps more).
pub const LAGS_KEPT: u64 = HOUR;

/// Each consumer's lag in messages, by basin and name.
pub type Lags = BTreeMap<(String, String), u64>;

#[derive(Debug, Default)]
pub struct History {
    minutes: BTreeMap<u64, Bucket>,
    hours: BTreeMap<u64, Bucket>,
    samples: BTreeMap<u64, StorageSample>,
    lags: BTreeMap<u64, Lags>,
}

/// The start of the step of `secs` that `t` falls in.
pub fn align(t: u64, secs: u64) -> u64 {
    t - t % secs
}

impl History {
    /// Adds one count to its minute and its hour; returns both, so that
    /// the caller knows which entries changed.
    pub fn add(&mut self, count: &Count) -> (u64, u64) {
        let minute = align(count.minute, MINUTE);
        let hour = align(count.minute, HOUR);
        let key = count.series.key();
        for (entries, at) in [(&mut self.minutes, minute), (&mut self.hours, hour)] {
            *entries
                .entry(at)
                .or_default()
                .entry(count.scope.clone())
                .or_default()
                .entry(key.clone())
                .or_default() += count.amount;
        }
        (minute, hour)
    }

    /// One value per `interval` from the one holding `start` to the last
    /// starting before `end`: the sum of `series` (a `{set}/{name}` key) in
    /// `scope` over it, zero where nothing was counted (or nothing is kept
    /// any more at that resolution: minutes only for the last day).
    pub fn accumulation(
        &self,
        scope: &str,
        series: &str,
        (start, end): (u64, u64),
        interval: Interval,
    ) -> Vec<(u64, u64)> {
        let step = interval.secs();
        let mut points: BTreeMap<u64, u64> = steps(start, end, step).map(|t| (t, 0)).collect();
        let source = self.counts_for(interval);
        for (at, bucket) in source.range(covered((start, end), step)) {
            let value = bucket.get(scope).and_then(|s| s.get(series)).copied();
            if let (Some(value), Some(point)) = (value, points.get_mut(&align(*at, step))) {
                *point += value;
            }
        }
        points.into_iter().collect()
    }

    /// The names of the series of `set` in `scope` with anything counted
    /// in the steps [`Self::accumulation`] would answer for.
    pub fn series_names(
        &self,
        scope: &str,
        set: &str,
        (start, end): (u64, u64),
        interval: Interval,
    ) -> BTreeSet<String> {
        let source = self.counts_for(interval);
        let prefix = format!("{set}/");
        source
            .range(covered((start, end), interval.secs()))
            .filter_map(|(_, bucket)| bucket.get(scope))
            .flat_map(|series| series.keys())
            .filter_map(|key| key.strip_prefix(&prefix))
            .map(str::to_string)
            .collect()
    }

    /// Where steps of `interval` are summed from: minutes, or hours.
    fn counts_for(&self, interval: Interval) -> &BTreeMap<u64, Bucket> {
        match interval {
            Interval::Minute => &self.minutes,
            Interval::Hour | Interval::Day => &self.hours,
        }
    }

    /// Records what was stored at the start of `hour`.
    pub fn record_storage(&mut self, hour: u64, sample: StorageSample) {
        self.samples.insert(align(hour, HOUR), sample);
    }

    pub fn has_storage_sample(&self, hour: u64) -> bool {
        self.samples.contains_key(&align(hour, HOUR))
    }

    /// The bytes a basin (or one of its streams) stored at the start of
    /// each hour from the one holding `start` to the last before `end`,
    /// for the hours sampled (the server ran then). A basin or stream
    /// missing from a sample stored nothing then.
    pub fn storage(
        &self,
        basin: &str,
        stream: Option<&str>,
        (start, end): (u64, u64),
    ) -> Vec<(u64, u64)> {
        self.samples
            .range(align(start, HOUR)..end)
            .filter_map(|(at, sample)| {
                let value = match stream {
                    None => sample.basins.get(basin).copied(),
                    Some(stream) => sample
                        .streams
                        .as_ref()?
                        .get(basin)
                        .and_then(|s| s.get(stream))
                        .copied(),
                };
                Some((*at, value.unwrap_or(0)))
            })
            .collect()
    }

    /// Basins that had a stream, or counted anything, between `start` and
    /// `end`.
    pub fn active_basins(&self, (start, end): (u64, u64)) -> BTreeSet<String> {
        let sampled = self
            .samples
            .range(align(start, HOUR)..end)
            .flat_map(|(_, sample)| sample.basins.keys());
        let counted = self
            .hours
            .range(align(start, HOUR)..end)
            .flat_map(|(_, bucket)| bucket.keys())
            .filter(|scope| !scope.is_empty());
        sampled.chain(counted).cloned().collect()
    }

    /// Records every consumer's lag at `minute`.
    pub fn record_lags(&mut self, minute: u64, lags: Lags) {
        self.lags.insert(align(minute, MINUTE), lags);
    }

    /// A consumer's lag at each minute sampled (the last hour at most).
    pub fn consumer_lag(&self, basin: &str, consumer: &str) -> Vec<(u64, u64)> {
        let key = (basin.to_string(), consumer.to_string());
        self.lags
            .iter()
            .filter_map(|(at, lags)| Some((*at, *lags.get(&key)?)))
            .collect()
    }

    /// Drops what is older than its window, as of `now`.
    pub fn expire(&mut self, now: u64) -> Expired {
        let before = |kept: u64| now.saturating_sub(kept);
        let minutes = drop_before(&mut self.minutes, before(MINUTES_KEPT));
        let hours = drop_before(&mut self.hours, before(HOURS_KEPT));
        let samples = drop_before(&mut self.samples, before(HOURS_KEPT));
        drop_before(&mut self.lags, before(LAGS_KEPT));
        let mut thinned = Vec::new();
        for (at, sample) in self.samples.range_mut(..before(STREAM_STORAGE_KEPT)) {
            if sample.streams.take().is_some() {
                thinned.push(*at);
            }
        }
        Expired {
            minutes,
            hours,
            samples,
            thinned,
        }
    }

    pub fn minute(&self, at: u64) -> Option<&Bucket> {
        self.minutes.get(&at)
    }

    pub fn hour(&self, at: u64) -> Option<&Bucket> {
        self.hours.get(&at)
    }

    pub fn sample(&self, at: u64) -> Option<&StorageSample> {
        self.samples.get(&at)
    }

    /// Puts back an entry read from disk.
    pub fn load_minute(&mut self, at: u64, bucket: Bucket) {
        self.minutes.insert(at, bucket);
    }

    pub fn load_hour(&mut self, at: u64, bucket: Bucket) {
        self.hours.insert(at, bucket);
    }

    pub fn load_sample(&mut self, at: u64, sample: StorageSample) {
        self.samples.insert(at, sample);
    }
}

/// The times the steps of `step` seconds from the one holding `start` to
/// the last starting before `end` cover, whole.
fn covered((start, end): (u64, u64), step: u64) -> std::ops::Range<u64> {
    let first = align(start, step);
    if end <= first {
        return first..first;
    }
    first..align(end - 1, step).saturating_add(step)
}

/// Removes the entries before `cutoff`; returns their times.
fn drop_before<T>(entries: &mut BTreeMap<u64, T>, cutoff: u64) -> Vec<u64> {
    let kept = entries.split_off(&cutoff);
    std::mem::replace(entries, kept).into_keys().collect()
}

/// The starts of the steps of `step` seconds from the one holding `start`
/// to the last starting before `end`.
fn steps(start: u64, end: u64, step: u64) -> impl Iterator<Item = u64> {
    (align(start, step)..end).step_by(step as usize)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::usage::Series;
    use super::*;

    fn count(minute: u64, scope: &str, series: Series, amount: u64) -> Count {
        Count {
            minute,
            scope: scope.into(),
            series,
            amount,
        }
    }

    const T0: u64 = 1_764_000_000 - 1_764_000_000 % DAY;

    #[test]
    fn accumulations_sum_by_interval_and_fill_gaps_with_zero() {
        let mut history = History::default();
        let bytes = Series::APPENDED_BYTES;
        history.add(&count(T0, "a", bytes, 5));
        history.add(&count(T0 + 60, "a", bytes, 7));
        history.add(&count(T0 + 3600, "a", bytes, 1));
        history.add(&count(T0 + 60, "b", bytes, 100));
        let key = bytes.key();
        let range = (T0, T0 + 3 * 60);
        assert_eq!(
            history.accumulation("a", &key, range, Interval::Minute),
            vec![(T0, 5), (T0 + 60, 7), (T0 + 120, 0)]
        );
        assert_eq!(
            history.accumulation("a", &key, (T0 + 30, T0 + 2 * HOUR), Interval::Hour),
            vec![(T0, 12), (T0 + HOUR, 1)]
        );
        assert_eq!(
            history.accumulation("a", &key, (T0, T0 + 1), Interval::Day),
            vec![(T0, 13)]
        );
        assert_eq!(
            history.series_names("b", "append-throughput", range, Interval::Minute),
            BTreeSet::from(["append-throughput".to_string()])
        );
        assert!(history
            .series_names("b", "append-ops", range, Interval::Minute)
            .is_empty());
    }

    #[test]
    fn expiry_keeps_each_window_and_thins_old_samples() {
        let mut history = History::default();
        history.add(&count(T0, "a", Series::READ_BYTES, 1));
        let sample = StorageSample {
            basins: BTreeMap::from([("a".to_string(), 10)]),
            streams: Some(BTreeMap::from([(
                "a".to_string(),
                BTreeMap::from([("s".to_string(), 10)]),
            )])),
        };
        history.record_storage(T0, sample);
        let expired = history.expire(T0 + DAY + 60);
        assert_eq!(expired.minutes, vec![T0]);
        assert_eq!(expired.hours, Vec::<u64>::new());
        assert_eq!(expired.thinned, vec![T0]);
        let range = (T0, T0 + HOUR);
        assert_eq!(history.storage("a", None, range), vec![(T0, 10)]);
        assert_eq!(history.storage("a", Some("s"), range), vec![]);
        assert_eq!(
            history.accumulation("a", &Series::READ_BYTES.key(), range, Interval::Hour),
            vec![(T0, 1)]
        );
        history.record_lags(T0, Lags::from([(("a".into(), "c".into()), 7)]));
        history.record_lags(T0 + 60, Lags::new());
        assert_eq!(history.consumer_lag("a", "c"), vec![(T0, 7)]);
        let expired = history.expire(T0 + HOURS_KEPT + HOUR);
        assert!(history.consumer_lag("a", "c").is_empty());
        assert_eq!((expired.hours, expired.samples), (vec![T0], vec![T0]));
        assert!(history.active_basins((T0, T0 + HOURS_KEPT)).is_empty());
    }

    proptest! {
        /// Against a model that keeps every count: any range, at any
        /// interval, sums what fell in each step (within the window kept).
        #[test]
        fn accumulation_matches_a_model(
            counts in proptest::collection::vec((0u64..3 * 24 * 60, 0usize..2, 1u64..1000), 0..200),
            start in 0u64..3 * DAY,
            len in 1u64..3 * DAY,
            interval in prop_oneof![Just(Interval::Minute), Just(Interval::Hour), Just(Interval::Day)],
        ) {
            let mut history = History::default();
            let scopes = ["a", "b"];
            for (minute, scope, amount) in &counts {
                history.add(&count(T0 + minute * 60, scopes[*scope], Series::READ_BYTES, *amount));
            }
            let (start, end) = (T0 + start, T0 + start + len);
            let got = history.accumulation("a", &Series::READ_BYTES.key(), (start, end), interval);
            let step = interval.secs();
            let mut expected = Vec::new();
            let mut at = align(start, step);
            while at < end {
                let sum: u64 = counts
                    .iter()
                    .filter(|(m, s, _)| *s == 0 && (at..at + step).contains(&(T0 + m * 60)))
                    .map(|(_, _, a)| a)
                    .sum();
                expected.push((at, sum));
                at += step;
            }
            prop_assert_eq!(got, expected);
        }
    }
}
