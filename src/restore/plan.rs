//! The plan: what the restore will do to each staged row, computed set-wise
//! in one transaction (a read transaction before the write lock, or the
//! write transaction itself when the database changed in between).
//!
//! A staged row "hits" the database row with its identity (primary key, or
//! all values for tables without one). A hit on another tenant's row is a
//! conflict; on the target's own row an update (or, with purge, an insert
//! after the purge); on nobody's row (an orphaned blob) an adoption.
//! Membership of the hit rows of derived tables is computed only for those
//! rows ([`MemberSets::materialize_within`]), so planning costs what the
//! tenant costs, not what the database holds.
//!
//! Rows the write would not change are left alone: a hit on the target's
//! own row is "kept" (a purge does not delete it; the write updates it in
//! place, or skips it when all its values and storage classes already are
//! the archive's). The end state is the same as deleting and inserting
//! again, with a fraction of the page writes and of the lock time for the
//! usual restore (yesterday's backup over today's data), and without
//! firing `ON DELETE` actions on rows that stay. Tables where hits are not
//! one to one (identical duplicate rows), the tenants row and remapped
//! restores keep nothing.

use super::stage::{Staged, StagedTable};
use super::{Conflict, Context, PlannedCounts};
use crate::error::{Error, Result};
use crate::progress::{Event, Progress, Step};
use crate::sql;

use crate::scope::{
    is_blob_table, key_names, tenant_params, Candidates, MemberSets, Membership, Side, MOST_CLASSES,
};
use rusqlite::Connection;
use std::collections::{BTreeMap, BTreeSet};

pub(super) const MAX_LISTED_CONFLICTS: usize = 1000;

pub(super) struct Plan<'a> {
    /// The target tenant's member sets (whole tenant), for the purge.
    pub ours: MemberSets<'a>,
    /// Other tenants' member sets, exact for the rows the archive hits:
    /// the guard of the write.
    pub others: MemberSets<'a>,
    pub counts: BTreeMap<String, PlannedCounts>,
    pub conflicts: Vec<Conflict>,
    pub conflict_count: u64,
    /// Table → its hits table, for tables whose hits on the target's own
    /// rows are kept (see [`kept_row`], [`kept_as_is`]).
    pub kept: BTreeMap<String, String>,
    /// Table → how many of its staged rows are kept as they are (not
    /// written at all).
    pub kept_as_is: BTreeMap<String, u64>,
    /// `PRAGMA data_version` when the plan was made: if another connection
    /// commits before the write lock is taken, the plan is made again.
    pub data_version: i64,
}

/// The database's change counter as this connection sees it.
pub(super) fn data_version(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA main.data_version", [], |r| r.get(0))?)
}

