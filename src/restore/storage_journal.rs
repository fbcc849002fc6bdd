//! The storage journal: SQLite rolls back the rows of a restore that was
//! killed (SIGKILL, power loss) from its own journal, but not the blob
//! files the restore had written into the storage root, nor the removal of
//! purged blobs' files it had not done yet. Each restore that touches the
//! storage root therefore first writes, next to the database, a journal
//! naming every key whose file it will write or remove, and deletes it when
//! it is done. The next restore of that database undoes what a dead run
//! left, before it changes anything itself.
//!
//! One rule covers every point of death: a listed key whose file is there
//! but that no `active_storage_blobs` row names is removed. Before the
//! commit that is a file the dead run wrote (the rows naming it were rolled
//! back); after it, the file of a blob the run purged. A key some row still
//! names is left alone: a committed restore's file, or a purged blob whose
//! purge was rolled back.
//!
//! Recovery runs under the write lock, so no other restore is between its
//! first file and its commit. One that is past its commit and still
//! removing purged files is undone by the same rule, which then only does
//! its cleanup for it.

use super::disk;
use crate::archive;
use crate::error::{Error, Result, ResultExt};
use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What one restore is about to change in a storage root.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    storage_root: PathBuf,
    /// Keys whose files the run writes or, after its commit, removes.
    keys: Vec<String>,
    /// The Disk service's `ab/` and `ab/cd/` folders the run creates.
    dirs: Vec<PathBuf>,
}

/// A journal this run wrote; deleted by [`StorageJournal::close`].
#[derive(Debug)]
pub(super) struct StorageJournal {
    path: PathBuf,
}

impl StorageJournal {
    /// Write the journal for the files of `written` and `purged` keys, and
    /// make it durable before the first of them is touched. None when there
    /// is nothing to journal or the database has no file (in memory).
    pub fn open(
        conn: &Connection,
        storage_root: &Path,
        written: &[String],
        purged: &BTreeSet<String>,
    ) -> Result<Option<StorageJournal>> {
        if written.is_empty() && purged.is_empty() {
            return Ok(None);
        }
        let Some((dir, prefix)) = journal_prefix(conn) else {
            return Ok(None);
        };
        let mut dirs = BTreeSet::new();
        for key in written {
            let file = archive::disk_path(storage_root, key);
            for d in file.ancestors().skip(1).take(2) {
                if !disk::is_real_dir(d)? {
                    dirs.insert(d.to_path_buf());
                }
            }
        }
        let entry = Entry {
            storage_root: storage_root.to_path_buf(),
            keys: written.iter().chain(purged).cloned().collect(),
            dirs: dirs.into_iter().collect(),
        };
        let unique = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let path = dir.join(format!("{prefix}{unique}"));
        let context = || format!("writing the storage journal {}", path.display());
        let mut file = std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .at(context())?;
        // From here on a failure must not leave the journal behind.
        let journal = StorageJournal { path: path.clone() };
        let written = serde_json::to_vec(&entry)
            .map_err(|e| Error::internal(e.to_string()))
            .and_then(|json| file.write_all(&json).at(context()))
            .and_then(|()| file.sync_all().at(context()))
            .and_then(|()| crate::work_dir::sync_dir(&dir).at(context()));
        match written {
            Ok(()) => Ok(Some(journal)),
            Err(e) => {
                journal.close();
                Err(e)
            }
        }
    }

