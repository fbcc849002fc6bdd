//! The catalogue of hostile archives, by concern: the tar layer, the gzip
//! layer, the manifest, the dump lines, the blob files, tenant isolation.
//! Each case has its own `#[test]` in `tests/hostile_<concern>.rs`; the
//! fuzz seed writer in `tests/hostile_archives.rs` reads them all through
//! [`ALL`].

use super::hostile::*;
use serde_json::json;
use std::io::Write;
use tenant_kit::ErrorKind::{Archive, Integrity, Schema};

// ---- builders shared by several cases ----

/// A valid archive with one more entry (of any name and type) at `at`, or
/// at the end.
fn with_entry(
    v: &Parts,
    at: Option<usize>,
    name: &str,
    kind: tar::EntryType,
    link: Option<&str>,
) -> Vec<u8> {
    let mut e = regular(v.entries());
    let data = if kind == tar::EntryType::Regular {
        b"evil".to_vec()
    } else {
        Vec::new()
    };
    let entry = (header(name, data.len() as u64, kind, link), data);
    match at {
        Some(i) => e.insert(i, entry),
        None => e.push(entry),
    }
    gzip(&tar_bytes(&e))
}

fn entry_named(v: &Parts, name: &str) -> Vec<u8> {
    with_entry(v, None, name, tar::EntryType::Regular, None)
}

/// A link named dump.jsonl, before the real one.
fn link_as_dump(v: &Parts, kind: tar::EntryType) -> Vec<u8> {
    with_entry(v, Some(1), "dump.jsonl", kind, Some("/etc/passwd"))
}

/// A link with a blob's name, followed by the regular blob file.
fn link_then_blob(v: &Parts, kind: tar::EntryType) -> Vec<u8> {
    let name = format!("blobs/{}", v.blobs[0].0);
    with_entry(v, Some(2), &name, kind, Some("/tmp"))
}

fn special_entry(v: &Parts, kind: tar::EntryType) -> Vec<u8> {
    with_entry(v, Some(1), "blobs", kind, None)
}

/// The valid archive cut to `len` bytes.
fn truncated(v: &Parts, len: impl Fn(usize) -> usize) -> Vec<u8> {
    let good = repack(v);
    good[..len(good.len())].to_vec()
}

/// The parts after `edit`, packed.
fn edited(v: &Parts, edit: impl FnOnce(&mut Parts)) -> Vec<u8> {
    let mut p = v.clone();
    edit(&mut p);
    repack(&p)
}

/// The first blob under another key, in the manifest and as a file.
fn blob_keyed(v: &Parts, bad_key: &str) -> Vec<u8> {
    edited(v, |p| {
        let old = p.blobs[0].0.clone();
        p.blobs[0].0 = bad_key.to_string();
        for b in p.manifest["blobs"].as_array_mut().unwrap() {
            if b["key"] == json!(old) {
                b["key"] = json!(bad_key);
            }
        }
    })
}

/// The first `tasks` line of the dump replaced by `line`, hash fixed.
fn dump_line(v: &Parts, line: String) -> Vec<u8> {
    edited(v, |p| {
        let text = String::from_utf8(p.dump.clone()).unwrap();
        let mut lines: Vec<String> = text.lines().map(|l| format!("{l}\n")).collect();
        let at = lines
            .iter()
            .position(|l| l.contains("\"table\":\"tasks\""))
            .unwrap();
        lines[at] = line;
        p.dump = lines.concat().into_bytes();
        p.rehash_dump();
    })
}

const CRAFTED_TABLE: &str = "tasks\"; DROP TABLE users; --";

fn tasks_entry(p: &Parts) -> usize {
    p.manifest["tables"]
        .as_array()
        .unwrap()
        .iter()
        .position(|t| t["name"] == "tasks")
        .unwrap()
}

/// 2 GiB of zeros declared as dump.jsonl (and in the manifest), 256 MiB of
/// them present: refused by the declared size before anything is
/// decompressed. Streamed, not held in RAM.
fn gzip_bomb(v: &Parts) -> Vec<u8> {
    let mut p = v.clone();
    p.manifest["dump"]["size"] = json!(1u64 << 31);
    let m = serde_json::to_vec(&p.manifest).unwrap();
    let mut t = Vec::new();
    t.extend_from_slice(
        header(
            "manifest.json",
            m.len() as u64,
            tar::EntryType::Regular,
            None,
        )
        .as_bytes(),
    );
    t.extend_from_slice(&m);
    t.extend(std::iter::repeat_n(0u8, (512 - m.len() % 512) % 512));
    t.extend_from_slice(header("dump.jsonl", 1 << 31, tar::EntryType::Regular, None).as_bytes());
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&t).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        enc.write_all(&zeros).unwrap();
    }
    enc.finish().unwrap()
}

