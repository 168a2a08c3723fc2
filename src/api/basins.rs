//! `/v1/basins`: create, ensure, get, reconfigure, delete and list basins.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::auth::{Principal, Resource};
use super::error::ApiResult;
use super::extract::{Json, NamePath, OptionalJson, Path, Query, RequestToken};
use super::shared::{created_response, detached, provision_response, AppState, ListParams};
use crate::engine::streams::config::{BasinConfig, BasinConfigPatch};
use crate::engine::streams::names::BasinName;
use crate::engine::streams::BasinInfo;
use crate::wire::json::{BasinInfoJson, ListBasinsResponse};

/// Other fields (`scope`, `location`: where the basin should live) are
/// accepted and ignored: Rill has one location.
#[derive(Deserialize)]
pub struct CreateBasinRequest {
    basin: String,
    #[serde(default)]
    config: Option<BasinConfigPatch>,
}

#[derive(Deserialize, Default)]
pub struct EnsureBasinRequest {
    #[serde(default)]
    config: Option<BasinConfigPatch>,
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<ListParams>,
) -> ApiResult<axum::Json<ListBasinsResponse>> {
    let (basins, has_more) = principal.list(
        Resource::Basins,
        params.into(),
        |b: &BasinInfo| &b.name,
        |req| state.engine.streams().list_basins(req),
    )?;
    Ok(axum::Json(ListBasinsResponse {
        basins: basins.into_iter().map(Into::into).collect(),
        has_more,
    }))
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    RequestToken(token): RequestToken,
    Json(req): Json<CreateBasinRequest>,
) -> ApiResult<Response> {
    principal.check(Resource::Basins, &req.basin)?;
    let basin = BasinName::parse(req.basin)?;
    let engine = state.engine;
    let (info, provision) = detached(async move {
        let patch = req.config.unwrap_or_default();
        engine
            .streams()
            .create_basin(&basin, &patch, token.as_deref())
            .await
    })
    .await?;
    Ok(created_response(provision, BasinInfoJson::from(info)))
}

pub async fn ensure(
    State(state): State<AppState>,
    NamePath(basin): NamePath<BasinName>,
    OptionalJson(req): OptionalJson<EnsureBasinRequest>,
) -> ApiResult<Response> {
    let patch = req.unwrap_or_default().config.unwrap_or_default();
    let engine = state.engine;
    let (info, provision) =
        detached(async move { engine.streams().ensure_basin(&basin, &patch).await }).await?;
    Ok(provision_response(provision, BasinInfoJson::from(info)))
}

pub async fn get_config(
    State(state): State<AppState>,
    Path(basin): Path<String>,
) -> ApiResult<axum::Json<BasinConfig>> {
    Ok(axum::Json(state.engine.streams().basin_config(&basin)?))
}

pub async fn reconfigure(
    State(state): State<AppState>,
    Path(basin): Path<String>,
    Json(patch): Json<BasinConfigPatch>,
) -> ApiResult<axum::Json<BasinConfig>> {
    Ok(axum::Json(
        state
            .engine
            .streams()
            .reconfigure_basin(&basin, &patch)
            .await?,
    ))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(basin): Path<String>,
) -> ApiResult<StatusCode> {
    let engine = state.engine;
    detached(async move { engine.delete_basin(&basin).await }).await?;
    Ok(StatusCode::ACCEPTED)
}
