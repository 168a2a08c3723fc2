//! The web console: a few static files built into the binary, served at
//! `/` and `/console/`. It is plain HTML, CSS and JavaScript modules
//! (`console/` in the repository), with no build step and nothing to
//! install: the browser runs it, and it calls the same JSON API as any
//! client, with the token the user enters (kept in the tab's session
//! storage). The files themselves hold no data, so they are public.

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};

/// Every file, by its name under `/console/`.
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../console/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/api.js"),
    ),
    (
        "ui.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/ui.js"),
    ),
    (
        "streams.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/streams.js"),
    ),
    (
        "records.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/records.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../console/style.css"),
    ),
];

/// Scripts and styles from this server only (record bodies are shown as
/// text, never markup, and this keeps it so), and no framing by others.
const SECURITY: [(HeaderName, &str); 3] = [
    (
        HeaderName::from_static("content-security-policy"),
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
    ),
    (HeaderName::from_static("x-content-type-options"), "nosniff"),
    (HeaderName::from_static("referrer-policy"), "no-referrer"),
];

/// `GET /` and `GET /console`: the console's page.
pub async fn index() -> Response {
    file("index.html")
}

/// `GET /console/{file}`.
pub async fn asset(Path(name): Path<String>) -> Response {
    file(if name.is_empty() { "index.html" } else { &name })
}

fn file(name: &str) -> Response {
    let Some((_, content_type, body)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return super::error::ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("the console has no file `{name}`"),
        )
        .into_response();
    };
    let mut response = (
        [
            (CONTENT_TYPE, *content_type),
            // Small files, and a new version must show at once.
            (CACHE_CONTROL, "no-cache"),
        ],
        *body,
    )
        .into_response();
    for (name, value) in SECURITY {
        response
            .headers_mut()
            .insert(name, axum::http::HeaderValue::from_static(value));
    }
    response
}
