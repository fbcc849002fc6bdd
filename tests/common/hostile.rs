//! Hostile archives for the `tests/hostile_*.rs` files: [`Parts`] (the
//! entries of a valid archive, to be edited), an independent tar/gzip
//! writer (the `tar` and `flate2` crates, not ours) that writes what an
//! attacker would, and [`assert_refused`], which restores a [`Hostile`]
//! case in dry-run and in real mode and checks its specific refusal. The
//! catalogue of cases is in `hostile_cases.rs`.

use super::{file_bytes, App};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::Path;
use tenant_kit::ErrorKind;

/// The entries of a valid archive, to be mutated.
#[derive(Clone)]
pub struct Parts {
    pub manifest: Value,
    pub dump: Vec<u8>,
    pub blobs: Vec<(String, Vec<u8>)>,
}

impl Parts {
    /// The entries as they are, read with the `tar` and `flate2` crates
    /// (not ours); [`EditableArchive::open`](super::EditableArchive::open)
    /// reads through here too.
    pub fn from_archive(path: &Path) -> Parts {
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
    pub fn rehash_dump(&mut self) {
        self.manifest["dump"]["size"] = json!(self.dump.len());
        self.manifest["dump"]["sha256"] = json!(hex(&Sha256::digest(&self.dump)));
    }

    /// Replace every line of `table` via `f` and fix the hash.
    pub fn edit_rows(&mut self, table: &str, f: impl Fn(&mut Value)) {
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
    pub fn remove_blob(&mut self, key: &str) {
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

    pub fn entries(&self) -> Vec<(String, Vec<u8>)> {
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

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A raw ustar header for any name and type, as an attacker would write it.
pub fn header(name: &str, size: u64, kind: tar::EntryType, link: Option<&str>) -> tar::Header {
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

pub fn tar_bytes(entries: &[(tar::Header, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (h, data) in entries {
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

pub fn regular(entries: Vec<(String, Vec<u8>)>) -> Vec<(tar::Header, Vec<u8>)> {
    entries
        .into_iter()
        .map(|(n, b)| (header(&n, b.len() as u64, tar::EntryType::Regular, None), b))
        .collect()
}

/// The valid archive packed again by the independent writer.
pub fn repack(p: &Parts) -> Vec<u8> {
    gzip(&tar_bytes(&regular(p.entries())))
}

/// One hostile archive and the refusal it must meet.
pub struct Hostile {
    /// Named in every failure.
    pub name: &'static str,
    /// The archive, made from the parts of a valid one.
    pub build: fn(&Parts) -> Vec<u8>,
    pub kind: ErrorKind,
    /// Words of the message that name the check that refuses it, so a case
    /// refused by another check fails.
    pub reason: &'static str,
    /// A well-formed archive only the target database refuses (its schema,
    /// its record types): `verify`, which sees no database, accepts it.
    pub verify_accepts: bool,
}

pub fn temp_dir_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

/// Restore `case` (dry run, then real, with purge) into the sample app:
/// refused with its kind and reason, the database and storage
/// byte-identical, no temp file left; and `verify` refuses it too unless
/// only the database can tell.
pub fn assert_refused(case: &Hostile) {
    let app = App::new();
    let valid = Parts::from_archive(&app.backup(1).path);
    let path = app.dir.path().join("hostile.tar.gz");
    std::fs::write(&path, (case.build)(&valid)).unwrap();
    let tmp = app.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let db_before = file_bytes(&app.db);
    let files_before = app.storage_files();
    let name = case.name;
    for dry_run in [true, false] {
        let options = json!({"dry_run": dry_run, "purge": true, "tmp_dir": tmp});
        let err = app
            .restore(&path, 1, options)
            .err()
            .unwrap_or_else(|| panic!("{name}: accepted (dry_run {dry_run})"));
        assert_eq!(err.kind(), case.kind, "{name} (dry_run {dry_run}): {err}");
        assert!(
            err.message().contains(case.reason),
            "{name} (dry_run {dry_run}): refused for another reason than {:?}: {err}",
            case.reason
        );
        assert_eq!(
            file_bytes(&app.db),
            db_before,
            "{name} changed the database"
        );
        assert_eq!(
            app.storage_files(),
            files_before,
            "{name} changed the storage"
        );
        assert!(temp_dir_is_empty(&tmp), "{name} left temp files");
    }
    let verified = tenant_kit::verify::verify(
        &tenant_kit::verify::VerifyOptions {
            tmp_dir: Some(tmp.clone()),
            ..tenant_kit::verify::VerifyOptions::new(path.clone())
        },
        &mut tenant_kit::NoProgress,
    );
    assert_eq!(
        verified.is_ok(),
        case.verify_accepts,
        "{name}: verify {:?}",
        verified.err()
    );
    assert!(temp_dir_is_empty(&tmp), "{name}: verify left temp files");
}
