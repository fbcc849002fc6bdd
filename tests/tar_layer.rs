//! The tar layer, our hand-written reader (archive/ustar.rs) against the
//! `tar` crate used as strictly as we can make it (`entries()?.raw(true)`,
//! `header.as_ustar()`, regular files only, UTF-8 names): where do they
//! disagree on the archive inputs the fuzzer starts from (fuzz/corpus,
//! which holds every hostile case of tests/hostile_archives.rs), and how
//! fast is each on a 120 MB dump (`cargo nextest run --release --test
//! tar_layer --run-ignored only`). The decision and the numbers are in
//! archive/ustar.rs's header.

use std::io::{self, Read};
use std::path::Path;
use std::time::{Duration, Instant};
use tenant_kit::archive::ustar;

/// (name, size) of every entry, or the reason the tar layer refuses.
type Verdict = Result<Vec<(String, u64)>, String>;

/// Read a reader to its end through a buffer, as the archive reader reads
/// an entry to hash it (`io::copy` into a sink may skip the copy).
fn drain(input: &mut impl Read) -> io::Result<u64> {
    let mut buf = [0u8; 1 << 16];
    let mut total = 0;
    loop {
        match input.read(&mut buf)? {
            0 => return Ok(total),
            n => total += std::hint::black_box(&buf[..n]).len() as u64,
        }
    }
}

/// Our reader: headers, contents skipped with their padding.
fn ours(mut input: impl Read) -> Verdict {
    let mut entries = Vec::new();
    loop {
        match ustar::read_header(&mut input) {
            Ok(None) => return Ok(entries),
            Ok(Some(h)) => {
                let body = h.size + ustar::padding(h.size) as u64;
                let copied = drain(&mut (&mut input).take(body)).map_err(|e| e.to_string())?;
                if copied != body {
                    return Err("archive is truncated".into());
                }
                entries.push((h.name, h.size));
            }
            Err(e) => return Err(e.message().to_string()),
        }
    }
}

/// The `tar` crate with the checks our format needs on top.
fn with_crate(input: impl Read) -> Verdict {
    let mut archive = tar::Archive::new(input);
    let mut entries = Vec::new();
    for entry in archive.entries().map_err(|e| e.to_string())?.raw(true) {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let header = entry.header();
        if header.as_ustar().is_none() {
            return Err("not a POSIX ustar header".into());
        }
        if header.entry_type() != tar::EntryType::Regular {
            return Err(format!("entry type {:?} refused", header.entry_type()));
        }
        let name = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| "entry name is not UTF-8".to_string())?;
        let size = entry.header().size().map_err(|e| e.to_string())?;
        drain(&mut entry).map_err(|e| e.to_string())?;
        entries.push((name, size));
    }
    Ok(entries)
}

/// The bare tar of a corpus file (gunzipped when it is a .tar.gz whose
/// gzip layer is intact).
fn bare_tar(path: &Path) -> Option<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Some(bytes);
    }
    let mut tar = Vec::new();
    flate2::read::MultiGzDecoder::new(&bytes[..])
        .read_to_end(&mut tar)
        .ok()?;
    Some(tar)
}

