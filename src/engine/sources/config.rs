//! A source's configuration: one key naming the kind, its settings as
//! value (`{"http": {…}}` or `{"postgres": {…}}`). The
//! JSON shapes are the API's; the same JSON, secrets included, is kept in
//! the source's metadata (the API never answers the secrets back).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::postgres::PostgresSource;
use crate::engine::error::{EngineError, EngineResult};

pub use crate::engine::settings::{DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS};
pub const DEFAULT_LIMIT: u32 = 500;
/// As many records as one collection write takes, so that a page lands whole.
pub const MAX_LIMIT: u32 = crate::engine::collections::MAX_WRITE_OPS as u32;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    Http(Box<HttpSource>),
    Postgres(PostgresSource),
}

/// Polls an API that pages its changes by a cursor (as this server's own
/// `/v1/collections/{c}/updated` does) and keeps a collection equal to it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSource {
    /// `http://` or `https://`; the cursor and limit are added to its query,
    /// or put where its placeholders say ([`PLACEHOLDERS`]).
    pub url: String,
    /// The collection (in the source's basin) kept equal to the upstream.
    pub collection: String,
    /// Sent with every request (write-only: an API key is a secret).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub cursor: CursorStyle,
    /// Where things are in a response, as JSON pointers (RFC 6901): the
    /// records' array, and in each record its id, data, whether it is
    /// deleted and when it was updated.
    #[serde(default)]
    pub pointers: Pointers,
    /// The query parameter that asks for at most `limit` records a page.
    #[serde(default = "default_limit_param")]
    pub limit_param: String,
    #[serde(default = "default_limit")]
    pub limit: u32,
    /// How long to wait before asking again once a page was not full.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Failed requests are tried again after a backoff doubling from
    /// `poll_interval_ms` up to this.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// At most this many requests a second.
    #[serde(default = "default_max_requests_per_second")]
    pub max_requests_per_second: u32,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// How the upstream pages its changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CursorStyle {
    /// An opaque token: sent as `param`, the next one read at the pointer
    /// `next` of each response.
    Token { param: String, next: String },
    /// The last record's `updated_at` and id, sent as two parameters.
    UpdatedAfter {
        updated_after_param: String,
        after_id_param: String,
    },
}

impl Default for CursorStyle {
    fn default() -> Self {
        CursorStyle::Token {
            param: "cursor".into(),
            next: "/cursor".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pointers {
    pub records: String,
    pub id: String,
    pub data: String,
    /// A record whose value here is `true` is deleted.
    pub deleted: String,
    pub updated_at: String,
}

impl Default for Pointers {
    fn default() -> Self {
        Self {
            records: "/records".into(),
            id: "/id".into(),
            data: "/data".into(),
            deleted: "/deleted".into(),
            updated_at: "/updated_at".into(),
        }
    }
}

fn default_limit_param() -> String {
    "limit".into()
}
fn default_limit() -> u32 {
    DEFAULT_LIMIT
}
fn default_poll_interval_ms() -> u64 {
    1_000
}
fn default_max_backoff_ms() -> u64 {
    30_000
}
fn default_max_requests_per_second() -> u32 {
    20
}
fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

/// Never prints the URL (it may hold a key) or header values.
impl std::fmt::Debug for HttpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSource")
            .field("collection", &self.collection)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("cursor", &self.cursor)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

fn invalid<T>(message: impl Into<String>) -> EngineResult<T> {
    Err(EngineError::Invalid(message.into()))
}

impl SourceConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Http(_) => "http",
            SourceConfig::Postgres(_) => "postgres",
        }
    }

    /// The collections the source writes (an HTTP source one, a Postgres
    /// source one per table).
    pub fn collections(&self) -> Vec<&str> {
        match self {
            SourceConfig::Http(http) => vec![http.collection.as_str()],
            SourceConfig::Postgres(pg) => pg.tables.iter().map(|t| t.collection.as_str()).collect(),
        }
    }

    pub fn validate(&self) -> EngineResult<()> {
        match self {
            SourceConfig::Http(http) => http.validate(),
            SourceConfig::Postgres(pg) => pg.validate_settings(),
        }
    }
}

/// What an HTTP source's URL may hold, each replaced by the request's
/// value (percent-encoded; nothing before there is one), which then is not
/// added to the query: `https://api/changes/{cursor}?n={limit}`.
pub const PLACEHOLDERS: [&str; 4] = ["{cursor}", "{updated_after}", "{after_id}", "{limit}"];

impl HttpSource {
    /// The URL with its placeholders replaced by `values` (by placeholder).
    pub fn url_with(&self, values: &[(&str, &str)]) -> String {
        let mut url = self.url.clone();
        for placeholder in PLACEHOLDERS {
            let value = values
                .iter()
                .find(|(p, _)| *p == placeholder)
                .map_or("", |(_, v)| v);
            url = url.replace(
                placeholder,
                &percent_encoding::utf8_percent_encode(value, ENCODED).to_string(),
            );
        }
        url
    }

    /// Whether the URL holds `placeholder` (and so the query does not).
    pub fn templated(&self, placeholder: &str) -> bool {
        self.url.contains(placeholder)
    }

