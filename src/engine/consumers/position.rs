//! Positions in a consumer's source. A stream (or a collection's events
//! stream) is ordered by seq num; a collection's records feed by
//! `(updated_at, id)`, the order of the `/updated` cursor.

use serde::{Deserialize, Serialize};

use crate::engine::collections::Cursor;

/// Where one message sits in its source.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Position {
    Seq(u64),
    Change(u64, String),
}

impl Position {
    /// The key bytes, ordered as positions are: a big-endian seq num, or a
    /// big-endian `updated_at` followed by the record id (never empty, so
    /// the two never collide).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Position::Seq(seq) => seq.to_be_bytes().to_vec(),
            Position::Change(t, id) => [&t.to_be_bytes()[..], id.as_bytes()].concat(),
        }
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let head = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        match &bytes[8..] {
            [] => Some(Position::Seq(head)),
            rest => Some(Position::Change(
                head,
                String::from_utf8(rest.to_vec()).ok()?,
            )),
        }
    }

    /// The frontier just past this message.
    pub fn next(&self) -> Frontier {
        match self {
            Position::Seq(seq) => Frontier::Seq(seq.saturating_add(1)),
            Position::Change(t, id) => Frontier::Change {
                updated_after: *t,
                after_id: Some(id.clone()),
            },
        }
    }
}

/// How far into its source a consumer has read: every message before it has
/// been taken (delivered, or passed over by the filter).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Frontier {
    /// The next seq num to read.
    Seq(u64),
    /// Strictly after `(updated_after, after_id)`, as a `/updated` cursor.
    Change {
        updated_after: u64,
        after_id: Option<String>,
    },
}

impl Frontier {
    /// Whether `position` lies before this frontier (was already read).
    pub fn is_past(&self, position: &Position) -> bool {
        match (self, position) {
            (Frontier::Seq(next), Position::Seq(seq)) => seq < next,
            (
                Frontier::Change {
                    updated_after,
                    after_id,
                },
                Position::Change(t, id),
            ) => match after_id {
                Some(after_id) => (t, id) <= (updated_after, after_id),
                None => t <= updated_after,
            },
            _ => false,
        }
    }

    /// Whether `self` is strictly ahead of `other`.
    pub fn is_ahead_of(&self, other: &Frontier) -> bool {
        match (self, other) {
            (Frontier::Seq(a), Frontier::Seq(b)) => a > b,
            (
                Frontier::Change {
                    updated_after: ta,
                    after_id: ia,
                },
                Frontier::Change {
                    updated_after: tb,
                    after_id: ib,
                },
            ) => {
                // No id sorts after every id at that time.
                let rank = |id: &Option<String>| (id.is_none(), id.clone().unwrap_or_default());
                (ta, rank(ia)) > (tb, rank(ib))
            }
            _ => false,
        }
    }

    pub fn to_cursor(&self, started_at: u64) -> Cursor {
        match self {
            Frontier::Seq(_) => Cursor::default(),
            Frontier::Change {
                updated_after,
                after_id,
            } => Cursor {
                updated_after: *updated_after,
                after_id: after_id.clone(),
                started_at,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_and_order() {
        let positions = [
            Position::Seq(0),
            Position::Seq(255),
            Position::Seq(256),
            Position::Change(5, "a".into()),
            Position::Change(5, "b".into()),
            Position::Change(6, "a".into()),
        ];
        for p in &positions {
            assert_eq!(Position::from_bytes(&p.to_bytes()).as_ref(), Some(p));
        }
        for pair in positions[..3].windows(2) {
            assert!(pair[0].to_bytes() < pair[1].to_bytes());
        }
        for pair in positions[3..].windows(2) {
            assert!(pair[0].to_bytes() < pair[1].to_bytes());
        }
        assert_eq!(Position::from_bytes(&[1, 2]), None);
    }

    #[test]
    fn frontiers() {
        let f = Position::Seq(4).next();
        assert!(f.is_past(&Position::Seq(4)));
        assert!(!f.is_past(&Position::Seq(5)));
        let f = Position::Change(5, "b".into()).next();
        assert!(f.is_past(&Position::Change(5, "a".into())));
        assert!(f.is_past(&Position::Change(5, "b".into())));
        assert!(!f.is_past(&Position::Change(5, "c".into())));
        let whole_ms = Frontier::Change {
            updated_after: 5,
            after_id: None,
        };
        assert!(whole_ms.is_past(&Position::Change(5, "zzz".into())));
        assert!(whole_ms.is_ahead_of(&f));
        assert!(!f.is_ahead_of(&whole_ms));
        assert!(Frontier::Seq(3).is_ahead_of(&Frontier::Seq(2)));
    }
}
