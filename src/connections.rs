//! Accepting connections within limits no client can push past: a request's
//! header must arrive within a timeout (so a slow-loris client, or an idle
//! HTTP/1 connection, is cut off), and at most so many connections are
//! served at once (the next ones get a quick 503 and are closed, instead of
//! the server running out of file descriptors and failing `accept`).

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// What one client connection may hold. Each is a `rill serve` flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A request's header must arrive whole within this; an HTTP/1
    /// connection waiting for its next request is closed after it too.
    pub header_read_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            max_connections: 10_000,
        }
    }
}

/// How long a refused connection gets to take its 503.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);
/// A pause after an `accept` that failed for want of resources (file
/// descriptors, memory), so the loop does not spin while they are short.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting and waits for open connections to finish (each is asked to
/// close once its current request is answered).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut shutdown = pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(err) => {
                    // A connection that failed before it was accepted is
                    // the client's business; anything else means resources
                    // are short: wait a little rather than spin.
                    if !is_connection_error(&err) {
                        tracing::warn!(%err, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse(tcp));
            continue;
        };
        // Session frames and acks are small and latency-bound: send each at
        // once instead of letting Nagle's algorithm hold it for the peer's
        // delayed ACK.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "cannot set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let first_byte_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            // The protocol (HTTP/1 or HTTP/2) is told by the first bytes;
            // a client that sends none would hold its slot forever.
            let mut probe = [0u8; 1];
            if !matches!(
                tokio::time::timeout(first_byte_timeout, tcp.peek(&mut probe)).await,
                Ok(Ok(1..))
            ) {
                return; // silent, closed or failed: drop it (and the slot)
            }
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
            if let Err(err) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%err, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Answers a connection over the limit with a 503 and closes it.
async fn refuse(mut tcp: TcpStream) {
    const BODY: &str = r#"{"code":"unavailable","message":"the server is serving as many connections as it may; try again shortly"}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        let _ = tcp.write_all(response.as_bytes()).await;
        let _ = tcp.shutdown().await;
        // Take what the client sent before closing: closing with unread
        // input resets the connection, and the client may lose the 503.
        let mut buf = [0u8; 4096];
        while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}

fn is_connection_error(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        err.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
