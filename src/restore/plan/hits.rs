//! The hits: staged row → database row with its identity, whether every
//! value is already the archive's, and whose the row is; one temp table
//! `tk_hits_<i>` per staged table (columns sid, same, ours, others,
//! k0, k1, … the database row's key). And the kept rows among them: hits
//! on the target's own rows in tables where hits are one to one.

use super::{scratch_table, Planning};
use crate::error::Result;
use crate::restore::stage::{Staged, StagedTable};
use crate::restore::Context;
use crate::scope::{tenant_params, Candidates, MemberSets, Membership, Side};
use crate::sql::{self, Col};
use crate::value::SqlValue;
use rusqlite::Connection;
use std::collections::{BTreeMap, BTreeSet};

/// Names of the hits tables whose rowid is the database row's rowid.
pub(super) type RowidKeyed = BTreeSet<String>;

impl Planning<'_, '_> {
    /// Fill the hits table of `table`, and add the hit rows of derived
    /// tables to the `candidates` whose membership of other tenants is
    /// asked next. `others` is known here for tables whose membership is a
    /// condition on the row; derived tables get it in [`mark_others`].
    pub(super) fn fill_hits(
        &self,
        table: &StagedTable,
        ours: &MemberSets<'_>,
        candidates: &Candidates<'_>,
        rowid_keyed: &mut RowidKeyed,
    ) -> Result<()> {
        let (conn, ctx) = (self.conn, self.ctx);
        let key = ctx.table(&table.name).row_key();
        let keys = key
            .iter()
            .enumerate()
            .map(|(k, c)| format!("{} AS k{k}", Col::Named(c).of("m")))
            .collect::<Vec<_>>()
            .join(", ");
        // Derived tables: none yet, set by `mark_others` for the few that are.
        let others_now = if table.derived {
            "0".to_string()
        } else {
            others_on_row(ctx, &table.name)?
        };
        let hits = scratch_table("hits", table);
        let select = format!(
            "SELECT s.rowid AS sid, {same} AS same, {ours} AS ours, {others_now} AS others, {keys} FROM {stage} AS s JOIN {t} AS m ON {identity}",
            same = table.same_values("m", "s"),
            ours = ours.member_probe(&table.name, "m")?,
            stage = table.stage,
            t = sql::main_table(&table.name),
            identity = table.identity("m", "s"),
        );
        if fill_rowid_keyed_hits(conn, &hits, &key, &select, &self.target)? {
            rowid_keyed.insert(hits.clone());
        } else {
            conn.execute_batch(&format!("DROP TABLE IF EXISTS temp.{hits};"))?;
            let mut stmt = conn.prepare(&format!("CREATE TEMP TABLE {hits} AS {select}"))?;
            let params = tenant_params(&stmt, &self.target);
            stmt.execute(&*params)?;
        }
        if let Some(insert) = candidates.insert_into(&table.name) {
            conn.execute(
                &format!(
                    "{insert}SELECT {} FROM temp.{hits}",
                    sql::key_columns(key.len())
                ),
                [],
            )?;
        }
        Ok(())
    }
}

/// Fill `hits` from `select` (columns sid, same, ours, others, k0) as a
/// table whose rowid is the database row's rowid: the key the kept rows
/// are looked up by comes without an index to build, and the rows arrive
/// in key order when the archive is (ours is). False, with nothing made,
/// when the key is not a rowid or two staged rows hit the same database
/// row (then the hits are not one to one and nothing is kept).
fn fill_rowid_keyed_hits(
    conn: &Connection,
    hits: &str,
    key: &[String],
    select: &str,
    target: &SqlValue,
) -> Result<bool> {
    if key != ["rowid"] {
        return Ok(false);
    }
    conn.execute_batch(&format!(
        "DROP TABLE IF EXISTS temp.{hits}; CREATE TEMP TABLE {hits}(sid INTEGER, same, ours, others, k0 INTEGER PRIMARY KEY);"
    ))?;
    let mut stmt = conn.prepare(&format!("INSERT INTO temp.{hits} {select}"))?;
    let params = tenant_params(&stmt, target);
    match stmt.execute(&*params) {
        Ok(_) => Ok(true),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// For tables whose membership is a condition on the row itself (tenant
/// column, tenants row): the row `m` is another tenant's.
/// For the hits: a row whose tenant column is NULL is shared by every
/// tenant, and writing the archive's row over it would take it from them:
/// it counts as another tenant's here (references to it stay fine).
fn others_on_row(ctx: &Context<'_>, table: &str) -> Result<String> {
    let others =
        MemberSets::unmaterialized(ctx.scope, ctx.schema, Side::Others).member_probe(table, "m")?;
    Ok(match ctx.scope.table(table).map(|t| &t.membership) {
        Some(Membership::TenantColumn) => format!(
            "({others} OR {} IS NULL)",
            Col::Named(&ctx.scope.options.tenant_column).of("m")
        ),
        _ => others,
    })
}

/// Derived tables' hits on rows of other tenants, now that their member
/// sets (restricted to the hit rows) are known.
pub(super) fn mark_others(
    conn: &Connection,
    staged: &Staged,
    others: &MemberSets<'_>,
) -> Result<()> {
    for table in &staged.tables {
        if let Some(probe) = others.key_probe(&table.name, "h") {
            if others.set_is_empty(conn, &table.name)? {
                continue;
            }
            conn.execute(
                &format!(
                    "UPDATE temp.{} AS h SET others = 1 WHERE {probe}",
                    scratch_table("hits", table)
                ),
                [],
            )?;
        }
    }
    Ok(())
}

/// Kept rows: hits on the target's own rows (`ours AND NOT others`), in
/// tables where hits are one to one: unique indexes on both sides, which
/// the purge and the write then use to skip them. Table → its hits table.
pub(super) fn index_kept(
    conn: &Connection,
    ctx: &Context<'_>,
    staged: &Staged,
    rowid_keyed: &RowidKeyed,
) -> Result<BTreeMap<String, String>> {
    let mut kept = BTreeMap::new();
    for table in &staged.tables {
        if ctx.options.remap || ctx.options.new_ids || table.tenant_row {
            continue;
        }
        let hits = scratch_table("hits", table);
        let key = ctx.table(&table.name).row_key();
        // With a primary key, a staged row hits one row at most and the
        // sids are unique already (the write indexes them if it needs to).
        let sid_index = if table.has_pk() {
            String::new()
        } else {
            format!("CREATE UNIQUE INDEX temp.{hits}_sid ON {hits}(sid);")
        };
        // A rowid key is unique already when it is the hits table's own.
        let key_index = if rowid_keyed.contains(&hits) {
            String::new()
        } else {
            format!(
                "CREATE UNIQUE INDEX temp.{hits}_key ON {hits}({});",
                sql::key_columns(key.len())
            )
        };
        match conn.execute_batch(&format!("{sid_index} {key_index}")) {
            Ok(()) => {
                kept.insert(table.name.clone(), hits);
            }
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(kept)
}
