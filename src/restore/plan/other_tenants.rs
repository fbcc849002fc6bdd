//! The cross-tenant check: a restored row may refer only to rows of its
//! own tenant, to rows of no tenant (global tables, a NULL tenant column)
//! or to nothing in the database yet.
//!
//! An archive is untrusted input, and its SHA-256s are no signature: an
//! edited one could give the tenant a task in another tenant's project, or
//! a comment on another tenant's task, which the app's associations would
//! then show across tenants. So every reference out of a staged row into a
//! table chosen by the tenant column (or into the tenants table) is
//! followed, and a target row of another tenant is a conflict. Rows the
//! restore leaves exactly as they are (kept and equal) are not asked: they
//! write nothing, and a reference the app itself made across tenants stays
//! restorable as long as it is not changed.
//!
//! Join tables and ActiveStorage rows are asked too. A reference into a
//! table whose rows belong to whoever refers to them (a blob, a variant
//! record) must point at a row the archive carries, see [`carried`].
//! References over several columns are followed like those over one. The
//! tenants row is asked when the restore creates it (its owner, its
//! parent tenant). A class name Rails could resolve to a table of the
//! tenant's data but that maps to none here is a conflict of its own: a
//! reference that cannot be followed is not let through.
//!
//! Checked in the plan (a dry run lists them) and not only after the
//! write: the write changes only the tenant's rows, so whose a target row
//! is cannot change in between. The write's membership check
//! (`apply::check_restored_membership`) still refuses a derived row that
//! ends up belonging to another tenant through any parent.

use super::{
    index_hits_by_sid, kept_as_is, may_share, scratch_table, shareable, MAX_LISTED_CONFLICTS,
};
use crate::error::{Error, Result};
use crate::restore::stage::{Staged, StagedTable};
use crate::restore::{Conflict, Context};
use crate::scope::{tenant_params, Membership, MOST_CLASSES};
use crate::sql::{self, Col, Match};
use crate::value::SqlValue;
use rusqlite::Connection;
use std::collections::{BTreeMap, BTreeSet};

/// Rows the archive would write that point at another tenant's row.
pub(super) struct CrossingReferences {
    pub count: u64,
    /// The first of them, up to [`MAX_LISTED_CONFLICTS`] in all.
    pub listed: Vec<Conflict>,
}

/// One check of a staged table: `select` yields the stage rowids of the
/// rows refused for `reason`.
struct Check {
    select: String,
    reason: String,
}

/// Every staged row the restore writes that refers to another tenant's
/// row, to a derived row the archive does not carry, or through a class
/// that maps to no table (see the module's comment). `kept` and
/// `not_written` come from the plan: rows kept as they are are not asked.
pub(super) fn references_to_other_tenants(
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
        let checks = checks_of(conn, ctx, staged, table)?;
        if checks.is_empty() {
            continue;
        }
        let unchanged = unchanged_rows_left_out(conn, ctx, table, kept)?;
        for check in checks {
            let select = format!("{}{unchanged}", check.select);
            let sids = refused_rows(conn, &select, &target, listed_before, &mut found)?;
            for key in table.describe_rows(conn, &sids)? {
                found.listed.push(Conflict {
                    table: table.name.clone(),
                    key,
                    reason: check.reason.clone(),
                });
            }
        }
    }
    Ok(found)
}

/// The checks of one staged table: one per reference out of it, one per
/// class that maps to no table; restricted to the created tenants row.
fn checks_of(
    conn: &Connection,
    ctx: &Context<'_>,
    staged: &Staged,
    table: &StagedTable,
) -> Result<Vec<Check>> {
    let (references, unresolved) = references_of(conn, ctx, table)?;
    let mut checks = Vec::new();
    for r in &references {
        checks.extend(reference_check(conn, ctx, staged, table, r)?);
    }
    checks.extend(unresolved_checks(conn, table, &unresolved)?);
    // The tenants row is written only when the target has none.
    if let Some(Membership::TenantRow { key }) = ctx.scope.table(&table.name).map(|t| &t.membership)
    {
        let created = format!(
            " AND NOT EXISTS (SELECT 1 FROM {} AS t WHERE {} = ?1)",
            sql::main_table(&table.name),
            Col::Named(key).of("t")
        );
        for check in &mut checks {
            check.select.push_str(&created);
        }
    }
    Ok(checks)
}

