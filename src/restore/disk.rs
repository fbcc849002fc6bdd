//! The Disk service's layout below the storage root (`ab/cd/abcd…`), never
//! through a link: a link planted below the root (`storage/ab -> /etc`)
//! would otherwise let a restore write or remove files anywhere the
//! process may. The root itself may be a link (a deploy's shared folder);
//! below it, every folder must be a real one and every blob file a
//! regular file, or the restore fails with an Io error naming the path.
//!
//! The checks look before they act, so a link made between the look and
//! the act is not caught; writes still use exclusive create, which never
//! follows a link in the file's own place.

use crate::archive;
use crate::error::{Error, Result};
use std::fs::Metadata;
use std::io::ErrorKind as IoKind;
use std::path::{Path, PathBuf};

/// A blob's file below the root, after [`check`].
pub(super) struct BlobPath {
    pub file: PathBuf,
    /// The folders from the root down (`ab/`, `ab/cd/`).
    pub dirs: [PathBuf; 2],
    /// The file is there, a regular file.
    pub exists: bool,
}

/// Where the Disk service keeps `key`, with every part that exists below
/// the root checked: folders real folders, the file a regular file.
pub(super) fn check(root: &Path, key: &str) -> Result<BlobPath> {
    let file = archive::disk_path(root, key);
    let inner = file
        .parent()
        .expect("disk paths have parents")
        .to_path_buf();
    let outer = inner
        .parent()
        .expect("disk paths have parents")
        .to_path_buf();
    let mut exists = false;
    // A missing folder holds nothing: what would be below it is missing too.
    if is_real_dir(&outer)? && is_real_dir(&inner)? {
        exists = match lstat(&file)? {
            None => false,
            Some(meta) if meta.file_type().is_file() => true,
            Some(meta) => return Err(refused(&file, &meta, "a blob file")),
        };
    }
    Ok(BlobPath {
        file,
        dirs: [outer, inner],
        exists,
    })
}

/// Whether `dir` is there; an Io error when it is there but is not a real
/// folder.
pub(super) fn is_real_dir(dir: &Path) -> Result<bool> {
    match lstat(dir)? {
        None => Ok(false),
        Some(meta) if meta.is_dir() => Ok(true),
        Some(meta) => Err(refused(dir, &meta, "a folder")),
    }
}

/// `dir` and every folder between it and `root` are there and real
/// folders (`root` itself may be a link).
pub(super) fn real_dirs_below(root: &Path, dir: &Path) -> bool {
    dir.starts_with(root)
        && dir != root
        && dir
            .ancestors()
            .take_while(|a| *a != root)
            .all(|a| is_real_dir(a).unwrap_or(false))
}

/// The entry itself, never what a link points at; None when missing.
fn lstat(path: &Path) -> Result<Option<Metadata>> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(e) if e.kind() == IoKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("{}: {e}", path.display()))),
    }
}

fn refused(path: &Path, meta: &Metadata, expected: &str) -> Error {
    let found = if meta.file_type().is_symlink() {
        "a symbolic link"
    } else if meta.is_dir() {
        "a folder"
    } else if meta.is_file() {
        "a file"
    } else {
        "a special file"
    };
    Error::io(format!(
        "{} is {found}, not {expected}: the storage root's files are never read, written or removed through it",
        path.display()
    ))
}
