//! The JSON front door of settings: one JSON object in, one JSON object out,
//! shared by the Ruby binding (a kept [`Settings`] per Ruby object, see
//! [`open_json`] / [`call_json`]) and the C ABI (stateless
//! [`resolve_json`]).

use super::cascade::{Explained, ExplainedJson};
use super::config::{
    klass_from_json, tenant_from_json, SettingsConfig, TargetId, TenantId, CONFIG_KEYS,
};
use super::store::Settings;
use crate::error::{Error, Result};
use serde::Serialize;
use serde_json::{Map, Value};
use std::sync::Mutex;

const CALL_KEYS: &[&str] = &["op", "tenant_id", "klass", "id", "ids"];

/// What a call asks for (`op` of the request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Resolve,
    Explain,
    ResolveMany,
    Build,
}

/// The call part of a request, validated (see [`resolve_json`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub op: Op,
    pub tenant: TenantId,
    pub klass: String,
    /// `None`: the class level. Always `None` for `resolve_many`.
    pub id: Option<TargetId>,
    /// Only for `resolve_many`.
    pub ids: Vec<TargetId>,
}

fn parse_object(json: &str, what: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(other) => Err(Error::argument(format!(
            "{what} must be a JSON object (got {other})"
        ))),
        Err(e) => Err(Error::argument(format!("{what} is not valid JSON: {e}"))),
    }
}

fn check_keys(obj: &Map<String, Value>, allowed: &[&[&str]], what: &str) -> Result<()> {
    for key in obj.keys() {
        if !allowed.iter().any(|set| set.contains(&key.as_str())) {
            let mut known: Vec<&str> = allowed.iter().flat_map(|set| set.iter().copied()).collect();
            known.sort_unstable();
            return Err(Error::argument(format!(
                "{what}: unknown key {key:?} (known: {})",
                known.join(", ")
            )));
        }
    }
    Ok(())
}

impl Call {
    /// Parse and check the call part of a request (`op`, `tenant_id`,
    /// `klass`, `id`, `ids`; other keys are rejected).
    pub fn parse(call_json: &str) -> Result<Call> {
        let obj = parse_object(call_json, "settings call")?;
        check_keys(&obj, &[CALL_KEYS], "settings call")?;
        Call::from_json(&obj)
    }

    fn from_json(obj: &Map<String, Value>) -> Result<Call> {
        let op = match obj.get("op") {
            None | Some(Value::Null) => Op::Resolve,
            Some(Value::String(s)) => match s.as_str() {
                "resolve" => Op::Resolve,
                "explain" => Op::Explain,
                "resolve_many" => Op::ResolveMany,
                "build_settings_for" => Op::Build,
                other => {
                    return Err(Error::argument(format!(
                        "op must be \"resolve\", \"explain\", \"resolve_many\" or \"build_settings_for\" (got {other:?})"
                    )))
                }
            },
            Some(other) => return Err(Error::argument(format!("op must be a String (got {other})"))),
        };
        let tenant = tenant_from_json(obj.get("tenant_id"))?;
        let klass = klass_from_json(obj.get("klass"))?;
        let mut call = Call {
            op,
            tenant,
            klass,
            id: None,
            ids: Vec::new(),
        };
        if op == Op::ResolveMany {
            if obj.get("id").is_some_and(|v| !v.is_null()) {
                return Err(Error::argument("resolve_many takes ids: [...], not id:"));
            }
            match obj.get("ids") {
                Some(Value::Array(ids)) => {
                    call.ids = ids
                        .iter()
                        .enumerate()
                        .map(|(i, v)| TargetId::from_json(&format!("ids[{i}]"), v))
                        .collect::<Result<_>>()?
                }
                None | Some(Value::Null) => {
                    return Err(Error::argument("resolve_many: ids is required (got nil)"))
                }
                Some(other) => {
                    return Err(Error::argument(format!(
                        "ids must be an Array of ids (got {other})"
                    )))
                }
            }
        } else {
            if obj.get("ids").is_some_and(|v| !v.is_null()) {
                return Err(Error::argument(
                    "ids is only for resolve_many; pass id: instead",
                ));
            }
            call.id = match obj.get("id") {
                None | Some(Value::Null) => None,
                Some(v) => Some(TargetId::from_json("id", v)?),
            };
        }
        Ok(call)
    }