/// An honest manifest, but the stream goes on past the tar's end marker
/// with 64 MiB of zeros.
fn zeros_after_the_end(v: &Parts) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&tar_bytes(&regular(v.entries()))).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        enc.write_all(&zeros).unwrap();
    }
    enc.finish().unwrap()
}

const fn refused(
    name: &'static str,
    build: fn(&Parts) -> Vec<u8>,
    kind: tenant_kit::ErrorKind,
    reason: &'static str,
) -> Hostile {
    Hostile {
        name,
        build,
        kind,
        reason,
        verify_accepts: false,
    }
}

/// Refused by the target database only: `verify` accepts it.
const fn refused_by_the_database(
    name: &'static str,
    build: fn(&Parts) -> Vec<u8>,
    kind: tenant_kit::ErrorKind,
    reason: &'static str,
) -> Hostile {
    Hostile {
        name,
        build,
        kind,
        reason,
        verify_accepts: true,
    }
}

// ---- the tar layer ----

pub const TAR_PARENT_DIR_NAME: Hostile = refused(
    "entry named ../escape",
    |v| entry_named(v, "../escape"),
    Archive,
    "unexpected entry \"../escape\"",
);
pub const TAR_ABSOLUTE_NAME: Hostile = refused(
    "entry named /etc/passwd",
    |v| entry_named(v, "/etc/passwd"),
    Archive,
    "unexpected entry \"/etc/passwd\"",
);
pub const TAR_BLOB_ESCAPING: Hostile = refused(
    "entry named blobs/../../x",
    |v| entry_named(v, "blobs/../../x"),
    Archive,
    "entry \"blobs/../../x\" is not named by the manifest",
);
pub const TAR_BLOB_NAMING_MANIFEST: Hostile = refused(
    "entry named blobs/../manifest.json",
    |v| entry_named(v, "blobs/../manifest.json"),
    Archive,
    "entry \"blobs/../manifest.json\" is not named by the manifest",
);
pub const TAR_SYMLINK: Hostile = refused(
    "dump.jsonl as a symlink",
    |v| link_as_dump(v, tar::EntryType::Symlink),
    Archive,
    "tar: symbolic link entry \"dump.jsonl\" refused",
);
pub const TAR_HARDLINK: Hostile = refused(
    "dump.jsonl as a hard link",
    |v| link_as_dump(v, tar::EntryType::Link),
    Archive,
    "tar: hard link entry \"dump.jsonl\" refused",
);
pub const TAR_SYMLINK_THEN_FILE: Hostile = refused(
    "a symlink, then a blob file of its name",
    |v| link_then_blob(v, tar::EntryType::Symlink),
    Archive,
    "tar: symbolic link entry \"blobs/",
);
pub const TAR_HARDLINK_THEN_FILE: Hostile = refused(
    "a hard link, then a blob file of its name",
    |v| link_then_blob(v, tar::EntryType::Link),
    Archive,
    "tar: hard link entry \"blobs/",
);
pub const TAR_CHAR_DEVICE: Hostile = refused(
    "a character device",
    |v| special_entry(v, tar::EntryType::Char),
    Archive,
    "tar: device entry \"blobs\" refused",
);
pub const TAR_BLOCK_DEVICE: Hostile = refused(
    "a block device",
    |v| special_entry(v, tar::EntryType::Block),
    Archive,
    "tar: device entry \"blobs\" refused",
);
pub const TAR_FIFO: Hostile = refused(
    "a FIFO",
    |v| special_entry(v, tar::EntryType::Fifo),
    Archive,
    "tar: FIFO entry \"blobs\" refused",
);
pub const TAR_DIRECTORY: Hostile = refused(
    "a directory",
    |v| special_entry(v, tar::EntryType::Directory),
    Archive,
    "tar: directory entry \"blobs\" refused",
);
pub const TAR_DUPLICATE_ENTRY: Hostile = refused(
    "dump.jsonl twice",
    |v| {
        let mut e = regular(v.entries());
        e.push(e[1].clone());
        gzip(&tar_bytes(&e))
    },
    Archive,
    "appears twice",
);
pub const TAR_BLOB_NOT_IN_MANIFEST: Hostile = refused(
    "a blob file the manifest does not name",
    |v| entry_named(v, "blobs/notinmanifest"),
    Archive,
    "is not named by the manifest",
);
pub const TAR_EXTRA_MEMBER: Hostile = refused(
    "a README beside the archive's entries",
    |v| entry_named(v, "README"),
    Archive,
    "unexpected entry",
);
pub const TAR_PAX_SIZE_HEADER: Hostile = refused(
    "a PAX header claiming another size for dump.jsonl",
    |v| {
        let pax_body = b"20 size=99999999999\n".to_vec();
        let mut e = regular(v.entries());
        let h = header(
            "PaxHeaders/dump.jsonl",
            pax_body.len() as u64,
            tar::EntryType::XHeader,
            None,
        );
        e.insert(1, (h, pax_body));
        gzip(&tar_bytes(&e))
    },
    Archive,
    "PAX extended header",
);

