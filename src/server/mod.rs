//! Running the server: open storage, start the engine, serve HTTP, and shut
//! down cleanly. Errors here are messages for the operator, hence `String`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::api::{Auth, SessionLimits};
use crate::connections::{self, ConnectionLimits};
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::storage::{FjallStorage, MemoryStorage, Storage};
use crate::tls::Tls;

mod clustered;
mod replica;
mod services;
mod shared;

use services::{ApiSettings, Services};
pub use shared::ClusterFlags;
use shared::{postgres_at, say_auth, serve_metrics, serve_until_drained};

/// File descriptors kept back from connections, for storage and the rest.
const FILE_RESERVE: u64 = 256;

#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub storage: StorageChoice,
    pub limits: ConnectionLimits,
    pub auth: Auth,
    /// Serve over TLS with these certificate and key files.
    pub tls: Option<crate::tls::TlsFiles>,
    pub sessions: SessionLimits,
    pub access_log: crate::api::AccessLog,
    /// Also serve `GET /metrics`, without a token, here.
    pub metrics_listen: Option<SocketAddr>,
    /// Count appends and reads per stream too, not only per basin.
    pub metrics_per_stream: bool,
    /// How long a Durable Streams long poll waits for records.
    pub durable_streams_long_poll: Duration,
    /// Run as one node of a cluster over the Postgres `storage`.
    pub cluster: Option<ClusterFlags>,
}

/// Where the server keeps its data. (Its `Debug` leaves out a Postgres
/// URL, which may hold a password.)
#[derive(Clone)]
pub enum StorageChoice {
    /// fjall in this directory (the default).
    Dir(PathBuf),
    /// A Postgres database (`postgres://…`).
    Postgres(String),
    /// Nothing survives the process.
    Memory,
}

impl std::fmt::Debug for StorageChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageChoice::Dir(dir) => f.debug_tuple("Dir").field(dir).finish(),
            StorageChoice::Postgres(_) => f.write_str("Postgres(…)"),
            StorageChoice::Memory => f.write_str("Memory"),
        }
    }
}

/// Opens the storage `choice` names.
pub fn open_chosen_storage(choice: &StorageChoice) -> Result<Arc<dyn Storage>, String> {
    match choice {
        StorageChoice::Dir(dir) => open_storage(Some(dir)),
        StorageChoice::Memory => open_storage(None),
        StorageChoice::Postgres(url) => Ok(Arc::new(
            crate::storage::PostgresStorage::open(url)
                .map_err(|e| format!("cannot open storage on Postgres: {e}"))?,
        )),
    }
}

pub fn open_storage(data_dir: Option<&std::path::Path>) -> Result<Arc<dyn Storage>, String> {
    Ok(match data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
            Arc::new(
                FjallStorage::open(dir)
                    .map_err(|e| format!("cannot open storage in {}: {e}", dir.display()))?,
            )
        }
        None => Arc::new(MemoryStorage::default()),
    })
}

/// Serves until `shutdown` resolves, then stops taking requests, lets open
/// requests finish, and makes every acknowledged write durable.
pub async fn serve(
    config: ServeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let mut limits = config.limits;
    if let Some(files) = raise_open_file_limit() {
        // Storage, sessions' own files and the listener need descriptors
        // too: keep a reserve so the cap is met before the fd limit is.
        let room = files.saturating_sub(FILE_RESERVE).max(1);
        if (limits.max_connections as u64) > room {
            tracing::warn!(
                max_connections = limits.max_connections,
                open_file_limit = files,
                "lowering max connections to fit the open file limit"
            );
            limits.max_connections = room as usize;
        }
    }
    // Bound first: an address that cannot be had fails the start before
    // anything is created on disk.
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))?,
        ),
        None => None,
    };
    if let Some(flags) = &config.cluster {
        let StorageChoice::Postgres(url) = &config.storage else {
            return Err(
                "--cluster needs --storage postgres://…: the nodes share that database".into(),
            );
        };
        let cluster_listener =
            match flags.cluster_listen {
                Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
                    format!("cannot listen for the cluster's nodes on {addr}: {e}")
                })?),
                None => None,
            };
        let tls = config.tls.clone().map(Tls::load).transpose()?;
        let node = clustered::NodeStart {
            url: url.clone(),
            flags: flags.clone(),
            limits,
            settings: api_settings(&config, limits, tls.is_some()),
            metrics_per_stream: config.metrics_per_stream,
            metrics_listener,
            cluster_listener,
            tls,
        };
        return clustered::serve(listener, node, shutdown).await;
    }
    // Opening replays the storage journal: logged, with how long it took,
    // so a slow start is never a silent one.
    tracing::info!("opening storage");
    let started = std::time::Instant::now();
    let storage = open_chosen_storage(&config.storage)?;
    let opened = started.elapsed();
    let metrics = Arc::new(Metrics::new(config.metrics_per_stream));
    let engine = Engine::open_with_metrics(storage, metrics)
        .map_err(|e| format!("cannot recover the engine: {e}"))?;
    let (basins, streams, tokens) = engine
        .streams()
        .census()
        .map_err(|e| format!("cannot read what was recovered: {e}"))?;
    tracing::info!(
        basins,
        streams,
        access_tokens = tokens,
        storage_ms = opened.as_millis() as u64,
        total_ms = started.elapsed().as_millis() as u64,
        "recovered"
    );
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let settings = api_settings(&config, limits, false);
    match &config.storage {
        StorageChoice::Dir(dir) => {
            tracing::info!(addr = %local, data_dir = %dir.display(), "rill is listening")
        }
        StorageChoice::Postgres(url) => {
            tracing::info!(addr = %local, postgres = %postgres_at(url), "rill is listening")
        }
        StorageChoice::Memory => {
            tracing::info!(addr = %local, "rill is listening (in memory: nothing is kept)")
        }
    }
    say_auth(&config.auth);
    let tls = config.tls.map(Tls::load).transpose()?;
    if let Some(tls) = &tls {
        tracing::info!(?tls, "serving over TLS (HTTP/2 and HTTP/1.1)");
    }
    let options = ServerOptions {
        limits,
        auth: settings.auth,
        tls,
        sessions: settings.sessions,
        access_log: settings.access_log,
        metrics_listener,
        durable_streams_long_poll: Some(settings.durable_streams_long_poll),
    };
    run_with(listener, engine, options, shutdown).await
}

