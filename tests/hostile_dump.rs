//! Hostile archives, the dump lines: hashes, JSON the parser must refuse, tables and record types.
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
fn hash_mismatch() {
    assert_refused(&DUMP_HASH_MISMATCH);
}

#[test]
fn broken_first_line() {
    assert_refused(&DUMP_BROKEN_FIRST_LINE);
}

#[test]
fn crafted_table() {
    assert_refused(&DUMP_CRAFTED_TABLE);
}

#[test]
fn record_type_nowhere() {
    assert_refused(&DUMP_RECORD_TYPE_NOWHERE);
}

#[test]
fn huge_line() {
    assert_refused(&DUMP_HUGE_LINE);
}

#[test]
fn invalid_json() {
    assert_refused(&DUMP_INVALID_JSON);
}

#[test]
fn deep_nesting() {
    assert_refused(&DUMP_DEEP_NESTING);
}

#[test]
fn integer_beyond_64_bits() {
    assert_refused(&DUMP_INTEGER_BEYOND_64_BITS);
}

#[test]
fn duplicate_keys() {
    assert_refused(&DUMP_DUPLICATE_KEYS);
}

/// Rows are staged while dump.jsonl is still being unpacked, so a parse
/// error can come before the extraction has hashed the whole dump. The
/// hash mismatch must still be what is reported (the dump here is large
/// enough to be unpacked in many pieces).
#[test]
fn a_damaged_large_dump_is_an_integrity_error_not_a_parse_error() {
    let app = App::new();
    let valid = Parts::from_archive(&app.backup(1).path);
    let mut p = valid.clone();
    p.dump[1] = b'#';
    let filler = b"{\"table\":\"tasks\",\"row\":{}}\n".repeat(1 << 18);
    p.dump.extend_from_slice(&filler);
    // The size agrees (checked before unpacking); the hash is the old one.
    p.manifest["dump"]["size"] = json!(p.dump.len());
    let path = app.dir.path().join("damaged.tar.gz");
    std::fs::write(&path, gzip(&tar_bytes(&regular(p.entries())))).unwrap();
    let db_before = file_bytes(&app.db);
    for dry_run in [true, false] {
        let err = app
            .restore(&path, 1, json!({"dry_run": dry_run, "purge": true}))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
        assert!(err.to_string().contains("dump.jsonl"), "{err}");
    }
    assert_eq!(file_bytes(&app.db), db_before);
}
