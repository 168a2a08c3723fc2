//! Sources: collections kept up to date from data that lives elsewhere (an
//! HTTP API that pages its changes by a cursor; Postgres change data
//! capture is to come). This layer, over collections, keeps their
//! definitions and cursors; `src/sources/` runs them.

pub mod config;
pub mod keys;
mod layer;

pub use config::{CursorStyle, HttpSource, Pointers, SourceConfig, SourceName};
pub use keys::SourceCursor;
pub use layer::{SourceInfo, Sources};