/// Make the plan inside the caller's transaction. Leaves in the
/// connection's temp schema: the target tenant's member sets (`Side::Ours`,
/// whole tenant) for the purge, the other tenants' sets restricted to the
/// hit rows (`Side::Others`) for the write's guards, and the kept rows.
pub(super) fn make<'a>(
    conn: &Connection,
    ctx: &Context<'a>,
    staged: &Staged,
    progress: &mut dyn Progress,
) -> Result<Plan<'a>> {
    let target = ctx.target();
    let data_version = data_version(conn)?;
    let purge_counts = if ctx.options.purge {
        ctx.scope
            .tables
            .iter()
            .filter(|t| !matches!(t.membership, Membership::TenantRow { .. }))
            .count()
    } else {
        0
    };
    let mut steps = PlanSteps {
        progress,
        done: 0,
        total: 3 + 2 * staged.tables.len() as u64 + purge_counts as u64,
    };
    let ours = MemberSets::materialize(
        conn,
        ctx.scope,
        ctx.schema,
        ctx.options.target_id(),
        Side::Ours,
    )?;
    steps.done("members", None)?;
    // A partial restore purges within its selection only.
    if let (Some(selection), true) = (ctx.selection, ctx.options.purge) {
        super::selection_db::mark_purge_scope(conn, ctx, selection, &ours)?;
    }

    // The hits: staged row → database row with its identity, whether every
    // value is already the archive's, and whose the row is. Other tenants'
    // derived rows are known only once the hits are (below).
    let candidates = Candidates::create(conn, ctx.scope, ctx.schema)?;
    let mut rowid_keyed = BTreeSet::new();
    for table in &staged.tables {
        let key = ctx.table(&table.name).row_key();
        let keys = key
            .iter()
            .enumerate()
            .map(|(k, c)| format!("m.{} AS k{k}", sql::ident(c)))
            .collect::<Vec<_>>()
            .join(", ");
        // Derived tables: none yet, set below for the few that are.
        let others_now = if table.derived {
            "0".to_string()
        } else {
            others_on_row(ctx, &table.name)?
        };
        let hits = scratch_table("hits", table);
        let select = format!(
            "SELECT s.rowid AS sid, {same} AS same, {ours} AS ours, {others_now} AS others, {keys} FROM {stage} AS s JOIN main.{t} AS m ON {identity}",
            same = table.same_values("m", "s"),
            ours = ours.member_probe(&table.name, "m")?,
            stage = table.stage,
            t = sql::ident(&table.name),
            identity = table.identity("m", "s"),
        );
        if fill_rowid_keyed_hits(conn, &hits, &key, &select, &target)? {
            rowid_keyed.insert(hits.clone());
        } else {
            conn.execute_batch(&format!("DROP TABLE IF EXISTS temp.{hits};"))?;
            let mut stmt = conn.prepare(&format!("CREATE TEMP TABLE {hits} AS {select}"))?;
            let params = tenant_params(&stmt, &target);
            stmt.execute(&*params)?;
        }
        if let Some(insert) = candidates.insert_into(&table.name) {
            conn.execute(
                &format!(
                    "{insert}SELECT {} FROM temp.{}",
                    key_names(key.len()),
                    scratch_table("hits", table)
                ),
                [],
            )?;
        }
        steps.done("matches", Some(&table.name))?;
    }
    // A purge deletes the target's rows, but never one that is another
    // tenant's too (a blob two tenants attach): their membership is asked
    // about as well.
    if ctx.options.purge {
        candidates.add_members(conn, &ours)?;
    }
    let others = MemberSets::materialize_within(
        conn,
        ctx.scope,
        ctx.schema,
        ctx.options.target_id(),
        Side::Others,
        &candidates,
    )?;
    steps.done("other_tenants", None)?;
    for table in &staged.tables {
        if let Some(probe) = others.key_probe(&table.name, "h") {
            if others.set_is_empty(conn, &table.name)? {
                continue;
            }
            conn.execute(
                &format!(
                    "UPDATE temp.{} AS h SET others = 1 WHERE {probe}",
                    scratch_table("hits", table)
                ),
                [],
            )?;
        }
    }

    // Kept rows: hits on the target's own rows (`ours AND NOT others`), in
    // tables where hits are one to one: unique indexes on both sides, which
    // the purge and the write then use to skip them.
    let mut kept = BTreeMap::new();
    for table in &staged.tables {
        if ctx.options.remap || ctx.options.new_ids || table.tenant_row {
            continue;
        }
        let hits = scratch_table("hits", table);
        let key = ctx.table(&table.name).row_key();
        // With a primary key, a staged row hits one row at most and the
        // sids are unique already (the write indexes them if it needs to).
        let sid_index = if table.has_pk() {
            String::new()
        } else {
            format!("CREATE UNIQUE INDEX temp.{hits}_sid ON {hits}(sid);")
        };
        // A rowid key is unique already when it is the hits table's own.
        let key_index = if rowid_keyed.contains(&hits) {
            String::new()
        } else {
            format!(
                "CREATE UNIQUE INDEX temp.{hits}_key ON {hits}({});",
                key_names(key.len())
            )
        };
        let indexed = conn.execute_batch(&format!("{sid_index} {key_index}"));
        match indexed {
            Ok(()) => {
                kept.insert(table.name.clone(), hits);
            }
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation => {}
            Err(e) => return Err(e.into()),
        }
    }

    let mut counts: BTreeMap<String, PlannedCounts> = BTreeMap::new();
    if ctx.options.purge {
        for t in &ctx.scope.tables {
            if matches!(t.membership, Membership::TenantRow { .. }) {
                continue;
            }
            let sql = format!(
                "SELECT count(*) FROM {} AS a WHERE {}",
                sql::main_table(&t.name),
                purged_rows(ctx, &ours, &others, &t.name, "a")?
            );
            let mut stmt = conn.prepare(&sql)?;
            let params = tenant_params(&stmt, &target);
            let mut n: i64 = stmt.query_row(&*params, |r| r.get(0))?;
            // Kept rows are some of those, one each: not purged.
            if let Some(hits) = kept.get(&t.name) {
                let kept_rows: i64 = conn.query_row(
                    &format!(
                        "SELECT count(*) FROM temp.{hits} AS h WHERE ours AND NOT others AND {}",
                        super::selection_db::hit_in_purge_scope(ctx, &t.name, "h")
                    ),
                    [],
                    |r| r.get(0),
                )?;
                n -= kept_rows;
            }
            if n > 0 {
                counts.entry(t.name.clone()).or_default().purge = n as u64;
            }
            steps.done("purge_counts", Some(&t.name))?;
        }
    }

    let mut conflicts = Vec::new();
    let mut conflict_count = 0u64;
    let mut kept_as_is = BTreeMap::new();
    for table in &staged.tables {
        let c = counts.entry(table.name.clone()).or_default();
        let hits = scratch_table("hits", table);
        let kept_expr = if kept.contains_key(&table.name) {
            "(ours AND NOT others)"
        } else {
            "0"
        };
        // A staged row of a table without primary key may hit several
        // identical rows (then nothing is kept): one group.
        let per_row = if kept.contains_key(&table.name) || table.has_pk() {
            format!("SELECT coalesce(ours, 0) AS ours, coalesce(others, 0) AS others, coalesce({kept_expr}, 0) AS kept, coalesce(same, 0) AS same FROM temp.{hits}")
        } else {
            format!("SELECT max(coalesce(ours, 0)) AS ours, max(coalesce(others, 0)) AS others, 0 AS kept, 0 AS same FROM temp.{hits} GROUP BY sid")
        };
        let shareable = shareable(ctx, table);
        // One pass, one row of sums (a GROUP BY would sort every hit).
        let classes: [Hit; 6] = [
            Hit {
                ours: false,
                others: true,
                kept: false,
                same: false,
            },
            Hit {
                ours: true,
                others: false,
                kept: true,
                same: true,
            },
            Hit {
                ours: true,
                others: false,
                kept: true,
                same: false,
            },
            Hit {
                ours: true,
                others: false,
                kept: false,
                same: false,
            },
            Hit {
                ours: false,
                others: false,
                kept: false,
                same: false,
            },
            Hit {
                ours: false,
                others: true,
                kept: false,
                same: true,
            },
        ];
        let sums: [i64; 6] = conn.query_row(
            &format!(
                "SELECT total(others AND NOT {shareable}), total(NOT others AND kept AND same), total(NOT others AND kept AND NOT same), total(NOT others AND NOT kept AND ours), total(NOT others AND NOT kept AND NOT ours), total(others AND {shareable}) FROM ({per_row})"
            ),
            [],
            |r| {
                let mut out = [0i64; 6];
                for (i, slot) in out.iter_mut().enumerate() {
                    *slot = r.get::<_, f64>(i)? as i64;
                }
                Ok(out)
            },
        )?;
        if kept.contains_key(&table.name) {
            kept_as_is.insert(table.name.clone(), sums[1] as u64);
        }
        let mut found = 0u64;
        let mut table_conflicts = 0u64;
        for (hit, n) in classes.into_iter().zip(sums) {
            let n = n as u64;
            found += n;
            match outcome(table, hit, ctx.options.purge) {
                Outcome::Insert => c.insert += n,
                Outcome::Update => c.update += n,
                Outcome::Unchanged => c.unchanged += n,
                Outcome::Conflict => table_conflicts += n,
            }
        }
        // Rows with no database counterpart are inserted.
        c.insert += table.rows - found;
        conflict_count += table_conflicts;
        if table_conflicts > 0 && conflicts.len() < MAX_LISTED_CONFLICTS {
            let room = MAX_LISTED_CONFLICTS - conflicts.len();
            let sids: Vec<i64> = conn
                .prepare(&format!(
                    "SELECT DISTINCT sid FROM temp.{hits} WHERE others AND NOT {shareable} ORDER BY sid LIMIT {room}"
                ))?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for key in table.describe_rows(conn, &sids)? {
                conflicts.push(Conflict {
                    table: table.name.clone(),
                    key,
                    reason: "the key belongs to another tenant".into(),
                });
            }
        }
        steps.done("outcomes", Some(&table.name))?;
    }
    let crossing =
        references_to_other_tenants(conn, ctx, staged, &kept, &kept_as_is, conflicts.len())?;
    conflict_count += crossing.count;
    conflicts.extend(crossing.listed);
    if ctx.selection.is_some() {
        let (count, listed) =
            super::selection_db::dangling_references(conn, ctx, staged, conflicts.len())?;
        conflict_count += count;
        conflicts.extend(listed);
    }
    steps.done("references", None)?;
    Ok(Plan {
        ours,
        others,
        kept,
        kept_as_is,
        counts,
        conflicts,
        conflict_count,
        data_version,
    })
}

