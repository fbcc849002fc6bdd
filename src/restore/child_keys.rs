//! How the write transaction keeps foreign keys whole without SQLite
//! scanning a child table per parent row.
//!
//! With foreign keys on, SQLite looks up the children of every parent row a
//! statement deletes (or whose key it changes), and, while a deferred
//! violation is outstanding, of every parent row it inserts (VDBE
//! `FkIfZero`). It finds them with an index on the child key when there is
//! one, and scans the whole child table (every tenant's rows) otherwise: a
//! purge of `n` parents with an unindexed child key costs `n` full scans.
//! Real apps often leave child keys unindexed. Two ways out, measured on
//! the bench's child-key variant (see the report of issue 19):
//!
//! - [`Mode::Targeted`], when nothing in the schema can change rows our
//!   statements do not name (no trigger, no `CASCADE`/`SET NULL`/`SET
//!   DEFAULT`, no `REPLACE`: [`super::postcondition::writes_can_reach_further`])
//!   and no written table is referenced by a column an upsert rewrites:
//!   foreign keys are off for the write (the pragma is only honoured
//!   outside a transaction, so it is set before `BEGIN`), and before commit
//!   two checks look only at what changed: the keys of the parent rows the
//!   purge removed are kept in a temp table, and no child row (any
//!   tenant's) may still refer to one that is gone (one pass over each
//!   child table, whatever its indexes); every written row's references
//!   must find their parent (one primary-key lookup each). A violation is
//!   the error SQLite's own commit-time check gave. No index is built, no
//!   child table is sorted: a restore into a deleted tenant costs what its
//!   rows cost.
//! - [`Mode::Sqlite`] otherwise (and for a dry run's rehearsal, which only
//!   happens when the schema has actions or triggers): foreign keys stay
//!   on, so SQLite itself runs the actions (judged by the post-condition)
//!   and refuses a dangling reference at commit. Only the child keys SQLite
//!   will look up are indexed, for the length of the transaction: those of
//!   parents the purge removes rows from or whose referenced key an upsert
//!   may rewrite, those of a table written while one of its own rows may
//!   wait for a parent written later (self and forward references), and
//!   those of any table about to be written while a deferred violation is
//!   outstanding (`SQLITE_DBSTATUS_DEFERRED_FKS`). A restore into a deleted
//!   tenant with parents first indexes nothing.
//!
//! Indexes created here are dropped before the checks after the write, so
//! the schema is as it was at commit.

use super::stage::StagedTable;
use crate::error::{Error, Result};
use crate::sql;

use rusqlite::{ffi, Connection, OptionalExtension};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CStr, CString};

mod checks;

/// One column of a foreign key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyColumn {
    child: String,
    parent: String,
    /// SQLite compares the child value under the parent column's collation.
    collation: String,
}

/// One declared foreign key of a table of the main database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ForeignKey {
    child: String,
    parent: String,
    columns: Vec<KeyColumn>,
}

/// How this write keeps references whole (see the module's header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Foreign keys on, child keys SQLite will look up indexed.
    Sqlite,
    /// Foreign keys off, the changed rows checked before commit.
    Targeted,
}

/// What the write will do, as far as foreign keys care.
pub(super) struct Writes<'s> {
    /// Tables the purge removes rows from.
    pub purged: BTreeSet<String>,
    /// Tables written, in the order they are written (parents first).
    pub written: Vec<&'s StagedTable>,
}

/// The foreign keys of the main database and what this transaction did
/// about them.
pub(super) struct ForeignKeyGuard {
    mode: Mode,
    keys: Vec<ForeignKey>,
    /// Keys of `keys` already served by an index (the app's or ours).
    served: BTreeSet<usize>,
    /// Indexes this transaction created, to drop after the write.
    created: Vec<String>,
    /// Per parent table and referenced columns: the temp table holding the
    /// keys of its purged rows.
    gone: BTreeMap<(String, Vec<String>), sql::TempTable>,
    /// Self and forward references of written tables (Sqlite mode).
    waits: BTreeSet<String>,
}

