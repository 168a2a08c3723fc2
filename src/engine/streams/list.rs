//! List operations: one page of names under a key prefix of the meta
//! keyspace. Basins, streams, collections, consumers and access tokens
//! all list this way.

use std::ops::ControlFlow;

use super::core::StreamCore;
use super::keys;
use crate::engine::error::{EngineError, EngineResult};
use crate::storage::{prefix_end, Keyspace};

/// Bounds for list operations.
#[derive(Clone, Debug, Default)]
pub struct ListRequest {
    pub prefix: String,
    pub start_after: String,
    pub limit: Option<usize>,
}

pub const MAX_LIST_LIMIT: usize = 1000;

impl ListRequest {
    /// Checks the bounds and returns the page size.
    pub(crate) fn validate(&self) -> EngineResult<usize> {
        if !self.start_after.is_empty() && !self.prefix.is_empty() && self.start_after < self.prefix
        {
            return Err(EngineError::Invalid(
                "`start_after` must be greater than or equal to the `prefix`".into(),
            ));
        }
        Ok(match self.limit {
            Some(n) if n > 0 && n <= MAX_LIST_LIMIT => n,
            _ => MAX_LIST_LIMIT,
        })
    }
}

impl StreamCore {
    /// One page of a list operation over the JSON values under `base`: at
    /// most `req`'s limit, and whether there are more.
    pub(crate) fn list_named_meta<T: serde::de::DeserializeOwned>(
        &self,
        base: &[u8],
        req: &ListRequest,
    ) -> EngineResult<(Vec<(String, T)>, bool)> {
        let limit = req.validate()?;
        let mut found = self.scan_named_meta(base, &req.prefix, &req.start_after, limit + 1)?;
        let has_more = found.len() > limit;
        found.truncate(limit);
        Ok((found, has_more))
    }

    /// Every JSON value under `base`, by name.
    pub(crate) fn all_named_meta<T: serde::de::DeserializeOwned>(
        &self,
        base: &[u8],
    ) -> EngineResult<Vec<(String, T)>> {
        self.scan_named_meta(base, "", "", usize::MAX)
    }

    /// The JSON values under `base` in the meta keyspace whose names (the
    /// rest of the key) start with `prefix` and sort after `start_after`,
    /// in name order, at most `limit`. Every list operation is this.
    pub(super) fn scan_named_meta<T: serde::de::DeserializeOwned>(
        &self,
        base: &[u8],
        prefix: &str,
        start_after: &str,
        limit: usize,
    ) -> EngineResult<Vec<(String, T)>> {
        let key = |name: &str| [base, name.as_bytes()].concat();
        let mut start = key(prefix);
        if !start_after.is_empty() && start_after >= prefix {
            start = key(start_after);
            start.push(0); // strictly after: names never hold a NUL
        }
        let end = prefix_end(&key(prefix));
        let mut found = Vec::new();
        let mut corrupt = None;
        self.storage
            .scan(Keyspace::Meta, &start, &end, &mut |key, value| {
                let name = String::from_utf8_lossy(&key[base.len()..]).into_owned();
                match keys::decode_json(value) {
                    Ok(meta) => found.push((name, meta)),
                    Err(err) => {
                        corrupt = Some(err);
                        return ControlFlow::Break(());
                    }
                }
                if found.len() >= limit {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
        match corrupt {
            Some(err) => Err(err.into()),
            None => Ok(found),
        }
    }
}
