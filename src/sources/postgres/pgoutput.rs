//! The row messages of `pgoutput`, Postgres's logical decoding output
//! (protocol version 1, text values), as the replication stream carries
//! them: a relation's description, then inserts, updates and deletes of
//! its rows, and truncates. Begin and commit are read by the replication
//! client; type and origin messages are not needed and are skipped.
//!
//! The format: <https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>.

/// One column of a relation, as the stream describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
}

/// A table as the stream describes it, before the first change of its
/// rows in a session and again after its definition changed.
#[derive(Clone, Debug, PartialEq)]
pub struct Relation {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub columns: Vec<Column>,
}

/// One column's value in a row.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Null,
    /// A large (TOASTed) value the update did not change, so not sent.
    Unchanged,
    Text(String),
}

pub type Tuple = Vec<Cell>;

#[derive(Debug, PartialEq)]
pub enum Message {
    Relation(Relation),
    Insert {
        relation: u32,
        new: Tuple,
    },
    /// `old` is the row's key columns when the key changed (replica
    /// identity default or index), or the whole old row (identity full).
    Update {
        relation: u32,
        old: Option<Tuple>,
        new: Tuple,
    },
    /// `old` holds the key columns, or the whole row (identity full).
    Delete {
        relation: u32,
        old: Tuple,
    },
    Truncate {
        relations: Vec<u32>,
    },
    /// Type and origin messages, and any this reader does not use.
    Other,
}

/// Reads one message.
pub fn decode(bytes: &[u8]) -> Result<Message, String> {
    let mut r = Reader { bytes, at: 0 };
    let message = match r.u8()? {
        b'R' => {
            let oid = r.u32()?;
            let schema = r.string()?;
            let name = r.string()?;
            let _replica_identity = r.u8()?;
            let count = r.u16()?;
            let mut columns = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let _flags = r.u8()?;
                let name = r.string()?;
                let type_oid = r.u32()?;
                let _type_modifier = r.u32()?;
                columns.push(Column { name, type_oid });
            }
            Message::Relation(Relation {
                oid,
                schema,
                name,
                columns,
            })
        }
        b'I' => {
            let relation = r.u32()?;
            r.expect(b'N')?;
            Message::Insert {
                relation,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let relation = r.u32()?;
            let (old, new) = match r.u8()? {
                b'K' | b'O' => {
                    let old = r.tuple()?;
                    r.expect(b'N')?;
                    (Some(old), r.tuple()?)
                }
                b'N' => (None, r.tuple()?),
                other => return Err(format!("an update has an unknown part `{}`", other as char)),
            };
            Message::Update { relation, old, new }
        }
        b'D' => {
            let relation = r.u32()?;
            match r.u8()? {
                b'K' | b'O' => {}
                other => return Err(format!("a delete has an unknown part `{}`", other as char)),
            }
            Message::Delete {
                relation,
                old: r.tuple()?,
            }
        }
        b'T' => {
            let count = r.u32()?;
            let _options = r.u8()?;
            let relations = (0..count).map(|_| r.u32()).collect::<Result<_, _>>()?;
            Message::Truncate { relations }
        }
        _ => Message::Other,
    };
    Ok(message)
}

/// A cursor over a message's bytes; every read checks the length.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        let end = end.ok_or("a pgoutput message ends early")?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn expect(&mut self, wanted: u8) -> Result<(), String> {
        match self.u8()? {
            got if got == wanted => Ok(()),
            got => Err(format!(
                "a pgoutput message has `{}` where `{}` belongs",
                got as char, wanted as char
            )),
        }
    }

    /// A NUL-terminated string.
    fn string(&mut self) -> Result<String, String> {
        let rest = &self.bytes[self.at..];
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or("a pgoutput string has no end")?;
        let text = String::from_utf8_lossy(&rest[..len]).into_owned();
        self.at += len + 1;
        Ok(text)
    }

    fn tuple(&mut self) -> Result<Tuple, String> {
        let count = self.u16()?;
        let mut cells = Vec::with_capacity(count as usize);
        for _ in 0..count {
            cells.push(match self.u8()? {
                b'n' => Cell::Null,
                b'u' => Cell::Unchanged,
                b't' => {
                    let len = self.u32()? as usize;
                    let text = std::str::from_utf8(self.take(len)?)
                        .map_err(|_| "a text value is not UTF-8 (is the database's encoding?)")?;
                    Cell::Text(text.to_string())
                }
                b'b' => return Err("a value came in binary format, which was not asked for".into()),
                other => return Err(format!("a value has an unknown kind `{}`", other as char)),
            });
        }
        Ok(cells)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple_bytes(cells: &[Option<&str>]) -> Vec<u8> {
        let mut out = (cells.len() as u16).to_be_bytes().to_vec();
        for cell in cells {
            match cell {
                None => out.push(b'n'),
                Some(text) => {
                    out.push(b't');
                    out.extend((text.len() as u32).to_be_bytes());
                    out.extend(text.as_bytes());
                }
            }
        }
        out
    }

    #[test]
    fn relations_and_row_changes_are_read() {
        let mut relation = vec![b'R'];
        relation.extend(16384u32.to_be_bytes());
        relation.extend(b"public\0users\0d");
        relation.extend(2u16.to_be_bytes());
        relation.extend(b"\x01id\0");
        relation.extend(23u32.to_be_bytes());
        relation.extend((-1i32).to_be_bytes());
        relation.extend(b"\x00name\0");
        relation.extend(25u32.to_be_bytes());
        relation.extend((-1i32).to_be_bytes());
        assert_eq!(
            decode(&relation).unwrap(),
            Message::Relation(Relation {
                oid: 16384,
                schema: "public".into(),
                name: "users".into(),
                columns: vec![
                    Column {
                        name: "id".into(),
                        type_oid: 23
                    },
                    Column {
                        name: "name".into(),
                        type_oid: 25
                    },
                ],
            })
        );

        let mut update = vec![b'U'];
        update.extend(16384u32.to_be_bytes());
        update.push(b'K');
        update.extend(tuple_bytes(&[Some("1"), None]));
        update.push(b'N');
        update.extend(tuple_bytes(&[Some("2"), Some("Ada")]));
        let Message::Update { old, new, .. } = decode(&update).unwrap() else {
            panic!("an update");
        };
        assert_eq!(old, Some(vec![Cell::Text("1".into()), Cell::Null]));
        assert_eq!(new, vec![Cell::Text("2".into()), Cell::Text("Ada".into())]);

        // Cut anywhere, a message is an error, never a panic.
        for cut in 0..update.len() {
            assert!(decode(&update[..cut]).is_err(), "cut at {cut}");
        }
    }
}
