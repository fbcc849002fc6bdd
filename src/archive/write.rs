//! Writing an archive: gzip(tar(manifest.json, dump.jsonl, blobs/*)).
//! The manifest goes first so readers can check every later entry against
//! it as it streams past.

use super::deflate::{gzip_header, worth_compressing, DeflatedDump, RawDeflate};
use super::{ustar, BlobEntry, Manifest, BLOB_PREFIX, DUMP_NAME, MANIFEST_NAME};
use crate::crypt::keys::Seal;
use crate::crypt::seal::Sealed;
use crate::crypt::spool::Spool;
use crate::error::{Error, Result, ResultExt};
use crate::progress::{Event, Progress, Step};
use crc32fast::Hasher as Crc;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

/// A writer that hashes and counts what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    /// (inner writer, hex SHA-256, byte count)
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, super::hex(&self.hasher.finalize()), self.bytes)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A blob file to pack, with the hash taken when the manifest was built.
pub struct BlobFile<'a> {
    pub entry: &'a BlobEntry,
    pub path: &'a Path,
}

/// The compressed dump: the deflate piece's file (the spool, read back
/// with its key) and what it holds.
pub struct DumpPiece<'a> {
    pub spool: &'a Spool,
    pub deflated: &'a DeflatedDump,
}

/// What was written: size and SHA-256 of the archive file itself (of the
/// ciphertext, when it is encrypted).
pub struct Written {
    pub bytes: u64,
    pub sha256: String,
}

/// What goes into the archive, in this order.
pub struct Contents<'a> {
    pub manifest: &'a Manifest,
    pub dump: DumpPiece<'a>,
    pub blobs: &'a [BlobFile<'a>],
}

/// How the archive is packed: the gzip level and every entry's mtime.
#[derive(Clone, Copy)]
pub struct Packing {
    pub level: u32,
    pub mtime: u64,
}

/// Pack the archive. The dump arrives already compressed (`contents.dump`,
/// a deflate piece made while the rows were read, see deflate.rs); the
/// manifest entry and the dump's tar header are compressed in front of it,
/// the blobs and the end marker behind it, and the three pieces form one
/// gzip member. With a [`Seal`] other than plain, that gzip stream is
/// encrypted as it is written: only ciphertext reaches the file.
pub fn write_archive(
    dest: &Path,
    seal: &Seal,
    contents: Contents<'_>,
    packing: Packing,
    progress: &mut dyn Progress,
) -> Result<Written> {
    let file = File::options()
        .write(true)
        .create_new(true)
        .mode_0600()
        .open(dest)
        .at(format!("creating {}", dest.display()))?;
    let hashed = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
    let mut out = Sealed::new(seal, hashed).at("encrypting the archive")?;
    out.write_all(&gzip_header(packing.mtime, packing.level))?;

    // Piece 1: manifest.json and the header of dump.jsonl.
    let (mut crc, mut len) = write_head(&mut out, contents.manifest, packing)?;

    // Piece 2: the dump, compressed while it was written.
    let mut piece = contents.dump.spool.open()?;
    std::io::copy(&mut piece, &mut out).at("writing the archive")?;
    crc.combine(&contents.dump.deflated.crc);
    len += contents.dump.deflated.size;

    // Piece 3: the dump's padding, the blobs, the end marker.
    let (tail_crc, tail_len) = write_tail(&mut out, &contents, packing, progress)?;
    crc.combine(&tail_crc);
    len += tail_len;

    // The gzip trailer: CRC-32 and size (mod 2^32) of everything.
    out.write_all(&crc.finalize().to_le_bytes())?;
    out.write_all(&(len as u32).to_le_bytes())?;
    let mut hashed = out.finish().at("writing the archive")?;
    hashed.flush().at("writing the archive")?;
    let (buffered, sha256, bytes) = hashed.finish();
    let file = buffered
        .into_inner()
        .map_err(|e| Error::from(e.into_error()))?;
    file.sync_all().at("syncing archive to disk")?;
    Ok(Written { bytes, sha256 })
}

