//! `rill basins|streams|collections|consumers|sinks|sources list|get|create|reconfigure|delete`.

use std::io::Write;

use clap::Subcommand;
use rill_client::{Client, Kind};
use serde_json::Value;

use super::output::{fail, key_values, line, table, Failure};

/// What to do with basins, streams, collections or consumers.
#[derive(Subcommand, Debug)]
pub enum Admin {
    /// List them (in the basin, but for basins): a table, or one JSON
    /// object per line with --json.
    List,
    /// Show one: its config, and for consumers their state.
    Get { name: String },
    /// Create it, or check that it exists.
    Create {
        name: String,
        /// The JSON body of its `PUT` (required for consumers, e.g.
        /// '{"source": {"stream": "orders"}}').
        #[arg(long)]
        config: Option<String>,
    },
    /// Change its config: only the fields given in --config change.
    Reconfigure {
        name: String,
        /// The JSON body of its `PATCH`, e.g. '{"retention_policy": {"age": 3600}}'.
        #[arg(long)]
        config: String,
    },
    /// Delete it.
    Delete { name: String },
}

pub async fn run(
    client: &Client,
    kind: Kind,
    admin: Admin,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let described = match admin {
        Admin::List => {
            let items = client.list_details(kind).await.map_err(fail)?;
            if json_out {
                for item in &items {
                    line(out, item)?;
                }
            } else {
                list_table(out, kind, &items)?;
            }
            return Ok(());
        }
        Admin::Get { name } => client.describe(kind, &name).await.map_err(fail)?,
        Admin::Create { name, config } => {
            let needed = match kind {
                Kind::Consumer => Some(
                    "a consumer needs --config with its source, e.g. --config \
                     '{\"source\": {\"stream\": \"orders\"}}'",
                ),
                Kind::Sink => Some(
                    "a sink needs --config with its source and destination, e.g. --config \
                     '{\"source\": {\"stream\": \"orders\"}, \"destination\": \
                     {\"webhook\": {\"url\": \"https://example.com/hook\"}}}'",
                ),
                Kind::Source => Some(
                    "a source needs --config with its kind and settings, e.g. --config \
                     '{\"http\": {\"url\": \"http://other:8080/v1/collections/users/updated\", \
                     \"collection\": \"users\", \"headers\": {\"s2-basin\": \"their-basin\"}}}'",
                ),
                _ => None,
            };
            if let (Some(message), None) = (needed, &config) {
                return Err(Failure {
                    message: message.into(),
                    exit_code: super::output::exit::USAGE,
                });
            }
            let config = config.map(|c| parse_config(&c)).transpose()?;
            client
                .create(kind, &name, config.as_ref())
                .await
                .map_err(fail)?
        }
        Admin::Reconfigure { .. } if kind == Kind::Source => {
            return Err(Failure {
                message: "a source cannot change: delete it and create it again (it starts \
                          from the beginning)"
                    .into(),
                exit_code: super::output::exit::USAGE,
            })
        }
        Admin::Reconfigure { name, config } => client
            .reconfigure(kind, &name, &parse_config(&config)?)
            .await
            .map_err(fail)?,
        Admin::Delete { name } => {
            client.delete_resource(kind, &name).await.map_err(fail)?;
            return if json_out {
                line(out, serde_json::json!({ "deleted": name }))
            } else {
                line(out, format!("deleted {name}"))
            };
        }
    };
    if json_out {
        line(out, described)
    } else {
        key_values(out, &described)
    }
}

/// A consumer's or a sink's source, as a list shows it.
fn source_text(source: &Value) -> String {
    match (source["stream"].as_str(), source["collection"].as_str()) {
        (Some(stream), _) => format!("stream {stream}"),
        (None, Some(collection)) => {
            let feed = source["feed"].as_str().unwrap_or("events");
            format!("collection {collection} ({feed})")
        }
        _ => source.to_string(),
    }
}

/// The columns people want in a list, per kind (`get` shows the rest).
fn list_table(out: &mut impl Write, kind: Kind, items: &[Value]) -> Result<(), Failure> {
    let text = |value: &Value| match value {
        Value::Null => "-".to_string(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let (headers, rows): (&[&str], Vec<Vec<String>>) = match kind {
        Kind::Basin => (
            &["NAME", "STATE", "CREATED"],
            items
                .iter()
                .map(|i| vec![text(&i["name"]), text(&i["state"]), text(&i["created_at"])])
                .collect(),
        ),
        Kind::Stream => (
            &["NAME", "CREATED"],
            items
                .iter()
                .map(|i| vec![text(&i["name"]), text(&i["created_at"])])
                .collect(),
        ),
        Kind::Collection => (
            &["NAME", "CREATED", "EVENTS STREAM"],
            items
                .iter()
                .map(|i| {
                    vec![
                        text(&i["name"]),
                        text(&i["created_at"]),
                        text(&i["events_stream"]),
                    ]
                })
                .collect(),
        ),
        Kind::Consumer => (
            &["NAME", "SOURCE", "ACK POLICY", "CREATED"],
            items
                .iter()
                .map(|i| {
                    vec![
                        text(&i["name"]),
                        source_text(&i["config"]["source"]),
                        text(&i["config"]["ack_policy"]),
                        text(&i["created_at"]),
                    ]
                })
                .collect(),
        ),
        Kind::Sink => (
            &["NAME", "SOURCE", "DESTINATION", "PAUSED", "CREATED"],
            items
                .iter()
                .map(|i| {
                    let config = &i["config"];
                    let destination = match config["destination"].as_object() {
                        Some(kinds) => kinds.keys().cloned().collect::<Vec<_>>().join(","),
                        None => "-".into(),
                    };
                    vec![
                        text(&i["name"]),
                        source_text(&config["source"]),
                        destination,
                        text(&config["paused"]),
                        text(&i["created_at"]),
                    ]
                })
                .collect(),
        ),
        Kind::Source => (
            &["NAME", "KIND", "COLLECTION", "CREATED"],
            items
                .iter()
                .map(|i| {
                    let (kind, settings) = match i["config"].as_object() {
                        Some(kinds) => match kinds.iter().next() {
                            Some((kind, settings)) => (kind.clone(), settings.clone()),
                            None => ("-".into(), Value::Null),
                        },
                        None => ("-".into(), Value::Null),
                    };
                    // A Postgres source writes one collection per table.
                    let collections = match settings["tables"].as_array() {
                        Some(tables) => tables
                            .iter()
                            .map(|t| text(&t["collection"]))
                            .collect::<Vec<_>>()
                            .join(","),
                        None => text(&settings["collection"]),
                    };
                    vec![text(&i["name"]), kind, collections, text(&i["created_at"])]
                })
                .collect(),
        ),
    };
    let headers: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    table(out, &headers, &rows)
}

fn parse_config(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("--config is not JSON: {e}"))
}
