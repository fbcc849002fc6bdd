//! What the database looks like: tables, columns, keys, foreign keys, read
//! from SQLite's own catalog (`sqlite_schema`, `PRAGMA table_xinfo`,
//! `PRAGMA foreign_key_list`). Nothing here knows about tenants.

use crate::error::Result;
use rusqlite::{Connection, OptionalExtension};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// Declared type as written (`varchar`, `datetime(6)`, may be empty).
    pub decl_type: String,
    pub not_null: bool,
    pub has_default: bool,
    /// 1-based position in the primary key, 0 when not part of it.
    pub pk_position: u32,
    /// Generated columns cannot be inserted: they are dumped for reference
    /// by nobody and restored by SQLite itself.
    pub generated: bool,
}

impl Column {
    /// The column's affinity as a type name that has exactly that
    /// affinity (`INTEGER`, `TEXT`, `BLOB`, `REAL` or `NUMERIC`). The one
    /// place for SQLite's rules, which go by substrings of the declared
    /// type, in this order:
    /// <https://www.sqlite.org/datatype3.html#determination_of_column_affinity>.
    pub fn affinity_keyword(&self) -> &'static str {
        let t = self.decl_type.to_ascii_uppercase();
        if t.contains("INT") {
            "INTEGER"
        } else if ["CHAR", "CLOB", "TEXT"].iter().any(|k| t.contains(k)) {
            "TEXT"
        } else if t.is_empty() || t.contains("BLOB") {
            "BLOB"
        } else if ["REAL", "FLOA", "DOUB"].iter().any(|k| t.contains(k)) {
            "REAL"
        } else {
            "NUMERIC"
        }
    }

    /// True when SQLite stores this column's values as they come (BLOB
    /// affinity: no declared type, or one naming BLOB). With any other
    /// affinity a value is converted on the way in, and a comparison with
    /// the column applies the same conversion first.
    pub fn keeps_storage_class(&self) -> bool {
        self.affinity_keyword() == "BLOB"
    }

    /// INTEGER affinity (the declared type contains `INT`): every value
    /// that could equal an integer is stored as one.
    pub fn has_integer_affinity(&self) -> bool {
        self.affinity_keyword() == "INTEGER"
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    pub from: Vec<String>,
    pub table: String,
    /// Empty in the catalog means "the parent's primary key"; resolved here.
    pub to: Vec<String>,
}

/// Why a table never takes part in a tenant's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// `sqlite_*` tables belong to SQLite.
    Internal,
    /// `schema_migrations`, `ar_internal_metadata`: Rails bookkeeping.
    RailsMetadata,
    /// Virtual tables (FTS, R-Tree…) hold derived data.
    Virtual,
    /// Shadow tables store a virtual table's data.
    Shadow,
    /// The caller said so (`tables: {"audits": "skip"}`).
    Caller,
}

impl SkipReason {
    pub fn describe(self) -> &'static str {
        match self {
            SkipReason::Internal => "SQLite internal table",
            SkipReason::RailsMetadata => "Rails metadata, not tenant data",
            SkipReason::Virtual => "virtual table (derived data, rebuilt by the app)",
            SkipReason::Shadow => "shadow table of a virtual table",
            SkipReason::Caller => "skipped by the caller (tables:)",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Table {
    pub name: String,
    pub columns: Vec<Column>,
    pub foreign_keys: Vec<ForeignKey>,
    pub without_rowid: bool,
    pub skip: Option<SkipReason>,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn has_column(&self, name: &str) -> bool {
        self.column(name).is_some()
    }

    /// Primary key columns in key order (empty for tables without one).
    pub fn primary_key(&self) -> Vec<&str> {
        let mut pk: Vec<&Column> = self.columns.iter().filter(|c| c.pk_position > 0).collect();
        pk.sort_by_key(|c| c.pk_position);
        pk.into_iter().map(|c| c.name.as_str()).collect()
    }

    /// The INTEGER PRIMARY KEY column of a rowid table: the rowid under its
    /// own name.
    pub fn rowid_alias(&self) -> Option<&str> {
        match self.primary_key().as_slice() {
            [pk] if !self.without_rowid
                && self
                    .column(pk)
                    .is_some_and(|c| c.decl_type.eq_ignore_ascii_case("INTEGER")) =>
            {
                Some(pk)
            }
            _ => None,
        }
    }

    /// Columns whose values we dump and insert (not generated ones).
    pub fn stored_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| !c.generated)
    }

