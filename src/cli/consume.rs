//! `rill consume`: receive a consumer's messages, print them (or hand each
//! to a command) and ack them.

use std::io::Write;
use std::process::{Command, Stdio};

use super::output::fail;

use rill_client::{Client, Message, Outcome};
use serde_json::{json, Value};

/// How long one receive waits for messages.
const RECEIVE_WAIT_MS: u64 = 20_000;

/// Receives until `count` messages were acked (or forever). Each message
/// is printed as one JSON line and acked; with `exec`, it is written to the
/// command's stdin instead, and acked if the command exits 0, nacked (for
/// redelivery after `retry_delay_ms`) if not.
pub async fn run(
    client: &Client,
    consumer: &str,
    count: Option<u64>,
    batch: usize,
    exec: Option<String>,
    retry_delay_ms: u64,
    out: &mut impl Write,
) -> Result<(), String> {
    // Messages handled and acked; nacked ones come back and count then.
    let mut acked = 0u64;
    while count.is_none_or(|count| acked < count) {
        let want = count.map_or(batch as u64, |c| (c - acked).min(batch as u64));
        let mut output_error = None;
        client
            .work(consumer, want as usize, RECEIVE_WAIT_MS, async |message| {
                let line = message_json(message);
                if let Some(command) = exec.clone() {
                    // The command may take its time: off the async threads.
                    let ran = tokio::task::spawn_blocking(move || run_command(&command, &line))
                        .await
                        .unwrap_or_else(|e| Err(format!("the command runner failed: {e}")));
                    return match ran {
                        Ok(true) => {
                            acked += 1;
                            Outcome::Ack
                        }
                        Ok(false) => Outcome::Nack {
                            delay_ms: retry_delay_ms,
                        },
                        Err(err) => {
                            output_error = Some(err);
                            Outcome::Nack { delay_ms: 0 }
                        }
                    };
                }
                match writeln!(out, "{line}") {
                    Ok(()) => {
                        acked += 1;
                        Outcome::Ack
                    }
                    // Output closed: give the message back.
                    Err(err) => {
                        output_error = Some(format!("cannot write output: {err}"));
                        Outcome::Nack { delay_ms: 0 }
                    }
                }
            })
            .await
            .map_err(fail)?;
        if let Some(err) = output_error {
            return Err(err);
        }
        let _ = out.flush();
    }
    Ok(())
}

fn message_json(m: &Message) -> Value {
    json!({
        "seq_num": m.seq_num, "cursor": m.cursor, "timestamp": m.timestamp,
        "delivery_count": m.delivery_count, "record": m.record, "event": m.event,
    })
}

/// Runs `sh -c command` with the message on stdin; whether it exited 0.
/// Its output goes to ours.
fn run_command(command: &str, message: &Value) -> Result<bool, String> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `{command}`: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input may close it early.
        let _ = writeln!(stdin, "{message}");
    }
    let status = child
        .wait()
        .map_err(|e| format!("cannot run `{command}`: {e}"))?;
    Ok(status.success())
}
