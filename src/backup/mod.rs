//! Backup of one tenant: rows from one read snapshot, streamed as JSON lines
//! into a temporary `dump.jsonl`, blob files hashed, then packed with the
//! manifest into `tenant_<id>_<UTC stamp>.tar.gz` (mode 0600), which appears
//! under its final name only when complete. Failure or cancel leaves nothing.

use crate::archive::write::{write_archive, BlobFile, DumpPiece};
use crate::archive::{
    self, BlobEntry, ColumnInfo, Manifest, ManifestError, SkippedTable, SourceInfo, TenantInfo,
};
use crate::clock::UtcTime;
use crate::crypt::keys::Seal;
use crate::crypt::spool::Spool;
use crate::crypt::Secret;
use crate::db;
use crate::error::{Error, Result};
use crate::progress::{Event, LockState, Progress, Step};
use crate::TenantId;
use snapshot::{BlobRow, Snapshot};

mod filtered_scan;
mod shared_rows;
mod snapshot;
use md5::Md5;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

crate::scope::scope_config! {
    #[derive(Debug, Clone, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct BackupOptions {
        pub database: PathBuf,
        pub tenant_id: TenantId,
        pub output_dir: PathBuf,
        #[serde(default)]
        pub storage_root: Option<PathBuf>,
        @scope_config,
        /// gzip level 0–9. Default 2: on the benchmark data (zlib-rs) level 2
        /// is about three times as fast as level 6 for an archive under 20%
        /// larger, and keeps pace with reading the rows.
        #[serde(default = "default_level")]
        pub compression_level: u32,
        #[serde(default = "crate::db::default_busy_timeout_ms")]
        pub busy_timeout_ms: u64,
        /// age public keys (`age1…`) to encrypt the archive to (see crypt/).
        #[serde(default)]
        pub recipients: Vec<String>,
        /// Encrypt the archive with this passphrase instead (age's scrypt).
        #[serde(default)]
        pub passphrase: Option<Secret>,
    }
}

fn default_level() -> u32 {
    2
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub path: PathBuf,
    /// Table name → rows written, the tenant's own (owned and derived).
    pub tables: BTreeMap<String, u64>,
    /// Shared reference rows carried (users, tags): table → rows written.
    pub shared: BTreeMap<String, u64>,
    pub rows: u64,
    /// Blob files packed.
    pub blobs: u64,
    pub blob_bytes: u64,
    /// Size of the archive file.
    pub bytes: u64,
    /// SHA-256 of the archive file.
    pub sha256: String,
    pub dump_sha256: String,
    pub errors: Vec<ManifestError>,
    pub skipped: Vec<SkippedTable>,
    /// References taken from naming alone (see `Manifest::guesses`).
    pub guesses: Vec<crate::archive::Guess>,
    /// Table → rows of the tenant left out because another tenant's rows
    /// reach them too (see `TableEntry::left_out_cross_tenant`); tables with none
    /// are not listed.
    pub left_out_cross_tenant: BTreeMap<String, u64>,
    pub journal_mode: String,
    /// How long our read snapshot was open. In rollback-journal mode the
    /// app's writers cannot commit during that time.
    pub snapshot_ms: u64,
    pub duration_ms: u64,
    /// Whether the archive is age-encrypted (`.tar.gz.age`).
    pub encrypted: bool,
    /// The public keys it is encrypted to (empty for a passphrase).
    pub recipients: Vec<String>,
}

pub fn backup(options: &BackupOptions, progress: &mut dyn Progress) -> Result<BackupReport> {
    let target = crate::job::Target {
        database: &options.database,
        busy_timeout_ms: options.busy_timeout_ms,
        tenant_column: &options.tenant_column,
        tenant_id: &options.tenant_id,
    };
    crate::job::run(target, progress, |tenant_id, progress| {
        let options = BackupOptions {
            tenant_id,
            ..options.clone()
        };
        run(&options, progress)
    })
}

