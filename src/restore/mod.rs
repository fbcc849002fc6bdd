//! Restore of one tenant from an archive. In order:
//! 1. verify: unpack to a private temp dir, every hash and size checked, on
//!    a second thread while steps 2 and 3 run;
//! 2. schema: the archive must fit the database;
//! 3. stage and plan, without the write lock: rows parsed once into temp
//!    tables while dump.jsonl is unpacked ([`stage`]; kept only if the
//!    dump's hash checks out), outcomes and conflicts computed set-wise
//!    ([`plan`]); a dry run stops here;
//! 4. apply, in one `BEGIN IMMEDIATE` transaction ([`apply`]): purge, blob
//!    files ([`blobs`]), rows, checks; then commit;
//! 5. after commit: files of purged blobs removed.
//!
//! Blob files are journaled before they are written ([`storage_journal`]):
//! a run that dies is undone by the next, in step 4 before it changes
//! anything.
//!
//! Never touches another tenant's rows, never `INSERT OR REPLACE`; a
//! conflict, a failure or a cancel rolls back and removes every blob file
//! this run wrote.

mod apply;
mod blobs;
mod child_keys;
mod disk;
mod future_ids;
mod new_ids;
mod new_tenant;
mod plan;
mod postcondition;
mod search_indexes;
pub use search_indexes::IndexAction;
mod selection;
mod selection_db;
mod selection_present;
pub use selection::SelectionReport;
mod shared_rows;
mod shared_unique;
pub use shared_rows::SharedCounts;
mod stage;
mod storage_journal;

use crate::archive::dump::DumpReader;
use crate::archive::read::{extract_feeding, manifest_event, DumpFeed};
use crate::archive::{Manifest, ManifestError};
use crate::crypt::keys::Unseal;
use crate::crypt::Secret;
use crate::db;
use crate::error::{Error, ErrorKind, Result};
use crate::progress::{Event, LockState, Progress, Step};
use crate::schema::{Schema, Table};
use crate::scope::{Membership, RelationHint, ScopeOptions, TableRule, TenantScope, MOST_CLASSES};
use crate::value::SqlValue;
use crate::verify::limits_with;
use crate::TenantId;
use apply::Run;
use blobs::WrittenFiles;
use postcondition::Watcher;
use serde::{Deserialize, Serialize};
use stage::Staged;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreOptions {
    pub database: PathBuf,
    pub archive: PathBuf,
    /// None (`tenant_id: nil`) with `new_ids: true` makes a new tenant.
    pub tenant_id: Option<TenantId>,
    #[serde(default)]
    pub storage_root: Option<PathBuf>,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub purge: bool,
    #[serde(default = "yes")]
    pub restore: bool,
    #[serde(default)]
    pub remap: bool,
    #[serde(default = "crate::scope::default_tenant_column")]
    pub tenant_column: String,
    #[serde(default)]
    pub tenant_table: Option<String>,
    #[serde(default)]
    pub relations: Vec<RelationHint>,
    #[serde(default)]
    pub polymorphic: BTreeMap<String, String>,
    #[serde(default)]
    pub tables: BTreeMap<String, TableRule>,
    #[serde(default = "crate::db::default_busy_timeout_ms")]
    pub busy_timeout_ms: u64,
    /// Where the archive is unpacked while checking (default: system temp).
    #[serde(default)]
    pub tmp_dir: Option<PathBuf>,
    #[serde(default)]
    pub max_line_bytes: Option<usize>,
    /// Every restored row gets a new key, every known reference follows
    /// (see [`new_ids`]).
    #[serde(default)]
    pub new_ids: bool,
    /// With `new_ids`: where to write the old → new keys, one JSON line
    /// per row.
    #[serde(default)]
    pub id_map: Option<PathBuf>,
    /// A partial restore: table names (`["tags"]`), or the roots of a
    /// subtree (`{"projects": [17]}`, keys in the archive's JSON form).
    #[serde(default)]
    pub only: Option<serde_json::Value>,
    /// A partial restore of every table but these.
    #[serde(default)]
    pub except: Option<Vec<String>>,
    /// age identity strings (`AGE-SECRET-KEY-1…`) for an encrypted archive.
    #[serde(default, deserialize_with = "crate::crypt::secret_list")]
    pub identities: Vec<Secret>,
    /// A file of age identities (age's key-file format).
    #[serde(default)]
    pub identity_file: Option<PathBuf>,
    /// The passphrase of a passphrase-encrypted archive.
    #[serde(default)]
    pub passphrase: Option<Secret>,
    /// Set by [`restore`] when `tenant_id` was nil: this run makes the tenant.
    #[serde(skip)]
    creates_tenant: bool,
}

