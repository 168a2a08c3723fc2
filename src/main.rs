//! The `rill` binary.

use std::net::SocketAddr;
use std::path::PathBuf;

mod cli;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use rill::server::{self, ServeConfig};

#[derive(Parser)]
#[command(
    name = "rill",
    version,
    about = "A durable streams server that speaks the S2 v1 API",
    arg_required_else_help = true,
    after_help = cli::EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    connection: cli::Connection,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// Address to listen on (`HOST:PORT`; a host name is resolved).
        #[arg(long, env = "RILL_LISTEN", default_value = "127.0.0.1:8080", value_parser = listen_address)]
        listen: SocketAddr,
        /// Where data is kept.
        #[arg(
            long,
            env = "RILL_DATA_DIR",
            default_value = "./rill-data",
            conflicts_with = "in_memory"
        )]
        data_dir: PathBuf,
        /// Keep everything in memory; nothing survives a restart.
        #[arg(long)]
        in_memory: bool,
        /// Keep data in this Postgres database instead (`postgres://user:
        /// password@host/db`); its schema is made and migrated by Rill.
        #[arg(long, env = "RILL_STORAGE", value_name = "URL", conflicts_with = "in_memory",
              value_parser = PostgresUrl)]
        storage: Option<String>,
        /// Connections served at once; more get a 503 and are closed.
        #[arg(long, env = "RILL_MAX_CONNECTIONS", default_value_t = 10_000,
              value_parser = clap::value_parser!(u32).range(1..))]
        max_connections: u32,
        /// How long a client has to send a request's header; an idle
        /// HTTP/1 connection is closed after it too (e.g. `30s`).
        #[arg(long, env = "RILL_HEADER_READ_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
        header_read_timeout: std::time::Duration,
        /// How long a request's body has to arrive (sessions excepted).
        #[arg(long, env = "RILL_BODY_READ_TIMEOUT", default_value = "60s", value_parser = positive_duration)]
        body_read_timeout: std::time::Duration,
        /// A connection with no open request is closed after this (HTTP/2
        /// included).
        #[arg(long, env = "RILL_IDLE_TIMEOUT", default_value = "60s", value_parser = positive_duration)]
        idle_timeout: std::time::Duration,
        /// A connection whose client reads nothing of its responses for
        /// this long is closed.
        #[arg(long, env = "RILL_WRITE_STALL_TIMEOUT", default_value = "60s", value_parser = positive_duration)]
        write_stall_timeout: std::time::Duration,
        /// A file holding the root token; turns auth on. (`RILL_ROOT_TOKEN`
        /// gives the token itself; there is no flag for it, so that it
        /// never shows in the process list.)
        #[arg(long, value_name = "FILE")]
        root_token_file: Option<PathBuf>,
        /// The largest request head (request line and headers; an HTTP/2
        /// header list) accepted; larger gets 431.
        #[arg(long, env = "RILL_MAX_HEADER_BYTES", default_value_t = 64 * 1024,
              value_parser = clap::value_parser!(u32).range(8192..))]
        max_header_bytes: u32,
        /// The most headers an HTTP/1.1 request may have; more gets 431.
        #[arg(long, env = "RILL_MAX_HEADERS", default_value_t = 100,
              value_parser = clap::value_parser!(u32).range(1..))]
        max_headers: u32,
        /// The largest request body (unary requests; decompressed too);
        /// larger gets 413.
        #[arg(long, env = "RILL_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024,
              value_parser = clap::value_parser!(u32).range(65536..))]
        max_body_bytes: u32,
        /// Read sessions (S2S and SSE) open at once; more get 503.
        #[arg(long, env = "RILL_MAX_READ_SESSIONS", default_value_t = 10_000,
              value_parser = clap::value_parser!(u32).range(1..))]
        max_read_sessions: u32,
        /// Append sessions open at once; more get 503.
        #[arg(long, env = "RILL_MAX_APPEND_SESSIONS", default_value_t = 10_000,
              value_parser = clap::value_parser!(u32).range(1..))]
        max_append_sessions: u32,
        /// Long polls (reads, `/updated` and receives that wait) at once.
        #[arg(long, env = "RILL_MAX_LONG_POLLS", default_value_t = 10_000,
              value_parser = clap::value_parser!(u32).range(1..))]
        max_long_polls: u32,
        /// Of each of those, what one access token may hold; more get 429.
        #[arg(long, env = "RILL_MAX_SESSIONS_PER_TOKEN", default_value_t = 1_000,
              value_parser = clap::value_parser!(u32).range(1..))]
        max_sessions_per_token: u32,
        /// Serve over TLS with this certificate chain (PEM); reloaded on
        /// SIGHUP and when the file changes.
        #[arg(long, env = "RILL_TLS_CERT", value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key of --tls-cert (PEM).
        #[arg(long, env = "RILL_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Turn auth on; with no root token given, generate one (printed
        /// once, kept in `DATA_DIR/root-token`).
        #[arg(long)]
        auth: bool,
        /// Log every request (method, path, status, milliseconds) at
        /// `info`; without it they are logged at `debug`
        /// (`RUST_LOG=rill::access=debug`).
        #[arg(long, env = "RILL_ACCESS_LOG")]
        access_log: bool,
        /// Also serve Prometheus metrics (`GET /metrics`) here, without a
        /// token: an address only your scraper can reach. (`/metrics` on
        /// the main port needs the `account-metrics` permission.)
        #[arg(long, env = "RILL_METRICS_LISTEN", value_name = "HOST:PORT", value_parser = listen_address)]
        metrics_listen: Option<SocketAddr>,
        /// Count appends and reads per stream too (a series per stream:
        /// for servers with a bounded number of streams), not only per
        /// basin.
        #[arg(long, env = "RILL_METRICS_PER_STREAM")]
        metrics_per_stream: bool,
        /// How long a Durable Streams long poll (`GET /v1/stream/…?live=
        /// long-poll`) waits for records before answering 204.
        #[arg(long, env = "RILL_DURABLE_STREAMS_LONG_POLL", default_value = "30s", value_parser = positive_duration)]
        durable_streams_long_poll: std::time::Duration,
        /// Run as one node of a cluster over the --storage database: any
        /// node answers any request; the node holding the lease serves
        /// them and the others forward to it, and when it dies another
        /// takes over. Give every node the same root token.
        #[arg(long, env = "RILL_CLUSTER", requires = "storage")]
        cluster: bool,
        /// Also listen here, in plain HTTP, for the other nodes of the
        /// cluster (they forward to this one and follow its feed there):
        /// an address on a network you trust. Needed with --tls-cert, where
        /// clients get TLS on --listen. The address advertised by default.
        #[arg(long, env = "RILL_CLUSTER_LISTEN", value_name = "HOST:PORT", requires = "cluster",
              value_parser = listen_address)]
        cluster_listen: Option<SocketAddr>,
        /// Where the other nodes reach this one (`HOST:PORT`); the
        /// --cluster-listen address by default, else the --listen one.
        #[arg(long, env = "RILL_ADVERTISE", value_name = "HOST:PORT", requires = "cluster",
              value_parser = advertised_address)]
        advertise: Option<String>,
        /// How long a node's lease lasts unless renewed: after the owner
        /// dies, another node takes over about this much later.
        #[arg(long, env = "RILL_LEASE_TTL", default_value = "5s", value_parser = lease_duration)]
        lease_ttl: std::time::Duration,
    },
    /// Accept that commits the store cannot recover (damage in its
    /// journal) are gone, so that the server starts with what is intact.
    Repair {
        /// The data directory to repair.
        #[arg(long, env = "RILL_DATA_DIR", default_value = "./rill-data")]
        data_dir: PathBuf,
    },
    /// Print a completion script for a shell (e.g. `rill completions bash
    /// > /etc/bash_completion.d/rill`, or `source <(rill completions zsh)`).
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
    #[command(flatten)]
    Client(cli::ClientCommand),
}