fn run(options: &BackupOptions, progress: &mut dyn Progress) -> Result<BackupReport> {
    let started = Instant::now();
    let created = UtcTime::now();
    check_options(options)?;
    let seal = Seal::from_options(&options.recipients, options.passphrase.as_ref())?;
    progress.emit(
        Event::new(Step::Start)
            .with("operation", "backup")
            .with(
                "tenant_id",
                serde_json::to_value(&options.tenant_id).unwrap_or_default(),
            )
            .with("database", options.database.display().to_string()),
    )?;

    // Everything we write goes to a private temp dir next to the archive;
    // dropping it (error, cancel, panic) removes every trace.
    // (A killed run's leftovers older than a day are removed first.)
    let work = crate::work_dir::create(&options.output_dir, crate::work_dir::BACKUP_PREFIX)
        .map_err(|e| {
            Error::io(format!(
                "output_dir {} is not writable: {e}",
                options.output_dir.display()
            ))
        })?;

    let conn = db::open_read_only(&options.database, options.busy_timeout_ms)?;
    let journal_mode = db::journal_mode(&conn)?;
    // A second connection computes the member sets while the first one
    // dumps (see snapshot.rs).
    let helper = snapshot::open_helper(options, &journal_mode);
    // The dump, deflate-compressed as it is written (see archive/deflate.rs).
    // Encrypted too when the archive will be (see crypt/spool.rs).
    let spool = Spool::new(work.path().join("dump.jsonl.deflate"), &seal);

    // ---- the read snapshot: as short as we can make it ----
    progress.emit(Event::lock(LockState::Read))?;
    let snapshot_started = Instant::now();
    conn.execute_batch("BEGIN")?;
    let snapshot = snapshot::read_snapshot(&conn, helper, options, &spool, progress);
    let snapshot_ms = snapshot_started.elapsed().as_millis() as u64;
    // A read transaction has nothing to commit; ending it frees the writers.
    let _ = conn.execute_batch("ROLLBACK");
    let released = progress.emit(Event::lock(LockState::None));
    let snapshot = snapshot.and_then(|s| released.map(|()| s));
    let Snapshot {
        schema,
        scope,
        tables,
        dump,
        deflated,
        blob_rows,
        parallel,
    } = snapshot?;
    drop(conn);
    progress.emit(
        Event::new(Step::Snapshot)
            .with("journal_mode", journal_mode.clone())
            .with("held_ms", snapshot_ms)
            .with("writers_blocked", journal_mode != "wal")
            .with("parallel", parallel),
    )?;

    // ---- blob files: hash and check against ActiveStorage's checksum ----
    let mut errors = Vec::new();
    let mut blobs: Vec<(BlobEntry, PathBuf)> = Vec::new();
    if let Some(root) = &options.storage_root {
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
    }

    let manifest = Manifest {
        format: archive::FORMAT_NAME.into(),
        format_version: archive::FORMAT_VERSION.into(),
        tool_version: crate::VERSION.into(),
        created_at: created.iso8601(),
        tenant: TenantInfo {
            id: options.tenant_id.clone(),
            column: options.tenant_column.clone(),
            table: scope.tenant_table().map(|t| t.name.clone()),
        },
        source: SourceInfo {
            sqlite_version: crate::sqlite_version(),
            schema_version: schema.migration_version.clone(),
            schema: schema
                .tables
                .iter()
                .filter(|t| t.skip.is_none())
                .map(|t| {
                    let cols = t
                        .columns
                        .iter()
                        .map(|c| ColumnInfo {
                            name: c.name.clone(),
                            decl_type: c.decl_type.clone(),
                            not_null: c.not_null,
                            primary_key: c.pk_position > 0,
                        })
                        .collect();
                    (t.name.clone(), cols)
                })
                .collect(),
        },
        tables,
        skipped: scope
            .skipped
            .iter()
            .map(|(name, reason)| SkippedTable {
                name: name.clone(),
                reason: reason.clone(),
            })
            .collect(),
        dump,
        blobs: blobs.iter().map(|(entry, _)| entry.clone()).collect(),
        errors: errors.clone(),
        guesses: scope.guesses.clone(),
    };

    // ---- pack ----
    let temp_archive = work.path().join("archive");
    let files: Vec<BlobFile<'_>> = blobs
        .iter()
        .map(|(entry, path)| BlobFile { entry, path })
        .collect();
    progress.emit(
        Event::new(Step::ArchiveProgress)
            .with("blobs", 0u64)
            .with("total", files.len() as u64),
    )?;
    let written = write_archive(
        &temp_archive,
        &seal,
        &manifest,
        DumpPiece {
            spool: &spool,
            deflated: &deflated,
        },
        &files,
        options.compression_level,
        (started_unix_secs()).max(0) as u64,
        progress,
    )?;
    progress.check_interrupt()?;
    let final_path = publish(
        &temp_archive,
        &options.output_dir,
        &options.tenant_id,
        &created,
        seal.is_encrypted(),
    )?;
    // Best effort: the archive is complete either way.
    let _ = crate::work_dir::sync_dir(&options.output_dir);
    drop(work);

    let report = BackupReport {
        path: final_path.clone(),
        tables: manifest
            .tables
            .iter()
            .filter(|t| !t.is_shared())
            .map(|t| (t.name.clone(), t.rows))
            .collect(),
        shared: manifest
            .tables
            .iter()
            .filter(|t| t.is_shared())
            .map(|t| (t.name.clone(), t.rows))
            .collect(),
        rows: manifest.total_rows(),
        blobs: manifest.blobs.len() as u64,
        blob_bytes: manifest.blobs.iter().map(|b| b.size).sum(),
        bytes: written.bytes,
        sha256: written.sha256.clone(),
        dump_sha256: manifest.dump.sha256.clone(),
        errors,
        skipped: manifest.skipped.clone(),
        guesses: manifest.guesses.clone(),
        left_out_cross_tenant: manifest
            .tables
            .iter()
            .filter(|t| t.left_out_cross_tenant > 0)
            .map(|t| (t.name.clone(), t.left_out_cross_tenant))
            .collect(),
        journal_mode,
        snapshot_ms,
        duration_ms: started.elapsed().as_millis() as u64,
        encrypted: seal.is_encrypted(),
        recipients: seal.recipients(),
    };
    // The archive is complete; a block that raises now still gets it.
    let event = Event::new(Step::ArchiveCreated)
        .with("path", final_path.display().to_string())
        .with("bytes", written.bytes)
        .with("sha256", written.sha256);
    let done = Event::new(Step::Done)
        .with("rows", report.rows)
        .with("blobs", report.blobs)
        .with("errors", report.errors.len() as u64)
        .with("duration_ms", report.duration_ms);
    if let Err(e) = progress.emit(event).and_then(|_| progress.emit(done)) {
        // Cancelled after the fact: honour it by removing the archive.
        let _ = std::fs::remove_file(&final_path);
        return Err(e);
    }
    Ok(report)
}

