//! Sources at run time: a task per source (an HTTP poller, or a Postgres
//! change-data-capture worker), started and stopped as the definitions in
//! the engine change (`engine/sources/`); and the clean-up of what deleted
//! Postgres sources left in their database.
//!
//! A task may be aborted at any point: what it takes lands in one atomic
//! batch with the cursor that follows it, so the next task (after a
//! change, a restart of the engine's layers, or of the server) goes on
//! from exactly where the last durable write left off.

mod apply;
mod http_poller;
pub mod postgres;
mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::engine::locks::lock;
use crate::engine::sources::{SourceConfig, SourceInfo};
use crate::engine::Engine;
pub use status::{SourceStatus, StatusSnapshot};

/// How often the runtime reconciles even without a change notice (the
/// engine may have reopened its layers after a failed write).
const RECONCILE_EVERY: Duration = Duration::from_secs(2);

/// How long a clean-up that failed waits before it is tried again.
const CLEAN_UP_RETRY: Duration = Duration::from_secs(10);

/// A source, by basin and name.
type Key = (String, String);

struct Running {
    /// What it runs with, and since when (a source deleted and made again
    /// under its name is another source).
    config: SourceConfig,
    created_at: u64,
    task: JoinHandle<()>,
}

/// The pollers, and each source's status (kept across restarts of its
/// poller, not of the server).
#[derive(Default)]
pub struct SourceRuntime {
    running: Mutex<HashMap<Key, Running>>,
    /// By source, with the `created_at` of the source it is of.
    statuses: Mutex<HashMap<Key, (u64, Arc<SourceStatus>)>>,
    /// Clean-ups under way, by the engine's key that notes them.
    cleaning: Mutex<HashMap<Vec<u8>, JoinHandle<()>>>,
}

impl SourceRuntime {
    /// Starts the runtime over `engine`; it runs until the returned task
    /// is aborted (which stops every poller with it).
    pub fn spawn(engine: Arc<Engine>) -> (Arc<Self>, JoinHandle<()>) {
        let runtime = Arc::new(Self::default());
        let task = tokio::spawn(runtime.clone().reconcile_forever(engine));
        (runtime, task)
    }

    /// What the source's poller has done, if it ever ran here.
    pub fn status(&self, basin: &str, name: &str) -> StatusSnapshot {
        let key = (basin.to_string(), name.to_string());
        lock(&self.statuses)
            .get(&key)
            .map(|(_, status)| status.snapshot())
            .unwrap_or_default()
    }

    async fn reconcile_forever(self: Arc<Self>, engine: Arc<Engine>) {
        let _stop = StopOnDrop(self.clone());
        loop {
            let mut changed = engine.sources().subscribe();
            changed.borrow_and_update();
            match engine.sources().all_sources() {
                Ok(sources) => self.reconcile(&engine, sources),
                Err(err) => tracing::warn!(error = %err, "listing sources failed; trying again"),
            }
            match engine.sources().cleanups() {
                Ok(cleanups) => self.clean_up(&engine, cleanups),
                Err(err) => tracing::warn!(error = %err, "listing clean-ups failed; trying again"),
            }
            tokio::select! {
                _ = changed.changed() => {}
                _ = tokio::time::sleep(RECONCILE_EVERY) => {}
            }
        }
    }

    /// Aborts the pollers of sources gone or made anew, then starts those
    /// missing.
    fn reconcile(&self, engine: &Arc<Engine>, sources: Vec<SourceInfo>) {
        let wanted: HashMap<Key, SourceInfo> = sources
            .into_iter()
            .map(|s| ((s.basin.clone(), s.name.clone()), s))
            .collect();
        lock(&self.statuses).retain(|key, _| wanted.contains_key(key));
        let mut running = lock(&self.running);
        running.retain(|key, poller| {
            let keep = wanted
                .get(key)
                .is_some_and(|s| s.config == poller.config && s.created_at == poller.created_at)
                && !poller.task.is_finished();
            if !keep {
                poller.task.abort();
            }
            keep
        });
        for (key, source) in wanted {
            if running.contains_key(&key) {
                continue;
            }
            // A source made again under its name starts with a status of
            // its own (an aborted task may still write to the old one).
            let status = {
                let mut statuses = lock(&self.statuses);
                let entry = statuses.entry(key.clone()).or_default();
                if entry.0 != source.created_at {
                    *entry = (source.created_at, Arc::default());
                }
                entry.1.clone()
            };
            let (config, created_at) = (source.config.clone(), source.created_at);
            let task = match &source.config {
                SourceConfig::Http(_) => {
                    tokio::spawn(http_poller::run(engine.clone(), source, status))
                }
                SourceConfig::Postgres(_) => {
                    tokio::spawn(postgres::run(engine.clone(), source, status))
                }
            };
            running.insert(
                key,
                Running {
                    config,
                    created_at,
                    task,
                },
            );
        }
    }
}

impl SourceRuntime {
    /// Starts a task for each clean-up not under way: it drops what the
    /// source left upstream, then the engine's note; failed, it waits
    /// before it ends, and the next reconcile tries again.
    fn clean_up(&self, engine: &Arc<Engine>, cleanups: Vec<(Vec<u8>, SourceInfo)>) {
        let mut cleaning = lock(&self.cleaning);
        cleaning.retain(|_, task| !task.is_finished());
        for (key, source) in cleanups {
            if cleaning.contains_key(&key) {
                continue;
            }
            let engine = engine.clone();
            let task = tokio::spawn({
                let key = key.clone();
                async move {
                    let result = match postgres::clean_up(&source).await {
                        Ok(()) => engine
                            .sources()
                            .cleaned(key)
                            .await
                            .map_err(|e| e.to_string()),
                        Err(err) => Err(err),
                    };
                    if let Err(error) = result {
                        tracing::warn!(source = %source.name, %error, "cleaning up after a deleted source failed; trying again");
                        tokio::time::sleep(CLEAN_UP_RETRY).await;
                    }
                }
            });
            cleaning.insert(key, task);
        }
    }
}

struct StopOnDrop(Arc<SourceRuntime>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        for (_, poller) in lock(&self.0.running).drain() {
            poller.task.abort();
        }
        for (_, task) in lock(&self.0.cleaning).drain() {
            task.abort();
        }
    }
}
