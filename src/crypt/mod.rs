//! Encrypted archives: the age format (age-encryption.org/v1) around the
//! unchanged version-1 `.tar.gz`. An encrypted archive is written through
//! [`seal::Sealed`] as it is produced (no plaintext copy on disk, the dump
//! spool included: see [`spool`]) and read through [`open::open_archive`],
//! which streams the plaintext into the ordinary reader.
//!
//! Keys are secrets: [`Secret`] never prints its value, option structs that
//! hold one never show it in `Debug`, and no error message repeats a key a
//! caller gave us (a secret key pasted where a public one belongs must not
//! end up in a log).

pub mod keys;
pub mod open;
pub mod seal;
pub mod spool;

use age::secrecy::{ExposeSecret, SecretString};
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::fmt;

/// The first line of every (binary) age file.
pub const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";
/// File name suffix of an encrypted archive.
pub const AGE_SUFFIX: &str = ".age";

/// A passphrase or an identity string. `Debug` shows no part of it; the
/// memory is zeroised when it is dropped (`secrecy`).
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(SecretString::from(value.into()))
    }
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
    pub fn to_secret_string(&self) -> SecretString {
        SecretString::from(self.expose().to_string())
    }
}

impl Clone for Secret {
    fn clone(&self) -> Self {
        Secret(self.to_secret_string())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_string(SecretsVisitor).and_then(|mut list| {
            if list.len() == 1 {
                Ok(list.remove(0))
            } else {
                Err(de::Error::custom("expected a string"))
            }
        })
    }
}

/// `identities`: a list of identity strings, or one string (one identity
/// or a key file's text). Hand-made because serde's own "invalid type"
/// errors quote the string they refused, and this one is a secret.
pub fn secret_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Secret>, D::Error> {
    d.deserialize_any(SecretsVisitor)
}

struct SecretsVisitor;

impl<'de> Visitor<'de> for SecretsVisitor {
    type Value = Vec<Secret>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or a list of strings")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(vec![Secret::new(v)])
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(vec![Secret::new(v)])
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut list = Vec::new();
        while let Some(one) = seq.next_element::<Secret>()? {
            list.push(one);
        }
        Ok(list)
    }
}
