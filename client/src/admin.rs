//! Listing and deleting basins, streams, collections, consumers, sinks
//! and sources.

use reqwest::Method;
use serde_json::Value;

use crate::client::{segment, Retry};
use crate::{Client, Error};

/// The kinds of named things a basin holds (and basins themselves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A basin: a namespace of streams, collections and consumers.
    Basin,
    /// A stream of records.
    Stream,
    /// A collection of keyed records.
    Collection,
    /// A consumer the server tracks.
    Consumer,
    /// A consumer whose worker lives in the server, writing to a
    /// destination (a webhook, Postgres, Redis, NATS, Kafka).
    Sink,
    /// A collection the server keeps equal to data elsewhere (an HTTP API
    /// that pages its changes by a cursor).
    Source,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Basin => "/v1/basins",
            Kind::Stream => "/v1/streams",
            Kind::Collection => "/v1/collections",
            Kind::Consumer => "/v1/consumers",
            Kind::Sink => "/v1/sinks",
            Kind::Source => "/v1/sources",
        }
    }

    /// The list field of the list answer.
    fn field(self) -> &'static str {
        match self {
            Kind::Basin => "basins",
            Kind::Stream => "streams",
            Kind::Collection => "collections",
            Kind::Consumer => "consumers",
            Kind::Sink => "sinks",
            Kind::Source => "sources",
        }
    }
}

impl Client {
    /// Every name of `kind` (in this client's basin, but for basins),
    /// following `has_more` through the pages.
    pub async fn list(&self, kind: Kind) -> Result<Vec<String>, Error> {
        let items = self.list_details(kind).await?;
        Ok(items
            .iter()
            .filter_map(|item| item["name"].as_str().map(str::to_owned))
            .collect())
    }

    /// Like [`Self::list`], with each item as the server describes it
    /// (name, state, creation time, config…).
    pub async fn list_details(&self, kind: Kind) -> Result<Vec<Value>, Error> {
        let mut all: Vec<Value> = Vec::new();
        loop {
            let mut path = format!("{}?limit=1000", kind.path());
            if let Some(last) = all.last().and_then(|item| item["name"].as_str()) {
                path.push_str(&format!("&start_after={}", segment(last)));
            }
            let mut page: Value = self.call(Method::GET, &path, None, Retry::Safe).await?;
            let items = match page[kind.field()].take() {
                Value::Array(items) => items,
                _ => {
                    return Err(Error::Decode(format!(
                        "list answer without `{}`",
                        kind.field()
                    )))
                }
            };
            let done = page["has_more"] != Value::Bool(true) || items.is_empty();
            all.extend(items);
            if done {
                return Ok(all);
            }
        }
    }

    /// Changes a resource's config: `patch` is the body of its `PATCH`
    /// (only the fields given change). Answers the new description.
    pub async fn reconfigure(&self, kind: Kind, name: &str, patch: &Value) -> Result<Value, Error> {
        let path = format!("{}/{}", kind.path(), segment(name));
        // Applying the same patch twice leaves the same config.
        self.call(Method::PATCH, &path, Some(patch), Retry::Safe)
            .await
    }

    /// The server's JSON description of one resource: a basin's or a
    /// stream's config, a collection, a consumer with its state.
    pub async fn describe(&self, kind: Kind, name: &str) -> Result<Value, Error> {
        let path = format!("{}/{}", kind.path(), segment(name));
        self.call(Method::GET, &path, None, Retry::Safe).await
    }

    /// Creates (or ensures) a resource; `config` is the body of its `PUT`.
    pub async fn create(
        &self,
        kind: Kind,
        name: &str,
        config: Option<&Value>,
    ) -> Result<Value, Error> {
        let path = format!("{}/{}", kind.path(), segment(name));
        self.call(Method::PUT, &path, config, Retry::Safe).await
    }

    /// Deletes a resource (a basin with everything in it; a collection
    /// with its events stream; a consumer with its state). Not retried.
    pub async fn delete_resource(&self, kind: Kind, name: &str) -> Result<(), Error> {
        let path = format!("{}/{}", kind.path(), segment(name));
        self.call::<Value>(Method::DELETE, &path, None, Retry::Never)
            .await
            .map(drop)
    }
}
