//! Forwarding a request to the node that holds the lease, as it came:
//! method, path, query, headers (less those of one hop) and a body that
//! streams both ways, so that sessions and long polls pass through too.
//!
//! Between nodes it is plain HTTP/1.1 on the addresses they advertise
//! (`--advertise`; `--cluster-listen`, a port of its own, when clients
//! get TLS): a cluster's nodes talk over a network the operator trusts,
//! as they do to their database.

use std::time::Duration;

use axum::body::Body;
use axum::http::Version;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Set on a forwarded request, naming the node that forwarded it. A node
/// that gets one and does not hold the lease answers 503 rather than
/// forwarding it on: no request goes round in circles while the lease
/// moves.
pub const FORWARDED_BY: HeaderName = HeaderName::from_static("rill-forwarded-by");

/// How long opening a connection to the holder may take; past it, the
/// holder is taken for gone and the client told to retry.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Headers that belong to one hop of a connection, never passed on
/// (RFC 9110 §7.6.1). `Host` is passed on: the owner answers as the node
/// the client asked (a basin named in the host, URLs it gives out).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    // hyper answers `100-continue` to the client itself, as it reads
    // the body it forwards.
    "expect",
];

#[derive(Clone)]
pub struct Forwarder {
    client: Client<HttpConnector, Body>,
    /// This node's id, for [`FORWARDED_BY`].
    node: HeaderValue,
}

impl Forwarder {
    pub fn new(node: &str) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        // A forwarded session to an owner that vanished (its machine
        // gone) is found out, not kept forever.
        connector.set_keepalive(Some(Duration::from_secs(30)));
        connector.set_keepalive_interval(Some(Duration::from_secs(10)));
        connector.set_keepalive_retries(Some(3));
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            node: HeaderValue::from_str(node).unwrap_or(HeaderValue::from_static("node")),
        }
    }

    /// Sends a request of the node's own (the feed's `GET`).
    pub(super) async fn send(
        &self,
        request: Request<Body>,
    ) -> Result<Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
        self.client.request(request).await
    }

    /// Sends `request` to the node at `to` (`HOST:PORT`) and answers with
    /// what it answers.
    pub async fn forward(&self, mut request: Request<Body>, to: &str) -> Response<Body> {
        if request.headers().contains_key(&FORWARDED_BY) {
            return unavailable(
                "not_owner",
                "the request was forwarded to a node that no longer holds the lease; retry",
            );
        }
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let Ok(uri) = format!("http://{to}{path}").parse::<Uri>() else {
            return unavailable(
                "unavailable",
                &format!("the lease holder's address `{to}` is not HOST:PORT"),
            );
        };
        // HTTP/2 carries the host in the URI, HTTP/1.1 in `Host`.
        let host = match request.headers().get(header::HOST) {
            Some(host) => Some(host.clone()),
            None => request
                .uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
        };
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_11;
        strip_hop_by_hop(request.headers_mut());
        if let Some(host) = host {
            request.headers_mut().insert(header::HOST, host);
        }
        request
            .headers_mut()
            .insert(FORWARDED_BY, self.node.clone());
        match self.client.request(request).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, Body::new(body))
            }
            // Nothing was sent: safe to send again.
            Err(err) if err.is_connect() => unavailable(
                "unavailable",
                &format!("the node holding the lease, at {to}, cannot be reached ({err}); retry"),
            ),
            Err(err) => error(
                StatusCode::BAD_GATEWAY,
                "forwarding_failed",
                &format!(
                    "the connection to the node holding the lease, at {to}, broke before it \
                     answered ({err}): the request may or may not have taken effect"
                ),
            ),
        }
    }
}

/// Removes the headers of one hop, those `Connection` names included.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
    for name in named {
        headers.remove(name);
    }
}

/// A 503 in the API's error shape, for a request never tried: clients
/// retry it.
pub fn unavailable(code: &str, message: &str) -> Response<Body> {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, code, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// An error in the API's shape (`{"code", "message"}`).
pub(super) fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "code": code, "message": message }).to_string();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::HOST, HeaderValue::from_static("a:1"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        headers.insert("s2-basin", HeaderValue::from_static("b"));
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["authorization", "host", "s2-basin"]);
    }
}
