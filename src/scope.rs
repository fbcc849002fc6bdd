//! Which rows are one tenant's: the tables that carry the tenant column, the
//! tenants table's own row, and the rows of other tables that hang off those
//! (join tables, ActiveStorage attachments, blobs, variant records), found
//! from declared foreign keys, Rails naming conventions, polymorphic
//! `<x>_type`/`<x>_id` pairs and the caller's hints.
//!
//! Backup (what to dump), restore (what to purge, what counts as "ours") and
//! dry runs all use this one definition, so they can never disagree.

use crate::error::{Error, Result};
use crate::naming;
use crate::schema::{Schema, Table};
use crate::sql;
use crate::value::SqlValue;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

mod cross_tenant;
pub mod shared;

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

/// Rails' usual tenant column; apps with `account_id` say so.
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
}

impl ScopeOptions {
    /// The schema as the caller's `tables:` rules see it: skipped tables
    /// take no part in discovery, so backup, restore and verify (which all
    /// discover through here) leave them alone alike.
    fn apply_table_rules<'s>(&self, schema: &'s Schema) -> Result<std::borrow::Cow<'s, Schema>> {
        if self.tables.is_empty() {
            return Ok(std::borrow::Cow::Borrowed(schema));
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
                        table.skip = Some(crate::schema::SkipReason::Caller);
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
        Ok(std::borrow::Cow::Owned(ruled))
    }
}

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

/// Whose rows tell which classes a polymorphic `*_type` column names.
#[derive(Debug, Clone, Copy)]
enum TypeSource<'a> {
    /// Every row: a restore must see other tenants' references too.
    AllRows,
    /// In tables with the tenant column, only the rows of this tenant: all
    /// a backup needs, and it costs what the tenant costs, not a scan of
    /// every tenant's rows. Except in `learn_in`, whose classes the backup
    /// learns while it dumps those rows anyway (see [`TypesToLearn`]).
    TenantRows {
        tenant: &'a crate::value::SqlValue,
        learn_in: Option<&'a str>,
    },
}

/// How a backup finds the classes in polymorphic columns of tables with the
/// tenant column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupTypes {
    /// Read them before the dump, for every table (a `DISTINCT` over the
    /// tenant's rows of each).
    ReadFirst,
    /// Learn those of the largest such table while dumping it (its
    /// `DISTINCT` would read the same rows once more, before the dump can
    /// start); the dump order puts that table after every table its classes
    /// could name. The others are read first.
    LearnInLargest,
}

/// The polymorphic columns of one table with the tenant column whose
/// classes a backup learns while it dumps the table. Until then the scope
/// has no references from them; [`TenantScope::learned_references`] makes
/// them from what the dump saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypesToLearn {
    pub table: String,
    /// (type column, id column) pairs, `commentable_type`/`commentable_id`.
    pub columns: Vec<(String, String)>,
}

impl TenantScope {
    /// Find the tenant's tables. `known_types` adds polymorphic class names
    /// (table, type column, class) to those stored in the database: a
    /// restore into an empty database learns them from the archive.
    pub fn discover(
        conn: &Connection,
        schema: &Schema,
        options: &ScopeOptions,
        known_types: &[(String, String, String)],
    ) -> Result<TenantScope> {
        Self::discover_from(conn, schema, options, known_types, TypeSource::AllRows)
    }

    /// The scope a backup of `tenant` needs. Its references are those the
    /// tenant's own rows can make: class names of polymorphic columns in
    /// tables with the tenant column are read from the tenant's rows only
    /// (so the manifest names no class only other tenants use).
    pub fn discover_for_backup(
        conn: &Connection,
        schema: &Schema,
        options: &ScopeOptions,
        tenant: &crate::value::SqlValue,
        types: BackupTypes,
    ) -> Result<TenantScope> {
        let learn_in = match types {
            BackupTypes::ReadFirst => None,
            BackupTypes::LearnInLargest => largest_polymorphic_table(conn, schema, options)?,
        };
        Self::discover_from(
            conn,
            schema,
            options,
            &[],
            TypeSource::TenantRows {
                tenant,
                learn_in: learn_in.as_deref(),
            },
        )
    }

