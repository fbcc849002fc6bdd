//! Ruby binding of `TenantKit::Settings` (being written; see issue 6).

use magnus::{Error as RbError, RModule, Ruby};

pub fn init(_ruby: &Ruby, _native: &RModule) -> Result<(), RbError> {
    Ok(())
}
