//! Rill: a durable streams server that speaks the S2 v1 API.
//!
//! The modules depend on each other in one direction only:
//! `server` → `api` (HTTP handlers) → `wire` (wire formats) → `engine`
//! (streams, the commit protocol) → `storage` (ordered key-value stores).
//! `docs/ARCHITECTURE.md` explains each part and the on-disk format.

pub mod api;
pub mod connections;
pub mod engine;
pub mod server;
pub mod storage;
pub mod wire;
