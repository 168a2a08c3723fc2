//! How many sessions may be open at once: read sessions (S2S and SSE),
//! append sessions and long polls, per server and per access token. Each
//! holds a [`SessionPermit`] for as long as it lasts; past a limit, the
//! next one is refused at once (`503` when the server is full, `429` when
//! one token holds its share), with `Retry-After`, instead of the server
//! taking on work without bound.
//!
//! Per-token limits apply to issued tokens. The root, and everyone when
//! auth is off, is bound by the server's limits only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;

use super::auth::principal::Principal;
use super::error::{ApiError, ApiResult};

/// The limits; each a `rill serve` flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    pub read_sessions: usize,
    pub append_sessions: usize,
    pub long_polls: usize,
    /// For one access token, of each kind.
    pub per_token: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            read_sessions: 10_000,
            append_sessions: 10_000,
            long_polls: 10_000,
            per_token: 1_000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionKind {
    Read,
    Append,
    LongPoll,
}

impl SessionKind {
    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        match self {
            SessionKind::Read => "read sessions",
            SessionKind::Append => "append sessions",
            SessionKind::LongPoll => "long polls",
        }
    }
}

/// The counts of open sessions.
#[derive(Debug, Default)]
pub struct Admission {
    limits: SessionLimits,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: [usize; 3],
    by_token: HashMap<(String, SessionKind), usize>,
}

impl Admission {
    pub fn new(limits: SessionLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            counts: Mutex::default(),
        })
    }

    /// Open read sessions, append sessions and long polls.
    pub fn open(&self) -> [usize; 3] {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).total
    }

    /// A permit for one more session of `kind`, or the refusal.
    pub fn admit(
        self: &Arc<Self>,
        kind: SessionKind,
        principal: &Principal,
    ) -> ApiResult<SessionPermit> {
        let limit = match kind {
            SessionKind::Read => self.limits.read_sessions,
            SessionKind::Append => self.limits.append_sessions,
            SessionKind::LongPoll => self.limits.long_polls,
        };
        let token = match principal {
            Principal::Token(token) => Some(token.info.id.clone()),
            Principal::Root => None,
        };
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.total[kind.index()] >= limit {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_sessions",
                format!(
                    "the server holds as many {} as it may ({limit}); try again shortly",
                    kind.name()
                ),
            ));
        }
        if let Some(id) = &token {
            let held = counts.by_token.entry((id.clone(), kind)).or_default();
            if *held >= self.limits.per_token {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_sessions",
                    format!(
                        "this access token holds as many {} as one token may ({})",
                        kind.name(),
                        self.limits.per_token
                    ),
                ));
            }
            *held += 1;
        }
        counts.total[kind.index()] += 1;
        Ok(SessionPermit {
            admission: self.clone(),
            kind,
            token,
        })
    }
}

/// Held while a session lasts; gives its place back when dropped.
#[derive(Debug)]
pub struct SessionPermit {
    admission: Arc<Admission>,
    kind: SessionKind,
    token: Option<String>,
}

impl Drop for SessionPermit {
    fn drop(&mut self) {
        let mut counts = self
            .admission
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        counts.total[self.kind.index()] -= 1;
        if let Some(id) = self.token.take() {
            let key = (id, self.kind);
            if let Some(held) = counts.by_token.get_mut(&key) {
                *held -= 1;
                if *held == 0 {
                    counts.by_token.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_counted_and_given_back() {
        let admission = Admission::new(SessionLimits {
            read_sessions: 2,
            ..Default::default()
        });
        let a = admission
            .admit(SessionKind::Read, &Principal::Root)
            .unwrap();
        let _b = admission
            .admit(SessionKind::Read, &Principal::Root)
            .unwrap();
        let refused = admission
            .admit(SessionKind::Read, &Principal::Root)
            .unwrap_err();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        // Other kinds have their own counts.
        let _poll = admission
            .admit(SessionKind::LongPoll, &Principal::Root)
            .unwrap();
        drop(a);
        admission
            .admit(SessionKind::Read, &Principal::Root)
            .unwrap();
    }
}
