//! Filters over a collection's records and change events: one definition
//! for consumers (their `filter` config) and for reads.
//!
//! A filter is a conjunction: event types, an id prefix, top-level
//! equality on `data` (the first form consumers had), and `where`
//! conditions on any field, nested ones by a dotted path:
//!
//! ```json
//! {"events": ["created", "updated"], "id_prefix": "cus_",
//!  "where": [{"field": "plan", "op": "in", "value": ["pro", "team"]},
//!            {"field": "seats", "op": ">=", "value": 10},
//!            {"field": "renews_at", "op": "<", "value": "2027-01-01T00:00:00Z"},
//!            {"field": "address.city", "op": "exists"},
//!            {"field": "plan", "op": "changed"}]}
//! ```
//!
//! Semantics, chosen so that a condition never matches by accident:
//! - `=` and `in` compare JSON values, numbers by value (`1` = `1.0`);
//!   `!=` is the negation of `=`, so it matches a missing field.
//! - `<`, `<=`, `>`, `>=` compare two numbers, or two strings: as instants
//!   when both are RFC 3339 times (any offset), byte by byte otherwise.
//!   A missing field, or values of other kinds, never match.
//! - `exists`: the field is there and not `null`; `missing`: the opposite.
//! - `changed`: an `updated` event whose `changes` (the previous values of
//!   the top-level fields that changed) covers the field and whose value
//!   differs there; events feed only.
//!
//! The text form (`where=` on reads, `--where` on the command line) is
//! `FIELD OP VALUE` (`plan=pro`, `seats>=10`), `FIELD in V1,V2`, or
//! `exists(FIELD)`, `missing(FIELD)`, `changed(FIELD)`. A value that reads
//! as JSON is JSON (`10`, `true`, `"10"` for the string), any other text is
//! a string.

use std::cmp::Ordering;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::engine::error::{EngineError, EngineResult};

/// Conditions a filter may hold, and how long a field path may be: a
/// filter is evaluated for every record a read or consumer passes over.
pub const MAX_CONDITIONS: usize = 32;
pub const MAX_FIELD_BYTES: usize = 256;

/// Which records or events pass; every part given must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Event types to keep (`created`, `updated`, `deleted`); events only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    /// Keep records whose id starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_prefix: Option<String>,
    /// Keep records whose data has these top-level fields with these values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Map<String, Value>>,
    /// Conditions on fields of the data (see the module).
    #[serde(default, rename = "where", skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One condition on a field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// A dotted path into the data: `plan`, `address.city`.
    pub field: String,
    pub op: Op,
    /// What the field is compared with; none for `exists`, `missing` and
    /// `changed`, an array for `in`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = "=")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "in")]
    In,
    #[serde(rename = "exists")]
    Exists,
    #[serde(rename = "missing")]
    Missing,
    #[serde(rename = "changed")]
    Changed,
}

/// What a filter looks at: a change event, or a record's latest version.
pub struct Candidate<'a> {
    /// The event type, for a change event.
    pub event: Option<&'a str>,
    pub id: &'a str,
    pub data: &'a Map<String, Value>,
    /// For an `updated` event: the previous values of the changed fields.
    pub changes: Option<&'a Map<String, Value>>,
}

impl Filter {
    /// Checks the filter, for a source that is an events feed or not;
    /// the error names the part that is wrong.
    pub fn validate(&self, events_feed: bool) -> EngineResult<()> {
        let invalid = |why: String| Err(EngineError::Invalid(format!("filter: {why}")));
        if let Some(events) = &self.events {
            if !events_feed {
                return invalid("an event-type filter applies only to change events".into());
            }
            if let Some(bad) = events
                .iter()
                .find(|e| !["created", "updated", "deleted"].contains(&e.as_str()))
            {
                return invalid(format!(
                    "unknown event type `{bad}`; expected created, updated or deleted"
                ));
            }
        }
        if self.conditions.len() > MAX_CONDITIONS {
            return invalid(format!("at most {MAX_CONDITIONS} conditions"));
        }
        for (i, c) in self.conditions.iter().enumerate() {
            let at = |why: &str| invalid(format!("condition {} (`{}`): {why}", i + 1, c.field));
            if c.field.is_empty() || c.field.len() > MAX_FIELD_BYTES {
                return at(&format!("a field is 1 to {MAX_FIELD_BYTES} bytes"));
            }
            if c.field.split('.').any(str::is_empty) {
                return at("a field path has no empty parts");
            }
            match (c.op, &c.value) {
                (Op::Exists | Op::Missing | Op::Changed, Some(_)) => {
                    return at("exists, missing and changed take no value")
                }
                (Op::Changed, None) if !events_feed => {
                    return at("changed applies only to change events")
                }
                (Op::Exists | Op::Missing | Op::Changed, None) => {}
                (_, None) => return at("this operator needs a value"),
                (Op::In, Some(Value::Array(values))) if !values.is_empty() => {}
                (Op::In, Some(_)) => return at("in takes a non-empty array"),
                (Op::Lt | Op::Le | Op::Gt | Op::Ge, Some(Value::Number(_) | Value::String(_))) => {}
                (Op::Lt | Op::Le | Op::Gt | Op::Ge, Some(_)) => {
                    return at("<, <=, > and >= compare numbers or strings")
                }
                (Op::Eq | Op::Ne, Some(_)) => {}
            }
        }
        Ok(())
    }

