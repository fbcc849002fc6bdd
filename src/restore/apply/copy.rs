//! One staged table's rows copied into the database: one `INSERT … SELECT`
//! (an upsert guarded against other tenants' rows) per chunk of staged
//! rows, with a progress event and an interrupt check between chunks.

use super::Write;
use crate::error::{Error, Result};
use crate::progress::{Event, Step};
use crate::restore::plan::{self, Plan};
use crate::restore::stage::StagedTable;
use crate::restore::{conflict_error, Context};
use crate::scope::{is_blob_table, tenant_params, MemberSets};
use crate::sql;
use crate::value::SqlValue;
use rusqlite::Connection;

/// Staged rows copied per statement: a progress event and an interrupt
/// check between chunks.
const CHUNK_ROWS: i64 = 65_536;

/// One staged table's copy into the database: insert, or update an
/// existing row with the same key unless it is another tenant's (the
/// guard; the plan found none, so a refused row means the plan was wrong:
/// a conflict). Kept rows that already hold the archive's values are not
/// written.
pub(super) struct TableCopy<'t> {
    table: &'t StagedTable,
    others: &'t MemberSets<'t>,
    /// The plan's hits table of kept rows, and how many of them already
    /// hold the archive's values.
    keep: Option<(&'t str, u64)>,
    /// Counts a chunk's rows another tenant shares (see `plan::may_share`).
    shared: Option<String>,
}

impl<'t> TableCopy<'t> {
    pub(super) fn new(
        ctx: &Context<'_>,
        table: &'t StagedTable,
        plan: &'t Plan<'_>,
    ) -> TableCopy<'t> {
        let as_is = plan.kept_as_is.get(&table.name).copied().unwrap_or(0);
        let keep = plan
            .kept
            .get(&table.name)
            .map(|hits| (hits.as_str(), as_is));
        let shared = plan::may_share(ctx, table).then(|| {
            format!(
                "SELECT count(*) FROM temp.{} WHERE sid BETWEEN ?1 AND ?2 AND others AND {}",
                plan::scratch_table("hits", table),
                plan::shareable(ctx, table)
            )
        });
        TableCopy {
            table,
            others: &plan.others,
            keep,
            shared,
        }
    }

    pub(super) fn run(&self, w: &mut Write<'_, '_>) -> Result<()> {
        let table = self.table;
        if table.tenant_row {
            // Created when missing, never overwritten.
            let n = w.conn.execute(&insert_missing(table, "1"), [])? as u64;
            if n > 0 {
                w.report.tenant_row_created = true;
                w.report.restored.insert(table.name.clone(), n);
                w.report.written.insert(table.name.clone(), n);
            }
            return Ok(());
        }
        if let Some((_, as_is)) = self.keep.filter(|&(_, as_is)| as_is == table.rows) {
            // Every row already is the archive's.
            w.report.restored.insert(table.name.clone(), as_is);
            let event = Event::table_progress(Step::RestoreProgress, &table.name, as_is, as_is);
            return w.progress.emit(event);
        }
        if let Some((hits, as_is)) = self.keep {
            if as_is > 0 {
                plan::index_hits_by_sid(w.conn, hits)?;
            }
        }
        let (restored, written) = self.chunks(w)?;
        if restored > 0 {
            w.report.restored.insert(table.name.clone(), restored);
        }
        if written > 0 {
            w.report.written.insert(table.name.clone(), written);
        }
        Ok(())
    }

    fn insert(&self) -> String {
        insert_all(self.table)
    }

    /// The statement writing one chunk of staged rows (`?2`..`?3`; `?1`
    /// is the tenant, for the guard), and the one counting the chunk's
    /// kept rows left as they are ("" when there are none).
    fn statement(&self) -> Result<(String, String)> {
        let table = self.table;
        let (chunk, unchanged) = match self.keep {
            Some((hits, as_is)) if as_is > 0 => (
                format!("s.rowid BETWEEN ?2 AND ?3 AND NOT {}", plan::kept_as_is(hits, "s")),
                format!("SELECT count(*) FROM temp.{hits} WHERE sid BETWEEN ?1 AND ?2 AND same AND ours AND NOT others"),
            ),
            _ => ("s.rowid BETWEEN ?2 AND ?3".to_string(), String::new()),
        };
        if !table.has_pk() {
            // No primary key (join tables): a row is identified by all of
            // its values; an identical row is left alone, never duplicated.
            return Ok((insert_missing(table, &chunk), unchanged));
        }
        let pk_cols: Vec<&String> = table.pk.iter().map(|&i| &table.columns[i]).collect();
        let updates: Vec<String> = table
            .columns
            .iter()
            .enumerate()
            .filter(|(i, _)| !table.pk.contains(i))
            .map(|(_, c)| format!("{} = excluded.{}", sql::ident(c), sql::ident(c)))
            .collect();
        // Key-only table: an existing row is already right; touch it so
        // the change count tells a member from a stranger.
        let set = if updates.is_empty() {
            let first = sql::ident(pk_cols[0]);
            format!("{first} = excluded.{first}")
        } else {
            updates.join(", ")
        };
        // SQLite reads `ON` after a bare SELECT's FROM as a join: the WHERE
        // keeps the upsert clause unambiguous.
        let sql = format!(
            "{} WHERE {chunk} ON CONFLICT({}) DO UPDATE SET {set} WHERE NOT ({})",
            self.insert(),
            sql::column_list(&pk_cols),
            self.others
                .member_probe(&table.name, &sql::ident(&table.name))?
        );
        Ok((sql, unchanged))
    }

    /// Write the staged rows chunk by chunk. Returns the rows restored
    /// (written, or already holding the archive's values) and written.
    fn chunks(&self, w: &mut Write<'_, '_>) -> Result<(u64, u64)> {
        let table = self.table;
        let (sql, unchanged) = self.statement()?;
        let mut stmt = w.conn.prepare(&sql)?;
        let count = |sql: &str, lo: i64, hi: i64| -> Result<u64> {
            if sql.is_empty() {
                return Ok(0);
            }
            let n = w
                .conn
                .prepare_cached(sql)?
                .query_row([lo, hi], |r| r.get::<_, i64>(0))?;
            Ok(n as u64)
        };
        let (mut restored, mut written) = (0u64, 0u64);
        let mut lo = 1i64;
        while lo <= table.rows as i64 {
            w.progress.check_interrupt()?;
            let hi = (lo + CHUNK_ROWS - 1).min(table.rows as i64);
            stmt.raw_bind_parameter(1, &w.target)?;
            stmt.raw_bind_parameter(2, lo)?;
            stmt.raw_bind_parameter(3, hi)?;
            let changed = stmt.raw_execute().map_err(|e| {
                Error::sqlite(format!("{}: writing rows {lo}..{hi}: {e}", table.name), &e)
            })? as u64;
            written += changed;
            // Rows left as they are, and rows another tenant shares (the
            // guard leaves them alone), hold the archive's values: they
            // count as restored.
            let shared = self.shared.as_deref().unwrap_or("");
            let changed = changed + count(&unchanged, lo, hi)? + count(shared, lo, hi)?;
            if table.has_pk() && changed < (hi - lo + 1) as u64 {
                return Err(refused_rows(w.conn, table, self.others, &w.target, lo, hi));
            }
            restored += changed;
            w.progress.emit(Event::table_progress(
                Step::RestoreProgress,
                &table.name,
                restored,
                table.rows,
            ))?;
            lo = hi + 1;
        }
        Ok((restored, written))
    }
}

