//! Reading an untrusted archive. One pass over the gzip stream: the manifest
//! must come first; every later entry must be one the manifest names, of the
//! size it declares, and is written to a private temp dir while it is hashed.
//! Links, devices, PAX headers, duplicates, extra entries, a second gzip
//! member, trailing bytes and oversized entries are refused. Nothing outside
//! the temp dir is ever written, and the temp dir goes away on drop.

pub use super::feed::DumpFeed;
use super::feed::FeedProgress;
use super::{ustar, Manifest, BLOB_PREFIX, DUMP_NAME, MANIFEST_NAME};
use crate::crypt::keys::Unseal;
use crate::crypt::open::{open_archive, Opened};
use crate::error::{Error, Result, ResultExt};
use crate::progress::{Event, Progress, Step};
use base64::Engine;
use flate2::bufread::GzDecoder;
use md5::Md5;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};

/// Caps against decompression bombs and absurd inputs.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_manifest_bytes: u64,
    /// Longest accepted line of dump.jsonl.
    pub max_line_bytes: usize,
    /// Largest accepted dump.jsonl.
    pub max_dump_bytes: u64,
    /// Largest accepted single blob file.
    pub max_blob_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_bytes: 64 << 20,
            max_line_bytes: 64 << 20,
            max_dump_bytes: 64 << 30,
            max_blob_bytes: 16 << 30,
        }
    }
}

/// An archive unpacked into a temp dir and checked against its manifest.
pub struct Extracted {
    pub manifest: Manifest,
    /// Whether the archive was age-encrypted.
    pub encrypted: bool,
    pub dump_path: PathBuf,
    /// Blob key → file in the temp dir (hash, size and MD5 verified).
    pub blobs: BTreeMap<String, PathBuf>,
    pub archive_bytes: u64,
    // Last: dropped after the paths above stop being used.
    pub dir: tempfile::TempDir,
}

/// Unpack and verify `archive` under a new temp dir inside `temp_parent`.
/// An encrypted archive is decrypted with `keys` as it streams past.
pub fn extract(
    archive: &Path,
    keys: &Unseal,
    temp_parent: &Path,
    limits: Limits,
    progress: &mut dyn Progress,
) -> Result<Extracted> {
    extract_into((archive, keys), temp_parent, limits, progress, None)
}

/// [`extract`], meant to run on its own thread while another one watches
/// through `feed`: it hears of the manifest once it is read and follows
/// dump.jsonl while it is written ([`DumpFeed`]). Events are not delivered
/// (`progress` stays with the watching thread); a cancel through the feed
/// stops the extraction.
pub fn extract_feeding(
    archive: &Path,
    keys: &Unseal,
    temp_parent: &Path,
    limits: Limits,
    feed: &DumpFeed,
) -> Result<Extracted> {
    // Even a panic must wake the watcher, or it would wait for ever.
    struct StoppedOnDrop<'a>(&'a DumpFeed);
    impl Drop for StoppedOnDrop<'_> {
        fn drop(&mut self) {
            self.0.stopped();
        }
    }
    let _stopped = StoppedOnDrop(feed);
    extract_into(
        (archive, keys),
        temp_parent,
        limits,
        &mut FeedProgress(feed),
        Some(feed),
    )
}

/// The `verify` event of an archive's manifest, sent once it is read.
pub fn manifest_event(manifest: &Manifest, archive_bytes: u64) -> Event {
    Event::new(Step::Verify)
        .with("phase", "extract")
        .with("archive_bytes", archive_bytes)
        .with("rows", manifest.total_rows())
        .with("blobs", manifest.blobs.len() as u64)
}

fn extract_into(
    (archive, keys): (&Path, &Unseal),
    temp_parent: &Path,
    limits: Limits,
    progress: &mut dyn Progress,
    feed: Option<&DumpFeed>,
) -> Result<Extracted> {
    let file = File::open(archive).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => {
            Error::argument(format!("archive {} does not exist", archive.display()))
        }
        _ => Error::io(format!("cannot open archive {}: {e}", archive.display())),
    })?;
    let archive_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    if archive_bytes == 0 {
        // Most often a copy or an upload that failed: say so, rather than
        // "truncated", which suggests an archive that was cut short.
        return Err(Error::archive(format!(
            "archive {} is an empty file (0 bytes)",
            archive.display()
        )));
    }
    let dir =
        crate::work_dir::create(temp_parent, crate::work_dir::RESTORE_PREFIX).map_err(|e| {
            Error::io(format!(
                "cannot create a temp dir in {}: {e}",
                temp_parent.display()
            ))
        })?;

    let opened = open_archive(archive, file, keys)?;
    let tampered = opened.tampered.clone();
    unpack(archive_bytes, opened, dir, limits, progress, feed)
        .map_err(|e| tampered.explain(archive, e))
}

