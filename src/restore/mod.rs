//! Restore of one tenant from an archive ([`flow`] runs the phases). In
//! order:
//! 1. verify: unpack to a private temp dir, every hash and size checked, on
//!    a second thread while steps 2 and 3 run;
//! 2. schema: the archive must fit the database ([`fit`]);
//! 3. stage and plan, without the write lock: rows parsed once into temp
//!    tables while dump.jsonl is unpacked ([`stage`]; kept only if the
//!    dump's hash checks out), outcomes and conflicts computed set-wise
//!    ([`plan`]); a dry run stops here;
//! 4. apply, in one `BEGIN IMMEDIATE` transaction ([`apply`]): purge, blob
//!    files ([`blobs`]), rows, checks; then commit;
//! 5. after commit: files of purged blobs removed.
//!
//! Blob files are journaled before they are written ([`storage_journal`]):
//! a run that dies is undone by the next, in step 4 before it changes
//! anything.
//!
//! Never touches another tenant's rows, never `INSERT OR REPLACE`; a
//! conflict, a failure or a cancel rolls back and removes every blob file
//! this run wrote.

mod apply;
mod blobs;
mod child_keys;
mod disk;
mod fit;
mod flow;
mod future_ids;
mod new_ids;
mod new_tenant;
mod plan;
mod postcondition;
mod search_indexes;
pub use search_indexes::IndexAction;
mod selection;
mod selection_db;
mod selection_present;
pub use selection::SelectionReport;
mod shared_rows;
mod shared_unique;
pub use shared_rows::SharedCounts;
mod stage;
mod storage_journal;

use crate::archive::{Manifest, ManifestError};
use crate::crypt::Secret;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::schema::{Schema, Table};
use crate::scope::TenantScope;
use crate::value::SqlValue;
use crate::TenantId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

crate::scope::scope_config! {
    #[derive(Debug, Clone, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RestoreOptions {
        pub database: PathBuf,
        pub archive: PathBuf,
        /// None (`tenant_id: nil`) with `new_ids: true` makes a new tenant.
        pub tenant_id: Option<TenantId>,
        #[serde(default)]
        pub storage_root: Option<PathBuf>,
        #[serde(default)]
        pub dry_run: bool,
        #[serde(default)]
        pub purge: bool,
        #[serde(default = "yes")]
        pub restore: bool,
        #[serde(default)]
        pub remap: bool,
        @scope_config,
        #[serde(default = "crate::db::default_busy_timeout_ms")]
        pub busy_timeout_ms: u64,
        /// Where the archive is unpacked while checking (default: system temp).
        #[serde(default)]
        pub tmp_dir: Option<PathBuf>,
        #[serde(default)]
        pub max_line_bytes: Option<usize>,
        /// Every restored row gets a new key, every known reference follows
        /// (see [`new_ids`]).
        #[serde(default)]
        pub new_ids: bool,
        /// With `new_ids`: where to write the old → new keys, one JSON line
        /// per row.
        #[serde(default)]
        pub id_map: Option<PathBuf>,
        /// A partial restore: table names (`["tags"]`), or the roots of a
        /// subtree (`{"projects": [17]}`, keys in the archive's JSON form).
        #[serde(default)]
        pub only: Option<serde_json::Value>,
        /// A partial restore of every table but these.
        #[serde(default)]
        pub except: Option<Vec<String>>,
        /// age identity strings (`AGE-SECRET-KEY-1…`) for an encrypted archive.
        #[serde(default, deserialize_with = "crate::crypt::secret_list")]
        pub identities: Vec<Secret>,
        /// A file of age identities (age's key-file format).
        #[serde(default)]
        pub identity_file: Option<PathBuf>,
        /// The passphrase of a passphrase-encrypted archive.
        #[serde(default)]
        pub passphrase: Option<Secret>,
        /// Set by [`restore`] when `tenant_id` was nil: this run makes the tenant.
        #[serde(skip)]
        creates_tenant: bool,
    }
}

