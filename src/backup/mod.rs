//! Backup of one tenant: rows from one read snapshot, streamed as JSON lines
//! into a temporary `dump.jsonl`, blob files hashed, then packed with the
//! manifest into `tenant_<id>_<UTC stamp>.tar.gz` (mode 0600), which appears
//! under its final name only when complete. Failure or cancel leaves nothing.

use crate::archive::deflate::DeflatedDump;
use crate::archive::write::{write_archive, BlobFile, Contents, DumpPiece, Packing, Written};
use crate::archive::{
    self, ColumnInfo, Manifest, ManifestError, SkippedTable, SourceInfo, TenantInfo,
};
use crate::clock::UtcTime;
use crate::crypt::keys::Seal;
use crate::crypt::spool::Spool;
use crate::crypt::Secret;
use crate::db;
use crate::error::{Error, Result};
use crate::progress::{Event, LockState, Progress, Step};
use crate::schema::Schema;
use crate::TenantId;
use blobs::{hash_blobs, HashedBlob};
use snapshot::Snapshot;

mod blobs;
mod filtered_scan;
mod helper;
mod shared_rows;
mod snapshot;
mod table_dump;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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

/// One backup: the snapshot's rows into the compressed dump, the blob files
/// hashed, the manifest, the archive packed and published.
fn run(options: &BackupOptions, progress: &mut dyn Progress) -> Result<BackupReport> {
    let started = Instant::now();
    let created = UtcTime::now();
    check_options(options)?;
    let seal = Seal::from_options(&options.recipients, options.passphrase.as_ref())?;
    announce_start(options, progress)?;
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
    // The dump, deflate-compressed as it is written (see archive/deflate.rs).
    // Encrypted too when the archive will be (see crypt/spool.rs).
    let spool = Spool::new(work.path().join("dump.jsonl.deflate"), &seal);
    let taken = take_snapshot(options, &spool, progress)?;
    let (blobs, errors) = hash_blobs(options, &taken.snapshot.blob_rows, progress)?;
    let manifest = build_manifest(options, &created, &taken.snapshot, &blobs, errors);
    let temp_archive = work.path().join("archive");
    let written = pack(
        &temp_archive,
        &seal,
        &manifest,
        (&spool, &taken.snapshot.deflated, &blobs),
        options.compression_level,
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
        duration_ms: started.elapsed().as_millis() as u64,
        encrypted: seal.is_encrypted(),
        recipients: seal.recipients(),
        ..report_of(&manifest, final_path, &written, taken)
    };
    announce_done(report, written, progress)
}

/// The `start` event.
fn announce_start(options: &BackupOptions, progress: &mut dyn Progress) -> Result<()> {
    progress.emit(
        Event::new(Step::Start)
            .with("operation", "backup")
            .with(
                "tenant_id",
                serde_json::to_value(&options.tenant_id).unwrap_or_default(),
            )
            .with("database", options.database.display().to_string()),
    )
}

/// The snapshot's rows, and how long the snapshot held its read lock.
struct Taken {
    snapshot: Snapshot,
    journal_mode: String,
    snapshot_ms: u64,
}

/// Read everything from one read transaction, kept as short as we can make
/// it: in rollback-journal mode the app's writers wait for its end.
fn take_snapshot(
    options: &BackupOptions,
    spool: &Spool,
    progress: &mut dyn Progress,
) -> Result<Taken> {
    let conn = db::open_read_only(&options.database, options.busy_timeout_ms)?;
    let journal_mode = db::journal_mode(&conn)?;
    // A second connection computes the member sets while the first one
    // dumps (see snapshot.rs).
    let helper = snapshot::open_helper(options, &journal_mode);

    progress.emit(Event::lock(LockState::Read))?;
    let snapshot_started = Instant::now();
    conn.execute_batch("BEGIN")?;
    let snapshot = snapshot::read_snapshot(&conn, helper, options, spool, progress);
    let snapshot_ms = snapshot_started.elapsed().as_millis() as u64;
    // A read transaction has nothing to commit; ending it frees the writers.
    let _ = conn.execute_batch("ROLLBACK");
    let released = progress.emit(Event::lock(LockState::None));
    let snapshot = snapshot.and_then(|s| released.map(|()| s))?;
    drop(conn);
    progress.emit(
        Event::new(Step::Snapshot)
            .with("journal_mode", journal_mode.clone())
            .with("held_ms", snapshot_ms)
            .with("writers_blocked", journal_mode != "wal")
            .with("parallel", snapshot.parallel),
    )?;
    Ok(Taken {
        snapshot,
        journal_mode,
        snapshot_ms,
    })
}

