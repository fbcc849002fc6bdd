//! Partial and subtree restores (`only:` / `except:`): which rows of the
//! archive are in play, decided on the staged temp tables before the plan,
//! and which rows of the database a purge may touch, decided inside the
//! plan's transaction ([`super::selection_db`]).
//!
//! A selection names tables (`only: ["tags"]`, `except: ["users"]`) or
//! roots of a subtree (`only: {"projects": [17]}`). Rows follow it by the
//! references the scope knows ([`links`]):
//! - derived rows (join rows, attachments, variant records) follow the
//!   rows they hang off, and blobs follow the attachments that use them;
//! - in a subtree, every row that refers to a row of the subtree joins it
//!   (tasks of the project, their comments, time entries, subtasks…).
//!
//! Rows left out are deleted from the stage tables, which are then
//! compacted (stage rowids stay `1..=rows`, as the plan and the write
//! expect): from there on a partial restore is a restore of a smaller
//! archive, with every check of a whole one. What is new is a reference
//! out of the selection: it must find its row in the database
//! ([`super::selection_db::dangling_references`]).

use super::stage::{Staged, StagedTable};
use super::Context;
use crate::error::{Error, Result};
use crate::scope::{Membership, Reference, TenantScope};
use crate::sql::{self, Col, TempTable};
use crate::value::SqlValue;
use rusqlite::Connection;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// What the caller asked for, checked against this database's tenant data.
#[derive(Debug, Clone)]
pub(super) enum Mode {
    /// These tables' rows, and what hangs off them.
    Tables(BTreeSet<String>),
    /// These rows of one table (key values in primary-key order), and
    /// everything that hangs off them, transitively.
    Subtree {
        table: String,
        roots: Vec<Vec<SqlValue>>,
    },
}

/// The selection of a restore.
#[derive(Debug, Clone)]
pub(super) struct Selection {
    pub mode: Mode,
    /// Tables named in `except:`: nothing of theirs follows either.
    pub excluded: BTreeSet<String>,
    pub report: SelectionReport,
}

/// What was selected, in the restore's result (`selection`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SelectionReport {
    /// `"only"`, `"except"` or `"subtree"`.
    pub mode: String,
    /// The tables named (for a subtree: its root table).
    pub tables: Vec<String>,
    /// A subtree's root keys as given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roots: Vec<serde_json::Value>,
    /// Rows of the archive in play, per table: selected, or following
    /// what was.
    pub rows: BTreeMap<String, u64>,
    /// Rows of the archive left out, per table.
    pub left_out: BTreeMap<String, u64>,
}

