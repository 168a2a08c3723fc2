//! A client that makes histories for the checker against a live server
//! (appends plain, with `match_seq_num` and with fencing tokens, fence
//! commands, reads, check-tails), and the careful read of the final
//! contents.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::{Call, Op, Outcome, NEVER};

/// The basin the histories' stream `s` is in.
pub use crate::common::cluster::BASIN;

/// A record as the checker names it: its body, or `FENCE(token)`.
pub fn record_name(record: &Value) -> String {
    let body = record["body"].as_str().unwrap_or_default();
    match record["headers"].as_array().map(Vec::as_slice) {
        Some([header]) if header[0] == "" && header[1] == "fence" => format!("FENCE({body})"),
        _ => body.to_string(),
    }
}

pub struct Recorder {
    pub started: Instant,
    pub ops: Mutex<Vec<Op>>,
}

impl Recorder {
    pub fn now(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }
}

/// What one client believes of the stream, to aim its conditions.
#[derive(Default)]
struct Belief {
    tail: u64,
    token: Option<String>,
}

/// Where the server is now (it moves when a killed one restarts).
pub type Base = Arc<std::sync::RwLock<String>>;

pub async fn client_run(
    base: Base,
    client: usize,
    ops: usize,
    seed: u64,
    recorder: Arc<Recorder>,
    counter: Arc<AtomicUsize>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut belief = Belief::default();
    for _ in 0..ops {
        let url = format!("{}/v1/streams/s/records", base.read().unwrap());
        let roll = rng.random_range(0..100);
        let (call, request) = if roll < 60 {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let (records, body): (Vec<String>, Value) = if roll < 5 {
                let token = format!("t{client}-{n}");
                belief.token = Some(token.clone());
                (
                    vec![format!("FENCE({token})")],
                    json!([{ "headers": [["", "fence"]], "body": token }]),
                )
            } else {
                let names: Vec<String> = (0..rng.random_range(1..=3))
                    .map(|k| format!("c{client}-{n}-{k}"))
                    .collect();
                let body = names.iter().map(|b| json!({ "body": b })).collect();
                (names, Value::Array(body))
            };
            let match_seq_num = (40..50).contains(&roll).then_some(belief.tail);
            let fencing_token = if roll >= 50 {
                belief.token.clone()
            } else {
                None
            };
            let mut input = json!({ "records": body });
            if let Some(m) = match_seq_num {
                input["match_seq_num"] = json!(m);
            }
            if let Some(t) = &fencing_token {
                input["fencing_token"] = json!(t);
            }
            let call = Call::Append {
                records,
                match_seq_num,
                fencing_token,
            };
            (call, http.post(&url).json(&input))
        } else if roll < 85 {
            let start = rng.random_range(0..=belief.tail);
            let count = rng.random_range(1..=20);
            let read = format!("{url}?seq_num={start}&count={count}&clamp=true");
            (Call::Read { start, count }, http.get(read))
        } else {
            (Call::CheckTail, http.get(format!("{url}/tail")))
        };
        let invoked = recorder.now();
        let response = request.header("s2-basin", BASIN).send().await;
        let answer = match response {
            Ok(resp) => {
                let status = resp.status().as_u16();
                resp.json::<Value>().await.ok().map(|body| (status, body))
            }
            Err(_) => None,
        };
        let completed = recorder.now();
        let outcome = match (&call, answer) {
            (Call::Append { .. }, Some((200, ack))) => {
                let end = ack["end"]["seq_num"].as_u64().unwrap();
                belief.tail = end;
                Outcome::Appended {
                    start: ack["start"]["seq_num"].as_u64().unwrap(),
                    end,
                }
            }
            (Call::Append { .. }, Some((412, body))) => {
                if let Some(next) = body["seq_num_mismatch"].as_u64() {
                    belief.tail = next;
                    Outcome::SeqNumMismatch(next)
                } else {
                    let current = body["fencing_token_mismatch"].as_str().unwrap_or_default();
                    belief.token = Some(current.to_string());
                    Outcome::FencingMismatch(current.to_string())
                }
            }
            (Call::Append { .. }, Some((503, body))) if body["code"] == "unavailable" => {
                Outcome::Refused
            }
            (Call::Append { .. }, Some((507, _))) => Outcome::Refused,
            (Call::Read { .. }, Some((200, batch))) => {
                let records: Vec<(u64, String)> = batch["records"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| (r["seq_num"].as_u64().unwrap(), record_name(r)))
                    .collect();
                let tail = batch["tail"]["seq_num"].as_u64();
                if let Some(t) = tail {
                    belief.tail = t;
                }
                Outcome::Read { records, tail }
            }
            (Call::CheckTail, Some((200, body))) => {
                let t = body["tail"]["seq_num"].as_u64().unwrap();
                belief.tail = t;
                Outcome::Tail(t)
            }
            _ => Outcome::Unknown,
        };
        let unknown = matches!(outcome, Outcome::Unknown);
        let pause = unknown || matches!(outcome, Outcome::Refused);
        let completed = if unknown { NEVER } else { completed };
        recorder.ops.lock().unwrap().push(Op {
            client,
            call,
            invoked,
            completed,
            outcome,
        });
        if pause {
            // The server may be down or restarting: give it a moment.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The whole stream, read by one careful reader after the run.
pub async fn final_contents(base: &str) -> Vec<String> {
    let http = reqwest::Client::new();
    let mut contents = Vec::new();
    loop {
        let url = format!(
            "{base}/v1/streams/s/records?seq_num={}&count=1000&clamp=true",
            contents.len()
        );
        let batch = read_settled(&http, &url).await;
        let records = batch["records"].as_array().cloned().unwrap_or_default();
        if records.is_empty() {
            return contents;
        }
        contents.extend(records.iter().map(record_name));
    }
}

/// A read of `url` once the server answers it (a cluster may be between
/// owners for a few seconds; a restarted server may be starting): the
/// batch, or the `416` of a read past the tail.
async fn read_settled(http: &reqwest::Client, url: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = http.get(url).header("s2-basin", BASIN).send().await;
        if let Ok(resp) = answer {
            if resp.status().is_success() || resp.status().as_u16() == 416 {
                return resp.json().await.unwrap();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{url} did not answer within a minute"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
