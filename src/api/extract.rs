//! Request extractors shared by the handlers: the basin a request is
//! addressed to, the record format, and JSON/query/path parsing that fails
//! with our error bodies instead of axum's plain-text ones.

use std::io::Read;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::shared::AppState;
use crate::engine::streams::names::{BasinName, ValidName};
use crate::wire::json::Format;

/// The basin a stream request is for: the `s2-basin` header, or else the
/// first label of the `Host` (`{basin}.localhost:8080`).
pub struct Basin(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Basin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        basin_from_headers(&parts.headers).map(Basin)
    }
}

/// The basin a request is addressed to; see [`Basin`].
pub fn basin_from_headers(headers: &HeaderMap) -> Result<String, ApiError> {
    if let Some(value) = headers.get("s2-basin") {
        let name = value
            .to_str()
            .map_err(|_| ApiError::bad_header("the s2-basin header is not valid text"))?;
        return Ok(name.to_string());
    }
    if let Some(basin) = basin_from_host(headers) {
        return Ok(basin);
    }
    Err(ApiError::bad_header(
        "no basin given: send the `s2-basin` header, or address the server as `{basin}.HOST`",
    ))
}

fn basin_from_host(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(axum::http::header::HOST)?.to_str().ok()?;
    let (label, rest) = host.split_once('.')?;
    if rest.is_empty() || BasinName::parse(label).is_err() {
        return None;
    }
    Some(label.to_string())
}

/// The `s2-request-token` header: makes a create safe to retry.
pub struct RequestToken(pub Option<String>);

const MAX_REQUEST_TOKEN_CHARS: usize = 36;

impl<S: Send + Sync> FromRequestParts<S> for RequestToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get("s2-request-token") else {
            return Ok(RequestToken(None));
        };
        match value.to_str() {
            Ok(token) if !token.is_empty() && token.chars().count() <= MAX_REQUEST_TOKEN_CHARS => {
                Ok(RequestToken(Some(token.to_string())))
            }
            _ => Err(ApiError::bad_header(format!(
                "s2-request-token must be 1 to {MAX_REQUEST_TOKEN_CHARS} characters of text"
            ))),
        }
    }
}

/// The `s2-format` header: how record data is written in JSON.
pub struct RecordFormat(pub Format);

impl<S: Send + Sync> FromRequestParts<S> for RecordFormat {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match parts.headers.get("s2-format") {
            None => Ok(RecordFormat(Format::Raw)),
            Some(value) => value
                .to_str()
                .ok()
                .and_then(Format::parse)
                .map(RecordFormat)
                .ok_or_else(|| ApiError::bad_header("s2-format must be `raw` or `base64`")),
        }
    }
}

/// Reads a whole request body, at most `MAX_BODY_BYTES`, and undoes its
/// `Content-Encoding` (`gzip` or `zstd`, what S2 clients send when asked to
/// compress), with the same limit on the decompressed size.
pub async fn read_body(
    headers: &HeaderMap,
    state: &AppState,
    body: axum::body::Body,
) -> Result<Bytes, ApiError> {
    let (timeout, max_bytes) = (state.body_read_timeout, state.max_body_bytes);
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {max_bytes} bytes"),
        )
    };
    let read = tokio::time::timeout(timeout, axum::body::to_bytes(body, max_bytes));
    let bytes = read
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!("the request body did not arrive within {timeout:?}"),
            )
        })?
        .map_err(|err| {
            // Over the limit, or not readable as HTTP at all (a malformed
            // chunked encoding, a connection cut mid-body): different
            // faults, different answers.
            let err = err.into_inner();
            if err.is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    format!("the request body could not be read: {err}"),
                )
            }
        })?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("").trim().to_ascii_lowercase());
    let limit = max_bytes as u64 + 1;
    let mut decoded = Vec::new();
    let result = match encoding.as_deref() {
        None | Some("") | Some("identity") => return Ok(bytes),
        Some("gzip") => flate2::read::GzDecoder::new(&bytes[..])
            .take(limit)
            .read_to_end(&mut decoded),
        Some("zstd") => zstd::stream::read::Decoder::new(&bytes[..])
            .and_then(|d| d.take(limit).read_to_end(&mut decoded)),
        Some(other) => {
            return Err(ApiError::bad_header(format!(
                "unsupported Content-Encoding `{other}`; use gzip or zstd"
            )))
        }
    };
    result.map_err(|e| ApiError::bad_header(format!("the body could not be decompressed: {e}")))?;
    if decoded.len() > max_bytes {
        return Err(too_large());
    }
    Ok(Bytes::from(decoded))
}

/// A JSON body, with our error bodies on failure.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let bytes = read_body(&parts.headers, state, body).await?;
        serde_json::from_slice(&bytes)
            .map(Json)
            .map_err(|e| ApiError::bad_json(format!("invalid JSON body: {e}")))
    }
}

/// A JSON body that may be absent or `null` (ensure requests).
pub struct OptionalJson<T>(pub Option<T>);

impl<T: DeserializeOwned> FromRequest<AppState> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let bytes = read_body(&parts.headers, state, body).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(None));
        }
        serde_json::from_slice::<Option<T>>(&bytes)
            .map(OptionalJson)
            .map_err(|e| ApiError::bad_json(format!("invalid JSON body: {e}")))
    }
}

/// `axum::extract::Query` with our error body on rejection.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Query(value))
    }
}

/// `axum::extract::Path` with our error body on rejection.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(value) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(Path(value))
    }
}

/// A path segment naming something to create, parsed into its name type:
/// `invalid` (422) if it is not a valid name of that kind.
pub struct NamePath<T>(pub T);

impl<T: ValidName + Send, S: Send + Sync> FromRequestParts<S> for NamePath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(text) = Path::<String>::from_request_parts(parts, state).await?;
        Ok(NamePath(T::parse_text(text)?))
    }
}
