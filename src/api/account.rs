//! Account-level endpoints: access tokens and metrics.
//!
//! Tokens are issued, listed and revoked as S2 does (the authorization
//! layer has checked the operation; these check the names). Metrics
//! answer every metric set of the spec; sets Rill does not track yet come
//! back as an empty list of values, never as an error.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{permission_denied, Principal, Resource};
use super::error::{ApiError, ApiResult};
use super::extract::{Json, Path, Query};
use super::shared::{detached, AppState, ListParams};
use crate::engine::streams::token_index::AccessTokenInfo;

pub async fn list_tokens(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<ListParams>,
) -> ApiResult<axum::Json<Value>> {
    let (tokens, has_more) = principal.list(
        Resource::AccessTokens,
        params.into(),
        |info: &Value| info["id"].as_str().unwrap_or_default(),
        |req| state.engine.streams().list_access_tokens(req),
    )?;
    Ok(axum::Json(
        json!({ "access_tokens": tokens, "has_more": has_more }),
    ))
}

/// Issues a token no wider than the issuer's: its id within the issuer's
/// `access_tokens`, its scope within the issuer's scope, and its expiry no
/// later than the issuer's (the issuer's when not given).
pub async fn issue_token(
    State(state): State<AppState>,
    principal: Principal,
    Json(mut info): Json<AccessTokenInfo>,
) -> ApiResult<Response> {
    principal.check(Resource::AccessTokens, &info.id)?;
    let expires = info.validate()?;
    if let Principal::Token(issuer) = &principal {
        if let Some(what) = issuer.info.scope.uncovered(&info.scope) {
            return Err(permission_denied(format_args!(
                "issuing a token wider than itself ({what} is outside its scope)"
            )));
        }
        match (expires, issuer.expires) {
            (_, None) => {}
            (None, Some(_)) => info.expires_at = issuer.info.expires_at.clone(),
            (Some(wanted), Some(limit)) if wanted > limit => {
                return Err(permission_denied(
                    "issuing a token that outlives it (`expires_at` is after its own)",
                ));
            }
            (Some(_), Some(_)) => {}
        }
    }
    if expires.is_some_and(|at| at <= std::time::SystemTime::now()) {
        return Err(ApiError::invalid("`expires_at` is in the past"));
    }
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
    principal: Principal,
    Query(params): Query<MetricParams>,
) -> ApiResult<axum::Json<Value>> {
    check_set(&params.set, &["active-basins", "account-ops"])?;
    if params.set != "active-basins" {
        return Ok(empty());
    }
    let (basins, _) = principal.list(
        Resource::Basins,
        Default::default(),
        |b: &crate::engine::streams::BasinInfo| &b.name,
        |req| state.engine.streams().list_basins(req),
    )?;
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
    principal: Principal,
    Path((basin, stream)): Path<(String, String)>,
    Query(params): Query<MetricParams>,
) -> ApiResult<axum::Json<Value>> {
    check_set(&params.set, &["storage"])?;
    // The name the access check saw: relative for auto-prefixed tokens.
    let stream = principal.stream_name(stream);
    state.engine.streams().stream_config(&basin, &stream)?;
    Ok(empty())
}
