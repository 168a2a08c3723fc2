//! `/v1/consumers`: server-tracked consumers. Admin (ensure, get, list,
//! reconfigure, delete) and data (receive, ack, nack, extend, commit;
//! rejecting to the dead letters, and replaying them).
//!
//! The data operations change a consumer's state in several steps and are
//! run detached, so that a client hanging up cannot stop one half way.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::auth::{check_source, Principal};
use super::error::{ApiError, ApiResult};
use super::extract::{Basin, Json, NamePath, OptionalJson, Path, Query, RecordFormat};
use super::shared::{detached, provision_response, AppState, ListParams};
use crate::engine::consumers::{ConsumerConfig, ConsumerConfigPatch, ConsumerName, Settle};
use crate::engine::sinks::config::SINK_CONSUMER_PREFIX;
use crate::engine::sinks::Sinks;
use crate::wire::consumers::{
    consumer_json, delivery_json, frontier_json, CommitRequest, ReceiveRequest, ReplayRequest,
    SettleRequest,
};

pub async fn list(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Query(params): Query<ListParams>,
) -> ApiResult<axum::Json<Value>> {
    let (consumers, has_more) = state
        .engine
        .consumers()
        .list_consumers(&basin, &params.into())?;
    let consumers: Vec<Value> = consumers.iter().map(consumer_json).collect();
    Ok(axum::Json(
        json!({ "consumers": consumers, "has_more": has_more }),
    ))
}

pub async fn ensure(
    State(state): State<AppState>,
    principal: Principal,
    Basin(basin): Basin,
    NamePath(name): NamePath<ConsumerName>,
    Json(config): Json<ConsumerConfig>,
) -> ApiResult<Response> {
    not_a_sinks(&name)?;
    check_source(&principal, &config.source)?;
    let engine = state.engine;
    let (info, provision) = detached(async move {
        engine
            .consumers()
            .ensure_consumer(&basin, &name, config)
            .await
    })
    .await?;
    Ok(provision_response(provision, consumer_json(&info)))
}

pub async fn get(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let info = state
        .engine
        .consumers()
        .consumer_info(&basin, &name)
        .await?;
    let mut body = consumer_json(&info);
    // Its lag at each minute of the last hour, for charts.
    let history = state.engine.usage(|h| h.consumer_lag(&basin, &name));
    if let Some(state) = body.get_mut("state").and_then(Value::as_object_mut) {
        let points: Vec<Value> = history.iter().map(|(at, lag)| json!([at, lag])).collect();
        state.insert("lag_history".into(), json!(points));
    }
    Ok(axum::Json(body))
}

pub async fn reconfigure(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(name): Path<String>,
    Json(patch): Json<ConsumerConfigPatch>,
) -> ApiResult<axum::Json<Value>> {
    not_a_sinks(&name)?;
    let engine = state.engine;
    let info = detached(async move {
        engine
            .consumers()
            .reconfigure_consumer(&basin, &name, &patch)
            .await
    })
    .await?;
    Ok(axum::Json(consumer_json(&info)))
}

pub async fn delete(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    not_a_sinks(&name)?;
    let engine = state.engine;
    detached(async move { engine.consumers().delete_consumer(&basin, &name).await }).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn receive(
    State(state): State<AppState>,
    principal: Principal,
    Basin(basin): Basin,
    Path(name): Path<String>,
    RecordFormat(format): RecordFormat,
    OptionalJson(req): OptionalJson<ReceiveRequest>,
) -> ApiResult<axum::Json<Value>> {
    not_a_sinks(&name)?;
    let req = req.unwrap_or_default();
    let batch_size = req.batch_size.unwrap_or(1);
    let wait = std::time::Duration::from_millis(req.wait_ms.unwrap_or(0));
    // Held by the receive itself, which goes on if the client hangs up.
    let poll = super::records::long_poll(&state, &principal, Some(wait))?;
    let engine = state.engine;
    let deliveries = detached(async move {
        let _poll = poll;
        engine
            .consumers()
            .receive(&basin, &name, batch_size, wait)
            .await
    })
    .await?;
    let messages = deliveries
        .iter()
        .map(|d| delivery_json(d, format))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(json!({ "messages": messages })))
}