/// `INSERT INTO main.t (…) SELECT … FROM <stage> AS s`; a blob's key is
/// the one it was renamed to, if any (`temp.tk_renamed`).
fn insert_all(table: &StagedTable) -> String {
    let values = table.columns.iter().enumerate().map(|(i, c)| {
        let staged = sql::Col::Staged(i).of("s");
        if is_blob_table(&table.name) && c == "key" {
            format!("coalesce((SELECT r.new FROM temp.tk_renamed AS r WHERE r.old = {staged}), {staged})")
        } else {
            staged
        }
    });
    format!(
        "INSERT INTO {} ({}) SELECT {} FROM {} AS s",
        sql::main_table(&table.name),
        sql::column_list(&table.columns),
        sql::list(values),
        table.stage
    )
}

/// The staged rows matching `chunk` that the database does not have yet
/// (the tenants row; rows of tables without a primary key, which are
/// identified by all of their values and never duplicated).
fn insert_missing(table: &StagedTable, chunk: &str) -> String {
    format!(
        "{} WHERE {chunk} AND NOT {}",
        insert_all(table),
        in_database(table)
    )
}

/// SQL condition: the database already has staged row `s`'s row (same
/// primary key; same values for a table without one).
fn in_database(table: &StagedTable) -> String {
    format!(
        "EXISTS (SELECT 1 FROM {} AS m WHERE {})",
        sql::main_table(&table.name),
        table.identity("m", "s")
    )
}

