//! A node: keeps or watches the lease, and routes each request by what it
//! is now (owner: its own engine; follower: long polls and read sessions
//! served by its replica, the rest forwarded to the owner).
//!
//! Every tick (a quarter of the lease) a node says it is alive
//! (`rill_nodes`) and, as a follower, reads who holds the lease (to
//! forward to it); if the lease has ended, it takes it and opens the
//! engine. As owner, a renewer of its own (`lease.rs`) keeps the lease;
//! when it finds the lease gone (another node took it, or it could not
//! renew it for a whole lease), the node steps down:
//! new requests go to the new owner at once, and the engine is stopped
//! (its writes would be refused anyway: the epoch moved on).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use hyper::service::Service as _;
use hyper_util::service::TowerToHyperService;

use super::feed::{self, FEED_PATH};
use super::forward::{unavailable, Forwarder};
use super::lease::{blocking, Renewal, Renewer};
use super::term::{FeedSource, Replica, Term, Terms};
use crate::storage::PostgresStorage;

/// How long stopping a lost term is waited for; past it, the stop goes on
/// in the background (its writes fail by now, and new requests go
/// elsewhere).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Set on an answer a follower's replica gave, naming the node: reads
/// served where they arrived, not by the owner.
pub const SERVED_BY: HeaderName = HeaderName::from_static("rill-served-by");

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

impl ClusterSettings {
    /// How often a node looks at the lease (and the owner renews it).
    pub fn tick(&self) -> Duration {
        self.lease_ttl / 4
    }
}

/// What the node does with a request now.
enum Role {
    Owner {
        app: axum::Router,
        /// `GET /metrics` alone.
        metrics: axum::Router,
        renewal: Arc<Renewal>,
        feed: FeedSource,
        /// Closed when the term ends: the feeds it serves end with it.
        term_open: tokio::sync::watch::Receiver<()>,
    },
    /// Serves live reads with the replica, forwards the rest to the owner
    /// at this address, if there is one.
    Follower { owner: Option<String> },
}

/// The term the node holds as owner.
struct Held {
    term: Box<dyn Term>,
    /// The store that writes under the lease's epoch.
    store: Arc<PostgresStorage>,
    renewer: Renewer,
    /// Dropped when the term ends (see `Role::Owner`).
    term_open: tokio::sync::watch::Sender<()>,
}

pub struct Node {
    settings: ClusterSettings,
    /// For reading the lease and the heartbeats.
    watch: Arc<PostgresStorage>,
    role: ArcSwap<Role>,
    held: tokio::sync::Mutex<Option<Held>>,
    /// Set when the server begins to stop: no lease is taken from then.
    stopping: AtomicBool,
    /// Turns true then too, ending the feeds this node serves.
    feeds_end: tokio::sync::watch::Sender<bool>,
    forwarder: Forwarder,
    /// Proves a node to another (`feed.rs`).
    secret: String,
    replica: Arc<dyn Replica>,
    replica_app: axum::Router,
    replica_metrics: axum::Router,
}

impl Node {
    /// A node that watches the lease through `watch`, proves itself to
    /// the others with `secret`, and serves reads as a follower with
    /// `replica`.
    pub fn new(
        settings: ClusterSettings,
        watch: Arc<PostgresStorage>,
        secret: String,
        replica: Arc<dyn Replica>,
    ) -> Arc<Self> {
        let forwarder = Forwarder::new(&settings.node_id);
        let (replica_app, replica_metrics) = (replica.router(), replica.metrics_router());
        Arc::new(Self {
            settings,
            watch,
            role: ArcSwap::from_pointee(Role::Follower { owner: None }),
            held: tokio::sync::Mutex::new(None),
            stopping: AtomicBool::new(false),
            feeds_end: tokio::sync::watch::Sender::new(false),
            forwarder,
            secret,
            replica,
            replica_app,
            replica_metrics,
        })
    }

