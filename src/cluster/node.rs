//! A node: keeps or watches the lease, and routes each request by what it
//! is now (owner: its own engine; follower: forwarded to the owner).
//!
//! Every tick (a quarter of the lease) a node says it is alive
//! (`rill_nodes`), then:
//! - as owner, renews the lease; if another node has taken it, or it could
//!   not renew it for a whole lease, it steps down: new requests go to
//!   the new owner at once, and its engine is stopped (its writes would be
//!   refused anyway: the epoch moved on);
//! - as follower, reads who holds the lease (to forward to it) and, if the
//!   lease has ended, takes it and opens the engine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::extract::{Request, State};
use axum::response::Response;
use hyper::service::Service as _;
use hyper_util::service::TowerToHyperService;

use super::forward::{unavailable, Forwarder};
use super::term::{Term, Terms};
use crate::storage::PostgresStorage;

/// How long stopping a lost term may take before it is left to finish in
/// the background: its writes fail by now, and new requests go elsewhere.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Who this node is, and how long its lease lasts.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// Unique per process (a restarted node is a new one).
    pub node_id: String,
    /// Where the other nodes reach this one (`HOST:PORT`).
    pub address: String,
    /// How long the lease lasts without renewal: about how long a takeover
    /// waits after the owner dies.
    pub lease_ttl: Duration,
}

/// What the node does with a request now.
enum Role {
    Owner {
        app: axum::Router,
    },
    /// Forwards to the owner at this address, if there is one.
    Follower {
        owner: Option<String>,
    },
}

/// The term the node holds as owner, and the store it writes through.
struct Held {
    store: Arc<PostgresStorage>,
    term: Box<dyn Term>,
    /// When the last renewal that succeeded was sent.
    renewed: Instant,
}

/// Of a lease, the part an owner serves in: it stops serving this long
/// before the lease it renewed could have ended in the database, so that
/// clocks that run at slightly different rates never let it serve while
/// another node already does.
const SERVE_FRACTION: f64 = 0.8;

pub struct Node {
    settings: ClusterSettings,
    /// For reading the lease and the heartbeats; writes nothing else.
    watch: Arc<PostgresStorage>,
    role: ArcSwap<Role>,
    held: tokio::sync::Mutex<Option<Held>>,
    /// Until when the owner may serve: a renewal sent at `t` makes it
    /// `t` + [`SERVE_FRACTION`] of the lease. Writes are safe without it
    /// (the epoch fences them); reads need it, as a paused owner that
    /// wakes up must not answer from a state another node has moved on.
    serve_until: std::sync::Mutex<Option<Instant>>,
    forwarder: Forwarder,
}

impl Node {
    pub fn new(settings: ClusterSettings, watch: PostgresStorage) -> Arc<Self> {
        let forwarder = Forwarder::new(&settings.node_id);
        Arc::new(Self {
            settings,
            watch: Arc::new(watch),
            role: ArcSwap::from_pointee(Role::Follower { owner: None }),
            held: tokio::sync::Mutex::new(None),
            serve_until: std::sync::Mutex::new(None),
            forwarder,
        })
    }

