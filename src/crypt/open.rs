//! Opening an archive that may be age-encrypted: the first bytes decide.
//! The plaintext is streamed (never written out as a whole): the reader
//! behind it sees a `.tar.gz` like any other.

use super::keys::Unseal;
use super::AGE_MAGIC;
use crate::error::{Error, Result};
use age::DecryptError;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// An opened archive: the `.tar.gz` bytes, decrypted when they were
/// encrypted.
pub struct Opened {
    pub reader: Box<dyn BufRead + Send>,
    pub encrypted: bool,
    pub tampered: Tampered,
}

/// Set when age refused a chunk of the payload (changed or cut short).
#[derive(Clone, Default)]
pub struct Tampered(Arc<AtomicBool>);

impl Tampered {
    /// The error to report for a failed read of this archive: a failure of
    /// the ciphertext's authentication outranks what the plaintext's reader
    /// made of the bytes it got (it only saw a stream that stopped).
    pub fn explain(&self, archive: &Path, error: Error) -> Error {
        if self.0.load(Ordering::SeqCst) {
            Error::integrity(format!(
                "archive {}: the encrypted data does not authenticate: it was changed or cut short",
                archive.display()
            ))
        } else {
            error
        }
    }
}

pub fn open_archive<R: Read + Send + 'static>(
    archive: &Path,
    input: R,
    keys: &Unseal,
) -> Result<Opened> {
    let mut input = BufReader::with_capacity(1 << 16, input);
    let tampered = Tampered::default();
    let head = input
        .fill_buf()
        .map_err(|e| Error::io(format!("cannot read archive {}: {e}", archive.display())))?;
    if !head.starts_with(AGE_MAGIC) {
        return Ok(Opened {
            reader: Box::new(input),
            encrypted: false,
            tampered,
        });
    }
    if keys.is_empty() {
        return Err(Error::argument(format!(
            "archive {} is encrypted (age): a key is needed to read it: give identities:, identity_file: or passphrase:",
            archive.display()
        )));
    }
    let shown = archive.display();
    let decryptor = age::Decryptor::new_buffered(input).map_err(|e| header_error(archive, e))?;
    let stream = if decryptor.is_scrypt() {
        let Some(passphrase) = &keys.passphrase else {
            return Err(Error::decryption(format!(
                "archive {shown} is encrypted with a passphrase: give passphrase:, not identities"
            )));
        };
        let identity = age::scrypt::Identity::new(passphrase.to_secret_string());
        decryptor.decrypt(std::iter::once(&identity as &dyn age::Identity))
    } else {
        if keys.identities.is_empty() {
            return Err(Error::decryption(format!(
                "archive {shown} is encrypted to age recipients, not a passphrase: give identities: or identity_file:"
            )));
        }
        decryptor.decrypt(keys.identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
    }
    .map_err(|e| header_error(archive, e))?;
    Ok(Opened {
        reader: Box::new(BufReader::with_capacity(
            1 << 16,
            Watched {
                inner: stream,
                tampered: tampered.0.clone(),
            },
        )),
        encrypted: true,
        tampered,
    })
}

/// What age's header check said, in our kinds: a key that does not fit is
/// a DecryptionError; a header that is not what age wrote is an
/// IntegrityError. (Never age's own message for key failures: it is
/// generic already, and ours says what to do.)
fn header_error(archive: &Path, e: DecryptError) -> Error {
    let shown = archive.display();
    match e {
        DecryptError::NoMatchingKeys | DecryptError::KeyDecryptionFailed => Error::decryption(
            format!("archive {shown}: none of the given identities can decrypt it"),
        ),
        DecryptError::DecryptionFailed => Error::decryption(format!(
            "archive {shown}: the passphrase is wrong (or the header was changed)"
        )),
        DecryptError::ExcessiveWork { required, target } => Error::decryption(format!(
            "archive {shown}: its passphrase needs scrypt work factor {required}, over this machine's limit {}",
            target + 4
        )),
        DecryptError::InvalidMac => Error::integrity(format!(
            "archive {shown}: the age header does not authenticate: it was changed"
        )),
        DecryptError::InvalidHeader => Error::integrity(format!(
            "archive {shown}: the age header is malformed (changed or cut short)"
        )),
        DecryptError::UnknownFormat => Error::archive(format!(
            "archive {shown}: an age version this tenant_kit does not know"
        )),
        DecryptError::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof => Error::integrity(
            format!("archive {shown}: the age header is cut short"),
        ),
        DecryptError::Io(io) => Error::io(format!("cannot read archive {shown}: {io}")),
    }
}

/// Marks `tampered` when age refuses a payload chunk (it says so with
/// `InvalidData`; a payload cut short ends in `UnexpectedEof`).
struct Watched<R> {
    inner: R,
    tampered: Arc<AtomicBool>,
}

impl<R: Read> Read for Watched<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if matches!(
                e.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
            ) {
                self.tampered.store(true, Ordering::SeqCst);
            }
        })
    }
}
