//! What can go wrong talking to Rill.

/// An error from a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error: its HTTP status, its stable
    /// `code` (e.g. `stream_not_found`, `ack_expired`) and its message.
    #[error("{status} {code}: {message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The stable error code, to match on.
        code: String,
        /// What went wrong, for people.
        message: String,
    },
    /// The request did not get an answer (connection refused, reset, timed
    /// out). A write may or may not have been applied.
    #[error("request failed: {}", with_causes(.0))]
    Transport(#[from] reqwest::Error),
    /// An append session ended before this append was acknowledged (the
    /// connection broke, or an earlier append in it failed): it may or may
    /// not have been applied.
    #[error("session ended: {0}")]
    Closed(String),
    /// The server's answer was not what this client understands.
    #[error("unexpected response: {0}")]
    Decode(String),
    /// The arguments were refused before anything was sent.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Whether trying again later may succeed: no answer came, or the
    /// server (or a proxy in front of it) was unavailable: 502, 503, 504.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport(_) => true,
            Error::Api { status, .. } => matches!(status, 502..=504),
            _ => false,
        }
    }

    /// The server's error code, if the server answered with an error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// An error and what caused it, down to the root ("error sending request:
/// client error (Connect): tcp connect error: Connection refused"): the
/// top level alone rarely says what went wrong.
fn with_causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
