//! `/v1/sinks`: sinks, consumers whose worker lives in the server (see
//! `engine/sinks/` for what they are, `src/sinks/` for how they run).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::auth::{check_source, Principal};
use super::error::ApiResult;
use super::extract::{Basin, Json, NamePath, Path, Query};
use super::shared::{detached, provision_response, AppState, ListParams};
use crate::engine::sinks::{SinkConfig, SinkConfigPatch, SinkInfo, SinkName};
use crate::wire::consumers::consumer_json;
use crate::wire::sinks::sink_json;

pub async fn list(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Query(params): Query<ListParams>,
) -> ApiResult<axum::Json<Value>> {
    let (sinks, has_more) = state.engine.sinks().list_sinks(&basin, &params.into())?;
    let sinks: Vec<Value> = sinks.iter().map(|s| sink_json(s, None)).collect();
    Ok(axum::Json(json!({ "sinks": sinks, "has_more": has_more })))
}

/// A sink with its `state`: its consumer's (lag, pending, dead letters)
/// and its worker's (delivered, failed, retrying, last error, throughput).
pub async fn get(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let info = state.engine.sinks().get_sink(&basin, &name)?;
    Ok(axum::Json(with_state(&state, &info).await))
}

async fn with_state(state: &AppState, info: &SinkInfo) -> Value {
    let consumer = state
        .engine
        .consumers()
        .consumer_info(&info.basin, &info.consumer())
        .await
        .map(|c| consumer_json(&c)["state"].clone())
        .unwrap_or(Value::Null);
    let worker = state.sinks.status(&info.basin, &info.name);
    let mut out = json!({
        "paused": info.config.paused,
        "lag": consumer["lag"],
        "lag_seconds": consumer["lag_seconds"],
        "pending": consumer["pending"],
        "in_flight": consumer["in_flight"],
        "dead_lettered": consumer["dead_lettered"],
    });
    if let (Some(fields), Ok(Value::Object(worker))) =
        (out.as_object_mut(), serde_json::to_value(worker))
    {
        fields.extend(worker.into_iter().filter(|(k, _)| k != "dead_lettered"));
    }
    sink_json(info, Some(out))
}

pub async fn ensure(
    State(state): State<AppState>,
    principal: Principal,
    Basin(basin): Basin,
    NamePath(name): NamePath<SinkName>,
    Json(config): Json<SinkConfig>,
) -> ApiResult<Response> {
    check_source(&principal, &config.source)?;
    let engine = state.engine;
    let (info, provision) =
        detached(async move { engine.sinks().ensure_sink(&basin, &name, config).await }).await?;
    Ok(provision_response(provision, sink_json(&info, None)))
}

pub async fn reconfigure(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(name): Path<String>,
    Json(patch): Json<SinkConfigPatch>,
) -> ApiResult<axum::Json<Value>> {
    patched(state, basin, name, patch).await
}

pub async fn pause(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let patch = SinkConfigPatch {
        paused: Some(true),
        ..Default::default()
    };
    patched(state, basin, name, patch).await
}

pub async fn resume(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let patch = SinkConfigPatch {
        paused: Some(false),
        ..Default::default()
    };
    patched(state, basin, name, patch).await
}

async fn patched(
    state: AppState,
    basin: String,
    name: String,
    patch: SinkConfigPatch,
) -> ApiResult<axum::Json<Value>> {
    let engine = state.engine;
    let info =
        detached(async move { engine.sinks().reconfigure_sink(&basin, &name, &patch).await })
            .await?;
    Ok(axum::Json(sink_json(&info, None)))
}

pub async fn delete(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let engine = state.engine;
    detached(async move { engine.sinks().delete_sink(&basin, &name).await }).await?;
    Ok(StatusCode::NO_CONTENT)
}
