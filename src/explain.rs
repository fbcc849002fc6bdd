//! `explain`: what a backup of any tenant would take, and why, without
//! taking it. Per table its class (the tenants table, owned through the
//! tenant column, derived through references, skipped, or not tenant data)
//! with the reason, every reference discovery follows with where it came
//! from, and the naming guesses no foreign key or hint confirms.
//!
//! It reports the one discovery backup, restore and verify share
//! ([`TenantScope::discover`]); nothing here decides membership, so the
//! report cannot disagree with what a backup does.

use crate::archive::Guess;
use crate::db;
use crate::error::Result;
use crate::schema::Schema;
use crate::scope::{Membership, Reference, ReferenceSource, ScopeOptions, TenantScope};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::PathBuf;

crate::scope::scope_config! {
    /// `TenantKit.explain` / `tk_explain`: the database and the scope options
    /// backup and restore take (the configuration), nothing else.
    #[derive(Debug, Clone, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ExplainOptions {
        pub database: PathBuf,
        @scope_config,
        #[serde(default = "crate::db::default_busy_timeout_ms")]
        pub busy_timeout_ms: u64,
    }
}

/// What a table is to a backup. Its string form (serde, snake_case) is the
/// report's `class`: a new kind of table is one variant here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TableClass {
    /// The table the tenant column refers to: the tenant's own row.
    Tenants,
    /// Has the tenant column: the rows holding the tenant's id.
    Owned,
    /// No tenant column, reached through references from member rows.
    Derived,
    /// No tenant column, referred to by the tenant's rows (or by other
    /// shared rows): the rows referred to travel as shared reference rows.
    Shared,
    /// Left out by rule: SQLite's or Rails' bookkeeping, virtual and
    /// shadow tables, or the caller's `tables:` / `skip_tables:`.
    Skipped,
    /// No tenant column and no reference to the tenant's rows.
    NotTenantData,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TableExplanation {
    pub name: String,
    pub class: TableClass,
    /// Why, in words (`has the tenant column account_id`, `via
    /// comments.post_id -> posts`, a skip reason).
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PolymorphicType {
    pub type_column: String,
    pub class: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReferenceExplanation {
    pub table: String,
    pub columns: Vec<String>,
    pub references: String,
    pub primary_key: Vec<String>,
    /// Only rows whose type column holds this class.
    pub polymorphic: Option<PolymorphicType>,
    pub source: ReferenceSource,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExplainReport {
    pub tenant_column: String,
    pub tenant_table: Option<String>,
    /// Member tables in backup order, then the others in schema order.
    pub tables: Vec<TableExplanation>,
    /// Every reference that touches a member table.
    pub references: Vec<ReferenceExplanation>,
    /// References from naming alone that nothing confirms (as a backup's
    /// manifest lists them): correct each with a `relations:` hint.
    pub guesses: Vec<Guess>,
}

/// Discover the scope of the database's tenants and describe it.
pub fn explain(options: &ExplainOptions) -> Result<ExplainReport> {
    let conn = db::open_read_only(&options.database, options.busy_timeout_ms)?;
    let _busy = db::BusyPolicy::new(options.busy_timeout_ms, None).enter();
    // One read snapshot: schema and class names from the same moment.
    conn.execute_batch("BEGIN")?;
    let discovered = Schema::read(&conn).and_then(|schema| {
        let scope = TenantScope::discover(&conn, &schema, &options.scope_options(), &[])?;
        Ok((schema, scope))
    });
    let _ = conn.execute_batch("ROLLBACK");
    let (schema, scope) = discovered?;
    Ok(report(&schema, &scope))
}

/// The report of a discovered scope.
pub fn report(schema: &Schema, scope: &TenantScope) -> ExplainReport {
    let members: BTreeSet<&str> = scope.tables.iter().map(|t| t.name.as_str()).collect();
    let mut tables: Vec<TableExplanation> = scope
        .tables
        .iter()
        .chain(&scope.shared)
        .map(|t| member_explanation(&t.name, &t.membership, &scope.options))
        .collect();
    tables.extend(
        scope
            .skipped
            .iter()
            .map(|(name, reason)| left_out_explanation(schema, scope, name, reason)),
    );
    let references = scope
        .references
        .iter()
        .filter(|r| members.contains(r.table.as_str()) || members.contains(r.parent.as_str()))
        .map(reference_explanation)
        .collect();
    ExplainReport {
        tenant_column: scope.options.tenant_column.clone(),
        tenant_table: scope.tenant_table().map(|t| t.name.clone()),
        tables,
        references,
        guesses: scope.guesses.clone(),
    }
}

fn member_explanation(
    name: &str,
    membership: &Membership,
    options: &ScopeOptions,
) -> TableExplanation {
    let (class, reason) = match membership {
        Membership::TenantRow { key } => (
            TableClass::Tenants,
            format!("the tenants table: the row whose {key} is the tenant id"),
        ),
        Membership::TenantColumn => (
            TableClass::Owned,
            format!("has the tenant column {}", options.tenant_column),
        ),
        Membership::Derived { .. } => (TableClass::Derived, membership.describe()),
        Membership::Shared { referenced_by } => {
            let by: Vec<String> = referenced_by
                .iter()
                .map(|r| format!("{}.{}", r.table, r.columns.join(",")))
                .collect();
            (
                TableClass::Shared,
                format!(
                    "no {} column, referred to by {}: the rows referred to travel as shared reference rows",
                    options.tenant_column,
                    by.join(", ")
                ),
            )
        }
    };
    TableExplanation {
        name: name.to_string(),
        class,
        reason,
    }
}

/// A table discovery left out: by a rule (its own or the caller's), or
/// because nothing makes its rows the tenant's.
fn left_out_explanation(
    schema: &Schema,
    scope: &TenantScope,
    name: &str,
    reason: &str,
) -> TableExplanation {
    let by_rule = scope.options.tables.contains_key(name)
        || schema.table(name).is_some_and(|t| t.skip.is_some());
    TableExplanation {
        name: name.to_string(),
        class: if by_rule {
            TableClass::Skipped
        } else {
            TableClass::NotTenantData
        },
        reason: reason.to_string(),
    }
}

fn reference_explanation(r: &Reference) -> ReferenceExplanation {
    ReferenceExplanation {
        table: r.table.clone(),
        columns: r.columns.clone(),
        references: r.parent.clone(),
        primary_key: r.parent_columns.clone(),
        polymorphic: r
            .polymorphic
            .as_ref()
            .map(|(type_column, class)| PolymorphicType {
                type_column: type_column.clone(),
                class: class.clone(),
            }),
        source: r.source,
    }
}
