//! The checks of [`Mode::Targeted`](super::Mode::Targeted): with foreign
//! keys off for the write, the references this transaction changed are
//! checked before commit, and a violation is the error SQLite's own
//! commit-time check gives.

use super::{ForeignKey, ForeignKeyGuard};
use crate::error::{Error, Result};
use crate::restore::stage::StagedTable;
use crate::sql;
use rusqlite::Connection;

/// How many violations a refusal names.
const LISTED: i64 = 10;

impl ForeignKeyGuard {
    /// Child rows (any tenant's) that refer to a purged key no row holds
    /// any more.
    pub(super) fn references_to_gone(&self, conn: &Connection) -> Result<Vec<String>> {
        let mut found = Vec::new();
        for key in &self.keys {
            let columns: Vec<String> = key.columns.iter().map(|c| c.parent.clone()).collect();
            let Some(gone) = self.gone.get(&(key.parent.to_lowercase(), columns)) else {
                continue;
            };
            let matched = sql::all_of(
                key.columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("g.k{i} = c.{}", sql::ident(&c.child))),
            );
            let sql = format!(
                "SELECT {} FROM {gone} AS g, {} AS c WHERE {matched} AND NOT {} LIMIT {LISTED}",
                described(key, &child_columns(key, "c")),
                sql::main_table(&key.child),
                parent_exists(key, "c")
            );
            found.extend(collect(conn, &sql)?);
        }
        Ok(found)
    }

    /// Written rows whose references find no parent. The staged values are
    /// the written ones (the parent's affinity applies to both alike).
    pub(super) fn references_of_written(
        &self,
        conn: &Connection,
        written: &[(&StagedTable, String)],
    ) -> Result<Vec<String>> {
        let mut found = Vec::new();
        for (table, was_written) in written {
            for key in self
                .keys
                .iter()
                .filter(|k| k.child.eq_ignore_ascii_case(&table.name))
            {
                let Some(staged) = staged_key(key, table) else {
                    continue; // a column the archive leaves to its default
                };
                let present = sql::all_of(staged.iter().map(|c| format!("{c} IS NOT NULL")));
                let parent = sql::all_of(
                    key.columns
                        .iter()
                        .zip(&staged)
                        .map(|(c, s)| format!("p.{} = {s}", sql::ident(&c.parent))),
                );
                let sql = format!(
                    "SELECT {} FROM {} AS s WHERE {was_written} AND {present} \
                     AND NOT EXISTS (SELECT 1 FROM {} AS p WHERE {parent}) LIMIT {LISTED}",
                    described(key, &staged),
                    table.stage,
                    sql::main_table(&key.parent),
                );
                found.extend(collect(conn, &sql)?);
            }
        }
        Ok(found)
    }
}

/// A child row's key as text for a message, `time_entries task_id ->
/// tasks=5`, from the SQL expressions holding its columns' values.
fn described(key: &ForeignKey, values: &[String]) -> String {
    let head = format!(
        "{} {} -> {}=",
        key.child,
        key.columns
            .iter()
            .map(|c| c.child.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        key.parent
    );
    let values = values
        .iter()
        .map(|v| format!("quote({v})"))
        .collect::<Vec<_>>()
        .join(" || ', ' || ");
    format!("{} || {values}", sql::string(&head))
}

/// `alias."col"` for each child column of `key`.
fn child_columns(key: &ForeignKey, alias: &str) -> Vec<String> {
    key.columns
        .iter()
        .map(|c| sql::Col::Named(&c.child).of(alias))
        .collect()
}

/// SQL condition: the parent row that child row `alias` refers to exists.
fn parent_exists(key: &ForeignKey, alias: &str) -> String {
    let matched = sql::all_of(key.columns.iter().map(|c| {
        format!(
            "p.{} = {alias}.{}",
            sql::ident(&c.parent),
            sql::ident(&c.child)
        )
    }));
    format!(
        "EXISTS (SELECT 1 FROM {} AS p WHERE {matched})",
        sql::main_table(&key.parent)
    )
}

/// The staged columns (`s.c<i>`) holding `key`'s child columns, if the
/// archive has them all.
fn staged_key(key: &ForeignKey, table: &StagedTable) -> Option<Vec<String>> {
    key.columns
        .iter()
        .map(|c| {
            table
                .columns
                .iter()
                .position(|n| n.eq_ignore_ascii_case(&c.child))
                .map(|i| sql::Col::Staged(i).of("s"))
        })
        .collect()
}

fn collect(conn: &Connection, sql: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// The error SQLite's own check at commit gives (see `apply::commit`).
pub(super) fn broken_references(found: &[String]) -> Error {
    let named: Vec<&str> = found
        .iter()
        .take(LISTED as usize)
        .map(String::as_str)
        .collect();
    Error::integrity(format!(
        "the restored rows break foreign keys: {}; nothing was changed",
        named.join(", ")
    ))
}
