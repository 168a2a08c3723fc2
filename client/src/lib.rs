//! A typed client for the Rill durable streams server.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rill_client::Error> {
//! let client = rill_client::Client::new("http://127.0.0.1:8080")?.with_basin("my-basin");
//! client.ensure_basin("my-basin").await?;
//! client.ensure_stream("orders").await?;
//! let ack = client.append("orders", &["first", "second"]).await?;
//! assert_eq!(ack.end - ack.start, 2);
//! let records = client.read("orders", 0, 10).await?;
//! assert_eq!(records[0].body, "first");
//! # Ok(()) }
//! ```
//!
//! Where to look:
//! - streams: [`Client::append`], [`Client::append_session`] (pipelined,
//!   acknowledged in order), [`Client::read_with`], [`Client::follow`] (a
//!   live read that reconnects and resumes exactly), [`Client::check_tail`];
//! - collections: [`Client::put`], [`Client::write_batch`],
//!   [`Client::updates`] (the `/updated` cursor as an iterator),
//!   [`Client::read_events`];
//! - consumers: [`Client::run_worker`], or [`Client::receive`] and
//!   [`Client::ack`] by hand;
//! - admin: [`Client::list`], [`Client::create`], [`Client::reconfigure`]
//!   and [`Client::delete_resource`] for every [`Kind`].
//!
//! Requests that only read (and admin `PUT`s and `PATCH`es, which are
//! idempotent) are retried with backoff on connection failures and
//! `502`–`504`s; appends and other writes are never retried, so a write is
//! never applied twice behind your back. Every error carries what the
//! server said: [`Error::code`] is its stable code.

#![warn(missing_docs)]

mod admin;
mod client;
mod collections;
mod consumers;
mod error;
mod follow;
mod session;
mod streams;

pub use admin::Kind;
pub use client::{Client, DEFAULT_TIMEOUT};
pub use collections::{Batch, Change, Event, Record, Updates};
pub use consumers::{Message, Outcome, Replayed};
pub use error::Error;
pub use follow::Follow;
pub use rill_protocol::collections::EventKind;
pub use session::{AppendSession, AppendTicket};
pub use streams::{
    AppendAck, AppendOptions, AppendRecord, ReadOptions, ReadStart, StreamRecord, MAX_APPEND_BYTES,
    MAX_APPEND_RECORDS,
};