// ---- the gzip layer ----

pub const GZIP_BOMB: Hostile = refused(
    "2 GiB of zeros declared as dump.jsonl",
    gzip_bomb,
    Archive,
    "dump.jsonl line 1: not a JSON object",
);
pub const GZIP_ZEROS_AFTER_THE_END: Hostile = refused(
    "64 MiB of zeros after the tar's end",
    zeros_after_the_end,
    Archive,
    "expands beyond what its manifest declares",
);
pub const GZIP_TRAILING_BYTES: Hostile = refused(
    "garbage after the gzip stream",
    |v| {
        let mut a = repack(v);
        a.extend_from_slice(b"garbage");
        a
    },
    Archive,
    "trailing bytes after the gzip stream",
);
pub const GZIP_EMPTY_FILE: Hostile =
    refused("an empty file", |_| Vec::new(), Archive, "is an empty file");
pub const GZIP_SECOND_MEMBER: Hostile = refused(
    "a second gzip member",
    |v| {
        let mut a = repack(v);
        a.extend_from_slice(&gzip(b"second member"));
        a
    },
    Archive,
    "trailing bytes after the gzip stream",
);
pub const GZIP_TRUNCATED_IN_HEADER: Hostile = refused(
    "cut after 10 bytes",
    |v| truncated(v, |_| 10),
    Archive,
    "archive is truncated",
);
pub const GZIP_TRUNCATED_HALF: Hostile = refused(
    "cut in the middle",
    |v| truncated(v, |n| n / 2),
    Archive,
    "archive is truncated",
);
pub const GZIP_TRUNCATED_TRAILER: Hostile = refused(
    "cut in the gzip trailer",
    |v| truncated(v, |n| n - 4),
    Archive,
    "archive is truncated",
);
pub const GZIP_FLIPPED_BYTE: Hostile = refused(
    "a byte flipped in the middle",
    |v| {
        let mut a = repack(v);
        let mid = a.len() / 2;
        a[mid] ^= 0x55;
        a
    },
    Archive,
    "manifest.json is not valid JSON",
);

// ---- the manifest ----

pub const MANIFEST_COUNT_MISMATCH: Hostile = refused(
    "a table's row count one more than the dump has",
    |v| {
        edited(v, |p| {
            let rows = p.manifest["tables"][1]["rows"].as_u64().unwrap();
            p.manifest["tables"][1]["rows"] = json!(rows + 1);
        })
    },
    Integrity,
    "manifest says",
);
pub const MANIFEST_UNKNOWN_MAJOR_VERSION: Hostile = refused(
    "format_version 2.0",
    |v| edited(v, |p| p.manifest["format_version"] = json!("2.0")),
    Archive,
    "unsupported archive format version",
);
pub const MANIFEST_NOT_OUR_FORMAT: Hostile = refused(
    "format something_else",
    |v| edited(v, |p| p.manifest["format"] = json!("something_else")),
    Archive,
    "not a tenant_kit archive",
);
pub const MANIFEST_CRAFTED_TABLE: Hostile = refused_by_the_database(
    "a table named with SQL in the manifest and the dump",
    |v| {
        edited(v, |p| {
            let t = tasks_entry(p);
            p.manifest["tables"][t]["name"] = json!(CRAFTED_TABLE);
            p.edit_rows("tasks", |r| r["table"] = json!(CRAFTED_TABLE));
        })
    },
    Schema,
    "is missing",
);
pub const MANIFEST_CRAFTED_COLUMN: Hostile = refused_by_the_database(
    "a column named with SQL in the manifest and the dump",
    |v| {
        edited(v, |p| {
            let t = tasks_entry(p);
            let column = "title\" = 'x'; --";
            p.manifest["tables"][t]["columns"]
                .as_array_mut()
                .unwrap()
                .push(json!(column));
            p.edit_rows("tasks", |r| r["row"][column] = json!("x"));
        })
    },
    Schema,
    "is missing",
);

