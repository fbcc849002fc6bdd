//! Materialised membership: for every derived table, a temp table of the
//! keys of its member rows (`tk_ours_<i>`, `tk_others_<i>`,
//! `tk_theirs_<i>`), computed to a fixpoint inside the caller's
//! transaction (so it sees the same snapshot as the reads that follow),
//! and the SQL predicates that test a row's membership.

use super::candidates::Candidates;
use super::fill::{create_key_table, key_match, run_to_fixpoint, schema_table, Fill, FillPlan};
use super::{Membership, Reference, ScopedTable, TenantScope};
use crate::error::{Error, Result};
use crate::schema::{Schema, Table};
use crate::sql::{self, Col, TempTable};
use crate::value::SqlValue;
use rusqlite::Connection;
use std::collections::BTreeSet;

/// Whose rows a [`MemberSets`] describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Rows of the tenant `?1`.
    Ours,
    /// Rows of any other tenant (tenant column different or NULL). A row
    /// that is in neither set (an orphaned blob) belongs to nobody.
    Others,
    /// Rows another tenant's backup carries: reached from rows whose tenant
    /// column holds another tenant, not NULL (a row of no tenant is in
    /// nobody's backup). See [`shared`](super::shared).
    OtherTenants,
}

pub struct MemberSets<'a> {
    pub(super) scope: &'a TenantScope,
    pub(super) schema: &'a Schema,
    pub(super) side: Side,
    /// Made for the whole tenant ([`MemberSets::materialize`]), not only
    /// for some candidates.
    pub(super) whole: bool,
}

