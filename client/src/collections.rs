//! Collections: keyed JSON records, and the `/updated` cursor.

use std::collections::VecDeque;
use std::ops::Deref;

use reqwest::Method;
use rill_protocol::collections;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::client::{segment, Retry};
use crate::{Client, Error};

/// A collection record: its latest version (for a deleted record, its
/// tombstone), with its data as a JSON [`Value`]. The shape is the
/// server's, from `rill-protocol`.
pub type Record = collections::Record<Value>;

/// A change to one record, as stored in a collection's events stream: what
/// an [`Event`] carries. The shape is the server's, from `rill-protocol`.
pub type Change = collections::Event<Value>;

/// A change event from a collection's events stream: the [`Change`] and
/// where it sits in the stream. Its fields read through to the change:
/// `event.id`, `event.data`, `event.event` (an [`EventKind`]).
///
/// [`EventKind`]: crate::EventKind
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Event {
    /// Its seq num in the events stream.
    pub seq_num: u64,
    /// Its timestamp in the events stream (epoch ms).
    pub timestamp: u64,
    /// The change: `created`, `updated` or `deleted`, the record's key,
    /// data, version and `updated_at`, and for updates the changed fields'
    /// previous values.
    #[serde(flatten)]
    pub change: Change,
}

impl Deref for Event {
    type Target = Change;

    fn deref(&self) -> &Change {
        &self.change
    }
}

/// Upserts and deletes applied together by [`Client::write_batch`].
#[derive(Clone, Debug, Default)]
pub struct Batch {
    upserts: Vec<Value>,
    deletes: Vec<Value>,
}

impl Batch {
    /// Creates or replaces the record `id` with `data` (a JSON object).
    pub fn upsert(mut self, id: &str, data: Value) -> Self {
        self.upserts.push(json!({ "id": id, "data": data }));
        self
    }

    /// An upsert that applies only if the record is at `expected_version`
    /// (0: does not exist yet); otherwise the whole batch fails with 412.
    pub fn upsert_if(mut self, id: &str, data: Value, expected_version: u64) -> Self {
        self.upserts
            .push(json!({ "id": id, "data": data, "expected_version": expected_version }));
        self
    }

    /// Deletes the record `id` (the batch fails with 404 if it does not
    /// exist).
    pub fn delete(mut self, id: &str) -> Self {
        self.deletes.push(json!(id));
        self
    }

    /// A delete that applies only if the record is at `expected_version`.
    pub fn delete_if(mut self, id: &str, expected_version: u64) -> Self {
        self.deletes
            .push(json!({ "id": id, "expected_version": expected_version }));
        self
    }

    /// How many operations the batch holds (at most 1000 are accepted).
    pub fn len(&self) -> usize {
        self.upserts.len() + self.deletes.len()
    }

    /// Whether the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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

    /// Deletes a record; answers its tombstone. Not retried.
    pub async fn delete(&self, collection: &str, id: &str) -> Result<Record, Error> {
        self.call(
            Method::DELETE,
            &record_path(collection, id),
            None,
            Retry::Never,
        )
        .await
    }

    /// Applies upserts and deletes atomically (all or none; at most 1000).
    /// Answers the records written, upserts first, in order.
    ///
    /// ```no_run
    /// # async fn demo(client: rill_client::Client) -> Result<(), rill_client::Error> {
    /// use rill_client::Batch;
    /// use serde_json::json;
    /// let batch = Batch::default()
    ///     .upsert("u1", json!({ "name": "Ada" }))
    ///     .upsert_if("u2", json!({ "name": "Grace" }), 3) // only at version 3
    ///     .delete("u3");
    /// let written = client.write_batch("users", &batch).await?;
    /// assert_eq!(written.len(), 3);
    /// # Ok(()) }
    /// ```
    pub async fn write_batch(&self, collection: &str, batch: &Batch) -> Result<Vec<Record>, Error> {
        #[derive(Deserialize)]
        struct Written {
            records: Vec<Record>,
        }
        let path = format!("/v1/collections/{}/records", segment(collection));
        let body = json!({ "upserts": batch.upserts, "deletes": batch.deletes });
        let written: Written = self
            .call(Method::POST, &path, Some(&body), Retry::Never)
            .await?;
        Ok(written.records)
    }

    /// Up to `count` change events (at most 1000) of the collection from
    /// the events stream's `seq_num` on, waiting up to `wait_secs` when
    /// there are none yet. Use [`Event::seq_num`] + 1 to read on.
    pub async fn read_events(
        &self,
        collection: &str,
        seq_num: u64,
        count: u64,
        wait_secs: u32,
    ) -> Result<Vec<Event>, Error> {
        #[derive(Deserialize)]
        struct Page {
            events: Vec<Event>,
        }
        let path = format!(
            "/v1/collections/{}/events?seq_num={seq_num}&count={count}&clamp=true&wait={}",
            segment(collection),
            wait_secs.min(60)
        );
        match self
            .call::<Page>(Method::GET, &path, None, Retry::Safe)
            .await
        {
            Ok(page) => Ok(page.events),
            // At the tail with nothing to wait for.
            Err(Error::Api { status: 416, .. }) => Ok(Vec::new()),
            Err(err) => Err(err),
        }
    }

