//! `TenantKit.verify`: re-read an archive and check every hash, size and
//! count against its manifest, with no database involved. Restore runs the
//! same checks before it touches anything.

use crate::archive::dump::{check_dump, DumpReader};
use crate::archive::read::{extract, Limits};
use crate::archive::ManifestError;
use crate::crypt::keys::Unseal;
use crate::crypt::Secret;
use crate::error::Result;
use crate::progress::{report_failure, Event, Progress, Step};
use crate::TenantId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyOptions {
    pub archive: PathBuf,
    /// Where to unpack while checking (default: the system temp dir).
    #[serde(default)]
    pub tmp_dir: Option<PathBuf>,
    #[serde(default)]
    pub max_line_bytes: Option<usize>,
    /// age identity strings (`AGE-SECRET-KEY-1…`) for an encrypted archive.
    #[serde(default, deserialize_with = "crate::crypt::secret_list")]
    pub identities: Vec<Secret>,
    /// A file of age identities (age's key-file format).
    #[serde(default)]
    pub identity_file: Option<PathBuf>,
    /// The passphrase of a passphrase-encrypted archive.
    #[serde(default)]
    pub passphrase: Option<Secret>,
}

impl VerifyOptions {
    /// Verify `archive` with the default limits, without keys.
    pub fn new(archive: impl Into<PathBuf>) -> VerifyOptions {
        VerifyOptions {
            archive: archive.into(),
            tmp_dir: None,
            max_line_bytes: None,
            identities: Vec::new(),
            identity_file: None,
            passphrase: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub path: PathBuf,
    pub format_version: String,
    pub tool_version: String,
    pub created_at: String,
    pub tenant_id: TenantId,
    pub tenant_column: String,
    pub tables: BTreeMap<String, u64>,
    pub rows: u64,
    pub blobs: u64,
    pub bytes: u64,
    pub schema_version: Option<String>,
    /// Whether the archive was age-encrypted.
    pub encrypted: bool,
    /// Problems the backup recorded (missing blob files…).
    pub errors: Vec<ManifestError>,
}

pub fn verify(options: &VerifyOptions, progress: &mut dyn Progress) -> Result<VerifyReport> {
    let result = (|| {
        progress.emit(
            Event::new(Step::Start)
                .with("operation", "verify")
                .with("archive", options.archive.display().to_string()),
        )?;
        let limits = limits_with(options.max_line_bytes);
        let temp_parent = options.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
        let keys = Unseal::from_options(
            &options.identities,
            options.identity_file.as_deref(),
            options.passphrase.as_ref(),
        )?;
        let extracted = extract(&options.archive, &keys, &temp_parent, limits, progress)?;
        let reader = DumpReader::open(&extracted.dump_path, limits.max_line_bytes)?;
        check_dump(&extracted.manifest, reader, progress, |_, _| Ok(()))?;
        let m = &extracted.manifest;
        let report = VerifyReport {
            ok: true,
            path: options.archive.clone(),
            format_version: m.format_version.clone(),
            tool_version: m.tool_version.clone(),
            created_at: m.created_at.clone(),
            tenant_id: m.tenant.id.clone(),
            tenant_column: m.tenant.column.clone(),
            tables: m.tables.iter().map(|t| (t.name.clone(), t.rows)).collect(),
            rows: m.total_rows(),
            blobs: m.blobs.len() as u64,
            bytes: extracted.archive_bytes,
            schema_version: m.source.schema_version.clone(),
            encrypted: extracted.encrypted,
            errors: m.errors.clone(),
        };
        progress.emit(
            Event::new(Step::Done)
                .with("rows", report.rows)
                .with("blobs", report.blobs),
        )?;
        Ok(report)
    })();
    if let Err(e) = &result {
        report_failure(progress, e);
    }
    result
}

pub fn limits_with(max_line_bytes: Option<usize>) -> Limits {
    let mut limits = Limits::default();
    if let Some(max) = max_line_bytes {
        limits.max_line_bytes = max;
    }
    limits
}

/// Convenience for callers with a plain path.
pub fn verify_path(archive: &Path) -> Result<VerifyReport> {
    verify(
        &VerifyOptions::new(archive),
        &mut crate::progress::NoProgress,
    )
}