impl<'a> MemberSets<'a> {
    /// Compute the sets on `conn` (temp tables live in the connection's temp
    /// schema, which is writable even inside a read transaction).
    pub fn materialize(
        conn: &Connection,
        scope: &'a TenantScope,
        schema: &'a Schema,
        tenant_id: &crate::TenantId,
        side: Side,
    ) -> Result<MemberSets<'a>> {
        Self::build(conn, scope, schema, tenant_id, side, None, &BTreeSet::new())
    }

    /// The sets of every derived table but those in `without`, which no
    /// other table's membership may depend on (a backup reads those its
    /// own way: backup/filtered_scan.rs).
    pub fn materialize_without(
        conn: &Connection,
        scope: &'a TenantScope,
        schema: &'a Schema,
        tenant_id: &crate::TenantId,
        side: Side,
        without: &BTreeSet<String>,
    ) -> Result<MemberSets<'a>> {
        Self::build(conn, scope, schema, tenant_id, side, None, without)
    }

    /// The same sets, but only for the candidates' rows (and what their
    /// membership depends on): exact for those rows, silent about the
    /// rest. Extends the candidates to that closure.
    pub fn materialize_within(
        conn: &Connection,
        scope: &'a TenantScope,
        schema: &'a Schema,
        tenant_id: &crate::TenantId,
        side: Side,
        candidates: &Candidates<'_>,
    ) -> Result<MemberSets<'a>> {
        candidates.close(conn)?;
        let within = Some(candidates);
        Self::build(
            conn,
            scope,
            schema,
            tenant_id,
            side,
            within,
            &BTreeSet::new(),
        )
    }

    fn build(
        conn: &Connection,
        scope: &'a TenantScope,
        schema: &'a Schema,
        tenant_id: &crate::TenantId,
        side: Side,
        within: Option<&Candidates<'_>>,
        without: &BTreeSet<String>,
    ) -> Result<MemberSets<'a>> {
        let sets = MemberSets {
            scope,
            schema,
            side,
            whole: within.is_none(),
        };
        let wanted = scope
            .tables
            .iter()
            .enumerate()
            .filter(|(_, t)| !without.contains(&t.name));
        for (i, t) in wanted.clone() {
            if let Membership::Derived { .. } = t.membership {
                create_key_table(conn, sets.set(i), sets.schema_table(&t.name)?)?;
            }
        }
        let mut fills: Vec<Fill> = Vec::new();
        for (i, t) in wanted {
            fills.extend(sets.fill_statements(conn, i, t, within)?);
        }
        // Statements fed by tenant-column tables go first.
        fills.sort_by_key(|f| scope.table(&f.source).is_some_and(ScopedTable::is_derived));
        run_to_fixpoint(conn, &fills, &tenant_id.to_sql_value())?;
        Ok(sets)
    }

    /// A handle without sets: good for the tables whose membership is a
    /// condition on the row (tenant column, tenants row) only.
    pub fn unmaterialized(
        scope: &'a TenantScope,
        schema: &'a Schema,
        side: Side,
    ) -> MemberSets<'a> {
        MemberSets {
            scope,
            schema,
            side,
            whole: false,
        }
    }

    pub(super) fn schema_table(&self, name: &str) -> Result<&'a Table> {
        schema_table(self.schema, name)
    }

    /// The key table of derived table `index` on this side.
    pub(super) fn set(&self, index: usize) -> TempTable {
        let kind = match self.side {
            Side::Ours => "ours",
            Side::Others => "others",
            Side::OtherTenants => "theirs",
        };
        TempTable::new(kind, index)
    }

    /// One INSERT per reference that can make a row of `t` a member. Over
    /// the whole table, a single column reference from `t` to a member
    /// parent is found the cheapest way we can tell (see [`FillPlan`]);
    /// other links are written `c.col IN (SELECT …)`, so SQLite walks the
    /// child's index from the (small) parent set instead of scanning the
    /// whole child table for every tenant. Within candidates, the
    /// candidates drive instead, each probing its parent or children.
    pub(super) fn fill_statements(
        &self,
        conn: &Connection,
        index: usize,
        t: &ScopedTable,
        within: Option<&Candidates<'_>>,
    ) -> Result<Vec<Fill>> {
        let Membership::Derived {
            owners,
            owned_by_children,
        } = &t.membership
        else {
            return Ok(Vec::new());
        };
        let fills = TableFills::new(self, index, &t.name, within)?;
        let mut out = Vec::new();
        for r in owners {
            out.push(fills.through_owner(conn, r)?);
        }
        // A child owns the row only through rows of its type: a preview
        // attachment's `record_id` is a blob id, a task attachment's is not.
        for r in owned_by_children {
            out.push(fills.through_child(r)?);
        }
        Ok(out)
    }

    /// SQL condition true for member rows of `table` under `alias`; the
    /// tenant id is parameter `?1`. Written `key IN (SELECT … FROM set)`,
    /// which lets SQLite drive a query from the (small) member set: use it
    /// in WHERE clauses that select many rows.
    pub fn member_predicate(&self, table: &str, alias: &str) -> Result<String> {
        self.predicate(table, alias, false)
    }

    /// The same condition written as a correlated `EXISTS` probe of the
    /// set's primary key: use it to test one row at a time (a result column
    /// evaluated per row, an upsert's WHERE). An `IN (SELECT …)` there would
    /// rebuild the whole list on every execution.
    pub fn member_probe(&self, table: &str, alias: &str) -> Result<String> {
        self.predicate(table, alias, true)
    }

    /// How many rows of derived `table` are members, read off a set made
    /// for the whole tenant (it holds exactly their keys); None for the
    /// other tables and for sets made within candidates.
    pub fn member_count(&self, conn: &Connection, table: &str) -> Result<Option<u64>> {
        let Some(index) = self.scope.derived_index(table).filter(|_| self.whole) else {
            return Ok(None);
        };
        let sql = format!("SELECT count(*) FROM {}", self.set(index));
        Ok(Some(
            conn.query_row(&sql, [], |r| r.get::<_, i64>(0))? as u64
        ))
    }

    /// Whether the set of derived `table` has no row (false for tables
    /// without a set): a probe of an empty set can be skipped.
    pub fn set_is_empty(&self, conn: &Connection, table: &str) -> Result<bool> {
        let Some(index) = self.scope.derived_index(table) else {
            return Ok(false);
        };
        let sql = format!("SELECT NOT EXISTS (SELECT 1 FROM {})", self.set(index));
        Ok(conn.query_row(&sql, [], |r| r.get(0))?)
    }

    /// For derived tables, a probe of the set by a row key already at hand:
    /// true when `alias.k0, alias.k1, …` (columns holding the values of
    /// [`Table::row_key`]) name a member. None for the other tables, whose
    /// membership is a condition on the row itself.
    pub fn key_probe(&self, table: &str, alias: &str) -> Option<String> {
        let index = self.scope.derived_index(table)?;
        let width = self.schema.table(table)?.row_key().len();
        let pairs = (0..width).map(|k| (Col::Key(k), Col::Key(k)));
        Some(format!(
            "EXISTS (SELECT 1 FROM {} AS s WHERE {})",
            self.set(index),
            sql::key_match("s", alias, pairs, sql::Match::Equal)
        ))
    }

    fn predicate(&self, table: &str, alias: &str, probe: bool) -> Result<String> {
        let (index, scoped) = self
            .scope
            .tables
            .iter()
            .enumerate()
            .find(|(_, t)| t.name == table)
            .ok_or_else(|| Error::internal(format!("{table} is not in the tenant scope")))?;
        let test = match self.side {
            Side::Ours => "=",
            Side::Others => "IS NOT",
            Side::OtherTenants => "<>",
        };
        Ok(match &scoped.membership {
            Membership::TenantRow { key } => format!("{} {test} ?1", Col::Named(key).of(alias)),
            Membership::TenantColumn => format!(
                "{} {test} ?1",
                Col::Named(&self.scope.options.tenant_column).of(alias)
            ),
            Membership::Shared { .. } => {
                return Err(Error::internal(format!(
                    "{table} holds shared rows, no member set"
                )))
            }
            Membership::Derived { .. } => {
                let key = self.schema_table(table)?.row_key();
                self.set_predicate(index, &key, alias, probe)
            }
        })
    }

    /// Whether the row under `alias` (key columns `key`) is in set `index`.
    fn set_predicate(&self, index: usize, key: &[String], alias: &str, probe: bool) -> String {
        let set = self.set(index);
        if probe {
            return format!(
                "EXISTS (SELECT 1 FROM {set} AS s WHERE {})",
                key_match(key, "s", alias)
            );
        }
        let lhs = sql::column_list_of(alias, key);
        let ks = sql::key_columns(key.len());
        if key.len() == 1 {
            format!("{lhs} IN (SELECT {ks} FROM {set})")
        } else {
            format!("({lhs}) IN (SELECT {ks} FROM {set})")
        }
    }
}

