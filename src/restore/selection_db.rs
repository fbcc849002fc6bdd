//! The database side of a selection ([`super::selection`]), inside the
//! plan's transaction so it sees the snapshot the plan does:
//! - which of the tenant's rows a purge may delete: the selected tables'
//!   rows, or the rows that hang off a subtree's roots today, and the
//!   derived rows that follow them (`temp.tk_selp_<i>`, keyed like the
//!   member sets, per table of the scope);
//! - references out of the selection: a restored row that refers to a row
//!   neither selected nor present would dangle.

use super::plan::MAX_LISTED_CONFLICTS;
use super::selection::{fixpoint, links, Link, Mode, Selection};
use super::stage::Staged;
use super::{Conflict, Context};
use crate::error::Result;
use crate::sql::{self, Col, TempTable};

use crate::scope::{MemberSets, Membership};
use crate::value::SqlValue;
use rusqlite::Connection;

/// The purge's scope in scope table `index`: `temp.tk_selp_<index>`.
fn purge_set(index: usize) -> TempTable {
    TempTable::new("selp", index)
}

fn named(columns: &[String]) -> impl Iterator<Item = Col<'_>> {
    columns.iter().map(|c| Col::Named(c))
}

/// `k0, k1, …` of a set over `table`.
fn set_columns(ctx: &Context<'_>, table: &str) -> String {
    sql::key_columns(ctx.table(table).row_key().len())
}

/// SQL condition: the row `alias` of `table` is in the purge's scope.
fn in_set(ctx: &Context<'_>, index: usize, table: &str, alias: &str) -> String {
    format!(
        "{} IN (SELECT {} FROM {})",
        sql::row_value(alias, named(&ctx.table(table).row_key())),
        set_columns(ctx, table),
        purge_set(index)
    )
}

fn scope_index(ctx: &Context<'_>, table: &str) -> Option<usize> {
    ctx.scope.tables.iter().position(|t| t.name == table)
}

/// Fill the purge's scope for a selection: seeds (whole tables of the
/// tenant, or a subtree's roots), then every row that follows them today.
pub(super) fn mark_purge_scope(
    conn: &Connection,
    ctx: &Context<'_>,
    selection: &Selection,
    ours: &MemberSets<'_>,
) -> Result<()> {
    let target = ctx.target();
    for (i, t) in ctx.scope.tables.iter().enumerate() {
        let key = ctx.table(&t.name).row_key();
        conn.execute_batch(&purge_set(i).create_key_set(key.len()))?;
        let tenant_row = matches!(t.membership, Membership::TenantRow { .. });
        let head = format!(
            "INSERT OR IGNORE INTO {} SELECT {} FROM {} AS m WHERE {}",
            purge_set(i),
            sql::columns_of("m", named(&key)),
            sql::main_table(&t.name),
            ours.member_predicate(&t.name, "m")?
        );
        match &selection.mode {
            Mode::Tables(chosen) if chosen.contains(&t.name) && !tenant_row => {
                let mut stmt = conn.prepare(&head)?;
                let params = crate::scope::tenant_params(&stmt, &target);
                stmt.execute(&*params)?;
            }
            Mode::Subtree { table, roots } if table == &t.name => {
                let pk = ctx.table(table).primary_key();
                // ?1 is the tenant, the root's key follows.
                let matches = sql::params_match(Some("m"), pk.iter().map(|c| Col::Named(c)), 2);
                let mut stmt = conn.prepare(&format!("{head} AND {matches}"))?;
                for root in roots {
                    let mut params: Vec<&dyn rusqlite::ToSql> = vec![&target];
                    params.extend(root.iter().map(|v| v as &dyn rusqlite::ToSql));
                    stmt.execute(&*params)?;
                }
            }
            _ => {}
        }
    }
    let subtree = matches!(selection.mode, Mode::Subtree { .. });
    let fills: Vec<String> = links(ctx.scope, subtree)
        .iter()
        .filter(|l| !selection.excluded.contains(l.follower()))
        .filter_map(|l| fill(ctx, l))
        .collect();
    fixpoint(conn, &fills)
}

