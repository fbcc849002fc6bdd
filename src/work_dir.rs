//! Private scratch directories: a backup's next to its archive, a restore's
//! or a verify's in `tmp_dir:`. They hold customer data (the dump, blob
//! files), so they are created owner-only and removed when dropped. A
//! process killed outright (SIGKILL, a power cut) cannot remove its own:
//! the next run in the same place removes those older than a day, which no
//! live run can be.

use std::path::Path;
use std::time::{Duration, SystemTime};

pub const BACKUP_PREFIX: &str = ".tenant_kit-backup-";
pub const RESTORE_PREFIX: &str = ".tenant_kit-restore-";

/// Leftovers older than this are another, dead, run's.
pub const STALE_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// A new private dir `<parent>/<prefix><random>`, after removing that
/// prefix's stale leftovers from `parent`.
pub fn create(parent: &Path, prefix: &str) -> std::io::Result<tempfile::TempDir> {
    remove_stale(parent, prefix, STALE_AFTER);
    tempfile::Builder::new()
        .prefix(prefix)
        .permissions(private_permissions())
        .tempdir_in(parent)
}

/// Remove the directories in `parent` named `<prefix>…` and last modified
/// more than `older_than` ago; returns how many. Only real directories with
/// our prefix are touched (never a file, never through a link), and a
/// failure is no error: the next run tries again.
pub fn remove_stale(parent: &Path, prefix: &str, older_than: Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_str().is_some_and(|n| n.starts_with(prefix)) {
            continue;
        }
        // `DirEntry::metadata` does not follow a link.
        let Ok(meta) = entry.metadata() else { continue };
        let stale = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age > older_than);
        if meta.is_dir() && stale && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Owner only.
pub(crate) fn private_permissions() -> std::fs::Permissions {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::Permissions::from_mode(0o700)
    }
    #[cfg(not(unix))]
    {
        std::fs::metadata(".")
            .map(|m| m.permissions())
            .expect("current dir is readable")
    }
}

/// Make a rename or a new file in `dir` durable (its entry, not its data).
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{File, FileTimes};

    fn age(path: &Path, by: Duration) {
        let then = SystemTime::now() - by;
        File::open(path)
            .unwrap()
            .set_times(FileTimes::new().set_modified(then))
            .unwrap();
    }

    #[test]
    fn only_our_old_directories_are_removed() {
        let parent = tempfile::tempdir().unwrap();
        let p = parent.path();
        let two_days = Duration::from_secs(2 * 24 * 60 * 60);
        let old = p.join(format!("{BACKUP_PREFIX}old"));
        std::fs::create_dir_all(old.join("blobs")).unwrap();
        std::fs::write(old.join("blobs/x"), b"data").unwrap();
        age(&old, two_days);
        let fresh = p.join(format!("{BACKUP_PREFIX}fresh"));
        std::fs::create_dir(&fresh).unwrap();
        let other_prefix = p.join(format!("{RESTORE_PREFIX}old"));
        std::fs::create_dir(&other_prefix).unwrap();
        age(&other_prefix, two_days);
        let old_file = p.join(format!("{BACKUP_PREFIX}file"));
        std::fs::write(&old_file, b"not a dir").unwrap();
        age(&old_file, two_days);
        // A link with our name to an old directory elsewhere: neither the
        // link nor its target goes.
        let elsewhere = tempfile::tempdir().unwrap();
        age(elsewhere.path(), two_days);
        let link = p.join(format!("{BACKUP_PREFIX}link"));
        std::os::unix::fs::symlink(elsewhere.path(), &link).unwrap();

        assert_eq!(remove_stale(p, BACKUP_PREFIX, STALE_AFTER), 1);
        assert!(!old.exists());
        assert!(fresh.is_dir());
        assert!(other_prefix.is_dir());
        assert!(old_file.is_file());
        assert!(link.symlink_metadata().is_ok());
        assert!(elsewhere.path().is_dir());

        let made = create(p, BACKUP_PREFIX).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = made.path().metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
