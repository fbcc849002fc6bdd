//! Restore of one tenant from an archive: verify everything first, plan
//! without the write lock, then purge and restore in one `BEGIN IMMEDIATE`
//! transaction. Never touches another tenant's rows, never `INSERT OR
//! REPLACE`; a conflict, a failure or a cancel rolls back and removes every
//! blob file this run wrote.

use crate::archive::dump::RowLine;
use crate::archive::read::{extract, Extracted};
use crate::archive::{self, ManifestError, TableEntry};
use crate::db;
use crate::error::{Error, Result, ResultExt};
use crate::progress::{report_failure, Event, Progress, Throttle};
use crate::schema::{quote, Schema, Table};
use crate::scope::{
    is_blob_table, MemberSets, Membership, RelationHint, ScopeOptions, Side, TenantScope,
};
use crate::value::SqlValue;
use crate::verify::{check_dump, limits_with};
use crate::TenantId;
use rusqlite::{Connection, OptionalExtension, ToSql};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreOptions {
    pub database: PathBuf,
    pub archive: PathBuf,
    pub tenant_id: TenantId,
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
    #[serde(default = "crate::db::default_busy_timeout_ms")]
    pub busy_timeout_ms: u64,
    /// Where the archive is unpacked while checking (default: system temp).
    #[serde(default)]
    pub tmp_dir: Option<PathBuf>,
    #[serde(default)]
    pub max_line_bytes: Option<usize>,
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
    /// Keys that collided with another blob and were given a fresh key.
    pub renamed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub dry_run: bool,
    pub source_tenant_id: TenantId,
    pub tenant_id: TenantId,
    pub planned: BTreeMap<String, PlannedCounts>,
    pub restored: BTreeMap<String, u64>,
    pub purged: BTreeMap<String, u64>,
    pub conflicts: Vec<Conflict>,
    pub conflict_count: u64,
    pub blobs: BlobCounts,
    /// Old blob key → new key, for keys that were already taken.
    pub renamed_keys: BTreeMap<String, String>,
    pub tenant_row_created: bool,
    /// How long the write lock was held (0 for a dry run).
    pub lock_ms: u64,
    pub duration_ms: u64,
    /// Problems recorded by the backup (blob files that were missing).
    pub errors: Vec<ManifestError>,
}

pub fn restore(options: &RestoreOptions, progress: &mut dyn Progress) -> Result<RestoreReport> {
    let result = run(options, progress);
    if let Err(e) = &result {
        report_failure(progress, e);
    }
    result
}

