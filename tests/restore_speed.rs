//! Issue 19: the write phase costs what the tenant's rows cost, whatever
//! indexes the app has, and a cancel stops a statement while it runs.
//!
//! The schema has the child keys real apps leave unindexed (a task's
//! parent, time entries, a join table, a project's team). With foreign
//! keys on, SQLite looks up the children of every deleted parent row: a
//! full scan of each child table per row unless the restore indexes the
//! child keys. Costs are asserted as SQLite's own count of virtual-machine
//! steps (the `vm_steps` of `purge_progress`), never as wall time.

mod common;

use common::*;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tenant_kit::progress::{CollectProgress, Event};
use tenant_kit::{ErrorKind, Progress};

/// Tasks per tenant (each with a time entry and a tag), three tenants.
const TASKS: i64 = 2_000;

const SCHEMA: &str = "
    CREATE TABLE tenants(id INTEGER PRIMARY KEY, name TEXT);
    CREATE TABLE teams(id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants, name TEXT);
    CREATE TABLE projects(id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants,
                          team_id INTEGER REFERENCES teams, name TEXT);
    CREATE TABLE tasks(id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants,
                       project_id INTEGER REFERENCES projects, parent_id INTEGER REFERENCES tasks,
                       title TEXT);
    CREATE TABLE time_entries(id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants,
                              task_id INTEGER REFERENCES tasks, minutes INTEGER);
    CREATE TABLE tags(id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants, name TEXT);
    CREATE TABLE tags_tasks(tag_id INTEGER REFERENCES tags, task_id INTEGER REFERENCES tasks);
";

/// Tenant `t`'s rows: one team and project, [`TASKS`] tasks (every second
/// one a subtask of the one before), a time entry and a tag per task.
fn seed(t: i64) -> String {
    let base = t * 100_000;
    format!(
        "INSERT INTO tenants VALUES ({t}, 't{t}');
         INSERT INTO teams VALUES ({t}, {t}, 'team');
         INSERT INTO projects VALUES ({t}, {t}, {t}, 'project');
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {TASKS})
         INSERT INTO tasks SELECT {base} + i, {t}, {t}, CASE i % 2 WHEN 0 THEN {base} + i - 1 END, 'task ' || i FROM n;
         INSERT INTO time_entries SELECT id, {t}, id, 30 FROM tasks WHERE tenant_id = {t};
         INSERT INTO tags SELECT id, {t}, 'tag' FROM tasks WHERE tenant_id = {t};
         INSERT INTO tags_tasks SELECT id, id FROM tasks WHERE tenant_id = {t};"
    )
}

fn app(extra_schema: &str) -> SmallDb {
    let db = SmallDb::new(&format!(
        "{SCHEMA}{extra_schema}{}{}{}",
        seed(1),
        seed(2),
        seed(3)
    ));
    db.conn.pragma_update(None, "foreign_keys", true).unwrap();
    db
}

