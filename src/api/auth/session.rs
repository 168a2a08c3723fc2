//! Sessions outlive the request that opened them: a read or append
//! session can run for hours. These end it within a second of its token
//! being revoked or expiring, rather than at the next reconnect.

use std::time::{Duration, SystemTime};

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

/// The error a session ends with when its token stops being valid.
pub fn revoked() -> ApiError {
    unauthenticated("the access token was revoked or has expired")
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
