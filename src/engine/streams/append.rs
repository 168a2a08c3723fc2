//! Appends: one call, or a session of pipelined appends.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::config;
use super::core::{CreateIf, StreamCore};
use super::streamer::StreamHandle;
use super::types::{AppendAck, AppendInput, StreamPosition};
use super::validate;
use crate::engine::error::EngineResult;

impl StreamCore {
    pub async fn append(
        &self,
        basin: &str,
        stream: &str,
        input: AppendInput,
    ) -> EngineResult<AppendAck> {
        self.check_writable(stream)?;
        // Reject a malformed batch before it can create a stream.
        validate::validate_batch(
            &input,
            config::TimestampingMode::ClientPrefer,
            Default::default(),
        )?;
        self.stream(basin, stream, CreateIf::OnAppend)
            .await?
            .append(input)
            .await
    }

    /// Opens an append session: appends submitted through it are pipelined
    /// (many may be in flight) and applied in order, and none is applied
    /// after one fails.
    pub async fn append_session(&self, basin: &str, stream: &str) -> EngineResult<AppendSession> {
        self.check_writable(stream)?;
        Ok(AppendSession {
            handle: self.stream(basin, stream, CreateIf::OnAppend).await?,
            aborted: Arc::default(),
            closing: self.closing(),
        })
    }

    pub async fn check_tail(&self, basin: &str, stream: &str) -> EngineResult<StreamPosition> {
        Ok(self
            .stream(basin, stream, CreateIf::OnRead)
            .await?
            .visible()
            .tail)
    }
}

/// See [`StreamCore::append_session`].
pub struct AppendSession {
    handle: Arc<StreamHandle>,
    aborted: Arc<AtomicBool>,
    closing: tokio::sync::watch::Receiver<bool>,
}

impl AppendSession {
    /// Queues `input`; the returned future resolves to its acknowledgement.
    pub async fn submit(
        &self,
        input: AppendInput,
    ) -> EngineResult<impl std::future::Future<Output = EngineResult<AppendAck>> + use<>> {
        self.handle.submit(input, Some(self.aborted.clone())).await
    }

    /// Resolves once the server begins to shut down, so that open sessions
    /// end and let it drain.
    pub async fn shutting_down(&self) {
        let mut closing = self.closing.clone();
        let _ = closing.wait_for(|closing| *closing).await;
    }
}
