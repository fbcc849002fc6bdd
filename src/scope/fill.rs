//! The machinery member sets are computed with: key tables (temp tables
//! keyed like a table's rows), fill statements run to a fixpoint, and the
//! choice of how one fill reads a large table ([`FillPlan`]).

use super::Reference;
use crate::error::{Error, Result};
use crate::schema::{Schema, Table};
use crate::sql::{self, TempTable};
use crate::value::SqlValue;
use rusqlite::Connection;
use std::collections::BTreeMap;

/// One statement adding rows of `target` because rows of `source` grew:
/// member rows (a fill) or rows whose membership matters (a closure step).
pub(super) struct Fill {
    pub target: String,
    pub source: String,
    pub sql: String,
}

/// Create (or empty) a temp table keyed like `table`'s rows: `k0, k1, …`
/// for the columns of [`Table::row_key`], WITHOUT ROWID.
pub(super) fn create_key_table(conn: &Connection, name: TempTable, table: &Table) -> Result<()> {
    // Each key column keeps the affinity of the column it copies: with a
    // mismatch SQLite cannot use the table's index and every probe becomes
    // a scan.
    let key_cols = table.row_key();
    let typed: Vec<String> = key_cols
        .iter()
        .enumerate()
        .map(|(k, col)| {
            let decl = if col == "rowid" {
                "INTEGER".to_string()
            } else {
                table
                    .column(col)
                    .map(|c| c.decl_type.clone())
                    .unwrap_or_default()
            };
            format!(
                "{} {}",
                sql::Col::Key(k).bare(),
                decl.replace(['(', ')', ','], " ")
            )
        })
        .collect();
    conn.execute_batch(&format!(
        "DROP TABLE IF EXISTS {name}; CREATE TEMP TABLE {}({typed}, PRIMARY KEY({names})) WITHOUT ROWID;",
        name.name(),
        typed = typed.join(", "),
        names = sql::key_columns(key_cols.len())
    ))?;
    Ok(())
}

/// `alias.k0 = row.key0 AND …`: a key table's row matching a table's row.
pub(super) fn key_match(key: &[String], keys_alias: &str, row_alias: &str) -> String {
    sql::key_match(
        keys_alias,
        row_alias,
        key.iter()
            .enumerate()
            .map(|(k, col)| (sql::Col::Key(k), sql::Col::Named(col))),
        sql::Match::Equal,
    )
}

/// Run statements to a fixpoint, semi-naively: a statement runs again only
/// when the table it reads from grew since its last run, so each row is
/// found about once. The caller orders the statements (cheap seeds first).
pub(super) fn run_to_fixpoint(conn: &Connection, fills: &[Fill], tenant: &SqlValue) -> Result<()> {
    let mut version: BTreeMap<&str, u64> = BTreeMap::new();
    let mut seen: Vec<Option<u64>> = vec![None; fills.len()];
    for _pass in 0..64 {
        let mut ran = false;
        for (i, fill) in fills.iter().enumerate() {
            let current = version.get(fill.source.as_str()).copied().unwrap_or(0);
            if seen[i] == Some(current) {
                continue;
            }
            seen[i] = Some(current);
            ran = true;
            let mut stmt = conn.prepare_cached(&fill.sql)?;
            let params = super::tenant_params(&stmt, tenant);
            if stmt.execute(&*params)? > 0 {
                *version.entry(fill.target.as_str()).or_default() += 1;
            }
        }
        if !ran {
            return Ok(());
        }
    }
    Err(Error::internal(
        "membership did not converge after 64 passes",
    ))
}

pub(super) fn schema_table<'s>(schema: &'s Schema, name: &str) -> Result<&'s Table> {
    schema
        .table(name)
        .ok_or_else(|| Error::schema(format!("table {name:?} disappeared from the database")))
}

/// How a fill finds the rows of a derived table that reference member
/// rows of a parent through one column. Without statistics SQLite cannot
/// tell which side is small, so we look at what it cannot see: indexes and
/// table sizes (`max(rowid)`, one seek).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FillPlan {
    /// `c.col IN (SELECT p.key FROM parent …)`: the parents' keys become a
    /// list, and SQLite walks the child's index from it or scans the child
    /// once. Safe whatever the indexes; building the list costs as much as
    /// the parent has member rows.
    ParentList,
    /// Scan the child, probing each row's parent by its (indexed) key: for
    /// a child much smaller than its parent, such as attachments of tasks.
    ProbeParent,
    /// Step through the member parents and seek each one's children through
    /// an index that starts with the link column: no list to build, for
    /// large children such as join tables.
    JoinFromParents,
}

impl FillPlan {
    pub(super) fn choose(
        conn: &Connection,
        schema: &Schema,
        r: &Reference,
        column: &str,
        parent_column: &str,
    ) -> Result<FillPlan> {
        let child = schema_table(schema, &r.table)?;
        let parent = schema_table(schema, &r.parent)?;
        if let (Some(child_rows), Some(parent_rows)) =
            (estimated_rows(conn, child)?, estimated_rows(conn, parent)?)
        {
            if child_rows.saturating_mul(4) <= parent_rows
                && leads_an_index(conn, parent, &[parent_column])?
            {
                return Ok(FillPlan::ProbeParent);
            }
        }
        let mut link = vec![column];
        if let Some((type_column, _)) = &r.polymorphic {
            link.push(type_column);
        }
        if leads_an_index(conn, child, &link)? {
            return Ok(FillPlan::JoinFromParents);
        }
        Ok(FillPlan::ParentList)
    }
}

