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
mod job;
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
#[serde(untagged, try_from = "TenantIdJson")]
pub enum TenantId {
    Integer(i64),
    Text(String),
}

/// A tenant id as JSON gives it, before we know it is one: anything else
/// (a float, a number past 64 bits, an object) gets a message that says
/// what was wrong, not serde's "did not match any variant".
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum TenantIdJson {
    Integer(i64),
    Text(String),
    Other(serde_json::Value),
}

impl TryFrom<TenantIdJson> for TenantId {
    type Error = String;

    fn try_from(json: TenantIdJson) -> std::result::Result<Self, String> {
        match json {
            TenantIdJson::Integer(i) => Ok(TenantId::Integer(i)),
            TenantIdJson::Text(s) => Ok(TenantId::Text(s)),
            TenantIdJson::Other(other) => Err(format!(
                "a tenant id is a 64-bit integer or a string, got {other}"
            )),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::TenantId;

    #[test]
    fn a_tenant_id_is_a_64_bit_integer_or_a_string_and_says_so_otherwise() {
        let parse = |json: &str| serde_json::from_str::<TenantId>(json).map_err(|e| e.to_string());
        assert_eq!(parse("7"), Ok(TenantId::Integer(7)));
        assert_eq!(
            parse("-9223372036854775808"),
            Ok(TenantId::Integer(i64::MIN))
        );
        assert_eq!(parse("\"7\""), Ok(TenantId::Text("7".into())));
        for bad in [
            "9223372036854775808",
            "-9223372036854775809",
            "1.5",
            "null",
            "[1]",
        ] {
            let message = parse(bad).unwrap_err();
            assert!(
                message.starts_with(&format!(
                    "a tenant id is a 64-bit integer or a string, got {bad}"
                )),
                "{bad}: {message}"
            );
        }
        assert_eq!(
            serde_json::to_string(&TenantId::Text("a".into())).unwrap(),
            "\"a\""
        );
    }
}
