//! Running out of space: backup and restore under RLIMIT_FSIZE (SIGXFSZ
//! ignored, so writes fail with EFBIG the way a full disk fails them), in a
//! child process. Expected: a clear error, nothing half-written, the
//! database unchanged.

mod common;

use common::*;
use serde_json::json;
use std::process::Command;

const CHILD_ENV: &str = "TENANT_KIT_FSIZE_CHILD";

#[test]
fn fsize_child() {
    let Ok(config) = std::env::var(CHILD_ENV) else {
        return;
    };
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    let limit = config["limit"].as_u64().unwrap();
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let rl = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &rl), 0);
    }
    let options = config["options"].to_string();
    let mut progress = tenant_kit::NoProgress;
    let result = if config["op"] == "backup" {
        tenant_kit::api::backup_json(&options, &mut progress)
    } else {
        tenant_kit::api::restore_json(&options, &mut progress)
    };
    let outcome = match result {
        Ok(_) => json!({"ok": true}),
        Err(e) => json!({"ok": false, "kind": e.kind().name(), "message": e.message()}),
    };
    // Stdout is a pipe, which RLIMIT_FSIZE does not limit.
    println!("OUTCOME {outcome}");
}

fn run_limited(
    op: &str,
    limit: u64,
    options: serde_json::Value,
    dir: &std::path::Path,
) -> serde_json::Value {
    let _ = dir;
    let config = json!({"op": op, "limit": limit, "options": options});
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["fsize_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, config.to_string())
        .stderr(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("OUTCOME ").map(|(_, json)| json.to_string()))
        .unwrap_or_else(|| panic!("child said nothing ({}): {stdout}", output.status));
    serde_json::from_str(&line).unwrap()
}

#[test]
fn backup_on_a_full_disk_fails_clearly_and_leaves_nothing() {
    let app = App::new();
    // Limits from nothing up to just below what a backup writes.
    let full = app.backup(1);
    let dump = full.rows * 40; // well below dump.jsonl's real size
    std::fs::remove_file(&full.path).unwrap();
    // (Not `full.bytes - 1`: the next archive may be a byte or two smaller,
    // as its timestamps compress differently.)
    for limit in [0u64, 600, dump, full.bytes - 256] {
        let options = json!({"database": app.db, "tenant_id": 1, "output_dir": app.out, "storage_root": app.storage});
        let outcome = run_limited("backup", limit, options, app.dir.path());
        assert_eq!(outcome["ok"], false, "limit {limit}: {outcome}");
        assert_eq!(outcome["kind"], "io", "limit {limit}: {outcome}");
        let left: Vec<_> = std::fs::read_dir(&app.out).unwrap().collect();
        assert!(left.is_empty(), "limit {limit} left {left:?}");
    }
    app.backup(1);
}

#[test]
fn restore_on_a_full_disk_fails_clearly_and_changes_nothing() {
    let app = App::new();
    let archive = app.backup(1).path;
    for n in [1, 2, 9] {
        std::fs::remove_file(blob_path(&app.storage, &blob_key(1, n))).unwrap();
    }
    // Edits since the backup, so that the restore has rows to write.
    app.conn()
        .execute_batch("UPDATE tasks SET title = title || ' (edited)' WHERE tenant_id = 1; DELETE FROM tags_tasks;")
        .unwrap();
    let before = app.snapshot();
    let files_before = app.storage_files();
    let tmp = app.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    // Small enough that unpacking, the journal or the blob files hit it.
    for limit in [0u64, 512, 2048, 8192] {
        let options = json!({"database": app.db, "archive": archive, "tenant_id": 1, "storage_root": app.storage,
                             "purge": true, "tmp_dir": tmp});
        let outcome = run_limited("restore", limit, options, app.dir.path());
        assert_eq!(outcome["ok"], false, "limit {limit}: {outcome}");
        let kind = outcome["kind"].as_str().unwrap();
        assert!(
            ["io", "database"].contains(&kind),
            "limit {limit}: {outcome}"
        );
        assert_eq!(app.snapshot(), before, "limit {limit} changed the database");
        assert_eq!(
            app.storage_files(),
            files_before,
            "limit {limit} changed the storage"
        );
        assert!(
            std::fs::read_dir(&tmp).unwrap().next().is_none(),
            "limit {limit} left temp files"
        );
    }
    app.restore(&archive, 1, json!({"purge": true})).unwrap();
}