    /// The run is over: committed and cleaned up, or rolled back with its
    /// files removed.
    pub fn close(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Undo what restores that died left in storage, by every journal found
/// next to the database. Returns how many files were removed. Call it
/// inside the write transaction, before this run changes anything.
pub(super) fn recover(conn: &Connection) -> Result<u64> {
    let Some((dir, prefix)) = journal_prefix(conn) else {
        return Ok(0);
    };
    let listing = match std::fs::read_dir(&dir) {
        Ok(listing) => listing,
        Err(e) => return Err(Error::io(format!("listing {}: {e}", dir.display()))),
    };
    let mut journals: Vec<PathBuf> = listing
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .map(|e| e.path())
        .collect();
    journals.sort();
    let blob_table = blob_table_exists(conn)?;
    let mut removed = 0;
    for journal in journals {
        let text = std::fs::read(&journal).at(format!("reading {}", journal.display()))?;
        // A journal that does not parse was cut short while being written:
        // its run wrote its first file only after the journal was whole.
        if let Ok(entry) = serde_json::from_slice::<Entry>(&text) {
            removed += undo(conn, &entry, blob_table)?;
        }
        std::fs::remove_file(&journal).at(format!("removing {}", journal.display()))?;
    }
    Ok(removed)
}

/// Remove the files of `entry`'s keys that no row names, and the folders
/// it made once empty; never through a link (an Io error naming it, and
/// the journal stays for a run that finds the storage root repaired).
fn undo(conn: &Connection, entry: &Entry, blob_table: bool) -> Result<u64> {
    let root = &entry.storage_root;
    let mut removed = 0;
    for key in &entry.keys {
        // The journal is ours, but it lies in a folder others can write.
        if archive::check_blob_key(key).is_err() {
            continue;
        }
        let named = blob_table
            && conn
                .query_row(
                    "SELECT 1 FROM main.active_storage_blobs WHERE key = ?1",
                    [key],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
        if named {
            continue;
        }
        let file = disk::check(root, key)?;
        if !file.exists {
            continue;
        }
        match std::fs::remove_file(&file.file) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("removing {}: {e}", file.file.display()))),
        }
    }
    // Deepest first; a folder that holds anything stays. Only the Disk
    // service's `ab/` and `ab/cd/` folders, real ones.
    for dir in entry.dirs.iter().rev() {
        let depth = dir.strip_prefix(root).map_or(0, |d| d.components().count());
        if (1..=2).contains(&depth) && disk::real_dirs_below(root, dir) {
            let _ = std::fs::remove_dir(dir);
        }
    }
    Ok(removed)
}

fn blob_table_exists(conn: &Connection) -> Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'active_storage_blobs'",
            [],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// The database's folder and the name prefix of its journals:
/// `app.sqlite3-tenant_kit-journal-`, beside SQLite's own `-journal` and
/// `-wal` (which Rails' default .gitignore already covers).
fn journal_prefix(conn: &Connection) -> Option<(PathBuf, String)> {
    let db = Path::new(conn.path().filter(|p| !p.is_empty())?);
    let dir = db.parent()?.to_path_buf();
    let name = db.file_name()?.to_str()?;
    Some((dir, format!("{name}-tenant_kit-journal-")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(root: &Path, key: &str) -> PathBuf {
        archive::disk_path(root, key)
    }

    fn put(root: &Path, key: &str) {
        let path = file(root, key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, key).unwrap();
    }

    /// After a commit, before the purged files went: the journal's rule
    /// keeps what rows name and removes the rest, whatever the case.
    #[test]
    fn a_dead_runs_journal_keeps_named_files_and_removes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.sqlite3");
        let root = dir.path().join("storage");
        std::fs::create_dir(&root).unwrap();
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE active_storage_blobs(id INTEGER PRIMARY KEY, key TEXT NOT NULL)",
        )
        .unwrap();
        let (committed, purged, outside) = ("writtenkey001", "purgedkey0001", "othersfile001");
        put(&root, purged);
        put(&root, outside);
        let journal = StorageJournal::open(
            &conn,
            &root,
            &[committed.to_string()],
            &BTreeSet::from([purged.to_string()]),
        )
        .unwrap()
        .expect("a file database gets a journal");
        put(&root, committed);
        conn.execute(
            "INSERT INTO active_storage_blobs(key) VALUES (?1)",
            [committed],
        )
        .unwrap();
        // The run dies here: its journal stays, and so does another
        // journal that was cut short while being written.
        std::mem::forget(journal);
        let torn = dir.path().join("app.sqlite3-tenant_kit-journal-torn");
        std::fs::write(&torn, b"{\"storage_root\": \"/").unwrap();

        assert_eq!(recover(&conn).unwrap(), 1);
        assert!(file(&root, committed).exists(), "a row names it");
        assert!(!file(&root, purged).exists(), "no row names it");
        // As after a run that lived: a purged file's folder stays, as
        // ActiveStorage's Disk service leaves it.
        assert!(file(&root, purged).parent().unwrap().exists());
        assert!(file(&root, outside).exists(), "not in the journal");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains("journal"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        // Nothing left to undo.
        assert_eq!(recover(&conn).unwrap(), 0);
    }

    #[test]
    fn nothing_to_change_writes_no_journal() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("app.sqlite3")).unwrap();
        let none = StorageJournal::open(&conn, dir.path(), &[], &BTreeSet::new()).unwrap();
        assert!(none.is_none());
    }
}
