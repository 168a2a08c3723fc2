//! Column values, as Postgres writes them in text, to JSON. The backfill
//! and the replication stream both read text (the backfill through the
//! simple query protocol), in sessions pinned to `DateStyle=ISO` and
//! `TimeZone=UTC`, so one row reads the same either way.
//!
//! | Postgres | JSON |
//! | --- | --- |
//! | `boolean` | `true` / `false` |
//! | `smallint`, `integer`, `bigint`, `oid` | number |
//! | `real`, `double precision` | number (`NaN`, `Infinity` as strings) |
//! | `numeric` | string (every digit kept), or number by choice |
//! | `json`, `jsonb` | the JSON value |
//! | `bytea` | base64 string |
//! | `timestamptz` | RFC 3339 string in UTC (`2024-05-01T12:00:00.5Z`) |
//! | `timestamp` | the same without offset (`2024-05-01T12:00:00.5`) |
//! | arrays of the above, `text[]`, `uuid[]`, `date[]`, … | arrays (nested for more dimensions) |
//! | anything else (`text`, `uuid`, `date`, enums, …) | its text |

use base64::Engine as _;
use serde_json::{Number, Value};

use crate::engine::sources::NumericAs;

/// How a column's text becomes JSON, by its type.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Bool,
    Integer,
    Float,
    Numeric,
    Json,
    Bytea,
    Timestamp,
    TimestampTz,
    Text,
    Array(Box<Kind>),
}

/// The kind of a built-in type, by its OID; any other type is text.
pub fn kind_of(type_oid: u32) -> Kind {
    let array = |element: Kind| Kind::Array(Box::new(element));
    match type_oid {
        16 => Kind::Bool,
        20 | 21 | 23 | 26 => Kind::Integer,
        700 | 701 => Kind::Float,
        1700 => Kind::Numeric,
        114 | 3802 => Kind::Json,
        17 => Kind::Bytea,
        1114 => Kind::Timestamp,
        1184 => Kind::TimestampTz,
        1000 => array(Kind::Bool),
        1005 | 1007 | 1016 | 1028 => array(Kind::Integer),
        1021 | 1022 => array(Kind::Float),
        1231 => array(Kind::Numeric),
        199 | 3807 => array(Kind::Json),
        1001 => array(Kind::Bytea),
        1115 => array(Kind::Timestamp),
        1185 => array(Kind::TimestampTz),
        // text, varchar, char, name, uuid, date, time, inet arrays.
        1009 | 1015 | 1014 | 1003 | 2951 | 1182 | 1183 | 1041 => array(Kind::Text),
        _ => Kind::Text,
    }
}

/// `text` as JSON, as its kind says; text that does not read as its kind
/// stays a string (nothing is lost).
pub fn to_json(kind: &Kind, text: &str, numeric: NumericAs) -> Value {
    let string = || Value::String(text.to_string());
    match kind {
        Kind::Bool => match text {
            "t" => Value::Bool(true),
            "f" => Value::Bool(false),
            _ => string(),
        },
        Kind::Integer => text.parse::<i64>().map_or_else(|_| string(), Value::from),
        Kind::Float => text
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map_or_else(string, Value::Number),
        Kind::Numeric => match numeric {
            NumericAs::String => string(),
            NumericAs::Number => {
                serde_json::from_str::<Number>(text).map_or_else(|_| string(), Value::Number)
            }
        },
        Kind::Json => serde_json::from_str(text).unwrap_or_else(|_| string()),
        Kind::Bytea => match text.strip_prefix("\\x").map(hex) {
            Some(Some(bytes)) => {
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            _ => string(),
        },
        Kind::Timestamp => Value::String(rfc3339(text, false)),
        Kind::TimestampTz => Value::String(rfc3339(text, true)),
        Kind::Text => string(),
        Kind::Array(element) => match parse_array(text) {
            Some(parsed) => array_json(&parsed, element, numeric),
            None => string(),
        },
    }
}

fn hex(digits: &str) -> Option<Vec<u8>> {
    let digits = digits.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

/// `2024-05-01 12:00:00.5+00` → `2024-05-01T12:00:00.5Z`. `infinity`, and
/// years BC, stay as they are.
fn rfc3339(text: &str, zoned: bool) -> String {
    if text.len() < 19 || text.as_bytes()[10] != b' ' || text.ends_with(" BC") {
        return text.to_string();
    }
    let mut out = format!("{}T{}", &text[..10], &text[11..]);
    if zoned {
        // The session's zone is UTC: Postgres writes `+00`.
        if let Some(stripped) = out.strip_suffix("+00") {
            out = format!("{stripped}Z");
        }
    }
    out
}

/// An array's text, read: elements (`None` for NULL) or nested arrays.
#[derive(Debug, PartialEq)]
enum Parsed {
    Element(Option<String>),
    Array(Vec<Parsed>),
}

fn array_json(parsed: &Parsed, element: &Kind, numeric: NumericAs) -> Value {
    match parsed {
        Parsed::Element(None) => Value::Null,
        Parsed::Element(Some(text)) => to_json(element, text, numeric),
        Parsed::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| array_json(item, element, numeric))
                .collect(),
        ),
    }
}

