//! The bookkeeping of an explicit-ack consumer: which messages are pending
//! (read from the source and not yet acked), who may have them, and when
//! each may be delivered again. Pure and clock-free (callers pass `now`), so
//! it is tested on its own.
//!
//! Everything between the ack floor (the first pending position) and the
//! frontier that is *not* pending has been acked, or was passed over by the
//! filter. So the state stays as small as what is pending, at most
//! `max_ack_pending` entries, however far apart the messages are.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::position::Position;

/// One pending message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Times delivered; 0 for a message held back by key ordering.
    pub deliveries: u32,
    /// Delivered and neither acked nor nacked: a worker holds it until
    /// `due_at`. Otherwise it waits for `due_at` (a nack's delay).
    pub in_flight: bool,
    /// Epoch ms from which it may be delivered (again).
    pub due_at: u64,
    /// Its ordering key, when the consumer orders by key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// How an ack id's delivery relates to the message's current state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// The delivery the id names is the message's latest one.
    Current,
    /// Not pending, so acked already (or passed over by the filter).
    Done,
    /// Delivered again since.
    Superseded,
    /// Never delivered with that count: not an id this consumer made.
    Unknown,
}

#[derive(Clone, Debug, Default)]
pub struct Pending {
    entries: BTreeMap<Position, Entry>,
    /// Pending entries per key, for key ordering.
    keys: HashMap<String, usize>,
}

