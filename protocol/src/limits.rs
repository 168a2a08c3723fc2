//! S2's limits on one append or one unary read, and its metering: the size
//! a record counts for against [`MAX_BATCH_BYTES`] and a read's `bytes`
//! limit.

/// The most records one append may hold, and one unary read return.
pub const MAX_BATCH_RECORDS: usize = 1000;

/// The most metered bytes ([`metered_size`], summed over the records) one
/// append may hold, and one unary read return: 1 MiB. So a single record's
/// body is at most this less 8 bytes.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// The longest fencing token, in bytes.
pub const MAX_FENCING_TOKEN_BYTES: usize = 36;

/// A record's metered size: a fixed 8 bytes per record, 2 per header, plus
/// every header name, header value and body byte.
///
/// `headers` are the record's `(name, value)` pairs, in any byte form.
///
/// ```
/// use rill_protocol::limits::metered_size;
///
/// assert_eq!(metered_size([("k", "vv")], b"body"), 8 + 2 + 3 + 4);
/// assert_eq!(metered_size([(b"a".as_slice(), b"".as_slice()); 2], b""), 8 + 2 * 3);
/// assert_eq!(metered_size(Vec::<(&str, &str)>::new(), b""), 8);
/// ```
pub fn metered_size<N, V>(headers: impl IntoIterator<Item = (N, V)>, body: &[u8]) -> usize
where
    N: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    8 + body.len()
        + headers
            .into_iter()
            .map(|(name, value)| 2 + name.as_ref().len() + value.as_ref().len())
            .sum::<usize>()
}