/// The command line as clap knows it, with the texts that differ per
/// resource kind and the client-only flags hidden where they do nothing.
fn command_line() -> clap::Command {
    cli::describe(Cli::command())
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,fjall=warn,lsm_tree=warn")
            }),
        )
        .init();
    // Usage errors as clap renders them: what is wrong, a "did you mean"
    // tip, the usage and a pointer to --help (exit code 2).
    let matches = command_line().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    let result: Result<(), cli::Failure> = match cli.command {
        Command::Serve {
            listen,
            data_dir,
            in_memory,
            storage,
            max_connections,
            header_read_timeout,
            body_read_timeout,
            idle_timeout,
            write_stall_timeout,
            max_header_bytes,
            max_headers,
            max_body_bytes,
            root_token_file,
            auth,
            tls_cert,
            tls_key,
            max_read_sessions,
            max_append_sessions,
            max_long_polls,
            max_sessions_per_token,
            access_log,
            metrics_listen,
            metrics_per_stream,
            durable_streams_long_poll,
            cluster,
            cluster_listen,
            advertise,
            lease_ttl,
        } => {
            if cluster && tls_cert.is_some() && cluster_listen.is_none() {
                command_line()
                    .error(
                        clap::error::ErrorKind::MissingRequiredArgument,
                        "with --tls-cert, a cluster's nodes talk to each other on \
                         --cluster-listen HOST:PORT (plain HTTP, on a network you trust)",
                    )
                    .exit();
            }
            let data_dir = (!in_memory).then_some(data_dir);
            let flags = rill::root_token::RootTokenFlags {
                token: std::env::var("RILL_ROOT_TOKEN")
                    .ok()
                    .filter(|t| !t.is_empty()),
                file: root_token_file,
                generate: auth,
            };
            let auth = match rill::root_token::auth_from_flags(&flags, data_dir.as_deref()) {
                Ok(auth) => auth,
                Err(message) => {
                    eprintln!("rill: {message}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            let config = ServeConfig {
                listen,
                storage: match storage {
                    Some(url) => rill::server::StorageChoice::Postgres(url),
                    None => match data_dir {
                        Some(dir) => rill::server::StorageChoice::Dir(dir),
                        None => rill::server::StorageChoice::Memory,
                    },
                },
                limits: rill::connections::ConnectionLimits {
                    header_read_timeout,
                    max_connections: max_connections as usize,
                    body_read_timeout,
                    idle_timeout,
                    write_stall_timeout,
                    max_header_bytes: max_header_bytes as usize,
                    max_headers: max_headers as usize,
                    max_body_bytes: max_body_bytes as usize,
                },
                auth,
                sessions: rill::api::SessionLimits {
                    read_sessions: max_read_sessions as usize,
                    append_sessions: max_append_sessions as usize,
                    long_polls: max_long_polls as usize,
                    per_token: max_sessions_per_token as usize,
                },
                tls: tls_cert
                    .zip(tls_key)
                    .map(|(cert, key)| rill::tls::TlsFiles { cert, key }),
                access_log: if access_log {
                    rill::api::AccessLog::Info
                } else {
                    rill::api::AccessLog::Debug
                },
                metrics_listen,
                metrics_per_stream,
                durable_streams_long_poll,
                cluster: cluster.then_some(rill::server::ClusterFlags {
                    advertise,
                    cluster_listen,
                    lease_ttl,
                }),
            };
            match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime
                    .block_on(server::serve(config, server::shutdown_signal()))
                    .map_err(cli::Failure::from),
                Err(e) => Err(format!("cannot start the runtime: {e}").into()),
            }
        }
        Command::Repair { data_dir } => match rill::storage::FjallStorage::repair(&data_dir) {
            Ok(repair) => {
                print!("{}", repair_report(&data_dir, &repair));
                Ok(())
            }
            Err(err) => Err(format!("cannot repair {}: {err}", data_dir.display()).into()),
        },
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command_line(), "rill", &mut script);
            cli::print_all(&script)
        }
        Command::Client(command) => match tokio::runtime::Runtime::new() {
            Ok(runtime) => runtime.block_on(cli::run(cli.connection, command)),
            Err(e) => Err(format!("cannot start the runtime: {e}").into()),
        },
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("rill: {}", failure.message);
            std::process::ExitCode::from(failure.exit_code)
        }
    }
}

