//! Hostile archives, the tar layer: entry names, types and order, as an attacker writes them.
//! Each case is restored in dry-run and real mode and must be refused by
//! its own check (kind and reason in `tests/common/hostile_cases.rs`) with
//! the database and storage byte-identical.

mod common;

use common::hostile::assert_refused;
use common::hostile_cases::*;

#[test]
fn parent_dir_name() {
    assert_refused(&TAR_PARENT_DIR_NAME);
}

#[test]
fn absolute_name() {
    assert_refused(&TAR_ABSOLUTE_NAME);
}

#[test]
fn blob_escaping() {
    assert_refused(&TAR_BLOB_ESCAPING);
}

#[test]
fn blob_naming_manifest() {
    assert_refused(&TAR_BLOB_NAMING_MANIFEST);
}

#[test]
fn symlink() {
    assert_refused(&TAR_SYMLINK);
}

#[test]
fn hardlink() {
    assert_refused(&TAR_HARDLINK);
}

#[test]
fn symlink_then_file() {
    assert_refused(&TAR_SYMLINK_THEN_FILE);
}

#[test]
fn hardlink_then_file() {
    assert_refused(&TAR_HARDLINK_THEN_FILE);
}

#[test]
fn char_device() {
    assert_refused(&TAR_CHAR_DEVICE);
}

#[test]
fn block_device() {
    assert_refused(&TAR_BLOCK_DEVICE);
}

#[test]
fn fifo() {
    assert_refused(&TAR_FIFO);
}

#[test]
fn directory() {
    assert_refused(&TAR_DIRECTORY);
}

#[test]
fn duplicate_entry() {
    assert_refused(&TAR_DUPLICATE_ENTRY);
}

#[test]
fn blob_not_in_manifest() {
    assert_refused(&TAR_BLOB_NOT_IN_MANIFEST);
}

#[test]
fn extra_member() {
    assert_refused(&TAR_EXTRA_MEMBER);
}

#[test]
fn pax_size_header() {
    assert_refused(&TAR_PAX_SIZE_HEADER);
}
