//! The records stream: `/updated` pages of one collection, and of
//! several at once, below the watermark (see the module docs of
//! [`super`] for the cursor rule).

use std::ops::ControlFlow;
use std::sync::Arc;

use bytes::Bytes;

use super::filter::{Candidate, Filter};
use super::handle::CollectionHandle;
use super::keys;
use super::layer::Collections;
use super::types::MAX_PAGE;

use super::types::{Cursor, RawRecord, UnifiedCursor};
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::locks::lock;
use crate::engine::streams::types::now_ms;
use crate::engine::streams::MAX_UNARY_WAIT;
use crate::storage::Keyspace;

/// Records a filtered page may scan before it returns (with the cursor
/// past them, and `caught_up: false`), matched or not: a filter that
/// matches 1 record in a million does not turn one request into a scan of
/// the whole collection.
pub const SCAN_BUDGET: usize = 10_000;

/// A page of a records stream (one collection's, or several).
pub struct Page<C> {
    pub records: Vec<RawRecord>,
    /// Where to go on from: past every record scanned.
    pub next: C,
    /// Whether everything final was scanned (otherwise the limit or, when
    /// filtered, the scan budget ended the page: ask again at once).
    pub caught_up: bool,
}

/// A page of one collection's records stream.
pub type UpdatedPage = Page<Cursor>;
/// A page across collections.
pub type UnifiedPage = Page<UnifiedCursor>;

/// Whether `record` passes `filter` (records carry no event or changes).
fn passes(filter: &Filter, record: &RawRecord) -> EngineResult<bool> {
    let view = record.view()?;
    Ok(filter.matches(&Candidate {
        event: None,
        id: &view.id,
        data: &view.data,
        changes: None,
    }))
}

