//! The vocabulary of progress events, defined once: every step an event can
//! have (its JSON `step` name), how its events come, and the phases of a
//! backup and of a restore (share of the whole job, lock a display shows).
//! The bindings hand this table to their callers ([`vocabulary_json`], read
//! by the Ruby gem as `TenantKit::STEPS` and `TenantKit::PHASES`), so no
//! one spells a step name again.

use serde_json::{json, Value};

/// How a step's events arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cadence {
    /// One event when the step happens.
    Once,
    /// Repeated counts of one piece of work (`processed`/`total` or the like):
    /// each tick replaces the one before it.
    Ticks,
    /// Repeated counts per table (`table`, `processed`, `total`).
    PerTable,
    /// Repeated without data while one long statement runs, so a sink can
    /// cancel it.
    Heartbeat,
}

macro_rules! steps {
    ($($(#[$doc:meta])* $variant:ident = $name:literal, $cadence:ident;)*) => {
        /// The `step` of a progress event.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Step {
            $($(#[$doc])* $variant,)*
        }

        impl Step {
            /// Every step, in the order of this table.
            pub const ALL: &'static [Step] = &[$(Step::$variant),*];

            /// The name events carry in JSON.
            pub fn name(self) -> &'static str {
                match self {
                    $(Step::$variant => $name,)*
                }
            }

            pub fn cadence(self) -> Cadence {
                match self {
                    $(Step::$variant => Cadence::$cadence,)*
                }
            }
        }
    };
}

steps! {
    /// The work begins (backup, restore, verify, the self test).
    Start = "start", Once;
    /// A backup found the tenant's tables (`tables`).
    ScanTables = "scan_tables", Once;
    /// Rows of one table written to the dump.
    DumpProgress = "dump_progress", PerTable;
    /// A backup's read transaction ended (`held_ms`, `writers_blocked`).
    Snapshot = "snapshot", Once;
    /// A backup read the tenant's files.
    BlobProgress = "blob_progress", Ticks;
    /// A backup wrote the archive file.
    ArchiveProgress = "archive_progress", Ticks;
    /// The archive is in place (`path`).
    ArchiveCreated = "archive_created", Once;
    /// An archive is being checked.
    Verify = "verify", Ticks;
    /// A restore is planning.
    PlanProgress = "plan_progress", Ticks;
    /// A restore's plan (`insert`, `update`, `conflicts`, `tables`).
    Plan = "plan", Once;
    /// Rows of one table purged.
    PurgeProgress = "purge_progress", PerTable;
    /// A restore wrote the tenant's files.
    Blobs = "blobs", Once;
    /// A restore undid the storage changes of a restore that died.
    Recovered = "recovered", Once;
    /// Rows of one table restored.
    RestoreProgress = "restore_progress", PerTable;
    /// A restore is committing.
    Commit = "commit", Once;
    /// The work is done.
    Done = "done", Once;
    /// The work's connection takes or lets go of a lock (`state`).
    Lock = "lock", Once;
    /// The work failed (`error`, `kind`).
    Failed = "failed", Once;
    /// A long statement is still running (at most every half second).
    Working = "working", Heartbeat;
    /// A step of the binding's self test.
    Tick = "tick", Ticks;
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl PartialEq<str> for Step {
    fn eq(&self, other: &str) -> bool {
        self.name() == other
    }
}

impl PartialEq<&str> for Step {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}

impl PartialEq<String> for Step {
    fn eq(&self, other: &String) -> bool {
        self.name() == other
    }
}

/// The lock on the app's database a `lock` event announces (`state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    /// Let go: the app's writers may write.
    None,
    /// A read transaction: in rollback-journal mode no one else can commit.
    Read,
    /// A write transaction: no one else can write.
    Write,
}

impl LockState {
    pub const ALL: [LockState; 3] = [LockState::None, LockState::Read, LockState::Write];

    pub fn name(self) -> &'static str {
        match self {
            LockState::None => "none",
            LockState::Read => "read",
            LockState::Write => "write",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// One step of an operation as a progress display shows it: the part of
/// the whole job (percent, from and to) it covers, and the lock a row whose
/// last step is this one shows when the row did not record a `lock` event.
pub struct Phase {
    pub step: Step,
    pub percent: (u8, u8),
    pub lock: LockState,
}

const fn phase(step: Step, from: u8, to: u8, lock: LockState) -> Phase {
    Phase {
        step,
        percent: (from, to),
        lock,
    }
}

/// A backup's steps in order: the dump takes most of the time.
pub const BACKUP_PHASES: &[Phase] = &[
    phase(Step::Start, 0, 0, LockState::None),
    phase(Step::ScanTables, 2, 2, LockState::Read),
    phase(Step::DumpProgress, 5, 70, LockState::Read),
    phase(Step::Snapshot, 70, 70, LockState::Read),
    phase(Step::BlobProgress, 70, 85, LockState::None),
    phase(Step::ArchiveProgress, 85, 99, LockState::None),
    phase(Step::ArchiveCreated, 99, 99, LockState::None),
    phase(Step::Done, 100, 100, LockState::None),
];

/// A restore's steps in order: checking the archive, planning under a read
/// transaction, writing under a write transaction.
pub const RESTORE_PHASES: &[Phase] = &[
    phase(Step::Start, 0, 0, LockState::None),
    phase(Step::Verify, 2, 35, LockState::None),
    phase(Step::PlanProgress, 35, 55, LockState::Read),
    phase(Step::Plan, 55, 55, LockState::Read),
    phase(Step::PurgeProgress, 55, 65, LockState::Write),
    phase(Step::Blobs, 65, 68, LockState::Write),
    phase(Step::RestoreProgress, 68, 95, LockState::Write),
    phase(Step::Commit, 97, 97, LockState::Write),
    phase(Step::Done, 100, 100, LockState::None),
];

/// The whole vocabulary as JSON, for the bindings:
/// `{"steps": [...], "per_table": [...], "ticks": [...], "locks": [...],
/// "phases": {"backup": [{"step", "percent": [from, to], "lock"}, ...],
/// "restore": [...]}}`.
pub fn vocabulary_json() -> String {
    let names = |cadence: Option<Cadence>| -> Vec<&str> {
        Step::ALL
            .iter()
            .filter(|s| cadence.is_none_or(|c| s.cadence() == c))
            .map(|s| s.name())
            .collect()
    };
    let phases = |phases: &[Phase]| -> Vec<Value> {
        phases
            .iter()
            .map(|p| {
                json!({
                    "step": p.step.name(),
                    "percent": [p.percent.0, p.percent.1],
                    "lock": p.lock.name(),
                })
            })
            .collect()
    };
    json!({
        "steps": names(None),
        "per_table": names(Some(Cadence::PerTable)),
        "ticks": names(Some(Cadence::Ticks)),
        "locks": LockState::ALL.map(LockState::name),
        "phases": {"backup": phases(BACKUP_PHASES), "restore": phases(RESTORE_PHASES)},
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_snake_case() {
        let names: HashSet<&str> = Step::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names.len(), Step::ALL.len());
        assert!(names
            .iter()
            .all(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
    }

    #[test]
    fn phases_move_forward() {
        for phases in [BACKUP_PHASES, RESTORE_PHASES] {
            let mut last = 0;
            for p in phases {
                assert!(p.percent.0 >= last && p.percent.1 >= p.percent.0);
                last = p.percent.1;
            }
            assert_eq!(last, 100);
        }
    }
}
