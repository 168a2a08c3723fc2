//! Several Rill nodes over one Postgres database (`rill serve --storage
//! postgres://… --cluster`), so that a node can die without taking the
//! service with it.
//!
//! **One owner at a time.** The database is owned through a lease
//! (`storage/postgres/lease.rs`): the node holding it opens the engine
//! over it and serves every request but live reads; the others forward
//! theirs to it (`forward.rs`), so any node answers any request. The lease carries the
//! owner epoch that every write transaction checks, so a node that lost it
//! (paused, cut off, slow) never writes again: a takeover cannot give two
//! owners, whatever the timing. When the owner stops renewing (killed,
//! paused past the lease's length), another node takes the lease over and
//! opens the engine from what the database holds; background work
//! (retention, expiry, consumers' timers, sinks, sources) runs on the
//! owner only, as part of its engine.
//!
//! **Followers serve live reads.** Long polls and read sessions of
//! streams are served by the node they reach, from the database, at the
//! tails the owner's feed tells its replica (`feed.rs`); the rest is
//! forwarded.
//!
//! `node.rs` watches the lease and switches the node between owner and
//! follower; `lease.rs` keeps the lease an owner holds renewed;
//! `term.rs` is what the server gives a node to open and close an engine
//! with, and its replica. The owner of everything is a first step:
//! ownership per stream, collection and consumer comes next, over the
//! same leases and epochs.

mod feed;
mod forward;
mod lease;
mod node;
mod term;

pub use forward::FORWARDED_BY;
pub use node::{ClusterSettings, Node, SERVED_BY};
pub use term::{FeedSource, Replica, Term, Terms};
