//! Hostile archives, the gzip layer: bombs, trailing data, truncation, damage.
//! Each case is restored in dry-run and real mode and must be refused by
//! its own check (kind and reason in `tests/common/hostile_cases.rs`) with
//! the database and storage byte-identical.

mod common;

use common::hostile::*;
use common::hostile_cases::*;
use common::*;
use serde_json::json;
use tenant_kit::ErrorKind;

#[test]
fn bomb() {
    assert_refused(&GZIP_BOMB);
}

#[test]
fn zeros_after_the_end() {
    assert_refused(&GZIP_ZEROS_AFTER_THE_END);
}

#[test]
fn trailing_bytes() {
    assert_refused(&GZIP_TRAILING_BYTES);
}

#[test]
fn empty_file() {
    assert_refused(&GZIP_EMPTY_FILE);
}

#[test]
fn second_member() {
    assert_refused(&GZIP_SECOND_MEMBER);
}

#[test]
fn truncated_in_header() {
    assert_refused(&GZIP_TRUNCATED_IN_HEADER);
}

#[test]
fn truncated_half() {
    assert_refused(&GZIP_TRUNCATED_HALF);
}

#[test]
fn truncated_trailer() {
    assert_refused(&GZIP_TRUNCATED_TRAILER);
}

#[test]
fn flipped_byte() {
    assert_refused(&GZIP_FLIPPED_BYTE);
}

#[test]
fn an_empty_archive_file_is_reported_as_empty_not_truncated() {
    let app = App::new();
    let empty = app.dir.path().join("tenant_1_20260101000000.tar.gz");
    std::fs::write(&empty, b"").unwrap();
    let db_before = file_bytes(&app.db);
    let err = tenant_kit::verify::verify_path(&empty).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Archive, "{err}");
    assert!(
        err.message().contains("is an empty file (0 bytes)"),
        "{err}"
    );
    let err = app
        .restore(&empty, 1, json!({"dry_run": true}))
        .unwrap_err();
    assert!(
        err.message().contains("is an empty file (0 bytes)"),
        "{err}"
    );
    assert_eq!(file_bytes(&app.db), db_before);
}
