//! Account-level endpoints: access tokens and metrics.
//!
//! Tokens are recorded and listed as S2 does, but not yet enforced. Metrics
//! answer every metric set of the spec; sets Rill does not track yet come
//! back as an empty list of values, never as an error.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::extract::{Json, Path, Query};
use super::shared::{detached, AppState, ListParams};

pub async fn list_tokens(
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> ApiResult<axum::Json<Value>> {
    let (tokens, has_more) = state.engine.streams().list_access_tokens(&params.into())?;
    Ok(axum::Json(
        json!({ "access_tokens": tokens, "has_more": has_more }),
    ))
}

pub async fn issue_token(
    State(state): State<AppState>,
    Json(info): Json<Value>,
) -> ApiResult<Response> {
    let engine = state.engine;
    let token = detached(async move { engine.streams().issue_access_token(info).await }).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "access_token": token })),
    )
        .into_response())
}

pub async fn revoke_token(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let engine = state.engine;
    detached(async move { engine.streams().revoke_access_token(&id).await }).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct MetricParams {
    set: String,
    #[allow(dead_code)]
    start: Option<u32>,
    #[allow(dead_code)]
    end: Option<u32>,
    #[allow(dead_code)]
    interval: Option<String>,
}

fn check_set(set: &str, known: &[&str]) -> ApiResult<()> {
    if known.contains(&set) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "unknown metric set `{set}`; expected one of: {}",
            known.join(", ")
        )))
    }
}

fn empty() -> axum::Json<Value> {
    axum::Json(json!({ "values": [] }))
}

pub async fn account_metrics(
    State(state): State<AppState>,
    Query(params): Query<MetricParams>,
) -> ApiResult<axum::Json<Value>> {
    check_set(&params.set, &["active-basins", "account-ops"])?;
    if params.set != "active-basins" {
        return Ok(empty());
    }
    let (basins, _) = state.engine.streams().list_basins(&Default::default())?;
    let names: Vec<String> = basins.into_iter().map(|b| b.name).collect();
    Ok(axum::Json(json!({
        "values": [{ "label": { "name": "active-basins", "values": names } }]
    })))
}

pub async fn basin_metrics(
    State(state): State<AppState>,
    Path(basin): Path<String>,
    Query(params): Query<MetricParams>,
) -> ApiResult<axum::Json<Value>> {
    check_set(
        &params.set,
        &[
            "storage",
            "append-ops",
            "read-ops",
            "read-throughput",
            "append-throughput",
            "basin-ops",
        ],
    )?;
    state.engine.streams().basin_config(&basin)?;
    Ok(empty())
}

pub async fn stream_metrics(
    State(state): State<AppState>,
    Path((basin, stream)): Path<(String, String)>,
    Query(params): Query<MetricParams>,
) -> ApiResult<axum::Json<Value>> {
    check_set(&params.set, &["storage"])?;
    state.engine.streams().stream_config(&basin, &stream)?;
    Ok(empty())
}
