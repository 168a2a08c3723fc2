//! What an append may hold, checked before anything changes: its size
//! and count limits, the timestamps its stream's mode requires, and S2's
//! command records (`fence` and `trim`), which are parsed here too.

use super::config::TimestampingMode;
use super::terms::BatchLimits;
use super::types::*;
use crate::engine::error::{EngineError, EngineResult};

/// S2 command records: exactly one header with an empty name.
pub(super) enum CommandRecord {
    Fence(String),
    Trim(u64),
}

impl CommandRecord {
    /// Recognizes a command record; assumes [`validate_batch`] accepted it.
    pub(super) fn parse(record: &AppendRecord) -> Option<Self> {
        let [header] = record.headers.as_slice() else {
            return None;
        };
        if !header.name.is_empty() {
            return None;
        }
        match header.value.as_ref() {
            b"fence" => Some(Self::Fence(
                String::from_utf8_lossy(&record.body).into_owned(),
            )),
            b"trim" => Some(Self::Trim(u64::from_be_bytes(
                record.body.as_ref().try_into().ok()?,
            ))),
            _ => None,
        }
    }
}

/// Everything about an append that can be checked without the stream's
/// state. Runs before anything changes, so a bad batch has no effect.
pub fn validate_batch(
    input: &AppendInput,
    mode: TimestampingMode,
    limits: BatchLimits,
) -> EngineResult<()> {
    let invalid = |msg: String| Err(EngineError::Invalid(msg));
    if input.records.is_empty() {
        return invalid("an append must contain at least one record".into());
    }
    if input.records.len() > limits.records {
        return invalid(format!(
            "an append may contain at most {} records, got {}",
            limits.records,
            input.records.len()
        ));
    }
    let size: usize = input.records.iter().map(AppendRecord::metered_size).sum();
    if size > limits.bytes {
        return invalid(format!(
            "an append may contain at most {} metered bytes, got {size}",
            limits.bytes
        ));
    }
    if let Some(token) = &input.fencing_token {
        if token.len() > MAX_FENCING_TOKEN_BYTES {
            return invalid(format!(
                "fencing_token may be at most {MAX_FENCING_TOKEN_BYTES} bytes"
            ));
        }
    }
    for (i, record) in input.records.iter().enumerate() {
        if mode == TimestampingMode::ClientRequire && record.timestamp.is_none() {
            return invalid(format!(
                "record {i} has no timestamp, which this stream's `client-require` timestamping mode requires"
            ));
        }
        validate_command(i, record)?;
    }
    Ok(())
}

fn validate_command(i: usize, record: &AppendRecord) -> EngineResult<()> {
    let invalid = |msg: String| Err(EngineError::Invalid(msg));
    let Some(position) = record.headers.iter().position(|h| h.name.is_empty()) else {
        return Ok(());
    };
    if record.headers.len() != 1 {
        return invalid(format!(
            "record {i}: a command record (empty header name) must have exactly one header"
        ));
    }
    let header = &record.headers[position];
    match header.value.as_ref() {
        b"fence" => {
            if record.body.len() > MAX_FENCING_TOKEN_BYTES {
                return invalid(format!(
                    "record {i}: a fencing token may be at most {MAX_FENCING_TOKEN_BYTES} bytes"
                ));
            }
            if std::str::from_utf8(&record.body).is_err() {
                return invalid(format!("record {i}: a fencing token must be UTF-8"));
            }
        }
        b"trim" => {
            if record.body.len() != 8 {
                return invalid(format!(
                    "record {i}: a trim command's body must be an 8-byte big-endian seq num"
                ));
            }
        }
        other => {
            return invalid(format!(
                "record {i}: unknown command `{}`; expected `fence` or `trim`",
                String::from_utf8_lossy(other)
            ))
        }
    }
    Ok(())
}
