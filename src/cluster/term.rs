//! What a node opens when it takes the lease, and closes when it loses it:
//! an engine over the database with everything that runs over it. The
//! server provides it (`server/services.rs`); the cluster only drives it.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

use crate::storage::Storage;

/// Starts a feed (`feed.rs`): the lines an owner's engine makes from now
/// on, ending when the follower falls too far behind.
pub type FeedSource = Arc<dyn Fn() -> BoxStream<'static, Bytes> + Send + Sync>;

/// Opens a term: the engine over `storage` (which writes under the new
/// owner epoch) and what runs over it.
pub trait Terms: Send + Sync + 'static {
    fn open(&self, storage: Arc<dyn Storage>) -> BoxFuture<'static, Result<Box<dyn Term>, String>>;
}

/// An open term as owner.
pub trait Term: Send + Sync {
    /// The routes it serves.
    fn router(&self) -> axum::Router;
    /// `GET /metrics` alone (for `--metrics-listen`).
    fn metrics_router(&self) -> axum::Router;
    /// Its feed to the followers (`feed.rs`).
    fn feed(&self) -> FeedSource;
    /// Ends live sessions and long polls, so their connections close.
    fn begin_stop(&self);
    /// Stops its background work and its engine; what it acknowledged is
    /// durable by then.
    fn stop(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// What a follower serves itself: long polls and read sessions of
/// streams, from the database, at the tails the owner's feed tells
/// (`feed.rs`). Made once per node, for its whole life.
pub trait Replica: Send + Sync + 'static {
    /// The routes those reads are served by; an answer that may come from
    /// what the replica does not know yet (a 404, a 416, an unknown token)
    /// is not used: the request goes to the owner instead.
    fn router(&self) -> axum::Router;
    /// `GET /metrics` alone (for `--metrics-listen`): the node's figures.
    fn metrics_router(&self) -> axum::Router;
    /// A line of the owner's feed.
    fn apply(&self, line: &[u8]);
    /// Reads from the database what the feed may have missed.
    fn refresh(&self) -> BoxFuture<'static, ()>;
    /// Ends its sessions and long polls, so the server's connections drain.
    fn begin_stop(&self);
}
