//! Hostile archives, built by this test code so every case is reproducible:
//! each is restored in dry-run and in real mode against a database and a
//! storage tree that must come out byte-identical, with the documented
//! error, and no file left behind in the temp dir.

mod common;

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use tenant_kit::ErrorKind;

/// The entries of a valid archive, to be mutated.
#[derive(Clone)]
struct Parts {
    manifest: Value,
    dump: Vec<u8>,
    blobs: Vec<(String, Vec<u8>)>,
}

impl Parts {
    fn from_archive(path: &Path) -> Parts {
        let gz = flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap());
        let mut tar = tar::Archive::new(gz);
        let mut manifest = Value::Null;
        let mut dump = Vec::new();
        let mut blobs = Vec::new();
        for e in tar.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_str().unwrap().to_string();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            match name.as_str() {
                "manifest.json" => manifest = serde_json::from_slice(&bytes).unwrap(),
                "dump.jsonl" => dump = bytes,
                _ => blobs.push((name.strip_prefix("blobs/").unwrap().to_string(), bytes)),
            }
        }
        Parts {
            manifest,
            dump,
            blobs,
        }
    }

    /// Make the manifest agree with the (mutated) dump, so that the checks
    /// behind the hash are what gets tested.
    fn rehash_dump(&mut self) {
        self.manifest["dump"]["size"] = json!(self.dump.len());
        self.manifest["dump"]["sha256"] = json!(hex(&Sha256::digest(&self.dump)));
    }

    /// Replace every line of `table` via `f` and fix the hash.
    fn edit_rows(&mut self, table: &str, f: impl Fn(&mut Value)) {
        let text = String::from_utf8(self.dump.clone()).unwrap();
        let mut out = String::new();
        for line in text.lines() {
            let mut v: Value = serde_json::from_str(line).unwrap();
            if v["table"] == table {
                f(&mut v);
            }
            out.push_str(&v.to_string());
            out.push('\n');
        }
        self.dump = out.into_bytes();
        self.rehash_dump();
    }

    /// Take the blob with `key` out: its row, its manifest entries, its file.
    fn remove_blob(&mut self, key: &str) {
        let text = String::from_utf8(self.dump.clone()).unwrap();
        self.dump = text
            .lines()
            .filter(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                !(v["table"] == "active_storage_blobs" && v["row"]["key"] == key)
            })
            .flat_map(|l| [l, "\n"])
            .collect::<String>()
            .into_bytes();
        self.rehash_dump();
        for t in self.manifest["tables"].as_array_mut().unwrap() {
            if t["name"] == "active_storage_blobs" {
                t["rows"] = json!(t["rows"].as_u64().unwrap() - 1);
            }
        }
        self.manifest["blobs"]
            .as_array_mut()
            .unwrap()
            .retain(|b| b["key"] != key);
        self.blobs.retain(|(k, _)| k != key);
    }

    fn entries(&self) -> Vec<(String, Vec<u8>)> {
        let mut e = vec![
            (
                "manifest.json".to_string(),
                serde_json::to_vec(&self.manifest).unwrap(),
            ),
            ("dump.jsonl".to_string(), self.dump.clone()),
        ];
        for (k, b) in &self.blobs {
            e.push((format!("blobs/{k}"), b.clone()));
        }
        e
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A raw ustar header for any name and type, as an attacker would write it.
fn header(name: &str, size: u64, kind: tar::EntryType, link: Option<&str>) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    // set_path refuses `..` and absolute paths; write the bytes directly.
    let bytes = name.as_bytes();
    h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_entry_type(kind);
    if let Some(l) = link {
        let lb = l.as_bytes();
        h.as_old_mut().linkname[..lb.len()].copy_from_slice(lb);
    }
    h.set_cksum();
    h
}