    fn discover_from(
        conn: &Connection,
        schema: &Schema,
        options: &ScopeOptions,
        known_types: &[(String, String, String)],
        types: TypeSource<'_>,
    ) -> Result<TenantScope> {
        let ruled = options.apply_table_rules(schema)?;
        let schema: &Schema = &ruled;
        let column = options.tenant_column.as_str();
        if column.is_empty() {
            return Err(Error::argument("tenant_column must not be empty"));
        }
        let direct: Vec<&Table> = schema
            .tables
            .iter()
            .filter(|t| t.skip.is_none() && t.has_column(column))
            .collect();
        if direct.is_empty() {
            return Err(Error::argument(format!(
                "no table has the tenant column {column:?}: is tenant_column right?"
            )));
        }

        let tenant_table = find_tenant_table(schema, options, &direct)?;
        if let Some(t) = tenant_table.as_deref().filter(|t| options.rules_shared(t)) {
            return Err(Error::argument(format!(
                "tables: {t:?} is the tenants table, whose tenant's row is tenant data: it cannot be shared"
            )));
        }
        let mut types_to_learn = None;
        let mut guessed = Vec::new();
        let references = collect_references(
            conn,
            schema,
            options,
            known_types,
            types,
            &mut types_to_learn,
            &mut guessed,
        )?;
        // The tenants table goes first whatever its columns say.
        if types_to_learn.as_ref().map(|l| &l.table) == tenant_table.as_ref() {
            types_to_learn = None;
        }

        // Grow the member set until it stops changing: a table joins when
        // one of its references points at a member (or, for ActiveStorage
        // blobs, when a member references it).
        let mut member: BTreeMap<String, Membership> = BTreeMap::new();
        if let Some(t) = &tenant_table {
            let key = schema.table(t).map(|t| t.primary_key()).unwrap_or_default();
            let [key] = key.as_slice() else {
                return Err(Error::schema(format!(
                    "tenants table {t:?} needs a single-column primary key"
                )));
            };
            member.insert(
                t.clone(),
                Membership::TenantRow {
                    key: key.to_string(),
                },
            );
        }
        for t in &direct {
            if Some(&t.name) != tenant_table.as_ref() {
                member.insert(t.name.clone(), Membership::TenantColumn);
            }
        }
        loop {
            let mut grew = false;
            for table in schema.tables.iter().filter(|t| t.skip.is_none()) {
                if member.contains_key(&table.name) || options.rules_shared(&table.name) {
                    continue;
                }
                let owners = owners_of(&table.name, &references, |t| member.contains_key(t));
                let owned_by_children: Vec<Reference> = if is_blob_table(&table.name) {
                    references
                        .iter()
                        .filter(|r| r.parent == table.name && member.contains_key(&r.table))
                        .cloned()
                        .collect()
                } else {
                    Vec::new()
                };
                if !owners.is_empty() || !owned_by_children.is_empty() {
                    member.insert(
                        table.name.clone(),
                        Membership::Derived {
                            owners,
                            owned_by_children,
                        },
                    );
                    grew = true;
                }
            }
            if !grew {
                break;
            }
        }
        // Late members may own earlier derived ones too (attachments of
        // variant records): refresh the reference lists once more.
        let names: BTreeSet<String> = member.keys().cloned().collect();
        for (name, membership) in member.iter_mut() {
            if let Membership::Derived {
                owners,
                owned_by_children,
            } = membership
            {
                *owners = owners_of(name, &references, |t| names.contains(t));
                if is_blob_table(name) {
                    *owned_by_children = references
                        .iter()
                        .filter(|r| &r.parent == name && names.contains(&r.table))
                        .cloned()
                        .collect();
                }
            }
        }

        let order = dependency_order(
            schema,
            &member,
            &references,
            tenant_table.as_deref(),
            types_to_learn.as_ref().map(|l| l.table.as_str()),
        );
        let tables = order
            .into_iter()
            .map(|name| {
                let membership = member.remove(&name).expect("ordered tables are members");
                ScopedTable { name, membership }
            })
            .collect();

        options.check_owned(&names)?;
        let shared = shared::discover(schema, &names, &references);
        let shared_names: BTreeSet<&str> = shared.iter().map(|t| t.name.as_str()).collect();
        let skipped = schema
            .tables
            .iter()
            .filter_map(|t| match t.skip {
                Some(reason) => Some((t.name.clone(), reason.describe().to_string())),
                None if !names.contains(&t.name) && !shared_names.contains(t.name.as_str()) => {
                    Some((
                        t.name.clone(),
                        format!("no {column} column and no reference to tenant rows"),
                    ))
                }
                None => None,
            })
            .collect();

        let guesses = guessed
            .iter()
            .filter(|r| {
                names.contains(&r.table)
                    || names.contains(&r.parent)
                    || shared_names.contains(r.parent.as_str())
            })
            .map(|r| crate::archive::Guess {
                table: r.table.clone(),
                column: r.columns.join(","),
                references: r.parent.clone(),
            })
            .collect();
        Ok(TenantScope {
            options: options.clone(),
            tables,
            skipped,
            shared,
            guesses,
            references,
            types_to_learn,
        })
    }

