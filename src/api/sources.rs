//! `/v1/sources`: collections kept equal to data elsewhere (see
//! `engine/sources/` for what they are, `src/sources/` for how they run).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::auth::{Principal, Resource};
use super::error::ApiResult;
use super::extract::{Basin, Json, NamePath, Path, Query};
use super::shared::{detached, provision_response, AppState, ListParams};
use crate::engine::error::EngineError;
use crate::engine::sources::{SourceConfig, SourceName};
use crate::wire::sources::{cursor_json, source_json};

pub async fn list(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Query(params): Query<ListParams>,
) -> ApiResult<axum::Json<Value>> {
    let (sources, has_more) = state
        .engine
        .sources()
        .list_sources(&basin, &params.into())?;
    let sources: Vec<Value> = sources.iter().map(|s| source_json(s, None)).collect();
    Ok(axum::Json(
        json!({ "sources": sources, "has_more": has_more }),
    ))
}

/// A source with its `state`: how far it is (durable) and what its
/// poller has done since the server started.
pub async fn get(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let sources = state.engine.sources();
    let info = sources.get_source(&basin, &name)?;
    let cursor = sources.cursor(&info).unwrap_or_default();
    let mut shown = cursor_json(&cursor);
    if let (Some(fields), Ok(Value::Object(poller))) = (
        shown.as_object_mut(),
        serde_json::to_value(state.sources.status(&basin, &name)),
    ) {
        fields.extend(poller);
    }
    Ok(axum::Json(source_json(&info, Some(shown))))
}

/// Makes the source (and its collections, if missing); it needs `append`
/// on the collections it writes (and `create-stream`, by the policy).
pub async fn ensure(
    State(state): State<AppState>,
    principal: Principal,
    Basin(basin): Basin,
    NamePath(name): NamePath<SourceName>,
    Json(config): Json<SourceConfig>,
) -> ApiResult<Response> {
    for collection in config.collections() {
        principal.check(Resource::Collections, collection)?;
    }
    // A new Postgres source is checked against its database first (the
    // tables exist and have a key, logical decoding is on), so that what
    // would fail later is refused now.
    if let SourceConfig::Postgres(pg) = &config {
        if state.engine.sources().get_source(&basin, &name).is_err() {
            pg.validate_settings()?;
            crate::sources::postgres::catalog::check(pg)
                .await
                .map_err(EngineError::Invalid)?;
        }
    }
    let engine = state.engine;
    let (info, provision) =
        detached(async move { engine.sources().ensure_source(&basin, &name, config).await })
            .await?;
    Ok(provision_response(provision, source_json(&info, None)))
}

pub async fn delete(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let engine = state.engine;
    detached(async move { engine.sources().delete_source(&basin, &name).await }).await?;
    Ok(StatusCode::NO_CONTENT)
}
