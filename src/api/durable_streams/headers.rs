//! The protocol's headers: their names, and the request headers parsed
//! into what the engine takes.

use std::time::UNIX_EPOCH;

use axum::http::{HeaderMap, HeaderValue};

use crate::engine::durable_streams::meta::normalize_content_type;
use crate::engine::durable_streams::Expiry;
use crate::engine::streams::token_index::parse_time;
use crate::engine::streams::types::ProducerClaim;

pub const NEXT_OFFSET: &str = "stream-next-offset";
pub const UP_TO_DATE: &str = "stream-up-to-date";
pub const CLOSED: &str = "stream-closed";
pub const CURSOR: &str = "stream-cursor";
pub const TTL: &str = "stream-ttl";
pub const EXPIRES_AT: &str = "stream-expires-at";
pub const WRITER_SEQ: &str = "stream-seq";
pub const SSE_DATA_ENCODING: &str = "stream-sse-data-encoding";
pub const PRODUCER_ID: &str = "producer-id";
pub const PRODUCER_EPOCH: &str = "producer-epoch";
pub const PRODUCER_SEQ: &str = "producer-seq";
pub const PRODUCER_EXPECTED_SEQ: &str = "producer-expected-seq";
pub const PRODUCER_RECEIVED_SEQ: &str = "producer-received-seq";
pub const FORKED_FROM: &str = "stream-forked-from";
pub const FORK_OFFSET: &str = "stream-fork-offset";
pub const FORK_SUB_OFFSET: &str = "stream-fork-sub-offset";

/// Every header a browser client may send or must be let to read.
pub const REQUEST_HEADERS: &str = "content-type, if-none-match, authorization, stream-ttl, \
    stream-expires-at, stream-closed, stream-seq, producer-id, producer-epoch, producer-seq, \
    stream-forked-from, stream-fork-offset, stream-fork-sub-offset";
pub const EXPOSED_HEADERS: &str = "stream-next-offset, stream-cursor, stream-up-to-date, \
    stream-closed, stream-ttl, stream-expires-at, stream-sse-data-encoding, producer-epoch, \
    producer-seq, producer-expected-seq, producer-received-seq, etag, location, content-type";

/// The largest integer a JavaScript client holds exactly (2^53 − 1).
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// The longest `Producer-Id` and `Stream-Seq`: both are kept with the
/// stream (the writer sequence is rewritten with every append).
pub const MAX_ID_BYTES: usize = 256;

fn text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, String> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|v| Some(v.trim()))
            .map_err(|_| format!("{name} is not text")),
    }
}

/// `Stream-Closed: true`, in any case; any other value counts as absent.
pub fn closes(headers: &HeaderMap) -> bool {
    headers
        .get(CLOSED)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The `Content-Type` as streams compare it; `None` when absent.
pub fn content_type(headers: &HeaderMap) -> Option<String> {
    let given = headers.get(axum::http::header::CONTENT_TYPE)?;
    Some(normalize_content_type(given.to_str().unwrap_or("")))
}

/// `Stream-TTL` (whole seconds, plain decimal) or `Stream-Expires-At`
/// (RFC 3339); not both.
pub fn expiry(headers: &HeaderMap) -> Result<Expiry, String> {
    let ttl = text(headers, TTL)?;
    let at = text(headers, EXPIRES_AT)?;
    match (ttl, at) {
        (Some(_), Some(_)) => Err("give Stream-TTL or Stream-Expires-At, not both".into()),
        (Some(ttl), None) => plain_integer(ttl).map(Expiry::Ttl).ok_or_else(|| {
            format!("Stream-TTL must be whole seconds in plain decimal, got {ttl:?}")
        }),
        (None, Some(at)) => {
            let time = parse_time(at).map_err(|e| format!("Stream-Expires-At: {e}"))?;
            let ms = time
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            Ok(Expiry::At(ms))
        }
        (None, None) => Ok(Expiry::Never),
    }
}

/// A non-negative integer written plainly: digits, no sign, no leading
/// zero (but `0` itself).
pub fn plain_integer(text: &str) -> Option<u64> {
    let plain = text == "0"
        || (!text.is_empty() && !text.starts_with('0') && text.bytes().all(|b| b.is_ascii_digit()));
    text.parse().ok().filter(|_| plain)
}

/// `Producer-Id`, `-Epoch` and `-Seq`: all three or none.
pub fn producer(headers: &HeaderMap) -> Result<Option<ProducerClaim>, String> {
    let id = text(headers, PRODUCER_ID)?;
    let epoch = text(headers, PRODUCER_EPOCH)?;
    let seq = text(headers, PRODUCER_SEQ)?;
    let (id, epoch, seq) = match (id, epoch, seq) {
        (None, None, None) => return Ok(None),
        (Some(id), Some(epoch), Some(seq)) => (id, epoch, seq),
        _ => return Err("give Producer-Id, Producer-Epoch and Producer-Seq together".into()),
    };
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(format!("Producer-Id must be 1 to {MAX_ID_BYTES} bytes"));
    }
    let number = |name: &str, value: &str| {
        value
            .parse::<u64>()
            .ok()
            .filter(|n| value.bytes().all(|b| b.is_ascii_digit()) && *n <= MAX_SAFE_INTEGER)
            .ok_or_else(|| format!("{name} must be an integer from 0 to 2^53-1, got {value:?}"))
    };
    Ok(Some(ProducerClaim {
        id: id.to_string(),
        epoch: number(PRODUCER_EPOCH, epoch)?,
        seq: number(PRODUCER_SEQ, seq)?,
    }))
}

