//! Blob files of a restore: keys kept where possible and renamed when taken,
//! files verified by the extract and written with exclusive create before
//! the commit, removed again if the transaction does not commit, and
//! journaled first so that a run killed before the end is undone by the
//! next ([`super::storage_journal`]). Never through a link below the
//! storage root ([`super::disk`]).

use super::disk::{self, BlobPath};
use super::stage::Staged;
use super::storage_journal::StorageJournal;
use super::{Context, RestoreReport};
use crate::archive;
use crate::error::{Error, Result, ResultExt};
use crate::progress::Progress;
use rusqlite::Connection;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Files and directories this run created in the storage root, removed
/// again if the transaction does not commit, and the journal that lets the
/// next run remove them if this one dies first.
#[derive(Default)]
pub(super) struct WrittenFiles {
    root: PathBuf,
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
    /// remove after the commit, before any of them is touched. The purged
    /// files' paths are checked here, while a link below the root can
    /// still refuse the restore (after the commit it could only be
    /// skipped).
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
        for key in purged.iter().filter(|k| archive::check_blob_key(k).is_ok()) {
            disk::check(storage_root, key)?;
        }
        self.root = storage_root.to_path_buf();
        self.journal = StorageJournal::open(conn, storage_root, written, purged)?;
        Ok(())
    }

    /// The transaction did not commit: remove what this run wrote, where
    /// no link has taken the place of a folder meanwhile.
    pub fn remove_all(&mut self) {
        for f in self.files.drain(..).rev() {
            if f.parent()
                .is_some_and(|d| disk::real_dirs_below(&self.root, d))
            {
                let _ = std::fs::remove_file(f);
            }
        }
        for d in self.dirs.drain(..).rev() {
            if disk::real_dirs_below(&self.root, &d) {
                let _ = std::fs::remove_dir(d);
            }
        }
        self.finish();
    }

    /// Committed, and the purged blobs' files removed: nothing to undo.
    pub fn finish(&mut self) {
        if let Some(journal) = self.journal.take() {
            journal.close();
        }
    }

    /// Create the Disk service's `ab/cd/` folders, remembering new ones;
    /// one that is there must be a real folder.
    fn make_dirs(&mut self, dest: &BlobPath) -> Result<()> {
        for d in &dest.dirs {
            if !disk::is_real_dir(d)? {
                // Not create_dir_all: mkdir fails on a link made meanwhile
                // instead of following it.
                std::fs::create_dir(d).at(format!("creating {}", d.display()))?;
                self.dirs.push(d.clone());
            }
        }
        Ok(())
    }

    /// Copy a verified blob into place; never overwrite (exclusive create,
    /// which does not follow a link in the file's place either).
    fn write_blob(&mut self, source: &Path, dest: &BlobPath) -> Result<()> {
        if self.rehearsal {
            return Ok(());
        }
        self.make_dirs(dest)?;
        let file = &dest.file;
        let mut input = std::fs::File::open(source).at("reading unpacked blob")?;
        let mut out = std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(file)
            .at(format!("writing {}", file.display()))?;
        self.files.push(file.clone());
        std::io::copy(&mut input, &mut out).at(format!("writing {}", file.display()))?;
        out.sync_all().at(format!("syncing {}", file.display()))?;
        Ok(())
    }
}

/// After the commit: remove the files of purged blobs nobody uses any
/// more. A path a link has made unsafe since the check before the commit
/// is skipped (nothing can fail now). Returns how many were removed.
pub(super) fn remove_purged(root: &Path, keys: &[String]) -> u64 {
    let mut removed = 0;
    for key in keys.iter().filter(|k| archive::check_blob_key(k).is_ok()) {
        let gone =
            disk::check(root, key).is_ok_and(|p| p.exists && std::fs::remove_file(&p.file).is_ok());
        removed += u64::from(gone);
    }
    removed
}

/// Inside the write transaction, after the purge: decide each archive
/// blob's key (its own, or a fresh one when another blob holds it), journal
/// the storage changes, then write the files. Returns old key → new key for
/// the renamed ones; keys whose file is reused are taken out of
/// `purged_keys`. Every path is checked before the first file is written.
pub(super) fn place(
    conn: &Connection,
    ctx: &Context<'_>,
    staged: &Staged,
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
    let in_place = staged.blob_row_in_place_sql();
    // Archive key → where its file is written.
    let mut to_write: Vec<(&str, BlobPath)> = Vec::new();
    for blob in &ctx.manifest.blobs {
        progress.check_interrupt()?;
        // A partial restore writes the files of its own blob rows only.
        if !super::selection::carries_blob(conn, ctx, staged, &blob.key)? {
            continue;
        }
        let held = key_taken(conn, &blob.key)?;
        // The key's holder is the archive's own row (same primary key,
        // whatever its type): the key stays.
        let ours = held
            && !ctx.options.remap
            && match &in_place {
                Some(sql) => conn
                    .prepare_cached(sql)?
                    .query_row([&blob.key], |r| r.get::<_, bool>(0))?,
                None => false,
            };
        let mut key = blob.key.clone();
        // A copy with new ids has files of its own, under new keys.
        if (held && !ours) || ctx.options.new_ids {
            key = fresh_blob_key(conn, root, &to_write)?;
            renamed.insert(blob.key.clone(), key.clone());
        }
        if let Some(root) = root {
            let dest = disk::check(root, &key)?;
            if !dest.exists {
                to_write.push((&blob.key, dest));
            } else if file_sha256(&dest.file).as_deref() == Some(blob.sha256.as_str()) {
                report.blobs.reused += 1;
                purged_keys.remove(&key);
            } else {
                let fresh = fresh_blob_key(conn, Some(root), &to_write)?;
                renamed.insert(blob.key.clone(), fresh.clone());
                to_write.push((&blob.key, disk::check(root, &fresh)?));
            }
        }
    }
    report.blobs.renamed = renamed.len() as u64;
    if let Some(root) = root {
        let keys: Vec<String> = to_write.iter().map(|(_, p)| file_key(p)).collect();
        files.journal(conn, root, &keys, purged_keys)?;
        for (archive_key, dest) in &to_write {
            progress.check_interrupt()?;
            files.write_blob(&blob_files[*archive_key], dest)?;
            report.blobs.written += 1;
        }
    }
    Ok(renamed)
}

/// Some blob row of the database has `key`.
fn key_taken(conn: &Connection, key: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM main.active_storage_blobs WHERE key = ?1)")?
        .query_row([key], |r| r.get(0))?)
}

/// The key a checked path was made for: its file name.
fn file_key(path: &BlobPath) -> String {
    path.file
        .file_name()
        .and_then(|n| n.to_str())
        .expect("blob keys are ASCII")
        .to_string()
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
    to_write: &[(&str, BlobPath)],
) -> Result<String> {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    for _ in 0..100 {
        let mut bytes = [0u8; 28];
        getrandom(&mut bytes)?;
        let key: String = bytes
            .iter()
            .map(|b| ALPHABET[(*b as usize) % 36] as char)
            .collect();
        // A path through a link is no free place either.
        let free_on_disk = root.is_none_or(|r| disk::check(r, &key).is_ok_and(|p| !p.exists));
        let planned = to_write.iter().any(|(_, p)| file_key(p) == key);
        if !key_taken(conn, &key)? && free_on_disk && !planned {
            return Ok(key);
        }
    }
    Err(Error::internal("could not find a free blob key"))
}

pub(super) fn getrandom(buf: &mut [u8]) -> Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(|e| Error::io(format!("reading /dev/urandom: {e}")))
}
