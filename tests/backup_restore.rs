//! Backup → restore round trips on a real SQLite file and a real storage
//! tree: exact values, tenant isolation, dry runs, remap, conflicts,
//! cancellation and repeatability.

mod common;

use common::*;
use rusqlite::Connection;
use serde_json::json;
use std::io::Read;
use tenant_kit::progress::{CollectProgress, Event};
use tenant_kit::{Error, ErrorKind};

fn archive_entry(path: &std::path::Path, name: &str) -> Vec<u8> {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap());
    let mut tar = tar::Archive::new(gz);
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some(name) {
            let mut out = Vec::new();
            e.read_to_end(&mut out).unwrap();
            return out;
        }
    }
    panic!("{name} not in archive");
}

/// The manifest's entry for `table`.
fn manifest_table(path: &std::path::Path, table: &str) -> serde_json::Value {
    let manifest: serde_json::Value =
        serde_json::from_slice(&archive_entry(path, "manifest.json")).unwrap();
    manifest["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == table)
        .unwrap_or_else(|| panic!("{table} not in the manifest"))
        .clone()
}

fn dump_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    String::from_utf8(archive_entry(path, "dump.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn backup_holds_every_row_of_the_tenant_and_nothing_else() {
    let app = App::new();
    let report = app.backup(2);
    let lines = dump_lines(&report.path);
    let conn = app.conn();
    for table in [
        "users",
        "teams",
        "projects",
        "tasks",
        "time_entries",
        "tags",
        "comments",
        "settings",
    ] {
        let mut in_dump: Vec<String> = lines
            .iter()
            .filter(|l| l["table"] == table)
            .map(|l| {
                assert_eq!(
                    l["row"]["tenant_id"], 2,
                    "{table} row of another tenant: {l}"
                );
                format!("{}", l["row"]["id"])
            })
            .collect();
        in_dump.sort();
        assert_eq!(in_dump, tenant_rows(&conn, table, 2), "{table}");
    }
    let count = |t: &str| lines.iter().filter(|l| l["table"] == t).count();
    assert_eq!(count("tenants"), 1);
    assert_eq!(count("tags_tasks"), 4);
    assert_eq!(
        count("active_storage_attachments"),
        3,
        "two files and the variant's image"
    );
    assert_eq!(count("active_storage_blobs"), 3);
    assert_eq!(count("active_storage_variant_records"), 1);
    for l in &lines {
        if l["table"] == "tags_tasks" {
            let task = l["row"]["task_id"].as_i64().unwrap();
            assert!(
                (2001..3000).contains(&task),
                "join row of another tenant: {l}"
            );
        }
        if l["table"] == "active_storage_blobs" {
            assert!(l["row"]["key"].as_str().unwrap().starts_with("t2"), "{l}");
        }
    }
    // Parents before children.
    let first = |t: &str| lines.iter().position(|l| l["table"] == t).unwrap();
    assert!(first("tenants") < first("users"));
    assert!(first("projects") < first("tasks"));
    assert!(first("tasks") < first("tags_tasks"));
    assert!(first("active_storage_blobs") < first("active_storage_attachments"));
    // Never Rails or SQLite bookkeeping.
    assert_eq!(
        count("schema_migrations") + count("ar_internal_metadata") + count("sqlite_sequence"),
        0
    );

    let manifest: serde_json::Value =
        serde_json::from_slice(&archive_entry(&report.path, "manifest.json")).unwrap();
    assert_eq!(manifest["format"], "tenant_kit");
    assert_eq!(manifest["format_version"], "1.0");
    assert_eq!(manifest["tenant"]["id"], 2);
    assert_eq!(manifest["source"]["schema_version"], "20261115000000");
    assert_eq!(manifest["blobs"].as_array().unwrap().len(), 3);
    let skipped: Vec<&str> = manifest["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        skipped.contains(&"schema_migrations") && skipped.contains(&"ar_internal_metadata"),
        "{skipped:?}"
    );
    for blob in manifest["blobs"].as_array().unwrap() {
        let key = blob["key"].as_str().unwrap();
        let in_archive = archive_entry(&report.path, &format!("blobs/{key}"));
        assert_eq!(
            in_archive,
            file_bytes(&blob_path(&app.storage, key)),
            "blob {key} byte-equal"
        );
    }
    assert_eq!(report.errors, vec![]);
}

#[test]
fn archive_is_private_named_by_tenant_and_time_and_verifies() {
    let app = App::new();
    let report = app.backup(1);
    let name = report
        .path
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let (id, stamp) = tenant_kit::prune::parse_archive_name(&name).expect("archive name pattern");
    assert_eq!(id, "1");
    assert_eq!(stamp.len(), 14);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&report.path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let entries: Vec<_> = std::fs::read_dir(&app.out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries.len(), 1, "no temp files left: {entries:?}");
    let verified = tenant_kit::verify::verify_path(&report.path).unwrap();
    assert_eq!(verified.rows, report.rows);
    assert_eq!(verified.blobs, 3);
}

#[test]
fn exact_values_round_trip_with_their_storage_class() {
    let app = App::new();
    let conn = app.conn();
    conn.execute_batch(
        "CREATE TABLE samples (id integer PRIMARY KEY, tenant_id integer NOT NULL, v, note text);
         INSERT INTO samples VALUES (1, 1, 9223372036854775807, 'max');
         INSERT INTO samples VALUES (2, 1, -9223372036854775808, 'min');
         INSERT INTO samples VALUES (3, 1, 2.0, 'whole real');
         INSERT INTO samples VALUES (4, 1, 0.1, 'fraction');
         INSERT INTO samples VALUES (5, 1, '0042', 'text like a number');
         INSERT INTO samples VALUES (6, 1, 'żółw 🐢 \"quoted\" \\ back', 'unicode');
         INSERT INTO samples VALUES (7, 1, x'00ff00', 'blob with NULs');
         INSERT INTO samples VALUES (8, 1, NULL, 'null');
         INSERT INTO samples VALUES (9, 1, CAST(x'61ff62' AS TEXT), 'text that is not UTF-8');
         INSERT INTO samples VALUES (10, 1, 1e308 * 10, 'infinity');
         INSERT INTO samples VALUES (11, 1, -0.0, 'negative zero');
         INSERT INTO samples VALUES (12, 2, 'other tenant', 'must stay');",
    )
    .unwrap();
    let before = app.snapshot();
    let report = app.backup(1);
    app.restore(&report.path, 1, json!({"purge": true}))
        .unwrap();
    assert_eq!(app.snapshot(), before);
    let kinds: Vec<(String, String)> = conn
        .prepare("SELECT typeof(v), hex(v) FROM samples ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(kinds[2].0, "real");
    assert_eq!(kinds[4].0, "text");
    assert_eq!(kinds[6], ("blob".into(), "00FF00".into()));
    assert_eq!(
        kinds[8],
        ("text".into(), "61FF62".into()),
        "invalid UTF-8 text kept byte for byte"
    );
}

#[test]
fn purge_and_restore_gives_back_the_same_database_and_files() {
    let app = App::new();
    let before = app.snapshot();
    let files_before = app.storage_files();
    let report = app.backup(2);
    let result = app
        .restore(&report.path, 2, json!({"purge": true}))
        .unwrap();
    // Nothing changed since the backup: every row is kept as it is.
    assert_eq!(result.purged.get("tasks"), None);
    assert_eq!(result.planned["tasks"].unchanged, 6);
    assert_eq!(result.restored["tasks"], 6);
    assert!(result.lock_ms <= result.duration_ms);
    assert_eq!(app.snapshot(), before);
    assert_eq!(app.storage_files(), files_before);
}

#[test]
fn purge_and_restore_undoes_edits_deletes_and_additions() {
    let app = App::new();
    let before = app.snapshot();
    let files_before = app.storage_files();
    let report = app.backup(2);
    // After the backup the app edits a task (and the storage class of its
    // estimate), deletes another with its join rows, adds a third.
    app.conn()
        .execute_batch(
            "UPDATE tasks SET title = 'edited', estimate = 3 WHERE id = 2001;
             DELETE FROM tags_tasks WHERE task_id = 2002;
             DELETE FROM time_entries WHERE task_id = 2002;
             DELETE FROM tasks WHERE id = 2002;
             INSERT INTO tasks (id, tenant_id, project_id, title, created_at, updated_at)
               SELECT 2999, 2, project_id, 'added later', created_at, updated_at FROM tasks WHERE id = 2003;",
        )
        .unwrap();
    let result = app
        .restore(&report.path, 2, json!({"purge": true}))
        .unwrap();
    let tasks = &result.planned["tasks"];
    assert_eq!(
        (tasks.unchanged, tasks.update, tasks.insert, tasks.purge),
        (4, 1, 1, 1)
    );
    assert_eq!(result.purged["tasks"], 1);
    assert_eq!(result.restored["tasks"], 6);
    assert_eq!(app.snapshot(), before);
    assert_eq!(app.storage_files(), files_before);
}

#[test]
fn restore_after_the_app_deleted_the_tenant_recreates_rows_and_files() {
    let app = App::new();
    let before = app.snapshot();
    let files_before = app.storage_files();
    let report = app.backup(3);
    // Delete tenant 3 the way a careless script would: rows and files.
    let conn = app.conn();
    conn.execute_batch(
        "DELETE FROM tags_tasks WHERE task_id BETWEEN 3000 AND 3999;
         DELETE FROM active_storage_attachments WHERE id BETWEEN 3000 AND 3999;
         DELETE FROM active_storage_variant_records WHERE id BETWEEN 3000 AND 3999;
         DELETE FROM active_storage_blobs WHERE id BETWEEN 3000 AND 3999;
         DELETE FROM time_entries WHERE tenant_id = 3; DELETE FROM comments WHERE tenant_id = 3;
         DELETE FROM settings WHERE tenant_id = 3; DELETE FROM tasks WHERE tenant_id = 3;
         DELETE FROM tags WHERE tenant_id = 3; DELETE FROM projects WHERE tenant_id = 3;
         DELETE FROM teams WHERE tenant_id = 3; DELETE FROM users WHERE tenant_id = 3;
         DELETE FROM tenants WHERE id = 3;",
    )
    .unwrap();
    for n in [1, 2, 9] {
        std::fs::remove_file(blob_path(&app.storage, &blob_key(3, n))).unwrap();
    }
    let result = app.restore(&report.path, 3, json!({})).unwrap();
    assert!(result.tenant_row_created);
    assert_eq!(result.blobs.written, 3);
    assert_eq!(app.snapshot(), before);
    assert_eq!(app.storage_files(), files_before);
}

#[test]
fn restoring_twice_is_the_same_as_once() {
    let app = App::new();
    let before = app.snapshot();
    let report = app.backup(1);
    app.restore(&report.path, 1, json!({})).unwrap();
    let second = app.restore(&report.path, 1, json!({})).unwrap();
    assert_eq!(
        second.planned["tags_tasks"].unchanged, 4,
        "join rows are recognised, not duplicated"
    );
    assert_eq!(app.snapshot(), before);
}

#[test]
fn dry_run_changes_no_byte_and_reports_the_plan() {
    let app = App::new();
    let report = app.backup(1);
    let db_before = file_bytes(&app.db);
    let files_before = app.storage_files();
    let result = app
        .restore(&report.path, 1, json!({"dry_run": true, "purge": true}))
        .unwrap();
    assert!(result.dry_run);
    // The database still holds what the archive holds: nothing to write.
    assert_eq!(result.planned["tasks"].purge, 0);
    assert_eq!(result.planned["tasks"].unchanged, 6);
    assert_eq!(result.conflict_count, 0);
    assert_eq!(file_bytes(&app.db), db_before);
    assert_eq!(app.storage_files(), files_before);
}

#[test]
fn remap_into_an_empty_database_creates_the_tenant() {
    let app = App::new();
    let report = app.backup(1);
    let target = App::new();
    // An empty database with the same schema.
    let empty = target.dir.path().join("empty.sqlite3");
    Connection::open(&empty)
        .unwrap()
        .execute_batch(APP_SCHEMA)
        .unwrap();
    let storage = target.dir.path().join("empty-storage");
    std::fs::create_dir(&storage).unwrap();
    let options: tenant_kit::restore::RestoreOptions = serde_json::from_value(json!({
        "database": empty, "archive": report.path, "tenant_id": 7, "storage_root": storage, "remap": true
    }))
    .unwrap();
    // Without remap the id mismatch is refused.
    let mut refused = options.clone();
    refused.remap = false;
    let err = tenant_kit::restore::restore(&refused, &mut CollectProgress::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Argument, "{err}");

    let result = tenant_kit::restore::restore(&options, &mut CollectProgress::default()).unwrap();
    assert!(result.tenant_row_created);
    let conn = Connection::open(&empty).unwrap();
    let tenants: Vec<(i64, String)> = conn
        .prepare("SELECT id, name FROM tenants")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(tenants, vec![(7, "Tenant 1".to_string())]);
    let wrong: i64 = conn
        .query_row("SELECT count(*) FROM tasks WHERE tenant_id != 7", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(wrong, 0);
    let tasks: i64 = conn
        .query_row("SELECT count(*) FROM tasks WHERE tenant_id = 7", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(tasks, 6);
    assert_eq!(files_below(&storage).len(), 3);
}

#[test]
fn conflict_with_another_tenant_raises_and_changes_nothing() {
    let app = App::new();
    let report = app.backup(1);
    // Tenant 2 now owns task 1001 (as if ids were reused).
    let conn = app.conn();
    conn.execute_batch(
        "DELETE FROM tags_tasks WHERE task_id = 1001; DELETE FROM time_entries WHERE task_id = 1001;
         DELETE FROM active_storage_attachments WHERE record_type = 'Task' AND record_id = 1001;
         UPDATE tasks SET parent_id = NULL WHERE parent_id = 1001;
         UPDATE tasks SET tenant_id = 2, project_id = 2001 WHERE id = 1001;",
    )
    .unwrap();
    let before = app.snapshot();
    let files_before = app.storage_files();
    let dry = app
        .restore(&report.path, 1, json!({"dry_run": true}))
        .unwrap();
    // The task's key, and the rows the restore would write again pointing
    // at what is now tenant 2's task: its subtasks (whose parent_id the
    // update above cleared), and the time entry, attachment and join row
    // deleted above.
    let listed: Vec<(&str, &str, &str)> = dry
        .conflicts
        .iter()
        .map(|c| (c.table.as_str(), c.key.as_str(), c.reason.as_str()))
        .collect();
    let refers = |column: &str| {
        format!("its {column} refers to a row of tasks that belongs to another tenant")
    };
    let (parent, task, record) = (refers("parent_id"), refers("task_id"), refers("record_id"));
    assert_eq!(
        listed,
        [
            ("tasks", "id=1001", "the key belongs to another tenant"),
            ("tasks", "id=1002", parent.as_str()),
            ("tasks", "id=1003", parent.as_str()),
            ("tasks", "id=1004", parent.as_str()),
            ("tasks", "id=1005", parent.as_str()),
            ("tasks", "id=1006", parent.as_str()),
            ("time_entries", "id=1001", task.as_str()),
            ("active_storage_attachments", "id=1001", record.as_str()),
            ("tags_tasks", "(tag_id=1001, task_id=1001)", task.as_str()),
        ]
    );
    assert_eq!(dry.conflict_count, 9);
    let err = app
        .restore(&report.path, 1, json!({"purge": true}))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(
        err.message().contains("tasks") && err.message().contains("1001"),
        "{err}"
    );
    assert_eq!(app.snapshot(), before);
    assert_eq!(app.storage_files(), files_before);
}

#[test]
fn blob_key_taken_by_another_blob_gets_a_fresh_key() {
    let app = App::new();
    let report = app.backup(1);
    let conn = app.conn();
    // Tenant 1 loses its first file; tenant 2 gets a blob with that key.
    conn.execute_batch("DELETE FROM active_storage_variant_records WHERE blob_id = 1001; DELETE FROM active_storage_attachments WHERE blob_id IN (1001, 1009); DELETE FROM active_storage_blobs WHERE id IN (1001, 1009);").unwrap();
    let key = blob_key(1, 1);
    std::fs::remove_file(blob_path(&app.storage, &key)).unwrap();
    app.write_blob(&conn, 2500, &key, b"someone else's file");
    conn.execute("INSERT INTO active_storage_attachments(id, name, record_type, record_id, blob_id, created_at) VALUES (2500, 'files', 'Task', 2001, 2500, 'x')", []).unwrap();
    let result = app.restore(&report.path, 1, json!({})).unwrap();
    let new_key = result.renamed_keys.get(&key).expect("renamed").clone();
    assert_ne!(new_key, key);
    assert_eq!(
        file_bytes(&blob_path(&app.storage, &key)),
        b"someone else's file"
    );
    let restored: String = conn
        .query_row(
            "SELECT key FROM active_storage_blobs WHERE id = 1001",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(restored, new_key);
    assert_eq!(
        file_bytes(&blob_path(&app.storage, &new_key)),
        "file 1 of tenant 1\n".repeat(50).into_bytes()
    );
}

/// In rollback-journal mode a helper connection that shares the snapshot
/// computes the member sets while the main connection dumps; in WAL mode
/// one connection does both in turn. The same data gives the same dump.
#[test]
fn the_dump_is_the_same_whether_member_sets_are_computed_alongside_or_not() {
    let app = App::new();
    let backup = |app: &App| -> (Vec<u8>, bool) {
        let mut parallel = None;
        let mut progress = |e: Event| {
            if e.step() == "snapshot" {
                parallel = e.get("parallel").and_then(|v| v.as_bool());
            }
            Ok(())
        };
        let report = tenant_kit::backup::backup(&app.backup_options(1), &mut progress).unwrap();
        let dump = archive_entry(&report.path, "dump.jsonl");
        std::fs::remove_file(&report.path).unwrap();
        (dump, parallel.expect("a snapshot event with `parallel`"))
    };
    let (alongside, helper_used) = backup(&app);
    let mode: String = app
        .conn()
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let (in_turn, helper_used_in_wal) = backup(&app);
    assert!(helper_used, "rollback-journal mode should use the helper");
    assert!(!helper_used_in_wal, "WAL mode must not use the helper");
    assert_eq!(
        String::from_utf8_lossy(&alongside),
        String::from_utf8_lossy(&in_turn)
    );
    let text = String::from_utf8(alongside).unwrap();
    for derived in [
        "\"table\":\"tags_tasks\"",
        "\"table\":\"active_storage_attachments\"",
    ] {
        assert!(text.contains(derived), "no {derived} rows in the dump");
    }
}

/// A backup learns the classes a polymorphic column names from the
/// tenant's own rows: the manifest names no class only another tenant
/// uses, and a small tenant does not pay for scanning everyone's rows.
#[test]
fn polymorphic_classes_in_the_manifest_are_the_tenants_own() {
    let app = App::new();
    app.conn()
        .execute(
            "INSERT INTO comments(id, tenant_id, commentable_type, commentable_id, user_id, body, created_at, updated_at) VALUES (2999, 2, 'User', 2001, 2001, 'hi', 'x', 'x')",
            [],
        )
        .unwrap();
    let classes = |tenant: i64| -> serde_json::Value {
        let report = app.backup(tenant);
        manifest_table(&report.path, "comments")["polymorphic"]["commentable_type"].clone()
    };
    assert_eq!(classes(1), json!(["Project", "Task"]));
    assert_eq!(classes(2), json!(["Project", "Task", "User"]));
}

/// A backup, and how many times it listed the tables (`scan_tables`): more
/// than once when the dump started over.
fn backup_counting_scans(app: &App, tenant: i64) -> (tenant_kit::backup::BackupReport, usize) {
    let mut progress = CollectProgress::default();
    let report = tenant_kit::backup::backup(&app.backup_options(tenant), &mut progress).unwrap();
    let scans = progress
        .events
        .iter()
        .filter(|e| e.step() == "scan_tables")
        .count();
    (report, scans)
}

/// The largest polymorphic table (comments) has its classes learned while
/// it is dumped, so the dump puts it after every table a class could name.
#[test]
fn the_table_whose_classes_are_learned_while_dumping_follows_the_tables_they_name() {
    let app = App::new();
    // Nothing else would put `zebras` (ready first, but last by name)
    // before `comments`.
    app.conn()
        .execute_batch(
            "CREATE TABLE zebras (id integer PRIMARY KEY, tenant_id integer NOT NULL, name varchar);
             INSERT INTO zebras VALUES (2001, 2, 'Zed');
             INSERT INTO comments(id, tenant_id, commentable_type, commentable_id, user_id, body, created_at, updated_at) VALUES (2998, 2, 'Zebra', 2001, 2001, 'on a zebra', 'x', 'x');
             INSERT INTO comments(id, tenant_id, commentable_type, commentable_id, user_id, body, created_at, updated_at) VALUES (2999, 2, 'User', 2001, 2001, 'hi', 'x', 'x');",
        )
        .unwrap();
    let (report, scans) = backup_counting_scans(&app, 2);
    assert_eq!(scans, 1, "the order needed no second dump");
    let tables: Vec<String> = dump_lines(&report.path)
        .iter()
        .map(|l| l["table"].as_str().unwrap().to_string())
        .collect();
    let first = |t: &str| tables.iter().position(|n| n == t).unwrap();
    let last = |t: &str| tables.iter().rposition(|n| n == t).unwrap();
    for parent in ["zebras", "projects", "tasks", "users"] {
        assert!(
            last(parent) < first("comments"),
            "{parent} after comments in {tables:?}"
        );
    }
}

/// A class learned while dumping that would have changed what the backup
/// holds (a comment on an ActiveStorage blob makes the blob the tenant's)
/// starts the dump over with the classes read first: the archive is the
/// one that reading them first gives.
#[test]
fn a_learned_class_that_changes_the_tenants_rows_starts_the_dump_over() {
    let app = App::new();
    let conn = app.conn();
    let key = "orphan0blob0of0nobody0000000";
    app.write_blob(&conn, 1500, key, b"commented on, attached to nothing");
    conn.execute(
        "INSERT INTO comments(id, tenant_id, commentable_type, commentable_id, user_id, body, created_at, updated_at) VALUES (1999, 1, 'ActiveStorage::Blob', 1500, 1001, 'look', 'x', 'x')",
        [],
    )
    .unwrap();
    let (report, scans) = backup_counting_scans(&app, 1);
    assert_eq!(scans, 2, "the dump started over once");
    let lines = dump_lines(&report.path);
    assert!(
        lines
            .iter()
            .any(|l| l["table"] == "active_storage_blobs" && l["row"]["id"] == 1500),
        "the commented blob is the tenant's"
    );
    assert_eq!(
        archive_entry(&report.path, &format!("blobs/{key}")),
        b"commented on, attached to nothing"
    );
    assert_eq!(
        manifest_table(&report.path, "comments")["polymorphic"]["commentable_type"],
        json!(["ActiveStorage::Blob", "Project", "Task"])
    );
    tenant_kit::verify::verify_path(&report.path).unwrap();
}

/// Files that are compressed already (here: random bytes) are stored in
/// the archive, text is deflated; both come back byte for byte.
#[test]
fn incompressible_and_text_blob_files_round_trip() {
    let app = App::new();
    let conn = app.conn();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..200_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    let text = "line of a text file\n".repeat(10_000).into_bytes();
    for (id, key, content) in [
        (1600, "noise0000000000000000000001", &noise),
        (1601, "text00000000000000000000001", &text),
    ] {
        app.write_blob(&conn, id, key, content);
        conn.execute(
            "INSERT INTO active_storage_attachments(id, name, record_type, record_id, blob_id, created_at) VALUES (?1, 'files', 'Task', 1003, ?1, 'x')",
            [id],
        )
        .unwrap();
    }
    let report = app.backup(1);
    tenant_kit::verify::verify_path(&report.path).unwrap();
    assert_eq!(
        archive_entry(&report.path, "blobs/noise0000000000000000000001"),
        noise
    );
    assert_eq!(
        archive_entry(&report.path, "blobs/text00000000000000000000001"),
        text
    );
    // The text was deflated: the archive is far smaller than the files.
    assert!(report.bytes < noise.len() as u64 + text.len() as u64 / 4);
}

/// A join table is read by one scan filtered by the ids of its parents
/// (backup/filtered_scan.rs). Its rows must be exactly those the member
/// sets' SQL would choose: a row belongs when either parent is the
/// tenant's and neither is another tenant's (such a row is both tenants'
/// and left out of both archives, counted in `left_out_cross_tenant`), and values
/// that equal no id (text, a missing parent) make no row the tenant's.
#[test]
fn join_rows_are_those_of_the_tenants_parents_on_either_side() {
    let app = App::new();
    // Tenant 1 owns most tasks, so its backup takes the filtered scan
    // (tenants 2 and 3 own too few for a scan to pay off: member sets).
    app.conn()
        .execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 5000 UNION ALL SELECT i + 1 FROM n WHERE i < 9000)
             INSERT INTO tasks(id, tenant_id, project_id, title, created_at, updated_at)
                 SELECT i, 1, 1001, 'bulk', 'x', 'x' FROM n;
             INSERT OR IGNORE INTO tags_tasks(tag_id, task_id) SELECT 2001, id FROM tasks WHERE id % 7 = 0;
             INSERT INTO tags_tasks(tag_id, task_id) VALUES (1001, 2003);  -- tag of 1, task of 2
             INSERT INTO tags_tasks(tag_id, task_id) VALUES (2002, 1004);  -- tag of 2, task of 1
             INSERT INTO tags_tasks(tag_id, task_id) VALUES (3001, 3004);  -- tenant 3 only
             INSERT INTO tags_tasks(tag_id, task_id) VALUES (1002, 999999); -- no such task
             INSERT INTO tags_tasks(tag_id, task_id) VALUES ('1001x', 2001); -- text, tenant 2's task
             INSERT INTO tags_tasks(tag_id, task_id) VALUES (2001.0, 3001); -- stored as integer 2001",
        )
        .unwrap();
    for tenant in [1, 2, 3] {
        let report = app.backup(tenant);
        let dumped: Vec<serde_json::Value> = dump_lines(&report.path)
            .into_iter()
            .filter(|l| l["table"] == "tags_tasks")
            .map(|l| l["row"].clone())
            .collect();
        let conn = app.conn();
        let reached = "(tag_id IN (SELECT id FROM tags WHERE tenant_id = ?1)
                        OR task_id IN (SELECT id FROM tasks WHERE tenant_id = ?1))";
        let theirs = "(EXISTS (SELECT 1 FROM tags g WHERE g.id = tag_id AND g.tenant_id <> ?1)
                       OR EXISTS (SELECT 1 FROM tasks k WHERE k.id = task_id AND k.tenant_id <> ?1))";
        let shared: i64 = conn
            .query_row(
                &format!("SELECT count(*) FROM tags_tasks WHERE {reached} AND {theirs}"),
                [tenant],
                |r| r.get(0),
            )
            .unwrap();
        assert!(shared >= 2, "tenant {tenant} shares join rows");
        assert_eq!(
            report.left_out_cross_tenant.get("tags_tasks").copied(),
            Some(shared as u64),
            "tenant {tenant}"
        );
        let mut oracle = conn
            .prepare(&format!(
                "SELECT tag_id, task_id FROM tags_tasks WHERE {reached} AND NOT {theirs} ORDER BY rowid"
            ))
            .unwrap();
        let expected: Vec<serde_json::Value> = oracle
            .query_map([tenant], |r| {
                let value = |i: usize| -> rusqlite::Result<serde_json::Value> {
                    Ok(match r.get_ref(i)? {
                        rusqlite::types::ValueRef::Integer(n) => json!(n),
                        other => json!(other.as_str().unwrap()),
                    })
                };
                Ok(json!({"tag_id": value(0)?, "task_id": value(1)?}))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(expected.len() >= 5, "tenant {tenant}: {expected:?}");
        assert_eq!(dumped, expected, "tenant {tenant}");
    }
}

#[test]
fn cancelled_backup_leaves_no_archive_and_no_temp_files() {
    let app = App::new();
    for step in [
        "scan_tables",
        "dump_progress",
        "archive_progress",
        "archive_created",
        "done",
    ] {
        let mut progress = |e: Event| {
            if e.step() == step {
                Err(Error::cancelled())
            } else {
                Ok(())
            }
        };
        let err = tenant_kit::backup::backup(&app.backup_options(1), &mut progress).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cancelled, "{step}");
        let left: Vec<_> = std::fs::read_dir(&app.out).unwrap().collect();
        assert!(left.is_empty(), "cancel at {step} left {left:?}");
    }
}

#[test]
fn cancelled_restore_rolls_back_rows_and_files() {
    let app = App::new();
    let report = app.backup(1);
    for n in [1, 2, 9] {
        std::fs::remove_file(blob_path(&app.storage, &blob_key(1, n))).unwrap();
    }
    let before = app.snapshot();
    let files_before = app.storage_files();
    for step in ["purge_progress", "blobs", "restore_progress", "commit"] {
        let mut progress = |e: Event| {
            if e.step() == step {
                Err(Error::cancelled())
            } else {
                Ok(())
            }
        };
        let options = app.restore_options(&report.path, 1, json!({"purge": true}));
        let err = tenant_kit::restore::restore(&options, &mut progress).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cancelled, "{step}");
        assert_eq!(app.snapshot(), before, "rows after cancel at {step}");
        assert_eq!(
            app.storage_files(),
            files_before,
            "files after cancel at {step}"
        );
    }
}

#[test]
fn missing_blob_file_is_recorded_and_the_backup_completes() {
    let app = App::new();
    let key = blob_key(1, 2);
    std::fs::remove_file(blob_path(&app.storage, &key)).unwrap();
    let report = app.backup(1);
    assert_eq!(report.errors.len(), 1);
    assert_eq!(report.errors[0].kind, "missing_blob_file");
    assert_eq!(report.errors[0].key.as_deref(), Some(key.as_str()));
    assert_eq!(report.blobs, 2);
    let verified = tenant_kit::verify::verify_path(&report.path).unwrap();
    assert_eq!(verified.errors.len(), 1);
}

#[test]
fn schema_drift_is_listed_in_full() {
    let app = App::new();
    let report = app.backup(1);
    let conn = app.conn();
    conn.execute_batch(
        "ALTER TABLE tasks RENAME COLUMN notes TO body;
         ALTER TABLE users ADD COLUMN locale varchar NOT NULL DEFAULT 'en';
         ALTER TABLE projects ADD COLUMN code varchar;
         DROP TABLE time_entries;",
    )
    .unwrap();
    let before = app.snapshot();
    for dry_run in [true, false] {
        let err = app
            .restore(&report.path, 1, json!({"dry_run": dry_run}))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Schema, "{err}");
        assert!(err.message().contains("tasks.notes"), "{err}");
        assert!(err.message().contains("time_entries"), "{err}");
        assert!(
            !err.message().contains("users.locale"),
            "a column with a default is fine: {err}"
        );
    }
    assert_eq!(app.snapshot(), before);
}

#[test]
fn other_tenant_column_names_uuid_keys_and_no_foreign_keys() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("uuid.sqlite3");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TABLE accounts (id varchar PRIMARY KEY, name varchar);
         CREATE TABLE documents (id varchar PRIMARY KEY, account_id varchar NOT NULL, parent_id varchar, title text);
         CREATE TABLE labels (id varchar PRIMARY KEY, account_id varchar NOT NULL, name text) WITHOUT ROWID;
         CREATE TABLE documents_labels (document_id varchar, label_id varchar);
         INSERT INTO accounts VALUES ('a-1', 'One'), ('a-2', 'Two');
         INSERT INTO documents VALUES ('d-1', 'a-1', NULL, 'root'), ('d-2', 'a-1', 'd-1', 'child'), ('d-3', 'a-2', NULL, 'theirs');
         INSERT INTO labels VALUES ('l-1', 'a-1', 'red'), ('l-2', 'a-2', 'blue');
         INSERT INTO documents_labels VALUES ('d-1', 'l-1'), ('d-2', 'l-1'), ('d-3', 'l-2');
         -- ActiveStorage's tables without their foreign keys: blob_id names
         -- no table by convention (there is no `blobs`).
         CREATE TABLE active_storage_blobs (id integer PRIMARY KEY, key varchar NOT NULL, filename varchar, byte_size integer, checksum varchar);
         CREATE TABLE active_storage_attachments (id integer PRIMARY KEY, name varchar, record_type varchar, record_id varchar, blob_id integer);
         CREATE TABLE active_storage_variant_records (id integer PRIMARY KEY, blob_id integer, variation_digest varchar);
         INSERT INTO active_storage_blobs VALUES (1, 'key1aaaaaaaaaaaaaaaaaaaaaaaaa', 'a.txt', 1, 'x'), (2, 'key2aaaaaaaaaaaaaaaaaaaaaaaaa', 'b.txt', 1, 'y');
         INSERT INTO active_storage_attachments VALUES (1, 'file', 'Document', 'd-1', 1), (2, 'file', 'Document', 'd-3', 2);
         INSERT INTO active_storage_variant_records VALUES (1, 1, 'v'), (2, 2, 'w');",
    )
    .unwrap();
    let before = snapshot(&conn);
    let options: tenant_kit::backup::BackupOptions = serde_json::from_value(json!({
        "database": db, "tenant_id": "a-1", "output_dir": dir.path(), "tenant_column": "account_id"
    }))
    .unwrap();
    let report = tenant_kit::backup::backup(&options, &mut CollectProgress::default()).unwrap();
    assert_eq!(report.tables["accounts"], 1);
    assert_eq!(report.tables["documents"], 2);
    assert_eq!(report.tables["labels"], 1);
    assert_eq!(
        report.tables["documents_labels"], 2,
        "join rows found by naming convention"
    );
    for table in [
        "active_storage_attachments",
        "active_storage_blobs",
        "active_storage_variant_records",
    ] {
        assert_eq!(
            report.tables.get(table),
            Some(&1),
            "{table}: {:?}",
            report.tables
        );
    }
    let restore: tenant_kit::restore::RestoreOptions = serde_json::from_value(json!({
        "database": db, "archive": report.path, "tenant_id": "a-1", "tenant_column": "account_id", "purge": true
    }))
    .unwrap();
    tenant_kit::restore::restore(&restore, &mut CollectProgress::default()).unwrap();
    assert_eq!(snapshot(&conn), before);
}