/// The rows of a chunk the guard refused: keys of other tenants.
fn refused_rows(
    conn: &Connection,
    table: &StagedTable,
    others: &MemberSets<'_>,
    target: &SqlValue,
    lo: i64,
    hi: i64,
) -> Error {
    let found = (|| -> Result<Vec<i64>> {
        let sql = format!(
            "SELECT s.rowid FROM {} AS s JOIN main.{} AS m ON {} WHERE s.rowid BETWEEN {lo} AND {hi} AND {} LIMIT 10",
            table.stage,
            sql::ident(&table.name),
            table.identity("m", "s"),
            others.member_probe(&table.name, "m")?
        );
        let mut stmt = conn.prepare(&sql)?;
        let params = tenant_params(&stmt, target);
        let rows = stmt
            .query_map(&*params, |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    })();
    let conflicts: Vec<crate::restore::Conflict> =
        match found.and_then(|sids| table.describe_rows(conn, &sids)) {
            Ok(keys) if !keys.is_empty() => keys
                .into_iter()
                .map(|key| crate::restore::Conflict {
                    table: table.name.clone(),
                    key,
                    reason: "the key belongs to another tenant".into(),
                })
                .collect(),
            _ => vec![crate::restore::Conflict {
                table: table.name.clone(),
                key: format!("one of the rows {lo}..{hi} of the archive"),
                reason: "the key belongs to another tenant".into(),
            }],
        };
    conflict_error(&conflicts, conflicts.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database with `schema` and the staged rows `staged` of `table`
    /// (stage 0).
    fn staged(schema: &str, table: &StagedTable, staged: &str) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(schema).unwrap();
        let columns = (0..table.columns.len()).map(|i| sql::Col::Staged(i).bare());
        conn.execute_batch(&format!(
            "CREATE TABLE {}({}); INSERT INTO {} VALUES {staged};",
            table.stage,
            sql::list(columns),
            table.stage
        ))
        .unwrap();
        conn
    }

    fn rows(conn: &Connection, sql: &str) -> Vec<String> {
        let mut stmt = conn.prepare(sql).unwrap();
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
        rows.collect::<rusqlite::Result<_>>().unwrap()
    }

    #[test]
    fn the_tenants_row_is_created_when_missing_and_never_overwritten() {
        let tenants = StagedTable::plain("tenants", 0, &["id", "name"]);
        let conn = staged(
            "CREATE TABLE tenants(id INTEGER PRIMARY KEY, name TEXT);
             INSERT INTO tenants VALUES (1, 'live');",
            &tenants,
            "(1, 'archived')",
        );
        let create = insert_missing(&tenants, "1");
        assert_eq!(conn.execute(&create, []).unwrap(), 0);
        assert_eq!(rows(&conn, "SELECT name FROM tenants"), ["live"]);
        conn.execute_batch("DELETE FROM tenants").unwrap();
        assert_eq!(conn.execute(&create, []).unwrap(), 1);
        assert_eq!(rows(&conn, "SELECT name FROM tenants"), ["archived"]);
    }

    #[test]
    fn a_row_of_a_table_without_key_is_identified_by_its_values_and_never_duplicated() {
        let mut joins = StagedTable::plain("tags_tasks", 0, &["tag_id", "task_id"]);
        joins.pk.clear();
        let conn = staged(
            "CREATE TABLE tags_tasks(tag_id INTEGER, task_id INTEGER);
             INSERT INTO tags_tasks VALUES (1, 1), (NULL, 3);",
            &joins,
            "(1, 1), (1, 2), (NULL, 3), (2, NULL)",
        );
        // The chunk bounds as the copy binds them, here over every row.
        let insert = insert_missing(&joins, "s.rowid BETWEEN 1 AND 4");
        assert_eq!(conn.execute(&insert, []).unwrap(), 2);
        assert_eq!(
            rows(
                &conn,
                "SELECT quote(tag_id) || ',' || quote(task_id) FROM tags_tasks ORDER BY rowid"
            ),
            ["1,1", "NULL,3", "1,2", "2,NULL"]
        );
        // Run again: every row is there, nothing is written.
        assert_eq!(conn.execute(&insert, []).unwrap(), 0);
    }

    #[test]
    fn a_blob_row_takes_the_key_its_file_was_renamed_to() {
        let blobs = StagedTable::plain("active_storage_blobs", 0, &["id", "key"]);
        let conn = staged(
            "CREATE TABLE active_storage_blobs(id INTEGER PRIMARY KEY, key TEXT);
             CREATE TEMP TABLE tk_renamed(old TEXT PRIMARY KEY, new TEXT NOT NULL);
             INSERT INTO tk_renamed VALUES ('taken', 'fresh');",
            &blobs,
            "(5, 'taken'), (6, 'free')",
        );
        conn.execute(&insert_all(&blobs), []).unwrap();
        assert_eq!(
            rows(&conn, "SELECT key FROM active_storage_blobs ORDER BY id"),
            ["fresh", "free"]
        );
    }
}
