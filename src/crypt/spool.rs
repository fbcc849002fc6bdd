//! The backup's dump spool (`dump.jsonl.deflate` in the work dir) of an
//! encrypted backup: the compressed dump sits on disk until it is packed,
//! so it is encrypted too, to a throw-away key that lives only in memory
//! for the length of the backup. Losing the process loses the key: a
//! leftover spool is unreadable noise.

use super::keys::Seal;
use super::seal::Sealed;
use crate::archive::deflate::Finish;
use crate::error::{Error, Result, ResultExt};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// The spool file and its key: no key when the backup is not encrypted
/// (then the spool holds what the plain archive will hold anyway, in the
/// same private work dir).
pub struct Spool {
    path: PathBuf,
    key: Option<age::x25519::Identity>,
}

impl Spool {
    pub fn new(path: PathBuf, seal: &Seal) -> Spool {
        Spool {
            path,
            key: seal.is_encrypted().then(age::x25519::Identity::generate),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Create the spool file and the writer that fills it.
    pub fn create(&self) -> Result<SpoolWriter> {
        let file = File::create(&self.path).at("creating dump.jsonl")?;
        let out = BufWriter::with_capacity(1 << 20, file);
        let seal = match &self.key {
            None => Seal::Plain,
            Some(id) => Seal::Recipients(vec![id.to_public()]),
        };
        Ok(SpoolWriter(
            Sealed::new(&seal, out).at("creating dump.jsonl")?,
        ))
    }

    /// Read the spool back (decrypted when it was encrypted).
    pub fn open(&self) -> Result<Box<dyn Read>> {
        let file = File::open(&self.path).at("reopening the compressed dump")?;
        let file = BufReader::with_capacity(1 << 20, file);
        let Some(id) = &self.key else {
            return Ok(Box::new(file));
        };
        let decryptor = age::Decryptor::new_buffered(file)
            .map_err(|e| Error::internal(format!("reading the dump spool: {e}")))?;
        let reader = decryptor
            .decrypt(std::iter::once(id as &dyn age::Identity))
            .map_err(|e| Error::internal(format!("reading the dump spool: {e}")))?;
        Ok(Box::new(reader))
    }
}

/// The spool's writer; [`Finish`] seals it.
pub struct SpoolWriter(Sealed<BufWriter<File>>);

impl Write for SpoolWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Finish for SpoolWriter {
    fn finish_writing(self) -> io::Result<()> {
        self.0.finish()?.flush()
    }
}
