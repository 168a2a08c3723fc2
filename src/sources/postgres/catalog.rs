//! What a Postgres source asks of the database outside the replication
//! stream: connections, the tables' columns and keys (checked when the
//! source is made, so a table without a key is refused then, not found
//! out later), its publication, and its replication slot's fate.

use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::Client;

use super::values::{kind_of, Kind};
use crate::engine::sources::{PostgresSource, TableSource};
use crate::postgres::describe;

/// Session settings both the backfill's and the stream's connections are
/// pinned to, so a value reads the same through either (`values.rs`).
pub const SESSION_OPTIONS: &str =
    "-c datestyle=ISO -c timezone=UTC -c intervalstyle=iso_8601 -c extra_float_digits=3";

/// A table as the source reads it.
#[derive(Clone, Debug)]
pub struct TableInfo {
    /// Its place in the source's settings (and so its collection).
    pub index: usize,
    /// How the stream names it: a table renamed is still this one.
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub columns: Vec<(String, Kind)>,
    /// Where the id columns are among `columns`, in id order.
    pub id_positions: Vec<usize>,
}

impl TableInfo {
    /// `"schema"."name"`.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote(&self.schema), quote(&self.name))
    }
}

pub fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// A string literal for SQL (replication commands take no parameters).
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The URL's settings, read as libpq would.
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config, String> {
    tokio_postgres::Config::from_str(url)
        .map_err(|_| "postgres.url is not a Postgres connection URL".to_string())
}

/// `work` within the source's timeout.
pub async fn timed<T>(
    config: &PostgresSource,
    what: &str,
    work: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(Duration::from_millis(config.timeout_ms), work).await {
        Ok(result) => result.map_err(|e| format!("{what}: {}", describe(&e))),
        Err(_) => Err(format!("{what}: timed out")),
    }
}

/// A plain (not replication) connection.
pub async fn connect(config: &PostgresSource) -> Result<Client, String> {
    let mut pg = parse_url(&config.url)?;
    pg.options(SESSION_OPTIONS);
    pg.connect_timeout(Duration::from_millis(config.timeout_ms));
    let tls = crate::postgres::tls().map_err(|e| format!("cannot set up TLS for Postgres: {e}"))?;
    let (client, connection) = timed(config, "connecting to Postgres", pg.connect(tls)).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %describe(&err), "a source's Postgres connection ended");
        }
    });
    Ok(client)
}

/// Everything that can be checked before the source runs: that the
/// server decodes logically, that the user may replicate, and each table
/// (see [`describe_table`]); with a publication named, that it holds the
/// tables.
pub async fn check(config: &PostgresSource) -> Result<(), String> {
    let client = connect(config).await?;
    let row = timed(
        config,
        "reading the server's settings",
        client.query_one(
            "SELECT current_setting('wal_level'), \
             (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)",
            &[],
        ),
    )
    .await?;
    let wal_level: String = row.get(0);
    if wal_level != "logical" {
        return Err(format!(
            "the server's wal_level is `{wal_level}`: change data capture needs `logical` \
             (set it in postgresql.conf and restart Postgres)"
        ));
    }
    if !row.get::<_, Option<bool>>(1).unwrap_or(false) {
        return Err("the user has no REPLICATION attribute (ALTER ROLE … REPLICATION)".into());
    }
    let mut tables = Vec::with_capacity(config.tables.len());
    for (index, table) in config.tables.iter().enumerate() {
        tables.push(describe_table(&client, config, index, table, None).await?);
    }
    if let Some(publication) = &config.publication {
        for table in &tables {
            check_publication(&client, config, publication, table).await?;
        }
    }
    Ok(())
}

