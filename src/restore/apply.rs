//! The write transaction: purge, blob files, the staged rows copied in with
//! one `INSERT … SELECT` per table chunk, then the checks that must see the
//! result (membership of derived rows, foreign keys). The caller commits,
//! or rolls back and removes the files written.

use super::blobs::{self, WrittenFiles};
use super::child_keys::ChildKeyIndexes;
use super::future_ids;
use super::plan::{self, Plan};
use super::postcondition::{Intent, Watcher};
use super::stage::{Staged, StagedTable};
use super::storage_journal;
use super::{conflict_error, Context, RestoreReport};
use crate::error::{Error, Result};
use crate::progress::{Event, LockState, Progress, Step};
use crate::sql;

use crate::scope::{is_blob_table, tenant_params, Candidates, MemberSets, Membership, Side};
use crate::value::SqlValue;
use rusqlite::{Connection, StatementStatus};
use std::collections::BTreeSet;

/// Staged rows copied per statement: a progress event and an interrupt
/// check between chunks.
const CHUNK_ROWS: i64 = 65_536;

/// Whether the writes are meant to stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Run {
    /// A restore: the caller commits.
    Real,
    /// A dry run's rehearsal: the same statements, no file written or
    /// journaled, and the caller rolls back.
    Rehearsal,
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
    progress.emit(Event::lock(LockState::Write))?;
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| Error::sqlite(format!("cannot take the write lock: {e}"), &e))?;
    conn.execute_batch("PRAGMA defer_foreign_keys = ON")?;
    // Before this run changes anything: undo the storage changes of a
    // restore that died (its rows SQLite has already rolled back).
    if run == Run::Real {
        report.blobs.recovered = storage_journal::recover(conn)?;
        if report.blobs.recovered > 0 {
            progress.emit(Event::new(Step::Recovered).with("files", report.blobs.recovered))?;
        }
    }
    // New ids another connection took meanwhile are moved past; that
    // connection's commit makes the plan below be made again.
    super::new_ids::recheck(conn, ctx, staged)?;
    // The plan (and the sets it left in temp tables) holds as long as no
    // other connection committed since it was made; otherwise make it
    // again, now under the lock.
    let plan = if plan::data_version(conn)? == plan.data_version {
        plan
    } else {
        let fresh = plan::make(conn, ctx, staged, progress)?;
        if fresh.conflict_count > 0 {
            return Err(conflict_error(&fresh.conflicts, fresh.conflict_count));
        }
        report.planned = fresh.counts.clone();
        fresh
    };
    let target = ctx.target();
    // Whatever indexes the app has, no statement below scans a child table
    // per parent row (see `child_keys`).
    let child_keys = ChildKeyIndexes::create(conn, &changed_tables(ctx, staged, &plan))?;

    // Purge, children first.
    let mut purged_keys: BTreeSet<String> = BTreeSet::new();
    if ctx.options.purge {
        let ours = &plan.ours;
        // The plan counted what each DELETE would remove, on the snapshot
        // this transaction still sees (it was made again above otherwise):
        // a table with nothing to purge is not scanned again.
        let purges = |table: &str| plan.counts.get(table).is_some_and(|c| c.purge > 0);
        if let Some(blobs) = ctx
            .scope
            .tables
            .iter()
            .find(|t| is_blob_table(&t.name) && purges(&t.name))
        {
            let sql = format!(
                "SELECT a.key FROM {} AS a WHERE {}",
                sql::main_table(&blobs.name),
                plan::purged_rows(ctx, ours, &plan.others, &blobs.name, "a")?
            );
            let mut stmt = conn.prepare(&sql)?;
            let params = tenant_params(&stmt, &target);
            let keys = stmt.query_map(&*params, |r| r.get::<_, String>(0))?;
            for k in keys {
                purged_keys.insert(k?);
            }
        }
        for t in ctx.scope.tables.iter().rev() {
            if matches!(t.membership, Membership::TenantRow { .. }) {
                continue; // the tenant's own row stays
            }
            progress.check_interrupt()?;
            if !purges(&t.name) {
                progress.emit(Event::table_progress(
                    Step::PurgeProgress,
                    &t.name,
                    0u64,
                    0u64,
                ))?;
                continue;
            }
            let qt = sql::main_table(&t.name);
            let mut sql = format!(
                "DELETE FROM {qt} WHERE {}",
                plan::purged_rows(ctx, ours, &plan.others, &t.name, &qt)?
            );
            if let Some(keep) = plan.kept.get(&t.name) {
                sql.push_str(&format!(
                    " AND NOT {}",
                    plan::kept_row(ctx, &t.name, keep, &qt)
                ));
            }
            let mut stmt = conn.prepare(&sql)?;
            let params = tenant_params(&stmt, &target);
            watcher.expect(Intent::Purge(t.name.clone()));
            let n = stmt.execute(&*params)? as u64;
            watcher.expect(Intent::Nothing);
            if n > 0 {
                report.purged.insert(t.name.clone(), n);
            }
            // The statement's work, foreign-key lookups and actions
            // included: what it costs whatever the machine.
            let vm_steps = stmt.get_status(StatementStatus::VmStep);
            progress.emit(
                Event::table_progress(Step::PurgeProgress, &t.name, n, n)
                    .with("vm_steps", vm_steps),
            )?;
        }
    }

    if ctx.options.restore {
        let renamed = blobs::place(conn, ctx, staged, &mut purged_keys, report, files, progress)?;
        progress.emit(
            Event::new(Step::Blobs)
                .with("written", report.blobs.written)
                .with("reused", report.blobs.reused)
                .with("renamed", report.blobs.renamed),
        )?;
        conn.execute_batch(
            "DROP TABLE IF EXISTS temp.tk_renamed; CREATE TEMP TABLE tk_renamed(old TEXT PRIMARY KEY, new TEXT NOT NULL);",
        )?;
        {
            let mut stmt = conn.prepare("INSERT INTO temp.tk_renamed VALUES (?1, ?2)")?;
            for (old, new) in &renamed {
                stmt.execute([old, new])?;
            }
        }

        // Shared rows first: the tenant's rows refer to them.
        report.shared = super::shared_rows::insert(conn, ctx, staged, watcher)?;
        for (table, counts) in &report.shared {
            if counts.inserted > 0 {
                report.written.insert(table.clone(), counts.inserted);
            }
        }
        // Rows, parents first.
        for table in &staged.tables {
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
            watcher.expect(Intent::Write(table.name.clone()));
            copy_rows(
                conn,
                table,
                &plan.others,
                keep,
                shared.as_deref(),
                &target,
                report,
                progress,
            )?;
            watcher.expect(Intent::Nothing);
        }
        report.renamed_keys = renamed;
    }
    // Every row is written: what follows only reads the tables (and writes
    // `sqlite_sequence` and search indexes, which have no foreign keys).
    // Without our child-key indexes, SQLite's planner finds restored rows
    // by the app's own indexes again: ours index one column of a key that
    // the checks below look up whole (a join row by both its ends), and
    // without statistics the planner may pick the least selective one.
    child_keys.drop_all(conn)?;

    if ctx.options.restore {
        // Ids the restored rows refer to are nobody else's to take.
        let aimed = future_ids::unreservable(conn, ctx, staged, &plan.kept)?;
        if !aimed.is_empty() {
            return Err(conflict_error(&aimed, aimed.len() as u64));
        }
        future_ids::reserve(conn, ctx, staged)?;
        // Nothing purged, nothing written: the database is the one the plan
        // checked, row by row, in this transaction's snapshot.
        let written: u64 =
            report.purged.values().sum::<u64>() + report.written.values().sum::<u64>();
        if written > 0 {
            check_restored_membership(conn, ctx, staged)?;
        }
    } else if let Some(root) = &ctx.options.storage_root {
        // Purge only: the files of the purged blobs go after the commit.
        files.journal(conn, root, &[], &purged_keys)?;
    }
    let changed: Vec<&str> = report
        .purged
        .keys()
        .chain(report.written.keys())
        .map(String::as_str)
        .collect();
    // A rehearsal's writes are rolled back: nothing to reindex.
    if run == Run::Real {
        report.search_indexes = super::search_indexes::refresh(conn, &changed)?;
    }

    Ok(purged_keys.into_iter().collect())
}