    /// Like [`Self::read_events`], keeping only the events `filter`
    /// passes: `(parameter, value)` pairs as the server takes them —
    /// `("event", "created,deleted")`, `("id_prefix", "cus_")`,
    /// `("where", "plan=pro")`, `("data.plan", "pro")` or `("filter",
    /// json)`. Also answers the seq num to read on from, which is past
    /// every event read, even when the filter left none.
    pub async fn read_events_where(
        &self,
        collection: &str,
        seq_num: u64,
        count: u64,
        wait_secs: u32,
        filter: &[(&str, &str)],
    ) -> Result<(Vec<Event>, u64), Error> {
        #[derive(Deserialize)]
        struct Page {
            events: Vec<Event>,
            next_seq_num: Option<u64>,
        }
        let mut path = format!(
            "/v1/collections/{}/events?seq_num={seq_num}&count={count}&clamp=true&wait={}",
            segment(collection),
            wait_secs.min(60)
        );
        for (key, value) in filter {
            path.push_str(&format!("&{}={}", segment(key), segment(value)));
        }
        match self
            .call::<Page>(Method::GET, &path, None, Retry::Safe)
            .await
        {
            Ok(page) => Ok((page.events, page.next_seq_num.unwrap_or(seq_num))),
            // At the tail with nothing to wait for.
            Err(Error::Api { status: 416, .. }) => Ok((Vec::new(), seq_num)),
            Err(err) => Err(err),
        }
    }

    /// Pages through the records changed after `cursor` (from the very
    /// beginning if `None`), oldest change first. See [`Updates`].
    pub fn updates(&self, collection: &str, cursor: Option<String>) -> Updates {
        Updates {
            client: self.clone(),
            collection: collection.to_string(),
            cursor,
            after: None,
            buffer: VecDeque::new(),
            wait_secs: 0,
            filter: Vec::new(),
            caught_up: false,
        }
    }

    /// Like [`Self::updates`], from a position given as the pair: records
    /// changed after `updated_after` (epoch ms or RFC 3339), or at that
    /// time with an id after `after_id`.
    pub fn updates_after(
        &self,
        collection: &str,
        updated_after: &str,
        after_id: Option<&str>,
    ) -> Updates {
        Updates {
            after: Some((updated_after.to_string(), after_id.map(str::to_owned))),
            ..self.updates(collection, None)
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
    /// The starting pair, until the first page gives a cursor.
    after: Option<(String, Option<String>)>,
    buffer: VecDeque<Record>,
    wait_secs: u32,
    /// Filter parameters, sent with every page.
    filter: Vec<(&'static str, String)>,
    /// Whether the last page said everything final was scanned.
    caught_up: bool,
}

impl Updates {
    /// When caught up, wait up to `secs` (at most 60) for changes before
    /// [`Self::next`] returns `None`.
    pub fn wait(mut self, secs: u32) -> Self {
        self.wait_secs = secs.min(60);
        self
    }

    /// Only records for which this condition holds, in the server's text
    /// form: `plan=pro`, `seats>=10`, `plan in pro,team`,
    /// `exists(address.city)`. Several must all hold.
    pub fn filter_where(mut self, condition: &str) -> Self {
        self.filter.push(("where", condition.to_string()));
        self
    }

    /// Only records whose id starts with `prefix`.
    pub fn id_prefix(mut self, prefix: &str) -> Self {
        self.filter.push(("id_prefix", prefix.to_string()));
        self
    }

    /// Only records the filter object passes (`{"where": [...], ...}`, as a
    /// consumer's `filter` takes it); not together with the other filters.
    pub fn filter(mut self, filter: &Value) -> Self {
        self.filter.push(("filter", filter.to_string()));
        self
    }

    /// The next changed record, or `None` when caught up. A filtered page
    /// may hold no match and still not be the end (the server scans a
    /// bounded number of records per page): such pages are paged past.
    pub async fn next(&mut self) -> Result<Option<Record>, Error> {
        while self.buffer.is_empty() {
            self.fetch().await?;
            if self.buffer.is_empty() && self.caught_up {
                return Ok(None);
            }
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
            /// Older servers do not say: an empty page was the end.
            caught_up: Option<bool>,
        }
        let mut query = format!("limit=1000&wait={}", self.wait_secs);
        for (key, value) in &self.filter {
            query.push_str(&format!("&{key}={}", segment(value)));
        }
        match (&self.cursor, &self.after) {
            (Some(cursor), _) => query.push_str(&format!("&cursor={}", segment(cursor))),
            (None, Some((updated_after, after_id))) => {
                query.push_str(&format!("&updated_after={}", segment(updated_after)));
                if let Some(id) = after_id {
                    query.push_str(&format!("&after_id={}", segment(id)));
                }
            }
            (None, None) => {}
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
        self.caught_up = page.caught_up.unwrap_or(page.records.is_empty());
        self.buffer.extend(page.records);
        Ok(())
    }
}
