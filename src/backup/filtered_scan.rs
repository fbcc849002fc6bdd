//! Join tables read in one scan, filtered by the ids of their parents.
//!
//! A join table such as `tags_tasks` belongs to the tenant through its
//! parents. The general way (scope.rs `MemberSets`) writes the keys of its
//! member rows into a temp table first: one B-tree insert per row, most of
//! the cost of backing up a large join table (0.3 s of CPU for 161k rows on
//! the benchmark). But the backup has just read every member row of the
//! parents, which come first in the dump. So while it dumps a parent it
//! keeps the parent's ids in a bitmap, and the join table is then read in
//! one pass in rowid order (the dump's order), keeping the rows that point
//! at a kept id: a scan of the whole table, cheap per row (30 ms for 485k
//! rows), and no temp table at all.
//!
//! Only where that is exact and pays off: a rowid table that no other
//! table's membership depends on (nobody needs its set), whose owners are
//! single-column references to INTEGER PRIMARY KEYs of tables dumped before
//! it, chosen by a condition on their rows (so their counts are known), of
//! which the tenant owns a large enough share for a scan of the whole join
//! table to beat one insert per member row. Parents' ids must fit a bitmap
//! of at most [`MOST_BITMAP_BYTES`].
//!
//! A row that also points at another tenant's parent is both tenants' and
//! is left out (see scope/shared.rs): for the tables that may hold such rows,
//! a link whose id is not one of ours is looked up in its parent (one seek,
//! and only for rows that do not point at our rows alone).

use crate::error::Result;
use crate::schema::{Schema, Table};
use crate::scope::{estimated_rows, MemberSets, Membership, Reference, Side, TenantScope};
use crate::sql;
use crate::value::SqlValue;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, Row, Statement};
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// Scan the whole join table when the tenant owns at least this share
/// (1/n) of a parent's rows: below it, one insert per member row into a
/// temp set costs less than stepping over everybody's rows (about 1 µs
/// against 60 ns a row, measured).
const SCAN_WHEN_SHARE_AT_LEAST: u64 = 8;

/// The largest bitmap of parent ids we keep: 2 MiB, ids up to 16 million
/// (two parents stay well inside the backup's memory budget). Larger tables
/// take the member sets.
const MOST_BITMAP_BYTES: u64 = 2 << 20;

/// The join tables read by a filtered scan, and the parents whose ids the
/// dump keeps for them.
#[derive(Default)]
pub(super) struct FilteredScans {
    /// Join table → the references that make its rows members.
    tables: BTreeMap<String, Vec<Reference>>,
    /// Parent table → its ids, filled while it is dumped.
    ids: BTreeMap<String, IdSet>,
    /// Parent table → a query (`?1` the tenant, `?2` an id) true when the
    /// id is another tenant's row, for the join tables whose rows may be
    /// shared ([`TenantScope::may_cross_tenants`]).
    theirs: BTreeMap<String, String>,
    /// Join tables whose rows may be shared.
    shared: BTreeSet<String>,
}

/// What a table's dump does besides writing rows.
pub(super) enum RowHook<'a> {
    None,
    /// Keep the id in column `index` (a parent of a filtered scan).
    KeepIds {
        index: usize,
        ids: &'a mut IdSet,
    },
    /// Write only the rows this filter keeps (a filtered scan).
    Filter(RowFilter<'a>),
}

impl FilteredScans {
    /// Choose the join tables to read this way. `counts[i]`: rows of the
    /// tenant in `scope.tables[i]`, for tables chosen by a condition on
    /// their rows; `shared`: [`TenantScope::may_cross_tenants`].
    pub fn plan(
        conn: &Connection,
        scope: &TenantScope,
        schema: &Schema,
        counts: &[Option<u64>],
        shared: &BTreeSet<String>,
    ) -> Result<FilteredScans> {
        let mut plan = FilteredScans::default();
        let depended_on = depended_on(scope);
        for (i, t) in scope.tables.iter().enumerate() {
            let Membership::Derived {
                owners,
                owned_by_children,
            } = &t.membership
            else {
                continue;
            };
            let Some(table) = schema.table(&t.name) else {
                continue;
            };
            if owners.is_empty()
                || !owned_by_children.is_empty()
                || depended_on.contains(t.name.as_str())
                || table.without_rowid
            {
                continue;
            }
            let place = Place {
                scope,
                counts,
                at: i,
            };
            let Some(parents) = scan_parents(conn, schema, place, table, owners)? else {
                continue;
            };
            plan.add(scope, schema, &t.name, owners, parents, shared)?;
        }
        Ok(plan)
    }

    /// Read `table` by a filtered scan over the ids of `parents`.
    fn add(
        &mut self,
        scope: &TenantScope,
        schema: &Schema,
        table: &str,
        owners: &[Reference],
        parents: Vec<(&String, u64)>,
        shared: &BTreeSet<String>,
    ) -> Result<()> {
        for (parent, rows) in parents {
            self.ids
                .entry(parent.clone())
                .or_insert_with(|| IdSet::with_max(rows));
        }
        if shared.contains(table) {
            self.shared.insert(table.to_string());
            for r in owners {
                let sql = their_row(scope, schema, r)?;
                self.theirs.insert(r.parent.clone(), sql);
            }
        }
        self.tables.insert(table.to_string(), owners.to_vec());
        Ok(())
    }

