//! Blob files of a restore: keys kept where possible and renamed when taken,
//! files verified by the extract and written with exclusive create before
//! the commit, removed again if the transaction does not commit, and
//! journaled first so that a run killed before the end is undone by the
//! next ([`super::storage_journal`]).

use super::storage_journal::StorageJournal;
use super::{Context, RestoreReport};
use crate::archive;
use crate::error::{Error, Result, ResultExt};
use crate::progress::Progress;
use rusqlite::{Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Files and directories this run created in the storage root, removed
/// again if the transaction does not commit, and the journal that lets the
/// next run remove them if this one dies first.
#[derive(Default)]
pub(super) struct WrittenFiles {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    journal: Option<StorageJournal>,
    /// A dry run's rehearsal: decide keys as a restore would, but journal
    /// and write nothing.
    rehearsal: bool,
}

impl WrittenFiles {
    /// For a rehearsal: every write a no-op.
    pub fn rehearsal() -> WrittenFiles {
        WrittenFiles {
            rehearsal: true,
            ..WrittenFiles::default()
        }
    }

    /// Journal the files about to be written and the purged blobs' files to
    /// remove after the commit, before any of them is touched.
    pub fn journal(
        &mut self,
        conn: &Connection,
        storage_root: &Path,
        written: &[String],
        purged: &BTreeSet<String>,
    ) -> Result<()> {
        if self.rehearsal {
            return Ok(());
        }
        debug_assert!(self.journal.is_none(), "one journal per run");
        self.journal = StorageJournal::open(conn, storage_root, written, purged)?;
        Ok(())
    }

    /// The transaction did not commit: remove what this run wrote.
    pub fn remove_all(&mut self) {
        for f in self.files.drain(..).rev() {
            let _ = std::fs::remove_file(f);
        }
        for d in self.dirs.drain(..).rev() {
            let _ = std::fs::remove_dir(d);
        }
        self.finish();
    }

    /// Committed, and the purged blobs' files removed: nothing to undo.
    pub fn finish(&mut self) {
        if let Some(journal) = self.journal.take() {
            journal.close();
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
        if self.rehearsal {
            return Ok(());
        }
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
/// blob's key (its own, or a fresh one when another blob holds it), journal
/// the storage changes, then write the files. Returns old key → new key for
/// the renamed ones; keys whose file is reused are taken out of
/// `purged_keys`.
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
    // Archive key → the key its file is written under.
    let mut to_write: Vec<(&str, String)> = Vec::new();
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
            key = fresh_blob_key(conn, root, &to_write)?;
            renamed.insert(blob.key.clone(), key.clone());
        }
        if let Some(root) = root {
            let dest = archive::disk_path(root, &key);
            if !dest.exists() {
                to_write.push((&blob.key, key));
            } else if file_sha256(&dest).as_deref() == Some(blob.sha256.as_str()) {
                report.blobs.reused += 1;
                purged_keys.remove(&key);
            } else {
                let fresh = fresh_blob_key(conn, Some(root), &to_write)?;
                renamed.insert(blob.key.clone(), fresh.clone());
                to_write.push((&blob.key, fresh));
            }
        }
    }
    report.blobs.renamed = renamed.len() as u64;
    if let Some(root) = root {
        let keys: Vec<String> = to_write.iter().map(|(_, key)| key.clone()).collect();
        files.journal(conn, root, &keys, purged_keys)?;
        for (archive_key, key) in &to_write {
            progress.check_interrupt()?;
            files.write_blob(&blob_files[*archive_key], &archive::disk_path(root, key))?;
            report.blobs.written += 1;
        }
    }
    Ok(renamed)
}

fn file_sha256(path: &Path) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).ok()?;
    Some(archive::hex(&h.finalize()))
}

/// A fresh ActiveStorage-style key: 28 characters of base36, held by no
/// blob row, no file and no file about to be written.
fn fresh_blob_key(
    conn: &Connection,
    root: Option<&Path>,
    to_write: &[(&str, String)],
) -> Result<String> {
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
        let planned = to_write.iter().any(|(_, k)| *k == key);
        if !taken && !on_disk && !planned {
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
