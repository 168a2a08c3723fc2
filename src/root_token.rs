//! Where the root token comes from: `RILL_ROOT_TOKEN`, `--root-token-file`,
//! or, with `--auth` and neither, a new one made at first start and kept
//! in the data directory (readable by its owner only).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::api::Auth;
use crate::engine::streams::token_index::new_secret;

/// A root token shorter than this is refused: it guards everything.
pub const MIN_ROOT_TOKEN_CHARS: usize = 32;

/// The file `--auth` keeps a generated root token in.
pub const GENERATED_FILE: &str = "root-token";

/// How the operator asked for auth.
#[derive(Clone, Debug, Default)]
pub struct RootTokenFlags {
    /// The token itself (`RILL_ROOT_TOKEN`).
    pub token: Option<String>,
    /// A file holding it (`--root-token-file`).
    pub file: Option<PathBuf>,
    /// `--auth`: turn auth on even with neither, generating a token.
    pub generate: bool,
}

/// The auth mode the flags ask for.
pub fn auth_from_flags(flags: &RootTokenFlags, data_dir: Option<&Path>) -> Result<Auth, String> {
    let token = match (&flags.token, &flags.file) {
        (Some(_), Some(_)) => {
            return Err("give either RILL_ROOT_TOKEN or --root-token-file, not both".into())
        }
        (Some(token), None) => token.trim().to_string(),
        (None, Some(file)) => read_token_file(file)?,
        (None, None) if flags.generate => generated_token(data_dir)?,
        (None, None) => return Ok(Auth::Off),
    };
    if token.chars().count() < MIN_ROOT_TOKEN_CHARS || token.contains(char::is_whitespace) {
        return Err(format!(
            "the root token must be at least {MIN_ROOT_TOKEN_CHARS} characters without spaces \
             (`rill serve --auth` makes a strong one)"
        ));
    }
    Ok(Auth::with_root_token(&token))
}

fn read_token_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the root token file {}: {e}", path.display()))?;
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                "the root token file can be read by other users; `chmod 600` it"
            );
        }
    }
    Ok(text.trim().to_string())
}

/// The token `--auth` generated at an earlier start, or a new one, shown
/// once on stderr.
fn generated_token(data_dir: Option<&Path>) -> Result<String, String> {
    let Some(dir) = data_dir else {
        let token = new_secret();
        eprintln!("rill: auth is on; the root token (kept nowhere, in memory mode) is:\n{token}");
        return Ok(token);
    };
    let path = dir.join(GENERATED_FILE);
    if path.exists() {
        tracing::info!(file = %path.display(), "using the root token generated earlier");
        return read_token_file(&path);
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
    let token = new_secret();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    eprintln!(
        "rill: auth is on; a root token was generated and written to {} \
         (readable only by you). It is shown this once:\n{token}",
        path.display()
    );
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_kept_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let flags = RootTokenFlags {
            generate: true,
            ..Default::default()
        };
        assert!(auth_from_flags(&flags, Some(dir.path())).unwrap().is_on());
        let path = dir.path().join(GENERATED_FILE);
        let first = std::fs::read_to_string(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        auth_from_flags(&flags, Some(dir.path())).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
    }

    #[test]
    fn weak_or_conflicting_root_tokens_are_refused() {
        let short = RootTokenFlags {
            token: Some("hunter2".into()),
            ..Default::default()
        };
        assert!(auth_from_flags(&short, None).is_err());
        let both = RootTokenFlags {
            token: Some("x".repeat(40)),
            file: Some("/nonexistent".into()),
            generate: false,
        };
        assert!(auth_from_flags(&both, None).is_err());
        assert!(!auth_from_flags(&RootTokenFlags::default(), None)
            .unwrap()
            .is_on());
    }
}
