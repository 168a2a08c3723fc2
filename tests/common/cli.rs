//! Runs the real `rill` command line against a test server.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use super::{TestServer, BASIN};

/// What one `rill` run did.
pub struct Ran {
    pub code: Option<i32>,
    pub out: String,
    pub err: String,
}

/// Runs `rill ARGS` with `stdin`, pointed at `server` and its test basin.
pub async fn run_rill(server: &TestServer, args: &[&str], stdin: &str) -> Ran {
    let (base, args, stdin) = (
        server.base.clone(),
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        stdin.to_string(),
    );
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rill"))
            .args(&args)
            .env("RILL_ENDPOINT", &base)
            .env("RILL_BASIN", BASIN)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A command that reads no input may be gone before it is written.
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        let out = child.wait_with_output().unwrap();
        Ran {
            code: out.status.code(),
            out: String::from_utf8_lossy(&out.stdout).into_owned(),
            err: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

/// Starts `rill ARGS` against `server`; its stdout, line by line.
pub fn spawn_rill(server: &TestServer, args: &[&str]) -> (Child, Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rill"))
        .args(args)
        .env("RILL_ENDPOINT", &server.base)
        .env("RILL_BASIN", BASIN)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// The next line of a [`spawn_rill`], waiting up to 20 s.
pub fn next_line(lines: &Receiver<String>) -> String {
    lines
        .recv_timeout(Duration::from_secs(20))
        .expect("a line within 20 s")
}
