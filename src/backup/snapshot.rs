//! Reading the tenant's rows from one read snapshot into the compressed
//! dump.
//!
//! Rows of tables with the tenant column (and the tenants row) are chosen by
//! a condition on the row itself. Rows of derived tables (join tables,
//! ActiveStorage) need the tenant's member sets first, which take a good
//! part of a backup to compute. So, when it is safe, a helper connection
//! that shares the snapshot computes the sets on its own thread while this
//! thread dumps the tables that need none (the dependency order puts those
//! first where it can), and the derived tables are dumped from the helper
//! connection, whose temp schema holds the sets, once they are ready.
//!
//! Sharing the snapshot: in rollback-journal mode nobody can commit while we
//! hold the SHARED lock, so a second connection that takes its own SHARED
//! lock meanwhile reads exactly the same data. In WAL mode a second reader
//! could start on a newer commit, so there the sets are computed on the main
//! connection, one after the other, as they are when the helper cannot get
//! its lock at once.

use super::filtered_scan::FilteredScans;
use super::shared_rows::{self, SharedSeeds};
use super::BackupOptions;
use crate::archive::deflate::{DeflatedDump, DumpCompressor};
use crate::archive::dump::LineWriter;
use crate::archive::{FileEntry, TableEntry, DUMP_NAME};
use crate::crypt::spool::Spool;
use crate::db;
use crate::error::{Error, Result};
use crate::progress::{Event, Progress, Step, Throttle};
use crate::schema::Schema;
use crate::scope::{
    estimated_rows, is_blob_table, polymorphic_types_of, tenant_params, BackupTypes, MemberSets,
    Membership, Reference, ScopedTable, Side, TenantScope, TypesToLearn,
};
use crate::sql;
use crate::value::SqlValue;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, InterruptHandle};
use std::collections::{BTreeMap, BTreeSet};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::Duration;

pub(super) struct Snapshot {
    pub schema: Schema,
    pub scope: TenantScope,
    pub tables: Vec<TableEntry>,
    pub dump: FileEntry,
    pub deflated: DeflatedDump,
    pub blob_rows: Vec<BlobRow>,
    /// Whether a helper connection computed the member sets meanwhile.
    pub parallel: bool,
}

/// The ActiveStorage columns of one blob row we back up.
pub(super) struct BlobRow {
    pub key: String,
    pub checksum: Option<String>,
    pub byte_size: Option<i64>,
}

/// Open the helper connection, before the snapshot starts. None when the
/// snapshot could not be shared (WAL mode; checked again once the snapshot
/// has begun) or the open fails: the backup then computes the sets on its
/// main connection.
pub(super) fn open_helper(options: &BackupOptions, journal_mode: &str) -> Option<Connection> {
    if journal_mode == "wal" {
        return None;
    }
    let helper = db::open_read_only(&options.database, options.busy_timeout_ms).ok()?;
    // The helper walks indexes once to fill the sets; a page cache as large
    // as the main connection's would only add to the backup's memory.
    helper
        .pragma_update(None, "cache_size", -HELPER_CACHE_KIB)
        .ok()?;
    Some(helper)
}

/// Page cache of the helper connection, in KiB.
const HELPER_CACHE_KIB: i64 = 2 << 10;

