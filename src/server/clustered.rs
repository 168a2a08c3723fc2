//! Serving as one node of a cluster (`--cluster`): the listener is bound
//! and the node answers at once, forwarding to the owner until it becomes
//! the owner itself (`src/cluster/`).

use std::sync::Arc;

use tokio::net::TcpListener;

use super::replica::EngineReplica;
use super::services::{ApiSettings, EngineTerms};
use super::shared::{postgres_at, say_auth, serve_metrics, serve_until_drained, ClusterFlags};
use crate::cluster::{ClusterSettings, Node};
use crate::connections::{self, ConnectionLimits};
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::tls::Tls;

/// What a node starts from.
pub(super) struct NodeStart {
    pub url: String,
    pub flags: ClusterFlags,
    pub limits: ConnectionLimits,
    pub settings: ApiSettings,
    pub metrics_per_stream: bool,
    /// For `--metrics-listen`.
    pub metrics_listener: Option<TcpListener>,
    /// For `--cluster-listen`: the other nodes' port, in plain HTTP.
    pub cluster_listener: Option<TcpListener>,
    /// TLS on the clients' port (`--tls-cert`).
    pub tls: Option<Tls>,
}

pub(super) async fn serve(
    listener: TcpListener,
    start: NodeStart,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    // The nodes' port: `--cluster-listen` if given, else the clients'.
    let nodes_port = match &start.cluster_listener {
        Some(listener) => listener.local_addr().map_err(|e| e.to_string())?,
        None => local,
    };
    let address = match start.flags.advertise {
        Some(address) => address,
        None if nodes_port.ip().is_unspecified() => {
            return Err(format!(
                "listening on {nodes_port}, this node cannot tell the others where to reach it: \
                 give --advertise HOST:PORT"
            ))
        }
        None => nodes_port.to_string(),
    };
    let url = start.url.clone();
    let metrics = Arc::new(Metrics::new(start.metrics_per_stream));
    // The node's figures, whichever engine serves: `/metrics` on any node
    // says what that node did. S2's usage history is the owner's: counted
    // only while this node holds a term (`services.rs`).
    metrics.usage.release();
    let replica_metrics = metrics.clone();
    let (watch, secret, replica) = tokio::task::spawn_blocking(move || {
        let watch = Arc::new(
            crate::storage::PostgresStorage::connect(&url)
                .map_err(|e| format!("cannot open storage on Postgres: {e}"))?,
        );
        let secret = watch
            .cluster_secret()
            .map_err(|e| format!("cannot read the cluster's secret: {e}"))?;
        // Over the same connections, writing nothing: it follows.
        let replica = Engine::open_replica(watch.clone(), replica_metrics)
            .map_err(|e| format!("cannot open the database as a replica: {e}"))?;
        Ok::<_, String>((watch, secret, replica))
    })
    .await
    .map_err(|_| "connecting to Postgres panicked".to_string())??;
    let settings = ClusterSettings {
        node_id: node_id(),
        address,
        lease_ttl: start.flags.lease_ttl,
    };
    tracing::info!(
        addr = %local,
        postgres = %postgres_at(&start.url),
        node = %settings.node_id,
        advertised = %settings.address,
        lease_ttl = ?settings.lease_ttl,
        "rill is listening (a cluster node: it forwards to the owner until it owns the database)"
    );
    say_auth(&start.settings.auth);
    // Reads only: the runtimes of sinks and sources stay empty.
    let api = start.settings.api_config(Arc::default(), Arc::default());
    let (app, metrics_only) = crate::api::routers(replica.clone(), api);
    let replica = Arc::new(EngineReplica {
        app,
        metrics_only,
        engine: replica,
    });
    let node = Node::new(settings, watch, secret, replica);
    let open_connections = metrics.http.connections.clone();
    let terms = Arc::new(EngineTerms {
        settings: start.settings,
        metrics,
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let keeper = tokio::spawn(node.clone().run(terms, async {
        let _ = stop_rx.await;
    }));
    let metrics_server = start
        .metrics_listener
        .map(|listener| serve_metrics(listener, node.metrics_router()));
    if let Some(tls) = &start.tls {
        tracing::info!(?tls, "serving clients over TLS (HTTP/2 and HTTP/1.1)");
    }
    let reloader = start.tls.as_ref().map(Tls::spawn_reloader);
    let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
    // The nodes' port stays open until the lease is given up (the other
    // nodes forward writes here until then), then drains.
    let (nodes_stop, mut nodes_stopping) = tokio::sync::watch::channel(false);
    let nodes_server = start.cluster_listener.map(|cluster_listener| {
        tracing::info!(addr = %nodes_port, "listening for the cluster's nodes (plain HTTP)");
        tokio::spawn(connections::serve(
            cluster_listener,
            node.router(),
            start.limits,
            None,
            open_connections.clone(),
            async move {
                let _ = nodes_stopping.wait_for(|stopping| *stopping).await;
            },
        ))
    });
    let closing = node.clone();
    let clients = connections::serve(
        listener,
        node.router(),
        start.limits,
        start.tls,
        open_connections,
        async move {
            shutdown.await;
            closing.begin_stop().await;
            let _ = draining_tx.send(());
        },
    );
    serve_until_drained(clients, draining_rx).await;
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    if let Some(metrics_server) = metrics_server {
        metrics_server.abort();
    }
    let _ = stop_tx.send(());
    let _ = keeper.await;
    node.stop().await;
    if let Some(nodes_server) = nodes_server {
        let _ = nodes_stop.send(true);
        let (drained_tx, drained_rx) = tokio::sync::oneshot::channel();
        let _ = drained_tx.send(());
        serve_until_drained(
            async {
                let _ = nodes_server.await;
            },
            drained_rx,
        )
        .await;
    }
    tracing::info!("rill stopped; all acknowledged writes are durable");
    Ok(())
}

/// A node's id: new for every process, so that a restarted node never
/// mistakes the lease of its previous life for its own.
fn node_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}
