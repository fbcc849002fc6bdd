//! Tenant isolation as a property: on random multi-tenant databases, a
//! backup of tenant A holds no row of anyone else, and restoring A (with
//! and without purge, and remapped into a new tenant C) leaves every other
//! tenant's rows byte-identical.

mod common;

use common::snapshot;
use proptest::prelude::*;
use rusqlite::Connection;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use tenant_kit::progress::CollectProgress;

const SCHEMA: &str = "
    CREATE TABLE tenants (id integer PRIMARY KEY, name text);
    CREATE TABLE projects (id integer PRIMARY KEY, tenant_id integer NOT NULL REFERENCES tenants, name text);
    CREATE TABLE tasks (id integer PRIMARY KEY, tenant_id integer NOT NULL, project_id integer, parent_id integer, title text, v);
    CREATE TABLE tags (id integer PRIMARY KEY, tenant_id integer NOT NULL, name text);
    CREATE TABLE tags_tasks (tag_id integer, task_id integer);
    CREATE TABLE active_storage_blobs (id integer PRIMARY KEY, key text NOT NULL UNIQUE, filename text, byte_size integer, checksum text);
    CREATE TABLE active_storage_attachments (id integer PRIMARY KEY, name text, record_type text, record_id integer, blob_id integer REFERENCES active_storage_blobs);
";

#[derive(Debug, Clone)]
struct TenantData {
    projects: usize,
    tasks: Vec<(usize, Option<usize>, i64)>, // (project index, parent task index, value)
    tags: usize,
    links: Vec<(usize, usize)>, // (tag index, task index)
    attachments: Vec<usize>,    // task index per attachment
}

fn tenant_data() -> impl Strategy<Value = TenantData> {
    (1usize..4, 0usize..8, 1usize..4).prop_flat_map(|(projects, tasks, tags)| {
        let task = (0..projects, prop::option::of(0..tasks.max(1)), any::<i64>());
        (
            Just(projects),
            prop::collection::vec(task, tasks),
            Just(tags),
            prop::collection::vec((0..tags, 0..tasks.max(1)), 0..6),
            prop::collection::vec(0..tasks.max(1), 0..3),
        )
            .prop_map(|(projects, tasks, tags, links, attachments)| TenantData {
                projects,
                tasks,
                tags,
                links,
                attachments,
            })
    })
}

/// Build the database: ids interleave across tenants as in a live app.
fn build(conn: &Connection, tenants: &[TenantData]) {
    conn.execute_batch(SCHEMA).unwrap();
    let mut next = 1i64;
    let mut id = || {
        next += 1;
        next
    };
    for (t, _) in tenants.iter().enumerate() {
        conn.execute(
            "INSERT INTO tenants VALUES (?1, ?2)",
            rusqlite::params![t as i64 + 1, format!("T{t}")],
        )
        .unwrap();
    }
    for (t, data) in tenants.iter().enumerate() {
        let tenant = t as i64 + 1;
        let projects: Vec<i64> = (0..data.projects)
            .map(|p| {
                let pid = id();
                conn.execute(
                    "INSERT INTO projects VALUES (?1, ?2, ?3)",
                    rusqlite::params![pid, tenant, format!("p{p}")],
                )
                .unwrap();
                pid
            })
            .collect();
        let task_ids: Vec<i64> = data.tasks.iter().map(|_| id()).collect();
        for (i, (p, parent, v)) in data.tasks.iter().enumerate() {
            let parent_id = parent.and_then(|p| task_ids.get(p).copied());
            conn.execute(
                "INSERT INTO tasks VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                rusqlite::params![
                    task_ids[i],
                    tenant,
                    projects[*p],
                    parent_id,
                    format!("task {i}"),
                    v
                ],
            )
            .unwrap();
        }
        let tag_ids: Vec<i64> = (0..data.tags)
            .map(|g| {
                let gid = id();
                conn.execute(
                    "INSERT INTO tags VALUES (?1, ?2, ?3)",
                    rusqlite::params![gid, tenant, format!("g{g}")],
                )
                .unwrap();
                gid
            })
            .collect();
        if task_ids.is_empty() {
            continue;
        }
        for (g, k) in &data.links {
            if let Some(task) = task_ids.get(*k) {
                conn.execute(
                    "INSERT INTO tags_tasks VALUES (?1, ?2)",
                    rusqlite::params![tag_ids[*g], task],
                )
                .unwrap();
            }
        }
        for k in &data.attachments {
            if let Some(task) = task_ids.get(*k) {
                let bid = id();
                conn.execute(
                    "INSERT INTO active_storage_blobs VALUES (?1, ?2, 'f', 0, NULL)",
                    rusqlite::params![bid, format!("key{bid:0>24}")],
                )
                .unwrap();
                conn.execute(
                    "INSERT INTO active_storage_attachments VALUES (?1, 'files', 'Task', ?2, ?3)",
                    rusqlite::params![id(), task, bid],
                )
                .unwrap();
            }
        }
    }
}

