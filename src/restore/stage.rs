//! Staging: every row of the archive parsed once, checked, remapped to the
//! target tenant and copied into a temp table of the restore's connection
//! (`temp.tk_stage_<i>`, one per archive table, columns `c0, c1, …` without
//! affinity so values keep their storage class), all before any lock on the
//! app's database. The plan and the write transaction then work set-wise
//! on these tables, so the write lock covers SQL alone.
//!
//! Temp tables live in SQLite's temp storage: a file SQLite unlinks as it
//! opens it, gone with the connection.

use super::Context;
use crate::archive::dump::{check_dump, DumpReader, RowLine};
use crate::archive::{self, TableEntry};
use crate::error::{Error, Result, ResultExt};
use crate::progress::Progress;
use crate::scope::{is_blob_table, Membership};
use crate::sql;
use crate::value::SqlValue;
use rusqlite::Connection;

/// One archive table, staged: where its rows are and how they map onto
/// the database table.
pub(super) struct StagedTable {
    pub name: String,
    /// `temp.tk_stage_<i>`.
    pub stage: sql::TempTable,
    /// The archive's columns, in manifest order: stage column `c<i>` holds
    /// `columns[i]`.
    pub columns: Vec<String>,
    /// Positions of the primary key columns within `columns`; empty when
    /// the table has none (join tables), and rows are then identified by
    /// all of their values.
    pub pk: Vec<usize>,
    /// Columns that point at the tenant (tenant column, references to the
    /// tenants table, polymorphic references to the tenant class):
    /// (position, optional (type column position, class)).
    tenant_refs: Vec<(usize, Option<(usize, String)>)>,
    /// The tenants table: its row is created when missing, never updated.
    pub tenant_row: bool,
    /// Rows belong to the tenant through other rows (join tables,
    /// ActiveStorage): checked again after they are written.
    pub derived: bool,
    /// Shared reference rows (see `shared_rows.rs`): inserted when
    /// missing, never updated.
    pub shared: bool,
    /// Polymorphic type columns through which rows of this (derived)
    /// table belong to the tenant (an attachment's `record_type`): their
    /// classes must name tenant data. Other type columns (an audit's
    /// `user_type` naming a table shared between tenants) are plain data.
    owner_type_columns: Vec<String>,
    /// Rows staged (stage rowids are 1..=rows, in archive order).
    pub rows: u64,
    /// Per column: the database column keeps the storage class it is
    /// given (BLOB affinity), so equal values may still differ in class.
    keeps_class: Vec<bool>,
    /// The largest ids the rows refer to, noted as they are staged.
    pub largest: super::future_ids::LargestStaged,
}

/// The staged archive.
pub(super) struct Staged {
    /// The tenant's tables, in manifest order, which is dependency order.
    pub tables: Vec<StagedTable>,
    /// The shared reference rows' tables (`scope: "shared"`).
    pub shared: Vec<StagedTable>,
}

/// What the parsing side hands the SQLite side while staging.
enum ToWriter {
    /// A new table: create it, then insert the rows that follow into it,
    /// `width` values a row.
    Table {
        create: String,
        insert: String,
        width: usize,
    },
    /// Rows of the current table, flat: row `i` is
    /// `values[i * width..(i + 1) * width]` (one allocation a batch, not
    /// one a row).
    Rows(Vec<SqlValue>),
    /// Every row was parsed and checked: commit.
    Done,
}

/// Rows per message: large enough that the channel costs nothing per row.
const BATCH_ROWS: usize = 512;

/// The temp schema's page cache while staging and planning, in KiB.
/// SQLite's default (2 MiB) makes the staged tables spill to the temp
/// file page by page as they are written and read back by the plan; a
/// larger cache keeps most of them in memory, filled only as far as the
/// tenant needs.
const TEMP_CACHE_KIB: i64 = 24 << 10;