    /// The references of [`Self::types_to_learn`], made from the classes the
    /// dump saw in each type column (`(type column, id column, classes)`).
    /// None when one of them contradicts what the dump assumed before it
    /// saw them: a class naming a table dumped after this one (a cycle) or
    /// an ActiveStorage blobs table (whose membership the reference would
    /// have changed). The backup then starts over, reading the classes
    /// first.
    pub fn learned_references(
        &self,
        schema: &Schema,
        seen: &[(String, String, BTreeSet<String>)],
    ) -> Option<Vec<Reference>> {
        let learn = self.types_to_learn.as_ref()?;
        let position = |name: &str| self.tables.iter().position(|t| t.name == name);
        let own = position(&learn.table)?;
        let mut refs = Vec::new();
        for (type_column, id_column, classes) in seen {
            for class_name in classes {
                let Some((parent, pk)) = polymorphic_target(schema, &self.options, class_name)
                else {
                    continue;
                };
                let later = position(&parent.name).is_some_and(|p| p > own);
                // A class naming a table outside the tenant's data may make
                // that table shared, which the dump did not know to carry.
                let outside = position(&parent.name).is_none();
                if later || outside || is_blob_table(&parent.name) {
                    return None;
                }
                refs.push(Reference {
                    table: learn.table.clone(),
                    columns: vec![id_column.clone()],
                    parent: parent.name.clone(),
                    parent_columns: vec![pk.to_string()],
                    polymorphic: Some((type_column.clone(), class_name.clone())),
                    source: self.options.polymorphic_source(class_name),
                });
            }
        }
        Some(refs)
    }

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

/// The references of `table` to member tables (`is_member`) that make its
/// rows members. A reference to the blob table counts only when there is no
/// other: a blob belongs to whoever attaches it, but an attachment belongs
/// to its record, not to everyone attached to the same blob (a blob two
/// tenants share would otherwise bring each one the other's attachment).
/// Variant records hang off their blob alone, and keep that reference.
fn owners_of(
    table: &str,
    references: &[Reference],
    is_member: impl Fn(&str) -> bool,
) -> Vec<Reference> {
    let owners: Vec<Reference> = references
        .iter()
        .filter(|r| r.table == table && is_member(&r.parent))
        .cloned()
        .collect();
    if owners.iter().all(|r| is_blob_table(&r.parent)) {
        return owners;
    }
    owners
        .into_iter()
        .filter(|r| !is_blob_table(&r.parent))
        .collect()
}

/// References Rails' own tables have whether or not the schema declares
/// them: ActiveStorage's models name their blob with `class_name`, which
/// no naming convention finds (`blob_id` → `blobs`). Rails' migrations
/// declare these foreign keys, but an app's schema may have lost them.
const FRAMEWORK_REFERENCES: &[(&str, &str, &str)] = &[
    (
        "active_storage_attachments",
        "blob_id",
        "active_storage_blobs",
    ),
    (
        "active_storage_variant_records",
        "blob_id",
        "active_storage_blobs",
    ),
];

/// Class names per type column of `table`'s polymorphic references.
pub fn polymorphic_types_of(
    references: &[Reference],
    table: &str,
) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in references.iter().filter(|r| r.table == table) {
        if let Some((type_col, class)) = &r.polymorphic {
            out.entry(type_col.clone()).or_default().push(class.clone());
        }
    }
    out
}

/// The table a polymorphic class name points at, with its single-column
/// key: None when there is no such table we could reference.
fn polymorphic_target<'s>(
    schema: &'s Schema,
    options: &ScopeOptions,
    class_name: &str,
) -> Option<(&'s Table, &'s str)> {
    let parent = schema
        .table_ci(&options.table_for_class(class_name))
        .filter(|t| t.skip.is_none())?;
    match parent.primary_key().as_slice() {
        [pk] => Some((parent, pk)),
        _ => None,
    }
}

/// The table with the tenant column, polymorphic columns and the most rows
/// (by its largest rowid, no scan): the one whose classes a backup learns
/// while dumping.
fn largest_polymorphic_table(
    conn: &Connection,
    schema: &Schema,
    options: &ScopeOptions,
) -> Result<Option<String>> {
    let mut largest: Option<(u64, String)> = None;
    for table in schema.tables.iter().filter(|t| t.skip.is_none()) {
        if !table.has_column(&options.tenant_column)
            || polymorphic_columns(table, &options.tenant_column).is_empty()
        {
            continue;
        }
        let rows = estimated_rows(conn, table)?.unwrap_or(0);
        if largest.as_ref().is_none_or(|(most, _)| rows > *most) {
            largest = Some((rows, table.name.clone()));
        }
    }
    Ok(largest.map(|(_, name)| name))
}

/// `(type column, id column)` of each `x_type`/`x_id` pair of `table`.
fn polymorphic_columns(table: &Table, tenant_column: &str) -> Vec<(String, String)> {
    table
        .columns
        .iter()
        .filter(|c| c.name != tenant_column)
        .filter_map(|c| Some((polymorphic_type_column(table, &c.name)?, c.name.clone())))
        .collect()
}

/// `x_type` when `column` is `x_id` and `table` has both: a polymorphic
/// reference.
fn polymorphic_type_column(table: &Table, column: &str) -> Option<String> {
    let type_column = format!("{}_type", column.strip_suffix("_id")?);
    table.has_column(&type_column).then_some(type_column)
}

fn find_tenant_table(
    schema: &Schema,
    options: &ScopeOptions,
    direct: &[&Table],
) -> Result<Option<String>> {
    if let Some(name) = &options.tenant_table {
        return match schema.table(name) {
            Some(t) if t.skip.is_none() => Ok(Some(t.name.clone())),
            _ => Err(Error::argument(format!(
                "tenant_table {name:?} does not exist"
            ))),
        };
    }
    let column = options.tenant_column.as_str();
    for table in direct {
        for fk in &table.foreign_keys {
            if fk.from == [column] {
                if let Some(parent) = schema.table_ci(&fk.table) {
                    return Ok(Some(parent.name.clone()));
                }
            }
        }
    }
    Ok(naming::table_for_reference(column)
        .and_then(|t| schema.table(&t))
        .filter(|t| t.skip.is_none())
        .map(|t| t.name.clone()))
}

