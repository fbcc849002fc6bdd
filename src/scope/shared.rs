//! Shared reference rows: rows of tables without the tenant column that the
//! tenant's rows refer to but that are not the tenant's own (users joined to
//! accounts through `account_users`, tags, identities, platform apps).
//!
//! A table is shared when a member table (tenant column, tenants row,
//! derived) or another shared table refers to it — through a declared
//! foreign key, a hint, Rails naming or a polymorphic pair, the same
//! references membership follows — and it is not a member itself. A user
//! reachable from one tenant only is still shared: nothing in its row says
//! whose it is. The caller's `tables:` rules override: `"shared"` keeps a
//! table out of membership (its references to tenant rows then make it no
//! derived table), `"owned"` demands membership, `"skip"` leaves it out.
//!
//! Backup carries exactly the rows referred to, transitively; restore
//! inserts those missing by primary key and never updates, purges or
//! reports as conflicts those present (see `restore/shared_rows.rs`).

use super::{Membership, Reference, ScopeOptions, ScopedTable, TableRule};
use crate::error::{Error, Result};
use crate::schema::Schema;
use std::collections::BTreeSet;

/// A shared table's `scope` in the manifest (and its class in reports).
pub const SCOPE_SHARED: &str = "shared";

impl ScopeOptions {
    /// Whether the caller ruled `table` shared: it never becomes a member.
    pub(super) fn rules_shared(&self, table: &str) -> bool {
        self.tables.get(table) == Some(&TableRule::Shared)
    }

    /// Every table ruled `"owned"` must have turned out tenant data.
    pub(super) fn check_owned(&self, members: &BTreeSet<String>) -> Result<()> {
        for (name, rule) in &self.tables {
            if *rule == TableRule::Owned && !members.contains(name) {
                return Err(Error::argument(format!(
                    "tables: {name:?} is ruled owned, but it has no {:?} column and no reference to the tenant's rows: add a relations: hint, or rule it shared",
                    self.tenant_column
                )));
            }
        }
        Ok(())
    }
}

/// The shared tables, parents first: every non-member table a member or
/// shared table refers to, to a fixpoint.
pub(super) fn discover(
    schema: &Schema,
    members: &BTreeSet<String>,
    references: &[Reference],
) -> Vec<ScopedTable> {
    let mut shared: BTreeSet<String> = BTreeSet::new();
    loop {
        let more: Vec<String> = references
            .iter()
            .filter(|r| members.contains(&r.table) || shared.contains(&r.table))
            .filter(|r| !members.contains(&r.parent) && !shared.contains(&r.parent))
            .map(|r| r.parent.clone())
            .collect();
        if more.is_empty() {
            break;
        }
        shared.extend(more);
    }
    order(schema, &shared, references)
        .into_iter()
        .map(|name| {
            let referenced_by = references
                .iter()
                .filter(|r| r.parent == name)
                .filter(|r| members.contains(&r.table) || shared.contains(&r.table))
                .cloned()
                .collect();
            ScopedTable {
                name,
                membership: Membership::Shared { referenced_by },
            }
        })
        .collect()
}

/// Parents before children among the shared tables, schema order for ties;
/// a cycle is broken at the first table left (restores defer foreign keys).
fn order(schema: &Schema, shared: &BTreeSet<String>, references: &[Reference]) -> Vec<String> {
    let mut remaining: Vec<String> = schema
        .tables
        .iter()
        .filter(|t| shared.contains(&t.name))
        .map(|t| t.name.clone())
        .collect();
    let mut out = Vec::with_capacity(remaining.len());
    while !remaining.is_empty() {
        let ready = |name: &String, out: &[String]| {
            references.iter().all(|r| {
                r.table != *name
                    || r.parent == *name
                    || !shared.contains(&r.parent)
                    || out.contains(&r.parent)
            })
        };
        let next = remaining.iter().position(|n| ready(n, &out)).unwrap_or(0);
        out.push(remaining.remove(next));
    }
    out
}

/// The references that bring rows into shared `table`, grouped by the
/// parent columns they name (most name the primary key): one key set per
/// group.
pub fn key_groups(table: &ScopedTable) -> Vec<Vec<String>> {
    let Membership::Shared { referenced_by } = &table.membership else {
        return Vec::new();
    };
    let mut groups: Vec<Vec<String>> = Vec::new();
    for r in referenced_by {
        if !groups.contains(&r.parent_columns) {
            groups.push(r.parent_columns.clone());
        }
    }
    groups
}
