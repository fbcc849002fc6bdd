//! Replays the fuzz corpus on stable, where cargo-fuzz cannot run: every
//! file of `fuzz/corpus/<target>/` (the committed seeds, see
//! `write_fuzz_corpus` in tests/hostile_archives.rs) and of
//! `fuzz/artifacts/<target>/` (crashes a fuzzer found, when there are any)
//! goes through the same entry point and invariants as the fuzz target
//! (`tenant_kit::fuzzing::run`): no panic, no internal error, no file left
//! in the temp dir. A seed named `ok-*` must be accepted and one named
//! `bad-*` refused.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tenant_kit::fuzzing::{run, Target};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir/<target>/` for each target, sorted; `dir/` itself may
/// be missing only when `required` is false.
fn inputs(dir: &Path, required: bool) -> Vec<(Target, PathBuf)> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return out,
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    for sub in entries {
        let sub = sub.unwrap().path();
        if !sub.is_dir() {
            continue;
        }
        let name = sub.file_name().unwrap().to_string_lossy().into_owned();
        let target = Target::from_name(&name)
            .unwrap_or_else(|| panic!("{}: no fuzz target of that name", sub.display()));
        let mut files: Vec<PathBuf> = std::fs::read_dir(&sub)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        out.extend(files.into_iter().map(|f| (target, f)));
    }
    out
}

/// What the file name promises: Some(true) for `ok-*`, Some(false) for
/// `bad-*`, None for inputs a fuzzer named by hash.
fn expectation(path: &Path) -> Option<bool> {
    let name = path.file_name().unwrap().to_string_lossy();
    if name.starts_with("ok-") {
        Some(true)
    } else if name.starts_with("bad-") {
        Some(false)
    } else {
        None
    }
}

/// Run every input, collecting every failure rather than stopping at the
/// first, so one run shows them all.
fn replay(inputs: &[(Target, PathBuf)]) -> Vec<String> {
    let mut failures = Vec::new();
    let mut slowest = (Duration::ZERO, PathBuf::new());
    for (target, path) in inputs {
        let bytes = std::fs::read(path).unwrap();
        let start = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| run(*target, &bytes)));
        let took = start.elapsed();
        if took > slowest.0 {
            slowest = (took, path.clone());
        }
        match (outcome, expectation(path)) {
            (Err(panic), _) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{}: panicked: {message}", path.display()));
            }
            (Ok(Err(e)), Some(true)) => {
                failures.push(format!("{}: refused, expected Ok: {e}", path.display()))
            }
            (Ok(Ok(())), Some(false)) => {
                failures.push(format!("{}: accepted, expected an error", path.display()))
            }
            _ => {}
        }
    }
    eprintln!(
        "replayed {} inputs; slowest {:?} ({})",
        inputs.len(),
        slowest.0,
        slowest.1.display()
    );
    failures
}

#[test]
fn corpus_replays_without_panics_internal_errors_or_leftovers() {
    let corpus = inputs(&fuzz_dir().join("corpus"), true);
    // A corpus that went missing must not make this test pass vacuously.
    for target in Target::ALL {
        let of = |ok: bool| {
            corpus
                .iter()
                .filter(|(t, p)| *t == target && expectation(p) == Some(ok))
                .count()
        };
        assert!(
            of(true) > 0 && of(false) > 0,
            "fuzz/corpus/{}/ needs accepted and refused seeds (regenerate: \
             cargo test --test hostile_archives -- --ignored write_fuzz_corpus)",
            target.name()
        );
    }
    let archive = fuzz_dir().join("corpus/archive");
    for valid in ["ok-valid.tar.gz", "ok-valid.tar"] {
        assert!(
            corpus.iter().any(|(_, p)| *p == archive.join(valid)),
            "fuzz/corpus/archive/{valid} is missing"
        );
    }
    let hostile = corpus
        .iter()
        .filter(|(t, p)| *t == Target::Archive && expectation(p) == Some(false))
        .count();
    assert!(hostile >= 40, "only {hostile} hostile archive seeds");

    let failures = replay(&corpus);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Crashes found by `script/fuzz` land in fuzz/artifacts/<target>/ (not
/// committed): once fixed they must pass here too. Fixed ones worth keeping
/// go into the corpus as `bad-regression-<what>` (or `ok-regression-…`).
#[test]
fn fuzz_artifacts_replay_when_present() {
    let artifacts = inputs(&fuzz_dir().join("artifacts"), false);
    let failures = replay(&artifacts);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The replay really notices a broken invariant, so its silence means
/// something: an input the archive reader refuses is reported when it is
/// named `ok-`, an accepted one when it is named `bad-`.
#[test]
fn replay_reports_a_wrong_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let ok = dir.path().join("ok-garbage.txt");
    std::fs::write(&ok, b"not json").unwrap();
    let bad = dir.path().join("bad-row.txt");
    std::fs::write(&bad, br#"{"table":"t","row":{}}"#).unwrap();
    let failures = replay(&[(Target::Manifest, ok), (Target::DumpLine, bad)]);
    assert_eq!(failures.len(), 2, "{failures:?}");
}
