//! Issue 19: the checks after the write (references to future ids, the
//! membership of restored join rows) cost what the restored rows cost,
//! whatever indexes the write added for its own foreign-key lookups.
//!
//! The join table here has the index Rails' `t.references` makes on one
//! end (`task_id`) and a declared foreign key on the other (`tag_id`)
//! without one, with few tags: the write indexes `tag_id` for the length
//! of its statements (see `child_keys`). The checks look each restored
//! join row up by both ends; through a `tag_id` index, each lookup walks
//! every row of that tag.
//!
//! Cost is SQLite's own: the restore's statements run under a progress
//! handler that asks the sink `check_interrupt` every 10,000 virtual
//! machine instructions, so the calls counted between the last row
//! written and the commit measure the checks' work, never wall time.

mod common;

use common::*;
use serde_json::json;
use std::cell::Cell;
use tenant_kit::progress::Event;
use tenant_kit::Progress;

const TASKS: i64 = 3_000;
const TAGS: i64 = 5;

const SCHEMA: &str = "
    CREATE TABLE tenants(id INTEGER PRIMARY KEY, name TEXT);
    CREATE TABLE tags(id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants, name TEXT);
    CREATE TABLE tasks(id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants, title TEXT);
    CREATE TABLE tags_tasks(tag_id INTEGER NOT NULL REFERENCES tags, task_id INTEGER NOT NULL REFERENCES tasks);
    CREATE INDEX tags_tasks_task ON tags_tasks(task_id);
    CREATE INDEX tags_tenant ON tags(tenant_id);
    CREATE INDEX tasks_tenant ON tasks(tenant_id);
";

/// Tenant `t`: [`TAGS`] tags, [`TASKS`] tasks, each task tagged once.
fn seed(t: i64) -> String {
    let base = t * 100_000;
    format!(
        "INSERT INTO tenants VALUES ({t}, 't{t}');
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {TAGS} - 1)
         INSERT INTO tags SELECT {base} + i, {t}, 'tag ' || i FROM n;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {TASKS})
         INSERT INTO tasks SELECT {base} + i, {t}, 'task ' || i FROM n;
         INSERT INTO tags_tasks SELECT {base} + id % {TAGS}, id FROM tasks WHERE tenant_id = {t};"
    )
}

/// Counts `check_interrupt` calls, and notes the count at every event.
#[derive(Default)]
struct Steps {
    checks: Cell<u64>,
    events: Vec<(Event, u64)>,
}

impl Progress for Steps {
    fn emit(&mut self, event: Event) -> tenant_kit::Result<()> {
        self.events.push((event, self.checks.get()));
        Ok(())
    }

    fn check_interrupt(&self) -> tenant_kit::Result<()> {
        self.checks.set(self.checks.get() + 1);
        Ok(())
    }
}

impl Steps {
    /// Checks between the last `restore_progress` event and `commit`.
    fn after_the_write(&self) -> u64 {
        let at = |step: &str| {
            self.events
                .iter()
                .rev()
                .find(|(e, _)| e.step() == step)
                .unwrap_or_else(|| panic!("no {step} event"))
                .1
        };
        at("commit") - at("restore_progress")
    }
}

#[test]
fn the_checks_after_writing_join_rows_do_not_walk_a_foreign_key_index() {
    let db = SmallDb::new(&format!("{SCHEMA}{}{}{}", seed(1), seed(2), seed(3)));
    let archive = db.backup(1);
    let before = snapshot(&db.conn);
    // The tenant deleted first: every row is written again.
    db.restore(&archive, 1, json!({"purge": true, "restore": false}))
        .unwrap();
    assert!(tenant_rows(&db.conn, "tasks", 1).is_empty());

    let mut steps = Steps::default();
    let report = db
        .restore_with(&archive, 1, json!({"purge": true}), &mut steps)
        .unwrap();
    assert_eq!(report.written["tags_tasks"], TASKS as u64);
    assert_eq!(snapshot(&db.conn), before);

    // Each restored row is looked up a few times by its key: under 200
    // instructions per row. Through the `tag_id` index, a lookup walks the
    // 3,000 / 5 rows of its tag: over 5,000 per row.
    let checks = steps.after_the_write();
    let per_row = checks * 10_000 / (TASKS as u64);
    assert!(
        per_row < 1_000,
        "the checks after the write ran {checks} × 10,000 instructions for {TASKS} join rows \
         ({per_row} per row)"
    );
}
