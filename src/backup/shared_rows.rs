//! Shared reference rows in a backup (see `scope/shared.rs`): while the
//! tenant's rows are dumped, the keys they refer to in shared tables are
//! collected ([`SharedSeeds`]); after them, in the same read snapshot, the
//! shared rows those keys name — and the shared rows those refer to, to a
//! fixpoint — are dumped with `scope: "shared"` in their manifest entry.

use crate::archive::deflate::DumpCompressor;
use crate::archive::TableEntry;
use crate::error::{Error, Result};
use crate::progress::{Event, Progress, Step};
use crate::schema::Schema;
use crate::scope::shared::{key_groups, SCOPE_SHARED};
use crate::scope::{polymorphic_types_of, Membership, ScopedTable, TenantScope};
use crate::sql;
use crate::value::{write_json, SqlValue};
use rusqlite::types::ValueRef;
use rusqlite::Connection;
use std::collections::BTreeMap;

/// One reference from a dumped table into a key group of a shared table.
struct Link {
    /// (shared table index, key group index).
    target: (usize, usize),
    columns: Vec<String>,
    /// Polymorphic: (type column, class) the row must hold.
    typed: Option<(String, String)>,
}

/// A [`Link`] by position in a dump's SELECT: (shared table, key group,
/// column positions, polymorphic (type column position, class)).
type PlacedLink = (usize, usize, Vec<usize>, Option<(usize, String)>);

/// The links of one dumped table, placed in its SELECT.
pub(super) struct RowLinks {
    links: Vec<PlacedLink>,
}

/// Keys of shared rows the dumped rows refer to.
pub(super) struct SharedSeeds {
    links: BTreeMap<String, Vec<Link>>,
    /// (table, group) → canonical JSON of the key → its values.
    keys: BTreeMap<(usize, usize), BTreeMap<Vec<u8>, Vec<SqlValue>>>,
}

impl SharedSeeds {
    pub fn plan(scope: &TenantScope) -> SharedSeeds {
        let mut links: BTreeMap<String, Vec<Link>> = BTreeMap::new();
        for (j, shared) in scope.shared.iter().enumerate() {
            let Membership::Shared { referenced_by } = &shared.membership else {
                continue;
            };
            let groups = key_groups(shared);
            for r in referenced_by
                .iter()
                .filter(|r| scope.table(&r.table).is_some())
            {
                let g = groups
                    .iter()
                    .position(|g| *g == r.parent_columns)
                    .expect("every reference has its group");
                links.entry(r.table.clone()).or_default().push(Link {
                    target: (j, g),
                    columns: r.columns.clone(),
                    typed: r.polymorphic.clone(),
                });
            }
        }
        SharedSeeds {
            links,
            keys: BTreeMap::new(),
        }
    }

    /// The links of `table`, placed in a SELECT of `columns`.
    pub fn row_links(&self, table: &str, columns: &[&str]) -> RowLinks {
        let pos = |c: &str| columns.iter().position(|x| *x == c);
        let links = self
            .links
            .get(table)
            .into_iter()
            .flatten()
            .filter_map(|l| {
                let cols: Option<Vec<usize>> = l.columns.iter().map(|c| pos(c)).collect();
                let typed = match &l.typed {
                    Some((t, class)) => Some((pos(t)?, class.clone())),
                    None => None,
                };
                Some((l.target.0, l.target.1, cols?, typed))
            })
            .collect();
        RowLinks { links }
    }

    /// Note the keys a dumped row refers to (NULLs refer to nothing).
    pub fn see(&mut self, links: &RowLinks, row: &rusqlite::Row<'_>) -> Result<()> {
        for (j, g, cols, typed) in &links.links {
            if let Some((t, class)) = typed {
                if row.get_ref(*t)?.as_str().ok() != Some(class.as_str()) {
                    continue;
                }
            }
            let mut json = Vec::new();
            let mut values = Vec::with_capacity(cols.len());
            for &c in cols {
                let v = row.get_ref(c)?;
                if v == ValueRef::Null {
                    break;
                }
                write_json(&mut json, v);
                json.push(b',');
                values.push(SqlValue::from_ref(v));
            }
            if values.len() == cols.len() {
                self.keys.entry((*j, *g)).or_default().insert(json, values);
            }
        }
        Ok(())
    }
}

/// `temp.tk_shared_<table>_<group>`.
fn key_table(j: usize, g: usize) -> String {
    format!("tk_shared_{j}_{g}")
}