/// The check of one reference: the parent row is another tenant's, or a
/// derived row the archive does not carry. None for references into
/// tables of nobody.
fn reference_check(
    conn: &Connection,
    ctx: &Context<'_>,
    staged: &Staged,
    table: &StagedTable,
    r: &OutgoingReference,
) -> Result<Option<Check>> {
    let class = r
        .classes
        .as_ref()
        .map(|(t, classes)| {
            format!(
                " AND {} IN ({})",
                Col::Staged(*t).of("s"),
                sql::strings(classes)
            )
        })
        .unwrap_or_default();
    let join = sql::key_match(
        "m",
        "s",
        r.parent_columns
            .iter()
            .zip(&r.columns)
            .map(|(pc, &c)| (Col::Named(pc), Col::Staged(c))),
        Match::Equal,
    );
    let hits = format!(
        "SELECT s.rowid FROM {stage} AS s JOIN {p} AS m ON {join}{class}",
        stage = table.stage,
        p = sql::main_table(&r.parent),
    );
    let column = r.column_names(table);
    Ok(
        if let Some(owner) = other_tenants_row(ctx, &r.parent, "m") {
            Some(Check {
                select: format!("{hits} WHERE {owner}"),
                reason: format!(
                    "its {column} refers to a row of {} that belongs to another tenant",
                    r.parent
                ),
            })
        } else if is_derived(ctx, &r.parent) {
            Some(Check {
                select: format!("{hits} WHERE NOT {}", carried(conn, staged, r, "s")?),
                reason: format!(
                    "its {column} refers to a row of {} that the archive does not carry",
                    r.parent
                ),
            })
        } else {
            None
        },
    )
}

/// One check per class a staged type column names that maps to no table
/// although Rails could resolve it to one of the tenant's.
fn unresolved_checks(
    conn: &Connection,
    table: &StagedTable,
    unresolved: &[UnresolvedClass],
) -> Result<Vec<Check>> {
    // One lookup per class: the staged type columns need an index.
    let type_columns: BTreeSet<usize> = unresolved.iter().map(|u| u.type_column).collect();
    for t in type_columns {
        conn.execute_batch(&table.stage.create_index_on(&[t]))?;
    }
    Ok(unresolved
        .iter()
        .map(|u| Check {
            select: format!(
                "SELECT s.rowid FROM {} AS s WHERE {} AND {} IS NOT NULL",
                table.stage,
                sql::class_is("s", Col::Staged(u.type_column), &u.class),
                Col::Staged(u.id_column).of("s")
            ),
            reason: format!(
                "its {} {:?} maps to no table, but Rails could resolve it to {}: map the class in polymorphic:",
                table.columns[u.type_column],
                u.class,
                u.could_name.join(" or ")
            ),
        })
        .collect())
}

/// SQL appended to a check: rows kept as they are write nothing, nor do
/// rows another tenant shares and that already hold the archive's values.
fn unchanged_rows_left_out(
    conn: &Connection,
    ctx: &Context<'_>,
    table: &StagedTable,
    kept: &BTreeMap<String, String>,
) -> Result<String> {
    let mut unchanged = match kept.get(&table.name) {
        Some(hits) => {
            index_hits_by_sid(conn, hits)?;
            format!(" AND NOT {}", kept_as_is(hits, "s"))
        }
        None => String::new(),
    };
    if may_share(ctx, table) {
        let hits = scratch_table("hits", table);
        index_hits_by_sid(conn, &hits)?;
        unchanged.push_str(&format!(
            " AND NOT EXISTS (SELECT 1 FROM temp.{hits} WHERE sid = s.rowid AND others AND {})",
            shareable(ctx, table)
        ));
    }
    Ok(unchanged)
}

/// Run one check: counts every refused row into `found` and returns the
/// stage rowids of those still to list (up to [`MAX_LISTED_CONFLICTS`]).
fn refused_rows(
    conn: &Connection,
    select: &str,
    target: &SqlValue,
    listed_before: usize,
    found: &mut CrossingReferences,
) -> Result<Vec<i64>> {
    let mut stmt = conn.prepare(select)?;
    let params = tenant_params(&stmt, target);
    let mut rows = stmt.query(&*params)?;
    let mut sids = Vec::new();
    while let Some(row) = rows.next()? {
        found.count += 1;
        if listed_before + found.listed.len() + sids.len() < MAX_LISTED_CONFLICTS {
            sids.push(row.get::<_, i64>(0)?);
        }
    }
    Ok(sids)
}

/// A reference out of a staged table that a row could use to point at
/// another tenant's row.
pub(in crate::restore) struct OutgoingReference {
    /// Stage columns `c<column>` hold the referring values.
    pub columns: Vec<usize>,
    pub parent: String,
    pub parent_columns: Vec<String>,
    /// Polymorphic: stage column of the type, and the classes that name
    /// `parent`.
    pub classes: Option<(usize, Vec<String>)>,
}

impl OutgoingReference {
    /// The referring columns' names, for messages: `task_id` or `a, b`.
    pub(in crate::restore) fn column_names(&self, table: &StagedTable) -> String {
        let names: Vec<&str> = self
            .columns
            .iter()
            .map(|&c| table.columns[c].as_str())
            .collect();
        names.join(", ")
    }
}