/// Rows the archive would write that point at another tenant's row.
struct CrossingReferences {
    count: u64,
    /// The first of them, up to [`MAX_LISTED_CONFLICTS`] in all.
    listed: Vec<Conflict>,
}

/// A restored row may refer only to rows of its own tenant, to rows of no
/// tenant (global tables, a NULL tenant column) or to nothing in the
/// database yet. An archive is untrusted input, and its SHA-256s are no
/// signature: an edited one could give the tenant a task in another
/// tenant's project, or a comment on another tenant's task, which the app's
/// associations would then show across tenants. So every reference out of
/// a staged row into a table chosen by the tenant column (or into the
/// tenants table) is followed, and a target row of another tenant is a
/// conflict. Rows the restore leaves exactly as they are (kept and equal)
/// are not asked: they write nothing, and a reference the app itself made
/// across tenants stays restorable as long as it is not changed.
///
/// Join tables and ActiveStorage rows are asked too. A reference into a
/// table whose rows belong to whoever refers to them (a blob, a variant
/// record) must point at a row the archive carries, see [`carried`].
/// References over several columns are followed like those over one. The
/// tenants row is asked when the restore creates it (its owner, its
/// parent tenant). A class name Rails could resolve to a table of the
/// tenant's data but that maps to none here is a conflict of its own: a
/// reference that cannot be followed is not let through.
///
/// Checked in the plan (a dry run lists them) and not only after the
/// write: the write changes only the tenant's rows, so whose a target row
/// is cannot change in between. The write's membership check
/// (`apply::check_restored_membership`) still refuses a derived row that
/// ends up belonging to another tenant through any parent.
fn references_to_other_tenants(
    conn: &Connection,
    ctx: &Context<'_>,
    staged: &Staged,
    kept: &BTreeMap<String, String>,
    not_written: &BTreeMap<String, u64>,
    listed_before: usize,
) -> Result<CrossingReferences> {
    let target = ctx.target();
    let mut found = CrossingReferences {
        count: 0,
        listed: Vec::new(),
    };
    for table in &staged.tables {
        // The usual restore (an older backup over today's data) writes
        // few rows, often none of a table: nothing to ask there.
        if not_written.get(&table.name) == Some(&table.rows) {
            continue;
        }
        let mut checks = Vec::new();
        let (references, unresolved) = references_of(conn, ctx, table)?;
        for r in references {
            let class = r
                .classes
                .as_ref()
                .map(|(t, classes)| format!(" AND s.c{t} IN ({})", sql_list(classes)))
                .unwrap_or_default();
            let join = r
                .columns
                .iter()
                .zip(&r.parent_columns)
                .map(|(c, pc)| format!("m.{} = s.c{c}", sql::ident(pc)))
                .collect::<Vec<_>>()
                .join(" AND ");
            let hits = format!(
                "SELECT s.rowid FROM {stage} AS s JOIN main.{p} AS m ON {join}{class}",
                stage = table.stage,
                p = sql::ident(&r.parent),
            );
            let column = r
                .columns
                .iter()
                .map(|&c| table.columns[c].as_str())
                .collect::<Vec<_>>()
                .join(", ");
            if let Some(owner) = other_tenants_row(ctx, &r.parent, "m") {
                checks.push((
                    format!("{hits} WHERE {owner}"),
                    format!(
                        "its {column} refers to a row of {} that belongs to another tenant",
                        r.parent
                    ),
                ));
            } else if is_derived(ctx, &r.parent) {
                checks.push((
                    format!("{hits} WHERE NOT {}", carried(conn, staged, &r, "s")?),
                    format!(
                        "its {column} refers to a row of {} that the archive does not carry",
                        r.parent
                    ),
                ));
            }
        }
        // One lookup per class: the staged type columns need an index.
        let type_columns: BTreeSet<usize> = unresolved.iter().map(|u| u.type_column).collect();
        for t in type_columns {
            let name = table.stage.name();
            conn.execute_batch(&format!(
                "CREATE INDEX IF NOT EXISTS temp.{name}_c{t} ON {name}(c{t});"
            ))?;
        }
        for u in unresolved {
            checks.push((
                format!(
                    "SELECT s.rowid FROM {} AS s WHERE s.c{} = {} AND s.c{} IS NOT NULL",
                    table.stage,
                    u.type_column,
                    sql::string(&u.class),
                    u.id_column
                ),
                format!(
                    "its {} {:?} maps to no table, but Rails could resolve it to {}: map the class in polymorphic:",
                    table.columns[u.type_column],
                    u.class,
                    u.could_name.join(" or ")
                ),
            ));
        }
        // The tenants row is written only when the target has none.
        let created = match ctx.scope.table(&table.name).map(|t| &t.membership) {
            Some(Membership::TenantRow { key }) => format!(
                " AND NOT EXISTS (SELECT 1 FROM main.{t} AS t WHERE t.{k} = ?1)",
                t = sql::ident(&table.name),
                k = sql::ident(key)
            ),
            _ => String::new(),
        };
        let checks: Vec<(String, String)> = checks
            .into_iter()
            .map(|(select, reason)| (format!("{select}{created}"), reason))
            .collect();
        if checks.is_empty() {
            continue;
        }
        // Rows kept as they are write nothing (see above), nor do rows
        // another tenant shares and that already hold the archive's values.
        let mut unchanged = match kept.get(&table.name) {
            Some(hits) => {
                conn.execute_batch(&format!(
                    "CREATE INDEX IF NOT EXISTS temp.{hits}_sid ON {hits}(sid);"
                ))?;
                format!(" AND NOT {}", kept_as_is(hits, "s"))
            }
            None => String::new(),
        };
        if may_share(ctx, table) {
            let hits = scratch_table("hits", table);
            conn.execute_batch(&format!(
                "CREATE INDEX IF NOT EXISTS temp.{hits}_sid ON {hits}(sid);"
            ))?;
            unchanged.push_str(&format!(
                " AND NOT EXISTS (SELECT 1 FROM temp.{hits} WHERE sid = s.rowid AND others AND {})",
                shareable(ctx, table)
            ));
        }
        for (select, reason) in checks {
            let mut stmt = conn.prepare(&format!("{select}{unchanged}"))?;
            let params = tenant_params(&stmt, &target);
            let mut rows = stmt.query(&*params)?;
            let mut sids = Vec::new();
            while let Some(row) = rows.next()? {
                found.count += 1;
                if listed_before + found.listed.len() + sids.len() < MAX_LISTED_CONFLICTS {
                    sids.push(row.get::<_, i64>(0)?);
                }
            }
            for key in table.describe_rows(conn, &sids)? {
                found.listed.push(Conflict {
                    table: table.name.clone(),
                    key,
                    reason: reason.clone(),
                });
            }
        }
    }
    Ok(found)
}

