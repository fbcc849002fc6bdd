//! The write transaction: purge, blob files, the staged rows copied in with
//! one `INSERT … SELECT` per table chunk, then the checks that must see the
//! result (membership of derived rows, foreign keys). The caller commits,
//! or rolls back and removes the files written.

use super::blobs::{self, WrittenFiles};
use super::child_keys::{self, ForeignKeyGuard, Mode, Writes};
use super::future_ids;
use super::plan::{self, Plan};
use super::postcondition::{Intent, Watcher};
use super::stage::{Staged, StagedTable};
use super::storage_journal;
use super::{conflict_error, Context, RestoreReport};
use crate::error::{Error, Result};
use crate::progress::{Event, LockState, Progress, Step};
use crate::sql;

mod copy;
use copy::TableCopy;

use crate::scope::{is_blob_table, tenant_params, Candidates, MemberSets, Membership, Side};
use crate::value::SqlValue;
use rusqlite::{Connection, StatementStatus};
use std::collections::BTreeSet;

/// Whether the writes are meant to stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Run {
    /// A restore: the caller commits.
    Real,
    /// A dry run's rehearsal: the same statements, no file written or
    /// journaled, and the caller rolls back.
    Rehearsal,
}

/// What the phases of one write transaction share.
struct Write<'w, 'a> {
    conn: &'w Connection,
    ctx: &'w Context<'a>,
    staged: &'w Staged,
    watcher: &'w Watcher<'w>,
    run: Run,
    target: SqlValue,
    report: &'w mut RestoreReport,
    files: &'w mut WrittenFiles,
    progress: &'w mut dyn Progress,
}

/// Runs inside `BEGIN IMMEDIATE` (taken here), every change watched by
/// `watcher` (the caller checks the post-condition before commit). Returns the keys of purged
/// blobs whose files are to be removed once the transaction has committed.
#[allow(clippy::too_many_arguments)]
pub(super) fn apply<'a>(
    conn: &Connection,
    ctx: &Context<'a>,
    staged: &Staged,
    plan: Plan<'a>,
    watcher: &Watcher<'_>,
    run: Run,
    report: &mut RestoreReport,
    files: &mut WrittenFiles,
    progress: &mut dyn Progress,
) -> Result<Vec<String>> {
    let mut w = Write {
        conn,
        ctx,
        staged,
        watcher,
        run,
        target: ctx.target(),
        report,
        files,
        progress,
    };
    let (plan, mode) = w.lock(plan)?;
    let mut guard = ForeignKeyGuard::begin(conn, mode, &w.writes(&plan))?;
    let mut purged_keys = if ctx.options.purge {
        w.purge(&plan, &mut guard)?
    } else {
        BTreeSet::new()
    };
    if ctx.options.restore {
        w.write(&plan, &mut guard, &mut purged_keys)?;
    }
    // Every row is written: what follows only reads the tables (and writes
    // `sqlite_sequence` and search indexes, which have no foreign keys).
    guard.finish(conn, &w.written_rows(&plan))?;
    w.after_write(&plan, &purged_keys)?;
    Ok(purged_keys.into_iter().collect())
}