    /// Whether `candidate` passes.
    pub fn matches(&self, candidate: &Candidate<'_>) -> bool {
        if let (Some(events), Some(event)) = (&self.events, candidate.event) {
            if !events.iter().any(|e| e == event) {
                return false;
            }
        }
        if let Some(prefix) = &self.id_prefix {
            if !candidate.id.starts_with(prefix.as_str()) {
                return false;
            }
        }
        if let Some(fields) = &self.data {
            if fields
                .iter()
                .any(|(k, v)| !candidate.data.get(k).is_some_and(|d| same(d, v)))
            {
                return false;
            }
        }
        self.conditions.iter().all(|c| c.holds(candidate))
    }
}

impl Condition {
    fn holds(&self, candidate: &Candidate<'_>) -> bool {
        let found = lookup(candidate.data, &self.field);
        let value = self.value.as_ref();
        match self.op {
            Op::Eq => found.zip(value).is_some_and(|(f, v)| same(f, v)),
            Op::Ne => !found.zip(value).is_some_and(|(f, v)| same(f, v)),
            Op::Lt => order(found, value) == Some(Ordering::Less),
            Op::Le => matches!(order(found, value), Some(Ordering::Less | Ordering::Equal)),
            Op::Gt => order(found, value) == Some(Ordering::Greater),
            Op::Ge => matches!(
                order(found, value),
                Some(Ordering::Greater | Ordering::Equal)
            ),
            Op::In => match (found, value) {
                (Some(f), Some(Value::Array(options))) => options.iter().any(|v| same(f, v)),
                _ => false,
            },
            Op::Exists => found.is_some_and(|f| !f.is_null()),
            Op::Missing => found.is_none_or(Value::is_null),
            Op::Changed => self.changed(candidate),
        }
    }

    /// `changed`: the field's previous value (from `changes`) differs from
    /// its new one.
    fn changed(&self, candidate: &Candidate<'_>) -> bool {
        let (Some("updated"), Some(changes)) = (candidate.event, candidate.changes) else {
            return false;
        };
        let (top, rest) = match self.field.split_once('.') {
            Some((top, rest)) => (top, Some(rest)),
            None => (self.field.as_str(), None),
        };
        let Some(before) = changes.get(top) else {
            return false; // that top-level field did not change
        };
        let after = candidate.data.get(top);
        match rest {
            None => true,
            Some(rest) => {
                let before = before.as_object().and_then(|o| lookup(o, rest));
                let after = after
                    .and_then(Value::as_object)
                    .and_then(|o| lookup(o, rest));
                match (before, after) {
                    (Some(b), Some(a)) => !same(b, a),
                    (None, None) => false,
                    _ => true,
                }
            }
        }
    }
}

/// The value at a dotted `path` in `data`.
fn lookup<'a>(data: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut value = data.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// JSON equality, with numbers compared by value.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y) == Some(Ordering::Equal),
        _ => a == b,
    }
}

fn order(found: Option<&Value>, value: Option<&Value>) -> Option<Ordering> {
    match (found?, value?) {
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y),
        (Value::String(x), Value::String(y)) => match (instant(x), instant(y)) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => Some(x.as_bytes().cmp(y.as_bytes())),
        },
        _ => None,
    }
}

fn compare_numbers(x: &serde_json::Number, y: &serde_json::Number) -> Option<Ordering> {
    match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
        (Some(a), Some(b), _, _) => Some(a.cmp(&b)),
        (_, _, Some(a), Some(b)) => Some(a.cmp(&b)),
        _ => x.as_f64()?.partial_cmp(&y.as_f64()?),
    }
}

