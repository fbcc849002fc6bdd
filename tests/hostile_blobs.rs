//! Hostile archives, the blob files: content hashes and keys outside ActiveStorage's alphabet.
//! Each case is restored in dry-run and real mode and must be refused by
//! its own check (kind and reason in `tests/common/hostile_cases.rs`) with
//! the database and storage byte-identical.

mod common;

use common::hostile::assert_refused;
use common::hostile_cases::*;

#[test]
fn hash_mismatch() {
    assert_refused(&BLOB_HASH_MISMATCH);
}

#[test]
fn key_traversal() {
    assert_refused(&BLOB_KEY_TRAVERSAL);
}

#[test]
fn key_parent() {
    assert_refused(&BLOB_KEY_PARENT);
}

#[test]
fn key_space() {
    assert_refused(&BLOB_KEY_SPACE);
}

#[test]
fn key_slash() {
    assert_refused(&BLOB_KEY_SLASH);
}

#[test]
fn key_non_ascii() {
    assert_refused(&BLOB_KEY_NON_ASCII);
}
