//! How tables refer to each other, in the order discovery trusts them:
//! declared foreign keys, then the caller's hints, then Rails' own tables'
//! references, then conventions (`x_id` → `xs`, polymorphic
//! `x_type`/`x_id` → the tables the stored class names map to). A pure
//! function of the schema, the options and the classes read from rows.

use super::classes::{polymorphic_type_column, PolymorphicClasses};
use super::{Reference, ReferenceSource, RelationHint, ScopeOptions};
use crate::error::{Error, Result};
use crate::naming;
use crate::schema::{Column, Schema, Table};
use std::collections::BTreeMap;

/// Every reference discovery follows, and those of them that are guesses
/// from naming alone.
pub(super) struct References {
    pub all: Vec<Reference>,
    pub guessed: Vec<Reference>,
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

/// The references between the tables of `schema` (as the caller's rules
/// see it: skipped tables take no part).
pub(super) fn collect(
    schema: &Schema,
    options: &ScopeOptions,
    classes: &PolymorphicClasses,
) -> Result<References> {
    let mut refs = declared_foreign_keys(schema);
    for hint in &options.relations {
        if let Some(r) = hinted_reference(schema, hint)? {
            push_unique(&mut refs, r);
        }
    }
    framework_references(schema, &mut refs);
    let mut guessed = Vec::new();
    for table in usable_tables(schema) {
        conventional_references(schema, options, classes, table, &mut refs, &mut guessed);
    }
    Ok(References { all: refs, guessed })
}

fn usable_tables(schema: &Schema) -> impl Iterator<Item = &Table> {
    schema.tables.iter().filter(|t| t.skip.is_none())
}

fn usable<'s>(schema: &'s Schema, name: &str) -> Option<&'s Table> {
    schema.table_ci(name).filter(|t| t.skip.is_none())
}

fn declared_foreign_keys(schema: &Schema) -> Vec<Reference> {
    let mut refs = Vec::new();
    for table in usable_tables(schema) {
        for fk in &table.foreign_keys {
            if let Some(parent) = usable(schema, &fk.table) {
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
    refs
}

/// The reference a `relations:` hint gives, checked against the schema;
/// None for a hint that says "no reference" or names a skipped table.
fn hinted_reference(schema: &Schema, hint: &RelationHint) -> Result<Option<Reference>> {
    // A hint about a skipped table is moot, not wrong: the skip rule wins
    // (a configuration read from an app's models names every table, and
    // may skip some of them). A table that does not exist is a mistake.
    let hinted = |name: &str| match schema.table_ci(name) {
        None => Err(Error::argument(format!("relation hint: no table {name:?}"))),
        Some(t) => Ok(t.skip.is_none().then_some(t)),
    };
    let Some(child) = hinted(&hint.table)? else {
        return Ok(None);
    };
    let Some(references) = &hint.references else {
        for c in &hint.column {
            if !child.has_column(c) {
                return Err(Error::argument(format!("relation hint: no column {c:?}")));
            }
        }
        return Ok(None);
    };
    let Some(parent) = hinted(references)? else {
        return Ok(None);
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
    Ok(Some(Reference {
        table: child.name.clone(),
        columns: hint.column.clone(),
        parent: parent.name.clone(),
        parent_columns,
        polymorphic: None,
        source: ReferenceSource::Hint,
    }))
}

/// [`FRAMEWORK_REFERENCES`] the schema has the tables and columns for and
/// does not declare already.
fn framework_references(schema: &Schema, refs: &mut Vec<Reference>) {
    for &(table, column, parent) in FRAMEWORK_REFERENCES {
        let (Some(child), Some(parent)) = (usable(schema, table), usable(schema, parent)) else {
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
}

/// The references of `table`'s `<x>_id` columns that nothing declares:
/// a polymorphic pair refers to the table of each class it names; any
/// other column to the table its name suggests (a guess).
fn conventional_references(
    schema: &Schema,
    options: &ScopeOptions,
    classes: &PolymorphicClasses,
    table: &Table,
    refs: &mut Vec<Reference>,
    guessed: &mut Vec<Reference>,
) {
    for column in &table.columns {
        if column.name == options.tenant_column || !column.name.ends_with("_id") {
            continue;
        }
        if let Some(type_column) = polymorphic_type_column(table, &column.name) {
            if !classes.learned_later(&table.name) {
                // Each class once (a set), and no other reference is
                // polymorphic: plain pushes, linear in the classes.
                for class_name in classes.of(&table.name, &type_column) {
                    refs.extend(polymorphic_reference(
                        schema,
                        options,
                        table,
                        (&type_column, &column.name),
                        class_name,
                    ));
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

/// The reference of `table`'s polymorphic pair `(type column, id column)`
/// for rows naming `class_name`, if the class names a table we could
/// reference.
pub(super) fn polymorphic_reference(
    schema: &Schema,
    options: &ScopeOptions,
    table: &Table,
    (type_column, id_column): (&str, &str),
    class_name: &str,
) -> Option<Reference> {
    let (parent, pk) = polymorphic_target(schema, options, class_name)?;
    Some(Reference {
        table: table.name.clone(),
        columns: vec![id_column.to_string()],
        parent: parent.name.clone(),
        parent_columns: vec![pk.to_string()],
        polymorphic: Some((type_column.to_string(), class_name.to_string())),
        source: options.polymorphic_source(class_name),
    })
}

/// The table a polymorphic class name points at, with its single-column
/// key: None when there is no such table we could reference.
pub(super) fn polymorphic_target<'s>(
    schema: &'s Schema,
    options: &ScopeOptions,
    class_name: &str,
) -> Option<(&'s Table, &'s str)> {
    let parent = usable(schema, &options.table_for_class(class_name))?;
    match parent.primary_key().as_slice() {
        [pk] => Some((parent, pk)),
        _ => None,
    }
}

/// The reference Rails naming suggests for `table.column` (`project_id` →
/// `projects`), if the guess is plausible: a `<x>_id` naming its own table
/// is a tree only as `parent_id`; any other (`related_category_id` in
/// `related_categories`) names the table of a shorter stem (`categories`),
/// never its own. A guess whose column cannot hold the parent's key (text
/// `message_id` holding a provider's id, integer `messages.id`) is no
/// reference: comparing them would match rows by accident.
fn guessed_reference(schema: &Schema, table: &Table, column: &Column) -> Option<Reference> {
    let parent = naming::reference_stems(&column.name)
        .filter_map(|stem| usable(schema, &naming::pluralize(stem)))
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
