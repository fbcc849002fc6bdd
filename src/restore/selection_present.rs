//! Table mode of a selection (`only:` / `except:` with table names): a
//! staged derived row (join row, attachment) is in play when every row it
//! hangs off is either in play or present in the database now and the
//! target tenant's. So `except: ["tasks"]` brings back the join rows and
//! attachments of the tasks still there, and a join row of a task that is
//! neither restored nor present stays out instead of dangling.
//!
//! "Present and the tenant's" is the owner test of the member sets
//! ([`MemberSets::member_predicate`]) over the owner tables with a tenant
//! column, evaluated once into `temp.tk_selo_<n>` (the owner key tuples of
//! link n that staged rows use) in one read snapshot. The plan checks the
//! rows again, and the post-condition watches the write.

use super::selection::{selected, Link};
use super::stage::{Staged, StagedTable};
use super::Context;
use crate::error::Result;
use crate::sql::{self, Col, TempTable};

use crate::scope::{tenant_params, MemberSets, Membership, Side};
use rusqlite::Connection;

/// One owner link of a staged derived table, resolved to stage columns.
struct Owner<'l> {
    link: &'l Link,
    /// Index of the parent in `staged.tables`, when staged.
    parent: Option<usize>,
    /// Child stage column positions of the reference.
    cols: Vec<usize>,
    type_col: Option<(usize, String)>,
    /// `temp.tk_selo_<n>`, when the parent's membership is a condition on
    /// its row (tenant column): the tenant's present owner tuples.
    present: Option<TempTable>,
}

/// The fixpoint statements that put derived rows in play in table mode,
/// one per owner link: the row's owner along it is in play or present,
/// and so is every other owner the row has. `owner_links` are the links
/// (child follows parent) of derived tables that are not excluded.
pub(super) fn derived_fills(
    conn: &Connection,
    ctx: &Context<'_>,
    staged: &Staged,
    owner_links: &[&Link],
) -> Result<Vec<String>> {
    let index = |name: &str| staged.tables.iter().position(|t| t.name == name);
    let mut by_child: Vec<(usize, Vec<Owner<'_>>)> = Vec::new();
    for (n, link) in owner_links.iter().enumerate() {
        let Some(c) = index(&link.child) else {
            continue;
        };
        let child = &staged.tables[c];
        let pos = |col: &str| child.columns.iter().position(|x| x == col);
        let Some(cols) = link.columns.iter().map(|x| pos(x)).collect::<Option<_>>() else {
            continue;
        };
        let type_col = match &link.polymorphic {
            Some((t, class)) => match pos(t) {
                Some(p) => Some((p, class.clone())),
                None => continue,
            },
            None => None,
        };
        let mut owner = Owner {
            link,
            parent: index(&link.parent),
            cols,
            type_col,
            present: None,
        };
        owner.present = present_set(conn, ctx, child, &owner, n)?;
        match by_child.iter_mut().find(|(i, _)| *i == c) {
            Some((_, owners)) => owners.push(owner),
            None => by_child.push((c, vec![owner])),
        }
    }
    let mut fills = Vec::new();
    for (c, owners) in &by_child {
        for (k, owner) in owners.iter().enumerate() {
            let Some(this) = reached(staged, owner) else {
                continue;
            };
            let child = &staged.tables[*c];
            let mut sql = format!(
                "INSERT OR IGNORE INTO {} SELECT c.rowid FROM {} AS c WHERE {} AND {this}",
                selected(child),
                child.stage,
                applies(owner)
            );
            for (_, other) in owners.iter().enumerate().filter(|(j, _)| *j != k) {
                let satisfied = reached(staged, other).unwrap_or_else(|| "0".into());
                sql.push_str(&format!(" AND (NOT ({}) OR {satisfied})", applies(other)));
            }
            fills.push(sql);
        }
    }
    Ok(fills)
}

/// `c.type = 'Class' AND c.col IS NOT NULL`: the row uses this owner.
fn applies(owner: &Owner<'_>) -> String {
    let typed = owner
        .type_col
        .as_ref()
        .map(|(t, class)| sql::class_is("c", Col::Staged(*t), class));
    sql::all_of(
        typed
            .into_iter()
            .chain([sql::not_null("c", stage_cols(&owner.cols))]),
    )
}

fn stage_cols(positions: &[usize]) -> impl Iterator<Item = Col<'static>> + '_ {
    positions.iter().map(|&i| Col::Staged(i))
}

/// `(…)`: the row's owner along this link is in play or present; None
/// when neither can be told (the parent is neither staged nor a table
/// with a tenant column).
fn reached(staged: &Staged, owner: &Owner<'_>) -> Option<String> {
    let ct = sql::row_value("c", stage_cols(&owner.cols));
    let mut parts = Vec::new();
    if let Some(p) = owner.parent {
        let parent = &staged.tables[p];
        let pcs = owner
            .link
            .parent_columns
            .iter()
            .map(|x| parent.columns.iter().position(|y| y == x))
            .collect::<Option<Vec<_>>>();
        if let Some(pcs) = pcs {
            let pt = sql::row_value("p", stage_cols(&pcs));
            parts.push(format!(
                "{ct} IN (SELECT {pt} FROM {} AS x JOIN {} AS p ON p.rowid = x.sid)",
                selected(parent),
                parent.stage
            ));
        }
    }
    if let Some(set) = &owner.present {
        let keys = sql::key_columns(owner.cols.len());
        parts.push(format!("{ct} IN (SELECT {keys} FROM {set})"));
    }
    (!parts.is_empty()).then(|| format!("({})", parts.join(" OR ")))
}

/// Materialize the tenant's present owner tuples of link `n` that staged
/// rows of `child` use; None when the parent is not a table with a tenant
/// column (its membership would need the member sets of the plan).
fn present_set(
    conn: &Connection,
    ctx: &Context<'_>,
    child: &StagedTable,
    owner: &Owner<'_>,
    n: usize,
) -> Result<Option<TempTable>> {
    let link = owner.link;
    let Some(parent) = ctx.scope.table(&link.parent) else {
        return Ok(None);
    };
    if !matches!(parent.membership, Membership::TenantColumn) {
        return Ok(None);
    }
    // Counted per owner link: a table can own several derived tables.
    let set = TempTable::new("selo", n);
    conn.execute_batch(&set.create_key_set(link.parent_columns.len()))?;
    let ours = MemberSets::unmaterialized(ctx.scope, ctx.schema, Side::Ours);
    let parent_cols = || link.parent_columns.iter().map(|c| Col::Named(c));
    let mt = sql::row_value("m", parent_cols());
    let ct = sql::row_value("c", stage_cols(&owner.cols));
    let used = format!(
        "SELECT {ct} FROM {} AS c WHERE {}",
        child.stage,
        applies(owner)
    );
    let sql = format!(
        "INSERT OR IGNORE INTO {set} SELECT {} FROM {} AS m WHERE {} AND {mt} IN ({used})",
        sql::columns_of("m", parent_cols()),
        sql::main_table(&link.parent),
        ours.member_predicate(&link.parent, "m")?
    );
    let mut stmt = conn.prepare(&sql)?;
    let target = ctx.target();
    let params = tenant_params(&stmt, &target);
    stmt.execute(&*params)?;
    Ok(Some(set))
}
