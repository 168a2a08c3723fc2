//! The owner's feed to the followers: where streams' tails are, so that a
//! follower serves long polls and read sessions itself (`term.rs`'s
//! [`Replica`]) instead of forwarding them.
//!
//! A follower opens `GET /_rill/cluster/tails` on the owner (HTTP/1.1, the
//! connection the forwarder uses) and reads lines: one per change the
//! owner's engine makes visible, and an empty one every second (a
//! heartbeat). What a line says is the server's business (`server/replica.rs`);
//! the node only carries them. A follower that hears nothing for a few
//! seconds, or whose feed breaks, or that has no owner to ask, reads the
//! tails it follows from the database instead, every
//! [`POLL_WITHOUT_FEED`]: the bound on how stale a follower can be is
//! that, plus a lease while no node owns the database. A new feed starts
//! with such a read too, since notices sent before it are lost to it; an
//! owner whose follower falls too far behind ends the feed, which starts
//! it again the same way.
//!
//! The feed is open to the nodes alone: they prove it with the secret
//! stored in the database (`rill_cluster`), which every node reads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, Request, Response, StatusCode};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::BodyExt;

use super::forward::{error, unavailable, Forwarder};
use super::term::{FeedSource, Replica};

pub const FEED_PATH: &str = "/_rill/cluster/tails";
/// The header a node proves itself with.
pub const SECRET: HeaderName = HeaderName::from_static("rill-cluster-secret");
/// An owner with nothing to say says so this often.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A feed silent this long is taken for dead.
const SILENCE: Duration = Duration::from_secs(3);
/// Without a feed, how often a follower reads its tails from the database.
pub const POLL_WITHOUT_FEED: Duration = Duration::from_millis(100);
/// With one, how often it does anyway (and reloads the access tokens,
/// which the feed does not carry).
const REFRESH_WITH_FEED: Duration = Duration::from_secs(1);

/// Answers a follower's `GET` of the feed, if `request` proves it is one.
/// The answer ends when `ends` does: when the node stops (it drains its
/// connections, the feeds' too) or its term as owner ends.
pub(super) fn serve(
    request: &Request<Body>,
    secret: &str,
    source: Option<&FeedSource>,
    ends: impl std::future::Future<Output = ()> + Send + 'static,
) -> Response<Body> {
    let proven = request
        .headers()
        .get(&SECRET)
        .is_some_and(|given| constant_time_eq(given.as_bytes(), secret.as_bytes()));
    if !proven {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only a node of this cluster may read its feed",
        );
    }
    let Some(source) = source else {
        return unavailable(
            "not_owner",
            "this node does not own the database (or its lease is not confirmed)",
        );
    };
    let lines = source();
    let heartbeats = futures::stream::unfold(
        tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT),
        |mut ticker| async move {
            ticker.tick().await;
            Some((Bytes::from_static(b"\n"), ticker))
        },
    );
    // Ends when the lines do: a follower that fell behind starts again.
    let body = futures::stream::select(
        lines.map(Some).chain(futures::stream::once(async { None })),
        heartbeats.map(Some),
    )
    .take_while(|line| std::future::ready(line.is_some()))
    .filter_map(|line| std::future::ready(line.map(Ok::<_, std::convert::Infallible>)));
    let body = body.take_until(ends);
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from_stream(body))
        .unwrap_or_default()
}

/// Keeps `replica` told of the owner's tails until the task is aborted:
/// over the owner's feed while there is one, from the database otherwise.
pub(super) async fn follow(
    forwarder: Forwarder,
    secret: String,
    owner: impl Fn() -> Option<String>,
    replica: Arc<dyn Replica>,
) {
    // Database reads on a task of their own, so that the feed is read
    // on while they run.
    let fed = Arc::new(AtomicBool::new(false));
    let _refresher = AbortOnDrop(tokio::spawn(refresh(replica.clone(), fed.clone())));
    loop {
        // No other node owns the database (none does, or this one):
        // the refresher reads every `POLL_WITHOUT_FEED` (sessions the
        // replica opened before this node took the lease go on at that
        // pace).
        let Some(upstream) = owner() else {
            tokio::time::sleep(POLL_WITHOUT_FEED).await;
            continue;
        };
        let still = || owner().as_deref() == Some(upstream.as_str());
        let ended = read_feed(&forwarder, &secret, &upstream, &*replica, &fed, still).await;
        fed.store(false, Ordering::Release);
        if let Err(why) = ended {
            tracing::debug!(owner = upstream, why, "the owner's feed ended");
        }
        tokio::time::sleep(POLL_WITHOUT_FEED).await;
    }
}

/// Reads the followed tails from the database: every
/// [`REFRESH_WITH_FEED`] while `fed`, every [`POLL_WITHOUT_FEED`] else.
async fn refresh(replica: Arc<dyn Replica>, fed: Arc<AtomicBool>) {
    let mut last = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(POLL_WITHOUT_FEED).await;
        if fed.load(Ordering::Acquire) && last.elapsed() < REFRESH_WITH_FEED {
            continue;
        }
        replica.refresh().await;
        last = tokio::time::Instant::now();
    }
}

/// Aborts the task when dropped (with the future that holds it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads the feed of the owner at `owner` into `replica` until it ends,
/// goes silent, or `current` says the owner changed; `fed` is set while
/// it runs.
async fn read_feed(
    forwarder: &Forwarder,
    secret: &str,
    owner: &str,
    replica: &dyn Replica,
    fed: &AtomicBool,
    current: impl Fn() -> bool,
) -> Result<(), String> {
    let request = Request::get(format!("http://{owner}{FEED_PATH}"))
        .header(
            &SECRET,
            HeaderValue::from_str(secret).map_err(|e| e.to_string())?,
        )
        .body(Body::empty())
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(SILENCE, forwarder.send(request))
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("answered {}", response.status()));
    }
    // Subscribed: what changed before is read from the database.
    replica.refresh().await;
    fed.store(true, Ordering::Release);
    let mut body = response.into_body();
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let frame = tokio::time::timeout(SILENCE, body.frame())
            .await
            .map_err(|_| "silent".to_string())?;
        let Some(frame) = frame else {
            return Ok(());
        };
        let frame = frame.map_err(|e| e.to_string())?;
        if let Some(data) = frame.data_ref() {
            pending.extend_from_slice(data);
            let complete = pending
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i + 1);
            for line in pending[..complete].split(|b| *b == b'\n') {
                if !line.is_empty() {
                    replica.apply(line);
                }
            }
            pending.drain(..complete);
        }
        if !current() {
            return Ok(());
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
