//! The restore, phase by phase. [`run`] reads as the list of phases; each
//! is a function below, in the order they run:
//! open → unpack + stage (two threads, no lock) → select → plan (read
//! lock) → [dry run: rehearse, report] → write + commit (write lock) →
//! files of purged blobs → report.

use super::{
    apply, blobs, fit, new_ids, plan, postcondition, selection, shared_rows, stage, BlobCounts,
    Conflict, Context, RestoreOptions, RestoreReport, SharedCounts,
};
use crate::archive::dump::DumpReader;
use crate::archive::read::{extract_feeding, manifest_event, DumpFeed, Extracted, Limits};
use crate::crypt::keys::Unseal;
use crate::db;
use crate::error::{Error, ErrorKind, Result};
use crate::progress::{Event, LockState, Progress, Step};
use crate::schema::Schema;
use crate::scope::TenantScope;
use crate::verify::limits_with;
use apply::Run;
use blobs::WrittenFiles;
use postcondition::Watcher;
use rusqlite::Connection;
use stage::Staged;
use std::collections::BTreeMap;
use std::time::Instant;

pub(super) fn run(options: &RestoreOptions, progress: &mut dyn Progress) -> Result<RestoreReport> {
    let started = Instant::now();
    let keys = open(options, progress)?;
    let (extracted, staging) = unpack_and_stage(options, &keys, progress)?;
    let Staging {
        conn,
        schema,
        scope,
        mut staged,
        rehearse,
    } = staging;
    let mut ctx = Context {
        options,
        schema: &schema,
        scope: &scope,
        manifest: &extracted.manifest,
        blob_files: Some(&extracted.blobs),
        source: extracted.manifest.tenant.id.clone(),
        selection: None,
        encrypted: extracted.encrypted,
    };
    let selection = select(&conn, &ctx, &mut staged)?;
    ctx.selection = selection.as_ref();
    // From here on a cancel stops a running statement too.
    db::watch_statements(&conn, progress, |progress| {
        let flow = Flow {
            conn: &conn,
            ctx: &ctx,
            staged: &staged,
            rehearse,
            started,
        };
        let planned = flow.plan(progress)?;
        let report = flow.new_report(&planned)?;
        if options.dry_run {
            return flow.finish_dry_run(planned, report, progress);
        }
        if planned.plan.conflict_count > 0 {
            return Err(super::conflict_error(
                &planned.plan.conflicts,
                planned.plan.conflict_count,
            ));
        }
        let (mut report, purged_keys, files) = flow.write_and_commit(planned, report, progress)?;
        flow.remove_purged_files(&purged_keys, files, &mut report);
        Ok(flow.report_done(report, progress))
    })
}

/// Open: the options checked, the archive's keys read, the start announced.
fn open(options: &RestoreOptions, progress: &mut dyn Progress) -> Result<Unseal> {
    super::check_options(options)?;
    let keys = Unseal::from_options(
        &options.identities,
        options.identity_file.as_deref(),
        options.passphrase.as_ref(),
    )?;
    progress.emit(
        Event::new(Step::Start)
            .with("operation", "restore")
            .with("archive", options.archive.display().to_string())
            .with(
                "tenant_id",
                serde_json::to_value(options.target_id()).unwrap_or_default(),
            )
            .with("dry_run", options.dry_run)
            .with("purge", options.purge)
            .with("restore", options.restore)
            .with("remap", options.remap)
            .with("new_ids", options.new_ids),
    )?;
    Ok(keys)
}

/// What staging leaves for the plan.
struct Staging {
    conn: Connection,
    schema: Schema,
    scope: TenantScope,
    staged: Staged,
    /// A dry run must rehearse the writes to predict the post-condition
    /// (see [`postcondition::writes_can_reach_further`]).
    rehearse: bool,
}

