//! The protobuf messages of the S2 v1 API (defined in the shared
//! `rill-protocol` crate, which the client uses too) and their conversions
//! to and from engine types.

use bytes::Bytes;

pub use rill_protocol::messages::*;

use crate::engine::streams::types;

impl From<types::StreamPosition> for StreamPosition {
    fn from(p: types::StreamPosition) -> Self {
        Self {
            seq_num: p.seq_num,
            timestamp: p.timestamp,
        }
    }
}

impl From<types::AppendAck> for AppendAck {
    fn from(ack: types::AppendAck) -> Self {
        Self {
            start: Some(ack.start.into()),
            end: Some(ack.end.into()),
            tail: Some(ack.tail.into()),
        }
    }
}

impl From<AppendInput> for types::AppendInput {
    fn from(input: AppendInput) -> Self {
        types::AppendInput {
            records: input
                .records
                .into_iter()
                .map(|r| types::AppendRecord {
                    timestamp: r.timestamp,
                    headers: r
                        .headers
                        .into_iter()
                        .map(|h| types::Header {
                            name: h.name,
                            value: h.value,
                        })
                        .collect(),
                    body: r.body,
                })
                .collect(),
            match_seq_num: input.match_seq_num,
            fencing_token: input.fencing_token,
        }
    }
}

impl From<&types::ReadBatch> for ReadBatch {
    fn from(batch: &types::ReadBatch) -> Self {
        Self {
            records: batch
                .records
                .iter()
                .map(|r| SequencedRecord {
                    seq_num: r.seq_num,
                    timestamp: r.timestamp,
                    headers: r
                        .headers
                        .iter()
                        .map(|h| Header {
                            name: h.name.clone(),
                            value: h.value.clone(),
                        })
                        .collect(),
                    body: r.body.clone(),
                })
                .collect(),
            tail: batch.tail.map(Into::into),
        }
    }
}

/// Walks the fields of one protobuf message without decoding it, calling
/// `field` with each field number and, for length-delimited fields, their
/// bytes. `None` if the message is malformed.
fn walk_fields(
    mut buf: &[u8],
    mut field: impl FnMut(u32, Option<&[u8]>) -> Option<()>,
) -> Option<()> {
    use prost::encoding::{decode_key, decode_varint, WireType};
    while !buf.is_empty() {
        let (tag, wire_type) = decode_key(&mut buf).ok()?;
        match wire_type {
            WireType::Varint => {
                decode_varint(&mut buf).ok()?;
                field(tag, None)?;
            }
            WireType::LengthDelimited => {
                let len = usize::try_from(decode_varint(&mut buf).ok()?).ok()?;
                let (bytes, rest) = (buf.get(..len)?, buf.get(len..)?);
                field(tag, Some(bytes))?;
                buf = rest;
            }
            WireType::SixtyFourBit => buf = buf.get(8..)?,
            WireType::ThirtyTwoBit => buf = buf.get(4..)?,
            WireType::StartGroup | WireType::EndGroup => return None,
        }
    }
    Some(())
}

/// The number of records and their metered size in an encoded
/// `AppendInput`, found without building it: a 2 MiB message can hold a
/// million empty records or headers, so limits are checked first.
/// `None` if the message is malformed.
pub fn append_input_extent(buf: &[u8]) -> Option<(usize, usize)> {
    let (mut records, mut metered) = (0usize, 0usize);
    walk_fields(buf, |tag, bytes| {
        if tag == 1 {
            records += 1;
            metered += 8;
            walk_fields(bytes?, |tag, bytes| {
                match tag {
                    // A header: 2 metered bytes plus its name and value.
                    2 => {
                        metered += 2;
                        walk_fields(bytes?, |_, part| {
                            metered += part.map_or(0, <[u8]>::len);
                            Some(())
                        })?;
                    }
                    3 => metered += bytes?.len(),
                    _ => {}
                }
                Some(())
            })?;
        }
        Some(())
    })?;
    Some((records, metered))
}

/// Decodes an `AppendInput`, refusing more records than an append may hold.
pub fn decode_append_input(bytes: Bytes) -> Result<types::AppendInput, String> {
    let (count, metered) = append_input_extent(&bytes).ok_or("malformed AppendInput message")?;
    if count > types::MAX_BATCH_RECORDS {
        return Err(format!(
            "an append may contain at most {} records, got {count}",
            types::MAX_BATCH_RECORDS
        ));
    }
    if metered > types::MAX_BATCH_BYTES {
        return Err(format!(
            "an append may contain at most {} metered bytes",
            types::MAX_BATCH_BYTES
        ));
    }
    prost::Message::decode(bytes)
        .map(|input: AppendInput| input.into())
        .map_err(|e| format!("malformed AppendInput message: {e}"))
}

/// An empty batch carrying only the tail: a session heartbeat.
pub fn heartbeat(tail: types::StreamPosition) -> ReadBatch {
    ReadBatch {
        records: Vec::new(),
        tail: Some(tail.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn counts_records_without_decoding() {
        let input = AppendInput {
            records: vec![
                AppendRecord {
                    timestamp: Some(5),
                    headers: vec![],
                    body: Bytes::from_static(b"x"),
                };
                3
            ],
            match_seq_num: Some(9),
            fencing_token: Some("t".into()),
        };
        let bytes = input.encode_to_vec();
        assert_eq!(append_input_extent(&bytes), Some((3, 3 * 9)));
        assert_eq!(
            decode_append_input(Bytes::from(bytes))
                .unwrap()
                .records
                .len(),
            3
        );
        assert_eq!(append_input_extent(&[0x0a, 0x05, 0x01]), None);
        let many: Vec<u8> = std::iter::repeat_n([0x0a, 0x00], 1001).flatten().collect();
        assert!(decode_append_input(Bytes::from(many)).is_err());
        // One record with a million empty headers is refused unbuilt.
        let headers: Vec<u8> = std::iter::repeat_n([0x12, 0x00], 1_000_000)
            .flatten()
            .collect();
        let mut record = vec![0x0a];
        prost::encoding::encode_varint(headers.len() as u64, &mut record);
        record.extend_from_slice(&headers);
        assert!(decode_append_input(Bytes::from(record)).is_err());
    }
}