fn tar_bytes(entries: &[(tar::Header, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (h, data) in entries {
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn regular(entries: Vec<(String, Vec<u8>)>) -> Vec<(tar::Header, Vec<u8>)> {
    entries
        .into_iter()
        .map(|(n, b)| (header(&n, b.len() as u64, tar::EntryType::Regular, None), b))
        .collect()
}

struct Case {
    name: &'static str,
    archive: Vec<u8>,
    expect: &'static [ErrorKind],
}

fn cases(valid: &Parts) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |name: &'static str, archive: Vec<u8>, expect: &'static [ErrorKind]| {
        cases.push(Case {
            name,
            archive,
            expect,
        })
    };
    let ok = valid.entries();
    let archive_err: &'static [ErrorKind] = &[ErrorKind::Archive];
    let integrity: &'static [ErrorKind] = &[ErrorKind::Integrity];
    let either: &'static [ErrorKind] = &[ErrorKind::Archive, ErrorKind::Integrity];

    for evil in [
        "../escape",
        "/etc/passwd",
        "blobs/../../x",
        "blobs/../manifest.json",
    ] {
        let mut e = regular(ok.clone());
        e.push((
            header(evil, 4, tar::EntryType::Regular, None),
            b"evil".to_vec(),
        ));
        add("traversal name", gzip(&tar_bytes(&e)), archive_err);
    }
    for kind in [tar::EntryType::Symlink, tar::EntryType::Link] {
        let mut e = regular(ok.clone());
        e.insert(
            1,
            (
                header("dump.jsonl", 0, kind, Some("/etc/passwd")),
                Vec::new(),
            ),
        );
        add("link entry", gzip(&tar_bytes(&e)), archive_err);
        // A link followed by a regular file of the same name.
        let mut e = regular(ok.clone());
        let key = &valid.blobs[0].0;
        e.insert(
            2,
            (
                header(&format!("blobs/{key}"), 0, kind, Some("/tmp")),
                Vec::new(),
            ),
        );
        add("link then file", gzip(&tar_bytes(&e)), archive_err);
    }
    for kind in [
        tar::EntryType::Char,
        tar::EntryType::Block,
        tar::EntryType::Fifo,
        tar::EntryType::Directory,
    ] {
        let mut e = regular(ok.clone());
        e.insert(1, (header("blobs", 0, kind, None), Vec::new()));
        add("special entry", gzip(&tar_bytes(&e)), archive_err);
    }
    {
        let mut e = regular(ok.clone());
        let dup = e[1].clone();
        e.push(dup);
        add("duplicate entry", gzip(&tar_bytes(&e)), archive_err);
    }
    {
        let mut e = regular(ok.clone());
        e.push((
            header("blobs/notinmanifest", 3, tar::EntryType::Regular, None),
            b"abc".to_vec(),
        ));
        add("entry not in manifest", gzip(&tar_bytes(&e)), archive_err);
        let mut e = regular(ok.clone());
        e.push((
            header("README", 3, tar::EntryType::Regular, None),
            b"abc".to_vec(),
        ));
        add("extra member", gzip(&tar_bytes(&e)), archive_err);
    }
    {
        // PAX header claiming another size for the next entry.
        let pax_body = b"20 size=99999999999\n".to_vec();
        let mut e = regular(ok.clone());
        e.insert(
            1,
            (
                header(
                    "PaxHeaders/dump.jsonl",
                    pax_body.len() as u64,
                    tar::EntryType::XHeader,
                    None,
                ),
                pax_body,
            ),
        );
        add("pax size header", gzip(&tar_bytes(&e)), archive_err);
    }
    {
        // 2 GiB of zeros declared as dump.jsonl: refused by the declared
        // size before anything is decompressed. Streamed, not held in RAM.
        let mut p = valid.clone();
        p.manifest["dump"]["size"] = json!(1u64 << 31);
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut t = Vec::new();
        t.extend_from_slice(
            header(
                "manifest.json",
                serde_json::to_vec(&p.manifest).unwrap().len() as u64,
                tar::EntryType::Regular,
                None,
            )
            .as_bytes(),
        );
        let m = serde_json::to_vec(&p.manifest).unwrap();
        t.extend_from_slice(&m);
        t.extend(std::iter::repeat_n(0u8, (512 - m.len() % 512) % 512));
        t.extend_from_slice(
            header("dump.jsonl", 1 << 31, tar::EntryType::Regular, None).as_bytes(),
        );
        enc.write_all(&t).unwrap();
        // 256 MiB of the 2 GiB present: the reader must stop long before.
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..256 {
            enc.write_all(&zeros).unwrap();
        }
        add("gzip bomb", enc.finish().unwrap(), archive_err);
        // A bomb whose manifest is honest about the small size but whose
        // stream keeps going past the end marker.
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&tar_bytes(&regular(ok.clone()))).unwrap();
        for _ in 0..64 {
            enc.write_all(&zeros).unwrap();
        }
        add("zeros after the end", enc.finish().unwrap(), archive_err);
    }
    {
        let good = gzip(&tar_bytes(&regular(ok.clone())));
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"garbage");
        add("trailing bytes", trailing, archive_err);
        add("empty file", Vec::new(), archive_err);
        let mut second = good.clone();
        second.extend_from_slice(&gzip(b"second member"));
        add("second gzip member", second, archive_err);
        for cut in [10, good.len() / 2, good.len() - 4] {
            add("truncated", good[..cut].to_vec(), either);
        }
        let mut flipped = good.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x55;
        add("flipped byte", flipped, either);
    }
    {
        let mut p = valid.clone();
        p.dump.extend_from_slice(b"");
        let last = p.dump.len() - 3;
        p.dump[last] ^= 1; // content changed, manifest hash not updated
        add(
            "dump hash mismatch",
            gzip(&tar_bytes(&regular(p.entries()))),
            integrity,
        );
        // Damage the rows meet before the hash does (they are staged while
        // the dump is unpacked): the hash is still what is reported.
        let mut p = valid.clone();
        p.dump[1] = b'#';
        add(
            "dump broken at its first line, hash not updated",
            gzip(&tar_bytes(&regular(p.entries()))),
            integrity,
        );
        let mut p = valid.clone();
        p.edit_rows("tasks", |v| v["row"]["tenant_id"] = json!(2));
        p.manifest["dump"] = valid.manifest["dump"].clone();
        add(
            "rows of another tenant, hash not updated",
            gzip(&tar_bytes(&regular(p.entries()))),
            integrity,
        );
        let mut p = valid.clone();
        p.blobs[0].1[0] ^= 1;
        add(
            "blob hash mismatch",
            gzip(&tar_bytes(&regular(p.entries()))),
            integrity,
        );
        let mut p = valid.clone();
        let rows = p.manifest["tables"][1]["rows"].as_u64().unwrap();
        p.manifest["tables"][1]["rows"] = json!(rows + 1);
        add(
            "count mismatch",
            gzip(&tar_bytes(&regular(p.entries()))),
            integrity,
        );
        let mut p = valid.clone();
        p.manifest["format_version"] = json!("2.0");
        add(
            "unknown major version",
            gzip(&tar_bytes(&regular(p.entries()))),
            archive_err,
        );
        let mut p = valid.clone();
        p.manifest["format"] = json!("something_else");
        add(
            "not our format",
            gzip(&tar_bytes(&regular(p.entries()))),
            archive_err,
        );
    }
    {
        let mut p = valid.clone();
        p.edit_rows("tasks", |v| v["row"]["tenant_id"] = json!(2));
        add(
            "rows of another tenant",
            gzip(&tar_bytes(&regular(p.entries()))),
            archive_err,
        );
        let mut p = valid.clone();
        p.edit_rows("tasks", |v| {
            v["table"] = json!("tasks\"; DROP TABLE users; --")
        });
        add(
            "crafted table name",
            gzip(&tar_bytes(&regular(p.entries()))),
            either,
        );
        let mut p = valid.clone();
        let t = p.manifest["tables"]
            .as_array()
            .unwrap()
            .iter()
            .position(|t| t["name"] == "tasks")
            .unwrap();
        p.manifest["tables"][t]["name"] = json!("tasks\"; DROP TABLE users; --");
        p.edit_rows("tasks", |v| {
            v["table"] = json!("tasks\"; DROP TABLE users; --")
        });
        add(
            "crafted table in manifest",
            gzip(&tar_bytes(&regular(p.entries()))),
            &[ErrorKind::Schema],
        );
        let mut p = valid.clone();
        let cols = p.manifest["tables"][t]["columns"].as_array_mut().unwrap();
        cols.push(json!("title\" = 'x'; --"));
        p.edit_rows("tasks", |v| v["row"]["title\" = 'x'; --"] = json!("x"));
        add(
            "crafted column",
            gzip(&tar_bytes(&regular(p.entries()))),
            &[ErrorKind::Schema],
        );
        let mut p = valid.clone();
        p.edit_rows("active_storage_attachments", |v| {
            v["row"]["record_type"] = json!("Nowhere::Thing")
        });
        add(
            "record_type maps nowhere",
            gzip(&tar_bytes(&regular(p.entries()))),
            archive_err,
        );
    }
    for bad_key in ["ab/cd/../../x", "..", "abc def", "abcd/ef", "ab\u{e9}cd"] {
        let mut p = valid.clone();
        let old = p.blobs[0].0.clone();
        p.blobs[0].0 = bad_key.to_string();
        for b in p.manifest["blobs"].as_array_mut().unwrap() {
            if b["key"] == json!(old) {
                b["key"] = json!(bad_key);
            }
        }
        add(
            "bad blob key",
            gzip(&tar_bytes(&regular(p.entries()))),
            archive_err,
        );
    }
    {
        let mut p = valid.clone();
        p.dump = b"{\"table\":\"tasks\",\"row\":{\"title\":\"".to_vec();
        p.dump.extend(std::iter::repeat_n(b'a', 70 << 20));
        p.rehash_dump();
        add(
            "huge line without newline",
            gzip(&tar_bytes(&regular(p.entries()))),
            archive_err,
        );
        for (what, line) in [
            (
                "invalid json",
                "{\"table\": \"tasks\", \"row\": {\n".to_string(),
            ),
            (
                "deep nesting",
                format!(
                    "{{\"table\":\"tasks\",\"row\":{{\"id\":{}1{}}}}}\n",
                    "[".repeat(100_000),
                    "]".repeat(100_000)
                ),
            ),
            (
                "integer beyond 64 bits",
                "{\"table\":\"tasks\",\"row\":{\"id\":123456789012345678901234567890}}\n"
                    .to_string(),
            ),
            (
                "duplicate keys",
                "{\"table\":\"tasks\",\"row\":{\"id\":1,\"id\":2}}\n".to_string(),
            ),
        ] {
            let mut p = valid.clone();
            let text = String::from_utf8(p.dump.clone()).unwrap();
            let mut lines: Vec<String> = text.lines().map(|l| format!("{l}\n")).collect();
            let at = lines
                .iter()
                .position(|l| l.contains("\"table\":\"tasks\""))
                .unwrap();
            lines[at] = line;
            p.dump = lines.concat().into_bytes();
            p.rehash_dump();
            let _ = what;
            add(
                "malformed dump line",
                gzip(&tar_bytes(&regular(p.entries()))),
                archive_err,
            );
        }
    }
    cases
}

/// What the refusal of each case must say (any one of): the check that
/// refused it, so a case refused by the wrong check fails.
fn refusal_reasons(case: &str) -> &'static [&'static str] {
    match case {
        "traversal name" => &["unexpected entry", "is not named by the manifest"],
        "link entry" | "link then file" => &["link entry"],
        "special entry" => &["entry \"blobs\" refused"],
        "duplicate entry" => &["appears twice"],
        "entry not in manifest" => &["is not named by the manifest"],
        "extra member" => &["unexpected entry"],
        "pax size header" => &["PAX extended header"],
        "gzip bomb" => &["not a JSON object", "expands beyond"],
        "zeros after the end" => &["expands beyond what its manifest declares"],
        "trailing bytes" | "second gzip member" => &["trailing bytes after the gzip stream"],
        "empty file" => &["is an empty file"],
        "truncated" => &["archive is truncated"],
        // Where the flip lands decides which check sees it first.
        "flipped byte" => &[
            "unreadable",
            "does not match",
            "truncated",
            "not valid JSON",
            "crc",
        ],
        "dump hash mismatch"
        | "dump broken at its first line, hash not updated"
        | "rows of another tenant, hash not updated" => &["dump.jsonl: SHA-256"],
        "blob hash mismatch" => &["SHA-256 does not match the manifest"],
        "count mismatch" => &["manifest says"],
        "unknown major version" => &["unsupported archive format version"],
        "not our format" => &["not a tenant_kit archive"],
        "rows of another tenant" => &["not the archive's tenant"],
        "crafted table name" => &["manifest says", "not in the manifest"],
        "crafted table in manifest" | "crafted column" => &["is missing"],
        "record_type maps nowhere" => &["maps to no table"],
        "bad blob key" => &["outside ActiveStorage's alphabet"],
        "huge line without newline" => &["longer than"],
        "malformed dump line" => &["dump.jsonl line"],
        other => panic!("case {other:?}: say what its refusal must name"),
    }
}