/// The mode for a write of `written` tables. Call before `BEGIN`:
/// Targeted switches foreign keys off, which SQLite ignores inside a
/// transaction. `rehearsal`: a dry run's, which must take the real path of
/// a schema whose writes reach further.
pub(super) fn choose(conn: &Connection, written: &[&StagedTable], rehearsal: bool) -> Result<Mode> {
    if rehearsal || super::postcondition::writes_can_reach_further(conn)? {
        return Ok(Mode::Sqlite);
    }
    let keys = declared(conn)?;
    if keys.iter().any(|k| rewrites_referenced_key(k, written)) {
        return Ok(Mode::Sqlite);
    }
    conn.execute_batch("PRAGMA foreign_keys = OFF")?;
    Ok(Mode::Targeted)
}

/// Foreign keys on again (after commit or rollback).
pub(super) fn restore_pragma(conn: &Connection) -> Result<()> {
    conn.execute_batch("PRAGMA foreign_keys = ON")?;
    Ok(())
}

/// Whether an upsert of a written table may change a column this key
/// refers to: an upsert rewrites every column but the primary key.
fn rewrites_referenced_key(key: &ForeignKey, written: &[&StagedTable]) -> bool {
    let Some(parent) = written
        .iter()
        .find(|t| t.name.eq_ignore_ascii_case(&key.parent))
    else {
        return false;
    };
    if !parent.has_pk() {
        return false; // rows without a key are only inserted
    }
    let pk: BTreeSet<String> = parent
        .pk
        .iter()
        .map(|&i| parent.columns[i].to_lowercase())
        .collect();
    key.columns
        .iter()
        .any(|c| !pk.contains(&c.parent.to_lowercase()))
}

impl ForeignKeyGuard {
    /// Under the write lock, once the plan is final. In Sqlite mode, index
    /// the child keys SQLite will look up from the start.
    pub fn begin(conn: &Connection, mode: Mode, writes: &Writes<'_>) -> Result<ForeignKeyGuard> {
        if mode == Mode::Targeted && super::postcondition::writes_can_reach_further(conn)? {
            // Another connection changed the schema since `choose`.
            return Err(Error::conflict(
                "the database's schema changed while the restore was planned; nothing was changed: run it again",
            ));
        }
        let mut guard = ForeignKeyGuard {
            mode,
            keys: declared(conn)?,
            served: BTreeSet::new(),
            created: Vec::new(),
            gone: BTreeMap::new(),
            waits: BTreeSet::new(),
        };
        if mode == Mode::Sqlite {
            guard.waits = waiting_tables(&guard.keys, &writes.written);
            let mut parents = writes.purged.clone();
            parents.extend(guard.waits.iter().cloned());
            for (i, key) in guard.keys.clone().iter().enumerate() {
                let parent_in = |set: &BTreeSet<String>| {
                    set.iter().any(|p| p.eq_ignore_ascii_case(&key.parent))
                };
                if parent_in(&parents) || rewrites_referenced_key(key, &writes.written) {
                    guard.index(conn, i)?;
                }
            }
        }
        Ok(guard)
    }