    /// The routes the node serves: every request, by its role.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        axum::Router::new()
            .fallback(dispatch)
            .with_state(self.clone())
    }

    /// `GET /metrics` alone, for `--metrics-listen`: this node's figures,
    /// through whichever engine serves here now.
    pub fn metrics_router(self: &Arc<Self>) -> axum::Router {
        axum::Router::new()
            .fallback(serve_metrics)
            .with_state(self.clone())
    }

    /// Watches the lease (and takes it) until `stop` resolves. The server
    /// then drains its connections and calls [`Self::stop`].
    pub async fn run(
        self: Arc<Self>,
        terms: Arc<dyn Terms>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let mut ticker = tokio::time::interval(self.settings.tick());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let node = self.clone();
        let follower = tokio::spawn(feed::follow(
            self.forwarder.clone(),
            self.secret.clone(),
            move || node.other_owner(),
            self.replica.clone(),
        ));
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = ticker.tick() => {}
            }
            self.tick(&terms).await;
        }
        follower.abort();
    }

    /// Where the node that owns the database answers, if another does:
    /// whose feed the replica follows.
    fn other_owner(&self) -> Option<String> {
        match &**self.role.load() {
            Role::Owner { .. } => None,
            Role::Follower { owner } => owner.clone(),
        }
    }

    /// Takes no lease from now, and ends live sessions (the replica's, and
    /// the term's if one is held), so the server's connections can drain.
    pub async fn begin_stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.feeds_end.send_replace(true);
        self.replica.begin_stop();
        // A tick that holds the lock (opening an engine, say) sees
        // `stopping` when it is done and ends the sessions itself.
        if let Ok(held) = self.held.try_lock() {
            if let Some(held) = &*held {
                held.term.begin_stop();
            }
        }
    }

    /// Stops the term held, if any, and ends its lease, so another node
    /// takes over without waiting it out.
    pub async fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let Some(held) = self.held.lock().await.take() else {
            return;
        };
        self.role.store(Arc::new(Role::Follower { owner: None }));
        drop(held.term_open);
        // Renewed until the engine has stopped, then released.
        held.term.stop().await;
        held.renewer.stop();
        let (store, node) = (held.store, self.settings.node_id.clone());
        match blocking(move || store.release_lease(&node)).await {
            Ok(()) => tracing::info!("lease released"),
            Err(err) => tracing::warn!(%err, "releasing the lease failed; it ends by itself"),
        }
    }

    async fn tick(&self, terms: &Arc<dyn Terms>) {
        let settings = self.settings.clone();
        let watch = self.watch.clone();
        let forget = settings.lease_ttl.saturating_mul(20);
        if let Err(err) =
            blocking(move || watch.heartbeat(&settings.node_id, &settings.address, forget)).await
        {
            tracing::warn!(%err, "heartbeat failed");
        }
        let mut held = self.held.lock().await;
        if let Some(owner) = held.as_ref() {
            if let Some(why) = owner.renewer.renewal.lost() {
                let lost = held.take();
                drop(held);
                self.step_down(lost, why).await;
            }
            return;
        }
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        let watch = self.watch.clone();
        match blocking(move || watch.lease_holder()).await {
            Ok(Some(holder)) if !holder.ended => {
                let owner = holder.address.filter(|_| holder.node.is_some());
                self.role.store(Arc::new(Role::Follower { owner }));
            }
            Ok(_) => {
                *held = self.take_over(terms).await;
                if let Some(owner) = held.as_ref() {
                    if self.stopping.load(Ordering::Acquire) {
                        owner.term.begin_stop();
                    }
                }
            }
            Err(err) => tracing::warn!(%err, "reading the lease failed"),
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
        // Renewed from now: opening the engine may take longer than a lease.
        let ttl = self.settings.lease_ttl;
        let node = self.settings.node_id.clone();
        let renewer = Renewer::spawn(
            store.clone(),
            node.clone(),
            started,
            ttl,
            self.settings.tick(),
        );
        match terms.open(store.clone()).await {
            Ok(term) => {
                tracing::info!(
                    node = %self.settings.node_id,
                    open_ms = started.elapsed().as_millis() as u64,
                    "took the lease: this node owns the database and serves"
                );
                let (term_open, open) = tokio::sync::watch::channel(());
                self.role.store(Arc::new(Role::Owner {
                    app: term.router(),
                    metrics: term.metrics_router(),
                    renewal: renewer.renewal.clone(),
                    feed: term.feed(),
                    term_open: open,
                }));
                Some(Held {
                    term,
                    store,
                    renewer,
                    term_open,
                })
            }
            Err(err) => {
                tracing::error!(%err, "opening the engine failed; giving the lease back");
                renewer.stop();
                if let Err(err) = blocking(move || store.release_lease(&node)).await {
                    tracing::warn!(%err, "releasing the lease failed; it ends by itself");
                }
                None
            }
        }
    }

    /// Stops serving as owner: requests go elsewhere from now, then the
    /// lost term stops (waited for a while; its writes fail anyway).
    async fn step_down(&self, lost: Option<Held>, why: &str) {
        self.role.store(Arc::new(Role::Follower { owner: None }));
        tracing::warn!(node = %self.settings.node_id, why, "stepped down: this node forwards from now");
        let Some(lost) = lost else { return };
        // The feeds it serves end: their followers turn to the new owner.
        drop(lost.term_open);
        lost.renewer.stop();
        // If the lease is still this node's (renewals failed, no one took
        // it), it ends now rather than in a lease: until then the other
        // nodes would forward here.
        let (store, node) = (lost.store.clone(), self.settings.node_id.clone());
        if let Err(err) = blocking(move || store.release_lease(&node)).await {
            tracing::warn!(%err, "releasing the lease failed; it ends by itself");
        }
        lost.term.begin_stop();
        let stopping = tokio::spawn(lost.term.stop());
        if tokio::time::timeout(STOP_TIMEOUT, stopping).await.is_err() {
            tracing::warn!(
                "the lost term did not stop within {STOP_TIMEOUT:?}; it goes on stopping"
            );
        }
    }
}