/// The decompressed tar stream, capped (see [`Capped`]).
type TarStream = Capped<GzDecoder<Box<dyn BufRead + Send>>>;

/// Read the (decrypted) `.tar.gz` stream of `opened` into `dir`: the
/// manifest first, then every entry it names, then nothing but the end.
fn unpack(
    archive_bytes: u64,
    opened: Opened,
    dir: tempfile::TempDir,
    limits: Limits,
    progress: &mut dyn Progress,
    feed: Option<&DumpFeed>,
) -> Result<Extracted> {
    let encrypted = opened.encrypted;
    let mut gz = Capped::new(
        GzDecoder::new(opened.reader),
        limits.max_manifest_bytes + 2 * ustar::BLOCK as u64,
    );
    let manifest = read_manifest(&mut gz, limits)?;
    // From here on the stream may hold exactly what the manifest declares,
    // plus headers and tar's end padding: a bomb hits this cap.
    gz.extend_limit(entries_budget(&manifest));
    progress.emit(manifest_event(&manifest, archive_bytes))?;
    if let Some(feed) = feed {
        let found = (manifest.clone(), dir.path().join(DUMP_NAME), archive_bytes);
        feed.manifest_found(found);
    }
    let mut entries = Entries::new(&manifest, dir.path(), limits, feed)?;
    while let Some(header) = ustar::read_header(&mut gz)? {
        progress.check_interrupt()?;
        entries.copy(&mut gz, header, &*progress)?;
    }
    let (dump_path, blobs) = entries.complete()?;
    check_end(gz)?;
    Ok(Extracted {
        manifest,
        encrypted,
        dump_path,
        blobs,
        archive_bytes,
        dir,
    })
}

/// Phase 1: the manifest, first and small, and the sizes it declares
/// within the limits.
fn read_manifest(gz: &mut TarStream, limits: Limits) -> Result<Manifest> {
    let header = ustar::read_header(gz)?.ok_or_else(|| Error::archive("archive is empty"))?;
    if header.name != MANIFEST_NAME {
        return Err(Error::archive(format!(
            "first entry must be {MANIFEST_NAME}, found {:?}",
            header.name
        )));
    }
    if header.size > limits.max_manifest_bytes {
        return Err(Error::archive(format!(
            "{MANIFEST_NAME} is {} bytes, over the limit",
            header.size
        )));
    }
    let mut manifest_bytes = vec![0u8; header.size as usize];
    gz.read_exact(&mut manifest_bytes)
        .map_err(ustar::truncated)?;
    skip_padding(gz, header.size)?;
    let manifest = Manifest::parse(&manifest_bytes)?;
    if manifest.dump.size > limits.max_dump_bytes {
        return Err(Error::archive(format!(
            "dump.jsonl declares {} bytes, over the limit",
            manifest.dump.size
        )));
    }
    if let Some(b) = manifest
        .blobs
        .iter()
        .find(|b| b.size > limits.max_blob_bytes)
    {
        return Err(Error::archive(format!(
            "blob {} declares {} bytes, over the limit",
            b.key, b.size
        )));
    }
    Ok(manifest)
}

/// How many bytes the entries after the manifest may take: theirs as
/// declared, their headers and padding, and tar's end blocks.
fn entries_budget(manifest: &Manifest) -> u64 {
    let entry_cost = |size: u64| ustar::BLOCK as u64 + size + ustar::padding(size) as u64;
    entry_cost(manifest.dump.size)
        + manifest
            .blobs
            .iter()
            .map(|b| entry_cost(b.size))
            .sum::<u64>()
        + 20 * ustar::BLOCK as u64 * 2
}

/// Phase 2: every entry after the manifest, named by it, once, of its size,
/// copied into the temp dir while it is hashed.
struct Entries<'a> {
    manifest: &'a Manifest,
    dir: &'a Path,
    blob_dir: PathBuf,
    limits: Limits,
    feed: Option<&'a DumpFeed>,
    /// Looked up once per entry: an index, so a manifest of many blobs
    /// costs in proportion to them, not to their square.
    named: BTreeMap<&'a str, &'a crate::archive::BlobEntry>,
    seen: BTreeSet<String>,
    dump_path: Option<PathBuf>,
    blobs: BTreeMap<String, PathBuf>,
}

