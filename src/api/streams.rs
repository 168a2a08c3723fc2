//! `/v1/streams`: create, ensure, get, reconfigure, delete and list the
//! streams of the basin a request is addressed to.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::auth::{Principal, Resource, StreamPath};
use super::error::ApiResult;
use super::extract::{Basin, Json, OptionalJson, Query, RequestToken};
use super::shared::{created_response, detached, provision_response, AppState, ListParams};
use crate::engine::streams::config::{StreamConfig, StreamConfigPatch};
use crate::engine::streams::names::StreamName;
use crate::engine::streams::StreamInfo;
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
    principal: Principal,
    Basin(basin): Basin,
    Query(params): Query<ListParams>,
) -> ApiResult<axum::Json<ListStreamsResponse>> {
    let (streams, has_more) = principal.list(
        Resource::Streams,
        params.into(),
        |s: &StreamInfo| &s.name,
        |req| state.engine.streams().list_streams(&basin, req),
    )?;
    Ok(axum::Json(ListStreamsResponse {
        streams: streams
            .into_iter()
            .map(|info| shown(&principal, info))
            .collect(),
        has_more,
    }))
}

/// A stream's info as the client sees it (relative to an
/// `auto_prefix_streams` token's prefix).
fn shown(principal: &Principal, mut info: StreamInfo) -> StreamInfoJson {
    info.name = principal.shown_stream_name(info.name);
    info.into()
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Basin(basin): Basin,
    RequestToken(token): RequestToken,
    Json(req): Json<CreateStreamRequest>,
) -> ApiResult<Response> {
    let stream = principal.stream_name(req.stream);
    principal.check(Resource::Streams, &stream)?;
    let stream = StreamName::parse(stream)?;
    let engine = state.engine;
    let (info, provision) = detached(async move {
        let patch = req.config.unwrap_or_default();
        engine
            .streams()
            .create_stream(&basin, &stream, &patch, token.as_deref())
            .await
    })
    .await?;
    Ok(created_response(provision, shown(&principal, info)))
}

pub async fn ensure(
    State(state): State<AppState>,
    principal: Principal,
    Basin(basin): Basin,
    StreamPath(stream): StreamPath,
    OptionalJson(patch): OptionalJson<StreamConfigPatch>,
) -> ApiResult<Response> {
    let stream = StreamName::parse(stream)?;
    let engine = state.engine;
    let (info, provision) = detached(async move {
        engine
            .streams()
            .ensure_stream(&basin, &stream, &patch.unwrap_or_default())
            .await
    })
    .await?;
    Ok(provision_response(provision, shown(&principal, info)))
}

pub async fn get_config(
    State(state): State<AppState>,
    Basin(basin): Basin,
    StreamPath(stream): StreamPath,
) -> ApiResult<axum::Json<StreamConfig>> {
    Ok(axum::Json(
        state.engine.streams().stream_config(&basin, &stream)?,
    ))
}

pub async fn reconfigure(
    State(state): State<AppState>,
    Basin(basin): Basin,
    StreamPath(stream): StreamPath,
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
    StreamPath(stream): StreamPath,
) -> ApiResult<StatusCode> {
    let engine = state.engine;
    detached(async move { engine.streams().delete_stream(&basin, &stream).await }).await?;
    Ok(StatusCode::ACCEPTED)
}
