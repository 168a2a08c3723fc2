//! Everything that can go wrong in the engine, in terms a client can act on.
//! The HTTP layer maps each variant to a status and a stable error code.

use super::streams::types::StreamPosition;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("basin `{0}` not found")]
    BasinNotFound(String),
    #[error("stream `{0}` not found")]
    StreamNotFound(String),
    #[error("basin `{0}` already exists")]
    BasinExists(String),
    #[error("stream `{0}` already exists")]
    StreamExists(String),
    #[error("collection `{0}` not found")]
    CollectionNotFound(String),
    #[error("record `{0}` not found")]
    RecordNotFound(String),
    #[error(
        "the cursor is older than the tombstones kept (deletions before {0} ms were forgotten); \
         start again from updated_after=0 for a full resync"
    )]
    CursorExpired(u64),
    #[error("record `{id}` is at version {actual}, not the expected {expected}")]
    VersionMismatch {
        id: String,
        expected: u64,
        actual: u64,
    },
    #[error("consumer `{0}` not found")]
    ConsumerNotFound(String),
    #[error("sink `{0}` not found")]
    SinkNotFound(String),
    #[error("source `{0}` not found")]
    SourceNotFound(String),
    #[error("source `{0}` exists with other settings; a source cannot change (delete it and make it again: it starts from the beginning)")]
    SourceConflict(String),
    #[error("sink `{0}` exists with another source, start or filter; those cannot change (delete it, or use another name)")]
    SinkConflict(String),
    #[error("consumer `{0}` exists with another source, start, filter or ack policy; those cannot change (delete it, or use another name)")]
    ConsumerConflict(String),
    #[error("the source of consumer `{0}` was deleted; delete the consumer and make a new one")]
    ConsumerSourceGone(String),
    /// The engine names the ids by their places in the request; the wire
    /// layer, which knows them as the client wrote them, fills in `ids`.
    #[error(
        "these ack ids are expired (their messages were delivered again since), so nothing was applied: {}",
        .ids.join(", ")
    )]
    AckExpired {
        indexes: Vec<usize>,
        ids: Vec<String>,
    },
    /// The ack id at this place in the request is no use here.
    #[error("ack id #{index} {problem}")]
    BadAckId { index: usize, problem: &'static str },
    #[error("access token `{0}` already exists")]
    AccessTokenExists(String),
    #[error("access token `{0}` not found")]
    AccessTokenNotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("match_seq_num did not match: the next seq num is {0}")]
    SeqNumMismatch(u64),
    #[error("fencing token did not match: the current token is `{0}`")]
    FencingTokenMismatch(String),
    #[error("the requested start is beyond the tail ({})", .0.seq_num)]
    BeyondTail(StreamPosition),
    #[error("stream `{0}` was deleted; it stays, unreadable, until its forks are deleted too")]
    StreamDeleted(String),
    #[error("{0}")]
    AppendRefused(crate::engine::streams::types::AppendRefusal),
    #[error("the server is shutting down")]
    Unavailable,
    #[error("an earlier append in this session failed, so this one was not applied")]
    SessionAborted,
    #[error(transparent)]
    Storage(StorageError),
}

impl From<StorageError> for EngineError {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::Closed => EngineError::Unavailable,
            other => EngineError::Storage(other),
        }
    }
}

pub type EngineResult<T> = Result<T, EngineError>;
