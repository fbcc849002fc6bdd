//! A restored row may refer to an id that no row holds. It must not become
//! a link into whatever row SQLite hands that id to next, maybe another
//! tenant's: AUTOINCREMENT tables get their sequence raised past it, other
//! rowid tables refuse a reference above their largest id.

mod common;

use common::*;
use serde_json::json;
use tenant_kit::ErrorKind;

/// Tenant 1's comment aims at task 57, which does not exist (deleted, or
/// an edited archive): backed up, then the comment is deleted.
fn app(tasks_key: &str) -> (SmallDb, std::path::PathBuf) {
    let db = SmallDb::new(&format!(
        "CREATE TABLE tenants(id INTEGER PRIMARY KEY, name TEXT);
         CREATE TABLE tasks(id {tasks_key}, tenant_id INTEGER NOT NULL REFERENCES tenants, title TEXT);
         CREATE TABLE comments(id INTEGER PRIMARY KEY AUTOINCREMENT, tenant_id INTEGER NOT NULL REFERENCES tenants,
                               task_id INTEGER, body TEXT);
         INSERT INTO tenants VALUES (1, 'one'), (2, 'two');
         INSERT INTO tasks(id, tenant_id, title) VALUES (1, 1, 'a'), (2, 2, 'b');
         INSERT INTO comments(id, tenant_id, task_id, body) VALUES (1, 1, 1, 'fine'), (2, 1, 57, 'aimed');"
    ));
    let archive = db.backup(1);
    (db, archive)
}

/// The id SQLite hands tenant 2's next row of `table`.
fn next_id(db: &SmallDb, table: &str) -> i64 {
    db.conn
        .query_row(
            &format!("INSERT INTO {table}(tenant_id) VALUES (2) RETURNING id"),
            [],
            |r| r.get(0),
        )
        .unwrap()
}

fn next_task_id(db: &SmallDb) -> i64 {
    next_id(db, "tasks")
}

#[test]
fn an_autoincrement_table_never_hands_out_an_id_a_restored_row_refers_to() {
    let (db, archive) = app("INTEGER PRIMARY KEY AUTOINCREMENT");
    db.conn
        .execute_batch("DELETE FROM comments WHERE id = 2")
        .unwrap();
    let report = db.restore(&archive, 1, json!({})).unwrap();
    assert_eq!(report.restored["comments"], 2);
    assert!(
        next_task_id(&db) > 57,
        "tenant 2's next task must not take id 57"
    );
}

#[test]
fn a_reference_above_a_plain_rowid_tables_largest_id_is_refused() {
    let (db, archive) = app("INTEGER PRIMARY KEY");
    db.conn
        .execute_batch("DELETE FROM comments WHERE id = 2")
        .unwrap();
    let before = file_bytes(&db.db);
    let dry = db.restore(&archive, 1, json!({"dry_run": true})).unwrap();
    assert_eq!(dry.conflict_count, 1, "{:?}", dry.conflicts);
    assert_eq!(dry.conflicts[0].key, "id=2");
    assert!(
        dry.conflicts[0]
            .reason
            .contains("task_id refers to tasks ids above 2"),
        "{:?}",
        dry.conflicts
    );
    let err = db.restore(&archive, 1, json!({})).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.message().contains("comments id=2"), "{err}");
    assert_eq!(file_bytes(&db.db), before);
    assert_eq!(next_task_id(&db), 3);
}

#[test]
fn a_dangling_reference_left_as_it_is_does_not_stop_a_restore() {
    // The round trip of an unchanged tenant writes nothing and asks nothing.
    let (db, archive) = app("INTEGER PRIMARY KEY");
    let report = db.restore(&archive, 1, json!({"purge": true})).unwrap();
    assert_eq!(report.conflict_count, 0);
    assert_eq!(report.written.get("comments"), None);
}

/// A polymorphic reference raises the sequence of the table its type
/// column names, by the ids aimed at through that class only.
#[test]
fn a_polymorphic_reference_reserves_ids_of_its_own_class_only() {
    let db = SmallDb::new(
        "CREATE TABLE tenants(id INTEGER PRIMARY KEY, name TEXT);
         CREATE TABLE tasks(id INTEGER PRIMARY KEY AUTOINCREMENT, tenant_id INTEGER NOT NULL REFERENCES tenants, title TEXT);
         CREATE TABLE projects(id INTEGER PRIMARY KEY AUTOINCREMENT, tenant_id INTEGER NOT NULL REFERENCES tenants, name TEXT);
         CREATE TABLE notes(id INTEGER PRIMARY KEY AUTOINCREMENT, tenant_id INTEGER NOT NULL REFERENCES tenants,
                            notable_type TEXT, notable_id INTEGER, body TEXT);
         INSERT INTO tenants VALUES (1, 'one'), (2, 'two');
         INSERT INTO tasks(id, tenant_id, title) VALUES (1, 1, 'a');
         INSERT INTO projects(id, tenant_id, name) VALUES (1, 1, 'p');
         INSERT INTO notes(tenant_id, notable_type, notable_id, body)
           VALUES (1, 'Task', 57, 'aims at task 57'), (1, 'Project', 9, 'aims at project 9'),
                  (1, 'Task', 1, 'fine'), (1, 'Project', 1, 'fine');",
    );
    let archive = db.backup(1);
    db.conn.execute_batch("DELETE FROM notes").unwrap();
    let report = db.restore(&archive, 1, json!({})).unwrap();
    assert_eq!(report.restored["notes"], 4);
    assert_eq!(next_id(&db, "tasks"), 58, "task ids up to 57 are reserved");
    assert_eq!(
        next_id(&db, "projects"),
        10,
        "project ids up to 9 are reserved, not up to 57"
    );
}

/// A partial restore reserves only the ids its selected rows refer to: a
/// row it leaves out raises no sequence.
#[test]
fn a_row_a_partial_restore_leaves_out_reserves_nothing() {
    let db = SmallDb::new(
        "CREATE TABLE tenants(id INTEGER PRIMARY KEY, name TEXT);
         CREATE TABLE projects(id INTEGER PRIMARY KEY AUTOINCREMENT, tenant_id INTEGER NOT NULL REFERENCES tenants, name TEXT);
         CREATE TABLE tasks(id INTEGER PRIMARY KEY AUTOINCREMENT, tenant_id INTEGER NOT NULL REFERENCES tenants, title TEXT);
         CREATE TABLE comments(id INTEGER PRIMARY KEY AUTOINCREMENT, tenant_id INTEGER NOT NULL REFERENCES tenants,
                               project_id INTEGER REFERENCES projects, task_id INTEGER, body TEXT);
         INSERT INTO tenants VALUES (1, 'one'), (2, 'two');
         INSERT INTO projects(id, tenant_id, name) VALUES (1, 1, 'selected'), (2, 1, 'left out');
         INSERT INTO tasks(id, tenant_id, title) VALUES (1, 1, 'a');
         INSERT INTO comments(tenant_id, project_id, task_id, body)
           VALUES (1, 1, 1, 'in the selection'), (1, 2, 57, 'aims at task 57, left out');",
    );
    let archive = db.backup(1);
    db.conn
        .execute_batch("DELETE FROM comments WHERE project_id = 1")
        .unwrap();
    let report = db
        .restore(&archive, 1, json!({ "only": { "projects": [1] } }))
        .unwrap();
    assert_eq!(report.restored["comments"], 1);
    assert_eq!(
        next_task_id(&db),
        2,
        "the left-out comment's task 57 must not be reserved"
    );
}