fn build_manifest(
    options: &BackupOptions,
    created: &UtcTime,
    snapshot: &Snapshot,
    blobs: &[HashedBlob],
    errors: Vec<ManifestError>,
) -> Manifest {
    let Snapshot {
        schema,
        scope,
        tables,
        dump,
        ..
    } = snapshot;
    Manifest {
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
            schema: schema_columns(schema),
        },
        tables: tables.clone(),
        skipped: scope
            .skipped
            .iter()
            .map(|(name, reason)| SkippedTable {
                name: name.clone(),
                reason: reason.clone(),
            })
            .collect(),
        dump: dump.clone(),
        blobs: blobs.iter().map(|(entry, _)| entry.clone()).collect(),
        errors,
        guesses: scope.guesses.clone(),
    }
}

/// The columns of every table the backup did not skip, for the manifest.
fn schema_columns(schema: &Schema) -> BTreeMap<String, Vec<ColumnInfo>> {
    schema
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
        .collect()
}

/// Write the archive to `dest` in the work dir.
fn pack(
    dest: &Path,
    seal: &Seal,
    manifest: &Manifest,
    (spool, deflated, blobs): (&Spool, &DeflatedDump, &[HashedBlob]),
    level: u32,
    progress: &mut dyn Progress,
) -> Result<Written> {
    let files: Vec<BlobFile<'_>> = blobs
        .iter()
        .map(|(entry, path)| BlobFile { entry, path })
        .collect();
    progress.emit(
        Event::new(Step::ArchiveProgress)
            .with("blobs", 0u64)
            .with("total", files.len() as u64),
    )?;
    let contents = Contents {
        manifest,
        dump: DumpPiece { spool, deflated },
        blobs: &files,
    };
    let packing = Packing {
        level,
        mtime: (started_unix_secs()).max(0) as u64,
    };
    write_archive(dest, seal, contents, packing, progress)
}

/// The report, from the manifest and the archive as written (the timing
/// and encryption fields are the caller's).
fn report_of(manifest: &Manifest, path: PathBuf, written: &Written, taken: Taken) -> BackupReport {
    let tables_where = |shared: bool| -> BTreeMap<String, u64> {
        manifest
            .tables
            .iter()
            .filter(|t| t.is_shared() == shared)
            .map(|t| (t.name.clone(), t.rows))
            .collect()
    };
    BackupReport {
        path,
        tables: tables_where(false),
        shared: tables_where(true),
        rows: manifest.total_rows(),
        blobs: manifest.blobs.len() as u64,
        blob_bytes: manifest.blobs.iter().map(|b| b.size).sum(),
        bytes: written.bytes,
        sha256: written.sha256.clone(),
        dump_sha256: manifest.dump.sha256.clone(),
        errors: manifest.errors.clone(),
        skipped: manifest.skipped.clone(),
        guesses: manifest.guesses.clone(),
        left_out_cross_tenant: manifest
            .tables
            .iter()
            .filter(|t| t.left_out_cross_tenant > 0)
            .map(|t| (t.name.clone(), t.left_out_cross_tenant))
            .collect(),
        journal_mode: taken.journal_mode,
        snapshot_ms: taken.snapshot_ms,
        duration_ms: 0,
        encrypted: false,
        recipients: Vec::new(),
    }
}

/// The `archive_created` and `done` events. The archive is complete; a
/// block that raises now still gets it, a cancel now removes it.
fn announce_done(
    report: BackupReport,
    written: Written,
    progress: &mut dyn Progress,
) -> Result<BackupReport> {
    let event = Event::new(Step::ArchiveCreated)
        .with("path", report.path.display().to_string())
        .with("bytes", written.bytes)
        .with("sha256", written.sha256);
    let done = Event::new(Step::Done)
        .with("rows", report.rows)
        .with("blobs", report.blobs)
        .with("errors", report.errors.len() as u64)
        .with("duration_ms", report.duration_ms);
    if let Err(e) = progress.emit(event).and_then(|_| progress.emit(done)) {
        // Cancelled after the fact: honour it by removing the archive.
        let _ = std::fs::remove_file(&report.path);
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
