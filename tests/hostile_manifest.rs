//! Hostile archives, the manifest: format, version, counts, and names that only the database can refuse.
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
fn count_mismatch() {
    assert_refused(&MANIFEST_COUNT_MISMATCH);
}

#[test]
fn unknown_major_version() {
    assert_refused(&MANIFEST_UNKNOWN_MAJOR_VERSION);
}

#[test]
fn not_our_format() {
    assert_refused(&MANIFEST_NOT_OUR_FORMAT);
}

#[test]
fn crafted_table() {
    assert_refused(&MANIFEST_CRAFTED_TABLE);
}

#[test]
fn crafted_column() {
    assert_refused(&MANIFEST_CRAFTED_COLUMN);
}

/// The archive is data, never structure: which table is the tenants table,
/// that a tenant table carries the tenant column, and each table's key
/// come from the target database. An edited manifest that says otherwise
/// is an ArchiveError (in `verify` where it can tell) and changes nothing.
#[test]
fn the_archive_cannot_decide_the_structure_a_restore_acts_on() {
    let app = App::new();
    let valid = Parts::from_archive(&app.backup(1).path);
    let tmp = app.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let db_before = file_bytes(&app.db);
    let files_before = app.storage_files();

    // An admin of tenant 2 appended to `users`, which the manifest now
    // calls the tenants table (whose row the dump check used to exempt).
    let admin_of = |claim_row: bool| {
        let mut p = valid.clone();
        p.manifest["tenant"]["table"] = json!("users");
        let text = String::from_utf8(p.dump.clone()).unwrap();
        let mut out = String::new();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let keep = !(claim_row && v["table"] == "users");
            if keep {
                out.push_str(line);
                out.push('\n');
            }
        }
        out.push_str(
            &json!({"table": "users", "row": {
            "id": 1099, "tenant_id": 2, "email": "evil@example", "name": "x",
            "role": "admin", "created_at": "x", "updated_at": "x"}})
            .to_string(),
        );
        out.push('\n');
        // Keep the dump in table order: move the new line after the others.
        let mut lines: Vec<&str> = out.lines().collect();
        lines.sort_by_key(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let table = v["table"].as_str().unwrap().to_string();
            p.manifest["tables"]
                .as_array()
                .unwrap()
                .iter()
                .position(|t| t["name"] == table.as_str())
        });
        p.dump = lines
            .iter()
            .flat_map(|l| [*l, "\n"])
            .collect::<String>()
            .into_bytes();
        for t in p.manifest["tables"].as_array_mut().unwrap() {
            if t["name"] == "users" {
                t["rows"] = json!(if claim_row {
                    1
                } else {
                    t["rows"].as_u64().unwrap() + 1
                });
                if claim_row {
                    t["scope"] = json!("tenant_row");
                }
            }
            if t["name"] == "tenants" && claim_row {
                t["scope"] = json!("tenant_column");
            }
        }
        p.rehash_dump();
        p
    };
    // A table's tenant column (or key) left out of its manifest entry and
    // of its rows: the rows would land in no tenant (or take fresh keys).
    let without = |table: &str, column: &str| {
        let mut p = valid.clone();
        p.edit_rows(table, |v| {
            v["row"].as_object_mut().unwrap().remove(column);
        });
        for t in p.manifest["tables"].as_array_mut().unwrap() {
            if t["name"] == table {
                t["columns"].as_array_mut().unwrap().retain(|c| c != column);
            }
        }
        p
    };
    // (what, archive, verify refuses it too, words of the message)
    let cases: Vec<(&str, Parts, bool, &str)> = vec![
        (
            "users named the tenants table",
            admin_of(false),
            true,
            "tenants table",
        ),
        (
            "users named the tenants table, its entry the tenant's row",
            admin_of(true),
            true,
            "manifest",
        ),
        (
            "tasks without tenant_id",
            without("tasks", "tenant_id"),
            true,
            "leave",
        ),
        (
            "the tenants row without its id",
            without("tenants", "id"),
            false,
            "key column id",
        ),
        (
            "projects without their id",
            without("projects", "id"),
            false,
            "key column id",
        ),
    ];
    for (what, parts, verify_tells, words) in cases {
        let path = app.dir.path().join("edited.tar.gz");
        std::fs::write(&path, gzip(&tar_bytes(&regular(parts.entries())))).unwrap();
        if verify_tells {
            let err = tenant_kit::verify::verify_path(&path).expect_err(what);
            assert_eq!(err.kind(), ErrorKind::Archive, "{what}: {err}");
        }
        for dry_run in [true, false] {
            let err = app
                .restore(
                    &path,
                    1,
                    json!({"dry_run": dry_run, "purge": true, "tmp_dir": tmp}),
                )
                .expect_err(what);
            assert_eq!(err.kind(), ErrorKind::Archive, "{what}: {err}");
            assert!(err.to_string().contains(words), "{what}: {err}");
        }
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
}
