//! S2's metrics API: `/v1/metrics`, `/v1/metrics/{basin}` and
//! `/v1/metrics/{basin}/{stream}`, answered from the usage history
//! (`engine/usage.rs`).
//!
//! Besides S2's sets, the account answers `ack-latency` (Rill's own): a
//! histogram of acknowledgement latency per step, one accumulation per
//! bucket named by its upper bound in seconds (`+Inf` last).
//!
//! Each set answers over `start..end` (Unix seconds; by default the last
//! hour, at most 30 days), accumulations by `interval` (`minute` by
//! default, `hour`, `day`), one value per step, zero where nothing was
//! counted. `storage` is a gauge with one value per hour: what was stored
//! at the start of that hour, and for the hour in progress, what is
//! stored now. Minutes are kept for a day, hours and basins' storage for
//! 30 days, streams' storage for a day.

use axum::extract::State;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{Principal, Resource};
use super::error::{ApiError, ApiResult};
use super::extract::{Path, Query};
use super::shared::AppState;
use crate::metrics::history::{align, History, Interval, DAY, HOUR};
use crate::metrics::usage::{now_secs, ACCOUNT, ACK_LATENCY_BUCKETS};

/// The longest range a query may span, as in S2.
const MAX_RANGE_SECS: u64 = 30 * DAY;

#[derive(Deserialize)]
pub struct MetricParams {
    set: String,
    start: Option<u64>,
    end: Option<u64>,
    interval: Option<String>,
}

/// A query's range and step, checked.
struct Window {
    range: (u64, u64),
    interval: Interval,
    now: u64,
}

impl MetricParams {
    fn window(&self) -> ApiResult<Window> {
        let now = now_secs();
        let end = self.end.unwrap_or(now);
        if end > now + DAY {
            return Err(ApiError::invalid(format!(
                "`end` ({end}) is more than a day from now ({now})"
            )));
        }
        let start = self.start.unwrap_or(end.saturating_sub(HOUR));
        if start > end {
            return Err(ApiError::invalid(format!(
                "`start` ({start}) is after `end` ({end})"
            )));
        }
        if end - start > MAX_RANGE_SECS {
            return Err(ApiError::invalid(
                "the range from `start` to `end` may span at most 30 days",
            ));
        }
        let interval = match self.interval.as_deref() {
            None | Some("minute") => Interval::Minute,
            Some("hour") => Interval::Hour,
            Some("day") => Interval::Day,
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "unknown interval `{other}`; expected one of: minute, hour, day"
                )))
            }
        };
        Ok(Window {
            range: (start, end),
            interval,
            now,
        })
    }

    fn check_set(&self, known: &[&str]) -> ApiResult<()> {
        if known.contains(&self.set.as_str()) {
            return Ok(());
        }
        Err(ApiError::invalid(format!(
            "unknown metric set `{}`; expected one of: {}",
            self.set,
            known.join(", ")
        )))
    }
}

pub async fn account_metrics(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<MetricParams>,
) -> ApiResult<axum::Json<Value>> {
    params.check_set(&["active-basins", "account-ops", "ack-latency"])?;
    let window = params.window()?;
    let engine = &state.engine;
    let values = if params.set == "active-basins" {
        let mut basins = engine.usage(|h| h.active_basins(window.range));
        if window.range.1 >= align(window.now, HOUR) {
            basins.extend(engine.streams().basins_with_streams()?);
        }
        basins.retain(|b| principal.can_see(Resource::Basins, b));
        vec![json!({ "label": { "name": "active-basins", "values": basins } })]
    } else if params.set == "ack-latency" {
        // Rill's own: a histogram per step, one series per bucket.
        let mut names: Vec<&str> = ACK_LATENCY_BUCKETS.iter().map(|(_, n)| *n).collect();
        names.push("+Inf");
        engine.usage(|h| accumulations(h, ACCOUNT, "ack-latency", Some(&names), &window))
    } else {
        engine.usage(|h| accumulations(h, ACCOUNT, "account-ops", None, &window))
    };
    Ok(axum::Json(json!({ "values": values })))
}

