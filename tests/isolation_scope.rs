//! Which rows are a tenant's, where references meet shapes the sample app
//! does not have: polymorphic references to ActiveStorage blobs (previews,
//! comments on a file), class names Rails resolves in more than one
//! spelling, references over several columns, the tenants row's own
//! references, and manifests with absurdly long lists.

mod common;

use common::*;
use rusqlite::Connection;
use serde_json::json;
use std::collections::BTreeSet;
use tenant_kit::ErrorKind;

fn attach(conn: &Connection, id: i64, name: &str, record_type: &str, record: i64, blob: i64) {
    conn.execute(
        "INSERT INTO active_storage_attachments(id, name, record_type, record_id, blob_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5, 'x')",
        rusqlite::params![id, name, record_type, record, blob],
    )
    .unwrap();
}

fn comment(conn: &Connection, id: i64, tenant: i64, commentable_type: &str, commentable: i64) {
    conn.execute(
        "INSERT INTO comments(id, tenant_id, commentable_type, commentable_id, body, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, 'hi', 'x', 'x')",
        rusqlite::params![id, tenant, commentable_type, commentable],
    )
    .unwrap();
}

fn blob_ids(archive: &EditableArchive) -> BTreeSet<i64> {
    archive
        .rows("active_storage_blobs")
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

/// Rails attaches a preview to its blob (`record_type =
/// 'ActiveStorage::Blob'`), and a comment may be on a file: once any
/// tenant has one, attachments' `record_id` and comments'
/// `commentable_id` reference blobs, but only for rows of that type. A
/// blob whose id equals a task id of tenant 2 is not tenant 2's.
#[test]
fn a_blob_is_reached_through_a_polymorphic_reference_only_of_its_type() {
    let app = App::new();
    let conn = app.conn();
    // Tenant 1: a preview of its blob 1001, and a comment on that blob.
    app.write_blob(&conn, 1050, &blob_key(1, 50), b"preview");
    attach(
        &conn,
        1050,
        "preview_image",
        "ActiveStorage::Blob",
        1001,
        1050,
    );
    comment(&conn, 1050, 1, "ActiveStorage::Blob", 1001);
    // Tenant 3's blobs 2003 and 2005 have the ids of tenant 2's tasks 2003
    // and 2005, which tenant 2 attaches a file to and comments on.
    app.write_blob(&conn, 2003, &blob_key(3, 3), b"tenant 3's secret");
    attach(&conn, 3050, "files", "Task", 3003, 2003);
    app.write_blob(&conn, 2005, &blob_key(3, 5), b"tenant 3's other secret");
    attach(&conn, 3051, "files", "Task", 3004, 2005);
    attach(&conn, 2050, "files", "Task", 2003, 2002);
    comment(&conn, 2050, 2, "Task", 2005);
    // Tenant 2 comments on its own file too.
    comment(&conn, 2052, 2, "ActiveStorage::Blob", 2001);
    // Blob 2004 is nobody's (unattached); tenant 2 has a task 2004.
    app.write_blob(&conn, 2004, &blob_key(9, 4), b"nobody's");
    attach(&conn, 2051, "files", "Task", 2004, 2002);

    let backup = app.backup(2);
    let archive = EditableArchive::open(&backup.path);
    assert_eq!(blob_ids(&archive), BTreeSet::from([2001, 2002, 2009]));
    let keys: BTreeSet<String> = archive.blobs.iter().map(|(k, _)| k.clone()).collect();
    let expected: BTreeSet<String> = [blob_key(2, 1), blob_key(2, 2), blob_key(2, 9)].into();
    assert_eq!(keys, expected, "files of other tenants in the archive");

    // Tenant 1's preview and comment on its own blob keep it tenant 1's.
    let one = EditableArchive::open(&app.backup(1).path);
    assert!(blob_ids(&one).contains(&1001));

    // A purge restore of tenant 2 leaves the blob nobody attaches, and its
    // file, alone.
    let report = app
        .restore(&backup.path, 2, json!({"purge": true}))
        .unwrap();
    assert_eq!(report.conflict_count, 0);
    let left: i64 = conn
        .query_row(
            "SELECT count(*) FROM active_storage_blobs WHERE id IN (2003, 2004, 2005)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 3, "a purge of tenant 2 deleted blobs it does not own");
    assert!(blob_path(&app.storage, &blob_key(9, 4)).exists());
    assert!(blob_path(&app.storage, &blob_key(3, 3)).exists());
}

/// Restore `archive` (dry run, then for real) into tenant 1 of `app` and
/// expect exactly one conflict, on `key`, whose reason contains `reason`.
fn assert_one_conflict(app: &App, archive: &EditableArchive, key: &str, reason: &str) {
    let path = app.dir.path().join("edited.tar.gz");
    archive.write(&path);
    let before = app.snapshot();
    let dry = app
        .restore(&path, 1, json!({"dry_run": true, "purge": true}))
        .unwrap_or_else(|e| panic!("{key}: dry run failed: {e}"));
    let listed: Vec<String> = dry
        .conflicts
        .iter()
        .map(|c| format!("{} {}: {}", c.table, c.key, c.reason))
        .collect();
    assert_eq!(dry.conflict_count, 1, "{key}: {listed:?}");
    assert!(listed[0].starts_with(key), "{key}: {listed:?}");
    assert!(listed[0].contains(reason), "{key}: {listed:?}");
    let err = app.restore(&path, 1, json!({"purge": true})).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{key}: {err}");
    assert!(err.to_string().contains(key), "{err}");
    assert_eq!(app.snapshot(), before, "{key}: the refused restore wrote");
}

/// Rails constantizes `"Object::Task"` and `"::Task"` to `Task`; a class
/// it could resolve to a tenant's table that tenant_kit cannot map is
/// refused, never skipped.
#[test]
fn class_names_resolve_as_rails_resolves_them() {
    let app = App::new();
    let valid = EditableArchive::open(&app.backup(1).path);
    for class in ["Object::Task", "::Task", "::Object::Task"] {
        let mut edited = valid.clone();
        edited.edit_rows("comments", |row| {
            if row["id"] == 1001 {
                row["commentable_type"] = json!(class);
                row["commentable_id"] = json!(2003);
            }
        });
        assert_one_conflict(
            &app,
            &edited,
            "comments id=1001",
            "its commentable_id refers to a row of tasks that belongs to another tenant",
        );
    }
    // `Admin::Task` is `::Task` to Ruby when there is no `Admin::Task`
    // (const_get looks in Object too), and the schema has no admin_tasks.
    let mut edited = valid.clone();
    edited.edit_rows("comments", |row| {
        if row["id"] == 1001 {
            row["commentable_type"] = json!("Admin::Task");
            row["commentable_id"] = json!(2003);
        }
    });
    assert_one_conflict(
        &app,
        &edited,
        "comments id=1001",
        "its commentable_type \"Admin::Task\" maps to no table, but Rails could resolve it to tasks",
    );
    // A class that could name no table of the tenant's data is data.
    let mut edited = valid.clone();
    edited.edit_rows("comments", |row| {
        if row["id"] == 1001 {
            row["commentable_type"] = json!("Weather");
            row["commentable_id"] = json!(2003);
        }
    });
    let path = app.dir.path().join("weather.tar.gz");
    edited.write(&path);
    let dry = app.restore(&path, 1, json!({"dry_run": true})).unwrap();
    assert_eq!(dry.conflict_count, 0, "{:?}", dry.conflicts);
}

/// An STI subclass maps through the caller's `polymorphic:` map; without
/// it, a class that could be a subclass of a tenant's STI table is
/// refused.
#[test]
fn sti_subclasses_resolve_through_the_map_or_are_refused() {
    let small = SmallDb::new(
        "CREATE TABLE tenants (id integer PRIMARY KEY);
         CREATE TABLE tasks (id integer PRIMARY KEY, tenant_id integer NOT NULL REFERENCES tenants, type text);
         CREATE TABLE comments (id integer PRIMARY KEY, tenant_id integer NOT NULL REFERENCES tenants,
                                commentable_type text, commentable_id integer);
         INSERT INTO tenants VALUES (1), (2);
         INSERT INTO tasks VALUES (1, 1, NULL), (2, 2, 'UrgentTask');
         INSERT INTO comments VALUES (10, 1, 'Task', 1);",
    );
    let mut archive = EditableArchive::open(&small.backup(1));
    archive.edit_rows("comments", |row| {
        row["commentable_type"] = json!("UrgentTask");
        row["commentable_id"] = json!(2);
    });
    let path = small.dir.path().join("edited.tar.gz");
    archive.write(&path);
    for extra in [
        json!({"dry_run": true}),
        json!({"dry_run": true, "polymorphic": {"UrgentTask": "tasks"}}),
    ] {
        let dry = small.restore(&path, 1, extra.clone()).unwrap();
        let reasons: Vec<String> = dry.conflicts.iter().map(|c| c.reason.clone()).collect();
        assert_eq!(dry.conflict_count, 1, "{extra}: {reasons:?}");
        assert_eq!(dry.conflicts[0].key, "id=10");
        let expected = if extra.get("polymorphic").is_some() {
            "its commentable_id refers to a row of tasks that belongs to another tenant"
        } else {
            "its commentable_type \"UrgentTask\" maps to no table, but Rails could resolve it to tasks"
        };
        assert!(reasons[0].contains(expected), "{extra}: {reasons:?}");
    }
}

/// `FOREIGN KEY(a, b) REFERENCES project_versions(project_id, version)`
/// is followed like a single column reference.
#[test]
fn multi_column_references_are_checked() {
    let small = SmallDb::new(
        "CREATE TABLE tenants (id integer PRIMARY KEY);
         CREATE TABLE project_versions (project_id integer, version integer,
             tenant_id integer NOT NULL REFERENCES tenants, name text, PRIMARY KEY (project_id, version));
         CREATE TABLE releases (id integer PRIMARY KEY, tenant_id integer NOT NULL REFERENCES tenants,
             a integer, b integer, FOREIGN KEY (a, b) REFERENCES project_versions (project_id, version));
         INSERT INTO tenants VALUES (1), (2);
         INSERT INTO project_versions VALUES (1, 1, 1, 'of tenant 1'), (2, 1, 2, 'of tenant 2');
         CREATE TABLE version_notes (a integer, b integer, note text,
             FOREIGN KEY (a, b) REFERENCES project_versions (project_id, version));
         INSERT INTO releases VALUES (10, 1, 1, 1);
         INSERT INTO version_notes VALUES (1, 1, 'of tenant 1'), (2, 1, 'of tenant 2');",
    );
    let mut archive = EditableArchive::open(&small.backup(1));
    // A table without the tenant column hangs off its parent by both
    // columns.
    let notes: Vec<&serde_json::Value> = archive.rows("version_notes");
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["note"], "of tenant 1");
    archive.edit_rows("releases", |row| row["a"] = json!(2));
    let path = small.dir.path().join("edited.tar.gz");
    archive.write(&path);
    let dry = small.restore(&path, 1, json!({"dry_run": true})).unwrap();
    let reasons: Vec<String> = dry
        .conflicts
        .iter()
        .map(|c| format!("{} {}: {}", c.table, c.key, c.reason))
        .collect();
    assert_eq!(
        reasons,
        ["releases id=10: its a, b refers to a row of project_versions that belongs to another tenant"]
    );
    let before = snapshot(&small.conn);
    let err = small.restore(&path, 1, json!({})).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert_eq!(snapshot(&small.conn), before);
}

/// The tenants row a restore creates is a row it writes: its references
/// to another tenant's user, or to another tenant, are conflicts.
#[test]
fn the_tenants_row_a_restore_creates_is_reference_checked() {
    let small = SmallDb::new(
        "CREATE TABLE tenants (id integer PRIMARY KEY, name text,
                               owner_id integer REFERENCES users (id), parent_id integer);
         CREATE TABLE users (id integer PRIMARY KEY, tenant_id integer NOT NULL REFERENCES tenants, email text);
         INSERT INTO tenants VALUES (1, 'one', 11, NULL), (2, 'two', 21, NULL);
         INSERT INTO users VALUES (11, 1, 'a@one'), (21, 2, 'a@two');",
    );
    let valid = EditableArchive::open(&small.backup(1));
    small
        .conn
        .execute_batch("DELETE FROM users WHERE tenant_id = 1; DELETE FROM tenants WHERE id = 1;")
        .unwrap();
    for (column, value, parent) in [("owner_id", 21, "users"), ("parent_id", 2, "tenants")] {
        let mut archive = valid.clone();
        archive.edit_rows("tenants", |row| row[column] = json!(value));
        let path = small.dir.path().join("edited.tar.gz");
        archive.write(&path);
        let dry = small.restore(&path, 1, json!({"dry_run": true})).unwrap();
        let reasons: Vec<String> = dry
            .conflicts
            .iter()
            .map(|c| format!("{} {}: {}", c.table, c.key, c.reason))
            .collect();
        let expected = format!(
            "tenants id=1: its {column} refers to a row of {parent} that belongs to another tenant"
        );
        assert_eq!(reasons, [expected]);
        let before = snapshot(&small.conn);
        let err = small.restore(&path, 1, json!({})).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        assert_eq!(snapshot(&small.conn), before);
    }
    // Unedited, the row is created and points at the tenant's own user.
    let path = small.dir.path().join("valid.tar.gz");
    valid.write(&path);
    let report = small.restore(&path, 1, json!({})).unwrap();
    assert!(report.tenant_row_created);
}

/// A manifest's lists cost in proportion to their length: 120,000 class
/// names for one type column are refused at once (no app has that many, and
/// the rows of one type column may name no more than 10,000 either).
#[test]
fn a_manifest_listing_120000_classes_is_refused_at_once() {
    let app = App::new();
    let mut archive = EditableArchive::open(&app.backup(1).path);
    for t in archive.manifest["tables"].as_array_mut().unwrap() {
        if t["name"] == "comments" {
            let mut classes: Vec<String> = (0..120_000).map(|i| format!("Class{i}")).collect();
            classes.extend(["Task".to_string(), "Project".to_string()]);
            t["polymorphic"]["commentable_type"] = json!(classes);
        }
    }
    let path = app.dir.path().join("many.tar.gz");
    archive.write(&path);
    let started = std::time::Instant::now();
    let err = app
        .restore(&path, 1, json!({"dry_run": true}))
        .expect_err("120,000 classes");
    let elapsed = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Archive, "{err}");
    assert!(
        err.to_string()
            .contains("manifest: comments.commentable_type lists more than 10000 classes"),
        "{err}"
    );
    assert!(elapsed.as_secs() < 10, "dry run took {elapsed:?}");
}