/// The tables whose rows this transaction may delete or write: the
/// parents whose children SQLite looks up.
fn changed_tables(ctx: &Context<'_>, staged: &Staged, plan: &Plan<'_>) -> BTreeSet<String> {
    let mut tables = BTreeSet::new();
    if ctx.options.purge {
        tables.extend(
            plan.counts
                .iter()
                .filter(|(_, c)| c.purge > 0)
                .map(|(t, _)| t.clone()),
        );
    }
    if ctx.options.restore {
        tables.extend(staged.tables.iter().map(|t| t.name.clone()));
    }
    tables
}

/// Commit the write transaction. Foreign keys are deferred, so SQLite
/// checks them here, counting only the violations this transaction made: a
/// `foreign_key_check` of whole tables would cost what the database costs,
/// and would blame the restore for another tenant's old dangling
/// reference. When SQLite refuses, `foreign_key_check` names the rows; the
/// transaction is still open and the caller rolls it back.
pub(super) fn commit(conn: &Connection, ctx: &Context<'_>) -> Result<()> {
    match conn.execute_batch("COMMIT") {
        Ok(()) => Ok(()),
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

/// Copy one staged table into the database: insert, or update an existing
/// row with the same key unless it is another tenant's (the guard; the plan
/// found none, so a refused row means the plan was wrong: a conflict).
/// Kept rows that already hold the archive's values are not written.
#[allow(clippy::too_many_arguments)]
fn copy_rows(
    conn: &Connection,
    table: &StagedTable,
    others: &MemberSets<'_>,
    keep: Option<(&str, u64)>,
    shared: Option<&str>,
    target: &SqlValue,
    report: &mut RestoreReport,
    progress: &mut dyn Progress,
) -> Result<()> {
    let qt = sql::ident(&table.name);
    let col_list = table
        .columns
        .iter()
        .map(|c| sql::ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    let values = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if is_blob_table(&table.name) && c == "key" {
                format!("coalesce((SELECT r.new FROM temp.tk_renamed AS r WHERE r.old = s.c{i}), s.c{i})")
            } else {
                format!("s.c{i}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let insert = format!(
        "INSERT INTO main.{qt} ({col_list}) SELECT {values} FROM {} AS s",
        table.stage
    );
    let exists = format!(
        "EXISTS (SELECT 1 FROM main.{qt} AS m WHERE {})",
        table.identity("m", "s")
    );

    if table.tenant_row {
        // Created when missing, never overwritten.
        let n = conn.execute(&format!("{insert} WHERE NOT {exists}"), [])?;
        if n > 0 {
            report.tenant_row_created = true;
            report.restored.insert(table.name.clone(), n as u64);
            report.written.insert(table.name.clone(), n as u64);
        }
        return Ok(());
    }

    if let Some((_, as_is)) = keep {
        if as_is == table.rows {
            // Every row already is the archive's.
            report.restored.insert(table.name.clone(), as_is);
            progress.emit(Event::table_progress(
                Step::RestoreProgress,
                &table.name,
                as_is,
                as_is,
            ))?;
            return Ok(());
        }
    }
    // The chunk's rows, less those kept as they are.
    if let Some((hits, as_is)) = keep {
        if as_is > 0 {
            conn.execute_batch(&format!(
                "CREATE INDEX IF NOT EXISTS temp.{hits}_sid ON {hits}(sid);"
            ))?;
        }
    }
    let (chunk, unchanged) = match keep {
        Some((hits, as_is)) if as_is > 0 => (
            format!("s.rowid BETWEEN ?2 AND ?3 AND NOT {}", plan::kept_as_is(hits, "s")),
            format!("SELECT count(*) FROM temp.{hits} WHERE sid BETWEEN ?1 AND ?2 AND same AND ours AND NOT others"),
        ),
        _ => ("s.rowid BETWEEN ?2 AND ?3".to_string(), String::new()),
    };
    let sql = if table.has_pk() {
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
        let conflict_target = pk_cols
            .iter()
            .map(|c| sql::ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        // SQLite reads `ON` after a bare SELECT's FROM as a join: the WHERE
        // keeps the upsert clause unambiguous.
        format!(
            "{insert} WHERE {chunk} ON CONFLICT({conflict_target}) DO UPDATE SET {set} WHERE NOT ({})",
            others.member_probe(&table.name, &qt)?
        )
    } else {
        // No primary key (join tables): a row is identified by all of its
        // values; an identical row is left alone, never duplicated.
        format!("{insert} WHERE {chunk} AND NOT {exists}")
    };
    let mut stmt = conn.prepare(&sql)?;
    let mut restored = 0u64;
    let mut written = 0u64;
    let mut lo = 1i64;
    while lo <= table.rows as i64 {
        progress.check_interrupt()?;
        let hi = (lo + CHUNK_ROWS - 1).min(table.rows as i64);
        // ?1 is the tenant (used by the guard only), ?2 and ?3 the chunk.
        stmt.raw_bind_parameter(1, target)?;
        stmt.raw_bind_parameter(2, lo)?;
        stmt.raw_bind_parameter(3, hi)?;
        let changed = stmt.raw_execute().map_err(|e| {
            Error::sqlite(format!("{}: writing rows {lo}..{hi}: {e}", table.name), &e)
        })? as u64;
        // Rows left as they are count as restored: they hold the archive's
        // values.
        let same = if unchanged.is_empty() {
            0
        } else {
            conn.prepare_cached(&unchanged)?
                .query_row([lo, hi], |r| r.get::<_, i64>(0))? as u64
        };
        // Rows another tenant shares (see `plan::may_share`): the
        // guard leaves them alone, and they already hold the archive's
        // values.
        let shared = match shared {
            Some(sql) => conn
                .prepare_cached(sql)?
                .query_row([lo, hi], |r| r.get::<_, i64>(0))? as u64,
            None => 0,
        };
        written += changed;
        let changed = changed + same + shared;
        if table.has_pk() && changed < (hi - lo + 1) as u64 {
            return Err(refused_rows(conn, table, others, target, lo, hi));
        }
        restored += changed;
        progress.emit(Event::table_progress(
            Step::RestoreProgress,
            &table.name,
            restored,
            table.rows,
        ))?;
        lo = hi + 1;
    }
    if restored > 0 {
        report.restored.insert(table.name.clone(), restored);
    }
    if written > 0 {
        report.written.insert(table.name.clone(), written);
    }
    Ok(())
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
    let conflicts: Vec<super::Conflict> =
        match found.and_then(|sids| table.describe_rows(conn, &sids)) {
            Ok(keys) if !keys.is_empty() => keys
                .into_iter()
                .map(|key| super::Conflict {
                    table: table.name.clone(),
                    key,
                    reason: "the key belongs to another tenant".into(),
                })
                .collect(),
            _ => vec![super::Conflict {
                table: table.name.clone(),
                key: format!("one of the rows {lo}..{hi} of the archive"),
                reason: "the key belongs to another tenant".into(),
            }],
        };
    conflict_error(&conflicts, conflicts.len() as u64)
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
    let candidates = Candidates::create(conn, ctx.scope, ctx.schema)?;
    for table in &derived {
        let key = ctx.table(&table.name).row_key();
        let insert = candidates
            .insert_into(&table.name)
            .expect("derived tables have candidates");
        conn.execute(
            &format!(
                "{insert}SELECT {} FROM {} AS s JOIN main.{} AS m ON {}",
                key.iter()
                    .map(|c| format!("m.{}", sql::ident(c)))
                    .collect::<Vec<_>>()
                    .join(", "),
                table.stage,
                sql::ident(&table.name),
                table.identity("m", "s")
            ),
            [],
        )?;
    }
    let tenant = ctx.options.target_id();
    let ours = MemberSets::materialize_within(
        conn,
        ctx.scope,
        ctx.schema,
        tenant,
        Side::Ours,
        &candidates,
    )?;
    let others = MemberSets::materialize_within(
        conn,
        ctx.scope,
        ctx.schema,
        tenant,
        Side::Others,
        &candidates,
    )?;
    let target = ctx.target();
    for table in &derived {
        // The tenant's, and nobody else's unless it may be shared.
        let exclusive = if plan::may_share(ctx, table) {
            String::new()
        } else {
            format!(" AND NOT {}", others.member_probe(&table.name, "m")?)
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
