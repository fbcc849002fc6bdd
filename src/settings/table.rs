//! The settings table as found in the app's database: its quoted names,
//! the statement texts built from them, and whether an index serves
//! (tenant, target_type, target_id) lookups; and the connection to it.

use super::config::SettingsConfig;
use crate::error::{Error, Result, ResultExt};
use crate::sql;
use rusqlite::{Connection, OpenFlags};

/// The settings table as found in the database: the statement texts built
/// from its quoted names, and whether an index serves (tenant,
/// target_type, target_id) lookups.
pub(super) struct SettingsTable {
    pub(super) levels_class: String,
    pub(super) levels_one: String,
    pub(super) levels_list: String,
    pub(super) levels_all: String,
    pub(super) tenant_rows: String,
    pub(super) insert: String,
    pub(super) has_timestamps: bool,
    pub(super) indexed: bool,
}

impl SettingsTable {
    pub(super) fn inspect(conn: &Connection, config: &SettingsConfig) -> Result<SettingsTable> {
        let db = config.database.display();
        let columns: Vec<String> = {
            let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
            let names = stmt.query_map([&config.table], |r| r.get::<_, String>(0))?;
            names
                .collect::<rusqlite::Result<_>>()
                .at(format!("reading the columns of {:?}", config.table))?
        };
        if columns.is_empty() {
            return Err(Error::argument(format!(
                "table: there is no table {:?} in {db}",
                config.table
            )));
        }
        let find = |name: &str| {
            columns
                .iter()
                .find(|c| c.eq_ignore_ascii_case(name))
                .cloned()
        };
        let need = |option: &str, name: &str| {
            find(name).map(|c| sql::ident(&c)).ok_or_else(|| {
                Error::argument(format!(
                    "{option}: table {:?} in {db} has no column {name:?} (columns: {})",
                    config.table,
                    columns.join(", ")
                ))
            })
        };
        let table = sql::ident(&config.table);
        let tenant = need("tenant_column", &config.tenant_column)?;
        let ttype = need("target_type_column", &config.target_type_column)?;
        let tid = need("target_id_column", &config.target_id_column)?;
        let key = need("key_column", &config.key_column)?;
        let value = need("value_column", &config.value_column)?;
        let id = find("id")
            .map(|c| sql::ident(&c))
            .unwrap_or_else(|| "rowid".to_string());
        let created = find(&config.created_at_column).map(|c| sql::ident(&c));
        let updated = find(&config.updated_at_column).map(|c| sql::ident(&c));

        let indexed = Self::has_lookup_index(conn, config)?;

        let tenant_part = format!(
            "SELECT 0, {id}, NULL, {key}, {value} FROM {table} WHERE {tenant} = ?1 AND {ttype} IS NULL AND {tid} IS NULL"
        );
        let class_part = format!(
            "SELECT 1, {id}, NULL, {key}, {value} FROM {table} WHERE {tenant} = ?1 AND {ttype} = ?2 AND {tid} IS NULL"
        );
        let instance_part = |cond: &str| {
            format!(
                "SELECT 2, {id}, {tid}, {key}, {value} FROM {table} WHERE {tenant} = ?1 AND {ttype} = ?2 AND {cond}"
            )
        };
        let levels = |cond: Option<&str>| match cond {
            None => format!("{tenant_part} UNION ALL {class_part} AND ?3 IS NULL"),
            Some(cond) => format!(
                "{tenant_part} UNION ALL {class_part} UNION ALL {}",
                instance_part(cond)
            ),
        };
        let (ts_cols, ts_vals) = match (&created, &updated) {
            (Some(c), Some(u)) => (format!(", {c}, {u}"), ", ?6, ?6"),
            (Some(c), None) | (None, Some(c)) => (format!(", {c}"), ", ?6"),
            (None, None) => (String::new(), ""),
        };
        Ok(SettingsTable {
            levels_class: levels(None),
            levels_one: levels(Some(&format!("{tid} = ?3"))),
            levels_list: levels(Some(&format!("{tid} IN (SELECT value FROM json_each(?3))"))),
            levels_all: levels(Some(&format!("{tid} IS NOT NULL AND ?3 IS NULL"))),
            tenant_rows: format!("SELECT {id}, {ttype}, {tid}, {key}, {value} FROM {table} WHERE {tenant} = ?1"),
            insert: format!(
                "INSERT INTO {table} ({tenant}, {ttype}, {tid}, {key}, {value}{ts_cols}) VALUES (?1, ?2, ?3, ?4, ?5{ts_vals})"
            ),
            has_timestamps: created.is_some() || updated.is_some(),
            indexed,
        })
    }

    /// Is there a full (not partial) index whose first three columns are
    /// the tenant, target_type and target_id columns?
    pub(super) fn has_lookup_index(conn: &Connection, config: &SettingsConfig) -> Result<bool> {
        let wanted = [
            &config.tenant_column,
            &config.target_type_column,
            &config.target_id_column,
        ];
        let indexes: Vec<String> = {
            let mut stmt =
                conn.prepare("SELECT name FROM pragma_index_list(?1) WHERE partial = 0")?;
            let names = stmt.query_map([&config.table], |r| r.get::<_, String>(0))?;
            names.collect::<rusqlite::Result<_>>()?
        };
        let mut stmt =
            conn.prepare("SELECT name FROM pragma_index_info(?1) ORDER BY seqno LIMIT 3")?;
        for index in indexes {
            let columns: Vec<Option<String>> = stmt
                .query_map([&index], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let matches = columns.len() == 3
                && columns.iter().zip(wanted).all(|(have, want)| {
                    have.as_deref()
                        .is_some_and(|h| h.eq_ignore_ascii_case(want))
                });
            if matches {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

pub(super) fn connect(config: &SettingsConfig) -> Result<Connection> {
    let path = &config.database;
    if path.as_os_str() == ":memory:" {
        return Err(Error::argument(
            "database: an in-memory database cannot be shared; give the path of a file",
        ));
    }
    if !path.is_file() {
        return Err(Error::argument(format!(
            "database: no such file: {}",
            path.display()
        )));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn =
        Connection::open_with_flags(path, flags).at(format!("opening {}", path.display()))?;
    conn.busy_timeout(config.busy_timeout)?;
    conn.set_prepared_statement_cache_capacity(16);
    Ok(conn)
}
