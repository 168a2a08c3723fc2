//! What serving alone and serving as a cluster node share: the cluster's
//! flags, draining connections at shutdown, and what the start-up log
//! says of auth and of a Postgres database.

use std::time::Duration;

use crate::api::Auth;

/// How long shutdown waits for open connections to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// `--cluster` and what goes with it.
#[derive(Clone, Debug)]
pub struct ClusterFlags {
    /// Where the other nodes reach this one; the listening address if
    /// `None`.
    pub advertise: Option<String>,
    /// Where the other nodes reach this one in plain HTTP, besides the
    /// listening address (needed when that one speaks TLS).
    pub cluster_listen: Option<std::net::SocketAddr>,
    /// How long a node's lease lasts without renewal.
    pub lease_ttl: Duration,
}

/// Logs whether auth is on, and what it means if it is off.
pub(super) fn say_auth(auth: &Auth) {
    match auth {
        Auth::On { .. } => tracing::info!("auth is on: every request needs an access token"),
        Auth::Off => tracing::warn!(
            "auth is off: anyone who can reach this port can read, write and delete everything \
             (give --root-token-file, RILL_ROOT_TOKEN or --auth to turn it on)"
        ),
    }
}

/// A Postgres URL's host, port and database, for the log: never the rest
/// (it may hold a password).
pub(super) fn postgres_at(url: &str) -> String {
    url.parse::<tokio_postgres::Config>()
        .map(|c| {
            let host = match c.get_hosts().first() {
                Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
                Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
                None => "localhost".into(),
            };
            let port = c.get_ports().first().copied().unwrap_or(5432);
            format!("{host}:{port}/{}", c.get_dbname().unwrap_or(""))
        })
        .unwrap_or_default()
}

/// Runs the accept loop `serve` until it has drained its connections
/// after shutdown began (`draining` fires then), or for
/// [`DRAIN_TIMEOUT`] more: a client that stops reading could hold a
/// connection open forever.
pub(super) async fn serve_until_drained(
    serve: impl std::future::Future<Output = ()>,
    draining: tokio::sync::oneshot::Receiver<()>,
) {
    let drain_deadline = async {
        if draining.await.is_ok() {
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = serve => {}
        () = drain_deadline => {
            tracing::warn!("connections did not drain within {DRAIN_TIMEOUT:?}; closing them");
        }
    }
}

/// Serves `router` (`GET /metrics` alone) on the `--metrics-listen`
/// listener, until the task is aborted.
pub(super) fn serve_metrics(
    listener: tokio::net::TcpListener,
    router: axum::Router,
) -> tokio::task::JoinHandle<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /metrics");
    }
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, router).await {
            tracing::error!(%err, "the metrics listener failed");
        }
    })
}
