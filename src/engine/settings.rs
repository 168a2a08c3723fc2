//! Checks the settings of sinks and sources share: the names they are
//! known by, and the HTTP headers they send.

use std::collections::BTreeMap;

use super::error::{EngineError, EngineResult};

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
