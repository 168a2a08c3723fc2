//! The official S2 CLI, for the tests that run it against Rill.

use std::path::PathBuf;
use std::process::Command;

/// The official S2 CLI, if there is one: `S2_CLI`, or where
/// `scripts/install-s2-cli.sh` installs it. Building it takes about 15
/// minutes on two cores, so a plain `cargo test` does not: the tests that
/// need it say they skip and pass. `.ci/run` installs it and sets
/// `RILL_REQUIRE_S2_CLI=1`, which makes a missing CLI a failure.
pub fn s2_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("S2_CLI") {
        return Some(PathBuf::from(path));
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install-s2-cli.sh");
    let output = Command::new("bash")
        .args([script, "--installed"])
        .output()
        .expect("the install script runs");
    if output.status.success() {
        return Some(PathBuf::from(
            String::from_utf8(output.stdout).unwrap().trim(),
        ));
    }
    assert!(
        std::env::var_os("RILL_REQUIRE_S2_CLI").is_none(),
        "RILL_REQUIRE_S2_CLI is set and the S2 CLI is not installed (S2_CLI=$(scripts/install-s2-cli.sh))"
    );
    // Straight to stderr, past the test harness's capture: a skip is said.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: the official S2 CLI is not installed; to run these tests: \
         S2_CLI=$(scripts/install-s2-cli.sh) cargo test"
    );
    None
}
