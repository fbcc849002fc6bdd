//! The JSON front door shared by every binding. Ruby (`ext/tenant_kit`) and
//! C (`capi`) both pass options as one UTF-8 JSON object and get the result
//! back as one JSON object, so the option names, defaults and validation live
//! here once. Keys are the Ruby keyword names (`database`, `tenant_id`, …).

use crate::error::{Error, Result};
use crate::progress::Progress;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Options JSON → typed options; every mistake is an argument error that
/// names the option (serde's message does: "unknown field `foo`", …).
pub fn parse_options<T: DeserializeOwned>(operation: &str, json: &str) -> Result<T> {
    serde_json::from_str(json)
        .map_err(|e| Error::argument(format!("{operation}: invalid options: {e}")))
}

pub fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| Error::internal(format!("cannot serialise result: {e}")))
}

/// `TenantKit.backup` / `tk_backup`. Returns the backup result as JSON.
pub fn backup_json(options_json: &str, progress: &mut dyn Progress) -> Result<String> {
    let options: crate::backup::BackupOptions = parse_options("backup", options_json)?;
    to_json(&crate::backup::backup(&options, progress)?)
}

/// `TenantKit.restore` / `tk_restore`. Returns the restore result as JSON.
pub fn restore_json(options_json: &str, progress: &mut dyn Progress) -> Result<String> {
    let options: crate::restore::RestoreOptions = parse_options("restore", options_json)?;
    to_json(&crate::restore::restore(&options, progress)?)
}

/// `TenantKit.verify` / `tk_verify`. Returns the verification result as JSON.
pub fn verify_json(options_json: &str, progress: &mut dyn Progress) -> Result<String> {
    let options: crate::verify::VerifyOptions = parse_options("verify", options_json)?;
    to_json(&crate::verify::verify(&options, progress)?)
}

/// `TenantKit.explain` / `tk_explain`. Returns the explain report as JSON.
pub fn explain_json(options_json: &str) -> Result<String> {
    let options: crate::explain::ExplainOptions = parse_options("explain", options_json)?;
    to_json(&crate::explain::explain(&options)?)
}

/// `TenantKit.generate_key` / `tk_generate_key`: a new age key pair as
/// `{"identity": "AGE-SECRET-KEY-1…", "recipient": "age1…"}`. Takes no
/// options (`{}`).
pub fn generate_key_json(options_json: &str) -> Result<String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NoOptions {}
    let _: NoOptions = parse_options("generate_key", options_json)?;
    to_json(&crate::crypt::keys::generate_key())
}

/// `TenantKit.prune` / `tk_prune`. Returns the deleted archives as JSON.
pub fn prune_json(options_json: &str) -> Result<String> {
    let options: crate::prune::PruneOptions = parse_options("prune", options_json)?;
    to_json(&crate::prune::prune(&options)?)
}
