//! Restore at the speed of SQLite (issue 19): a Rails-shaped schema whose
//! child keys have no index (`tasks.parent_id`, `time_entries.task_id`,
//! `tags_tasks.tag_id`, `projects.team_id`), each restore case against its
//! floor, the same rows moved by plain SQL with foreign keys off and the
//! same indexes:
//!
//! - purge only (`purge: true, restore: false`) of tenant 1 / the floor
//!   deletes tenant 1's rows, children first;
//! - restore into a new database (the schema, no rows) / the floor copies
//!   tenant 1's rows with `INSERT … SELECT` from the attached original.
//!
//! `cargo run --profile test --example restore_speed -- [tasks_per_tenant]`
//! (default 100,000: some 300,000 rows per tenant, three tenants
//! interleaved). Prints one line per case: time, lock time, floor, ratio.
use serde_json::json;
use std::path::Path;
use std::time::Instant;
use tenant_kit::progress::NoProgress;

const SCHEMA: &str = "
    CREATE TABLE tenants(id INTEGER PRIMARY KEY, name TEXT);
    CREATE TABLE teams(id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants, name TEXT);
    CREATE TABLE projects(id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants,
                          team_id INTEGER REFERENCES teams, name TEXT);
    CREATE TABLE tasks(id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants,
                       project_id INTEGER REFERENCES projects, parent_id INTEGER REFERENCES tasks,
                       title TEXT, created_at TEXT);
    CREATE TABLE time_entries(id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants,
                              task_id INTEGER REFERENCES tasks, minutes INTEGER, note TEXT);
    CREATE TABLE tags(id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants, name TEXT);
    CREATE TABLE tags_tasks(tag_id INTEGER REFERENCES tags, task_id INTEGER REFERENCES tasks);
    -- What Rails' t.references indexes; the child keys above stay bare.
    CREATE INDEX teams_tenant ON teams(tenant_id);
    CREATE INDEX projects_tenant ON projects(tenant_id);
    CREATE INDEX tasks_tenant ON tasks(tenant_id);
    CREATE INDEX tasks_project ON tasks(project_id);
    CREATE INDEX entries_tenant ON time_entries(tenant_id);
    CREATE INDEX tags_tenant ON tags(tenant_id);
    CREATE INDEX tags_tasks_task ON tags_tasks(task_id);
";

/// Three tenants' rows, interleaved as in a live app.
fn seed(tasks: i64) -> String {
    format!(
        "INSERT INTO tenants VALUES (1, 'one'), (2, 'two'), (3, 'three');
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 29)
         INSERT INTO teams SELECT i + 1, i % 3 + 1, 'team ' || i FROM n;
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 299)
         INSERT INTO projects SELECT i + 1, i % 3 + 1, 3 * ((i / 3) % 10) + i % 3 + 1, 'p' FROM n;
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 2999)
         INSERT INTO tags SELECT i + 1, i % 3 + 1, 'tag ' || i FROM n;
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {tasks} * 3 - 1)
         INSERT INTO tasks SELECT i + 1, i % 3 + 1, (i % 300) + 1,
                CASE WHEN i >= 3 AND i % 2 = 0 THEN i - 2 END,
                'task number ' || i, '2026-01-01 00:00:00'
           FROM n;
         INSERT INTO time_entries SELECT id, tenant_id, id, id % 120, 'worked' FROM tasks;
         INSERT INTO tags_tasks SELECT ((id - 1) % 3000) + 1, id FROM tasks;"
    )
}

/// A table's rows of tenant 1 (`tags_tasks` through its task).
fn tenant_rows(table: &str, prefix: &str) -> String {
    if table == "tags_tasks" {
        format!(
            "SELECT * FROM {prefix}tags_tasks WHERE task_id IN (SELECT id FROM {prefix}tasks WHERE tenant_id = 1)"
        )
    } else {
        format!("SELECT * FROM {prefix}{table} WHERE tenant_id = 1")
    }
}

const PARENTS_FIRST: [&str; 6] = [
    "teams",
    "projects",
    "tags",
    "tasks",
    "time_entries",
    "tags_tasks",
];

fn timed(f: impl FnOnce()) -> f64 {
    let started = Instant::now();
    f();
    started.elapsed().as_secs_f64()
}

/// With `RESTORE_SPEED_EVENTS=1`, every event on stderr with its time.
struct Events(Instant);