/// The fill statements of one derived table: what they share.
struct TableFills<'s, 'a> {
    sets: &'s MemberSets<'a>,
    index: usize,
    table: &'s str,
    within: Option<&'s Candidates<'s>>,
    /// The table's row key under `c`: what every fill inserts.
    key: String,
    /// `INSERT … SELECT <key> FROM <table> AS c … WHERE `.
    head: String,
}

impl<'s, 'a> TableFills<'s, 'a> {
    fn new(
        sets: &'s MemberSets<'a>,
        index: usize,
        table: &'s str,
        within: Option<&'s Candidates<'s>>,
    ) -> Result<Self> {
        let row_key = sets.schema_table(table)?.row_key();
        let key = sql::column_list_of("c", &row_key);
        let set = sets.set(index);
        let head = match within {
            None => format!(
                "INSERT OR IGNORE INTO {set} SELECT {key} FROM {} AS c WHERE ",
                sql::main_table(table)
            ),
            // CROSS JOIN keeps the candidates as the outer loop.
            Some(candidates) => format!(
                "INSERT OR IGNORE INTO {set} SELECT {key} FROM {} AS k CROSS JOIN {} AS c ON {} WHERE ",
                candidates.set(index),
                sql::main_table(table),
                key_match(&row_key, "k", "c")
            ),
        };
        Ok(TableFills {
            sets,
            index,
            table,
            within,
            key,
            head,
        })
    }