/// A publication named by the user sends what the backfill reads: every
/// kind of change, every row and column, a partitioned table as itself.
async fn check_publication(
    client: &Client,
    config: &PostgresSource,
    publication: &str,
    table: &TableInfo,
) -> Result<(), String> {
    let found = timed(
        config,
        "reading the publication",
        client.query_opt(
            "SELECT p.pubinsert AND p.pubupdate AND p.pubdelete AND p.pubtruncate, \
               t.rowfilter IS NULL, \
               t.attnames @> (SELECT array_agg(attname) FROM pg_attribute \
                 WHERE attrelid = $4 AND attnum > 0 AND NOT attisdropped AND attgenerated = ''), \
               p.pubviaroot OR (SELECT relkind FROM pg_class WHERE oid = $4) <> 'p' \
             FROM pg_publication p JOIN pg_publication_tables t ON t.pubname = p.pubname \
             WHERE p.pubname = $1 AND t.schemaname = $2 AND t.tablename = $3",
            &[&publication, &table.schema, &table.name, &table.oid],
        ),
    )
    .await?;
    let name = format!("{}.{}", table.schema, table.name);
    let Some(row) = found else {
        return Err(format!(
            "publication `{publication}` does not exist or does not hold `{name}` (a \
             partitioned table must be published via its root: publish_via_partition_root)"
        ));
    };
    let said = |column: usize| row.get::<_, Option<bool>>(column).unwrap_or(false);
    let problem = match (said(0), said(1), said(2), said(3)) {
        (false, ..) => "must publish inserts, updates, deletes and truncates",
        (_, false, ..) => "must not filter the rows of",
        (_, _, false, _) => "must publish every column of",
        (_, _, _, false) => "must publish via the partition root for",
        _ => return Ok(()),
    };
    Err(format!("publication `{publication}` {problem} `{name}`"))
}

/// The table's columns and id columns. Refused: a missing table; one
/// whose deletes carry no key (`REPLICA IDENTITY NOTHING`, or the default
/// without a primary key); id columns other than the replica identity's
/// key (a delete would not carry them), unless the identity is `FULL`.
///
/// By `oid` once the source copied it (it may have been renamed since),
/// by its name before.
pub async fn describe_table(
    client: &Client,
    config: &PostgresSource,
    index: usize,
    table: &TableSource,
    oid: Option<u32>,
) -> Result<TableInfo, String> {
    let (schema, name) = table.schema_and_name();
    const FIELDS: &str = "SELECT c.oid, c.relreplident::text, n.nspname::text, c.relname::text \
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace";
    let by_oid = format!("{FIELDS} WHERE c.oid = $1 AND c.relkind IN ('r', 'p')");
    let by_name =
        format!("{FIELDS} WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')");
    let found = match oid {
        Some(oid) => {
            timed(
                config,
                "reading the table",
                client.query_opt(&by_oid, &[&oid]),
            )
            .await?
        }
        None => {
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&schema, &name];
            timed(
                config,
                "reading the table",
                client.query_opt(&by_name, &params),
            )
            .await?
        }
    };
    let Some(found) = found else {
        return Err(format!("table `{}` does not exist", table.table));
    };
    let oid: u32 = found.get(0);
    let identity: String = found.get(1);
    let (schema, name): (String, String) = (found.get(2), found.get(3));
    let columns: Vec<(String, Kind)> = timed(
        config,
        "reading the table's columns",
        client.query(
            "SELECT attname::text, atttypid FROM pg_attribute \
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = '' \
             ORDER BY attnum",
            &[&oid],
        ),
    )
    .await?
    .iter()
    .map(|row| (row.get::<_, String>(0), kind_of(row.get::<_, u32>(1))))
    .collect();
    // The key a delete carries: the primary key's columns by default, or
    // the index's named by REPLICA IDENTITY USING INDEX.
    let key: Vec<String> = timed(
        config,
        "reading the table's key",
        client.query(
            "SELECT a.attname::text FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = $1 AND CASE WHEN $2 = 'i' THEN i.indisreplident \
             ELSE i.indisprimary END \
             ORDER BY array_position(i.indkey::int2[], a.attnum)",
            &[&oid, &identity],
        ),
    )
    .await?
    .iter()
    .map(|row| row.get(0))
    .collect();
    let t = &table.table;
    let id_columns = match identity.as_str() {
        "n" => {
            return Err(format!(
                "table `{t}` has REPLICA IDENTITY NOTHING: its deletes carry no key \
                 (ALTER TABLE … REPLICA IDENTITY DEFAULT, with a primary key)"
            ))
        }
        "d" if key.is_empty() => {
            return Err(format!(
                "table `{t}` has no primary key: its deletes would carry no key (add a \
                 primary key, or set REPLICA IDENTITY USING INDEX or FULL and name \
                 id_columns)"
            ))
        }
        "i" if key.is_empty() => {
            return Err(format!(
                "table `{t}`'s REPLICA IDENTITY index is gone: set REPLICA IDENTITY again"
            ))
        }
        "f" if key.is_empty() && table.id_columns.is_empty() => {
            return Err(format!(
                "table `{t}` has no primary key: name its id_columns"
            ))
        }
        _ if table.id_columns.is_empty() => key,
        "f" => table.id_columns.clone(),
        _ => {
            let mut given = table.id_columns.clone();
            let mut wanted = key.clone();
            given.sort();
            wanted.sort();
            if given != wanted {
                return Err(format!(
                    "id_columns of `{t}` must be its replica identity's key ({}), which \
                     deletes carry, or the table's REPLICA IDENTITY must be FULL",
                    key.join(", ")
                ));
            }
            table.id_columns.clone()
        }
    };
    let id_positions = id_columns
        .iter()
        .map(|id| {
            columns
                .iter()
                .position(|(name, _)| name == id)
                .ok_or_else(|| format!("table `{t}` has no column `{id}`"))
        })
        .collect::<Result<_, _>>()?;
    Ok(TableInfo {
        index,
        oid,
        schema,
        name,
        columns,
        id_positions,
    })
}

