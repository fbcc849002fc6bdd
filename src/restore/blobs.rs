//! Blob files of a restore: keys kept where possible and renamed when taken,
//! files verified by the extract and written with exclusive create before
//! the commit, removed again if the transaction does not commit.

use super::{Context, RestoreReport};
use crate::archive;
use crate::error::{Error, Result, ResultExt};
use crate::progress::Progress;
use rusqlite::{Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Files and directories this run created in the storage root, removed
/// again if the transaction does not commit.
#[derive(Default)]
pub(super) struct WrittenFiles {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl WrittenFiles {
    pub fn remove_all(&mut self) {
        for f in self.files.drain(..).rev() {
            let _ = std::fs::remove_file(f);
        }
        for d in self.dirs.drain(..).rev() {
            let _ = std::fs::remove_dir(d);
        }
    }

    /// Create the Disk service's `ab/cd/` folders, remembering new ones.
    fn make_dirs(&mut self, dir: &Path) -> Result<()> {
        let mut missing = Vec::new();
        let mut cur = dir.to_path_buf();
        while !cur.exists() {
            missing.push(cur.clone());
            if !cur.pop() {
                break;
            }
        }
        for d in missing.into_iter().rev() {
            std::fs::create_dir(&d).at(format!("creating {}", d.display()))?;
            self.dirs.push(d);
        }
        Ok(())
    }

    /// Copy a verified blob into place; never overwrite (exclusive create).
    fn write_blob(&mut self, source: &Path, dest: &Path) -> Result<()> {
        self.make_dirs(dest.parent().expect("disk paths have parents"))?;
        let mut input = std::fs::File::open(source).at("reading unpacked blob")?;
        let mut out = std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(dest)
            .at(format!("writing {}", dest.display()))?;
        self.files.push(dest.to_path_buf());
        std::io::copy(&mut input, &mut out).at(format!("writing {}", dest.display()))?;
        out.sync_all().at(format!("syncing {}", dest.display()))?;
        Ok(())
    }
}

/// Inside the write transaction, after the purge: decide each archive
/// blob's key (its own, or a fresh one when another blob holds it) and
/// write its file. Returns old key → new key for the renamed ones; keys
/// whose file is reused are taken out of `purged_keys`.
pub(super) fn place(
    conn: &Connection,
    ctx: &Context<'_>,
    blob_ids: &BTreeMap<String, Option<i64>>,
    purged_keys: &mut BTreeSet<String>,
    report: &mut RestoreReport,
    files: &mut WrittenFiles,
    progress: &dyn Progress,
) -> Result<BTreeMap<String, String>> {
    let mut renamed: BTreeMap<String, String> = BTreeMap::new();
    let root = ctx.options.storage_root.as_deref();
    let blob_files = ctx
        .blob_files
        .ok_or_else(|| Error::internal("blob files placed before they were unpacked"))?;
    for blob in &ctx.manifest.blobs {
        progress.check_interrupt()?;
        let holder: Option<i64> = conn
            .query_row(
                "SELECT id FROM active_storage_blobs WHERE key = ?1",
                [&blob.key],
                |r| r.get(0),
            )
            .optional()?;
        let ours = holder.is_some()
            && holder == blob_ids.get(&blob.key).copied().flatten()
            && !ctx.options.remap;
        let mut key = blob.key.clone();
        if holder.is_some() && !ours {
            key = fresh_blob_key(conn, root)?;
            renamed.insert(blob.key.clone(), key.clone());
        }
        if let Some(root) = root {
            let dest = archive::disk_path(root, &key);
            let source = &blob_files[&blob.key];
            if dest.exists() {
                if file_sha256(&dest).as_deref() == Some(blob.sha256.as_str()) {
                    report.blobs.reused += 1;
                    purged_keys.remove(&key);
                } else {
                    let fresh = fresh_blob_key(conn, Some(root))?;
                    renamed.insert(blob.key.clone(), fresh.clone());
                    files.write_blob(source, &archive::disk_path(root, &fresh))?;
                    report.blobs.written += 1;
                }
            } else {
                files.write_blob(source, &dest)?;
                report.blobs.written += 1;
            }
        }
    }
    report.blobs.renamed = renamed.len() as u64;
    Ok(renamed)
}

fn file_sha256(path: &Path) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).ok()?;
    Some(archive::hex(&h.finalize()))
}

/// A fresh ActiveStorage-style key: 28 characters of base36.
fn fresh_blob_key(conn: &Connection, root: Option<&Path>) -> Result<String> {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    for _ in 0..100 {
        let mut bytes = [0u8; 28];
        getrandom(&mut bytes)?;
        let key: String = bytes
            .iter()
            .map(|b| ALPHABET[(*b as usize) % 36] as char)
            .collect();
        let taken: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM active_storage_blobs WHERE key = ?1)",
            [&key],
            |r| r.get(0),
        )?;
        let on_disk = root.is_some_and(|r| archive::disk_path(r, &key).exists());
        if !taken && !on_disk {
            return Ok(key);
        }
    }
    Err(Error::internal("could not find a free blob key"))
}

fn getrandom(buf: &mut [u8]) -> Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(|e| Error::io(format!("reading /dev/urandom: {e}")))
}