/// `--listen`: `HOST:PORT`, the host an address or a name (the first
/// address it resolves to).
fn listen_address(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let mut addresses = text
        .to_socket_addrs()
        .map_err(|e| format!("`{text}` is not HOST:PORT, or its host does not resolve: {e}"))?;
    addresses
        .next()
        .ok_or_else(|| format!("`{text}` resolves to no address"))
}

/// `--advertise`: `HOST:PORT`, as another node will connect to it.
fn advertised_address(text: &str) -> Result<String, String> {
    match text.parse::<axum::http::uri::Authority>() {
        Ok(authority) if authority.port().is_some() && !text.contains('@') => Ok(text.to_string()),
        _ => Err(format!("`{text}` is not HOST:PORT")),
    }
}

/// `--lease-ttl`: from 500 ms (a node looks at the lease four times a
/// lease, and a renewal takes a round trip) to an hour.
fn lease_duration(text: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if d < std::time::Duration::from_millis(500) || d > std::time::Duration::from_secs(3600) {
        return Err("must be from 500ms to 1h".into());
    }
    Ok(d)
}

/// A duration flag that must be more than zero (e.g. `30s`).
fn positive_duration(text: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be more than zero".into()),
        Err(err) => Err(err.to_string()),
    }
}

/// `--storage`: a Postgres URL. A value refused is not repeated in the
/// error (it may hold a password).
#[derive(Clone)]
struct PostgresUrl;