    /// Run the call; the result as the JSON documented on [`resolve_json`].
    pub fn run_json(&self, settings: &mut Settings) -> Result<String> {
        let (tenant, klass, id) = (&self.tenant, self.klass.as_str(), self.id.as_ref());
        let json = match self.op {
            Op::Resolve => to_json(&SettingsOut {
                settings: &settings.resolve(tenant, klass, id)?,
            }),
            Op::Explain => to_json(&ExplainOut {
                settings: ExplainedMap(&settings.explain(tenant, klass, id)?),
            }),
            Op::ResolveMany => {
                // Written as it is resolved: no map per target.
                let mut out = Vec::with_capacity(64 + self.ids.len() * 128);
                out.extend_from_slice(b"{\"results\":[");
                let mut first = true;
                settings.resolve_many_each(tenant, klass, &self.ids, |id, pairs| {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    let entry = ManyEntry {
                        id: id.to_json(),
                        settings: Pairs(pairs),
                    };
                    serde_json::to_writer(&mut out, &entry)
                        .map_err(|e| Error::internal(e.to_string()))
                })?;
                out.extend_from_slice(b"]}");
                String::from_utf8(out).map_err(|e| Error::internal(e.to_string()))
            }
            Op::Build => to_json(&BuildOut {
                created: settings.build_settings_for(tenant, klass, id)?,
            }),
        };
        json
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| Error::internal(format!("settings: encoding the result: {e}")))
}

#[derive(Serialize)]
struct SettingsOut<'a> {
    settings: &'a Map<String, Value>,
}

#[derive(Serialize)]
struct ExplainOut<'a> {
    settings: ExplainedMap<'a>,
}

struct ExplainedMap<'a>(&'a [(String, Explained)]);

impl Serialize for ExplainedMap<'_> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_map(
            self.0
                .iter()
                .map(|(key, entry)| (key, ExplainedJson(entry))),
        )
    }
}

#[derive(Serialize)]
struct ManyEntry<'a> {
    id: Value,
    settings: Pairs<'a>,
}

/// Resolved (key, value) pairs as a JSON object.
struct Pairs<'a>(&'a [(&'a str, &'a Value)]);

impl Serialize for Pairs<'_> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

#[derive(Serialize)]
struct BuildOut {
    created: usize,
}

/// Open a [`Settings`] from the configuration part of a request (the keys
/// `database` … `defaults` of [`resolve_json`], nothing else). The Ruby
/// binding keeps one per `TenantKit::Settings` object.
pub fn open_json(config_json: &str) -> Result<Settings> {
    let obj = parse_object(config_json, "settings options")?;
    check_keys(&obj, &[CONFIG_KEYS], "settings options")?;
    Settings::open(SettingsConfig::from_json(&obj)?)
}

/// Run the call part of a request (`op`, `tenant_id`, `klass`, `id`, `ids`
/// of [`resolve_json`]) on an open [`Settings`]; the result is the same
/// JSON as [`resolve_json`]'s.
pub fn call_json(settings: &mut Settings, call_json: &str) -> Result<String> {
    Call::parse(call_json)?.run_json(settings)
}

/// Open connections kept between [`resolve_json`] calls, by configuration.
static POOL: Mutex<Vec<(String, Settings)>> = Mutex::new(Vec::new());
const POOL_MAX: usize = 8;

