//! Paging a collection's `/updated` feed the way a client that must never
//! skip or repeat a change does, checking that it never has to.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Pages collection `collection`'s `/updated` in `basin` through `base`,
/// `limit` records a page, until `done` and a few pages after come back
/// empty; each record's latest version seen. Asserts that positions
/// strictly increase and no change is seen twice; a page that fails (a
/// cluster between owners, say) is asked again with the same cursor.
pub async fn page_until_done(
    http: &reqwest::Client,
    base: &str,
    (basin, collection): (&str, &str),
    limit: usize,
    done: tokio::sync::watch::Receiver<bool>,
) -> BTreeMap<String, u64> {
    let mut seen = HashSet::new();
    let mut latest = BTreeMap::new();
    let mut cursor: Option<String> = None;
    let mut last = (0u64, String::new());
    let mut idle = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while idle < 3 {
        assert!(Instant::now() < deadline, "the pager did not finish");
        let query = match &cursor {
            Some(c) => format!("cursor={c}&limit={limit}"),
            None => format!("limit={limit}"),
        };
        let answer = http
            .get(format!(
                "{base}/v1/collections/{collection}/updated?{query}"
            ))
            .header("s2-basin", basin)
            .send()
            .await;
        let page: Value = match answer {
            Ok(resp) if resp.status().is_success() => resp.json().await.unwrap(),
            _ => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let records = page["records"].as_array().unwrap();
        for r in records {
            let id = r["id"].as_str().unwrap().to_string();
            let version = r["version"].as_u64().unwrap();
            let position = (r["updated_at"].as_u64().unwrap(), id.clone());
            assert!(
                position > last,
                "{position:?} after {last:?}: positions went back"
            );
            last = position;
            assert!(
                seen.insert((id.clone(), version)),
                "{id} v{version} seen twice"
            );
            latest.insert(id, version);
        }
        cursor = Some(page["cursor"].as_str().unwrap().to_string());
        if records.is_empty() {
            if *done.borrow() {
                idle += 1;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    latest
}