/// Give the finished archive its final name. A hard link never replaces an
/// existing file, so two backups in the same second cannot clobber each
/// other: the later one takes the next free second's name.
fn publish(
    temp: &Path,
    dir: &Path,
    tenant: &TenantId,
    created: &UtcTime,
    encrypted: bool,
) -> Result<PathBuf> {
    let base = created.unix_seconds();
    let suffix = if encrypted {
        crate::crypt::AGE_SUFFIX
    } else {
        ""
    };
    for bump in 0..120 {
        let stamp = UtcTime::from_unix_millis((base + bump) * 1000).compact();
        let name = format!("tenant_{}_{stamp}.tar.gz{suffix}", tenant.file_component());
        let path = dir.join(name);
        match std::fs::hard_link(temp, &path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(format!("cannot create {}: {e}", path.display()))),
        }
    }
    Err(Error::io(format!(
        "no free archive name in {} for the next two minutes",
        dir.display()
    )))
}

fn started_unix_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn check_options(options: &BackupOptions) -> Result<()> {
    match std::fs::metadata(&options.output_dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::argument(format!(
                "output_dir {} is not a directory",
                options.output_dir.display()
            )))
        }
        Err(_) => {
            return Err(Error::argument(format!(
                "output_dir {} does not exist",
                options.output_dir.display()
            )))
        }
    }
    if let Some(root) = &options.storage_root {
        if !root.is_dir() {
            return Err(Error::argument(format!(
                "storage_root {} is not a directory",
                root.display()
            )));
        }
    }
    if options.compression_level > 9 {
        return Err(Error::argument("compression_level must be between 0 and 9"));
    }
    if let TenantId::Text(s) = &options.tenant_id {
        if s.is_empty() {
            return Err(Error::argument("tenant_id must not be empty"));
        }
    }
    Ok(())
}

/// Hash one blob's file; a missing or unreadable file becomes a manifest
/// error (the backup still completes, as the app's job always did).
fn hash_blob(
    root: &Path,
    row: &BlobRow,
) -> std::result::Result<(BlobEntry, PathBuf), ManifestError> {
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