/// Routes a request by the node's role.
async fn dispatch(State(node): State<Arc<Node>>, mut request: Request) -> Response {
    let role = node.role.load_full();
    if request.uri().path() == FEED_PATH {
        let (source, mut term_open) = match &*role {
            Role::Owner {
                feed,
                renewal,
                term_open,
                ..
            } if renewal.may_serve() => (Some(feed), Some(term_open.clone())),
            _ => (None, None),
        };
        let mut stopping = node.feeds_end.subscribe();
        let ends = async move {
            let term_over = async {
                match &mut term_open {
                    Some(open) => while open.changed().await.is_ok() {},
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stopping.wait_for(|stopping| *stopping) => {}
                () = term_over => {}
            }
        };
        return feed::serve(&request, &node.secret, source, ends);
    }
    // A node's figures are its own: a follower's are its replica's.
    if matches!(&*role, Role::Follower { .. }) && request.uri().path() == "/metrics" {
        return call(&node.replica_app, request).await;
    }
    if matches!(&*role, Role::Follower { .. }) && served_by_replica(&request) {
        request = match node.serve_read(request).await {
            Ok(response) => return response,
            Err(request) => request,
        };
    }
    match &*role {
        Role::Owner { renewal, .. } if !renewal.may_serve() => unavailable(
            "unavailable",
            "this node's lease is not confirmed (it may have been paused); retry",
        ),
        Role::Owner { app, .. } => call(app, request).await,
        Role::Follower { owner: Some(owner) } => node.forwarder.forward(request, owner).await,
        Role::Follower { owner: None } => unavailable(
            "unavailable",
            "no node holds the lease right now (one is taking over); retry",
        ),
    }
}

impl Node {
    /// Serves a read with the replica; gives the request back, to go to
    /// the owner, when the answer may come from what the replica does not
    /// know yet (a stream or basin made moments ago, a tail it has not
    /// heard of, a token just issued) or it cannot serve it now.
    async fn serve_read(&self, request: Request) -> Result<Response, Request> {
        let (parts, body) = request.into_parts();
        // A read has no body: the same request can still go to the owner.
        let mut local = Request::new(Body::empty());
        *local.method_mut() = parts.method.clone();
        *local.uri_mut() = parts.uri.clone();
        *local.version_mut() = parts.version;
        *local.headers_mut() = parts.headers.clone();
        *local.extensions_mut() = parts.extensions.clone();
        let mut response = call(&self.replica_app, local).await;
        let status = response.status();
        if !(status.is_success() || status == StatusCode::BAD_REQUEST) {
            if self.stopping.load(Ordering::Acquire) {
                // Its reads end as it stops (a long poll cut short), and
                // it sends nothing on: the client retries elsewhere.
                return Ok(unavailable(
                    "unavailable",
                    "this node is stopping; retry on another",
                ));
            }
            return Err(Request::from_parts(parts, body));
        }
        if let Ok(node) = HeaderValue::from_str(&self.settings.node_id) {
            response.headers_mut().insert(SERVED_BY, node);
        }
        Ok(response)
    }
}

/// Whether a follower serves `request` itself: a read session (S2S or
/// SSE) or a long poll (`wait` above 0) of a stream's records. Unary
/// reads that do not wait, and tails, go to the owner: what it answers is
/// the latest state, which a follower only learns a moment later.
fn served_by_replica(request: &Request) -> bool {
    if request.method() != Method::GET {
        return false;
    }
    let path = request.uri().path();
    let Some(stream) = path
        .strip_prefix("/v1/streams/")
        .and_then(|rest| rest.strip_suffix("/records"))
    else {
        return false;
    };
    if stream.is_empty() || stream.contains('/') {
        return false;
    }
    let says = |name: header::HeaderName, what: &str| {
        request
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.to_ascii_lowercase().contains(what))
    };
    if says(header::CONTENT_TYPE, "s2s/proto") || says(header::ACCEPT, "text/event-stream") {
        return true;
    }
    let query = request.uri().query().unwrap_or("");
    query.split('&').any(|pair| {
        pair.strip_prefix("wait=")
            .is_some_and(|wait| wait.parse::<u64>().is_ok_and(|wait| wait > 0))
    })
}

/// Serves `GET /metrics` of the `--metrics-listen` port.
async fn serve_metrics(State(node): State<Arc<Node>>, request: Request) -> Response {
    let router = match &*node.role.load_full() {
        Role::Owner { metrics, .. } => metrics.clone(),
        Role::Follower { .. } => node.replica_metrics.clone(),
    };
    call(&router, request).await
}

/// Answers `request` with `router`, through the same adapter the accept
/// loop serves routers through.
async fn call(router: &axum::Router, request: Request) -> Response {
    match TowerToHyperService::new(router.clone()).call(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}
