//! Accepting connections within limits: a client must say which protocol
//! it speaks and send each request's header within a timeout (so a
//! slow-loris client, or a silent or idle HTTP/1 connection, is cut off),
//! an HTTP/2 peer that stops answering pings is dropped, and at most so
//! many connections are served at once (the next ones get a quick 503 and
//! are closed, instead of the server running out of file descriptors).
//!
//! With TLS, the handshake must finish within the same timeout, and plain
//! HTTP sent to the port gets a 400 saying to use https.
//!
//! A connection with no request open for the idle timeout is closed
//! (HTTP/2 included, whose peers may otherwise hold one open forever by
//! answering pings), and so is one whose client stops reading: a write
//! that makes no progress for the write-stall timeout ends it.
//!
//! A unary request's body must arrive within its own timeout (see
//! `api::router`).

mod activity;
mod prefixed;
mod stall;

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;

use crate::tls::Tls;
use activity::{Activity, Tracked};
use prefixed::Prefixed;
use stall::StallGuard;

/// What one client connection may hold. Each is a `rill serve` flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A connection must show its protocol, and a request its whole header,
    /// within this; an HTTP/1 connection waiting for its next request is
    /// closed after it too.
    pub header_read_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// A unary request's whole body must arrive within this (`408`
    /// otherwise); sessions stream theirs and are not bound by it.
    pub body_read_timeout: Duration,
    /// A connection with no open request is closed after this.
    pub idle_timeout: Duration,
    /// A connection whose writes make no progress for this is closed:
    /// its client stopped reading.
    pub write_stall_timeout: Duration,
    /// The largest request head (HTTP/1.1: request line and headers;
    /// HTTP/2: the header list) accepted; larger gets `431`.
    pub max_header_bytes: usize,
    /// The most headers an HTTP/1.1 request may have (`431`).
    pub max_headers: usize,
    /// The largest unary request body (`413`).
    pub max_body_bytes: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            body_read_timeout: crate::api::DEFAULT_BODY_READ_TIMEOUT,
            idle_timeout: Duration::from_secs(60),
            write_stall_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_body_bytes: crate::api::DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// How long a refused connection gets to take its 503.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);
/// Refusals in progress at once; past this, extra connections are closed
/// without a word (each refusal holds a file descriptor for a moment).
const MAX_REFUSALS: usize = 256;
/// A pause after an `accept` that failed for want of resources (file
/// descriptors, memory), so the loop does not spin while they are short.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// HTTP/2: ping an idle peer this often, and drop it if a ping goes
/// unanswered this long (a peer that vanished without closing).
const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// The first byte of a TLS connection (a handshake record).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// What an HTTP/2 client sends first (prior knowledge).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One open connection in the `rill_connections_open` gauge, for as long
/// as it lives.
struct OpenConnection(prometheus::IntGauge);

impl OpenConnection {
    fn counted(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Serves `app` on `listener` (over TLS if `tls` is given) until
/// `shutdown` resolves, then stops accepting, asks every connection to
/// close once its current requests are answered, and waits for them (the
/// caller bounds the wait).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    tls: Option<Tls>,
    open_connections: prometheus::IntGauge,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        // hyper's floor for its read buffer, which bounds a request head.
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT)
        .max_header_list_size(limits.max_header_bytes.min(u32::MAX as usize) as u32);
    let max = limits
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let slots = Arc::new(Semaphore::new(max));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let (closing_tx, closing) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(err) if is_connection_error(&err) => continue,
                Err(err) => {
                    // Resources are short: wait a little rather than spin.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // A TLS client cannot read a plain-text 503: it is just closed.
            if tls.is_some() {
                drop(tcp);
                continue;
            }
            if let Ok(refusal) = refusals.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(tcp).await;
                    drop(refusal);
                });
            }
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
        let mut closing = closing.clone();
        let deadline = Instant::now() + limits.header_read_timeout;
        let tls = tls.clone();
        let open = OpenConnection::counted(&open_connections);
        tokio::spawn(async move {
            let _open = open;
            // Until the protocol is known, hyper has no timer running: a
            // client that sends nothing, or half an HTTP/2 preface, would
            // hold its slot forever.
            let stall = limits.write_stall_timeout;
            let accepted = tokio::select! {
                accepted = tokio::time::timeout_at(deadline, accept(tcp, tls.as_ref(), stall)) => accepted,
                _ = closing.wait_for(|closing| *closing) => return,
            };
            match accepted {
                Ok(Some(Accepted::Plain(io))) => {
                    serve_connection(&builder, io, service, limits.idle_timeout, closing).await
                }
                Ok(Some(Accepted::Tls(io))) => {
                    serve_connection(&builder, io, service, limits.idle_timeout, closing).await
                }
                // Silent, closed, failed or refused: drop it and its slot.
                Ok(None) | Err(_) => {}
            }
            drop(slot);
        });
    }
    drop(listener);
    closing_tx.send_replace(true);
    // Every slot back means every connection is done.
    let _ = slots.acquire_many(max as u32).await;
}

