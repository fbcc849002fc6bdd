//! The storage root under hostile conditions: links planted below it,
//! archives whose files no row owns, many blob rows, and blob tables keyed
//! by text or BLOB UUIDs. A refused restore changes neither the database
//! file nor anything below the storage root (links included) nor the
//! folder a link points at.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tenant_kit::progress::CollectProgress;
use tenant_kit::ErrorKind;

/// One entry of a folder tree, links recorded as links (never followed).
#[derive(Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>),
    Link(PathBuf),
}

fn tree(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let node = if meta.file_type().is_symlink() {
                Node::Link(std::fs::read_link(&p).unwrap())
            } else if meta.is_dir() {
                stack.push(p.clone());
                Node::Dir
            } else {
                Node::File(std::fs::read(&p).unwrap())
            };
            out.insert(rel, node);
        }
    }
    out
}

/// The database file and every tree a restore could reach, byte for byte.
#[derive(Debug, PartialEq, Eq)]
struct State {
    db: Vec<u8>,
    trees: Vec<BTreeMap<PathBuf, Node>>,
}

fn state(db: &Path, roots: &[&Path]) -> State {
    State {
        db: std::fs::read(db).unwrap(),
        trees: roots.iter().map(|r| tree(r)).collect(),
    }
}

/// A folder outside the storage root that links point at.
fn elsewhere(app: &App) -> PathBuf {
    let dir = app.dir.path().join("elsewhere");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

/// The restore fails with an Io error whose message names `path`, and
/// changes nothing anywhere.
fn assert_refused_naming(
    app: &App,
    archive: &Path,
    extra: Value,
    path: &Path,
    roots: &[&Path],
) -> tenant_kit::Error {
    let before = state(&app.db, roots);
    let err = app
        .restore(archive, 1, extra.clone())
        .expect_err("the restore must be refused");
    assert_eq!(err.kind(), ErrorKind::Io, "{extra}: {err}");
    assert!(
        err.message().contains(&path.display().to_string()),
        "{extra}: the message names {}: {err}",
        path.display()
    );
    assert_eq!(state(&app.db, roots), before, "{extra}: something changed");
    err
}

// ---- 1. links below the storage root ----

/// Tenant 1's files (keys `t1n…`) live below `storage/t1/n1/`, `t1/n2/`
/// and `t1/n9/`: the shapes a planted link or file can take there.
#[test]
fn a_link_or_file_in_place_of_a_folder_is_never_written_through() {
    for (what, make) in [
        ("first folder a link", 0),
        ("second folder a link", 1),
        ("first folder a plain file", 2),
        ("second folder a plain file", 3),
    ] {
        let app = App::new();
        let archive = app.backup(1).path;
        let away = elsewhere(&app);
        let t1 = app.storage.join("t1");
        std::fs::remove_dir_all(&t1).unwrap();
        let named = match make {
            0 => {
                symlink(&away, &t1);
                t1.clone()
            }
            1 => {
                std::fs::create_dir(&t1).unwrap();
                let n1 = t1.join("n1");
                symlink(&away, &n1);
                n1
            }
            2 => {
                std::fs::write(&t1, b"not a folder").unwrap();
                t1.clone()
            }
            _ => {
                std::fs::create_dir(&t1).unwrap();
                let n1 = t1.join("n1");
                std::fs::write(&n1, b"not a folder").unwrap();
                n1
            }
        };
        // Purge and restore: the tenant's rows go and come back, so every
        // file of the archive is written again.
        let err = assert_refused_naming(
            &app,
            &archive,
            json!({"purge": true}),
            &named,
            &[&app.storage, &away],
        );
        assert!(
            err.message().contains("link") || err.message().contains("not a folder"),
            "{what}: {err}"
        );
        assert!(tree(&away).is_empty(), "{what}: written outside the root");
    }
}

/// A link where the blob's file should be is neither written through nor
/// taken for the file, even when what it points at has the right bytes.
#[test]
fn a_link_in_place_of_a_blob_file_is_not_the_blob() {
    let app = App::new();
    let archive = app.backup(1).path;
    let away = elsewhere(&app);
    let file = blob_path(&app.storage, &blob_key(1, 1));
    let copy = away.join("copy");
    std::fs::rename(&file, &copy).unwrap();
    symlink(&copy, &file);
    // The rows are still there: a restore would reuse the file it finds.
    let err = assert_refused_naming(&app, &archive, json!({}), &file, &[&app.storage, &away]);
    assert!(err.message().contains("link"), "{err}");
    // A dangling link, and a purge that would write the file again.
    std::fs::remove_file(&copy).unwrap();
    assert_refused_naming(
        &app,
        &archive,
        json!({"purge": true}),
        &file,
        &[&app.storage, &away],
    );
}

/// A purge removes the files of the purged blobs after its commit: never
/// through a linked folder (checked before the commit, so it is refused).
#[test]
fn a_purge_does_not_remove_files_through_a_link() {
    let app = App::new();
    let archive = app.backup(1).path;
    let away = elsewhere(&app);
    let t1 = app.storage.join("t1");
    std::fs::rename(&t1, away.join("t1")).unwrap();
    symlink(&away.join("t1"), &t1);
    let err = assert_refused_naming(
        &app,
        &archive,
        json!({"purge": true, "restore": false}),
        &t1,
        &[&app.storage, &away],
    );
    assert!(err.message().contains("link"), "{err}");
}

/// The storage journal of a dead run lists a key whose folder is now a
/// link: recovery does not remove the file it points at, and the journal
/// stays for a run that finds the storage root repaired.
#[test]
fn recovery_does_not_follow_a_link() {
    let app = App::new();
    let archive = app.backup(1).path;
    let away = elsewhere(&app);
    let key = "zzyy0000000000000000000000aa";
    std::fs::create_dir_all(away.join("yy")).unwrap();
    std::fs::write(away.join("yy").join(key), b"someone else's file").unwrap();
    let zz = app.storage.join("zz");
    symlink(&away, &zz);
    let journal = app.dir.path().join("app.sqlite3-tenant_kit-journal-dead");
    let entry = json!({"storage_root": app.storage, "keys": [key], "dirs": []});
    std::fs::write(&journal, entry.to_string()).unwrap();
    assert_refused_naming(&app, &archive, json!({}), &zz, &[&app.storage, &away]);
    assert!(journal.exists(), "the journal is kept for a later run");
}

// ---- 2. files no row owns ----

#[test]
fn a_file_no_blob_row_names_is_refused_by_restore_and_verify() {
    let app = App::new();
    let mut parts = EditableArchive::open(&app.backup(1).path);
    let stray = "stray000000000000000000000ab";
    parts.add_blob(stray, b"owned by nothing");
    let archive = app.dir.path().join("stray.tar.gz");
    parts.write(&archive);

    let verified = tenant_kit::verify::verify_path(&archive).expect_err("verify refuses it");
    assert_eq!(verified.kind(), ErrorKind::Archive, "{verified}");
    assert!(verified.message().contains(stray), "{verified}");
    for extra in [json!({}), json!({"purge": true}), json!({"dry_run": true})] {
        let before = state(&app.db, &[&app.storage]);
        let err = app
            .restore(&archive, 1, extra.clone())
            .expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::Archive, "{extra}: {err}");
        assert!(err.message().contains(stray), "{extra}: {err}");
        assert_eq!(state(&app.db, &[&app.storage]), before, "{extra}");
    }
}