/// Makes the source's own publication of its tables, unless it exists.
pub async fn ensure_publication(
    client: &Client,
    config: &PostgresSource,
    publication: &str,
    tables: &[TableInfo],
) -> Result<(), String> {
    let exists = timed(
        config,
        "reading publications",
        client.query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&publication],
        ),
    )
    .await?
    .is_some();
    if !exists {
        let tables: Vec<String> = tables.iter().map(TableInfo::quoted).collect();
        // A partitioned table's changes are sent as its own, not its
        // partitions'.
        let sql = format!(
            "CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = true)",
            quote(publication),
            tables.join(", ")
        );
        timed(
            config,
            "creating the publication",
            client.batch_execute(&sql),
        )
        .await?;
    }
    Ok(())
}

/// A replication slot as `pg_replication_slots` shows it.
pub struct Slot {
    /// `lost` once Postgres removed WAL it still needed
    /// (`max_slot_wal_keep_size`).
    pub wal_status: Option<String>,
}

pub async fn slot(
    client: &Client,
    config: &PostgresSource,
    slot: &str,
) -> Result<Option<Slot>, String> {
    let row = timed(
        config,
        "reading the replication slot",
        client.query_opt(
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        ),
    )
    .await?;
    Ok(row.map(|row| Slot {
        wal_status: row.get(0),
    }))
}

/// Ends the session that holds `slot`, if one does: only this source uses
/// its slot, so a holder is an earlier session of its own that Postgres
/// has not yet seen die (after a crash of this server, say). Waits until
/// the slot is free.
pub async fn free_slot(client: &Client, config: &PostgresSource, slot: &str) -> Result<(), String> {
    for _ in 0..50 {
        let held = timed(
            config,
            "freeing the replication slot",
            client.query_opt(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                 WHERE slot_name = $1 AND active_pid IS NOT NULL",
                &[&slot],
            ),
        )
        .await?;
        if held.is_none() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "replication slot `{slot}` is still held by another session"
    ))
}

/// Drops `slot` if it exists (freeing it first).
pub async fn drop_slot(client: &Client, config: &PostgresSource, slot: &str) -> Result<(), String> {
    free_slot(client, config, slot).await?;
    timed(
        config,
        "dropping the replication slot",
        client.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE slot_name = $1",
            &[&slot],
        ),
    )
    .await?;
    Ok(())
}

/// The server's current WAL position.
pub async fn current_lsn(client: &Client, config: &PostgresSource) -> Result<u64, String> {
    let row = timed(
        config,
        "reading the WAL position",
        client.query_one("SELECT (pg_current_wal_lsn() - '0/0')::bigint", &[]),
    )
    .await?;
    Ok(row.get::<_, i64>(0) as u64)
}
