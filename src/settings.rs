//! Settings resolution: tenant / class / instance cascade over defaults.
//! (Being written; see issue 6.)

use crate::error::{Error, Result};

/// `TenantKit::Settings` / `tk_settings_resolve`: JSON in, JSON out.
pub fn resolve_json(request_json: &str) -> Result<String> {
    let _ = request_json;
    Err(Error::internal("settings: not implemented yet"))
}
