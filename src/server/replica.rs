//! What a cluster node's feed says (`cluster/feed.rs`), and the replica a
//! follower serves reads with: the engine opened over the database as a
//! replica (`engine/streams/replica.rs`), with the API's routes.
//!
//! A line of the feed is a stream's visible state, by the stream's id:
//! `{"id":7,"tail":12,"timestamp":…,"trim":0,"at":…,"closed":false}`, or
//! `{"id":7,"deleted":true}`.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_stream::wrappers::BroadcastStream;

use crate::cluster::{FeedSource, Replica};
use crate::engine::streams::tails::TailNotice;
use crate::engine::streams::tails::Visible;
use crate::engine::streams::types::StreamPosition;
use crate::engine::Engine;

#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct Line {
    id: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    deleted: bool,
    #[serde(default)]
    tail: u64,
    #[serde(default)]
    timestamp: u64,
    #[serde(default)]
    trim: u64,
    #[serde(default)]
    at: u64,
    #[serde(default)]
    closed: bool,
}

fn encode(notice: TailNotice) -> Bytes {
    let line = match notice.visible {
        Some(visible) => Line {
            id: notice.id,
            deleted: false,
            tail: visible.tail.seq_num,
            timestamp: visible.tail.timestamp,
            trim: visible.trim_point,
            at: visible.last_write_at,
            closed: visible.closed,
        },
        None => Line {
            id: notice.id,
            deleted: true,
            ..Line::default()
        },
    };
    let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

fn decode(line: &[u8]) -> Option<TailNotice> {
    let line: Line = serde_json::from_slice(line).ok()?;
    let visible = (!line.deleted).then_some(Visible {
        tail: StreamPosition {
            seq_num: line.tail,
            timestamp: line.timestamp,
        },
        trim_point: line.trim,
        last_write_at: line.at,
        closed: line.closed,
    });
    Some(TailNotice {
        id: line.id,
        visible,
    })
}

/// The owner's feed: `engine`'s notices as lines, ending when a follower
/// falls behind by more than the engine keeps (it then starts again).
pub(super) fn feed(engine: &Arc<Engine>) -> FeedSource {
    let engine = engine.clone();
    Arc::new(move || {
        BroadcastStream::new(engine.tail_notices())
            .take_while(|notice| std::future::ready(notice.is_ok()))
            .filter_map(|notice| std::future::ready(notice.ok().map(encode)))
            .boxed()
    })
}

/// A follower's replica: `engine` opened with [`Engine::open_replica`].
pub(super) struct EngineReplica {
    pub engine: Arc<Engine>,
    pub app: axum::Router,
    pub metrics_only: axum::Router,
}

impl Replica for EngineReplica {
    fn router(&self) -> axum::Router {
        self.app.clone()
    }

    fn metrics_router(&self) -> axum::Router {
        self.metrics_only.clone()
    }

    fn apply(&self, line: &[u8]) {
        match decode(line) {
            Some(notice) => self.engine.apply_tail_notice(notice),
            None => tracing::warn!(
                line = %String::from_utf8_lossy(line),
                "a line of the owner's feed is not understood; ignored"
            ),
        }
    }

    fn begin_stop(&self) {
        self.engine.begin_shutdown();
    }

    fn refresh(&self) -> BoxFuture<'static, ()> {
        let engine = self.engine.clone();
        async move {
            match tokio::task::spawn_blocking(move || engine.refresh_replica()).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::warn!(%err, "reading the followed tails failed"),
                Err(_) => tracing::error!("reading the followed tails panicked"),
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_what_the_notice_said() {
        let visible = Visible {
            tail: StreamPosition {
                seq_num: 12,
                timestamp: 1_700_000_000_000,
            },
            trim_point: 3,
            last_write_at: 1_700_000_000_001,
            closed: true,
        };
        for notice in [
            TailNotice {
                id: 7,
                visible: Some(visible),
            },
            TailNotice {
                id: 8,
                visible: None,
            },
        ] {
            let line = encode(notice);
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(decode(&line[..line.len() - 1]), Some(notice));
        }
        assert_eq!(decode(b"not json"), None);
    }
}
