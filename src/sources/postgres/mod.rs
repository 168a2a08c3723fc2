//! The Postgres source: change data capture through a logical replication
//! slot (`pgoutput`), into one collection per table.
//!
//! A source's life:
//! 1. **Backfill.** A slot is made on a replication connection that
//!    exports its snapshot; a second connection reads every table through
//!    that snapshot (`backfill.rs`), while the first stays idle so the
//!    snapshot lives. The cursor then says `backfilled`, at the slot's
//!    first position, in one batch with nothing else pending.
//! 2. **Streaming** on the same connection (`stream.rs`), from where the
//!    slot was last told (transactions the cursor covers are skipped):
//!    each transaction's changes written with the cursor that follows
//!    them; Postgres is told it may drop WAL only up to what is durable
//!    here.
//!
//! A backfill cut short starts over (a new slot, a new snapshot; what the
//! first try wrote is made right by the sweep). A slot gone while
//! streaming (dropped by hand, or invalidated for the WAL it held) cannot
//! be resumed: the source says so (`slot_lost`) and waits to be deleted
//! and made again, which backfills afresh.
//!
//! A deleted source's slot and its own publication are dropped
//! ([`clean_up`]), as the engine keeps a note until they are.

mod backfill;
pub mod catalog;
mod pgoutput;
mod stream;
mod values;

use std::sync::Arc;
use std::time::Duration;

use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, SslMode, TlsConfig};
use sha2::{Digest, Sha256};

use super::status::SourceStatus;
use crate::engine::sources::{PostgresSource, SourceConfig, SourceCursor, SourceInfo};
use crate::engine::streams::types::now_ms;
use crate::engine::Engine;
use catalog::TableInfo;

/// How often the server's WAL position is read, for the lag.
const LAG_EVERY: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The slot and publication a source uses: named after the source and
/// when it was made, so that a source made again never takes up the slot
/// of the one before.
pub struct Names {
    pub slot: String,
    pub publication: String,
}

impl Names {
    pub fn of(source: &SourceInfo, config: &PostgresSource) -> Self {
        let digest = Sha256::digest(
            format!("{}\0{}\0{}", source.basin, source.name, source.created_at).as_bytes(),
        );
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let slot = format!("rill_{hex}");
        Self {
            publication: config.publication.clone().unwrap_or_else(|| slot.clone()),
            slot,
        }
    }
}

/// Why an attempt ended.
enum Stop {
    Failed(String),
    /// The slot is gone: nothing more will come from it.
    SlotLost(String),
}

impl From<String> for Stop {
    fn from(message: String) -> Self {
        Stop::Failed(message)
    }
}

