//! Ruby binding of backup, restore, verify, prune and explain: JSON options in, JSON
//! result out, progress events yielded to the block without the GVL.

use crate::gvl;
use magnus::{function, Error as RbError, RModule, Ruby};

fn backup(ruby: &Ruby, options_json: String) -> Result<String, RbError> {
    gvl::run_without_gvl(ruby, |progress| {
        tenant_kit::api::backup_json(&options_json, progress)
    })
}

fn restore(ruby: &Ruby, options_json: String) -> Result<String, RbError> {
    gvl::run_without_gvl(ruby, |progress| {
        tenant_kit::api::restore_json(&options_json, progress)
    })
}

fn verify(ruby: &Ruby, options_json: String) -> Result<String, RbError> {
    gvl::run_without_gvl(ruby, |progress| {
        tenant_kit::api::verify_json(&options_json, progress)
    })
}

fn prune(ruby: &Ruby, options_json: String) -> Result<String, RbError> {
    gvl::run_without_gvl(ruby, |_| tenant_kit::api::prune_json(&options_json))
}

fn explain(ruby: &Ruby, options_json: String) -> Result<String, RbError> {
    gvl::run_without_gvl(ruby, |_| tenant_kit::api::explain_json(&options_json))
}

/// A new age key pair as JSON `{"identity": …, "recipient": …}`.
fn generate_key() -> String {
    serde_json::to_string(&tenant_kit::crypt::keys::generate_key()).unwrap_or_default()
}

pub fn init(_ruby: &Ruby, native: &RModule) -> Result<(), RbError> {
    native.define_module_function("backup", function!(backup, 1))?;
    native.define_module_function("restore", function!(restore, 1))?;
    native.define_module_function("verify", function!(verify, 1))?;
    native.define_module_function("prune", function!(prune, 1))?;
    native.define_module_function("explain", function!(explain, 1))?;
    native.define_module_function("generate_key", function!(generate_key, 0))?;
    Ok(())
}
