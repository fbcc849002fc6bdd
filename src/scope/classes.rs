//! What discovery learns from rows rather than from the schema: the class
//! names each polymorphic `<x>_type` column holds (`Task`, `Project`),
//! which decide the tables a polymorphic pair refers to. Read here, once,
//! into a [`PolymorphicClasses`] value; every rule after that is a pure
//! function of the schema, the options and this value.
//!
//! A backup may also leave one table's classes to be learned while it
//! dumps that table ([`BackupTypes::LearnInLargest`]): the value then
//! carries that table as [`TypesToLearn`] instead of its classes.

use super::fill::estimated_rows;
use super::ScopeOptions;
use crate::error::Result;
use crate::schema::{Schema, Table};
use crate::sql;
use crate::value::SqlValue;
use rusqlite::Connection;
use std::collections::{BTreeMap, BTreeSet};

/// Whose rows tell which classes a polymorphic `*_type` column names.
#[derive(Debug, Clone, Copy)]
pub(super) enum TypeSource<'a> {
    /// Every row: a restore must see other tenants' references too.
    AllRows,
    /// In tables with the tenant column, only the rows of this tenant: all
    /// a backup needs, and it costs what the tenant costs, not a scan of
    /// every tenant's rows. Except in `learn_in`, whose classes the backup
    /// learns while it dumps those rows anyway (see [`TypesToLearn`]).
    TenantRows {
        tenant: &'a SqlValue,
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
/// has no references from them; `TenantScope::learned_references` makes
/// them from what the dump saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypesToLearn {
    pub table: String,
    /// (type column, id column) pairs, `commentable_type`/`commentable_id`.
    pub columns: Vec<(String, String)>,
}

/// The classes each polymorphic type column names, as far as discovery
/// needs them: read from the database ([`PolymorphicClasses::read`]) or,
/// in tests, written by hand ([`PolymorphicClasses::with`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolymorphicClasses {
    /// (table, type column) → class names, each once, sorted.
    named: BTreeMap<(String, String), BTreeSet<String>>,
    /// The table whose classes are not known yet (a backup learns them
    /// while dumping it): its polymorphic pairs make no reference now.
    pub(super) to_learn: Option<TypesToLearn>,
}

impl PolymorphicClasses {
    /// These classes in `table.type_column`, besides those already known.
    pub fn with<S: Into<String>>(
        mut self,
        table: &str,
        type_column: &str,
        classes: impl IntoIterator<Item = S>,
    ) -> Self {
        self.named
            .entry((table.to_string(), type_column.to_string()))
            .or_default()
            .extend(classes.into_iter().map(Into::into));
        self
    }

    /// The classes `table.type_column` names, sorted.
    pub(super) fn of<'s>(
        &'s self,
        table: &str,
        type_column: &str,
    ) -> impl Iterator<Item = &'s String> {
        self.named
            .get(&(table.to_string(), type_column.to_string()))
            .into_iter()
            .flatten()
    }

    /// Whether the classes of `table` are left to the dump.
    pub(super) fn learned_later(&self, table: &str) -> bool {
        self.to_learn.as_ref().is_some_and(|l| l.table == table)
    }

    /// Read the classes of every polymorphic pair of the tables discovery
    /// uses (`schema` as the caller's rules see it), from the rows `source`
    /// says, plus the `known` ones (table, type column, class).
    pub(super) fn read(
        conn: &Connection,
        schema: &Schema,
        options: &ScopeOptions,
        known: &[(String, String, String)],
        source: TypeSource<'_>,
    ) -> Result<PolymorphicClasses> {
        let mut classes = PolymorphicClasses::default();
        let tenant_column = options.tenant_column.as_str();
        for table in schema.tables.iter().filter(|t| t.skip.is_none()) {
            for (type_column, id_column) in polymorphic_columns(table, tenant_column) {
                let of_tenant = match source {
                    TypeSource::TenantRows { tenant, learn_in }
                        if table.has_column(tenant_column) =>
                    {
                        if learn_in == Some(table.name.as_str()) {
                            classes.learn_later(&table.name, type_column, id_column);
                            continue;
                        }
                        Some((tenant_column, tenant))
                    }
                    _ => None,
                };
                let found = distinct_types(conn, &table.name, &type_column, of_tenant)?;
                let known = known
                    .iter()
                    .filter(|(t, c, _)| t == &table.name && c == &type_column)
                    .map(|(_, _, class)| class.clone());
                classes = classes.with(&table.name, &type_column, found.into_iter().chain(known));
            }
        }
        Ok(classes)
    }

    fn learn_later(&mut self, table: &str, type_column: String, id_column: String) {
        self.to_learn
            .get_or_insert_with(|| TypesToLearn {
                table: table.to_string(),
                columns: Vec::new(),
            })
            .columns
            .push((type_column, id_column));
    }
}

/// The class names in `table.column`, of the rows whose `tenant column`
/// holds the tenant when `of_tenant` is given (else of every row).
fn distinct_types(
    conn: &Connection,
    table: &str,
    column: &str,
    of_tenant: Option<(&str, &SqlValue)>,
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

/// The table with the tenant column, polymorphic columns and the most rows
/// (by its largest rowid, no scan): the one whose classes a backup learns
/// while dumping.
pub(super) fn largest_polymorphic_table(
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
pub(super) fn polymorphic_type_column(table: &Table, column: &str) -> Option<String> {
    let type_column = format!("{}_type", column.strip_suffix("_id")?);
    table.has_column(&type_column).then_some(type_column)
}