/// An RFC 3339 time (`2026-12-02T05:00:00Z`, `…+02:00`) as an instant.
fn instant(text: &str) -> Option<SystemTime> {
    if text.len() < 20 || text.as_bytes().get(10) != Some(&b'T') {
        return None;
    }
    if text.ends_with('Z') {
        return humantime::parse_rfc3339(text).ok();
    }
    // An offset: `±HH:MM` at the end.
    let (time, offset) = text.split_at(text.len().checked_sub(6)?);
    let sign = match offset.as_bytes()[0] {
        b'+' => 1i64,
        b'-' => -1,
        _ => return None,
    };
    let hours: u64 = offset.get(1..3)?.parse().ok()?;
    let minutes: u64 = offset.get(4..6)?.parse().ok()?;
    if offset.as_bytes()[3] != b':' {
        return None;
    }
    let local = humantime::parse_rfc3339(&format!("{time}Z")).ok()?;
    let shift = Duration::from_secs(hours * 3600 + minutes * 60);
    // Local time minus its offset is UTC.
    if sign > 0 {
        local.checked_sub(shift)
    } else {
        local.checked_add(shift)
    }
}

/// Parses the text form of one condition (see the module).
pub fn parse_condition(text: &str) -> EngineResult<Condition> {
    let invalid = |why: &str| EngineError::Invalid(format!("where `{text}`: {why}"));
    let text = text.trim();
    for (name, op) in [
        ("exists", Op::Exists),
        ("missing", Op::Missing),
        ("changed", Op::Changed),
    ] {
        if let Some(inner) = text
            .strip_prefix(name)
            .and_then(|t| t.strip_prefix('('))
            .and_then(|t| t.strip_suffix(')'))
        {
            return Ok(Condition {
                field: inner.trim().to_string(),
                op,
                value: None,
            });
        }
    }
    if let Some((field, values)) = text.split_once(" in ") {
        let values: Vec<Value> = values.split(',').map(|v| literal(v.trim())).collect();
        return Ok(Condition {
            field: field.trim().to_string(),
            op: Op::In,
            value: Some(Value::Array(values)),
        });
    }
    let Some(at) = text.find(['=', '!', '<', '>']) else {
        return Err(invalid("expected FIELD OP VALUE (OP one of = != < <= > >=), FIELD in V1,V2, or exists(FIELD), missing(FIELD), changed(FIELD)"));
    };
    let (field, rest) = text.split_at(at);
    let (op, value) = [
        ("!=", Op::Ne),
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("=", Op::Eq),
        ("<", Op::Lt),
        (">", Op::Gt),
    ]
    .into_iter()
    .find_map(|(symbol, op)| rest.strip_prefix(symbol).map(|value| (op, value)))
    .ok_or_else(|| invalid("`!` must be followed by `=`"))?;
    Ok(Condition {
        field: field.trim().to_string(),
        op,
        value: Some(literal(value.trim())),
    })
}

