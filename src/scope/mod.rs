//! Which rows are one tenant's: the tables that carry the tenant column, the
//! tenants table's own row, and the rows of other tables that hang off those
//! (join tables, ActiveStorage attachments, blobs, variant records), found
//! from declared foreign keys, Rails naming conventions, polymorphic
//! `<x>_type`/`<x>_id` pairs and the caller's hints.
//!
//! Backup (what to dump), restore (what to purge, what counts as "ours") and
//! dry runs all use this one definition, so they can never disagree.
//!
//! Where each rule lives:
//! - [`options`]: what the caller says (tenant column, hints, `tables:`).
//! - [`classes`]: what discovery reads from rows (the classes polymorphic
//!   type columns name), the only part of discovery that needs a database.
//! - [`references`]: how tables refer to each other (declared foreign keys,
//!   hints, Rails' own tables, naming, polymorphic pairs).
//! - [`discovery`]: which tables are the tenant's (owned, derived), on a
//!   plain [`Schema`] value; [`shared`]: which hold shared rows.
//! - [`order`]: parents before children.
//! - [`member_sets`], [`fill`], [`candidates`]: the SQL that finds a
//!   derived table's member rows; [`cross_tenant`]: rows two tenants reach.

use crate::naming;
use crate::schema::Schema;
use serde::Serialize;
use std::collections::BTreeMap;

mod candidates;
mod classes;
mod cross_tenant;
mod discovery;
#[cfg(test)]
mod discovery_tests;
mod fill;
mod member_sets;
mod options;
mod order;
mod references;
pub mod shared;

/// `k0, k1, …`: the columns of member sets and other key tables.
pub use candidates::Candidates;
pub use classes::{BackupTypes, TypesToLearn};
pub(crate) use fill::estimated_rows;
pub use member_sets::{tenant_params, MemberSets, Side};
pub(crate) use options::scope_config;
pub use options::{default_tenant_column, RelationHint, ScopeOptions, TableRule};
pub use references::polymorphic_types_of;

/// A reference from `table.columns` to `parent.parent_columns`, optionally
/// only for rows whose polymorphic type column holds `type_value`.
#[derive(Debug, Clone)]
pub struct Reference {
    pub table: String,
    pub columns: Vec<String>,
    pub parent: String,
    pub parent_columns: Vec<String>,
    /// `(type column, class name)` for polymorphic references.
    pub polymorphic: Option<(String, String)>,
    /// Where discovery found it (reported by `explain`).
    pub source: ReferenceSource,
}

/// Two references are the same link whoever found them: a hint repeating a
/// declared foreign key adds nothing.
impl PartialEq for Reference {
    fn eq(&self, other: &Self) -> bool {
        self.table == other.table
            && self.columns == other.columns
            && self.parent == other.parent
            && self.parent_columns == other.parent_columns
            && self.polymorphic == other.polymorphic
    }
}

impl Eq for Reference {}

/// Why discovery follows a reference. One variant per way of finding one,
/// each with a stable string form (the `explain` report's `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferenceSource {
    /// A `FOREIGN KEY` the schema declares.
    ForeignKey,
    /// The caller's `relations:` hint.
    Hint,
    /// A reference of Rails' own tables (ActiveStorage's `blob_id`).
    Framework,
    /// Rails naming alone (`project_id` → `projects`): a guess.
    Naming,
    /// A polymorphic `*_type` class the caller's `polymorphic:` map names.
    PolymorphicMap,
    /// A polymorphic `*_type` class mapped by Rails naming (`Project` →
    /// `projects`).
    PolymorphicNaming,
}

impl ReferenceSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ReferenceSource::ForeignKey => "foreign_key",
            ReferenceSource::Hint => "hint",
            ReferenceSource::Framework => "framework",
            ReferenceSource::Naming => "naming",
            ReferenceSource::PolymorphicMap => "polymorphic_map",
            ReferenceSource::PolymorphicNaming => "polymorphic_naming",
        }
    }
}

/// Why a row of a table belongs to the tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// The tenants table: the row whose key is the tenant id.
    TenantRow { key: String },
    /// The table carries the tenant column.
    TenantColumn,
    /// The row references a member row (join tables, attachments, variant
    /// records), or is referenced by one (ActiveStorage blobs).
    Derived {
        owners: Vec<Reference>,
        owned_by_children: Vec<Reference>,
    },
    /// Not the tenant's: a shared reference row (users, tags) that the
    /// tenant's rows (or other shared rows) refer to through `referenced_by`.
    /// Such tables are listed in [`TenantScope::shared`], never in
    /// [`TenantScope::tables`].
    Shared { referenced_by: Vec<Reference> },
}

