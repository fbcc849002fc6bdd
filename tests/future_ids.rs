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

fn next_task_id(db: &SmallDb) -> i64 {
    db.conn
        .query_row(
            "INSERT INTO tasks(tenant_id, title) VALUES (2, 'theirs') RETURNING id",
            [],
            |r| r.get(0),
        )
        .unwrap()
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
