//! Archive retention: delete old `tenant_<id>_<yyyymmddHHMMSS>.tar.gz` files
//! and their encrypted form `….tar.gz.age`.
//! Only names of exactly that pattern are ever considered, only regular
//! files (never links), and the time comes from the name, not from mtime.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneOptions {
    pub output_dir: PathBuf,
    /// Keep the newest N archives of each tenant.
    #[serde(default)]
    pub keep_last: Option<u64>,
    /// Delete archives stamped before this UTC time, `yyyymmddHHMMSS`.
    #[serde(default)]
    pub older_than: Option<String>,
    /// Only this tenant's archives (all tenants when absent).
    #[serde(default)]
    pub tenant_id: Option<crate::TenantId>,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub deleted: Vec<PathBuf>,
    pub kept: Vec<PathBuf>,
    pub dry_run: bool,
}

/// `tenant_<id>_<stamp>.tar.gz` (or `.tar.gz.age`) → (id, stamp), or None
/// for any other name.
pub fn parse_archive_name(name: &str) -> Option<(&str, &str)> {
    let name = name.strip_suffix(crate::crypt::AGE_SUFFIX).unwrap_or(name);
    let rest = name.strip_prefix("tenant_")?.strip_suffix(".tar.gz")?;
    let (id, stamp) = rest.rsplit_once('_')?;
    let id_ok = !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let stamp_ok = stamp.len() == 14 && stamp.bytes().all(|b| b.is_ascii_digit());
    (id_ok && stamp_ok).then_some((id, stamp))
}

pub fn prune(options: &PruneOptions) -> Result<PruneReport> {
    if options.keep_last.is_none() && options.older_than.is_none() {
        return Err(Error::argument(
            "prune needs keep_last:, older_than: or both",
        ));
    }
    if let Some(cutoff) = &options.older_than {
        if cutoff.len() != 14 || !cutoff.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::argument(
                "older_than must be a UTC stamp yyyymmddHHMMSS",
            ));
        }
    }
    let only = options.tenant_id.as_ref().map(|t| t.file_components());
    let entries = std::fs::read_dir(&options.output_dir).map_err(|e| {
        Error::argument(format!("output_dir {}: {e}", options.output_dir.display()))
    })?;

    // tenant id → [(stamp, path)]
    let mut by_tenant: BTreeMap<String, Vec<(String, PathBuf)>> = BTreeMap::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((id, stamp)) = parse_archive_name(name) else {
            continue;
        };
        if only
            .as_ref()
            .is_some_and(|names| !names.iter().any(|n| n == id))
        {
            continue;
        }
        // file_type() does not follow links: a symlink is never ours.
        if !entry.file_type()?.is_file() {
            continue;
        }
        by_tenant
            .entry(id.to_string())
            .or_default()
            .push((stamp.to_string(), entry.path()));
    }

    let mut report = PruneReport {
        deleted: Vec::new(),
        kept: Vec::new(),
        dry_run: options.dry_run,
    };
    for (_, mut archives) in by_tenant {
        archives.sort_by(|a, b| b.0.cmp(&a.0)); // newest first
        for (rank, (stamp, path)) in archives.into_iter().enumerate() {
            let beyond_keep = options.keep_last.is_none_or(|n| rank as u64 >= n);
            let too_old = options
                .older_than
                .as_ref()
                .is_none_or(|cutoff| &stamp < cutoff);
            if beyond_keep && too_old {
                if !options.dry_run {
                    std::fs::remove_file(&path)
                        .map_err(|e| Error::io(format!("deleting {}: {e}", path.display())))?;
                }
                report.deleted.push(path);
            } else {
                report.kept.push(path);
            }
        }
    }
    report.deleted.sort();
    report.kept.sort();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_names_are_archives() {
        assert_eq!(
            parse_archive_name("tenant_12_20261127221100.tar.gz"),
            Some(("12", "20261127221100"))
        );
        assert_eq!(
            parse_archive_name("tenant_0b1c-77_20261127221100.tar.gz"),
            Some(("0b1c-77", "20261127221100"))
        );
        assert_eq!(
            parse_archive_name("tenant_0b1c-77_20261127221100.tar.gz.age"),
            Some(("0b1c-77", "20261127221100"))
        );
        for bad in [
            "tenant_12_2026112722110.tar.gz",
            "tenant__20261127221100.tar.gz",
            "tenant_12_20261127221100.tar.gz.tmp",
            "tenant_12_20261127221100.tar.gz.age.age",
            "tenant_12_20261127221100.age",
            "xtenant_12_20261127221100.tar.gz",
            "tenant_1/2_20261127221100.tar.gz",
            "notes.txt",
        ] {
            assert_eq!(parse_archive_name(bad), None, "{bad}");
        }
    }
}
