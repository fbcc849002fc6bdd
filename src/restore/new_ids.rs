//! Copies with fresh ids (`new_ids: true`): a phase between staging and
//! the plan that rewrites the staged rows, so that the plan sees nothing
//! but brand-new rows to insert.
//!
//! 1. [`assign`] (in the plan's read transaction): every staged table with
//!    a one-column primary key (but the tenants table, whose row is the
//!    target's) gets a map `temp.tk_ids_<i> (old, new)`: integer
//!    keys past the table's largest id and its `sqlite_sequence`, UUIDs
//!    made afresh in the form and version they were stored in (see
//!    [`fresh_uuid`]). Then every staged key and every staged reference the
//!    scope knows to such a key (declared foreign keys, hints, Rails naming,
//!    polymorphic pairs, ActiveStorage's `record_id`/`blob_id`, join tables)
//!    is rewritten through the maps, in one `UPDATE` per table so that no
//!    value is mapped twice. The tenant column was set to the target by
//!    staging already. Values no known reference holds (ids inside JSON or
//!    text) are left as they are: guessing would rewrite data.
//! 2. [`recheck`] (under the write lock, before the plan is trusted): an
//!    integer id handed out meanwhile by another connection moves the
//!    table's new ids past it (which that commit makes the apply step plan
//!    again), and a tenant created by this run must still be free.
//! 3. The blob files get new keys in [`super::blobs::place`]; the maps are
//!    counted for the result and written out for the app ([`write_map`]).
//!
//! The maps are found again by name, so no state travels between phases.

use super::stage::{Staged, StagedTable};
use super::Context;
use crate::error::{Error, Result, ResultExt};
use crate::sql::{self, Col, TempTable};

use crate::value::SqlValue;
use rusqlite::{Connection, OptionalExtension};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// How a table's keys are made afresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    /// 64-bit integers, in sequence after the table's largest.
    Integer,
    /// UUIDs as 36-character dashed text.
    TextUuid,
    /// UUIDs as 16 raw bytes.
    BlobUuid,
}

/// The staged table's map of old key → new key: `temp.tk_ids_<i>` beside
/// its `temp.tk_stage_<i>`.
fn map_table(table: &StagedTable) -> TempTable {
    table.stage.sibling("ids")
}

/// The position of the table's one key column, when it gets new ids.
fn renewed_key(table: &StagedTable) -> Option<usize> {
    match table.pk.as_slice() {
        [p] if !table.tenant_row => Some(*p),
        _ => None,
    }
}

/// Step 1: make the maps and rewrite the staged rows through them.
pub(super) fn assign(conn: &Connection, ctx: &Context<'_>, staged: &Staged) -> Result<()> {
    if !ctx.options.new_ids {
        return Ok(());
    }
    let mut maps = BTreeMap::new();
    for table in &staged.tables {
        let Some(key) = renewed_key(table) else {
            continue;
        };
        let kind = key_kind(conn, table, key)?;
        let map = map_table(table);
        conn.execute_batch(&format!(
            "DROP TABLE IF EXISTS {map}; CREATE TABLE {map} (old PRIMARY KEY, new NOT NULL);"
        ))?;
        match kind {
            KeyKind::Integer => {
                let base = largest_id(conn, &table.name, ctx.table(&table.name).primary_key()[0])?;
                check_room(table, base)?;
                // Stage rowids are 1..=rows, in archive order.
                conn.execute(
                    &format!(
                        "INSERT INTO {map} (old, new) SELECT {}, ?1 + rowid FROM {}",
                        Col::Staged(key).bare(),
                        table.stage
                    ),
                    [base],
                )?;
            }
            KeyKind::TextUuid | KeyKind::BlobUuid => fill_uuids(conn, table, key, map)?,
        }
        maps.insert(table.name.clone(), map);
    }
    rewrite(conn, ctx, staged, &maps)
}

