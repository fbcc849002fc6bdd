//! Reading an untrusted archive. One pass over the gzip stream: the manifest
//! must come first; every later entry must be one the manifest names, of the
//! size it declares, and is written to a private temp dir while it is hashed.
//! Links, devices, PAX headers, duplicates, extra entries, a second gzip
//! member, trailing bytes and oversized entries are refused. Nothing outside
//! the temp dir is ever written, and the temp dir goes away on drop.

use super::{ustar, Manifest, BLOB_PREFIX, DUMP_NAME, MANIFEST_NAME};
use crate::error::{Error, Result, ResultExt};
use crate::progress::{Event, Progress};
use base64::Engine;
use flate2::bufread::GzDecoder;
use md5::Md5;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
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
    pub dump_path: PathBuf,
    /// Blob key → file in the temp dir (hash, size and MD5 verified).
    pub blobs: BTreeMap<String, PathBuf>,
    pub archive_bytes: u64,
    // Last: dropped after the paths above stop being used.
    pub dir: tempfile::TempDir,
}

/// Unpack and verify `archive` under a new temp dir inside `temp_parent`.
pub fn extract(
    archive: &Path,
    temp_parent: &Path,
    limits: Limits,
    progress: &mut dyn Progress,
) -> Result<Extracted> {
    let file = File::open(archive).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => {
            Error::argument(format!("archive {} does not exist", archive.display()))
        }
        _ => Error::io(format!("cannot open archive {}: {e}", archive.display())),
    })?;
    let archive_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let dir = tempfile::Builder::new()
        .prefix(".tenant_kit-restore-")
        .permissions(crate::private_dir_permissions())
        .tempdir_in(temp_parent)
        .map_err(|e| {
            Error::io(format!(
                "cannot create a temp dir in {}: {e}",
                temp_parent.display()
            ))
        })?;

    let compressed = BufReader::with_capacity(1 << 16, file);
    let mut gz = Capped::new(
        GzDecoder::new(compressed),
        limits.max_manifest_bytes + 2 * ustar::BLOCK as u64,
    );

    // 1. The manifest, first and small.
    let header = ustar::read_header(&mut gz)?.ok_or_else(|| Error::archive("archive is empty"))?;
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
    skip_padding(&mut gz, header.size)?;
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

    // From here on the stream may hold exactly what the manifest declares,
    // plus headers and tar's end padding: a bomb hits this cap.
    let entry_cost = |size: u64| ustar::BLOCK as u64 + size + ustar::padding(size) as u64;
    let budget = entry_cost(manifest.dump.size)
        + manifest
            .blobs
            .iter()
            .map(|b| entry_cost(b.size))
            .sum::<u64>()
        + 20 * ustar::BLOCK as u64 * 2;
    gz.extend_limit(budget);

    progress.emit(
        Event::new("verify")
            .with("phase", "extract")
            .with("archive_bytes", archive_bytes)
            .with("rows", manifest.total_rows())
            .with("blobs", manifest.blobs.len() as u64),
    )?;

    // 2. Every other entry: named by the manifest, once, of its size.
    let blob_dir = dir.path().join("blobs");
    std::fs::create_dir(&blob_dir).at("creating temp dir")?;
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut blobs = BTreeMap::new();
    let mut dump_path = None;
    while let Some(header) = ustar::read_header(&mut gz)? {
        progress.check_interrupt()?;
        if !seen.insert(header.name.clone()) {
            return Err(Error::archive(format!(
                "entry {:?} appears twice",
                header.name
            )));
        }
        if header.name == DUMP_NAME {
            expect_size(&header.name, header.size, manifest.dump.size)?;
            let path = dir.path().join(DUMP_NAME);
            let mut shape = LineShape::new(limits.max_line_bytes);
            let (sha, _) = copy_entry(&mut gz, &path, header.size, false, Some(&mut shape))?;
            shape.finish()?;
            if sha != manifest.dump.sha256 {
                return Err(Error::integrity(format!(
                    "{DUMP_NAME}: SHA-256 {sha} does not match the manifest"
                )));
            }
            dump_path = Some(path);
        } else if let Some(key) = header.name.strip_prefix(BLOB_PREFIX) {
            let Some(entry) = manifest.blob(key) else {
                return Err(Error::archive(format!(
                    "entry {:?} is not named by the manifest",
                    header.name
                )));
            };
            expect_size(&header.name, header.size, entry.size)?;
            let path = blob_dir.join(key); // key alphabet checked by Manifest::parse
            let (sha, md5) = copy_entry(&mut gz, &path, header.size, true, None)?;
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
            blobs.insert(key.to_string(), path);
        } else {
            return Err(Error::archive(format!(
                "unexpected entry {:?}",
                header.name
            )));
        }
        skip_padding(&mut gz, header.size)?;
    }
    let dump_path = dump_path.ok_or_else(|| Error::archive(format!("{DUMP_NAME} is missing")))?;
    if let Some(missing) = manifest.blobs.iter().find(|b| !blobs.contains_key(&b.key)) {
        return Err(Error::archive(format!(
            "blob {} named by the manifest is missing",
            missing.key
        )));
    }

    // 3. After tar's end marker: zero padding only, then the gzip trailer
    //    (CRC checked by the decoder at EOF), then nothing at all.
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
    Ok(Extracted {
        manifest,
        dump_path,
        blobs,
        archive_bytes,
        dir,
    })
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

/// Copy `size` bytes into a new file, returning (hex SHA-256, base64 MD5).
fn copy_entry<R: Read>(
    input: &mut R,
    path: &Path,
    size: u64,
    md5: bool,
    mut shape: Option<&mut LineShape>,
) -> Result<(String, Option<String>)> {
    let mut out = File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .at("writing temp file")?;
    let mut sha = Sha256::new();
    let mut md = md5.then(Md5::new);
    let mut left = size;
    let mut buf = vec![0u8; 1 << 16];
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
