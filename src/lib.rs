//! Rill: a durable streams server that speaks the S2 v1 API.
//!
//! The modules depend on each other in one direction only:
//! `server` (with `connections`, the accept loop, `tls` and `root_token`;
//! and `cluster`, the nodes sharing one Postgres database) → `api` (HTTP handlers, and access control in `api::auth`)
//! → `wire` (wire formats) → `engine` (consumers → collections → the
//! stream core) → `storage` (ordered key-value stores); `tests/layering.rs`
//! checks it. `docs/ARCHITECTURE.md` explains each part and the on-disk
//! format.

pub mod api;
pub mod cluster;
pub mod connections;
pub mod engine;
pub mod metrics;
pub mod postgres;
pub mod root_token;
pub mod server;
pub mod sinks;
pub mod sources;
pub mod storage;
pub mod tls;
pub mod wire;
