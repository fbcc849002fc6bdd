//! The dump of one table: its rows, in key order, as dump.jsonl lines
//! encoded straight into the compressor, with what the backup learns on
//! the way (blob rows, shared-row links, polymorphic classes, parent ids).

use super::filtered_scan::{FilteredScans, RowHook};
use super::shared_rows::RowLinks;
use super::snapshot::{BlobRow, DumpSink, Reading};
use crate::archive::dump::LineWriter;
use crate::archive::TableEntry;
use crate::error::{Error, Result};
use crate::progress::{Event, Progress, Step, Throttle};
use crate::schema::Table;
use crate::scope::{
    estimated_rows, is_blob_table, tenant_params, MemberSets, Membership, ScopedTable, TypesToLearn,
};
use crate::sql;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, Row};
use std::collections::BTreeSet;

/// Where one table's rows come from: the connection and member sets to
/// read them with (the helper's, for derived tables whose sets it made),
/// and how many rows of the tenant there are.
pub(super) struct TableSource<'s, 'env> {
    pub conn: &'s Connection,
    pub sets: &'s MemberSets<'env>,
    pub t: &'s ScopedTable,
    pub total: u64,
}

/// Dump the tenant's rows of one table, in key order, as dump.jsonl lines.
/// Also the classes seen in it when the backup learns them from this table
/// (see `BackupTypes`).
pub(super) fn dump_table(
    r: &Reading<'_>,
    source: TableSource<'_, '_>,
    scans: &mut FilteredScans,
    sink: &mut DumpSink,
    progress: &mut dyn Progress,
) -> Result<(TableEntry, Option<ClassesSeen>)> {
    let t = source.t;
    let table = r.schema.table(&t.name).expect("scope tables exist");
    let columns: Vec<&str> = table.stored_columns().map(|c| c.name.as_str()).collect();
    let mut hook = scans.hook(source.conn, table, &columns, r.tenant)?;
    let sql = select_rows(&source, table, &columns, hook.is_filter())?;
    let mut copy = RowCopy {
        writer: LineWriter::new(&t.name, &columns),
        classes: r
            .scope
            .types_to_learn
            .as_ref()
            .filter(|learn| learn.table == t.name)
            .map(|learn| ClassesSeen::new(learn, &columns)),
        shared_links: sink.seeds.row_links(&t.name, &columns),
        blob_columns: blob_columns(&t.name, &columns),
    };
    let written = copy_rows(r, &source, &sql, &mut hook, &mut copy, sink, progress)?;
    let entry = TableEntry {
        name: t.name.clone(),
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows: written,
        scope: t.membership.describe(),
        polymorphic: r.scope.polymorphic_types(&t.name),
        left_out_cross_tenant: 0,
    };
    Ok((entry, copy.classes))
}

/// The SELECT of the table's rows in key order: every row for a filtered
/// scan (the hook keeps the tenant's), else the tenant's members.
fn select_rows(
    source: &TableSource<'_, '_>,
    table: &Table,
    columns: &[&str],
    filtered: bool,
) -> Result<String> {
    let t = source.t;
    let select = sql::column_list_of("a", columns);
    let order = sql::column_list_of("a", &table.row_key());
    if filtered {
        // Every row, in rowid order.
        return Ok(format!(
            "SELECT {select} FROM {} AS a NOT INDEXED ORDER BY {order}",
            sql::main_table(&t.name)
        ));
    }
    let scan = if prefers_table_scan(source.conn, table, t, source.total)? {
        " NOT INDEXED"
    } else {
        ""
    };
    Ok(format!(
        "SELECT {select} FROM {} AS a{scan} WHERE {} ORDER BY {order}",
        sql::main_table(&t.name),
        source.sets.member_predicate(&t.name, "a")?
    ))
}

/// Whether reading the whole table beats the tenant-column index. Through
/// the index each row costs an index step and a seek into the table; a scan
/// in rowid order (the dump's order) steps through every row, but cheaply.
/// When the tenant owns more than about a quarter of the rows, as in apps
/// with few large tenants, the scan wins (measured: 65 against 90 ms for a
/// third of a 324k-row table).
fn prefers_table_scan(
    conn: &Connection,
    table: &Table,
    t: &ScopedTable,
    tenant_rows: u64,
) -> Result<bool> {
    if !matches!(t.membership, Membership::TenantColumn) || tenant_rows < 1024 {
        return Ok(false);
    }
    Ok(estimated_rows(conn, table)?.is_some_and(|rows| tenant_rows.saturating_mul(4) > rows))
}

/// Positions of ActiveStorage's `key`, `checksum` and `byte_size` in the
/// SELECT of the blobs table (None for any other table).
type BlobColumns = (Option<usize>, Option<usize>, Option<usize>);

fn blob_columns(table: &str, columns: &[&str]) -> Option<BlobColumns> {
    let position = |name: &str| columns.iter().position(|c| *c == name);
    is_blob_table(table).then(|| (position("key"), position("checksum"), position("byte_size")))
}

/// What the dump does with each row it writes, besides writing it.
struct RowCopy {
    writer: LineWriter,
    classes: Option<ClassesSeen>,
    shared_links: RowLinks,
    blob_columns: Option<BlobColumns>,
}

/// Run the SELECT and write the rows the hook keeps; their number, which
/// must be the count the source gave.
fn copy_rows(
    r: &Reading<'_>,
    source: &TableSource<'_, '_>,
    sql: &str,
    hook: &mut RowHook<'_>,
    copy: &mut RowCopy,
    sink: &mut DumpSink,
    progress: &mut dyn Progress,
) -> Result<u64> {
    let (name, total) = (source.t.name.as_str(), source.total);
    let dumped = |processed: u64| Event::table_progress(Step::DumpProgress, name, processed, total);
    progress.emit(dumped(0))?;
    let mut throttle = Throttle::new(total);
    let mut stmt = source.conn.prepare(sql)?;
    let params = tenant_params(&stmt, r.tenant);
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
        copy.write(row, sink)?;
        written += 1;
        if throttle.due(written) {
            progress.emit(dumped(written))?;
        }
    }
    if written != total {
        return Err(Error::internal(format!(
            "{name}: counted {total} rows but read {written}"
        )));
    }
    progress.emit(dumped(written))?;
    Ok(written)
}

impl RowCopy {
    /// Write one row, and note what later parts of the backup need of it.
    #[inline]
    fn write(&mut self, row: &Row<'_>, sink: &mut DumpSink) -> Result<()> {
        // Encoded straight into the compressor's chunk.
        self.writer.write_row(sink.out.buffer(), row)?;
        sink.out.end_line()?;
        if let Some(classes) = self.classes.as_mut() {
            classes.see(row)?;
        }
        sink.seeds.see(&self.shared_links, row)?;
        if let Some((Some(k), checksum, size)) = self.blob_columns {
            sink.blob_rows.push(BlobRow {
                key: row.get_ref(k)?.as_str().unwrap_or_default().to_string(),
                checksum: checksum
                    .and_then(|i| row.get_ref(i).ok()?.as_str().ok().map(String::from)),
                byte_size: size.and_then(|i| row.get_ref(i).ok()?.as_i64().ok()),
            });
        }
        Ok(())
    }
}

/// The class names in the type columns of the table whose polymorphic
/// references the backup learns while dumping it, as a `DISTINCT` over the
/// same rows would have found them.
pub(super) struct ClassesSeen {
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
    pub(super) fn into_seen(self) -> Vec<(String, String, BTreeSet<String>)> {
        self.columns
            .into_iter()
            .map(|c| (c.type_column, c.id_column, c.classes))
            .collect()
    }
}
