//! Rows two tenants reach. A derived row (a join row between one tenant's
//! task and another tenant's tag, an attachment of such a row, a variant
//! record of a blob two tenants attach) hangs off more than one tenant's
//! rows. A backup carries only what is the tenant's alone, so such a row is
//! left out of every tenant's archive, and counted per table so that
//! nothing disappears silently.
//!
//! The exception is the ActiveStorage blob: it belongs to whoever attaches
//! it, so each tenant that carries an attachment of it carries the blob too
//! (restore leaves a blob that is already there as it is). A blob whose
//! every attachment is left out is left out with them.
//!
//! Most schemas cannot have such rows at all, and then nothing is computed:
//! [`TenantScope::may_cross_tenants`] tells from the scope alone.

use super::fill::run_to_fixpoint;
use super::{is_blob_table, Candidates, MemberSets, Membership, Reference, Side, TenantScope};
use crate::error::{Error, Result};
use crate::schema::Schema;
use rusqlite::Connection;
use std::collections::{BTreeMap, BTreeSet};

impl TenantScope {
    /// The derived tables of which some row could hang off two tenants'
    /// rows. A row that follows a single link (one column list, or one
    /// polymorphic pair, whose row names one class) to the key of a parent
    /// that is one tenant's alone is that tenant's alone; any other row may
    /// be shared: a second link (join tables), a link to a non-key column,
    /// rows owned by the rows that reference them (blobs), and everything
    /// hanging off a table whose rows may be shared.
    pub fn may_cross_tenants(&self, schema: &Schema) -> BTreeSet<String> {
        let mut shared = BTreeSet::new();
        loop {
            let before = shared.len();
            for t in &self.tables {
                let Membership::Derived {
                    owners,
                    owned_by_children,
                } = &t.membership
                else {
                    continue;
                };
                if !owned_by_children.is_empty()
                    || !single_link(schema, owners)
                    || owners.iter().any(|r| shared.contains(&r.parent))
                {
                    shared.insert(t.name.clone());
                }
            }
            if shared.len() == before {
                return shared;
            }
        }
    }
}

/// Whether each row follows at most one of `owners` to at most one parent
/// row: all of them use the same columns (several only as classes of one
/// polymorphic type column), each to its parent's primary key.
fn single_link(schema: &Schema, owners: &[Reference]) -> bool {
    let Some(first) = owners.first() else {
        return true;
    };
    owners.iter().all(|r| {
        let one_link = r.columns == first.columns
            && match (&r.polymorphic, &first.polymorphic) {
                (Some((a, _)), Some((b, _))) => a == b,
                (None, None) => owners.len() == 1,
                _ => false,
            };
        let to_key = schema.table(&r.parent).is_some_and(|p| {
            let key = p.primary_key();
            key.len() == r.parent_columns.len()
                && key
                    .iter()
                    .zip(&r.parent_columns)
                    .all(|(k, c)| k.eq_ignore_ascii_case(c))
        });
        one_link && to_key
    })
}

