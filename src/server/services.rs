//! What runs over one engine: its background work (upkeep, the usage
//! history, sinks, sources, restarts after a failed write) and the routes
//! that serve it. A single server starts them once; a cluster node each
//! time it takes the lease, and stops them when it loses it.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::task::JoinHandle;

use crate::api::ApiConfig;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::storage::Storage;

/// How often retention, delete-on-empty and record removal run.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);
/// How often the usage history takes the counts made since and is written
/// to disk: the most a crash can lose of it.
const USAGE_INTERVAL: Duration = Duration::from_secs(60);

/// The API's settings, less what [`Services::start`] makes per engine.
#[derive(Clone)]
pub(super) struct ApiSettings {
    pub body_read_timeout: Duration,
    pub write_stall_timeout: Duration,
    pub max_body_bytes: usize,
    pub auth: crate::api::Auth,
    pub sessions: crate::api::SessionLimits,
    pub access_log: crate::api::AccessLog,
    pub tls: bool,
    pub durable_streams_long_poll: Duration,
}

impl ApiSettings {
    /// The API's config, with the runtimes of the sinks and sources (whose
    /// status it shows).
    pub fn api_config(
        &self,
        sinks: Arc<crate::sinks::SinkRuntime>,
        sources: Arc<crate::sources::SourceRuntime>,
    ) -> ApiConfig {
        ApiConfig {
            body_read_timeout: self.body_read_timeout,
            write_stall_timeout: self.write_stall_timeout,
            max_body_bytes: self.max_body_bytes,
            auth: self.auth.clone(),
            sessions: self.sessions,
            access_log: self.access_log,
            sinks,
            sources,
            tls: self.tls,
            durable_streams_long_poll: self.durable_streams_long_poll,
        }
    }
}

pub(super) struct Services {
    pub engine: Arc<Engine>,
    /// Every route.
    pub app: axum::Router,
    /// `GET /metrics` alone, for `--metrics-listen`.
    pub metrics_only: axum::Router,
    tasks: Vec<JoinHandle<()>>,
}

impl Services {
    pub fn start(engine: Arc<Engine>, settings: &ApiSettings) -> Self {
        let upkeep = engine.spawn_upkeep(UPKEEP_INTERVAL);
        let usage = engine.spawn_usage(USAGE_INTERVAL);
        let (sinks, sink_workers) = crate::sinks::SinkRuntime::spawn(engine.clone());
        let (sources, source_pollers) = crate::sources::SourceRuntime::spawn(engine.clone());
        let restarts = engine.spawn_restarts();
        let api = settings.api_config(sinks, sources);
        let (app, metrics_only) = crate::api::routers(engine.clone(), api);
        Self {
            engine,
            app,
            metrics_only,
            // Deliveries in flight when these stop are given back to the
            // next start.
            tasks: vec![upkeep, usage, sink_workers, source_pollers, restarts],
        }
    }

    /// Stops the background work, then the engine: everything acknowledged
    /// is durable when this returns.
    pub async fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
        self.engine.shutdown().await;
    }
}

/// Opens a cluster node's terms: an engine over the storage the lease
/// gave, counting into the node's metrics, with its services.
pub(super) struct EngineTerms {
    pub settings: ApiSettings,
    pub metrics: Arc<Metrics>,
}

impl crate::cluster::Terms for EngineTerms {
    fn open(
        &self,
        storage: Arc<dyn Storage>,
    ) -> BoxFuture<'static, Result<Box<dyn crate::cluster::Term>, String>> {
        let (settings, metrics) = (self.settings.clone(), self.metrics.clone());
        async move {
            metrics.usage.hold();
            let counting = metrics.clone();
            // Recovery reads the database: off the async workers.
            let engine =
                tokio::task::spawn_blocking(move || Engine::open_with_metrics(storage, metrics))
                    .await
                    .map_err(|_| "opening the engine panicked".to_string())
                    .and_then(|opened| {
                        opened.map_err(|e| format!("cannot recover the engine: {e}"))
                    });
            match engine {
                Ok(engine) => {
                    Ok(Box::new(Services::start(engine, &settings))
                        as Box<dyn crate::cluster::Term>)
                }
                Err(err) => {
                    counting.usage.release();
                    Err(err)
                }
            }
        }
        .boxed()
    }
}

impl crate::cluster::Term for Services {
    fn router(&self) -> axum::Router {
        self.app.clone()
    }

    fn metrics_router(&self) -> axum::Router {
        self.metrics_only.clone()
    }

    fn feed(&self) -> crate::cluster::FeedSource {
        super::replica::feed(&self.engine)
    }

    fn begin_stop(&self) {
        self.engine.begin_shutdown();
    }

    fn stop(self: Box<Self>) -> BoxFuture<'static, ()> {
        async move {
            let metrics = self.engine.metrics().clone();
            Services::stop(*self).await;
            // Its last counts are in the history now (the engine's stop).
            metrics.usage.release();
        }
        .boxed()
    }
}
