//! Sinks at run time: a worker task per sink, started, restarted and
//! stopped as the definitions in the engine change (`engine/sinks/`).
//!
//! The runtime reconciles what runs with what is defined whenever a sink
//! changes, and every few seconds besides (the engine may have reopened
//! its layers after a failed write, and a reopened layer notifies anew).
//! A worker is the only receiver of its sink's consumer, and a sink never
//! has two (the old one has stopped before the new one starts), so
//! restarting one loses nothing: its messages come back to the next run.

mod destination;
mod failure;
mod jetstream;
mod kafka;
mod message;
mod postgres;
mod redis_stream;
mod status;
mod webhook;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::engine::locks::lock;
use crate::engine::sinks::{SinkConfig, SinkInfo};
use crate::engine::Engine;
pub use status::{SinkStatus, StatusSnapshot};

/// How often the runtime reconciles even without a change notice.
const RECONCILE_EVERY: Duration = Duration::from_secs(2);

/// A sink, by basin and name.
type Key = (String, String);

struct Running {
    config: SinkConfig,
    task: JoinHandle<()>,
    /// Tells the worker to stop at its next step.
    stop: tokio::sync::watch::Sender<bool>,
}

/// How long a stopping worker may take (a post in flight runs out its
/// timeout) before it is cut off; what it held comes back to the next run.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// The workers, and each sink's status (kept across restarts of its
/// worker, not of the server).
#[derive(Default)]
pub struct SinkRuntime {
    running: Mutex<HashMap<Key, Running>>,
    statuses: Mutex<HashMap<Key, Arc<SinkStatus>>>,
}

impl SinkRuntime {
    /// Starts the runtime over `engine`; it runs until the returned task
    /// is aborted (which stops every worker with it).
    pub fn spawn(engine: Arc<Engine>) -> (Arc<Self>, JoinHandle<()>) {
        let runtime = Arc::new(Self::default());
        let task = tokio::spawn(runtime.clone().reconcile_forever(engine));
        (runtime, task)
    }

    /// What the sink's worker has done, if it ever ran here.
    pub fn status(&self, basin: &str, name: &str) -> StatusSnapshot {
        let key = (basin.to_string(), name.to_string());
        lock(&self.statuses)
            .get(&key)
            .map(|status| status.snapshot())
            .unwrap_or_default()
    }

    async fn reconcile_forever(self: Arc<Self>, engine: Arc<Engine>) {
        // Stops every worker when this task is aborted or ends.
        let _stop = StopOnDrop(self.clone());
        loop {
            let mut changed = engine.sinks().subscribe();
            changed.borrow_and_update();
            match engine.sinks().all_sinks() {
                Ok(sinks) => self.reconcile(&engine, sinks).await,
                Err(err) => tracing::warn!(error = %err, "listing sinks failed; trying again"),
            }
            tokio::select! {
                _ = changed.changed() => {}
                _ = tokio::time::sleep(RECONCILE_EVERY) => {}
            }
        }
    }

    /// Stops the workers of sinks gone, paused or changed (and waits
    /// until they have stopped: a sink never has two), then starts those
    /// missing.
    async fn reconcile(&self, engine: &Arc<Engine>, sinks: Vec<SinkInfo>) {
        // A deleted sink's status goes with it.
        lock(&self.statuses)
            .retain(|(basin, name), _| sinks.iter().any(|s| &s.basin == basin && &s.name == name));
        let wanted: HashMap<Key, SinkInfo> = sinks
            .into_iter()
            .filter(|s| !s.config.paused)
            .map(|s| ((s.basin.clone(), s.name.clone()), s))
            .collect();
        let stopping: Vec<Running> = {
            let mut running = lock(&self.running);
            let stale: Vec<Key> = running
                .iter()
                .filter(|(key, worker)| {
                    !wanted.get(*key).is_some_and(|s| s.config == worker.config)
                        || worker.task.is_finished()
                })
                .map(|(key, _)| key.clone())
                .collect();
            stale.iter().filter_map(|key| running.remove(key)).collect()
        };
        for mut worker in stopping {
            worker.stop.send_replace(true);
            if tokio::time::timeout(STOP_WAIT, &mut worker.task)
                .await
                .is_err()
            {
                worker.task.abort();
                let _ = worker.task.await;
            }
        }
        let mut running = lock(&self.running);
        for (key, sink) in wanted {
            if running.contains_key(&key) {
                continue;
            }
            let status = lock(&self.statuses).entry(key.clone()).or_default().clone();
            let config = sink.config.clone();
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let task = tokio::spawn(worker::run(engine.clone(), sink, status, stopped));
            running.insert(key, Running { config, task, stop });
        }
    }
}

struct StopOnDrop(Arc<SinkRuntime>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        for (_, worker) in lock(&self.0.running).drain() {
            worker.task.abort();
        }
    }
}