    /// How to address one row: `rowid` for ordinary tables, the primary key
    /// columns for WITHOUT ROWID tables.
    pub fn row_key(&self) -> Vec<String> {
        if self.without_rowid {
            self.primary_key().into_iter().map(String::from).collect()
        } else {
            vec!["rowid".to_string()]
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Schema {
    pub tables: Vec<Table>,
    /// Highest `schema_migrations.version`, when the table exists.
    pub migration_version: Option<String>,
}

impl Schema {
    pub fn read(conn: &Connection) -> Result<Schema> {
        let mut stmt = conn.prepare(
            "SELECT name, COALESCE(sql, '') FROM sqlite_schema WHERE type = 'table' ORDER BY name",
        )?;
        let entries: Vec<(String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let kinds = TableKinds::read(conn, &entries)?;
        let mut tables = Vec::with_capacity(entries.len());
        for (name, sql) in &entries {
            tables.push(read_table(conn, name, sql, kinds.skip_reason(name, sql))?);
        }
        resolve_implicit_references(&mut tables);
        let migration_version = read_migration_version(conn, &tables)?;
        Ok(Schema {
            tables,
            migration_version,
        })
    }

    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// Case-insensitive lookup, as SQLite resolves identifiers.
    pub fn table_ci(&self, name: &str) -> Option<&Table> {
        self.table(name).or_else(|| {
            self.tables
                .iter()
                .find(|t| t.name.eq_ignore_ascii_case(name))
        })
    }
}

fn is_virtual(sql: &str) -> bool {
    sql.trim_start()
        .get(..20)
        .is_some_and(|head| head.eq_ignore_ascii_case("CREATE VIRTUAL TABLE"))
}

fn is_without_rowid(sql: &str) -> bool {
    let tail: String = sql
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_uppercase();
    tail.contains("WITHOUT ROWID")
}

/// FTS3/4/5 and R-Tree name their shadow tables `<vtab>_<suffix>`.
fn is_shadow_name(name: &str, vtab: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        "content", "segments", "segdir", "docsize", "stat", "data", "idx", "config", "node",
        "parent", "rowid",
    ];
    name.len() > vtab.len() + 1
        && name[..vtab.len()].eq_ignore_ascii_case(vtab)
        && name.as_bytes()[vtab.len()] == b'_'
        && SUFFIXES
            .iter()
            .any(|s| name[vtab.len() + 1..].eq_ignore_ascii_case(s))
}

/// `PRAGMA table_list` (SQLite 3.37+) names shadow tables outright.
fn shadow_tables(conn: &Connection) -> Result<Vec<String>> {
    let Ok(mut stmt) = conn
        .prepare("SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'shadow'")
    else {
        return Ok(Vec::new()); // older SQLite: fall back to the naming rule
    };
    let names = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(names)
}

/// What tells app tables from the rest: the virtual tables and the shadow
/// tables SQLite keeps for them.
struct TableKinds<'a> {
    virtual_tables: Vec<&'a str>,
    shadow_names: Vec<String>,
}

impl<'a> TableKinds<'a> {
    fn read(conn: &Connection, entries: &'a [(String, String)]) -> Result<Self> {
        Ok(TableKinds {
            virtual_tables: entries
                .iter()
                .filter(|(_, sql)| is_virtual(sql))
                .map(|(name, _)| name.as_str())
                .collect(),
            shadow_names: shadow_tables(conn)?,
        })
    }

    /// Why a table is not app data, or None when it is.
    fn skip_reason(&self, name: &str, sql: &str) -> Option<SkipReason> {
        if name.starts_with("sqlite_") {
            Some(SkipReason::Internal)
        } else if name == "schema_migrations" || name == "ar_internal_metadata" {
            Some(SkipReason::RailsMetadata)
        } else if is_virtual(sql) {
            Some(SkipReason::Virtual)
        } else if self.shadow_names.iter().any(|s| s == name)
            || self.virtual_tables.iter().any(|v| is_shadow_name(name, v))
        {
            Some(SkipReason::Shadow)
        } else {
            None
        }
    }
}

/// One table's columns and foreign keys (none for a virtual table's
/// columns, none for a skipped table's keys).
fn read_table(conn: &Connection, name: &str, sql: &str, skip: Option<SkipReason>) -> Result<Table> {
    let columns = if skip == Some(SkipReason::Virtual) {
        Vec::new()
    } else {
        read_columns(conn, name)?
    };
    let foreign_keys = if skip.is_some() {
        Vec::new()
    } else {
        read_foreign_keys(conn, name)?
    };
    Ok(Table {
        name: name.to_string(),
        columns,
        foreign_keys,
        without_rowid: is_without_rowid(sql),
        skip,
    })
}

/// Resolves `REFERENCES parent` (no column list) to the parent's key.
fn resolve_implicit_references(tables: &mut [Table]) {
    let pks: Vec<(String, Vec<String>)> = tables
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.primary_key().into_iter().map(String::from).collect(),
            )
        })
        .collect();
    for table in tables.iter_mut() {
        for fk in &mut table.foreign_keys {
            if fk.to.iter().all(|c| c.is_empty()) {
                if let Some((_, pk)) = pks.iter().find(|(n, _)| n.eq_ignore_ascii_case(&fk.table)) {
                    fk.to = pk.clone();
                }
            }
        }
    }
}