async fn settle(
    state: AppState,
    basin: String,
    name: String,
    req: SettleRequest,
    action: Settle,
) -> ApiResult<(usize, Option<u64>)> {
    if req.delay_ms.is_some() && !matches!(action, Settle::Nack { .. }) {
        return Err(ApiError::invalid("`delay_ms` applies to nack only"));
    }
    let ids = req.decoded_ids()?;
    let engine = state.engine;
    let settled =
        detached(async move { engine.consumers().settle(&basin, &name, &ids, action).await }).await;
    Ok(settled.map_err(|err| req.explain(err))?)
}

pub async fn ack(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(name): Path<String>,
    Json(req): Json<SettleRequest>,
) -> ApiResult<axum::Json<Value>> {
    not_a_sinks(&name)?;
    let (acked, _) = settle(state, basin, name, req, Settle::Ack).await?;
    Ok(axum::Json(json!({ "acked": acked })))
}

pub async fn nack(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(name): Path<String>,
    Json(req): Json<SettleRequest>,
) -> ApiResult<axum::Json<Value>> {
    not_a_sinks(&name)?;
    let delay_ms = req.delay_ms.unwrap_or(0);
    let (nacked, _) = settle(state, basin, name, req, Settle::Nack { delay_ms }).await?;
    Ok(axum::Json(json!({ "nacked": nacked })))
}

pub async fn extend(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(name): Path<String>,
    Json(req): Json<SettleRequest>,
) -> ApiResult<axum::Json<Value>> {
    not_a_sinks(&name)?;
    let (extended, deadline) = settle(state, basin, name, req, Settle::Extend).await?;
    Ok(axum::Json(
        json!({ "extended": extended, "deadline": deadline }),
    ))
}

pub async fn commit(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(name): Path<String>,
    Json(req): Json<CommitRequest>,
) -> ApiResult<axum::Json<Value>> {
    not_a_sinks(&name)?;
    let position = req.position()?;
    let engine = state.engine;
    let committed = detached(async move {
        engine
            .consumers()
            .commit_consumer(&basin, &name, position)
            .await
    })
    .await?;
    Ok(axum::Json(
        json!({ "committed": frontier_json(&committed) }),
    ))
}

/// `POST /v1/consumers/{name}/reject`: to the dead-letter stream at once.
pub async fn reject(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(name): Path<String>,
    Json(req): Json<SettleRequest>,
) -> ApiResult<axum::Json<Value>> {
    not_a_sinks(&name)?;
    let (rejected, _) = settle(state, basin, name, req, Settle::Reject).await?;
    Ok(axum::Json(json!({ "rejected": rejected })))
}

/// `POST /v1/consumers/{name}/replay`: dead letters become pending again.
pub async fn replay(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(name): Path<String>,
    Json(req): Json<ReplayRequest>,
) -> ApiResult<axum::Json<Value>> {
    if let Some(sink) = name.strip_prefix(SINK_CONSUMER_PREFIX) {
        let info = state.engine.sinks().get_sink(&basin, sink)?;
        if info.config.destination.keeps_position() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "sink_keeps_position",
                format!(
                    "sink `{sink}` writes to {} exactly once and skips what its position \
                     covers there: a replayed dead letter would be acked unwritten",
                    info.config.destination.kind()
                ),
            ));
        }
    }
    let engine = state.engine;
    let outcome = detached(async move {
        engine
            .consumers()
            .replay(&basin, &name, &req.dead_letters)
            .await
    })
    .await?;
    Ok(axum::Json(json!({
        "replayed": outcome.replayed,
        "already_pending": outcome.already_pending,
        "gone": outcome.gone,
    })))
}

/// A sink's consumer is the sink's: clients may look at it (and replay
/// its dead letters, unless the sink writes exactly once), not change or
/// use it.
fn not_a_sinks(name: &str) -> ApiResult<()> {
    if Sinks::owns_consumer(name) {
        return Err(ApiError::invalid(format!(
            "consumer `{name}` belongs to a sink: manage it through /v1/sinks"
        )));
    }
    Ok(())
}
