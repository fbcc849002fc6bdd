//! Faults from outside: SIGKILL at many points of a backup and a restore
//! (run in a child process), a database another process keeps locked, and
//! writers running during a backup in WAL mode.

mod common;

use common::*;
use rusqlite::Connection;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tenant_kit::progress::{CollectProgress, Event};
use tenant_kit::ErrorKind;

const CHILD_ENV: &str = "TENANT_KIT_CRASH_CHILD";

/// Runs only inside the child process: a backup or restore whose progress
/// callback, at the chosen step, announces itself and waits to be killed.
#[test]
fn crash_child() {
    let Ok(config) = std::env::var(CHILD_ENV) else {
        return;
    };
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    let step = config["step"].as_str().unwrap().to_string();
    let marker = PathBuf::from(config["marker"].as_str().unwrap());
    let mut progress = |e: Event| {
        if e.step() == step {
            std::fs::write(&marker, b"here").unwrap();
            std::thread::sleep(Duration::from_secs(60));
        }
        Ok(())
    };
    let options = config["options"].to_string();
    if config["op"] == "backup" {
        tenant_kit::api::backup_json(&options, &mut progress).unwrap();
    } else {
        tenant_kit::api::restore_json(&options, &mut progress).unwrap();
    }
}

/// Start the child, wait until it reached `step`, SIGKILL it.
fn run_and_kill(op: &str, step: &str, options: serde_json::Value, dir: &Path) {
    let marker = dir.join(format!("marker-{op}-{step}"));
    let _ = std::fs::remove_file(&marker);
    let config = json!({"op": op, "step": step, "marker": marker, "options": options});
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, config.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !marker.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("child ended before {op} reached {step}: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "child never reached {step}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
}

fn integrity_ok(db: &Path) {
    let conn = Connection::open(db).unwrap();
    let result: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(result, "ok");
}

#[test]
fn sigkill_during_restore_leaves_the_database_as_it_was() {
    let app = App::new();
    let archive = app.backup(1).path;
    let before = app.snapshot();
    for step in [
        "plan",
        "purge_progress",
        "blobs",
        "restore_progress",
        "commit",
    ] {
        let options = json!({"database": app.db, "archive": archive, "tenant_id": 1, "storage_root": app.storage, "purge": true});
        run_and_kill("restore", step, options, app.dir.path());
        integrity_ok(&app.db);
        // Opening the database rolls back the hot journal of the dead process.
        assert_eq!(app.snapshot(), before, "database after SIGKILL at {step}");
    }
    // And a later run succeeds.
    app.restore(&archive, 1, json!({"purge": true})).unwrap();
    assert_eq!(app.snapshot(), before);
}

/// Every path below `root`, folders too (None), with the files' bytes.
fn storage_tree(root: &Path) -> std::collections::BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut tree = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let relative = path.strip_prefix(root).unwrap().to_path_buf();
            if path.is_dir() {
                tree.insert(relative, None);
                stack.push(path);
            } else {
                tree.insert(relative, Some(std::fs::read(&path).unwrap()));
            }
        }
    }
    tree
}

/// The storage journals next to the app's database.
fn storage_journals(app: &App) -> Vec<String> {
    std::fs::read_dir(app.db.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("app.sqlite3-tenant_kit-journal-"))
        .collect()
}

#[test]
fn blob_files_of_a_restore_killed_before_its_commit_are_removed_by_the_next() {
    let app = App::new();
    let archive = app.backup(1).path;
    let other_archive = app.backup(2).path;
    // Tenant 1 loses its blobs, rows, files and folders: restoring it
    // writes them all again.
    app.conn()
        .execute_batch(
            "DELETE FROM active_storage_attachments WHERE blob_id IN (1001, 1002, 1009);
             DELETE FROM active_storage_variant_records WHERE blob_id = 1001;
             DELETE FROM active_storage_blobs WHERE id IN (1001, 1002, 1009);",
        )
        .unwrap();
    std::fs::remove_dir_all(app.storage.join("t1")).unwrap();
    let rows_before = app.snapshot();
    let files_before = storage_tree(&app.storage);
    for step in ["restore_progress", "commit"] {
        let options = json!({"database": app.db, "archive": archive, "tenant_id": 1, "storage_root": app.storage});
        run_and_kill("restore", step, options, app.dir.path());
        assert_eq!(
            app.snapshot(),
            rows_before,
            "database after SIGKILL at {step}"
        );
        let left = storage_tree(&app.storage);
        let new_files = |tree: &std::collections::BTreeMap<PathBuf, Option<Vec<u8>>>| {
            tree.values().filter(|f| f.is_some()).count()
                - files_before.values().filter(|f| f.is_some()).count()
        };
        assert_eq!(new_files(&left), 3, "SIGKILL at {step}: {left:?}");
        assert_eq!(storage_journals(&app).len(), 1, "SIGKILL at {step}");
        // The next restore, of another tenant and writing no file of its
        // own, first removes what the dead one left, folders too.
        let report = app
            .restore(&other_archive, 2, json!({"purge": true}))
            .unwrap();
        assert_eq!(report.blobs.recovered, 3);
        assert_eq!(report.blobs.written, 0);
        assert_eq!(
            storage_tree(&app.storage),
            files_before,
            "storage after SIGKILL at {step} and one more restore"
        );
        assert_eq!(storage_journals(&app), Vec::<String>::new());
        assert_eq!(app.snapshot(), rows_before);
    }
    // A restore that is not killed leaves no journal either.
    let report = app.restore(&archive, 1, json!({})).unwrap();
    assert_eq!(report.blobs.written, 3);
    assert_eq!(report.blobs.recovered, 0);
    assert_eq!(storage_journals(&app), Vec::<String>::new());
}