// ---- 3 and 4. blob tables of any size and any key type ----

/// A tenant's documents with attached files, on blob and attachment
/// tables whose primary keys have the declared type `id_type`.
struct UuidApp {
    db: SmallDb,
    storage: PathBuf,
}

/// How blob and attachment ids are declared and made.
#[derive(Clone, Copy, Debug)]
enum IdType {
    Integer,
    TextUuid,
    BlobUuid,
}

impl IdType {
    fn declared(self) -> &'static str {
        match self {
            IdType::Integer => "integer",
            IdType::TextUuid => "uuid",
            IdType::BlobUuid => "blob",
        }
    }

    /// A distinct id per `n`, in this type.
    fn id(self, n: i64) -> rusqlite::types::Value {
        use rusqlite::types::Value as V;
        match self {
            IdType::Integer => V::Integer(n),
            IdType::TextUuid => V::Text(format!("0190f00d-0000-7000-8000-{n:012x}")),
            IdType::BlobUuid => {
                let mut b = vec![0x01, 0x90, 0xf0, 0x0d, 0, 0, 0x70, 0, 0x80, 0];
                b.extend_from_slice(&n.to_be_bytes()[2..]);
                V::Blob(b)
            }
        }
    }
}

impl UuidApp {
    fn new(ids: IdType, tenants: i64, files: i64) -> UuidApp {
        let t = ids.declared();
        let db = SmallDb::new(&format!(
            "CREATE TABLE tenants (id INTEGER PRIMARY KEY, name TEXT);
             CREATE TABLE documents (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants(id), title TEXT);
             CREATE TABLE active_storage_blobs (id {t} PRIMARY KEY NOT NULL, key varchar NOT NULL, filename varchar NOT NULL, service_name varchar NOT NULL, byte_size bigint NOT NULL, checksum varchar, created_at datetime NOT NULL);
             CREATE UNIQUE INDEX index_active_storage_blobs_on_key ON active_storage_blobs (key);
             CREATE TABLE active_storage_attachments (id {t} PRIMARY KEY NOT NULL, name varchar NOT NULL, record_type varchar NOT NULL, record_id bigint NOT NULL, blob_id {t} NOT NULL REFERENCES active_storage_blobs(id), created_at datetime NOT NULL);
             CREATE INDEX index_active_storage_attachments_on_blob_id ON active_storage_attachments (blob_id);"
        ));
        let storage = db.dir.path().join("storage");
        std::fs::create_dir(&storage).unwrap();
        let app = UuidApp { db, storage };
        let c = &app.db.conn;
        c.execute_batch("BEGIN").unwrap();
        for tenant in 1..=tenants {
            c.execute(
                "INSERT INTO tenants VALUES (?1, 'T')",
                rusqlite::params![tenant],
            )
            .unwrap();
            c.execute(
                "INSERT INTO documents VALUES (?1, ?1, 'doc')",
                rusqlite::params![tenant],
            )
            .unwrap();
            for n in 1..=files {
                let id = tenant * 10_000_000 + n;
                let key = format!("k{tenant}x{n:026}");
                app.attach(ids, tenant, id, &key, n <= 2);
            }
        }
        c.execute_batch("COMMIT").unwrap();
        app
    }

