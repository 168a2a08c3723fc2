//! `Stream-Cursor` (§10.1): the number of 20-second intervals since
//! 2024-10-09T00:00:00Z, which clients echo as `cursor=` so that a CDN
//! collapses the live reads of one interval into one. A client that
//! echoes the current interval, or a later one, gets a later one still (by
//! a random 1 to 180 intervals: 20 s to 1 h), so its next request never
//! hits a cached answer of the same cursor again.

use rand::Rng;

use crate::engine::streams::types::now_ms;

const EPOCH_SECS: u64 = 1_728_432_000;
const INTERVAL_SECS: u64 = 20;
/// The most jitter, in intervals: the protocol's 3600 s.
const MAX_JITTER: u64 = 3600 / INTERVAL_SECS;

/// The cursor of an answer to a request that echoed `echoed`.
pub fn next(echoed: Option<&str>) -> u64 {
    after(
        current(),
        echoed.and_then(|c| c.parse::<u64>().ok()),
        || rand::rng().random_range(1..=MAX_JITTER),
    )
}

/// The interval now.
pub fn current() -> u64 {
    (now_ms() / 1000).saturating_sub(EPOCH_SECS) / INTERVAL_SECS
}

fn after(now: u64, echoed: Option<u64>, jitter: impl FnOnce() -> u64) -> u64 {
    match echoed {
        Some(echoed) if echoed >= now => echoed.saturating_add(jitter()),
        _ => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_only_move_forward() {
        assert_eq!(after(100, None, || 7), 100);
        assert_eq!(after(100, Some(99), || 7), 100);
        assert_eq!(after(100, Some(100), || 7), 107);
        assert_eq!(after(100, Some(500), || 1), 501);
        let live = next(None);
        assert!(next(Some(&live.to_string())) > live);
    }
}
