//! Partial and subtree restores (`only:` / `except:`): the selected rows
//! and what hangs off them come back, the rest of the tenant stays as it
//! is now, a purge stays within the selection, and a reference out of the
//! selection must find its row.
//!
//! The sample app's tenant 1: projects 1001 and 1002; tasks 1002, 1004 and
//! 1006 are in project 1001 (with time entries of the same ids, tags_tasks
//! rows of task 1002, attachment 1002 with blob 1002, comment 1002 on the
//! project); every task but 1001 is a subtask of task 1001 (project 1002).

mod common;

use common::*;
use serde_json::json;
use tenant_kit::ErrorKind;

/// Deletes project 1001 and everything under it, as the app's
/// `dependent: :destroy` would (file included).
const DELETE_PROJECT_1001: &str = "
    DELETE FROM time_entries WHERE task_id IN (1002, 1004, 1006);
    DELETE FROM tags_tasks WHERE task_id IN (1002, 1004, 1006);
    DELETE FROM active_storage_attachments WHERE id = 1002;
    DELETE FROM active_storage_blobs WHERE id = 1002;
    DELETE FROM comments WHERE id = 1002;
    DELETE FROM tasks WHERE project_id = 1001;
    DELETE FROM projects WHERE id = 1001;
";

/// The app's work after the backup, outside project 1001.
const LATER_WORK: &str = "
    INSERT INTO tags(id, tenant_id, name, created_at, updated_at) VALUES (1050, 1, 'new', 'y', 'y');
    INSERT INTO tasks(id, tenant_id, project_id, title, created_at, updated_at) VALUES (1050, 1, 1002, 'later', 'y', 'y');
    UPDATE tasks SET title = 'renamed later' WHERE id = 1001;
    UPDATE users SET name = 'renamed later' WHERE id = 1001;
";

fn subtree(root: i64) -> serde_json::Value {
    json!({ "only": { "projects": [root] } })
}

fn with(mut extra: serde_json::Value, key: &str, value: serde_json::Value) -> serde_json::Value {
    extra[key] = value;
    extra
}

#[test]
fn a_deleted_project_comes_back_with_its_subtree_while_later_work_stays() {
    let app = App::new();
    let archive = app.backup(1).path;
    let conn = app.conn();
    conn.execute_batch(LATER_WORK).unwrap();
    let expected = app.snapshot();
    let files = app.storage_files();
    conn.execute_batch(DELETE_PROJECT_1001).unwrap();
    std::fs::remove_file(blob_path(&app.storage, &blob_key(1, 2))).unwrap();

    let dry = app
        .restore(&archive, 1, with(subtree(1001), "dry_run", json!(true)))
        .unwrap();
    assert_eq!(dry.conflict_count, 0, "{:?}", dry.conflicts);
    let inserts = |t: &str| dry.planned.get(t).map(|c| (c.insert, c.update, c.purge));
    assert_eq!(inserts("projects"), Some((1, 0, 0)));
    assert_eq!(inserts("tasks"), Some((3, 0, 0)));
    assert_eq!(inserts("time_entries"), Some((3, 0, 0)));
    assert_eq!(inserts("comments"), Some((1, 0, 0)));
    assert_eq!(inserts("tags_tasks"), Some((2, 0, 0)));
    assert_eq!(inserts("active_storage_attachments"), Some((1, 0, 0)));
    assert_eq!(inserts("active_storage_blobs"), Some((1, 0, 0)));
    // Nothing outside the subtree is planned at all.
    for t in [
        "users",
        "tags",
        "teams",
        "settings",
        "active_storage_variant_records",
    ] {
        assert_eq!(dry.planned.get(t), None, "{t}: {:?}", dry.planned.get(t));
    }
    let selection = dry
        .selection
        .as_ref()
        .expect("the result says what was selected");
    assert_eq!(selection.mode, "subtree");
    assert_eq!(selection.tables, vec!["projects".to_string()]);
    assert_eq!(selection.roots, vec![json!(1001)]);
    assert_eq!(selection.rows.get("tasks"), Some(&3));
    assert_eq!(selection.left_out.get("tasks"), Some(&3));
    assert_eq!(selection.left_out.get("users"), Some(&3));

    let report = app.restore(&archive, 1, subtree(1001)).unwrap();
    assert_eq!(report.written.get("tasks"), Some(&3));
    assert_eq!(report.written.get("users"), None);
    assert_eq!(report.blobs.written, 1);
    // Exactly the state before the deletion: the subtree is back, the
    // later work (new tag and task, renamed task and user) is still there.
    assert_eq!(app.snapshot(), expected);
    assert_eq!(app.storage_files(), files);
}

