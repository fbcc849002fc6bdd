//! The restore's post-condition: whatever the database does on the
//! restore's behalf — foreign-key actions, triggers, `REPLACE` conflict
//! clauses — a row of another tenant, or of a table that is not tenant
//! data, is never changed. Each shape is an ordinary schema feature of a
//! real app, with a genuine (unedited) archive: the dry run must predict
//! the refusal, and the refused restore must leave the database file
//! byte-identical.

mod common;

use common::*;
use serde_json::json;
use tenant_kit::ErrorKind;

const BASE: &str = "
    CREATE TABLE tenants(id INTEGER PRIMARY KEY, name TEXT, tasks_count INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE tasks(id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants,
                       title TEXT, token TEXT, code TEXT UNIQUE);
    INSERT INTO tenants(id, name) VALUES (1, 'one'), (2, 'two');
    INSERT INTO tasks VALUES (10, 1, 'a', 't10', 'c10'), (11, 1, 'b', 't11', 'c11'),
                             (20, 2, 'c', 't20', 'c20');
";

/// The app's database, tenant 1's archive, and what happens after.
struct Case {
    db: SmallDb,
    archive: std::path::PathBuf,
}

impl Case {
    /// `schema` over [`BASE`], tenant 1 backed up, then `after_backup` run
    /// (the app's work since the backup).
    fn new(schema: &str, after_backup: &str) -> Case {
        let db = SmallDb::new(&format!("{BASE}{schema}"));
        let archive = db.backup(1);
        // As Rails runs it: foreign keys enforced, their actions applied.
        db.conn.pragma_update(None, "foreign_keys", true).unwrap();
        db.conn.execute_batch(after_backup).unwrap();
        Case { db, archive }
    }

    /// A dry run lists a conflict naming `row` and why; the restore is
    /// refused with the same; the database file is as it was.
    fn refused(&self, extra: serde_json::Value, row: &str, why: &str) {
        let before = file_bytes(&self.db.db);
        let mut dry = extra.clone();
        dry["dry_run"] = json!(true);
        let report = self.db.restore(&self.archive, 1, dry).unwrap();
        let listed: Vec<String> = report
            .conflicts
            .iter()
            .map(|c| format!("{} {} ({})", c.table, c.key, c.reason))
            .collect();
        assert!(
            listed.iter().any(|c| c.contains(row) && c.contains(why)),
            "dry run should list {row} ({why}): {listed:?}"
        );
        assert_eq!(
            file_bytes(&self.db.db),
            before,
            "the dry run changed the database"
        );

        let err = self.db.restore(&self.archive, 1, extra).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        assert!(err.message().contains(row), "{err}");
        assert!(err.message().contains(why), "{err}");
        assert!(err.message().contains("nothing was changed"), "{err}");
        assert_eq!(
            file_bytes(&self.db.db),
            before,
            "a refused restore changed the database"
        );
    }
}

#[test]
fn a_purge_cascading_onto_another_tenants_rows_is_refused() {
    // Tenant 2's note on a task tenant 1 created after its backup: the
    // purge deletes that task, and SQLite's ON DELETE CASCADE would delete
    // tenant 2's note with it.
    let case = Case::new(
        "CREATE TABLE notes(id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants,
                            task_id INTEGER REFERENCES tasks ON DELETE CASCADE, body TEXT);",
        "INSERT INTO tasks VALUES (12, 1, 'new', 't12', 'c12');
         INSERT INTO notes VALUES (200, 2, 12, 'theirs');",
    );
    case.refused(json!({"purge": true}), "notes id=200", "tenant 2");
}

#[test]
fn a_purge_setting_another_tenants_reference_to_null_is_refused() {
    let case = Case::new(
        "CREATE TABLE notes(id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants,
                            task_id INTEGER REFERENCES tasks ON DELETE SET NULL, body TEXT);",
        "INSERT INTO tasks VALUES (12, 1, 'new', 't12', 'c12');
         INSERT INTO notes VALUES (200, 2, 12, 'theirs');",
    );
    case.refused(json!({"purge": true}), "notes id=200", "tenant 2");
}

#[test]
fn an_update_cascading_onto_another_tenants_rows_is_refused() {
    // Tenant 2 links to tenant 1's task by its code; the app renamed the
    // code since the backup (the link followed). Restoring the old code
    // would rewrite tenant 2's link through ON UPDATE CASCADE.
    let case = Case::new(
        "CREATE TABLE links(id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants,
                            task_code TEXT REFERENCES tasks(code) ON UPDATE CASCADE);
         INSERT INTO links VALUES (200, 2, 'c10');",
        "UPDATE tasks SET code = 'renamed' WHERE id = 10;",
    );
    case.refused(json!({}), "links id=200", "tenant 2");
}

#[test]
fn a_trigger_deleting_another_tenants_row_is_refused() {
    // An app trigger that cleans up by id, not by tenant.
    let case = Case::new(
        "CREATE TABLE comments(id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants, body TEXT);
         CREATE TRIGGER tasks_cleanup AFTER DELETE ON tasks BEGIN
           DELETE FROM comments WHERE id = old.id;
         END;",
        "INSERT INTO tasks VALUES (12, 1, 'new', 't12', 'c12');
         INSERT INTO comments VALUES (12, 2, 'theirs');",
    );
    case.refused(json!({"purge": true}), "comments id=12", "tenant 2");
}

