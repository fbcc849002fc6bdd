//! The plan: what the restore will do to each staged row, computed set-wise
//! in one transaction (a read transaction before the write lock, or the
//! write transaction itself when the database changed in between).
//!
//! A staged row "hits" the database row with its identity (primary key, or
//! all values for tables without one). A hit on another tenant's row is a
//! conflict; on the target's own row an update (or, with purge, an insert
//! after the purge); on nobody's row (an orphaned blob) an adoption.
//! Membership of the hit rows of derived tables is computed only for those
//! rows ([`MemberSets::materialize_within`]), so planning costs what the
//! tenant costs, not what the database holds.
//!
//! Rows the write would not change are left alone: a hit on the target's
//! own row is "kept" (a purge does not delete it; the write updates it in
//! place, or skips it when all its values and storage classes already are
//! the archive's). The end state is the same as deleting and inserting
//! again, with a fraction of the page writes and of the lock time for the
//! usual restore (yesterday's backup over today's data), and without
//! firing `ON DELETE` actions on rows that stay. Tables where hits are not
//! one to one (identical duplicate rows), the tenants row and remapped
//! restores keep nothing.

mod hits;
mod other_tenants;
mod outcomes;

pub(super) use other_tenants::{carried, is_derived, other_tenants_row, references_of};

use super::stage::{Staged, StagedTable};
use super::{Conflict, Context, PlannedCounts};
use crate::error::Result;
use crate::progress::{Event, Progress, Step};
use crate::scope::{is_blob_table, tenant_params, Candidates, MemberSets, Membership, Side};
use crate::sql::{self, Col};
use crate::value::SqlValue;
use rusqlite::Connection;
use std::collections::BTreeMap;

pub(super) const MAX_LISTED_CONFLICTS: usize = 1000;

pub(super) struct Plan<'a> {
    /// The target tenant's member sets (whole tenant), for the purge.
    pub ours: MemberSets<'a>,
    /// Other tenants' member sets, exact for the rows the archive hits:
    /// the guard of the write.
    pub others: MemberSets<'a>,
    pub counts: BTreeMap<String, PlannedCounts>,
    pub conflicts: Vec<Conflict>,
    pub conflict_count: u64,
    /// Table → its hits table, for tables whose hits on the target's own
    /// rows are kept (see [`kept_row`], [`kept_as_is`]).
    pub kept: BTreeMap<String, String>,
    /// Table → how many of its staged rows are kept as they are (not
    /// written at all).
    pub kept_as_is: BTreeMap<String, u64>,
    /// `PRAGMA data_version` when the plan was made: if another connection
    /// commits before the write lock is taken, the plan is made again.
    pub data_version: i64,
}

/// The database's change counter as this connection sees it.
pub(super) fn data_version(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA main.data_version", [], |r| r.get(0))?)
}
/// The plan being made: what every phase reads.
struct Planning<'p, 'a> {
    conn: &'p Connection,
    ctx: &'p Context<'a>,
    staged: &'p Staged,
    /// The target tenant's id, parameter `?1` of the statements.
    target: SqlValue,
}

/// Make the plan inside the caller's transaction. Leaves in the
/// connection's temp schema: the target tenant's member sets (`Side::Ours`,
/// whole tenant) for the purge, the other tenants' sets restricted to the
/// hit rows (`Side::Others`) for the write's guards, and the kept rows.
pub(super) fn make<'a>(
    conn: &Connection,
    ctx: &Context<'a>,
    staged: &Staged,
    progress: &mut dyn Progress,
) -> Result<Plan<'a>> {
    let data_version = data_version(conn)?;
    let planning = Planning {
        conn,
        ctx,
        staged,
        target: ctx.target(),
    };
    let mut steps = PlanSteps {
        progress,
        done: 0,
        total: planning.step_count(),
    };
    let ours = planning.member_sets(&mut steps)?;
    let candidates = Candidates::create(conn, ctx.scope, ctx.schema)?;
    let rowid_keyed = planning.match_rows(&ours, &candidates, &mut steps)?;
    let others = planning.other_tenants_sets(&ours, &candidates, &mut steps)?;
    let kept = hits::index_kept(conn, ctx, staged, &rowid_keyed)?;
    let mut counts = planning.purge_counts(&ours, &others, &kept, &mut steps)?;
    let (kept_as_is, mut conflict_count, mut conflicts) =
        planning.outcomes(&kept, &mut counts, &mut steps)?;
    planning.references(&kept, &kept_as_is, &mut conflict_count, &mut conflicts)?;
    steps.done("references", None)?;
    Ok(Plan {
        ours,
        others,
        kept,
        kept_as_is,
        counts,
        conflicts,
        conflict_count,
        data_version,
    })
}

