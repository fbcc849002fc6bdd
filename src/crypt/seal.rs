//! Writing through age: the plaintext goes in, only ciphertext reaches the
//! inner writer.

use super::keys::Seal;
use age::stream::StreamWriter;
use std::io::{self, Write};

/// scrypt work factor (log2 N) of passphrase-encrypted archives.
pub const SCRYPT_LOG_N: u8 = 18;

/// Plain or age-encrypted output over `W`. [`Sealed::finish`] must be
/// called: age's last chunk is only written then.
pub enum Sealed<W: Write> {
    Plain(W),
    Age(StreamWriter<W>),
}

impl<W: Write> Sealed<W> {
    pub fn new(seal: &Seal, out: W) -> io::Result<Sealed<W>> {
        let encryptor = match seal {
            Seal::Plain => return Ok(Sealed::Plain(out)),
            Seal::Recipients(list) => {
                age::Encryptor::with_recipients(list.iter().map(|r| r as &dyn age::Recipient))
                    .map_err(io::Error::other)?
            }
            Seal::Passphrase(p) => {
                let mut recipient = age::scrypt::Recipient::new(p.to_secret_string());
                // The age CLI's work factor, 2^18. The crate's own pick is
                // timed on this machine, and a busy machine would get a
                // weaker one.
                recipient.set_work_factor(SCRYPT_LOG_N);
                age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                    .map_err(io::Error::other)?
            }
        };
        encryptor.wrap_output(out).map(Sealed::Age)
    }

    /// Write age's final chunk; give back the inner writer (not flushed).
    pub fn finish(self) -> io::Result<W> {
        match self {
            Sealed::Plain(w) => Ok(w),
            Sealed::Age(w) => w.finish(),
        }
    }
}

impl<W: Write> Write for Sealed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sealed::Plain(w) => w.write(buf),
            Sealed::Age(w) => w.write(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sealed::Plain(w) => w.write_all(buf),
            Sealed::Age(w) => w.write_all(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sealed::Plain(w) => w.flush(),
            Sealed::Age(w) => w.flush(),
        }
    }
}
