//! `rill bench --collection`: what a collection and a consumer of it sustain.
//!
//! Three phases over one new collection (deleted afterwards, with its
//! consumer):
//! 1. **upserts**: `--appenders` writers each send batches of `--batch`
//!    upserts over `--keys` ids, waiting for each acknowledgement;
//! 2. **paging**: one reader pages through `/updated` from the beginning
//!    to the end, checking it sees every id written exactly once, at the
//!    version the writes left it at;
//! 3. **consuming**: `--appenders` workers receive from a records-feed
//!    consumer and ack what they got, until every id was acked.
//!
//! Each phase reports records per second; the writes report latency too.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rill_client::{Batch, Client, Kind};
use serde_json::json;

use super::bench_stats::{epoch_ms, Percentiles};
use super::output::{fail, line, Failure};

/// How long consuming may take at most, past the upserts' own duration:
/// a consumer that stops delivering fails the run instead of hanging it.
const CONSUME_LIMIT: Duration = Duration::from_secs(120);

pub struct CollectionArgs {
    pub keys: u64,
    /// Stop once this many upserts were sent (`--max-mib`).
    pub max_upserts: u64,
    pub appenders: usize,
    pub duration: Duration,
    /// Bytes of padding in each record's data.
    pub record_size: usize,
    pub batch: usize,
}

/// What the phases measured.
struct Report {
    upserts: u64,
    upsert_time: Duration,
    write_latencies: Vec<Duration>,
    /// Distinct ids written: what paging and consuming must each see.
    ids: u64,
    page_time: Duration,
    consume_time: Duration,
    /// Deliveries, redeliveries included.
    received: u64,
}

pub async fn run(
    client: &Client,
    args: &CollectionArgs,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let name = format!("bench-{}", epoch_ms());
    client.ensure_collection(&name).await.map_err(fail)?;
    let result = measure(client, args, &name).await;
    // Both go whatever happened (the consumer may never have been made).
    let _ = client.delete_resource(Kind::Consumer, &name).await;
    let deleted = client
        .delete_resource(Kind::Collection, &name)
        .await
        .is_ok();
    let report = result.map_err(|message| Failure {
        message,
        exit_code: super::output::exit::FAILED,
    })?;
    print(&report, args, &name, deleted, json_out, out)
}

async fn measure(client: &Client, args: &CollectionArgs, name: &str) -> Result<Report, String> {
    let (upserts, upsert_time, write_latencies, versions) = upsert(client, args, name).await?;
    let ids = versions.len() as u64;
    let page_time = page(client, name, &versions).await?;
    let (received, consume_time) = consume(client, args, name, ids).await?;
    Ok(Report {
        upserts,
        upsert_time,
        write_latencies,
        ids,
        page_time,
        consume_time,
        received,
    })
}