    /// Rows of the table that reference a member row of `r.parent`.
    fn through_owner(&self, conn: &Connection, r: &Reference) -> Result<Fill> {
        let typed = type_condition(r, "c");
        let plan = match (
            self.within,
            r.columns.as_slice(),
            r.parent_columns.as_slice(),
        ) {
            (None, [c], [p]) => FillPlan::choose(conn, self.sets.schema, r, c, p)?,
            _ => FillPlan::ParentList,
        };
        let head = &self.head;
        let sql = match plan {
            FillPlan::ParentList => format!(
                "{head}{typed}{}",
                self.link(&r.columns, &r.parent_columns, &r.parent, "p", "")?
            ),
            FillPlan::ProbeParent => format!(
                "{head}{typed}{}",
                self.probe_link(&r.columns, &r.parent_columns, &r.parent, "p", "")?
            ),
            // CROSS JOIN keeps the parents as the outer loop.
            FillPlan::JoinFromParents => format!(
                "INSERT OR IGNORE INTO {set} SELECT {key} FROM {parent} AS p CROSS JOIN {child} AS c ON {on} WHERE {typed}{member}",
                set = self.sets.set(self.index),
                key = self.key,
                parent = sql::main_table(&r.parent),
                child = sql::main_table(self.table),
                on = sql::key_match(
                    "c",
                    "p",
                    [(Col::Named(&r.columns[0]), Col::Named(&r.parent_columns[0]))],
                    sql::Match::Equal
                ),
                member = self.sets.member_predicate(&r.parent, "p")?
            ),
        };
        Ok(Fill {
            target: self.table.to_string(),
            source: r.parent.clone(),
            sql,
        })
    }

    /// Rows of the table (the blobs) that a member row of `r.table` of the
    /// reference's type refers to.
    fn through_child(&self, r: &Reference) -> Result<Fill> {
        let typed = type_condition(r, "x");
        let link = self.link(&r.parent_columns, &r.columns, &r.table, "x", &typed)?;
        Ok(Fill {
            target: self.table.to_string(),
            source: r.table.clone(),
            sql: format!("{}{link}", self.head),
        })
    }

    /// `c` is linked to a member row of `other`, probed row by row;
    /// `typed` restricts the rows of `other` (a child's type column).
    fn probe_link(
        &self,
        c_cols: &[String],
        other_cols: &[String],
        other: &str,
        alias: &str,
        typed: &str,
    ) -> Result<String> {
        let member = self.sets.member_probe(other, alias)?;
        let pairs = other_cols.iter().zip(c_cols);
        let join = sql::key_match(
            alias,
            "c",
            pairs.map(|(o, c)| (Col::Named(o), Col::Named(c))),
            sql::Match::Equal,
        );
        Ok(format!(
            "EXISTS (SELECT 1 FROM {} AS {alias} WHERE {typed}{join} AND {member})",
            sql::main_table(other)
        ))
    }

    /// The same condition, over the whole table through the members' key
    /// list where the link has one column.
    fn link(
        &self,
        c_cols: &[String],
        other_cols: &[String],
        other: &str,
        alias: &str,
        typed: &str,
    ) -> Result<String> {
        if let (None, [c], [o]) = (self.within, c_cols, other_cols) {
            let member = self.sets.member_predicate(other, alias)?;
            return Ok(format!(
                "{} IN (SELECT {} FROM {} AS {alias} WHERE {typed}{member})",
                Col::Named(c).of("c"),
                Col::Named(o).of(alias),
                sql::main_table(other)
            ));
        }
        self.probe_link(c_cols, other_cols, other, alias, typed)
    }
}

/// The tenant id as `?1` when the statement uses it (predicates over
/// derived tables do not), so one call site fits every statement.
pub fn tenant_params<'p>(
    stmt: &rusqlite::Statement<'_>,
    tenant: &'p SqlValue,
) -> Vec<&'p dyn rusqlite::ToSql> {
    if stmt.parameter_count() == 0 {
        Vec::new()
    } else {
        vec![tenant as &dyn rusqlite::ToSql]
    }
}

/// `alias.<type column> = '<class>' AND ` for a polymorphic reference
/// (the rows of `r.table` under `alias` that use it), else nothing.
pub(super) fn type_condition(r: &Reference, alias: &str) -> String {
    match &r.polymorphic {
        Some((type_col, class)) => {
            format!("{} AND ", sql::class_is(alias, Col::Named(type_col), class))
        }
        None => String::new(),
    }
}