impl Selection {
    /// The selection the options ask for, or None for a whole restore.
    /// Every name must be a table of the tenant's data here.
    pub fn from_options(ctx: &Context<'_>) -> Result<Option<Selection>> {
        let (only, except) = (&ctx.options.only, &ctx.options.except);
        let mut report = SelectionReport::default();
        let (mode, excluded) = match (only, except) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => {
                return Err(Error::argument(
                    "only: and except: cannot be combined: pass one of them",
                ))
            }
            (None, Some(except)) => {
                let excluded = table_names(ctx, "except", except)?;
                let chosen = ctx
                    .scope
                    .tables
                    .iter()
                    .filter(|t| !t.is_derived() && !excluded.contains(&t.name))
                    .map(|t| t.name.clone())
                    .collect();
                report.mode = "except".into();
                report.tables = excluded.iter().cloned().collect();
                (Mode::Tables(chosen), excluded)
            }
            (Some(serde_json::Value::Array(names)), None) => {
                let names: Vec<String> = names
                    .iter()
                    .map(|n| {
                        n.as_str().map(str::to_string).ok_or_else(|| {
                            Error::argument(format!("only: expected table names, got {n}"))
                        })
                    })
                    .collect::<Result<_>>()?;
                let chosen = table_names(ctx, "only", &names)?;
                report.mode = "only".into();
                report.tables = chosen.iter().cloned().collect();
                (Mode::Tables(chosen), BTreeSet::new())
            }
            (Some(serde_json::Value::Object(map)), None) => {
                let (table, roots) = subtree(ctx, map)?;
                report.mode = "subtree".into();
                report.tables = vec![table.clone()];
                report.roots = map
                    .values()
                    .flat_map(|v| v.as_array().cloned().unwrap_or_default())
                    .collect();
                (Mode::Subtree { table, roots }, BTreeSet::new())
            }
            (Some(other), None) => {
                return Err(Error::argument(format!(
                    "only: expected a list of table names or {{table => [keys]}}, got {other}"
                )))
            }
        };
        Ok(Some(Selection {
            mode,
            excluded,
            report,
        }))
    }

    fn is_subtree(&self) -> bool {
        matches!(self.mode, Mode::Subtree { .. })
    }

    /// Keep only the selected staged rows (and what follows them); tables
    /// left without a row are dropped from the restore.
    pub fn apply_to_stage(
        &mut self,
        conn: &Connection,
        ctx: &Context<'_>,
        staged: &mut Staged,
    ) -> Result<()> {
        for table in &staged.tables {
            conn.execute_batch(&selected(table).create_rowid_set())?;
        }
        self.seed_stage(conn, staged)?;
        // Rows follow selected rows to a fixpoint. In table mode a derived
        // row follows its owners when each is in play or present now.
        let links: Vec<Link> = links(ctx.scope, self.is_subtree())
            .into_iter()
            .filter(|l| !self.excluded.contains(l.follower()))
            .collect();
        let (owner_links, other_links): (Vec<&Link>, Vec<&Link>) =
            links.iter().partition(|l| !self.is_subtree() && !l.up);
        let mut fills: Vec<String> = other_links
            .iter()
            .filter_map(|l| stage_fill(staged, l))
            .collect();
        fills.extend(super::selection_present::derived_fills(
            conn,
            ctx,
            staged,
            &owner_links,
        )?);
        fixpoint(conn, &fills)?;
        self.compact(conn, ctx, staged)
    }

    /// The rows selected by name: whole tables, or a subtree's roots (each
    /// of which must be in the archive). The tenants row is always in play:
    /// it is created only when missing.
    fn seed_stage(&self, conn: &Connection, staged: &Staged) -> Result<()> {
        for table in &staged.tables {
            let whole = table.tenant_row
                || matches!(&self.mode, Mode::Tables(chosen) if chosen.contains(&table.name));
            if whole {
                conn.execute(
                    &format!(
                        "INSERT INTO {} SELECT rowid FROM {}",
                        selected(table),
                        table.stage
                    ),
                    [],
                )?;
            }
        }
        // A purge alone stages nothing: its roots are the database's.
        let Mode::Subtree { table, roots } = &self.mode else {
            return Ok(());
        };
        if staged.tables.is_empty() {
            return Ok(());
        }
        let found = staged.tables.iter().find(|t| &t.name == table);
        for root in roots {
            let added = match found {
                Some(t) if t.has_pk() => {
                    let matches = sql::params_match(None, t.pk.iter().map(|&c| Col::Staged(c)), 1);
                    conn.execute(
                        &format!(
                            "INSERT OR IGNORE INTO {} SELECT rowid FROM {} WHERE {matches}",
                            selected(t),
                            t.stage
                        ),
                        rusqlite::params_from_iter(root.iter()),
                    )?
                }
                _ => 0,
            };
            if added == 0 {
                return Err(Error::argument(format!(
                    "only: {table} {} is not in the archive",
                    describe_key(root)
                )));
            }
        }
        Ok(())
    }

    /// Rebuild each stage table from its selected rows, in archive order,
    /// so rowids are `1..=rows` again; record what was kept and left out.
    fn compact(&mut self, conn: &Connection, ctx: &Context<'_>, staged: &mut Staged) -> Result<()> {
        for table in staged.tables.iter_mut() {
            let kept = table.stage.sibling("kept");
            conn.execute_batch(&format!(
                "CREATE TEMP TABLE {kept_name} AS SELECT * FROM {stage} WHERE rowid IN (SELECT sid FROM {sel}) ORDER BY rowid;
                 DROP TABLE {stage};
                 ALTER TABLE {kept} RENAME TO {name};",
                kept_name = kept.name(),
                stage = table.stage,
                sel = selected(table),
                name = table.stage.name(),
            ))?;
            let kept: i64 =
                conn.query_row(&format!("SELECT count(*) FROM {}", table.stage), [], |r| {
                    r.get(0)
                })?;
            let left_out = table.rows - kept as u64;
            table.rows = kept as u64;
            if kept > 0 && !table.tenant_row {
                self.report.rows.insert(table.name.clone(), kept as u64);
            }
            if left_out > 0 {
                self.report.left_out.insert(table.name.clone(), left_out);
                table.largest.forget();
            }
        }
        staged.tables.retain(|t| t.rows > 0);
        staged.index_blob_keys(conn, ctx)
    }
}

/// The selected stage rowids of a staged table: `temp.tk_sel_<i>` beside
/// its `temp.tk_stage_<i>`.
pub(super) fn selected(table: &StagedTable) -> TempTable {
    table.stage.sibling("sel")
}

