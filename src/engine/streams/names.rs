//! Names, validated once. A name arrives as text at the edge (a path, a
//! header, a JSON body) and is parsed there into one of these types; the
//! engine's creating operations take the types, so a name that reaches
//! them is known to be valid. Lookups take plain `&str`: a name that
//! could never have been created is simply not found.

use crate::engine::error::{EngineError, EngineResult};

pub const BASIN_NAME_MIN: usize = 8;
pub const BASIN_NAME_MAX: usize = 48;
pub const STREAM_NAME_MAX: usize = 512;

/// A validated name type, for code that parses names of any kind (the
/// HTTP extractors).
pub trait ValidName: Sized {
    /// The name, if `text` is a valid one; `invalid` otherwise.
    fn parse_text(text: String) -> EngineResult<Self>;
}

/// Declares a validated name type: a `String` that only `parse` makes.
macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $validate:path) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The name, if `text` is a valid one; `invalid` otherwise.
            pub fn parse(text: impl Into<String>) -> EngineResult<Self> {
                let text = text.into();
                $validate(&text)?;
                Ok(Self(text))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl $crate::engine::streams::names::ValidName for $name {
            fn parse_text(text: String) -> $crate::engine::error::EngineResult<Self> {
                Self::parse(text)
            }
        }

        impl From<&$name> for String {
            fn from(name: &$name) -> String {
                name.0.clone()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
pub(crate) use name_type;

name_type!(
    /// A basin name: 8–48 bytes of lowercase letters, digits and hyphens,
    /// not starting or ending with a hyphen (as in S2).
    BasinName,
    validate_basin_name
);

name_type!(
    /// A stream name: 1–512 bytes, not `.` or `..`, no NUL bytes (as in S2).
    StreamName,
    validate_stream_name
);

/// 8–48 bytes of lowercase letters, digits and hyphens, not starting or
/// ending with a hyphen.
fn validate_basin_name(name: &str) -> EngineResult<()> {
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
pub(crate) fn validate_stream_name(name: &str) -> EngineResult<()> {
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
    fn names_parse_once() {
        assert_eq!(
            BasinName::parse("my-basin-1").unwrap().as_str(),
            "my-basin-1"
        );
        assert!(BasinName::parse("short").is_err());
        let stream = StreamName::parse("orders/2024").unwrap();
        assert_eq!(&*stream, "orders/2024");
        assert_eq!(stream.to_string(), "orders/2024");
        assert!(StreamName::parse("..").is_err());
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