/// `tk_settings_resolve`: one settings call, JSON in, JSON out, no handle.
///
/// # Request
/// One JSON object: the configuration, then the call.
/// ```json
/// {
///   "database": "db/production.sqlite3",
///   "table": "settings",
///   "tenant_column": "tenant_id",
///   "target_type_column": "target_type",
///   "target_id_column": "target_id",
///   "key_column": "key",
///   "value_column": "value",
///   "created_at_column": "created_at",
///   "updated_at_column": "updated_at",
///   "busy_timeout_ms": 5000,
///   "lookup": "auto",
///   "defaults": { "User": { "theme": "light", "per_page": 25 } },
///
///   "op": "resolve",
///   "tenant_id": 1,
///   "klass": "User",
///   "id": 42,
///   "ids": [42, 43, "44"]
/// }
/// ```
/// - `database` (required): path of an existing SQLite file.
/// - `table` … `updated_at_column`, `busy_timeout_ms`, `lookup`
///   (`"auto"`, `"query"`, `"snapshot"`, see [`Lookup`](super::Lookup)),
///   `defaults` (class name => key => JSON value): optional, defaults shown.
/// - `op`: `"resolve"` (default), `"explain"`, `"resolve_many"`,
///   `"build_settings_for"`.
/// - `tenant_id` (required): integer or string.
/// - `klass` (required): class name string.
/// - `id`: integer or string; absent or `null` means the class level. Not
///   with `resolve_many`, which takes `ids` (required, an array of integers
///   and strings) instead.
///
/// Unknown keys are rejected.
///
/// # Response
/// - `resolve`: `{"settings": {"theme": "dark", "per_page": 25}}`: keys in
///   the order of `defaults[klass]`, then other keys sorted.
/// - `explain`: `{"settings": {"theme": {"value": "dark", "source":
///   "instance", "row_id": 17, "errors": []}}}`: `source` is `"default"`,
///   `"tenant"`, `"class"`, `"instance"` or `null` (only invalid rows, no
///   default); `row_id` is `null` for defaults; `errors` lists the stronger
///   rows skipped because their value is invalid.
/// - `resolve_many`: `{"results": [{"id": 42, "settings": {...}}, ...]}`,
///   one entry per distinct id in request order, `id` echoed as given
///   (`42` and `"42"` are the same target: only the first is kept).
/// - `build_settings_for`: `{"created": 3}`.
///
/// # Errors
/// [`ErrorKind::Argument`](crate::ErrorKind) for a malformed request, a
/// missing database file, table or column, a missing `tenant_id` or
/// `klass`, or `build_settings_for` on a class without defaults;
/// [`ErrorKind::Integrity`](crate::ErrorKind) for a stored value that is
/// not JSON or contradicts its default's type (the message names the row);
/// [`ErrorKind::Database`](crate::ErrorKind) when SQLite fails (e.g. busy
/// past the timeout).
///
/// Connections are kept between calls (a few per configuration, opened
/// again after `fork`), so repeated calls do not pay for opening the
/// database.
pub fn resolve_json(request_json: &str) -> Result<String> {
    let obj = parse_object(request_json, "settings request")?;
    check_keys(&obj, &[CONFIG_KEYS, CALL_KEYS], "settings request")?;
    let (config, call): (Map<String, Value>, Map<String, Value>) = obj
        .into_iter()
        .partition(|(key, _)| CONFIG_KEYS.contains(&key.as_str()));
    let call = Call::from_json(&call)?;
    let fingerprint = Value::Object(config.clone()).to_string();

    let pooled = {
        let mut pool = POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        pool.iter()
            .position(|(key, _)| *key == fingerprint)
            .map(|pos| pool.remove(pos).1)
    };
    let mut settings = match pooled {
        Some(settings) => settings,
        None => Settings::open(SettingsConfig::from_json(&config)?)?,
    };
    let result = call.run_json(&mut settings);
    let mut pool = POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if pool.len() >= POOL_MAX {
        pool.remove(0);
    }
    pool.push((fingerprint, settings));
    result
}