    fn validate(&self) -> EngineResult<()> {
        self.check_placeholders()?;
        let example = self.url_with(&PLACEHOLDERS.map(|p| (p, "x")));
        let parsed = reqwest::Url::parse(&example);
        crate::engine::settings::check_url("http.url", &example, &["http", "https"])?;
        if self.url.len() > 2048 {
            return invalid("http.url must be at most 2048 bytes");
        }
        crate::engine::collections::CollectionName::parse(self.collection.clone())?;
        crate::engine::settings::check_http_headers(&self.headers)?;
        let params: Vec<&String> = match &self.cursor {
            CursorStyle::Token { param, next } => {
                check_pointer("cursor.token.next", next)?;
                vec![param]
            }
            CursorStyle::UpdatedAfter {
                updated_after_param,
                after_id_param,
            } => vec![updated_after_param, after_id_param],
        };
        let mut all: Vec<&String> = params.iter().copied().chain([&self.limit_param]).collect();
        all.sort();
        all.dedup();
        if all.len() != params.len() + 1 {
            return invalid("http's query parameters (limit, cursor) must differ");
        }
        if let Ok(url) = &parsed {
            if let Some((taken, _)) = url.query_pairs().find(|(k, _)| all.iter().any(|p| *p == k)) {
                return invalid(format!(
                    "http.url's query already has `{taken}`, which the source sets"
                ));
            }
        }
        for param in params.into_iter().chain([&self.limit_param]) {
            let ok = !param.is_empty()
                && param.len() <= 64
                && param
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !ok {
                return invalid(format!(
                    "query parameter `{param}` must be 1 to 64 letters, digits, `-`, `_` or `.`"
                ));
            }
        }
        let p = &self.pointers;
        for (what, pointer) in [
            ("records", &p.records),
            ("id", &p.id),
            ("data", &p.data),
            ("deleted", &p.deleted),
            ("updated_at", &p.updated_at),
        ] {
            check_pointer(&format!("pointers.{what}"), pointer)?;
        }
        if !(1..=MAX_LIMIT).contains(&self.limit) {
            return invalid(format!("http.limit must be 1 to {MAX_LIMIT}"));
        }
        if !(10..=3_600_000).contains(&self.poll_interval_ms) {
            return invalid("http.poll_interval_ms must be 10 to 3600000");
        }
        if self.max_backoff_ms < self.poll_interval_ms || self.max_backoff_ms > 3_600_000 {
            return invalid("http.max_backoff_ms must be poll_interval_ms to 3600000");
        }
        if !(1..=10_000).contains(&self.max_requests_per_second) {
            return invalid("http.max_requests_per_second must be 1 to 10000");
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return invalid(format!("http.timeout_ms must be 1 to {MAX_TIMEOUT_MS}"));
        }
        Ok(())
    }
}

impl HttpSource {
    /// Only known placeholders, and those of the source's cursor style
    /// (both of `updated_after`'s, or neither).
    fn check_placeholders(&self) -> EngineResult<()> {
        let mut rest = self.url.as_str();
        while let Some(open) = rest.find('{') {
            let close = rest[open..].find('}').map(|c| open + c + 1);
            let found = close.map(|close| &rest[open..close]);
            match found {
                Some(found) if PLACEHOLDERS.contains(&found) => {}
                _ => {
                    return invalid(format!(
                        "http.url may hold only the placeholders {}",
                        PLACEHOLDERS.join(", ")
                    ))
                }
            }
            rest = &rest[close.unwrap_or(rest.len())..];
        }
        let token = matches!(self.cursor, CursorStyle::Token { .. });
        let (after, id) = (
            self.templated("{updated_after}"),
            self.templated("{after_id}"),
        );
        if (token && (after || id)) || (!token && self.templated("{cursor}")) || after != id {
            return invalid(
                "http.url's placeholders must be the cursor style's: {cursor} for a token, \
                 {updated_after} and {after_id} together for updated_after",
            );
        }
        Ok(())
    }
}

/// What a placeholder's value keeps unencoded: RFC 3986's unreserved
/// characters (fit for a path segment or a query value).
const ENCODED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A JSON pointer: empty (the whole value) or `/`-led, at most 256 bytes.
fn check_pointer(what: &str, pointer: &str) -> EngineResult<()> {
    if pointer.len() > 256 || !(pointer.is_empty() || pointer.starts_with('/')) {
        return invalid(format!(
            "{what} must be a JSON pointer (empty, or starting with `/`)"
        ));
    }
    Ok(())
}

crate::engine::streams::names::name_type!(
    /// A source name: 1–200 bytes, not `.` or `..`, without `/` or control
    /// characters.
    SourceName,
    validate_source_name
);

fn validate_source_name(name: &str) -> EngineResult<()> {
    crate::engine::settings::check_name("source", name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(url: &str, cursor: serde_json::Value) -> SourceConfig {
        serde_json::from_value(serde_json::json!({ "http": {
            "url": url, "collection": "c", "cursor": cursor } }))
        .unwrap()
    }

    #[test]
    fn url_placeholders_are_known_and_the_cursor_styles() {
        let token = serde_json::json!({ "token": { "param": "cursor", "next": "/cursor" } });
        let updated = serde_json::json!({ "updated_after": {
            "updated_after_param": "after", "after_id_param": "id" } });
        assert!(http("http://up/c/{cursor}?n={limit}", token.clone())
            .validate()
            .is_ok());
        assert!(
            http("http://up/{updated_after}/{after_id}", updated.clone())
                .validate()
                .is_ok()
        );
        assert!(http("http://up/{other}", token.clone()).validate().is_err());
        assert!(http("http://up/{cursor", token.clone()).validate().is_err());
        assert!(http("http://up/{updated_after}", updated.clone())
            .validate()
            .is_err());
        assert!(http("http://up/{cursor}", updated).validate().is_err());
        assert!(http("http://up/{after_id}", token).validate().is_err());
    }
}
