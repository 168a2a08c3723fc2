//! Checks the settings of sinks and sources share: the names they are
//! known by, the URLs they reach, the HTTP headers they send and the
//! Postgres tables they name.

use std::collections::BTreeMap;

use super::error::{EngineError, EngineResult};

/// How long a sink's or source's request to the outside may take, by
/// default and at most.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
pub const MAX_TIMEOUT_MS: u64 = 300_000;

/// A sink's or source's name (`what`): 1–200 bytes, not `.` or `..`,
/// without `/` or control characters (it is a path segment).
pub fn check_name(what: &str, name: &str) -> EngineResult<()> {
    let bad = name.is_empty()
        || name.len() > 200
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.chars().any(char::is_control);
    if bad {
        return Err(EngineError::Invalid(format!(
            "a {what} name must be 1 to 200 bytes, not `.` or `..`, without `/` or control \
             characters"
        )));
    }
    Ok(())
}

/// Headers a sink or source sends: names of letters, digits, `-` and `_`;
/// values of visible ASCII, spaces and tabs.
pub fn check_http_headers(headers: &BTreeMap<String, String>) -> EngineResult<()> {
    for (name, value) in headers {
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
        let value_ok = value
            .bytes()
            .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic());
        if !name_ok || !value_ok {
            return Err(EngineError::Invalid(format!(
                "header `{name}` is not a valid HTTP header"
            )));
        }
    }
    Ok(())
}

/// A URL (`what`, at most 2048 bytes) of one of `schemes`, with a host.
pub fn check_url(what: &str, url: &str, schemes: &[&str]) -> EngineResult<()> {
    let parsed = reqwest::Url::parse(url);
    let ok = parsed
        .as_ref()
        .is_ok_and(|u| schemes.contains(&u.scheme()) && u.host().is_some());
    if !ok || url.len() > 2048 {
        let schemes: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
        return Err(EngineError::Invalid(format!(
            "{what} must be a {} URL with a host",
            schemes.join(" or ")
        )));
    }
    Ok(())
}

/// A Postgres table (`what`): `name` or `schema.name`, each part a plain
/// identifier (a letter or `_`, then letters, digits or `_`, at most 63),
/// so that it is quoted the same way everywhere.
pub fn check_table_name(what: &str, table: &str) -> EngineResult<()> {
    let parts: Vec<&str> = table.split('.').collect();
    if parts.len() > 2 || !parts.iter().all(|part| is_identifier(part)) {
        return Err(EngineError::Invalid(format!(
            "{what} must be `name` or `schema.name`, each a letter or `_` then letters, digits \
             or `_` (at most 63)"
        )));
    }
    Ok(())
}

/// A plain SQL identifier: a letter or `_`, then letters, digits or `_`,
/// at most 63 bytes (Postgres's limit).
pub fn is_identifier(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= 63
        && part
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
