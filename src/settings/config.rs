//! Options of a [`Settings`](super::Settings) and the ids it is called with.

use crate::error::{Error, Result};
pub use crate::TenantId;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// How a [`Settings`](super::Settings) finds the rows of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// `query` when the table has an index whose leading columns are
    /// (tenant, target_type, target_id), `snapshot` otherwise.
    Auto,
    /// One query per call (fast only with the index above).
    Query,
    /// Load all rows of a tenant once, keep them, reload when
    /// `PRAGMA data_version` says another connection committed.
    Snapshot,
}

impl Lookup {
    pub fn name(self) -> &'static str {
        match self {
            Lookup::Auto => "auto",
            Lookup::Query => "query",
            Lookup::Snapshot => "snapshot",
        }
    }

    fn parse(name: &str) -> Result<Self> {
        match name {
            "auto" => Ok(Lookup::Auto),
            "query" => Ok(Lookup::Query),
            "snapshot" => Ok(Lookup::Snapshot),
            other => Err(Error::argument(format!(
                "lookup must be \"auto\", \"query\" or \"snapshot\" (got {other:?})"
            ))),
        }
    }
}

/// Where the settings live and what the defaults are.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingsConfig {
    /// Path of the app's SQLite file; it must exist.
    pub database: PathBuf,
    pub table: String,
    pub tenant_column: String,
    pub target_type_column: String,
    pub target_id_column: String,
    pub key_column: String,
    pub value_column: String,
    /// Set on rows `build_settings_for` creates, when the table has them.
    pub created_at_column: String,
    pub updated_at_column: String,
    /// How long a call waits for a lock another connection holds.
    pub busy_timeout: Duration,
    pub lookup: Lookup,
    /// Class name => (key => default value), keys in the caller's order.
    pub defaults: HashMap<String, Map<String, Value>>,
}

/// Keys of the JSON object accepted by [`SettingsConfig::from_json`].
pub(crate) const CONFIG_KEYS: &[&str] = &[
    "database",
    "table",
    "tenant_column",
    "target_type_column",
    "target_id_column",
    "key_column",
    "value_column",
    "created_at_column",
    "updated_at_column",
    "busy_timeout_ms",
    "lookup",
    "defaults",
];

impl SettingsConfig {
    /// The Rails defaults: table `settings`, tenant column `tenant_id`,
    /// 5 s busy timeout, automatic lookup, no defaults.
    pub fn new(database: impl Into<PathBuf>) -> Self {
        SettingsConfig {
            database: database.into(),
            table: "settings".into(),
            tenant_column: "tenant_id".into(),
            target_type_column: "target_type".into(),
            target_id_column: "target_id".into(),
            key_column: "key".into(),
            value_column: "value".into(),
            created_at_column: "created_at".into(),
            updated_at_column: "updated_at".into(),
            busy_timeout: Duration::from_millis(5000),
            lookup: Lookup::Auto,
            defaults: HashMap::new(),
        }
    }

    /// Builder: the defaults of one class.
    pub fn with_defaults(mut self, klass: &str, defaults: Map<String, Value>) -> Self {
        self.defaults.insert(klass.to_string(), defaults);
        self
    }

    /// Builder: force a lookup strategy.
    pub fn with_lookup(mut self, lookup: Lookup) -> Self {
        self.lookup = lookup;
        self
    }