/// Read everything the archive needs inside the read transaction already
/// open on `conn`.
pub(super) fn read_snapshot(
    conn: &Connection,
    helper: Option<Connection>,
    options: &BackupOptions,
    spool: &Spool,
    progress: &mut dyn Progress,
) -> Result<Snapshot> {
    let schema = Schema::read(conn)?;
    let tenant = options.tenant_id.to_sql_value();
    let mut helper = helper;
    // The classes of the largest polymorphic table are learned while it is
    // dumped. Should they contradict the order the dump committed to (rare:
    // see `TenantScope::learned_references`), the dump starts over with
    // every class read first.
    for types in [BackupTypes::LearnInLargest, BackupTypes::ReadFirst] {
        let mut scope = TenantScope::discover_for_backup(
            conn,
            &schema,
            &options.scope_options(),
            &tenant,
            types,
        )?;
        progress.emit(
            Event::new(Step::ScanTables)
                .with(
                    "tables",
                    scope
                        .tables
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>(),
                )
                .with(
                    "skipped",
                    scope
                        .skipped
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>(),
                ),
        )?;
        let counts = count_by_row(conn, &scope, &schema, options)?;
        let shared = scope.may_cross_tenants(&schema);
        let mut scans = FilteredScans::plan(conn, &scope, &schema, &counts, &shared)?;
        let filtered = scans.tables();
        let choice = SetChoice {
            leave_out: shared.difference(&filtered).cloned().collect(),
            without: filtered,
        };
        let filtered = &choice.without;
        let any_derived = scope
            .tables
            .iter()
            .any(|t| t.is_derived() && !filtered.contains(&t.name));
        // `conn` holds its SHARED lock now (it read the schema). Asked again
        // under that lock, the journal mode cannot change until we are done
        // (a switch to WAL needs the database to itself).
        let still_rollback = any_derived && helper.is_some() && db::journal_mode(conn)? != "wal";
        let helper = helper
            .take()
            .filter(|_| still_rollback)
            .and_then(join_snapshot);
        let parallel = helper.is_some();
        let dumped = std::thread::scope(|threads| {
            let sets = MemberSetsSource::start(threads, helper, &scope, &schema, options, &choice);
            let plan = DumpPlan {
                counts,
                scans: &mut scans,
                sets,
                choice: &choice,
            };
            dump_tables(conn, plan, &scope, &schema, options, spool, progress)
        })?;
        let Some(Dumped {
            tables,
            dump,
            deflated,
            blob_rows,
            learned,
        }) = dumped
        else {
            continue;
        };
        scope.references.extend(learned);
        return Ok(Snapshot {
            schema,
            scope,
            tables,
            dump,
            deflated,
            blob_rows,
            parallel,
        });
    }
    Err(Error::internal(
        "the dump order contradicted classes that were read before it",
    ))
}

/// Begin the helper's read transaction while the main connection holds its
/// SHARED lock. Without waiting: a writer that is about to commit holds
/// PENDING, waits for our main connection, and keeps new readers out; we
/// must not wait for it in turn.
fn join_snapshot(helper: Connection) -> Option<Connection> {
    helper.busy_timeout(Duration::ZERO).ok()?;
    helper
        .execute_batch("BEGIN; SELECT count(*) FROM sqlite_schema;")
        .ok()?;
    db::wait_when_busy(&helper).ok()?;
    Some(helper)
}

/// Where the member sets come from: a helper thread computing them on its
/// connection, or the main connection when they are first needed.
enum MemberSetsSource<'scope, 'env> {
    Helper(HelperJob<'scope, 'env>),
    Main,
}

/// The helper's thread. Dropped before it was joined (an error or a cancel
/// on the main thread), it interrupts the helper's statements until the
/// thread has stopped, so a cancel does not wait for the sets.
struct HelperJob<'scope, 'env> {
    thread: Option<ScopedJoinHandle<'scope, Result<(Connection, TenantSets<'env>)>>>,
    interrupt: InterruptHandle,
}

impl<'scope, 'env> MemberSetsSource<'scope, 'env> {
    fn start(
        threads: &'scope Scope<'scope, 'env>,
        helper: Option<Connection>,
        scope: &'env TenantScope,
        schema: &'env Schema,
        options: &'env BackupOptions,
        choice: &'env SetChoice,
    ) -> Self {
        let Some(helper) = helper else {
            return MemberSetsSource::Main;
        };
        let interrupt = helper.get_interrupt_handle();
        let busy = db::BusyPolicy::current();
        let thread = std::thread::Builder::new()
            .name("tenant_kit-sets".into())
            .spawn_scoped(threads, move || {
                let _busy = busy.map(db::BusyPolicy::enter);
                let sets = tenant_sets(&helper, scope, schema, options, choice)?;
                Ok((helper, sets))
            });
        match thread {
            Ok(thread) => MemberSetsSource::Helper(HelperJob {
                thread: Some(thread),
                interrupt,
            }),
            // No thread to be had: the main connection does the work.
            Err(_) => MemberSetsSource::Main,
        }
    }
}

