//! `PUT`: make a stream (a fork too), or find the one there with the same
//! settings.
//!
//! A stream is made in steps: one batch creates it, marked not ready (with
//! a fork, the source's count of forks goes up in the same batch); then
//! its inherited records and its body are appended, the last append
//! marking it ready. A stream a crash leaves unready is never shown, and
//! the next `PUT` of its name removes it first.

use bytes::Bytes;

use super::layer::{DurableStream, DurableStreams, Lookup};
use super::meta::{
    meta_key, DurableMeta, Expiry, ForkOrigin, Inherited, Settings, BASIN, DEFAULT_CONTENT_TYPE,
};
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::streams::config::{
    BasinConfigPatch, InfiniteRetention, RetentionPolicy, StreamConfig, StreamConfigPatch,
};
use crate::engine::streams::keys::{self, StreamState};
use crate::engine::streams::names::{BasinName, StreamName};
use crate::engine::streams::terms::AppendTerms;
use crate::engine::streams::types::{now_ms, Closure};
use crate::engine::streams::{stream_creation_ops, CreateIf};
use crate::storage::{Keyspace, WriteBatch};

/// What a `PUT` asks for.
#[derive(Clone, Debug, Default)]
pub struct CreateRequest {
    /// `None`: the default, or a fork's source's.
    pub content_type: Option<String>,
    /// `None`: never, or a fork's source's.
    pub expiry: Option<Expiry>,
    pub closed: bool,
    /// The body's records.
    pub initial: Vec<Bytes>,
    pub fork: Option<ForkRequest>,
}

/// `Stream-Forked-From` and its offsets.
#[derive(Clone, Debug)]
pub struct ForkRequest {
    pub source: String,
    /// `None`: the source's tail.
    pub offset: Option<u64>,
    pub sub_offset: u64,
}

pub enum Creation {
    /// Made by this request (`201`).
    Created(DurableStream),
    /// There already, with the same settings and closure (`200`).
    Exists(DurableStream),
    /// There already, otherwise, or a fork the source refuses: why (`409`).
    Conflict(String),
}

