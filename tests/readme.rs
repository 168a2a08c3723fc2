//! The README stays true: its Quick start block runs as written against a
//! live server, and every link in the docs points at a file inside the
//! repository that exists.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The fenced block that opens with ```` ```sh quickstart ````.
fn quickstart_block(readme: &str) -> String {
    let start = readme
        .find("```sh quickstart\n")
        .expect("the README has a ```sh quickstart block");
    let body = &readme[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("```").expect("the block ends")].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_runs_as_written() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let script = quickstart_block(&readme);
    let server = TestServer::start().await;
    // `rill` is this build's binary; the block's own PATH line points at
    // `target/release` of a directory where there is none.
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_rill")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let dir = tempfile::tempdir().unwrap();
    let endpoint = server.base.clone();
    let (status, out, err) = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("bash")
            .args(["-e", "-o", "pipefail", "-c", &script])
            .current_dir(dir.path())
            .env("PATH", path)
            .env("RILL_ENDPOINT", endpoint)
            .env_remove("RILL_BASIN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap();
    assert!(status.success(), "{status}\nstdout:\n{out}\nstderr:\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    let has = |line: &str| lines.contains(&line);
    for expected in [
        "appended 2 records, seq nums 0 to 1",
        "first order",
        "second order",
        "appended 1 record, seq num 2",
    ] {
        assert!(has(expected), "no `{expected}` in:\n{out}");
    }
    // The follower printed the third order as it came.
    assert_eq!(
        lines.iter().filter(|l| **l == "third order").count(),
        1,
        "{out}"
    );
    // The latest version of each record, events for every change.
    assert!(lines.iter().any(|l| l.starts_with("u1\tv2\t")), "{out}");
    assert!(lines.iter().any(|l| l.starts_with("u2\tv1\t")), "{out}");
    assert!(
        lines.iter().any(|l| l.starts_with("2\tupdated\tu1\tv2")),
        "{out}"
    );
    // The consumer got the three orders.
    let consumed: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with('{') && l.contains("\"record\""))
        .copied()
        .collect();
    assert_eq!(consumed.len(), 3, "{out}");
    assert!(consumed[2].contains("third order"), "{out}");
    assert!(!err.contains("rill:"), "an error on the way:\n{err}");
}

/// `[text](target)` links of a Markdown file that are not URLs or anchors.
fn relative_links(text: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = rest[..end].split('#').next().unwrap_or("");
        if !target.is_empty() && !target.contains("://") && !target.starts_with("mailto:") {
            links.push(target.to_string());
        }
    }
    links
}

#[test]
fn every_link_in_the_docs_is_inside_the_repository() {
    let root = PathBuf::from(ROOT).canonicalize().unwrap();
    let mut files = vec![root.join("README.md")];
    for dir in ["docs", "client"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "md") {
                files.push(entry.path());
            }
        }
    }
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for link in relative_links(&text) {
            let target = file.parent().unwrap().join(&link);
            match target.canonicalize() {
                Ok(path) if path.starts_with(&root) => {}
                Ok(_) => broken.push(format!(
                    "{}: {link} is outside the repository",
                    file.display()
                )),
                Err(_) => broken.push(format!("{}: {link} does not exist", file.display())),
            }
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
}
