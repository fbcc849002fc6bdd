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
    /// Phases: the database path, the table's names, the busy timeout, the
    /// lookup strategy, the defaults.
    pub fn from_json(obj: &Map<String, Value>) -> Result<Self> {
        let mut config = SettingsConfig::new(database_from_json(obj.get("database"))?);
        config.names_from_json(obj)?;
        if let Some(timeout) = busy_timeout_from_json(obj.get("busy_timeout_ms"))? {
            config.busy_timeout = timeout;
        }
        if let Some(lookup) = lookup_from_json(obj.get("lookup"))? {
            config.lookup = lookup;
        }
        config.defaults = defaults_from_json(obj.get("defaults"))?;
        Ok(config)
    }

    /// The table's name and its column names, each optional.
    fn names_from_json(&mut self, obj: &Map<String, Value>) -> Result<()> {
        let names: [(&str, &mut String); 8] = [
            ("table", &mut self.table),
            ("tenant_column", &mut self.tenant_column),
            ("target_type_column", &mut self.target_type_column),
            ("target_id_column", &mut self.target_id_column),
            ("key_column", &mut self.key_column),
            ("value_column", &mut self.value_column),
            ("created_at_column", &mut self.created_at_column),
            ("updated_at_column", &mut self.updated_at_column),
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
        Ok(())
    }
}

/// `database`: required, a non-empty path.
fn database_from_json(value: Option<&Value>) -> Result<String> {
    match value {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Null) | None => Err(Error::argument(
            "database: the path of the SQLite file is required",
        )),
        Some(other) => Err(Error::argument(format!(
            "database must be a path String (got {other})"
        ))),
    }
}

/// `busy_timeout_ms`: optional, an Integer within the crate's bound.
fn busy_timeout_from_json(value: Option<&Value>) -> Result<Option<Duration>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n))
            if n.as_u64()
                .is_some_and(|ms| ms <= crate::db::MAX_BUSY_TIMEOUT_MS) =>
        {
            Ok(Some(Duration::from_millis(n.as_u64().unwrap_or_default())))
        }
        Some(other) => Err(Error::argument(format!(
            "busy_timeout_ms must be an Integer from 0 to {} (got {other})",
            crate::db::MAX_BUSY_TIMEOUT_MS
        ))),
    }
}

/// `lookup`: optional, one of [`Lookup`]'s names.
fn lookup_from_json(value: Option<&Value>) -> Result<Option<Lookup>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Lookup::parse(s).map(Some),
        Some(other) => Err(Error::argument(format!(
            "lookup must be a String (got {other})"
        ))),
    }
}

/// `defaults`: optional, class name => { key => default value }; a class
/// given `null` has no keys.
fn defaults_from_json(value: Option<&Value>) -> Result<HashMap<String, Map<String, Value>>> {
    let classes = match value {
        None | Some(Value::Null) => return Ok(HashMap::new()),
        Some(Value::Object(classes)) => classes,
        Some(other) => {
            return Err(Error::argument(format!(
                "defaults must be a Hash of class name => {{ key => value }} (got {other})"
            )))
        }
    };
    let mut defaults = HashMap::with_capacity(classes.len());
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
        defaults.insert(klass.clone(), keys);
    }
    Ok(defaults)
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
