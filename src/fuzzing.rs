//! Entry points of the fuzz targets (`fuzz/`, cargo-fuzz) and of
//! the corpus replay test (`tests/fuzz_corpus.rs`, stable), so both run the
//! same code and check the same invariants. Not an API: hidden from the docs.
//!
//! Every entry point takes untrusted bytes and returns the core's `Result`.
//! [`run`] adds the invariants a fuzzer or the replay asserts:
//! - no panic (the fuzzer reports it; the replay test catches it),
//! - an error is never [`ErrorKind::Internal`] (that kind means a bug),
//! - `archive` leaves nothing in its temp dir, whether it succeeded or not
//!   (a leftover file is reported as an `Internal` error, so it trips the
//!   same check).

use crate::archive::dump::{check_dump, parse_line, DumpReader};
use crate::archive::read::{extract_feeding, DumpFeed, Limits};
use crate::archive::Manifest;
use crate::crypt::keys::Unseal;
use crate::error::{Error, ErrorKind, Result};
use crate::progress::NoProgress;
use std::io::Write;
use std::path::Path;

/// The fuzz targets, by the name of their `fuzz/fuzz_targets/<name>.rs` and
/// of their corpus dir `fuzz/corpus/<name>/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A whole archive file through `extract` and `check_dump` (see [`archive`]).
    Archive,
    /// `manifest.json` through [`Manifest::parse`].
    Manifest,
    /// One line of `dump.jsonl` through `parse_line`.
    DumpLine,
    /// A manifest line then a `dump.jsonl` through `check_dump` (see [`dump`]).
    Dump,
}

impl Target {
    pub const ALL: [Target; 4] = [
        Target::Archive,
        Target::Manifest,
        Target::DumpLine,
        Target::Dump,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Archive => "archive",
            Target::Manifest => "manifest",
            Target::DumpLine => "dump_line",
            Target::Dump => "dump",
        }
    }

    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The bare entry point, without the invariant checks of [`run`].
    pub fn call(self, bytes: &[u8]) -> Result<()> {
        match self {
            Target::Archive => archive(bytes),
            Target::Manifest => manifest(bytes),
            Target::DumpLine => dump_line(bytes),
            Target::Dump => dump(bytes),
        }
    }
}

/// What a fuzz target calls: the entry point, then the invariants. Panics
/// when one is broken, which is how libFuzzer and the test harness notice.
pub fn run(target: Target, bytes: &[u8]) -> Result<()> {
    let result = target.call(bytes);
    assert_invariants(target, &result);
    result
}

/// The invariants every result must hold, whatever the input.
pub fn assert_invariants(target: Target, result: &Result<()>) {
    if let Err(e) = result {
        assert!(
            e.kind() != ErrorKind::Internal,
            "fuzz target {}: internal error (a bug): {e}",
            target.name()
        );
    }
}

/// Small caps so a fuzzer's input cannot make a run slow or large; the
/// reader applies them exactly like the real (larger) defaults.
pub fn limits() -> Limits {
    Limits {
        max_manifest_bytes: 1 << 20,
        max_line_bytes: 64 << 10,
        max_dump_bytes: 16 << 20,
        max_blob_bytes: 16 << 20,
    }
}

/// The gzip magic: an input that starts with it is the archive file itself.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// An archive, read like `verify` reads one: `extract` into a temp dir
/// under a fresh parent, then `check_dump`. The parent must be empty again
/// afterwards, on success and on failure.
///
/// Input that does not start with the gzip magic is taken as the
/// uncompressed tar stream, its header checksums are fixed, and it is
/// gzipped: mutating compressed bytes rarely gets past the inflater, nor a
/// changed header past its checksum, so this lets a fuzzer reach the tar
/// headers, the manifest and the entry checks directly. Both forms are in
/// the corpus.
pub fn archive(bytes: &[u8]) -> Result<()> {
    let work = tempfile::tempdir().map_err(|e| Error::io(format!("fuzz temp dir: {e}")))?;
    let path = work.path().join("input.tar.gz");
    if bytes.starts_with(&GZIP_MAGIC) {
        std::fs::write(&path, bytes)
    } else {
        let mut tar = bytes.to_vec();
        fix_tar_checksums(&mut tar);
        std::fs::write(&path, gzip(&tar))
    }
    .map_err(|e| Error::io(format!("writing the fuzz input: {e}")))?;
    let parent = work.path().join("tmp");
    std::fs::create_dir(&parent).map_err(|e| Error::io(format!("fuzz temp dir: {e}")))?;
    // As a restore reads it: the dump checked while it is extracted.
    let feed = DumpFeed::default();
    let result = std::thread::scope(|scope| {
        let extraction =
            scope.spawn(|| extract_feeding(&path, &Unseal::none(), &parent, limits(), &feed));
        let checked = match feed.wait_manifest() {
            Some((manifest, dump_path, _)) => {
                let reader = DumpReader::new(feed.follow(dump_path), limits().max_line_bytes);
                check_dump(&manifest, reader, &mut NoProgress, |_, _| Ok(()))
            }
            None => Ok(()),
        };
        let extracted = extraction
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        extracted.and(checked).map(|_| ())
    });
    match leftovers(&parent) {
        None => result,
        Some(what) => Err(Error::internal(format!(
            "the archive reader left {what} in its temp dir (result: {result:?})"
        ))),
    }
}

