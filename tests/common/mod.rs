//! Shared fixtures for the integration tests: a real SQLite file with the
//! app's schema (tests/fixtures/app_schema.sql), a storage root in the
//! ActiveStorage Disk layout, and helpers to compare databases exactly.
#![allow(dead_code)]

use base64::Engine;
use md5::{Digest, Md5};
use rusqlite::Connection;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tenant_kit::progress::CollectProgress;

pub const APP_SCHEMA: &str = include_str!("../fixtures/app_schema.sql");

pub struct App {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub storage: PathBuf,
    pub out: PathBuf,
}

impl App {
    /// The app's schema with two tenants of sample data and their files.
    pub fn new() -> App {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.sqlite3");
        let storage = dir.path().join("storage");
        let out = dir.path().join("out");
        std::fs::create_dir_all(&storage).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(APP_SCHEMA).unwrap();
        let app = App {
            dir,
            db,
            storage,
            out,
        };
        for tenant in 1..=3 {
            app.seed_tenant(&conn, tenant);
        }
        app
    }

    pub fn conn(&self) -> Connection {
        let c = Connection::open(&self.db).unwrap();
        c.pragma_update(None, "foreign_keys", true).unwrap();
        c
    }

    /// Deterministic rows for one tenant: ids are spaced so tenants never
    /// share a key (id = tenant * 1000 + n).
    pub fn seed_tenant(&self, conn: &Connection, t: i64) {
        let base = t * 1000;
        conn.execute("INSERT INTO tenants(id, name, subdomain, created_at, updated_at) VALUES (?1, ?2, NULL, '2026-01-01', '2026-01-01')", rusqlite::params![t, format!("Tenant {t}")]).unwrap();
        for n in 1..=3 {
            conn.execute("INSERT INTO users(id, tenant_id, email, name, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, '2026-01-01', '2026-01-01')",
                rusqlite::params![base + n, t, format!("u{n}@t{t}.example"), format!("Üser {n} 🐢")]).unwrap();
        }
        conn.execute("INSERT INTO teams(id, tenant_id, name, created_at, updated_at) VALUES (?1, ?2, 'core', 'x', 'x')", rusqlite::params![base + 1, t]).unwrap();
        for n in 1..=2 {
            conn.execute("INSERT INTO projects(id, tenant_id, team_id, name, budget, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, 'x', 'x')",
                rusqlite::params![base + n, t, base + 1, format!("Project {n}"), 1000.5 * n as f64]).unwrap();
        }
        for n in 1..=6 {
            let parent: Option<i64> = if n > 1 { Some(base + 1) } else { None };
            conn.execute("INSERT INTO tasks(id, tenant_id, project_id, user_id, parent_id, title, notes, estimate, position, due_on, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, 'x', 'x')",
                rusqlite::params![base + n, t, base + 1 + (n % 2), base + 1, parent, format!("Task {n}"), "0042", 2.0, i64::MAX - n]).unwrap();
            conn.execute("INSERT INTO time_entries(id, tenant_id, task_id, user_id, minutes, rate, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, 0.1, 'x', 'x')",
                rusqlite::params![base + n, t, base + n, base + 1, 15 * n]).unwrap();
        }
        for n in 1..=2 {
            conn.execute("INSERT INTO tags(id, tenant_id, name, created_at, updated_at) VALUES (?1, ?2, ?3, 'x', 'x')", rusqlite::params![base + n, t, format!("tag{n}")]).unwrap();
        }
        for (tag, task) in [(1, 1), (1, 2), (2, 2), (2, 3)] {
            conn.execute(
                "INSERT INTO tags_tasks(tag_id, task_id) VALUES (?1, ?2)",
                rusqlite::params![base + tag, base + task],
            )
            .unwrap();
        }
        conn.execute("INSERT INTO comments(id, tenant_id, commentable_type, commentable_id, user_id, body, created_at, updated_at) VALUES (?1, ?2, 'Task', ?3, ?4, 'nice', 'x', 'x')", rusqlite::params![base + 1, t, base + 1, base + 1]).unwrap();
        conn.execute("INSERT INTO comments(id, tenant_id, commentable_type, commentable_id, user_id, body, created_at, updated_at) VALUES (?1, ?2, 'Project', ?3, ?4, NULL, 'x', 'x')", rusqlite::params![base + 2, t, base + 1, base + 1]).unwrap();
        conn.execute("INSERT INTO settings(id, tenant_id, target_type, target_id, key, value, created_at, updated_at) VALUES (?1, ?2, 'User', ?3, 'theme', '\"dark\"', 'x', 'x')", rusqlite::params![base + 1, t, (base + 1).to_string()]).unwrap();
        // Two attached files per tenant, one variant record with its own file.
        for n in 1..=2 {
            let key = blob_key(t, n);
            let content = format!("file {n} of tenant {t}\n")
                .repeat(50 * n as usize)
                .into_bytes();
            self.write_blob(conn, base + n, &key, &content);
            conn.execute("INSERT INTO active_storage_attachments(id, name, record_type, record_id, blob_id, created_at) VALUES (?1, 'files', 'Task', ?2, ?3, 'x')",
                rusqlite::params![base + n, base + n, base + n]).unwrap();
        }
        conn.execute("INSERT INTO active_storage_variant_records(id, blob_id, variation_digest) VALUES (?1, ?2, 'digest')", rusqlite::params![base + 1, base + 1]).unwrap();
        let vkey = blob_key(t, 9);
        self.write_blob(conn, base + 9, &vkey, b"variant bytes");
        conn.execute("INSERT INTO active_storage_attachments(id, name, record_type, record_id, blob_id, created_at) VALUES (?1, 'image', 'ActiveStorage::VariantRecord', ?2, ?3, 'x')",
            rusqlite::params![base + 9, base + 1, base + 9]).unwrap();
    }