#[test]
fn bad_arguments_are_clear_and_write_nothing() {
    let app = App::new();
    let cases = [
        json!({"database": app.dir.path().join("nope.db"), "tenant_id": 1, "output_dir": app.out}),
        json!({"database": app.db, "tenant_id": 99, "output_dir": app.out}),
        json!({"database": app.db, "tenant_id": 1, "output_dir": app.out, "tenant_column": "account_id"}),
        json!({"database": app.db, "tenant_id": 1, "output_dir": app.dir.path().join("missing")}),
        json!({"database": app.db, "tenant_id": 1, "output_dir": app.out, "storage_root": app.dir.path().join("missing")}),
    ];
    for case in cases {
        let options: tenant_kit::backup::BackupOptions =
            serde_json::from_value(case.clone()).unwrap();
        let err =
            tenant_kit::backup::backup(&options, &mut CollectProgress::default()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Argument, "{case}: {err}");
        assert!(
            std::fs::read_dir(&app.out).unwrap().next().is_none(),
            "{case} wrote something"
        );
    }
    let err = tenant_kit::api::backup_json(
        r#"{"database": "x", "tenant_id": 1, "output_dir": "y", "bogus": 1}"#,
        &mut CollectProgress::default(),
    )
    .unwrap_err();
    assert!(err.message().contains("bogus"), "{err}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let ro = app.dir.path().join("readonly");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o500)).unwrap();
        // root ignores permissions; only check when they apply.
        if std::fs::File::create(ro.join("probe")).is_err() {
            let options: tenant_kit::backup::BackupOptions = serde_json::from_value(
                json!({"database": app.db, "tenant_id": 1, "output_dir": ro}),
            )
            .unwrap();
            let err =
                tenant_kit::backup::backup(&options, &mut CollectProgress::default()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Io, "{err}");
        }
    }
}