/// The newest Rails migration, when the database has `schema_migrations`.
fn read_migration_version(conn: &Connection, tables: &[Table]) -> Result<Option<String>> {
    if !tables.iter().any(|t| t.name == "schema_migrations") {
        return Ok(None);
    }
    Ok(conn
        .query_row(
            "SELECT version FROM schema_migrations ORDER BY length(version) DESC, version DESC LIMIT 1",
            [],
            |r| r.get::<_, String>(0),
        )
        .optional()?)
}

fn read_columns(conn: &Connection, table: &str) -> Result<Vec<Column>> {
    let mut stmt = conn.prepare("SELECT name, type, \"notnull\", dflt_value IS NOT NULL, pk, hidden FROM pragma_table_xinfo(?1)")?;
    let columns = stmt
        .query_map([table], |r| {
            let hidden: i64 = r.get(5)?;
            Ok(Column {
                name: r.get(0)?,
                decl_type: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                not_null: r.get::<_, i64>(2)? != 0,
                has_default: r.get(3)?,
                pk_position: r.get::<_, i64>(4)? as u32,
                // 2 and 3: generated columns (VIRTUAL, STORED).
                generated: hidden == 2 || hidden == 3,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(columns)
}

fn read_foreign_keys(conn: &Connection, table: &str) -> Result<Vec<ForeignKey>> {
    let mut stmt = conn.prepare("SELECT id, seq, \"table\", \"from\", \"to\" FROM pragma_foreign_key_list(?1) ORDER BY id, seq")?;
    let rows = stmt
        .query_map([table], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?.unwrap_or_default(),
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut fks: Vec<(i64, ForeignKey)> = Vec::new();
    for (id, parent, from, to) in rows {
        match fks.last_mut() {
            Some((last, fk)) if *last == id => {
                fk.from.push(from);
                fk.to.push(to);
            }
            _ => fks.push((
                id,
                ForeignKey {
                    from: vec![from],
                    table: parent,
                    to: vec![to],
                },
            )),
        }
    }
    Ok(fks.into_iter().map(|(_, fk)| fk).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_keys_and_skips_what_is_not_data() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_migrations(version varchar primary key);
             INSERT INTO schema_migrations VALUES ('20240101000000'), ('20261115000000');
             CREATE TABLE accounts(id integer primary key);
             CREATE TABLE notes(uuid text primary key, account_id integer references accounts, body text,
                                n integer generated always as (length(body)) virtual) WITHOUT ROWID;
             CREATE VIRTUAL TABLE search USING fts5(body);",
        )
        .unwrap();
        let schema = Schema::read(&conn).unwrap();
        let notes = schema.table("notes").unwrap();
        assert!(notes.without_rowid);
        assert_eq!(notes.primary_key(), vec!["uuid"]);
        assert_eq!(notes.row_key(), vec!["uuid".to_string()]);
        assert_eq!(notes.foreign_keys[0].to, vec!["id".to_string()]);
        assert!(notes.column("n").unwrap().generated);
        assert_eq!(
            schema.table("search").unwrap().skip,
            Some(SkipReason::Virtual)
        );
        assert_eq!(
            schema.table("search_data").unwrap().skip,
            Some(SkipReason::Shadow)
        );
        assert_eq!(
            schema.table("schema_migrations").unwrap().skip,
            Some(SkipReason::RailsMetadata)
        );
        assert_eq!(schema.migration_version.as_deref(), Some("20261115000000"));
    }
}
