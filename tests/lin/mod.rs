//! A linearizability checker for one stream, and the history it checks.
//!
//! Every record a client appends is unique (client and counter), so the
//! stream's final contents, read once the run is over, fix the order in
//! which the appends took effect. The checker then asks whether every
//! operation can be given a point in time, inside the interval between its
//! invocation and its completion, so that the points follow that order and
//! every observation (a read's records and tail, a check-tail, a failed
//! condition's reported state) holds at its point:
//!
//! 1. The final contents hold no duplicate, nothing no one appended, every
//!    acknowledged append exactly at the positions its ack named, and
//!    every append wholly or not at all (a failed one not at all; one with
//!    an unknown outcome either way).
//! 2. Records a read returned are the ones at those positions.
//! 3. Appends take effect in position order; an observation of tail `T`
//!    sits between the append that ends at `T` and the one that starts
//!    there; a fenced append sees its token in force. Points are assigned
//!    greedily, each as early as its invocation and its predecessor allow
//!    (observations at one boundary earliest-deadline first), which finds
//!    an assignment whenever one exists for that order.
//!
//! Timeouts and lost connections are unknown outcomes: their appends may
//! or may not have happened, and they may take effect any time after
//! their invocation.

#![allow(dead_code)] // each test binary uses a different subset

pub mod client;

use std::collections::HashMap;

/// Nanoseconds since the history began.
pub type Time = u64;

/// The completion time of an operation whose outcome is unknown.
pub const NEVER: Time = Time::MAX;

#[derive(Clone, Debug)]
pub enum Call {
    Append {
        /// Record bodies; a fence command is written `FENCE(token)`.
        records: Vec<String>,
        match_seq_num: Option<u64>,
        fencing_token: Option<String>,
    },
    Read {
        start: u64,
        count: u64,
    },
    CheckTail,
}

#[derive(Clone, Debug)]
pub enum Outcome {
    Appended {
        start: u64,
        end: u64,
    },
    /// The records read from `start` (clamped to the tail), and the tail
    /// if the read reached it (or started past it).
    Read {
        records: Vec<(u64, String)>,
        tail: Option<u64>,
    },
    Tail(u64),
    /// A `match_seq_num` that did not hold: the tail at that moment.
    SeqNumMismatch(u64),
    /// A fencing token that did not hold: the token in force then.
    FencingMismatch(String),
    /// Refused as never tried (`503 unavailable`): it must not appear.
    Refused,
    /// No answer (timeout, lost connection, server killed), or an error
    /// that leaves the outcome open (a failed write may have landed).
    Unknown,
}

#[derive(Clone, Debug)]
pub struct Op {
    pub client: usize,
    pub call: Call,
    pub invoked: Time,
    /// [`NEVER`] when the outcome is unknown.
    pub completed: Time,
    pub outcome: Outcome,
}

/// The token a fence command sets, if the record is one.
pub fn fence_token(record: &str) -> Option<&str> {
    record.strip_prefix("FENCE(")?.strip_suffix(')')
}

/// An operation that takes effect at a point: an append (at its
/// position) or an observation (at a boundary).
struct Event {
    invoked: Time,
    completed: Time,
    what: String,
}

/// The earliest point for `event` after `after`, if its interval allows.
fn place(event: &Event, after: Option<Time>) -> Result<Time, String> {
    let earliest = after.map_or(event.invoked, |p| event.invoked.max(p + 1));
    if earliest > event.completed {
        return Err(format!(
            "not linearizable: {} must take effect after {} ns, but completed at {} ns",
            event.what,
            after.unwrap_or(0),
            event.completed
        ));
    }
    Ok(earliest)
}

/// Assigns points greedily: before each append, the observers of its
/// boundary (earliest deadline first). Returns the appends' points.
fn assign(appends: &[Event], at_boundary: &[Vec<Event>]) -> Result<Vec<Time>, String> {
    let mut point: Option<Time> = None;
    let mut points = Vec::with_capacity(appends.len());
    for (k, observers) in at_boundary.iter().enumerate() {
        let mut order: Vec<&Event> = observers.iter().collect();
        order.sort_by_key(|e| e.completed);
        for observer in order {
            point = Some(place(observer, point)?);
        }
        if let Some(append) = appends.get(k) {
            let p = place(append, point)?;
            point = Some(p);
            points.push(p);
        }
    }
    Ok(points)
}

