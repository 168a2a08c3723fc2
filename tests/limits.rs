//! Limits of the machine that Rill adjusts to by itself, checked on the
//! real binary.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The soft and hard `Max open files` of a running process (Linux).
fn open_file_limits(pid: u32) -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut numbers = line["Max open files".len()..].split_whitespace();
    let parse = |n: Option<&str>| match n? {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    };
    Some((parse(numbers.next())?, parse(numbers.next())?))
}

#[test]
fn serve_raises_a_low_open_file_limit() {
    if !std::path::Path::new("/proc/self/limits").exists() {
        eprintln!("no /proc here: nothing to check");
        return;
    }
    // Start with a soft limit of 256, as a careful shell might.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -Sn 256 && exec "$0" serve --listen 127.0.0.1:0 --in-memory"#)
        .arg(env!("CARGO_BIN_EXE_rill"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rill starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("rill is listening") {
                let _ = tx.send(());
            }
        }
    });
    let listening = rx.recv_timeout(Duration::from_secs(60)).is_ok();
    let limits = open_file_limits(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert!(listening, "the server did not start");
    let (soft, hard) = limits.expect("the server's limits are readable");
    if hard <= 256 {
        eprintln!("the hard limit is {hard}: nothing to raise");
        return;
    }
    assert!(
        soft > 256,
        "the soft limit stayed at {soft} (hard limit {hard})"
    );
}
