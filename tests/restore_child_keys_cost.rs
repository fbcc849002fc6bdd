//! Issue 19: the write keeps foreign keys whole without paying for child
//! keys the app left unindexed (see `restore::child_keys`).
//!
//! Without foreign-key actions or triggers, foreign keys are off for the
//! write and only the changed references are checked: no index is built,
//! so the schema cookie (`PRAGMA schema_version`, bumped by every `CREATE`
//! and `DROP`) does not move. With an action in the schema, foreign keys
//! stay on and only the child keys SQLite will look up are indexed: none
//! for a restore into a deleted tenant written parents first. Either way a
//! purge costs a bounded number of virtual-machine instructions per row
//! (never a scan of a child table per deleted parent), and a reference the
//! purge leaves dangling is refused.

mod common;

use common::*;
use rusqlite::Connection;
use serde_json::json;
use std::cell::Cell;
use tenant_kit::progress::Event;
use tenant_kit::{ErrorKind, Progress};

/// Tasks of tenant 1; the other tenants have [`OTHERS`] times as many.
const TASKS: i64 = 1_000;
const OTHERS: i64 = 10;

const SCHEMA: &str = "
    CREATE TABLE tenants(id INTEGER PRIMARY KEY, name TEXT);
    CREATE TABLE projects(id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants, name TEXT);
    CREATE TABLE tasks(id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants,
                       project_id INTEGER REFERENCES projects, parent_id INTEGER REFERENCES tasks,
                       title TEXT);
    CREATE TABLE time_entries(id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants,
                              task_id INTEGER REFERENCES tasks, minutes INTEGER);
    CREATE INDEX tasks_tenant ON tasks(tenant_id);
    CREATE INDEX entries_tenant ON time_entries(tenant_id);
";

/// A schema with a foreign-key action: foreign keys stay on for the write.
const WITH_AN_ACTION: &str = "
    CREATE TABLE notes(id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants,
                       project_id INTEGER REFERENCES projects ON DELETE CASCADE, body TEXT);
";

/// Tenant `t` with `n` tasks (every second one a subtask of the one before
/// it) and a time entry per task.
fn seed(t: i64, n: i64) -> String {
    let base = t * 1_000_000;
    format!(
        "INSERT INTO tenants VALUES ({t}, 't{t}');
         INSERT INTO projects VALUES ({t}, {t}, 'project');
         WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < {n})
         INSERT INTO tasks SELECT {base} + i, {t}, {t}, CASE i % 2 WHEN 0 THEN {base} + i - 1 END, 'task ' || i FROM k;
         INSERT INTO time_entries SELECT id, {t}, id, 30 FROM tasks WHERE tenant_id = {t};"
    )
}

fn app(extra_schema: &str) -> SmallDb {
    SmallDb::new(&format!(
        "{SCHEMA}{extra_schema}{}{}",
        seed(1, TASKS),
        seed(2, TASKS * OTHERS)
    ))
}

fn schema_version(conn: &Connection) -> i64 {
    conn.query_row("PRAGMA schema_version", [], |r| r.get(0))
        .unwrap()
}

/// Counts `check_interrupt` calls (one per 10,000 instructions of a
/// running statement, and one between phases) and the purges' own
/// instruction counts.
#[derive(Default)]
struct Steps {
    checks: Cell<u64>,
    at_write_lock: Option<u64>,
    at_commit: Option<u64>,
    purge_vm_steps: Vec<(String, u64, u64)>,
}

impl Progress for Steps {
    fn emit(&mut self, event: Event) -> tenant_kit::Result<()> {
        let field = |key: &str| event.get(key).cloned().unwrap_or_default();
        if event.step() == "lock" && field("state") == "write" {
            self.at_write_lock = Some(self.checks.get());
        } else if event.step() == "commit" {
            self.at_commit = Some(self.checks.get());
        } else if event.step() == "purge_progress" && field("vm_steps").is_u64() {
            self.purge_vm_steps.push((
                field("table").as_str().unwrap_or_default().to_string(),
                field("processed").as_u64().unwrap_or(0),
                field("vm_steps").as_u64().unwrap_or(0),
            ));
        }
        Ok(())
    }

    fn check_interrupt(&self) -> tenant_kit::Result<()> {
        self.checks.set(self.checks.get() + 1);
        Ok(())
    }
}

impl Steps {
    /// Instructions run under the write lock, in units of 10,000.
    fn under_the_lock(&self) -> u64 {
        self.at_commit.expect("no commit event") - self.at_write_lock.expect("no lock event")
    }

    /// No purge statement ran more than `limit` instructions per row.
    fn assert_purges_bounded(&self, limit: u64) {
        assert!(!self.purge_vm_steps.is_empty(), "no purge ran");
        for (table, rows, steps) in &self.purge_vm_steps {
            assert!(
                *steps <= limit * rows.max(&1),
                "the purge of {rows} rows of {table} ran {steps} instructions"
            );
        }
    }
}

