//! What browsers need: CORS preflights, and the headers of every answer.

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::headers;
use super::shared::PREFIX;

/// `OPTIONS`: a CORS preflight (the headers every answer carries are
/// added by [`browser_headers`]).
pub async fn preflight(request_headers: HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS"),
    );
    // What the browser asks to send, or every header the protocol has.
    let allowed = request_headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or(HeaderValue::from_static(headers::REQUEST_HEADERS));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allowed);
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    response
}

/// The headers of every answer under [`PREFIX`], errors included: no
/// MIME sniffing, readable from other origins (a stream URL is meant to
/// be fetched by browsers; the token, not the origin, is what grants
/// access), and the protocol's headers exposed to scripts.
pub async fn browser_headers(request: Request, next: Next) -> Response {
    let ours = request.uri().path().starts_with(PREFIX);
    let mut response = next.run(request).await;
    if ours {
        let headers = response.headers_mut();
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            "cross-origin-resource-policy",
            HeaderValue::from_static("cross-origin"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(headers::EXPOSED_HEADERS),
        );
    }
    response
}