    pub fn write_blob(&self, conn: &Connection, id: i64, key: &str, content: &[u8]) {
        let checksum = base64::engine::general_purpose::STANDARD.encode(Md5::digest(content));
        conn.execute("INSERT INTO active_storage_blobs(id, key, filename, content_type, metadata, service_name, byte_size, checksum, created_at) VALUES (?1, ?2, 'f.txt', 'text/plain', '{}', 'local', ?3, ?4, 'x')",
            rusqlite::params![id, key, content.len() as i64, checksum]).unwrap();
        let path = blob_path(&self.storage, key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    pub fn backup(&self, tenant: i64) -> tenant_kit::backup::BackupReport {
        tenant_kit::backup::backup(
            &self.backup_options(tenant),
            &mut CollectProgress::default(),
        )
        .unwrap()
    }

    pub fn backup_options(&self, tenant: i64) -> tenant_kit::backup::BackupOptions {
        serde_json::from_value(serde_json::json!({
            "database": self.db, "tenant_id": tenant, "output_dir": self.out, "storage_root": self.storage,
        }))
        .unwrap()
    }

    pub fn restore_options(
        &self,
        archive: &Path,
        tenant: i64,
        extra: serde_json::Value,
    ) -> tenant_kit::restore::RestoreOptions {
        restore_options(
            serde_json::json!({
                "database": self.db, "archive": archive, "tenant_id": tenant, "storage_root": self.storage,
            }),
            extra,
        )
    }

    pub fn restore(
        &self,
        archive: &Path,
        tenant: i64,
        extra: serde_json::Value,
    ) -> tenant_kit::Result<tenant_kit::restore::RestoreReport> {
        tenant_kit::restore::restore(
            &self.restore_options(archive, tenant, extra),
            &mut CollectProgress::default(),
        )
    }

    /// Every row of every table, with typeof() of every value, sorted.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<String>> {
        snapshot(&self.conn())
    }

    /// (relative path, content) of every file below the storage root.
    pub fn storage_files(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        files_below(&self.storage)
    }
}

pub fn blob_key(tenant: i64, n: i64) -> String {
    format!("t{tenant}n{n}abcdefghijklmnopqrstuvwxyz0123456789")[..28].to_string()
}

pub fn blob_path(root: &Path, key: &str) -> PathBuf {
    root.join(&key[0..2]).join(&key[2..4]).join(key)
}

/// The column names of `table`, in order.
pub fn column_names(conn: &Connection, table: &str) -> Vec<String> {
    conn.prepare("SELECT name FROM pragma_table_info(?1)")
        .unwrap()
        .query_map([table], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

pub fn snapshot(conn: &Connection) -> BTreeMap<String, Vec<String>> {
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    tables
        .into_iter()
        .map(|t| {
            let cols = column_names(conn, &t);
            let expr = cols
                .iter()
                .map(|c| {
                    // Exact: text as hex (it may not be UTF-8), reals with
                    // 17 significant digits, the rest as SQL literals.
                    format!(
                        "typeof(\"{c}\") || ':' || CASE typeof(\"{c}\") WHEN 'text' THEN hex(\"{c}\") \
                         WHEN 'real' THEN printf('%!.17g', \"{c}\") ELSE quote(\"{c}\") END"
                    )
                })
                .collect::<Vec<_>>()
                .join(" || '|' || ");
            let mut rows: Vec<String> = conn
                .prepare(&format!("SELECT {expr} FROM \"{t}\""))
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            rows.sort();
            (t, rows)
        })
        .collect()
}

pub fn files_below(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

/// Rows of one tenant's tables (by tenant column) from a snapshot-like view.
pub fn tenant_rows(conn: &Connection, table: &str, tenant: i64) -> Vec<String> {
    let mut rows: Vec<String> = conn
        .prepare(&format!(
            "SELECT quote(id) FROM \"{table}\" WHERE tenant_id = ?1 ORDER BY id"
        ))
        .unwrap()
        .query_map([tenant], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    rows.sort();
    rows
}

pub fn file_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// A database with a small schema of the test's own, in a fresh temp dir:
/// for cases the sample app's schema does not have (cascading foreign
/// keys, declared references between tenant tables).
pub struct SmallDb {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub conn: Connection,
}

impl SmallDb {
    pub fn new(sql: &str) -> SmallDb {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("small.sqlite3");
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(sql).unwrap();
        SmallDb { dir, db, conn }
    }

    /// Back up `tenant` into the temp dir; the archive's path.
    pub fn backup(&self, tenant: i64) -> PathBuf {
        let options: tenant_kit::backup::BackupOptions =
            serde_json::from_value(serde_json::json!({
                "database": self.db, "tenant_id": tenant, "output_dir": self.dir.path()
            }))
            .unwrap();
        tenant_kit::backup::backup(&options, &mut CollectProgress::default())
            .unwrap()
            .path
    }

    /// Restore `archive` into `tenant` with the `extra` options.
    pub fn restore(
        &self,
        archive: &Path,
        tenant: i64,
        extra: serde_json::Value,
    ) -> tenant_kit::Result<tenant_kit::restore::RestoreReport> {
        let options = restore_options(
            serde_json::json!({"database": self.db, "archive": archive, "tenant_id": tenant}),
            extra,
        );
        tenant_kit::restore::restore(&options, &mut CollectProgress::default())
    }
}

/// Restore options: `base` with the keys of `extra` set over it.
fn restore_options(
    mut base: serde_json::Value,
    extra: serde_json::Value,
) -> tenant_kit::restore::RestoreOptions {
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    serde_json::from_value(base).unwrap()
}

/// An archive taken apart for editing, as an attacker would: manifest,
/// dump lines and blob files; [`EditableArchive::write`] puts it back
/// together with the row counts and the dump's hash recomputed.
#[derive(Clone)]
pub struct EditableArchive {
    pub manifest: serde_json::Value,
    /// `{"table": …, "row": {…}}` per dump line, in order.
    pub lines: Vec<serde_json::Value>,
    pub blobs: Vec<(String, Vec<u8>)>,
}

impl EditableArchive {
    pub fn open(path: &Path) -> EditableArchive {
        let hostile::Parts {
            manifest,
            dump,
            blobs,
        } = hostile::Parts::from_archive(path);
        let lines = String::from_utf8(dump)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        EditableArchive {
            manifest,
            lines,
            blobs,
        }
    }

    /// The rows of `table` in the dump.
    pub fn rows(&self, table: &str) -> Vec<&serde_json::Value> {
        self.lines
            .iter()
            .filter(|l| l["table"] == table)
            .map(|l| &l["row"])
            .collect()
    }

    /// A file listed in the manifest with its true size and hashes, that
    /// no blob row need name.
    pub fn add_blob(&mut self, key: &str, content: &[u8]) {
        use sha2::{Digest, Sha256};
        let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(content));
        let sha: String = Sha256::digest(content)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.manifest["blobs"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "key": key, "size": content.len(), "checksum": md5, "sha256": sha,
            }));
        self.blobs.push((key.to_string(), content.to_vec()));
    }

    /// Apply `f` to every row of `table`.
    pub fn edit_rows(&mut self, table: &str, mut f: impl FnMut(&mut serde_json::Value)) {
        for line in self.lines.iter_mut().filter(|l| l["table"] == table) {
            f(&mut line["row"]);
        }
    }

    /// The archive at `path`, with the manifest's row counts and dump hash
    /// made to agree with the (edited) lines.
    pub fn write(&self, path: &Path) {
        use sha2::{Digest, Sha256};
        use std::io::Write;
        let mut dump = Vec::new();
        for line in &self.lines {
            dump.extend_from_slice(line.to_string().as_bytes());
            dump.push(b'\n');
        }
        let mut manifest = self.manifest.clone();
        for t in manifest["tables"].as_array_mut().unwrap() {
            let name = t["name"].as_str().unwrap().to_string();
            t["rows"] = serde_json::json!(self.rows(&name).len());
        }
        let sha: String = Sha256::digest(&dump)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        manifest["dump"]["size"] = serde_json::json!(dump.len());
        manifest["dump"]["sha256"] = serde_json::json!(sha);
        let mut entries = vec![
            (
                "manifest.json".to_string(),
                serde_json::to_vec(&manifest).unwrap(),
            ),
            ("dump.jsonl".to_string(), dump),
        ];
        entries.extend(
            self.blobs
                .iter()
                .map(|(k, b)| (format!("blobs/{k}"), b.clone())),
        );
        let mut tar = tar::Builder::new(Vec::new());
        for (name, bytes) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_path(&name).unwrap();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o600);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            tar.append(&h, bytes.as_slice()).unwrap();
        }
        let tar = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        std::fs::write(path, gz.finish().unwrap()).unwrap();
    }
}

