//! What a fjall or file error means to the engine: a locked directory, a
//! damaged file (refuse to serve), a full disk (told apart, wherever in
//! the chain of causes it sits), or another I/O error.

use super::kv::StorageError;

pub(super) fn io(err: fjall::Error) -> StorageError {
    if matches!(err, fjall::Error::Locked) {
        return StorageError::Io(
            "the data directory is locked: another rill serve (or rill repair) is using it".into(),
        );
    }
    if matches!(err, fjall::Error::JournalRecovery(_)) {
        return StorageError::Corrupt(format!(
            "the storage journal is damaged and fjall will not replay it ({err}); keep a copy \
             of the data directory: nothing was served"
        ));
    }
    if is_damage(&err) {
        return StorageError::Corrupt(format!(
            "a storage file failed its checks ({err}): a table or journal file is damaged; keep \
             a copy of the data directory"
        ));
    }
    classify(&err, err.to_string())
}

/// Errors that mean bytes on disk are not what fjall wrote: a checksum
/// that does not match, a block or trailer that does not decode.
fn is_damage(err: &fjall::Error) -> bool {
    use fjall::LsmError;
    match err {
        fjall::Error::Storage(inner) => matches!(
            inner,
            LsmError::ChecksumMismatch { .. }
                | LsmError::Decompress(_)
                | LsmError::InvalidVersion(_)
                | LsmError::Unrecoverable
                | LsmError::InvalidTag(_)
                | LsmError::InvalidTrailer
                | LsmError::InvalidHeader(_)
                | LsmError::Utf8(_)
        ),
        fjall::Error::InvalidVersion(_)
        | fjall::Error::Decompress(_)
        | fjall::Error::InvalidTrailer
        | fjall::Error::InvalidTag(_) => true,
        _ => false,
    }
}

/// A full disk is told apart, wherever in the chain of causes the I/O
/// error sits: the client and the operator get a different answer.
fn classify(err: &(dyn std::error::Error + 'static), message: String) -> StorageError {
    let mut cause = Some(err);
    while let Some(current) = cause {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::StorageFull || io.raw_os_error() == Some(28) {
                return StorageError::Full(message);
            }
        }
        cause = current.source();
    }
    StorageError::Io(message)
}

pub(super) fn file_error(err: std::io::Error) -> StorageError {
    let message = err.to_string();
    classify(&err, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_told_apart_from_other_io_errors() {
        let full = fjall::Error::Io(std::io::Error::from_raw_os_error(28));
        assert!(matches!(io(full), StorageError::Full(_)));
        let other = fjall::Error::Io(std::io::Error::other("broken"));
        assert!(matches!(io(other), StorageError::Io(_)));
    }
}