impl Staged {
    /// Parse, check and stage the whole dump (`restore: false` stages
    /// nothing: a purge alone needs no rows). Two threads: this one parses
    /// and checks (and talks to `progress`, which must stay on the calling
    /// thread), a second one owns the connection meanwhile and writes the
    /// rows. The connection is handed back either way.
    pub fn load<R: std::io::Read>(
        conn: Connection,
        ctx: &Context<'_>,
        dump: DumpReader<R>,
        progress: &mut dyn Progress,
    ) -> (Connection, Result<Staged>) {
        let mut staged = Staged {
            tables: Vec::new(),
            shared: Vec::new(),
        };
        if !ctx.options.restore {
            return (conn, Ok(staged));
        }
        let (sender, receiver) = std::sync::mpsc::sync_channel::<ToWriter>(8);
        let busy = crate::db::BusyPolicy::current();
        std::thread::scope(|scope| {
            let writer = std::thread::Builder::new()
                .name("tenant_kit-stage".into())
                .spawn_scoped(scope, move || {
                    let _busy = busy.map(crate::db::BusyPolicy::enter);
                    let written = write_staged_rows(&conn, receiver);
                    (conn, written)
                })
                .expect("spawning the staging thread");
            let parsed = staged.parse_rows(ctx, dump, progress, &sender);
            drop(sender);
            let (conn, written) = match writer.join() {
                Ok(joined) => joined,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            // A parse error explains a writer that stopped because the
            // channel closed early; otherwise the writer's own error counts.
            let result = parsed
                .and(written)
                .and_then(|()| staged.index_blob_keys(&conn, ctx))
                .map(|()| {
                    let (shared, tables) = staged.tables.into_iter().partition(|t| t.shared);
                    Staged { tables, shared }
                });
            (conn, result)
        })
    }

    fn parse_rows<R: std::io::Read>(
        &mut self,
        ctx: &Context<'_>,
        dump: DumpReader<R>,
        progress: &mut dyn Progress,
        writer: &std::sync::mpsc::SyncSender<ToWriter>,
    ) -> Result<()> {
        // A closed channel means the writer failed: its error is reported.
        let send = |message| writer.send(message).map_err(|_| gone());
        let tenant = Remap::new(&ctx.source, ctx.target());
        let mut batch: Vec<SqlValue> = Vec::new();
        check_dump(ctx.manifest, dump, progress, |entry, line| {
            if self.tables.last().is_none_or(|t| t.name != entry.name) {
                if !batch.is_empty() {
                    send(ToWriter::Rows(std::mem::take(&mut batch)))?;
                }
                let table = StagedTable::describe(ctx, entry, self.tables.len());
                send(ToWriter::Table {
                    create: table.create_sql(),
                    insert: table.insert_sql(),
                    width: table.columns.len(),
                })?;
                self.tables.push(table);
            }
            let table = self.tables.last_mut().expect("just pushed");
            table.check_references(ctx, &line)?;
            if batch.is_empty() {
                batch.reserve_exact(BATCH_ROWS * table.columns.len().max(1));
            }
            let start = batch.len();
            table.push_values(&tenant, line, &mut batch)?;
            table.largest.observe(&batch[start..]);
            table.rows += 1;
            if batch.len() >= BATCH_ROWS * table.columns.len().max(1) {
                send(ToWriter::Rows(std::mem::take(&mut batch)))?;
            }
            Ok(())
        })?;
        if !batch.is_empty() {
            send(ToWriter::Rows(batch))?;
        }
        send(ToWriter::Done)
    }
}

fn gone() -> Error {
    Error::internal("the staging writer stopped")
}

/// The archive's tenant and the target tenant, as values: computed once,
/// compared with every row's tenant references.
struct Remap {
    source_id: crate::TenantId,
    source: SqlValue,
    target: SqlValue,
}

impl Remap {
    fn new(source: &crate::TenantId, target: SqlValue) -> Remap {
        Remap {
            source_id: source.clone(),
            source: source.to_sql_value(),
            target,
        }
    }
}

impl Staged {
    /// The staged blob table and the position of its `key` column.
    fn blob_keys(&self) -> Option<(&StagedTable, usize)> {
        let table = self.tables.iter().find(|t| is_blob_table(&t.name))?;
        let key = table.columns.iter().position(|c| c == "key")?;
        Some((table, key))
    }

