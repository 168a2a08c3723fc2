//! `rill consume`: receive a consumer's messages, print them (or hand each
//! to a command) and ack them; `rill replay`: deliver dead letters again.

use std::io::Write;
use std::process::{Command, Stdio};

use super::output::{fail, line, Failure};

use rill_client::{Client, Message, Outcome};
use serde_json::{json, Value};

/// How long one receive waits for messages.
const RECEIVE_WAIT_MS: u64 = 20_000;

/// Receives until `count` messages were handled (or forever). Each message
/// is printed as one JSON line and acked; with `exec`, it is written to the
/// command's stdin instead, and acked if the command exits 0, nacked (for
/// redelivery after `retry_delay_ms`) if not, which is said on stderr.
/// With `count`, ends by saying how many were acked and how many failed.
pub async fn run(
    client: &Client,
    consumer: &str,
    count: Option<u64>,
    batch: usize,
    exec: Option<String>,
    retry_delay_ms: u64,
    out: &mut impl Write,
) -> Result<(), Failure> {
    // Messages handled: acked, or failed and nacked (a failed one that
    // comes back counts again).
    let (mut acked, mut failed) = (0u64, 0u64);
    while count.is_none_or(|count| acked + failed < count) {
        let handled = acked + failed;
        let want = count.map_or(batch as u64, |c| (c - handled).min(batch as u64));
        let mut output_error = None;
        client
            .work(consumer, want as usize, RECEIVE_WAIT_MS, async |message| {
                let line = message_json(message);
                let position = match &message.cursor {
                    Some(cursor) => format!("cursor {cursor}"),
                    None => format!("seq num {}", message.seq_num.unwrap_or_default()),
                };
                if let Some(command) = exec.clone() {
                    // The command may take its time: off the async threads.
                    let ran = tokio::task::spawn_blocking(move || run_command(&command, &line))
                        .await
                        .unwrap_or_else(|e| Err(format!("the command runner failed: {e}")));
                    return match ran {
                        Ok(status) if status.success() => {
                            acked += 1;
                            Outcome::Ack
                        }
                        Ok(status) => {
                            failed += 1;
                            eprintln!(
                                "rill: the message at {position} (delivery {}) failed: `{}` \
                                 ended with {status}; it comes back in {retry_delay_ms} ms",
                                message.delivery_count,
                                exec.as_deref().unwrap_or_default()
                            );
                            Outcome::Nack {
                                delay_ms: retry_delay_ms,
                            }
                        }
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
            return Err(err.into());
        }
        let _ = out.flush();
    }
    if count.is_some() {
        eprintln!(
            "handled {} messages: {acked} acked, {failed} failed",
            acked + failed
        );
    }
    Ok(())
}

fn message_json(m: &Message) -> Value {
    json!({
        "seq_num": m.seq_num, "cursor": m.cursor, "timestamp": m.timestamp,
        "delivery_count": m.delivery_count, "record": m.record, "event": m.event,
    })
}

/// Runs `sh -c command` with the message on stdin; how it exited. Its
/// output goes to ours.
fn run_command(command: &str, message: &Value) -> Result<std::process::ExitStatus, String> {
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
    child
        .wait()
        .map_err(|e| format!("cannot run `{command}`: {e}"))
}

/// Replays dead letters and says what became of each: one line per
/// outcome that has any (or the answer as JSON). Some gone is not a
/// failure: the rest were replayed, and the line says which were not.
pub async fn replay(
    client: &Client,
    consumer: &str,
    dead_letters: &[u64],
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let outcome = client.replay(consumer, dead_letters).await.map_err(fail)?;
    let list = |seqs: &[u64]| {
        seqs.iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let text = if json_out {
        json!({
            "replayed": outcome.replayed,
            "already_pending": outcome.already_pending,
            "gone": outcome.gone,
        })
        .to_string()
    } else {
        [
            ("replayed", &outcome.replayed),
            ("already pending", &outcome.already_pending),
            ("gone from the source", &outcome.gone),
        ]
        .iter()
        .filter(|(_, seqs)| !seqs.is_empty())
        .map(|(what, seqs)| format!("{what}: {}", list(seqs)))
        .collect::<Vec<_>>()
        .join("\n")
    };
    line(out, text)
}
