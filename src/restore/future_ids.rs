//! References to ids nobody holds yet. A restored row may refer to a row
//! that does not exist (the app deleted it; or an edited archive aims at
//! the next id). Left alone, the next row SQLite hands that id to — maybe
//! another tenant's — would inherit the reference. The rule, for integer
//! references to a rowid table:
//!
//! - `AUTOINCREMENT` tables never hand out an id at or below
//!   `sqlite_sequence`: the write raises the sequence past every id the
//!   restored rows refer to ([`reserve`]).
//! - Other rowid tables hand out `max(rowid) + 1`: a reference above the
//!   table's largest id once the restore is written is refused
//!   ([`unreservable`]), in the plan and so in the dry run. (A reference
//!   to a hole below the largest id is taken only when the app deletes
//!   every row above it; tables that need more use `AUTOINCREMENT`, as
//!   Rails makes them.)
//!
//! Text and BLOB keys (UUIDs) are not handed out in sequence.

use super::plan::kept_as_is;
use super::stage::{Staged, StagedTable};
use super::{Conflict, Context};
use crate::error::Result;
use crate::scope::Reference;
use crate::sql;
use crate::value::SqlValue;
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
    aims_of(ctx, &table.name, &table.columns)
}

/// [`aims`] of the archive table `name` with stage columns `columns`.
fn aims_of<'r>(ctx: &'r Context<'_>, name: &str, columns: &[String]) -> Vec<Aim<'r>> {
    let position = |name: &str| columns.iter().position(|c| c == name);
    ctx.scope
        .references
        .iter()
        .filter(|r| r.table == name)
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

/// The largest integer in each stage column the checks of this file ask
/// about: every [`aims`] column (of its class, for polymorphic ones) and
/// the table's own rowid key. Noted while the rows are staged, one
/// comparison a value, so that neither the plan nor the write lock scans
/// a stage for them. A stage whose rows change after staging is asked
/// instead: with `new_ids` (which rewrites every stage) nothing is
/// watched, and a partial restore [`forget`](Self::forget)s what it
/// drops rows from.
#[derive(Default)]
pub(super) struct LargestStaged {
    watched: Vec<Watched>,
}

struct Watched {
    column: usize,
    /// Type column and class: only rows whose type column holds `class`.
    typed: Option<(usize, String)>,
    largest: Option<i64>,
}

impl LargestStaged {
    pub(super) fn for_table(ctx: &Context<'_>, name: &str, columns: &[String]) -> LargestStaged {
        if ctx.options.new_ids {
            return LargestStaged::default();
        }
        let mut watched: Vec<Watched> = aims_of(ctx, name, columns)
            .into_iter()
            .map(|aim| Watched {
                column: aim.column,
                typed: aim.typed.map(|(t, class)| (t, class.to_string())),
                largest: None,
            })
            .collect();
        let own_key = ctx.schema.table(name).and_then(|t| t.rowid_alias());
        if let Some(column) = own_key.and_then(|k| columns.iter().position(|c| c == k)) {
            watched.push(Watched {
                column,
                typed: None,
                largest: None,
            });
        }
        LargestStaged { watched }
    }

    /// Nothing noted any more: the stage lost rows (a partial restore keeps
    /// some), so the stage itself is asked.
    pub(super) fn forget(&mut self) {
        self.watched.clear();
    }

    /// One staged row, its values in stage column order.
    pub(super) fn observe(&mut self, row: &[SqlValue]) {
        for w in &mut self.watched {
            let SqlValue::Integer(id) = row[w.column] else {
                continue;
            };
            if let Some((t, class)) = &w.typed {
                if !matches!(&row[*t], SqlValue::Text(text) if text == class.as_bytes()) {
                    continue;
                }
            }
            w.largest = Some(w.largest.map_or(id, |l| l.max(id)));
        }
    }

    /// The largest integer noted for `column` (of `typed`'s class), or
    /// `None` when the column was not watched (then the stage is asked).
    fn of(&self, column: usize, typed: Option<(usize, &str)>) -> Option<Option<i64>> {
        self.watched
            .iter()
            .find(|w| {
                w.column == column && w.typed.as_ref().map(|(t, c)| (*t, c.as_str())) == typed
            })
            .map(|w| w.largest)
    }
}

/// The largest integer id the staged rows of `table` aim at through each
/// of `aims`, less the rows `skip` (an SQL condition on stage row `s`)
/// names. From what staging noted when it still holds (then, with a
/// `skip`, an upper bound: the caller asks the stage for the rows above
/// it); else one pass over the stage for all of them.
fn largest_aimed(
    conn: &Connection,
    table: &StagedTable,
    aims: &[&Aim<'_>],
    skip: &str,
) -> Result<Vec<Option<i64>>> {
    if aims.is_empty() {
        return Ok(Vec::new());
    }
    let noted: Option<Vec<Option<i64>>> = aims
        .iter()
        .map(|aim| table.largest.of(aim.column, aim.typed))
        .collect();
    if let Some(noted) = noted {
        return Ok(noted);
    }
    let columns = sql::list(aims.iter().map(|aim| {
        let c = sql::Col::Staged(aim.column).of("s");
        let typed = match aim.typed {
            Some((t, class)) => {
                format!(" AND {}", sql::class_is("s", sql::Col::Staged(t), class))
            }
            None => String::new(),
        };
        format!("max(CASE WHEN typeof({c}) = 'integer'{typed} THEN {c} END)")
    }));
    let sql = format!("SELECT {columns} FROM {} AS s WHERE 1{skip}", table.stage);
    Ok(conn.query_row(&sql, [], |r| (0..aims.len()).map(|i| r.get(i)).collect())?)
}

/// Answers per parent table, asked once each.
struct Cached<T>(BTreeMap<String, T>);

impl<T> Default for Cached<T> {
    fn default() -> Self {
        Cached(BTreeMap::new())
    }
}

impl<T: Copy> Cached<T> {
    fn get(&mut self, parent: &str, ask: impl FnOnce(&str) -> Result<T>) -> Result<T> {
        if let Some(v) = self.0.get(parent) {
            return Ok(*v);
        }
        let v = ask(parent)?;
        self.0.insert(parent.to_string(), v);
        Ok(v)
    }
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
/// and its staged rows' (the tenant's or shared).
fn largest_held(conn: &Connection, staged: &Staged, parent: &str, key: &str) -> Result<i64> {
    let now: Option<i64> = conn.query_row(
        &format!("SELECT max(rowid) FROM {}", sql::main_table(parent)),
        [],
        |r| r.get(0),
    )?;
    let mut largest = now.unwrap_or(0);
    // Shared rows the restore inserts count too (users a membership row
    // refers to).
    if let Some(t) = staged
        .tables
        .iter()
        .chain(&staged.shared)
        .find(|t| t.name == parent)
    {
        if let Some(k) = t.columns.iter().position(|c| c == key) {
            if let Some(theirs) = t.largest.of(k, None) {
                return Ok(largest.max(theirs.unwrap_or(0)));
            }
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

/// For the plan: rows that refer to an id above what a non-`AUTOINCREMENT`
/// table will hold, which its next insert would take. Rows the write
/// leaves as they are (`kept`: table → hits table) are not asked.
pub(super) fn unreservable(
    conn: &Connection,
    ctx: &Context<'_>,
    staged: &Staged,
    kept: &BTreeMap<String, String>,
) -> Result<Vec<Conflict>> {
    let mut conflicts = Vec::new();
    let mut autoincrement = Cached::default();
    let mut held = Cached::default();
    for table in &staged.tables {
        let skip = kept
            .get(&table.name)
            .map(|hits| format!(" AND NOT {}", kept_as_is(hits, "s")))
            .unwrap_or_default();
        let mut sequenced = Vec::new();
        for aim in aims(ctx, table) {
            if !autoincrement.get(&aim.reference.parent, |p| is_autoincrement(conn, p))? {
                sequenced.push(aim);
            }
        }
        let refs: Vec<&Aim<'_>> = sequenced.iter().collect();
        let largest = largest_aimed(conn, table, &refs, &skip)?;
        for (aim, aimed) in sequenced.iter().zip(largest) {
            let Some(aimed) = aimed else {
                continue;
            };
            let parent = &aim.reference.parent;
            let held = held.get(parent, |p| {
                largest_held(conn, staged, p, &aim.reference.parent_columns[0])
            })?;
            if aimed <= held {
                continue;
            }
            let c = sql::Col::Staged(aim.column).of("s");
            let sids: Vec<i64> = conn
                .prepare(&format!(
                    "SELECT s.rowid FROM {} AS s WHERE typeof({c}) = 'integer' AND {c} > ?1{skip} LIMIT 10",
                    table.stage
                ))?
                .query_map([held], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for key in table.describe_rows(conn, &sids)? {
                conflicts.push(Conflict {
                    table: table.name.clone(),
                    key,
                    reason: format!(
                        "{} refers to {parent} ids above {held}, which do not exist: the next {parent} row created, of any tenant, would take them",
                        aim.reference.columns[0]
                    ),
                });
            }
        }
    }
    Ok(conflicts)
}

/// In the write transaction: raise `sqlite_sequence` of every
/// `AUTOINCREMENT` table past the ids the restored rows refer to, so SQLite
/// never hands them to a new row.
pub(super) fn reserve(conn: &Connection, ctx: &Context<'_>, staged: &Staged) -> Result<()> {
    let mut wanted: BTreeMap<&str, i64> = BTreeMap::new();
    let mut autoincrement = Cached::default();
    for table in &staged.tables {
        let mut sequenced = Vec::new();
        for aim in aims(ctx, table) {
            if autoincrement.get(&aim.reference.parent, |p| is_autoincrement(conn, p))? {
                sequenced.push(aim);
            }
        }
        let refs: Vec<&Aim<'_>> = sequenced.iter().collect();
        let largest = largest_aimed(conn, table, &refs, "")?;
        for (aim, aimed) in sequenced.iter().zip(largest) {
            if let Some(aimed) = aimed {
                let slot = wanted.entry(aim.reference.parent.as_str()).or_insert(aimed);
                *slot = (*slot).max(aimed);
            }
        }
    }
    for (parent, aimed) in wanted {
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