/// Every row that belongs to tenant `t`, by an oracle written for this
/// schema (independent of tenant_kit's discovery).
fn owner_of(conn: &Connection, table: &str, row: &serde_json::Value) -> Option<i64> {
    let q = |sql: &str, p: i64| conn.query_row(sql, [p], |r| r.get::<_, i64>(0)).ok();
    match table {
        "tenants" => row["id"].as_i64(),
        "tags_tasks" => q("SELECT tenant_id FROM tasks WHERE id = ?1", row["task_id"].as_i64()?),
        "active_storage_attachments" => q("SELECT tenant_id FROM tasks WHERE id = ?1", row["record_id"].as_i64()?),
        "active_storage_blobs" => q(
            "SELECT t.tenant_id FROM active_storage_attachments a JOIN tasks t ON t.id = a.record_id WHERE a.blob_id = ?1",
            row["id"].as_i64()?,
        ),
        _ => row["tenant_id"].as_i64(),
    }
}

fn dump_of(path: &std::path::Path) -> Vec<(String, serde_json::Value)> {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap());
    let mut tar = tar::Archive::new(gz);
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some("dump.jsonl") {
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            return s
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    (v["table"].as_str().unwrap().to_string(), v["row"].clone())
                })
                .collect();
        }
    }
    panic!("no dump");
}