impl MemberSets<'_> {
    /// Take out of these sets (the tenant's own, made for the whole tenant)
    /// the rows of `tables` that another tenant reaches too, and the blobs
    /// no remaining row attaches. `tables`: tables of
    /// [`TenantScope::may_cross_tenants`] that have a set here. Returns the
    /// rows left out per table (tables with none are not listed).
    pub fn leave_out_cross_tenant(
        &self,
        conn: &Connection,
        tenant_id: &crate::TenantId,
        tables: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, u64>> {
        if self.side != Side::Ours || !self.whole {
            return Err(Error::internal(
                "shared rows are left out of the tenant's whole sets only",
            ));
        }
        let mut left_out = BTreeMap::new();
        if tables.is_empty() {
            return Ok(left_out);
        }
        let ours: Vec<(usize, &str)> = self
            .scope
            .tables
            .iter()
            .enumerate()
            .filter(|(_, t)| t.is_derived() && tables.contains(&t.name))
            .map(|(i, t)| (i, t.name.as_str()))
            .collect();
        // Ask about our rows only: it costs what the tenant's shared
        // tables hold, not what the whole database does.
        let candidates = Candidates::create(conn, self.scope, self.schema)?;
        for &(i, _) in &ours {
            candidates.add_set(conn, i, self.set(i))?;
        }
        let theirs = MemberSets::materialize_within(
            conn,
            self.scope,
            self.schema,
            tenant_id,
            Side::OtherTenants,
            &candidates,
        )?;
        for &(i, name) in ours.iter().filter(|(_, name)| !is_blob_table(name)) {
            let width = self.schema_table(name)?.row_key().len();
            let keys = crate::sql::key_columns(width);
            let n = conn.execute(
                &format!(
                    "DELETE FROM {} WHERE ({keys}) IN (SELECT {keys} FROM {})",
                    self.set(i),
                    theirs.set(i)
                ),
                [],
            )?;
            if n > 0 {
                left_out.insert(name.to_string(), n as u64);
            }
        }
        if !left_out.is_empty() {
            for &(i, name) in ours.iter().filter(|(_, name)| is_blob_table(name)) {
                let n = self.refill(conn, i, tenant_id)?;
                if n > 0 {
                    left_out.insert(name.to_string(), n);
                }
            }
        }
        Ok(left_out)
    }

    /// Compute the set of table `index` again from the other sets as they
    /// are now (they only shrank); returns how many rows it lost.
    fn refill(&self, conn: &Connection, index: usize, tenant_id: &crate::TenantId) -> Result<u64> {
        let set = self.set(index);
        let count = |conn: &Connection| -> Result<u64> {
            let sql = format!("SELECT count(*) FROM {set}");
            Ok(conn.query_row(&sql, [], |r| r.get::<_, i64>(0))? as u64)
        };
        let before = count(conn)?;
        conn.execute(&format!("DELETE FROM {set}"), [])?;
        let fills = self.fill_statements(conn, index, &self.scope.tables[index], None)?;
        run_to_fixpoint(conn, &fills, &tenant_id.to_sql_value())?;
        Ok(before.saturating_sub(count(conn)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::ScopeOptions;

    /// Which tables a backup must ask other tenants about: only those a
    /// second link, a blob or a shared parent can make shared.
    #[test]
    fn only_tables_two_tenants_could_reach_are_asked_about() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE tenants(id INTEGER PRIMARY KEY);
             CREATE TABLE tasks(id INTEGER PRIMARY KEY, tenant_id INTEGER REFERENCES tenants(id));
             CREATE TABLE tags(id INTEGER PRIMARY KEY, tenant_id INTEGER REFERENCES tenants(id));
             CREATE TABLE notes(id INTEGER PRIMARY KEY, task_id INTEGER REFERENCES tasks(id));
             CREATE TABLE note_marks(id INTEGER PRIMARY KEY, note_id INTEGER REFERENCES notes(id));
             CREATE TABLE tags_tasks(tag_id INTEGER REFERENCES tags(id), task_id INTEGER REFERENCES tasks(id));
             CREATE TABLE link_marks(id INTEGER PRIMARY KEY, link_id INTEGER REFERENCES tags_tasks(rowid));
             CREATE TABLE codes(id INTEGER PRIMARY KEY, tenant_id INTEGER, code TEXT UNIQUE);
             CREATE TABLE code_uses(id INTEGER PRIMARY KEY, code TEXT REFERENCES codes(code));
             INSERT INTO tenants VALUES (1);
             INSERT INTO tasks VALUES (1, 1);",
        )
        .unwrap();
        let schema = Schema::read(&conn).unwrap();
        let scope = TenantScope::discover(&conn, &schema, &ScopeOptions::default(), &[]).unwrap();
        let shared = scope.may_cross_tenants(&schema);
        let derived: BTreeSet<&str> = scope
            .tables
            .iter()
            .filter(|t| t.is_derived())
            .map(|t| t.name.as_str())
            .collect();
        assert!(derived.contains("notes") && derived.contains("note_marks"));
        let expected: BTreeSet<String> = ["tags_tasks", "code_uses"]
            .into_iter()
            .chain(derived.contains("link_marks").then_some("link_marks"))
            .map(String::from)
            .collect();
        assert_eq!(shared, expected);
    }
}