/// One step of the selection along `link`, over the staged rows
/// ([`selected`] holds the selected stage rowids of each staged table).
/// None when the archive does not carry both tables and the link's columns.
fn stage_fill(staged: &Staged, link: &Link) -> Option<String> {
    let index = |name: &str| staged.tables.iter().position(|t| t.name == name);
    let (c, p) = (index(&link.child)?, index(&link.parent)?);
    let (child, parent) = (&staged.tables[c], &staged.tables[p]);
    let pos = |t: &StagedTable, col: &str| t.columns.iter().position(|x| x == col);
    let cc: Vec<usize> = link
        .columns
        .iter()
        .map(|x| pos(child, x))
        .collect::<Option<_>>()?;
    let pc: Vec<usize> = link
        .parent_columns
        .iter()
        .map(|x| pos(parent, x))
        .collect::<Option<_>>()?;
    let typed = match &link.polymorphic {
        Some((type_col, class)) => {
            format!(
                "{} AND ",
                sql::class_is("c", Col::Staged(pos(child, type_col)?), class)
            )
        }
        None => String::new(),
    };
    let staged_cols = |cols: &[usize]| cols.iter().map(|&i| Col::Staged(i)).collect::<Vec<_>>();
    let (ct, pt) = (
        sql::row_value("c", staged_cols(&cc)),
        sql::row_value("p", staged_cols(&pc)),
    );
    let (ps, cs) = (parent.stage, child.stage);
    let (psel, csel) = (selected(parent), selected(child));
    Some(if link.up {
        // The parent row (a blob) follows a selected child (its attachment).
        format!(
            "INSERT OR IGNORE INTO {psel} SELECT p.rowid FROM {ps} AS p WHERE {pt} IN (SELECT {ct} FROM {csel} AS x JOIN {cs} AS c ON c.rowid = x.sid WHERE {typed}1)"
        )
    } else {
        format!(
            "INSERT OR IGNORE INTO {csel} SELECT c.rowid FROM {cs} AS c WHERE {typed}{ct} IN (SELECT {pt} FROM {psel} AS x JOIN {ps} AS p ON p.rowid = x.sid)"
        )
    })
}

/// Run `INSERT OR IGNORE` statements (without parameters) until none adds
/// a row.
pub(super) fn fixpoint(conn: &Connection, fills: &[String]) -> Result<()> {
    for _ in 0..10_000 {
        let mut grew = false;
        for sql in fills {
            grew |= conn.prepare_cached(sql)?.execute([])? > 0;
        }
        if !grew {
            return Ok(());
        }
    }
    Err(Error::internal("the selection did not converge"))
}

/// A reference along which rows follow the selection.
#[derive(Debug, Clone)]
pub(super) struct Link {
    pub child: String,
    pub columns: Vec<String>,
    pub parent: String,
    pub parent_columns: Vec<String>,
    pub polymorphic: Option<(String, String)>,
    /// The parent follows its children (a blob its attachments); else the
    /// child follows its parent.
    pub up: bool,
}

impl Link {
    fn new(r: &Reference, up: bool) -> Link {
        Link {
            child: r.table.clone(),
            columns: r.columns.clone(),
            parent: r.parent.clone(),
            parent_columns: r.parent_columns.clone(),
            polymorphic: r.polymorphic.clone(),
            up,
        }
    }

    /// The table whose rows this link adds.
    pub fn follower(&self) -> &str {
        if self.up {
            &self.parent
        } else {
            &self.child
        }
    }
}

/// The references rows follow: a derived row the rows that make it the
/// tenant's (its owners; a blob the attachments that use it), and in a
/// subtree every row the rows it refers to, by every reference the scope
/// knows (declared, Rails naming, hints, polymorphic), except the tenant
/// column and references to the tenants row, which every row has.
pub(super) fn links(scope: &TenantScope, subtree: bool) -> Vec<Link> {
    let tenants = scope.tenant_table().map(|t| t.name.clone());
    let tenant_column = &scope.options.tenant_column;
    let mut out = Vec::new();
    for t in &scope.tables {
        match &t.membership {
            Membership::TenantRow { .. } => {}
            Membership::Derived {
                owners,
                owned_by_children,
            } => {
                out.extend(owners.iter().map(|r| Link::new(r, false)));
                out.extend(owned_by_children.iter().map(|r| Link::new(r, true)));
            }
            Membership::TenantColumn if subtree => {
                out.extend(
                    scope
                        .references
                        .iter()
                        .filter(|r| r.table == t.name && r.columns != [tenant_column.clone()])
                        .filter(|r| scope.table(&r.parent).is_some_and(|p| !p.is_derived()))
                        .map(|r| Link::new(r, false)),
                );
            }
            // Shared tables are never in `scope.tables`; their missing rows
            // are inserted whatever the selection (never updated or purged).
            Membership::TenantColumn | Membership::Shared { .. } => {}
        }
    }
    out.retain(|l| Some(&l.parent) != tenants.as_ref() && Some(&l.child) != tenants.as_ref());
    out
}

