//! Naming rules for basins and streams, as in S2.

use crate::engine::error::{EngineError, EngineResult};

pub const BASIN_NAME_MIN: usize = 8;
pub const BASIN_NAME_MAX: usize = 48;
pub const STREAM_NAME_MAX: usize = 512;

/// 8–48 bytes of lowercase letters, digits and hyphens, not starting or
/// ending with a hyphen.
pub fn validate_basin_name(name: &str) -> EngineResult<()> {
    let ok_len = (BASIN_NAME_MIN..=BASIN_NAME_MAX).contains(&name.len());
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok_ends = !name.starts_with('-') && !name.ends_with('-');
    if ok_len && ok_chars && ok_ends {
        Ok(())
    } else {
        Err(EngineError::Invalid(format!(
            "invalid basin name `{name}`: it must be {BASIN_NAME_MIN} to {BASIN_NAME_MAX} bytes of \
             lowercase letters, digits and hyphens, and may not begin or end with a hyphen"
        )))
    }
}

/// 1–512 bytes, not `.` or `..`, no NUL bytes.
pub fn validate_stream_name(name: &str) -> EngineResult<()> {
    if name.is_empty() || name.len() > STREAM_NAME_MAX {
        return Err(EngineError::Invalid(format!(
            "invalid stream name: it must be 1 to {STREAM_NAME_MAX} bytes long"
        )));
    }
    if name == "." || name == ".." || name.contains('\0') {
        return Err(EngineError::Invalid(
            "invalid stream name: it may not be `.` or `..` or contain NUL bytes".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basin_names() {
        assert!(validate_basin_name("my-basin-1").is_ok());
        assert!(validate_basin_name("short").is_err());
        assert!(validate_basin_name("-leading-hyphen").is_err());
        assert!(validate_basin_name("trailing-hyphen-").is_err());
        assert!(validate_basin_name("Upper-case").is_err());
        assert!(validate_basin_name(&"a".repeat(49)).is_err());
    }

    #[test]
    fn stream_names() {
        assert!(validate_stream_name("orders/2024").is_ok());
        assert!(validate_stream_name("").is_err());
        assert!(validate_stream_name(&"s".repeat(513)).is_err());
        assert!(validate_stream_name("a\u{0}b").is_err());
        assert!(validate_stream_name("..").is_err());
    }
}
