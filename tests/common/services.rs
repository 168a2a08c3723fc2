//! Real servers the sinks write to, started by the tests on loopback from
//! Debian's packages (`postgresql`, `redis-server`, `nats-server`, which
//! `.ci/run` installs) and, for Kafka, the Tansu broker from crates.io
//! (`scripts/install-tansu.sh`, which `.ci/run` runs): each in a temporary
//! directory, on a port picked here, stoppable and startable again on the
//! same port with its data.
//!
//! Without a package the tests that need it say they skip and pass,
//! unless `RILL_REQUIRE_SERVICES` is set (as `.ci/run` sets it), which
//! makes a missing package a failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The first of `candidates` (paths, or names looked up on `PATH`) that
/// exists; `None` said on stderr, or a failure under
/// `RILL_REQUIRE_SERVICES`.
fn find(package: &str, candidates: &[PathBuf]) -> Option<PathBuf> {
    find_or(package, candidates, &format!("apt-get install {package}"))
}

/// [`find`], saying `install` is how to get it.
fn find_or(package: &str, candidates: &[PathBuf], install: &str) -> Option<PathBuf> {
    let on_path = |name: &Path| -> Option<PathBuf> {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    };
    let found = candidates.iter().find_map(|c| match c.is_absolute() {
        true => c.is_file().then(|| c.clone()),
        false => on_path(c),
    });
    if found.is_none() {
        assert!(
            std::env::var_os("RILL_REQUIRE_SERVICES").is_none(),
            "RILL_REQUIRE_SERVICES is set and {package} is not installed ({install})"
        );
        eprintln!("SKIPPED: {package} is not installed ({install})");
    }
    found
}

/// A port free on loopback now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `port`.
fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A destination server the tests stop for a while and start again, on the
/// same port with its data.
pub trait Restartable {
    fn stop(&mut self);
    fn start_again(&mut self);
}

/// A Postgres cluster of its own (trust auth, `fsync=off`: the tests kill
/// Rill, not Postgres's host; `wal_level=logical` for the sources' change
/// data capture).
pub struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    /// Postgres refuses to run as root: as root, it runs as `postgres`.
    as_postgres: bool,
    /// Off for the tests (they do not pull the plug); on for benchmarks
    /// that compare with durable writes elsewhere.
    fsync: bool,
}

impl Postgres {
    pub fn start() -> Option<Self> {
        Self::start_with_fsync(false)
    }

    /// [`Self::start`], with `fsync` on or off.
    pub fn start_with_fsync(fsync: bool) -> Option<Self> {
        let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|version| version.path().join("bin/pg_ctl"))
            .collect();
        candidates.sort();
        candidates.reverse();
        candidates.push("pg_ctl".into());
        let pg_ctl = find("postgresql", &candidates)?;
        let bin = pg_ctl.parent().unwrap().to_path_buf();
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = is_root();
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown to postgres");
        }
        let pg = Self {
            bin,
            dir,
            port: free_port(),
            as_postgres,
            fsync,
        };
        let data = pg.data_dir();
        pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "--auth=trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        pg.start_server();
        Some(pg)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs one of Postgres's programs (as `postgres` when root), waiting.
    fn run(&self, program: &str, args: &[&str]) {
        let binary = self.bin.join(program);
        let mut command = match self.as_postgres {
            true => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(&binary);
                c
            }
            false => Command::new(&binary),
        };
        let out = command.args(args).stdin(Stdio::null()).output().unwrap();
        assert!(
            out.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again) on its port, with its data.
    fn start_server(&self) {
        let data = self.data_dir();
        let log = self.dir.path().join("log");
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync={} \
             -c wal_level=logical",
            self.port,
            self.dir.path().display(),
            if self.fsync { "on" } else { "off" },
        );
        self.run(
            "pg_ctl",
            &[
                "start",
                "-w",
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
            ],
        );
        wait_for_port(self.port, "postgres");
    }

    /// A new, empty database on this server; its URL.
    pub fn database(&self, name: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            // No .psqlrc, and the database that always exists.
            .args(["-X", "-d", "postgres", "-h", "127.0.0.1", "-U", "postgres"])
            .args(["-p", &self.port.to_string()])
            .args(["-c", &format!("CREATE DATABASE \"{name}\"")])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "CREATE DATABASE {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// A client of this server, for the test's own queries.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    }
}

impl Restartable for Postgres {
    /// Stops the server (fast: open connections are cut).
    fn stop(&mut self) {
        let data = self.data_dir();
        self.run(
            "pg_ctl",
            &["stop", "-w", "-m", "fast", "-D", data.to_str().unwrap()],
        );
    }

    fn start_again(&mut self) {
        self.start_server();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data_dir();
        let binary = self.bin.join("pg_ctl");
        let args = ["stop", "-m", "immediate", "-D", data.to_str().unwrap()];
        let _ = match self.as_postgres {
            true => Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(binary)
                .args(args)
                .output(),
            false => Command::new(binary).args(args).output(),
        };
    }
}

/// A server process started by command line and stopped by SIGTERM (which
/// Redis and NATS both take as a clean shutdown that keeps their data).
pub struct Daemon {
    program: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Daemon {
    /// `redis-server`, appending every write to its log on disk, so that a
    /// stop and a start keep everything.
    pub fn redis() -> Option<Self> {
        let program = find("redis-server", &["redis-server".into()])?;
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let args = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            dir.path().to_str().unwrap(),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ]
        .map(String::from)
        .to_vec();
        Some(Self::start(program, args, port, dir))
    }

    /// `nats-server` with JetStream, storing in its directory, taking
    /// `flags` besides (`--user`, `--pass`, say).
    pub fn nats(flags: &[&str]) -> Option<Self> {
        let program = find("nats-server", &["nats-server".into()])?;
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let args = [
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-js",
            "-sd",
            dir.path().to_str().unwrap(),
        ]
        .iter()
        .chain(flags)
        .map(|s| s.to_string())
        .collect();
        Some(Self::start(program, args, port, dir))
    }

    /// The Tansu broker (Kafka's protocol), keeping its topics in an
    /// SQLite file in its directory. Found at `$RILL_TANSU`, or where
    /// `scripts/install-tansu.sh` puts it.
    pub fn tansu() -> Option<Self> {
        let mut candidates: Vec<PathBuf> = std::env::var_os("RILL_TANSU")
            .map(PathBuf::from)
            .into_iter()
            .collect();
        if let Some(home) = std::env::var_os("HOME") {
            candidates.push(PathBuf::from(home).join(".cache/rill/tools/tansu-0.6.0/bin/tansu"));
        }
        let program = find_or("tansu", &candidates, "bash scripts/install-tansu.sh")?;
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let listener = format!("tcp://127.0.0.1:{port}");
        let args = [
            "broker",
            "--listener-url",
            &listener,
            "--advertised-listener-url",
            &listener,
            // Relative to its directory, the daemon's working directory.
            "--storage-engine",
            "sqlite://tansu.db",
        ]
        .map(String::from)
        .to_vec();
        Some(Self::start(program, args, port, dir))
    }

    fn start(program: PathBuf, args: Vec<String>, port: u16, dir: tempfile::TempDir) -> Self {
        let mut daemon = Self {
            program,
            args,
            child: None,
            port,
            dir,
        };
        daemon.start_again();
        daemon
    }
}

impl Restartable for Daemon {
    fn start_again(&mut self) {
        let child = Command::new(&self.program)
            .args(&self.args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for_port(self.port, &self.program.display().to_string());
    }

    /// Stops it cleanly and waits until it has exited.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