/// Checks `history` against the stream's final contents; `Err` says what
/// cannot be explained.
pub fn check(history: &[Op], stream: &[String]) -> Result<(), String> {
    // 1. The final contents against the appends.
    let mut position = HashMap::new();
    for (seq, record) in stream.iter().enumerate() {
        if position.insert(record.as_str(), seq as u64).is_some() {
            return Err(format!("record `{record}` appears twice (again at {seq})"));
        }
    }
    let mut placed: Vec<(u64, u64, usize)> = Vec::new(); // start, end, op
    let mut owned = vec![false; stream.len()];
    for (i, op) in history.iter().enumerate() {
        let Call::Append {
            records,
            match_seq_num,
            ..
        } = &op.call
        else {
            continue;
        };
        let found: Vec<Option<u64>> = records
            .iter()
            .map(|r| position.get(r.as_str()).copied())
            .collect();
        let start = found[0];
        let whole = start.is_some_and(|s| {
            found
                .iter()
                .enumerate()
                .all(|(k, p)| *p == Some(s + k as u64))
        });
        let none = found.iter().all(Option::is_none);
        match &op.outcome {
            Outcome::Appended { start: at, end } => {
                if !whole || start != Some(*at) || *end != at + records.len() as u64 {
                    return Err(format!(
                        "append {i} (client {}) was acknowledged at {at}..{end}, \
                         but the stream holds its records at {found:?}",
                        op.client
                    ));
                }
                if match_seq_num.is_some_and(|m| m != *at) {
                    return Err(format!(
                        "append {i} asked for match_seq_num {match_seq_num:?} and landed at {at}"
                    ));
                }
            }
            Outcome::SeqNumMismatch(_) | Outcome::FencingMismatch(_) | Outcome::Refused
                if !none =>
            {
                return Err(format!(
                    "append {i} failed, yet its records are in the stream"
                ));
            }
            Outcome::Unknown if !(whole || none) => {
                return Err(format!(
                    "append {i} is in the stream only in part: {found:?}"
                ));
            }
            _ => {}
        }
        if whole {
            let start = start.unwrap_or(0);
            for seq in start..start + records.len() as u64 {
                owned[seq as usize] = true;
            }
            placed.push((start, start + records.len() as u64, i));
        }
    }
    if let Some(seq) = owned.iter().position(|o| !o) {
        return Err(format!(
            "record {seq} (`{}`) was appended by no one",
            stream[seq]
        ));
    }
    placed.sort();

    // The token in force at each boundary (after the first `b` records).
    let mut token_at = Vec::with_capacity(stream.len() + 1);
    let mut token: Option<&str> = None;
    token_at.push(token);
    for record in stream {
        if let Some(t) = fence_token(record) {
            token = Some(t);
        }
        token_at.push(token);
    }
    // Boundary index of each append's start, for lookups by position.
    let boundary_of_start: HashMap<u64, usize> = placed
        .iter()
        .enumerate()
        .map(|(k, (start, _, _))| (*start, k))
        .collect();
    let boundary_of_end: HashMap<u64, usize> = placed
        .iter()
        .enumerate()
        .map(|(k, (_, end, _))| (*end, k + 1))
        .collect();
    // Boundary `k` lies after the first `k` appends; its tail:
    let tail_at = |k: usize| if k == 0 { 0 } else { placed[k - 1].1 };
    let boundary_of_tail = |t: u64| -> Option<usize> {
        if t == 0 {
            Some(0)
        } else {
            boundary_of_end.get(&t).copied()
        }
    };

    // 2. Reads against the contents; 3. observations placed at boundaries.
    let mut at_boundary: Vec<Vec<Event>> = (0..=placed.len()).map(|_| Vec::new()).collect();
    let mut at_least: Vec<(usize, Event)> = Vec::new();
    let mut fenced: Vec<(usize, String)> = Vec::new(); // op, token seen in force
    for (i, op) in history.iter().enumerate() {
        let event = || Event {
            invoked: op.invoked,
            completed: op.completed,
            what: format!(
                "op {i} (client {}: {:?} → {:?})",
                op.client, op.call, op.outcome
            ),
        };
        let exact = |tail: u64| -> Result<usize, String> {
            boundary_of_tail(tail).ok_or_else(|| {
                format!(
                    "op {i} saw tail {tail}, which no append ends at: {:?}",
                    op.outcome
                )
            })
        };
        match &op.outcome {
            Outcome::Read { records, tail } => {
                for (seq, record) in records {
                    if stream.get(*seq as usize) != Some(record) {
                        return Err(format!(
                            "op {i} read `{record}` at {seq}; the stream holds {:?} there",
                            stream.get(*seq as usize)
                        ));
                    }
                }
                if let Call::Read { start, .. } = &op.call {
                    let first = records.first().map(|(s, _)| *s);
                    let expected = (*start).min(tail.unwrap_or(u64::MAX));
                    if first.is_some_and(|f| f != expected)
                        || records.windows(2).any(|w| w[1].0 != w[0].0 + 1)
                    {
                        return Err(format!(
                            "op {i} read a gap or from the wrong place: {records:?}"
                        ));
                    }
                }
                match (tail, records.last()) {
                    (Some(tail), last) => {
                        if last.is_some_and(|(seq, _)| seq + 1 != *tail) {
                            return Err(format!("op {i} read up to {last:?} yet saw tail {tail}"));
                        }
                        at_boundary[exact(*tail)?].push(event());
                    }
                    (None, Some((seq, _))) => {
                        // Everything up to `seq` was there: after the append
                        // that holds it.
                        let k = placed.partition_point(|(start, _, _)| *start <= *seq);
                        at_least.push((k, event()));
                    }
                    (None, None) => {}
                }
            }
            Outcome::Tail(tail) | Outcome::SeqNumMismatch(tail) => {
                at_boundary[exact(*tail)?].push(event());
            }
            Outcome::FencingMismatch(current) => fenced.push((i, current.clone())),
            Outcome::Appended { start, .. } => {
                if let Call::Append {
                    fencing_token: Some(wanted),
                    ..
                } = &op.call
                {
                    let k = boundary_of_start[start];
                    if token_at[tail_at(k) as usize] != Some(wanted.as_str()) {
                        return Err(format!(
                            "append {i} with fencing token `{wanted}` succeeded at {start}, \
                             where the token in force was {:?}",
                            token_at[tail_at(k) as usize]
                        ));
                    }
                }
            }
            Outcome::Unknown | Outcome::Refused => {}
        }
    }

    // 3. Points, greedily: appends in position order, each boundary's
    // observations between them, earliest deadline first. A fencing
    // refusal saw a token in force, so it may sit at any boundary from the
    // fence command that set it to the next one: it takes the latest one
    // that keeps everything placeable.
    let appends: Vec<Event> = placed
        .iter()
        .map(|(start, end, i)| {
            let op = &history[*i];
            Event {
                invoked: op.invoked,
                completed: op.completed,
                what: format!("append {i} (client {}) at {start}..{end}", op.client),
            }
        })
        .collect();
    assign(&appends, &at_boundary)?;
    for (i, current) in fenced {
        let op = &history[i];
        let range: Vec<usize> = (0..=placed.len())
            .filter(|k| token_at[tail_at(*k) as usize] == Some(current.as_str()))
            .collect();
        if range.is_empty() {
            return Err(format!(
                "op {i} was refused for fencing token `{current}`, which was never in force"
            ));
        }
        let event = || Event {
            invoked: op.invoked,
            completed: op.completed,
            what: format!(
                "op {i} (client {}: refused, token `{current}` in force)",
                op.client
            ),
        };
        let mut last_error = String::new();
        let mut fits = false;
        for &k in range.iter().rev() {
            at_boundary[k].push(event());
            match assign(&appends, &at_boundary) {
                Ok(_) => {
                    fits = true;
                    break;
                }
                Err(err) => {
                    at_boundary[k].pop();
                    last_error = err;
                }
            }
        }
        if !fits {
            return Err(last_error);
        }
    }
    let append_points = assign(&appends, &at_boundary)?;
    for (k, observer) in &at_least {
        let after = k.checked_sub(1).map(|k| append_points[k]);
        place(observer, after)?;
    }
    Ok(())
}