/// Phase 1. Returns the upserts sent, how long they took, each write's
/// latency, and the version each id was left at.
async fn upsert(
    client: &Client,
    args: &CollectionArgs,
    name: &str,
) -> Result<(u64, Duration, Vec<Duration>, HashMap<String, u64>), String> {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let padding = "p".repeat(args.record_size);
    let writers: Vec<_> = (0..args.appenders)
        .map(|_| {
            let (client, name, next, padding) = (
                client.clone(),
                name.to_string(),
                next.clone(),
                padding.clone(),
            );
            let (duration, batch, keys, max) =
                (args.duration, args.batch, args.keys, args.max_upserts);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                // The version each id this writer wrote got last.
                let mut versions = HashMap::new();
                while started.elapsed() < duration {
                    let first = next.fetch_add(batch as u64, Ordering::Relaxed);
                    if first >= max {
                        break;
                    }
                    let mut writes = Batch::default();
                    for n in first..first + batch as u64 {
                        let id = format!("k{}", n % keys);
                        writes = writes.upsert(&id, json!({ "n": n, "pad": padding }));
                    }
                    let sent = Instant::now();
                    let written = client
                        .write_batch(&name, &writes)
                        .await
                        .map_err(|err| fail(err).message)?;
                    latencies.push(sent.elapsed());
                    for record in written {
                        versions.insert(record.id, record.version);
                    }
                }
                Ok::<_, String>((latencies, versions))
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut versions: HashMap<String, u64> = HashMap::new();
    let mut failure = None;
    for writer in writers {
        match writer.await {
            Ok(Ok((more, seen))) => {
                latencies.extend(more);
                // Two writers may have written one id: the later version wins.
                for (id, version) in seen {
                    let latest = versions.entry(id).or_default();
                    *latest = (*latest).max(version);
                }
            }
            Ok(Err(err)) => failure = failure.or(Some(err)),
            Err(err) => failure = failure.or(Some(format!("a writer failed: {err}"))),
        }
    }
    if let Some(err) = failure {
        return Err(err);
    }
    let upserts = (latencies.len() * args.batch) as u64;
    Ok((upserts, started.elapsed(), latencies, versions))
}

/// Phase 2: pages through `/updated` from the start; every id must come
/// once, at its latest version. Returns the time taken.
async fn page(
    client: &Client,
    name: &str,
    versions: &HashMap<String, u64>,
) -> Result<Duration, String> {
    let started = Instant::now();
    let mut updates = client.updates(name, None);
    let mut seen: HashMap<String, u64> = HashMap::with_capacity(versions.len());
    while let Some(record) = updates.next().await.map_err(|err| fail(err).message)? {
        if seen.insert(record.id.clone(), record.version).is_some() {
            return Err(format!("/updated repeated {}", record.id));
        }
    }
    let elapsed = started.elapsed();
    for (id, version) in versions {
        match seen.get(id) {
            Some(got) if got == version => {}
            Some(got) => {
                return Err(format!(
                    "/updated gave {id} at version {got}, written at {version}"
                ))
            }
            None => return Err(format!("/updated skipped {id}")),
        }
    }
    if seen.len() != versions.len() {
        return Err(format!(
            "/updated gave {} ids, {} were written",
            seen.len(),
            versions.len()
        ));
    }
    Ok(elapsed)
}

/// Phase 3: receive and ack from a records-feed consumer until all `ids`
/// were acked. Returns the deliveries and the time taken.
async fn consume(
    client: &Client,
    args: &CollectionArgs,
    name: &str,
    ids: u64,
) -> Result<(u64, Duration), String> {
    let config = json!({ "source": { "collection": name, "feed": "records" } });
    client
        .ensure_consumer(name, &config)
        .await
        .map_err(|err| fail(err).message)?;
    let started = Instant::now();
    let acked = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let received = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..args.appenders)
        .map(|_| {
            let (client, name) = (client.clone(), name.to_string());
            let (acked, received) = (acked.clone(), received.clone());
            let batch = args.batch.min(1000);
            tokio::spawn(async move {
                while acked.lock().map_or(0, |set| set.len() as u64) < ids {
                    if started.elapsed() > CONSUME_LIMIT {
                        return Err(format!(
                            "the consumer delivered too slowly: not all {ids} ids acked in {} s",
                            CONSUME_LIMIT.as_secs()
                        ));
                    }
                    let messages = client
                        .receive(&name, batch, 200)
                        .await
                        .map_err(|err| fail(err).message)?;
                    received.fetch_add(messages.len() as u64, Ordering::Relaxed);
                    let ack_ids: Vec<String> =
                        messages.iter().filter_map(|m| m.ack_id.clone()).collect();
                    client
                        .ack(&name, &ack_ids)
                        .await
                        .map_err(|err| fail(err).message)?;
                    if let Ok(mut set) = acked.lock() {
                        for message in &messages {
                            if let Some(id) = message.record.as_ref().and_then(|r| r["id"].as_str())
                            {
                                set.insert(id.to_string());
                            }
                        }
                    }
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    for worker in workers {
        match worker.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Err(err),
            Err(err) => return Err(format!("a worker failed: {err}")),
        }
    }
    Ok((received.load(Ordering::Relaxed), started.elapsed()))
}

fn print(
    report: &Report,
    args: &CollectionArgs,
    name: &str,
    deleted: bool,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let rate = |n: u64, time: Duration| n as f64 / time.as_secs_f64().max(0.001);
    let latency = Percentiles::of(&report.write_latencies);
    let upserts_per_sec = rate(report.upserts, report.upsert_time);
    let paged_per_sec = rate(report.ids, report.page_time);
    let acked_per_sec = rate(report.ids, report.consume_time);
    if json_out {
        return line(
            out,
            json!({
                "collection": name,
                "collection_deleted": deleted,
                "writers": args.appenders,
                "upserts": report.upserts,
                "upserts_per_sec": upserts_per_sec,
                "write_latency_ms": latency.json(),
                "ids": report.ids,
                "paged_records_per_sec": paged_per_sec,
                "consumed_records_per_sec": acked_per_sec,
                "deliveries": report.received,
            }),
        );
    }
    let gone = if deleted { "deleted" } else { "NOT deleted" };
    line(out, format!("collection   {name} ({gone} afterwards)"))?;
    line(
        out,
        format!(
            "upserted     {} upserts of {} ids in batches of {} by {} writers in {:.2} s: \
             {upserts_per_sec:.0} upserts/s",
            report.upserts,
            report.ids,
            args.batch,
            args.appenders,
            report.upsert_time.as_secs_f64()
        ),
    )?;
    line(out, format!("write latency {} (per batch)", latency.text()))?;
    line(
        out,
        format!(
            "paged        {} ids through /updated in {:.2} s: {paged_per_sec:.0} records/s, \
             each id once at its latest version",
            report.ids,
            report.page_time.as_secs_f64()
        ),
    )?;
    line(
        out,
        format!(
            "consumed     {} ids received and acked ({} deliveries) in {:.2} s: \
             {acked_per_sec:.0} records/s",
            report.ids,
            report.received,
            report.consume_time.as_secs_f64()
        ),
    )
}