/// Declared foreign keys, then hints, then Rails' own tables' references,
/// then conventions (`x_id` → `xs`, polymorphic `x_type`/`x_id` → the
/// tables the stored class names map to).
fn collect_references(
    conn: &Connection,
    schema: &Schema,
    options: &ScopeOptions,
    known_types: &[(String, String, String)],
    types: TypeSource<'_>,
    types_to_learn: &mut Option<TypesToLearn>,
    guessed: &mut Vec<Reference>,
) -> Result<Vec<Reference>> {
    let mut refs: Vec<Reference> = Vec::new();
    let usable = |name: &str| schema.table_ci(name).filter(|t| t.skip.is_none());
    for table in schema.tables.iter().filter(|t| t.skip.is_none()) {
        for fk in &table.foreign_keys {
            if let Some(parent) = usable(&fk.table) {
                refs.push(Reference {
                    table: table.name.clone(),
                    columns: fk.from.clone(),
                    parent: parent.name.clone(),
                    parent_columns: fk.to.clone(),
                    polymorphic: None,
                    source: ReferenceSource::ForeignKey,
                });
            }
        }
    }
    // A hint about a skipped table is moot, not wrong: the skip rule wins
    // (a configuration read from an app's models names every table, and
    // may skip some of them). A table that does not exist is a mistake.
    let hinted = |name: &str| match schema.table_ci(name) {
        None => Err(Error::argument(format!("relation hint: no table {name:?}"))),
        Some(t) => Ok(t.skip.is_none().then_some(t)),
    };
    for hint in &options.relations {
        let Some(child) = hinted(&hint.table)? else {
            continue;
        };
        let Some(references) = &hint.references else {
            for c in &hint.column {
                if !child.has_column(c) {
                    return Err(Error::argument(format!("relation hint: no column {c:?}")));
                }
            }
            continue;
        };
        let Some(parent) = hinted(references)? else {
            continue;
        };
        let parent_columns = if hint.primary_key.is_empty() {
            parent.primary_key().into_iter().map(String::from).collect()
        } else {
            hint.primary_key.clone()
        };
        for c in hint.column.iter().chain(&parent_columns) {
            if !child.has_column(c) && !parent.has_column(c) {
                return Err(Error::argument(format!("relation hint: no column {c:?}")));
            }
        }
        if hint.column.len() != parent_columns.len() {
            return Err(Error::argument(format!(
                "relation hint {}.{:?}: column count differs from the parent key",
                hint.table, hint.column
            )));
        }
        push_unique(
            &mut refs,
            Reference {
                table: child.name.clone(),
                columns: hint.column.clone(),
                parent: parent.name.clone(),
                parent_columns,
                polymorphic: None,
                source: ReferenceSource::Hint,
            },
        );
    }
    for &(table, column, parent) in FRAMEWORK_REFERENCES {
        let (Some(child), Some(parent)) = (usable(table), usable(parent)) else {
            continue;
        };
        let declared = refs
            .iter()
            .any(|r| r.table == child.name && r.columns == [column]);
        if let (false, true, [pk]) = (
            declared,
            child.has_column(column),
            parent.primary_key().as_slice(),
        ) {
            refs.push(Reference {
                table: child.name.clone(),
                columns: vec![column.to_string()],
                parent: parent.name.clone(),
                parent_columns: vec![pk.to_string()],
                polymorphic: None,
                source: ReferenceSource::Framework,
            });
        }
    }
    for table in schema.tables.iter().filter(|t| t.skip.is_none()) {
        for column in &table.columns {
            if column.name == options.tenant_column {
                continue;
            }
            if !column.name.ends_with("_id") {
                continue;
            }
            if let Some(type_column) = polymorphic_type_column(table, &column.name) {
                let of_tenant = match types {
                    TypeSource::TenantRows { tenant, learn_in }
                        if table.has_column(&options.tenant_column) =>
                    {
                        if learn_in == Some(table.name.as_str()) {
                            types_to_learn
                                .get_or_insert_with(|| TypesToLearn {
                                    table: table.name.clone(),
                                    columns: Vec::new(),
                                })
                                .columns
                                .push((type_column, column.name.clone()));
                            continue;
                        }
                        Some((options.tenant_column.as_str(), tenant))
                    }
                    _ => None,
                };
                let mut classes: BTreeSet<String> =
                    distinct_types(conn, &table.name, &type_column, of_tenant)?
                        .into_iter()
                        .collect();
                classes.extend(
                    known_types
                        .iter()
                        .filter(|(t, c, _)| t == &table.name && c == &type_column)
                        .map(|(_, _, class)| class.clone()),
                );
                // Each class once (a set), and no other reference is
                // polymorphic: plain pushes, linear in the classes.
                for class_name in classes {
                    if let Some((parent, pk)) = polymorphic_target(schema, options, &class_name) {
                        refs.push(Reference {
                            table: table.name.clone(),
                            columns: vec![column.name.clone()],
                            parent: parent.name.clone(),
                            parent_columns: vec![pk.to_string()],
                            polymorphic: Some((type_column.clone(), class_name.clone())),
                            source: options.polymorphic_source(&class_name),
                        });
                    }
                }
                continue;
            }
            let declared = refs
                .iter()
                .any(|r| r.table == table.name && r.columns == [column.name.clone()]);
            if declared || options.says_not_a_reference(&table.name, &column.name) {
                continue;
            }
            if let Some(r) = guessed_reference(schema, table, column) {
                guessed.push(r.clone());
                refs.push(r);
            }
        }
    }
    Ok(refs)
}

impl ScopeOptions {
    /// A `relations:` hint with `references: null` names the column.
    fn says_not_a_reference(&self, table: &str, column: &str) -> bool {
        self.relations
            .iter()
            .any(|h| h.references.is_none() && h.table == table && h.column == [column])
    }
}