/// Names of `option` checked: tables of the tenant's data, not its
/// tenants table (created when missing whatever the selection).
fn table_names(ctx: &Context<'_>, option: &str, names: &[String]) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for name in names {
        match ctx.scope.table(name) {
            None => {
                let known: Vec<&str> = ctx.scope.tables.iter().map(|t| t.name.as_str()).collect();
                return Err(Error::argument(format!(
                    "{option}: {name:?} is not a table of the tenant's data in this database (those are: {})",
                    known.join(", ")
                )));
            }
            Some(t) if matches!(t.membership, Membership::TenantRow { .. }) => {
                return Err(Error::argument(format!(
                    "{option}: {name:?} is the tenants table, which a restore creates when missing and never selects"
                )));
            }
            Some(_) => {
                out.insert(name.clone());
            }
        }
    }
    if out.is_empty() {
        return Err(Error::argument(format!(
            "{option}: name at least one table"
        )));
    }
    Ok(out)
}

/// `{"projects": [17, 18]}`: one table with a primary key; each key a
/// value in the archive's JSON form (`17`, `"a1"`, `{"$base64": "…"}`),
/// or for a key over several columns an array of them in key order.
fn subtree(
    ctx: &Context<'_>,
    map: &serde_json::Map<String, serde_json::Value>,
) -> Result<(String, Vec<Vec<SqlValue>>)> {
    let [(table, keys)] = map.iter().collect::<Vec<_>>()[..] else {
        return Err(Error::argument(
            "only: a subtree has one root table: {table => [keys]}",
        ));
    };
    table_names(ctx, "only", std::slice::from_ref(table))?;
    let pk: Vec<&str> = ctx.table(table).primary_key();
    if pk.is_empty() {
        return Err(Error::argument(format!(
            "only: {table} has no primary key: select its rows through a table they refer to"
        )));
    }
    let Some(keys) = keys.as_array().filter(|k| !k.is_empty()) else {
        return Err(Error::argument(format!(
            "only: {table}: expected a non-empty list of keys, got {keys}"
        )));
    };
    let value = |v: &serde_json::Value| -> Result<SqlValue> {
        serde_json::from_value(v.clone())
            .map_err(|e| Error::argument(format!("only: {table}: key {v}: {e}")))
    };
    let roots = keys
        .iter()
        .map(|k| match (k, pk.len()) {
            (serde_json::Value::Array(parts), n) if parts.len() == n && n > 1 => {
                parts.iter().map(value).collect()
            }
            (k, 1) if !k.is_array() && !k.is_null() => Ok(vec![value(k)?]),
            _ => Err(Error::argument(format!(
                "only: {table}: key {k} does not fit its primary key ({}): {}",
                pk.join(", "),
                if pk.len() > 1 {
                    "pass an array of values in that order"
                } else {
                    "pass one value"
                }
            ))),
        })
        .collect::<Result<_>>()?;
    Ok((table.clone(), roots))
}

/// `17` or `(1, "a")`, for messages.
pub(super) fn describe_key(values: &[SqlValue]) -> String {
    match values {
        [one] => one.describe(),
        many => format!(
            "({})",
            many.iter()
                .map(SqlValue::describe)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Whether the archive's blob file `key` is in play: its blob row is
/// staged (always, without a selection).
pub(super) fn carries_blob(
    conn: &Connection,
    ctx: &Context<'_>,
    staged: &Staged,
    key: &str,
) -> Result<bool> {
    if ctx.selection.is_none() {
        return Ok(true);
    }
    let Some(table) = staged
        .tables
        .iter()
        .find(|t| crate::scope::is_blob_table(&t.name))
    else {
        return Ok(false);
    };
    let Some(k) = table.columns.iter().position(|c| c == "key") else {
        return Ok(false);
    };
    Ok(conn
        .prepare_cached(&format!(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE c{k} = ?1)",
            table.stage
        ))?
        .query_row([key], |r| r.get(0))?)
}