impl RestoreOptions {
    /// The tenant restored into; [`restore`] has settled it.
    pub fn target_id(&self) -> &TenantId {
        self.tenant_id
            .as_ref()
            .expect("the target tenant is settled before the restore runs")
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PlannedCounts {
    pub insert: u64,
    pub update: u64,
    /// Rows of tables without a primary key already present as they are.
    pub unchanged: u64,
    pub purge: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Conflict {
    pub table: String,
    pub key: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct BlobCounts {
    /// Blob files in the archive.
    pub total: u64,
    /// Files written into the storage root.
    pub written: u64,
    /// Files already present with identical content.
    pub reused: u64,
    /// Files of purged blobs removed after commit.
    pub removed: u64,
    /// Keys that collided with another blob and were given a fresh key
    /// (with `new_ids`, every key).
    pub renamed: u64,
    /// Files a restore that died had written (or left to remove), removed
    /// before this one changed anything.
    pub recovered: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub dry_run: bool,
    pub source_tenant_id: TenantId,
    pub tenant_id: TenantId,
    pub planned: BTreeMap<String, PlannedCounts>,
    /// Rows of the archive now in the database, per table: written, or
    /// found already equal and left as they were.
    pub restored: BTreeMap<String, u64>,
    /// Of those, the rows actually inserted or updated.
    pub written: BTreeMap<String, u64>,
    pub purged: BTreeMap<String, u64>,
    pub conflicts: Vec<Conflict>,
    pub conflict_count: u64,
    pub blobs: BlobCounts,
    /// Old blob key → new key, for keys that were already taken (with
    /// `new_ids`, for every blob).
    pub renamed_keys: BTreeMap<String, String>,
    pub tenant_row_created: bool,
    /// How long the plan's read transaction was open. In rollback-journal
    /// mode other connections could not commit meanwhile (in WAL mode a
    /// reader blocks nobody).
    pub plan_ms: u64,
    /// How long the write lock was held (0 for a dry run).
    pub lock_ms: u64,
    pub duration_ms: u64,
    /// Problems recorded by the backup (blob files that were missing).
    pub errors: Vec<ManifestError>,
    /// Full-text indexes over the restored tables, and what became of
    /// each (rebuilt, kept by the app's triggers, contentless).
    pub search_indexes: BTreeMap<String, IndexAction>,
    /// With `new_ids`: rows given a new key, per table.
    pub id_map: BTreeMap<String, u64>,
    /// What `only:` / `except:` selected (absent for a whole restore).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selection: Option<SelectionReport>,
    /// Shared reference rows per table: inserted (missing here), present
    /// (left as they are), differing (present with other values, left as
    /// they are). A dry run's are the plan's.
    pub shared: BTreeMap<String, SharedCounts>,
    /// Whether the archive was age-encrypted.
    pub encrypted: bool,
}

pub fn restore(options: &RestoreOptions, progress: &mut dyn Progress) -> Result<RestoreReport> {
    // tenant_id: nil → a new tenant, into which the archive is remapped.
    let settled = check_new_ids(options).and_then(|()| match &options.tenant_id {
        Some(id) => Ok((id.clone(), false)),
        None => Ok((new_tenant::new_tenant_id(options)?, true)),
    });
    let (tenant_id, creates_tenant) = match settled {
        Ok(settled) => settled,
        Err(e) => {
            crate::progress::report_failure(progress, &e);
            return Err(e);
        }
    };
    let target = crate::job::Target {
        database: &options.database,
        busy_timeout_ms: options.busy_timeout_ms,
        tenant_column: &options.tenant_column,
        tenant_id: &tenant_id,
    };
    crate::job::run(target, progress, |tenant_id, progress| {
        let options = RestoreOptions {
            tenant_id: Some(tenant_id),
            remap: options.remap || creates_tenant,
            creates_tenant,
            ..options.clone()
        };
        flow::run(&options, progress)
    })
}

/// `new_ids`, `id_map` and `tenant_id: nil` go together.
fn check_new_ids(options: &RestoreOptions) -> Result<()> {
    if options.tenant_id.is_none() && !options.new_ids {
        return Err(Error::argument(
            "tenant_id: is required (nil makes a new tenant, with new_ids: true)",
        ));
    }
    if options.id_map.is_some() && !options.new_ids {
        return Err(Error::argument(
            "id_map: is written with new_ids: true only",
        ));
    }
    if options.new_ids && !options.restore {
        return Err(Error::argument(
            "new_ids: true copies rows, so it needs restore: true",
        ));
    }
    Ok(())
}

fn check_options(options: &RestoreOptions) -> Result<()> {
    if !options.restore && !options.purge {
        return Err(Error::argument(
            "nothing to do: restore and purge are both false",
        ));
    }
    if let Some(root) = &options.storage_root {
        if !root.is_dir() {
            return Err(Error::argument(format!(
                "storage_root {} is not a directory",
                root.display()
            )));
        }
    }
    if let TenantId::Text(s) = options.target_id() {
        if s.is_empty() {
            return Err(Error::argument("tenant_id must not be empty"));
        }
    }
    Ok(())
}

struct Context<'a> {
    options: &'a RestoreOptions,
    schema: &'a Schema,
    scope: &'a TenantScope,
    manifest: &'a Manifest,
    /// Blob key → its unpacked file; None while staging (the extraction
    /// is still running then).
    blob_files: Option<&'a BTreeMap<String, PathBuf>>,
    source: TenantId,
    /// `only:` / `except:`, once applied to the staged rows.
    selection: Option<&'a selection::Selection>,
    /// The archive was age-encrypted (known once the extraction ended).
    encrypted: bool,
}

impl Context<'_> {
    fn target(&self) -> SqlValue {
        self.options.target_id().to_sql_value()
    }
    fn table(&self, name: &str) -> &Table {
        self.schema.table(name).expect("checked by check_schema")
    }
}

/// A plan's conflicts as the error a restore fails with.
fn conflict_error(conflicts: &[Conflict], count: u64) -> Error {
    let listed: Vec<String> = conflicts
        .iter()
        .take(10)
        .map(|c| format!("{} {} ({})", c.table, c.key, c.reason))
        .collect();
    let more = if count > listed.len() as u64 {
        format!(" and {} more", count - listed.len() as u64)
    } else {
        String::new()
    };
    Error::conflict(format!(
        "the restore would touch or point at rows of another tenant: {}{more}; nothing was changed",
        listed.join(", ")
    ))
}
