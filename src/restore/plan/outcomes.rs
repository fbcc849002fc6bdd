//! What the restore will do with each staged row: the six ways a staged
//! row can hit the database ([`CLASSES`]), which of them a row of hits is
//! ([`class_of`]) and the rule that turns a class into an outcome
//! ([`outcome`]).

use super::{scratch_table, Planning, Sharing, MAX_LISTED_CONFLICTS};
use crate::error::Result;
use crate::restore::stage::StagedTable;
use crate::restore::{Conflict, PlannedCounts};
use rusqlite::Connection;

/// What the restore will do with one staged row that hits a database row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    Insert,
    Update,
    Unchanged,
    Conflict,
}

/// How a staged row hits the database (for a group of identical rows: any
/// of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Hit {
    pub ours: bool,
    pub others: bool,
    /// Kept: not purged, written in place.
    pub kept: bool,
    /// Kept and already equal: not written at all.
    pub same: bool,
}

const fn hit(ours: bool, others: bool, kept: bool, same: bool) -> Hit {
    Hit {
        ours,
        others,
        kept,
        same,
    }
}

/// The six ways a staged row can hit a database row, in the order their
/// counts are kept. They do not overlap, and [`class_of`] puts every row
/// of hits in one of them.
pub(super) const CLASSES: [Hit; 6] = [
    // Another tenant's row: a conflict.
    hit(false, true, false, false),
    // Ours, kept and already equal: not written.
    hit(true, false, true, true),
    // Ours, kept, different: updated in place.
    hit(true, false, true, false),
    // Ours, not kept: purged and inserted again, or updated.
    hit(true, false, false, false),
    // Nobody's (an orphaned row): adopted.
    hit(false, false, false, false),
    // Another tenant's too, holding the archive's values: shared.
    hit(false, true, false, true),
];

/// Index in [`CLASSES`] of a row of hits (`kept` only where the table
/// keeps rows: ours and no other tenant's).
pub(super) fn class_of(row: Hit, sharing: Sharing) -> usize {
    if row.others {
        if sharing.shares(row.same, row.ours) {
            5
        } else {
            0
        }
    } else if row.kept {
        if row.same {
            1
        } else {
            2
        }
    } else if row.ours {
        3
    } else {
        4
    }
}

/// The rows of each class among `rows` (an SQL query of rows `ours`,
/// `others`, `kept`, `same`, each 0 or 1): read once and counted here,
/// which costs a fraction of summing six SQL conditions per row.
pub(super) fn class_sums(conn: &Connection, sharing: Sharing, rows: &str) -> Result<[u64; 6]> {
    let mut sums = [0u64; 6];
    let mut stmt = conn.prepare(rows)?;
    let mut found = stmt.query([])?;
    while let Some(r) = found.next()? {
        let flag = |i: usize| -> rusqlite::Result<bool> { Ok(r.get::<_, i64>(i)? != 0) };
        let row = hit(flag(0)?, flag(1)?, flag(2)?, flag(3)?);
        sums[class_of(row, sharing)] += 1;
    }
    Ok(sums)
}

/// What a table is, as far as the outcome of its hits goes.
#[derive(Clone, Copy, Debug)]
pub(super) struct TableKind {
    /// The tenants table: created when missing, never overwritten.
    pub tenant_row: bool,
    pub has_pk: bool,
}

impl TableKind {
    pub(super) fn of(table: &StagedTable) -> TableKind {
        TableKind {
            tenant_row: table.tenant_row,
            has_pk: table.has_pk(),
        }
    }
}

pub(super) fn outcome(table: TableKind, hit: Hit, purge: bool) -> Outcome {
    if table.tenant_row {
        // The tenants row is created when missing and never overwritten.
        Outcome::Unchanged
    } else if hit.others {
        if hit.same {
            // Left as it is: a blob another tenant attaches too, or a
            // derived row that is both tenants' (see `shareable`).
            Outcome::Unchanged
        } else {
            Outcome::Conflict
        }
    } else if hit.same {
        Outcome::Unchanged
    } else if hit.kept {
        Outcome::Update
    } else if hit.ours && purge {
        // Our row: purged first and inserted again.
        Outcome::Insert
    } else if table.has_pk {
        // Ours, or nobody's (adopted): updated in place.
        Outcome::Update
    } else {
        Outcome::Unchanged
    }
}

/// The outcomes of one staged table's rows.
pub(super) struct TableOutcomes {
    /// Staged rows kept and already equal (not written at all).
    pub kept_as_is: u64,
    pub conflicts: u64,
}