    /// A blob with `key` attached to the tenant's document; with its file
    /// in the storage root when `file` (the others live elsewhere, as S3
    /// blobs do, and are rows only).
    fn attach(&self, ids: IdType, tenant: i64, id: i64, key: &str, file: bool) {
        let content = format!("file {key}");
        self.db
            .conn
            .execute(
                "INSERT INTO active_storage_blobs VALUES (?1, ?2, 'f.txt', 'local', ?3, NULL, 'x')",
                rusqlite::params![ids.id(id), key, content.len() as i64],
            )
            .unwrap();
        self.db.conn.execute(
            "INSERT INTO active_storage_attachments VALUES (?1, 'files', 'Document', ?2, ?3, 'x')",
            rusqlite::params![ids.id(id), tenant, ids.id(id)],
        )
        .unwrap();
        if file {
            let path = blob_path(&self.storage, key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
    }

    fn backup(&self, tenant: i64) -> PathBuf {
        let options: tenant_kit::backup::BackupOptions = serde_json::from_value(json!({
            "database": self.db.db, "tenant_id": tenant, "output_dir": self.db.dir.path(),
            "storage_root": self.storage,
        }))
        .unwrap();
        tenant_kit::backup::backup(&options, &mut CollectProgress::default())
            .unwrap()
            .path
    }

    fn restore(&self, archive: &Path, extra: Value) -> tenant_kit::restore::RestoreReport {
        let mut options = json!({
            "database": self.db.db, "archive": archive, "tenant_id": 1,
            "storage_root": self.storage,
        });
        for (k, v) in extra.as_object().unwrap() {
            options[k] = v.clone();
        }
        let options = serde_json::from_value(options).unwrap();
        tenant_kit::restore::restore(&options, &mut CollectProgress::default())
            .unwrap_or_else(|e| panic!("restore {extra}: {e}"))
    }

    /// Tenant 1's rows and files gone, as after an accident.
    fn delete_tenant_1(&self) {
        let c = &self.db.conn;
        let keys: Vec<String> = c
            .prepare("SELECT b.key FROM active_storage_blobs b JOIN active_storage_attachments a ON a.blob_id = b.id WHERE a.record_id = 1")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        c.execute_batch(
            "CREATE TEMP TABLE gone AS SELECT blob_id FROM active_storage_attachments WHERE record_id = 1;
             DELETE FROM active_storage_attachments WHERE record_id = 1;
             DELETE FROM active_storage_blobs WHERE id IN (SELECT blob_id FROM temp.gone);
             DROP TABLE temp.gone;",
        )
        .unwrap();
        for key in keys {
            let _ = std::fs::remove_file(blob_path(&self.storage, &key));
        }
    }
}

/// Backup, then every kind of restore, for each type of blob id.
#[test]
fn blob_tables_keyed_by_text_or_blob_uuids_back_up_and_restore() {
    for ids in [IdType::Integer, IdType::TextUuid, IdType::BlobUuid] {
        let app = UuidApp::new(ids, 2, 3);
        let archive = app.backup(1);
        let rows = snapshot(&app.db.conn);
        let files = files_below(&app.storage);

        // Over the database that still has everything, twice.
        for _ in 0..2 {
            let report = app.restore(&archive, json!({}));
            assert_eq!(report.blobs.reused, 2, "{ids:?}");
            assert_eq!(report.blobs.renamed, 0, "{ids:?}");
            assert_eq!(snapshot(&app.db.conn), rows, "{ids:?}");
        }
        // Purge and restore.
        let report = app.restore(&archive, json!({"purge": true}));
        assert_eq!(report.blobs.renamed, 0, "{ids:?}");
        assert_eq!(snapshot(&app.db.conn), rows, "{ids:?}");
        assert_eq!(files_below(&app.storage), files, "{ids:?}");
        // After the tenant's rows and files were lost.
        app.delete_tenant_1();
        let report = app.restore(&archive, json!({}));
        assert_eq!(report.blobs.written, 2, "{ids:?}");
        assert_eq!(snapshot(&app.db.conn), rows, "{ids:?}");
        assert_eq!(files_below(&app.storage), files, "{ids:?}");
    }
}

/// Tenant 2 now holds a blob with the key of one of tenant 1's: the
/// restored blob gets a fresh key, whatever the type of its id.
#[test]
fn a_key_taken_by_another_tenants_blob_is_renamed_for_any_id_type() {
    for ids in [IdType::Integer, IdType::TextUuid, IdType::BlobUuid] {
        let app = UuidApp::new(ids, 2, 3);
        let archive = app.backup(1);
        app.delete_tenant_1();
        let taken = "k1x00000000000000000000000001";
        app.attach(ids, 2, 99, taken, true);
        let theirs = std::fs::read(blob_path(&app.storage, taken)).unwrap();

        let report = app.restore(&archive, json!({}));
        assert_eq!(report.blobs.renamed, 1, "{ids:?}");
        let fresh = &report.renamed_keys[taken];
        assert_eq!(
            std::fs::read(blob_path(&app.storage, fresh)).unwrap(),
            format!("file {taken}").into_bytes(),
            "{ids:?}"
        );
        assert_eq!(
            std::fs::read(blob_path(&app.storage, taken)).unwrap(),
            theirs,
            "{ids:?}: the other tenant's file"
        );
        let owner: String = app
            .db
            .conn
            .query_row(
                "SELECT a.record_id || '' FROM active_storage_attachments a JOIN active_storage_blobs b ON a.blob_id = b.id WHERE b.key = ?1",
                [fresh],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(owner, "1", "{ids:?}");
    }
}

/// Many blob rows (most without a file, as with a cloud service) restore
/// over themselves: each keeps its key, and the two files are reused.
#[test]
fn many_blob_rows_restore_over_themselves() {
    let app = UuidApp::new(IdType::Integer, 1, 20_000);
    let archive = app.backup(1);
    let before = snapshot(&app.db.conn);
    let report = app.restore(&archive, json!({}));
    assert_eq!(report.blobs.reused, 2);
    assert_eq!(report.blobs.renamed, 0);
    assert_eq!(report.restored["active_storage_blobs"], 20_000);
    assert_eq!(snapshot(&app.db.conn), before);
}

/// The peak memory of a restore of `TK_BLOB_ROWS` blob rows of a cloud
/// service (no files: backed up and restored without a storage root),
/// measured in a process of its own (the backup holds its blob rows in
/// memory itself): the first run with `TK_BLOB_DIR` set makes the database
/// and the archive there, the second restores it and prints the peak RSS,
/// e.g. `TK_BLOB_ROWS=2000000 TK_BLOB_DIR=/tmp/many /usr/bin/time -v
/// target/debug/deps/storage_safety-… --ignored --exact measure_restore_of_many_blob_rows`.
#[test]
#[ignore]
fn measure_restore_of_many_blob_rows() {
    let dir = PathBuf::from(std::env::var("TK_BLOB_DIR").expect("TK_BLOB_DIR"));
    let rows: i64 = std::env::var("TK_BLOB_ROWS").map_or(2_000_000, |v| v.parse().unwrap());
    let db = dir.join("app.sqlite3");
    let saved = dir.join("archive.tar.gz");
    if !saved.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        if !db.exists() {
            let app = UuidApp::new(IdType::Integer, 1, rows);
            std::fs::copy(&app.db.db, &db).unwrap();
        }
        let options = serde_json::from_value(json!({
            "database": db, "tenant_id": 1, "output_dir": dir,
        }))
        .unwrap();
        let made = tenant_kit::backup::backup(&options, &mut CollectProgress::default()).unwrap();
        std::fs::rename(made.path, &saved).unwrap();
        return;
    }
    let options = serde_json::from_value(json!({
        "database": db, "archive": saved, "tenant_id": 1,
    }))
    .unwrap();
    let report = tenant_kit::restore::restore(&options, &mut CollectProgress::default()).unwrap();
    assert_eq!(report.restored["active_storage_blobs"], rows as u64);
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let peak = status.lines().find(|l| l.starts_with("VmHWM")).unwrap();
    println!("{rows} blob rows: {peak}");
}