fn restore_counting(db: &SmallDb, archive: &std::path::Path, options: serde_json::Value) -> Steps {
    let mut steps = Steps::default();
    db.restore_with(archive, 1, options, &mut steps).unwrap();
    steps
}

/// Tenant 1 deleted first (purge only), then restored: every row written
/// again. Returns the restore's counts.
fn restore_into_the_deleted_tenant(db: &SmallDb) -> Steps {
    let archive = db.backup(1);
    let before = snapshot(&db.conn);
    db.restore(&archive, 1, json!({"purge": true, "restore": false}))
        .unwrap();
    assert!(tenant_rows(&db.conn, "tasks", 1).is_empty());
    let version = schema_version(&db.conn);
    let steps = restore_counting(db, &archive, json!({"purge": true}));
    assert_eq!(snapshot(&db.conn), before);
    assert_eq!(
        schema_version(&db.conn),
        version,
        "the restore into the deleted tenant created (and dropped) indexes"
    );
    steps
}

#[test]
fn a_restore_into_a_deleted_tenant_builds_no_index_and_reads_no_other_tenant() {
    let db = app("");
    let steps = restore_into_the_deleted_tenant(&db);
    // 2,000 rows written; tenant 2's 20,000 never sorted nor scanned. An
    // index on `time_entries.task_id` and `tasks.parent_id` alone is a
    // sort of 22,000 rows each: far more than 100 instructions per row of
    // tenant 1.
    let per_row = steps.under_the_lock() * 10_000 / (2 * TASKS as u64);
    assert!(
        per_row < 1_500,
        "the write lock ran {per_row} instructions per restored row"
    );
}

#[test]
fn with_a_foreign_key_action_a_restore_into_a_deleted_tenant_builds_no_index_either() {
    // Foreign keys stay on; every table is written after the tables it
    // refers to, so no violation waits and SQLite never looks up the
    // children of an inserted row. (A table referring to itself or to a
    // later one has its children's keys indexed: its rows may wait.)
    let db = SmallDb::new(&format!(
        "{}{WITH_AN_ACTION}{}{}",
        SCHEMA.replace("parent_id INTEGER REFERENCES tasks", "parent_id INTEGER"),
        seed(1, TASKS),
        seed(2, TASKS * OTHERS)
    ));
    restore_into_the_deleted_tenant(&db);
}

#[test]
fn a_purge_without_actions_builds_no_index_and_runs_linear_statements() {
    let db = app("");
    let archive = db.backup(1);
    let version = schema_version(&db.conn);
    let steps = restore_counting(&db, &archive, json!({"purge": true, "restore": false}));
    assert!(tenant_rows(&db.conn, "tasks", 1).is_empty());
    assert_eq!(
        tenant_rows(&db.conn, "tasks", 2).len(),
        (TASKS * OTHERS) as usize
    );
    assert_eq!(schema_version(&db.conn), version, "the purge built indexes");
    // A scan of the 11,000 time entries per deleted task is over 100,000
    // instructions per row.
    steps.assert_purges_bounded(500);
}

#[test]
fn a_purge_with_an_action_indexes_what_sqlite_looks_up_and_runs_linear_statements() {
    let db = app(WITH_AN_ACTION);
    let archive = db.backup(1);
    let schema = |conn: &Connection| {
        let mut stmt = conn
            .prepare("SELECT name, sql FROM sqlite_schema ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
        })
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap()
    };
    let before = schema(&db.conn);
    let steps = restore_counting(&db, &archive, json!({"purge": true, "restore": false}));
    assert!(tenant_rows(&db.conn, "tasks", 1).is_empty());
    steps.assert_purges_bounded(500);
    assert_eq!(
        schema(&db.conn),
        before,
        "the restore left its indexes behind"
    );
}

/// Tenant 2's time entry on a task of tenant 1 that the archive does not
/// carry (no action declared, child key unindexed): the purge removes the
/// task for good and would leave the entry dangling.
fn refuses_the_dangling_reference(extra_schema: &str, options: serde_json::Value) {
    let db = app(extra_schema);
    let archive = db.backup(1);
    db.conn
        .execute_batch(
            "INSERT INTO tasks VALUES (1999999, 1, 1, NULL, 'after the backup');
             INSERT INTO time_entries VALUES (9000001, 2, 1999999, 5);",
        )
        .unwrap();
    let before = file_bytes(&db.db);
    let err = db.restore(&archive, 1, options).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(err.message().contains("break foreign keys"), "{err}");
    assert!(err.message().contains("time_entries"), "{err}");
    assert_eq!(file_bytes(&db.db), before);
}

#[test]
fn a_purge_only_leaving_another_tenants_reference_dangling_is_refused_on_both_paths() {
    for extra in ["", WITH_AN_ACTION] {
        refuses_the_dangling_reference(extra, json!({"purge": true, "restore": false}));
    }
}

#[test]
fn a_purge_restore_leaving_another_tenants_reference_dangling_is_refused_on_both_paths() {
    for extra in ["", WITH_AN_ACTION] {
        refuses_the_dangling_reference(extra, json!({"purge": true}));
    }
}