fn run(options: &RestoreOptions, progress: &mut dyn Progress) -> Result<RestoreReport> {
    let started = Instant::now();
    check_options(options)?;
    progress.emit(
        Event::new("start")
            .with("operation", "restore")
            .with("archive", options.archive.display().to_string())
            .with(
                "tenant_id",
                serde_json::to_value(&options.tenant_id).unwrap_or_default(),
            )
            .with("dry_run", options.dry_run)
            .with("purge", options.purge)
            .with("restore", options.restore)
            .with("remap", options.remap),
    )?;

    // ---- 1. verify: unpack to a private temp dir, every hash checked ----
    let limits = limits_with(options.max_line_bytes);
    let temp_parent = options.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let extracted = extract(&options.archive, &temp_parent, limits, progress)?;
    let manifest = &extracted.manifest;
    let source = manifest.tenant.id.clone();
    if manifest.tenant.column != options.tenant_column {
        return Err(Error::argument(format!(
            "the archive's tenant column is {:?}, not {:?}: pass tenant_column: {:?}",
            manifest.tenant.column, options.tenant_column, manifest.tenant.column
        )));
    }
    if source != options.tenant_id && !options.remap {
        return Err(Error::argument(format!(
            "the archive holds tenant {source}, not {}: pass remap: true to restore it into tenant {}",
            options.tenant_id, options.tenant_id
        )));
    }

    // ---- 2. schema: the archive must fit this database ----
    let conn = if options.dry_run {
        db::open_read_only(&options.database, options.busy_timeout_ms)?
    } else {
        db::open_read_write(&options.database, options.busy_timeout_ms)?
    };
    let schema = Schema::read(&conn)?;
    let known_types: Vec<(String, String, String)> = manifest
        .tables
        .iter()
        .flat_map(|t| {
            t.polymorphic.iter().flat_map(move |(col, classes)| {
                classes
                    .iter()
                    .map(move |class| (t.name.clone(), col.clone(), class.clone()))
            })
        })
        .collect();
    let scope = TenantScope::discover(&conn, &schema, &scope_options(options), &known_types)?;
    check_schema(&extracted, &schema, &scope)?;
    let ctx = Context {
        options,
        schema: &schema,
        scope: &scope,
        extracted: &extracted,
        source,
    };

    // ---- 3. plan: read-only, outside the write lock ----
    conn.execute_batch("BEGIN")?;
    let plan = plan(&conn, &ctx, progress);
    let _ = conn.execute_batch("ROLLBACK");
    let plan = plan?;
    progress.emit(
        Event::new("plan")
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
        tenant_id: options.tenant_id.clone(),
        planned: plan.counts.clone(),
        restored: BTreeMap::new(),
        purged: BTreeMap::new(),
        conflicts: plan.conflicts.clone(),
        conflict_count: plan.conflict_count,
        blobs: BlobCounts {
            total: manifest.blobs.len() as u64,
            ..Default::default()
        },
        renamed_keys: BTreeMap::new(),
        tenant_row_created: false,
        lock_ms: 0,
        duration_ms: 0,
        errors: manifest.errors.clone(),
    };
    if options.dry_run {
        report.duration_ms = started.elapsed().as_millis() as u64;
        progress.emit(
            Event::new("done")
                .with("dry_run", true)
                .with("conflicts", plan.conflict_count),
        )?;
        return Ok(report);
    }
    if plan.conflict_count > 0 {
        return Err(conflict_error(&plan.conflicts, plan.conflict_count));
    }

    // ---- 4. apply: one write transaction ----
    let mut files = WrittenFiles::default();
    let lock_started = Instant::now();
    let applied = apply(
        &conn,
        &ctx,
        &plan.blob_ids,
        &mut report,
        &mut files,
        progress,
    );
    let applied = applied.and_then(|purged_keys| {
        progress.emit(Event::new("commit"))?;
        conn.execute_batch("COMMIT")
            .map_err(|e| Error::database(format!("commit failed: {e}")))?;
        Ok(purged_keys)
    });
    report.lock_ms = lock_started.elapsed().as_millis() as u64;
    let purged_keys = match applied {
        Ok(keys) => keys,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            files.remove_all();
            return Err(e);
        }
    };

    // ---- 5. after commit: files of purged blobs nobody uses any more ----
    if let Some(root) = &options.storage_root {
        for key in purged_keys {
            if archive::check_blob_key(&key).is_ok()
                && std::fs::remove_file(archive::disk_path(root, &key)).is_ok()
            {
                report.blobs.removed += 1;
            }
        }
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    progress.emit(
        Event::new("done")
            .with("restored", report.restored.values().sum::<u64>())
            .with("purged", report.purged.values().sum::<u64>())
            .with("blobs", report.blobs.written + report.blobs.reused)
            .with("lock_ms", report.lock_ms)
            .with("duration_ms", report.duration_ms),
    )?;
    Ok(report)
}

fn scope_options(options: &RestoreOptions) -> ScopeOptions {
    ScopeOptions {
        tenant_column: options.tenant_column.clone(),
        tenant_table: options.tenant_table.clone(),
        relations: options.relations.clone(),
        polymorphic: options.polymorphic.clone(),
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
    if let TenantId::Text(s) = &options.tenant_id {
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
    extracted: &'a Extracted,
    source: TenantId,
}

impl Context<'_> {
    fn target(&self) -> SqlValue {
        self.options.tenant_id.to_sql_value()
    }
    fn table(&self, name: &str) -> &Table {
        self.schema.table(name).expect("checked by check_schema")
    }
}

/// Every difference between the archive and the database, in one error.
fn check_schema(extracted: &Extracted, schema: &Schema, scope: &TenantScope) -> Result<()> {
    let m = &extracted.manifest;
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
        if scope.table(&entry.name).is_none() {
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
        "the restore would touch rows of another tenant: {}{more}; nothing was changed",
        listed.join(", ")
    ))
}