impl<'a> Planning<'_, 'a> {
    /// The member sets, each table's matches, the other tenants' sets,
    /// each purged table's count, each table's outcomes, the references.
    fn step_count(&self) -> u64 {
        let purge_counts = if self.ctx.options.purge {
            self.purged_tables().count()
        } else {
            0
        };
        3 + 2 * self.staged.tables.len() as u64 + purge_counts as u64
    }

    /// The tables a purge deletes rows of (the tenants row stays).
    fn purged_tables(&self) -> impl Iterator<Item = &'a crate::scope::ScopedTable> {
        self.ctx
            .scope
            .tables
            .iter()
            .filter(|t| !matches!(t.membership, Membership::TenantRow { .. }))
    }

    /// The target tenant's member sets, whole tenant.
    fn member_sets(&self, steps: &mut PlanSteps<'_>) -> Result<MemberSets<'a>> {
        let ctx = self.ctx;
        let ours = MemberSets::materialize(
            self.conn,
            ctx.scope,
            ctx.schema,
            ctx.options.target_id(),
            Side::Ours,
        )?;
        steps.done("members", None)?;
        // A partial restore purges within its selection only.
        if let (Some(selection), true) = (ctx.selection, ctx.options.purge) {
            super::selection_db::mark_purge_scope(self.conn, ctx, selection, &ours)?;
        }
        Ok(ours)
    }

    /// Each staged table's hits (see [`hits`]).
    fn match_rows(
        &self,
        ours: &MemberSets<'_>,
        candidates: &Candidates<'_>,
        steps: &mut PlanSteps<'_>,
    ) -> Result<hits::RowidKeyed> {
        let mut rowid_keyed = hits::RowidKeyed::new();
        for table in &self.staged.tables {
            self.fill_hits(table, ours, candidates, &mut rowid_keyed)?;
            steps.done("matches", Some(&table.name))?;
        }
        Ok(rowid_keyed)
    }

    /// Other tenants' member sets, exact for the hit rows, and the hits on
    /// their derived rows marked.
    fn other_tenants_sets(
        &self,
        ours: &MemberSets<'_>,
        candidates: &Candidates<'_>,
        steps: &mut PlanSteps<'_>,
    ) -> Result<MemberSets<'a>> {
        let ctx = self.ctx;
        // A purge deletes the target's rows, but never one that is another
        // tenant's too (a blob two tenants attach): their membership is
        // asked about as well.
        if ctx.options.purge {
            candidates.add_members(self.conn, ours)?;
        }
        let others = MemberSets::materialize_within(
            self.conn,
            ctx.scope,
            ctx.schema,
            ctx.options.target_id(),
            Side::Others,
            candidates,
        )?;
        steps.done("other_tenants", None)?;
        hits::mark_others(self.conn, self.staged, &others)?;
        Ok(others)
    }

    /// How many rows the purge deletes per table: the target's, no other
    /// tenant's, and not kept.
    fn purge_counts(
        &self,
        ours: &MemberSets<'_>,
        others: &MemberSets<'_>,
        kept: &BTreeMap<String, String>,
        steps: &mut PlanSteps<'_>,
    ) -> Result<BTreeMap<String, PlannedCounts>> {
        let mut counts: BTreeMap<String, PlannedCounts> = BTreeMap::new();
        if !self.ctx.options.purge {
            return Ok(counts);
        }
        for t in self.purged_tables() {
            let sql = format!(
                "SELECT count(*) FROM {} AS a WHERE {}",
                sql::main_table(&t.name),
                purged_rows(self.ctx, ours, others, &t.name, "a")?
            );
            let mut stmt = self.conn.prepare(&sql)?;
            let params = tenant_params(&stmt, &self.target);
            let mut n: i64 = stmt.query_row(&*params, |r| r.get(0))?;
            // Kept rows are some of those, one each: not purged.
            if let Some(hits) = kept.get(&t.name) {
                let kept_rows: i64 = self.conn.query_row(
                    &format!(
                        "SELECT count(*) FROM temp.{hits} AS h WHERE ours AND NOT others AND {}",
                        super::selection_db::hit_in_purge_scope(self.ctx, &t.name, "h")
                    ),
                    [],
                    |r| r.get(0),
                )?;
                n -= kept_rows;
            }
            if n > 0 {
                counts.entry(t.name.clone()).or_default().purge = n as u64;
            }
            steps.done("purge_counts", Some(&t.name))?;
        }
        Ok(counts)
    }

    /// Each staged table's outcomes (see [`outcomes`]): table → rows kept
    /// as they are, the conflict count and the first conflicts.
    fn outcomes(
        &self,
        kept: &BTreeMap<String, String>,
        counts: &mut BTreeMap<String, PlannedCounts>,
        steps: &mut PlanSteps<'_>,
    ) -> Result<(BTreeMap<String, u64>, u64, Vec<Conflict>)> {
        let mut conflicts = Vec::new();
        let mut conflict_count = 0u64;
        let mut kept_as_is = BTreeMap::new();
        for table in &self.staged.tables {
            let c = counts.entry(table.name.clone()).or_default();
            let is_kept = kept.contains_key(&table.name);
            let found = self.count_outcomes(table, is_kept, c, &mut conflicts)?;
            if is_kept {
                kept_as_is.insert(table.name.clone(), found.kept_as_is);
            }
            conflict_count += found.conflicts;
            steps.done("outcomes", Some(&table.name))?;
        }
        Ok((kept_as_is, conflict_count, conflicts))
    }

    /// References out of the rows the restore writes (see
    /// [`other_tenants`]), and in a partial restore the references out of
    /// the selection that find no row.
    fn references(
        &self,
        kept: &BTreeMap<String, String>,
        kept_as_is: &BTreeMap<String, u64>,
        conflict_count: &mut u64,
        conflicts: &mut Vec<Conflict>,
    ) -> Result<()> {
        let (conn, ctx, staged) = (self.conn, self.ctx, self.staged);
        let crossing = other_tenants::references_to_other_tenants(
            conn,
            ctx,
            staged,
            kept,
            kept_as_is,
            conflicts.len(),
        )?;
        *conflict_count += crossing.count;
        conflicts.extend(crossing.listed);
        if ctx.selection.is_some() {
            let (count, listed) =
                super::selection_db::dangling_references(conn, ctx, staged, conflicts.len())?;
            *conflict_count += count;
            conflicts.extend(listed);
        }
        Ok(())
    }
}