/// The reference Rails naming suggests for `table.column` (`project_id` →
/// `projects`), if the guess is plausible: a `<x>_id` naming its own table
/// is a tree only as `parent_id`; any other (`related_category_id` in
/// `related_categories`) names the table of a shorter stem (`categories`),
/// never its own. A guess whose column cannot hold the parent's key (text
/// `message_id` holding a provider's id, integer `messages.id`) is no
/// reference: comparing them would match rows by accident.
fn guessed_reference(
    schema: &Schema,
    table: &Table,
    column: &crate::schema::Column,
) -> Option<Reference> {
    let usable = |name: &str| schema.table_ci(name).filter(|t| t.skip.is_none());
    let parent = naming::reference_stems(&column.name)
        .filter_map(|stem| usable(&naming::pluralize(stem)))
        .find(|p| p.name != table.name)
        .or_else(|| (column.name == naming::TREE_PARENT_COLUMN).then_some(table))?;
    let key_columns = parent.primary_key();
    let [pk] = key_columns.as_slice() else {
        return None;
    };
    let key = parent.column(pk);
    if key.is_some_and(|k| !naming::types_can_match(column, k)) {
        return None;
    }
    Some(Reference {
        table: table.name.clone(),
        columns: vec![column.name.clone()],
        parent: parent.name.clone(),
        parent_columns: vec![pk.to_string()],
        polymorphic: None,
        source: ReferenceSource::Naming,
    })
}

fn push_unique(refs: &mut Vec<Reference>, r: Reference) {
    if !refs.contains(&r) {
        refs.push(r);
    }
}

/// The class names in `table.column`, of the rows whose `tenant column`
/// holds the tenant when `of_tenant` is given (else of every row).
fn distinct_types(
    conn: &Connection,
    table: &str,
    column: &str,
    of_tenant: Option<(&str, &crate::value::SqlValue)>,
) -> Result<Vec<String>> {
    let tenant_rows = match of_tenant {
        Some((tenant_column, _)) => format!(" AND {} = ?1", sql::ident(tenant_column)),
        None => String::new(),
    };
    let sql = format!(
        "SELECT DISTINCT {c} FROM {t} WHERE typeof({c}) = 'text'{tenant_rows} LIMIT 10000",
        c = sql::ident(column),
        t = sql::main_table(table)
    );
    let mut stmt = conn.prepare(&sql)?;
    let params: Vec<&dyn rusqlite::ToSql> = match of_tenant {
        Some((_, tenant)) => vec![tenant],
        None => Vec::new(),
    };
    let types = stmt
        .query_map(&*params, |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(types)
}

/// Parents before children (Kahn's algorithm), tables with the tenant column
/// before derived ones where the references allow. Self references are ignored;
/// a cycle is broken at the table with the fewest unmet parents, which the
/// restore handles with deferred foreign keys.
fn dependency_order(
    schema: &Schema,
    member: &BTreeMap<String, Membership>,
    references: &[Reference],
    tenant_table: Option<&str>,
    learned_late: Option<&str>,
) -> Vec<String> {
    // Keep schema order for ties, so the order is stable run to run.
    let mut remaining: Vec<String> = schema
        .tables
        .iter()
        .filter(|t| member.contains_key(&t.name))
        .map(|t| t.name.clone())
        .collect();
    let known_parents = |name: &str| -> BTreeSet<String> {
        references
            .iter()
            .filter(|r| r.table == name && r.parent != name && member.contains_key(&r.parent))
            .map(|r| r.parent.clone())
            .collect()
    };
    // The table whose polymorphic classes are learned while it is dumped
    // (`learned_late`) could name any table a class can name (a single-column
    // key): it goes after all of them except its own descendants.
    let could_be_named: BTreeSet<String> = match learned_late {
        Some(late) => {
            let mut descendants = BTreeSet::from([late.to_string()]);
            loop {
                let more: Vec<String> = references
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
            schema
                .tables
                .iter()
                .filter(|t| member.contains_key(&t.name) && !descendants.contains(&t.name))
                .filter(|t| t.primary_key().len() == 1)
                .map(|t| t.name.clone())
                .collect()
        }
        None => BTreeSet::new(),
    };
    let parents_of = |name: &str| -> BTreeSet<String> {
        let mut parents = known_parents(name);
        if Some(name) == learned_late {
            parents.extend(could_be_named.iter().cloned());
        }
        parents
    };
    let mut order: Vec<String> = Vec::with_capacity(remaining.len());
    if let Some(t) = tenant_table {
        remaining.retain(|n| n != t);
        order.push(t.to_string());
    }
    while !remaining.is_empty() {
        let unmet = |name: &str, order: &[String]| {
            parents_of(name)
                .iter()
                .filter(|p| !order.contains(p))
                .count()
        };
        // Of the tables that are ready, one chosen by a condition on its
        // rows goes before a derived one: a backup dumps those while the
        // member sets of the derived ones are still being computed.
        let ready = |n: &String| unmet(n, &order) == 0;
        let by_row = |n: &String| !matches!(member.get(n), Some(Membership::Derived { .. }));
        let next = remaining
            .iter()
            .position(|n| ready(n) && by_row(n))
            .or_else(|| remaining.iter().position(ready))
            .unwrap_or_else(|| {
                (0..remaining.len())
                    .min_by_key(|&i| unmet(&remaining[i], &order))
                    .expect("remaining is not empty")
            });
        order.push(remaining.remove(next));
    }
    order
}

/// One statement adding rows of `target` because rows of `source` grew:
/// member rows (a fill) or rows whose membership matters (a closure step).
struct Fill {
    target: String,
    source: String,
    sql: String,
}

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
    /// nobody's backup). See [`shared`].
    OtherTenants,
}

/// Create (or empty) a temp table keyed like `table`'s rows: `k0, k1, …`
/// for the columns of [`Table::row_key`], WITHOUT ROWID.
fn create_key_table(conn: &Connection, name: &str, table: &Table) -> Result<()> {
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
            format!("k{k} {}", decl.replace(['(', ')', ','], " "))
        })
        .collect();
    conn.execute_batch(&format!(
        "DROP TABLE IF EXISTS temp.{name}; CREATE TEMP TABLE {name}({typed}, PRIMARY KEY({names})) WITHOUT ROWID;",
        typed = typed.join(", "),
        names = key_names(key_cols.len())
    ))?;
    Ok(())
}

