//! The real `rill` binary serving a data directory on a loopback port it
//! picks, for tests that kill it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A `rill serve` process; its address is read from its log.
pub struct RillProcess {
    child: Child,
    pub base: String,
    /// What it logged after it started listening.
    log: Arc<Mutex<Vec<String>>>,
}

impl RillProcess {
    pub fn start(data_dir: &std::path::Path) -> Self {
        Self::try_start(data_dir).unwrap_or_else(|said| panic!("rill did not start: {said}"))
    }

    /// Starts `rill serve`: the process once it listens, or everything it
    /// said if it exited first (a refused store, say).
    pub fn try_start(data_dir: &std::path::Path) -> Result<Self, String> {
        Self::try_start_with(data_dir, &[])
    }

    /// [`Self::try_start`] with more flags for `rill serve`.
    pub fn try_start_with(data_dir: &std::path::Path, flags: &[&str]) -> Result<Self, String> {
        Self::try_start_at(data_dir, "127.0.0.1:0", flags)
    }

    /// Starts it listening at `listen` (the address it had before a kill,
    /// say, so that what points at it still does).
    pub fn start_at(data_dir: &std::path::Path, listen: &str) -> Self {
        Self::try_start_at(data_dir, listen, &[])
            .unwrap_or_else(|said| panic!("rill did not start: {said}"))
    }

    fn try_start_at(
        data_dir: &std::path::Path,
        listen: &str,
        flags: &[&str],
    ) -> Result<Self, String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rill"))
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(flags)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rill starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            let mut said = String::new();
            // RILL_TEST_LOG=1 shows the server's log with the test's output.
            let echo = std::env::var_os("RILL_TEST_LOG").is_some();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("rill: {line}");
                }
                if !sent && line.contains("rill is listening") {
                    if let Some(addr) = line.split("addr=").nth(1) {
                        let addr = addr.split_whitespace().next().unwrap_or("").to_string();
                        let _ = tx.send(Ok(addr));
                        sent = true;
                    }
                } else if !sent {
                    said.push_str(&line);
                    said.push('\n');
                } else {
                    kept.lock().unwrap().push(line);
                }
            }
            // Exited without listening.
            let _ = tx.send(Err(said));
        });
        let addr = match rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server listens or exits")
        {
            Ok(addr) => addr,
            Err(said) => {
                let _ = child.wait();
                return Err(said);
            }
        };
        Ok(RillProcess {
            child,
            base: format!("http://{addr}"),
            log,
        })
    }

    /// The lines it logged since it started listening.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// SIGTERM, as a service manager stops it; how it exited. Fails if it
    /// is still running after `limit`.
    pub fn terminate(mut self, limit: Duration) -> std::process::ExitStatus {
        self.signal("TERM");
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still running {limit:?} after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to the process.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -{signal} failed");
    }

    pub fn kill(mut self) {
        // SIGKILL: no shutdown handler runs.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// A test that fails midway leaves no server running (or holding a
/// mount busy).
impl Drop for RillProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