/// Both readers refuse the same tar-level hostile inputs and read the same
/// entries from the rest, except where the crate is more lenient: these are
/// the checks we would have to keep on top of it.
#[test]
fn the_crate_and_our_reader_agree_on_the_fuzz_corpus_but_where_listed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/archive");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() > 20, "the corpus is there");
    let mut differences = Vec::new();
    for path in &files {
        let Some(tar) = bare_tar(path) else { continue };
        let (a, b) = (ours(&tar[..]), with_crate(&tar[..]));
        let same = match (&a, &b) {
            (Ok(x), Ok(y)) => x == y,
            (Err(_), Err(_)) => true,
            _ => false,
        };
        if !same {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            differences.push(format!("{name}: ours {a:?} / crate {b:?}"));
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

/// Cases the corpus does not hold, built here: where the crate alone is
/// more lenient than our reader.
#[test]
fn where_the_crate_alone_is_more_lenient() {
    // A header of dump.jsonl ("abc"), edited by `edit` before the crate
    // writes its checksum.
    let entry = |edit: &dyn Fn(&mut tar::Header)| {
        let mut h = tar::Header::new_ustar();
        h.set_path("dump.jsonl").unwrap();
        h.set_size(3);
        h.set_mode(0o600);
        edit(&mut h);
        h.set_cksum();
        let mut t = h.as_bytes().to_vec();
        t.extend_from_slice(b"abc");
        t.resize(1024, 0);
        t
    };
    // A base-256 (binary) size: the crate reads it, we refuse it.
    let mut binary = [0u8; 12];
    binary[0] = 0x80;
    binary[11] = 3;
    let mut t = entry(&|h| h.as_old_mut().size.copy_from_slice(&binary));
    t.extend_from_slice(&[0u8; 1024]);
    assert!(with_crate(&t[..]).is_ok());
    assert!(ours(&t[..]).unwrap_err().contains("unreadable size"));
    // One zero block, then data: the crate stops at the first zero block.
    let mut t = entry(&|_| {});
    t.extend_from_slice(&[0u8; 512]);
    t.extend_from_slice(&[7u8; 512]);
    assert!(with_crate(&t[..]).is_ok());
    assert!(ours(&t[..])
        .unwrap_err()
        .contains("data after a zero block"));
    // Garbage after the NUL that ends a name.
    let mut t = entry(&|h| h.as_old_mut().name[20] = b'x');
    t.extend_from_slice(&[0u8; 1024]);
    assert_eq!(with_crate(&t[..]).unwrap()[0].0, "dump.jsonl");
    assert!(ours(&t[..]).unwrap_err().contains("garbage after a name"));
}

/// `size` bytes of dump-like lines.
fn dump_of(size: usize) -> Vec<u8> {
    let line = b"{\"table\":\"tasks\",\"row\":{\"id\":12345,\"title\":\"Task 12345\"}}\n";
    let mut dump = Vec::with_capacity(size);
    while dump.len() + line.len() <= size {
        dump.extend_from_slice(line);
    }
    dump
}

/// A tar of manifest.json and `dump`.
fn pack(dump: &[u8], write: impl Fn(&mut Vec<u8>, &str, &[u8])) -> Vec<u8> {
    let mut out = Vec::with_capacity(dump.len() + 8192);
    write(&mut out, "manifest.json", b"{}");
    write(&mut out, "dump.jsonl", dump);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn our_entry(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    ustar::write_header(out, name, data.len() as u64, 0).unwrap();
    out.extend_from_slice(data);
    ustar::write_padding(out, data.len() as u64).unwrap();
}

fn crate_entry(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.set_path(name).unwrap();
    h.set_size(data.len() as u64);
    h.set_mode(0o600);
    h.set_mtime(0);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len() + ustar::padding(data.len() as u64), 0);
}

/// A reader without `BufRead`, as the gzip stream the archive reader
/// reads from: `io::copy` of a byte slice would skip the copy altogether.
struct Stream<'a>(&'a [u8]);

impl Read for Stream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

fn timed(f: impl FnOnce()) -> Duration {
    let started = Instant::now();
    f();
    started.elapsed()
}

/// Read and write speed of the tar layer alone on a 120 MB dump (no gzip:
/// that costs the same either way), best of five, interleaved.
#[test]
#[ignore = "a measurement: run with --run-ignored only, in release"]
fn tar_layer_speed_on_a_120_mb_dump() {
    let dump = dump_of(120 << 20);
    let a = pack(&dump, our_entry);
    let b = pack(&dump, crate_entry);
    assert_eq!(ours(&a[..]).unwrap(), with_crate(&b[..]).unwrap());
    let (mut write_ours, mut write_crate) = (Duration::MAX, Duration::MAX);
    let (mut read_ours, mut read_crate) = (Duration::MAX, Duration::MAX);
    for _ in 0..5 {
        write_ours = write_ours.min(timed(|| drop(pack(&dump, our_entry))));
        write_crate = write_crate.min(timed(|| drop(pack(&dump, crate_entry))));
        read_ours = read_ours.min(timed(|| drop(ours(Stream(&a)).unwrap())));
        read_crate = read_crate.min(timed(|| drop(with_crate(Stream(&a)).unwrap())));
    }
    eprintln!(
        "120 MB dump: write ours {write_ours:?} crate {write_crate:?}; read ours {read_ours:?} crate {read_crate:?}"
    );
}