/// `Stream-Seq`, the writer sequence.
pub fn writer_seq(headers: &HeaderMap) -> Result<Option<String>, String> {
    match text(headers, WRITER_SEQ)? {
        Some(seq) if seq.len() > MAX_ID_BYTES => {
            Err(format!("Stream-Seq may be at most {MAX_ID_BYTES} bytes"))
        }
        seq => Ok(seq.map(str::to_string)),
    }
}

/// Sets a header from any displayable value (offsets, numbers, `true`).
pub fn set(headers: &mut HeaderMap, name: &'static str, value: impl ToString) {
    if let Ok(value) = HeaderValue::from_str(&value.to_string()) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn ttls_are_plain_decimal_seconds() {
        assert_eq!(expiry(&with(&[(TTL, "3600")])), Ok(Expiry::Ttl(3600)));
        assert_eq!(expiry(&with(&[(TTL, "0")])), Ok(Expiry::Ttl(0)));
        for bad in [
            "00060",
            "+60",
            "60.5",
            "1e3",
            "",
            "-1",
            "99999999999999999999999",
        ] {
            assert!(expiry(&with(&[(TTL, bad)])).is_err(), "{bad:?}");
        }
        assert_eq!(
            expiry(&with(&[(EXPIRES_AT, "1970-01-01T00:00:01+00:00")])),
            Ok(Expiry::At(1000))
        );
        assert!(expiry(&with(&[(EXPIRES_AT, "not-a-timestamp")])).is_err());
        assert!(expiry(&with(&[(TTL, "5"), (EXPIRES_AT, "2030-01-01T00:00:00Z")])).is_err());
    }

    #[test]
    fn producer_headers_come_together_and_within_javascript_integers() {
        let claim = producer(&with(&[
            (PRODUCER_ID, "p"),
            (PRODUCER_EPOCH, "2"),
            (PRODUCER_SEQ, "9007199254740991"),
        ]));
        assert_eq!(
            claim,
            Ok(Some(ProducerClaim {
                id: "p".into(),
                epoch: 2,
                seq: (1 << 53) - 1
            }))
        );
        assert_eq!(producer(&HeaderMap::new()), Ok(None));
        for bad in [
            vec![(PRODUCER_ID, "p"), (PRODUCER_EPOCH, "0")],
            vec![
                (PRODUCER_ID, ""),
                (PRODUCER_EPOCH, "0"),
                (PRODUCER_SEQ, "0"),
            ],
            vec![
                (PRODUCER_ID, "p"),
                (PRODUCER_EPOCH, "-1"),
                (PRODUCER_SEQ, "0"),
            ],
            vec![
                (PRODUCER_ID, "p"),
                (PRODUCER_EPOCH, "0"),
                (PRODUCER_SEQ, "1.5"),
            ],
            vec![
                (PRODUCER_ID, "p"),
                (PRODUCER_EPOCH, "0"),
                (PRODUCER_SEQ, "+1"),
            ],
            vec![
                (PRODUCER_ID, "p"),
                (PRODUCER_EPOCH, "9007199254740992"),
                (PRODUCER_SEQ, "0"),
            ],
        ] {
            assert!(producer(&with(&bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_true_closes() {
        assert!(closes(&with(&[(CLOSED, "TRUE")])));
        for other in ["false", "yes", "1", ""] {
            assert!(!closes(&with(&[(CLOSED, other)])), "{other:?}");
        }
    }
}