    /// The tables whose member sets are not needed.
    pub fn tables(&self) -> BTreeSet<String> {
        self.tables.keys().cloned().collect()
    }

    /// The columns through which `table`'s rows reference their parents.
    pub fn link_columns(&self, table: &str) -> Vec<String> {
        let mut columns: Vec<String> = self
            .tables
            .get(table)
            .into_iter()
            .flatten()
            .map(|r| r.columns[0].clone())
            .collect();
        columns.sort();
        columns.dedup();
        columns
    }

    pub fn is_filtered(&self, table: &str) -> bool {
        self.tables.contains_key(table)
    }

    /// The hook for dumping `table`, whose SELECT lists `columns`, on
    /// `conn` for `tenant`.
    pub fn hook<'h>(
        &'h mut self,
        conn: &'h Connection,
        table: &Table,
        columns: &[&str],
        tenant: &SqlValue,
    ) -> Result<RowHook<'h>> {
        if let Some(owners) = self.tables.get(&table.name) {
            let shared = self.shared.contains(&table.name);
            let mut checks = Vec::with_capacity(owners.len());
            for r in owners {
                let (Some(column), Some(ids)) = (
                    columns.iter().position(|c| *c == r.columns[0]),
                    self.ids.get(&r.parent),
                ) else {
                    continue;
                };
                let theirs = match self.theirs.get(&r.parent).filter(|_| shared) {
                    Some(sql) => Some(conn.prepare(sql)?),
                    None => None,
                };
                checks.push(Check {
                    column,
                    ids,
                    theirs,
                });
            }
            assert_eq!(checks.len(), owners.len(), "planned columns are selected");
            return Ok(RowHook::Filter(RowFilter {
                checks,
                tenant: tenant.clone(),
                left_out: 0,
            }));
        }
        let key = table
            .rowid_alias()
            .and_then(|k| columns.iter().position(|c| *c == k));
        Ok(match (self.ids.get_mut(&table.name), key) {
            (Some(ids), Some(index)) => RowHook::KeepIds { index, ids },
            _ => RowHook::None,
        })
    }
}

/// Tables some other table's membership depends on: they need their sets.
fn depended_on(scope: &TenantScope) -> BTreeSet<&str> {
    scope
        .tables
        .iter()
        .flat_map(|t| match &t.membership {
            Membership::Derived {
                owners,
                owned_by_children,
            } => owners
                .iter()
                .map(|r| r.parent.as_str())
                .chain(owned_by_children.iter().map(|r| r.table.as_str()))
                .collect(),
            _ => Vec::new(),
        })
        .collect()
}

/// Where a join table stands in the dump: its position in the scope's
/// order, and the tenant's row counts of the tables before it.
#[derive(Clone, Copy)]
struct Place<'a> {
    scope: &'a TenantScope,
    counts: &'a [Option<u64>],
    at: usize,
}

/// The parents of join table `table` and their estimated rows, when a
/// filtered scan reads it exactly and pays off: every owner a single
/// integer column referencing the INTEGER PRIMARY KEY of a table dumped
/// before it and chosen by a condition on its rows, whose ids fit a bitmap,
/// and of at least one of which the tenant owns a large share.
fn scan_parents<'r>(
    conn: &Connection,
    schema: &Schema,
    place: Place<'_>,
    table: &Table,
    owners: &'r [Reference],
) -> Result<Option<Vec<(&'r String, u64)>>> {
    let position = |name: &str| place.scope.tables.iter().position(|t| t.name == name);
    let mut large_share = false;
    let mut parents = Vec::with_capacity(owners.len());
    for r in owners {
        let Some(p) = position(&r.parent).filter(|&p| p < place.at) else {
            return Ok(None);
        };
        let (Some(parent), Some(Some(tenant_rows))) =
            (schema.table(&r.parent), place.counts.get(p))
        else {
            return Ok(None);
        };
        let [column] = r.columns.as_slice() else {
            return Ok(None);
        };
        // An INTEGER PRIMARY KEY holds integers only, and a column
        // of integer affinity stores every value that could equal
        // one as an integer: comparing integers is the fill's `=`.
        let integer_link = table
            .column(column)
            .is_some_and(|c| !c.generated && c.has_integer_affinity());
        if r.parent_columns.first().map(String::as_str) != parent.rowid_alias()
            || !integer_link
            || r.polymorphic.is_some()
        {
            return Ok(None);
        }
        let Some(parent_rows) = estimated_rows(conn, parent)? else {
            return Ok(None);
        };
        if parent_rows / 8 > MOST_BITMAP_BYTES || has_negative_rowids(conn, parent)? {
            return Ok(None);
        }
        large_share |= tenant_rows.saturating_mul(SCAN_WHEN_SHARE_AT_LEAST) >= parent_rows;
        parents.push((&r.parent, parent_rows));
    }
    Ok(large_share.then_some(parents))
}

