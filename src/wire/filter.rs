//! Filters given as query parameters on reads: the same filter consumers
//! take (see `engine/collections/filter.rs`), either whole as JSON
//! (`filter={"where": [...]}`) or in parameters that read naturally:
//! `id_prefix=cus_`, `event=created,deleted`, `data.plan=pro` (equality on
//! a field, nested by dots), and `where=seats>=10` (the text form of any
//! condition; repeat it for more).

use crate::engine::collections::filter::{literal, parse_condition, Condition, Op};
use crate::engine::collections::Filter;
use crate::engine::error::{EngineError, EngineResult};

use super::collections::parse_event_kinds;

/// The filter the query's parameters describe, if any. Parameters that
/// are not filters are left for the read itself.
pub fn filter_from_query(pairs: &[(String, String)]) -> EngineResult<Option<Filter>> {
    let mut filter = Filter::default();
    let mut whole: Option<Filter> = None;
    let mut parts = false;
    for (key, value) in pairs {
        match key.as_str() {
            "filter" => {
                let given = serde_json::from_str(value).map_err(|e| {
                    EngineError::Invalid(format!("`filter` is not a filter object: {e}"))
                })?;
                whole = Some(given);
                continue;
            }
            "id_prefix" => filter.id_prefix = Some(value.clone()),
            "event" => filter.events = Some(parse_event_kinds(value)?),
            "where" => filter.conditions.push(parse_condition(value)?),
            _ => match key.strip_prefix("data.") {
                Some(field) => filter.conditions.push(Condition {
                    field: field.to_string(),
                    op: Op::Eq,
                    value: Some(literal(value)),
                }),
                None => continue,
            },
        }
        parts = true;
    }
    match (whole, parts) {
        (Some(_), true) => Err(EngineError::Invalid(
            "give a filter either as `filter` JSON or as parameters (id_prefix, event, \
             data.FIELD, where), not both"
                .into(),
        )),
        (Some(whole), false) => Ok(Some(whole)),
        (None, true) => Ok(Some(filter)),
        (None, false) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parameters_and_json_give_the_same_filter() {
        let from_params = filter_from_query(&pairs(&[
            ("limit", "10"),
            ("id_prefix", "cus_"),
            ("data.plan", "pro"),
            ("where", "seats>=10"),
            ("event", "created,deleted"),
        ]))
        .unwrap()
        .unwrap();
        let from_json = filter_from_query(&pairs(&[(
            "filter",
            &json!({"id_prefix": "cus_", "events": ["created", "deleted"], "where": [
                {"field": "plan", "op": "=", "value": "pro"},
                {"field": "seats", "op": ">=", "value": 10}]})
            .to_string(),
        )]))
        .unwrap()
        .unwrap();
        assert_eq!(from_params, from_json);
        assert_eq!(filter_from_query(&pairs(&[("limit", "5")])).unwrap(), None);
        for bad in [
            pairs(&[("filter", "{}"), ("id_prefix", "a")]),
            pairs(&[("filter", "[1]")]),
            pairs(&[("where", "plan")]),
            pairs(&[("event", "made")]),
        ] {
            assert!(filter_from_query(&bad).is_err(), "{bad:?}");
        }
    }
}