/// One step of the purge's scope along `link`, over the database.
fn fill(ctx: &Context<'_>, link: &Link) -> Option<String> {
    let (c, p) = (
        scope_index(ctx, &link.child)?,
        scope_index(ctx, &link.parent)?,
    );
    let typed = typed(link);
    let (ct, pt) = (
        sql::row_value("c", named(&link.columns)),
        sql::row_value("p", named(&link.parent_columns)),
    );
    Some(if link.up {
        format!(
            "INSERT OR IGNORE INTO {} SELECT {} FROM {} AS p WHERE {pt} IN (SELECT {ct} FROM {} AS c WHERE {typed}{})",
            purge_set(p),
            key_list(ctx, &link.parent, "p"),
            sql::main_table(&link.parent),
            sql::main_table(&link.child),
            in_set(ctx, c, &link.child, "c")
        )
    } else {
        format!(
            "INSERT OR IGNORE INTO {} SELECT {} FROM {} AS c WHERE {typed}{ct} IN (SELECT {pt} FROM {} AS p WHERE {})",
            purge_set(c),
            key_list(ctx, &link.child, "c"),
            sql::main_table(&link.child),
            sql::main_table(&link.parent),
            in_set(ctx, p, &link.parent, "p")
        )
    })
}

fn key_list(ctx: &Context<'_>, table: &str, alias: &str) -> String {
    sql::columns_of(alias, named(&ctx.table(table).row_key()))
}

/// `c."type" = 'Class' AND ` for a polymorphic link's child row `c`;
/// nothing for a plain one.
fn typed(link: &Link) -> String {
    match &link.polymorphic {
        Some((type_col, class)) => {
            format!("{} AND ", sql::class_is("c", Col::Named(type_col), class))
        }
        None => String::new(),
    }
}

/// SQL condition narrowing a purge of `table` (row `alias`) to the
/// selection: rows in its scope, and of a table that follows its children
/// (blobs) none that a row outside the scope still uses. `1` without a
/// selection.
pub(super) fn purge_filter(ctx: &Context<'_>, table: &str, alias: &str) -> String {
    let (Some(selection), Some(i)) = (ctx.selection, scope_index(ctx, table)) else {
        return "1".into();
    };
    let subtree = matches!(selection.mode, Mode::Subtree { .. });
    let mut out = in_set(ctx, i, table, alias);
    for link in links(ctx.scope, subtree)
        .iter()
        .filter(|l| l.up && l.parent == table)
    {
        let Some(c) = scope_index(ctx, &link.child) else {
            continue;
        };
        out.push_str(&format!(
            " AND NOT EXISTS (SELECT 1 FROM {} AS c WHERE {}{} = {} AND NOT {})",
            sql::main_table(&link.child),
            typed(link),
            sql::row_value("c", named(&link.columns)),
            sql::row_value(alias, named(&link.parent_columns)),
            in_set(ctx, c, &link.child, "c")
        ));
    }
    out
}

/// SQL condition: the hit `alias` (a row of the plan's hits table, its
/// database row's key in `k0, k1, …`) is a row the purge may delete. A
/// kept row spares one purged row only then: a row of the archive's
/// subtree that hangs elsewhere today is not in the purge's scope.
/// `1` without a selection.
pub(super) fn hit_in_purge_scope(ctx: &Context<'_>, table: &str, alias: &str) -> String {
    let (Some(_), Some(i)) = (ctx.selection, scope_index(ctx, table)) else {
        return "1".into();
    };
    let count = ctx.table(table).row_key().len();
    format!(
        "({}) IN (SELECT {} FROM {})",
        sql::columns_of(alias, sql::keys(count)),
        sql::key_columns(count),
        purge_set(i)
    )
}