/// `SELECT 1 FROM parent WHERE key = ?2 AND <another tenant's row>`.
fn their_row(scope: &TenantScope, schema: &Schema, r: &Reference) -> Result<String> {
    let theirs = MemberSets::unmaterialized(scope, schema, Side::OtherTenants);
    Ok(format!(
        "SELECT 1 FROM {} AS p WHERE {} = ?2 AND {}",
        sql::main_table(&r.parent),
        sql::Col::Named(&r.parent_columns[0]).of("p"),
        theirs.member_probe(&r.parent, "p")?
    ))
}

/// Whether some row of `table` has a negative rowid (one seek): such ids
/// would not fit the bitmap.
fn has_negative_rowids(conn: &Connection, table: &Table) -> Result<bool> {
    let sql = format!(
        "SELECT min(rowid) < 0 FROM {}",
        sql::main_table(&table.name)
    );
    Ok(conn
        .query_row(&sql, [], |r| r.get::<_, Option<bool>>(0))?
        .unwrap_or(false))
}

impl RowHook<'_> {
    /// Whether the dump writes this row; keeps its id when asked to.
    pub fn keeps(&mut self, row: &Row<'_>) -> Result<bool> {
        match self {
            RowHook::None => Ok(true),
            RowHook::KeepIds { index, ids } => {
                if let ValueRef::Integer(id) = row.get_ref(*index)? {
                    ids.insert(id);
                }
                Ok(true)
            }
            RowHook::Filter(filter) => filter.keeps(row),
        }
    }

    pub fn is_filter(&self) -> bool {
        matches!(self, RowHook::Filter(_))
    }

    /// Rows a filter left out because another tenant's row holds them too.
    pub fn left_out(&self) -> u64 {
        match self {
            RowHook::Filter(filter) => filter.left_out,
            _ => 0,
        }
    }
}

/// Keeps a join table's row when one of its references points at a kept
/// parent id, as the member-set fills would, and at no other tenant's row.
pub(super) struct RowFilter<'a> {
    checks: Vec<Check<'a>>,
    tenant: SqlValue,
    left_out: u64,
}

struct Check<'a> {
    column: usize,
    ids: &'a IdSet,
    /// Whether an id is another tenant's row (tables whose rows may be
    /// shared).
    theirs: Option<Statement<'a>>,
}

impl RowFilter<'_> {
    fn keeps(&mut self, row: &Row<'_>) -> Result<bool> {
        let id_of = |check: &Check<'_>| -> Result<Option<i64>> {
            Ok(match row.get_ref(check.column)? {
                ValueRef::Integer(id) => Some(id),
                _ => None,
            })
        };
        let mut ours = false;
        for check in &self.checks {
            ours |= id_of(check)?.is_some_and(|id| check.ids.contains(id));
        }
        if !ours {
            return Ok(false);
        }
        // Ours; unless a link we do not hold points at another tenant's
        // row (a row the ids kept cannot be: they hold all of ours).
        for check in &mut self.checks {
            let Some(id) = id_of(check)?.filter(|&id| !check.ids.contains(id)) else {
                continue;
            };
            if let Some(theirs) = check.theirs.as_mut() {
                if theirs.exists(rusqlite::params![self.tenant, id])? {
                    self.left_out += 1;
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}

/// A set of ids: a bitmap up to the table's largest rowid in the snapshot,
/// a hash set for any other (the plan leaves out tables with negative
/// rowids, so it stays empty; it is there so that no id is ever lost).
pub(super) struct IdSet {
    bits: Vec<u64>,
    others: HashSet<i64>,
}

impl IdSet {
    fn with_max(max: u64) -> IdSet {
        IdSet {
            bits: vec![0; (max / 64 + 1) as usize],
            others: HashSet::new(),
        }
    }

    fn slot(&self, id: i64) -> Option<(usize, u64)> {
        let word = usize::try_from(id / 64).ok()?;
        (id >= 0 && word < self.bits.len()).then(|| (word, 1u64 << (id % 64)))
    }

    fn insert(&mut self, id: i64) {
        match self.slot(id) {
            Some((word, bit)) => self.bits[word] |= bit,
            None => {
                self.others.insert(id);
            }
        }
    }

    fn contains(&self, id: i64) -> bool {
        match self.slot(id) {
            Some((word, bit)) => self.bits[word] & bit != 0,
            None => self.others.contains(&id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_in_and_out_of_the_bitmap() {
        let mut ids = IdSet::with_max(1000);
        for id in [0, 1, 63, 64, 999, 1000, 1001, -5, i64::MAX, i64::MIN] {
            assert!(!ids.contains(id));
            ids.insert(id);
            assert!(ids.contains(id), "{id}");
        }
        for id in [2, 62, 65, 998, 1002, -4, i64::MAX - 1] {
            assert!(!ids.contains(id), "{id}");
        }
    }
}