impl Collections {
    /// A page of the records stream strictly after `cursor`, at most
    /// `limit` records, and the cursor to continue from. With a `wait`, an
    /// empty page is held until something is written (long poll).
    pub async fn updated(
        &self,
        basin: &str,
        collection: &str,
        cursor: &Cursor,
        limit: usize,
        filter: Option<&Filter>,
        wait: std::time::Duration,
    ) -> EngineResult<UpdatedPage> {
        let handle = self.handle(basin, collection).await?;
        let deadline = tokio::time::Instant::now() + wait.min(MAX_UNARY_WAIT);
        let mut written = handle.written.subscribe();
        let mut closing = self.core.closing();
        // A filtered wait goes on from where its last scan ended: it never
        // scans a record twice, and wakes its caller only for a match.
        let mut cursor = cursor.clone();
        loop {
            written.borrow_and_update();
            let page = match filter {
                Some(filter) => self.filtered_page(&handle, &cursor, limit, filter)?,
                None => {
                    let (records, next) = self.updated_page(&handle, &cursor, limit)?;
                    let caught_up = records.len() < limit.clamp(1, MAX_PAGE);
                    UpdatedPage {
                        records,
                        next,
                        caught_up,
                    }
                }
            };
            let done = !page.records.is_empty() || !page.caught_up;
            if done || tokio::time::Instant::now() >= deadline {
                self.count_page(basin);
                return Ok(page);
            }
            cursor = page.next;
            if *closing.borrow() {
                // A waiting poll is cut short: said, as sessions say it.
                return Err(EngineError::Unavailable);
            }
            tokio::select! {
                _ = written.changed() => {}
                _ = closing.changed() => {}
                // A write in a millisecond the clock has not reached yet
                // shows once it has.
                _ = tokio::time::sleep(std::time::Duration::from_millis(1)), if lock(&handle.clock).last > now_ms() => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// One page of the records that pass `filter`: at most `limit` of
    /// them, from at most [`SCAN_BUDGET`] records scanned. The cursor
    /// moves past everything scanned, matched or not, so paging on never
    /// scans a record twice; `caught_up` says the scan reached the end of
    /// what is final rather than its budget or the limit.
    fn filtered_page(
        &self,
        handle: &CollectionHandle,
        cursor: &Cursor,
        limit: usize,
        filter: &Filter,
    ) -> EngineResult<UpdatedPage> {
        let limit = limit.clamp(1, MAX_PAGE);
        let mut scanned = 0;
        let mut records = Vec::new();
        let mut next = cursor.clone();
        loop {
            let budget = (SCAN_BUDGET - scanned).min(MAX_PAGE);
            let (batch, _) = self.updated_page(handle, &next, budget)?;
            let exhausted = batch.len() < budget;
            scanned += batch.len();
            for record in batch {
                let matched = passes(filter, &record)?;
                next = Cursor {
                    updated_after: record.updated_at,
                    after_id: Some(record.id.clone()),
                    started_at: cursor.started_at,
                };
                if matched {
                    records.push(record);
                    if records.len() == limit {
                        return Ok(UpdatedPage {
                            records,
                            next,
                            caught_up: false,
                        });
                    }
                }
            }
            if exhausted {
                // Nothing more is final yet.
                return Ok(UpdatedPage {
                    records,
                    next,
                    caught_up: true,
                });
            }
            if scanned >= SCAN_BUDGET {
                return Ok(UpdatedPage {
                    records,
                    next,
                    caught_up: false,
                });
            }
        }
    }

    pub(crate) fn updated_page(
        &self,
        handle: &CollectionHandle,
        cursor: &Cursor,
        limit: usize,
    ) -> EngineResult<(Vec<RawRecord>, Cursor)> {
        let check = |cursor: &Cursor| {
            let horizon = *lock(&handle.horizon);
            horizon.check(cursor.updated_after, cursor.started_at, cursor.is_start())
        };
        check(cursor)?;
        let limit = limit.clamp(1, MAX_PAGE);
        let watermark = handle.watermark();
        let start = match &cursor.after_id {
            Some(id) => {
                let mut key = keys::records_stream_key(handle.id, cursor.updated_after, id);
                key.push(0); // strictly after this id
                key
            }
            None => match cursor.updated_after.checked_add(1) {
                Some(t) => keys::records_stream_key(handle.id, t, ""),
                None => return Ok((Vec::new(), cursor.clone())),
            },
        };
        let end = keys::records_stream_key(handle.id, watermark, "");
        let records = self.scan_records_stream(&start, &end, limit)?;
        // Expiry publishes its horizon before removing anything, so a scan
        // that raced with a removal sees the new horizon here.
        check(cursor)?;
        let next = match records.last() {
            Some(last) => Cursor {
                updated_after: last.updated_at,
                after_id: Some(last.id.clone()),
                started_at: cursor.started_at,
            },
            None => cursor.clone(),
        };
        Ok((records, next))
    }

    /// One page across several collections (all of the basin's if `names`
    /// is `None`), ordered by `(updated_at, collection, id)`, strictly after
    /// `cursor`. Only records below every collection's watermark (and below
    /// the wall clock, for collections created later) are served, so no
    /// write to any of them can land behind the returned cursor.
    pub async fn updated_across(
        &self,
        basin: &str,
        names: Option<Vec<String>>,
        cursor: &UnifiedCursor,
        limit: usize,
        filter: Option<&Filter>,
        wait: std::time::Duration,
    ) -> EngineResult<UnifiedPage> {
        let deadline = tokio::time::Instant::now() + wait.min(MAX_UNARY_WAIT);
        let mut cursor = cursor.clone();
        loop {
            let page = self
                .filtered_across_page(basin, names.as_deref(), &cursor, limit, filter)
                .await?;
            let done = !page.records.is_empty() || !page.caught_up;
            if done || tokio::time::Instant::now() >= deadline {
                self.count_page(basin);
                return Ok(page);
            }
            if self.core.is_closing() {
                return Err(EngineError::Unavailable); // as in `updated`
            }
            cursor = page.next;
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }

    fn count_page(&self, basin: &str) {
        let pages = &self.core.metrics.collections.updated_pages;
        pages.with_label_values(&[basin]).inc();
    }

    /// [`Self::updated_across_page`] through `filter`, as
    /// [`Self::filtered_page`] does for one collection: at most `limit`
    /// matches from at most [`SCAN_BUDGET`] records scanned (just `limit`
    /// without a filter), the cursor past everything scanned.
    async fn filtered_across_page(
        &self,
        basin: &str,
        names: Option<&[String]>,
        cursor: &UnifiedCursor,
        limit: usize,
        filter: Option<&Filter>,
    ) -> EngineResult<UnifiedPage> {
        let limit = limit.clamp(1, MAX_PAGE);
        let budget = if filter.is_some() { SCAN_BUDGET } else { limit };
        let (mut records, mut next, mut scanned) = (Vec::new(), cursor.clone(), 0);
        loop {
            let want = (budget - scanned).min(MAX_PAGE);
            let entries = self.updated_across_page(basin, names, &next, want).await?;
            let exhausted = entries.len() < want;
            for (name, record) in entries {
                scanned += 1;
                next = UnifiedCursor {
                    updated_after: record.updated_at,
                    after: Some((name, record.id.clone())),
                    started_at: cursor.started_at,
                };
                if filter.map_or(Ok(true), |f| passes(f, &record))? {
                    records.push(record);
                    if records.len() == limit {
                        return Ok(Page {
                            records,
                            next,
                            caught_up: false,
                        });
                    }
                }
            }
            if exhausted || scanned >= budget {
                return Ok(Page {
                    records,
                    next,
                    caught_up: exhausted,
                });
            }
        }
    }

    async fn updated_across_page(
        &self,
        basin: &str,
        names: Option<&[String]>,
        cursor: &UnifiedCursor,
        limit: usize,
    ) -> EngineResult<Vec<(String, RawRecord)>> {
        self.core.basin_meta(basin)?;
        let limit = limit.clamp(1, MAX_PAGE);
        let (handles, watermark) = self.handles_for(basin, names).await?;
        let check = |handles: &[(String, Arc<CollectionHandle>)]| -> EngineResult<()> {
            for (_, handle) in handles {
                let horizon = *lock(&handle.horizon);
                horizon.check(cursor.updated_after, cursor.started_at, cursor.is_start())?;
            }
            Ok(())
        };
        check(&handles)?;
        // Up to `limit` candidates from each collection, then merge.
        let mut entries: Vec<(u64, String, RawRecord)> = Vec::new();
        for (name, handle) in &handles {
            let start = match &cursor.after {
                Some((after_collection, after_id)) if name == after_collection => {
                    let mut key =
                        keys::records_stream_key(handle.id, cursor.updated_after, after_id);
                    key.push(0);
                    key
                }
                Some((after_collection, _)) if name > after_collection => {
                    keys::records_stream_key(handle.id, cursor.updated_after, "")
                }
                _ => match cursor.updated_after.checked_add(1) {
                    Some(t) => keys::records_stream_key(handle.id, t, ""),
                    None => continue,
                },
            };
            let end = keys::records_stream_key(handle.id, watermark, "");
            for record in self.scan_records_stream(&start, &end, limit)? {
                entries.push((record.updated_at, name.clone(), record));
            }
        }
        check(&handles)?;
        entries.sort_by(|a, b| (a.0, &a.1, &a.2.id).cmp(&(b.0, &b.1, &b.2.id)));
        entries.truncate(limit);
        Ok(entries.into_iter().map(|(_, name, r)| (name, r)).collect())
    }

    /// The handles of the named collections (all of the basin's if `names`
    /// is `None`), in name order, and the smallest of their watermarks and
    /// the wall clock. A collection deleted since the listing is left out;
    /// one named explicitly must exist.
    async fn handles_for(
        &self,
        basin: &str,
        names: Option<&[String]>,
    ) -> EngineResult<(Vec<(String, Arc<CollectionHandle>)>, u64)> {
        let explicit = names.is_some();
        let mut names: Vec<String> = match names {
            Some(names) => names.to_vec(),
            None => self
                .collection_ids(basin)?
                .into_iter()
                .map(|(n, _)| n)
                .collect(),
        };
        names.sort();
        names.dedup();
        let mut handles = Vec::with_capacity(names.len());
        let mut watermark = now_ms();
        for name in names {
            let handle = match self.handle(basin, &name).await {
                Ok(handle) => handle,
                // Deleted since the listing: nothing of it to serve.
                Err(EngineError::CollectionNotFound(_)) if !explicit => continue,
                Err(err) => return Err(err),
            };
            watermark = watermark.min(handle.watermark());
            handles.push((name, handle));
        }
        Ok((handles, watermark))
    }

    /// Up to `limit` entries of the records stream in `[start, end)`.
    fn scan_records_stream(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> EngineResult<Vec<RawRecord>> {
        let mut records = Vec::new();
        self.core
            .storage()
            .scan(Keyspace::RecordsStream, start, end, &mut |key, value| {
                if let Some((updated_at, id)) = keys::parse_records_stream_key(key) {
                    records.push(RawRecord {
                        updated_at,
                        id,
                        json: Bytes::copy_from_slice(value),
                    });
                }
                if records.len() >= limit {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
        Ok(records)
    }
}