/// Both membership views of the database: the target tenant's rows and
/// every other tenant's. A row in neither (an orphaned blob) is nobody's.
struct Sets<'a> {
    ours: MemberSets<'a>,
    others: MemberSets<'a>,
}

impl<'a> Sets<'a> {
    fn materialize(conn: &Connection, ctx: &'a Context<'a>) -> Result<Sets<'a>> {
        let tenant = &ctx.options.tenant_id;
        Ok(Sets {
            ours: MemberSets::materialize(conn, ctx.scope, ctx.schema, tenant, Side::Ours)?,
            others: MemberSets::materialize(conn, ctx.scope, ctx.schema, tenant, Side::Others)?,
        })
    }
}

/// A row of the archive ready for SQL: values in manifest column order with
/// the tenant remapped and blob keys renamed.
struct Prepared {
    values: Vec<SqlValue>,
}

/// Per-table statements and column positions, built once per table.
struct TableOps {
    name: String,
    columns: Vec<String>,
    /// Positions of the primary key columns within `columns`.
    pk: Vec<usize>,
    /// Columns that point at the tenant (tenant column, references to the
    /// tenants table, polymorphic references to the tenant class):
    /// (position, optional (type column position, class)).
    tenant_refs: Vec<(usize, Option<(usize, String)>)>,
    tenant_row: bool,
    /// `SELECT <is member>` of the database row with this row's identity
    /// (its primary key, or all its values for tables without one).
    lookup_sql: String,
    /// Insert, or update an existing member row (never another tenant's).
    write_sql: String,
    /// Plain insert (the tenants row: created when missing, never updated).
    insert_sql: String,
    has_pk: bool,
    derived: bool,
}