impl Membership {
    pub fn describe(&self) -> String {
        match self {
            Membership::TenantRow { .. } => "tenant_row".into(),
            Membership::TenantColumn => "tenant_column".into(),
            Membership::Derived {
                owners,
                owned_by_children,
            } => {
                let mut via: Vec<String> = owners
                    .iter()
                    .map(|r| format!("{}.{} -> {}", r.table, r.columns.join(","), r.parent))
                    .collect();
                via.extend(
                    owned_by_children
                        .iter()
                        .map(|r| format!("{} <- {}.{}", r.parent, r.table, r.columns.join(","))),
                );
                format!("via {}", via.join("; "))
            }
            Membership::Shared { .. } => shared::SCOPE_SHARED.into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ScopedTable {
    pub name: String,
    pub membership: Membership,
}

impl ScopedTable {
    /// Whether its rows belong through other rows (join tables,
    /// ActiveStorage): whoever's rows refer to them.
    pub fn is_derived(&self) -> bool {
        matches!(self.membership, Membership::Derived { .. })
    }
}

#[derive(Debug, Clone)]
pub struct TenantScope {
    pub options: ScopeOptions,
    /// Member tables in dependency order: parents before children.
    pub tables: Vec<ScopedTable>,
    /// Tables left out, with the reason (listed in the manifest).
    pub skipped: Vec<(String, String)>,
    /// Tables of shared reference rows ([`Membership::Shared`]), parents
    /// first: rows outside the tenant that its rows refer to.
    pub shared: Vec<ScopedTable>,
    /// Every reference between tables we know of (for ordering, checks).
    pub references: Vec<Reference>,
    /// References from naming alone that touch a member table (listed
    /// in the manifest and the backup's result).
    pub guesses: Vec<crate::archive::Guess>,
    /// Polymorphic columns whose references are not known yet: a backup
    /// learns them while dumping (see [`BackupTypes::LearnInLargest`]).
    pub types_to_learn: Option<TypesToLearn>,
}

/// The column Rails keeps an STI row's class in (`inheritance_column`).
const STI_COLUMN: &str = "type";

/// Most distinct classes one polymorphic type column may name, in an
/// archive's rows or its manifest. An app has a handful; a limit keeps a
/// hostile archive from making the list as long as the table, and is an
/// error rather than a cut-off past which classes would go unchecked.
pub const MOST_CLASSES: usize = 10_000;

/// ActiveStorage blobs belong to whoever attaches them.
pub fn is_blob_table(name: &str) -> bool {
    name == "active_storage_blobs"
}

impl TenantScope {
    /// Position of `table` among the member tables when its rows belong
    /// through other rows (the tables that have member sets).
    pub fn derived_index(&self, table: &str) -> Option<usize> {
        self.tables
            .iter()
            .position(|t| t.name == table && t.is_derived())
    }

    pub fn table(&self, name: &str) -> Option<&ScopedTable> {
        self.tables.iter().find(|t| t.name == name)
    }

    pub fn tenant_table(&self) -> Option<&ScopedTable> {
        self.tables
            .iter()
            .find(|t| matches!(t.membership, Membership::TenantRow { .. }))
    }

    /// (table, type column, class) of every polymorphic reference in use,
    /// recorded in the manifest for restores into other databases.
    pub fn polymorphic_types(&self, table: &str) -> BTreeMap<String, Vec<String>> {
        polymorphic_types_of(&self.references, table)
    }

    /// Table for a polymorphic class name, honouring the caller's map.
    pub fn table_for_class(&self, class_name: &str) -> String {
        self.options.table_for_class(class_name)
    }

    /// Tables of the tenant's data that a class name mapping to no table
    /// could still name in Rails: through Ruby's fallback from a missing
    /// namespaced constant to a shorter name (`Admin::Task` is `::Task`
    /// when there is no `Admin::Task`), or as an STI subclass of a table
    /// with a `type` column, which only the caller's `polymorphic:` map
    /// can tell. Empty when the class maps to a table, or could name no
    /// table of the tenant's data.
    pub fn tables_a_class_could_name(&self, schema: &Schema, class_name: &str) -> Vec<String> {
        let mapped = |class: &str| {
            schema
                .table_ci(&self.table_for_class(class))
                .map(|t| t.name.clone())
        };
        if mapped(class_name).is_some() {
            return Vec::new();
        }
        let mut out: Vec<String> = naming::namespace_fallbacks(class_name)
            .filter_map(mapped)
            .filter(|t| self.table(t).is_some())
            .collect();
        out.extend(
            self.tables
                .iter()
                .filter(|t| {
                    schema
                        .table(&t.name)
                        .is_some_and(|s| s.has_column(STI_COLUMN))
                })
                .map(|t| t.name.clone()),
        );
        out.sort();
        out.dedup();
        out
    }
}
