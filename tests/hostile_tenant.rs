//! Hostile archives, tenant isolation: rows of another tenant in the archive.
//! Each case is restored in dry-run and real mode and must be refused by
//! its own check (kind and reason in `tests/common/hostile_cases.rs`) with
//! the database and storage byte-identical.

mod common;

use common::hostile::*;
use common::hostile_cases::*;
use common::*;
use serde_json::{json, Value};
use tenant_kit::ErrorKind;

#[test]
fn other_rows() {
    assert_refused(&TENANT_OTHER_ROWS);
}

#[test]
fn other_rows_hash_stale() {
    assert_refused(&TENANT_OTHER_ROWS_HASH_STALE);
}

/// An archive's SHA-256s are no signature: someone who edits one can make
/// them agree again. Such an archive must not give the tenant rows that
/// point at another tenant's rows (the app's associations would show them
/// across tenants): each is a conflict, listed by a dry run and refused by
/// a restore, and nothing changes.
#[test]
fn an_edited_archive_cannot_point_the_tenants_rows_at_another_tenant() {
    let app = App::new();
    let valid = Parts::from_archive(&app.backup(1).path);
    let tmp = app.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let db_before = file_bytes(&app.db);
    let files_before = app.storage_files();

    let edit = |table: &str, id: i64, f: &dyn Fn(&mut Value)| {
        let mut p = valid.clone();
        p.edit_rows(table, |v| {
            if v["row"]["id"] == id {
                f(v)
            }
        });
        p
    };
    let edit_join = |tag: i64, task: i64, f: &dyn Fn(&mut Value)| {
        let mut p = valid.clone();
        p.edit_rows("tags_tasks", |v| {
            if v["row"]["tag_id"] == tag && v["row"]["task_id"] == task {
                f(v)
            }
        });
        p
    };
    // Tenant 2's blob 2001 attached to tenant 1's task, and tenant 1's own
    // blob of that attachment taken out of the archive: all an attacker
    // needs is the blob's id, never its (secret) key.
    let mut steal = edit("active_storage_attachments", 1002, &|v| {
        v["row"]["blob_id"] = json!(2001)
    });
    let own_key = blob_key(1, 2);
    steal.remove_blob(&own_key);
    // (what, archive, table and key of the refused row, column named)
    let cases: Vec<(&str, Parts, &str, &str)> = vec![
        (
            "a subtask of another tenant's task (parent_id: a tree, no FK, no hint)",
            edit("tasks", 1002, &|v| v["row"]["parent_id"] = json!(2001)),
            "tasks id=1002",
            "parent_id",
        ),
        (
            "a join row linking the tenant's tag to another tenant's task",
            edit_join(1001, 1002, &|v| v["row"]["task_id"] = json!(2002)),
            "tags_tasks (tag_id=1001, task_id=2002)",
            "task_id",
        ),
        (
            "an attachment of the tenant's file to another tenant's task",
            edit("active_storage_attachments", 1002, &|v| {
                v["row"]["record_id"] = json!(2003)
            }),
            "active_storage_attachments id=1002",
            "record_id",
        ),
        (
            "an attachment of another tenant's file (blob id only) to the tenant's task",
            steal,
            "active_storage_attachments id=1002",
            "blob_id",
        ),
        (
            "a variant record of another tenant's blob",
            edit("active_storage_variant_records", 1001, &|v| {
                v["row"]["blob_id"] = json!(2002)
            }),
            "active_storage_variant_records id=1001",
            "blob_id",
        ),
        (
            "a task in another tenant's project (naming convention)",
            edit("tasks", 1001, &|v| v["row"]["project_id"] = json!(2001)),
            "tasks id=1001",
            "project_id",
        ),
        (
            "a new task, assigned to another tenant's user",
            edit("tasks", 1006, &|v| {
                v["row"]["id"] = json!(1099);
                v["row"]["user_id"] = json!(2002);
            }),
            "tasks id=1099",
            "user_id",
        ),
        (
            "a comment on another tenant's task (polymorphic)",
            edit("comments", 1001, &|v| {
                v["row"]["commentable_id"] = json!(2003)
            }),
            "comments id=1001",
            "commentable_id",
        ),
        (
            "a comment on another tenant's user: a class no comment names yet",
            edit("comments", 1002, &|v| {
                v["row"]["commentable_type"] = json!("User");
                v["row"]["commentable_id"] = json!(3001);
            }),
            "comments id=1002",
            "commentable_id",
        ),
        (
            "a setting of another tenant's user (text id)",
            edit("settings", 1001, &|v| v["row"]["target_id"] = json!("2001")),
            "settings id=1001",
            "target_id",
        ),
    ];
    for (what, parts, key, column) in cases {
        let path = app.dir.path().join("edited.tar.gz");
        std::fs::write(&path, gzip(&tar_bytes(&regular(parts.entries())))).unwrap();
        let dry = app
            .restore(
                &path,
                1,
                json!({"dry_run": true, "purge": true, "tmp_dir": tmp}),
            )
            .unwrap_or_else(|e| panic!("{what}: dry run failed: {e}"));
        assert_eq!(dry.conflict_count, 1, "{what}: {:?}", dry.conflicts);
        let listed = format!("{} {}", dry.conflicts[0].table, dry.conflicts[0].key);
        assert_eq!(listed, key, "{what}");
        let reason = &dry.conflicts[0].reason;
        assert!(
            reason.contains(column)
                && (reason.contains("belongs to another tenant")
                    || reason.contains("the archive does not carry")),
            "{what}: {}",
            dry.conflicts[0].reason
        );
        let err = app
            .restore(&path, 1, json!({"purge": true, "tmp_dir": tmp}))
            .expect_err(what);
        assert_eq!(err.kind(), ErrorKind::Conflict, "{what}: {err}");
        assert!(err.to_string().contains(key), "{what}: {err}");
        assert_eq!(
            file_bytes(&app.db),
            db_before,
            "{what} changed the database"
        );
        assert_eq!(
            app.storage_files(),
            files_before,
            "{what} changed the storage"
        );
        assert!(temp_dir_is_empty(&tmp), "{what} left temp files");
    }

    // A type column that names more classes than any app has is refused
    // outright, not checked for some of them only.
    let mut many = valid.clone();
    let text = String::from_utf8(many.dump.clone()).unwrap();
    let mut out = String::new();
    let mut added = 0u64;
    for line in text.lines() {
        out.push_str(line);
        out.push('\n');
        let v: Value = serde_json::from_str(line).unwrap();
        if v["table"] == "comments" && v["row"]["id"] == 1001 {
            for i in 0..10_001 {
                let mut extra = v.clone();
                extra["row"]["id"] = json!(100_000 + i);
                extra["row"]["commentable_type"] = json!(format!("Class{i}"));
                out.push_str(&extra.to_string());
                out.push('\n');
                added += 1;
            }
        }
    }
    many.dump = out.into_bytes();
    for t in many.manifest["tables"].as_array_mut().unwrap() {
        if t["name"] == "comments" {
            t["rows"] = json!(t["rows"].as_u64().unwrap() + added);
        }
    }
    many.rehash_dump();
    let path = app.dir.path().join("many.tar.gz");
    std::fs::write(&path, gzip(&tar_bytes(&regular(many.entries())))).unwrap();
    for dry_run in [true, false] {
        let err = app
            .restore(&path, 1, json!({"dry_run": dry_run, "tmp_dir": tmp}))
            .expect_err("10,001 classes");
        assert_eq!(err.kind(), ErrorKind::Archive, "{err}");
        assert!(err.to_string().contains("commentable_type"), "{err}");
    }
    assert_eq!(file_bytes(&app.db), db_before);
    assert!(temp_dir_is_empty(&tmp));

    // The same archive unedited restores, and so does one that points at
    // the tenant's own rows.
    let own = edit("tasks", 1001, &|v| v["row"]["project_id"] = json!(1002));
    for (what, parts) in [("unedited", valid.clone()), ("own project", own)] {
        let path = app.dir.path().join("fine.tar.gz");
        std::fs::write(&path, gzip(&tar_bytes(&regular(parts.entries())))).unwrap();
        let report = app
            .restore(&path, 1, json!({"purge": true, "tmp_dir": tmp}))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(report.conflict_count, 0, "{what}");
    }
}