impl TableOps {
    fn new(ctx: &Context<'_>, sets: &Sets<'_>, entry: &TableEntry) -> Result<TableOps> {
        let table = ctx.table(&entry.name);
        let columns = entry.columns.clone();
        let pos = |c: &str| columns.iter().position(|x| x == c);
        let pk_names = table.primary_key();
        let pk: Vec<usize> = pk_names.iter().filter_map(|c| pos(c)).collect();
        let has_pk = !pk_names.is_empty() && pk.len() == pk_names.len();
        let scoped = ctx
            .scope
            .table(&entry.name)
            .expect("checked by check_schema");
        let tenant_row = matches!(scoped.membership, Membership::TenantRow { .. });
        let derived = matches!(scoped.membership, Membership::Derived { .. });

        let mut tenant_refs = Vec::new();
        if let Some(p) = pos(&ctx.options.tenant_column) {
            if !tenant_row {
                tenant_refs.push((p, None));
            }
        }
        if let Some(tt) = ctx.scope.tenant_table() {
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

        let qt = quote(&entry.name);
        let col_list = columns
            .iter()
            .map(|c| quote(c))
            .collect::<Vec<_>>()
            .join(", ");
        let params = (0..columns.len())
            .map(|i| format!("?{}", i + 2))
            .collect::<Vec<_>>()
            .join(", ");
        // Evaluated for one row at a time: probes, not IN lists.
        let ours = sets.ours.member_probe(&entry.name, &qt)?;
        let others = sets.others.member_probe(&entry.name, &qt)?;
        let insert_sql = format!("INSERT INTO {qt} ({col_list}) VALUES ({params})");
        let (lookup_sql, write_sql) = if has_pk {
            let key_match = pk
                .iter()
                .map(|&i| format!("{qt}.{} = ?{}", quote(&columns[i]), i + 2))
                .collect::<Vec<_>>()
                .join(" AND ");
            let updates: Vec<String> = columns
                .iter()
                .enumerate()
                .filter(|(i, _)| !pk.contains(i))
                .map(|(_, c)| format!("{} = excluded.{}", quote(c), quote(c)))
                .collect();
            let conflict_target = pk_names
                .iter()
                .map(|c| quote(c))
                .collect::<Vec<_>>()
                .join(", ");
            let on_conflict = if updates.is_empty() {
                // Key-only table: an existing member row is already right;
                // touch it so changes() tells member from stranger.
                let first = quote(&columns[pk[0]]);
                format!("DO UPDATE SET {first} = excluded.{first} WHERE NOT ({others})")
            } else {
                format!("DO UPDATE SET {} WHERE NOT ({others})", updates.join(", "))
            };
            (
                format!("SELECT ({ours}), ({others}) FROM {qt} WHERE {key_match}"),
                format!("{insert_sql} ON CONFLICT({conflict_target}) {on_conflict}"),
            )
        } else {
            // No primary key (join tables): a row is identified by all of
            // its values; an identical row is left alone, never duplicated.
            let same = columns
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{qt}.{} IS ?{}", quote(c), i + 2))
                .collect::<Vec<_>>()
                .join(" AND ");
            (
                format!("SELECT ({ours}), ({others}) FROM {qt} WHERE {same} LIMIT 1"),
                format!("INSERT INTO {qt} ({col_list}) SELECT {params} WHERE NOT EXISTS (SELECT 1 FROM {qt} WHERE {same})"),
            )
        };
        Ok(TableOps {
            name: entry.name.clone(),
            columns,
            pk: if has_pk { pk } else { Vec::new() },
            tenant_refs,
            tenant_row,
            lookup_sql,
            write_sql,
            insert_sql,
            has_pk,
            derived,
        })
    }

    /// The database's row with this identity: absent (None), or whether it
    /// is ours and whether it is another tenant's.
    fn lookup(&self, conn: &Connection, params: &[&dyn ToSql]) -> Result<Option<Found>> {
        let mut stmt = conn.prepare_cached(&self.lookup_sql)?;
        // Statements number parameters ?1 (tenant), ?2… (columns); SQLite
        // counts up to the highest one used, so bind exactly that many.
        let used = stmt.parameter_count().min(params.len());
        Ok(stmt
            .query_row(&params[..used], |r| {
                Ok(Found {
                    ours: r.get::<_, Option<bool>>(0)?.unwrap_or(false),
                    others: r.get::<_, Option<bool>>(1)?.unwrap_or(false),
                })
            })
            .optional()?)
    }

    fn prepare(
        &self,
        ctx: &Context<'_>,
        line: &RowLine,
        renamed: &BTreeMap<String, String>,
    ) -> Result<Prepared> {
        let mut values: Vec<SqlValue> = self
            .columns
            .iter()
            .map(|c| line.row.get(c).cloned().unwrap_or(SqlValue::Null))
            .collect();
        let source = ctx.source.to_sql_value();
        let target = ctx.target();
        if self.tenant_row {
            // The archive's own tenant row becomes the target's.
            if let Some(&p) = self.pk.first() {
                if !ctx.source.matches(&values[p]) {
                    return Err(Error::archive(format!(
                        "{}: the tenant row has key {}, not the archive's tenant {}",
                        self.name,
                        values[p].describe(),
                        ctx.source
                    )));
                }
                values[p] = target.clone();
            }
        }
        for (p, typed) in &self.tenant_refs {
            let applies = match typed {
                Some((tp, class)) => values[*tp].as_text() == Some(class.as_str()),
                None => true,
            };
            if applies && values[*p] == source {
                values[*p] = target.clone();
            }
        }
        if is_blob_table(&self.name) {
            if let Some(p) = self.columns.iter().position(|c| c == "key") {
                if let Some(new_key) = values[p].as_text().and_then(|k| renamed.get(k)) {
                    values[p] = SqlValue::Text(new_key.clone().into_bytes());
                }
            }
        }
        Ok(Prepared { values })
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

#[derive(Debug, Clone, Copy)]
struct Found {
    ours: bool,
    others: bool,
}

/// What the restore will do with one archive row.
enum Outcome {
    Insert,
    Update,
    Unchanged,
    Conflict,
}

fn outcome(ops: &TableOps, found: Option<Found>, purge: bool) -> Outcome {
    match found {
        None => Outcome::Insert,
        // The tenants row is created when missing and never overwritten.
        Some(_) if ops.tenant_row => Outcome::Unchanged,
        Some(Found { others: true, .. }) => Outcome::Conflict,
        // Our row: purged first and inserted again, or updated.
        Some(Found { ours: true, .. }) if purge => Outcome::Insert,
        // Ours, or nobody's (adopted): updated in place.
        Some(_) if ops.has_pk => Outcome::Update,
        Some(_) => Outcome::Unchanged,
    }
}

fn bind_all<'v>(target: &'v SqlValue, values: &'v [SqlValue]) -> Vec<&'v dyn ToSql> {
    let mut params: Vec<&dyn ToSql> = Vec::with_capacity(values.len() + 1);
    params.push(target);
    params.extend(values.iter().map(|v| v as &dyn ToSql));
    params
}

struct Plan {
    counts: BTreeMap<String, PlannedCounts>,
    conflicts: Vec<Conflict>,
    conflict_count: u64,
    /// Blob key → id of the archive's blob row with that key.
    blob_ids: BTreeMap<String, Option<i64>>,
}

const MAX_LISTED_CONFLICTS: usize = 1000;

/// Read-only pass: what would happen to each row, and which would conflict.
fn plan(conn: &Connection, ctx: &Context<'_>, progress: &mut dyn Progress) -> Result<Plan> {
    let sets = Sets::materialize(conn, ctx)?;
    let target = ctx.target();
    let mut counts: BTreeMap<String, PlannedCounts> = BTreeMap::new();
    if ctx.options.purge {
        for t in &ctx.scope.tables {
            if matches!(t.membership, Membership::TenantRow { .. }) {
                continue;
            }
            let sql = format!(
                "SELECT count(*) FROM {} AS a WHERE {}",
                quote(&t.name),
                sets.ours.member_predicate(&t.name, "a")?
            );
            let mut stmt = conn.prepare(&sql)?;
            let params = crate::scope::tenant_params(&stmt, &target);
            let n: i64 = stmt.query_row(&*params, |r| r.get(0))?;
            if n > 0 {
                counts.entry(t.name.clone()).or_default().purge = n as u64;
            }
        }
    }
    let mut conflicts = Vec::new();
    let mut conflict_count = 0u64;
    let mut blob_ids = BTreeMap::new();
    if ctx.options.restore {
        let mut ops: Option<TableOps> = None;
        let no_renames = BTreeMap::new();
        check_dump(
            ctx.extracted,
            limits_with(ctx.options.max_line_bytes),
            progress,
            |entry, line| {
                if ops.as_ref().map(|o| o.name != entry.name).unwrap_or(true) {
                    ops = Some(TableOps::new(ctx, &sets, entry)?);
                }
                let ops = ops.as_ref().expect("just set");
                check_row_references(ctx, ops, line)?;
                let row = ops.prepare(ctx, line, &no_renames)?;
                if is_blob_table(&entry.name) {
                    if let Some(key) = line.row.get("key").and_then(|v| v.as_text()) {
                        let id = match line.row.get("id") {
                            Some(SqlValue::Integer(i)) => Some(*i),
                            _ => None,
                        };
                        blob_ids.insert(key.to_string(), id);
                    }
                }
                let c = counts.entry(entry.name.clone()).or_default();
                let found = ops.lookup(conn, &bind_all(&target, &row.values))?;
                match outcome(ops, found, ctx.options.purge) {
                    Outcome::Insert => c.insert += 1,
                    Outcome::Update => c.update += 1,
                    Outcome::Unchanged => c.unchanged += 1,
                    Outcome::Conflict => {
                        conflict_count += 1;
                        if conflicts.len() < MAX_LISTED_CONFLICTS {
                            conflicts.push(Conflict {
                                table: entry.name.clone(),
                                key: ops.describe_key(&row.values),
                                reason: "the key belongs to another tenant".into(),
                            });
                        }
                    }
                }
                Ok(())
            },
        )?;
    }
    Ok(Plan {
        counts,
        conflicts,
        conflict_count,
        blob_ids,
    })
}

/// In tables whose rows belong to the tenant through a polymorphic
/// reference (ActiveStorage attachments), the `*_type` value must name a
/// table of this tenant's data; elsewhere (settings' `target_type`) it is
/// plain data. Blob rows must carry keys of ActiveStorage's alphabet.
fn check_row_references(ctx: &Context<'_>, ops: &TableOps, line: &RowLine) -> Result<()> {
    for (column, value) in line.row.0.iter().filter(|_| ops.derived) {
        let Some(stem) = column.strip_suffix("_type") else {
            continue;
        };
        let id_col = format!("{stem}_id");
        if !ops.columns.contains(&id_col) {
            continue;
        }
        if let Some(class) = value.as_text() {
            let table = ctx.scope.table_for_class(class);
            if ctx.scope.table(&table).is_none() {
                return Err(Error::archive(format!(
                    "{}.{column} = {:?} maps to no table of this tenant's data",
                    ops.name, class
                )));
            }
        }
    }
    if is_blob_table(&ops.name) {
        let key = line
            .row
            .get("key")
            .and_then(|v| v.as_text())
            .unwrap_or_default();
        archive::check_blob_key(key).map_err(|e| e.context(format!("{} row", ops.name)))?;
    }
    Ok(())
}

/// Files and directories this run created in the storage root, removed
/// again if the transaction does not commit.
#[derive(Default)]
struct WrittenFiles {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl WrittenFiles {
    fn remove_all(&mut self) {
        for f in self.files.drain(..).rev() {
            let _ = std::fs::remove_file(f);
        }
        for d in self.dirs.drain(..).rev() {
            let _ = std::fs::remove_dir(d);
        }
    }

    /// Create the Disk service's `ab/cd/` folders, remembering new ones.
    fn make_dirs(&mut self, dir: &Path) -> Result<()> {
        let mut missing = Vec::new();
        let mut cur = dir.to_path_buf();
        while !cur.exists() {
            missing.push(cur.clone());
            if !cur.pop() {
                break;
            }
        }
        for d in missing.into_iter().rev() {
            std::fs::create_dir(&d).at(format!("creating {}", d.display()))?;
            self.dirs.push(d);
        }
        Ok(())
    }

    /// Copy a verified blob into place; never overwrite (exclusive create).
    fn write_blob(&mut self, source: &Path, dest: &Path) -> Result<()> {
        self.make_dirs(dest.parent().expect("disk paths have parents"))?;
        let mut input = std::fs::File::open(source).at("reading unpacked blob")?;
        let mut out = std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(dest)
            .at(format!("writing {}", dest.display()))?;
        self.files.push(dest.to_path_buf());
        std::io::copy(&mut input, &mut out).at(format!("writing {}", dest.display()))?;
        out.sync_all().at(format!("syncing {}", dest.display()))?;
        Ok(())
    }
}

fn file_sha256(path: &Path) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).ok()?;
    Some(archive::hex(&h.finalize()))
}

/// A fresh ActiveStorage-style key: 28 characters of base36.
fn fresh_blob_key(conn: &Connection, root: Option<&Path>) -> Result<String> {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    for _ in 0..100 {
        let mut bytes = [0u8; 28];
        getrandom(&mut bytes)?;
        let key: String = bytes
            .iter()
            .map(|b| ALPHABET[(*b as usize) % 36] as char)
            .collect();
        let taken: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM active_storage_blobs WHERE key = ?1)",
            [&key],
            |r| r.get(0),
        )?;
        let on_disk = root.is_some_and(|r| archive::disk_path(r, &key).exists());
        if !taken && !on_disk {
            return Ok(key);
        }
    }
    Err(Error::internal("could not find a free blob key"))
}