fn temp_dir_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

#[test]
fn hostile_archives_are_refused_and_change_nothing() {
    let app = App::new();
    let valid_path = app.backup(1).path;
    let valid = Parts::from_archive(&valid_path);
    // Sanity: our re-packing of the valid parts is itself accepted.
    let repacked = app.dir.path().join("repacked.tar.gz");
    std::fs::write(&repacked, gzip(&tar_bytes(&regular(valid.entries())))).unwrap();
    tenant_kit::verify::verify_path(&repacked).expect("repacked valid archive verifies");

    let tmp = app.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let db_before = file_bytes(&app.db);
    let files_before = app.storage_files();
    let all = cases(&valid);
    assert!(all.len() >= 40, "{} cases", all.len());
    for (i, case) in all.iter().enumerate() {
        let path: PathBuf = app.dir.path().join(format!("hostile_{i}.tar.gz"));
        std::fs::write(&path, &case.archive).unwrap();
        for dry_run in [true, false] {
            let err = app
                .restore(
                    &path,
                    1,
                    json!({"dry_run": dry_run, "purge": true, "tmp_dir": tmp}),
                )
                .err()
                .unwrap_or_else(|| {
                    panic!("case {i} ({}) was accepted (dry_run {dry_run})", case.name)
                });
            let reasons = refusal_reasons(case.name);
            assert!(
                reasons.iter().any(|r| err.message().contains(r)),
                "case {i} ({}): refused for another reason than {reasons:?}: {err}",
                case.name
            );
            assert!(
                case.expect.contains(&err.kind()),
                "case {i} ({}): expected {:?}, got {:?}: {err}",
                case.name,
                case.expect,
                err.kind()
            );
            assert_eq!(
                file_bytes(&app.db),
                db_before,
                "case {i} ({}) changed the database",
                case.name
            );
            assert_eq!(
                app.storage_files(),
                files_before,
                "case {i} ({}) changed the storage",
                case.name
            );
            assert!(
                temp_dir_is_empty(&tmp),
                "case {i} ({}) left temp files",
                case.name
            );
        }
        let verified = tenant_kit::verify::verify(
            &tenant_kit::verify::VerifyOptions {
                tmp_dir: Some(tmp.clone()),
                ..tenant_kit::verify::VerifyOptions::new(path.clone())
            },
            &mut tenant_kit::NoProgress,
        );
        // Some cases are well-formed archives that only this database
        // refuses (schema, record types); the rest verify() must refuse too.
        if !case.expect.contains(&ErrorKind::Schema) && case.name != "record_type maps nowhere" {
            assert!(
                verified.is_err(),
                "verify accepted case {i} ({})",
                case.name
            );
        }
        std::fs::remove_file(&path).unwrap();
    }
}

