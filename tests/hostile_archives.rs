//! The catalogue of hostile archives as a whole (`tests/common/hostile_cases.rs`;
//! each case has its own test in `tests/hostile_<concern>.rs`), and the fuzz
//! seed corpus made from it.

mod common;

use common::hostile::*;
use common::hostile_cases::ALL;
use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The independent writer's packing of a valid archive is itself accepted,
/// so what the hostile cases change is what gets refused.
#[test]
fn the_valid_archive_repacked_verifies_and_restores() {
    let app = App::new();
    let valid = Parts::from_archive(&app.backup(1).path);
    let repacked = app.dir.path().join("repacked.tar.gz");
    std::fs::write(&repacked, repack(&valid)).unwrap();
    tenant_kit::verify::verify_path(&repacked).expect("repacked valid archive verifies");
    let report = app
        .restore(&repacked, 1, serde_json::json!({"purge": true}))
        .expect("repacked valid archive restores");
    assert_eq!(report.conflict_count, 0);
}

/// Every case of the catalogue is in `ALL` once and has a test of its own
/// in one `tests/hostile_<concern>.rs` (47 cases when they were split out
/// of one loop).
#[test]
fn every_hostile_case_has_its_own_test() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let catalogue = std::fs::read_to_string(root.join("common/hostile_cases.rs")).unwrap();
    let consts: Vec<&str> = catalogue
        .lines()
        .filter_map(|l| l.strip_prefix("pub const "))
        .filter_map(|l| l.split_once(": Hostile").map(|(name, _)| name))
        .collect();
    assert_eq!(consts.len(), ALL.len(), "{consts:?}");
    assert!(ALL.len() >= 47, "{} cases", ALL.len());
    let mut names: Vec<&str> = ALL.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), ALL.len(), "case names are unique");
    let tests: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("hostile_") && name != "hostile_archives.rs"
        })
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    for c in consts {
        let call = format!("assert_refused(&{c});");
        let uses = tests
            .iter()
            .map(|t| t.matches(&call).count())
            .sum::<usize>();
        assert_eq!(uses, 1, "{c}: tested {uses} times");
    }
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
    for case in ALL {
        // Refused by the database only: an archive the fuzz target accepts.
        let accepted = case.verify_accepts;
        let archive = (case.build)(&valid);
        if archive.len() <= SeedCorpus::MAX_SEED {
            match run(Target::Archive, &archive) {
                Ok(()) => assert!(accepted, "{}: accepted", case.name),
                Err(e) => assert!(!accepted, "{}: {e}", case.name),
            }
            archives.push((case.name.to_string(), archive.clone(), accepted));
        }
        // The tar inside, when the gzip layer is intact and it is small.
        let mut tar = Vec::new();
        let gz = flate2::read::GzDecoder::new(&archive[..]);
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
