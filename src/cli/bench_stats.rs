//! What the `rill bench` runs share: latency percentiles and the clock
//! that names their temporary streams.

use std::time::Duration;

use serde_json::json;

pub struct Percentiles([(&'static str, f64); 5]);

impl Percentiles {
    pub fn of(samples: &[Duration]) -> Self {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        // Nearest rank: the smallest sample with at least q of them at or
        // below it.
        let at = |q: f64| {
            let rank = (ms.len() as f64 * q).ceil() as usize;
            ms.get(rank.saturating_sub(1)).copied().unwrap_or(0.0)
        };
        Self([
            ("p50", at(0.50)),
            ("p90", at(0.90)),
            ("p99", at(0.99)),
            ("p999", at(0.999)),
            ("max", ms.last().copied().unwrap_or(0.0)),
        ])
    }

    pub fn text(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(name, ms)| format!("{name} {ms:.2} ms"))
            .collect();
        parts.join("  ")
    }

    pub fn json(&self) -> serde_json::Value {
        self.0
            .iter()
            .map(|(name, ms)| (name.to_string(), json!(ms)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

pub fn epoch_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_ranks() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(&samples);
        assert_eq!(p.0[0], ("p50", 50.0));
        assert_eq!(p.0[1], ("p90", 90.0));
        assert_eq!(p.0[2], ("p99", 99.0));
        assert_eq!(p.0[4], ("max", 100.0));
    }
}