/// An archive's SHA-256s are no signature: someone who edits one can make
/// them agree again. Such an archive must not give the tenant rows that
/// point at another tenant's rows (the app's associations would show them
/// across tenants): each is a conflict, listed by a dry run and refused by
/// a restore, and nothing changes.
#[test]
fn an_edited_archive_cannot_point_the_tenants_rows_at_another_tenant() {
    let app = App::new();
    let valid = Parts::from_archive(&app.backup(1).path);
    let tmp = app.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let db_before = file_bytes(&app.db);
    let files_before = app.storage_files();

    let edit = |table: &str, id: i64, f: &dyn Fn(&mut Value)| {
        let mut p = valid.clone();
        p.edit_rows(table, |v| {
            if v["row"]["id"] == id {
                f(v)
            }
        });
        p
    };
    let edit_join = |tag: i64, task: i64, f: &dyn Fn(&mut Value)| {
        let mut p = valid.clone();
        p.edit_rows("tags_tasks", |v| {
            if v["row"]["tag_id"] == tag && v["row"]["task_id"] == task {
                f(v)
            }
        });
        p
    };
    // Tenant 2's blob 2001 attached to tenant 1's task, and tenant 1's own
    // blob of that attachment taken out of the archive: all an attacker
    // needs is the blob's id, never its (secret) key.
    let mut steal = edit("active_storage_attachments", 1002, &|v| {
        v["row"]["blob_id"] = json!(2001)
    });
    let own_key = blob_key(1, 2);
    steal.remove_blob(&own_key);
    // (what, archive, table and key of the refused row, column named)
    let cases: Vec<(&str, Parts, &str, &str)> = vec![
        (
            "a subtask of another tenant's task (parent_id: a tree, no FK, no hint)",
            edit("tasks", 1002, &|v| v["row"]["parent_id"] = json!(2001)),
            "tasks id=1002",
            "parent_id",
        ),
        (
            "a join row linking the tenant's tag to another tenant's task",
            edit_join(1001, 1002, &|v| v["row"]["task_id"] = json!(2002)),
            "tags_tasks (tag_id=1001, task_id=2002)",
            "task_id",
        ),
        (
            "an attachment of the tenant's file to another tenant's task",
            edit("active_storage_attachments", 1002, &|v| {
                v["row"]["record_id"] = json!(2003)
            }),
            "active_storage_attachments id=1002",
            "record_id",
        ),
        (
            "an attachment of another tenant's file (blob id only) to the tenant's task",
            steal,
            "active_storage_attachments id=1002",
            "blob_id",
        ),
        (
            "a variant record of another tenant's blob",
            edit("active_storage_variant_records", 1001, &|v| {
                v["row"]["blob_id"] = json!(2002)
            }),
            "active_storage_variant_records id=1001",
            "blob_id",
        ),
        (
            "a task in another tenant's project (naming convention)",
            edit("tasks", 1001, &|v| v["row"]["project_id"] = json!(2001)),
            "tasks id=1001",
            "project_id",
        ),
        (
            "a new task, assigned to another tenant's user",
            edit("tasks", 1006, &|v| {
                v["row"]["id"] = json!(1099);
                v["row"]["user_id"] = json!(2002);
            }),
            "tasks id=1099",
            "user_id",
        ),
        (
            "a comment on another tenant's task (polymorphic)",
            edit("comments", 1001, &|v| {
                v["row"]["commentable_id"] = json!(2003)
            }),
            "comments id=1001",
            "commentable_id",
        ),
        (
            "a comment on another tenant's user: a class no comment names yet",
            edit("comments", 1002, &|v| {
                v["row"]["commentable_type"] = json!("User");
                v["row"]["commentable_id"] = json!(3001);
            }),
            "comments id=1002",
            "commentable_id",
        ),
        (
            "a setting of another tenant's user (text id)",
            edit("settings", 1001, &|v| v["row"]["target_id"] = json!("2001")),
            "settings id=1001",
            "target_id",
        ),
    ];
    for (what, parts, key, column) in cases {
        let path = app.dir.path().join("edited.tar.gz");
        std::fs::write(&path, gzip(&tar_bytes(&regular(parts.entries())))).unwrap();
        let dry = app
            .restore(
                &path,
                1,
                json!({"dry_run": true, "purge": true, "tmp_dir": tmp}),
            )
            .unwrap_or_else(|e| panic!("{what}: dry run failed: {e}"));
        assert_eq!(dry.conflict_count, 1, "{what}: {:?}", dry.conflicts);
        let listed = format!("{} {}", dry.conflicts[0].table, dry.conflicts[0].key);
        assert_eq!(listed, key, "{what}");
        let reason = &dry.conflicts[0].reason;
        assert!(
            reason.contains(column)
                && (reason.contains("belongs to another tenant")
                    || reason.contains("the archive does not carry")),
            "{what}: {}",
            dry.conflicts[0].reason
        );
        let err = app
            .restore(&path, 1, json!({"purge": true, "tmp_dir": tmp}))
            .expect_err(what);
        assert_eq!(err.kind(), ErrorKind::Conflict, "{what}: {err}");
        assert!(err.to_string().contains(key), "{what}: {err}");
        assert_eq!(
            file_bytes(&app.db),
            db_before,
            "{what} changed the database"
        );
        assert_eq!(
            app.storage_files(),
            files_before,
            "{what} changed the storage"
        );
        assert!(temp_dir_is_empty(&tmp), "{what} left temp files");
    }

    // A type column that names more classes than any app has is refused
    // outright, not checked for some of them only.
    let mut many = valid.clone();
    let text = String::from_utf8(many.dump.clone()).unwrap();
    let mut out = String::new();
    let mut added = 0u64;
    for line in text.lines() {
        out.push_str(line);
        out.push('\n');
        let v: Value = serde_json::from_str(line).unwrap();
        if v["table"] == "comments" && v["row"]["id"] == 1001 {
            for i in 0..10_001 {
                let mut extra = v.clone();
                extra["row"]["id"] = json!(100_000 + i);
                extra["row"]["commentable_type"] = json!(format!("Class{i}"));
                out.push_str(&extra.to_string());
                out.push('\n');
                added += 1;
            }
        }
    }
    many.dump = out.into_bytes();
    for t in many.manifest["tables"].as_array_mut().unwrap() {
        if t["name"] == "comments" {
            t["rows"] = json!(t["rows"].as_u64().unwrap() + added);
        }
    }
    many.rehash_dump();
    let path = app.dir.path().join("many.tar.gz");
    std::fs::write(&path, gzip(&tar_bytes(&regular(many.entries())))).unwrap();
    for dry_run in [true, false] {
        let err = app
            .restore(&path, 1, json!({"dry_run": dry_run, "tmp_dir": tmp}))
            .expect_err("10,001 classes");
        assert_eq!(err.kind(), ErrorKind::Archive, "{err}");
        assert!(err.to_string().contains("commentable_type"), "{err}");
    }
    assert_eq!(file_bytes(&app.db), db_before);
    assert!(temp_dir_is_empty(&tmp));

    // The same archive unedited restores, and so does one that points at
    // the tenant's own rows.
    let own = edit("tasks", 1001, &|v| v["row"]["project_id"] = json!(1002));
    for (what, parts) in [("unedited", valid.clone()), ("own project", own)] {
        let path = app.dir.path().join("fine.tar.gz");
        std::fs::write(&path, gzip(&tar_bytes(&regular(parts.entries())))).unwrap();
        let report = app
            .restore(&path, 1, json!({"purge": true, "tmp_dir": tmp}))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(report.conflict_count, 0, "{what}");
    }
}