/// What the staged keys are; a key that is neither an integer nor a UUID
/// cannot be made afresh (its meaning is the app's), and is refused.
fn key_kind(conn: &Connection, table: &StagedTable, key: usize) -> Result<KeyKind> {
    let c = sql::Col::Staged(key).bare();
    let (rows, integers, texts, blobs): (i64, i64, i64, i64) = conn.query_row(
        &format!(
            "SELECT count(*), total(typeof({c}) = 'integer'), total(typeof({c}) = 'text' AND length({c}) = 36), total(typeof({c}) = 'blob' AND length({c}) = 16) FROM {}",
            table.stage
        ),
        [],
        |r| {
            let n = |i: usize| r.get::<_, f64>(i).map(|v| v as i64);
            Ok((r.get(0)?, n(1)?, n(2)?, n(3)?))
        },
    )?;
    let kind = if rows == integers {
        KeyKind::Integer
    } else if rows == blobs {
        KeyKind::BlobUuid
    } else if rows == texts {
        KeyKind::TextUuid
    } else {
        return Err(unrenewable(conn, table, key, None));
    };
    Ok(kind)
}

fn unrenewable(
    conn: &Connection,
    table: &StagedTable,
    key: usize,
    value: Option<&SqlValue>,
) -> Error {
    let example = value.cloned().or_else(|| {
        conn.query_row(
            &format!(
                "SELECT c{key} FROM {} WHERE NOT (typeof(c{key}) = 'integer' OR (typeof(c{key}) = 'blob' AND length(c{key}) = 16)) LIMIT 1",
                table.stage
            ),
            [],
            |r| Ok(SqlValue::from_ref(r.get_ref(0)?)),
        )
        .ok()
    });
    let shown = example.map(|v| v.describe()).unwrap_or_default();
    Error::argument(format!(
        "new_ids: {}.{} holds {shown}, neither an integer nor a UUID: new keys cannot be made for it (restore without new_ids, or skip the table)",
        table.name, table.columns[key]
    ))
}

/// The largest id `table` holds or has handed out (`sqlite_sequence`).
pub(super) fn largest_id(conn: &Connection, table: &str, key: &str) -> Result<i64> {
    let held: Option<i64> = conn.query_row(
        &format!(
            "SELECT max(CASE WHEN typeof({k}) = 'integer' THEN {k} END) FROM {}",
            sql::main_table(table),
            k = sql::ident(key)
        ),
        [],
        |r| r.get(0),
    )?;
    let has_sequence: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM main.sqlite_schema WHERE name = 'sqlite_sequence')",
        [],
        |r| r.get(0),
    )?;
    let handed_out: Option<i64> = if has_sequence {
        conn.query_row(
            "SELECT max(CASE WHEN typeof(seq) = 'integer' THEN seq END) FROM main.sqlite_sequence WHERE name = ?1",
            [table],
            |r| r.get(0),
        )
        .optional()?
        .flatten()
    } else {
        None
    };
    Ok(held.unwrap_or(0).max(handed_out.unwrap_or(0)).max(0))
}

fn check_room(table: &StagedTable, base: i64) -> Result<()> {
    if base.checked_add(table.rows as i64).is_none() {
        return Err(Error::conflict(format!(
            "new_ids: {} has no integer ids left after {base} for {} rows; nothing was changed",
            table.name, table.rows
        )));
    }
    Ok(())
}

/// A fresh UUID per staged row, in the form and version of its old one.
fn fill_uuids(conn: &Connection, table: &StagedTable, key: usize, map: TempTable) -> Result<()> {
    let mut read = conn.prepare(&format!(
        "SELECT {} FROM {}",
        Col::Staged(key).bare(),
        table.stage
    ))?;
    let mut insert = conn.prepare(&format!("INSERT INTO {map} (old, new) VALUES (?1, ?2)"))?;
    let mut rows = read.query([])?;
    while let Some(row) = rows.next()? {
        let old = SqlValue::from_ref(row.get_ref(0)?);
        let new = fresh_uuid(&old).ok_or_else(|| unrenewable(conn, table, key, Some(&old)))?;
        insert
            .execute([&old, &new])
            .at(format!("new_ids: {}", table.name))?;
    }
    Ok(())
}

