//! tenant_kit: back up, restore and resolve settings for one tenant of a
//! multi-tenant Rails app on SQLite.
//!
//! This crate is the whole product logic, free of Ruby and of C: the Ruby
//! extension (`ext/tenant_kit`) and the C ABI (`capi`, feature `capi`) are
//! thin bindings that translate options in and results out as JSON.

pub mod api;
pub mod archive;
pub mod backup;
pub(crate) mod clock;
pub mod crypt;
pub(crate) mod db;
pub(crate) mod error;
pub(crate) mod explain;
#[doc(hidden)]
pub mod fuzzing;
mod job;
#[doc(hidden)]
pub mod microbench;
pub(crate) mod naming;
pub mod progress;
pub mod prune;
pub mod restore;
pub(crate) mod schema;
pub(crate) mod scope;
pub mod selftest;
pub mod settings;
pub(crate) mod sql;
pub(crate) mod tenant_id;
pub(crate) mod value;
pub mod verify;
pub mod work_dir;

#[cfg(feature = "capi")]
pub mod capi;

pub use error::{Error, ErrorKind, Result, SqliteCode};
pub use progress::{Event, NoProgress, Progress};
pub use tenant_id::TenantId;

/// The crate version, also the gem version and the archive's `tool_version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Version of the SQLite library linked at run time (not the header we were
/// compiled against): inside Ruby this must equal the sqlite3 gem's.
pub fn sqlite_version() -> String {
    rusqlite::version().to_string()
}