fn getrandom(buf: &mut [u8]) -> Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(|e| Error::io(format!("reading /dev/urandom: {e}")))
}

/// The write transaction. Returns the keys of purged blobs whose files are
/// to be removed once the transaction has committed.
fn apply(
    conn: &Connection,
    ctx: &Context<'_>,
    blob_rows: &BTreeMap<String, Option<i64>>,
    report: &mut RestoreReport,
    files: &mut WrittenFiles,
    progress: &mut dyn Progress,
) -> Result<Vec<String>> {
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| Error::database(format!("cannot take the write lock: {e}")))?;
    conn.execute_batch("PRAGMA defer_foreign_keys = ON")?;
    let sets = MemberSets::materialize(
        conn,
        ctx.scope,
        ctx.schema,
        &ctx.options.tenant_id,
        Side::Ours,
    )?;
    let target = ctx.target();
    let root = ctx.options.storage_root.as_deref();

    // Purge, children first.
    let mut purged_keys: BTreeSet<String> = BTreeSet::new();
    if ctx.options.purge {
        if let Some(blobs) = ctx.scope.tables.iter().find(|t| is_blob_table(&t.name)) {
            let sql = format!(
                "SELECT a.key FROM {} AS a WHERE {}",
                quote(&blobs.name),
                sets.member_predicate(&blobs.name, "a")?
            );
            let mut stmt = conn.prepare(&sql)?;
            let params = crate::scope::tenant_params(&stmt, &target);
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
            let qt = quote(&t.name);
            let sql = format!(
                "DELETE FROM {qt} WHERE {}",
                sets.member_predicate(&t.name, &qt)?
            );
            let mut stmt = conn.prepare(&sql)?;
            let params = crate::scope::tenant_params(&stmt, &target);
            let n = stmt.execute(&*params)? as u64;
            if n > 0 {
                report.purged.insert(t.name.clone(), n);
            }
            progress.emit(Event::table_progress(
                "purge_progress",
                t.name.as_str(),
                n,
                n,
            ))?;
        }
    }
    // Membership after the purge (what is left belongs to others); the
    // sets above are rebuilt under the same temp table names.
    let sets = Sets::materialize(conn, ctx)?;

    if ctx.options.restore {
        // Blob keys: keep them where possible, rename on collision.
        let mut renamed: BTreeMap<String, String> = BTreeMap::new();
        let manifest = &ctx.extracted.manifest;
        for blob in &manifest.blobs {
            progress.check_interrupt()?;
            let holder: Option<i64> = conn
                .query_row(
                    "SELECT id FROM active_storage_blobs WHERE key = ?1",
                    [&blob.key],
                    |r| r.get(0),
                )
                .optional()?;
            let ours = holder.is_some()
                && holder == blob_rows.get(&blob.key).copied().flatten()
                && !ctx.options.remap;
            let mut key = blob.key.clone();
            if holder.is_some() && !ours {
                key = fresh_blob_key(conn, root)?;
                renamed.insert(blob.key.clone(), key.clone());
            }
            if let Some(root) = root {
                let dest = archive::disk_path(root, &key);
                let source = &ctx.extracted.blobs[&blob.key];
                if dest.exists() {
                    if file_sha256(&dest).as_deref() == Some(blob.sha256.as_str()) {
                        report.blobs.reused += 1;
                        purged_keys.remove(&key);
                    } else {
                        let fresh = fresh_blob_key(conn, Some(root))?;
                        renamed.insert(blob.key.clone(), fresh.clone());
                        files.write_blob(source, &archive::disk_path(root, &fresh))?;
                        report.blobs.written += 1;
                    }
                } else {
                    files.write_blob(source, &dest)?;
                    report.blobs.written += 1;
                }
            }
        }
        report.blobs.renamed = renamed.len() as u64;
        progress.emit(
            Event::new("blobs")
                .with("written", report.blobs.written)
                .with("reused", report.blobs.reused)
                .with("renamed", report.blobs.renamed),
        )?;

        // Rows, parents first.
        let mut ops: Option<TableOps> = None;
        let mut throttle = Throttle::new(manifest.total_rows());
        let mut done = 0u64;
        let mut conflicts = Vec::new();
        let mut created_tenant_row = false;
        // Rows of derived tables, checked for membership once all are in.
        let mut derived_rows: Vec<(String, Vec<SqlValue>)> = Vec::new();
        check_dump(
            ctx.extracted,
            limits_with(ctx.options.max_line_bytes),
            &mut crate::progress::NoProgress,
            |entry, line| {
                if ops.as_ref().map(|o| o.name != entry.name).unwrap_or(true) {
                    if let Some(prev) = &ops {
                        table_restored(progress, report, &prev.name)?;
                    }
                    ops = Some(TableOps::new(ctx, &sets, entry)?);
                }
                let ops = ops.as_ref().expect("just set");
                let row = ops.prepare(ctx, line, &renamed)?;
                let params = bind_all(&target, &row.values);
                if ops.tenant_row {
                    // Created when missing, never overwritten.
                    if ops.lookup(conn, &params)?.is_none() {
                        conn.prepare_cached(&ops.insert_sql)?.execute(&*params)?;
                        created_tenant_row = true;
                        *report.restored.entry(entry.name.clone()).or_default() += 1;
                    }
                    return Ok(());
                }
                let mut write = conn.prepare_cached(&ops.write_sql)?;
                let changed = write.execute(&*params).map_err(|e| {
                    Error::database(format!(
                        "{} {}: {e}",
                        ops.name,
                        ops.describe_key(&row.values)
                    ))
                })?;
                if ops.derived {
                    derived_rows.push((ops.name.clone(), row.values.clone()));
                }
                if changed == 0 && ops.has_pk {
                    conflicts.push(Conflict {
                        table: ops.name.clone(),
                        key: ops.describe_key(&row.values),
                        reason: "the key belongs to another tenant".into(),
                    });
                    return Err(conflict_error(&conflicts, conflicts.len() as u64));
                }
                *report.restored.entry(entry.name.clone()).or_default() += changed as u64;
                done += 1;
                if done % 1024 == 0 {
                    progress.check_interrupt()?;
                }
                if throttle.due(done) {
                    progress.emit(
                        Event::new("restore_progress")
                            .with("table", entry.name.as_str())
                            .with(
                                "processed",
                                report.restored.get(&entry.name).copied().unwrap_or(0),
                            )
                            .with("total", entry.rows),
                    )?;
                }
                Ok(())
            },
        )?;
        if let Some(prev) = &ops {
            table_restored(progress, report, &prev.name)?;
        }
        report.tenant_row_created = created_tenant_row;
        report.renamed_keys = renamed;
        check_restored_membership(conn, ctx, &derived_rows)?;
    }

    let violations = foreign_key_violations(conn, ctx)?;
    if !violations.is_empty() {
        return Err(Error::integrity(format!(
            "the restored rows break foreign keys: {}; nothing was changed",
            violations.join(", ")
        )));
    }
    Ok(purged_keys.into_iter().collect())
}

