//! Sources: collections kept up to date from data that lives elsewhere (an
//! HTTP API that pages its changes by a cursor, or Postgres tables by
//! change data capture). This layer, over collections, keeps their
//! definitions and cursors; `src/sources/` runs them.

pub mod config;
pub mod keys;
mod layer;
pub mod postgres;

pub use config::{CursorStyle, HttpSource, Pointers, SourceConfig, SourceName};
pub use keys::SourceCursor;
pub use layer::{SourceInfo, Sources};
pub use postgres::{NumericAs, PostgresSource, TableSource};
