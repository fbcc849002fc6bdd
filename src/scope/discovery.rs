//! Which tables hold the tenant's rows, and why: the tenants table (its
//! one row), tables with the tenant column (owned), and tables whose rows
//! hang off those through references (derived: join tables, attachments,
//! blobs). [`TenantScope::from_schema`] decides it from a plain [`Schema`]
//! value, the options and the classes read from rows; only
//! [`TenantScope::discover`] and [`TenantScope::discover_for_backup`]
//! touch the database, to read those classes.

use super::classes::{largest_polymorphic_table, PolymorphicClasses, TypeSource};
use super::order::{dependency_order, OrderInputs};
use super::references::{self, polymorphic_reference, References};
use super::{
    is_blob_table, shared, BackupTypes, Membership, Reference, ScopeOptions, ScopedTable,
    TenantScope,
};
use crate::error::{Error, Result};
use crate::naming;
use crate::schema::{Schema, Table};
use crate::value::SqlValue;
use rusqlite::Connection;
use std::collections::{BTreeMap, BTreeSet};

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
        tenant: &SqlValue,
        types: BackupTypes,
    ) -> Result<TenantScope> {
        let learn_in = match types {
            BackupTypes::ReadFirst => None,
            BackupTypes::LearnInLargest => largest_polymorphic_table(conn, schema, options)?,
        };
        let source = TypeSource::TenantRows {
            tenant,
            learn_in: learn_in.as_deref(),
        };
        Self::discover_from(conn, schema, options, &[], source)
    }

    fn discover_from(
        conn: &Connection,
        schema: &Schema,
        options: &ScopeOptions,
        known_types: &[(String, String, String)],
        source: TypeSource<'_>,
    ) -> Result<TenantScope> {
        let ruled = options.apply_table_rules(schema)?;
        // The argument checks come before reading any row.
        tenant_tables(&ruled, options)?;
        let classes = PolymorphicClasses::read(conn, &ruled, options, known_types, source)?;
        Self::from_schema(schema, options, classes)
    }

    /// The scope from the schema, the caller's options and the classes the
    /// polymorphic columns name: the rules alone, no database.
    pub fn from_schema(
        schema: &Schema,
        options: &ScopeOptions,
        mut classes: PolymorphicClasses,
    ) -> Result<TenantScope> {
        let ruled = options.apply_table_rules(schema)?;
        let schema: &Schema = &ruled;
        let (tenant_table, direct) = tenant_tables(schema, options)?;
        let References {
            all: references,
            guessed,
        } = references::collect(schema, options, &classes)?;
        // The tenants table goes first whatever its columns say.
        if classes.to_learn.as_ref().map(|l| &l.table) == tenant_table.as_ref() {
            classes.to_learn = None;
        }
        let mut member = initial_members(schema, tenant_table.as_deref(), &direct)?;
        grow_members(schema, options, &references, &mut member);
        let names: BTreeSet<String> = member.keys().cloned().collect();
        refresh_owners(&mut member, &references, &names);

        let order = dependency_order(&OrderInputs {
            schema,
            member: &member,
            references: &references,
            tenant_table: tenant_table.as_deref(),
            learned_late: classes.to_learn.as_ref().map(|l| l.table.as_str()),
        });
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
        let skipped = skipped_tables(schema, options, &names, &shared_names);
        let guesses = guesses(&guessed, &names, &shared_names);
        Ok(TenantScope {
            options: options.clone(),
            tables,
            skipped,
            shared,
            guesses,
            references,
            types_to_learn: classes.to_learn,
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
        let table = schema.table(&learn.table)?;
        let mut refs = Vec::new();
        for (type_column, id_column, classes) in seen {
            for class_name in classes {
                let Some(r) = polymorphic_reference(
                    schema,
                    &self.options,
                    table,
                    (type_column, id_column),
                    class_name,
                ) else {
                    continue;
                };
                let later = position(&r.parent).is_some_and(|p| p > own);
                // A class naming a table outside the tenant's data may make
                // that table shared, which the dump did not know to carry.
                let outside = position(&r.parent).is_none();
                if later || outside || is_blob_table(&r.parent) {
                    return None;
                }
                refs.push(r);
            }
        }
        Some(refs)
    }
}

/// The tenants table (if any) and the tables with the tenant column, or
/// why the options cannot describe this schema's tenants.
fn tenant_tables<'s>(
    schema: &'s Schema,
    options: &ScopeOptions,
) -> Result<(Option<String>, Vec<&'s Table>)> {
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
    Ok((tenant_table, direct))
}