/// References the app itself made across tenants, and rows of no tenant:
/// a restore that leaves such a row as it is goes through, and a row may
/// always point at a row whose tenant column is NULL (shared by every
/// tenant). Only what the restore would write is asked.
#[test]
fn rows_of_no_tenant_and_unchanged_references_across_tenants_restore() {
    let small = SmallDb::new(
        "CREATE TABLE tenants (id integer PRIMARY KEY);
         CREATE TABLE categories (id integer PRIMARY KEY, tenant_id integer REFERENCES tenants, name text);
         CREATE TABLE items (id integer PRIMARY KEY, tenant_id integer NOT NULL REFERENCES tenants,
                             category_id integer REFERENCES categories, name text);
         INSERT INTO tenants VALUES (1), (2);
         INSERT INTO categories VALUES (1, NULL, 'shared'), (2, 2, 'of tenant 2'), (3, 1, 'own');
         INSERT INTO items VALUES (10, 1, 1, 'in the shared category'),
                                  (11, 1, 2, 'linked across tenants by the app'),
                                  (12, 1, 3, 'own');",
    );
    let archive = small.backup(1);
    let before = common::snapshot(&small.conn);
    // A purge restore of yesterday's backup: every row kept as it is.
    let report = small.restore(&archive, 1, json!({"purge": true})).unwrap();
    assert_eq!(report.conflict_count, 0);
    assert_eq!(common::snapshot(&small.conn), before);
    // Written anew, the row pointing at tenant 2's category is refused,
    // the one in the shared category is not.
    small.conn.execute("DELETE FROM items", []).unwrap();
    let err = small.restore(&archive, 1, json!({})).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.to_string().contains("items id=11"), "{err}");
    assert!(!err.to_string().contains("items id=10"), "{err}");
    let count: i64 = small
        .conn
        .query_row("SELECT count(*) FROM items", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 0, "the refused restore wrote nothing");
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