/// The first deflate piece: manifest.json and the dump's tar header. Its
/// CRC and uncompressed length.
fn write_head<W: Write>(out: &mut W, manifest: &Manifest, packing: Packing) -> Result<(Crc, u64)> {
    let manifest_json =
        serde_json::to_vec_pretty(manifest).map_err(|e| Error::internal(e.to_string()))?;
    let mut head = RawDeflate::new(out, packing.level);
    append_bytes(&mut head, MANIFEST_NAME, &manifest_json, packing.mtime)?;
    ustar::write_header(&mut head, DUMP_NAME, manifest.dump.size, packing.mtime)?;
    let (_, crc, len) = head.finish(false)?;
    Ok((crc, len))
}

/// The last deflate piece: the dump's padding, the blob files, the end
/// marker. Its CRC and uncompressed length.
fn write_tail<W: Write>(
    out: &mut W,
    contents: &Contents<'_>,
    packing: Packing,
    progress: &mut dyn Progress,
) -> Result<(Crc, u64)> {
    let blobs = contents.blobs;
    let mut tail = RawDeflate::new(out, packing.level);
    ustar::write_padding(&mut tail, contents.manifest.dump.size)?;
    for (done, blob) in blobs.iter().enumerate() {
        progress.check_interrupt()?;
        let name = format!("{BLOB_PREFIX}{}", blob.entry.key);
        let file = File::open(blob.path).at(format!("reading blob {}", blob.entry.key))?;
        append_file(
            &mut tail,
            &name,
            file,
            blob.entry.size,
            &blob.entry.sha256,
            (packing.mtime, packing.level),
            progress,
        )?;
        if (done + 1) % 100 == 0 || done + 1 == blobs.len() {
            progress.emit(
                Event::new(Step::ArchiveProgress)
                    .with("blobs", (done + 1) as u64)
                    .with("total", blobs.len() as u64),
            )?;
        }
    }
    ustar::write_end(&mut tail)?;
    let (_, crc, len) = tail.finish(true).at("finishing gzip stream")?;
    Ok((crc, len))
}

fn append_bytes<W: Write>(out: &mut W, name: &str, bytes: &[u8], mtime: u64) -> Result<()> {
    ustar::write_header(out, name, bytes.len() as u64, mtime)?;
    out.write_all(bytes)?;
    ustar::write_padding(out, bytes.len() as u64)?;
    Ok(())
}

/// Copy a file into the archive, re-hashing it on the way: a file that
/// changed since the manifest was written fails the backup instead of
/// producing an archive that can never verify. The file is deflated at
/// `level` unless its start shows it is compressed already
/// ([`worth_compressing`]); then it is stored.
fn append_file<W: Write>(
    out: &mut RawDeflate<W>,
    name: &str,
    mut file: File,
    size: u64,
    sha256: &str,
    (mtime, level): (u64, u32),
    progress: &mut dyn Progress,
) -> Result<()> {
    let mut buf = vec![0u8; 1 << 16];
    let mut n = read_full(&mut file, &mut buf)?;
    let stored = level == 0 || !worth_compressing(&buf[..n]);
    out.set_level(if stored { 0 } else { level })?;
    ustar::write_header(out, name, size, mtime)?;
    let mut hasher = Sha256::new();
    let mut copied = 0u64;
    while n > 0 {
        copied += n as u64;
        if copied > size {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        if copied % (64 << 20) < n as u64 {
            progress.check_interrupt()?;
        }
        n = file.read(&mut buf)?;
    }
    if copied != size || super::hex(&hasher.finalize()) != sha256 {
        return Err(Error::integrity(format!(
            "{name} changed on disk while the backup was running"
        )));
    }
    ustar::write_padding(out, size)?;
    Ok(())
}

/// Read until `buf` is full or the file ends: the first chunk is the sample
/// [`worth_compressing`] judges by.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// `OpenOptions::mode(0o600)` where the platform has modes.
trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    #[cfg(unix)]
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
    #[cfg(not(unix))]
    fn mode_0600(&mut self) -> &mut Self {
        self
    }
}
