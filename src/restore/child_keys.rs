//! Indexes on unindexed child keys, for the length of the write
//! transaction only.
//!
//! With foreign keys on, SQLite looks up the children of every parent row a
//! statement deletes (or whose key it changes, or that it inserts while a
//! deferred violation is outstanding), to count violations and to run
//! `ON DELETE` actions. It finds them with an index on the child key when
//! there is one, and scans the whole child table otherwise: a purge of `n`
//! parents with an unindexed child key costs `n` full scans. Real apps
//! often leave child keys unindexed (`tasks.parent_id`, join tables), so
//! the write transaction indexes them first, one sort each, and drops
//! those indexes again before it commits.
//!
//! Foreign keys stay on: SQLite itself still refuses a dangling reference
//! at commit and still runs `CASCADE` / `SET NULL`, which the
//! post-condition judges as before, and a dry run's rehearsal takes the
//! same path as the real run. The schema is back as it was when the
//! transaction commits; the pages of the dropped indexes stay in the file
//! as free pages, reused by the app's next writes.

use crate::error::{Error, Result};
use crate::sql;

use rusqlite::{ffi, Connection, OptionalExtension};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CStr, CString};

/// One declared foreign key of a table of the main database.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ChildKey {
    child: String,
    /// The child's columns, each with the collation SQLite compares it
    /// under: the parent column's.
    columns: Vec<(String, String)>,
}

/// The indexes this transaction created, to drop before commit.
#[derive(Debug, Default)]
pub(super) struct ChildKeyIndexes {
    names: Vec<String>,
}

impl ChildKeyIndexes {
    /// Index every child key of a foreign key to one of `parents` that no
    /// index of the child serves. Runs inside the write transaction: a
    /// rollback takes the indexes with it.
    pub fn create(conn: &Connection, parents: &BTreeSet<String>) -> Result<ChildKeyIndexes> {
        let mut created = ChildKeyIndexes::default();
        for key in child_keys(conn, parents)? {
            if served_by_an_index(conn, &key)? {
                continue;
            }
            let name = free_index_name(conn)?;
            let columns = key
                .columns
                .iter()
                .map(|(c, collation)| {
                    format!("{} COLLATE {}", sql::ident(c), sql::ident(collation))
                })
                .collect::<Vec<_>>()
                .join(", ");
            conn.execute_batch(&format!(
                "CREATE INDEX main.{} ON {}({columns})",
                sql::ident(&name),
                sql::ident(&key.child)
            ))?;
            created.names.push(name);
        }
        Ok(created)
    }

    /// Drop them again, still inside the transaction.
    pub fn drop_all(self, conn: &Connection) -> Result<()> {
        for name in &self.names {
            conn.execute_batch(&format!("DROP INDEX main.{}", sql::ident(name)))?;
        }
        Ok(())
    }
}

/// A foreign key as declared: the parent, and each child column with the
/// parent column it names (none: the parent's primary key).
type Declared = (String, Vec<(String, Option<String>)>);

/// Every foreign key of the main database whose parent is one of
/// `parents` (compared as SQLite does, without case).
fn child_keys(conn: &Connection, parents: &BTreeSet<String>) -> Result<Vec<ChildKey>> {
    let parents: BTreeSet<String> = parents.iter().map(|p| p.to_lowercase()).collect();
    let mut stmt = conn.prepare(
        "SELECT s.name, f.id, f.\"table\", f.\"from\", f.\"to\"
           FROM main.sqlite_schema AS s, pragma_foreign_key_list(s.name, 'main') AS f
          WHERE s.type = 'table'
          ORDER BY s.name, f.id, f.seq",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, Option<String>>(4)?,
        ))
    })?;
    let mut keys: BTreeMap<(String, i64), Declared> = BTreeMap::new();
    for row in rows {
        let (child, id, parent, from, to) = row?;
        if !parents.contains(&parent.to_lowercase()) {
            continue;
        }
        keys.entry((child, id))
            .or_insert_with(|| (parent, Vec::new()))
            .1
            .push((from, to));
    }
    let mut out = Vec::new();
    for ((child, _), (parent, columns)) in keys {
        // `REFERENCES parent` without columns names the parent's primary key.
        let implied = if columns.iter().any(|(_, to)| to.is_none()) {
            primary_key(conn, &parent)?
        } else {
            Vec::new()
        };
        let mut pairs = Vec::new();
        for (i, (from, to)) in columns.into_iter().enumerate() {
            let Some(to) = to.or_else(|| implied.get(i).cloned()) else {
                // SQLite itself refuses such a key ("foreign key mismatch").
                continue;
            };
            pairs.push((from, collation(conn, &parent, &to)?));
        }
        if !pairs.is_empty() {
            let key = ChildKey {
                child,
                columns: pairs,
            };
            if !out.contains(&key) {
                out.push(key);
            }
        }
    }
    Ok(out)
}