/// The seed corpus of the fuzz targets (`fuzz/corpus/<target>/`), made from
/// the valid archive and the hostile cases above: each archive gzipped and
/// as the bare tar stream, the manifests, the dump lines and manifest + dump
/// pairs found in them, and a few hand-written lines. A file named `ok-*`
/// must be accepted and `bad-*` refused (`tests/fuzz_corpus.rs` checks it);
/// this writer asserts that the hostile cases are refused as above. Files
/// with `regression` in their name are kept. Regenerate with
/// `cargo test --test hostile_archives -- --ignored write_fuzz_corpus`.
#[test]
#[ignore = "writes fuzz/corpus/: run by hand to regenerate the seeds"]
fn write_fuzz_corpus() {
    use tenant_kit::fuzzing::{run, Target};

    let app = App::new();
    let valid_path = app.backup(1).path;
    let valid = Parts::from_archive(&valid_path);
    let mut corpus = SeedCorpus::new(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus"));

    let mut archives: Vec<(String, Vec<u8>, bool)> = vec![
        ("valid".into(), std::fs::read(&valid_path).unwrap(), true),
        ("valid".into(), tar_bytes(&regular(valid.entries())), true),
    ];
    for case in cases(&valid) {
        let accepted =
            case.expect.contains(&ErrorKind::Schema) || case.name == "record_type maps nowhere";
        if case.archive.len() <= SeedCorpus::MAX_SEED {
            match run(Target::Archive, &case.archive) {
                Ok(()) => assert!(accepted, "{}: accepted", case.name),
                Err(e) => assert!(
                    !accepted && case.expect.contains(&e.kind()),
                    "{}: {e}",
                    case.name
                ),
            }
            archives.push((case.name.to_string(), case.archive.clone(), accepted));
        }
        // The tar inside, when the gzip layer is intact and it is small.
        let mut tar = Vec::new();
        let gz = flate2::read::GzDecoder::new(&case.archive[..]);
        if gz
            .take(SeedCorpus::MAX_SEED as u64 + 1)
            .read_to_end(&mut tar)
            .is_ok()
            && tar.len() <= SeedCorpus::MAX_SEED
        {
            let accepted = run(Target::Archive, &tar).is_ok();
            archives.push((case.name.to_string(), tar, accepted));
        }
    }
    for (name, bytes, accepted) in &archives {
        let ext = if bytes.starts_with(&[0x1f, 0x8b]) {
            "tar.gz"
        } else {
            "tar"
        };
        corpus.add(Target::Archive, name, ext, bytes, Some(*accepted));
        if bytes.starts_with(&[0x1f, 0x8b]) {
            continue;
        }
        // The manifest and dump inside the bare tar.
        let (mut manifest, mut dump) = (None, None);
        if let Ok(entries) = tar::Archive::new(&bytes[..]).entries() {
            for e in entries {
                let Ok(mut e) = e else { break };
                let entry_name = e.path_bytes().into_owned();
                let mut data = Vec::new();
                if e.read_to_end(&mut data).is_err() {
                    break;
                }
                match &entry_name[..] {
                    b"manifest.json" => manifest = manifest.or(Some(data)),
                    b"dump.jsonl" => dump = dump.or(Some(data)),
                    _ => {}
                }
            }
        }
        let Some(manifest) = manifest else { continue };
        corpus.add(Target::Manifest, name, "json", &manifest, None);
        let Some(dump) = dump else { continue };
        for line in dump.split_inclusive(|&b| b == b'\n') {
            corpus.add(Target::DumpLine, name, "jsonl", line, None);
        }
        // The dump target reads the manifest from the first line.
        let mut pair = match serde_json::from_slice::<Value>(&manifest) {
            Ok(v) => serde_json::to_vec(&v).unwrap(),
            Err(_) => manifest.clone(),
        };
        pair.push(b'\n');
        pair.extend_from_slice(&dump);
        corpus.add(Target::Dump, name, "txt", &pair, None);
    }

    let manifest = serde_json::to_vec(&valid.manifest).unwrap();
    let hand_written: [(Target, &str, &[u8], bool); 16] = [
        (Target::Manifest, "empty", b"", false),
        (Target::Manifest, "not json", b"{\"format\":", false),
        (Target::Manifest, "array", b"[]", false),
        (
            Target::Manifest,
            "format only",
            b"{\"format\":\"tenant_kit\",\"format_version\":\"1.0\"}",
            false,
        ),
        (
            Target::DumpLine,
            "row",
            br#"{"table":"t","row":{"id":1,"r":2.0,"s":"1","b":{"$base64":"AA=="},"n":null}}"#,
            true,
        ),
        (
            Target::DumpLine,
            "row with newline",
            b"{\"table\":\"t\",\"row\":{}}\n",
            true,
        ),
        (
            Target::DumpLine,
            "invalid json",
            b"{\"table\": \"tasks\", \"row\": {\n",
            false,
        ),
        (
            Target::DumpLine,
            "duplicate column",
            br#"{"table":"t","row":{"id":1,"id":2}}"#,
            false,
        ),
        (
            Target::DumpLine,
            "duplicate field",
            br#"{"table":"t","table":"u","row":{}}"#,
            false,
        ),
        (
            Target::DumpLine,
            "unknown field",
            br#"{"table":"t","row":{},"x":1}"#,
            false,
        ),
        (
            Target::DumpLine,
            "nested object",
            br#"{"table":"t","row":{"a":{"b":{"c":1}}}}"#,
            false,
        ),
        (
            Target::DumpLine,
            "array value",
            br#"{"table":"t","row":{"a":[1]}}"#,
            false,
        ),
        (
            Target::DumpLine,
            "integer beyond 64 bits",
            br#"{"table":"t","row":{"id":123456789012345678901234567890}}"#,
            false,
        ),
        (
            Target::DumpLine,
            "bad base64",
            br#"{"table":"t","row":{"b":{"$base64":"!!"}}}"#,
            false,
        ),
        (Target::Dump, "manifest without dump", &manifest, false),
        (
            Target::Dump,
            "no manifest",
            b"\n{\"table\":\"t\",\"row\":{}}\n",
            false,
        ),
    ];
    for (target, name, bytes, accepted) in hand_written {
        corpus.add(target, name, "txt", bytes, Some(accepted));
    }
    let deep = format!(
        "{{\"table\":\"t\",\"row\":{{\"id\":{}1{}}}}}",
        "[".repeat(1000),
        "]".repeat(1000)
    );
    corpus.add(
        Target::DumpLine,
        "deep nesting",
        "jsonl",
        deep.as_bytes(),
        Some(false),
    );
    corpus.finish();
}

/// Writes seeds named `<ok|bad>-<what>-<hash>.<ext>`, once per content.
struct SeedCorpus {
    root: PathBuf,
    seen: std::collections::HashSet<(&'static str, Vec<u8>)>,
    bytes: usize,
}

impl SeedCorpus {
    /// Larger inputs (the gzip bomb, 64 MiB of zeros…) stay in the hostile
    /// test: a fuzzer gains nothing from them.
    const MAX_SEED: usize = 200 << 10;

    fn new(root: &Path) -> SeedCorpus {
        for target in tenant_kit::fuzzing::Target::ALL {
            let dir = root.join(target.name());
            std::fs::create_dir_all(&dir).unwrap();
            for e in std::fs::read_dir(&dir).unwrap() {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                if (name.starts_with("ok-") || name.starts_with("bad-"))
                    && !name.contains("regression")
                {
                    std::fs::remove_file(dir.join(name)).unwrap();
                }
            }
        }
        SeedCorpus {
            root: root.to_path_buf(),
            seen: Default::default(),
            bytes: 0,
        }
    }

    /// Record what the target makes of `bytes` in the file name, after
    /// checking it against `expect` when given.
    fn add(
        &mut self,
        target: tenant_kit::fuzzing::Target,
        what: &str,
        ext: &str,
        bytes: &[u8],
        expect: Option<bool>,
    ) {
        if bytes.len() > Self::MAX_SEED || !self.seen.insert((target.name(), bytes.to_vec())) {
            return;
        }
        let result = tenant_kit::fuzzing::run(target, bytes);
        if let Some(accepted) = expect {
            assert_eq!(
                result.is_ok(),
                accepted,
                "{} seed {what:?}: {result:?}",
                target.name()
            );
        }
        let slug: String = what
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let name = if what == "valid" && target != tenant_kit::fuzzing::Target::DumpLine {
            format!("ok-valid.{ext}")
        } else {
            let hash = hex(&Sha256::digest(bytes));
            let verdict = if result.is_ok() { "ok" } else { "bad" };
            format!("{verdict}-{slug}-{}.{ext}", &hash[..8])
        };
        let path = self.root.join(target.name()).join(name);
        std::fs::write(path, bytes).unwrap();
        self.bytes += bytes.len();
    }

    fn finish(self) {
        assert!(self.bytes < 2 << 20, "seed corpus of {} bytes", self.bytes);
        eprintln!(
            "wrote {} seeds, {} bytes, under {}",
            self.seen.len(),
            self.bytes,
            self.root.display()
        );
    }
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

/// The archive is data, never structure: which table is the tenants table,
/// that a tenant table carries the tenant column, and each table's key
/// come from the target database. An edited manifest that says otherwise
/// is an ArchiveError (in `verify` where it can tell) and changes nothing.
#[test]
fn the_archive_cannot_decide_the_structure_a_restore_acts_on() {
    let app = App::new();
    let valid = Parts::from_archive(&app.backup(1).path);
    let tmp = app.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let db_before = file_bytes(&app.db);
    let files_before = app.storage_files();

    // An admin of tenant 2 appended to `users`, which the manifest now
    // calls the tenants table (whose row the dump check used to exempt).
    let admin_of = |claim_row: bool| {
        let mut p = valid.clone();
        p.manifest["tenant"]["table"] = json!("users");
        let text = String::from_utf8(p.dump.clone()).unwrap();
        let mut out = String::new();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let keep = !(claim_row && v["table"] == "users");
            if keep {
                out.push_str(line);
                out.push('\n');
            }
        }
        out.push_str(
            &json!({"table": "users", "row": {
            "id": 1099, "tenant_id": 2, "email": "evil@example", "name": "x",
            "role": "admin", "created_at": "x", "updated_at": "x"}})
            .to_string(),
        );
        out.push('\n');
        // Keep the dump in table order: move the new line after the others.
        let mut lines: Vec<&str> = out.lines().collect();
        lines.sort_by_key(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let table = v["table"].as_str().unwrap().to_string();
            p.manifest["tables"]
                .as_array()
                .unwrap()
                .iter()
                .position(|t| t["name"] == table.as_str())
        });
        p.dump = lines
            .iter()
            .flat_map(|l| [*l, "\n"])
            .collect::<String>()
            .into_bytes();
        for t in p.manifest["tables"].as_array_mut().unwrap() {
            if t["name"] == "users" {
                t["rows"] = json!(if claim_row {
                    1
                } else {
                    t["rows"].as_u64().unwrap() + 1
                });
                if claim_row {
                    t["scope"] = json!("tenant_row");
                }
            }
            if t["name"] == "tenants" && claim_row {
                t["scope"] = json!("tenant_column");
            }
        }
        p.rehash_dump();
        p
    };
    // A table's tenant column (or key) left out of its manifest entry and
    // of its rows: the rows would land in no tenant (or take fresh keys).
    let without = |table: &str, column: &str| {
        let mut p = valid.clone();
        p.edit_rows(table, |v| {
            v["row"].as_object_mut().unwrap().remove(column);
        });
        for t in p.manifest["tables"].as_array_mut().unwrap() {
            if t["name"] == table {
                t["columns"].as_array_mut().unwrap().retain(|c| c != column);
            }
        }
        p
    };
    // (what, archive, verify refuses it too, words of the message)
    let cases: Vec<(&str, Parts, bool, &str)> = vec![
        (
            "users named the tenants table",
            admin_of(false),
            true,
            "tenants table",
        ),
        (
            "users named the tenants table, its entry the tenant's row",
            admin_of(true),
            true,
            "manifest",
        ),
        (
            "tasks without tenant_id",
            without("tasks", "tenant_id"),
            true,
            "leave",
        ),
        (
            "the tenants row without its id",
            without("tenants", "id"),
            false,
            "key column id",
        ),
        (
            "projects without their id",
            without("projects", "id"),
            false,
            "key column id",
        ),
    ];
    for (what, parts, verify_tells, words) in cases {
        let path = app.dir.path().join("edited.tar.gz");
        std::fs::write(&path, gzip(&tar_bytes(&regular(parts.entries())))).unwrap();
        if verify_tells {
            let err = tenant_kit::verify::verify_path(&path).expect_err(what);
            assert_eq!(err.kind(), ErrorKind::Archive, "{what}: {err}");
        }
        for dry_run in [true, false] {
            let err = app
                .restore(
                    &path,
                    1,
                    json!({"dry_run": dry_run, "purge": true, "tmp_dir": tmp}),
                )
                .expect_err(what);
            assert_eq!(err.kind(), ErrorKind::Archive, "{what}: {err}");
            assert!(err.to_string().contains(words), "{what}: {err}");
        }
        assert_eq!(
            file_bytes(&app.db),
            db_before,
            "{what} changed the database"
        );
        assert_eq!(
            app.storage_files(),
            files_before,
            "{what} changed the storage"
        );
        assert!(temp_dir_is_empty(&tmp), "{what} left temp files");
    }
}
