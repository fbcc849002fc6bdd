//! Archive format, version 1: a `.tar.gz` holding `manifest.json` (first),
//! `dump.jsonl` and `blobs/<key>` files. See README "Archive format".

pub mod deflate;
pub mod dump;
pub mod fast_line;
mod feed;
pub mod read;
pub mod ustar;
pub mod write;

use crate::error::{Error, Result};
use crate::TenantId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const FORMAT_NAME: &str = "tenant_kit";
/// `major.minor`: readers accept any minor of a major they know.
pub const FORMAT_VERSION: &str = "1.0";
pub const SUPPORTED_MAJOR: u64 = 1;

pub const MANIFEST_NAME: &str = "manifest.json";
pub const DUMP_NAME: &str = "dump.jsonl";
pub const BLOB_PREFIX: &str = "blobs/";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: String,
    pub format_version: String,
    pub tool_version: String,
    pub created_at: String,
    pub tenant: TenantInfo,
    pub source: SourceInfo,
    /// Tables in dump order (parents first), with their row counts.
    pub tables: Vec<TableEntry>,
    /// Tables not backed up and why.
    #[serde(default)]
    pub skipped: Vec<SkippedTable>,
    pub dump: FileEntry,
    #[serde(default)]
    pub blobs: Vec<BlobEntry>,
    /// Problems that did not stop the backup (a blob file missing on disk).
    #[serde(default)]
    pub errors: Vec<ManifestError>,
    /// References taken from Rails naming alone (`project_id` →
    /// `projects`) that no declared foreign key or `relations:` hint
    /// confirms, among the tenant's tables: to check, and to correct with
    /// a hint (`references: null` says the column is no reference).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guesses: Vec<Guess>,
}