/// A class in a staged type column that maps to no table although Rails
/// could resolve it to a table of the tenant's data: a reference we
/// cannot follow, so never one to let through.
pub(in crate::restore) struct UnresolvedClass {
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
pub(in crate::restore) fn references_of(
    conn: &Connection,
    ctx: &Context<'_>,
    table: &StagedTable,
) -> Result<(Vec<OutgoingReference>, Vec<UnresolvedClass>)> {
    let mut out = declared_references(ctx, table);
    let mut unresolved = Vec::new();
    for (t, column) in table.columns.iter().enumerate() {
        let Some(stem) = column.strip_suffix("_type") else {
            continue;
        };
        let Some(id) = table
            .columns
            .iter()
            .position(|x| *x == format!("{stem}_id"))
        else {
            continue;
        };
        let pair = PolymorphicPair {
            type_column: t,
            id_column: id,
        };
        let by_parent = pair.parents(conn, ctx, table, &mut unresolved)?;
        out.extend(pair.references(ctx, by_parent));
    }
    Ok((out, unresolved))
}

/// Foreign keys, naming and hints from the scope, over the columns the
/// archive carries.
fn declared_references(ctx: &Context<'_>, table: &StagedTable) -> Vec<OutgoingReference> {
    let position = |c: &str| table.columns.iter().position(|x| x == c);
    let mut out = Vec::new();
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
    out
}

/// A staged `x_type` / `x_id` pair, by stage column.
struct PolymorphicPair {
    type_column: usize,
    id_column: usize,
}

impl PolymorphicPair {
    /// The classes the staged rows name, by the parent table each names
    /// (only parents another tenant's rows or derived rows live in); a
    /// class that could name several tables goes to `unresolved`.
    fn parents(
        &self,
        conn: &Connection,
        ctx: &Context<'_>,
        table: &StagedTable,
        unresolved: &mut Vec<UnresolvedClass>,
    ) -> Result<BTreeMap<String, Vec<String>>> {
        let mut by_parent: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for class in self.classes(conn, table)? {
            let could_name = ctx.scope.tables_a_class_could_name(ctx.schema, &class);
            if !could_name.is_empty() {
                unresolved.push(UnresolvedClass {
                    type_column: self.type_column,
                    id_column: self.id_column,
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
        Ok(by_parent)
    }

    /// Every class the staged rows name, known to the scope or not (an
    /// archive may name a class no row of the database does yet).
    fn classes(&self, conn: &Connection, table: &StagedTable) -> Result<Vec<String>> {
        let classes: Vec<String> = conn
            .prepare(&format!(
                "SELECT DISTINCT {c} FROM {} WHERE typeof({c}) = 'text' LIMIT {}",
                table.stage,
                MOST_CLASSES + 1,
                c = Col::Staged(self.type_column).bare()
            ))?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        if classes.len() > MOST_CLASSES {
            return Err(Error::archive(format!(
                "{}.{} names more than {MOST_CLASSES} classes",
                table.name, table.columns[self.type_column]
            )));
        }
        Ok(classes)
    }

    /// One reference per parent table, with all the classes that name it.
    fn references(
        &self,
        ctx: &Context<'_>,
        by_parent: BTreeMap<String, Vec<String>>,
    ) -> Vec<OutgoingReference> {
        let mut out = Vec::new();
        for (parent, classes) in by_parent {
            let Some(parent_table) = ctx.schema.table(&parent) else {
                continue;
            };
            if let [pk] = parent_table.primary_key().as_slice() {
                out.push(OutgoingReference {
                    columns: vec![self.id_column],
                    parent_columns: vec![pk.to_string()],
                    parent,
                    classes: Some((self.type_column, classes)),
                });
            }
        }
        out
    }
}

/// SQL condition: row `alias` of `table` belongs to a tenant other than
/// the target (`?1`). None for tables whose rows are not chosen by a
/// condition on the row itself (derived tables, tables of no tenant).
/// A NULL tenant column is nobody's: a row shared by every tenant.
pub(in crate::restore) fn other_tenants_row(
    ctx: &Context<'_>,
    table: &str,
    alias: &str,
) -> Option<String> {
    match &ctx.scope.table(table)?.membership {
        Membership::TenantColumn => {
            let c = Col::Named(&ctx.scope.options.tenant_column).of(alias);
            Some(format!("{c} IS NOT NULL AND {c} IS NOT ?1"))
        }
        Membership::TenantRow { key } => Some(format!("{} IS NOT ?1", Col::Named(key).of(alias))),
        Membership::Derived { .. } | Membership::Shared { .. } => None,
    }
}

/// Whether `table`'s rows belong to whoever refers to them (join tables,
/// ActiveStorage blobs and variant records).
pub(in crate::restore) fn is_derived(ctx: &Context<'_>, table: &str) -> bool {
    ctx.scope.table(table).is_some_and(|t| t.is_derived())
}

/// SQL condition: the row that staged row `alias` refers to through `r` is
/// one the archive carries too. A row of a derived table is whoever's
/// refers to it, so a reference to one the archive does not carry would
/// make it the tenant's (an attachment of another tenant's blob, whose key
/// the archive never had to know). With the row carried, the plan matches
/// it against the database like any other: a blob another tenant attaches
/// is shared only when the archive holds every value of it.
pub(in crate::restore) fn carried(
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
    conn.execute_batch(&p.stage.create_index_on(&positions))?;
    let join = sql::key_match(
        "carried",
        alias,
        positions
            .iter()
            .zip(&r.columns)
            .map(|(&pc, &c)| (Col::Staged(pc), Col::Staged(c))),
        Match::Equal,
    );
    Ok(format!(
        "EXISTS (SELECT 1 FROM {} AS carried WHERE {join})",
        p.stage
    ))
}
