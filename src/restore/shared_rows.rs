//! Shared reference rows on restore (see `scope/shared.rs`): the archive's
//! rows of shared tables (users, tags) are inserted when no row with their
//! key is here, and never updated, purged or counted as conflicts when one
//! is: a present row with other values is left as it is and reported as
//! `differing`. Which tables are shared is the target's decision; the
//! archive's `scope: "shared"` must agree (checked in `mod.rs`).
//!
//! A row to insert must not point at another tenant's rows: that would
//! make the restore write a reference into someone else's data. Rows of
//! derived tables (blobs, join rows) are whoever's refers to them, so a
//! row to insert may point at one only if the archive carries it too (as
//! for the tenant's rows, `plan::carried`). A row to insert that a UNIQUE
//! index would refuse is a conflict too (`shared_unique.rs`).
//!
//! Shared rows are never re-keyed: `new_ids:` and `remap:` give the
//! tenant's rows fresh ids, but a shared row keeps the archive's key, so
//! a row of that key here (a different user with the archive's user's id)
//! is taken as present, counted `differing` when its values differ, and the
//! copy's rows refer to it.

use super::plan::{carried, is_derived, other_tenants_row, references_of, MAX_LISTED_CONFLICTS};
use super::postcondition::{Intent, Watcher};
use super::stage::{Staged, StagedTable};
use super::{Conflict, Context};
use crate::error::{Error, Result};
use crate::scope::tenant_params;
use crate::sql;
use rusqlite::Connection;
use serde::Serialize;
use std::collections::BTreeMap;

/// What became (or, in a dry run, would become) of one table's shared rows.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SharedCounts {
    /// Rows with no row of their key here: inserted.
    pub inserted: u64,
    /// Rows whose key is here already: left as they are.
    pub present: u64,
    /// Of those, rows whose values differ from the archive's (reported,
    /// never overwritten).
    pub differing: u64,
}

/// The shared rows' outcomes, and the rows to insert that would refer to
/// another tenant's rows (conflicts).
pub(super) struct SharedPlan {
    pub counts: BTreeMap<String, SharedCounts>,
    pub conflicts: Vec<Conflict>,
    pub conflict_count: u64,
}

/// `NOT EXISTS` a database row with the key of staged row `s` (the
/// alias).
fn missing_as(table: &StagedTable, s: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM {} AS m WHERE {})",
        sql::main_table(&table.name),
        table.identity("m", s)
    )
}

/// [`missing_as`] for alias `s`.
fn missing(table: &StagedTable) -> String {
    missing_as(table, "s")
}

/// Count outcomes and find the rows to insert that point at other tenants.
pub(super) fn plan(conn: &Connection, ctx: &Context<'_>, staged: &Staged) -> Result<SharedPlan> {
    let mut out = SharedPlan {
        counts: BTreeMap::new(),
        conflicts: Vec::new(),
        conflict_count: 0,
    };
    for table in &staged.shared {
        let count = |condition: &str| -> Result<u64> {
            let sql = format!(
                "SELECT count(*) FROM {} AS s WHERE {condition}",
                table.stage
            );
            Ok(conn.query_row(&sql, [], |r| r.get::<_, i64>(0))? as u64)
        };
        let inserted = count(&missing(table))?;
        let differing = count(&format!(
            "EXISTS (SELECT 1 FROM main.{} AS m WHERE {} AND NOT ({}))",
            sql::ident(&table.name),
            table.identity("m", "s"),
            table.same_values("m", "s")
        ))?;
        out.counts.insert(
            table.name.clone(),
            SharedCounts {
                inserted,
                present: table.rows - inserted,
                differing,
            },
        );
        if inserted > 0 {
            pointing_at_other_tenants(conn, ctx, staged, table, &mut out)?;
            let room = MAX_LISTED_CONFLICTS.saturating_sub(out.conflicts.len());
            let (count, listed) =
                super::shared_unique::clashes(conn, table, |s| missing_as(table, s), room)?;
            out.conflict_count += count;
            out.conflicts.extend(listed);
        }
    }
    Ok(out)
}

/// Rows to insert whose references name a row of another tenant, or a
/// row of a derived table the archive does not carry.
fn pointing_at_other_tenants(
    conn: &Connection,
    ctx: &Context<'_>,
    staged: &Staged,
    table: &StagedTable,
    out: &mut SharedPlan,
) -> Result<()> {
    let target = ctx.target();
    let (references, _) = references_of(conn, ctx, table)?;
    for r in references {
        let (owner, why) = if let Some(owner) = other_tenants_row(ctx, &r.parent, "p") {
            (owner, "belongs to another tenant")
        } else if is_derived(ctx, &r.parent) {
            (
                format!("NOT {}", carried(conn, staged, &r, "s")?),
                "the archive does not carry",
            )
        } else {
            continue;
        };
        let class = r
            .classes
            .as_ref()
            .map(|(t, classes)| {
                let type_col = sql::Col::Staged(*t).of("s");
                format!(" AND {type_col} IN ({})", sql::strings(classes))
            })
            .unwrap_or_default();
        let pairs = r.parent_columns.iter().zip(&r.columns);
        let join = sql::key_match(
            "p",
            "s",
            pairs.map(|(pc, &c)| (sql::Col::Named(pc), sql::Col::Staged(c))),
            sql::Match::Equal,
        );
        let sql = format!(
            "SELECT s.rowid FROM {} AS s JOIN main.{} AS p ON {join}{class} WHERE {owner} AND {}",
            table.stage,
            sql::ident(&r.parent),
            missing(table)
        );
        let mut stmt = conn.prepare(&sql)?;
        let params = tenant_params(&stmt, &target);
        let sids: Vec<i64> = stmt
            .query_map(&*params, |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        out.conflict_count += sids.len() as u64;
        let room = MAX_LISTED_CONFLICTS.saturating_sub(out.conflicts.len());
        let column = r.column_names(table);
        for key in table.describe_rows(conn, &sids[..sids.len().min(room)])? {
            out.conflicts.push(Conflict {
                table: table.name.clone(),
                key,
                reason: format!(
                    "a shared row to insert whose {column} refers to a row of {} that {why}",
                    r.parent
                ),
            });
        }
    }
    Ok(())
}

/// Insert the shared rows missing here (inside the write transaction,
/// before the tenant's rows that refer to them). Returns the counts as
/// they are now, under the write lock.
pub(super) fn insert(
    conn: &Connection,
    ctx: &Context<'_>,
    staged: &Staged,
    watcher: &Watcher<'_>,
) -> Result<BTreeMap<String, SharedCounts>> {
    let planned = plan(conn, ctx, staged)?;
    if planned.conflict_count > 0 {
        return Err(super::conflict_error(
            &planned.conflicts,
            planned.conflict_count,
        ));
    }
    for table in &staged.shared {
        if planned
            .counts
            .get(&table.name)
            .is_none_or(|c| c.inserted == 0)
        {
            continue;
        }
        let columns = sql::column_list(&table.columns);
        let values = sql::staged_columns("s", 0..table.columns.len());
        let sql = format!(
            "INSERT INTO main.{} ({columns}) SELECT {values} FROM {} AS s WHERE {} ORDER BY s.rowid",
            sql::ident(&table.name),
            table.stage,
            missing(table)
        );
        watcher.expect(Intent::Share(table.name.clone()));
        let done = conn.execute(&sql, []);
        watcher.expect(Intent::Nothing);
        done.map_err(|e| Error::database(format!("{}: inserting shared rows: {e}", table.name)))?;
    }
    Ok(planned.counts)
}
