//! Collections: keyed JSON records, and the `/updated` cursor.

use std::collections::VecDeque;

use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

use crate::client::{segment, Retry};
use crate::{Client, Error};

/// A collection record: its latest version.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Record {
    #[serde(default)]
    pub collection: String,
    pub id: String,
    pub data: Value,
    pub version: u64,
    pub created_at: u64,
    pub updated_at: u64,
    pub deleted: bool,
}

impl Client {
    /// Creates the collection if it does not exist.
    pub async fn ensure_collection(&self, collection: &str) -> Result<(), Error> {
        let path = format!("/v1/collections/{}", segment(collection));
        self.call::<Value>(Method::PUT, &path, None, Retry::Safe)
            .await
            .map(drop)
    }

    /// Upserts a record; `data` must be a JSON object.
    pub async fn put(&self, collection: &str, id: &str, data: &Value) -> Result<Record, Error> {
        let path = record_path(collection, id);
        // An upsert of the same data twice leaves the same data, but
        // bumps the version: not retried.
        self.call(Method::PUT, &path, Some(data), Retry::Never)
            .await
    }

    /// The record's latest version (deleted ones included, as tombstones),
    /// or `None` if there is no such record.
    pub async fn get(&self, collection: &str, id: &str) -> Result<Option<Record>, Error> {
        match self
            .call(Method::GET, &record_path(collection, id), None, Retry::Safe)
            .await
        {
            Ok(record) => Ok(Some(record)),
            Err(Error::Api {
                status: 404, code, ..
            }) if code == "record_not_found" => Ok(None),
            Err(err) => Err(err),
        }
    }

    pub async fn delete(&self, collection: &str, id: &str) -> Result<Record, Error> {
        self.call(
            Method::DELETE,
            &record_path(collection, id),
            None,
            Retry::Never,
        )
        .await
    }

    /// Pages through the records changed after `cursor` (from the very
    /// beginning if `None`), oldest change first. See [`Updates`].
    pub fn updates(&self, collection: &str, cursor: Option<String>) -> Updates {
        Updates {
            client: self.clone(),
            collection: collection.to_string(),
            cursor,
            buffer: VecDeque::new(),
            wait_secs: 0,
        }
    }
}

fn record_path(collection: &str, id: &str) -> String {
    format!(
        "/v1/collections/{}/records/{}",
        segment(collection),
        segment(id)
    )
}

/// The `/updated` cursor as an async iterator: [`Updates::next`] yields
/// every record whose latest change is after the starting cursor, fetching
/// pages as needed, never skipping or repeating one.
///
/// ```no_run
/// # async fn demo(client: rill_client::Client) -> Result<(), rill_client::Error> {
/// let mut updates = client.updates("users", None);
/// while let Some(record) = updates.next().await? {
///     println!("{} is at version {}", record.id, record.version);
/// }
/// // Caught up: keep this to resume from later.
/// let resume_from = updates.cursor().map(str::to_owned);
/// # Ok(()) }
/// ```
pub struct Updates {
    client: Client,
    collection: String,
    cursor: Option<String>,
    buffer: VecDeque<Record>,
    wait_secs: u32,
}

impl Updates {
    /// When caught up, wait up to `secs` (at most 60) for changes before
    /// [`Self::next`] returns `None`.
    pub fn wait(mut self, secs: u32) -> Self {
        self.wait_secs = secs.min(60);
        self
    }

    /// The next changed record, or `None` when caught up.
    pub async fn next(&mut self) -> Result<Option<Record>, Error> {
        if self.buffer.is_empty() {
            self.fetch().await?;
        }
        Ok(self.buffer.pop_front())
    }

    /// The cursor to resume from after every record returned so far; `None`
    /// while records of the current page are still to be returned (or
    /// before the first page when starting from the beginning).
    pub fn cursor(&self) -> Option<&str> {
        if self.buffer.is_empty() {
            self.cursor.as_deref()
        } else {
            None
        }
    }

    async fn fetch(&mut self) -> Result<(), Error> {
        #[derive(Deserialize)]
        struct Page {
            records: Vec<Record>,
            cursor: String,
        }
        let mut query = format!("limit=1000&wait={}", self.wait_secs);
        if let Some(cursor) = &self.cursor {
            query.push_str(&format!("&cursor={cursor}"));
        }
        let path = format!(
            "/v1/collections/{}/updated?{query}",
            segment(&self.collection)
        );
        let page: Page = self
            .client
            .call(Method::GET, &path, None, Retry::Safe)
            .await?;
        self.cursor = Some(page.cursor);
        self.buffer.extend(page.records);
        Ok(())
    }
}