/// References out of the selection that find no row: a restored row
/// refers (by a reference the scope knows, into the tenant's data) to a
/// row that is neither among the selected rows nor in the database.
/// Returns (count, the first of them as conflicts).
pub(super) fn dangling_references(
    conn: &Connection,
    ctx: &Context<'_>,
    staged: &Staged,
    listed_before: usize,
) -> Result<(u64, Vec<Conflict>)> {
    let mut count = 0u64;
    let mut listed = Vec::new();
    let tenants = ctx.scope.tenant_table().map(|t| t.name.as_str());
    let tenant_column = &ctx.scope.options.tenant_column;
    for table in &staged.tables {
        let references = ctx.scope.references.iter().filter(|r| {
            r.table == table.name
                && Some(r.parent.as_str()) != tenants
                && r.columns != [tenant_column.clone()]
                && ctx.scope.table(&r.parent).is_some()
        });
        for r in references {
            let pos = |c: &str| table.columns.iter().position(|x| x == c);
            let Some(cols) = r.columns.iter().map(|c| pos(c)).collect::<Option<Vec<_>>>() else {
                continue;
            };
            let typed = match &r.polymorphic {
                Some((type_col, class)) => match pos(type_col) {
                    Some(t) => format!("{} AND ", sql::class_is("s", Col::Staged(t), class)),
                    None => continue,
                },
                None => String::new(),
            };
            let staged_cols = || cols.iter().map(|&c| Col::Staged(c));
            let not_null = sql::not_null("s", staged_cols());
            let present = sql::key_match(
                "m",
                "s",
                named(&r.parent_columns).zip(staged_cols()),
                sql::Match::Equal,
            );
            let selected = selected_parent(conn, staged, &r.parent, &r.parent_columns, &cols)?;
            let sql = format!(
                "SELECT s.rowid, {values} FROM {stage} AS s WHERE {typed}{not_null}{selected} AND NOT EXISTS (SELECT 1 FROM {parent} AS m WHERE {present})",
                values = sql::columns_of("s", staged_cols()),
                stage = table.stage,
                parent = sql::main_table(&r.parent),
            );
            let mut stmt = conn.prepare(&sql)?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                count += 1;
                if listed_before + listed.len() >= MAX_LISTED_CONFLICTS {
                    continue;
                }
                let sid: i64 = row.get(0)?;
                let values: Vec<SqlValue> = (0..cols.len())
                    .map(|k| Ok(SqlValue::from_ref(row.get_ref(k + 1)?)))
                    .collect::<rusqlite::Result<_>>()?;
                listed.push(Conflict {
                    table: table.name.clone(),
                    key: table.describe_rows(conn, &[sid])?.remove(0),
                    reason: format!(
                        "its {} refers to {} {}, which is neither selected nor present",
                        r.columns.join(", "),
                        r.parent,
                        super::selection::describe_key(&values)
                    ),
                });
            }
        }
    }
    Ok((count, listed))
}

/// ` AND NOT EXISTS (…)`: the row referred to is not among the staged
/// (selected) rows of `parent`; nothing when the parent has none.
fn selected_parent(
    conn: &Connection,
    staged: &Staged,
    parent: &str,
    parent_columns: &[String],
    cols: &[usize],
) -> Result<String> {
    let Some(p) = staged.tables.iter().find(|t| t.name == parent) else {
        return Ok(String::new());
    };
    let Some(positions) = parent_columns
        .iter()
        .map(|pc| p.columns.iter().position(|c| c == pc))
        .collect::<Option<Vec<_>>>()
    else {
        return Ok(String::new());
    };
    // One lookup per referring row: the staged parent needs an index (named
    // as the plan names its own, so it is made once).
    conn.execute_batch(&p.stage.create_index_on(&positions))?;
    let join = sql::key_match(
        "p",
        "s",
        positions
            .iter()
            .zip(cols)
            .map(|(&pc, &c)| (Col::Staged(pc), Col::Staged(c))),
        sql::Match::Equal,
    );
    Ok(format!(
        " AND NOT EXISTS (SELECT 1 FROM {} AS p WHERE {join})",
        p.stage
    ))
}
