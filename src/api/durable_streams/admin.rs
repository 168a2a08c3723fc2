//! `HEAD` and `DELETE`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::shared::{describe, engine_error, no_store, open, stream_name, Reply};
use crate::api::auth::Principal;
use crate::api::extract::Path;
use crate::api::shared::{detached, AppState};

/// `HEAD`: the stream's content type, tail, expiry and closure.
pub(super) async fn head(state: AppState, principal: Principal, path: String) -> Response {
    let reply: Reply = async {
        let name = stream_name(&principal, path)?;
        let stream = open(&state, &name, false).await?;
        let mut response = StatusCode::OK.into_response();
        describe(response.headers_mut(), &stream);
        no_store(response.headers_mut());
        Ok(response)
    }
    .await;
    reply.unwrap_or_else(IntoResponse::into_response)
}

/// `DELETE`: the stream and its records.
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(path): Path<String>,
) -> Response {
    let reply: Reply = async {
        let name = stream_name(&principal, path)?;
        let engine = state.engine.clone();
        detached(async move { engine.durable_streams().delete(&name).await })
            .await
            .map_err(engine_error)?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    reply.unwrap_or_else(IntoResponse::into_response)
}
