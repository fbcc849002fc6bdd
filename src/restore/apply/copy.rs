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
            let sql = format!("{} WHERE NOT {}", self.insert(), self.exists());
            let n = w.conn.execute(&sql, [])? as u64;
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
                w.conn.execute_batch(&format!(
                    "CREATE INDEX IF NOT EXISTS temp.{hits}_sid ON {hits}(sid);"
                ))?;
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

    /// `INSERT INTO main.t (…) SELECT … FROM <stage> AS s`; a blob's key
    /// is the one it was renamed to, if any.
    fn insert(&self) -> String {
        let table = self.table;
        let values = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let staged = sql::Col::Staged(i).of("s");
                if is_blob_table(&table.name) && c == "key" {
                    format!("coalesce((SELECT r.new FROM temp.tk_renamed AS r WHERE r.old = {staged}), {staged})")
                } else {
                    staged
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "INSERT INTO {} ({}) SELECT {values} FROM {} AS s",
            sql::main_table(&table.name),
            sql::column_list(&table.columns),
            table.stage
        )
    }

    /// The database already has staged row `s`'s row.
    fn exists(&self) -> String {
        format!(
            "EXISTS (SELECT 1 FROM {} AS m WHERE {})",
            sql::main_table(&self.table.name),
            self.table.identity("m", "s")
        )
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
            let sql = format!("{} WHERE {chunk} AND NOT {}", self.insert(), self.exists());
            return Ok((sql, unchanged));
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