#[test]
fn progress_events_cover_the_documented_steps() {
    let app = App::new();
    let mut events = CollectProgress::default();
    let report = tenant_kit::backup::backup(&app.backup_options(1), &mut events).unwrap();
    let steps: Vec<String> = events.events.iter().map(|e| e.step().to_string()).collect();
    for s in [
        "start",
        "scan_tables",
        "dump_progress",
        "archive_created",
        "done",
    ] {
        assert!(
            steps.contains(&s.to_string()),
            "backup step {s} missing: {steps:?}"
        );
    }
    // The read transaction is framed by lock events, the snapshot after it.
    let framing: Vec<String> = events
        .events
        .iter()
        .filter(|e| ["lock", "snapshot"].contains(&e.step().name()))
        .map(lock_or_step)
        .collect();
    assert_eq!(framing, ["lock read", "lock none", "snapshot"]);
    let mut events = CollectProgress::default();
    let options = app.restore_options(&report.path, 1, json!({"purge": true}));
    tenant_kit::restore::restore(&options, &mut events).unwrap();
    let steps: Vec<String> = events.events.iter().map(|e| e.step().to_string()).collect();
    for s in [
        "start",
        "verify",
        "plan",
        "purge_progress",
        "restore_progress",
        "commit",
        "done",
    ] {
        assert!(
            steps.contains(&s.to_string()),
            "restore step {s} missing: {steps:?}"
        );
    }
    for e in &events.events {
        assert!(e
            .get("at")
            .and_then(|v| v.as_str())
            .is_some_and(|t| t.ends_with('Z')));
    }
    // With and without purge (which adds a step per table): the plan's
    // steps count up one by one to their announced total, and the lock
    // events frame the plan's read and the write transaction.
    for extra in [json!({"purge": true}), json!({})] {
        let mut events = CollectProgress::default();
        let options = app.restore_options(&report.path, 1, extra.clone());
        tenant_kit::restore::restore(&options, &mut events).unwrap();
        let of = |e: &Event, key: &str| e.get(key).and_then(|v| v.as_u64()).unwrap();
        let planned: Vec<(u64, u64)> = events
            .events
            .iter()
            .filter(|e| e.step() == "plan_progress")
            .map(|e| (of(e, "processed"), of(e, "total")))
            .collect();
        let total = planned.last().expect("plan_progress events").1;
        let expected: Vec<(u64, u64)> = (1..=total).map(|n| (n, total)).collect();
        assert_eq!(planned, expected, "{extra}");
        let framing: Vec<String> = events
            .events
            .iter()
            .filter(|e| ["lock", "plan", "commit"].contains(&e.step().name()))
            .map(lock_or_step)
            .collect();
        assert_eq!(
            framing,
            [
                "lock read",
                "lock none",
                "plan",
                "lock write",
                "commit",
                "lock none"
            ],
            "{extra}"
        );
    }
}