/// A reference out of a staged table that a row could use to point at
/// another tenant's row.
pub(super) struct OutgoingReference {
    /// Stage columns `c<column>` hold the referring values.
    pub columns: Vec<usize>,
    pub parent: String,
    pub parent_columns: Vec<String>,
    /// Polymorphic: stage column of the type, and the classes that name
    /// `parent`.
    pub classes: Option<(usize, Vec<String>)>,
}

/// A class in a staged type column that maps to no table although Rails
/// could resolve it to a table of the tenant's data: a reference we
/// cannot follow, so never one to let through.
pub(super) struct UnresolvedClass {
    type_column: usize,
    id_column: usize,
    class: String,
    could_name: Vec<String>,
}

/// The references out of a staged table. Foreign keys, naming and hints
/// come from the scope, over one column or several; polymorphic pairs
/// (`x_type`, `x_id`) are taken for every class the staged rows name,
/// known to the scope or not, since an archive may name a class no row of
/// the database does yet.
pub(super) fn references_of(
    conn: &Connection,
    ctx: &Context<'_>,
    table: &StagedTable,
) -> Result<(Vec<OutgoingReference>, Vec<UnresolvedClass>)> {
    let position = |c: &str| table.columns.iter().position(|x| x == c);
    let mut out = Vec::new();
    let mut unresolved = Vec::new();
    for r in ctx
        .scope
        .references
        .iter()
        .filter(|r| r.table == table.name)
    {
        // The tenant column holds the target already (staging checks it).
        if r.polymorphic.is_some() || r.columns == [ctx.scope.options.tenant_column.clone()] {
            continue;
        }
        // A reference the archive has no column of leaves the database's
        // default there, not a value the archive chose.
        let Some(columns) = r.columns.iter().map(|c| position(c)).collect() else {
            continue;
        };
        out.push(OutgoingReference {
            columns,
            parent: r.parent.clone(),
            parent_columns: r.parent_columns.clone(),
            classes: None,
        });
    }
    for (t, column) in table.columns.iter().enumerate() {
        let Some(stem) = column.strip_suffix("_type") else {
            continue;
        };
        let Some(id) = position(&format!("{stem}_id")) else {
            continue;
        };
        let classes: Vec<String> = conn
            .prepare(&format!(
                "SELECT DISTINCT c{t} FROM {} WHERE typeof(c{t}) = 'text' LIMIT {}",
                table.stage,
                MOST_CLASSES + 1
            ))?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        if classes.len() > MOST_CLASSES {
            return Err(Error::archive(format!(
                "{}.{column} names more than {MOST_CLASSES} classes",
                table.name
            )));
        }
        // One check per parent table, with all the classes that name it.
        let mut by_parent: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for class in classes {
            let could_name = ctx.scope.tables_a_class_could_name(ctx.schema, &class);
            if !could_name.is_empty() {
                unresolved.push(UnresolvedClass {
                    type_column: t,
                    id_column: id,
                    class,
                    could_name,
                });
                continue;
            }
            let parent = ctx.scope.table_for_class(&class);
            let Some(parent) = ctx.schema.table_ci(&parent).map(|p| p.name.clone()) else {
                continue;
            };
            if other_tenants_row(ctx, &parent, "m").is_some() || is_derived(ctx, &parent) {
                by_parent.entry(parent).or_default().push(class);
            }
        }
        for (parent, classes) in by_parent {
            let Some(parent_table) = ctx.schema.table(&parent) else {
                continue;
            };
            if let [pk] = parent_table.primary_key().as_slice() {
                out.push(OutgoingReference {
                    columns: vec![id],
                    parent_columns: vec![pk.to_string()],
                    parent,
                    classes: Some((t, classes)),
                });
            }
        }
    }
    Ok((out, unresolved))
}