/// References the app itself made across tenants, and rows of no tenant:
/// a restore that leaves such a row as it is goes through, and a row may
/// always point at a row whose tenant column is NULL (shared by every
/// tenant). Only what the restore would write is asked.
#[test]
fn rows_of_no_tenant_and_unchanged_references_across_tenants_restore() {
    let small = SmallDb::new(
        "CREATE TABLE tenants (id integer PRIMARY KEY);
         CREATE TABLE categories (id integer PRIMARY KEY, tenant_id integer REFERENCES tenants, name text);
         CREATE TABLE items (id integer PRIMARY KEY, tenant_id integer NOT NULL REFERENCES tenants,
                             category_id integer REFERENCES categories, name text);
         INSERT INTO tenants VALUES (1), (2);
         INSERT INTO categories VALUES (1, NULL, 'shared'), (2, 2, 'of tenant 2'), (3, 1, 'own');
         INSERT INTO items VALUES (10, 1, 1, 'in the shared category'),
                                  (11, 1, 2, 'linked across tenants by the app'),
                                  (12, 1, 3, 'own');",
    );
    let archive = small.backup(1);
    let before = common::snapshot(&small.conn);
    // A purge restore of yesterday's backup: every row kept as it is.
    let report = small.restore(&archive, 1, json!({"purge": true})).unwrap();
    assert_eq!(report.conflict_count, 0);
    assert_eq!(common::snapshot(&small.conn), before);
    // Written anew, the row pointing at tenant 2's category is refused,
    // the one in the shared category is not.
    small.conn.execute("DELETE FROM items", []).unwrap();
    let err = small.restore(&archive, 1, json!({})).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.to_string().contains("items id=11"), "{err}");
    assert!(!err.to_string().contains("items id=10"), "{err}");
    let count: i64 = small
        .conn
        .query_row("SELECT count(*) FROM items", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 0, "the refused restore wrote nothing");
}