impl DurableStreams {
    /// Makes the stream `name` as `request` asks: all of it, or, after a
    /// crash, none of it.
    pub async fn create(
        &self,
        name: &StreamName,
        request: CreateRequest,
    ) -> EngineResult<Creation> {
        self.core.check_writable(name)?;
        let _admin = self.admin.lock().await;
        let kept_for_forks = || {
            Ok(Creation::Conflict(
                "a stream of this name was deleted and is kept for its forks".into(),
            ))
        };
        match self.lookup(name, false).await? {
            Lookup::Found(stream) => return Ok(compare(stream, &request)),
            Lookup::Deleted => return kept_for_forks(),
            Lookup::Expired(id) => {
                self.remove(name, id).await?;
                if self.meta(name)?.is_some() {
                    return kept_for_forks();
                }
            }
            // Cut off by a crash before it was whole (a `PUT` still under
            // way would hold `admin`): it never existed.
            Lookup::Unready(id) => self.remove(name, id).await?,
            Lookup::Missing => {}
        }
        let (settings, origin) = match &request.fork {
            None => (
                Settings {
                    content_type: request
                        .content_type
                        .clone()
                        .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.into()),
                    expiry: request.expiry.unwrap_or_default(),
                },
                None,
            ),
            Some(fork) => match self.fork_origin(fork, &request).await? {
                Ok(found) => found,
                Err(conflict) => return Ok(Creation::Conflict(conflict)),
            },
        };
        self.ensure_basin().await?;
        let inherits = origin.as_ref().is_some_and(|o| o.1.end() > o.1.start);
        let ready = request.initial.is_empty() && !inherits;
        let fork = origin
            .as_ref()
            .map(|(origin, inherited)| (origin, inherited.start));
        let id = self
            .insert(name, &settings, fork, request.closed && ready, ready)
            .await?;
        if ready {
            return self.created(name).await;
        }
        let filled = self.fill(name, id, settings, origin, request).await;
        if let Err(err) = filled {
            // Leave nothing behind, the source's count of forks included.
            let _ = self.remove(name, id).await;
            return Err(err);
        }
        self.created(name).await
    }

    /// The stream just made; as made, though its expiry may be past
    /// already (a TTL of 0, say): the next request finds it gone.
    async fn created(&self, name: &str) -> EngineResult<Creation> {
        let not_found = || EngineError::StreamNotFound(name.to_string());
        let (id, meta) = self.meta(name)?.ok_or_else(not_found)?;
        self.touch(id, meta.settings.expiry);
        match self.found(name, id, meta).await? {
            Lookup::Found(stream) => Ok(Creation::Created(stream)),
            _ => Err(not_found()),
        }
    }

    /// One batch: the stream, its meta, and a fork's count on its source.
    /// Returns the stream's id.
    async fn insert(
        &self,
        name: &str,
        settings: &Settings,
        fork: Option<(&ForkOrigin, u64)>,
        closed: bool,
        ready: bool,
    ) -> EngineResult<u64> {
        let origin = fork.map(|(origin, _)| origin);
        let config = StreamConfig::default()
            .apply(&StreamConfigPatch {
                retention_policy: Some(RetentionPolicy::Infinite(InfiniteRetention {})),
                ..Default::default()
            })
            .map_err(EngineError::Invalid)?;
        let _core_admin = self.core.lock_admin().await;
        if self.core.stream_meta(BASIN, name)?.is_some() {
            // Made through S2 a moment ago.
            return Err(EngineError::StreamExists(name.into()));
        }
        let mut batch = WriteBatch::default();
        let [id] = self.core.allocate_ids(&mut batch)?;
        stream_creation_ops(&mut batch, BASIN, name, config, None, id);
        // A fork's offsets are its source's: it starts where the source's
        // records start.
        let start = fork.map_or(0, |(_, start)| start);
        if closed || start > 0 {
            let state = StreamState {
                next_seq_num: start,
                trim_point: start,
                last_write_at: now_ms(),
                appended_bytes: Some(0),
                closed: closed.then(Closure::default),
                ..Default::default()
            };
            batch.put(
                Keyspace::Meta,
                keys::state_key(id),
                keys::encode_json(&state),
            );
        }
        let mut meta = DurableMeta::new(settings.clone(), ready);
        meta.fork = origin.cloned();
        batch.put(Keyspace::Meta, meta_key(id), keys::encode_json(&meta));
        if let Some(origin) = origin {
            if let Some((source_id, mut source)) = self.meta(&origin.source)? {
                if source_id == origin.source_id {
                    source.forks += 1;
                    batch.put(
                        Keyspace::Meta,
                        meta_key(source_id),
                        keys::encode_json(&source),
                    );
                }
            }
        }
        self.core.committer().commit(batch).await?;
        Ok(id)
    }

    /// Appends what the stream inherits and its body; the last append
    /// marks it ready (and closes it, if asked).
    async fn fill(
        &self,
        name: &str,
        id: u64,
        settings: Settings,
        origin: Option<(ForkOrigin, Inherited)>,
        request: CreateRequest,
    ) -> EngineResult<()> {
        let handle = self.core.stream(BASIN, name, CreateIf::Never).await?;
        if handle.id != id {
            return Err(EngineError::StreamNotFound(name.into()));
        }
        if let Some((origin, inherited)) = &origin {
            self.copy_inherited(&handle, origin, inherited).await?;
        }
        // Built afresh: no one can fork a stream not yet ready, so it has
        // no forks to count.
        let mut meta = DurableMeta::new(settings, true);
        meta.fork = origin.map(|(origin, _)| origin);
        let mut ready = WriteBatch::default();
        ready.put(Keyspace::Meta, meta_key(id), keys::encode_json(&meta));
        if request.initial.is_empty() && !request.closed {
            self.core.committer().commit(ready).await?;
            return Ok(());
        }
        let terms = AppendTerms {
            close: request.closed,
            limits: super::write::LIMITS,
            ..Default::default()
        };
        handle
            .submit_with_terms(super::write::input(request.initial), terms, ready)
            .await?
            .await?;
        Ok(())
    }

    async fn ensure_basin(&self) -> EngineResult<()> {
        if self.core.basin_meta(BASIN).is_ok() {
            return Ok(());
        }
        let name = BasinName::parse(BASIN)?;
        self.core
            .ensure_basin(&name, &BasinConfigPatch::default())
            .await?;
        Ok(())
    }
}

/// `200` if the stream there is what the `PUT` asks for, else `409`.
fn compare(stream: DurableStream, request: &CreateRequest) -> Creation {
    let settings = &stream.settings;
    if let Some(content_type) = &request.content_type {
        if *content_type != settings.content_type {
            return Creation::Conflict(format!(
                "the stream exists with content type {}",
                settings.content_type
            ));
        }
    } else if request.fork.is_none() && settings.content_type != DEFAULT_CONTENT_TYPE {
        return Creation::Conflict(format!(
            "the stream exists with content type {}",
            settings.content_type
        ));
    }
    let expiry_matches = match request.expiry {
        Some(expiry) => expiry == settings.expiry,
        // A fork inherits its source's; a stream has none.
        None => request.fork.is_some() || settings.expiry == Expiry::Never,
    };
    if !expiry_matches {
        return Creation::Conflict("the stream exists with another TTL or expiry".into());
    }
    if stream.visible().closed != request.closed {
        let state = if request.closed { "open" } else { "closed" };
        return Creation::Conflict(format!("the stream exists and is {state}"));
    }
    if let Some(fork) = &request.fork {
        let same = stream.meta.fork.as_ref().is_some_and(|origin| {
            origin.source == fork.source
                && fork.offset.is_none_or(|offset| offset == origin.offset)
                && origin.sub_offset == fork.sub_offset
        });
        if !same {
            return Creation::Conflict(
                "the stream exists, and is not that fork of that stream".into(),
            );
        }
    }
    Creation::Exists(stream)
}