/// SQL condition: row `a` of shared table `j` is one the archive carries.
fn carried(table: &ScopedTable, j: usize) -> String {
    key_groups(table)
        .iter()
        .enumerate()
        .map(|(g, cols)| {
            let lhs = cols
                .iter()
                .map(|c| format!("a.{}", sql::ident(c)))
                .collect::<Vec<_>>()
                .join(", ");
            let set = format!(
                "SELECT {} FROM temp.{}",
                sql::key_columns(cols.len()),
                key_table(j, g)
            );
            if cols.len() == 1 {
                format!("{lhs} IN ({set})")
            } else {
                format!("({lhs}) IN ({set})")
            }
        })
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// Dump the shared rows the tenant's rows refer to, after them. Runs on
/// the connection whose read transaction the dump used.
pub(super) fn dump(
    conn: &Connection,
    scope: &TenantScope,
    schema: &Schema,
    seeds: &SharedSeeds,
    out: &mut DumpCompressor,
    progress: &mut dyn Progress,
) -> Result<Vec<TableEntry>> {
    if scope.shared.is_empty() {
        return Ok(Vec::new());
    }
    create_key_tables(conn, scope, seeds)?;
    close_over_shared(conn, scope)?;
    let mut entries = Vec::with_capacity(scope.shared.len());
    for (j, t) in scope.shared.iter().enumerate() {
        entries.push(dump_shared_table(conn, scope, schema, t, j, out, progress)?);
    }
    for (j, t) in scope.shared.iter().enumerate() {
        for g in 0..key_groups(t).len() {
            conn.execute_batch(&format!("DROP TABLE IF EXISTS temp.{}", key_table(j, g)))?;
        }
    }
    Ok(entries)
}

fn create_key_tables(conn: &Connection, scope: &TenantScope, seeds: &SharedSeeds) -> Result<()> {
    for (j, t) in scope.shared.iter().enumerate() {
        for (g, cols) in key_groups(t).iter().enumerate() {
            // No affinity: keys keep the storage class they were read with.
            let names = sql::key_columns(cols.len());
            conn.execute_batch(&format!(
                "DROP TABLE IF EXISTS temp.{k}; CREATE TEMP TABLE {k}({names}, PRIMARY KEY({names})) WITHOUT ROWID;",
                k = key_table(j, g)
            ))?;
            let params = (1..=cols.len())
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let mut insert = conn.prepare(&format!(
                "INSERT OR IGNORE INTO temp.{} VALUES ({params})",
                key_table(j, g)
            ))?;
            for values in seeds.keys.get(&(j, g)).into_iter().flat_map(|m| m.values()) {
                insert.execute(rusqlite::params_from_iter(values.iter()))?;
            }
        }
    }
    Ok(())
}

/// Shared rows refer to further shared rows (a user's identity): add their
/// keys until no set grows.
fn close_over_shared(conn: &Connection, scope: &TenantScope) -> Result<()> {
    let mut steps = Vec::new();
    for (k, parent) in scope.shared.iter().enumerate() {
        let Membership::Shared { referenced_by } = &parent.membership else {
            continue;
        };
        let groups = key_groups(parent);
        for r in referenced_by {
            let Some(j) = scope.shared.iter().position(|t| t.name == r.table) else {
                continue;
            };
            let g = groups
                .iter()
                .position(|g| *g == r.parent_columns)
                .expect("every reference has its group");
            let typed = match &r.polymorphic {
                Some((t, class)) => {
                    format!("{} AND ", sql::class_is("a", sql::Col::Named(t), class))
                }
                None => String::new(),
            };
            let cols: Vec<String> = r
                .columns
                .iter()
                .map(|c| format!("a.{}", sql::ident(c)))
                .collect();
            let not_null = cols
                .iter()
                .map(|c| format!("{c} IS NOT NULL AND "))
                .collect::<String>();
            steps.push(format!(
                "INSERT OR IGNORE INTO temp.{} SELECT {} FROM {} AS a WHERE {typed}{not_null}({})",
                key_table(k, g),
                cols.join(", "),
                sql::main_table(&r.table),
                carried(&scope.shared[j], j)
            ));
        }
    }
    for _pass in 0..64 {
        let mut grew = 0;
        for sql in &steps {
            grew += conn.execute(sql, [])?;
        }
        if grew == 0 {
            return Ok(());
        }
    }
    Err(Error::internal(
        "shared rows did not converge after 64 passes",
    ))
}

fn dump_shared_table(
    conn: &Connection,
    scope: &TenantScope,
    schema: &Schema,
    t: &ScopedTable,
    j: usize,
    out: &mut DumpCompressor,
    progress: &mut dyn Progress,
) -> Result<TableEntry> {
    let table = schema
        .table(&t.name)
        .ok_or_else(|| Error::internal(format!("shared table {} vanished", t.name)))?;
    let columns: Vec<&str> = table.stored_columns().map(|c| c.name.as_str()).collect();
    let order = table
        .row_key()
        .iter()
        .map(|k| format!("a.{}", sql::ident(k)))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {} FROM {} AS a WHERE {} ORDER BY {order}",
        columns
            .iter()
            .map(|c| format!("a.{}", sql::ident(c)))
            .collect::<Vec<_>>()
            .join(", "),
        sql::main_table(&t.name),
        carried(t, j)
    );
    let mut prefix = b"{\"table\":".to_vec();
    crate::value::write_json_string(&mut prefix, &t.name);
    prefix.extend_from_slice(b",\"row\":{");
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query([])?;
    let mut written = 0u64;
    while let Some(row) = rows.next()? {
        let line = out.buffer();
        line.extend_from_slice(&prefix);
        for (i, c) in columns.iter().enumerate() {
            if i > 0 {
                line.push(b',');
            }
            crate::value::write_json_string(line, c);
            line.push(b':');
            write_json(line, row.get_ref(i)?);
        }
        line.extend_from_slice(b"}}\n");
        out.end_line()?;
        written += 1;
        if written % 1024 == 0 {
            progress.check_interrupt()?;
        }
    }
    progress.emit(Event::table_progress(
        Step::DumpProgress,
        t.name.as_str(),
        written,
        written,
    ))?;
    Ok(TableEntry {
        name: t.name.clone(),
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows: written,
        scope: SCOPE_SHARED.into(),
        polymorphic: polymorphic_types_of(&scope.references, &t.name),
        left_out_cross_tenant: 0,
    })
}