/// A new UUID like `old`: 16 bytes or dashed text (in its case), version 7
/// (time-ordered: now, then random) when `old` is one, else version 4.
/// None when `old` is no UUID.
pub(super) fn fresh_uuid(old: &SqlValue) -> Option<SqlValue> {
    let (bytes, upper) = match old {
        SqlValue::Blob(b) if b.len() == 16 => (<[u8; 16]>::try_from(&b[..]).ok()?, false),
        SqlValue::Text(_) => {
            let text = old.as_text()?;
            if text.len() != 36 {
                return None;
            }
            let bytes = crate::tenant_id::uuid::parse(text)?;
            (bytes, text.bytes().any(|b| b.is_ascii_uppercase()))
        }
        _ => return None,
    };
    let mut new = [0u8; 16];
    super::blobs::getrandom(&mut new).ok()?;
    let version = if bytes[6] >> 4 == 7 { 7 } else { 4 };
    if version == 7 {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        new[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    }
    new[6] = (new[6] & 0x0f) | (version << 4);
    new[8] = (new[8] & 0x3f) | 0x80; // RFC 4122 variant
    Some(match old {
        SqlValue::Blob(_) => SqlValue::Blob(new.to_vec()),
        _ => {
            let hex: String = new.iter().map(|b| format!("{b:02x}")).collect();
            let dashed = format!(
                "{}-{}-{}-{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..]
            );
            SqlValue::Text(if upper { dashed.to_uppercase() } else { dashed }.into_bytes())
        }
    })
}

/// Rewrite the staged keys and references through `maps` (table → map
/// table). One `UPDATE` per staged table: every `SET` sees the row's old
/// values, so a new id that equals another row's old one is not mapped
/// again.
fn rewrite(
    conn: &Connection,
    ctx: &Context<'_>,
    staged: &Staged,
    maps: &BTreeMap<String, TempTable>,
) -> Result<()> {
    for table in &staged.tables {
        let mut sets: Vec<String> = Vec::new();
        if let (Some(key), Some(map)) = (renewed_key(table), maps.get(&table.name)) {
            let (bare, old) = (Col::Staged(key).bare(), Col::Staged(key).of("s"));
            sets.push(format!("{bare} = coalesce({}, {old})", lookup(*map, &old)));
        }
        for (column, cases) in reference_cases(ctx, table, maps) {
            if renewed_key(table) == Some(column) && maps.contains_key(&table.name) {
                continue; // a key that is also a reference keeps its own map
            }
            let (bare, old) = (Col::Staged(column).bare(), Col::Staged(column).of("s"));
            let whens: String = cases
                .iter()
                .map(|(when, map)| {
                    format!(" WHEN {when} THEN coalesce({}, {old})", lookup(*map, &old))
                })
                .collect();
            sets.push(format!("{bare} = CASE{whens} ELSE {old} END"));
        }
        if !sets.is_empty() {
            conn.execute(
                &format!("UPDATE {} AS s SET {}", table.stage, sql::list(sets)),
                [],
            )
            .at(format!("new_ids: rewriting {}", table.name))?;
        }
    }
    Ok(())
}

/// SQL: the new value of `value` in `map`, or NULL. An integer id kept as
/// text (a polymorphic `target_id` of a string column) is looked up as the
/// integer and comes back as text, as it was stored. Both lookups are by
/// the map's key, so each costs one index probe.
fn lookup(map: TempTable, value: &str) -> String {
    format!(
        "coalesce((SELECT n.new FROM {map} AS n WHERE n.old = {value}), \
         (SELECT CAST(n.new AS TEXT) FROM {map} AS n WHERE typeof({value}) = 'text' \
          AND n.old = CAST({value} AS INTEGER) AND CAST(CAST({value} AS INTEGER) AS TEXT) = {value}))"
    )
}

/// Per reference column of `table` (stage position): (condition on the
/// staged row `s`, map of the parent) for each known reference to a
/// renewed key, polymorphic ones (by their class) before plain ones; the
/// first plain reference of a column wins.
fn reference_cases(
    ctx: &Context<'_>,
    table: &StagedTable,
    maps: &BTreeMap<String, TempTable>,
) -> BTreeMap<usize, Vec<(String, TempTable)>> {
    let position = |name: &str| table.columns.iter().position(|c| c == name);
    let mut typed: BTreeMap<usize, Vec<(String, TempTable)>> = BTreeMap::new();
    let mut plain: BTreeMap<usize, (String, TempTable)> = BTreeMap::new();
    for r in ctx
        .scope
        .references
        .iter()
        .filter(|r| r.table == table.name)
    {
        let (Some(map), [column], [parent_key]) = (
            maps.get(&r.parent),
            r.columns.as_slice(),
            r.parent_columns.as_slice(),
        ) else {
            continue;
        };
        // Only a reference to the parent's key follows it to its new value.
        let parent = ctx.table(&r.parent).primary_key();
        let Some(column) = position(column).filter(|_| parent == [parent_key.as_str()]) else {
            continue;
        };
        match &r.polymorphic {
            Some((type_column, class)) => {
                let Some(t) = position(type_column) else {
                    continue;
                };
                let when = sql::class_is("s", Col::Staged(t), class);
                typed.entry(column).or_default().push((when, *map));
            }
            None => {
                plain
                    .entry(column)
                    .or_insert_with(|| ("1".to_string(), *map));
            }
        }
    }
    for (column, case) in plain {
        typed.entry(column).or_default().push(case);
    }
    typed
}

/// Step 2, under the write lock: ids another connection took since
/// [`assign`] are moved past (the plan is then made again, as that commit
/// changed the database), and a tenant this run creates must still be
/// nobody's.
pub(super) fn recheck(conn: &Connection, ctx: &Context<'_>, staged: &Staged) -> Result<()> {
    if !ctx.options.new_ids {
        return Ok(());
    }
    if ctx.options.creates_tenant {
        check_tenant_free(conn, ctx, staged)?;
    }
    let mut shifts = BTreeMap::new();
    for table in staged.tables.iter().filter(|t| renewed_key(t).is_some()) {
        let map = map_table(table);
        let lowest: Option<i64> = conn.query_row(
            &format!("SELECT min(new) FROM {map} WHERE typeof(new) = 'integer'"),
            [],
            |r| r.get(0),
        )?;
        let Some(lowest) = lowest else { continue };
        let base = largest_id(conn, &table.name, ctx.table(&table.name).primary_key()[0])?;
        if base < lowest {
            continue;
        }
        check_room(table, base)?;
        let delta = base - lowest + 1;
        let shift = table.stage.sibling("idshift");
        conn.execute_batch(&format!(
            "DROP TABLE IF EXISTS {shift}; CREATE TABLE {shift} (old PRIMARY KEY, new NOT NULL);
             INSERT INTO {shift} SELECT new, new + {delta} FROM {map};
             UPDATE {map} SET new = new + {delta};"
        ))?;
        shifts.insert(table.name.clone(), shift);
    }
    if !shifts.is_empty() {
        rewrite(conn, ctx, staged, &shifts)?;
        for shift in shifts.values() {
            conn.execute_batch(&format!("DROP TABLE {shift};"))?;
        }
    }
    Ok(())
}

/// The tenant this run was to create was created by someone else since.
fn check_tenant_free(conn: &Connection, ctx: &Context<'_>, staged: &Staged) -> Result<()> {
    let Some(tenants) = ctx.scope.tenant_table() else {
        return Ok(());
    };
    let Some(&[key]) = staged
        .tables
        .iter()
        .find(|t| t.tenant_row)
        .map(|t| ctx.table(&t.name).primary_key())
        .as_deref()
    else {
        return Ok(());
    };
    let taken: bool = conn.query_row(
        &format!(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE {} = ?1)",
            sql::main_table(&tenants.name),
            sql::ident(key)
        ),
        [ctx.target()],
        |r| r.get(0),
    )?;
    if taken {
        return Err(Error::conflict(format!(
            "tenant {} was created by someone else while this restore made it a new tenant; nothing was changed: run it again",
            ctx.options.target_id()
        )));
    }
    Ok(())
}