/// `'a', 'b'`: SQL string literals for an `IN (…)` list.
fn sql_list(values: &[String]) -> String {
    values
        .iter()
        .map(|v| sql::string(v))
        .collect::<Vec<_>>()
        .join(", ")
}

/// SQL condition: row `alias` of `table` belongs to a tenant other than
/// the target (`?1`). None for tables whose rows are not chosen by a
/// condition on the row itself (derived tables, tables of no tenant).
/// A NULL tenant column is nobody's: a row shared by every tenant.
pub(super) fn other_tenants_row(ctx: &Context<'_>, table: &str, alias: &str) -> Option<String> {
    match &ctx.scope.table(table)?.membership {
        Membership::TenantColumn => {
            let c = sql::ident(&ctx.scope.options.tenant_column);
            Some(format!("{alias}.{c} IS NOT NULL AND {alias}.{c} IS NOT ?1"))
        }
        Membership::TenantRow { key } => Some(format!("{alias}.{} IS NOT ?1", sql::ident(key))),
        Membership::Derived { .. } | Membership::Shared { .. } => None,
    }
}

/// Whether `table`'s rows belong to whoever refers to them (join tables,
/// ActiveStorage blobs and variant records).
pub(super) fn is_derived(ctx: &Context<'_>, table: &str) -> bool {
    ctx.scope.table(table).is_some_and(|t| t.is_derived())
}