impl Pending {
    pub fn from_entries(entries: impl IntoIterator<Item = (Position, Entry)>) -> Self {
        let mut pending = Self::default();
        for (position, entry) in entries {
            pending.insert(position, entry);
        }
        pending
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn get(&self, position: &Position) -> Option<&Entry> {
        self.entries.get(position)
    }

    pub fn positions(&self) -> impl Iterator<Item = &Position> {
        self.entries.keys()
    }

    /// The first pending position: everything before it is done.
    pub fn floor(&self) -> Option<&Position> {
        self.entries.keys().next()
    }

    pub fn in_flight(&self, now: u64) -> usize {
        self.entries
            .values()
            .filter(|e| e.in_flight && e.due_at > now)
            .count()
    }

    /// The earliest time a pending message not deliverable now becomes so.
    pub fn next_due(&self, now: u64) -> Option<u64> {
        self.entries
            .values()
            .map(|e| e.due_at)
            .filter(|&t| t > now)
            .min()
    }

    pub fn key_busy(&self, key: &str) -> bool {
        self.keys.contains_key(key)
    }

    pub fn insert(&mut self, position: Position, entry: Entry) {
        if let Some(key) = &entry.key {
            *self.keys.entry(key.clone()).or_default() += 1;
        }
        if let Some(old) = self.entries.insert(position, entry) {
            self.forget_key(old.key.as_deref());
        }
    }

    pub fn remove(&mut self, position: &Position) -> Option<Entry> {
        let entry = self.entries.remove(position)?;
        self.forget_key(entry.key.as_deref());
        Some(entry)
    }

    fn forget_key(&mut self, key: Option<&str>) {
        if let Some(key) = key {
            if let Some(count) = self.keys.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    self.keys.remove(key);
                }
            }
        }
    }

    /// The messages that may be delivered now, in order: due, and (with key
    /// ordering) the first pending message of their key.
    pub fn deliverable(&self, now: u64, ordered: bool) -> Vec<Position> {
        let mut seen_keys = HashSet::new();
        let mut out = Vec::new();
        for (position, entry) in &self.entries {
            let first_of_key = match (&entry.key, ordered) {
                (Some(key), true) => seen_keys.insert(key.as_str()),
                _ => true,
            };
            if first_of_key && entry.due_at <= now {
                out.push(position.clone());
            }
        }
        out
    }

    /// Hands the message to a worker until `now + ack_wait`.
    pub fn deliver(&mut self, position: &Position, now: u64, ack_wait: u64) -> Option<&Entry> {
        let entry = self.entries.get_mut(position)?;
        entry.deliveries += 1;
        entry.in_flight = true;
        entry.due_at = now.saturating_add(ack_wait);
        Some(entry)
    }

    /// Where the delivery numbered `deliveries` of `position` stands.
    /// `read` tells whether the frontier is past `position`.
    pub fn standing(&self, position: &Position, deliveries: u32, read: bool) -> Standing {
        match self.entries.get(position) {
            Some(entry) if entry.deliveries == deliveries && deliveries > 0 => Standing::Current,
            Some(entry) if deliveries > 0 && deliveries < entry.deliveries => Standing::Superseded,
            Some(_) => Standing::Unknown,
            None if read => Standing::Done,
            None => Standing::Unknown,
        }
    }

    /// Gives a delivered message back, to be delivered again after `delay`.
    pub fn nack(&mut self, position: &Position, now: u64, delay: u64) {
        if let Some(entry) = self.entries.get_mut(position) {
            entry.in_flight = false;
            entry.due_at = now.saturating_add(delay);
        }
    }

    /// Gives the worker another `ack_wait` from now. Returns the new
    /// deadline, or `None` if the message is not in flight.
    pub fn extend(&mut self, position: &Position, now: u64, ack_wait: u64) -> Option<u64> {
        let entry = self.entries.get_mut(position)?;
        if !entry.in_flight {
            return None;
        }
        entry.due_at = now.saturating_add(ack_wait);
        Some(entry.due_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: Option<&str>) -> Entry {
        Entry {
            deliveries: 0,
            in_flight: false,
            due_at: 0,
            key: key.map(str::to_owned),
        }
    }

    #[test]
    fn delivery_ack_and_redelivery() {
        let mut p = Pending::default();
        let a = Position::Seq(1);
        p.insert(a.clone(), entry(None));
        assert_eq!(p.deliverable(10, false), vec![a.clone()]);
        p.deliver(&a, 10, 100);
        assert_eq!(p.in_flight(10), 1);
        assert!(p.deliverable(50, false).is_empty());
        assert_eq!(p.next_due(50), Some(110));
        assert_eq!(p.standing(&a, 1, true), Standing::Current);
        // Past its ack wait it is due again; the next delivery supersedes
        // the first one's id.
        assert_eq!(p.deliverable(110, false), vec![a.clone()]);
        p.deliver(&a, 110, 100);
        assert_eq!(p.standing(&a, 1, true), Standing::Superseded);
        assert_eq!(p.standing(&a, 2, true), Standing::Current);
        p.remove(&a);
        assert_eq!(p.standing(&a, 2, true), Standing::Done);
        assert_eq!(p.standing(&Position::Seq(9), 1, false), Standing::Unknown);
        p.insert(a.clone(), entry(None));
        assert_eq!(p.standing(&a, 3, true), Standing::Unknown);
    }

    #[test]
    fn nack_delays_and_extend_holds() {
        let mut p = Pending::default();
        let a = Position::Seq(1);
        p.insert(a.clone(), entry(None));
        p.deliver(&a, 0, 100);
        assert_eq!(p.extend(&a, 90, 100), Some(190));
        assert!(p.deliverable(150, false).is_empty());
        p.nack(&a, 150, 20);
        assert_eq!(p.in_flight(150), 0);
        assert!(p.deliverable(160, false).is_empty());
        assert_eq!(p.deliverable(170, false), vec![a.clone()]);
        assert_eq!(p.extend(&a, 170, 100), None);
    }

    #[test]
    fn key_ordering_holds_later_messages_back() {
        let mut p = Pending::default();
        for (seq, key) in [(1, "x"), (2, "y"), (3, "x")] {
            p.insert(Position::Seq(seq), entry(Some(key)));
        }
        assert!(p.key_busy("x"));
        assert_eq!(
            p.deliverable(0, true),
            vec![Position::Seq(1), Position::Seq(2)]
        );
        assert_eq!(p.deliverable(0, false).len(), 3);
        p.deliver(&Position::Seq(1), 0, 100);
        assert_eq!(p.deliverable(0, true), vec![Position::Seq(2)]);
        p.remove(&Position::Seq(1));
        assert_eq!(
            p.deliverable(0, true),
            vec![Position::Seq(2), Position::Seq(3)]
        );
        p.remove(&Position::Seq(3));
        assert!(!p.key_busy("x"));
        assert_eq!(p.floor(), Some(&Position::Seq(2)));
    }
}