/// The API's settings from the flags.
fn api_settings(config: &ServeConfig, limits: ConnectionLimits, tls: bool) -> ApiSettings {
    ApiSettings {
        body_read_timeout: limits.body_read_timeout,
        write_stall_timeout: limits.write_stall_timeout,
        max_body_bytes: limits.max_body_bytes,
        auth: config.auth.clone(),
        sessions: config.sessions,
        access_log: config.access_log,
        tls,
        durable_streams_long_poll: config.durable_streams_long_poll,
    }
}

/// Raises the soft limit on open files to the hard limit. Every connection
/// is a file, and the common default soft limit (1,024) would cap Rill at
/// about a thousand clients while the hard limit allows far more.
/// Returns the limit now in force, if it could be read.
fn raise_open_file_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::info!(limit, "open file limit");
            Some(limit)
        }
        Err(err) => {
            tracing::warn!(%err, "cannot raise the open file limit");
            None
        }
    }
}

/// Serves on an already bound listener with the default limits; tests use
/// this with port 0.
pub async fn run(
    listener: TcpListener,
    engine: Arc<Engine>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    run_with(listener, engine, ServerOptions::default(), shutdown).await
}

/// How a server runs: its limits, whether it checks tokens, whether it
/// speaks TLS, and where else it serves its metrics.
#[derive(Default)]
pub struct ServerOptions {
    pub limits: ConnectionLimits,
    pub auth: Auth,
    pub tls: Option<Tls>,
    pub sessions: SessionLimits,
    pub access_log: crate::api::AccessLog,
    /// Serves `GET /metrics` here too, without a token.
    pub metrics_listener: Option<TcpListener>,
    /// How long a Durable Streams long poll waits (30 s if `None`).
    pub durable_streams_long_poll: Option<Duration>,
}

/// [`run`] with the given options.
pub async fn run_with(
    listener: TcpListener,
    engine: Arc<Engine>,
    options: ServerOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let ServerOptions {
        limits,
        auth,
        tls,
        sessions,
        access_log,
        metrics_listener,
        durable_streams_long_poll,
    } = options;
    let reloader = tls.as_ref().map(Tls::spawn_reloader);
    let settings = ApiSettings {
        body_read_timeout: limits.body_read_timeout,
        write_stall_timeout: limits.write_stall_timeout,
        max_body_bytes: limits.max_body_bytes,
        auth,
        sessions,
        access_log,
        tls: tls.is_some(),
        durable_streams_long_poll: durable_streams_long_poll
            .unwrap_or(crate::api::DEFAULT_DURABLE_STREAMS_LONG_POLL),
    };
    let services = Services::start(engine.clone(), &settings);
    let (app, metrics_only) = (services.app.clone(), services.metrics_only.clone());
    let metrics_server = metrics_listener.map(|listener| serve_metrics(listener, metrics_only));
    let closing = engine.clone();
    let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
    let open_connections = engine.metrics().http.connections.clone();
    let serve = connections::serve(listener, app, limits, tls, open_connections, async move {
        shutdown.await;
        // Live sessions never end by themselves; end them so the server
        // can drain.
        closing.begin_shutdown();
        let _ = draining_tx.send(());
    });
    serve_until_drained(serve, draining_rx).await;
    if let Some(metrics_server) = metrics_server {
        metrics_server.abort();
    }
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    services.stop().await;
    tracing::info!("rill stopped; all acknowledged writes are durable");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