/// SQL condition: the row that staged row `alias` refers to through `r` is
/// one the archive carries too. A row of a derived table is whoever's
/// refers to it, so a reference to one the archive does not carry would
/// make it the tenant's (an attachment of another tenant's blob, whose key
/// the archive never had to know). With the row carried, the plan matches
/// it against the database like any other: a blob another tenant attaches
/// is shared only when the archive holds every value of it.
pub(super) fn carried(
    conn: &Connection,
    staged: &Staged,
    r: &OutgoingReference,
    alias: &str,
) -> Result<String> {
    let parent = staged.tables.iter().find(|t| t.name == r.parent);
    let positions: Option<Vec<usize>> = parent.and_then(|p| {
        r.parent_columns
            .iter()
            .map(|pc| p.columns.iter().position(|c| c == pc))
            .collect()
    });
    let (Some(p), Some(positions)) = (parent, positions) else {
        return Ok("0".to_string());
    };
    // One lookup per referring row: the staged parent needs an index.
    let name = p.stage.name();
    let indexed = positions
        .iter()
        .map(|pc| format!("c{pc}"))
        .collect::<Vec<_>>();
    conn.execute_batch(&format!(
        "CREATE INDEX IF NOT EXISTS temp.{name}_{} ON {name}({});",
        indexed.join("_"),
        indexed.join(", ")
    ))?;
    let join = positions
        .iter()
        .zip(&r.columns)
        .map(|(pc, c)| format!("carried.c{pc} = {alias}.c{c}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    Ok(format!(
        "EXISTS (SELECT 1 FROM {} AS carried WHERE {join})",
        p.stage
    ))
}