    /// From the config keys of a JSON request (see
    /// [`resolve_json`](super::resolve_json)); other keys are ignored here.
    pub fn from_json(obj: &Map<String, Value>) -> Result<Self> {
        let database = match obj.get("database") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Null) | None => {
                return Err(Error::argument(
                    "database: the path of the SQLite file is required",
                ))
            }
            Some(other) => {
                return Err(Error::argument(format!(
                    "database must be a path String (got {other})"
                )))
            }
        };
        let mut config = SettingsConfig::new(database);
        let names: [(&str, &mut String); 8] = [
            ("table", &mut config.table),
            ("tenant_column", &mut config.tenant_column),
            ("target_type_column", &mut config.target_type_column),
            ("target_id_column", &mut config.target_id_column),
            ("key_column", &mut config.key_column),
            ("value_column", &mut config.value_column),
            ("created_at_column", &mut config.created_at_column),
            ("updated_at_column", &mut config.updated_at_column),
        ];
        for (name, slot) in names {
            match obj.get(name) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if !s.is_empty() => *slot = s.clone(),
                Some(other) => {
                    return Err(Error::argument(format!(
                        "{name} must be a non-empty String (got {other})"
                    )))
                }
            }
        }
        match obj.get("busy_timeout_ms") {
            None | Some(Value::Null) => {}
            Some(Value::Number(n))
                if n.as_u64()
                    .is_some_and(|ms| ms <= crate::db::MAX_BUSY_TIMEOUT_MS) =>
            {
                config.busy_timeout = Duration::from_millis(n.as_u64().unwrap_or_default())
            }
            Some(other) => {
                return Err(Error::argument(format!(
                    "busy_timeout_ms must be an Integer from 0 to {} (got {other})",
                    crate::db::MAX_BUSY_TIMEOUT_MS
                )))
            }
        }
        match obj.get("lookup") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => config.lookup = Lookup::parse(s)?,
            Some(other) => {
                return Err(Error::argument(format!(
                    "lookup must be a String (got {other})"
                )))
            }
        }
        match obj.get("defaults") {
            None | Some(Value::Null) => {}
            Some(Value::Object(classes)) => {
                for (klass, keys) in classes {
                    let keys = match keys {
                        Value::Object(keys) => keys.clone(),
                        Value::Null => Map::new(),
                        other => {
                            return Err(Error::argument(format!(
                                "defaults[{klass:?}] must be a Hash of key => default value (got {other})"
                            )))
                        }
                    };
                    config.defaults.insert(klass.clone(), keys);
                }
            }
            Some(other) => {
                return Err(Error::argument(format!(
                    "defaults must be a Hash of class name => {{ key => value }} (got {other})"
                )))
            }
        }
        Ok(config)
    }
}

/// The tenant id of a settings request: the crate's one [`TenantId`]
/// (Integer, text, or a BLOB as `{"$base64": ...}`), required.
pub(crate) fn tenant_from_json(value: Option<&Value>) -> Result<TenantId> {
    match value {
        None | Some(Value::Null) => Err(Error::argument("tenant_id is required (got nil)")),
        Some(Value::String(s)) if s.is_empty() => Err(Error::argument(
            "tenant_id must be an Integer or a non-empty String (got \"\")",
        )),
        Some(value) => serde_json::from_value(value.clone()).map_err(|_| {
            Error::argument(format!(
                "tenant_id must be an Integer, a non-empty String or a BLOB as {{\"$base64\": \"...\"}} (got {value})"
            ))
        }),
    }
}

/// The id of a target record. Compared as text (see the module docs):
/// `Int(42)` and `Text("42")` are the same target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetId {
    Int(i64),
    Text(String),
}

impl TargetId {
    /// The text this id is matched against `target_id` with.
    pub fn canonical(&self) -> String {
        match self {
            TargetId::Int(i) => i.to_string(),
            TargetId::Text(s) => s.clone(),
        }
    }

    /// The id as the caller gave it (number or string).
    pub fn to_json(&self) -> Value {
        match self {
            TargetId::Int(i) => Value::from(*i),
            TargetId::Text(s) => Value::from(s.as_str()),
        }
    }

    pub(crate) fn from_json(name: &str, value: &Value) -> Result<Self> {
        match value {
            Value::Number(n) => n.as_i64().map(TargetId::Int).ok_or_else(|| {
                Error::argument(format!("{name} must be an Integer or a String (got {n})"))
            }),
            Value::String(s) if !s.is_empty() => Ok(TargetId::Text(s.clone())),
            other => Err(Error::argument(format!(
                "{name} must be an Integer or a non-empty String (got {other})"
            ))),
        }
    }
}

impl From<i64> for TargetId {
    fn from(id: i64) -> Self {
        TargetId::Int(id)
    }
}

impl From<&str> for TargetId {
    fn from(id: &str) -> Self {
        TargetId::Text(id.to_string())
    }
}

impl fmt::Display for TargetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetId::Int(i) => write!(f, "{i}"),
            TargetId::Text(s) => write!(f, "{s:?}"),
        }
    }
}

/// A class name argument: a non-empty string.
pub(crate) fn klass_from_json(value: Option<&Value>) -> Result<String> {
    match value {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        None | Some(Value::Null) => Err(Error::argument(
            "klass is required: a class name such as \"User\" (got nil)",
        )),
        Some(other) => Err(Error::argument(format!(
            "klass must be a class name String such as \"User\" (got {other})"
        ))),
    }
}