pub async fn basin_metrics(
    State(state): State<AppState>,
    Path(basin): Path<String>,
    Query(params): Query<MetricParams>,
) -> ApiResult<axum::Json<Value>> {
    params.check_set(&[
        "storage",
        "append-ops",
        "read-ops",
        "read-throughput",
        "append-throughput",
        "basin-ops",
    ])?;
    let window = params.window()?;
    let engine = &state.engine;
    engine.streams().basin_config(&basin)?;
    let values = match params.set.as_str() {
        "storage" => {
            let mut points = engine.usage(|h| h.storage(&basin, None, window.range));
            let live = || engine.streams().basin_stored_bytes(&basin);
            with_live_hour(&mut points, &window, live)?;
            vec![gauge("storage", &points)]
        }
        "append-ops" => {
            let names = ["express", "standard"];
            let set = "append-ops";
            engine.usage(|h| accumulations(h, &basin, set, Some(&names), &window))
        }
        "read-ops" => {
            let names = ["unary", "streaming"];
            engine.usage(|h| accumulations(h, &basin, "read-ops", Some(&names), &window))
        }
        "basin-ops" => engine.usage(|h| accumulations(h, &basin, "basin-ops", None, &window)),
        throughput => {
            let names = [throughput];
            engine.usage(|h| accumulations(h, &basin, throughput, Some(&names), &window))
        }
    };
    Ok(axum::Json(json!({ "values": values })))
}

pub async fn stream_metrics(
    State(state): State<AppState>,
    principal: Principal,
    Path((basin, stream)): Path<(String, String)>,
    Query(params): Query<MetricParams>,
) -> ApiResult<axum::Json<Value>> {
    params.check_set(&["storage"])?;
    let window = params.window()?;
    // The name the access check saw: relative for auto-prefixed tokens.
    let stream = principal.stream_name(stream);
    let core = state.engine.streams();
    core.stream_config(&basin, &stream)?;
    let mut points = state
        .engine
        .usage(|h| h.storage(&basin, Some(&stream), window.range));
    let live = || Ok(core.stored_bytes(&basin, &stream)?.unwrap_or(0));
    with_live_hour(&mut points, &window, live)?;
    Ok(axum::Json(json!({ "values": [gauge("storage", &points)] })))
}

/// Replaces the sample of the hour in progress, if the range reaches it,
/// with what is stored now: a sample is taken once an hour, and the
/// latest figure is the one a user looks for.
fn with_live_hour(
    points: &mut Vec<(u64, u64)>,
    window: &Window,
    live: impl FnOnce() -> crate::engine::error::EngineResult<u64>,
) -> ApiResult<()> {
    let hour = align(window.now, HOUR);
    let (start, end) = window.range;
    if !(align(start, HOUR) <= hour && hour < end) {
        return Ok(());
    }
    points.retain(|(at, _)| *at != hour);
    points.push((hour, live()?));
    Ok(())
}

/// The accumulations of `set` in `scope`: the series in `names`, or,
/// without names, every series with anything counted in the range.
fn accumulations(
    history: &History,
    scope: &str,
    set: &str,
    names: Option<&[&str]>,
    window: &Window,
) -> Vec<Value> {
    let unit = if set.ends_with("-throughput") {
        "bytes"
    } else {
        "operations"
    };
    let names: Vec<String> = match names {
        Some(names) => names.iter().map(|n| n.to_string()).collect(),
        None => history
            .series_names(scope, set, window.range, window.interval)
            .into_iter()
            .collect(),
    };
    names
        .into_iter()
        .map(|name| {
            let key = format!("{set}/{name}");
            let points = history.accumulation(scope, &key, window.range, window.interval);
            json!({ "accumulation": {
                "name": name,
                "unit": unit,
                "interval": window.interval.name(),
                "values": points_json(&points),
            }})
        })
        .collect()
}

fn gauge(name: &str, points: &[(u64, u64)]) -> Value {
    json!({ "gauge": { "name": name, "unit": "bytes", "values": points_json(points) } })
}

fn points_json(points: &[(u64, u64)]) -> Vec<Value> {
    points.iter().map(|(at, v)| json!([at, v])).collect()
}