impl<'a> Write<'_, 'a> {
    /// Take the write lock and make sure the plan still holds. Returns the
    /// plan (made again if another connection committed meanwhile) and how
    /// foreign keys are kept whole (chosen before `BEGIN`: see
    /// `child_keys`).
    fn lock(&mut self, plan: Plan<'a>) -> Result<(Plan<'a>, Mode)> {
        let (conn, ctx, staged) = (self.conn, self.ctx, self.staged);
        self.progress.emit(Event::lock(LockState::Write))?;
        let written: Vec<&StagedTable> = self.written_tables();
        let mode = child_keys::choose(conn, &written, self.run == Run::Rehearsal)?;
        conn.execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| Error::sqlite(format!("cannot take the write lock: {e}"), &e))?;
        conn.execute_batch("PRAGMA defer_foreign_keys = ON")?;
        // Before this run changes anything: undo the storage changes of a
        // restore that died (its rows SQLite has already rolled back).
        if self.run == Run::Real {
            self.report.blobs.recovered = storage_journal::recover(conn)?;
            if self.report.blobs.recovered > 0 {
                self.progress
                    .emit(Event::new(Step::Recovered).with("files", self.report.blobs.recovered))?;
            }
        }
        // New ids another connection took meanwhile are moved past; that
        // connection's commit makes the plan below be made again.
        super::new_ids::recheck(conn, ctx, staged)?;
        // The plan (and the sets it left in temp tables) holds as long as no
        // other connection committed since it was made; otherwise make it
        // again, now under the lock.
        if plan::data_version(conn)? == plan.data_version {
            return Ok((plan, mode));
        }
        let fresh = plan::make(conn, ctx, staged, self.progress)?;
        if fresh.conflict_count > 0 {
            return Err(conflict_error(&fresh.conflicts, fresh.conflict_count));
        }
        self.report.planned = fresh.counts.clone();
        Ok((fresh, mode))
    }

    /// The tables this transaction writes rows of, in the order it writes
    /// them.
    fn written_tables(&self) -> Vec<&'_ StagedTable> {
        if !self.ctx.options.restore {
            return Vec::new();
        }
        self.staged
            .shared
            .iter()
            .chain(self.staged.tables.iter())
            .collect()
    }

    /// What the write does, as far as foreign keys care.
    fn writes(&self, plan: &Plan<'_>) -> Writes<'_> {
        let purged = if self.ctx.options.purge {
            plan.counts
                .iter()
                .filter(|(_, c)| c.purge > 0)
                .map(|(t, _)| t.clone())
                .collect()
        } else {
            BTreeSet::new()
        };
        Writes {
            purged,
            written: self.written_tables(),
        }
    }

    /// Each table rows were written to, with the condition on its staged
    /// row `s` that it was (kept rows that already held the archive's
    /// values were not).
    fn written_rows(&self, plan: &Plan<'_>) -> Vec<(&'_ StagedTable, String)> {
        self.written_tables()
            .into_iter()
            .filter(|t| self.report.written.contains_key(&t.name))
            .map(|t| {
                let as_is = plan.kept_as_is.get(&t.name).copied().unwrap_or(0);
                let condition = match plan.kept.get(&t.name) {
                    Some(hits) if as_is > 0 => format!("NOT {}", plan::kept_as_is(hits, "s")),
                    _ => "1".to_string(),
                };
                (t, condition)
            })
            .collect()
    }

    /// Purge the plan's rows, children first. Returns the keys of the
    /// purged blobs.
    fn purge(&mut self, plan: &Plan<'_>, guard: &mut ForeignKeyGuard) -> Result<BTreeSet<String>> {
        let purged_keys = self.purged_blob_keys(plan)?;
        for t in self.ctx.scope.tables.iter().rev() {
            if matches!(t.membership, Membership::TenantRow { .. }) {
                continue; // the tenant's own row stays
            }
            self.progress.check_interrupt()?;
            // The plan counted what each DELETE would remove, on the
            // snapshot this transaction still sees (it was made again
            // otherwise): a table with nothing to purge is not scanned.
            if !purges(plan, &t.name) {
                self.progress.emit(Event::table_progress(
                    Step::PurgeProgress,
                    &t.name,
                    0u64,
                    0u64,
                ))?;
                continue;
            }
            self.purge_table(plan, guard, &t.name)?;
        }
        Ok(purged_keys)
    }

    /// The keys of the blobs the purge removes, read before it does.
    fn purged_blob_keys(&self, plan: &Plan<'_>) -> Result<BTreeSet<String>> {
        let mut keys = BTreeSet::new();
        let Some(blobs) = self
            .ctx
            .scope
            .tables
            .iter()
            .find(|t| is_blob_table(&t.name) && purges(plan, &t.name))
        else {
            return Ok(keys);
        };
        let sql = format!(
            "SELECT a.key FROM {} AS a WHERE {}",
            sql::main_table(&blobs.name),
            plan::purged_rows(self.ctx, &plan.ours, &plan.others, &blobs.name, "a")?
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let params = tenant_params(&stmt, &self.target);
        for key in stmt.query_map(&*params, |r| r.get::<_, String>(0))? {
            keys.insert(key?);
        }
        Ok(keys)
    }

    /// One table's `DELETE` of the plan's rows.
    fn purge_table(
        &mut self,
        plan: &Plan<'_>,
        guard: &mut ForeignKeyGuard,
        table: &str,
    ) -> Result<()> {
        let qt = sql::main_table(table);
        let mut rows = format!(
            "FROM {qt} WHERE {}",
            plan::purged_rows(self.ctx, &plan.ours, &plan.others, table, &qt)?
        );
        if let Some(keep) = plan.kept.get(table) {
            rows.push_str(&format!(
                " AND NOT {}",
                plan::kept_row(self.ctx, table, keep, &qt)
            ));
        }
        let mut stmt = self.conn.prepare(&format!("DELETE {rows}"))?;
        let params = tenant_params(&stmt, &self.target);
        guard.before_purge(self.conn, table, &rows, &params)?;
        self.watcher.expect(Intent::Purge(table.to_string()));
        let n = stmt.execute(&*params)? as u64;
        self.watcher.expect(Intent::Nothing);
        if n > 0 {
            self.report.purged.insert(table.to_string(), n);
        }
        // The statement's work, foreign-key lookups and actions included:
        // what it costs whatever the machine.
        let vm_steps = stmt.get_status(StatementStatus::VmStep);
        self.progress.emit(
            Event::table_progress(Step::PurgeProgress, table, n, n).with("vm_steps", vm_steps),
        )?;
        Ok(())
    }

    /// Blob files, shared rows, then the tenant's rows, parents first.
    fn write(
        &mut self,
        plan: &Plan<'_>,
        guard: &mut ForeignKeyGuard,
        purged_keys: &mut BTreeSet<String>,
    ) -> Result<()> {
        let (conn, ctx, staged) = (self.conn, self.ctx, self.staged);
        let renamed = blobs::place(
            conn,
            ctx,
            staged,
            purged_keys,
            self.report,
            self.files,
            self.progress,
        )?;
        let placed = &self.report.blobs;
        self.progress.emit(
            Event::new(Step::Blobs)
                .with("written", placed.written)
                .with("reused", placed.reused)
                .with("renamed", placed.renamed),
        )?;
        write_renamed(conn, &renamed)?;
        // Shared rows first: the tenant's rows refer to them.
        for table in &staged.shared {
            guard.before_write(conn, &table.name)?;
        }
        self.report.shared = super::shared_rows::insert(conn, ctx, staged, self.watcher)?;
        for (table, counts) in &self.report.shared {
            if counts.inserted > 0 {
                self.report.written.insert(table.clone(), counts.inserted);
            }
        }
        for table in &staged.tables {
            guard.before_write(conn, &table.name)?;
            let copy = TableCopy::new(ctx, table, plan);
            self.watcher.expect(Intent::Write(table.name.clone()));
            copy.run(self)?;
            self.watcher.expect(Intent::Nothing);
        }
        self.report.renamed_keys = renamed;
        Ok(())
    }

    /// The checks that must see the written rows, and what follows them.
    fn after_write(&mut self, plan: &Plan<'_>, purged_keys: &BTreeSet<String>) -> Result<()> {
        let (conn, ctx, staged) = (self.conn, self.ctx, self.staged);
        if ctx.options.restore {
            // Ids the restored rows refer to are nobody else's to take.
            let aimed = future_ids::unreservable(conn, ctx, staged, &plan.kept)?;
            if !aimed.is_empty() {
                return Err(conflict_error(&aimed, aimed.len() as u64));
            }
            future_ids::reserve(conn, ctx, staged)?;
            // Nothing purged, nothing written: the database is the one the
            // plan checked, row by row, in this transaction's snapshot.
            let report = &self.report;
            let written: u64 =
                report.purged.values().sum::<u64>() + report.written.values().sum::<u64>();
            if written > 0 {
                check_restored_membership(conn, ctx, staged)?;
            }
        } else if let Some(root) = &ctx.options.storage_root {
            // Purge only: the files of the purged blobs go after the commit.
            self.files.journal(conn, root, &[], purged_keys)?;
        }
        // A rehearsal's writes are rolled back: nothing to reindex.
        if self.run == Run::Real {
            let changed: Vec<&str> = self
                .report
                .purged
                .keys()
                .chain(self.report.written.keys())
                .map(String::as_str)
                .collect();
            let refreshed = super::search_indexes::refresh(conn, &changed)?;
            self.report.search_indexes = refreshed;
        }
        Ok(())
    }
}

/// Whether the plan purges rows of `table`.
fn purges(plan: &Plan<'_>, table: &str) -> bool {
    plan.counts.get(table).is_some_and(|c| c.purge > 0)
}

/// Blob keys renamed on the way in (a key another tenant's blob holds),
/// for the blob table's copy to read.
fn write_renamed(
    conn: &Connection,
    renamed: &std::collections::BTreeMap<String, String>,
) -> Result<()> {
    conn.execute_batch(
        "DROP TABLE IF EXISTS temp.tk_renamed; CREATE TEMP TABLE tk_renamed(old TEXT PRIMARY KEY, new TEXT NOT NULL);",
    )?;
    let mut stmt = conn.prepare("INSERT INTO temp.tk_renamed VALUES (?1, ?2)")?;
    for (old, new) in renamed {
        stmt.execute([old, new])?;
    }
    Ok(())
}

/// Commit the write transaction. Foreign keys are deferred, so SQLite
/// checks them here, counting only the violations this transaction made: a
/// `foreign_key_check` of whole tables would cost what the database costs,
/// and would blame the restore for another tenant's old dangling
/// reference. When SQLite refuses, `foreign_key_check` names the rows; the
/// transaction is still open and the caller rolls it back.
pub(super) fn commit(conn: &Connection, ctx: &Context<'_>) -> Result<()> {
    match conn.execute_batch("COMMIT") {
        // Foreign keys back on if the write had them off (`child_keys`).
        Ok(()) => child_keys::restore_pragma(conn),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY =>
        {
            let named = foreign_key_violations(conn, ctx)
                .ok()
                .filter(|v| !v.is_empty())
                .map(|v| v.join(", "))
                .unwrap_or_else(|| "a reference to a missing row".into());
            Err(Error::integrity(format!(
                "the restored rows break foreign keys: {named}; nothing was changed"
            )))
        }
        Err(e) => Err(Error::sqlite(format!("commit failed: {e}"), &e)),
    }
}

/// After writing, every derived row we restored must belong to the tenant
/// through its parents and to no other tenant: a join row pointing at
/// another tenant's task, or an attachment of another tenant's record, is
/// a conflict. Membership is computed for the restored rows only.
fn check_restored_membership(conn: &Connection, ctx: &Context<'_>, staged: &Staged) -> Result<()> {
    let derived: Vec<&StagedTable> = staged.tables.iter().filter(|t| t.derived).collect();
    if derived.is_empty() {
        return Ok(());
    }
    let candidates = restored_rows(conn, ctx, &derived)?;
    let tenant = ctx.options.target_id();
    let within = |side| {
        MemberSets::materialize_within(conn, ctx.scope, ctx.schema, tenant, side, &candidates)
    };
    let ours = within(Side::Ours)?;
    // Other tenants' sets are asked about only for tables whose rows may
    // not be shared (see `plan::may_share`: with remap or new ids).
    let others = if derived.iter().any(|t| !plan::may_share(ctx, t)) {
        Some(within(Side::Others)?)
    } else {
        None
    };
    let target = ctx.target();
    for table in &derived {
        // The tenant's, and nobody else's unless it may be shared.
        let exclusive = match &others {
            Some(others) if !plan::may_share(ctx, table) => {
                format!(" AND NOT {}", others.member_probe(&table.name, "m")?)
            }
            _ => String::new(),
        };
        let sql = format!(
            "SELECT s.rowid FROM {} AS s WHERE NOT EXISTS (SELECT 1 FROM main.{} AS m WHERE {} AND {}{exclusive}) LIMIT 1",
            table.stage,
            sql::ident(&table.name),
            table.identity("m", "s"),
            ours.member_probe(&table.name, "m")?,
        );
        let mut stmt = conn.prepare(&sql)?;
        let params = tenant_params(&stmt, &target);
        let stray: Option<i64> = stmt.query_map(&*params, |r| r.get(0))?.next().transpose()?;
        if let Some(sid) = stray {
            let key = table.describe_rows(conn, &[sid])?.remove(0);
            return Err(Error::conflict(format!(
                "{} {key} does not belong to tenant {} through its parents; nothing was changed",
                table.name,
                ctx.options.target_id()
            )));
        }
    }
    Ok(())
}

/// The database rows the staged rows of the `derived` tables now are, as
/// candidates whose membership is asked.
fn restored_rows<'c>(
    conn: &Connection,
    ctx: &'c Context<'_>,
    derived: &[&StagedTable],
) -> Result<Candidates<'c>> {
    let candidates = Candidates::create(conn, ctx.scope, ctx.schema)?;
    for table in derived {
        let key = ctx.table(&table.name).row_key();
        let insert = candidates
            .insert_into(&table.name)
            .expect("derived tables have candidates");
        conn.execute(
            &format!(
                "{insert}SELECT {} FROM {} AS s JOIN {} AS m ON {}",
                sql::column_list_of("m", &key),
                table.stage,
                sql::main_table(&table.name),
                table.identity("m", "s")
            ),
            [],
        )?;
    }
    Ok(candidates)
}

fn foreign_key_violations(conn: &Connection, ctx: &Context<'_>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in &ctx.manifest.tables {
        let mut stmt = conn.prepare(
            "SELECT \"table\", rowid, parent FROM pragma_foreign_key_check(?1) LIMIT 10",
        )?;
        let rows = stmt.query_map([&entry.name], |r| {
            Ok(format!(
                "{} rowid {} -> {}",
                r.get::<_, String>(0)?,
                r.get::<_, Option<i64>>(1)?
                    .map(|i| i.to_string())
                    .unwrap_or_default(),
                r.get::<_, String>(2)?
            ))
        })?;
        for row in rows {
            out.push(row?);
        }
    }
    Ok(out)
}
