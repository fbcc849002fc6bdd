//! Whether an archive fits the database and the caller's options, checked
//! before a row is staged. The archive is data, never structure: the
//! tenants table, the tenant column, each table's key and which tables are
//! shared come from this database and the options; an archive that says
//! otherwise was not made by a backup of this schema.

use super::RestoreOptions;
use crate::archive::{Manifest, TableEntry};
use crate::error::{Error, Result};
use crate::schema::Schema;
use crate::scope::{Membership, TenantScope, MOST_CLASSES};

/// The archive's tenant column and tenant must be the ones asked for, and
/// its files need a storage root to go to.
pub(super) fn check_against_options(manifest: &Manifest, options: &RestoreOptions) -> Result<()> {
    let source = &manifest.tenant.id;
    if manifest.tenant.column != options.tenant_column {
        return Err(Error::argument(format!(
            "the archive's tenant column is {:?}, not {:?}: pass tenant_column: {:?}",
            manifest.tenant.column, options.tenant_column, manifest.tenant.column
        )));
    }
    if source != options.target_id() && !options.remap {
        return Err(Error::argument(format!(
            "the archive holds tenant {source}, not {}: pass remap: true to restore it into tenant {}",
            options.target_id(),
            options.target_id()
        )));
    }
    // Files in the archive mean the app keeps them on the Disk service: without
    // its root they would be dropped while their blob rows are restored.
    // (Without files, storage_root: nil is right: a backup made without it,
    // an app whose files live in S3.)
    if options.restore && options.storage_root.is_none() && !manifest.blobs.is_empty() {
        return Err(Error::argument(format!(
            "the archive holds {} ActiveStorage file(s): pass storage_root: (the Disk service's root) to restore them with their rows",
            manifest.blobs.len()
        )));
    }
    Ok(())
}

/// (table, type column, class) of every class the manifest says the
/// archive's polymorphic columns name: a restore into a database that has
/// no such row yet learns them from there. No longer a list per column
/// than the rows themselves may make (see [`MOST_CLASSES`]).
pub(super) fn known_types(manifest: &Manifest) -> Result<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    for t in &manifest.tables {
        for (column, classes) in &t.polymorphic {
            if classes.len() > MOST_CLASSES {
                return Err(Error::archive(format!(
                    "manifest: {}.{column} lists more than {MOST_CLASSES} classes",
                    t.name
                )));
            }
            out.extend(
                classes
                    .iter()
                    .map(|class| (t.name.clone(), column.clone(), class.clone())),
            );
        }
    }
    Ok(out)
}

/// The archive is data, never structure: the tenants table, the tenant
/// column and each table's key come from this database. An archive that
/// says otherwise, or whose rows could not be placed by them, was not made
/// by a backup of this schema.
pub(super) fn check_archive_agrees(
    m: &Manifest,
    schema: &Schema,
    scope: &TenantScope,
) -> Result<()> {
    let ours = scope.tenant_table().map(|t| t.name.as_str());
    if let (Some(theirs), Some(ours)) = (m.tenant.table.as_deref(), ours) {
        if theirs != ours {
            return Err(Error::archive(format!(
                "the archive names {theirs} as the tenants table; this database's is {ours}"
            )));
        }
    }
    for entry in &m.tables {
        check_shared_entry(entry, schema, scope)?;
        let scoped = scope
            .table(&entry.name)
            .or_else(|| scope.shared.iter().find(|t| t.name == entry.name));
        let (Some(table), Some(scoped)) = (schema.table(&entry.name), scoped) else {
            continue; // check_schema names it
        };
        let has = |c: &str| entry.columns.iter().any(|x| x == c);
        let column = &scope.options.tenant_column;
        if scoped.membership == Membership::TenantColumn && !has(column) {
            return Err(Error::archive(format!(
                "table {} is tenant data by its {column} column, but the archive leaves {column} out",
                entry.name
            )));
        }
        if let Some(key) = table.primary_key().into_iter().find(|k| !has(k)) {
            return Err(Error::archive(format!(
                "table {}: the archive leaves out its key column {key}",
                entry.name
            )));
        }
    }
    Ok(())
}

/// The archive says which of its tables hold shared rows, but the target's
/// schema and rules decide: an entry marked `shared` must be a shared table
/// here, and a table shared here must not come as tenant data.
fn check_shared_entry(entry: &TableEntry, schema: &Schema, scope: &TenantScope) -> Result<()> {
    let shared_here = scope.shared.iter().any(|t| t.name == entry.name);
    if entry.is_shared() == shared_here || schema.table(&entry.name).is_none() {
        return Ok(());
    }
    let column = &scope.options.tenant_column;
    let why = match (entry.is_shared(), schema.table(&entry.name)) {
        (true, Some(t)) if t.has_column(column) => {
            format!("it is tenant data here (it has the tenant column {column})")
        }
        (true, _) if scope.table(&entry.name).is_some() => {
            "it is tenant data here (its rows belong through references to tenant rows)".into()
        }
        (true, _) => "no tenant data here refers to it, or tables: rules it otherwise".into(),
        (false, _) => "it holds shared rows here, not tenant data".into(),
    };
    let marked = if entry.is_shared() {
        "shared"
    } else {
        "tenant data"
    };
    Err(Error::archive(format!(
        "the archive marks table {} as {marked}, but {why}",
        entry.name
    )))
}

/// Every difference between the archive and the database, in one error.
pub(super) fn check_schema(m: &Manifest, schema: &Schema, scope: &TenantScope) -> Result<()> {
    let mut problems = Vec::new();
    if let (Some(theirs), Some(ours)) = (&m.source.schema_version, &schema.migration_version) {
        if version_key(theirs) > version_key(ours) {
            problems.push(format!(
                "the archive comes from a newer schema (migration {theirs}) than this database ({ours}): run the migrations first"
            ));
        }
    }
    for entry in &m.tables {
        let Some(table) = schema.table(&entry.name) else {
            problems.push(format!("table {} is missing", entry.name));
            continue;
        };
        if scope.table(&entry.name).is_none() && !entry.is_shared() {
            problems.push(format!(
                "table {} is not tenant data in this database",
                entry.name
            ));
            continue;
        }
        for c in &entry.columns {
            match table.column(c) {
                None => problems.push(format!("column {}.{c} is missing", entry.name)),
                Some(col) if col.generated => {
                    problems.push(format!("column {}.{c} is generated here", entry.name))
                }
                Some(_) => {}
            }
        }
        for col in table.stored_columns() {
            let in_archive = entry.columns.iter().any(|c| c == &col.name);
            let rowid_alias = col.pk_position > 0
                && col.decl_type.eq_ignore_ascii_case("integer")
                && table.primary_key().len() == 1;
            if !in_archive && col.not_null && !col.has_default && !rowid_alias {
                problems.push(format!(
                    "column {}.{} is NOT NULL without a default and the archive has no values for it",
                    entry.name, col.name
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::schema(format!(
            "the archive does not fit this database: {}",
            problems.join("; ")
        )))
    }
}

/// Migration versions compare as numbers (`20261115000000`), longest wins.
fn version_key(v: &str) -> (usize, &str) {
    (v.len(), v)
}