/// Rows of every table except tenant `skip`'s, by the oracle.
fn others(conn: &Connection, skip: &[i64]) -> BTreeMap<String, Vec<String>> {
    let all = snapshot(conn);
    let mut out = BTreeMap::new();
    for (table, _) in all {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let cols: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
        let mut rows: Vec<String> = stmt
            .query_map([], |r| {
                let mut obj = serde_json::Map::new();
                for (i, c) in cols.iter().enumerate() {
                    let v: rusqlite::types::Value = r.get(i)?;
                    obj.insert(
                        c.clone(),
                        match v {
                            rusqlite::types::Value::Integer(i) => json!(i),
                            rusqlite::types::Value::Text(t) => json!(t),
                            rusqlite::types::Value::Null => json!(null),
                            other => json!(format!("{other:?}")),
                        },
                    );
                }
                Ok(serde_json::Value::Object(obj))
            })
            .unwrap()
            .map(|r| r.unwrap())
            .filter(|row| !owner_of(conn, &table, row).is_some_and(|o| skip.contains(&o)))
            .map(|row| row.to_string())
            .collect();
        rows.sort();
        out.insert(table, rows);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn backup_and_restore_never_cross_tenants(tenants in prop::collection::vec(tenant_data(), 2..4), pick in 0usize..3) {
        let a = (pick % tenants.len()) as i64 + 1;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.sqlite3");
        let conn = Connection::open(&db).unwrap();
        build(&conn, &tenants);
        let untouched = others(&conn, &[a]);

        let backup: tenant_kit::backup::BackupOptions = serde_json::from_value(json!({
            "database": db, "tenant_id": a, "output_dir": dir.path()
        })).unwrap();
        let report = tenant_kit::backup::backup(&backup, &mut CollectProgress::default()).unwrap();
        for (table, row) in dump_of(&report.path) {
            prop_assert_eq!(owner_of(&conn, &table, &row), Some(a), "{} {}", table, row);
        }

        for purge in [false, true] {
            let options: tenant_kit::restore::RestoreOptions = serde_json::from_value(json!({
                "database": db, "archive": report.path, "tenant_id": a, "purge": purge
            })).unwrap();
            tenant_kit::restore::restore(&options, &mut CollectProgress::default()).unwrap();
            prop_assert_eq!(others(&conn, &[a]), untouched.clone());
        }

        // Purge A alone, then remap A's archive into a new tenant C.
        let c = tenants.len() as i64 + 10;
        let purge_only: tenant_kit::restore::RestoreOptions = serde_json::from_value(json!({
            "database": db, "archive": report.path, "tenant_id": a, "purge": true, "restore": false
        })).unwrap();
        tenant_kit::restore::restore(&purge_only, &mut CollectProgress::default()).unwrap();
        let remap: tenant_kit::restore::RestoreOptions = serde_json::from_value(json!({
            "database": db, "archive": report.path, "tenant_id": c, "remap": true
        })).unwrap();
        tenant_kit::restore::restore(&remap, &mut CollectProgress::default()).unwrap();
        prop_assert_eq!(others(&conn, &[a, c]), untouched);
        let moved: i64 = conn.query_row("SELECT count(*) FROM tasks WHERE tenant_id = ?1", [c], |r| r.get(0)).unwrap();
        prop_assert_eq!(moved as usize, tenants[(a - 1) as usize].tasks.len());
    }
}

// ---- Polymorphic references, previews and naming traps ----
//
// Ids are counted per table across tenants, so a blob id is also some
// other tenant's task id: exactly what a membership that ignores a
// `*_type` column would confuse.

const POLY_SCHEMA: &str = "
    CREATE TABLE tenants (id integer PRIMARY KEY, name text);
    CREATE TABLE countries (id integer PRIMARY KEY, name text);
    CREATE TABLE tasks (id integer PRIMARY KEY, tenant_id integer NOT NULL REFERENCES tenants, parent_id integer, title text);
    CREATE TABLE tags (id integer PRIMARY KEY, tenant_id integer NOT NULL REFERENCES tenants, name text);
    CREATE TABLE tags_tasks (tag_id integer, task_id integer);
    CREATE UNIQUE INDEX tags_tasks_unique ON tags_tasks (tag_id, task_id);
    CREATE TABLE comments (id integer PRIMARY KEY, tenant_id integer NOT NULL REFERENCES tenants,
                           commentable_type text, commentable_id integer);
    CREATE TABLE active_storage_blobs (id integer PRIMARY KEY, key text NOT NULL UNIQUE, filename text, byte_size integer, checksum text);
    CREATE TABLE active_storage_attachments (id integer PRIMARY KEY, name text, record_type text, record_id integer,
                                             blob_id integer REFERENCES active_storage_blobs);
    CREATE TABLE active_storage_variant_records (id integer PRIMARY KEY,
                                                 blob_id integer NOT NULL REFERENCES active_storage_blobs, variation_digest text);
    INSERT INTO countries VALUES (1, 'a'), (2, 'b'), (3, 'c');
";

/// Spellings of the class `Task` that Rails resolves alike.
const TASK_CLASSES: [&str; 3] = ["Task", "::Task", "Object::Task"];

#[derive(Debug, Clone)]
struct PolyTenant {
    tasks: Vec<Option<usize>>, // parent task index
    tags: usize,
    links: Vec<(usize, usize)>, // (tag index, task index)
    /// (n, task index): join rows between an own task and the n-th tag
    /// made so far, whoever's (so often another tenant's).
    cross_links: Vec<(usize, usize)>,
    /// Own file index: a variant record of its blob, with its image.
    variants: Vec<usize>,
    /// (task index, spelling of its class, Some(n): share the n-th blob
    /// made so far, whoever's, instead of a new one)
    files: Vec<(usize, usize, Option<usize>)>,
    previews: Vec<usize>, // own file index
    /// (kind, index): kind 0..3 a task in TASK_CLASSES[kind], 3 a country,
    /// 4 an own file's blob, 5 a class that is no table.
    comments: Vec<(usize, usize)>,
}

fn poly_tenant() -> impl Strategy<Value = PolyTenant> {
    (1usize..6, 1usize..3).prop_flat_map(|(tasks, tags)| {
        (
            prop::collection::vec(prop::option::of(0..tasks), tasks),
            Just(tags),
            prop::collection::vec((0..tags, 0..tasks), 0..5),
            prop::collection::vec((0..tasks, 0..3usize, prop::option::of(0..8usize)), 0..4),
            prop::collection::vec(0..4usize, 0..3),
            prop::collection::vec((0..6usize, 0..8usize), 0..5),
            prop::collection::vec((0..12usize, 0..tasks), 0..3),
            prop::collection::vec(0..4usize, 0..2),
        )
            .prop_map(
                |(tasks, tags, links, files, previews, comments, cross_links, variants)| {
                    PolyTenant {
                        tasks,
                        tags,
                        links,
                        cross_links,
                        variants,
                        files,
                        previews,
                        comments,
                    }
                },
            )
    })
}

fn build_poly(conn: &Connection, tenants: &[PolyTenant]) {
    conn.execute_batch(POLY_SCHEMA).unwrap();
    let mut ids = Ids {
        conn,
        next: BTreeMap::new(),
    };
    let mut blobs: Vec<i64> = Vec::new();
    let mut all_tags: Vec<i64> = Vec::new();
    for (t, data) in tenants.iter().enumerate() {
        let tenant = t as i64 + 1;
        conn.execute(
            "INSERT INTO tenants VALUES (?1, 'T')",
            rusqlite::params![tenant],
        )
        .unwrap();
        let tasks: Vec<i64> = data
            .tasks
            .iter()
            .map(|_| {
                ids.insert(
                    "tasks",
                    "INSERT INTO tasks VALUES (?1, ?2, NULL, 't')",
                    &[&tenant],
                )
            })
            .collect();
        for (i, parent) in data.tasks.iter().enumerate() {
            conn.execute(
                "UPDATE tasks SET parent_id = ?1 WHERE id = ?2",
                rusqlite::params![parent.map(|p| tasks[p]), tasks[i]],
            )
            .unwrap();
        }
        let tags: Vec<i64> = (0..data.tags)
            .map(|_| ids.insert("tags", "INSERT INTO tags VALUES (?1, ?2, 'g')", &[&tenant]))
            .collect();
        all_tags.extend(&tags);
        let links = data.links.iter().map(|(g, k)| (tags[*g], tasks[*k]));
        let cross = data
            .cross_links
            .iter()
            .map(|(n, k)| (all_tags[n % all_tags.len()], tasks[*k]));
        for (tag, task) in links.chain(cross) {
            conn.execute(
                "INSERT OR IGNORE INTO tags_tasks VALUES (?1, ?2)",
                rusqlite::params![tag, task],
            )
            .unwrap();
        }
        let new_blob = |ids: &mut Ids<'_>, blobs: &mut Vec<i64>| {
            let n = blobs.len();
            let id = ids.insert(
                "active_storage_blobs",
                "INSERT INTO active_storage_blobs VALUES (?1, ?2, 'f', 0, NULL)",
                &[&format!("key{tenant}x{n:0>20}")],
            );
            blobs.push(id);
            id
        };
        let mut files = Vec::new();
        for (k, spelling, share) in &data.files {
            let blob = match share.filter(|_| !blobs.is_empty()) {
                Some(n) => blobs[n % blobs.len()],
                None => new_blob(&mut ids, &mut blobs),
            };
            ids.insert(
                "active_storage_attachments",
                "INSERT INTO active_storage_attachments VALUES (?1, 'files', ?2, ?3, ?4)",
                &[&TASK_CLASSES[*spelling], &tasks[*k], &blob],
            );
            files.push(blob);
        }
        for f in data.previews.iter().filter_map(|f| files.get(*f)) {
            let preview = new_blob(&mut ids, &mut blobs);
            ids.insert(
                "active_storage_attachments",
                "INSERT INTO active_storage_attachments VALUES (?1, 'preview_image', 'ActiveStorage::Blob', ?2, ?3)",
                &[f, &preview],
            );
        }
        for f in data.variants.iter().filter_map(|f| files.get(*f)) {
            let variant = ids.insert(
                "active_storage_variant_records",
                "INSERT INTO active_storage_variant_records VALUES (?1, ?2, 'v')",
                &[f],
            );
            let image = new_blob(&mut ids, &mut blobs);
            ids.insert(
                "active_storage_attachments",
                "INSERT INTO active_storage_attachments VALUES (?1, 'image', 'ActiveStorage::VariantRecord', ?2, ?3)",
                &[&variant, &image],
            );
        }
        for (kind, i) in &data.comments {
            let (class, id) = match kind {
                0..=2 => (TASK_CLASSES[*kind], tasks[i % tasks.len()]),
                3 => ("Country", (i % 3) as i64 + 1),
                4 if !files.is_empty() => ("ActiveStorage::Blob", files[i % files.len()]),
                _ => ("Weather", *i as i64 + 1),
            };
            ids.insert(
                "comments",
                "INSERT INTO comments VALUES (?1, ?2, ?3, ?4)",
                &[&tenant, &class, &id],
            );
        }
    }
}

