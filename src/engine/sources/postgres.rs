//! The settings of a Postgres change-data-capture source: which database,
//! which tables into which collections, and how values become JSON. What
//! can be checked without the database is checked here; the tables
//! themselves (that they exist and have a key) are checked by the runtime
//! when the source is made (`src/sources/postgres/`).

use serde::{Deserialize, Serialize};

use crate::engine::collections::CollectionName;
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::settings::{
    check_table_name, check_url, is_identifier, DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS,
};

/// At most this many tables a source (each holds a relation in memory and
/// a collection of its own).
pub const MAX_TABLES: usize = 64;

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSource {
    /// `postgres://user:password@host:port/db?sslmode=…` (the password is
    /// write-only). The user needs the `REPLICATION` attribute and `SELECT`
    /// on the tables (and, without `publication`, the right to create one).
    pub url: String,
    pub tables: Vec<TableSource>,
    /// An existing publication holding the tables; without one, the source
    /// makes its own (`rill_…`) and drops it when it is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publication: Option<String>,
    /// How `numeric` values are written: `"string"` keeps every digit;
    /// `"number"` is a JSON number (a reader may round it).
    #[serde(default)]
    pub numeric: NumericAs,
    /// How long connecting and each query may take.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSource {
    /// `name` (in `public`) or `schema.name`.
    pub table: String,
    /// The collection its rows are kept in (made if missing).
    pub collection: String,
    /// The columns whose values, joined by `/`, are a row's record id: by
    /// default the table's replica identity (its primary key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub id_columns: Vec<String>,
}

impl TableSource {
    /// `(schema, name)`, `public` when the table names none.
    pub fn schema_and_name(&self) -> (&str, &str) {
        self.table
            .split_once('.')
            .unwrap_or(("public", self.table.as_str()))
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NumericAs {
    #[default]
    String,
    Number,
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

/// Never prints the URL (it may hold a password).
impl std::fmt::Debug for PostgresSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSource")
            .field("tables", &self.tables)
            .field("publication", &self.publication)
            .field("numeric", &self.numeric)
            .finish_non_exhaustive()
    }
}

fn invalid<T>(message: impl Into<String>) -> EngineResult<T> {
    Err(EngineError::Invalid(message.into()))
}

impl PostgresSource {
    /// What can be checked without the database.
    pub fn validate_settings(&self) -> EngineResult<()> {
        check_url("postgres.url", &self.url, &["postgres", "postgresql"])?;
        if self.tables.is_empty() || self.tables.len() > MAX_TABLES {
            return invalid(format!(
                "postgres.tables must hold 1 to {MAX_TABLES} tables"
            ));
        }
        let mut tables = std::collections::HashSet::new();
        let mut collections = std::collections::HashSet::new();
        for table in &self.tables {
            check_table_name("postgres.tables[].table", &table.table)?;
            CollectionName::parse(table.collection.clone())?;
            if !tables.insert(table.schema_and_name()) {
                return invalid(format!("table `{}` is named twice", table.table));
            }
            // Two tables in one collection could hold the same id.
            if !collections.insert(table.collection.as_str()) {
                return invalid(format!(
                    "collection `{}` is named for two tables; each table needs its own",
                    table.collection
                ));
            }
            let mut columns = std::collections::HashSet::new();
            for column in &table.id_columns {
                if !is_identifier(column) || !columns.insert(column) {
                    return invalid(format!(
                        "id column `{column}` of `{}` must be a plain identifier, named once",
                        table.table
                    ));
                }
            }
        }
        if let Some(publication) = &self.publication {
            // Postgres reads `publication_names` folded to lower case.
            if !is_identifier(publication) || publication.bytes().any(|b| b.is_ascii_uppercase()) {
                return invalid("postgres.publication must be a plain identifier in lower case");
            }
        }
        if self.timeout_ms < 100 || self.timeout_ms > MAX_TIMEOUT_MS {
            return invalid(format!(
                "postgres.timeout_ms must be 100 to {}",
                MAX_TIMEOUT_MS
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(tables: Vec<TableSource>) -> PostgresSource {
        PostgresSource {
            url: "postgres://u:p@127.0.0.1:5432/db".into(),
            tables,
            publication: None,
            numeric: NumericAs::String,
            timeout_ms: 10_000,
        }
    }

    fn table(table: &str, collection: &str) -> TableSource {
        TableSource {
            table: table.into(),
            collection: collection.into(),
            id_columns: Vec::new(),
        }
    }

    #[test]
    fn tables_need_collections_of_their_own() {
        assert!(
            source(vec![table("users", "users"), table("s.orders", "orders")])
                .validate_settings()
                .is_ok()
        );
        assert!(source(vec![]).validate_settings().is_err());
        assert!(source(vec![table("users", "c"), table("orders", "c")])
            .validate_settings()
            .is_err());
        assert!(
            source(vec![table("users", "a"), table("public.users", "b")])
                .validate_settings()
                .is_err()
        );
        assert!(source(vec![table("a.b.c", "a")])
            .validate_settings()
            .is_err());
        let mut bad_column = table("users", "users");
        bad_column.id_columns = vec!["id; drop".into()];
        assert!(source(vec![bad_column]).validate_settings().is_err());
    }
}