/// A value in text: JSON if it reads as JSON, else the text as a string.
pub fn literal(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn passes(filter: &Filter, event: Option<&str>, data: Value, changes: Option<Value>) -> bool {
        let (data, changes) = (object(data), changes.map(object));
        filter.matches(&Candidate {
            event,
            id: "cus_1",
            data: &data,
            changes: changes.as_ref(),
        })
    }

    fn filter(text: &[&str]) -> Filter {
        let filter = Filter {
            conditions: text.iter().map(|t| parse_condition(t).unwrap()).collect(),
            ..Filter::default()
        };
        filter.validate(true).unwrap();
        filter
    }

    #[test]
    fn comparisons_on_numbers_strings_and_times() {
        let data = json!({"n": 10, "f": 2.5, "s": "beta", "t": "2026-12-02T10:00:00+02:00",
                          "a": {"b": {"c": 1}}, "z": null});
        let yes = [
            "n=10",
            "n=10.0",
            "n>=10",
            "n>9",
            "n<11",
            "n<=10",
            "n!=11",
            "f>2",
            "f<3",
            "s=beta",
            "s>alpha",
            "s<gamma",
            "s!=\"10\"",
            "a.b.c=1",
            "n in 1,10",
            "s in alpha,beta",
            "t<2026-12-02T08:00:01Z",
            "t>2026-12-02T07:59:59Z",
            "t=2026-12-02T10:00:00+02:00",
            "exists(a.b)",
            "missing(z)",
            "missing(nope)",
            "nope!=1",
        ];
        for text in yes {
            assert!(passes(&filter(&[text]), None, data.clone(), None), "{text}");
        }
        let no = [
            "n=11",
            "n>10",
            "n<10",
            "n=\"10\"",
            "s>gamma",
            "s<5",
            "n<beta",
            "nope=1",
            "nope<1",
            "n in 1,2",
            "a.b.c=2",
            "a.x.c=1",
            "exists(z)",
            "exists(nope)",
            "missing(n)",
            "t>2026-12-02T08:00:00Z",
            "s.x=1",
        ];
        for text in no {
            assert!(
                !passes(&filter(&[text]), None, data.clone(), None),
                "{text}"
            );
        }
        // All conditions must hold.
        assert!(passes(
            &filter(&["n=10", "s=beta"]),
            None,
            data.clone(),
            None
        ));
        assert!(!passes(&filter(&["n=10", "s=gamma"]), None, data, None));
    }

    #[test]
    fn changed_looks_at_the_previous_values() {
        let f = filter(&["changed(plan)"]);
        let after = json!({"plan": "pro", "addr": {"city": "Lyon", "zip": "1"}});
        assert!(passes(
            &f,
            Some("updated"),
            after.clone(),
            Some(json!({"plan": "free"}))
        ));
        assert!(!passes(
            &f,
            Some("updated"),
            after.clone(),
            Some(json!({"seats": 1}))
        ));
        assert!(!passes(&f, Some("created"), after.clone(), None));
        let city = filter(&["changed(addr.city)"]);
        let moved = Some(json!({"addr": {"city": "Paris", "zip": "1"}}));
        assert!(passes(&city, Some("updated"), after.clone(), moved));
        let same_city = Some(json!({"addr": {"city": "Lyon", "zip": "2"}}));
        assert!(!passes(&city, Some("updated"), after, same_city));
    }

    #[test]
    fn the_older_parts_still_work() {
        let f: Filter = serde_json::from_value(json!({
            "events": ["updated"], "id_prefix": "cus_", "data": {"plan": "pro", "n": 1.0},
            "where": [{"field": "seats", "op": ">", "value": 2}]
        }))
        .unwrap();
        f.validate(true).unwrap();
        let data = json!({"plan": "pro", "n": 1, "seats": 3});
        assert!(passes(&f, Some("updated"), data.clone(), Some(json!({}))));
        assert!(!passes(&f, Some("deleted"), data.clone(), None));
        assert!(!passes(
            &f,
            Some("updated"),
            json!({"plan": "pro", "n": 1, "seats": 2}),
            None
        ));
        let other = Filter {
            id_prefix: Some("usr_".into()),
            ..Filter::default()
        };
        assert!(!passes(&other, None, data, None));
    }

    #[test]
    fn bad_filters_say_what_is_wrong() {
        let refused = |value: Value, events_feed: bool| {
            let f: Filter = serde_json::from_value(value).unwrap();
            match f.validate(events_feed) {
                Err(EngineError::Invalid(why)) => why,
                other => panic!("{other:?}"),
            }
        };
        let why = refused(
            json!({"where": [{"field": "a", "op": "<", "value": true}]}),
            true,
        );
        assert!(
            why.contains("condition 1 (`a`)") && why.contains("numbers or strings"),
            "{why}"
        );
        let why = refused(
            json!({"where": [{"field": "a", "op": "in", "value": []}]}),
            true,
        );
        assert!(why.contains("non-empty array"), "{why}");
        let why = refused(json!({"where": [{"field": "a", "op": "="}]}), true);
        assert!(why.contains("needs a value"), "{why}");
        let why = refused(json!({"where": [{"field": "a..b", "op": "exists"}]}), true);
        assert!(why.contains("empty parts"), "{why}");
        let why = refused(json!({"where": [{"field": "a", "op": "changed"}]}), false);
        assert!(why.contains("only to change events"), "{why}");
        let why = refused(json!({"events": ["made"]}), true);
        assert!(why.contains("`made`"), "{why}");
        assert!(
            serde_json::from_value::<Filter>(json!({"where": [{"field": "a", "op": "~"}]}))
                .is_err()
        );
        assert!(serde_json::from_value::<Filter>(json!({"wher": []})).is_err());
        for text in ["plan", "plan ! pro", ""] {
            assert!(parse_condition(text).is_err(), "{text}");
        }
    }
}
