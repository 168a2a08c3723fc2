//! Forks (§4.2), by copy: a fork is a stream of its own holding a copy of
//! what it inherits, at the same offsets as in its source (its seq nums
//! start where the source's do). A source keeps a count of its forks; one
//! deleted while it has any stays, answering `410` and keeping its name,
//! until the last is deleted, and then goes, as do its own deleted
//! sources in turn (`DurableStreams::remove`, in `layer.rs`).

use std::time::Duration;

use super::create::{CreateRequest, ForkRequest};
use super::layer::{DurableStreams, Lookup};
use super::meta::{ForkOrigin, Inherited, Settings};
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::streams::streamer::StreamHandle;
use crate::engine::streams::terms::AppendTerms;
use crate::engine::streams::types::{AppendInput, AppendRecord};
use crate::storage::WriteBatch;

/// A fork's settings and origin, or why its source refuses it (`409`).
type Resolved = Result<(Settings, Option<(ForkOrigin, Inherited)>), String>;

impl DurableStreams {
    /// Finds the source of `fork` and what the fork inherits; the caller
    /// holds `admin`.
    pub(super) async fn fork_origin(
        &self,
        fork: &ForkRequest,
        request: &CreateRequest,
    ) -> EngineResult<Resolved> {
        let source = match self.lookup(&fork.source, false).await? {
            Lookup::Found(source) => source,
            Lookup::Missing | Lookup::Unready(_) => {
                return Err(EngineError::StreamNotFound(fork.source.clone()))
            }
            Lookup::Expired(id) => {
                self.remove(&fork.source, id).await?;
                return Err(EngineError::StreamNotFound(fork.source.clone()));
            }
            Lookup::Deleted => {
                return Ok(Err(
                    "the source stream was deleted (it is kept for its forks)".into(),
                ))
            }
        };
        if let Some(content_type) = &request.content_type {
            if *content_type != source.settings.content_type {
                return Ok(Err(format!(
                    "the source stream's content type is {}",
                    source.settings.content_type
                )));
            }
        }
        let settings = Settings {
            content_type: source.settings.content_type.clone(),
            expiry: request.expiry.unwrap_or(source.settings.expiry),
        };
        let visible = source.visible();
        let tail = visible.tail.seq_num;
        let anchor = fork.offset.unwrap_or(tail);
        let invalid = |why: &str| Err(EngineError::Invalid(why.into()));
        if anchor > tail {
            return invalid("the fork offset is beyond the source stream's tail");
        }
        if anchor < visible.trim_point {
            return invalid("the fork offset's records are gone from the source stream");
        }
        let sub = fork.sub_offset;
        let (whole_until, partial) = if sub == 0 {
            (anchor, None)
        } else if source.settings.is_json() {
            // A message is a record.
            match anchor.checked_add(sub).filter(|end| *end <= tail) {
                Some(end) => (end, None),
                None => return invalid("the fork sub-offset is past the source's last message"),
            }
        } else {
            if anchor >= tail {
                return invalid("the fork sub-offset is past the source's data");
            }
            let chunk = self.read(&source, anchor, Duration::ZERO).await?;
            let len = chunk.records.first().map_or(0, |r| r.body.len()) as u64;
            match sub.cmp(&len) {
                std::cmp::Ordering::Greater => {
                    return invalid("the fork sub-offset is past the end of the data at its offset")
                }
                std::cmp::Ordering::Equal => (anchor + 1, None),
                std::cmp::Ordering::Less => (anchor, Some(sub as usize)),
            }
        };
        let origin = ForkOrigin {
            source: fork.source.clone(),
            source_id: source.id,
            offset: anchor,
            sub_offset: sub,
        };
        let inherited = Inherited {
            start: visible.trim_point,
            whole_until,
            partial,
        };
        Ok(Ok((settings, Some((origin, inherited)))))
    }

    /// Appends to the new fork (`handle`) the records it inherits, in
    /// batches, each durable before the next is read.
    pub(super) async fn copy_inherited(
        &self,
        handle: &StreamHandle,
        origin: &ForkOrigin,
        inherited: &Inherited,
    ) -> EngineResult<()> {
        let source = match self.lookup(&origin.source, false).await? {
            Lookup::Found(source) if source.id == origin.source_id => source,
            _ => return Err(EngineError::StreamNotFound(origin.source.clone())),
        };
        let mut from = inherited.start;
        while from < inherited.end() {
            let chunk = self.read(&source, from, Duration::ZERO).await?;
            let mut records = Vec::new();
            for record in chunk.records {
                if record.seq_num >= inherited.end() {
                    break;
                }
                let mut body = record.body;
                if record.seq_num == inherited.whole_until {
                    if let Some(bytes) = inherited.partial {
                        body.truncate(bytes);
                    }
                }
                records.push(AppendRecord {
                    timestamp: Some(record.timestamp),
                    headers: record.headers,
                    body,
                });
            }
            if records.is_empty() {
                return Err(EngineError::StreamNotFound(origin.source.clone()));
            }
            from += records.len() as u64;
            let input = AppendInput {
                records,
                ..Default::default()
            };
            let terms = AppendTerms {
                limits: super::write::LIMITS,
                ..Default::default()
            };
            handle
                .submit_with_terms(input, terms, WriteBatch::default())
                .await?
                .await?;
        }
        Ok(())
    }
}
