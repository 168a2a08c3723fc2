//! `PUT`: make a stream, or find the one there with the same settings.

use super::layer::{DurableStream, DurableStreams, Lookup};
use super::meta::{meta_key, DurableMeta};
use super::meta::{Settings, BASIN};
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::streams::config::{
    BasinConfigPatch, InfiniteRetention, RetentionPolicy, StreamConfig, StreamConfigPatch,
};
use crate::engine::streams::keys::{self, StreamState};
use crate::engine::streams::names::{BasinName, StreamName};
use crate::engine::streams::terms::AppendTerms;
use crate::engine::streams::types::now_ms;
use crate::engine::streams::types::Closure;
use crate::engine::streams::{delete_stream_ops, stream_creation_ops, CreateIf};
use crate::storage::{Keyspace, WriteBatch};

pub enum Creation {
    /// Made by this request (`201`).
    Created(DurableStream),
    /// There already, with the same settings and closure (`200`).
    Exists(DurableStream),
    /// There already, otherwise: what differs (`409`).
    Conflict(String),
}

impl DurableStreams {
    /// Makes the stream `name` with `settings`, holding `initial` (and
    /// closed, if `closed`): all of it, or, after a crash, none of it.
    pub async fn create(
        &self,
        name: &StreamName,
        settings: Settings,
        closed: bool,
        initial: Vec<bytes::Bytes>,
    ) -> EngineResult<Creation> {
        let _admin = self.admin.lock().await;
        match self.lookup(name, false).await? {
            Lookup::Found(stream) => return Ok(compare(stream, &settings, closed)),
            Lookup::Expired(id) => self.delete_now(name, id).await?,
            Lookup::Missing => {}
        }
        self.ensure_basin().await?;
        let config = StreamConfig::default()
            .apply(&StreamConfigPatch {
                retention_policy: Some(RetentionPolicy::Infinite(InfiniteRetention {})),
                ..Default::default()
            })
            .map_err(EngineError::Invalid)?;
        let ready = initial.is_empty();
        {
            let _core_admin = self.core.lock_admin().await;
            let mut batch = WriteBatch::default();
            if let Some(unready) = self.core.stream_meta(BASIN, name)? {
                // Made by a `PUT` that a crash cut off before its content
                // was in: it never existed for anyone.
                delete_stream_ops(&mut batch, BASIN, name, unready.id);
            }
            let [id] = self.core.allocate_ids(&mut batch)?;
            stream_creation_ops(&mut batch, BASIN, name, config, None, id);
            if closed && ready {
                let state = StreamState {
                    last_write_at: now_ms(),
                    appended_bytes: Some(0),
                    closed: Some(Closure::default()),
                    ..Default::default()
                };
                batch.put(
                    Keyspace::Meta,
                    keys::state_key(id),
                    keys::encode_json(&state),
                );
            }
            let meta = DurableMeta {
                settings: settings.clone(),
                ready,
            };
            batch.put(Keyspace::Meta, meta_key(id), keys::encode_json(&meta));
            self.core.committer().commit(batch).await?;
        }
        if !ready {
            // The content, and the mark that the stream is whole, in one
            // batch.
            let handle = self.core.stream(BASIN, name, CreateIf::Never).await?;
            let mut extra = WriteBatch::default();
            let meta = DurableMeta {
                settings,
                ready: true,
            };
            extra.put(
                Keyspace::Meta,
                meta_key(handle.id),
                keys::encode_json(&meta),
            );
            let terms = AppendTerms {
                close: closed,
                limits: super::write::LIMITS,
                ..Default::default()
            };
            handle
                .submit_with_terms(super::write::input(initial), terms, extra)
                .await?
                .await?;
        }
        match self.lookup(name, true).await? {
            Lookup::Found(stream) => Ok(Creation::Created(stream)),
            _ => Err(EngineError::StreamNotFound(name.to_string())),
        }
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
fn compare(stream: DurableStream, settings: &Settings, closed: bool) -> Creation {
    if stream.settings.content_type != settings.content_type {
        return Creation::Conflict(format!(
            "the stream exists with content type {}",
            stream.settings.content_type
        ));
    }
    if stream.settings.expiry != settings.expiry {
        return Creation::Conflict("the stream exists with another TTL or expiry".into());
    }
    if stream.visible().closed != closed {
        let state = if closed { "open" } else { "closed" };
        return Creation::Conflict(format!("the stream exists and is {state}"));
    }
    Creation::Exists(stream)
}
