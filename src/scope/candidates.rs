//! Rows of derived tables whose membership a caller asks about (the rows a
//! restore is about to overwrite, or has just written), in temp tables
//! `tk_cand_<i>` keyed like the member sets. Asking about a few rows costs
//! in proportion to those rows, not to the database: see
//! [`MemberSets::materialize_within`].

use super::fill::{create_key_table, key_match, run_to_fixpoint, schema_table, Fill};
use super::member_sets::type_condition;
use super::{MemberSets, Membership, Reference, TenantScope};
use crate::error::Result;
use crate::schema::Schema;
use crate::sql::{self, Col, TempTable};
use crate::value::SqlValue;
use rusqlite::Connection;

pub struct Candidates<'a> {
    scope: &'a TenantScope,
    schema: &'a Schema,
}

/// One link a closure step follows: rows of `table` whose `columns` equal
/// the `from_columns` of the rows already in the closure.
struct Link<'r> {
    table: &'r str,
    columns: &'r [String],
    from_columns: &'r [String],
}

impl<'a> Candidates<'a> {
    /// Empty candidate tables, one per derived table.
    pub fn create(
        conn: &Connection,
        scope: &'a TenantScope,
        schema: &'a Schema,
    ) -> Result<Candidates<'a>> {
        let candidates = Candidates { scope, schema };
        for (i, t) in scope.tables.iter().enumerate() {
            if let Membership::Derived { .. } = t.membership {
                create_key_table(conn, candidates.set(i), schema_table(schema, &t.name)?)?;
            }
        }
        Ok(candidates)
    }

    /// Add every row of `sets` (materialised on the same connection) to
    /// the candidates.
    pub fn add_members(&self, conn: &Connection, sets: &MemberSets<'_>) -> Result<()> {
        for (i, t) in self.scope.tables.iter().enumerate() {
            if let Membership::Derived { .. } = t.membership {
                self.add_set(conn, i, sets.set(i))?;
            }
        }
        Ok(())
    }

    /// Add every row of key table `from` to the candidates of table `index`.
    pub(super) fn add_set(&self, conn: &Connection, index: usize, from: TempTable) -> Result<()> {
        conn.execute(
            &format!(
                "INSERT OR IGNORE INTO {} SELECT * FROM {from}",
                self.set(index)
            ),
            [],
        )?;
        Ok(())
    }

    /// `INSERT OR IGNORE INTO <candidates of table> ` followed by a SELECT
    /// of the table's row key ([`Table::row_key`](crate::schema::Table::row_key));
    /// None for tables whose membership needs no set (tenant column,
    /// tenants row).
    pub fn insert_into(&self, table: &str) -> Option<String> {
        let i = self.scope.derived_index(table)?;
        Some(format!("INSERT OR IGNORE INTO {} ", self.set(i)))
    }

    pub(super) fn set(&self, index: usize) -> TempTable {
        TempTable::new("cand", index)
    }

    /// Add every row the candidates' membership depends on: the parents they
    /// reference and, for tables owned by their children (blobs), the
    /// children that reference them, transitively. Membership computed
    /// over this closure is exact for the rows in it.
    pub(super) fn close(&self, conn: &Connection) -> Result<()> {
        let mut steps = Vec::new();
        for (i, t) in self.scope.tables.iter().enumerate() {
            let Membership::Derived {
                owners,
                owned_by_children,
            } = &t.membership
            else {
                continue;
            };
            let key = schema_table(self.schema, &t.name)?.row_key();
            let rows_of_t = format!(
                "SELECT {{cols}} FROM {} AS t JOIN {} AS k ON {}",
                sql::main_table(&t.name),
                self.set(i),
                key_match(&key, "k", "t")
            );
            for r in owners {
                steps.extend(self.parent_step(&t.name, &rows_of_t, r)?);
            }
            for r in owned_by_children {
                steps.extend(self.child_step(&t.name, &rows_of_t, r)?);
            }
        }
        run_to_fixpoint(conn, &steps, &SqlValue::Null)
    }

    /// The parents that the candidates of `source` reference through `r`.
    fn parent_step(&self, source: &str, rows_of_t: &str, r: &Reference) -> Result<Option<Fill>> {
        let Some(j) = self.scope.derived_index(&r.parent) else {
            return Ok(None);
        };
        let typed = match &r.polymorphic {
            Some((type_col, class)) => {
                format!(" WHERE {}", sql::class_is("t", Col::Named(type_col), class))
            }
            None => String::new(),
        };
        let link = Link {
            table: &r.parent,
            columns: &r.parent_columns,
            from_columns: &r.columns,
        };
        Ok(Some(Fill {
            target: r.parent.clone(),
            source: source.to_string(),
            sql: self.closure_step(j, &link, rows_of_t, &typed, "")?,
        }))
    }

    /// The children that own the candidates of `source` through `r`.
    fn child_step(&self, source: &str, rows_of_t: &str, r: &Reference) -> Result<Option<Fill>> {
        let Some(j) = self.scope.derived_index(&r.table) else {
            return Ok(None);
        };
        let link = Link {
            table: &r.table,
            columns: &r.columns,
            from_columns: &r.parent_columns,
        };
        Ok(Some(Fill {
            target: r.table.clone(),
            source: source.to_string(),
            sql: self.closure_step(j, &link, rows_of_t, "", &type_condition(r, "x"))?,
        }))
    }

    /// Add to candidates `j` the rows of `link.table` that `link` reaches
    /// from the rows selected by `rows_of_t` (alias `t`), of those
    /// `filter` (on `t`, ` WHERE …`) and `x_filter` (on the added row `x`,
    /// `… AND `) let through.
    fn closure_step(
        &self,
        j: usize,
        link: &Link<'_>,
        rows_of_t: &str,
        filter: &str,
        x_filter: &str,
    ) -> Result<String> {
        let key = schema_table(self.schema, link.table)?.row_key();
        let select_key = sql::column_list_of("x", &key);
        let head = format!(
            "INSERT OR IGNORE INTO {} SELECT {select_key} FROM {} AS x WHERE {x_filter}",
            self.set(j),
            sql::main_table(link.table)
        );
        Ok(if let ([c], [f]) = (link.columns, link.from_columns) {
            let inner = rows_of_t.replace("{cols}", &Col::Named(f).of("t"));
            format!("{head}{} IN ({inner}{filter})", Col::Named(c).of("x"))
        } else {
            let pairs = link.columns.iter().zip(link.from_columns);
            let join = sql::key_match(
                "x",
                "t",
                pairs.map(|(c, f)| (Col::Named(c), Col::Named(f))),
                sql::Match::Equal,
            );
            let inner = rows_of_t.replace("{cols}", "1");
            let and = if filter.is_empty() {
                " WHERE "
            } else {
                " AND "
            };
            format!("{head}EXISTS ({inner}{filter}{and}{join})")
        })
    }
}