impl<'a> Entries<'a> {
    fn new(
        manifest: &'a Manifest,
        dir: &'a Path,
        limits: Limits,
        feed: Option<&'a DumpFeed>,
    ) -> Result<Self> {
        let blob_dir = dir.join("blobs");
        std::fs::create_dir(&blob_dir).at("creating temp dir")?;
        Ok(Entries {
            manifest,
            dir,
            blob_dir,
            limits,
            feed,
            named: manifest.blobs.iter().map(|b| (b.key.as_str(), b)).collect(),
            seen: BTreeSet::new(),
            dump_path: None,
            blobs: BTreeMap::new(),
        })
    }

    fn copy(
        &mut self,
        gz: &mut TarStream,
        header: ustar::EntryHeader,
        progress: &dyn Progress,
    ) -> Result<()> {
        if !self.seen.insert(header.name.clone()) {
            return Err(Error::archive(format!(
                "entry {:?} appears twice",
                header.name
            )));
        }
        if header.name == DUMP_NAME {
            self.copy_dump(gz, &header, progress)?;
        } else if let Some(key) = header.name.strip_prefix(BLOB_PREFIX) {
            self.copy_blob(gz, &header, key, progress)?;
        } else {
            return Err(Error::archive(format!(
                "unexpected entry {:?}",
                header.name
            )));
        }
        skip_padding(gz, header.size)
    }

    /// dump.jsonl: its lines' shape checked as it streams, its hash at the
    /// end, and only then is a reader following it let see its end.
    fn copy_dump(
        &mut self,
        gz: &mut TarStream,
        header: &ustar::EntryHeader,
        progress: &dyn Progress,
    ) -> Result<()> {
        let declared = &self.manifest.dump;
        expect_size(&header.name, header.size, declared.size)?;
        let path = self.dir.join(DUMP_NAME);
        let mut shape = LineShape::new(self.limits.max_line_bytes);
        let watch = Watch {
            shape: Some(&mut shape),
            feed: self.feed,
            progress,
        };
        let (sha, _) = copy_entry(gz, &path, header.size, false, watch)?;
        shape.finish()?;
        if sha != declared.sha256 {
            return Err(Error::integrity(format!(
                "{DUMP_NAME}: SHA-256 {sha} does not match the manifest"
            )));
        }
        if let Some(feed) = self.feed {
            feed.dump_verified();
        }
        self.dump_path = Some(path);
        Ok(())
    }

    /// A blob file: named by the manifest, its SHA-256 and (when the blob
    /// row has one) ActiveStorage's MD5 checked.
    fn copy_blob(
        &mut self,
        gz: &mut TarStream,
        header: &ustar::EntryHeader,
        key: &str,
        progress: &dyn Progress,
    ) -> Result<()> {
        let Some(entry) = self.named.get(key).copied() else {
            return Err(Error::archive(format!(
                "entry {:?} is not named by the manifest",
                header.name
            )));
        };
        expect_size(&header.name, header.size, entry.size)?;
        let path = self.blob_dir.join(key); // key alphabet checked by Manifest::parse
        let watch = Watch {
            shape: None,
            feed: None,
            progress,
        };
        let (sha, md5) = copy_entry(gz, &path, header.size, true, watch)?;
        if sha != entry.sha256 {
            return Err(Error::integrity(format!(
                "{}: SHA-256 does not match the manifest",
                header.name
            )));
        }
        if let Some(checksum) = &entry.checksum {
            if md5.as_deref() != Some(checksum.as_str()) {
                return Err(Error::integrity(format!(
                    "{}: MD5 does not match the blob's ActiveStorage checksum",
                    header.name
                )));
            }
        }
        self.blobs.insert(key.to_string(), path);
        Ok(())
    }

    /// Phase 3: nothing the manifest names is missing.
    fn complete(self) -> Result<(PathBuf, BTreeMap<String, PathBuf>)> {
        let dump_path = self
            .dump_path
            .ok_or_else(|| Error::archive(format!("{DUMP_NAME} is missing")))?;
        let mut blobs = self.manifest.blobs.iter();
        if let Some(missing) = blobs.find(|b| !self.blobs.contains_key(&b.key)) {
            return Err(Error::archive(format!(
                "blob {} named by the manifest is missing",
                missing.key
            )));
        }
        Ok((dump_path, self.blobs))
    }
}

/// Phase 4: after tar's end marker, zero padding only, then the gzip
/// trailer (CRC checked by the decoder at EOF), then nothing at all.
fn check_end(mut gz: TarStream) -> Result<()> {
    let mut rest = Vec::new();
    (&mut gz)
        .take(64 * 1024)
        .read_to_end(&mut rest)
        .map_err(ustar::truncated)?;
    if rest.len() >= 64 * 1024 || rest.iter().any(|&b| b != 0) {
        return Err(Error::archive(
            "unexpected data after the end of the tar archive",
        ));
    }
    let mut compressed = gz.into_inner().into_inner();
    if !compressed.fill_buf().map_err(ustar::truncated)?.is_empty() {
        return Err(Error::archive(
            "trailing bytes after the gzip stream (a second member or garbage)",
        ));
    }
    Ok(())
}

