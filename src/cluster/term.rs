//! What a node opens when it takes the lease, and closes when it loses it:
//! an engine over the database with everything that runs over it. The
//! server provides it (`server/services.rs`); the cluster only drives it.

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::storage::Storage;

/// Opens a term: the engine over `storage` (which writes under the new
/// owner epoch) and what runs over it.
pub trait Terms: Send + Sync + 'static {
    fn open(&self, storage: Arc<dyn Storage>) -> BoxFuture<'static, Result<Box<dyn Term>, String>>;
}

/// An open term as owner.
pub trait Term: Send + Sync {
    /// The routes it serves.
    fn router(&self) -> axum::Router;
    /// Ends live sessions and long polls, so their connections close.
    fn begin_stop(&self);
    /// Stops its background work and its engine; what it acknowledged is
    /// durable by then.
    fn stop(self: Box<Self>) -> BoxFuture<'static, ()>;
}
