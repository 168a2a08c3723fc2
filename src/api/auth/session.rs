//! Sessions outlive the request that opened them: a read or append
//! session can run for hours. These end it within a second of its token
//! being revoked or expiring, rather than at the next reconnect.

use std::time::{Duration, SystemTime};

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::principal::{unauthenticated, Principal};
use crate::api::admission::SessionPermit;
use crate::api::error::ApiError;
use crate::engine::streams::{ReadSession, SessionEvent};

/// How often a live session looks at its token.
const RECHECK: Duration = Duration::from_secs(1);

impl Principal {
    /// Resolves once the principal is no longer valid (never for root).
    pub async fn lost(&self) {
        if matches!(self, Principal::Root) {
            return std::future::pending().await;
        }
        while self.is_live() {
            let until_expiry = self
                .expires()
                .and_then(|at| at.duration_since(SystemTime::now()).ok())
                .unwrap_or(RECHECK);
            tokio::time::sleep(until_expiry.min(RECHECK)).await;
        }
    }
}

impl Principal {
    /// `work`, unless the principal stops being valid first: a long poll
    /// ends with `401` when its token is revoked or expires.
    pub async fn unless_lost<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        tokio::select! {
            result = work => result,
            () = self.lost() => Err(revoked()),
        }
    }
}

/// The error a session ends with when its token stops being valid.
pub fn revoked() -> ApiError {
    unauthenticated("the access token was revoked or has expired")
}

/// Runs a session's response stream in a task of its own, handing its
/// items to the response body through a one-item channel. A client that
/// does not take them is cut off after `stall` (an HTTP/2 peer that grants
/// no flow-control window leaves the body unpolled, so nothing else would
/// notice: no write is ever attempted); a revoked or expired token ends it
/// at once, and a client that goes away ends it as soon as that is known.
/// Either way the stream, its session and its place are dropped.
pub fn pumped<S, T>(items: S, principal: Principal, stall: Duration) -> ReceiverStream<T>
where
    S: Stream<Item = T> + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut items = std::pin::pin!(items);
        loop {
            let item = tokio::select! {
                item = items.next() => item,
                () = tx.closed() => return,
            };
            let Some(item) = item else { return };
            // Biased: the item goes out if it can (the error that ends a
            // revoked session is itself such an item).
            tokio::select! {
                biased;
                sent = tokio::time::timeout(stall, tx.send(item)) => {
                    if !matches!(sent, Ok(Ok(()))) {
                        return;
                    }
                }
                () = principal.lost() => return,
            }
        }
    });
    ReceiverStream::new(rx)
}

/// A read session that ends when its principal's token stops being
/// valid, holding its place among the server's sessions while it lasts.
pub struct GuardedSession {
    session: ReadSession,
    principal: Principal,
    _permit: SessionPermit,
}

impl GuardedSession {
    pub fn new(session: ReadSession, principal: Principal, permit: SessionPermit) -> Self {
        Self {
            session,
            principal,
            _permit: permit,
        }
    }

    /// Who opened it.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The next event, or the error the session ends with.
    pub async fn next(&mut self) -> Option<Result<SessionEvent, ApiError>> {
        tokio::select! {
            event = self.session.next() => {
                if !self.principal.is_live() {
                    return Some(Err(revoked()));
                }
                event.map(|e| e.map_err(ApiError::from))
            }
            () = self.principal.lost() => Some(Err(revoked())),
        }
    }
}
