//! The order tables are dumped and restored in: parents before children
//! (Kahn's algorithm), tables with the tenant column before derived ones
//! where the references allow. Self references are ignored; a cycle is
//! broken at the table with the fewest unmet parents, which the restore
//! handles with deferred foreign keys. Ties keep schema order, so the
//! order is the same run to run.

use super::{Membership, Reference};
use crate::schema::Schema;
use std::collections::{BTreeMap, BTreeSet};

/// What the order depends on.
pub(super) struct OrderInputs<'a> {
    pub schema: &'a Schema,
    pub member: &'a BTreeMap<String, Membership>,
    pub references: &'a [Reference],
    /// Always first, whatever its references say.
    pub tenant_table: Option<&'a str>,
    /// The table whose polymorphic classes a backup learns while dumping
    /// it (see `TypesToLearn`).
    pub learned_late: Option<&'a str>,
}

/// The member tables in dependency order.
pub(super) fn dependency_order(inputs: &OrderInputs<'_>) -> Vec<String> {
    let parents = Parents::new(inputs);
    let mut remaining: Vec<String> = inputs
        .schema
        .tables
        .iter()
        .filter(|t| inputs.member.contains_key(&t.name))
        .map(|t| t.name.clone())
        .collect();
    let mut order: Vec<String> = Vec::with_capacity(remaining.len());
    if let Some(t) = inputs.tenant_table {
        remaining.retain(|n| n != t);
        order.push(t.to_string());
    }
    while !remaining.is_empty() {
        let next = next_table(inputs, &parents, &remaining, &order);
        order.push(remaining.remove(next));
    }
    order
}

/// Of the tables that are ready, one chosen by a condition on its rows
/// goes before a derived one: a backup dumps those while the member sets
/// of the derived ones are still being computed. When none is ready (a
/// cycle), the one with the fewest unmet parents.
fn next_table(
    inputs: &OrderInputs<'_>,
    parents: &Parents<'_>,
    remaining: &[String],
    order: &[String],
) -> usize {
    let unmet = |name: &str| {
        parents
            .of(name)
            .iter()
            .filter(|p| !order.contains(p))
            .count()
    };
    let ready = |n: &String| unmet(n) == 0;
    let by_row = |n: &String| !matches!(inputs.member.get(n), Some(Membership::Derived { .. }));
    remaining
        .iter()
        .position(|n| ready(n) && by_row(n))
        .or_else(|| remaining.iter().position(ready))
        .unwrap_or_else(|| {
            (0..remaining.len())
                .min_by_key(|&i| unmet(&remaining[i]))
                .expect("remaining is not empty")
        })
}

/// The member tables each table must come after.
struct Parents<'a> {
    inputs: &'a OrderInputs<'a>,
    /// For the table learned late: every table its classes could name.
    could_be_named: BTreeSet<String>,
}

impl<'a> Parents<'a> {
    fn new(inputs: &'a OrderInputs<'a>) -> Self {
        let could_be_named = match inputs.learned_late {
            Some(late) => could_be_named(inputs, late),
            None => BTreeSet::new(),
        };
        Parents {
            inputs,
            could_be_named,
        }
    }

    fn of(&self, name: &str) -> BTreeSet<String> {
        let member = self.inputs.member;
        let mut parents: BTreeSet<String> = self
            .inputs
            .references
            .iter()
            .filter(|r| r.table == name && r.parent != name && member.contains_key(&r.parent))
            .map(|r| r.parent.clone())
            .collect();
        if Some(name) == self.inputs.learned_late {
            parents.extend(self.could_be_named.iter().cloned());
        }
        parents
    }
}

/// The table whose polymorphic classes are learned while it is dumped
/// (`late`) could name any table a class can name (a single-column key):
/// it goes after all of them except its own descendants.
fn could_be_named(inputs: &OrderInputs<'_>, late: &str) -> BTreeSet<String> {
    let member = inputs.member;
    let mut descendants = BTreeSet::from([late.to_string()]);
    loop {
        let more: Vec<String> = inputs
            .references
            .iter()
            .filter(|r| descendants.contains(&r.parent) && member.contains_key(&r.table))
            .map(|r| r.table.clone())
            .filter(|t| !descendants.contains(t))
            .collect();
        if more.is_empty() {
            break;
        }
        descendants.extend(more);
    }
    inputs
        .schema
        .tables
        .iter()
        .filter(|t| member.contains_key(&t.name) && !descendants.contains(&t.name))
        .filter(|t| t.primary_key().len() == 1)
        .map(|t| t.name.clone())
        .collect()
}