fn schema_of(db: &SmallDb) -> Vec<String> {
    db.conn
        .prepare("SELECT type || ' ' || name FROM sqlite_schema ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

fn rows(db: &SmallDb) -> i64 {
    [
        "teams",
        "projects",
        "tasks",
        "time_entries",
        "tags",
        "tags_tasks",
    ]
    .iter()
    .map(|t| {
        db.conn
            .query_row(&format!("SELECT count(*) FROM {t}"), [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap()
    })
    .sum()
}

#[test]
fn a_purge_with_unindexed_child_keys_scans_no_child_table_per_deleted_row() {
    let db = app("");
    let archive = db.backup(1);
    let schema = schema_of(&db);
    let total_rows = rows(&db);
    let mut events = CollectProgress::default();
    let report = db
        .restore_with(
            &archive,
            1,
            json!({"purge": true, "restore": false}),
            &mut events,
        )
        .unwrap();
    assert_eq!(report.purged["tasks"], TASKS as u64);
    assert_eq!(report.purged["time_entries"], TASKS as u64);

    // Per deleted task, a scan of tasks, time_entries and tags_tasks
    // would cost some 3 × 6,000 rows: 36 million for the purge. Linear
    // work is a few dozen steps per row of the database.
    let steps: i64 = events
        .events
        .iter()
        .filter(|e| e.step() == "purge_progress")
        .map(|e| {
            e.get("vm_steps")
                .and_then(|v| v.as_i64())
                .expect("vm_steps")
        })
        .sum();
    assert!(
        steps < 100 * total_rows,
        "the purge took {steps} VM steps for {total_rows} rows: a scan per deleted row"
    );
    assert!(tenant_rows(&db.conn, "tasks", 1).is_empty());
    assert_eq!(tenant_rows(&db.conn, "tasks", 2).len(), TASKS as usize);
    assert_eq!(
        schema_of(&db),
        schema,
        "the restore left its indexes behind"
    );
}

#[test]
fn a_restore_with_unindexed_child_keys_ends_as_with_indexed_ones() {
    // The same database twice, one with every child key indexed by the
    // app: the path on which SQLite never needed our indexes.
    let change = "UPDATE tasks SET title = 'changed' WHERE id % 7 = 0;
                  DELETE FROM tags_tasks WHERE task_id % 5 = 0;
                  DELETE FROM time_entries WHERE id % 3 = 0;
                  INSERT INTO tasks VALUES (150000, 1, 1, 100001, 'new');";
    let indexes = "CREATE INDEX tasks_parent ON tasks(parent_id);
                   CREATE INDEX entries_task ON time_entries(task_id);
                   CREATE INDEX tags_tasks_tag ON tags_tasks(tag_id);
                   CREATE INDEX tags_tasks_task ON tags_tasks(task_id);
                   CREATE INDEX projects_team ON projects(team_id);
                   CREATE INDEX tasks_project ON tasks(project_id);";
    let bare = app("");
    let indexed = app(indexes);
    let mut ends = Vec::new();
    for db in [&bare, &indexed] {
        let archive = db.backup(1);
        db.conn.execute_batch(change).unwrap();
        let report = db.restore(&archive, 1, json!({"purge": true})).unwrap();
        assert_eq!(report.restored["tasks"], TASKS as u64);
        ends.push(snapshot(&db.conn));
    }
    assert_eq!(ends[0], ends[1]);
    assert!(!ends[0]["tasks"].iter().any(|r| r.contains("changed")));
}

#[test]
fn a_purge_leaving_another_tenants_reference_dangling_is_still_refused() {
    // Tenant 2's time entry on tenant 1's task (no action declared, child
    // key unindexed): deleting the task would break the reference.
    let db = app("");
    let archive = db.backup(1);
    db.conn
        .execute_batch("INSERT INTO time_entries VALUES (900000, 2, 100010, 5);")
        .unwrap();
    let before = file_bytes(&db.db);
    let err = db
        .restore(&archive, 1, json!({"purge": true, "restore": false}))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(err.message().contains("break foreign keys"), "{err}");
    assert!(err.message().contains("time_entries"), "{err}");
    assert_eq!(file_bytes(&db.db), before);
}

#[test]
fn a_purge_cascading_onto_another_tenant_through_an_unindexed_key_is_refused() {
    let db = app(
        "CREATE TABLE notes(id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants,
                            task_id INTEGER REFERENCES tasks ON DELETE CASCADE, body TEXT);",
    );
    let archive = db.backup(1);
    db.conn
        .execute_batch("INSERT INTO notes VALUES (7, 2, 100010, 'theirs');")
        .unwrap();
    let before = file_bytes(&db.db);
    let err = db
        .restore(&archive, 1, json!({"purge": true, "restore": false}))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.message().contains("notes id=7"), "{err}");
    assert!(
        err.message()
            .contains("a row of tenant 2, would be deleted"),
        "{err}"
    );
    assert_eq!(file_bytes(&db.db), before);
}

/// A project's delete that runs for minutes: the app's trigger (here a
/// cross join of 64 million rows) stands for any statement that long.
const SLOW_TRIGGER: &str = "
    CREATE TABLE slow(x INTEGER);
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400)
    INSERT INTO slow SELECT i FROM n;
    CREATE TRIGGER projects_slow AFTER DELETE ON projects
    BEGIN SELECT count(*) FROM slow AS a, slow AS b, slow AS c; END;
";

/// Whether the purge of `projects` (the slow statement) ever finished.
fn finished_projects(events: &[Event]) -> bool {
    events
        .iter()
        .any(|e| e.step() == "purge_progress" && e.get("table") == Some(&json!("projects")))
}

#[test]
fn a_sink_refusing_the_heartbeat_stops_a_running_statement() {
    let db = app(SLOW_TRIGGER);
    let archive = db.backup(1);
    let before = file_bytes(&db.db);
    let mut events = Vec::new();
    let mut sink = |e: Event| -> tenant_kit::Result<()> {
        let refuse = e.step() == "working";
        events.push(e);
        if refuse {
            Err(tenant_kit::Error::cancelled())
        } else {
            Ok(())
        }
    };
    let err = db
        .restore_with(
            &archive,
            1,
            json!({"purge": true, "restore": false}),
            &mut sink,
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    assert!(events.iter().any(|e| e.step() == "working"));
    assert!(!finished_projects(&events), "the statement ran to its end");
    assert_eq!(file_bytes(&db.db), before);
}

/// A sink whose cancel flag another thread raises, as Ruby's unblock
/// function does on `Thread#kill`, `Timeout.timeout` or a signal.
struct Flagged {
    flag: Arc<AtomicBool>,
    events: Vec<Event>,
}

impl Progress for Flagged {
    fn emit(&mut self, event: Event) -> tenant_kit::Result<()> {
        // Raised a moment after each table's purge: while the next one's
        // statement runs (the slow one of `projects` lasts seconds).
        if event.step() == "purge_progress" {
            let flag = Arc::clone(&self.flag);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                flag.store(true, Ordering::Relaxed);
            });
        }
        self.events.push(event);
        Ok(())
    }

    fn check_interrupt(&self) -> tenant_kit::Result<()> {
        if self.flag.load(Ordering::Relaxed) {
            Err(tenant_kit::Error::cancelled())
        } else {
            Ok(())
        }
    }

    fn cancel_flag(&self) -> Option<Arc<AtomicBool>> {
        Some(Arc::clone(&self.flag))
    }
}

#[test]
fn a_raised_cancel_flag_stops_a_running_statement() {
    let db = app(SLOW_TRIGGER);
    let archive = db.backup(1);
    let before = file_bytes(&db.db);
    let mut sink = Flagged {
        flag: Arc::new(AtomicBool::new(false)),
        events: Vec::new(),
    };
    let err = db
        .restore_with(
            &archive,
            1,
            json!({"purge": true, "restore": false}),
            &mut sink,
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    assert!(
        !finished_projects(&sink.events),
        "the statement ran to its end"
    );
    assert_eq!(file_bytes(&db.db), before);
}