impl RestoreOptions {
    /// The tenant restored into; [`restore`] has settled it.
    pub fn target_id(&self) -> &TenantId {
        self.tenant_id
            .as_ref()
            .expect("the target tenant is settled before the restore runs")
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PlannedCounts {
    pub insert: u64,
    pub update: u64,
    /// Rows of tables without a primary key already present as they are.
    pub unchanged: u64,
    pub purge: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Conflict {
    pub table: String,
    pub key: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct BlobCounts {
    /// Blob files in the archive.
    pub total: u64,
    /// Files written into the storage root.
    pub written: u64,
    /// Files already present with identical content.
    pub reused: u64,
    /// Files of purged blobs removed after commit.
    pub removed: u64,
    /// Keys that collided with another blob and were given a fresh key
    /// (with `new_ids`, every key).
    pub renamed: u64,
    /// Files a restore that died had written (or left to remove), removed
    /// before this one changed anything.
    pub recovered: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub dry_run: bool,
    pub source_tenant_id: TenantId,
    pub tenant_id: TenantId,
    pub planned: BTreeMap<String, PlannedCounts>,
    /// Rows of the archive now in the database, per table: written, or
    /// found already equal and left as they were.
    pub restored: BTreeMap<String, u64>,
    /// Of those, the rows actually inserted or updated.
    pub written: BTreeMap<String, u64>,
    pub purged: BTreeMap<String, u64>,
    pub conflicts: Vec<Conflict>,
    pub conflict_count: u64,
    pub blobs: BlobCounts,
    /// Old blob key → new key, for keys that were already taken (with
    /// `new_ids`, for every blob).
    pub renamed_keys: BTreeMap<String, String>,
    pub tenant_row_created: bool,
    /// How long the plan's read transaction was open. In rollback-journal
    /// mode other connections could not commit meanwhile (in WAL mode a
    /// reader blocks nobody).
    pub plan_ms: u64,
    /// How long the write lock was held (0 for a dry run).
    pub lock_ms: u64,
    pub duration_ms: u64,
    /// Problems recorded by the backup (blob files that were missing).
    pub errors: Vec<ManifestError>,
    /// Full-text indexes over the restored tables, and what became of
    /// each (rebuilt, kept by the app's triggers, contentless).
    pub search_indexes: BTreeMap<String, IndexAction>,
    /// With `new_ids`: rows given a new key, per table.
    pub id_map: BTreeMap<String, u64>,
    /// What `only:` / `except:` selected (absent for a whole restore).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selection: Option<SelectionReport>,
    /// Shared reference rows per table: inserted (missing here), present
    /// (left as they are), differing (present with other values, left as
    /// they are). A dry run's are the plan's.
    pub shared: BTreeMap<String, SharedCounts>,
    /// Whether the archive was age-encrypted.
    pub encrypted: bool,
}

pub fn restore(options: &RestoreOptions, progress: &mut dyn Progress) -> Result<RestoreReport> {
    // tenant_id: nil → a new tenant, into which the archive is remapped.
    let settled = check_new_ids(options).and_then(|()| match &options.tenant_id {
        Some(id) => Ok((id.clone(), false)),
        None => Ok((new_tenant::new_tenant_id(options)?, true)),
    });
    let (tenant_id, creates_tenant) = match settled {
        Ok(settled) => settled,
        Err(e) => {
            crate::progress::report_failure(progress, &e);
            return Err(e);
        }
    };
    let target = crate::job::Target {
        database: &options.database,
        busy_timeout_ms: options.busy_timeout_ms,
        tenant_column: &options.tenant_column,
        tenant_id: &tenant_id,
    };
    crate::job::run(target, progress, |tenant_id, progress| {
        let options = RestoreOptions {
            tenant_id: Some(tenant_id),
            remap: options.remap || creates_tenant,
            creates_tenant,
            ..options.clone()
        };
        run(&options, progress)
    })
}

/// `new_ids`, `id_map` and `tenant_id: nil` go together.
fn check_new_ids(options: &RestoreOptions) -> Result<()> {
    if options.tenant_id.is_none() && !options.new_ids {
        return Err(Error::argument(
            "tenant_id: is required (nil makes a new tenant, with new_ids: true)",
        ));
    }
    if options.id_map.is_some() && !options.new_ids {
        return Err(Error::argument(
            "id_map: is written with new_ids: true only",
        ));
    }
    if options.new_ids && !options.restore {
        return Err(Error::argument(
            "new_ids: true copies rows, so it needs restore: true",
        ));
    }
    Ok(())
}

fn run(options: &RestoreOptions, progress: &mut dyn Progress) -> Result<RestoreReport> {
    let started = Instant::now();
    check_options(options)?;
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

    // ---- 1–3. verify, schema, stage: no write lock yet ----
    // The archive is unpacked and verified on a second thread while this
    // one checks the schema and stages dump.jsonl as it comes out (see
    // `stage_while_extracting`).
    let limits = limits_with(options.max_line_bytes);
    let temp_parent = options.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let feed = DumpFeed::default();
    let (extracted, staging) = std::thread::scope(|threads| {
        let extraction = std::thread::Builder::new()
            .name("tenant_kit-extract".into())
            .spawn_scoped(threads, || {
                extract_feeding(&options.archive, &keys, &temp_parent, limits, &feed)
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
    })?;
    let Staging {
        conn,
        schema,
        scope,
        mut staged,
        rehearse,
    } = staging;
    let manifest = &extracted.manifest;
    let mut ctx = Context {
        options,
        schema: &schema,
        scope: &scope,
        manifest,
        blob_files: Some(&extracted.blobs),
        source: manifest.tenant.id.clone(),
        selection: None,
        encrypted: extracted.encrypted,
    };
    // A partial restore: the staged rows left out go before the plan.
    let selection = match selection::Selection::from_options(&ctx)? {
        Some(mut selection) => {
            selection.apply_to_stage(&conn, &ctx, &mut staged)?;
            Some(selection)
        }
        None => None,
    };
    ctx.selection = selection.as_ref();
    // From here on a cancel stops a running statement too.
    db::watch_statements(&conn, progress, |progress| {
        plan_and_apply(&conn, &ctx, &staged, rehearse, started, progress)
    })
}

/// Steps 4 and 5: plan under a read lock, then (unless a dry run) apply
/// in one write transaction, commit, and remove the files of purged blobs.
fn plan_and_apply(
    conn: &rusqlite::Connection,
    ctx: &Context<'_>,
    staged: &Staged,
    rehearse: bool,
    started: Instant,
    progress: &mut dyn Progress,
) -> Result<RestoreReport> {
    let (options, manifest) = (ctx.options, ctx.manifest);
    progress.emit(Event::lock(LockState::Read))?;
    let plan_started = Instant::now();
    conn.execute_batch("BEGIN")?;
    let mut shared = BTreeMap::new();
    let plan = new_ids::assign(conn, ctx, staged)
        .and_then(|()| plan::make(conn, ctx, staged, progress))
        .and_then(|mut plan| {
            let aimed = future_ids::unreservable(conn, ctx, staged, &plan.kept)?;
            plan.conflict_count += aimed.len() as u64;
            plan.conflicts.extend(aimed);
            let planned = shared_rows::plan(conn, ctx, staged)?;
            plan.conflict_count += planned.conflict_count;
            plan.conflicts.extend(planned.conflicts);
            shared = planned.counts;
            Ok(plan)
        });
    // COMMIT, not ROLLBACK: the temp tables the plan made stay for the
    // write (the app's database was only read).
    let plan = match plan {
        Ok(plan) => {
            conn.execute_batch("COMMIT")?;
            plan
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    };
    let plan_ms = plan_started.elapsed().as_millis() as u64;
    progress.emit(Event::lock(LockState::None))?;
    progress.emit(
        Event::new(Step::Plan)
            .with("plan_ms", plan_ms)
            .with("tables", plan.counts.len() as u64)
            .with(
                "insert",
                plan.counts.values().map(|c| c.insert).sum::<u64>(),
            )
            .with(
                "update",
                plan.counts.values().map(|c| c.update).sum::<u64>(),
            )
            .with("purge", plan.counts.values().map(|c| c.purge).sum::<u64>())
            .with("conflicts", plan.conflict_count),
    )?;

    let mut report = RestoreReport {
        dry_run: options.dry_run,
        source_tenant_id: ctx.source.clone(),
        tenant_id: options.target_id().clone(),
        planned: plan.counts.clone(),
        restored: BTreeMap::new(),
        written: BTreeMap::new(),
        purged: BTreeMap::new(),
        conflicts: plan.conflicts.clone(),
        conflict_count: plan.conflict_count,
        blobs: BlobCounts {
            total: manifest.blobs.len() as u64,
            ..Default::default()
        },
        renamed_keys: BTreeMap::new(),
        tenant_row_created: false,
        search_indexes: BTreeMap::new(),
        selection: ctx.selection.map(|s| s.report.clone()),
        shared,
        plan_ms,
        lock_ms: 0,
        duration_ms: 0,
        errors: manifest.errors.clone(),
        id_map: new_ids::counts(conn, staged)?,
        encrypted: ctx.encrypted,
    };
    if options.dry_run {
        if rehearse && plan.conflict_count == 0 {
            let (listed, count) = rehearse_writes(conn, ctx, staged, plan, &report, progress)?;
            report.conflict_count += count;
            report.conflicts.extend(listed);
        }
        report.duration_ms = started.elapsed().as_millis() as u64;
        progress.emit(
            Event::new(Step::Done)
                .with("dry_run", true)
                .with("conflicts", report.conflict_count),
        )?;
        return Ok(report);
    }
    if plan.conflict_count > 0 {
        return Err(conflict_error(&plan.conflicts, plan.conflict_count));
    }

    // ---- 4. apply: one write transaction ----
    let mut files = WrittenFiles::default();
    let lock_started = Instant::now();
    let watcher = Watcher::install(conn, ctx.schema, ctx.scope, ctx.target());
    let applied = apply::apply(
        conn,
        ctx,
        staged,
        plan,
        &watcher,
        Run::Real,
        &mut report,
        &mut files,
        progress,
    );
    // A change outside the tenant explains whatever failed after it.
    let applied = match (applied, watcher.check()) {
        (Ok(purged_keys), Ok(())) => Ok(purged_keys),
        (_, Err(e)) | (Err(e), Ok(())) => Err(e),
    };
    drop(watcher);
    // The id map is written before the commit, and removed again if the
    // transaction does not commit: it never names rows that are not there.
    let mut id_map_written = None;
    let applied = applied.and_then(|purged_keys| {
        if let Some(path) = &options.id_map {
            id_map_written = Some(path);
            new_ids::write_map(conn, staged, path)?;
        }
        progress.emit(Event::new(Step::Commit))?;
        apply::commit(conn, ctx)?;
        Ok(purged_keys)
    });
    report.lock_ms = lock_started.elapsed().as_millis() as u64;
    let purged_keys = match applied {
        Ok(keys) => keys,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            files.remove_all();
            if let Some(path) = id_map_written {
                let _ = std::fs::remove_file(path);
            }
            return Err(e);
        }
    };

    // ---- 5. after commit: files of purged blobs nobody uses any more ----
    // (Before any event: a callback that raises now cannot undo the commit,
    // and must not leave this for the next run's recovery either.)
    if let Some(root) = &options.storage_root {
        report.blobs.removed = blobs::remove_purged(root, &purged_keys);
    }
    files.finish();
    // Committed: nothing can be undone any more, so a callback that raises
    // now (or a cancel) must not turn the restore into a `failed` one. Its
    // error still reaches the caller (the bindings keep the block's own
    // exception and raise it), but the result is a success.
    let _ = progress.emit(Event::lock(LockState::None));
    report.duration_ms = started.elapsed().as_millis() as u64;
    let _ = progress.emit(
        Event::new(Step::Done)
            .with("restored", report.restored.values().sum::<u64>())
            .with("purged", report.purged.values().sum::<u64>())
            .with("blobs", report.blobs.written + report.blobs.reused)
            .with("lock_ms", report.lock_ms)
            .with("duration_ms", report.duration_ms),
    );
    Ok(report)
}

/// What staging leaves for the plan.
struct Staging {
    conn: rusqlite::Connection,
    schema: Schema,
    scope: TenantScope,
    staged: Staged,
    /// A dry run must rehearse the writes to predict the post-condition
    /// (see [`postcondition::writes_can_reach_further`]).
    rehearse: bool,
}

/// A dry run's prediction of the post-condition, where the plan alone
/// cannot make it: the restore's own writes, in a transaction that is
/// always rolled back, with no file written. Returns the violations as
/// conflicts. Holds the write lock as long as the restore would.
fn rehearse_writes<'a>(
    conn: &rusqlite::Connection,
    ctx: &Context<'a>,
    staged: &Staged,
    plan: plan::Plan<'a>,
    report: &RestoreReport,
    progress: &mut dyn Progress,
) -> Result<(Vec<Conflict>, u64)> {
    let watcher = Watcher::install(conn, ctx.schema, ctx.scope, ctx.target());
    let mut scratch = report.clone();
    let mut files = WrittenFiles::rehearsal();
    let rehearsed = apply::apply(
        conn,
        ctx,
        staged,
        plan,
        &watcher,
        Run::Rehearsal,
        &mut scratch,
        &mut files,
        progress,
    );
    let (listed, count) = watcher.violations();
    drop(watcher);
    let _ = conn.execute_batch("ROLLBACK");
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

/// Steps 1 to 3 on the calling thread while the extraction runs on another
/// one (`feed`): wait for the manifest, check the options and the schema
/// against it, then stage the rows of dump.jsonl while it is being written.
/// The reader sees the dump's end only once its hash is checked; if the
/// extraction fails instead, staging fails too and its temp tables go with
/// the connection.
fn stage_while_extracting(
    options: &RestoreOptions,
    feed: &DumpFeed,
    limits: crate::archive::read::Limits,
    progress: &mut dyn Progress,
) -> Result<Staging> {
    let Some((manifest, dump_path, archive_bytes)) = feed.wait_manifest() else {
        // The extraction's own error says why.
        return Err(Error::archive("the archive has no readable manifest"));
    };
    progress.emit(manifest_event(&manifest, archive_bytes))?;
    let source = manifest.tenant.id.clone();
    if manifest.tenant.column != options.tenant_column {
        return Err(Error::argument(format!(
            "the archive's tenant column is {:?}, not {:?}: pass tenant_column: {:?}",
            manifest.tenant.column, options.tenant_column, manifest.tenant.column
        )));
    }
    if &source != options.target_id() && !options.remap {
        return Err(Error::argument(format!(
            "the archive holds tenant {source}, not {}: pass remap: true to restore it into tenant {}",
            options.target_id(),
            options.target_id()
        )));
    }
    // Files in the archive mean the app keeps them on the Disk service: without
    // its root they would be dropped while their blob rows are restored.
    // (Without files, storage_root: nil is right: a backup made without it,
    // an app whose files live in S3.)
    if options.restore && options.storage_root.is_none() && !manifest.blobs.is_empty() {
        return Err(Error::argument(format!(
            "the archive holds {} ActiveStorage file(s): pass storage_root: (the Disk service's root) to restore them with their rows",
            manifest.blobs.len()
        )));
    }

    // The archive must fit this database.
    // A dry run reads only, unless it must rehearse the writes.
    let mut conn = if options.dry_run {
        db::open_read_only(&options.database, options.busy_timeout_ms)?
    } else {
        db::open_read_write(&options.database, options.busy_timeout_ms)?
    };
    let rehearse = options.dry_run && postcondition::writes_can_reach_further(&conn)?;
    if rehearse {
        conn = db::open_read_write(&options.database, options.busy_timeout_ms)?;
    }
    let scope_options = scope_options(options);
    let schema = Schema::read(&conn)?;
    let known_types = known_types(&manifest)?;
    let scope = TenantScope::discover(&conn, &schema, &scope_options, &known_types)?;
    check_archive_agrees(&manifest, &schema, &scope)?;
    check_schema(&manifest, &schema, &scope)?;

    let ctx = Context {
        options,
        schema: &schema,
        scope: &scope,
        manifest: &manifest,
        blob_files: None,
        source,
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

/// (table, type column, class) of every class the manifest says the
/// archive's polymorphic columns name: a restore into a database that has
/// no such row yet learns them from there. No longer a list per column
/// than the rows themselves may make (see [`MOST_CLASSES`]).
fn known_types(manifest: &Manifest) -> Result<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    for t in &manifest.tables {
        for (column, classes) in &t.polymorphic {
            if classes.len() > MOST_CLASSES {
                return Err(Error::archive(format!(
                    "manifest: {}.{column} lists more than {MOST_CLASSES} classes",
                    t.name
                )));
            }
            out.extend(
                classes
                    .iter()
                    .map(|class| (t.name.clone(), column.clone(), class.clone())),
            );
        }
    }
    Ok(out)
}

fn scope_options(options: &RestoreOptions) -> ScopeOptions {
    ScopeOptions {
        tenant_column: options.tenant_column.clone(),
        tenant_table: options.tenant_table.clone(),
        relations: options.relations.clone(),
        polymorphic: options.polymorphic.clone(),
        tables: options.tables.clone(),
    }
}

fn check_options(options: &RestoreOptions) -> Result<()> {
    if !options.restore && !options.purge {
        return Err(Error::argument(
            "nothing to do: restore and purge are both false",
        ));
    }
    if let Some(root) = &options.storage_root {
        if !root.is_dir() {
            return Err(Error::argument(format!(
                "storage_root {} is not a directory",
                root.display()
            )));
        }
    }
    if let TenantId::Text(s) = options.target_id() {
        if s.is_empty() {
            return Err(Error::argument("tenant_id must not be empty"));
        }
    }
    Ok(())
}

struct Context<'a> {
    options: &'a RestoreOptions,
    schema: &'a Schema,
    scope: &'a TenantScope,
    manifest: &'a Manifest,
    /// Blob key → its unpacked file; None while staging (the extraction
    /// is still running then).
    blob_files: Option<&'a BTreeMap<String, PathBuf>>,
    source: TenantId,
    /// `only:` / `except:`, once applied to the staged rows.
    selection: Option<&'a selection::Selection>,
    /// The archive was age-encrypted (known once the extraction ended).
    encrypted: bool,
}

impl Context<'_> {
    fn target(&self) -> SqlValue {
        self.options.target_id().to_sql_value()
    }
    fn table(&self, name: &str) -> &Table {
        self.schema.table(name).expect("checked by check_schema")
    }
}

/// The archive is data, never structure: the tenants table, the tenant
/// column and each table's key come from this database. An archive that
/// says otherwise, or whose rows could not be placed by them, was not made
/// by a backup of this schema.
fn check_archive_agrees(m: &Manifest, schema: &Schema, scope: &TenantScope) -> Result<()> {
    let ours = scope.tenant_table().map(|t| t.name.as_str());
    if let (Some(theirs), Some(ours)) = (m.tenant.table.as_deref(), ours) {
        if theirs != ours {
            return Err(Error::archive(format!(
                "the archive names {theirs} as the tenants table; this database's is {ours}"
            )));
        }
    }
    for entry in &m.tables {
        check_shared_entry(entry, schema, scope)?;
        let scoped = scope
            .table(&entry.name)
            .or_else(|| scope.shared.iter().find(|t| t.name == entry.name));
        let (Some(table), Some(scoped)) = (schema.table(&entry.name), scoped) else {
            continue; // check_schema names it
        };
        let has = |c: &str| entry.columns.iter().any(|x| x == c);
        let column = &scope.options.tenant_column;
        if scoped.membership == Membership::TenantColumn && !has(column) {
            return Err(Error::archive(format!(
                "table {} is tenant data by its {column} column, but the archive leaves {column} out",
                entry.name
            )));
        }
        if let Some(key) = table.primary_key().into_iter().find(|k| !has(k)) {
            return Err(Error::archive(format!(
                "table {}: the archive leaves out its key column {key}",
                entry.name
            )));
        }
    }
    Ok(())
}

/// The archive says which of its tables hold shared rows, but the target's
/// schema and rules decide: an entry marked `shared` must be a shared table
/// here, and a table shared here must not come as tenant data.
fn check_shared_entry(
    entry: &crate::archive::TableEntry,
    schema: &Schema,
    scope: &TenantScope,
) -> Result<()> {
    let shared_here = scope.shared.iter().any(|t| t.name == entry.name);
    if entry.is_shared() == shared_here || schema.table(&entry.name).is_none() {
        return Ok(());
    }
    let column = &scope.options.tenant_column;
    let why = match (entry.is_shared(), schema.table(&entry.name)) {
        (true, Some(t)) if t.has_column(column) => {
            format!("it is tenant data here (it has the tenant column {column})")
        }
        (true, _) if scope.table(&entry.name).is_some() => {
            "it is tenant data here (its rows belong through references to tenant rows)".into()
        }
        (true, _) => "no tenant data here refers to it, or tables: rules it otherwise".into(),
        (false, _) => "it holds shared rows here, not tenant data".into(),
    };
    let marked = if entry.is_shared() {
        "shared"
    } else {
        "tenant data"
    };
    Err(Error::archive(format!(
        "the archive marks table {} as {marked}, but {why}",
        entry.name
    )))
}

/// Every difference between the archive and the database, in one error.
fn check_schema(m: &Manifest, schema: &Schema, scope: &TenantScope) -> Result<()> {
    let mut problems = Vec::new();
    if let (Some(theirs), Some(ours)) = (&m.source.schema_version, &schema.migration_version) {
        if version_key(theirs) > version_key(ours) {
            problems.push(format!(
                "the archive comes from a newer schema (migration {theirs}) than this database ({ours}): run the migrations first"
            ));
        }
    }
    for entry in &m.tables {
        let Some(table) = schema.table(&entry.name) else {
            problems.push(format!("table {} is missing", entry.name));
            continue;
        };
        if scope.table(&entry.name).is_none() && !entry.is_shared() {
            problems.push(format!(
                "table {} is not tenant data in this database",
                entry.name
            ));
            continue;
        }
        for c in &entry.columns {
            match table.column(c) {
                None => problems.push(format!("column {}.{c} is missing", entry.name)),
                Some(col) if col.generated => {
                    problems.push(format!("column {}.{c} is generated here", entry.name))
                }
                Some(_) => {}
            }
        }
        for col in table.stored_columns() {
            let in_archive = entry.columns.iter().any(|c| c == &col.name);
            let rowid_alias = col.pk_position > 0
                && col.decl_type.eq_ignore_ascii_case("integer")
                && table.primary_key().len() == 1;
            if !in_archive && col.not_null && !col.has_default && !rowid_alias {
                problems.push(format!(
                    "column {}.{} is NOT NULL without a default and the archive has no values for it",
                    entry.name, col.name
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::schema(format!(
            "the archive does not fit this database: {}",
            problems.join("; ")
        )))
    }
}

/// Migration versions compare as numbers (`20261115000000`), longest wins.
fn version_key(v: &str) -> (usize, &str) {
    (v.len(), v)
}

fn conflict_error(conflicts: &[Conflict], count: u64) -> Error {
    let listed: Vec<String> = conflicts
        .iter()
        .take(10)
        .map(|c| format!("{} {} ({})", c.table, c.key, c.reason))
        .collect();
    let more = if count > listed.len() as u64 {
        format!(" and {} more", count - listed.len() as u64)
    } else {
        String::new()
    };
    Error::conflict(format!(
        "the restore would touch or point at rows of another tenant: {}{more}; nothing was changed",
        listed.join(", ")
    ))
}
