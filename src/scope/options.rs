//! The caller's say in what a tenant's rows are: the tenant column, the
//! tenants table, relation hints, the polymorphic class map and per-table
//! rules. Declared once here ([`ScopeOptions`], and the same fields in
//! every job's options through [`scope_config!`]).

use super::ReferenceSource;
use crate::error::{Error, Result};
use crate::naming;
use crate::schema::{Schema, SkipReason};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// A relation the database does not declare, given by the caller (the Rails
/// integration fills these from model reflections).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RelationHint {
    /// Child table (holds the reference column).
    pub table: String,
    /// Reference column(s) in the child table.
    #[serde(deserialize_with = "one_or_many")]
    pub column: Vec<String>,
    /// Parent table, or `null`: the column is not a reference at all (a
    /// provider's message id in `message_id`), whatever its name suggests.
    /// The key must be given either way.
    #[serde(deserialize_with = "table_or_null")]
    pub references: Option<String>,
    /// Parent column(s); default: the parent's primary key.
    #[serde(default, deserialize_with = "one_or_many")]
    pub primary_key: Vec<String>,
}

fn table_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)
}

/// What a table is, overriding what discovery finds (`tables:`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TableRule {
    /// Not tenant data: never backed up, purged or restored, and no
    /// reference to or from it makes rows members.
    Skip,
    /// Shared reference rows (users joined through memberships, tags): the
    /// rows the tenant's rows refer to travel in the archive and are
    /// inserted on restore when missing, never updated, purged or counted
    /// as conflicts. Its own references to tenant rows do not make its
    /// rows the tenant's. Only for tables without the tenant column.
    Shared,
    /// Tenant data: the table has the tenant column, or its rows belong
    /// through references to tenant rows (a join table, an attachment).
    /// Never shared; discovery that finds no such reference is an
    /// `ArgumentError` rather than a silent skip.
    Owned,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// How a tenant is found in the schema.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ScopeOptions {
    pub tenant_column: String,
    /// The table the tenant column refers to; found from a foreign key or
    /// the Rails convention (`account_id` → `accounts`) when not given.
    pub tenant_table: Option<String>,
    pub relations: Vec<RelationHint>,
    /// Class name → table for polymorphic `*_type` values that do not follow
    /// Rails' default naming (STI base classes, custom `table_name`).
    pub polymorphic: BTreeMap<String, String>,
    /// Table → rule, overriding discovery (`{"audits": "skip"}`).
    pub tables: BTreeMap<String, TableRule>,
}

/// A job's options struct (backup, restore, explain) with the scope's
/// fields spliced in where `@scope_config,` stands, and `scope_options()`
/// that hands them to [`TenantScope`](super::TenantScope).
///
/// Why a macro rather than a `#[serde(flatten)] scope: ScopeOptions`
/// field: serde's `flatten` does not work with `deny_unknown_fields`, and
/// every job refuses an unknown key with serde's own message ("unknown
/// field `tenant_colum`, expected one of …", the fields in declaration
/// order). Splicing the fields keeps each struct, and so each message,
/// exactly as if written out by hand, and keeps `options.tenant_column`.
macro_rules! scope_config {
    (
        $(#[$attr:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$before_attr:meta])* $before_vis:vis $before:ident : $before_ty:ty, )*
            @scope_config,
            $( $(#[$after_attr:meta])* $after_vis:vis $after:ident : $after_ty:ty, )*
        }
    ) => {
        $(#[$attr])*
        $vis struct $name {
            $( $(#[$before_attr])* $before_vis $before : $before_ty, )*
            #[serde(default = "crate::scope::default_tenant_column")]
            pub tenant_column: String,
            #[serde(default)]
            pub tenant_table: Option<String>,
            #[serde(default)]
            pub relations: Vec<$crate::scope::RelationHint>,
            #[serde(default)]
            pub polymorphic: std::collections::BTreeMap<String, String>,
            #[serde(default)]
            pub tables: std::collections::BTreeMap<String, $crate::scope::TableRule>,
            $( $(#[$after_attr])* $after_vis $after : $after_ty, )*
        }

        impl $name {
            /// The scope fields, as discovery takes them.
            pub fn scope_options(&self) -> $crate::scope::ScopeOptions {
                $crate::scope::ScopeOptions {
                    tenant_column: self.tenant_column.clone(),
                    tenant_table: self.tenant_table.clone(),
                    relations: self.relations.clone(),
                    polymorphic: self.polymorphic.clone(),
                    tables: self.tables.clone(),
                }
            }
        }
    };
}
pub(crate) use scope_config;

/// Rails' usual tenant column; apps with `account_id` say so.
pub fn default_tenant_column() -> String {
    "tenant_id".into()
}

impl Default for ScopeOptions {
    fn default() -> Self {
        ScopeOptions {
            tenant_column: default_tenant_column(),
            tenant_table: None,
            relations: Vec::new(),
            polymorphic: BTreeMap::new(),
            tables: BTreeMap::new(),
        }
    }
}

impl ScopeOptions {
    /// Table for a polymorphic class name: the caller's map first, then the
    /// Rails convention.
    pub fn table_for_class(&self, class_name: &str) -> String {
        self.mapped_class(class_name)
            .cloned()
            .unwrap_or_else(|| naming::table_for_class(class_name))
    }

    fn mapped_class(&self, class_name: &str) -> Option<&String> {
        self.polymorphic
            .get(class_name)
            .or_else(|| self.polymorphic.get(naming::canonical_class(class_name)))
    }

    /// Whether a polymorphic reference to `class_name` comes from the
    /// caller's map or from naming.
    pub fn polymorphic_source(&self, class_name: &str) -> ReferenceSource {
        match self.mapped_class(class_name) {
            Some(_) => ReferenceSource::PolymorphicMap,
            None => ReferenceSource::PolymorphicNaming,
        }
    }

    /// A `relations:` hint with `references: null` names the column.
    pub(super) fn says_not_a_reference(&self, table: &str, column: &str) -> bool {
        self.relations
            .iter()
            .any(|h| h.references.is_none() && h.table == table && h.column == [column])
    }

    /// The schema as the caller's `tables:` rules see it: skipped tables
    /// take no part in discovery, so backup, restore and verify (which all
    /// discover through here) leave them alone alike.
    pub(super) fn apply_table_rules<'s>(&self, schema: &'s Schema) -> Result<Cow<'s, Schema>> {
        if self.tables.is_empty() {
            return Ok(Cow::Borrowed(schema));
        }
        let mut ruled = schema.clone();
        for (name, rule) in &self.tables {
            let table = ruled
                .tables
                .iter_mut()
                .find(|t| &t.name == name)
                .ok_or_else(|| Error::argument(format!("tables: no table {name:?}")))?;
            if *rule != TableRule::Owned
                && self
                    .tenant_table
                    .as_deref()
                    .is_some_and(|t| t.eq_ignore_ascii_case(&table.name))
            {
                return Err(Error::argument(format!(
                    "tables: {name:?} is the tenants table"
                )));
            }
            match rule {
                TableRule::Skip => {
                    if table.skip.is_none() {
                        table.skip = Some(SkipReason::Caller);
                    }
                }
                TableRule::Shared if table.has_column(&self.tenant_column) => {
                    return Err(Error::argument(format!(
                        "tables: {name:?} has the tenant column {:?}, so its rows are tenant data and cannot be shared",
                        self.tenant_column
                    )));
                }
                TableRule::Shared | TableRule::Owned => {}
            }
        }
        Ok(Cow::Owned(ruled))
    }
}
