//! The Durable Streams protocol (`../shared/specs/durable-streams`) at
//! `/v1/stream/{path}`, over `engine::durable_streams`: `PUT` creates
//! (`create.rs`), `POST` appends and closes (`append.rs`), `GET` reads,
//! catching up or long polling (`read.rs`) or as Server-Sent Events
//! (`sse.rs`); `HEAD` and `DELETE` are here.
//!
//! Answers are the protocol's: its status codes and headers; a body, when
//! there is one, is Rill's `{"code", "message"}`. The subscription APIs
//! the protocol reserves (`/v1/stream/__ds/…`) answer `501`.

mod admin;
mod append;
mod browser;
mod create;
mod cursor;
pub mod headers;
mod read;
mod shared;
mod sse;

pub use admin::delete;
pub use append::post;
pub use browser::{browser_headers, preflight};
pub use create::put;
pub use read::get;
pub use shared::PREFIX;