impl<'env> MemberSetsSource<'_, 'env> {
    /// The sets, and the connection whose temp schema holds them (None:
    /// `conn`, the main one, on which they are computed now).
    fn into_sets(
        self,
        conn: &Connection,
        scope: &'env TenantScope,
        schema: &'env Schema,
        options: &BackupOptions,
        choice: &SetChoice,
    ) -> Result<(Option<Connection>, TenantSets<'env>)> {
        match self {
            MemberSetsSource::Helper(job) => {
                let (helper, sets) = job.finish()?;
                Ok((Some(helper), sets))
            }
            MemberSetsSource::Main => {
                let sets = tenant_sets(conn, scope, schema, options, choice)?;
                Ok((None, sets))
            }
        }
    }
}

/// Which member sets a backup makes, and which of them lose the rows other
/// tenants reach too.
pub(super) struct SetChoice {
    /// Derived tables without sets (read by filtered scans).
    without: BTreeSet<String>,
    /// Tables whose rows may be shared ([`TenantScope::may_cross_tenants`])
    /// that have sets.
    leave_out: BTreeSet<String>,
}

/// The tenant's member sets, without the rows other tenants reach too.
pub(super) struct TenantSets<'env> {
    sets: MemberSets<'env>,
    /// Rows left out as shared, per table.
    left_out: BTreeMap<String, u64>,
}

/// The tenant's member sets on `conn`, as `choice` says.
fn tenant_sets<'env>(
    conn: &Connection,
    scope: &'env TenantScope,
    schema: &'env Schema,
    options: &BackupOptions,
    choice: &SetChoice,
) -> Result<TenantSets<'env>> {
    let sets = MemberSets::materialize_without(
        conn,
        scope,
        schema,
        &options.tenant_id,
        Side::Ours,
        &choice.without,
    )?;
    let left_out = sets.leave_out_cross_tenant(conn, &options.tenant_id, &choice.leave_out)?;
    Ok(TenantSets { sets, left_out })
}

impl<'env> HelperJob<'_, 'env> {
    fn finish(mut self) -> Result<(Connection, TenantSets<'env>)> {
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            _ => Err(Error::internal("the member-set thread panicked")),
        }
    }
}

impl Drop for HelperJob<'_, '_> {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            // An interrupt only reaches a statement that is running, so
            // repeat it until the thread has noticed.
            while !thread.is_finished() {
                self.interrupt.interrupt();
                std::thread::sleep(Duration::from_millis(2));
            }
            let _ = thread.join();
        }
    }
}

/// What [`dump_tables`] read.
struct Dumped {
    tables: Vec<TableEntry>,
    dump: FileEntry,
    deflated: DeflatedDump,
    blob_rows: Vec<BlobRow>,
    /// The references learned while dumping (see `BackupTypes`).
    learned: Vec<Reference>,
}

/// How [`dump_tables`] finds each table's rows.
struct DumpPlan<'p, 'scope, 'env> {
    /// Rows of the tenant in each table chosen by a condition on its rows.
    counts: Vec<Option<u64>>,
    /// Join tables read by a filtered scan, and their parents' ids.
    scans: &'p mut FilteredScans,
    /// The member sets of the other derived tables.
    sets: MemberSetsSource<'scope, 'env>,
    /// Which sets to make.
    choice: &'p SetChoice,
}

/// Count the rows of the tables chosen by a condition on their rows
/// (None for derived tables): progress needs totals, and a tenant without a
/// single row in them is almost certainly a wrong id (derived rows all
/// hang off such rows, so they have none either).
fn count_by_row(
    conn: &Connection,
    scope: &TenantScope,
    schema: &Schema,
    options: &BackupOptions,
) -> Result<Vec<Option<u64>>> {
    let tenant = options.tenant_id.to_sql_value();
    let by_row = MemberSets::unmaterialized(scope, schema, Side::Ours);
    let mut counts: Vec<Option<u64>> = Vec::with_capacity(scope.tables.len());
    for t in &scope.tables {
        counts.push(if t.is_derived() {
            None
        } else {
            Some(count_rows(conn, &by_row, t, &tenant)?)
        });
    }
    if counts.iter().all(|c| c.unwrap_or(0) == 0) {
        return Err(Error::argument(format!(
            "tenant {} has no rows (no {} = {} in any table)",
            options.tenant_id, options.tenant_column, options.tenant_id
        )));
    }
    Ok(counts)
}