fn expect_size(name: &str, actual: u64, declared: u64) -> Result<()> {
    if actual == declared {
        Ok(())
    } else {
        Err(Error::integrity(format!(
            "{name}: {actual} bytes in the archive, {declared} in the manifest"
        )))
    }
}

/// Who looks at an entry's bytes while [`copy_entry`] writes them.
struct Watch<'a> {
    /// The line checks of dump.jsonl.
    shape: Option<&'a mut LineShape>,
    /// Told of every chunk written, for a reader following the file.
    feed: Option<&'a DumpFeed>,
    /// Asked between chunks whether to stop.
    progress: &'a dyn Progress,
}

/// Copy `size` bytes into a new file, returning (hex SHA-256, base64 MD5).
fn copy_entry<R: Read>(
    input: &mut R,
    path: &Path,
    size: u64,
    md5: bool,
    watch: Watch<'_>,
) -> Result<(String, Option<String>)> {
    let Watch {
        mut shape,
        feed,
        progress,
    } = watch;
    let mut out = File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .at("writing temp file")?;
    let mut sha = Sha256::new();
    let mut md = md5.then(Md5::new);
    let mut left = size;
    let mut buf = vec![0u8; 1 << 18];
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        input
            .read_exact(&mut buf[..want])
            .map_err(ustar::truncated)?;
        if let Some(shape) = shape.as_deref_mut() {
            shape.feed(&buf[..want])?;
        }
        sha.update(&buf[..want]);
        if let Some(m) = md.as_mut() {
            m.update(&buf[..want]);
        }
        out.write_all(&buf[..want]).at("writing temp file")?;
        left -= want as u64;
        if let Some(feed) = feed {
            feed.dump_written(want as u64);
            progress.check_interrupt()?;
        }
    }
    let md5 = md.map(|m| base64::engine::general_purpose::STANDARD.encode(m.finalize()));
    Ok((super::hex(&sha.finalize()), md5))
}

fn skip_padding<R: Read>(input: &mut R, size: u64) -> Result<()> {
    let mut pad = [0u8; ustar::BLOCK];
    let n = ustar::padding(size);
    input.read_exact(&mut pad[..n]).map_err(ustar::truncated)
}

/// Checks the shape of dump.jsonl while it streams in: every line starts
/// with `{` and ends with a newline within `max_line` bytes. A bomb of
/// zeros, or a line of hundreds of megabytes, stops here after a few bytes
/// or `max_line` bytes rather than after filling the disk.
struct LineShape {
    max_line: usize,
    in_line: usize,
    line_no: u64,
}

impl LineShape {
    fn new(max_line: usize) -> Self {
        LineShape {
            max_line,
            in_line: 0,
            line_no: 1,
        }
    }

    fn feed(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            if self.in_line == 0 && bytes[0] != b'{' {
                return Err(Error::archive(format!(
                    "dump.jsonl line {}: not a JSON object",
                    self.line_no
                )));
            }
            match bytes.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    self.check_len(self.in_line + end + 1)?;
                    self.in_line = 0;
                    self.line_no += 1;
                    bytes = &bytes[end + 1..];
                }
                None => {
                    self.in_line += bytes.len();
                    self.check_len(self.in_line)?;
                    bytes = &[];
                }
            }
        }
        Ok(())
    }

    fn check_len(&self, len: usize) -> Result<()> {
        if len > self.max_line {
            Err(Error::archive(format!(
                "dump.jsonl line {}: longer than {} bytes",
                self.line_no, self.max_line
            )))
        } else {
            Ok(())
        }
    }

    fn finish(&self) -> Result<()> {
        if self.in_line != 0 {
            return Err(Error::archive(format!(
                "dump.jsonl line {}: missing final newline",
                self.line_no
            )));
        }
        Ok(())
    }
}

/// A reader that fails once more than `limit` bytes came out of it: the
/// decompression-bomb fuse.
struct Capped<R> {
    inner: R,
    limit: u64,
    read: u64,
}

impl<R> Capped<R> {
    fn new(inner: R, limit: u64) -> Self {
        Capped {
            inner,
            limit,
            read: 0,
        }
    }
    fn extend_limit(&mut self, more: u64) {
        self.limit = self.read.saturating_add(more);
    }
    fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = self.limit.saturating_sub(self.read);
        if room == 0 {
            return Err(io::Error::other(
                "archive expands beyond what its manifest declares",
            ));
        }
        let want = buf.len().min(room.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        self.read += n as u64;
        Ok(n)
    }
}
