//! The Redis destination: each message is one `XADD` to a Redis stream,
//! and the sink's position is kept in a key beside it
//! (`rill:sink-position:{basin}/{sink}/{created_at}`). A Lua script adds a
//! batch's entries and moves the position in one step (Redis runs a script
//! whole, with nothing else between), and only if the position is still
//! the one the worker read: so each message lands exactly once, through
//! crashes of Rill and restarts of Redis alike.
//!
//! Entries get Redis's own ids (`*`): an id made from the position would be
//! refused whenever the key holds anything newer. Their fields:
//! - a stream record: `seq_num`, `timestamp`, `body`, and `header:{name}`
//!   for each of its headers (bytes as they are);
//! - a collection change: `id`, `version`, `updated_at`, `deleted` (`1` or
//!   `0`), `data` (JSON), and `event` for a change event.
//!
//! A script is not rolled back if a command in it fails, but an `XADD` to a
//! key of the right type fails only when Redis is out of memory, and Redis
//! refuses such a script before it starts.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

use super::failure::Failure;
use super::message::{position_hex, sink_identity, Change};
use crate::engine::consumers::{Delivery, Payload};
use crate::engine::sinks::{RedisConfig, SinkInfo};

const ADD_AND_MOVE: &str = r"
local done = redis.call('GET', KEYS[2]) or ''
if done ~= ARGV[1] then
  return redis.error_reply('RILL_MOVED the sink position moved under this delivery')
end
local at = 5
for entry = 1, tonumber(ARGV[4]) do
  local fields = tonumber(ARGV[at])
  at = at + 1
  local command = {'XADD', KEYS[1]}
  if ARGV[3] ~= '' then
    table.insert(command, 'MAXLEN')
    table.insert(command, '~')
    table.insert(command, ARGV[3])
  end
  table.insert(command, '*')
  for i = at, at + 2 * fields - 1 do
    table.insert(command, ARGV[i])
  end
  at = at + 2 * fields
  redis.call(unpack(command))
end
redis.call('SET', KEYS[2], ARGV[2])
return 1
";

pub struct Redis {
    config: RedisConfig,
    client: redis::Client,
    /// The key that holds the sink's position (hex of its bytes).
    position_key: String,
    script: redis::Script,
    connection: Mutex<Option<MultiplexedConnection>>,
}

impl Redis {
    pub fn new(sink: &SinkInfo, config: RedisConfig) -> Result<Self, String> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|_| "destination.redis.url is not a Redis URL".to_string())?;
        Ok(Self {
            position_key: format!("rill:sink-position:{}", sink_identity(sink)),
            config,
            client,
            script: redis::Script::new(ADD_AND_MOVE),
            connection: Mutex::new(None),
        })
    }

    pub async fn deliver(&self, batch: &[Delivery]) -> Result<(), Failure> {
        let entries: Vec<(String, Fields)> = batch
            .iter()
            .map(|d| Ok((position_hex(d), fields(d)?)))
            .collect::<Result<_, Failure>>()?;
        // The furthest position, not the last (see postgres.rs).
        let Some(last) = entries.iter().map(|(position, _)| position.clone()).max() else {
            return Ok(());
        };
        let mut connection = self.connected().await?;
        let done: Option<String> = self
            .timed(
                redis::cmd("GET")
                    .arg(&self.position_key)
                    .query_async(&mut connection),
            )
            .await?;
        let done = done.unwrap_or_default();
        // Hex keeps the order of the bytes; the messages after the position
        // are those not written yet (the rest landed before a crash). No
        // position yet is "", before every other.
        let fresh: Vec<_> = entries
            .into_iter()
            .filter(|(position, _)| *position > done)
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let mut invocation = self.script.key(&self.config.stream);
        invocation
            .key(&self.position_key)
            .arg(&done)
            .arg(&last)
            .arg(
                self.config
                    .maxlen
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
            )
            .arg(fresh.len());
        for (_, fields) in &fresh {
            invocation.arg(fields.len());
            for (name, value) in fields {
                invocation.arg(name.as_slice()).arg(value.as_slice());
            }
        }
        let _: i64 = self.timed(invocation.invoke_async(&mut connection)).await?;
        Ok(())
    }

    pub async fn probe(&self) -> Result<(), Failure> {
        let mut connection = self.connected().await?;
        let _: String = self
            .timed(redis::cmd("PING").query_async(&mut connection))
            .await?;
        Ok(())
    }

    async fn connected(&self) -> Result<MultiplexedConnection, Failure> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| {
                Failure::Transient(format!("cannot connect to Redis: {}", describe(&e)))
            })?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// `work` within the timeout; a failure drops the connection (the next
    /// delivery makes a new one).
    async fn timed<T>(
        &self,
        work: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Failure> {
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let failure = match tokio::time::timeout(timeout, work).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(err)) => format!("Redis: {}", describe(&err)),
            Err(_) => "a Redis write timed out".to_string(),
        };
        *self.connection.lock().await = None;
        // Nothing a Redis server says is the message's fault: a key of the
        // wrong type, a full memory, a moved position are its state.
        Err(Failure::Transient(failure))
    }
}

/// Headers an entry may carry (see `fields`).
const MAX_HEADERS: usize = 1000;

/// An entry's fields and values, as bytes.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// The entry's fields; see the module's comment.
fn fields(delivery: &Delivery) -> Result<Fields, Failure> {
    let text = |name: &str, value: String| (name.as_bytes().to_vec(), value.into_bytes());
    if let Payload::Record(record) = &delivery.message.payload {
        let mut fields = vec![
            text("seq_num", record.seq_num.to_string()),
            text("timestamp", record.timestamp.to_string()),
            (b"body".to_vec(), record.body.to_vec()),
        ];
        // Lua's `unpack` takes some thousands of values: an entry past
        // that would fail half way through a script.
        if record.headers.len() > MAX_HEADERS {
            return Err(Failure::Permanent(format!(
                "record {} has more than {MAX_HEADERS} headers",
                record.seq_num
            )));
        }
        for header in &record.headers {
            let name = [&b"header:"[..], &header.name].concat();
            fields.push((name, header.value.to_vec()));
        }
        return Ok(fields);
    }
    let change = Change::of(delivery).map_err(Failure::Permanent)?;
    let mut fields = vec![
        text("id", change.id),
        text("version", change.version.to_string()),
        text("updated_at", change.updated_at.to_string()),
        text("deleted", u8::from(change.deleted).to_string()),
        text("data", change.data),
    ];
    if let Payload::Event(event) = &delivery.message.payload {
        let kind = event.get("event").and_then(|v| v.as_str()).unwrap_or("");
        fields.push(text("event", kind.to_string()));
    }
    Ok(fields)
}

/// The error without the URL (it may hold a password).
fn describe(err: &redis::RedisError) -> String {
    if err.is_timeout() {
        "timed out".into()
    } else if err.is_io_error() || err.is_connection_refusal() || err.is_connection_dropped() {
        "the connection failed".into()
    } else {
        err.to_string()
    }
}