impl Planning<'_, '_> {
    /// Count the outcomes of `table`'s rows into `counts`; list its first
    /// conflicts into `conflicts` (up to [`MAX_LISTED_CONFLICTS`] in all).
    pub(super) fn count_outcomes(
        &self,
        table: &StagedTable,
        kept: bool,
        counts: &mut PlannedCounts,
        conflicts: &mut Vec<Conflict>,
    ) -> Result<TableOutcomes> {
        let hits = scratch_table("hits", table);
        let kept_expr = if kept { "(ours AND NOT others)" } else { "0" };
        // A staged row of a table without primary key may hit several
        // identical rows (then nothing is kept): one group.
        let per_row = if kept || table.has_pk() {
            format!("SELECT coalesce(ours, 0) AS ours, coalesce(others, 0) AS others, coalesce({kept_expr}, 0) AS kept, coalesce(same, 0) AS same FROM temp.{hits}")
        } else {
            format!("SELECT max(coalesce(ours, 0)) AS ours, max(coalesce(others, 0)) AS others, 0 AS kept, 0 AS same FROM temp.{hits} GROUP BY sid")
        };
        let sharing = Sharing::of(self.ctx, table);
        let shareable = sharing.sql();
        let sums = class_sums(self.conn, sharing, &per_row)?;
        let mut found = 0u64;
        let mut table_conflicts = 0u64;
        let kind = TableKind::of(table);
        for (class, n) in CLASSES.iter().zip(sums) {
            found += n;
            match outcome(kind, *class, self.ctx.options.purge) {
                Outcome::Insert => counts.insert += n,
                Outcome::Update => counts.update += n,
                Outcome::Unchanged => counts.unchanged += n,
                Outcome::Conflict => table_conflicts += n,
            }
        }
        // Rows with no database counterpart are inserted.
        counts.insert += table.rows - found;
        if table_conflicts > 0 && conflicts.len() < MAX_LISTED_CONFLICTS {
            let room = MAX_LISTED_CONFLICTS - conflicts.len();
            let sids: Vec<i64> = self
                .conn
                .prepare(&format!(
                    "SELECT DISTINCT sid FROM temp.{hits} WHERE others AND NOT {shareable} ORDER BY sid LIMIT {room}"
                ))?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for key in table.describe_rows(self.conn, &sids)? {
                conflicts.push(Conflict {
                    table: table.name.clone(),
                    key,
                    reason: "the key belongs to another tenant".into(),
                });
            }
        }
        Ok(TableOutcomes {
            kept_as_is: sums[1],
            conflicts: table_conflicts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: TableKind = TableKind {
        tenant_row: false,
        has_pk: true,
    };
    const JOIN: TableKind = TableKind {
        tenant_row: false,
        has_pk: false,
    };
    const TENANTS: TableKind = TableKind {
        tenant_row: true,
        has_pk: true,
    };

    /// The outcome of each class, in [`CLASSES`] order.
    fn outcomes(table: TableKind, purge: bool) -> Vec<Outcome> {
        CLASSES.iter().map(|c| outcome(table, *c, purge)).collect()
    }

    #[test]
    fn each_hit_class_has_its_outcome() {
        use Outcome::*;
        // Another tenant's row differs: a conflict; ours and equal: left
        // alone; ours and different: updated in place when kept,
        // purged and inserted again otherwise; nobody's: adopted.
        assert_eq!(
            outcomes(PLAIN, true),
            [Conflict, Unchanged, Update, Insert, Update, Unchanged]
        );
        // Without purge our row that is not kept is updated in place.
        assert_eq!(
            outcomes(PLAIN, false),
            [Conflict, Unchanged, Update, Update, Update, Unchanged]
        );
        // Rows without a key cannot be updated: present is unchanged.
        assert_eq!(
            outcomes(JOIN, false),
            [Conflict, Unchanged, Update, Unchanged, Unchanged, Unchanged]
        );
        assert_eq!(
            outcomes(JOIN, true),
            [Conflict, Unchanged, Update, Insert, Unchanged, Unchanged]
        );
    }

    #[test]
    fn the_tenants_row_is_never_overwritten() {
        for purge in [false, true] {
            assert!(outcomes(TENANTS, purge)
                .iter()
                .all(|o| *o == Outcome::Unchanged));
        }
    }

    /// Every combination of the four flags, on a small in-memory hits
    /// table, falls in exactly the class whose [`Hit`] it is.
    #[test]
    fn each_row_of_hits_is_counted_in_its_class() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE h(ours, others, kept, same)")
            .unwrap();
        let mut expected = [0u64; 6];
        for bits in 0..16u8 {
            let [ours, others, kept, same] = [1, 2, 4, 8].map(|b| bits & b != 0);
            // Kept rows are ours and no other tenant's (`kept_expr`).
            if kept && (others || !ours) {
                continue;
            }
            conn.execute(
                "INSERT INTO h VALUES (?1, ?2, ?3, ?4)",
                [ours, others, kept, same],
            )
            .unwrap();
            // Which class it must fall in, from the rule the classes
            // stand for (a shareable table: `same` shares).
            let class = if others {
                if same {
                    5
                } else {
                    0
                }
            } else if kept {
                if same {
                    1
                } else {
                    2
                }
            } else if ours {
                3
            } else {
                4
            };
            expected[class] += 1;
        }
        let sums = class_sums(&conn, Sharing::WhenSame, "SELECT * FROM h").unwrap();
        assert_eq!(sums, expected);
        // Not shareable: every hit on another tenant's row is a conflict.
        let sums = class_sums(&conn, Sharing::Never, "SELECT * FROM h").unwrap();
        assert_eq!(sums[0], expected[0] + expected[5]);
        assert_eq!(sums[5], 0);
        // A derived row shares only when it is the target's too.
        let other_tenants_alone = hit(false, true, false, true);
        assert_eq!(class_of(other_tenants_alone, Sharing::WhenSameAndOurs), 0);
        assert_eq!(
            class_of(hit(true, true, false, true), Sharing::WhenSameAndOurs),
            5
        );
    }

    #[test]
    fn a_conflict_when_another_tenants_row_differs() {
        let differs = hit(false, true, false, false);
        let equal = hit(false, true, false, true);
        for table in [PLAIN, JOIN] {
            assert_eq!(outcome(table, differs, true), Outcome::Conflict);
            assert_eq!(outcome(table, differs, false), Outcome::Conflict);
            assert_eq!(outcome(table, equal, true), Outcome::Unchanged);
        }
    }
}
