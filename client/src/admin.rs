//! Listing and deleting basins, streams, collections and consumers.

use reqwest::Method;
use serde_json::Value;

use crate::client::{segment, Retry};
use crate::{Client, Error};

/// The kinds of named things a basin holds (and basins themselves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Basin,
    Stream,
    Collection,
    Consumer,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Basin => "/v1/basins",
            Kind::Stream => "/v1/streams",
            Kind::Collection => "/v1/collections",
            Kind::Consumer => "/v1/consumers",
        }
    }

    /// The list field of the list answer.
    fn field(self) -> &'static str {
        match self {
            Kind::Basin => "basins",
            Kind::Stream => "streams",
            Kind::Collection => "collections",
            Kind::Consumer => "consumers",
        }
    }
}

impl Client {
    /// Every name of `kind` (in this client's basin, but for basins),
    /// following `has_more` through the pages.
    pub async fn list(&self, kind: Kind) -> Result<Vec<String>, Error> {
        let mut names: Vec<String> = Vec::new();
        loop {
            let mut path = format!("{}?limit=1000", kind.path());
            if let Some(last) = names.last() {
                path.push_str(&format!("&start_after={}", segment(last)));
            }
            let page: Value = self.call(Method::GET, &path, None, Retry::Safe).await?;
            let items = page[kind.field()]
                .as_array()
                .ok_or_else(|| Error::Decode(format!("list answer without `{}`", kind.field())))?;
            for item in items {
                if let Some(name) = item["name"].as_str() {
                    names.push(name.to_string());
                }
            }
            if page["has_more"] != Value::Bool(true) || items.is_empty() {
                return Ok(names);
            }
        }
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

    pub async fn delete_resource(&self, kind: Kind, name: &str) -> Result<(), Error> {
        let path = format!("{}/{}", kind.path(), segment(name));
        self.call::<Value>(Method::DELETE, &path, None, Retry::Never)
            .await
            .map(drop)
    }
}