    /// Before the purge of `table`, whose rows `rows` (`FROM … WHERE …`
    /// with the purge's own condition and parameters) names: in Targeted
    /// mode, keep the keys children may refer to.
    pub fn before_purge(
        &mut self,
        conn: &Connection,
        table: &str,
        rows: &str,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<()> {
        if self.mode != Mode::Targeted {
            return Ok(());
        }
        let mut referenced: Vec<(Vec<String>, Vec<String>)> = Vec::new();
        for key in self
            .keys
            .iter()
            .filter(|k| k.parent.eq_ignore_ascii_case(table))
        {
            let columns: Vec<String> = key.columns.iter().map(|c| c.parent.clone()).collect();
            let collations = key.columns.iter().map(|c| c.collation.clone()).collect();
            if !referenced.iter().any(|(c, _)| c == &columns) {
                referenced.push((columns, collations));
            }
        }
        for (columns, collations) in referenced {
            let next = self.gone.len();
            let gone = *self
                .gone
                .entry((table.to_lowercase(), columns.clone()))
                .or_insert_with(|| sql::TempTable::new("gone", next));
            let declared = collations
                .iter()
                .enumerate()
                .map(|(i, c)| format!("k{i} COLLATE {}", sql::ident(c)))
                .collect::<Vec<_>>()
                .join(", ");
            let ks = (0..columns.len())
                .map(|i| format!("k{i}"))
                .collect::<Vec<_>>();
            conn.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {gone}({declared});
                 CREATE INDEX IF NOT EXISTS temp.{name}_k ON {name}({ks});",
                name = gone.name(),
                ks = ks.join(", ")
            ))?;
            let values = columns
                .iter()
                .map(|c| format!("{}.{}", sql::main_table(table), sql::ident(c)))
                .collect::<Vec<_>>()
                .join(", ");
            conn.prepare(&format!("INSERT INTO {gone} SELECT {values} {rows}"))?
                .execute(params)?;
        }
        Ok(())
    }

    /// Before `table`'s rows are written (Sqlite mode): if a deferred
    /// violation is outstanding, SQLite looks up the children of every row
    /// inserted, so their keys need an index now.
    pub fn before_write(&mut self, conn: &Connection, table: &str) -> Result<()> {
        if self.mode != Mode::Sqlite || deferred_violations(conn)? == 0 {
            return Ok(());
        }
        for i in 0..self.keys.len() {
            if self.keys[i].parent.eq_ignore_ascii_case(table) {
                self.index(conn, i)?;
            }
        }
        Ok(())
    }

    /// After every row is written: drop our indexes (the checks that follow
    /// look rows up by the app's own indexes), and in Targeted mode check
    /// the references that changed. `written`: each written table with the
    /// condition on its staged row `s` that the row was written.
    pub fn finish(self, conn: &Connection, written: &[(&StagedTable, String)]) -> Result<()> {
        for name in &self.created {
            conn.execute_batch(&format!("DROP INDEX main.{}", sql::ident(name)))?;
        }
        if self.mode != Mode::Targeted {
            return Ok(());
        }
        let mut found = self.references_to_gone(conn)?;
        if found.is_empty() {
            found = self.references_of_written(conn, written)?;
        }
        if found.is_empty() {
            return Ok(());
        }
        Err(checks::broken_references(&found))
    }

    /// Index key `i`'s child columns unless an index already serves them.
    fn index(&mut self, conn: &Connection, i: usize) -> Result<()> {
        if self.served.contains(&i) {
            return Ok(());
        }
        let key = &self.keys[i];
        if !served_by_an_index(conn, key)? {
            let name = free_index_name(conn)?;
            let columns = key
                .columns
                .iter()
                .map(|c| {
                    format!(
                        "{} COLLATE {}",
                        sql::ident(&c.child),
                        sql::ident(&c.collation)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            conn.execute_batch(&format!(
                "CREATE INDEX main.{} ON {}({columns})",
                sql::ident(&name),
                sql::ident(&key.child)
            ))?;
            self.created.push(name);
        }
        // Every key on the same child columns is served now too.
        let same: Vec<usize> = (0..self.keys.len())
            .filter(|&j| {
                self.keys[j].child.eq_ignore_ascii_case(&self.keys[i].child)
                    && self.keys[j].columns == self.keys[i].columns
            })
            .collect();
        self.served.extend(same);
        Ok(())
    }
}

/// The written tables whose rows may refer to a row written after them:
/// to themselves or to a table later in the write order.
fn waiting_tables(keys: &[ForeignKey], written: &[&StagedTable]) -> BTreeSet<String> {
    let position = |name: &str| {
        written
            .iter()
            .position(|t| t.name.eq_ignore_ascii_case(name))
    };
    keys.iter()
        .filter_map(|k| match (position(&k.child), position(&k.parent)) {
            (Some(c), Some(p)) if p >= c => Some(written[c].name.clone()),
            _ => None,
        })
        .collect()
}

/// How many foreign-key violations are outstanding in this transaction.
fn deferred_violations(conn: &Connection) -> Result<i32> {
    let (mut current, mut highest) = (0, 0);
    // SAFETY: the live connection's handle and two out-parameters.
    let rc = unsafe {
        ffi::sqlite3_db_status(
            conn.handle(),
            ffi::SQLITE_DBSTATUS_DEFERRED_FKS,
            &mut current,
            &mut highest,
            0,
        )
    };
    if rc != ffi::SQLITE_OK {
        return Err(Error::database(
            "cannot read the outstanding foreign-key violations",
        ));
    }
    Ok(current)
}

/// A foreign key as declared: the parent, and each child column with the
/// parent column it names (none: the parent's primary key).
type Declared = (String, Vec<(String, Option<String>)>);

/// Every foreign key of the main database, its parent columns resolved.
fn declared(conn: &Connection) -> Result<Vec<ForeignKey>> {
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
            let Some(collation) = collation(conn, &parent, &to)? else {
                continue; // a missing parent table or column: same
            };
            pairs.push(KeyColumn {
                child: from,
                parent: to,
                collation,
            });
        }
        if !pairs.is_empty() {
            out.push(ForeignKey {
                child,
                parent,
                columns: pairs,
            });
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
/// fkey.c. An index of another collation does not serve the lookup. None
/// when the parent table or column does not exist.
fn collation(conn: &Connection, table: &str, column: &str) -> Result<Option<String>> {
    let (Ok(db), Ok(t), Ok(c)) = (
        CString::new("main"),
        CString::new(table),
        CString::new(column),
    ) else {
        return Ok(None);
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
        return Ok(None);
    }
    // SAFETY: non-null, NUL-terminated, owned by SQLite (see above).
    Ok(Some(
        unsafe { CStr::from_ptr(coll) }
            .to_string_lossy()
            .into_owned(),
    ))
}

/// Whether SQLite's planner finds a child's rows by this key without a full
/// scan: asked the way SQLite asks it (equality on each column under the
/// parent's collation), so any index the planner would use counts,
/// whatever its column order, extra columns or `WHERE`.
fn served_by_an_index(conn: &Connection, key: &ForeignKey) -> Result<bool> {
    let terms = sql::all_of(key.columns.iter().enumerate().map(|(i, c)| {
        format!(
            "{} = (?{} COLLATE {})",
            sql::ident(&c.child),
            i + 1,
            sql::ident(&c.collation)
        )
    }));
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

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = "
        CREATE TABLE tasks(id INTEGER PRIMARY KEY, code TEXT COLLATE NOCASE UNIQUE,
                           parent_id INTEGER REFERENCES tasks);
        CREATE TABLE entries(id INTEGER PRIMARY KEY, task_id INTEGER REFERENCES tasks,
                             task_code TEXT REFERENCES tasks(code));
        CREATE INDEX entries_code ON entries(task_code COLLATE NOCASE);
        INSERT INTO tasks VALUES (1, 'a', NULL), (2, 'b', 1);
        INSERT INTO entries VALUES (1, 1, 'A'), (2, 2, 'b');";

    fn db(extra: &str) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&format!("PRAGMA foreign_keys = ON;{SCHEMA}{extra}"))
            .unwrap();
        conn
    }

    fn foreign_keys_on(conn: &Connection) -> bool {
        conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn reads_keys_with_the_parent_columns_and_collations_sqlite_compares_under() {
        let keys = declared(&db("")).unwrap();
        let pairs: Vec<(&str, &str, &str, &str)> = keys
            .iter()
            .flat_map(|k| {
                k.columns.iter().map(move |c| {
                    (
                        k.child.as_str(),
                        c.child.as_str(),
                        c.parent.as_str(),
                        c.collation.as_str(),
                    )
                })
            })
            .collect();
        assert_eq!(
            pairs,
            [
                ("entries", "task_code", "code", "NOCASE"),
                ("entries", "task_id", "id", "BINARY"),
                ("tasks", "parent_id", "id", "BINARY"),
            ]
        );
        let conn = db("");
        let served: Vec<bool> = keys
            .iter()
            .map(|k| served_by_an_index(&conn, k).unwrap())
            .collect();
        assert_eq!(served, [true, false, false]);
    }

    #[test]
    fn foreign_keys_go_off_only_where_nothing_reaches_further() {
        let conn = db("");
        assert_eq!(choose(&conn, &[], false).unwrap(), Mode::Targeted);
        assert!(!foreign_keys_on(&conn));
        restore_pragma(&conn).unwrap();
        assert!(foreign_keys_on(&conn));
        assert_eq!(choose(&conn, &[], true).unwrap(), Mode::Sqlite);
        assert!(foreign_keys_on(&conn));
        let actions = db("CREATE TABLE notes(id INTEGER PRIMARY KEY,
                          task_id INTEGER REFERENCES tasks ON DELETE SET NULL);");
        assert_eq!(choose(&actions, &[], false).unwrap(), Mode::Sqlite);
        assert!(foreign_keys_on(&actions));
    }

    #[test]
    fn indexes_the_child_keys_of_purged_parents_for_the_transaction_only() {
        let conn = db("");
        let indexes = |conn: &Connection| -> i64 {
            conn.query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name LIKE 'tk_restore_child_key_%'",
                [],
                |r| r.get(0),
            )
            .unwrap()
        };
        conn.execute_batch("BEGIN").unwrap();
        let writes = Writes {
            purged: ["tasks".to_string()].into(),
            written: Vec::new(),
        };
        let guard = ForeignKeyGuard::begin(&conn, Mode::Sqlite, &writes).unwrap();
        // entries.task_id and tasks.parent_id; entries.task_code has one.
        assert_eq!(indexes(&conn), 2);
        guard.finish(&conn, &[]).unwrap();
        assert_eq!(indexes(&conn), 0);
        conn.execute_batch("COMMIT").unwrap();
    }

    #[test]
    fn the_targeted_check_finds_children_of_purged_keys_only() {
        let conn = db("");
        conn.execute_batch("PRAGMA foreign_keys = OFF; BEGIN")
            .unwrap();
        let writes = Writes {
            purged: BTreeSet::new(),
            written: Vec::new(),
        };
        let mut guard = ForeignKeyGuard::begin(&conn, Mode::Targeted, &writes).unwrap();
        // An old dangling reference is not this transaction's doing.
        conn.execute_batch("INSERT INTO entries VALUES (3, 99, NULL)")
            .unwrap();
        let rows = "FROM main.\"tasks\" WHERE main.\"tasks\".id = 2";
        guard.before_purge(&conn, "tasks", rows, &[]).unwrap();
        conn.execute_batch("DELETE FROM tasks WHERE id = 2")
            .unwrap();
        let err = guard.finish(&conn, &[]).unwrap_err();
        assert_eq!(
            err.message(),
            "the restored rows break foreign keys: entries task_code -> tasks='b', \
             entries task_id -> tasks=2; nothing was changed"
        );
    }

    #[test]
    fn counts_outstanding_deferred_violations() {
        let conn = db("");
        conn.execute_batch("BEGIN; PRAGMA defer_foreign_keys = ON;")
            .unwrap();
        assert_eq!(deferred_violations(&conn).unwrap(), 0);
        conn.execute_batch("INSERT INTO tasks VALUES (3, 'c', 4)")
            .unwrap();
        assert_eq!(deferred_violations(&conn).unwrap(), 1);
        conn.execute_batch("INSERT INTO tasks VALUES (4, 'd', NULL)")
            .unwrap();
        assert_eq!(deferred_violations(&conn).unwrap(), 0);
        conn.execute_batch("COMMIT").unwrap();
    }
}