    /// The blob files' keys are looked up among the staged blob rows (see
    /// [`Staged::blob_row_in_place_sql`]): index them now, before the write
    /// lock, when the archive has files at all. The rows stay in SQLite's
    /// temp storage, so memory does not grow with their number.
    pub(super) fn index_blob_keys(&self, conn: &Connection, ctx: &Context<'_>) -> Result<()> {
        match self.blob_keys() {
            Some((table, key)) if !ctx.manifest.blobs.is_empty() => {
                let stage = table.stage.name();
                conn.execute_batch(&format!(
                    "CREATE INDEX IF NOT EXISTS temp.{stage}_key ON {stage}(c{key});"
                ))?;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// SQL with one parameter, a blob key: whether the database's blob row
    /// with that key is the archive's row with that key (the same primary
    /// key, of whatever type). None when the archive has no blob rows.
    pub fn blob_row_in_place_sql(&self) -> Option<String> {
        let (table, key) = self.blob_keys()?;
        Some(format!(
            "SELECT EXISTS (SELECT 1 FROM {} AS s JOIN main.{} AS m ON {} WHERE s.c{key} = ?1 AND m.key = ?1)",
            table.stage,
            sql::ident(&table.name),
            table.identity("m", "s")
        ))
    }
}

/// The SQLite side of staging: one transaction of the temp schema alone,
/// so no lock on the app's database is taken meanwhile; committed only
/// after `Done`.
fn write_staged_rows(conn: &Connection, rows: std::sync::mpsc::Receiver<ToWriter>) -> Result<()> {
    conn.execute_batch(&format!(
        "PRAGMA temp.cache_size = -{TEMP_CACHE_KIB}; BEGIN"
    ))?;
    let written = (|| -> Result<bool> {
        let mut insert: Option<(rusqlite::Statement<'_>, usize)> = None;
        for message in rows {
            match message {
                ToWriter::Table {
                    create,
                    insert: sql,
                    width,
                } => {
                    conn.execute_batch(&create)?;
                    insert = Some((conn.prepare(&sql)?, width));
                }
                ToWriter::Rows(batch) => {
                    let (stmt, width) = insert
                        .as_mut()
                        .ok_or_else(|| Error::internal("rows before their table"))?;
                    insert_rows(stmt, *width, &batch).at("staging the archive's rows")?;
                }
                ToWriter::Done => return Ok(true),
            }
        }
        Ok(false)
    })();
    match written {
        Ok(true) => {
            conn.execute_batch("COMMIT")?;
            Ok(())
        }
        // The parser stopped early and says why.
        Ok(false) => {
            let _ = conn.execute_batch("ROLLBACK");
            Ok(())
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// One prepared INSERT, its positional parameters bound anew for every row.
fn insert_rows(
    stmt: &mut rusqlite::Statement<'_>,
    width: usize,
    batch: &[SqlValue],
) -> rusqlite::Result<()> {
    if width == 0 {
        return Ok(());
    }
    for row in batch.chunks_exact(width) {
        for (i, value) in row.iter().enumerate() {
            stmt.raw_bind_parameter(i + 1, value)?;
        }
        stmt.raw_execute()?;
    }
    Ok(())
}

impl StagedTable {
    fn describe(ctx: &Context<'_>, entry: &TableEntry, index: usize) -> StagedTable {
        let table = ctx.table(&entry.name);
        let columns = entry.columns.clone();
        let pos = |c: &str| columns.iter().position(|x| x == c);
        let pk_names = table.primary_key();
        let pk: Vec<usize> = pk_names.iter().filter_map(|c| pos(c)).collect();
        let has_pk = !pk_names.is_empty() && pk.len() == pk_names.len();
        let scoped = ctx
            .scope
            .table(&entry.name)
            .or_else(|| ctx.scope.shared.iter().find(|t| t.name == entry.name))
            .expect("checked by check_schema");
        let shared = matches!(scoped.membership, Membership::Shared { .. });
        let tenant_row = matches!(scoped.membership, Membership::TenantRow { .. });
        let derived = scoped.is_derived();
        let owner_type_columns = match &scoped.membership {
            Membership::Derived { owners, .. } => {
                let mut cols: Vec<String> = owners
                    .iter()
                    .filter_map(|r| r.polymorphic.as_ref().map(|(t, _)| t.clone()))
                    .collect();
                cols.sort();
                cols.dedup();
                cols
            }
            _ => Vec::new(),
        };

        let mut tenant_refs = Vec::new();
        if let Some(p) = pos(&ctx.options.tenant_column) {
            if !tenant_row && !shared {
                tenant_refs.push((p, None));
            }
        }
        if let Some(tt) = ctx.scope.tenant_table().filter(|_| !shared) {
            for r in ctx
                .scope
                .references
                .iter()
                .filter(|r| r.table == entry.name && r.parent == tt.name)
            {
                if let [col] = r.columns.as_slice() {
                    if let Some(p) = pos(col) {
                        let typed = match &r.polymorphic {
                            Some((type_col, class)) => match pos(type_col) {
                                Some(tp) => Some((tp, class.clone())),
                                None => continue,
                            },
                            None => None,
                        };
                        if !tenant_refs.iter().any(|(q, _)| *q == p) {
                            tenant_refs.push((p, typed));
                        }
                    }
                }
            }
        }

        let stage = sql::TempTable::stage(index);
        let largest = super::future_ids::LargestStaged::for_table(ctx, &entry.name, &columns);
        let keeps_class = columns
            .iter()
            .map(|c| table.column(c).is_some_and(|col| col.keeps_storage_class()))
            .collect();
        StagedTable {
            keeps_class,
            name: entry.name.clone(),
            stage,
            columns,
            pk: if has_pk { pk } else { Vec::new() },
            tenant_refs,
            tenant_row,
            derived,
            shared,
            owner_type_columns,
            rows: 0,
            largest,
        }
    }

    /// A table without column affinity: values keep their storage class.
    fn create_sql(&self) -> String {
        let columns = (0..self.columns.len())
            .map(|i| sql::Col::Staged(i).bare())
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "DROP TABLE IF EXISTS {stage}; CREATE TABLE {stage} ({columns});",
            stage = self.stage
        )
    }

    fn insert_sql(&self) -> String {
        let params = (1..=self.columns.len())
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!("INSERT INTO {} VALUES ({params})", self.stage)
    }

    pub fn has_pk(&self) -> bool {
        !self.pk.is_empty()
    }

    /// Append the row's values in column order to `out`, with the tenant
    /// remapped.
    fn push_values(&self, tenant: &Remap, line: RowLine, out: &mut Vec<SqlValue>) -> Result<()> {
        // check_dump let through only rows with the manifest's columns; in
        // the manifest's order (our backups) they are taken as they are.
        let in_order = line
            .row
            .0
            .iter()
            .map(|(c, _)| &**c)
            .eq(self.columns.iter().map(String::as_str));
        let start = out.len();
        if in_order {
            out.extend(line.row.0.into_iter().map(|(_, v)| v));
        } else {
            out.extend(
                self.columns
                    .iter()
                    .map(|c| line.row.get(c).cloned().unwrap_or(SqlValue::Null)),
            );
        }
        self.remap(tenant, &mut out[start..])
    }

    /// The archive's tenant becomes the target tenant in `values`.
    fn remap(&self, tenant: &Remap, values: &mut [SqlValue]) -> Result<()> {
        if self.tenant_row {
            // The archive's own tenant row becomes the target's.
            if let Some(&p) = self.pk.first() {
                if !tenant.source_id.matches(&values[p]) {
                    return Err(Error::archive(format!(
                        "{}: the tenant row has key {}, not the archive's tenant {}",
                        self.name,
                        values[p].describe(),
                        tenant.source_id
                    )));
                }
                values[p] = tenant.target.clone();
            }
        }
        for (p, typed) in &self.tenant_refs {
            let applies = match typed {
                Some((tp, class)) => values[*tp].as_text() == Some(class.as_str()),
                None => true,
            };
            if applies && values[*p] == tenant.source {
                values[*p] = tenant.target.clone();
            }
        }
        Ok(())
    }

    /// In tables whose rows belong to the tenant through a polymorphic
    /// reference (ActiveStorage attachments), the `*_type` value of that
    /// reference must name a table of this tenant's data; other type
    /// columns (settings' `target_type`, an audit's `user_type` naming
    /// users shared between tenants) are plain data. Blob rows must carry
    /// keys of ActiveStorage's alphabet.
    fn check_references(&self, ctx: &Context<'_>, line: &RowLine) -> Result<()> {
        for (column, value) in line.row.0.iter().filter(|_| self.derived) {
            let Some(stem) = column.strip_suffix("_type") else {
                continue;
            };
            if !self.columns.contains(&format!("{stem}_id")) {
                continue;
            }
            if let Some(class) = value.as_text() {
                let table = ctx.scope.table_for_class(class);
                // A class naming no table at all is refused in any type
                // column: nothing the backup side could have written.
                let named = ctx.schema.table_ci(&table).is_some();
                let owns = self.owner_type_columns.iter().any(|c| **c == **column);
                if (owns || !named) && ctx.scope.table(&table).is_none() {
                    return Err(Error::archive(format!(
                        "{}.{column} = {:?} maps to no table of this tenant's data",
                        self.name, class
                    )));
                }
            }
        }
        self.check_blob_key(line)
    }

    /// A blob row's key names a file in the storage root: only keys of
    /// ActiveStorage's alphabet (no `/`, no `..`) get that far.
    fn check_blob_key(&self, line: &RowLine) -> Result<()> {
        if is_blob_table(&self.name) {
            let key = line
                .row
                .get("key")
                .and_then(|v| v.as_text())
                .unwrap_or_default();
            archive::check_blob_key(key).map_err(|e| e.context(format!("{} row", self.name)))?;
        }
        Ok(())
    }

    /// SQL condition: the database row `m` of this table is the one staged
    /// row `s` stands for (same primary key; same values for tables
    /// without one). Comparisons take the database column's affinity, as
    /// a bound parameter would.
    pub fn identity(&self, m: &str, s: &str) -> String {
        let col = |i: usize| (sql::Col::Named(&self.columns[i]), sql::Col::Staged(i));
        if self.has_pk() {
            sql::key_match(m, s, self.pk.iter().map(|&i| col(i)), sql::Match::Equal)
        } else {
            sql::key_match(m, s, (0..self.columns.len()).map(col), sql::Match::Is)
        }
    }

    /// SQL expression: the database row `m` already holds every value of
    /// staged row `s`, with the same storage class (`1.0` is not `1`).
    /// Where the column has an affinity, `IS` converts the staged value as
    /// storing it would, so equality is enough; where it keeps classes as
    /// given, the classes are compared too.
    pub fn same_values(&self, m: &str, s: &str) -> String {
        sql::all_of(self.columns.iter().enumerate().map(|(i, c)| {
            let same = sql::key_match(
                m,
                s,
                [(sql::Col::Named(c), sql::Col::Staged(i))],
                sql::Match::Is,
            );
            if self.keeps_class[i] {
                let (mc, sc) = (sql::Col::Named(c).of(m), sql::Col::Staged(i).of(s));
                format!("{same} AND typeof({mc}) = typeof({sc})")
            } else {
                same
            }
        }))
    }

    /// Staged rows by stage rowid, for messages: `id=5` or `(a=1, b=2)`.
    pub fn describe_rows(&self, conn: &Connection, rowids: &[i64]) -> Result<Vec<String>> {
        let mut stmt = conn.prepare(&format!("SELECT * FROM {} WHERE rowid = ?1", self.stage))?;
        let mut out = Vec::with_capacity(rowids.len());
        for rowid in rowids {
            let values: Vec<SqlValue> = stmt.query_row([rowid], |r| {
                (0..self.columns.len())
                    .map(|i| Ok(SqlValue::from_ref(r.get_ref(i)?)))
                    .collect()
            })?;
            out.push(self.describe_key(&values));
        }
        Ok(out)
    }

    fn describe_key(&self, values: &[SqlValue]) -> String {
        if self.pk.is_empty() {
            let all: Vec<String> = self
                .columns
                .iter()
                .zip(values)
                .map(|(c, v)| format!("{c}={}", v.describe()))
                .collect();
            format!("({})", all.join(", "))
        } else {
            self.pk
                .iter()
                .map(|&i| format!("{}={}", self.columns[i], values[i].describe()))
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

#[cfg(test)]
impl StagedTable {
    /// A staged table for unit tests: stage `index`, the first column its
    /// primary key, no tenant references, no rows yet.
    pub(in crate::restore) fn plain(name: &str, index: usize, columns: &[&str]) -> StagedTable {
        StagedTable {
            name: name.into(),
            stage: sql::TempTable::stage(index),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            pk: vec![0],
            tenant_refs: Vec::new(),
            tenant_row: false,
            derived: false,
            shared: false,
            owner_type_columns: Vec::new(),
            rows: 0,
            keeps_class: vec![false; columns.len()],
            largest: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::dump::{Name, Row};
    use crate::TenantId;

    fn table(name: &str, columns: &[&str]) -> StagedTable {
        StagedTable::plain(name, 0, columns)
    }

    fn line(table: &str, cells: Vec<(&str, SqlValue)>) -> RowLine {
        RowLine {
            table: Name::from(table),
            row: Row(cells.into_iter().map(|(c, v)| (Name::from(c), v)).collect()),
        }
    }

    fn text(s: &str) -> SqlValue {
        SqlValue::Text(s.as_bytes().to_vec())
    }

    /// Archive tenant 1 restored as tenant 7.
    fn one_to_seven() -> Remap {
        Remap::new(&TenantId::Integer(1), SqlValue::Integer(7))
    }

    #[test]
    fn values_follow_the_manifest_columns_whatever_the_line_order() {
        let mut tasks = table("tasks", &["id", "tenant_id", "title"]);
        tasks.tenant_refs = vec![(1, None)];
        let mut out = Vec::new();
        let row = vec![
            ("title", text("a")),
            ("tenant_id", SqlValue::Integer(1)),
            ("id", SqlValue::Integer(5)),
        ];
        tasks
            .push_values(&one_to_seven(), line("tasks", row), &mut out)
            .unwrap();
        let in_order = vec![
            ("id", SqlValue::Integer(6)),
            ("tenant_id", SqlValue::Integer(1)),
            ("title", text("b")),
        ];
        tasks
            .push_values(&one_to_seven(), line("tasks", in_order), &mut out)
            .unwrap();
        assert_eq!(
            out,
            vec![
                SqlValue::Integer(5),
                SqlValue::Integer(7),
                text("a"),
                SqlValue::Integer(6),
                SqlValue::Integer(7),
                text("b"),
            ]
        );
    }

    #[test]
    fn a_polymorphic_reference_is_remapped_only_when_it_names_the_tenant_class() {
        let mut notes = table("notes", &["id", "owner_type", "owner_id"]);
        notes.tenant_refs = vec![(2, Some((1, "Account".into())))];
        let mut out = Vec::new();
        for class in ["Account", "User"] {
            let row = vec![
                ("id", SqlValue::Integer(1)),
                ("owner_type", text(class)),
                ("owner_id", SqlValue::Integer(1)),
            ];
            notes
                .push_values(&one_to_seven(), line("notes", row), &mut out)
                .unwrap();
        }
        assert_eq!(out[2], SqlValue::Integer(7), "Account 1 is the tenant");
        assert_eq!(out[5], SqlValue::Integer(1), "User 1 is another row");
    }

    #[test]
    fn a_tenant_row_of_another_tenant_is_refused() {
        let mut accounts = table("accounts", &["id", "name"]);
        accounts.tenant_row = true;
        let mut out = Vec::new();
        let own = vec![("id", SqlValue::Integer(1)), ("name", text("a"))];
        accounts
            .push_values(&one_to_seven(), line("accounts", own), &mut out)
            .unwrap();
        assert_eq!(out[0], SqlValue::Integer(7));
        let other = vec![("id", SqlValue::Integer(2)), ("name", text("b"))];
        let err = accounts
            .push_values(&one_to_seven(), line("accounts", other), &mut out)
            .unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Archive);
        assert!(
            err.to_string()
                .contains("accounts: the tenant row has key 2, not the archive's tenant 1"),
            "{err}"
        );
    }

    #[test]
    fn a_blob_key_outside_activestorage_alphabet_is_refused() {
        let blobs = table("active_storage_blobs", &["id", "key"]);
        let good = line(
            "active_storage_blobs",
            vec![("id", SqlValue::Integer(1)), ("key", text("abc123"))],
        );
        blobs.check_blob_key(&good).unwrap();
        let bad = line(
            "active_storage_blobs",
            vec![("id", SqlValue::Integer(1)), ("key", text("../etc/passwd"))],
        );
        let err = blobs.check_blob_key(&bad).unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Archive);
        assert!(
            err.to_string().contains("active_storage_blobs row"),
            "{err}"
        );
    }

    #[test]
    fn staged_columns_keep_every_storage_class() {
        let conn = Connection::open_in_memory().unwrap();
        let t = table("t", &["a", "b", "c", "d", "e"]);
        conn.execute_batch(&t.create_sql()).unwrap();
        let mut stmt = conn.prepare(&t.insert_sql()).unwrap();
        let row = [
            SqlValue::Integer(1),
            SqlValue::Real(1.0),
            text("1"),
            SqlValue::Blob(vec![1]),
            SqlValue::Null,
        ];
        let rows: Vec<SqlValue> = row.iter().chain(row.iter()).cloned().collect();
        insert_rows(&mut stmt, 5, &rows).unwrap();
        drop(stmt);
        let sql = format!(
            "SELECT typeof(c0), typeof(c1), typeof(c2), typeof(c3), typeof(c4) FROM {}",
            t.stage
        );
        let mut stmt = conn.prepare(&sql).unwrap();
        let classes: Vec<[String; 5]> = stmt
            .query_map([], |r| {
                Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?])
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let expected = ["integer", "real", "text", "blob", "null"].map(String::from);
        assert_eq!(classes, vec![expected.clone(), expected]);
    }
}
