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
use super::helper::{join_snapshot, MemberSetsSource, SetChoice, TenantSets};
use super::shared_rows::{self, SharedSeeds};
use super::table_dump::{dump_table, TableSource};
use super::BackupOptions;
use crate::archive::deflate::{DeflatedDump, DumpCompressor};
use crate::archive::{FileEntry, TableEntry, DUMP_NAME};
use crate::crypt::spool::Spool;
use crate::db;
use crate::error::{Error, Result};
use crate::progress::{Event, Progress, Step};
use crate::schema::Schema;
use crate::scope::{
    polymorphic_types_of, tenant_params, BackupTypes, MemberSets, Reference, ScopedTable, Side,
    TenantScope,
};
use crate::sql;
use crate::value::SqlValue;
use rusqlite::Connection;

pub(super) use super::helper::open_helper;

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

/// What every phase of reading the snapshot works with: the main
/// connection (in its read transaction), the schema and scope it read, the
/// backup's options, the tenant as a bound value, and the dump's spool.
pub(super) struct Reading<'r> {
    pub conn: &'r Connection,
    pub schema: &'r Schema,
    pub scope: &'r TenantScope,
    pub options: &'r BackupOptions,
    pub tenant: &'r SqlValue,
    pub spool: &'r Spool,
}

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
        announce_scope(&scope, progress)?;
        let reading = Reading {
            conn,
            schema: &schema,
            scope: &scope,
            options,
            tenant: &tenant,
            spool,
        };
        let Some((dumped, parallel)) = dump_scope(&reading, &mut helper, progress)? else {
            continue;
        };
        scope.references.extend(dumped.learned);
        return Ok(Snapshot {
            schema,
            scope,
            tables: dumped.tables,
            dump: dumped.dump,
            deflated: dumped.deflated,
            blob_rows: dumped.blob_rows,
            parallel,
        });
    }
    Err(Error::internal(
        "the dump order contradicted classes that were read before it",
    ))
}

/// The `scan_tables` event: the tables in scope and those skipped.
fn announce_scope(scope: &TenantScope, progress: &mut dyn Progress) -> Result<()> {
    let tables: Vec<&str> = scope.tables.iter().map(|t| t.name.as_str()).collect();
    let skipped: Vec<&str> = scope.skipped.iter().map(|(n, _)| n.as_str()).collect();
    progress.emit(
        Event::new(Step::ScanTables)
            .with("tables", tables)
            .with("skipped", skipped),
    )
}

/// Dump the scope once: choose how each table's rows are found, start the
/// helper when it can share the snapshot, dump every table. Also whether
/// the helper ran; None as [`dump_tables`].
fn dump_scope(
    r: &Reading<'_>,
    helper: &mut Option<Connection>,
    progress: &mut dyn Progress,
) -> Result<Option<(Dumped, bool)>> {
    let counts = count_by_row(r)?;
    let shared = r.scope.may_cross_tenants(r.schema);
    let mut scans = FilteredScans::plan(r.conn, r.scope, r.schema, &counts, &shared)?;
    let filtered = scans.tables();
    let choice = SetChoice {
        leave_out: shared.difference(&filtered).cloned().collect(),
        without: filtered,
    };
    let any_derived = r
        .scope
        .tables
        .iter()
        .any(|t| t.is_derived() && !choice.without.contains(&t.name));
    // `conn` holds its SHARED lock now (it read the schema). Asked again
    // under that lock, the journal mode cannot change until we are done
    // (a switch to WAL needs the database to itself).
    let still_rollback = any_derived && helper.is_some() && db::journal_mode(r.conn)? != "wal";
    let helper = helper
        .take()
        .filter(|_| still_rollback)
        .and_then(join_snapshot);
    let parallel = helper.is_some();
    let dumped = std::thread::scope(|threads| {
        let sets = MemberSetsSource::start(threads, helper, r.scope, r.schema, r.options, &choice);
        let plan = DumpPlan {
            counts,
            scans: &mut scans,
            sets,
            choice: &choice,
        };
        dump_tables(r, plan, progress)
    })?;
    Ok(dumped.map(|d| (d, parallel)))
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

/// Where the dump's lines go, and what it gathers on the way for the
/// archive's later parts.
pub(super) struct DumpSink {
    /// Rows are compressed on a second thread while they are read.
    pub out: DumpCompressor,
    pub blob_rows: Vec<BlobRow>,
    /// The shared rows the tenant's rows refer to (see shared_rows.rs).
    pub seeds: SharedSeeds,
}

/// Count the rows of the tables chosen by a condition on their rows
/// (None for derived tables): progress needs totals, and a tenant without a
/// single row in them is almost certainly a wrong id (derived rows all
/// hang off such rows, so they have none either).
fn count_by_row(r: &Reading<'_>) -> Result<Vec<Option<u64>>> {
    let by_row = MemberSets::unmaterialized(r.scope, r.schema, Side::Ours);
    let mut counts: Vec<Option<u64>> = Vec::with_capacity(r.scope.tables.len());
    for t in &r.scope.tables {
        counts.push(if t.is_derived() {
            None
        } else {
            Some(count_rows(r.conn, &by_row, t, r.tenant)?)
        });
    }
    if counts.iter().all(|c| c.unwrap_or(0) == 0) {
        let options = r.options;
        return Err(Error::argument(format!(
            "tenant {} has no rows (no {} = {} in any table)",
            options.tenant_id, options.tenant_column, options.tenant_id
        )));
    }
    Ok(counts)
}

/// Dump every table of the scope, in its (dependency) order, then the
/// shared rows they refer to. None: the classes learned while dumping
/// contradict the dump's order, which must then be made again with the
/// classes read first.
fn dump_tables<'env>(
    r: &Reading<'env>,
    plan: DumpPlan<'_, '_, 'env>,
    progress: &mut dyn Progress,
) -> Result<Option<Dumped>> {
    let DumpPlan {
        counts,
        scans,
        sets,
        choice,
    } = plan;
    let mut sources = SetSources {
        // Tables whose membership is a condition on the row need no sets.
        by_row: MemberSets::unmaterialized(r.scope, r.schema, Side::Ours),
        pending: sets,
        ready: None,
    };
    let mut sink = DumpSink {
        out: DumpCompressor::start(r.spool.create()?, r.options.compression_level),
        blob_rows: Vec::new(),
        seeds: SharedSeeds::plan(r.scope),
    };
    let mut tables = Vec::with_capacity(r.scope.tables.len());
    let mut learned = Vec::new();
    for (t, count) in r.scope.tables.iter().zip(&counts) {
        let (conn, sets, mut left_out) = sources.for_table(r, choice, scans, t)?;
        let total = match count {
            Some(n) => *n,
            None if scans.is_filtered(&t.name) => {
                let (kept, shared) = count_filtered(r, t, scans)?;
                left_out = shared;
                kept
            }
            None => sets
                .member_count(conn, &t.name)?
                .ok_or_else(|| Error::internal("derived tables have whole-tenant sets"))?,
        };
        let source = TableSource {
            conn,
            sets,
            t,
            total,
        };
        let (mut entry, classes) = dump_table(r, source, scans, &mut sink, progress)?;
        if let Some(classes) = classes {
            let Some(refs) = r.scope.learned_references(r.schema, &classes.into_seen()) else {
                return Ok(None);
            };
            entry.polymorphic = polymorphic_types_of(&refs, &t.name);
            learned = refs;
        }
        entry.left_out_cross_tenant = left_out;
        tables.push(entry);
    }
    finish_dump(r, tables, sink, learned, progress).map(Some)
}

