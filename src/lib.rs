//! tenant_kit: back up, restore and resolve settings for one tenant of a
//! multi-tenant Rails app on SQLite.
//!
//! This crate is the whole product logic, free of Ruby and of C: the Ruby
//! extension (`ext/tenant_kit`) and the C ABI (`capi`, feature `capi`) are
//! thin bindings that translate options in and results out as JSON.

pub mod api;
pub mod archive;
pub mod backup;
pub mod clock;
pub mod db;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod naming;
pub mod progress;
pub mod prune;
pub mod restore;
pub mod schema;
pub mod scope;
pub mod selftest;
pub mod settings;
pub mod value;
pub mod verify;
pub mod work_dir;

#[cfg(feature = "capi")]
pub mod capi;

pub use error::{Error, ErrorKind, Result};
pub use progress::{Event, NoProgress, Progress};

/// The crate version, also the gem version and the archive's `tool_version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Version of the SQLite library linked at run time (not the header we were
/// compiled against): inside Ruby this must equal the sqlite3 gem's.
pub fn sqlite_version() -> String {
    rusqlite::version().to_string()
}

/// A tenant id as the app stores it: integer (the Rails default) or text
/// (UUID keys). JSON: a number or a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum TenantId {
    Integer(i64),
    Text(String),
}

impl TenantId {
    pub fn to_sql_value(&self) -> value::SqlValue {
        match self {
            TenantId::Integer(i) => value::SqlValue::Integer(*i),
            TenantId::Text(s) => value::SqlValue::Text(s.as_bytes().to_vec()),
        }
    }

    /// True when a stored value is this tenant id, comparing the way SQLite
    /// does for an INTEGER column holding `'1'` or `1` alike.
    pub fn matches(&self, value: &value::SqlValue) -> bool {
        match (self, value) {
            (TenantId::Integer(a), value::SqlValue::Integer(b)) => a == b,
            (TenantId::Text(a), value::SqlValue::Text(b)) => a.as_bytes() == b.as_slice(),
            _ => false,
        }
    }

    /// Used in file names: digits and UUID characters only.
    pub fn file_component(&self) -> String {
        match self {
            TenantId::Integer(i) => i.to_string(),
            TenantId::Text(s) => s
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect(),
        }
    }
}

impl std::fmt::Display for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TenantId::Integer(i) => write!(f, "{i}"),
            TenantId::Text(s) => write!(f, "{s:?}"),
        }
    }
}
