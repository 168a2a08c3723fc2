//! `/v1/streams`: create, ensure, get, reconfigure, delete and list the
//! streams of the basin a request is addressed to.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::error::ApiResult;
use super::extract::{Basin, Json, NamePath, OptionalJson, Path, Query, RequestToken};
use super::shared::{created_response, detached, provision_response, AppState, ListParams};
use crate::engine::streams::config::{StreamConfig, StreamConfigPatch};
use crate::engine::streams::names::StreamName;
use crate::wire::json::{ListStreamsResponse, StreamInfoJson};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateStreamRequest {
    stream: String,
    #[serde(default)]
    config: Option<StreamConfigPatch>,
}

pub async fn list(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Query(params): Query<ListParams>,
) -> ApiResult<axum::Json<ListStreamsResponse>> {
    let (streams, has_more) = state
        .engine
        .streams()
        .list_streams(&basin, &params.into())?;
    Ok(axum::Json(ListStreamsResponse {
        streams: streams.into_iter().map(Into::into).collect(),
        has_more,
    }))
}

pub async fn create(
    State(state): State<AppState>,
    Basin(basin): Basin,
    RequestToken(token): RequestToken,
    Json(req): Json<CreateStreamRequest>,
) -> ApiResult<Response> {
    let stream = StreamName::parse(req.stream)?;
    let engine = state.engine;
    let (info, provision) = detached(async move {
        let patch = req.config.unwrap_or_default();
        engine
            .streams()
            .create_stream(&basin, &stream, &patch, token.as_deref())
            .await
    })
    .await?;
    Ok(created_response(provision, StreamInfoJson::from(info)))
}

pub async fn ensure(
    State(state): State<AppState>,
    Basin(basin): Basin,
    NamePath(stream): NamePath<StreamName>,
    OptionalJson(patch): OptionalJson<StreamConfigPatch>,
) -> ApiResult<Response> {
    let engine = state.engine;
    let (info, provision) = detached(async move {
        engine
            .streams()
            .ensure_stream(&basin, &stream, &patch.unwrap_or_default())
            .await
    })
    .await?;
    Ok(provision_response(provision, StreamInfoJson::from(info)))
}

pub async fn get_config(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(stream): Path<String>,
) -> ApiResult<axum::Json<StreamConfig>> {
    Ok(axum::Json(
        state.engine.streams().stream_config(&basin, &stream)?,
    ))
}

pub async fn reconfigure(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(stream): Path<String>,
    Json(patch): Json<StreamConfigPatch>,
) -> ApiResult<axum::Json<StreamConfig>> {
    Ok(axum::Json(
        state
            .engine
            .streams()
            .reconfigure_stream(&basin, &stream, &patch)
            .await?,
    ))
}

pub async fn delete(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(stream): Path<String>,
) -> ApiResult<StatusCode> {
    let engine = state.engine;
    detached(async move { engine.streams().delete_stream(&basin, &stream).await }).await?;
    Ok(StatusCode::ACCEPTED)
}