/// The caller's `tenant_table`, else the parent of a foreign key on the
/// tenant column, else the table Rails naming gives it.
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

/// The tenants table (by its row) and the tables with the tenant column.
fn initial_members(
    schema: &Schema,
    tenant_table: Option<&str>,
    direct: &[&Table],
) -> Result<BTreeMap<String, Membership>> {
    let mut member: BTreeMap<String, Membership> = BTreeMap::new();
    if let Some(t) = tenant_table {
        let key = schema.table(t).map(|t| t.primary_key()).unwrap_or_default();
        let [key] = key.as_slice() else {
            return Err(Error::schema(format!(
                "tenants table {t:?} needs a single-column primary key"
            )));
        };
        member.insert(
            t.to_string(),
            Membership::TenantRow {
                key: key.to_string(),
            },
        );
    }
    for t in direct {
        if Some(t.name.as_str()) != tenant_table {
            member.insert(t.name.clone(), Membership::TenantColumn);
        }
    }
    Ok(member)
}

/// Grow the member set until it stops changing: a table joins when one of
/// its references points at a member (or, for ActiveStorage blobs, when a
/// member references it). Tables ruled shared never join.
fn grow_members(
    schema: &Schema,
    options: &ScopeOptions,
    references: &[Reference],
    member: &mut BTreeMap<String, Membership>,
) {
    loop {
        let mut grew = false;
        for table in schema.tables.iter().filter(|t| t.skip.is_none()) {
            if member.contains_key(&table.name) || options.rules_shared(&table.name) {
                continue;
            }
            let is_member = |t: &str| member.contains_key(t);
            let owners = owners_of(&table.name, references, is_member);
            let owned_by_children = owning_children(&table.name, references, is_member);
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
            return;
        }
    }
}

/// Late members may own earlier derived ones too (attachments of variant
/// records): refresh the reference lists once more, against all members.
fn refresh_owners(
    member: &mut BTreeMap<String, Membership>,
    references: &[Reference],
    names: &BTreeSet<String>,
) {
    let is_member = |t: &str| names.contains(t);
    for (name, membership) in member.iter_mut() {
        if let Membership::Derived {
            owners,
            owned_by_children,
        } = membership
        {
            *owners = owners_of(name, references, is_member);
            if is_blob_table(name) {
                *owned_by_children = owning_children(name, references, is_member);
            }
        }
    }
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

/// For the blobs table, the references of member rows to it: a blob is
/// the tenant's when the tenant's rows attach it. No other table is owned
/// by its children.
fn owning_children(
    table: &str,
    references: &[Reference],
    is_member: impl Fn(&str) -> bool,
) -> Vec<Reference> {
    if !is_blob_table(table) {
        return Vec::new();
    }
    references
        .iter()
        .filter(|r| r.parent == table && is_member(&r.table))
        .cloned()
        .collect()
}

/// The tables left out, with the reason: skipped by rule, or neither
/// member nor shared.
fn skipped_tables(
    schema: &Schema,
    options: &ScopeOptions,
    members: &BTreeSet<String>,
    shared: &BTreeSet<&str>,
) -> Vec<(String, String)> {
    let column = &options.tenant_column;
    schema
        .tables
        .iter()
        .filter_map(|t| match t.skip {
            Some(reason) => Some((t.name.clone(), reason.describe().to_string())),
            None if !members.contains(&t.name) && !shared.contains(t.name.as_str()) => Some((
                t.name.clone(),
                format!("no {column} column and no reference to tenant rows"),
            )),
            None => None,
        })
        .collect()
}

/// The guesses from naming that touch the tenant's data (a member table,
/// or a shared table the tenant's rows refer to).
fn guesses(
    guessed: &[Reference],
    members: &BTreeSet<String>,
    shared: &BTreeSet<&str>,
) -> Vec<crate::archive::Guess> {
    guessed
        .iter()
        .filter(|r| {
            members.contains(&r.table)
                || members.contains(&r.parent)
                || shared.contains(r.parent.as_str())
        })
        .map(|r| crate::archive::Guess {
            table: r.table.clone(),
            column: r.columns.join(","),
            references: r.parent.clone(),
        })
        .collect()
}
