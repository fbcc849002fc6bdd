//! `TenantKit.verify`: re-read an archive and check every hash, size and
//! count against its manifest, with no database involved. Restore runs the
//! same checks before it touches anything.

use crate::archive::dump::{DumpReader, RowLine};
use crate::archive::read::{extract, Limits};
use crate::archive::{Manifest, ManifestError, TableEntry};
use crate::crypt::keys::Unseal;
use crate::crypt::Secret;
use crate::error::{Error, Result};
use crate::progress::{report_failure, Event, Progress, Step, Throttle};
use crate::scope::is_blob_table;
use crate::TenantId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
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

/// Walk dump.jsonl checking it against the manifest: tables grouped in the
/// manifest's order, each row with exactly the listed columns, the tenant
/// column (wherever a table has it) equal to the archive's tenant, the
/// per-table counts, and every file of the manifest named by a blob row.
/// `each_row` sees every row once it passed.
pub fn check_dump<R: std::io::Read>(
    m: &Manifest,
    mut reader: DumpReader<R>,
    progress: &mut dyn Progress,
    mut each_row: impl FnMut(&TableEntry, RowLine) -> Result<()>,
) -> Result<()> {
    let mut table_index = 0usize;
    let mut in_table = 0u64;
    let mut columns: HashSet<&str> = HashSet::new();
    let mut throttle = Throttle::new(m.total_rows());
    let mut total = 0u64;
    // The manifest's files no blob row has named yet: a file that none
    // names would be written into the storage root owned by nothing, and
    // no purge would ever remove it.
    let mut unnamed: HashSet<&str> = m.blobs.iter().map(|b| b.key.as_str()).collect();
    while let Some(line) = reader.next_row()? {
        // Move to the line's table: forward only, never back.
        while table_index < m.tables.len() && *m.tables[table_index].name != *line.table {
            if table_index < m.tables.len() && in_table != m.tables[table_index].rows {
                return Err(count_mismatch(&m.tables[table_index], in_table));
            }
            table_index += 1;
            in_table = 0;
            columns.clear();
        }
        let Some(entry) = m.tables.get(table_index) else {
            return Err(Error::archive(format!(
                "dump.jsonl line {}: table {:?} is not in the manifest, or out of order",
                reader.line_no(),
                line.table
            )));
        };
        if columns.is_empty() {
            columns = entry.columns.iter().map(String::as_str).collect();
        }
        // Our own backups write the manifest's column order: compare in
        // place, and fall back to the set for other orders.
        let same_order = line
            .row
            .0
            .iter()
            .map(|(c, _)| &**c)
            .eq(entry.columns.iter().map(String::as_str));
        if !same_order
            && (line.row.0.len() != columns.len()
                || !line.row.0.iter().all(|(c, _)| columns.contains(&**c)))
        {
            return Err(Error::archive(format!(
                "dump.jsonl line {}: the columns of {} differ from the manifest",
                reader.line_no(),
                entry.name
            )));
        }
        // Every table, the one the manifest calls the tenants table too:
        // which table that is, is the archive's word, not a licence.
        if let Some(value) = line.row.get(&m.tenant.column) {
            if !m.tenant.id.matches(value) {
                return Err(Error::archive(format!(
                    "dump.jsonl line {}: {}.{} is {}, not the archive's tenant {}",
                    reader.line_no(),
                    entry.name,
                    m.tenant.column,
                    value.describe(),
                    m.tenant.id
                )));
            }
        }
        in_table += 1;
        if in_table > entry.rows {
            return Err(count_mismatch(entry, in_table));
        }
        if !unnamed.is_empty() && is_blob_table(&entry.name) {
            if let Some(key) = line.row.get("key").and_then(|v| v.as_text()) {
                unnamed.remove(key);
            }
        }
        each_row(entry, line)?;
        total += 1;
        if total % 1024 == 0 {
            progress.check_interrupt()?;
        }
        if throttle.due(total) {
            progress.emit(
                Event::new(Step::Verify)
                    .with("phase", "rows")
                    .with("processed", total)
                    .with("total", m.total_rows()),
            )?;
        }
    }
    for (i, entry) in m.tables.iter().enumerate().skip(table_index) {
        let seen = if i == table_index { in_table } else { 0 };
        if seen != entry.rows {
            return Err(count_mismatch(entry, seen));
        }
    }
    if let Some(key) = unnamed.iter().min() {
        return Err(Error::archive(format!(
            "the manifest lists the file of blob {key:?}{}, but no active_storage_blobs row of the dump has that key: it would belong to nothing",
            match unnamed.len() {
                1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            }
        )));
    }
    progress.emit(
        Event::new(Step::Verify)
            .with("phase", "rows")
            .with("processed", total)
            .with("total", m.total_rows()),
    )?;
    Ok(())
}

fn count_mismatch(entry: &TableEntry, found: u64) -> Error {
    Error::integrity(format!(
        "table {}: manifest says {} rows, dump.jsonl has {}{}",
        entry.name,
        entry.rows,
        if found > entry.rows {
            "more than that: "
        } else {
            ""
        },
        found
    ))
}

/// Convenience for callers with a plain path.
pub fn verify_path(archive: &Path) -> Result<VerifyReport> {
    verify(
        &VerifyOptions::new(archive),
        &mut crate::progress::NoProgress,
    )
}