    pub fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    /// The routes the node serves: every request, by its role.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        axum::Router::new()
            .fallback(dispatch)
            .with_state(self.clone())
    }

    /// Keeps or watches the lease until `stop` resolves; then stops the
    /// term it holds (after [`Self::begin_stop`], the server drains its
    /// connections first) and ends its lease, so another node takes over
    /// without waiting it out.
    pub async fn run(
        self: Arc<Self>,
        terms: Arc<dyn Terms>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let tick = (self.settings.lease_ttl / 4).max(Duration::from_millis(50));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = ticker.tick() => {}
            }
            self.tick(&terms).await;
        }
    }

    /// Ends live sessions on the term held, if any, so the server's
    /// connections can drain.
    pub async fn begin_stop(&self) {
        if let Some(held) = &*self.held.lock().await {
            held.term.begin_stop();
        }
    }

    /// Stops the term held, if any, and ends its lease.
    pub async fn stop(&self) {
        self.role.store(Arc::new(Role::Follower { owner: None }));
        let Some(held) = self.held.lock().await.take() else {
            return;
        };
        held.term.stop().await;
        let store = held.store;
        match blocking(move || store.release_lease()).await {
            Ok(()) => tracing::info!("lease released"),
            Err(err) => tracing::warn!(%err, "releasing the lease failed; it ends by itself"),
        }
    }

    async fn tick(&self, terms: &Arc<dyn Terms>) {
        let settings = self.settings.clone();
        let watch = self.watch.clone();
        let forget = settings.lease_ttl * 20;
        if let Err(err) =
            blocking(move || watch.heartbeat(&settings.node_id, &settings.address, forget)).await
        {
            tracing::warn!(%err, "heartbeat failed");
        }
        let mut held = self.held.lock().await;
        match held.as_mut() {
            Some(owner) => {
                let store = owner.store.clone();
                let ttl = self.settings.lease_ttl;
                let sent = Instant::now();
                match blocking(move || store.renew_lease(ttl)).await {
                    Ok(true) => {
                        owner.renewed = sent;
                        self.serve_from(sent);
                    }
                    Ok(false) => {
                        let lost = held.take();
                        drop(held);
                        self.step_down(lost, "another node took the lease").await;
                    }
                    Err(err) if owner.renewed.elapsed() >= ttl => {
                        tracing::warn!(%err, "renewing the lease failed for a whole lease");
                        let lost = held.take();
                        drop(held);
                        self.step_down(lost, "the lease could not be renewed").await;
                    }
                    Err(err) => tracing::warn!(%err, "renewing the lease failed; retrying"),
                }
            }
            None => {
                let watch = self.watch.clone();
                match blocking(move || watch.lease_holder()).await {
                    Ok(Some(holder)) if !holder.ended => {
                        let owner = holder.address.filter(|_| holder.node.is_some());
                        self.role.store(Arc::new(Role::Follower { owner }));
                    }
                    Ok(_) => *held = self.take_over(terms).await,
                    Err(err) => tracing::warn!(%err, "reading the lease failed"),
                }
            }
        }
    }

    /// Takes the lease, if it is still free, and opens a term over it.
    async fn take_over(&self, terms: &Arc<dyn Terms>) -> Option<Held> {
        let settings = self.settings.clone();
        let watch = self.watch.clone();
        let started = Instant::now();
        let taken = blocking(move || {
            watch.take_lease(&settings.node_id, &settings.address, settings.lease_ttl)
        })
        .await;
        let store = match taken {
            Ok(Some(store)) => Arc::new(store),
            Ok(None) => return None, // another node was quicker
            Err(err) => {
                tracing::warn!(%err, "taking the lease failed");
                return None;
            }
        };
        match terms.open(store.clone()).await {
            Ok(term) => {
                tracing::info!(
                    node = %self.settings.node_id,
                    open_ms = started.elapsed().as_millis() as u64,
                    "took the lease: this node owns the database and serves"
                );
                self.serve_from(started);
                self.role
                    .store(Arc::new(Role::Owner { app: term.router() }));
                Some(Held {
                    store,
                    term,
                    renewed: started,
                })
            }
            Err(err) => {
                tracing::error!(%err, "opening the engine failed; giving the lease back");
                if let Err(err) = blocking(move || store.release_lease()).await {
                    tracing::warn!(%err, "releasing the lease failed; it ends by itself");
                }
                None
            }
        }
    }

    /// A lease taken or renewed by a call sent at `sent`.
    fn serve_from(&self, sent: Instant) {
        let until = sent + self.settings.lease_ttl.mul_f64(SERVE_FRACTION);
        *self.serve_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(until);
    }

    /// Whether the lease is surely still this node's.
    fn may_serve(&self) -> bool {
        self.serve_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|until| Instant::now() < until)
    }

    /// Stops serving as owner: requests go elsewhere from now, then the
    /// lost term stops (bounded: its writes fail anyway).
    async fn step_down(&self, lost: Option<Held>, why: &str) {
        self.role.store(Arc::new(Role::Follower { owner: None }));
        tracing::warn!(node = %self.settings.node_id, why, "stepped down: this node forwards from now");
        let Some(lost) = lost else { return };
        lost.term.begin_stop();
        if tokio::time::timeout(STOP_TIMEOUT, lost.term.stop())
            .await
            .is_err()
        {
            tracing::warn!("the lost term did not stop within {STOP_TIMEOUT:?}; leaving it");
        }
    }
}

/// Routes a request by the node's role.
async fn dispatch(State(node): State<Arc<Node>>, request: Request) -> Response {
    let role = node.role.load_full();
    match &*role {
        // The same adapter the accept loop serves the router through.
        Role::Owner { .. } if !node.may_serve() => unavailable(
            "unavailable",
            "this node's lease is not confirmed (it may have been paused); retry",
        ),
        Role::Owner { app } => match TowerToHyperService::new(app.clone()).call(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
        Role::Follower { owner: Some(owner) } => node.forwarder.forward(request, owner).await,
        Role::Follower { owner: None } => unavailable(
            "unavailable",
            "no node holds the lease right now (one is taking over); retry",
        ),
    }
}

/// Runs a blocking storage call off the async workers.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> crate::storage::StorageResult<T> + Send + 'static,
) -> crate::storage::StorageResult<T> {
    tokio::task::spawn_blocking(call).await.unwrap_or_else(|_| {
        Err(crate::storage::StorageError::Io(
            "a storage call panicked".into(),
        ))
    })
}
