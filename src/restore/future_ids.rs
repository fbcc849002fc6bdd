//! References to ids nobody holds yet. A restored row may refer to a row
//! that does not exist (the app deleted it; or an edited archive aims at
//! the next id). Left alone, the next row SQLite hands that id to — maybe
//! another tenant's — would inherit the reference. The rule, for integer
//! references to a rowid table:
//!
//! - `AUTOINCREMENT` tables never hand out an id at or below
//!   `sqlite_sequence`: the write raises the sequence past every id the
//!   restored rows refer to ([`FutureIds::reserve`]).
//! - Other rowid tables hand out `max(rowid) + 1`: a reference above the
//!   table's largest id once the restore is written is refused
//!   ([`check`]), in the plan and so in the dry run. (A reference
//!   to a hole below the largest id is taken only when the app deletes
//!   every row above it; tables that need more use `AUTOINCREMENT`, as
//!   Rails makes them.)
//!
//! Text and BLOB keys (UUIDs) are not handed out in sequence.

use super::plan::kept_as_is;
use super::stage::{Staged, StagedTable};
use super::{Conflict, Context};
use crate::error::Result;
use crate::schema::main_table;
use crate::scope::Reference;
use rusqlite::{Connection, OptionalExtension};
use std::collections::BTreeMap;

/// One integer reference of a staged table to a rowid table.
struct Aim<'r> {
    reference: &'r Reference,
    /// Stage column of the reference, and of its type column with the
    /// class it must name (polymorphic references).
    column: usize,
    typed: Option<(usize, &'r str)>,
}

/// Integer references of `table` whose parent hands out ids in sequence.
fn aims<'r>(ctx: &'r Context<'_>, table: &StagedTable) -> Vec<Aim<'r>> {
    let position = |name: &str| table.columns.iter().position(|c| c == name);
    ctx.scope
        .references
        .iter()
        .filter(|r| r.table == table.name)
        .filter_map(|reference| {
            let ([column], [parent_key]) = (&reference.columns[..], &reference.parent_columns[..])
            else {
                return None;
            };
            let parent = ctx.schema.table(&reference.parent)?;
            if parent.rowid_alias() != Some(parent_key.as_str()) {
                return None;
            }
            let typed = match &reference.polymorphic {
                Some((type_column, class)) => Some((position(type_column)?, class.as_str())),
                None => None,
            };
            Some(Aim {
                reference,
                column: position(column)?,
                typed,
            })
        })
        .collect()
}

/// The largest integer id the staged rows of `table` aim at through
/// `aim`, less the rows `skip` (an SQL condition on stage row `s`) names.
fn largest_aimed(
    conn: &Connection,
    table: &StagedTable,
    aim: &Aim<'_>,
    skip: &str,
) -> Result<Option<i64>> {
    let c = aim.column;
    let typed = match aim.typed {
        Some((t, class)) => format!(" AND s.c{t} = '{}'", class.replace('\'', "''")),
        None => String::new(),
    };
    let sql = format!(
        "SELECT max(CASE WHEN typeof(s.c{c}) = 'integer' THEN s.c{c} END) FROM {} AS s WHERE 1{typed}{skip}",
        table.stage
    );
    Ok(conn.query_row(&sql, [], |r| r.get(0))?)
}