#[test]
fn sigkill_during_backup_leaves_no_archive() {
    let app = App::new();
    for step in [
        "scan_tables",
        "dump_progress",
        "snapshot",
        "archive_progress",
    ] {
        let options = json!({"database": app.db, "tenant_id": 1, "output_dir": app.out, "storage_root": app.storage});
        run_and_kill("backup", step, options, app.dir.path());
        let archives: Vec<_> = std::fs::read_dir(&app.out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| tenant_kit::prune::parse_archive_name(n).is_some())
            .collect();
        assert!(archives.is_empty(), "SIGKILL at {step} left {archives:?}");
        integrity_ok(&app.db);
    }
    // The killed runs could not remove their work dirs; once those are
    // older than a day, the next backup does.
    let work_dirs = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&app.out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(tenant_kit::work_dir::BACKUP_PREFIX))
            })
            .collect()
    };
    let left = work_dirs();
    assert!(!left.is_empty(), "the kills left no work dir to sweep");
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86_400);
    for dir in &left {
        std::fs::File::open(dir)
            .unwrap()
            .set_times(std::fs::FileTimes::new().set_modified(two_days_ago))
            .unwrap();
    }
    let report = app.backup(1);
    tenant_kit::verify::verify_path(&report.path).unwrap();
    assert_eq!(work_dirs(), Vec::<std::path::PathBuf>::new());
}

#[test]
fn restore_waits_for_a_busy_database_then_fails_without_changes() {
    let app = App::new();
    let archive = app.backup(1).path;
    let before = app.snapshot();
    let blocker = Connection::open(&app.db).unwrap();
    blocker
        .execute_batch("BEGIN IMMEDIATE; UPDATE tenants SET name = name WHERE id = 3;")
        .unwrap();
    let started = Instant::now();
    let mut progress = CollectProgress::default();
    let err = tenant_kit::restore::restore(
        &app.restore_options(&archive, 1, json!({"purge": true, "busy_timeout_ms": 300})),
        &mut progress,
    )
    .unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Database, "{err}");
    assert!(
        err.message().contains("lock") || err.message().contains("busy"),
        "{err}"
    );
    assert!(
        waited >= Duration::from_millis(300),
        "gave up after {waited:?}, before the busy timeout"
    );
    // The write lock was announced and never taken: a display learns it is
    // not held before it learns of the failure.
    let last: Vec<String> = progress.events[progress.events.len() - 3..]
        .iter()
        .map(|e| match e.get("state") {
            Some(state) => format!("{} {}", e.step(), state.as_str().unwrap_or_default()),
            None => e.step().to_string(),
        })
        .collect();
    assert_eq!(last, ["lock write", "lock none", "failed"]);
    blocker.execute_batch("ROLLBACK").unwrap();
    assert_eq!(app.snapshot(), before);
    app.restore(&archive, 1, json!({"purge": true})).unwrap();
}

#[test]
fn wal_backup_does_not_block_writers_and_stays_consistent() {
    let app = App::new();
    let conn = app.conn();
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let options = app.backup_options(1);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (resume_tx, resume_rx) = std::sync::mpsc::channel::<()>();
    let backup = std::thread::spawn(move || {
        let mut first = true;
        let mut progress = |e: Event| {
            if e.step() == "dump_progress" && first {
                first = false;
                tx.send(()).unwrap();
                resume_rx.recv().unwrap();
            }
            Ok(())
        };
        tenant_kit::backup::backup(&options, &mut progress).unwrap()
    });
    rx.recv().unwrap();
    // The backup holds its snapshot: a writer must still get through at once.
    let writer = app.conn();
    writer.busy_timeout(Duration::from_millis(100)).unwrap();
    let started = Instant::now();
    writer
        .execute_batch(
            "BEGIN IMMEDIATE;
             INSERT INTO projects(id, tenant_id, name, created_at, updated_at) VALUES (1900, 1, 'late', 'x', 'x');
             INSERT INTO tasks(id, tenant_id, project_id, title, created_at, updated_at) VALUES (1900, 1, 1900, 'late child', 'x', 'x');
             COMMIT;",
        )
        .expect("writer blocked by a WAL backup");
    assert!(started.elapsed() < Duration::from_millis(100));
    resume_tx.send(()).unwrap();
    let report = backup.join().unwrap();
    // The snapshot predates the writer: neither parent nor child is in it.
    assert_eq!(report.tables["projects"], 2);
    assert_eq!(report.tables["tasks"], 6);
    assert_eq!(report.journal_mode, "wal");
    let mut events = CollectProgress::default();
    tenant_kit::verify::verify(
        &tenant_kit::verify::VerifyOptions::new(report.path),
        &mut events,
    )
    .unwrap();
}
