//! Shared rows to insert that a UNIQUE index other than the primary key
//! would refuse: the archive's user 5 is not here, but another user with
//! its email is (or the archive carries two missing rows with one email).
//!
//! Such a row cannot be inserted, and it was carried because the tenant's
//! rows (or other shared rows) refer to it, so leaving it out would leave
//! them pointing at nothing (or at whatever row takes its id later). The
//! plan lists it as a conflict naming the row, the columns and the index,
//! so a dry run predicts what the restore refuses; the write would fail on
//! the index anyway, with a bare database error. Which row is "the same"
//! user is the app's business: tenant_kit never re-keys shared rows.
//!
//! Partial indexes and indexes over expressions are not asked: whether
//! they apply depends on more than the columns' values.

use super::stage::StagedTable;
use super::Conflict;
use crate::error::Result;
use crate::sql;
use rusqlite::Connection;

/// A UNIQUE index over plain columns, all of them in the archive.
struct UniqueIndex {
    name: String,
    /// Positions within the staged table's columns.
    columns: Vec<usize>,
}

/// The staged rows to insert (`missing`: SQL condition over alias `s`, the
/// database has no row of the key) that clash on a UNIQUE index, counted,
/// and the first `room` of them listed.
pub(super) fn clashes(
    conn: &Connection,
    table: &StagedTable,
    missing: impl Fn(&str) -> String,
    room: usize,
) -> Result<(u64, Vec<Conflict>)> {
    let mut count = 0;
    let mut listed = Vec::new();
    for index in unique_indexes(conn, table)? {
        let pairs = || {
            index
                .columns
                .iter()
                .map(|&i| (sql::Col::Named(&table.columns[i]), sql::Col::Staged(i)))
        };
        let staged_pairs = || {
            index
                .columns
                .iter()
                .map(|&i| (sql::Col::Staged(i), sql::Col::Staged(i)))
        };
        conn.execute_batch(&table.stage.create_index_on(&index.columns))?;
        let select = format!(
            "SELECT s.rowid FROM {stage_table} AS s WHERE {missing_s} AND (\
             EXISTS (SELECT 1 FROM {main} AS m WHERE {in_db}) OR \
             EXISTS (SELECT 1 FROM {stage_table} AS o WHERE o.rowid < s.rowid AND {missing_o} AND {in_archive})) \
             ORDER BY s.rowid",
            stage_table = table.stage,
            missing_s = missing("s"),
            missing_o = missing("o"),
            main = sql::main_table(&table.name),
            in_db = sql::key_match("m", "s", pairs(), sql::Match::Equal),
            in_archive = sql::key_match("o", "s", staged_pairs(), sql::Match::Equal),
        );
        let sids: Vec<i64> = conn
            .prepare(&select)?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        count += sids.len() as u64;
        let shown = &sids[..sids.len().min(room.saturating_sub(listed.len()))];
        let columns: Vec<&str> = index
            .columns
            .iter()
            .map(|&i| table.columns[i].as_str())
            .collect();
        for key in table.describe_rows(conn, shown)? {
            listed.push(Conflict {
                table: table.name.clone(),
                key,
                reason: format!(
                    "a shared row to insert whose {} is already another {} row's (UNIQUE index {}): it cannot be inserted, and the rows that refer to it would dangle",
                    columns.join(", "),
                    table.name,
                    index.name
                ),
            });
        }
    }
    Ok((count, listed))
}

/// The table's UNIQUE indexes but its primary key's, over columns the
/// archive carries (a column it lacks takes the database's default, which
/// the archive did not choose).
fn unique_indexes(conn: &Connection, table: &StagedTable) -> Result<Vec<UniqueIndex>> {
    let mut list = conn.prepare(&format!(
        "PRAGMA main.index_list({})",
        sql::ident(&table.name)
    ))?;
    let names: Vec<String> = list
        .query_map([], |r| {
            Ok((
                r.get::<_, String>("name")?,
                r.get::<_, i64>("unique")?,
                r.get::<_, String>("origin")?,
                r.get::<_, i64>("partial")?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?
        .into_iter()
        .filter(|(_, unique, origin, partial)| *unique == 1 && origin != "pk" && *partial == 0)
        .map(|(name, ..)| name)
        .collect();
    let mut out = Vec::new();
    for name in names {
        let columns: Vec<Option<String>> = conn
            .prepare(&format!("PRAGMA main.index_info({})", sql::ident(&name)))?
            .query_map([], |r| r.get("name"))?
            .collect::<rusqlite::Result<_>>()?;
        let positions: Option<Vec<usize>> = columns
            .iter()
            .map(|c| {
                let c = c.as_deref()?;
                table.columns.iter().position(|x| x.eq_ignore_ascii_case(c))
            })
            .collect();
        if let Some(columns) = positions.filter(|p| !p.is_empty()) {
            out.push(UniqueIndex { name, columns });
        }
    }
    Ok(out)
}