/// Reads `{1,2,NULL,"a \"b\""}`, nested braces for more dimensions, and
/// an optional `[1:2]=` bounds prefix. `None` if it is not one.
fn parse_array(text: &str) -> Option<Parsed> {
    let text = match text.starts_with('[') {
        true => &text[text.find('=')? + 1..],
        false => text,
    };
    let mut chars = text.chars().peekable();
    let parsed = parse_braces(&mut chars)?;
    chars.next().is_none().then_some(parsed)
}

fn parse_braces(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<Parsed> {
    if chars.next()? != '{' {
        return None;
    }
    let mut items = Vec::new();
    if chars.peek() == Some(&'}') {
        chars.next();
        return Some(Parsed::Array(items));
    }
    loop {
        let item = match chars.peek()? {
            '{' => parse_braces(chars)?,
            '"' => {
                chars.next();
                let mut value = String::new();
                loop {
                    match chars.next()? {
                        '\\' => value.push(chars.next()?),
                        '"' => break,
                        c => value.push(c),
                    }
                }
                Parsed::Element(Some(value))
            }
            _ => {
                let mut value = String::new();
                while let Some(&c) = chars.peek() {
                    if c == ',' || c == '}' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
                let value = value.trim();
                match value.eq_ignore_ascii_case("NULL") {
                    true => Parsed::Element(None),
                    false => Parsed::Element(Some(value.to_string())),
                }
            }
        };
        items.push(item);
        match chars.next()? {
            ',' => continue,
            '}' => return Some(Parsed::Array(items)),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(type_oid: u32, text: &str) -> Value {
        to_json(&kind_of(type_oid), text, NumericAs::String)
    }

    #[test]
    fn values_read_as_users_expect() {
        assert_eq!(read(16, "t"), json!(true));
        assert_eq!(read(20, "-9007199254740993"), json!(-9007199254740993i64));
        assert_eq!(read(701, "1.5"), json!(1.5));
        assert_eq!(read(701, "NaN"), json!("NaN"));
        assert_eq!(
            read(1700, "12345678901234567890.123"),
            json!("12345678901234567890.123")
        );
        assert_eq!(
            to_json(&kind_of(1700), "2.5", NumericAs::Number),
            json!(2.5)
        );
        assert_eq!(read(3802, r#"{"a": [1, null]}"#), json!({"a": [1, null]}));
        assert_eq!(read(17, "\\x00ff41"), json!("AP9B"));
        assert_eq!(
            read(1184, "2024-05-01 12:00:00.5+00"),
            json!("2024-05-01T12:00:00.5Z")
        );
        assert_eq!(
            read(1114, "2024-05-01 12:00:00"),
            json!("2024-05-01T12:00:00")
        );
        assert_eq!(read(1184, "infinity"), json!("infinity"));
        assert_eq!(
            read(2950, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            json!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
        );
    }

    #[test]
    fn arrays_read_element_by_element() {
        assert_eq!(read(1007, "{1,2,NULL}"), json!([1, 2, null]));
        assert_eq!(read(1007, "{{1,2},{3,4}}"), json!([[1, 2], [3, 4]]));
        assert_eq!(read(1007, "[0:1]={5,6}"), json!([5, 6]));
        assert_eq!(
            read(
                1009,
                r#"{plain,"with, comma","quote \" and \\",NULL,"NULL"}"#
            ),
            json!(["plain", "with, comma", "quote \" and \\", null, "NULL"])
        );
        assert_eq!(read(1009, "{}"), json!([]));
        // Not an array after all: kept as text.
        assert_eq!(read(1007, "{1,2"), json!("{1,2"));
    }
}