/// "lock read" for a lock event, the step for the others.
fn lock_or_step(e: &Event) -> String {
    match (e.step().name(), e.get("state").and_then(|v| v.as_str())) {
        ("lock", Some(state)) => format!("lock {state}"),
        (step, _) => step.to_string(),
    }
}

#[test]
fn backups_in_the_same_second_get_distinct_names() {
    let app = App::new();
    let paths: Vec<_> = (0..3).map(|_| app.backup(1).path).collect();
    let mut names: Vec<_> = paths
        .iter()
        .map(|p| p.file_name().unwrap().to_owned())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 3, "{paths:?}");
    for p in &paths {
        tenant_kit::verify::verify_path(p).unwrap();
    }
}

/// Runs `sql` through a second connection when the restore announces its
/// plan: between the plan and the write lock, as another process might.
struct WriteAfterPlan {
    db: std::path::PathBuf,
    sql: &'static str,
    replans: u32,
}

impl tenant_kit::Progress for WriteAfterPlan {
    fn emit(&mut self, event: Event) -> tenant_kit::Result<()> {
        if event.step() == "plan" {
            Connection::open(&self.db)
                .unwrap()
                .execute_batch(self.sql)
                .unwrap();
            self.replans += 1;
        }
        Ok(())
    }
}

#[test]
fn a_conflict_committed_between_plan_and_lock_is_found_under_the_lock() {
    let app = App::new();
    let report = app.backup(1);
    app.conn()
        .execute_batch("DELETE FROM time_entries WHERE id = 1005")
        .unwrap();
    // The plan sees 1005 missing (an insert); then tenant 2 takes the key.
    let mut progress = WriteAfterPlan {
        db: app.db.clone(),
        sql: "INSERT INTO time_entries (id, tenant_id, task_id, user_id, minutes, rate, created_at, updated_at)
              VALUES (1005, 2, 2001, 2001, 1, 0.1, 'x', 'x')",
        replans: 0,
    };
    let before_restore_and_write = {
        let err = tenant_kit::restore::restore(
            &app.restore_options(&report.path, 1, json!({"purge": true})),
            &mut progress,
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        assert!(err.to_string().contains("time_entries id=1005"), "{err}");
        app.snapshot()
    };
    assert_eq!(progress.replans, 1);
    let owner: i64 = app
        .conn()
        .query_row(
            "SELECT tenant_id FROM time_entries WHERE id = 1005",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(owner, 2, "tenant 2's row is untouched");
    let tasks_of_1: i64 = app
        .conn()
        .query_row("SELECT count(*) FROM tasks WHERE tenant_id = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(tasks_of_1, 6, "nothing was purged");
    assert_eq!(app.snapshot(), before_restore_and_write);
}

#[test]
fn a_harmless_write_between_plan_and_lock_is_planned_again_and_restored() {
    let app = App::new();
    let before = app.snapshot();
    let report = app.backup(1);
    let mut progress = WriteAfterPlan {
        db: app.db.clone(),
        sql: "UPDATE tasks SET title = 'edited meanwhile' WHERE id = 1003",
        replans: 0,
    };
    let result = tenant_kit::restore::restore(
        &app.restore_options(&report.path, 1, json!({"purge": true})),
        &mut progress,
    )
    .unwrap();
    assert_eq!(progress.replans, 1);
    assert_eq!(
        result.planned["tasks"].update, 1,
        "the new plan saw the edit"
    );
    assert_eq!(app.snapshot(), before);
}

/// With `ON DELETE CASCADE` children, a parent the archive also has must be
/// updated in place, not deleted and inserted again: the delete would take
/// the children with it, and children that are kept as they are would not
/// come back.
#[test]
fn kept_children_survive_cascading_foreign_keys() {
    let small = SmallDb::new(
        "CREATE TABLE tenants (id integer PRIMARY KEY, name text);
         CREATE TABLE tasks (id integer PRIMARY KEY, tenant_id integer NOT NULL REFERENCES tenants(id), title text);
         CREATE TABLE notes (id integer PRIMARY KEY, tenant_id integer NOT NULL REFERENCES tenants(id),
                             task_id integer NOT NULL REFERENCES tasks(id) ON DELETE CASCADE, body text);
         INSERT INTO tenants VALUES (1, 'one'), (2, 'two');
         INSERT INTO tasks VALUES (1, 1, 'a'), (2, 1, 'b'), (3, 2, 'c');
         INSERT INTO notes VALUES (1, 1, 1, 'on a'), (2, 1, 2, 'on b'), (3, 2, 3, 'on c');",
    );
    let before = snapshot(&small.conn);
    let archive = small.backup(1);
    small
        .conn
        .execute_batch("UPDATE tasks SET title = 'edited' WHERE id = 1")
        .unwrap();
    let result = small.restore(&archive, 1, json!({"purge": true})).unwrap();
    assert_eq!(result.planned["tasks"].update, 1);
    assert_eq!(result.planned["notes"].unchanged, 2);
    assert_eq!(
        snapshot(&small.conn),
        before,
        "notes of the edited task are still there"
    );
}

/// A purge that would leave another tenant's row pointing at a deleted row
/// (tenant 2's task at tenant 1's user, a declared foreign key) is refused
/// at commit, and nothing changes; an old dangling reference elsewhere is
/// not blamed on the restore.
#[test]
fn a_restore_that_breaks_foreign_keys_changes_nothing() {
    let small = SmallDb::new(
        "CREATE TABLE tenants (id integer PRIMARY KEY, name text);
         CREATE TABLE users (id integer PRIMARY KEY, tenant_id integer NOT NULL REFERENCES tenants(id), name text);
         CREATE TABLE tasks (id integer PRIMARY KEY, tenant_id integer NOT NULL REFERENCES tenants(id),
                             user_id integer REFERENCES users(id), title text);
         INSERT INTO tenants VALUES (1, 'one'), (2, 'two');
         INSERT INTO users VALUES (1, 1, 'ann'), (2, 2, 'bob');
         INSERT INTO tasks VALUES (1, 1, 1, 'a'), (2, 2, 2, 'b'), (3, 2, 999, 'dangling since long ago');
         UPDATE tasks SET user_id = 1 WHERE id = 2;",
    );
    let archive = small.backup(1);
    let before = snapshot(&small.conn);
    let purge_only = json!({"purge": true, "restore": false});
    let err = small.restore(&archive, 1, purge_only.clone()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(err.to_string().contains("tasks"), "{err}");
    assert_eq!(snapshot(&small.conn), before);
    // Without tenant 2's reference to tenant 1's user the purge goes
    // through, task 3's old dangling reference notwithstanding.
    small
        .conn
        .execute_batch("UPDATE tasks SET user_id = 2 WHERE id = 2")
        .unwrap();
    small.restore(&archive, 1, purge_only).unwrap();
    let left: i64 = small
        .conn
        .query_row("SELECT count(*) FROM users WHERE tenant_id = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(left, 0);
}

/// A blob two tenants attach (an odd state a script could leave) belongs to
/// both: a purge of one tenant leaves it, its file and the other tenant's
/// attachment alone.
#[test]
fn a_purge_leaves_rows_another_tenant_shares() {
    let app = App::new();
    let archive = app.backup(1).path;
    // Tenant 2's attachment 2002 now uses tenant 1's blob 1002.
    app.conn()
        .execute_batch("UPDATE active_storage_attachments SET blob_id = 1002 WHERE id = 2002")
        .unwrap();
    let result = app
        .restore(&archive, 1, json!({"purge": true, "restore": false}))
        .unwrap();
    // Tenant 1's attachments (1001, 1002, 1009) are its own, whatever blob
    // they use; the shared blob stays, as tenant 2 still attaches it.
    assert_eq!(result.purged["active_storage_attachments"], 3);
    let (attachment, blob): (i64, i64) = app
        .conn()
        .query_row(
            "SELECT (SELECT count(*) FROM active_storage_attachments WHERE id = 2002),
                    (SELECT count(*) FROM active_storage_blobs WHERE id = 1002)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((attachment, blob), (1, 1));
    assert!(
        blob_path(&app.storage, &blob_key(1, 2)).exists(),
        "the shared file stays"
    );
}

#[test]
fn a_shared_blob_brings_neither_tenant_the_others_attachment() {
    let app = App::new();
    // Tenant 2's attachment 2002 uses tenant 1's blob 1002 (a blob copied
    // across tenants by its signed id); tenant 2's own blob 2002 goes.
    app.conn()
        .execute_batch(
            "UPDATE active_storage_attachments SET blob_id = 1002 WHERE id = 2002;
             DELETE FROM active_storage_blobs WHERE id = 2002;",
        )
        .unwrap();
    std::fs::remove_file(blob_path(&app.storage, &blob_key(2, 2))).unwrap();
    for (tenant, own, others) in [(1, 1002, 2002), (2, 2002, 1002)] {
        let report = app.backup(tenant);
        let attachments: Vec<i64> = dump_lines(&report.path)
            .iter()
            .filter(|l| l["table"] == "active_storage_attachments")
            .map(|l| l["row"]["id"].as_i64().unwrap())
            .collect();
        assert!(
            attachments.contains(&own),
            "tenant {tenant}: {attachments:?}"
        );
        assert!(
            !attachments.contains(&others),
            "tenant {tenant}'s archive holds the other tenant's attachment: {attachments:?}"
        );
        // The shared blob and its file go into both archives.
        let blobs: Vec<i64> = dump_lines(&report.path)
            .iter()
            .filter(|l| l["table"] == "active_storage_blobs")
            .map(|l| l["row"]["id"].as_i64().unwrap())
            .collect();
        assert!(blobs.contains(&1002), "tenant {tenant}: {blobs:?}");
    }

    // The app removes tenant 2 (the shared blob stays: tenant 1 attaches
    // it); restoring tenant 2 reuses the blob and its file.
    let archive = app.backup(2).path;
    let before = app.snapshot();
    let files_before = app.storage_files();
    app.conn()
        .execute_batch(
            "DELETE FROM active_storage_attachments WHERE id IN (2001, 2002, 2009);
             DELETE FROM active_storage_variant_records WHERE id = 2001;
             DELETE FROM active_storage_blobs WHERE id IN (2001, 2009);
             DELETE FROM comments WHERE tenant_id = 2; DELETE FROM settings WHERE tenant_id = 2;
             DELETE FROM tags_tasks WHERE task_id IN (SELECT id FROM tasks WHERE tenant_id = 2);
             DELETE FROM time_entries WHERE tenant_id = 2; DELETE FROM tags WHERE tenant_id = 2;
             UPDATE tasks SET parent_id = NULL WHERE tenant_id = 2;
             DELETE FROM tasks WHERE tenant_id = 2; DELETE FROM projects WHERE tenant_id = 2;
             DELETE FROM teams WHERE tenant_id = 2; DELETE FROM users WHERE tenant_id = 2;",
        )
        .unwrap();
    for n in [1, 9] {
        std::fs::remove_file(blob_path(&app.storage, &blob_key(2, n))).unwrap();
    }
    let result = app.restore(&archive, 2, json!({})).unwrap();
    assert_eq!(result.blobs.reused, 1, "{:?}", result.blobs);
    assert_eq!(app.snapshot(), before);
    assert_eq!(app.storage_files(), files_before);
}

#[test]
fn keyword_names_and_a_reply_chain_without_tenant_column_round_trip() {
    // Tables named by SQL keywords and with spaces, columns named like the
    // dump line's own keys, a self-referencing table reached only through
    // its parent chain, a WITHOUT ROWID join table; in WAL mode.
    let small = SmallDb::new(
        r#"PRAGMA journal_mode = WAL;
        CREATE TABLE tenants (id integer PRIMARY KEY, name text);
        CREATE TABLE "order" (id integer PRIMARY KEY, tenant_id integer NOT NULL REFERENCES tenants, "group" text, "table" text, "row" text);
        CREATE TABLE "line items" (id integer PRIMARY KEY, order_id integer NOT NULL REFERENCES "order", qty integer);
        CREATE TABLE replies (id integer PRIMARY KEY, order_id integer REFERENCES "order", parent_id integer REFERENCES replies, body text);
        CREATE TABLE order_tags (order_id integer NOT NULL REFERENCES "order", tag text NOT NULL, PRIMARY KEY (order_id, tag)) WITHOUT ROWID;"#,
    );
    let mut reply = 0;
    for t in 1..=3i64 {
        small
            .conn
            .execute("INSERT INTO tenants VALUES (?1, 'x')", [t])
            .unwrap();
        for i in 0..3i64 {
            let order = t * 100 + i;
            small
                .conn
                .execute(
                    r#"INSERT INTO "order" VALUES (?1, ?2, 'g', 'tbl', 'row "quoted"')"#,
                    [order, t],
                )
                .unwrap();
            small
                .conn
                .execute(
                    r#"INSERT INTO "line items" VALUES (?1, ?2, ?3)"#,
                    [order * 10, order, i],
                )
                .unwrap();
            small
                .conn
                .execute("INSERT INTO order_tags VALUES (?1, 'tag')", [order])
                .unwrap();
            // A thread: the first reply names the order, the others only
            // their parent reply.
            reply += 1;
            small
                .conn
                .execute(
                    "INSERT INTO replies VALUES (?1, ?2, NULL, 'top')",
                    [reply, order],
                )
                .unwrap();
            for _ in 0..2 {
                reply += 1;
                small
                    .conn
                    .execute(
                        "INSERT INTO replies VALUES (?1, NULL, ?2, 'reply')",
                        [reply, reply - 1],
                    )
                    .unwrap();
            }
        }
    }
    let archive = small.backup(2);
    let lines = dump_lines(&archive);
    let count = |table: &str| lines.iter().filter(|l| l["table"] == table).count();
    assert_eq!(
        [
            count("tenants"),
            count("order"),
            count("line items"),
            count("replies"),
            count("order_tags")
        ],
        [1, 3, 3, 9, 3]
    );
    let before = snapshot(&small.conn);
    small
        .conn
        .execute_batch(
            r#"DELETE FROM replies WHERE id BETWEEN 10 AND 18;
               DELETE FROM "line items" WHERE order_id BETWEEN 200 AND 299;
               DELETE FROM order_tags WHERE order_id BETWEEN 200 AND 299;
               DELETE FROM "order" WHERE tenant_id = 2;"#,
        )
        .unwrap();
    small.restore(&archive, 2, json!({})).unwrap();
    assert_eq!(snapshot(&small.conn), before);
    small.restore(&archive, 2, json!({"purge": true})).unwrap();
    assert_eq!(snapshot(&small.conn), before);
}

/// A tenant id may come as text (a Rails param) for an INTEGER tenant
/// column, or as an integer for a TEXT one: SQLite stores and compares it
/// in the column's affinity, and so do backup and restore. The archive
/// records the stored form, so it verifies and restores; before, a backup
/// of `"1"` wrote an archive whose rows did not match its own manifest.
#[test]
fn a_tenant_id_in_the_other_storage_class_names_the_same_tenant() {
    let app = App::new();
    let mut options = app.backup_options(1);
    options.tenant_id = tenant_kit::TenantId::Text("1".into());
    let report = tenant_kit::backup::backup(&options, &mut CollectProgress::default()).unwrap();
    assert_eq!(report.rows, app.backup(1).rows);
    assert!(
        report
            .path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("tenant_1_"),
        "{}",
        report.path.display()
    );
    let verified = tenant_kit::verify::verify_path(&report.path).unwrap();
    assert_eq!(
        serde_json::to_value(&verified.tenant_id).unwrap(),
        json!(1),
        "the manifest holds the stored (integer) id"
    );
    let before = app.snapshot();
    let restored = app
        .restore(&report.path, 1, json!({"purge": true}))
        .unwrap();
    assert_eq!(restored.conflict_count, 0);
    let mut restore_options = app.restore_options(&report.path, 1, json!({"purge": true}));
    restore_options.tenant_id = Some(tenant_kit::TenantId::Text("1".into()));
    tenant_kit::restore::restore(&restore_options, &mut CollectProgress::default())
        .expect("\"1\" is tenant 1 of an INTEGER column");
    assert_eq!(app.snapshot(), before);
    // SQLite's own conversion: "01" is stored (and compared) as 1 too;
    // text that is no number is no tenant here.
    options.tenant_id = tenant_kit::TenantId::Text("01".into());
    let report = tenant_kit::backup::backup(&options, &mut CollectProgress::default()).unwrap();
    assert!(tenant_kit::verify::verify_path(&report.path).is_ok());
    options.tenant_id = tenant_kit::TenantId::Text("1a".into());
    let err = tenant_kit::backup::backup(&options, &mut CollectProgress::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Argument, "{err}");

    // The other way round: a TEXT tenant column, an integer id.
    let small = SmallDb::new(
        "CREATE TABLE accounts (id text PRIMARY KEY);
         CREATE TABLE notes (id integer PRIMARY KEY, tenant_id text NOT NULL REFERENCES accounts, body text);
         INSERT INTO accounts VALUES ('7'), ('8');
         INSERT INTO notes VALUES (1, '7', 'mine'), (2, '8', 'theirs');",
    );
    let options: tenant_kit::backup::BackupOptions = serde_json::from_value(json!({
        "database": small.db, "tenant_id": 7, "output_dir": small.dir.path()
    }))
    .unwrap();
    let report = tenant_kit::backup::backup(&options, &mut CollectProgress::default()).unwrap();
    assert_eq!(report.tables.get("notes"), Some(&1));
    tenant_kit::verify::verify_path(&report.path).unwrap();
    small
        .restore(&report.path, 7, json!({"purge": true}))
        .unwrap();
}