#[test]
fn a_replace_conflict_clause_deleting_another_tenants_row_is_refused() {
    // Tenant 2 now holds the token tenant 1's archived task had: inserting
    // that task back would make SQLite delete tenant 2's task.
    let case = Case::new(
        "CREATE UNIQUE INDEX tasks_token ON tasks(token);
         CREATE TABLE tokens(id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants,
                             value TEXT UNIQUE ON CONFLICT REPLACE);
         INSERT INTO tokens VALUES (1, 1, 'secret-1');",
        "DELETE FROM tokens WHERE id = 1;
         INSERT INTO tokens VALUES (2, 2, 'secret-1');",
    );
    case.refused(json!({}), "tokens id=2", "tenant 2");
}

#[test]
fn a_trigger_writing_a_table_that_is_not_tenant_data_is_refused() {
    let case = Case::new(
        "CREATE TABLE audit_log(id INTEGER PRIMARY KEY, message TEXT);
         CREATE TRIGGER tasks_audit AFTER INSERT ON tasks BEGIN
           INSERT INTO audit_log(message) VALUES ('task ' || new.id);
         END;",
        "DELETE FROM tasks WHERE id = 11;",
    );
    case.refused(json!({}), "audit_log", "not tenant data");
}

#[test]
fn the_database_may_change_the_tenants_own_rows_and_search_index() {
    // The same features aimed at the tenant's own rows are fine: a counter
    // on its tenants row, a cascade onto its own notes, an FTS5 index kept
    // by triggers.
    let case = Case::new(
        "CREATE TABLE notes(id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants,
                            task_id INTEGER REFERENCES tasks ON DELETE CASCADE, body TEXT);
         CREATE VIRTUAL TABLE tasks_search USING fts5(title, content='tasks', content_rowid='id');
         CREATE TRIGGER tasks_ai AFTER INSERT ON tasks BEGIN
           INSERT INTO tasks_search(rowid, title) VALUES (new.id, new.title);
           UPDATE tenants SET tasks_count = tasks_count + 1 WHERE id = new.tenant_id;
         END;
         CREATE TRIGGER tasks_ad AFTER DELETE ON tasks BEGIN
           INSERT INTO tasks_search(tasks_search, rowid, title) VALUES ('delete', old.id, old.title);
         END;
         INSERT INTO tasks_search(tasks_search) VALUES ('rebuild');",
        "INSERT INTO tasks VALUES (12, 1, 'new', 't12', 'c12');
         INSERT INTO notes VALUES (100, 1, 12, 'ours');
         DELETE FROM tasks WHERE id = 11;",
    );
    let dry = case
        .db
        .restore(&case.archive, 1, json!({"purge": true, "dry_run": true}))
        .unwrap();
    assert!(dry.conflicts.is_empty(), "{:?}", dry.conflicts);
    case.db
        .restore(&case.archive, 1, json!({"purge": true}))
        .unwrap();
    let ids: Vec<i64> = case
        .db
        .conn
        .prepare("SELECT id FROM tasks WHERE tenant_id = 1 ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(ids, vec![10, 11]);
    let found: i64 = case
        .db
        .conn
        .query_row(
            "SELECT count(*) FROM tasks_search WHERE tasks_search MATCH 'b'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(found, 1, "the restored task is in the search index");
}

/// Rows two tenants' data both reach — a join row between tenant 1's tag
/// and tenant 2's task, the variant of a blob both attach — are left
/// exactly as they are by a restore of either tenant's backup: the round
/// trip into the same database is planned as unchanged and changes
/// nothing.
#[test]
fn rows_two_tenants_reach_are_left_as_they_are() {
    let app = App::new();
    app.conn()
        .execute_batch(
            "INSERT INTO tags_tasks(tag_id, task_id) VALUES (1001, 2003), (2002, 1004);
             INSERT INTO active_storage_attachments(id, name, record_type, record_id, blob_id, created_at)
                 VALUES (2999, 'files', 'Task', 2001, 1001, 'x');",
        )
        .unwrap();
    let before = app.snapshot();
    for tenant in [1, 2] {
        let archive = app.backup(tenant).path;
        let dry = app
            .restore(&archive, tenant, json!({"purge": true, "dry_run": true}))
            .unwrap();
        assert_eq!(
            dry.conflict_count, 0,
            "tenant {tenant}: {:?}",
            dry.conflicts
        );
        for (table, counts) in &dry.planned {
            assert_eq!(
                (counts.insert, counts.update, counts.purge),
                (0, 0, 0),
                "tenant {tenant}, {table}: {counts:?}"
            );
        }
        app.restore(&archive, tenant, json!({"purge": true}))
            .unwrap_or_else(|e| panic!("tenant {tenant}: {e}"));
        assert_eq!(app.snapshot(), before, "tenant {tenant}");
    }
}

/// A row whose tenant column is NULL is shared by every tenant: an archive
/// row with its key must not take it over. The plan refuses it as the
/// post-condition would.
#[test]
fn a_row_of_no_tenant_is_not_taken_over() {
    let case = Case::new(
        "CREATE TABLE labels(id INTEGER PRIMARY KEY, tenant_id INTEGER REFERENCES tenants, name TEXT);
         INSERT INTO labels VALUES (1, 1, 'mine');",
        "UPDATE labels SET tenant_id = NULL, name = 'everyone''s' WHERE id = 1;",
    );
    case.refused(json!({}), "labels id=1", "another tenant");
}
