//! `docs/openapi.json`, served at `/openapi.json`, describes exactly the
//! routes Rill adds to S2: every such route of the router is in it and
//! everything in it is a route; every operation is named and answers
//! something; every `$ref` resolves.

mod common;

use std::collections::BTreeSet;

use common::*;
use reqwest::StatusCode;
use serde_json::Value;

/// Routes S2's own OpenAPI document describes.
const S2_PREFIXES: [&str; 4] = [
    "/v1/basins",
    "/v1/streams",
    "/v1/access-tokens",
    "/v1/metrics",
];

fn document() -> Value {
    serde_json::from_str(rill::api::OPENAPI).expect("docs/openapi.json is JSON")
}

/// (METHOD, path) of every operation in the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            if ["get", "put", "post", "patch", "delete", "options"].contains(&method.as_str()) {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

#[test]
fn the_document_and_the_router_agree() {
    let doc = document();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "an OpenAPI 3 document"
    );
    let routed: BTreeSet<(String, String)> = rill::api::routes()
        .into_iter()
        .filter(|(_, path)| !S2_PREFIXES.iter().any(|p| path.starts_with(p)))
        // A catch-all segment (`{*path}`) is a plain path parameter there.
        .map(|(method, path)| (method.to_string(), path.replace("{*", "{")))
        .collect();
    let documented = documented(&doc);
    let missing: Vec<_> = routed.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routed).collect();
    assert!(
        missing.is_empty(),
        "routes missing from docs/openapi.json: {missing:#?}"
    );
    assert!(extra.is_empty(), "documented but not routed: {extra:#?}");
}

#[test]
fn every_operation_is_named_and_every_reference_resolves() {
    let doc = document();
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !["get", "put", "post", "patch", "delete", "options"].contains(&method.as_str()) {
                continue;
            }
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path}: no operationId"));
            assert!(ids.insert(id.to_string()), "operationId {id} twice");
            assert!(op["summary"].is_string(), "{method} {path}: no summary");
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path}: no responses"
            );
        }
    }
    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    out.push(target.clone());
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut targets = Vec::new();
    refs(&doc, &mut targets);
    assert!(!targets.is_empty());
    for target in targets {
        let pointer = target
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("external $ref {target}"));
        assert!(
            doc.pointer(pointer).is_some(),
            "$ref {target} resolves to nothing"
        );
    }
}

#[tokio::test]
async fn the_server_serves_it() {
    let server = TestServer::start().await;
    let resp = server
        .bare(reqwest::Method::GET, "/openapi.json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let served: Value = resp.json().await.unwrap();
    assert_eq!(served, document());
}