/// Unpack + stage, no write lock yet: the archive is unpacked and verified
/// on a second thread while this one checks the schema and stages
/// dump.jsonl as it comes out (see [`stage_while_extracting`]).
fn unpack_and_stage(
    options: &RestoreOptions,
    keys: &Unseal,
    progress: &mut dyn Progress,
) -> Result<(Extracted, Staging)> {
    let limits = limits_with(options.max_line_bytes);
    let temp_parent = options.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let feed = DumpFeed::default();
    std::thread::scope(|threads| {
        let extraction = std::thread::Builder::new()
            .name("tenant_kit-extract".into())
            .spawn_scoped(threads, || {
                extract_feeding(&options.archive, keys, &temp_parent, limits, &feed)
            })
            .expect("spawning the extraction thread");
        let staging = stage_while_extracting(options, &feed, limits, progress);
        // Errors that damaged data can explain (a line that does not parse)
        // wait for the extraction's verdict on the archive; the others stop
        // it at once.
        let stopped = staging
            .as_ref()
            .is_err_and(|e| !matches!(e.kind(), ErrorKind::Archive | ErrorKind::Integrity));
        if stopped {
            feed.cancel();
        }
        let extracted = match extraction.join() {
            Ok(extracted) => extracted,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        match (extracted, staging) {
            // A broken archive is reported as such, whatever staging made
            // of it; unless the extraction only obeyed our own stop.
            (Err(e), _) if !(stopped && e.kind() == ErrorKind::Cancelled) => Err(e),
            (_, Err(e)) => Err(e),
            (Ok(extracted), Ok(staging)) => Ok((extracted, staging)),
            (Err(e), Ok(_)) => Err(e),
        }
    })
}

/// The staging side of [`unpack_and_stage`], while the extraction runs on
/// another thread (`feed`): wait for the manifest, check the options and
/// the schema against it, then stage the rows of dump.jsonl while it is
/// being written. The reader sees the dump's end only once its hash is
/// checked; if the extraction fails instead, staging fails too and its
/// temp tables go with the connection.
fn stage_while_extracting(
    options: &RestoreOptions,
    feed: &DumpFeed,
    limits: Limits,
    progress: &mut dyn Progress,
) -> Result<Staging> {
    let Some((manifest, dump_path, archive_bytes)) = feed.wait_manifest() else {
        // The extraction's own error says why.
        return Err(Error::archive("the archive has no readable manifest"));
    };
    progress.emit(manifest_event(&manifest, archive_bytes))?;
    fit::check_against_options(&manifest, options)?;

    // The archive must fit this database.
    let (conn, rehearse) = open_database(options)?;
    let schema = Schema::read(&conn)?;
    let known_types = fit::known_types(&manifest)?;
    let scope = TenantScope::discover(&conn, &schema, &options.scope_options(), &known_types)?;
    fit::check_archive_agrees(&manifest, &schema, &scope)?;
    fit::check_schema(&manifest, &schema, &scope)?;

    let ctx = Context {
        options,
        schema: &schema,
        scope: &scope,
        manifest: &manifest,
        blob_files: None,
        source: manifest.tenant.id.clone(),
        selection: None,
        encrypted: false,
    };
    // A selection naming no table of this tenant is refused before the
    // archive's rows are read.
    selection::Selection::from_options(&ctx)?;
    let dump = DumpReader::new(feed.follow(dump_path), limits.max_line_bytes);
    let (conn, staged) = Staged::load(conn, &ctx, dump, progress);
    let staged = staged?;
    Ok(Staging {
        conn,
        schema,
        scope,
        staged,
        rehearse,
    })
}

/// The connection, and whether a dry run must rehearse its writes. A dry
/// run reads only, unless it must rehearse the writes.
fn open_database(options: &RestoreOptions) -> Result<(Connection, bool)> {
    let mut conn = if options.dry_run {
        db::open_read_only(&options.database, options.busy_timeout_ms)?
    } else {
        db::open_read_write(&options.database, options.busy_timeout_ms)?
    };
    let rehearse = options.dry_run && postcondition::writes_can_reach_further(&conn)?;
    if rehearse {
        conn = db::open_read_write(&options.database, options.busy_timeout_ms)?;
    }
    Ok((conn, rehearse))
}

/// Select: a partial restore drops the staged rows left out before the
/// plan.
fn select(
    conn: &Connection,
    ctx: &Context<'_>,
    staged: &mut Staged,
) -> Result<Option<selection::Selection>> {
    match selection::Selection::from_options(ctx)? {
        Some(mut selection) => {
            selection.apply_to_stage(conn, ctx, staged)?;
            Ok(Some(selection))
        }
        None => Ok(None),
    }
}

/// What the phases after staging share.
struct Flow<'c, 'a> {
    conn: &'c Connection,
    ctx: &'c Context<'a>,
    staged: &'c Staged,
    rehearse: bool,
    started: Instant,
}

/// The plan and what came with it.
struct Planned<'a> {
    plan: plan::Plan<'a>,
    shared: BTreeMap<String, SharedCounts>,
    plan_ms: u64,
}