/// Dump every table of the scope, in its (dependency) order. None: the
/// classes learned while dumping contradict the dump's order, which must
/// then be made again with the classes read first.
fn dump_tables<'env>(
    conn: &Connection,
    plan: DumpPlan<'_, '_, 'env>,
    scope: &'env TenantScope,
    schema: &'env Schema,
    options: &BackupOptions,
    spool: &Spool,
    progress: &mut dyn Progress,
) -> Result<Option<Dumped>> {
    let tenant = options.tenant_id.to_sql_value();
    // Tables whose membership is a condition on the row need no sets.
    let by_row = MemberSets::unmaterialized(scope, schema, Side::Ours);
    let DumpPlan {
        counts,
        scans,
        sets: mut sets_source,
        choice,
    } = plan;

    // Rows are compressed on a second thread while they are read.
    let mut out = DumpCompressor::start(spool.create()?, options.compression_level);
    // The sets, once known, and the connection whose temp schema holds
    // them (None: the main one).
    let mut derived: Option<(Option<Connection>, TenantSets<'env>)> = None;
    let mut tables = Vec::with_capacity(scope.tables.len());
    let mut blob_rows = Vec::new();
    let mut learned = Vec::new();
    let mut seeds = SharedSeeds::plan(scope);
    for (t, count) in scope.tables.iter().zip(&counts) {
        let mut left_out = 0;
        let (conn, sets) = if t.is_derived() && !scans.is_filtered(&t.name) {
            let (helper, sets) = match derived {
                Some(ref ready) => ready,
                None => derived.insert(
                    std::mem::replace(&mut sets_source, MemberSetsSource::Main)
                        .into_sets(conn, scope, schema, options, choice)?,
                ),
            };
            left_out = sets.left_out.get(&t.name).copied().unwrap_or(0);
            (helper.as_ref().unwrap_or(conn), &sets.sets)
        } else {
            (conn, &by_row)
        };
        let total = match count {
            Some(n) => *n,
            None if scans.is_filtered(&t.name) => {
                let (kept, shared) = count_filtered(conn, schema, t, scans, &tenant)?;
                left_out = shared;
                kept
            }
            None => sets
                .member_count(conn, &t.name)?
                .ok_or_else(|| Error::internal("derived tables have whole-tenant sets"))?,
        };
        let (mut entry, classes) = dump_table(
            conn,
            sets,
            scope,
            schema,
            t,
            total,
            &tenant,
            scans,
            &mut out,
            (&mut blob_rows, &mut seeds),
            progress,
        )?;
        if let Some(classes) = classes {
            let Some(refs) = scope.learned_references(schema, &classes.into_seen()) else {
                return Ok(None);
            };
            entry.polymorphic = polymorphic_types_of(&refs, &t.name);
            learned = refs;
        }
        entry.left_out_cross_tenant = left_out;
        tables.push(entry);
    }
    // After the tenant's rows, in the same snapshot: the shared rows they
    // refer to.
    tables.extend(shared_rows::dump(
        conn, scope, schema, &seeds, &mut out, progress,
    )?);
    let deflated = out.finish()?;
    let dump = FileEntry {
        name: DUMP_NAME.into(),
        size: deflated.size,
        sha256: deflated.sha256.clone(),
    };
    Ok(Some(Dumped {
        tables,
        dump,
        deflated,
        blob_rows,
        learned,
    }))
}

/// Whether reading the whole table beats the tenant-column index. Through
/// the index each row costs an index step and a seek into the table; a scan
/// in rowid order (the dump's order) steps through every row, but cheaply.
/// When the tenant owns more than about a quarter of the rows, as in apps
/// with few large tenants, the scan wins (measured: 65 against 90 ms for a
/// third of a 324k-row table).
fn prefers_table_scan(
    conn: &Connection,
    table: &crate::schema::Table,
    t: &ScopedTable,
    tenant_rows: u64,
) -> Result<bool> {
    if !matches!(t.membership, Membership::TenantColumn) || tenant_rows < 1024 {
        return Ok(false);
    }
    Ok(estimated_rows(conn, table)?.is_some_and(|rows| tenant_rows.saturating_mul(4) > rows))
}

/// How many rows a filtered scan of `t` keeps, and how many it leaves out
/// as shared with other tenants: one pass over its link columns.
fn count_filtered(
    conn: &Connection,
    schema: &Schema,
    t: &ScopedTable,
    scans: &mut FilteredScans,
    tenant: &SqlValue,
) -> Result<(u64, u64)> {
    let table = schema.table(&t.name).expect("scope tables exist");
    let links = scans.link_columns(&t.name);
    let columns: Vec<&str> = links.iter().map(String::as_str).collect();
    let sql = format!(
        "SELECT {} FROM {} NOT INDEXED",
        columns
            .iter()
            .map(|c| sql::ident(c))
            .collect::<Vec<_>>()
            .join(", "),
        sql::main_table(&t.name)
    );
    let mut hook = scans.hook(conn, table, &columns, tenant)?;
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query([])?;
    let mut kept = 0;
    while let Some(row) = rows.next()? {
        kept += u64::from(hook.keeps(row)?);
    }
    Ok((kept, hook.left_out()))
}

/// How many rows of `t`, a table whose membership is a condition on the
/// row, are the tenant's.
fn count_rows(
    conn: &Connection,
    sets: &MemberSets<'_>,
    t: &ScopedTable,
    tenant: &SqlValue,
) -> Result<u64> {
    let sql = format!(
        "SELECT count(*) FROM {} AS a WHERE {}",
        sql::main_table(&t.name),
        sets.member_predicate(&t.name, "a")?
    );
    let mut stmt = conn.prepare(&sql)?;
    let params = tenant_params(&stmt, tenant);
    Ok(stmt.query_row(&*params, |r| r.get::<_, i64>(0))? as u64)
}

/// Dump the tenant's rows of one table, in key order, as dump.jsonl lines.
#[allow(clippy::too_many_arguments)]
fn dump_table(
    conn: &Connection,
    sets: &MemberSets<'_>,
    scope: &TenantScope,
    schema: &Schema,
    t: &ScopedTable,
    total: u64,
    tenant: &SqlValue,
    scans: &mut FilteredScans,
    out: &mut DumpCompressor,
    (blob_rows, seeds): (&mut Vec<BlobRow>, &mut SharedSeeds),
    progress: &mut dyn Progress,
) -> Result<(TableEntry, Option<ClassesSeen>)> {
    let table = schema.table(&t.name).expect("scope tables exist");
    let columns: Vec<&str> = table.stored_columns().map(|c| c.name.as_str()).collect();
    let mut classes = scope
        .types_to_learn
        .as_ref()
        .filter(|learn| learn.table == t.name)
        .map(|learn| ClassesSeen::new(learn, &columns));
    let select = columns
        .iter()
        .map(|c| format!("a.{}", sql::ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let order = table
        .row_key()
        .iter()
        .map(|k| format!("a.{}", sql::ident(k)))
        .collect::<Vec<_>>()
        .join(", ");
    let mut hook = scans.hook(conn, table, &columns, tenant)?;
    let shared_links = seeds.row_links(&t.name, &columns);
    let sql = if hook.is_filter() {
        // Every row, in rowid order; `hook` keeps the tenant's.
        format!(
            "SELECT {select} FROM {} AS a NOT INDEXED ORDER BY {order}",
            sql::main_table(&t.name)
        )
    } else {
        let scan = if prefers_table_scan(conn, table, t, total)? {
            " NOT INDEXED"
        } else {
            ""
        };
        format!(
            "SELECT {select} FROM {} AS a{scan} WHERE {} ORDER BY {order}",
            sql::main_table(&t.name),
            sets.member_predicate(&t.name, "a")?
        )
    };
    let writer = LineWriter::new(&t.name, &columns);
    let blob_cols = if is_blob_table(&t.name) {
        Some((
            columns.iter().position(|c| *c == "key"),
            columns.iter().position(|c| *c == "checksum"),
            columns.iter().position(|c| *c == "byte_size"),
        ))
    } else {
        None
    };

    let dumped = |processed: u64| {
        Event::table_progress(Step::DumpProgress, t.name.as_str(), processed, total)
    };
    progress.emit(dumped(0))?;
    let mut throttle = Throttle::new(total);
    let mut stmt = conn.prepare(&sql)?;
    let params = tenant_params(&stmt, tenant);
    let mut rows = stmt.query(&*params)?;
    let mut written = 0u64;
    let mut read = 0u64;
    while let Some(row) = rows.next()? {
        read += 1;
        if read % 1024 == 0 {
            progress.check_interrupt()?;
        }
        if !hook.keeps(row)? {
            continue;
        }
        // Encoded straight into the compressor's chunk.
        writer.write_row(out.buffer(), row)?;
        out.end_line()?;
        if let Some(classes) = classes.as_mut() {
            classes.see(row)?;
        }
        seeds.see(&shared_links, row)?;
        if let Some((Some(k), checksum, size)) = blob_cols {
            blob_rows.push(BlobRow {
                key: row.get_ref(k)?.as_str().unwrap_or_default().to_string(),
                checksum: checksum
                    .and_then(|i| row.get_ref(i).ok()?.as_str().ok().map(String::from)),
                byte_size: size.and_then(|i| row.get_ref(i).ok()?.as_i64().ok()),
            });
        }
        written += 1;
        if throttle.due(written) {
            progress.emit(dumped(written))?;
        }
    }
    if written != total {
        return Err(Error::internal(format!(
            "{}: counted {total} rows but read {written}",
            t.name
        )));
    }
    progress.emit(dumped(written))?;
    let entry = TableEntry {
        name: t.name.clone(),
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows: written,
        scope: t.membership.describe(),
        polymorphic: scope.polymorphic_types(&t.name),
        left_out_cross_tenant: 0,
    };
    Ok((entry, classes))
}

/// The class names in the type columns of the table whose polymorphic
/// references the backup learns while dumping it, as a `DISTINCT` over the
/// same rows would have found them.
struct ClassesSeen {
    columns: Vec<ClassColumn>,
}

struct ClassColumn {
    /// Position in the dump's SELECT.
    index: usize,
    type_column: String,
    id_column: String,
    classes: BTreeSet<String>,
    /// The last value seen: rows of one class tend to come in runs.
    last: Vec<u8>,
}

/// As many classes as the `DISTINCT` that reads them first takes.
const MOST_CLASSES: usize = 10_000;

impl ClassesSeen {
    fn new(learn: &TypesToLearn, columns: &[&str]) -> ClassesSeen {
        let columns = learn
            .columns
            .iter()
            .filter_map(|(type_column, id_column)| {
                Some(ClassColumn {
                    index: columns.iter().position(|c| c == type_column)?,
                    type_column: type_column.clone(),
                    id_column: id_column.clone(),
                    classes: BTreeSet::new(),
                    last: Vec::new(),
                })
            })
            .collect();
        ClassesSeen { columns }
    }

    fn see(&mut self, row: &rusqlite::Row<'_>) -> Result<()> {
        for column in &mut self.columns {
            // Like the DISTINCT's `typeof(column) = 'text'`.
            let ValueRef::Text(class) = row.get_ref(column.index)? else {
                continue;
            };
            if class == column.last.as_slice() || column.classes.len() >= MOST_CLASSES {
                continue;
            }
            column.last = class.to_vec();
            // A name that is not UTF-8 names no table.
            if let Ok(name) = std::str::from_utf8(class) {
                column.classes.insert(name.to_string());
            }
        }
        Ok(())
    }

    /// `(type column, id column, classes)` for each column.
    fn into_seen(self) -> Vec<(String, String, BTreeSet<String>)> {
        self.columns
            .into_iter()
            .map(|c| (c.type_column, c.id_column, c.classes))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn database(dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("app.sqlite3");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = DELETE; CREATE TABLE t(id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);",
        )
        .unwrap();
        path
    }

    /// A writer that is committing holds PENDING and waits for our main
    /// connection's SHARED lock; a helper that waited for the writer in turn
    /// would wait for ever (until both busy timeouts ran out). It must give
    /// up at once, and the writer must get through once the main
    /// connection's snapshot ends.
    #[test]
    fn the_helper_does_not_wait_for_a_writer_that_waits_for_us() {
        let dir = tempfile::tempdir().unwrap();
        let path = database(dir.path());
        // Opened before the snapshot, as the backup does.
        let helper = db::open_read_only(&path, 5_000).unwrap();
        let main = db::open_read_only(&path, 5_000).unwrap();
        main.execute_batch("BEGIN; SELECT count(*) FROM t;")
            .unwrap();

        let writer_path = path.clone();
        let writer = std::thread::spawn(move || {
            let w = Connection::open(&writer_path).unwrap();
            w.busy_timeout(Duration::from_secs(30)).unwrap();
            w.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (2); COMMIT;")
        });
        // Wait until the writer holds PENDING: new readers are refused then.
        let probe = db::open_read_only(&path, 0).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let refused = probe
                .execute_batch("BEGIN; SELECT count(*) FROM t;")
                .is_err();
            let _ = probe.execute_batch("ROLLBACK");
            if refused {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the writer never reached PENDING"
            );
            std::thread::sleep(Duration::from_millis(5));
        }

        // Had the helper waited (with this timeout), the writer would time
        // out first and fail below.
        let _busy = db::BusyPolicy::new(120_000, None).enter();
        let joined = join_snapshot(helper);
        assert!(joined.is_none(), "the helper joined past a pending writer");

        main.execute_batch("ROLLBACK").unwrap();
        writer
            .join()
            .unwrap()
            .expect("the writer commits after the snapshot");
        let rows: i64 = main
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 2);
    }

    /// Without a writer in the way the helper joins, and it reads what the
    /// main connection reads even after a writer has been held off.
    #[test]
    fn the_helper_joins_the_snapshot_of_the_main_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = database(dir.path());
        let main = db::open_read_only(&path, 5_000).unwrap();
        main.execute_batch("BEGIN; SELECT count(*) FROM t;")
            .unwrap();
        let helper = join_snapshot(db::open_read_only(&path, 5_000).unwrap())
            .expect("nothing stands in the way");

        let w = Connection::open(&path).unwrap();
        w.busy_timeout(Duration::ZERO).unwrap();
        let refused = w.execute_batch("INSERT INTO t VALUES (2)");
        assert!(refused.is_err(), "a commit got past two SHARED locks");
        let count = |c: &Connection| -> i64 {
            c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!((count(&main), count(&helper)), (1, 1));
    }

    /// A helper job dropped early (an error or a cancel on the main thread)
    /// interrupts the helper's statement instead of waiting for it.
    #[test]
    fn a_dropped_helper_job_interrupts_the_helper() {
        let dir = tempfile::tempdir().unwrap();
        let path = database(dir.path());
        let helper = db::open_read_only(&path, 5_000).unwrap();
        let started = Instant::now();
        let outcome = std::thread::scope(|threads| {
            let interrupt = helper.get_interrupt_handle();
            let (running, is_running) = std::sync::mpsc::channel();
            let thread = threads.spawn(move || -> Result<(Connection, TenantSets<'_>)> {
                running.send(()).unwrap();
                // Counts to 10^12: hours, unless interrupted.
                helper.query_row(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000000000) SELECT count(*) FROM n",
                    [],
                    |r| r.get::<_, i64>(0),
                )?;
                Err(Error::internal("the statement ran to its end"))
            });
            is_running.recv().unwrap();
            std::thread::sleep(Duration::from_millis(50));
            drop(HelperJob {
                thread: Some(thread),
                interrupt,
            });
            started.elapsed()
        });
        assert!(
            outcome < Duration::from_secs(60),
            "dropping the job waited {outcome:?} for the statement"
        );
    }
}