fn is_autoincrement(conn: &Connection, table: &str) -> Result<bool> {
    Ok(conn
        .query_row(
            "SELECT upper(sql) LIKE '%AUTOINCREMENT%' FROM main.sqlite_schema WHERE type = 'table' AND name = ?1",
            [table],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(false))
}

/// The largest id `parent` will hold once the restore is written: its own
/// and its staged rows'.
fn largest_held(conn: &Connection, staged: &Staged, parent: &str, key: &str) -> Result<i64> {
    let now: Option<i64> = conn.query_row(
        &format!("SELECT max(rowid) FROM {}", main_table(parent)),
        [],
        |r| r.get(0),
    )?;
    let mut largest = now.unwrap_or(0);
    if let Some(t) = staged.tables.iter().find(|t| t.name == parent) {
        if let Some(k) = t.columns.iter().position(|c| c == key) {
            let sql = format!(
                "SELECT max(CASE WHEN typeof(c{k}) = 'integer' THEN c{k} END) FROM {}",
                t.stage
            );
            let theirs: Option<i64> = conn.query_row(&sql, [], |r| r.get(0))?;
            largest = largest.max(theirs.unwrap_or(0));
        }
    }
    Ok(largest)
}

/// What one pass over the staged rows' integer references finds: the
/// rows that refer to an id above what a non-`AUTOINCREMENT` table will
/// hold (its next insert would take it), and the ids each `AUTOINCREMENT`
/// table must never hand out.
pub(super) struct FutureIds {
    /// Refused rows, for the plan (and so the dry run) and the write.
    pub conflicts: Vec<Conflict>,
    /// `AUTOINCREMENT` table → the largest id restored rows refer to.
    wanted: BTreeMap<String, i64>,
}

/// One pass over the references of every staged table, asking each parent
/// table once whether it is `AUTOINCREMENT`. Rows the write leaves as they
/// are (`kept`: table → hits table) are not refused.
pub(super) fn check(
    conn: &Connection,
    ctx: &Context<'_>,
    staged: &Staged,
    kept: &BTreeMap<String, String>,
) -> Result<FutureIds> {
    let mut found = FutureIds {
        conflicts: Vec::new(),
        wanted: BTreeMap::new(),
    };
    let mut autoincrement: BTreeMap<String, bool> = BTreeMap::new();
    for table in &staged.tables {
        let skip = kept
            .get(&table.name)
            .map(|hits| format!(" AND NOT {}", kept_as_is(hits, "s")))
            .unwrap_or_default();
        for aim in aims(ctx, table) {
            let parent = &aim.reference.parent;
            let sequenced = match autoincrement.get(parent) {
                Some(&known) => known,
                None => {
                    let known = is_autoincrement(conn, parent)?;
                    autoincrement.insert(parent.clone(), known);
                    known
                }
            };
            if sequenced {
                // Every row counts: a kept row's reference is reserved too.
                if let Some(aimed) = largest_aimed(conn, table, &aim, "")? {
                    let slot = found.wanted.entry(parent.clone()).or_insert(aimed);
                    *slot = (*slot).max(aimed);
                }
            } else {
                found
                    .conflicts
                    .extend(unreservable(conn, staged, table, &aim, &skip)?);
            }
        }
    }
    Ok(found)
}

/// The rows of `table` that refer through `aim` to an id above what its
/// (non-`AUTOINCREMENT`) parent will hold, less the rows `skip` names.
fn unreservable(
    conn: &Connection,
    staged: &Staged,
    table: &StagedTable,
    aim: &Aim<'_>,
    skip: &str,
) -> Result<Vec<Conflict>> {
    let parent = &aim.reference.parent;
    let Some(aimed) = largest_aimed(conn, table, aim, skip)? else {
        return Ok(Vec::new());
    };
    let held = largest_held(conn, staged, parent, &aim.reference.parent_columns[0])?;
    if aimed <= held {
        return Ok(Vec::new());
    }
    let c = aim.column;
    let sids: Vec<i64> = conn
        .prepare(&format!(
            "SELECT s.rowid FROM {} AS s WHERE typeof(s.c{c}) = 'integer' AND s.c{c} > ?1{skip} LIMIT 10",
            table.stage
        ))?
        .query_map([held], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(table
        .describe_rows(conn, &sids)?
        .into_iter()
        .map(|key| Conflict {
            table: table.name.clone(),
            key,
            reason: format!(
                "{} refers to {parent} ids above {held}, which do not exist: the next {parent} row created, of any tenant, would take them",
                aim.reference.columns[0]
            ),
        })
        .collect())
}

impl FutureIds {
    /// In the write transaction: raise `sqlite_sequence` of every
    /// `AUTOINCREMENT` table past the ids the restored rows refer to, so
    /// SQLite never hands them to a new row.
    pub(super) fn reserve(&self, conn: &Connection) -> Result<()> {
        for (parent, aimed) in &self.wanted {
            let raised = conn.execute(
                "UPDATE main.sqlite_sequence SET seq = ?2 WHERE name = ?1 AND seq < ?2",
                rusqlite::params![parent, aimed],
            )?;
            let present: bool = conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM main.sqlite_sequence WHERE name = ?1)",
                [parent],
                |r| r.get(0),
            )?;
            if raised == 0 && !present {
                conn.execute(
                    "INSERT INTO main.sqlite_sequence(name, seq) VALUES (?1, ?2)",
                    rusqlite::params![parent, aimed],
                )?;
            }
        }
        Ok(())
    }
}