/// About how many rows a rowid table has (`max(rowid)`, exact unless rows
/// were deleted); None for WITHOUT ROWID tables.
pub(crate) fn estimated_rows(conn: &Connection, table: &Table) -> Result<Option<u64>> {
    if table.without_rowid {
        return Ok(None);
    }
    let sql = format!("SELECT max(rowid) FROM {}", sql::main_table(&table.name));
    let max: Option<i64> = conn.query_row(&sql, [], |r| r.get(0))?;
    Ok(Some(max.unwrap_or(0).max(0) as u64))
}

/// Whether `columns` (in any order) are the leading columns of one of
/// `table`'s full indexes, or `columns` is the table's INTEGER PRIMARY KEY.
fn leads_an_index(conn: &Connection, table: &Table, columns: &[&str]) -> Result<bool> {
    if let [column] = columns {
        if table.rowid_alias() == Some(column) {
            return Ok(true);
        }
    }
    let mut indexes = conn.prepare("SELECT name FROM pragma_index_list(?1) WHERE partial = 0")?;
    let names: Vec<String> = indexes
        .query_map([&table.name], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut info =
        conn.prepare("SELECT name FROM pragma_index_info(?1) WHERE seqno < ?2 ORDER BY seqno")?;
    let mut wanted: Vec<&str> = columns.to_vec();
    wanted.sort();
    for index in names {
        let mut leading: Vec<String> = info
            .query_map(rusqlite::params![index, columns.len() as i64], |r| {
                r.get::<_, Option<String>>(0)
            })?
            .filter_map(|name| name.transpose())
            .collect::<rusqlite::Result<_>>()?;
        leading.sort();
        if leading.len() == wanted.len() && leading.iter().zip(&wanted).all(|(a, b)| a == b) {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::{MemberSets, ScopeOptions, Side, TenantScope};
    use crate::TenantId;

    /// Three tables without the tenant column hang off `tasks` the same
    /// way; only their size and indexes differ, and with them the plan.
    fn app() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE tenants(id INTEGER PRIMARY KEY);
             CREATE TABLE tasks(id INTEGER PRIMARY KEY, tenant_id INTEGER REFERENCES tenants(id));
             CREATE INDEX tasks_tenant ON tasks(tenant_id);
             CREATE TABLE notes(id INTEGER PRIMARY KEY, task_id INTEGER REFERENCES tasks(id));
             CREATE TABLE links(id INTEGER PRIMARY KEY, task_id INTEGER REFERENCES tasks(id));
             CREATE INDEX links_task ON links(task_id);
             CREATE TABLE marks(id INTEGER PRIMARY KEY, task_id INTEGER REFERENCES tasks(id));
             INSERT INTO tenants VALUES (1), (2);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400)
               INSERT INTO tasks SELECT i, 1 + i % 2 FROM n;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30)
               INSERT INTO notes SELECT i, CASE WHEN i % 5 = 0 THEN NULL ELSE i * 7 % 420 END FROM n;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
               INSERT INTO links SELECT i, i % 420 FROM n;
             INSERT INTO marks SELECT id, task_id FROM links;",
        )
        .unwrap();
        conn
    }

    #[test]
    fn each_fill_plan_finds_exactly_the_rows_of_member_parents() {
        let conn = app();
        let schema = Schema::read(&conn).unwrap();
        let scope = TenantScope::discover(&conn, &schema, &ScopeOptions::default(), &[]).unwrap();
        for (table, plan) in [
            ("notes", FillPlan::ProbeParent),
            ("links", FillPlan::JoinFromParents),
            ("marks", FillPlan::ParentList),
        ] {
            let r = scope
                .references
                .iter()
                .find(|r| r.table == table && r.parent == "tasks")
                .unwrap();
            let chosen = FillPlan::choose(&conn, &schema, r, "task_id", "id").unwrap();
            assert_eq!(chosen, plan, "{table}");
        }
        for tenant in [1, 2] {
            let sets = MemberSets::materialize(
                &conn,
                &scope,
                &schema,
                &TenantId::Integer(tenant),
                Side::Ours,
            )
            .unwrap();
            for table in ["notes", "links", "marks"] {
                let expected: i64 = conn
                    .query_row(
                        &format!("SELECT count(*) FROM {table} AS c JOIN tasks AS p ON p.id = c.task_id WHERE p.tenant_id = ?1"),
                        [tenant],
                        |r| r.get(0),
                    )
                    .unwrap();
                assert!(expected > 0, "{table} has rows of tenant {tenant}");
                let found = sets.member_count(&conn, table).unwrap();
                assert_eq!(found, Some(expected as u64), "{table}, tenant {tenant}");
            }
        }
    }
}