/// After the tenant's rows, in the same snapshot: the shared rows they
/// refer to; then the dump is complete.
fn finish_dump(
    r: &Reading<'_>,
    mut tables: Vec<TableEntry>,
    mut sink: DumpSink,
    learned: Vec<Reference>,
    progress: &mut dyn Progress,
) -> Result<Dumped> {
    tables.extend(shared_rows::dump(
        r.conn,
        r.scope,
        r.schema,
        &sink.seeds,
        &mut sink.out,
        progress,
    )?);
    let deflated = sink.out.finish()?;
    let dump = FileEntry {
        name: DUMP_NAME.into(),
        size: deflated.size,
        sha256: deflated.sha256.clone(),
    };
    Ok(Dumped {
        tables,
        dump,
        deflated,
        blob_rows: sink.blob_rows,
        learned,
    })
}

/// The member sets a table's dump reads from: none for tables chosen by a
/// condition on their rows or by a filtered scan, the tenant's sets (made
/// when the first table needs them) for the other derived tables.
struct SetSources<'scope, 'env> {
    by_row: MemberSets<'env>,
    pending: MemberSetsSource<'scope, 'env>,
    /// The sets, once known, and the connection whose temp schema holds
    /// them (None: the main one).
    ready: Option<(Option<Connection>, TenantSets<'env>)>,
}

impl<'env> SetSources<'_, 'env> {
    /// The connection and sets to read `t` with, and the rows of `t` the
    /// sets left out as shared with other tenants.
    fn for_table<'s>(
        &'s mut self,
        r: &'s Reading<'env>,
        choice: &SetChoice,
        scans: &FilteredScans,
        t: &ScopedTable,
    ) -> Result<(&'s Connection, &'s MemberSets<'env>, u64)> {
        if !t.is_derived() || scans.is_filtered(&t.name) {
            return Ok((r.conn, &self.by_row, 0));
        }
        let (helper, sets) = match self.ready {
            Some(ref ready) => ready,
            None => {
                let pending = std::mem::replace(&mut self.pending, MemberSetsSource::Main);
                let sets = pending.into_sets(r.conn, r.scope, r.schema, r.options, choice)?;
                self.ready.insert(sets)
            }
        };
        let left_out = sets.left_out.get(&t.name).copied().unwrap_or(0);
        Ok((helper.as_ref().unwrap_or(r.conn), &sets.sets, left_out))
    }
}

/// How many rows a filtered scan of `t` keeps, and how many it leaves out
/// as shared with other tenants: one pass over its link columns.
fn count_filtered(
    r: &Reading<'_>,
    t: &ScopedTable,
    scans: &mut FilteredScans,
) -> Result<(u64, u64)> {
    let table = r.schema.table(&t.name).expect("scope tables exist");
    let links = scans.link_columns(&t.name);
    let columns: Vec<&str> = links.iter().map(String::as_str).collect();
    let sql = format!(
        "SELECT {} FROM {} NOT INDEXED",
        sql::column_list(&columns),
        sql::main_table(&t.name)
    );
    let mut hook = scans.hook(r.conn, table, &columns, r.tenant)?;
    let mut stmt = r.conn.prepare(&sql)?;
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
