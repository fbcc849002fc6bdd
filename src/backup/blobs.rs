//! The blob files of a backup: each one hashed (SHA-256 for the archive,
//! MD5 against ActiveStorage's checksum) before it is packed.

use super::snapshot::BlobRow;
use super::BackupOptions;
use crate::archive::{self, BlobEntry, ManifestError};
use crate::error::Result;
use crate::progress::{Event, Progress, Step};
use md5::Md5;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Hash every blob file and check it against ActiveStorage's checksum; a
/// file that fails becomes a manifest error instead.
/// A blob's manifest entry and its file.
pub(super) type HashedBlob = (BlobEntry, PathBuf);

pub(super) fn hash_blobs(
    options: &BackupOptions,
    blob_rows: &[BlobRow],
    progress: &mut dyn Progress,
) -> Result<(Vec<HashedBlob>, Vec<ManifestError>)> {
    let mut errors = Vec::new();
    let mut blobs: Vec<HashedBlob> = Vec::new();
    let Some(root) = &options.storage_root else {
        return Ok((blobs, errors));
    };
    let total = blob_rows.len() as u64;
    for (done, row) in blob_rows.iter().enumerate() {
        progress.check_interrupt()?;
        match hash_blob(root, row) {
            Ok(found) => blobs.push(found),
            Err(problem) => errors.push(problem),
        }
        if (done as u64 + 1) % 100 == 0 || done as u64 + 1 == total {
            progress.emit(
                Event::new(Step::BlobProgress)
                    .with("processed", done as u64 + 1)
                    .with("total", total),
            )?;
        }
    }
    Ok((blobs, errors))
}

/// Hash one blob's file; a missing or unreadable file becomes a manifest
/// error (the backup still completes, as the app's job always did).
fn hash_blob(root: &Path, row: &BlobRow) -> std::result::Result<HashedBlob, ManifestError> {
    let problem = |kind: &str, message: String| ManifestError {
        kind: kind.into(),
        table: Some("active_storage_blobs".into()),
        key: Some(row.key.clone()),
        message,
    };
    archive::check_blob_key(&row.key)
        .map_err(|e| problem("invalid_blob_key", e.message().to_string()))?;
    let path = archive::disk_path(root, &row.key);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            return Err(problem(
                "missing_blob_file",
                format!("{}: {e}", path.display()),
            ))
        }
    };
    let mut sha = Sha256::new();
    let mut md5 = Md5::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| problem("unreadable_blob_file", e.to_string()))?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        md5.update(&buf[..n]);
        size += n as u64;
    }
    use base64::Engine;
    let md5_b64 = base64::engine::general_purpose::STANDARD.encode(md5.finalize());
    if let Some(expected) = &row.checksum {
        if expected != &md5_b64 {
            return Err(problem(
                "blob_checksum_mismatch",
                format!(
                    "file {} has MD5 {md5_b64}, the blob row says {expected}",
                    path.display()
                ),
            ));
        }
    }
    if let Some(expected) = row.byte_size {
        if expected != size as i64 {
            return Err(problem(
                "blob_size_mismatch",
                format!("file has {size} bytes, the blob row says {expected}"),
            ));
        }
    }
    Ok((
        BlobEntry {
            key: row.key.clone(),
            size,
            checksum: row.checksum.clone(),
            sha256: archive::hex(&sha.finalize()),
        },
        path,
    ))
}