// ---- the dump lines ----

pub const DUMP_HASH_MISMATCH: Hostile = refused(
    "a byte of dump.jsonl changed, hash not updated",
    |v| {
        edited(v, |p| {
            let last = p.dump.len() - 3;
            p.dump[last] ^= 1;
        })
    },
    Integrity,
    "dump.jsonl: SHA-256",
);
pub const DUMP_BROKEN_FIRST_LINE: Hostile = refused(
    "dump.jsonl broken at its first line, hash not updated",
    |v| edited(v, |p| p.dump[1] = b'#'),
    Integrity,
    "dump.jsonl: SHA-256",
);
pub const DUMP_CRAFTED_TABLE: Hostile = refused(
    "lines of a table named with SQL",
    |v| {
        edited(v, |p| {
            p.edit_rows("tasks", |r| r["table"] = json!(CRAFTED_TABLE))
        })
    },
    Integrity,
    "table tasks: manifest says",
);
pub const DUMP_RECORD_TYPE_NOWHERE: Hostile = refused_by_the_database(
    "an attachment whose record_type maps to no table",
    |v| {
        edited(v, |p| {
            p.edit_rows("active_storage_attachments", |r| {
                r["row"]["record_type"] = json!("Nowhere::Thing")
            })
        })
    },
    Archive,
    "maps to no table",
);
pub const DUMP_HUGE_LINE: Hostile = refused(
    "a 70 MiB line without newline",
    |v| {
        edited(v, |p| {
            p.dump = b"{\"table\":\"tasks\",\"row\":{\"title\":\"".to_vec();
            p.dump.extend(std::iter::repeat_n(b'a', 70 << 20));
            p.rehash_dump();
        })
    },
    Archive,
    "longer than",
);
pub const DUMP_INVALID_JSON: Hostile = refused(
    "a line of invalid JSON",
    |v| dump_line(v, "{\"table\": \"tasks\", \"row\": {\n".into()),
    Archive,
    "dump.jsonl line",
);
pub const DUMP_DEEP_NESTING: Hostile = refused(
    "a value nested 100,000 deep",
    |v| {
        dump_line(
            v,
            format!(
                "{{\"table\":\"tasks\",\"row\":{{\"id\":{}1{}}}}}\n",
                "[".repeat(100_000),
                "]".repeat(100_000)
            ),
        )
    },
    Archive,
    "dump.jsonl line",
);
pub const DUMP_INTEGER_BEYOND_64_BITS: Hostile = refused(
    "an integer beyond 64 bits",
    |v| {
        dump_line(
            v,
            "{\"table\":\"tasks\",\"row\":{\"id\":123456789012345678901234567890}}\n".into(),
        )
    },
    Archive,
    "dump.jsonl line",
);
pub const DUMP_DUPLICATE_KEYS: Hostile = refused(
    "a row naming a column twice",
    |v| {
        dump_line(
            v,
            "{\"table\":\"tasks\",\"row\":{\"id\":1,\"id\":2}}\n".into(),
        )
    },
    Archive,
    "dump.jsonl line",
);

// ---- the blob files ----