#[test]
fn a_subtree_purge_removes_only_rows_that_hang_off_the_roots_today() {
    let app = App::new();
    let archive = app.backup(1).path;
    let conn = app.conn();
    let before = app.snapshot();
    // Under project 1001, after the backup: a task with a time entry (to
    // go), and an edited task (to be restored). Under project 1002: a task
    // (to stay).
    conn.execute_batch(
        "INSERT INTO tasks(id, tenant_id, project_id, title, created_at, updated_at) VALUES (1060, 1, 1001, 'in subtree', 'y', 'y');
         INSERT INTO time_entries(id, tenant_id, task_id, user_id, minutes, created_at, updated_at) VALUES (1060, 1, 1060, 1001, 5, 'y', 'y');
         INSERT INTO tasks(id, tenant_id, project_id, title, created_at, updated_at) VALUES (1061, 1, 1002, 'outside', 'y', 'y');
         UPDATE tasks SET title = 'edited' WHERE id IN (1002, 1003);",
    )
    .unwrap();

    let dry = app
        .restore(
            &archive,
            1,
            with(
                with(subtree(1001), "purge", json!(true)),
                "dry_run",
                json!(true),
            ),
        )
        .unwrap();
    assert_eq!(dry.conflict_count, 0, "{:?}", dry.conflicts);
    assert_eq!(dry.planned["tasks"].purge, 1, "{:?}", dry.planned["tasks"]);
    assert_eq!(dry.planned["tasks"].update, 1, "{:?}", dry.planned["tasks"]);
    assert_eq!(dry.planned["time_entries"].purge, 1);

    let report = app
        .restore(&archive, 1, with(subtree(1001), "purge", json!(true)))
        .unwrap();
    assert_eq!(report.purged.get("tasks"), Some(&1));
    assert_eq!(report.purged.get("time_entries"), Some(&1));
    let title = |id: i64| -> Option<String> {
        conn.query_row("SELECT title FROM tasks WHERE id = ?1", [id], |r| r.get(0))
            .ok()
    };
    assert_eq!(
        title(1060),
        None,
        "a task of the subtree made after the backup is purged"
    );
    assert_eq!(title(1061).as_deref(), Some("outside"));
    assert_eq!(title(1002).as_deref(), Some("Task 2"));
    assert_eq!(
        title(1003).as_deref(),
        Some("edited"),
        "task 1003 is not in the subtree"
    );
    // Back to the backup but for the rows outside the subtree.
    conn.execute_batch(
        "DELETE FROM tasks WHERE id = 1061; UPDATE tasks SET title = 'Task 3' WHERE id = 1003;",
    )
    .unwrap();
    assert_eq!(app.snapshot(), before);
}