impl<'a> Flow<'_, 'a> {
    /// Plan, under a read lock: new ids, outcomes and conflicts, ids the
    /// target could not reserve, shared rows.
    fn plan(&self, progress: &mut dyn Progress) -> Result<Planned<'a>> {
        progress.emit(Event::lock(LockState::Read))?;
        let plan_started = Instant::now();
        self.conn.execute_batch("BEGIN")?;
        let planned = self.plan_in_transaction(progress);
        // COMMIT, not ROLLBACK: the temp tables the plan made stay for the
        // write (the app's database was only read).
        if planned.is_ok() {
            self.conn.execute_batch("COMMIT")?;
        } else {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        let (plan, shared) = planned?;
        let plan_ms = plan_started.elapsed().as_millis() as u64;
        progress.emit(Event::lock(LockState::None))?;
        let total = |count: fn(&super::PlannedCounts) -> u64| -> u64 {
            plan.counts.values().map(count).sum()
        };
        progress.emit(
            Event::new(Step::Plan)
                .with("plan_ms", plan_ms)
                .with("tables", plan.counts.len() as u64)
                .with("insert", total(|c| c.insert))
                .with("update", total(|c| c.update))
                .with("purge", total(|c| c.purge))
                .with("conflicts", plan.conflict_count),
        )?;
        Ok(Planned {
            plan,
            shared,
            plan_ms,
        })
    }

    fn plan_in_transaction(
        &self,
        progress: &mut dyn Progress,
    ) -> Result<(plan::Plan<'a>, BTreeMap<String, SharedCounts>)> {
        let (conn, ctx, staged) = (self.conn, self.ctx, self.staged);
        new_ids::assign(conn, ctx, staged)?;
        let mut plan = plan::make(conn, ctx, staged, progress)?;
        let aimed = super::future_ids::unreservable(conn, ctx, staged, &plan.kept)?;
        plan.conflict_count += aimed.len() as u64;
        plan.conflicts.extend(aimed);
        let shared = shared_rows::plan(conn, ctx, staged)?;
        plan.conflict_count += shared.conflict_count;
        plan.conflicts.extend(shared.conflicts);
        Ok((plan, shared.counts))
    }

    /// The report as the plan leaves it; the write fills in the rest.
    fn new_report(&self, planned: &Planned<'a>) -> Result<RestoreReport> {
        let (ctx, plan) = (self.ctx, &planned.plan);
        Ok(RestoreReport {
            dry_run: ctx.options.dry_run,
            source_tenant_id: ctx.source.clone(),
            tenant_id: ctx.options.target_id().clone(),
            planned: plan.counts.clone(),
            restored: BTreeMap::new(),
            written: BTreeMap::new(),
            purged: BTreeMap::new(),
            conflicts: plan.conflicts.clone(),
            conflict_count: plan.conflict_count,
            blobs: BlobCounts {
                total: ctx.manifest.blobs.len() as u64,
                ..Default::default()
            },
            renamed_keys: BTreeMap::new(),
            tenant_row_created: false,
            search_indexes: BTreeMap::new(),
            selection: ctx.selection.map(|s| s.report.clone()),
            shared: planned.shared.clone(),
            plan_ms: planned.plan_ms,
            lock_ms: 0,
            duration_ms: 0,
            errors: ctx.manifest.errors.clone(),
            id_map: new_ids::counts(self.conn, self.staged)?,
            encrypted: ctx.encrypted,
        })
    }

    /// A dry run ends with the plan, rehearsed where the plan alone cannot
    /// predict the post-condition.
    fn finish_dry_run(
        &self,
        planned: Planned<'a>,
        mut report: RestoreReport,
        progress: &mut dyn Progress,
    ) -> Result<RestoreReport> {
        if self.rehearse && planned.plan.conflict_count == 0 {
            let (listed, count) = self.rehearse_writes(planned.plan, &report, progress)?;
            report.conflict_count += count;
            report.conflicts.extend(listed);
        }
        report.duration_ms = self.started.elapsed().as_millis() as u64;
        progress.emit(
            Event::new(Step::Done)
                .with("dry_run", true)
                .with("conflicts", report.conflict_count),
        )?;
        Ok(report)
    }

    /// A dry run's prediction of the post-condition, where the plan alone
    /// cannot make it: the restore's own writes, in a transaction that is
    /// always rolled back, with no file written. Returns the violations as
    /// conflicts. Holds the write lock as long as the restore would.
    fn rehearse_writes(
        &self,
        plan: plan::Plan<'a>,
        report: &RestoreReport,
        progress: &mut dyn Progress,
    ) -> Result<(Vec<Conflict>, u64)> {
        let ctx = self.ctx;
        let watcher = Watcher::install(self.conn, ctx.schema, ctx.scope, ctx.target());
        let mut scratch = report.clone();
        let mut files = WrittenFiles::rehearsal();
        let rehearsed = apply::apply(
            self.conn,
            ctx,
            self.staged,
            plan,
            &watcher,
            Run::Rehearsal,
            &mut scratch,
            &mut files,
            progress,
        );
        let (listed, count) = watcher.violations();
        drop(watcher);
        let _ = self.conn.execute_batch("ROLLBACK");
        progress.emit(Event::lock(LockState::None))?;
        // Violations explain a write that failed after them.
        if count == 0 {
            rehearsed?;
        }
        let conflicts = listed
            .into_iter()
            .map(|v| Conflict {
                table: v.table,
                key: v.key,
                reason: v.reason,
            })
            .collect();
        Ok((conflicts, count))
    }

    /// Write + commit, in one write transaction: on any failure it is
    /// rolled back, and every blob file and the id map this run wrote are
    /// removed. Returns the report, the keys of purged blobs and the files
    /// written.
    fn write_and_commit(
        &self,
        planned: Planned<'a>,
        mut report: RestoreReport,
        progress: &mut dyn Progress,
    ) -> Result<(RestoreReport, Vec<String>, WrittenFiles)> {
        let mut files = WrittenFiles::default();
        let lock_started = Instant::now();
        let mut id_map_written = None;
        let applied = self
            .write(planned.plan, &mut report, &mut files, progress)
            .and_then(|purged_keys| {
                id_map_written = self.ctx.options.id_map.as_ref();
                self.commit(progress)?;
                Ok(purged_keys)
            });
        report.lock_ms = lock_started.elapsed().as_millis() as u64;
        match applied {
            Ok(purged_keys) => Ok((report, purged_keys, files)),
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                files.remove_all();
                if let Some(path) = id_map_written {
                    let _ = std::fs::remove_file(path);
                }
                Err(e)
            }
        }
    }

    /// Write: purge, blob files, rows, checks, under the post-condition's
    /// watch. Returns the keys of purged blobs.
    fn write(
        &self,
        plan: plan::Plan<'a>,
        report: &mut RestoreReport,
        files: &mut WrittenFiles,
        progress: &mut dyn Progress,
    ) -> Result<Vec<String>> {
        let ctx = self.ctx;
        let watcher = Watcher::install(self.conn, ctx.schema, ctx.scope, ctx.target());
        let applied = apply::apply(
            self.conn,
            ctx,
            self.staged,
            plan,
            &watcher,
            Run::Real,
            report,
            files,
            progress,
        );
        // A change outside the tenant explains whatever failed after it.
        match (applied, watcher.check()) {
            (Ok(purged_keys), Ok(())) => Ok(purged_keys),
            (_, Err(e)) | (Err(e), Ok(())) => Err(e),
        }
    }

    /// Commit. The id map is written before, and removed again (by
    /// [`Flow::write_and_commit`]) if the transaction does not commit: it
    /// never names rows that are not there.
    fn commit(&self, progress: &mut dyn Progress) -> Result<()> {
        if let Some(path) = &self.ctx.options.id_map {
            new_ids::write_map(self.conn, self.staged, path)?;
        }
        progress.emit(Event::new(Step::Commit))?;
        apply::commit(self.conn, self.ctx)
    }

    /// Files, after commit: those of purged blobs nobody uses any more.
    /// (Before any event: a callback that raises now cannot undo the
    /// commit, and must not leave this for the next run's recovery either.)
    fn remove_purged_files(
        &self,
        purged_keys: &[String],
        mut files: WrittenFiles,
        report: &mut RestoreReport,
    ) {
        if let Some(root) = &self.ctx.options.storage_root {
            report.blobs.removed = blobs::remove_purged(root, purged_keys);
        }
        files.finish();
    }

    /// Report. Committed: nothing can be undone any more, so a callback
    /// that raises now (or a cancel) must not turn the restore into a
    /// `failed` one. Its error still reaches the caller (the bindings keep
    /// the block's own exception and raise it), but the result is a
    /// success.
    fn report_done(&self, mut report: RestoreReport, progress: &mut dyn Progress) -> RestoreReport {
        let _ = progress.emit(Event::lock(LockState::None));
        report.duration_ms = self.started.elapsed().as_millis() as u64;
        let _ = progress.emit(
            Event::new(Step::Done)
                .with("restored", report.restored.values().sum::<u64>())
                .with("purged", report.purged.values().sum::<u64>())
                .with("blobs", report.blobs.written + report.blobs.reused)
                .with("lock_ms", report.lock_ms)
                .with("duration_ms", report.duration_ms),
        );
        report
    }
}
