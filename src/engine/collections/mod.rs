//! Collections: keyed JSON records, with a records stream and an events
//! stream that change atomically with every write.
//!
//! A write to a collection takes the collection's write lock, reads the
//! current documents, computes the new versions and one change event per
//! record, and appends the events to the collection's events stream *with*
//! the document and index updates in the same atomic batch (through the
//! events stream's task, so seq nums and durability work as for any
//! stream). The records stream is the `changes` index: one entry per record
//! at `(updated_at, id)`, moved on every write.
//!
//! ## The cursor rule
//!
//! `/updated` pages by `(updated_at, id)`. The classic failure is a write
//! that lands at or below a position a reader already paged past. Rill
//! rules it out: `updated_at` is assigned by the server under the write
//! lock, never decreases, and a reader only ever sees records *below the
//! watermark*: the smallest `updated_at` any write not yet durable has, or
//! could still get. Reading the watermark also raises the floor for future
//! writes to it. So everything below the watermark is final, and a cursor
//! never passes a position where a record could still appear. A write
//! shows on `/updated` once its millisecond is closed: at once for a reader
//! that asks after it (the reader closes the millisecond), or within 1 ms
//! when writes are so dense that the clock runs that far ahead.

mod admin;
pub mod filter;
mod handle;
pub mod keys;
mod layer;
mod tombstones;
mod types;
mod updated;
mod write;

pub use filter::{Candidate, Filter};
pub use handle::CollectionHandle;
pub use layer::Collections;
pub use types::{
    event_json, events_stream_name, CollectionConfig, CollectionConfigPatch, CollectionInfo,
    CollectionName, Cursor, Event, EventKind, Horizon, RawRecord, RecordView, UnifiedCursor,
    WriteOp, DEFAULT_PAGE, EVENTS_STREAM_PREFIX, MAX_PAGE, MAX_RECORD_BYTES, MAX_RECORD_ID_BYTES,
    MAX_WRITE_OPS,
};
pub use updated::{Page, UnifiedPage, UpdatedPage, SCAN_BUDGET};