pub const BLOB_HASH_MISMATCH: Hostile = refused(
    "a byte of a blob changed",
    |v| edited(v, |p| p.blobs[0].1[0] ^= 1),
    Integrity,
    "SHA-256 does not match the manifest",
);
pub const BLOB_KEY_TRAVERSAL: Hostile = refused(
    "blob key ab/cd/../../x",
    |v| blob_keyed(v, "ab/cd/../../x"),
    Archive,
    "outside ActiveStorage's alphabet",
);
pub const BLOB_KEY_PARENT: Hostile = refused(
    "blob key ..",
    |v| blob_keyed(v, ".."),
    Archive,
    "outside ActiveStorage's alphabet",
);
pub const BLOB_KEY_SPACE: Hostile = refused(
    "blob key with a space",
    |v| blob_keyed(v, "abc def"),
    Archive,
    "outside ActiveStorage's alphabet",
);
pub const BLOB_KEY_SLASH: Hostile = refused(
    "blob key with a slash",
    |v| blob_keyed(v, "abcd/ef"),
    Archive,
    "outside ActiveStorage's alphabet",
);
pub const BLOB_KEY_NON_ASCII: Hostile = refused(
    "blob key with a non-ASCII letter",
    |v| blob_keyed(v, "ab\u{e9}cd"),
    Archive,
    "outside ActiveStorage's alphabet",
);

// ---- tenant isolation ----

pub const TENANT_OTHER_ROWS: Hostile = refused(
    "tasks of tenant 2, hash updated",
    |v| {
        edited(v, |p| {
            p.edit_rows("tasks", |r| r["row"]["tenant_id"] = json!(2))
        })
    },
    Archive,
    "not the archive's tenant",
);
pub const TENANT_OTHER_ROWS_HASH_STALE: Hostile = refused(
    "tasks of tenant 2, hash not updated",
    |v| {
        edited(v, |p| {
            p.edit_rows("tasks", |r| r["row"]["tenant_id"] = json!(2));
            p.manifest["dump"] = v.manifest["dump"].clone();
        })
    },
    Integrity,
    "dump.jsonl: SHA-256",
);

/// Every case, for the fuzz seed writer and the catalogue check.
pub const ALL: &[&Hostile] = &[
    &TAR_PARENT_DIR_NAME,
    &TAR_ABSOLUTE_NAME,
    &TAR_BLOB_ESCAPING,
    &TAR_BLOB_NAMING_MANIFEST,
    &TAR_SYMLINK,
    &TAR_HARDLINK,
    &TAR_SYMLINK_THEN_FILE,
    &TAR_HARDLINK_THEN_FILE,
    &TAR_CHAR_DEVICE,
    &TAR_BLOCK_DEVICE,
    &TAR_FIFO,
    &TAR_DIRECTORY,
    &TAR_DUPLICATE_ENTRY,
    &TAR_BLOB_NOT_IN_MANIFEST,
    &TAR_EXTRA_MEMBER,
    &TAR_PAX_SIZE_HEADER,
    &GZIP_BOMB,
    &GZIP_ZEROS_AFTER_THE_END,
    &GZIP_TRAILING_BYTES,
    &GZIP_EMPTY_FILE,
    &GZIP_SECOND_MEMBER,
    &GZIP_TRUNCATED_IN_HEADER,
    &GZIP_TRUNCATED_HALF,
    &GZIP_TRUNCATED_TRAILER,
    &GZIP_FLIPPED_BYTE,
    &MANIFEST_COUNT_MISMATCH,
    &MANIFEST_UNKNOWN_MAJOR_VERSION,
    &MANIFEST_NOT_OUR_FORMAT,
    &MANIFEST_CRAFTED_TABLE,
    &MANIFEST_CRAFTED_COLUMN,
    &DUMP_HASH_MISMATCH,
    &DUMP_BROKEN_FIRST_LINE,
    &DUMP_CRAFTED_TABLE,
    &DUMP_RECORD_TYPE_NOWHERE,
    &DUMP_HUGE_LINE,
    &DUMP_INVALID_JSON,
    &DUMP_DEEP_NESTING,
    &DUMP_INTEGER_BEYOND_64_BITS,
    &DUMP_DUPLICATE_KEYS,
    &BLOB_HASH_MISMATCH,
    &BLOB_KEY_TRAVERSAL,
    &BLOB_KEY_PARENT,
    &BLOB_KEY_SPACE,
    &BLOB_KEY_SLASH,
    &BLOB_KEY_NON_ASCII,
    &TENANT_OTHER_ROWS,
    &TENANT_OTHER_ROWS_HASH_STALE,
];
