//! SQLite's own result code travels with a database error (Rust `Error`,
//! the C error JSON), so a caller tells a busy database from a corrupt
//! file without reading the message. Real locks, real damaged files.

mod common;

use common::*;
use rusqlite::Connection;
use serde_json::{json, Value};
use std::ffi::{CStr, CString};
use tenant_kit::progress::CollectProgress;
use tenant_kit::{Error, ErrorKind, SqliteCode};

fn backup_error(options: &tenant_kit::backup::BackupOptions) -> Error {
    tenant_kit::backup::backup(options, &mut CollectProgress::default()).unwrap_err()
}

/// Another connection holds an EXCLUSIVE transaction on the app's file.
fn exclusively_locked(app: &App) -> Connection {
    let blocker = Connection::open(&app.db).unwrap();
    blocker
        .execute_batch("BEGIN EXCLUSIVE; UPDATE tenants SET name = name WHERE id = 3;")
        .unwrap();
    blocker
}

/// Backup options of tenant 1 as JSON, `extra` keys set over them.
fn options_json(app: &App, extra: Value) -> Value {
    let mut options = json!({
        "database": app.db, "tenant_id": 1, "output_dir": app.out, "storage_root": app.storage,
    });
    for (k, v) in extra.as_object().unwrap() {
        options[k] = v.clone();
    }
    options
}

fn options(app: &App, extra: Value) -> tenant_kit::backup::BackupOptions {
    serde_json::from_value(options_json(app, extra)).unwrap()
}

#[test]
fn a_backup_of_a_locked_database_fails_busy() {
    let app = App::new();
    let _blocker = exclusively_locked(&app);
    let err = backup_error(&options(&app, json!({"busy_timeout_ms": 50})));
    assert_eq!(err.kind(), ErrorKind::Database, "{err}");
    let code = err.sqlite_code().expect("SQLite's code kept");
    assert_eq!(code, SqliteCode::from_extended(5), "{err}");
    assert_eq!((code.primary, code.extended), (5, 5));
    assert!(code.is_busy() && !code.is_corrupt(), "{code:?}");
}

#[test]
fn a_restore_into_a_locked_database_fails_busy() {
    let app = App::new();
    let archive = app.backup(1).path;
    let _blocker = exclusively_locked(&app);
    let err = tenant_kit::restore::restore(
        &app.restore_options(&archive, 1, json!({"purge": true, "busy_timeout_ms": 50})),
        &mut CollectProgress::default(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Database, "{err}");
    assert_eq!(
        err.sqlite_code().map(|c| c.primary),
        Some(SqliteCode::BUSY),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_a_database_fails_notadb() {
    let app = App::new();
    std::fs::write(&app.db, vec![b'x'; 4096]).unwrap();
    let err = backup_error(&app.backup_options(1));
    assert!(
        err.message().contains("is not a usable SQLite database"),
        "{err}"
    );
    let code = err.sqlite_code().expect("SQLite's code kept");
    assert_eq!((code.primary, code.extended), (SqliteCode::NOTADB, 26));
    assert!(code.is_corrupt() && !code.is_busy(), "{code:?}");
}

#[test]
fn a_database_with_damaged_pages_fails_corrupt() {
    let app = App::new();
    let page_size: usize = app
        .conn()
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    // Page 1 (header and schema) stays readable; every table page after it
    // is garbage, as a disk that lost sectors would leave them.
    let mut bytes = std::fs::read(&app.db).unwrap();
    assert!(
        bytes.len() > 2 * page_size,
        "the sample app has table pages"
    );
    bytes[page_size..].fill(0xA5);
    std::fs::write(&app.db, bytes).unwrap();
    let err = backup_error(&app.backup_options(1));
    assert_eq!(err.kind(), ErrorKind::Database, "{err}");
    let code = err.sqlite_code().expect("SQLite's code kept");
    assert_eq!(code.primary, SqliteCode::CORRUPT, "{err}");
    assert!(code.is_corrupt() && !code.is_busy(), "{code:?}");
}

#[test]
fn errors_sqlite_did_not_report_carry_no_code() {
    let app = App::new();
    let err = backup_error(&options(&app, json!({"tenant_column": "account_id"})));
    assert_ne!(err.kind(), ErrorKind::Database, "{err}");
    assert_eq!(err.sqlite_code(), None, "{err}");
}

/// `tk_backup` with `options`; its status and error JSON.
fn c_backup(options: &Value) -> (tenant_kit::capi::tk_status, Value) {
    let options = CString::new(options.to_string()).unwrap();
    let mut out: *mut std::ffi::c_char = std::ptr::null_mut();
    // SAFETY: valid NUL-terminated options, no callback, a valid out pointer;
    // the returned string is freed once with tk_string_free.
    unsafe {
        let status =
            tenant_kit::capi::tk_backup(options.as_ptr(), None, std::ptr::null_mut(), &mut out);
        let json = serde_json::from_str(CStr::from_ptr(out).to_str().unwrap()).unwrap();
        tenant_kit::capi::tk_string_free(out);
        (status, json)
    }
}

#[test]
fn the_c_error_json_carries_sqlites_codes() {
    let app = App::new();
    let mut options = options_json(&app, json!({"busy_timeout_ms": 50}));
    let blocker = exclusively_locked(&app);
    let (status, json) = c_backup(&options);
    assert_eq!(status, tenant_kit::capi::tk_status::TK_DATABASE_ERROR);
    assert_eq!(json["kind"], "database", "{json}");
    assert_eq!(
        (&json["code"], &json["extended_code"]),
        (&json!(5), &json!(5)),
        "{json}"
    );
    drop(blocker);

    options["tenant_column"] = json!("account_id");
    let (status, json) = c_backup(&options);
    assert_ne!(
        status,
        tenant_kit::capi::tk_status::TK_DATABASE_ERROR,
        "{json}"
    );
    let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["kind", "message"], "{json}");
}
