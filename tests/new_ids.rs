//! Copies with fresh ids (`new_ids: true`): a tenant's archive restored as
//! a complete copy whose every row has a new key and whose every known
//! reference follows it, into an existing tenant (`remap: true`), into a
//! new one (`tenant_id: nil`), or into another database whose tenants use
//! the same ids. The original and every other tenant stay exactly as they
//! were.

mod common;

use common::{blob_path, snapshot, App, SmallDb};
use rusqlite::Connection;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use tenant_kit::progress::{CollectProgress, Event, Progress};
use tenant_kit::TenantId;

/// Tables of the sample app with the tenant column.
const TENANT_TABLES: [&str; 9] = [
    "users",
    "teams",
    "projects",
    "tasks",
    "time_entries",
    "tags",
    "comments",
    "settings",
    "background_jobs",
];

/// One tenant of the sample app, as the app sees it: rows per table and
/// every reference that leaves the tenant or leads nowhere.
#[derive(Debug, PartialEq)]
struct TenantView {
    rows: BTreeMap<&'static str, i64>,
    /// (what, how many): references that do not resolve inside the tenant.
    broken: Vec<(&'static str, i64)>,
    blob_keys: Vec<String>,
}

/// SQL counting a tenant's references (`?1` the tenant) that do not
/// resolve to a row of the same tenant.
const BROKEN: [(&str, &str); 14] = [
    ("projects.team_id", "SELECT count(*) FROM projects p WHERE p.tenant_id = ?1 AND p.team_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM teams t WHERE t.id = p.team_id AND t.tenant_id = ?1)"),
    ("tasks.project_id", "SELECT count(*) FROM tasks x WHERE x.tenant_id = ?1 AND NOT EXISTS (SELECT 1 FROM projects p WHERE p.id = x.project_id AND p.tenant_id = ?1)"),
    ("tasks.user_id", "SELECT count(*) FROM tasks x WHERE x.tenant_id = ?1 AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = x.user_id AND u.tenant_id = ?1)"),
    ("tasks.parent_id", "SELECT count(*) FROM tasks x WHERE x.tenant_id = ?1 AND x.parent_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM tasks p WHERE p.id = x.parent_id AND p.tenant_id = ?1)"),
    ("time_entries.task_id", "SELECT count(*) FROM time_entries e WHERE e.tenant_id = ?1 AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = e.task_id AND t.tenant_id = ?1)"),
    ("time_entries.user_id", "SELECT count(*) FROM time_entries e WHERE e.tenant_id = ?1 AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = e.user_id AND u.tenant_id = ?1)"),
    ("comments.commentable", "SELECT count(*) FROM comments c WHERE c.tenant_id = ?1 AND NOT EXISTS (SELECT 1 FROM tasks t WHERE c.commentable_type = 'Task' AND t.id = c.commentable_id AND t.tenant_id = ?1 UNION ALL SELECT 1 FROM projects p WHERE c.commentable_type = 'Project' AND p.id = c.commentable_id AND p.tenant_id = ?1)"),
    ("comments.user_id", "SELECT count(*) FROM comments c WHERE c.tenant_id = ?1 AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = c.user_id AND u.tenant_id = ?1)"),
    // A polymorphic id kept as text stays text.
    ("settings.target_id", "SELECT count(*) FROM settings s WHERE s.tenant_id = ?1 AND NOT (typeof(s.target_id) = 'text' AND EXISTS (SELECT 1 FROM users u WHERE s.target_type = 'User' AND CAST(u.id AS TEXT) = s.target_id AND u.tenant_id = ?1))"),
    // Join rows: both ends the tenant's; one per (tag, task) of the tenant.
    ("tags_tasks", "SELECT (SELECT count(*) FROM tags_tasks j JOIN tags g ON g.id = j.tag_id WHERE g.tenant_id = ?1) - (SELECT count(*) FROM tags_tasks j JOIN tags g ON g.id = j.tag_id JOIN tasks t ON t.id = j.task_id WHERE g.tenant_id = ?1 AND t.tenant_id = ?1)"),
    ("attachments.record", "SELECT 3 - count(*) FROM active_storage_attachments a WHERE (a.record_type = 'Task' AND a.record_id IN (SELECT id FROM tasks WHERE tenant_id = ?1)) OR (a.record_type = 'ActiveStorage::VariantRecord' AND a.record_id IN (SELECT v.id FROM active_storage_variant_records v JOIN active_storage_attachments o ON o.blob_id = v.blob_id AND o.record_type = 'Task' JOIN tasks t ON t.id = o.record_id WHERE t.tenant_id = ?1))"),
    ("attachments.blob_id", "SELECT count(*) FROM active_storage_attachments a JOIN tasks t ON a.record_type = 'Task' AND t.id = a.record_id WHERE t.tenant_id = ?1 AND NOT EXISTS (SELECT 1 FROM active_storage_blobs b WHERE b.id = a.blob_id)"),
    // A blob attached to this tenant's rows and to another's.
    ("blobs shared", "SELECT count(*) FROM active_storage_attachments a JOIN tasks t ON a.record_type = 'Task' AND t.id = a.record_id WHERE t.tenant_id = ?1 AND EXISTS (SELECT 1 FROM active_storage_attachments o JOIN tasks u ON o.record_type = 'Task' AND u.id = o.record_id WHERE o.blob_id = a.blob_id AND u.tenant_id <> ?1)"),
    ("variant_records.blob_id", "SELECT 1 - count(*) FROM active_storage_variant_records v JOIN active_storage_attachments a ON a.blob_id = v.blob_id AND a.record_type = 'Task' JOIN tasks t ON t.id = a.record_id WHERE t.tenant_id = ?1"),
];

fn view(conn: &Connection, tenant: i64) -> TenantView {
    let count = |sql: &str| -> i64 { conn.query_row(sql, [tenant], |r| r.get(0)).unwrap() };
    let rows = TENANT_TABLES
        .iter()
        .map(|t| {
            (
                *t,
                count(&format!("SELECT count(*) FROM {t} WHERE tenant_id = ?1")),
            )
        })
        .collect();
    let broken = BROKEN
        .iter()
        .map(|(what, sql)| (*what, count(sql)))
        .filter(|(_, n)| *n != 0)
        .collect();
    TenantView {
        rows,
        broken,
        blob_keys: blob_keys(conn, tenant),
    }
}

/// Keys of the blobs a tenant's rows use: attached to its tasks, and to
/// the variant records of those blobs.
fn blob_keys(conn: &Connection, tenant: i64) -> Vec<String> {
    let mut keys: Vec<String> = conn
        .prepare(
            "SELECT b.key FROM active_storage_blobs b JOIN active_storage_attachments a ON a.blob_id = b.id
              WHERE (a.record_type = 'Task' AND a.record_id IN (SELECT id FROM tasks WHERE tenant_id = ?1))
                 OR (a.record_type = 'ActiveStorage::VariantRecord' AND a.record_id IN (
                     SELECT v.id FROM active_storage_variant_records v JOIN active_storage_attachments o
                       ON o.blob_id = v.blob_id AND o.record_type = 'Task'
                       JOIN tasks t ON t.id = o.record_id WHERE t.tenant_id = ?1))",
        )
        .unwrap()
        .query_map([tenant], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    keys.sort();
    keys
}

/// Blob files by content, for the tenant's keys: each must exist.
fn files_of(storage: &Path, keys: &[String]) -> Vec<Vec<u8>> {
    let mut files: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| {
            std::fs::read(blob_path(storage, k))
                .unwrap_or_else(|e| panic!("blob file of key {k}: {e}"))
        })
        .collect();
    files.sort();
    files
}

/// Tasks of the tenant, by title, with the titles of their project and
/// parent: the shape of the data, whatever the ids.
fn task_shape(conn: &Connection, tenant: i64) -> Vec<(String, String, Option<String>)> {
    let mut out: Vec<(String, String, Option<String>)> = conn
        .prepare(
            "SELECT t.title, p.name, (SELECT q.title FROM tasks q WHERE q.id = t.parent_id)
               FROM tasks t JOIN projects p ON p.id = t.project_id WHERE t.tenant_id = ?1",
        )
        .unwrap()
        .query_map([tenant], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    out.sort();
    out
}

fn add_empty_tenant(conn: &Connection, id: i64) {
    conn.execute(
        "INSERT INTO tenants(id, name, created_at, updated_at) VALUES (?1, ?2, 'x', 'x')",
        rusqlite::params![id, format!("Empty {id}")],
    )
    .unwrap();
}

/// Check one copy against the original: same rows, every reference inside
/// the copy, blob keys of its own with the original's files.
fn assert_copy(app: &App, original: &TenantView, copy: i64) -> TenantView {
    let conn = app.conn();
    let seen = view(&conn, copy);
    assert_eq!(seen.rows, original.rows, "rows of tenant {copy}");
    assert_eq!(seen.broken, vec![], "references of tenant {copy}");
    assert_eq!(task_shape(&conn, copy), task_shape(&conn, 1));
    assert_eq!(seen.blob_keys.len(), original.blob_keys.len());
    assert!(
        seen.blob_keys
            .iter()
            .all(|k| !original.blob_keys.contains(k)),
        "tenant {copy} has keys of its own: {:?}",
        seen.blob_keys
    );
    assert_eq!(
        files_of(&app.storage, &seen.blob_keys),
        files_of(&app.storage, &original.blob_keys)
    );
    seen
}

#[test]
fn copying_a_tenant_twice_into_existing_tenants_makes_two_independent_copies() {
    let app = App::new();
    let conn = app.conn();
    add_empty_tenant(&conn, 4);
    add_empty_tenant(&conn, 5);
    let archive = app.backup(1).path;
    let original = view(&conn, 1);
    assert_eq!(original.broken, vec![], "the fixture is consistent");
    let before = app.snapshot();
    let files_before = app.storage_files();

    let mut reports = Vec::new();
    for target in [4, 5] {
        let report = app
            .restore(&archive, target, json!({"remap": true, "new_ids": true}))
            .unwrap();
        assert_eq!(report.tenant_id, TenantId::Integer(target));
        assert!(!report.tenant_row_created, "tenant {target} existed");
        reports.push(report);
    }
    let copies: Vec<TenantView> = [4, 5]
        .iter()
        .map(|&t| assert_copy(&app, &original, t))
        .collect();
    assert!(copies[0]
        .blob_keys
        .iter()
        .all(|k| !copies[1].blob_keys.contains(k)));

    // Per-table counts of new ids: every row of the archive with a key.
    let expected: BTreeMap<String, u64> = [
        ("active_storage_attachments", 3),
        ("active_storage_blobs", 3),
        ("active_storage_variant_records", 1),
        ("comments", 2),
        ("projects", 2),
        ("settings", 1),
        ("tags", 2),
        ("tasks", 6),
        ("teams", 1),
        ("time_entries", 6),
        ("users", 3),
    ]
    .into_iter()
    .map(|(t, n)| (t.to_string(), n))
    .collect();
    for report in &reports {
        assert_eq!(report.id_map, expected);
        assert_eq!(report.renamed_keys.len(), 3, "every blob key is new");
    }

    // Nothing of the original or of any other tenant changed; what was
    // added is the two copies and nothing else.
    let after = app.snapshot();
    common::assert_rows_kept(&before, &after);
    let copied_rows: u64 = 2 * (expected.values().sum::<u64>() + 4); // + tags_tasks
    let grown: usize = after
        .iter()
        .filter(|(t, _)| *t != "sqlite_sequence")
        .map(|(t, rows)| rows.len() - before[t].len())
        .sum();
    assert_eq!(grown as u64, copied_rows);
    let files_after = app.storage_files();
    for (path, bytes) in &files_before {
        assert_eq!(files_after.get(path), Some(bytes), "{}", path.display());
    }
    assert_eq!(files_after.len(), files_before.len() + 6);
    for t in [1, 2, 3] {
        assert_eq!(view(&conn, t).broken, vec![], "tenant {t}");
    }
}

#[test]
fn tenant_id_nil_makes_a_new_tenant_and_returns_its_id() {
    let app = App::new();
    let archive = app.backup(1).path;
    let original = view(&app.conn(), 1);
    let before = app.snapshot();
    let mut made = Vec::new();
    for _ in 0..2 {
        let options = app.restore_options(&archive, 0, json!({"tenant_id": null, "new_ids": true}));
        let report =
            tenant_kit::restore::restore(&options, &mut CollectProgress::default()).unwrap();
        assert!(report.tenant_row_created);
        made.push(report.tenant_id.clone());
    }
    assert_eq!(made, vec![TenantId::Integer(4), TenantId::Integer(5)]);
    let conn = app.conn();
    for t in [4, 5] {
        let name: String = conn
            .query_row("SELECT name FROM tenants WHERE id = ?1", [t], |r| r.get(0))
            .unwrap();
        assert_eq!(
            name, "Tenant 1",
            "the archive's tenant row, under the new id"
        );
        assert_copy(&app, &original, t);
    }
    common::assert_rows_kept(&before, &app.snapshot());
}

#[test]
fn tenant_id_nil_without_new_ids_is_refused() {
    let app = App::new();
    let archive = app.backup(1).path;
    let options = app.restore_options(&archive, 0, json!({"tenant_id": null}));
    let err = tenant_kit::restore::restore(&options, &mut CollectProgress::default()).unwrap_err();
    assert_eq!(err.kind(), tenant_kit::ErrorKind::Argument);
    assert!(err.to_string().contains("new_ids: true"), "{err}");
}

#[test]
fn a_move_into_another_database_whose_tenants_use_the_same_ids() {
    let source = App::new();
    let archive = source.backup(1).path;
    let original = view(&source.conn(), 1);
    let original_files = files_of(&source.storage, &original.blob_keys);
    // Another shard with tenants 1..3 of its own, same ids, same keys.
    let target = App::new();
    // Its blobs have keys of their own: the archive's are free there, and
    // still the copy's blobs get new ones (the files are there too).
    target
        .conn()
        .execute(
            "UPDATE active_storage_blobs SET key = 'z' || substr(key, 2)",
            [],
        )
        .unwrap();
    let before = target.snapshot();
    // Without new ids, the same archive collides with the target's rows.
    let refused = target
        .restore(
            &archive,
            0,
            json!({"tenant_id": null, "remap": true, "new_ids": false}),
        )
        .unwrap_err();
    assert_eq!(refused.kind(), tenant_kit::ErrorKind::Argument);

    let options = target.restore_options(&archive, 0, json!({"tenant_id": null, "new_ids": true}));
    let report = tenant_kit::restore::restore(&options, &mut CollectProgress::default()).unwrap();
    assert_eq!(report.tenant_id, TenantId::Integer(4));
    let conn = target.conn();
    let moved = view(&conn, 4);
    assert_eq!(moved.rows, original.rows);
    assert_eq!(moved.broken, vec![]);
    assert_eq!(files_of(&target.storage, &moved.blob_keys), original_files);
    assert!(
        moved
            .blob_keys
            .iter()
            .all(|k| !original.blob_keys.contains(k)),
        "new keys: {:?}",
        moved.blob_keys
    );
    // New ids past the target's own.
    let lowest: i64 = conn
        .query_row("SELECT min(id) FROM tasks WHERE tenant_id = 4", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(lowest, 3007);
    common::assert_rows_kept(&before, &target.snapshot());
    for t in [1, 2, 3] {
        assert_eq!(view(&conn, t).broken, vec![], "tenant {t}");
    }
}

#[test]
fn the_id_map_file_lists_every_new_key() {
    let app = App::new();
    let archive = app.backup(1).path;
    let map_path = app.dir.path().join("ids.jsonl");
    let options = app.restore_options(
        &archive,
        0,
        json!({"tenant_id": null, "new_ids": true, "id_map": map_path}),
    );
    let report = tenant_kit::restore::restore(&options, &mut CollectProgress::default()).unwrap();
    let text = std::fs::read_to_string(&map_path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut per_table: BTreeMap<String, u64> = BTreeMap::new();
    let conn = app.conn();
    for line in &lines {
        let table = line["table"].as_str().unwrap();
        *per_table.entry(table.to_string()).or_default() += 1;
        let (old, new) = (line["old"].as_i64().unwrap(), line["new"].as_i64().unwrap());
        let exists = |id: i64| -> bool {
            conn.query_row(
                &format!("SELECT EXISTS (SELECT 1 FROM \"{table}\" WHERE id = ?1)"),
                [id],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert!(exists(old) && exists(new), "{line}");
        if TENANT_TABLES.contains(&table) {
            let owner: i64 = conn
                .query_row(
                    &format!("SELECT tenant_id FROM \"{table}\" WHERE id = ?1"),
                    [new],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(owner, 4, "{line}");
        }
    }
    assert_eq!(per_table, report.id_map);
    assert!(lines.contains(&json!({"table": "projects", "old": 1001, "new": 3003})));
}

/// A progress sink that, when the plan is made and before the write lock,
/// lets another connection take the ids the plan handed out.
struct TakesIdsMeanwhile {
    db: std::path::PathBuf,
    done: bool,
}

impl Progress for TakesIdsMeanwhile {
    fn emit(&mut self, event: Event) -> tenant_kit::Result<()> {
        if event.step() == "plan" && !self.done {
            self.done = true;
            let conn = Connection::open(&self.db).unwrap();
            // Tenant 2's project takes the id the copy's first project got.
            conn.execute(
                "INSERT INTO projects(id, tenant_id, name, created_at, updated_at) VALUES (3003, 2, 'meanwhile', 'x', 'x')",
                [],
            )
            .unwrap();
        }
        Ok(())
    }
}

#[test]
fn ids_taken_between_plan_and_write_are_moved_past() {
    let app = App::new();
    add_empty_tenant(&app.conn(), 4);
    let archive = app.backup(1).path;
    let original = view(&app.conn(), 1);
    let options = app.restore_options(&archive, 4, json!({"remap": true, "new_ids": true}));
    let mut progress = TakesIdsMeanwhile {
        db: app.db.clone(),
        done: false,
    };
    tenant_kit::restore::restore(&options, &mut progress).unwrap();
    assert!(progress.done);
    let conn = app.conn();
    assert_copy(&app, &original, 4);
    let projects: Vec<(i64, i64)> = conn
        .prepare("SELECT id, tenant_id FROM projects WHERE id >= 3003 ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(projects, vec![(3003, 2), (3004, 4), (3005, 4)]);
}

#[test]
fn keys_that_are_no_integer_or_uuid_are_refused_with_the_table_named() {
    let db = SmallDb::new(
        "CREATE TABLE tenants (id integer PRIMARY KEY, name text);
         CREATE TABLE pages (slug text PRIMARY KEY, tenant_id integer NOT NULL REFERENCES tenants(id), body text);
         INSERT INTO tenants VALUES (1, 'a');
         INSERT INTO pages VALUES ('home', 1, 'hi');",
    );
    let archive = db.backup(1);
    let before = snapshot(&db.conn);
    let err = db
        .restore(&archive, 0, json!({"tenant_id": null, "new_ids": true}))
        .unwrap_err();
    assert_eq!(err.kind(), tenant_kit::ErrorKind::Argument);
    assert!(
        err.to_string()
            .contains("pages.slug holds \"home\", neither an integer nor a UUID"),
        "{err}"
    );
    assert_eq!(snapshot(&db.conn), before);
}

#[test]
fn a_dry_run_plans_the_copy_as_inserts_and_changes_nothing() {
    let app = App::new();
    let archive = app.backup(1).path;
    let before = app.snapshot();
    let files_before = app.storage_files();
    let map_path = app.dir.path().join("ids.jsonl");
    let options = app.restore_options(
        &archive,
        0,
        json!({"tenant_id": null, "new_ids": true, "dry_run": true, "id_map": map_path}),
    );
    let report = tenant_kit::restore::restore(&options, &mut CollectProgress::default()).unwrap();
    assert!(report.dry_run);
    assert_eq!(report.tenant_id, TenantId::Integer(4));
    assert_eq!(report.conflict_count, 0, "{:?}", report.conflicts);
    for (table, n) in &report.id_map {
        let planned = &report.planned[table];
        assert_eq!((planned.insert, planned.update), (*n, 0), "{table}");
    }
    assert_eq!(report.planned["tags_tasks"].insert, 4);
    assert_eq!(app.snapshot(), before);
    assert_eq!(app.storage_files(), files_before);
    assert!(
        !map_path.exists(),
        "no id map for rows that were not written"
    );
}

/// Creates tenant 4 from another connection once the plan is made.
struct CreatesTenantMeanwhile {
    db: std::path::PathBuf,
}

impl Progress for CreatesTenantMeanwhile {
    fn emit(&mut self, event: Event) -> tenant_kit::Result<()> {
        if event.step() == "plan" {
            add_empty_tenant(&Connection::open(&self.db).unwrap(), 4);
        }
        Ok(())
    }
}

#[test]
fn a_new_tenant_taken_before_the_write_is_a_conflict_and_nothing_changes() {
    let app = App::new();
    let archive = app.backup(1).path;
    let files_before = app.storage_files();
    let options = app.restore_options(&archive, 0, json!({"tenant_id": null, "new_ids": true}));
    let mut progress = CreatesTenantMeanwhile { db: app.db.clone() };
    let err = tenant_kit::restore::restore(&options, &mut progress).unwrap_err();
    assert_eq!(err.kind(), tenant_kit::ErrorKind::Conflict);
    assert!(
        err.to_string()
            .contains("tenant 4 was created by someone else"),
        "{err}"
    );
    let conn = app.conn();
    let rows: i64 = TENANT_TABLES
        .iter()
        .map(|t| -> i64 {
            conn.query_row(
                &format!("SELECT count(*) FROM {t} WHERE tenant_id = 4"),
                [],
                |r| r.get(0),
            )
            .unwrap()
        })
        .sum();
    assert_eq!(rows, 0, "nothing written into the other tenant");
    assert_eq!(app.storage_files(), files_before);
}
