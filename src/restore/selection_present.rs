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

use super::selection::Link;
use super::stage::{Staged, StagedTable};
use super::Context;
use crate::error::Result;
use crate::sql;

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
    present: Option<String>,
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
            let mut sql = format!(
                "INSERT OR IGNORE INTO temp.tk_sel_{c} SELECT c.rowid FROM {} AS c WHERE {}{this}",
                staged.tables[*c].stage,
                applies(owner)
            );
            for (_, other) in owners.iter().enumerate().filter(|(j, _)| *j != k) {
                let satisfied = reached(staged, other).unwrap_or_else(|| "0".into());
                sql.push_str(&format!(" AND (NOT ({}1) OR {satisfied})", applies(other)));
            }
            fills.push(sql);
        }
    }
    Ok(fills)
}

/// `c.type = 'Class' AND c.col IS NOT NULL AND `: the row uses this owner.
fn applies(owner: &Owner<'_>) -> String {
    let mut out = String::new();
    if let Some((t, class)) = &owner.type_col {
        out.push_str(&format!("c.c{t} = {} AND ", sql::string(class)));
    }
    for c in &owner.cols {
        out.push_str(&format!("c.c{c} IS NOT NULL AND "));
    }
    out
}

/// `(…)`: the row's owner along this link is in play or present; None
/// when neither can be told (the parent is neither staged nor a table
/// with a tenant column).
fn reached(staged: &Staged, owner: &Owner<'_>) -> Option<String> {
    let ct = tuple("c", owner.cols.iter().map(|c| format!("c{c}")));
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
            let pt = tuple("p", pcs.iter().map(|c| format!("c{c}")));
            parts.push(format!(
                "{ct} IN (SELECT {pt} FROM temp.tk_sel_{p} AS x JOIN {} AS p ON p.rowid = x.sid)",
                parent.stage
            ));
        }
    }
    if let Some(set) = &owner.present {
        let keys = (0..owner.cols.len()).map(|k| format!("k{k}"));
        parts.push(format!(
            "{ct} IN (SELECT {} FROM {set})",
            keys.collect::<Vec<_>>().join(", ")
        ));
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
) -> Result<Option<String>> {
    let link = owner.link;
    let Some(parent) = ctx.scope.table(&link.parent) else {
        return Ok(None);
    };
    if !matches!(parent.membership, Membership::TenantColumn) {
        return Ok(None);
    }
    let set = format!("temp.tk_selo_{n}");
    let keys: Vec<String> = (0..link.parent_columns.len())
        .map(|k| format!("k{k}"))
        .collect();
    conn.execute_batch(&format!(
        "DROP TABLE IF EXISTS {set}; CREATE TEMP TABLE tk_selo_{n}({k}, PRIMARY KEY({k})) WITHOUT ROWID;",
        k = keys.join(", ")
    ))?;
    let ours = MemberSets::unmaterialized(ctx.scope, ctx.schema, Side::Ours);
    let mt = tuple("m", link.parent_columns.iter().map(|c| sql::ident(c)));
    let ct = tuple("c", owner.cols.iter().map(|c| format!("c{c}")));
    let used = format!(
        "SELECT {ct} FROM {} AS c WHERE {}1",
        child.stage,
        applies(owner)
    );
    let sql = format!(
        "INSERT OR IGNORE INTO {set} SELECT {} FROM {} AS m WHERE {} AND {mt} IN ({used})",
        link.parent_columns
            .iter()
            .map(|c| format!("m.{}", sql::ident(c)))
            .collect::<Vec<_>>()
            .join(", "),
        sql::main_table(&link.parent),
        ours.member_predicate(&link.parent, "m")?
    );
    let mut stmt = conn.prepare(&sql)?;
    let target = ctx.target();
    let params = tenant_params(&stmt, &target);
    stmt.execute(&*params)?;
    Ok(Some(set))
}

/// `alias.a` or `(alias.a, alias.b)`.
fn tuple(alias: &str, columns: impl Iterator<Item = String>) -> String {
    let list: Vec<String> = columns.map(|c| format!("{alias}.{c}")).collect();
    if list.len() == 1 {
        list[0].clone()
    } else {
        format!("({})", list.join(", "))
    }
}