/// Runs the source until aborted: an attempt, and after a failure another
/// after a backoff.
pub async fn run(engine: Arc<Engine>, source: SourceInfo, status: Arc<SourceStatus>) {
    let SourceConfig::Postgres(config) = &source.config else {
        return;
    };
    let names = Names::of(&source, config);
    status.update(|s| s.slot = Some(names.slot.clone()));
    let mut backoff = Duration::from_millis(500);
    loop {
        let started = tokio::time::Instant::now();
        let stop = attempt(&engine, &source, config, &names, &status).await;
        let wait = match stop {
            Stop::Failed(error) => {
                tracing::debug!(source = %source.name, %error, "a Postgres source failed");
                status.failed(&error);
                if started.elapsed() > MAX_BACKOFF {
                    backoff = Duration::from_millis(500);
                }
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
            Stop::SlotLost(error) => {
                status.failed(&error);
                status.update(|s| s.state = "slot_lost");
                MAX_BACKOFF
            }
        };
        tokio::time::sleep(wait).await;
    }
}

async fn attempt(
    engine: &Engine,
    source: &SourceInfo,
    config: &PostgresSource,
    names: &Names,
    status: &Arc<SourceStatus>,
) -> Stop {
    match attempt_inner(engine, source, config, names, status).await {
        Ok(()) => Stop::Failed("the replication stream ended".into()),
        Err(stop) => stop,
    }
}

async fn attempt_inner(
    engine: &Engine,
    source: &SourceInfo,
    config: &PostgresSource,
    names: &Names,
    status: &Arc<SourceStatus>,
) -> Result<(), Stop> {
    let client = catalog::connect(config).await?;
    let sources = engine.sources();
    sources
        .ensure_collections(&source.basin, &source.config)
        .await
        .map_err(|e| e.to_string())?;
    let cursor = sources.cursor(source).map_err(|e| e.to_string())?;
    let mut tables = Vec::with_capacity(config.tables.len());
    for (index, table) in config.tables.iter().enumerate() {
        let oid = cursor.table_oids.get(index).copied();
        tables.push(catalog::describe_table(&client, config, index, table, oid).await?);
    }
    if config.publication.is_none() {
        catalog::ensure_publication(&client, config, &names.publication, &tables).await?;
    }
    let (mut session, cursor) = match cursor.backfilled {
        false => {
            backfill(
                engine, source, config, names, status, &client, &tables, cursor,
            )
            .await?
        }
        true => {
            let slot = catalog::slot(&client, config, &names.slot).await?;
            match slot {
                None => {
                    return Err(Stop::SlotLost(format!(
                        "replication slot `{}` is gone (dropped by hand?): changes since were \
                         lost to this source; delete it and make it again to backfill afresh",
                        names.slot
                    )))
                }
                Some(slot) if slot.wal_status.as_deref() == Some("lost") => {
                    return Err(Stop::SlotLost(format!(
                        "replication slot `{}` was invalidated (the WAL it needed was removed, \
                         see max_slot_wal_keep_size); delete the source and make it again to \
                         backfill afresh",
                        names.slot
                    )))
                }
                Some(_) => {}
            }
            catalog::free_slot(&client, config, &names.slot).await?;
            // From where the slot was last told (0 says so), which may be
            // before the cursor: what the cursor covers is skipped
            // (`stream.rs`), and never acknowledged below it.
            let cfg = replication_config(config, names)?
                .with_start_lsn(Lsn::from_u64(0))
                .with_ack_lsn(Lsn::from_u64(cursor.lsn.unwrap_or(0)));
            let session = Session::open(config, cfg).await?;
            (session, cursor)
        }
    };
    session
        .0
        .start()
        .await
        .map_err(|e| format!("starting replication: {e}"))?;
    let timeout = Duration::from_millis(config.timeout_ms);
    match tokio::time::timeout(timeout, session.0.wait_started()).await {
        Ok(started) => started.map_err(|e| format!("starting replication: {e}"))?,
        Err(_) => return Err(Stop::Failed("starting replication: timed out".into())),
    }
    status.update(|s| {
        s.state = "streaming";
        s.applied_lsn = s.applied_lsn.max(cursor.lsn.unwrap_or(0));
    });
    let _lag = LagWatch::spawn(client, config.clone(), status.clone());
    let mut streamer = stream::Streamer::new(engine, source, config, &tables, status, cursor);
    streamer.run(&mut session.0).await?;
    Ok(())
}

/// Makes the slot (dropping an earlier try's), copies the tables through
/// its snapshot, and writes the cursor that says so.
#[allow(clippy::too_many_arguments)]
async fn backfill(
    engine: &Engine,
    source: &SourceInfo,
    config: &PostgresSource,
    names: &Names,
    status: &SourceStatus,
    client: &tokio_postgres::Client,
    tables: &[TableInfo],
    cursor: SourceCursor,
) -> Result<(Session, SourceCursor), Stop> {
    status.update(|s| s.state = "making_slot");
    catalog::drop_slot(client, config, &names.slot).await?;
    let mut session = Session::open(config, replication_config(config, names)?).await?;
    let sql = format!(
        "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT",
        catalog::quote(&names.slot)
    );
    // Not timed: Postgres makes the slot once every transaction open now
    // has ended, however long that is (the state says it waits).
    let rows = session
        .0
        .simple_query(&sql)
        .await
        .map_err(|e| format!("making replication slot `{}`: {e}", names.slot))?;
    status.update(|s| s.state = "backfilling");
    let text = |column: usize| -> Option<String> {
        let cell = rows.first()?.get(column)?.as_ref()?;
        Some(String::from_utf8_lossy(cell).into_owned())
    };
    let (Some(consistent), Some(snapshot)) = (text(1), text(2)) else {
        return Err(Stop::Failed("the new slot gave no snapshot".into()));
    };
    let consistent = Lsn::parse(&consistent)
        .map_err(|_| format!("the new slot gave a bad position `{consistent}`"))?;
    let rows =
        backfill::backfill(engine, source, config, client, tables, &snapshot, status).await?;
    let next = SourceCursor {
        backfilled: true,
        lsn: Some(consistent.as_u64()),
        table_oids: tables.iter().map(|t| t.oid).collect(),
        changes: cursor.changes + rows,
        moved_at: now_ms(),
        ..cursor
    };
    let first = &config.tables[0].collection;
    engine
        .sources()
        .apply(source, first, Vec::new(), &next)
        .await
        .map_err(|e| format!("writing the source's cursor: {e}"))?;
    status.update(|s| {
        if let Some(backfill) = s.backfill.as_mut() {
            backfill.done = true;
        }
    });
    Ok((session, next))
}

/// The replication connection's settings, from the source's URL.
fn replication_config(config: &PostgresSource, names: &Names) -> Result<ReplicationConfig, String> {
    let pg = catalog::parse_url(&config.url)?;
    let host = match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => return Err("postgres.url names no host".into()),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let user = pg.get_user().unwrap_or("postgres").to_string();
    let password = pg
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    let database = pg.get_dbname().unwrap_or(&user).to_string();
    let mode = match pg.get_ssl_mode() {
        tokio_postgres::config::SslMode::Disable => SslMode::Disable,
        // As libpq: `require` encrypts without checking the certificate.
        tokio_postgres::config::SslMode::Require => SslMode::Require,
        _ => SslMode::Prefer,
    };
    let tls = TlsConfig {
        mode,
        ..TlsConfig::disabled()
    };
    Ok(ReplicationConfig::new(
        host,
        user,
        password,
        database,
        names.slot.clone(),
        names.publication.as_str(),
    )
    .with_port(port)
    .with_tls(tls)
    .with_options(catalog::SESSION_OPTIONS)
    .with_application_name(format!("rill-source-{}", names.slot))
    .with_status_interval(Duration::from_secs(2))
    .with_buffer_size(4096))
}

/// The replication connection, cut when dropped (an aborted source must
/// not keep its slot held).
struct Session(ReplicationClient);

impl Session {
    /// Connects and waits before starting, for replication commands.
    async fn open(config: &PostgresSource, cfg: ReplicationConfig) -> Result<Self, String> {
        let mut session = ReplicationClient::connect_gated(cfg)
            .await
            .map(Session)
            .map_err(|e| format!("connecting for replication: {e}"))?;
        // Connecting runs in the background: a first command says whether
        // it worked, in time.
        let timeout = Duration::from_millis(config.timeout_ms);
        match tokio::time::timeout(timeout, session.0.simple_query("IDENTIFY_SYSTEM")).await {
            Ok(answer) => answer.map_err(|e| format!("connecting for replication: {e}"))?,
            Err(_) => return Err("connecting for replication: timed out".into()),
        };
        Ok(session)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads the server's WAL position every [`LAG_EVERY`] into the status
/// (the lag is how far the source's position is behind it), until dropped.
struct LagWatch(tokio::task::JoinHandle<()>);

impl LagWatch {
    fn spawn(
        client: tokio_postgres::Client,
        config: PostgresSource,
        status: Arc<SourceStatus>,
    ) -> Self {
        Self(tokio::spawn(async move {
            loop {
                if let Ok(lsn) = catalog::current_lsn(&client, &config).await {
                    status.update(|s| s.server_lsn = lsn);
                }
                tokio::time::sleep(LAG_EVERY).await;
            }
        }))
    }
}

impl Drop for LagWatch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Removes what a deleted source left in Postgres: its slot (so the
/// server stops keeping WAL for it) and the publication it made.
pub async fn clean_up(source: &SourceInfo) -> Result<(), String> {
    let SourceConfig::Postgres(config) = &source.config else {
        return Ok(());
    };
    let names = Names::of(source, config);
    let client = catalog::connect(config).await?;
    catalog::drop_slot(&client, config, &names.slot).await?;
    if config.publication.is_none() {
        let sql = format!(
            "DROP PUBLICATION IF EXISTS {}",
            catalog::quote(&names.publication)
        );
        catalog::timed(
            config,
            "dropping the publication",
            client.batch_execute(&sql),
        )
        .await?;
    }
    Ok(())
}