/// `plan_progress` events: the plan is a fixed sequence of steps (the
/// tenant's member sets, each table's matches, the other tenants' sets,
/// each table's purge count, each table's outcomes, the references out of
/// the archive's rows), so `processed` of
/// `total` steps can move a progress bar through work that has no rows to
/// count. `phase` and `table` say which step just ended.
struct PlanSteps<'p> {
    progress: &'p mut dyn Progress,
    done: u64,
    total: u64,
}

impl PlanSteps<'_> {
    fn done(&mut self, phase: &str, table: Option<&str>) -> Result<()> {
        self.done += 1;
        let mut event = Event::new(Step::PlanProgress)
            .with("phase", phase)
            .with("processed", self.done)
            .with("total", self.total);
        if let Some(table) = table {
            event = event.with("table", table);
        }
        self.progress.emit(event)
    }
}

/// Fill `hits` from `select` (columns sid, same, ours, others, k0) as a
/// table whose rowid is the database row's rowid: the key the kept rows
/// are looked up by comes without an index to build, and the rows arrive
/// in key order when the archive is (ours is). False, with nothing made,
/// when the key is not a rowid or two staged rows hit the same database
/// row (then the hits are not one to one and nothing is kept).
fn fill_rowid_keyed_hits(
    conn: &Connection,
    hits: &str,
    key: &[String],
    select: &str,
    target: &crate::value::SqlValue,
) -> Result<bool> {
    if key != ["rowid"] {
        return Ok(false);
    }
    conn.execute_batch(&format!(
        "DROP TABLE IF EXISTS temp.{hits}; CREATE TEMP TABLE {hits}(sid INTEGER, same, ours, others, k0 INTEGER PRIMARY KEY);"
    ))?;
    let mut stmt = conn.prepare(&format!("INSERT INTO temp.{hits} {select}"))?;
    let params = tenant_params(&stmt, target);
    match stmt.execute(&*params) {
        Ok(_) => Ok(true),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// For tables whose membership is a condition on the row itself (tenant
/// column, tenants row): the row `m` is another tenant's.
/// For the hits: a row whose tenant column is NULL is shared by every
/// tenant, and writing the archive's row over it would take it from them:
/// it counts as another tenant's here (references to it stay fine).
fn others_on_row(ctx: &Context<'_>, table: &str) -> Result<String> {
    let others =
        MemberSets::unmaterialized(ctx.scope, ctx.schema, Side::Others).member_probe(table, "m")?;
    Ok(match ctx.scope.table(table).map(|t| &t.membership) {
        Some(Membership::TenantColumn) => format!(
            "({others} OR m.{} IS NULL)",
            sql::ident(&ctx.scope.options.tenant_column)
        ),
        _ => others,
    })
}

/// SQL condition: a purge deletes the row `alias` of `table` (before the
/// kept rows are spared): the target tenant's, and no other tenant's.
pub(super) fn purged_rows(
    ctx: &Context<'_>,
    ours: &MemberSets<'_>,
    others: &MemberSets<'_>,
    table: &str,
    alias: &str,
) -> Result<String> {
    Ok(format!(
        "{} AND NOT {} AND {}",
        ours.member_predicate(table, alias)?,
        others.member_probe(table, alias)?,
        super::selection_db::purge_filter(ctx, table, alias)
    ))
}

/// SQL condition: the row `alias` of `table` is one of the kept rows
/// (`hits` from [`Plan::kept`]).
pub(super) fn kept_row(ctx: &Context<'_>, table: &str, hits: &str, alias: &str) -> String {
    let key = ctx.table(table).row_key();
    let matches = key
        .iter()
        .enumerate()
        .map(|(k, c)| format!("k.k{k} = {alias}.{}", sql::ident(c)))
        .collect::<Vec<_>>()
        .join(" AND ");
    format!("EXISTS (SELECT 1 FROM temp.{hits} AS k WHERE {matches} AND k.ours AND NOT k.others)")
}

/// SQL condition: the staged row `alias` is kept and already equal, so it
/// is not written (`hits` from [`Plan::kept`]).
pub(super) fn kept_as_is(hits: &str, alias: &str) -> String {
    format!("EXISTS (SELECT 1 FROM temp.{hits} AS k WHERE k.sid = {alias}.rowid AND k.same AND k.ours AND NOT k.others)")
}

/// Whether a staged row may hit another tenant's row and leave it as it
/// is instead of being refused. A blob that holds every value of the
/// archive's (key, checksum…): a blob belongs to whoever attaches it, so
/// the restored attachments share it, as they did when the backup was
/// made. And any other derived row (a join row between two tenants' rows,
/// a variant of a shared blob) that is the target's too and already holds
/// the archive's values: the restore leaves it exactly as it is, which
/// touches nobody. Never with remap, whose rows are the new tenant's alone.
pub(super) fn may_share(ctx: &Context<'_>, table: &StagedTable) -> bool {
    (is_blob_table(&table.name) || table.derived) && !ctx.options.remap && !ctx.options.new_ids
}

/// [`may_share`] as an SQL condition on a row of the hits table.
pub(super) fn shareable(ctx: &Context<'_>, table: &StagedTable) -> &'static str {
    if !may_share(ctx, table) {
        "0"
    } else if is_blob_table(&table.name) {
        "same"
    } else {
        "(same AND ours)"
    }
}

/// `tk_<what>_<i>` for the staged table `temp.tk_stage_<i>`.
pub(super) fn scratch_table(what: &'static str, table: &StagedTable) -> String {
    table.stage.sibling(what).name()
}

/// What the restore will do with one staged row that hits a database row.
enum Outcome {
    Insert,
    Update,
    Unchanged,
    Conflict,
}

/// How a staged row hits the database (for a group of identical rows: any
/// of them).
#[derive(Clone, Copy)]
struct Hit {
    ours: bool,
    others: bool,
    /// Kept: not purged, written in place.
    kept: bool,
    /// Kept and already equal: not written at all.
    same: bool,
}

fn outcome(table: &StagedTable, hit: Hit, purge: bool) -> Outcome {
    if table.tenant_row {
        // The tenants row is created when missing and never overwritten.
        Outcome::Unchanged
    } else if hit.others {
        if hit.same {
            // Left as it is: a blob another tenant attaches too, or a
            // derived row that is both tenants' (see `shareable`).
            Outcome::Unchanged
        } else {
            Outcome::Conflict
        }
    } else if hit.same {
        Outcome::Unchanged
    } else if hit.kept {
        Outcome::Update
    } else if hit.ours && purge {
        // Our row: purged first and inserted again.
        Outcome::Insert
    } else if table.has_pk() {
        // Ours, or nobody's (adopted): updated in place.
        Outcome::Update
    } else {
        Outcome::Unchanged
    }
}