/// `k0, k1, …` for a key of `n` columns: the columns of member sets and
/// of other key tables.
pub fn key_names(n: usize) -> String {
    (0..n)
        .map(|k| format!("k{k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `alias.k0 = row.key0 AND …`: a key table's row matching a table's row.
fn key_match(key: &[String], keys_alias: &str, row_alias: &str) -> String {
    key.iter()
        .enumerate()
        .map(|(k, col)| format!("{keys_alias}.k{k} = {row_alias}.{}", sql::ident(col)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// Run statements to a fixpoint, semi-naively: a statement runs again only
/// when the table it reads from grew since its last run, so each row is
/// found about once. The caller orders the statements (cheap seeds first).
fn run_to_fixpoint(conn: &Connection, fills: &[Fill], tenant: &SqlValue) -> Result<()> {
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
            let params = tenant_params(&stmt, tenant);
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

/// Rows of derived tables whose membership a caller asks about (the rows a
/// restore is about to overwrite, or has just written), in temp tables
/// `tk_cand_<i>` keyed like the member sets. Asking about a few rows costs
/// in proportion to those rows, not to the database: see
/// [`MemberSets::materialize_within`].
pub struct Candidates<'a> {
    scope: &'a TenantScope,
    schema: &'a Schema,
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
                create_key_table(
                    conn,
                    &candidates.set_name(i),
                    schema_table(schema, &t.name)?,
                )?;
            }
        }
        Ok(candidates)
    }

    /// Add every row of `sets` (materialised on the same connection) to
    /// the candidates.
    pub fn add_members(&self, conn: &Connection, sets: &MemberSets<'_>) -> Result<()> {
        for (i, t) in self.scope.tables.iter().enumerate() {
            if let Membership::Derived { .. } = t.membership {
                conn.execute(
                    &format!(
                        "INSERT OR IGNORE INTO temp.{} SELECT * FROM temp.{}",
                        self.set_name(i),
                        sets.set_name(i)
                    ),
                    [],
                )?;
            }
        }
        Ok(())
    }

    /// `INSERT OR IGNORE INTO <candidates of table> ` followed by a SELECT
    /// of the table's row key ([`Table::row_key`]); None for tables whose
    /// membership needs no set (tenant column, tenants row).
    pub fn insert_into(&self, table: &str) -> Option<String> {
        let i = self.scope.derived_index(table)?;
        Some(format!("INSERT OR IGNORE INTO temp.{} ", self.set_name(i)))
    }

    fn set_name(&self, index: usize) -> String {
        format!("tk_cand_{index}")
    }

    /// Add every row the candidates' membership depends on: the parents they
    /// reference and, for tables owned by their children (blobs), the
    /// children that reference them, transitively. Membership computed
    /// over this closure is exact for the rows in it.
    fn close(&self, conn: &Connection) -> Result<()> {
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
                "SELECT {{cols}} FROM {} AS t JOIN temp.{} AS k ON {}",
                sql::main_table(&t.name),
                self.set_name(i),
                key_match(&key, "k", "t")
            );
            // Parents this table's candidates reference.
            for r in owners {
                let Some(j) = self.scope.derived_index(&r.parent) else {
                    continue;
                };
                let typed = match &r.polymorphic {
                    Some((type_col, class)) => {
                        format!(" WHERE t.{} = {}", sql::ident(type_col), sql::string(class))
                    }
                    None => String::new(),
                };
                steps.push(Fill {
                    target: r.parent.clone(),
                    source: t.name.clone(),
                    sql: self.closure_step(
                        j,
                        &r.parent,
                        &r.parent_columns,
                        &r.columns,
                        &rows_of_t,
                        &typed,
                        "",
                    )?,
                });
            }
            // Children that own this table's candidates.
            for r in owned_by_children {
                let Some(j) = self.scope.derived_index(&r.table) else {
                    continue;
                };
                steps.push(Fill {
                    target: r.table.clone(),
                    source: t.name.clone(),
                    sql: self.closure_step(
                        j,
                        &r.table,
                        &r.columns,
                        &r.parent_columns,
                        &rows_of_t,
                        "",
                        &type_condition(r, "x"),
                    )?,
                });
            }
        }
        run_to_fixpoint(conn, &steps, &SqlValue::Null)
    }

    /// Add to candidates `j` (of `table`) the rows whose `cols` equal the
    /// `from_cols` of the rows selected by `rows_of_t` (alias `t`), of
    /// those `filter` (on `t`, ` WHERE …`) and `x_filter` (on the added
    /// row `x`, `… AND `) let through.
    #[allow(clippy::too_many_arguments)]
    fn closure_step(
        &self,
        j: usize,
        table: &str,
        cols: &[String],
        from_cols: &[String],
        rows_of_t: &str,
        filter: &str,
        x_filter: &str,
    ) -> Result<String> {
        let key = schema_table(self.schema, table)?.row_key();
        let select_key = key
            .iter()
            .map(|k| format!("x.{}", sql::ident(k)))
            .collect::<Vec<_>>()
            .join(", ");
        let head = format!(
            "INSERT OR IGNORE INTO temp.{} SELECT {select_key} FROM {} AS x WHERE {x_filter}",
            self.set_name(j),
            sql::main_table(table)
        );
        Ok(if let ([c], [f]) = (cols, from_cols) {
            let inner = rows_of_t.replace("{cols}", &format!("t.{}", sql::ident(f)));
            format!("{head}x.{} IN ({inner}{filter})", sql::ident(c))
        } else {
            let join = cols
                .iter()
                .zip(from_cols)
                .map(|(c, f)| format!("x.{} = t.{}", sql::ident(c), sql::ident(f)))
                .collect::<Vec<_>>()
                .join(" AND ");
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

fn schema_table<'s>(schema: &'s Schema, name: &str) -> Result<&'s Table> {
    schema
        .table(name)
        .ok_or_else(|| Error::schema(format!("table {name:?} disappeared from the database")))
}

/// How a fill finds the rows of a derived table that reference member
/// rows of a parent through one column. Without statistics SQLite cannot
/// tell which side is small, so we look at what it cannot see: indexes and
/// table sizes (`max(rowid)`, one seek).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FillPlan {
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
    fn choose(
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

/// Materialised membership: for every derived table, a temp table of the
/// keys of its member rows, computed to a fixpoint inside the caller's
/// transaction (so it sees the same snapshot as the reads that follow).
pub struct MemberSets<'a> {
    scope: &'a TenantScope,
    schema: &'a Schema,
    side: Side,
    /// Made for the whole tenant ([`MemberSets::materialize`]), not only
    /// for some candidates.
    whole: bool,
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
        Self::build(
            conn,
            scope,
            schema,
            tenant_id,
            side,
            Some(candidates),
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
                create_key_table(conn, &sets.set_name(i), sets.schema_table(&t.name)?)?;
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

    fn schema_table(&self, name: &str) -> Result<&'a Table> {
        schema_table(self.schema, name)
    }

    /// One INSERT per reference that can make a row of `t` a member. Over
    /// the whole table, a single column reference from `t` to a member
    /// parent is found the cheapest way we can tell (see [`FillPlan`]);
    /// other links are written `c.col IN (SELECT …)`, so SQLite walks the
    /// child's index from the (small) parent set instead of scanning the
    /// whole child table for every tenant. Within candidates, the
    /// candidates drive instead, each probing its parent or children.
    fn fill_statements(
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
        let table = self.schema_table(&t.name)?;
        let row_key = table.row_key();
        let key = row_key
            .iter()
            .map(|k| format!("c.{}", sql::ident(k)))
            .collect::<Vec<_>>()
            .join(", ");
        let head = match within {
            None => format!(
                "INSERT OR IGNORE INTO temp.{} SELECT {key} FROM {} AS c WHERE ",
                self.set_name(index),
                sql::main_table(&t.name)
            ),
            // CROSS JOIN keeps the candidates as the outer loop.
            Some(candidates) => format!(
                "INSERT OR IGNORE INTO temp.{} SELECT {key} FROM temp.{} AS k CROSS JOIN {} AS c ON {} WHERE ",
                self.set_name(index),
                candidates.set_name(index),
                sql::main_table(&t.name),
                key_match(&row_key, "k", "c")
            ),
        };
        // `c` is linked to a member row of `other`, probed row by row;
        // `typed` restricts the rows of `other` (a child's type column).
        let probe_link = |c_cols: &[String],
                          other_cols: &[String],
                          other: &str,
                          alias: &str,
                          typed: &str|
         -> Result<String> {
            let member = self.member_probe(other, alias)?;
            let join = c_cols
                .iter()
                .zip(other_cols)
                .map(|(c, o)| format!("{alias}.{} = c.{}", sql::ident(o), sql::ident(c)))
                .collect::<Vec<_>>()
                .join(" AND ");
            Ok(format!(
                "EXISTS (SELECT 1 FROM {} AS {alias} WHERE {typed}{join} AND {member})",
                sql::main_table(other)
            ))
        };
        // The same condition, over the whole table through the members'
        // key list where the link has one column.
        let link = |c_cols: &[String],
                    other_cols: &[String],
                    other: &str,
                    alias: &str,
                    typed: &str|
         -> Result<String> {
            if within.is_none() {
                if let ([c], [o]) = (c_cols, other_cols) {
                    let member = self.member_predicate(other, alias)?;
                    return Ok(format!(
                        "c.{} IN (SELECT {alias}.{} FROM {} AS {alias} WHERE {typed}{member})",
                        sql::ident(c),
                        sql::ident(o),
                        sql::main_table(other)
                    ));
                }
            }
            probe_link(c_cols, other_cols, other, alias, typed)
        };
        let mut out = Vec::new();
        for r in owners {
            let typed = type_condition(r, "c");
            let plan = match (within, r.columns.as_slice(), r.parent_columns.as_slice()) {
                (None, [c], [p]) => FillPlan::choose(conn, self.schema, r, c, p)?,
                _ => FillPlan::ParentList,
            };
            let sql = match plan {
                FillPlan::ParentList => format!(
                    "{head}{typed}{}",
                    link(&r.columns, &r.parent_columns, &r.parent, "p", "")?
                ),
                FillPlan::ProbeParent => format!(
                    "{head}{typed}{}",
                    probe_link(&r.columns, &r.parent_columns, &r.parent, "p", "")?
                ),
                // CROSS JOIN keeps the parents as the outer loop.
                FillPlan::JoinFromParents => format!(
                    "INSERT OR IGNORE INTO temp.{set} SELECT {key} FROM {parent} AS p CROSS JOIN {child} AS c ON c.{col} = p.{pcol} WHERE {typed}{member}",
                    set = self.set_name(index),
                    parent = sql::main_table(&r.parent),
                    child = sql::main_table(&t.name),
                    col = sql::ident(&r.columns[0]),
                    pcol = sql::ident(&r.parent_columns[0]),
                    member = self.member_predicate(&r.parent, "p")?
                ),
            };
            out.push(Fill {
                target: t.name.clone(),
                source: r.parent.clone(),
                sql,
            });
        }
        // A child owns the row only through rows of its type: a preview
        // attachment's `record_id` is a blob id, a task attachment's is not.
        for r in owned_by_children {
            let typed = type_condition(r, "x");
            out.push(Fill {
                target: t.name.clone(),
                source: r.table.clone(),
                sql: format!(
                    "{head}{}",
                    link(&r.parent_columns, &r.columns, &r.table, "x", &typed)?
                ),
            });
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
        let sql = format!("SELECT count(*) FROM temp.{}", self.set_name(index));
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
        let sql = format!(
            "SELECT NOT EXISTS (SELECT 1 FROM temp.{})",
            self.set_name(index)
        );
        Ok(conn.query_row(&sql, [], |r| r.get(0))?)
    }

    /// For derived tables, a probe of the set by a row key already at hand:
    /// true when `alias.k0, alias.k1, …` (columns holding the values of
    /// [`Table::row_key`]) name a member. None for the other tables, whose
    /// membership is a condition on the row itself.
    pub fn key_probe(&self, table: &str, alias: &str) -> Option<String> {
        let index = self.scope.derived_index(table)?;
        let width = self.schema.table(table)?.row_key().len();
        let matches = (0..width)
            .map(|k| format!("s.k{k} = {alias}.k{k}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        Some(format!(
            "EXISTS (SELECT 1 FROM temp.{} AS s WHERE {matches})",
            self.set_name(index)
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
            Membership::TenantRow { key } => format!("{alias}.{} {test} ?1", sql::ident(key)),
            Membership::TenantColumn => format!(
                "{alias}.{} {test} ?1",
                sql::ident(&self.scope.options.tenant_column)
            ),
            Membership::Shared { .. } => {
                return Err(Error::internal(format!(
                    "{table} holds shared rows, no member set"
                )))
            }
            Membership::Derived { .. } => {
                let key = self.schema_table(table)?.row_key();
                let set = self.set_name(index);
                if probe {
                    format!(
                        "EXISTS (SELECT 1 FROM temp.{set} AS s WHERE {})",
                        key_match(&key, "s", alias)
                    )
                } else {
                    let lhs = key
                        .iter()
                        .map(|k| format!("{alias}.{}", sql::ident(k)))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let ks = key_names(key.len());
                    if key.len() == 1 {
                        format!("{lhs} IN (SELECT {ks} FROM temp.{set})")
                    } else {
                        format!("({lhs}) IN (SELECT {ks} FROM temp.{set})")
                    }
                }
            }
        })
    }
}

/// The tenant id as `?1` when the statement uses it (predicates over
/// derived tables do not), so one call site fits every statement.
pub fn tenant_params<'p>(
    stmt: &rusqlite::Statement<'_>,
    tenant: &'p crate::value::SqlValue,
) -> Vec<&'p dyn rusqlite::ToSql> {
    if stmt.parameter_count() == 0 {
        Vec::new()
    } else {
        vec![tenant as &dyn rusqlite::ToSql]
    }
}

impl MemberSets<'_> {
    fn set_name(&self, index: usize) -> String {
        match self.side {
            Side::Ours => format!("tk_ours_{index}"),
            Side::Others => format!("tk_others_{index}"),
            Side::OtherTenants => format!("tk_theirs_{index}"),
        }
    }
}

/// `alias.<type column> = '<class>' AND ` for a polymorphic reference
/// (the rows of `r.table` under `alias` that use it), else nothing.
fn type_condition(r: &Reference, alias: &str) -> String {
    match &r.polymorphic {
        Some((type_col, class)) => {
            format!(
                "{alias}.{} = {} AND ",
                sql::ident(type_col),
                sql::string(class)
            )
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