/// `plan_progress` events: the plan is a fixed sequence of steps (the
/// tenant's member sets, each table's matches, the other tenants' sets,
/// each table's purge count, each table's outcomes, the references out of
/// the archive's rows), so `processed` of
/// `total` steps can move a progress bar through work that has no rows to
/// count. `phase` and `table` say which step just ended.
struct PlanSteps<'p> {
    progress: &'p mut dyn Progress,
    done: u64,
    total: u64,
}

impl PlanSteps<'_> {
    fn done(&mut self, phase: &str, table: Option<&str>) -> Result<()> {
        self.done += 1;
        let mut event = Event::new(Step::PlanProgress)
            .with("phase", phase)
            .with("processed", self.done)
            .with("total", self.total);
        if let Some(table) = table {
            event = event.with("table", table);
        }
        self.progress.emit(event)
    }
}

/// SQL condition: a purge deletes the row `alias` of `table` (before the
/// kept rows are spared): the target tenant's, and no other tenant's.
pub(super) fn purged_rows(
    ctx: &Context<'_>,
    ours: &MemberSets<'_>,
    others: &MemberSets<'_>,
    table: &str,
    alias: &str,
) -> Result<String> {
    Ok(format!(
        "{} AND NOT {} AND {}",
        ours.member_predicate(table, alias)?,
        others.member_probe(table, alias)?,
        super::selection_db::purge_filter(ctx, table, alias)
    ))
}