/// A reference guessed from naming: `table.column` → `references`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Guess {
    pub table: String,
    pub column: String,
    pub references: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TenantInfo {
    pub id: TenantId,
    pub column: String,
    /// The tenants table whose row is in the dump, when there is one.
    pub table: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceInfo {
    pub sqlite_version: String,
    /// Highest `schema_migrations` version of the source database.
    pub schema_version: Option<String>,
    /// Every table of the source schema (not only the dumped ones).
    pub schema: BTreeMap<String, Vec<ColumnInfo>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ColumnInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub decl_type: String,
    pub not_null: bool,
    pub primary_key: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableEntry {
    pub name: String,
    pub columns: Vec<String>,
    pub rows: u64,
    /// How rows were chosen: `tenant_column`, `tenant_row`, `via ...`,
    /// or `shared` for shared reference rows (rows outside the tenant
    /// that its rows refer to; see `scope/shared.rs`).
    pub scope: String,
    /// Polymorphic type column → class names it refers to (so a restore
    /// into an empty database knows `record_type = "Task"` means tasks).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub polymorphic: BTreeMap<String, Vec<String>>,
    /// Rows the tenant reaches that another tenant reaches too (a join row
    /// between two tenants' rows), left out of the archive: they are no
    /// one tenant's. Blobs are carried by every tenant that attaches them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub left_out_cross_tenant: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl TableEntry {
    /// Whether the entry holds shared reference rows (`scope: "shared"`).
    pub fn is_shared(&self) -> bool {
        self.scope == crate::scope::shared::SCOPE_SHARED
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SkippedTable {
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlobEntry {
    pub key: String,
    pub size: u64,
    /// ActiveStorage's checksum column: base64 of the file's MD5.
    pub checksum: Option<String>,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestError {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub message: String,
}

impl Manifest {
    /// Parse and check the parts every reader relies on before trusting
    /// anything else in the archive.
    pub fn parse(bytes: &[u8]) -> Result<Manifest> {
        let raw: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::archive(format!("manifest.json is not valid JSON: {e}")))?;
        let format = raw
            .get("format")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        if format != FORMAT_NAME {
            return Err(Error::archive(format!(
                "not a tenant_kit archive (format {format:?})"
            )));
        }
        let version = raw
            .get("format_version")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let major = version
            .split('.')
            .next()
            .and_then(|m| m.parse::<u64>().ok());
        if major != Some(SUPPORTED_MAJOR) {
            return Err(Error::archive(format!(
                "unsupported archive format version {version:?} (this tenant_kit {} reads {SUPPORTED_MAJOR}.x)",
                crate::VERSION
            )));
        }
        let manifest: Manifest = serde_json::from_value(raw)
            .map_err(|e| Error::archive(format!("manifest.json is malformed: {e}")))?;
        manifest.check()?;
        Ok(manifest)
    }

    fn check(&self) -> Result<()> {
        if self.dump.name != DUMP_NAME {
            return Err(Error::archive(format!(
                "manifest names dump {:?}, expected {DUMP_NAME}",
                self.dump.name
            )));
        }
        check_sha256(&self.dump.sha256, DUMP_NAME)?;
        let mut seen = std::collections::BTreeSet::new();
        for blob in &self.blobs {
            check_blob_key(&blob.key)?;
            check_sha256(&blob.sha256, &blob.key)?;
            if !seen.insert(blob.key.as_str()) {
                return Err(Error::archive(format!(
                    "manifest lists blob {:?} twice",
                    blob.key
                )));
            }
        }
        let mut tables = std::collections::BTreeSet::new();
        for t in &self.tables {
            if !tables.insert(t.name.as_str()) {
                return Err(Error::archive(format!(
                    "manifest lists table {:?} twice",
                    t.name
                )));
            }
            let mut cols = std::collections::BTreeSet::new();
            if t.columns.is_empty() || !t.columns.iter().all(|c| cols.insert(c.as_str())) {
                return Err(Error::archive(format!(
                    "manifest: table {:?} has empty or duplicate columns",
                    t.name
                )));
            }
        }
        if self.tenant.column.is_empty() {
            return Err(Error::archive("manifest: empty tenant column"));
        }
        self.check_tenant_entries()
    }

    /// What the manifest says about the tenant must hang together: the
    /// one `tenant_row` entry is the table it names as the tenants table,
    /// with one row at most, and a table that is tenant data by its tenant
    /// column lists that column (rows without it would land in no tenant).
    /// The restore checks the same against the target database, which
    /// decides; this is what `verify` can tell alone.
    fn check_tenant_entries(&self) -> Result<()> {
        let column = &self.tenant.column;
        for t in &self.tables {
            let is_tenants_table = self.tenant.table.as_deref() == Some(t.name.as_str());
            match t.scope.as_str() {
                "tenant_row" if !is_tenants_table => {
                    return Err(Error::archive(format!(
                        "manifest: table {:?} claims the tenant's own row, but the tenants table is {}",
                        t.name,
                        self.tenant.table.as_deref().map_or("not named".into(), |n| format!("{n:?}"))
                    )));
                }
                "tenant_row" if t.rows > 1 => {
                    return Err(Error::archive(format!(
                        "manifest: the tenants table {:?} holds {} rows; an archive holds one tenant's row at most",
                        t.name, t.rows
                    )));
                }
                "tenant_column" if !t.columns.contains(column) => {
                    return Err(Error::archive(format!(
                        "manifest: table {:?} is tenant data by its {column} column, but its columns leave {column} out",
                        t.name
                    )));
                }
                scope if is_tenants_table && scope != "tenant_row" => {
                    return Err(Error::archive(format!(
                        "manifest: {:?} is named the tenants table, but its entry says {scope:?}",
                        t.name
                    )));
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub fn table(&self, name: &str) -> Option<&TableEntry> {
        self.tables.iter().find(|t| t.name == name)
    }

    pub fn blob(&self, key: &str) -> Option<&BlobEntry> {
        self.blobs.iter().find(|b| b.key == key)
    }

    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

fn check_sha256(hex: &str, what: &str) -> Result<()> {
    if hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(Error::archive(format!(
            "manifest: {what:?} has a malformed sha256"
        )))
    }
}

/// ActiveStorage keys are base36 (`SecureRandom.base36(28)`); apps may set
/// their own, so we accept ASCII letters, digits, `-` and `_`, 4 to 128
/// long. Never `/`, `.` or anything that could leave the storage root.
pub fn check_blob_key(key: &str) -> Result<()> {
    let ok = (4..=128).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::archive(format!(
            "blob key {:?} is outside ActiveStorage's alphabet",
            truncate(key)
        )))
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Where the Disk service keeps a key: `root/ab/cd/abcd…`.
pub fn disk_path(root: &std::path::Path, key: &str) -> std::path::PathBuf {
    root.join(&key[0..2]).join(&key[2..4]).join(key)
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