/// The last `restore_progress` event of a table: all of its rows are in.
fn table_restored(progress: &mut dyn Progress, report: &RestoreReport, table: &str) -> Result<()> {
    let n = report.restored.get(table).copied().unwrap_or(0);
    progress.emit(Event::table_progress("restore_progress", table, n, n))
}

/// After writing, every derived row we restored must belong to the tenant
/// through its parents: a join row pointing at another tenant's task, or an
/// attachment of another tenant's record, is a conflict.
fn check_restored_membership(
    conn: &Connection,
    ctx: &Context<'_>,
    rows: &[(String, Vec<SqlValue>)],
) -> Result<()> {
    let sets = Sets::materialize(conn, ctx)?;
    let target = ctx.target();
    let mut ops: Option<TableOps> = None;
    for (table, values) in rows {
        if ops.as_ref().map(|o| &o.name != table).unwrap_or(true) {
            let entry = ctx
                .extracted
                .manifest
                .table(table)
                .expect("restored tables are in the manifest");
            ops = Some(TableOps::new(ctx, &sets, entry)?);
        }
        let ops = ops.as_ref().expect("just set");
        let found = ops.lookup(conn, &bind_all(&target, values))?;
        if !found.is_some_and(|f| f.ours && !f.others) {
            return Err(Error::conflict(format!(
                "{} {} does not belong to tenant {} through its parents; nothing was changed",
                table,
                ops.describe_key(values),
                ctx.options.tenant_id
            )));
        }
    }
    Ok(())
}

fn foreign_key_violations(conn: &Connection, ctx: &Context<'_>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in &ctx.extracted.manifest.tables {
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
