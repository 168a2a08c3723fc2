//! How the command line prints: aligned tables and `key  value` lines for
//! people, one JSON value per line for scripts, record bodies as text or
//! base64, and the one line a failed command prints.

use std::io::Write;

use base64::Engine as _;
use serde_json::Value;

/// How record bodies (and header names and values) are written and read.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BodyFormat {
    /// UTF-8 text (invalid bytes are replaced when printed).
    #[default]
    Text,
    /// Standard base64, for binary data.
    Base64,
}

impl BodyFormat {
    pub fn encode(self, bytes: &[u8]) -> String {
        match self {
            BodyFormat::Text => String::from_utf8_lossy(bytes).into_owned(),
            BodyFormat::Base64 => base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    pub fn decode(self, text: &str) -> Result<Vec<u8>, String> {
        match self {
            BodyFormat::Text => Ok(text.as_bytes().to_vec()),
            BodyFormat::Base64 => base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|e| format!("`{text}` is not base64: {e}")),
        }
    }
}

/// Writes a line, turning an I/O error into the command's error. A reader
/// that went away (`rill tail s -n 1000 | head -1`) ends the command
/// quietly, as it does Unix tools.
pub fn line(out: &mut impl Write, text: impl std::fmt::Display) -> Result<(), Failure> {
    match writeln!(out, "{text}") {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(format!("cannot write output: {e}").into()),
    }
}

/// Writes `bytes` to stdout, ending quietly if the reader went away.
pub fn print_all(bytes: &[u8]) -> Result<(), Failure> {
    match std::io::stdout().lock().write_all(bytes) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(format!("cannot write output: {e}").into()),
    }
}

/// Prints `rows` under `headers`, each column as wide as its widest cell.
pub fn table(
    out: &mut impl Write,
    headers: &[String],
    rows: &[Vec<String>],
) -> Result<(), Failure> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let render = |cells: &[String]| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        text
    };
    line(out, render(headers))?;
    for row in rows {
        line(out, render(row))?;
    }
    Ok(())
}

/// One `key  value` line per leaf of a JSON object.
pub fn key_values(out: &mut impl Write, value: &Value) -> Result<(), Failure> {
    let pairs = flatten(value);
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    for (key, value) in pairs {
        line(out, format!("{key:<width$}  {value}"))?;
    }
    Ok(())
}

/// The leaves of a JSON value as (dotted path, text) pairs; arrays of
/// scalars stay one cell, `null`s are left out.
fn flatten(value: &Value) -> Vec<(String, String)> {
    fn walk(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (key, child) in map {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&path, child, out);
                }
            }
            Value::Null => {}
            Value::String(text) => out.push((prefix.to_string(), text.clone())),
            other => out.push((prefix.to_string(), other.to_string())),
        }
    }
    let mut out = Vec::new();
    walk("", value, &mut out);
    out
}

/// The exit codes of the client commands (`rill --help` lists them).
pub mod exit {
    /// The server refused or failed the request, or the command could not
    /// do what it was asked.
    pub const FAILED: u8 = 1;
    /// A flag or argument is wrong or missing (clap's code for the same).
    pub const USAGE: u8 = 2;
    /// What was named does not exist (basin, stream, collection, record,
    /// consumer), or a read starts past the stream's tail.
    pub const NOT_FOUND: u8 = 3;
    /// No answer from the server (not running, unreachable, timed out).
    pub const UNREACHABLE: u8 = 4;
}

/// Why a command failed: the one line it prints, and its exit code.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub exit_code: u8,
}

impl Failure {
    pub fn not_found(message: String) -> Self {
        Failure {
            message,
            exit_code: exit::NOT_FOUND,
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure {
            message,
            exit_code: exit::FAILED,
        }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

/// A client error as the line the command fails with, and its exit code.
pub fn fail(err: rill_client::Error) -> Failure {
    let exit_code = match &err {
        rill_client::Error::Api { status: 404, .. } => exit::NOT_FOUND,
        rill_client::Error::Transport(_) => exit::UNREACHABLE,
        _ => exit::FAILED,
    };
    Failure {
        message: describe(err),
        exit_code,
    }
}

fn describe(err: rill_client::Error) -> String {
    match &err {
        // The server asks for a header; on the command line it is a flag.
        rill_client::Error::Api { code, message, .. }
            if code == "bad_header" && message.starts_with("no basin given") =>
        {
            "no basin given: pass --basin NAME or set RILL_BASIN".into()
        }
        rill_client::Error::Api { code, .. } if code == "unauthenticated" => {
            format!("{err} (pass --token TOKEN or set RILL_TOKEN)")
        }
        rill_client::Error::Transport(cause) if cause.is_connect() => format!(
            "{err} (is `rill serve` running there? pass --endpoint URL or set RILL_ENDPOINT)"
        ),
        _ => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_and_flatten() {
        let mut out = Vec::new();
        let rows = [
            vec!["a".to_string(), "5".to_string(), "-".to_string()],
            vec!["longer".to_string(), "-".to_string(), "active".to_string()],
        ];
        let headers = ["NAME", "AGE", "STATE"].map(String::from);
        table(&mut out, &headers, &rows).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "NAME    AGE  STATE\n\
             a       5    -\n\
             longer  -    active\n"
        );
        let mut out = Vec::new();
        key_values(
            &mut out,
            &json!({ "x": { "y": [1, 2] }, "zz": null, "w": "t" }),
        )
        .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "w    t\nx.y  [1,2]\n");
    }

    #[test]
    fn bodies_round_trip_in_base64() {
        let bytes = [0u8, 159, 146, 150];
        let text = BodyFormat::Base64.encode(&bytes);
        assert_eq!(BodyFormat::Base64.decode(&text).unwrap(), bytes);
        assert!(BodyFormat::Base64.decode("not base64!").is_err());
        assert_eq!(BodyFormat::Text.decode("hi").unwrap(), b"hi");
    }
}
