//! The JSON front door shared by every binding. Ruby (`ext/tenant_kit`) and
//! C (`capi`) both pass options as one UTF-8 JSON object and get the result
//! back as one JSON object, so the option names, defaults and validation live
//! here once. Keys are the Ruby keyword names (`database`, `tenant_id`, …).

use crate::error::{Error, Result};
use crate::progress::Progress;

/// `TenantKit.backup` / `tk_backup`. Returns the backup result as JSON.
pub fn backup_json(options_json: &str, progress: &mut dyn Progress) -> Result<String> {
    let _ = (options_json, progress);
    Err(Error::internal("backup: not implemented yet"))
}

/// `TenantKit.restore` / `tk_restore`. Returns the restore result as JSON.
pub fn restore_json(options_json: &str, progress: &mut dyn Progress) -> Result<String> {
    let _ = (options_json, progress);
    Err(Error::internal("restore: not implemented yet"))
}

/// `TenantKit.verify` / `tk_verify`. Returns the verification result as JSON.
pub fn verify_json(options_json: &str, progress: &mut dyn Progress) -> Result<String> {
    let _ = (options_json, progress);
    Err(Error::internal("verify: not implemented yet"))
}

/// `TenantKit.prune` / `tk_prune`. Returns the deleted archives as JSON.
pub fn prune_json(options_json: &str) -> Result<String> {
    let _ = options_json;
    Err(Error::internal("prune: not implemented yet"))
}