impl SmallDb {
    /// [`SmallDb::restore`] with the caller's progress sink.
    pub fn restore_with(
        &self,
        archive: &Path,
        tenant: i64,
        extra: serde_json::Value,
        progress: &mut dyn tenant_kit::Progress,
    ) -> tenant_kit::Result<tenant_kit::restore::RestoreReport> {
        let options = restore_options(
            serde_json::json!({"database": self.db, "archive": archive, "tenant_id": tenant}),
            extra,
        );
        tenant_kit::restore::restore(&options, progress)
    }
}

/// Every row of `before` is still in `after` (as a multiset, per table).
pub fn assert_rows_kept(
    before: &BTreeMap<String, Vec<String>>,
    after: &BTreeMap<String, Vec<String>>,
) {
    for (table, rows) in before {
        if table == "sqlite_sequence" {
            continue;
        }
        let mut left: BTreeMap<&String, i64> = BTreeMap::new();
        for r in &after[table] {
            *left.entry(r).or_default() += 1;
        }
        for r in rows {
            let n = left.entry(r).or_default();
            assert!(*n > 0, "{table}: row {r} changed or went away");
            *n -= 1;
        }
    }
}

/// Every row of every app table as a JSON object (column → value, as
/// SQLite's `json_object` writes it), per table.
pub fn snapshot_rows(conn: &Connection) -> BTreeMap<String, Vec<serde_json::Value>> {
    snapshot(conn)
        .into_keys()
        .map(|t| {
            let cols = column_names(conn, &t);
            let pairs = cols
                .iter()
                .map(|c| format!("'{c}', \"{c}\""))
                .collect::<Vec<_>>()
                .join(", ");
            let rows = conn
                .prepare(&format!("SELECT json_object({pairs}) FROM \"{t}\""))
                .unwrap()
                .query_map([], |r| r.get::<_, String>(0))
                .unwrap()
                .map(|r| serde_json::from_str(&r.unwrap()).unwrap())
                .collect();
            (t, rows)
        })
        .collect()
}

pub mod hostile;
pub mod hostile_cases;