impl tenant_kit::Progress for Events {
    fn emit(&mut self, event: tenant_kit::Event) -> tenant_kit::Result<()> {
        if std::env::var_os("RESTORE_SPEED_EVENTS").is_some() {
            eprintln!(
                "{:>8.3}s {}",
                self.0.elapsed().as_secs_f64(),
                event.to_json()
            );
        }
        Ok(())
    }
}

fn restore(db: &Path, archive: &Path, extra: serde_json::Value) -> (f64, u64) {
    let mut options = json!({"database": db, "archive": archive, "tenant_id": 1});
    for (k, v) in extra.as_object().unwrap() {
        options[k] = v.clone();
    }
    let options = serde_json::from_value(options).unwrap();
    let started = Instant::now();
    let report = tenant_kit::restore::restore(&options, &mut Events(started)).unwrap();
    (started.elapsed().as_secs_f64(), report.lock_ms)
}

fn main() {
    let tasks: i64 = std::env::args()
        .nth(1)
        .map_or(100_000, |a| a.parse().unwrap());
    let dir = tempfile::tempdir().unwrap();

    let original = dir.path().join("app.sqlite3");
    let conn = rusqlite::Connection::open(&original).unwrap();
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; {SCHEMA} {}",
        seed(tasks)
    ))
    .unwrap();
    drop(conn);
    let backup: tenant_kit::backup::BackupOptions = serde_json::from_value(
        json!({"database": original, "tenant_id": 1, "output_dir": dir.path()}),
    )
    .unwrap();
    let archive = tenant_kit::backup::backup(&backup, &mut NoProgress)
        .unwrap()
        .path;
    let copy = |name: &str| {
        let path = dir.path().join(name);
        let conn = rusqlite::Connection::open(&original).unwrap();
        conn.execute("VACUUM INTO ?1", [path.to_str().unwrap()])
            .unwrap();
        path
    };
    let empty = |name: &str| {
        let path = dir.path().join(name);
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(&format!("PRAGMA journal_mode = WAL; {SCHEMA}"))
            .unwrap();
        path
    };

    // Purge only.
    let (purge, purge_lock) = restore(
        &copy("purge.sqlite3"),
        &archive,
        json!({"purge": true, "restore": false}),
    );
    let floor_db = copy("purge_floor.sqlite3");
    let conn = rusqlite::Connection::open(&floor_db).unwrap();
    let purge_floor = timed(|| {
        let mut sql = String::from("PRAGMA foreign_keys = OFF; BEGIN;");
        for t in PARENTS_FIRST.iter().rev() {
            let rows = tenant_rows(t, "");
            sql.push_str(&format!(
                "DELETE FROM {t} WHERE rowid IN ({});",
                rows.replacen("SELECT *", "SELECT rowid", 1)
            ));
        }
        sql.push_str("COMMIT;");
        conn.execute_batch(&sql).unwrap();
    });
    drop(conn);

    // Restore into a new database.
    let (fresh, fresh_lock) = restore(&empty("fresh.sqlite3"), &archive, json!({}));
    let floor_db = empty("fresh_floor.sqlite3");
    let conn = rusqlite::Connection::open(&floor_db).unwrap();
    conn.execute("ATTACH ?1 AS src", [original.to_str().unwrap()])
        .unwrap();
    let fresh_floor = timed(|| {
        let mut sql = String::from("PRAGMA foreign_keys = OFF; BEGIN; INSERT INTO main.tenants SELECT * FROM src.tenants WHERE id = 1;");
        for t in PARENTS_FIRST {
            sql.push_str(&format!("INSERT INTO main.{t} {};", tenant_rows(t, "src.")));
        }
        sql.push_str("COMMIT;");
        conn.execute_batch(&sql).unwrap();
    });

    if std::env::var_os("RESTORE_SPEED_KEEP").is_some() {
        eprintln!("kept: {}", dir.keep().display());
    }
    println!("rows per tenant: {}", tasks * 3 + 1110);
    println!("| case | tenant_kit s | lock s | floor s | ratio |");
    println!("|---|---|---|---|---|");
    for (case, t, lock, floor) in [
        (
            "purge only, unindexed child keys",
            purge,
            purge_lock,
            purge_floor,
        ),
        (
            "restore into a new database",
            fresh,
            fresh_lock,
            fresh_floor,
        ),
    ] {
        println!(
            "| {case} | {t:.2} | {:.2} | {floor:.2} | {:.1}× |",
            lock as f64 / 1000.0,
            t / floor
        );
    }
}