/// Ids counted per table: a table's next id whoever the row's tenant.
struct Ids<'c> {
    conn: &'c Connection,
    next: BTreeMap<&'static str, i64>,
}

impl Ids<'_> {
    /// Run `sql` with the table's next id as `?1` before `values`.
    fn insert(&mut self, table: &'static str, sql: &str, values: &[&dyn rusqlite::ToSql]) -> i64 {
        let id = self.next.entry(table).or_insert(0);
        *id += 1;
        let id = *id;
        let mut params: Vec<&dyn rusqlite::ToSql> = vec![&id];
        params.extend_from_slice(values);
        self.conn.execute(sql, &*params).unwrap();
        id
    }
}

/// The tenants whose data a row is, by an oracle written for this schema:
/// a row belongs to the tenant of what it hangs off; a blob to whoever
/// attaches it (or comments on it), a preview to its blob's owners.
fn poly_owners(conn: &Connection, table: &str, row: &serde_json::Value) -> BTreeSet<i64> {
    let tenant_of = |sql: &str, id: &serde_json::Value| -> BTreeSet<i64> {
        let Some(id) = id.as_i64() else {
            return BTreeSet::new();
        };
        let mut stmt = conn.prepare(sql).unwrap();
        stmt.query_map([id], |r| r.get::<_, i64>(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    let task = "SELECT tenant_id FROM tasks WHERE id = ?1";
    match table {
        "tenants" => [row["id"].as_i64().unwrap()].into(),
        "tags_tasks" => {
            let mut owners = tenant_of("SELECT tenant_id FROM tags WHERE id = ?1", &row["tag_id"]);
            owners.extend(tenant_of(task, &row["task_id"]));
            owners
        }
        "active_storage_attachments" => {
            let class = row["record_type"].as_str().unwrap_or_default();
            let class = class.trim_start_matches("::");
            let class = class.strip_prefix("Object::").unwrap_or(class);
            match class {
                "Task" => tenant_of(task, &row["record_id"]),
                "ActiveStorage::Blob" => {
                    let blob: serde_json::Value = conn
                        .query_row(
                            "SELECT json_object('id', id) FROM active_storage_blobs WHERE id = ?1",
                            [row["record_id"].as_i64().unwrap()],
                            |r| r.get::<_, String>(0),
                        )
                        .map(|s| serde_json::from_str(&s).unwrap())
                        .unwrap_or(serde_json::Value::Null);
                    if blob.is_null() {
                        BTreeSet::new()
                    } else {
                        poly_owners(conn, "active_storage_blobs", &blob)
                    }
                }
                "ActiveStorage::VariantRecord" => {
                    let blob = conn.query_row(
                        "SELECT blob_id FROM active_storage_variant_records WHERE id = ?1",
                        [row["record_id"].as_i64().unwrap()],
                        |r| r.get::<_, i64>(0),
                    );
                    match blob {
                        Ok(id) => poly_owners(conn, "active_storage_blobs", &json!({ "id": id })),
                        Err(_) => BTreeSet::new(),
                    }
                }
                _ => BTreeSet::new(),
            }
        }
        "active_storage_variant_records" => poly_owners(
            conn,
            "active_storage_blobs",
            &json!({ "id": row["blob_id"] }),
        ),
        "active_storage_blobs" => {
            let mut owners = BTreeSet::new();
            let mut stmt = conn
                .prepare("SELECT json_object('id', id, 'record_type', record_type, 'record_id', record_id) FROM active_storage_attachments WHERE blob_id = ?1 AND record_type <> 'ActiveStorage::Blob'")
                .unwrap();
            let attachments: Vec<String> = stmt
                .query_map([row["id"].as_i64().unwrap()], |r| r.get(0))
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            for a in attachments {
                let a: serde_json::Value = serde_json::from_str(&a).unwrap();
                owners.extend(poly_owners(conn, "active_storage_attachments", &a));
            }
            owners.extend(tenant_of(
                "SELECT tenant_id FROM comments WHERE commentable_type = 'ActiveStorage::Blob' AND commentable_id = ?1",
                &row["id"],
            ));
            owners
        }
        _ => row["tenant_id"].as_i64().into_iter().collect(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20, ..ProptestConfig::default() })]

    /// For every database and tenant: the backup holds only the tenant's
    /// rows (a blob another tenant attaches too excepted), and restoring
    /// it into the same database is a no-op that a dry run reports as such.
    #[test]
    fn restoring_a_backup_into_its_own_database_changes_nothing(
        tenants in prop::collection::vec(poly_tenant(), 2..4),
        pick in 0usize..3,
    ) {
        let a = (pick % tenants.len()) as i64 + 1;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.sqlite3");
        let conn = Connection::open(&db).unwrap();
        build_poly(&conn, &tenants);
        let before = snapshot(&conn);

        let backup: tenant_kit::backup::BackupOptions = serde_json::from_value(json!({
            "database": db, "tenant_id": a, "output_dir": dir.path()
        })).unwrap();
        let report = tenant_kit::backup::backup(&backup, &mut CollectProgress::default()).unwrap();
        for (table, row) in dump_of(&report.path) {
            // Shared reference rows (countries a comment names) are no
            // tenant's: never rows with a tenant column or of the derived
            // tables the oracle knows.
            if report.shared.contains_key(&table) {
                prop_assert!(
                    row.get("tenant_id").is_none()
                        && !["tags_tasks", "active_storage_attachments", "active_storage_blobs"].contains(&table.as_str()),
                    "tenant {}'s archive holds {} {} as shared", a, table, row
                );
                continue;
            }
            let owners = poly_owners(&conn, &table, &row);
            let shared_blob = table == "active_storage_blobs" && owners.contains(&a);
            prop_assert!(
                owners == BTreeSet::from([a]) || shared_blob,
                "tenant {}'s archive holds {} {} of {:?}", a, table, row, owners
            );
        }

        let options = |dry_run: bool| -> tenant_kit::restore::RestoreOptions {
            serde_json::from_value(json!({
                "database": db, "archive": report.path, "tenant_id": a, "purge": true, "dry_run": dry_run
            })).unwrap()
        };
        let dry = tenant_kit::restore::restore(&options(true), &mut CollectProgress::default()).unwrap();
        prop_assert_eq!(dry.conflict_count, 0, "{:?}", dry.conflicts);
        for (table, planned) in &dry.planned {
            prop_assert!(
                planned.insert == 0 && planned.update == 0 && planned.purge == 0,
                "{}: {:?}", table, planned
            );
        }
        tenant_kit::restore::restore(&options(false), &mut CollectProgress::default()).unwrap();
        prop_assert_eq!(snapshot(&conn), before);
    }
}

/// A row's identity in an archive: its table and key (the whole row for
/// the join table, which has no key).
fn row_identity(table: &str, row: &serde_json::Value) -> (String, String) {
    let key = match table {
        "tags_tasks" => row.to_string(),
        _ => row["id"].to_string(),
    };
    (table.to_string(), key)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// The last clause of the isolation law: for every pair of tenants, no
    /// row is in both archives as owned data, blobs both tenants attach
    /// excepted; what a backup leaves out as shared is counted per table;
    /// and restoring each backup into its own database is a no-op that a
    /// dry run reports as all unchanged.
    #[test]
    fn no_row_is_in_two_tenants_archives(tenants in prop::collection::vec(poly_tenant(), 2..4)) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.sqlite3");
        let conn = Connection::open(&db).unwrap();
        build_poly(&conn, &tenants);
        let before = snapshot(&conn);

        let mut archives = Vec::new();
        for a in 1..=tenants.len() as i64 {
            let backup: tenant_kit::backup::BackupOptions = serde_json::from_value(json!({
                "database": db, "tenant_id": a, "output_dir": dir.path()
            })).unwrap();
            let report = tenant_kit::backup::backup(&backup, &mut CollectProgress::default()).unwrap();
            // Owned data only: shared reference rows (no tenant column,
            // referred to by the tenant's rows) are carried by every
            // tenant that refers to them, marked so.
            let rows: BTreeSet<(String, String)> = dump_of(&report.path)
                .iter()
                .filter(|(table, _)| !report.shared.contains_key(table.as_str()))
                .map(|(table, row)| row_identity(table, row))
                .collect();
            // Rows of tenant `a` that another tenant's rows reach too, by
            // the oracle: exactly what the backup says it left out.
            let mut shared: BTreeMap<String, u64> = BTreeMap::new();
            for (table, all) in common::snapshot_rows(&conn) {
                if table == "active_storage_blobs" {
                    continue;
                }
                for row in all {
                    // Preview attachments (of a blob) are no tenant's data
                    // for the backup: none carries them, so none leaves
                    // them out either.
                    if row["record_type"] == "ActiveStorage::Blob" {
                        continue;
                    }
                    let owners = poly_owners(&conn, &table, &row);
                    if owners.contains(&a) && owners.len() > 1 {
                        *shared.entry(table.clone()).or_default() += 1;
                        prop_assert!(!rows.contains(&row_identity(&table, &row)), "{} {} in {}'s archive", table, row, a);
                    }
                }
            }
            let reported: BTreeMap<String, u64> = report
                .left_out_cross_tenant
                .iter()
                .filter(|(t, _)| t.as_str() != "active_storage_blobs")
                .map(|(t, n)| (t.clone(), *n))
                .collect();
            prop_assert_eq!(reported, shared, "tenant {}", a);
            archives.push((a, report.path.clone(), rows));
        }
        for (i, (a, _, rows_a)) in archives.iter().enumerate() {
            for (b, _, rows_b) in &archives[i + 1..] {
                for (table, key) in rows_a.intersection(rows_b) {
                    prop_assert_eq!(table.as_str(), "active_storage_blobs", "{} {} is in the archives of {} and {}", table, key, a, b);
                    let owners = poly_owners(&conn, table, &json!({ "id": key.parse::<i64>().unwrap() }));
                    prop_assert!(owners.contains(a) && owners.contains(b), "blob {} of {:?}", key, owners);
                }
            }
        }

        for (a, path, _) in &archives {
            for purge in [false, true] {
                let options = |dry_run: bool| -> tenant_kit::restore::RestoreOptions {
                    serde_json::from_value(json!({
                        "database": db, "archive": path, "tenant_id": a, "purge": purge, "dry_run": dry_run
                    })).unwrap()
                };
                let dry = tenant_kit::restore::restore(&options(true), &mut CollectProgress::default()).unwrap();
                prop_assert_eq!(dry.conflict_count, 0, "{:?}", dry.conflicts);
                for (table, planned) in &dry.planned {
                    prop_assert!(
                        planned.insert == 0 && planned.update == 0 && planned.purge == 0,
                        "tenant {}, purge {}: {}: {:?}", a, purge, table, planned
                    );
                }
                tenant_kit::restore::restore(&options(false), &mut CollectProgress::default()).unwrap();
                prop_assert_eq!(snapshot(&conn), before.clone());
            }
        }
    }
}