fn primary_key(conn: &Connection, table: &str) -> Result<Vec<String>> {
    let mut stmt =
        conn.prepare("SELECT name FROM pragma_table_info(?1, 'main') WHERE pk > 0 ORDER BY pk")?;
    let names = stmt
        .query_map([table], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(names)
}

/// The collation SQLite compares a child key under: the parent column's
/// declared one (`BINARY` when none), see `exprTableRegister` in SQLite's
/// fkey.c. An index of another collation does not serve the lookup.
fn collation(conn: &Connection, table: &str, column: &str) -> Result<String> {
    let (Ok(db), Ok(t), Ok(c)) = (
        CString::new("main"),
        CString::new(table),
        CString::new(column),
    ) else {
        return Ok("BINARY".into());
    };
    let mut coll: *const std::ffi::c_char = std::ptr::null();
    // SAFETY: the handle is the live connection's, the strings outlive the
    // call, and SQLite's collation name stays valid until the schema
    // changes: it is copied before any other statement runs.
    let rc = unsafe {
        ffi::sqlite3_table_column_metadata(
            conn.handle(),
            db.as_ptr(),
            t.as_ptr(),
            c.as_ptr(),
            std::ptr::null_mut(),
            &mut coll,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    if rc != ffi::SQLITE_OK || coll.is_null() {
        return Err(Error::database(format!(
            "cannot read the collation of {table}.{column}"
        )));
    }
    // SAFETY: non-null, NUL-terminated, owned by SQLite (see above).
    Ok(unsafe { CStr::from_ptr(coll) }
        .to_string_lossy()
        .into_owned())
}

/// Whether SQLite's planner finds a child's rows by this key without a full
/// scan: asked the way SQLite asks it (equality on each column under the
/// parent's collation), so any index the planner would use counts,
/// whatever its column order, extra columns or `WHERE`.
fn served_by_an_index(conn: &Connection, key: &ChildKey) -> Result<bool> {
    let terms = key
        .columns
        .iter()
        .enumerate()
        .map(|(i, (c, collation))| {
            format!(
                "{} = (?{} COLLATE {})",
                sql::ident(c),
                i + 1,
                sql::ident(collation)
            )
        })
        .collect::<Vec<_>>()
        .join(" AND ");
    let sql = format!(
        "EXPLAIN QUERY PLAN SELECT 1 FROM {} WHERE {terms}",
        sql::main_table(&key.child)
    );
    let mut stmt = conn.prepare(&sql)?;
    // Unbound parameters: the plan does not depend on their values.
    let unbound = std::iter::repeat_n(rusqlite::types::Null, key.columns.len());
    let details = stmt
        .query_map(rusqlite::params_from_iter(unbound), |r| {
            r.get::<_, String>(3)
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(!details.iter().any(|d| d.starts_with("SCAN")))
}

/// An index name no table or index of the main database has.
fn free_index_name(conn: &Connection) -> Result<String> {
    for n in 0u32.. {
        let name = format!("tk_restore_child_key_{n}");
        let taken = conn
            .query_row(
                "SELECT 1 FROM main.sqlite_schema WHERE lower(name) = lower(?1)",
                [&name],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if !taken {
            return Ok(name);
        }
    }
    Err(Error::internal("no free name for a child-key index"))
}
