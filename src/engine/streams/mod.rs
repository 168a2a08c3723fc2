//! The stream core: basins, streams, appends and reads over
//! [`Storage`](crate::storage::Storage).
//!
//! Admin operations (create, reconfigure, delete) are serialized by one
//! lock and write metadata through the committer; appends go to the
//! stream's task ([`streamer`]); reads go straight to storage, bounded by
//! the stream's durable tail.
//!
//! The core knows nothing of the layers built on it (collections,
//! consumers). They reach in through a few crate-visible calls: the admin
//! lock, id allocation, the committer, stream metadata and tasks, and
//! `StreamCore::reserve_names` for streams that only they may write.

mod admin;
mod append;
mod basins;
pub mod committer;
pub mod config;
mod core;
mod followed;
pub mod keys;
mod list;
pub mod names;
mod read;
mod replica;
mod retention;
pub mod scope;
mod size_counters;
mod sizes;
pub mod streamer;
pub mod tails;
pub mod terms;
pub mod token_index;
mod tokens;
pub mod types;
mod validate;

pub(crate) use self::core::{CreateIf, ScopedName};
pub use self::core::{Provision, StreamCore};
pub use admin::StreamInfo;
pub(crate) use admin::{delete_stream_ops, stream_creation_ops};
pub use append::AppendSession;
pub use basins::BasinInfo;
pub use list::{ListRequest, MAX_LIST_LIMIT};
pub(crate) use read::{
    count_read, first_seq_timestamped_at_or_after, scan_records, MAX_UNARY_WAIT,
};
pub use read::{ReadRequest, ReadSession, SessionEvent};
pub use replica::TOKENS_RELOADED_EVERY;
pub use sizes::StoredBytes;