/// A connection ready for HTTP: its protocol can be told from what is
/// buffered or peeked. The stall guard sits on the TCP stream, under TLS,
/// so that it sees the bytes that really go out.
enum Accepted {
    Plain(StallGuard<TcpStream>),
    Tls(Box<Prefixed<TlsStream<StallGuard<TcpStream>>>>),
}

/// Takes a connection up to the point where HTTP can start: for TLS, the
/// handshake and the first decrypted bytes; for plain TCP, the first
/// bytes. `None` if the client closed, failed the handshake or spoke
/// plain HTTP to the TLS port (it gets a 400 saying so).
async fn accept(tcp: TcpStream, tls: Option<&Tls>, stall: Duration) -> Option<Accepted> {
    let Some(tls) = tls else {
        sniff_protocol(&tcp).await.ok()?;
        return Some(Accepted::Plain(StallGuard::new(tcp, stall)));
    };
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await.ok()? == 0 {
        return None;
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        refuse_plain_text(tcp).await;
        return None;
    }
    let mut stream = match tls.acceptor().accept(StallGuard::new(tcp, stall)).await {
        Ok(stream) => stream,
        Err(err) => {
            tracing::debug!(%err, "TLS handshake failed");
            return None;
        }
    };
    let mut head = Vec::with_capacity(H2_PREFACE.len());
    while !protocol_known(&head) {
        let mut byte = [0u8; H2_PREFACE.len()];
        let want = H2_PREFACE.len() - head.len();
        let n = stream.read(&mut byte[..want]).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&byte[..n]);
    }
    Some(Accepted::Tls(Box::new(Prefixed::new(head, stream))))
}

/// Serves HTTP on a connection until it ends, closing it gracefully when
/// the server shuts down or it has had no open request for `idle_timeout`.
async fn serve_connection<I>(
    builder: &Builder<TokioExecutor>,
    io: I,
    service: TowerToHyperService<Router>,
    idle_timeout: Duration,
    mut closing: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let service = Tracked {
        inner: service,
        activity: activity.clone(),
    };
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let mut connection = pin!(connection);
    let mut asked_to_close = false;
    let mut idle_check = tokio::time::interval((idle_timeout / 4).max(Duration::from_millis(100)));
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(%err, "connection ended with an error");
                }
                break;
            }
            _ = closing.wait_for(|closing| *closing), if !asked_to_close => {
                connection.as_mut().graceful_shutdown();
                asked_to_close = true;
            }
            _ = idle_check.tick(), if !asked_to_close => {
                if activity.idle_for().is_some_and(|idle| idle >= idle_timeout) {
                    connection.as_mut().graceful_shutdown();
                    asked_to_close = true;
                }
            }
        }
    }
}

/// Whether these first bytes tell HTTP/1 from HTTP/2: a byte that departs
/// from the HTTP/2 preface, or the whole preface.
fn protocol_known(head: &[u8]) -> bool {
    let n = head.len().min(H2_PREFACE.len());
    n > 0 && (head[..n] != H2_PREFACE[..n] || n == H2_PREFACE.len())
}

/// Waits until the first bytes tell HTTP/1 from HTTP/2: a first byte that
/// cannot start the HTTP/2 preface, a byte that departs from it, or the
/// whole preface. Fails if the client closes first.
async fn sniff_protocol(tcp: &TcpStream) -> std::io::Result<()> {
    let mut head = [0u8; H2_PREFACE.len()];
    loop {
        let n = tcp.peek(&mut head).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if protocol_known(&head[..n]) {
            return Ok(());
        }
        // A prefix of the preface: `peek` returns at once while those bytes
        // wait unread, so pause before looking again.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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

/// Answers plain HTTP sent to the TLS port with a 400 that says so.
async fn refuse_plain_text(mut tcp: TcpStream) {
    const BODY: &str = r#"{"code":"tls_required","message":"this port speaks TLS: use https://"}"#;
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        let _ = tcp.write_all(response.as_bytes()).await;
        let _ = tcp.shutdown().await;
        let mut buf = [0u8; 4096];
        while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// An `accept` error that concerns one connection, not the server.
fn is_connection_error(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        err.kind(),
        ConnectionRefused
            | ConnectionAborted
            | ConnectionReset
            | Interrupted
            | NetworkDown
            | NetworkUnreachable
            | HostUnreachable
    )
}