impl clap::builder::TypedValueParser for PostgresUrl {
    type Value = String;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        let refused = || {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                "--storage takes a postgres:// (or postgresql://) URL\n",
            )
        };
        let text = value.to_str().ok_or_else(refused)?;
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            return Err(refused());
        }
        Ok(text.to_string())
    }
}

/// What `rill repair` says: what the store keeps, what is gone for good
/// (each lost commit's notes: which seq nums of which streams), and where
/// the damaged journals were put aside.
fn repair_report(data_dir: &std::path::Path, repair: &rill::storage::Repair) -> String {
    let recovered = repair.recovered;
    let Some((acknowledged, notes)) = &repair.lost else {
        return format!(
            "{}: nothing lost ({recovered} commits)\n",
            data_dir.display()
        );
    };
    let mut report = format!(
        "repaired {}: commits {} to {acknowledged} are gone for good; the store keeps its first \
         {recovered} commits and will start\n",
        data_dir.display(),
        recovered + 1
    );
    if notes.is_empty() {
        report.push_str("no notes of the lost commits were kept\n");
    } else {
        report.push_str("lost:\n");
        for (commit, note) in notes {
            report.push_str(&format!("  commit {commit}: {note}\n"));
        }
    }
    let kept: Vec<String> = std::fs::read_dir(data_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("damaged-"))
        .map(|e| e.path().display().to_string())
        .collect();
    if !kept.is_empty() {
        report.push_str(&format!(
            "the journals as they were before the damage was found: {}\n",
            kept.join(", ")
        ));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::command_line;

    #[test]
    fn the_command_line_is_consistent() {
        command_line().debug_assert();
    }

    /// Every command and every flag or argument a user sees says what it
    /// is for (`rill X --help` never shows a bare name).
    #[test]
    fn every_command_and_flag_is_described() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                let path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() {
                    missing.push(path.clone());
                }
                for arg in sub.get_arguments() {
                    if !arg.is_hide_set() && arg.get_help().is_none() {
                        missing.push(format!("{path} {}", arg.get_id()));
                    }
                }
                walk(sub, &path, missing);
            }
        }
        let mut cmd = command_line();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "rill", &mut missing);
        assert!(missing.is_empty(), "undescribed: {missing:#?}");
    }
}
