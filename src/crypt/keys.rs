//! Turning the caller's options into age recipients and identities, and
//! making new key pairs.

use super::Secret;
use crate::error::{Error, Result};
use age::secrecy::ExposeSecret;
use serde::Serialize;
use std::path::Path;
use std::str::FromStr;

/// How a backup encrypts: not at all, to public keys, or to a passphrase.
pub enum Seal {
    Plain,
    Recipients(Vec<age::x25519::Recipient>),
    Passphrase(Secret),
}

impl Seal {
    /// From the backup options `recipients:` / `passphrase:` (not both).
    pub fn from_options(recipients: &[String], passphrase: Option<&Secret>) -> Result<Seal> {
        match (recipients.is_empty(), passphrase) {
            (true, None) => Ok(Seal::Plain),
            (false, Some(_)) => Err(Error::argument("give recipients: or passphrase:, not both")),
            (true, Some(p)) => {
                check_passphrase(p)?;
                Ok(Seal::Passphrase(p.clone()))
            }
            (false, None) => recipients
                .iter()
                .enumerate()
                .map(|(i, r)| parse_recipient(i, r))
                .collect::<Result<_>>()
                .map(Seal::Recipients),
        }
    }

    pub fn is_encrypted(&self) -> bool {
        !matches!(self, Seal::Plain)
    }

    /// The public keys the archive is encrypted to (empty for a passphrase).
    pub fn recipients(&self) -> Vec<String> {
        match self {
            Seal::Recipients(list) => list.iter().map(|r| r.to_string()).collect(),
            _ => Vec::new(),
        }
    }
}

fn parse_recipient(index: usize, text: &str) -> Result<age::x25519::Recipient> {
    let text = text.trim();
    age::x25519::Recipient::from_str(text).map_err(|_| {
        // Never repeat the value: it may be a secret key given by mistake.
        let hint = if text.to_ascii_uppercase().starts_with("AGE-SECRET-KEY-") {
            " (it is a secret key: give its public recipient, age1…)"
        } else {
            " (expected an age public key, age1…)"
        };
        Error::argument(format!("recipients[{index}] is not an age recipient{hint}"))
    })
}

pub fn check_passphrase(p: &Secret) -> Result<()> {
    if p.expose().is_empty() {
        return Err(Error::argument("passphrase must not be empty"));
    }
    Ok(())
}

/// What a reader may decrypt with: `identities:` and/or `identity_file:`,
/// or `passphrase:`.
pub struct Unseal {
    pub identities: Vec<Box<dyn age::Identity + Send + Sync>>,
    pub passphrase: Option<Secret>,
}

impl Unseal {
    pub fn from_options(
        identities: &[Secret],
        identity_file: Option<&Path>,
        passphrase: Option<&Secret>,
    ) -> Result<Unseal> {
        let has_identities = !identities.is_empty() || identity_file.is_some();
        if has_identities && passphrase.is_some() {
            return Err(Error::argument(
                "give identities:/identity_file: or passphrase:, not both",
            ));
        }
        if let Some(p) = passphrase {
            check_passphrase(p)?;
        }
        let mut parsed = Vec::new();
        for (i, text) in identities.iter().enumerate() {
            parsed.extend(parse_identities(text.expose().as_bytes()).map_err(|()| {
                Error::argument(format!(
                    "identities[{i}] is not an age identity (expected AGE-SECRET-KEY-1…)"
                ))
            })?);
        }
        if let Some(path) = identity_file {
            parsed.extend(read_identity_file(path)?);
        }
        Ok(Unseal {
            identities: parsed,
            passphrase: passphrase.cloned(),
        })
    }

    /// No keys: reads plain archives only.
    pub fn none() -> Unseal {
        Unseal {
            identities: Vec::new(),
            passphrase: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.identities.is_empty() && self.passphrase.is_none()
    }
}

type Identities = Vec<Box<dyn age::Identity + Send + Sync>>;

/// Parse identities in age's key-file format (`#` comments, one key a
/// line). Native X25519 keys only (no plugins): each is `Send + Sync`, as
/// the extraction thread needs. The error carries nothing: a parser's
/// message may quote the input.
fn parse_identities(text: &[u8]) -> std::result::Result<Identities, ()> {
    let text = std::str::from_utf8(text).map_err(|_| ())?;
    let list = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            age::x25519::Identity::from_str(line)
                .map(|id| Box::new(id) as Box<dyn age::Identity + Send + Sync>)
                .map_err(|_| ())
        })
        .collect::<std::result::Result<Identities, ()>>()?;
    if list.is_empty() {
        return Err(());
    }
    Ok(list)
}

fn read_identity_file(path: &Path) -> Result<Identities> {
    let bytes = std::fs::read(path).map_err(|e| {
        let shown = path.display();
        match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::argument(format!("identity_file {shown} does not exist"))
            }
            _ => Error::io(format!("cannot read identity_file {shown}: {e}")),
        }
    })?;
    let bytes = zeroize_on_drop(bytes);
    parse_identities(&bytes.0).map_err(|()| {
        Error::argument(format!(
            "identity_file {} holds no age identity (AGE-SECRET-KEY-1… lines)",
            path.display()
        ))
    })
}

/// Bytes that are overwritten with zeros when dropped.
struct Wiped(Vec<u8>);

fn zeroize_on_drop(bytes: Vec<u8>) -> Wiped {
    Wiped(bytes)
}

impl Drop for Wiped {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            // Volatile, so the compiler cannot drop the "dead" stores.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

/// A new key pair, as `TenantKit.generate_key` returns it.
#[derive(Serialize)]
pub struct KeyPair {
    pub identity: String,
    pub recipient: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("identity", &"[REDACTED]")
            .field("recipient", &self.recipient)
            .finish()
    }
}

pub fn generate_key() -> KeyPair {
    let identity = age::x25519::Identity::generate();
    KeyPair {
        recipient: identity.to_public().to_string(),
        identity: identity.to_string().expose_secret().to_string(),
    }
}