/// SQL condition: the row `alias` of `table` is one of the kept rows
/// (`hits` from [`Plan::kept`]).
pub(super) fn kept_row(ctx: &Context<'_>, table: &str, hits: &str, alias: &str) -> String {
    let key = ctx.table(table).row_key();
    let matches = key
        .iter()
        .enumerate()
        .map(|(k, c)| format!("k.k{k} = {}", Col::Named(c).of(alias)))
        .collect::<Vec<_>>()
        .join(" AND ");
    format!("EXISTS (SELECT 1 FROM temp.{hits} AS k WHERE {matches} AND k.ours AND NOT k.others)")
}

/// Index a hits table by staged rowid, for the per-row lookups of
/// [`kept_as_is`] and the share checks (made once, whoever asks first).
pub(super) fn index_hits_by_sid(conn: &Connection, hits: &str) -> Result<()> {
    conn.execute_batch(&format!(
        "CREATE INDEX IF NOT EXISTS temp.{hits}_sid ON {hits}(sid);"
    ))?;
    Ok(())
}

/// SQL condition: the staged row `alias` is kept and already equal, so it
/// is not written (`hits` from [`Plan::kept`]).
pub(super) fn kept_as_is(hits: &str, alias: &str) -> String {
    format!("EXISTS (SELECT 1 FROM temp.{hits} AS k WHERE k.sid = {alias}.rowid AND k.same AND k.ours AND NOT k.others)")
}

/// Whether a staged row may hit another tenant's row and leave it as it
/// is instead of being refused. A blob that holds every value of the
/// archive's (key, checksum…): a blob belongs to whoever attaches it, so
/// the restored attachments share it, as they did when the backup was
/// made. And any other derived row (a join row between two tenants' rows,
/// a variant of a shared blob) that is the target's too and already holds
/// the archive's values: the restore leaves it exactly as it is, which
/// touches nobody. Never with remap, whose rows are the new tenant's alone.
pub(super) fn may_share(ctx: &Context<'_>, table: &StagedTable) -> bool {
    (is_blob_table(&table.name) || table.derived) && !ctx.options.remap && !ctx.options.new_ids
}

/// When a hit on another tenant's row is shared rather than refused (see
/// [`may_share`]): the rule once, as SQL ([`Sharing::sql`]) and as Rust
/// ([`Sharing::shares`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sharing {
    Never,
    /// A blob holding the archive's values.
    WhenSame,
    /// A derived row that is the target's too and holds the archive's values.
    WhenSameAndOurs,
}

impl Sharing {
    pub(super) fn of(ctx: &Context<'_>, table: &StagedTable) -> Sharing {
        if !may_share(ctx, table) {
            Sharing::Never
        } else if is_blob_table(&table.name) {
            Sharing::WhenSame
        } else {
            Sharing::WhenSameAndOurs
        }
    }

    /// SQL condition on a row of the hits table.
    pub(super) fn sql(self) -> &'static str {
        match self {
            Sharing::Never => "0",
            Sharing::WhenSame => "same",
            Sharing::WhenSameAndOurs => "(same AND ours)",
        }
    }

    /// The same condition on a row of hits read into Rust.
    pub(super) fn shares(self, same: bool, ours: bool) -> bool {
        match self {
            Sharing::Never => false,
            Sharing::WhenSame => same,
            Sharing::WhenSameAndOurs => same && ours,
        }
    }
}

/// [`may_share`] as an SQL condition on a row of the hits table.
pub(super) fn shareable(ctx: &Context<'_>, table: &StagedTable) -> &'static str {
    Sharing::of(ctx, table).sql()
}

/// `tk_<what>_<i>` for the staged table `temp.tk_stage_<i>`.
pub(super) fn scratch_table(what: &'static str, table: &StagedTable) -> String {
    table.stage.sibling(what).name()
}