/// `manifest.json` alone.
pub fn manifest(bytes: &[u8]) -> Result<()> {
    Manifest::parse(bytes).map(|_| ())
}

/// One line of `dump.jsonl`, newline included or not.
///
/// Also differential: where the fast path for common lines answers, the
/// full serde parser must accept the line and read the very same row.
pub fn dump_line(bytes: &[u8]) -> Result<()> {
    if let Some(fast) = crate::archive::fast_line::parse(bytes) {
        match crate::archive::dump::parse_line_with_serde(bytes, 1) {
            Ok(full) if full.table == fast.table && full.row.0 == fast.row.0 => {}
            Ok(full) => {
                return Err(Error::internal(format!(
                    "fast line parser read {fast:?}, serde read {full:?}"
                )))
            }
            Err(e) => {
                return Err(Error::internal(format!(
                    "fast line parser accepted a line serde refuses: {e}"
                )))
            }
        }
    }
    parse_line(bytes, 1).map(|_| ())
}

/// The first line is a `manifest.json`, the rest a `dump.jsonl` checked
/// against it by `check_dump` (table order, columns, tenant, counts, line
/// caps): the checks behind the archive's hashes, which a fuzzer could not
/// reach through [`archive`] since it cannot forge a SHA-256.
pub fn dump(bytes: &[u8]) -> Result<()> {
    let (manifest_line, dump) = match bytes.iter().position(|&b| b == b'\n') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (bytes, &[][..]),
    };
    let manifest = Manifest::parse(manifest_line)?;
    let reader = DumpReader::new(dump, limits().max_line_bytes);
    check_dump(&manifest, reader, &mut NoProgress, |_, _| Ok(()))
}

/// Gzip, as the archive writer's readers see it (one member).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("writing to a Vec");
    enc.finish().expect("writing to a Vec")
}

/// Rewrite the checksum of each tar header, following the entry sizes,
/// until the end marker or a size that does not parse.
pub fn fix_tar_checksums(tar: &mut [u8]) {
    const BLOCK: usize = crate::archive::ustar::BLOCK;
    let mut at = 0usize;
    while let Some(h) = tar.get_mut(at..at + BLOCK) {
        if h.iter().all(|&b| b == 0) {
            break;
        }
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let digits = h[124..136]
            .iter()
            .skip_while(|&&b| b == b' ')
            .take_while(|b| (b'0'..=b'7').contains(b))
            .try_fold(0u64, |n, &b| {
                n.checked_mul(8)?.checked_add(u64::from(b - b'0'))
            });
        let Some(size) = digits.and_then(|s| usize::try_from(s).ok()) else {
            break;
        };
        let Some(next) = size
            .checked_next_multiple_of(BLOCK)
            .and_then(|s| s.checked_add(at + BLOCK))
        else {
            break;
        };
        at = next;
    }
}

/// A description of what is left under `dir`, or None when it is empty.
fn leftovers(dir: &Path) -> Option<String> {
    let entries: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) => return Some(format!("an unreadable dir ({e})")),
    };
    if entries.is_empty() {
        None
    } else {
        Some(format!("{entries:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_round_trip() {
        for t in Target::ALL {
            assert_eq!(Target::from_name(t.name()), Some(t));
        }
        assert_eq!(Target::from_name("nope"), None);
    }

    #[test]
    fn tar_checksums_are_fixed() {
        let mut header = [0u8; 1024];
        header[..4].copy_from_slice(b"name");
        header[124..135].copy_from_slice(b"00000000005");
        header[257..263].copy_from_slice(b"ustar\0");
        let mut tar = header.to_vec();
        tar.extend_from_slice(&header); // at 1024: after 5 bytes of content
        fix_tar_checksums(&mut tar);
        for at in [0, 1024] {
            let sum: u32 = tar[at..at + 512]
                .iter()
                .enumerate()
                .map(|(i, &b)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        u32::from(b)
                    }
                })
                .sum();
            assert_eq!(&tar[at + 148..at + 156], format!("{sum:06o}\0 ").as_bytes());
        }
        assert_eq!(&tar[512 + 148..512 + 156], &[0u8; 8]);
    }

    #[test]
    fn garbage_is_refused_without_internal_errors() {
        for t in Target::ALL {
            for input in [&b""[..], b"\x1f\x8b", b"{}", b"\n\n", &[0u8; 1024]] {
                let err = run(t, input).unwrap_err();
                assert_ne!(err.kind(), ErrorKind::Internal, "{t:?}");
            }
        }
    }
}
