//! Account-level endpoints: access tokens (the metrics API is in
//! `metric_sets.rs`).
//!
//! Tokens are issued, listed and revoked as S2 does (the authorization
//! layer has checked the operation; these check the names).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
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
