//! Keeps a local copy of a collection up to date through the `/updated`
//! cursor: a full sync the first time, then only what changed. The copy and
//! its cursor are saved together in one file, so a restarted worker goes on
//! exactly where it stopped, missing nothing and applying nothing twice.
//!
//! ```sh
//! cargo run -p rill-client --example sync_worker -- http://127.0.0.1:8080 my-basin users
//! ```

use std::collections::BTreeMap;

use rill_client::Client;
use serde_json::{json, Value};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, endpoint, basin, collection] = &args[..] else {
        eprintln!("usage: sync_worker ENDPOINT BASIN COLLECTION");
        std::process::exit(2);
    };
    let client = Client::new(endpoint)?.with_basin(basin);
    let file = format!("{collection}.sync.json");
    let saved: Value = std::fs::read(&file)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null);
    let mut copy: BTreeMap<String, Value> =
        serde_json::from_value(saved["records"].clone()).unwrap_or_default();
    let cursor = saved["cursor"].as_str().map(str::to_owned);
    let mut updates = client.updates(collection, cursor).wait(30);
    loop {
        match updates.next().await? {
            Some(record) if record.deleted => {
                copy.remove(&record.id);
            }
            Some(record) => {
                copy.insert(record.id, record.data);
            }
            None => {
                // Caught up: everything before the cursor is in the copy.
                if let Some(cursor) = updates.cursor() {
                    let snapshot = json!({ "cursor": cursor, "records": copy });
                    // Written aside and renamed over: a crash leaves the
                    // old snapshot or the new one, never half of one.
                    let temporary = format!("{file}.tmp");
                    std::fs::write(&temporary, serde_json::to_vec(&snapshot)?)?;
                    std::fs::rename(&temporary, &file)?;
                }
                println!("{} records in sync", copy.len());
            }
        }
    }
}