#[test]
fn except_a_table_leaves_its_rows_as_they_are_now() {
    let app = App::new();
    let archive = app.backup(1).path;
    let conn = app.conn();
    conn.execute_batch(
        "UPDATE users SET name = 'kept' WHERE id = 1001;
         UPDATE tags SET name = 'to restore' WHERE id = 1001;",
    )
    .unwrap();
    let dry = app
        .restore(&archive, 1, json!({ "except": ["users"], "dry_run": true }))
        .unwrap();
    assert_eq!(dry.planned.get("users"), None);
    assert_eq!(dry.planned["tags"].update, 1);
    let selection = dry.selection.unwrap();
    assert_eq!(selection.mode, "except");
    assert_eq!(selection.left_out.get("users"), Some(&3));

    app.restore(&archive, 1, json!({ "except": ["users"] }))
        .unwrap();
    let name = |sql: &str| -> String { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(name("SELECT name FROM users WHERE id = 1001"), "kept");
    assert_eq!(name("SELECT name FROM tags WHERE id = 1001"), "tag1");
}

#[test]
fn only_a_table_whose_references_find_their_rows_restores_it_and_what_hangs_off_it() {
    let app = App::new();
    let archive = app.backup(1).path;
    let conn = app.conn();
    conn.execute_batch(
        "UPDATE tasks SET title = 'x' WHERE tenant_id = 1;
         UPDATE projects SET name = 'kept' WHERE id = 1001;
         DELETE FROM tags_tasks WHERE task_id = 1002;",
    )
    .unwrap();
    let report = app
        .restore(&archive, 1, json!({ "only": ["tasks"] }))
        .unwrap();
    assert_eq!(report.written.get("tasks"), Some(&6));
    // Join rows follow their tasks.
    assert_eq!(report.written.get("tags_tasks"), Some(&2));
    assert_eq!(report.written.get("projects"), None);
    let one = |sql: &str| -> String { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(one("SELECT name FROM projects WHERE id = 1001"), "kept");
    assert_eq!(one("SELECT title FROM tasks WHERE id = 1004"), "Task 4");
}

#[test]
fn only_a_table_whose_reference_finds_no_row_is_refused_in_dry_run_and_restore() {
    let app = App::new();
    let archive = app.backup(1).path;
    let conn = app.conn();
    conn.execute_batch(
        "DELETE FROM projects WHERE id = 1002; UPDATE tasks SET title = 'x' WHERE id = 1001;",
    )
    .unwrap();
    let before = file_bytes(&app.db);
    let why = "its project_id refers to projects 1002, which is neither selected nor present";

    let dry = app
        .restore(&archive, 1, json!({ "only": ["tasks"], "dry_run": true }))
        .unwrap();
    let listed: Vec<String> = dry
        .conflicts
        .iter()
        .map(|c| format!("{} {} ({})", c.table, c.key, c.reason))
        .collect();
    assert_eq!(dry.conflict_count, 3, "{listed:?}");
    assert!(
        listed.contains(&format!("tasks id=1001 ({why})")),
        "{listed:?}"
    );
    assert_eq!(file_bytes(&app.db), before);

    let err = app
        .restore(&archive, 1, json!({ "only": ["tasks"] }))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(
        err.message().contains(&format!("tasks id=1001 ({why})")),
        "{err}"
    );
    assert_eq!(file_bytes(&app.db), before);

    // With projects selected too, the reference finds its row.
    app.restore(&archive, 1, json!({ "only": ["tasks", "projects"] }))
        .unwrap();
    assert_eq!(
        conn.query_row("SELECT name FROM projects WHERE id = 1002", [], |r| r
            .get::<_, String>(0))
            .unwrap(),
        "Project 2"
    );
}

#[test]
fn a_selection_is_checked_against_the_tenants_data() {
    let app = App::new();
    let archive = app.backup(1).path;
    let message = |extra: serde_json::Value| {
        let err = app.restore(&archive, 1, extra).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Argument, "{err}");
        err.message().to_string()
    };
    assert!(message(json!({ "only": ["tasks"], "except": ["users"] }))
        .contains("only: and except: cannot be combined"));
    assert!(message(json!({ "only": ["schema_migrations"] }))
        .contains("only: \"schema_migrations\" is not a table of the tenant's data"));
    assert!(message(json!({ "only": { "projects": [1999] } }))
        .contains("only: projects 1999 is not in the archive"));
    assert!(
        message(json!({ "only": { "tags_tasks": [1] } })).contains("tags_tasks has no primary key")
    );
    assert!(message(json!({ "except": ["tenants"] })).contains("is the tenants table"));
}

/// An edited archive cannot use a selection to reach another tenant: rows
/// that follow the selection are checked like any restored row.
#[test]
fn rows_following_a_selection_cannot_reach_another_tenant() {
    let app = App::new();
    let path = app.backup(1).path;
    let mut edited = EditableArchive::open(&path);
    // A join row of a task in the subtree, to tenant 2's tag.
    let mut join = edited.rows("tags_tasks")[0].clone();
    join["tag_id"] = json!(2001);
    join["task_id"] = json!(1002);
    let at = edited
        .lines
        .iter()
        .position(|l| l["table"] == "tags_tasks")
        .unwrap();
    edited
        .lines
        .insert(at, json!({ "table": "tags_tasks", "row": join }));
    // A task of the subtree with tenant 2's key.
    edited.edit_rows("tasks", |row| {
        if row["id"] == json!(1004) {
            row["id"] = json!(2004);
        }
    });
    let archive = app.dir.path().join("edited.tar.gz");
    edited.write(&archive);
    app.conn().execute_batch(DELETE_PROJECT_1001).unwrap();
    let before = file_bytes(&app.db);
    let files = app.storage_files();

    let dry = app
        .restore(&archive, 1, with(subtree(1001), "dry_run", json!(true)))
        .unwrap();
    let listed: Vec<String> = dry
        .conflicts
        .iter()
        .map(|c| format!("{} {} ({})", c.table, c.key, c.reason))
        .collect();
    assert!(
        listed.contains(&"tasks id=2004 (the key belongs to another tenant)".to_string()),
        "{listed:?}"
    );
    assert!(
        listed
            .iter()
            .any(|c| c.starts_with("tags_tasks (tag_id=2001, task_id=1002)")
                && c.contains("belongs to another tenant")),
        "{listed:?}"
    );
    let err = app.restore(&archive, 1, subtree(1001)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.message().contains("tasks id=2004"), "{err}");
    assert_eq!(file_bytes(&app.db), before);
    assert_eq!(app.storage_files(), files);
}

/// The post-condition still watches a partial restore: a subtree purge
/// whose deletion cascades onto another tenant's row is refused.
#[test]
fn a_subtree_purge_cascading_onto_another_tenant_is_refused() {
    let db = SmallDb::new(
        "CREATE TABLE tenants(id INTEGER PRIMARY KEY, name TEXT);
         CREATE TABLE projects(id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants, name TEXT);
         CREATE TABLE tasks(id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants,
                            project_id INTEGER REFERENCES projects, title TEXT);
         CREATE TABLE notes(id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants,
                            task_id INTEGER REFERENCES tasks ON DELETE CASCADE);
         INSERT INTO tenants VALUES (1, 'one'), (2, 'two');
         INSERT INTO projects VALUES (5, 1, 'p5'), (6, 1, 'p6');
         INSERT INTO tasks VALUES (10, 1, 5, 'a'), (11, 1, 6, 'b');",
    );
    let archive = db.backup(1);
    db.conn.pragma_update(None, "foreign_keys", true).unwrap();
    db.conn
        .execute_batch(
            "INSERT INTO tasks VALUES (12, 1, 5, 'after the backup');
             INSERT INTO notes VALUES (1, 2, 12);",
        )
        .unwrap();
    let before = file_bytes(&db.db);
    let extra = json!({ "only": { "projects": [5] }, "purge": true });

    let dry = db
        .restore(&archive, 1, with(extra.clone(), "dry_run", json!(true)))
        .unwrap();
    let listed: Vec<String> = dry
        .conflicts
        .iter()
        .map(|c| format!("{} {} ({})", c.table, c.key, c.reason))
        .collect();
    assert!(
        listed.iter().any(|c| c.starts_with("notes id=1")),
        "{listed:?}"
    );
    let err = db.restore(&archive, 1, extra).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.message().contains("notes id=1"), "{err}");
    assert_eq!(file_bytes(&db.db), before);

    // Without tenant 2's note, the same purge stays within the subtree.
    db.conn.execute_batch("DELETE FROM notes").unwrap();
    let report = db
        .restore(
            &archive,
            1,
            json!({ "only": { "projects": [5] }, "purge": true }),
        )
        .unwrap();
    assert_eq!(report.purged.get("tasks"), Some(&1));
    let tasks: Vec<i64> = db
        .conn
        .prepare("SELECT id FROM tasks ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(tasks, vec![10, 11]);
}

/// Roots of other key types, in the archive's JSON forms: text keys as
/// strings, BLOB keys as `{"$base64": …}`, keys over several columns as
/// arrays in key order.
#[test]
fn subtree_roots_may_be_text_blob_or_composite_keys() {
    let db = SmallDb::new(
        "CREATE TABLE tenants(id INTEGER PRIMARY KEY, name TEXT);
         CREATE TABLE folders(id TEXT PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants, name TEXT);
         CREATE TABLE files(id BLOB PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants,
                            folder_id TEXT REFERENCES folders, name TEXT);
         CREATE TABLE versions(file_id BLOB NOT NULL REFERENCES files, n INTEGER NOT NULL,
                               tenant_id INTEGER NOT NULL REFERENCES tenants, body TEXT, PRIMARY KEY(file_id, n));
         INSERT INTO tenants VALUES (1, 'one');
         INSERT INTO folders VALUES ('f1', 1, 'one'), ('f2', 1, 'two');
         INSERT INTO files VALUES (x'01', 1, 'f1', 'a'), (x'02', 1, 'f2', 'b');
         INSERT INTO versions VALUES (x'01', 1, 1, 'a1'), (x'01', 2, 1, 'a2'), (x'02', 1, 1, 'b1');",
    );
    let archive = db.backup(1);
    let full = snapshot(&db.conn);
    db.conn
        .execute_batch(
            "DELETE FROM versions WHERE file_id = x'01'; DELETE FROM files WHERE folder_id = 'f1';
             DELETE FROM folders WHERE id = 'f1'; UPDATE versions SET body = 'later' WHERE file_id = x'02';",
        )
        .unwrap();
    let report = db
        .restore(&archive, 1, json!({ "only": { "folders": ["f1"] } }))
        .unwrap();
    assert_eq!(report.written.get("versions"), Some(&2));
    let body = |sql: &str| -> String { db.conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(
        body("SELECT body FROM versions WHERE file_id = x'02'"),
        "later"
    );

    db.conn
        .execute_batch("UPDATE versions SET body = 'later' WHERE file_id = x'01'")
        .unwrap();
    let report = db
        .restore(
            &archive,
            1,
            json!({ "only": { "versions": [[{ "$base64": "AQ==" }, 2]] } }),
        )
        .unwrap();
    assert_eq!(report.written.get("versions"), Some(&1));
    assert_eq!(
        body("SELECT body FROM versions WHERE file_id = x'01' AND n = 2"),
        "a2"
    );
    assert_eq!(
        body("SELECT body FROM versions WHERE file_id = x'01' AND n = 1"),
        "later"
    );

    db.restore(
        &archive,
        1,
        json!({ "only": { "files": [{ "$base64": "AQ==" }, { "$base64": "Ag==" }] } }),
    )
    .unwrap();
    assert_eq!(snapshot(&db.conn), full);

    let err = db
        .restore(
            &archive,
            1,
            json!({ "only": { "versions": [{ "$base64": "AQ==" }] } }),
        )
        .unwrap_err();
    assert!(
        err.message().contains(
            "versions: key {\"$base64\":\"AQ==\"} does not fit its primary key (file_id, n)"
        ),
        "{err}"
    );
}

#[test]
fn a_purge_touches_only_the_selected_tables_and_what_hangs_off_them() {
    let app = App::new();
    let archive = app.backup(1).path;
    let conn = app.conn();
    let before = app.snapshot();
    // After the backup: a tag on a task (join row), a user, a task.
    conn.execute_batch(
        "INSERT INTO tags(id, tenant_id, name, created_at, updated_at) VALUES (1070, 1, 'later', 'y', 'y');
         INSERT INTO tags_tasks(tag_id, task_id) VALUES (1070, 1001);
         INSERT INTO users(id, tenant_id, email, created_at, updated_at) VALUES (1070, 1, 'later@t1', 'y', 'y');
         INSERT INTO tasks(id, tenant_id, project_id, title, created_at, updated_at) VALUES (1070, 1, 1001, 'later', 'y', 'y');",
    )
    .unwrap();

    let report = app
        .restore(
            &archive,
            1,
            json!({ "except": ["users", "tasks"], "purge": true }),
        )
        .unwrap();
    assert_eq!(report.purged.get("tags"), Some(&1), "{:?}", report.purged);
    assert_eq!(
        report.purged.get("tags_tasks"),
        Some(&1),
        "{:?}",
        report.purged
    );
    assert_eq!(report.purged.get("users"), None);
    assert_eq!(report.purged.get("tasks"), None);
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(count("SELECT count(*) FROM tags WHERE id = 1070"), 0);
    assert_eq!(count("SELECT count(*) FROM users WHERE id = 1070"), 1);
    assert_eq!(count("SELECT count(*) FROM tasks WHERE id = 1070"), 1);

    conn.execute_batch("DELETE FROM users WHERE id = 1070; DELETE FROM tasks WHERE id = 1070;")
        .unwrap();
    assert_eq!(app.snapshot(), before);
}

/// A row of the archive's subtree that today hangs elsewhere (a task moved
/// to another project since the backup) is restored into the subtree, and
/// does not hide from the purge a row that does hang off the roots.
#[test]
fn a_subtree_purge_counts_rows_moved_out_of_the_subtree_right() {
    let app = App::new();
    let archive = app.backup(1).path;
    let conn = app.conn();
    conn.execute_batch(
        "UPDATE tasks SET project_id = 1002 WHERE id = 1002;
         INSERT INTO tasks(id, tenant_id, project_id, title, created_at, updated_at) VALUES (1080, 1, 1001, 'later', 'y', 'y');",
    )
    .unwrap();
    let extra = json!({ "only": { "projects": [1001] }, "purge": true });
    let dry = app
        .restore(&archive, 1, with(extra.clone(), "dry_run", json!(true)))
        .unwrap();
    assert_eq!(dry.planned["tasks"].purge, 1, "{:?}", dry.planned["tasks"]);
    let report = app.restore(&archive, 1, extra).unwrap();
    assert_eq!(report.purged.get("tasks"), Some(&1));
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(count("SELECT count(*) FROM tasks WHERE id = 1080"), 0);
    assert_eq!(count("SELECT project_id FROM tasks WHERE id = 1002"), 1001);
}

/// `restore: false` with a subtree: the purge alone, within the subtree
/// as it hangs off the roots in the database today.
#[test]
fn a_purge_alone_of_a_subtree_deletes_what_hangs_off_the_roots() {
    let app = App::new();
    let archive = app.backup(1).path;
    let conn = app.conn();
    let extra = json!({ "only": { "projects": [1001] }, "purge": true, "restore": false });
    let report = app.restore(&archive, 1, extra).unwrap();
    assert_eq!(report.purged.get("projects"), Some(&1));
    assert_eq!(report.purged.get("tasks"), Some(&3));
    assert_eq!(report.purged.get("time_entries"), Some(&3));
    assert_eq!(report.purged.get("tags_tasks"), Some(&2));
    assert_eq!(report.purged.get("comments"), Some(&1));
    assert_eq!(report.purged.get("active_storage_attachments"), Some(&1));
    assert_eq!(report.purged.get("active_storage_blobs"), Some(&1));
    assert_eq!(report.purged.get("users"), None);
    assert_eq!(report.blobs.removed, 1);
    assert!(!blob_path(&app.storage, &blob_key(1, 2)).exists());
    assert!(blob_path(&app.storage, &blob_key(1, 1)).exists());
    let ids = |sql: &str| -> Vec<i64> {
        conn.prepare(sql)
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    assert_eq!(
        ids("SELECT id FROM tasks WHERE tenant_id = 1 ORDER BY id"),
        vec![1001, 1003, 1005]
    );
    assert_eq!(
        ids("SELECT id FROM projects WHERE tenant_id = 1"),
        vec![1002]
    );
}

/// Derived rows follow rows already present: with tasks unselected, the
/// join rows and attachments (blobs, variant records, files) of the tasks
/// still in the database come back; those of a task that is gone stay out.
#[test]
fn derived_rows_of_present_rows_come_back_and_those_of_absent_rows_stay_out() {
    let app = App::new();
    let archive = app.backup(1).path;
    let conn = app.conn();
    conn.execute_batch(
        "DELETE FROM tags_tasks WHERE task_id BETWEEN 1001 AND 1006;
         DELETE FROM active_storage_attachments WHERE id IN (1001, 1002, 1009);
         DELETE FROM active_storage_variant_records WHERE id = 1001;
         DELETE FROM active_storage_blobs WHERE id IN (1001, 1002, 1009);
         DELETE FROM time_entries WHERE id = 1002;
         DELETE FROM tasks WHERE id = 1002;",
    )
    .unwrap();
    for n in [1, 2, 9] {
        std::fs::remove_file(blob_path(&app.storage, &blob_key(1, n))).unwrap();
    }
    let before = file_bytes(&app.db);
    let files = app.storage_files();
    let except = json!({ "except": ["tasks", "time_entries"] });
    let expected: Vec<(&str, u64)> = vec![
        ("active_storage_attachments", 2),
        ("active_storage_blobs", 2),
        ("active_storage_variant_records", 1),
        ("tags_tasks", 2),
    ];

    let dry = app
        .restore(&archive, 1, with(except.clone(), "dry_run", json!(true)))
        .unwrap();
    assert_eq!(dry.conflict_count, 0, "{:?}", dry.conflicts);
    let inserts: Vec<(&str, u64)> = dry
        .planned
        .iter()
        .filter(|(_, c)| c.insert > 0)
        .map(|(t, c)| (t.as_str(), c.insert))
        .collect();
    assert_eq!(inserts, expected);
    assert!(
        dry.planned.values().all(|c| c.update == 0),
        "{:?}",
        dry.planned
    );
    let selection = dry.selection.unwrap();
    assert_eq!(selection.left_out.get("tags_tasks"), Some(&2));
    assert_eq!(
        selection.left_out.get("active_storage_attachments"),
        Some(&1)
    );
    assert_eq!(selection.left_out.get("active_storage_blobs"), Some(&1));
    assert_eq!(file_bytes(&app.db), before);
    assert_eq!(app.storage_files(), files);

    let report = app.restore(&archive, 1, except).unwrap();
    let written: Vec<(&str, u64)> = report
        .written
        .iter()
        .map(|(t, n)| (t.as_str(), *n))
        .collect();
    assert_eq!(written, expected);
    assert_eq!(report.blobs.written, 2);
    let pairs: Vec<(i64, i64)> = conn
        .prepare("SELECT tag_id, task_id FROM tags_tasks WHERE task_id BETWEEN 1001 AND 1006 ORDER BY 1, 2")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(pairs, vec![(1001, 1001), (1002, 1003)]);
    let ids = |sql: &str| -> Vec<i64> {
        conn.prepare(sql)
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    assert_eq!(
        ids("SELECT id FROM active_storage_attachments WHERE id BETWEEN 1001 AND 1009 ORDER BY id"),
        vec![1001, 1009]
    );
    assert_eq!(ids("SELECT count(*) FROM tasks WHERE id = 1002"), vec![0]);
    for (n, present) in [(1, true), (2, false), (9, true)] {
        let path = blob_path(&app.storage, &blob_key(1, n));
        assert_eq!(path.exists(), present, "{}", path.display());
    }
}