/// New ids per table, for the result.
pub(super) fn counts(conn: &Connection, staged: &Staged) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for table in staged.tables.iter().filter(|t| renewed_key(t).is_some()) {
        let map = map_table(table);
        if !map_exists(conn, map)? {
            continue;
        }
        let n: i64 = conn.query_row(&format!("SELECT count(*) FROM {map}"), [], |r| r.get(0))?;
        out.insert(table.name.clone(), n as u64);
    }
    Ok(out)
}

fn map_exists(conn: &Connection, map: TempTable) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM temp.sqlite_schema WHERE type = 'table' AND name = ?1)",
        [map.name()],
        |r| r.get(0),
    )?)
}

/// The `id_map:` file: one JSON line per renewed row,
/// `{"table":"projects","old":1001,"new":3001}`, values in dump.jsonl's
/// JSON form (a BLOB as `{"$base64": …}`).
pub(super) fn write_map(conn: &Connection, staged: &Staged, path: &Path) -> Result<()> {
    let file = std::fs::File::create(path).at(format!("writing id_map {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let mut line = Vec::new();
    for table in staged.tables.iter().filter(|t| renewed_key(t).is_some()) {
        let map = map_table(table);
        if !map_exists(conn, map)? {
            continue;
        }
        let mut stmt = conn.prepare(&format!("SELECT old, new FROM {map} ORDER BY rowid"))?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            line.clear();
            line.extend_from_slice(b"{\"table\":");
            crate::value::write_json_string(&mut line, &table.name);
            line.extend_from_slice(b",\"old\":");
            crate::value::write_json(&mut line, row.get_ref(0)?);
            line.extend_from_slice(b",\"new\":");
            crate::value::write_json(&mut line, row.get_ref(1)?);
            line.extend_from_slice(b"}\n");
            out.write_all(&line)
                .at(format!("writing id_map {}", path.display()))?;
        }
    }
    out.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .at(format!("writing id_map {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// New integer ids start after the largest the table holds or its
    /// AUTOINCREMENT sequence handed out (a deleted row's id is never
    /// given again); text and real keys, and negative ones, do not count.
    #[test]
    fn new_ids_start_after_the_largest_held_or_handed_out() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE projects (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT);
             INSERT INTO projects (id, name) VALUES (5, 'kept'), (9, 'deleted');
             DELETE FROM projects WHERE id = 9;
             CREATE TABLE notes (k PRIMARY KEY);
             INSERT INTO notes VALUES (4), ('99'), (120.5);
             CREATE TABLE tags (id INTEGER PRIMARY KEY);
             INSERT INTO tags VALUES (7);
             CREATE TABLE empty (id INTEGER PRIMARY KEY);
             CREATE TABLE below (id INTEGER PRIMARY KEY);
             INSERT INTO below VALUES (-5);",
        )
        .unwrap();
        assert_eq!(largest_id(&conn, "projects", "id").unwrap(), 9);
        assert_eq!(largest_id(&conn, "notes", "k").unwrap(), 4);
        assert_eq!(largest_id(&conn, "tags", "id").unwrap(), 7);
        assert_eq!(largest_id(&conn, "empty", "id").unwrap(), 0);
        assert_eq!(largest_id(&conn, "below", "id").unwrap(), 0);
    }

    /// A table's own sequence counts, not another table's.
    #[test]
    fn only_the_tables_own_sequence_counts() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE a (id INTEGER PRIMARY KEY AUTOINCREMENT);
             CREATE TABLE b (id INTEGER PRIMARY KEY AUTOINCREMENT);
             INSERT INTO a VALUES (50); DELETE FROM a;
             INSERT INTO b VALUES (2);",
        )
        .unwrap();
        assert_eq!(largest_id(&conn, "a", "id").unwrap(), 50);
        assert_eq!(largest_id(&conn, "b", "id").unwrap(), 2);
    }
}
