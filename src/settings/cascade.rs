//! The cascade itself, free of SQL: rows of each level in, effective values
//! (or their explanation) out. The rules are documented on the parent module.

use super::config::{TargetId, TenantId};
use crate::error::{Error, Result};
use rusqlite::types::ValueRef;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Where an effective value comes from, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// The caller's `defaults[klass][key]`.
    Default,
    /// A row with `target_type` and `target_id` NULL.
    Tenant,
    /// A row with `target_type = klass` and `target_id` NULL.
    Class,
    /// A row with `target_type = klass` and `target_id = id`.
    Instance,
}

impl Level {
    /// `default`, `tenant`, `class`, `instance`: the names used in JSON and
    /// (as Symbols) in Ruby.
    pub fn name(self) -> &'static str {
        match self {
            Level::Default => "default",
            Level::Tenant => "tenant",
            Level::Class => "class",
            Level::Instance => "instance",
        }
    }
}

/// One key of an `explain` result.
#[derive(Debug, Clone, PartialEq)]
pub struct Explained {
    /// The effective value (JSON `null` when nothing valid provides one).
    pub value: Value,
    /// The level it comes from; `None` when only invalid rows name the key
    /// and there is no default.
    pub source: Option<Level>,
    /// The settings row it comes from (`None` for defaults).
    pub row_id: Option<i64>,
    /// Stronger rows that were skipped because their value is invalid, each
    /// described as `resolve` would have reported it.
    pub errors: Vec<String>,
}

/// A stored value parsed: `Err` says why it is not JSON.
pub(crate) type Parsed = std::result::Result<Value, String>;

/// One settings row of one level, its value already parsed. Keys and values
/// are shared between the rows of one load (see [`Interner`]).
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub id: i64,
    pub key: Arc<str>,
    pub value: Arc<Parsed>,
}

/// Shares equal keys and equal stored values between the rows of one load:
/// a tenant's thousands of rows hold a few dozen distinct keys and values,
/// each parsed and allocated once.
pub(crate) struct Interner {
    /// Off for the few rows of one target, where the maps cost more than
    /// they save.
    enabled: bool,
    keys: HashSet<Arc<str>, FastHash>,
    values: HashMap<Box<[u8]>, Arc<Parsed>, FastHash>,
}

impl Interner {
    pub fn new(enabled: bool) -> Self {
        Interner {
            enabled,
            keys: HashSet::default(),
            values: HashMap::default(),
        }
    }

    pub fn row(&mut self, id: i64, key: &str, raw: ValueRef<'_>) -> Row {
        if !self.enabled {
            return Row {
                id,
                key: Arc::from(key),
                value: Arc::new(parse_value(raw)),
            };
        }
        let key = match self.keys.get(key) {
            Some(key) => key.clone(),
            None => {
                let key: Arc<str> = Arc::from(key);
                self.keys.insert(key.clone());
                key
            }
        };
        let value = match raw {
            ValueRef::Text(text) => match self.values.get(text) {
                Some(value) => value.clone(),
                None => {
                    let value = Arc::new(parse_value(raw));
                    if self.values.len() < 100_000 {
                        self.values.insert(text.into(), value.clone());
                    }
                    value
                }
            },
            other => Arc::new(parse_value(other)),
        };
        Row { id, key, value }
    }
}

/// FxHash (rustc's hasher): much faster than SipHash on short keys. The
/// keys hashed with it (target ids, setting keys and values of one tenant)
/// come from the app's own table, not from strangers.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
        }
        for &byte in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(byte)).wrapping_mul(K);
        }
    }

    fn write_u8(&mut self, byte: u8) {
        self.write(&[byte]);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FastHash = std::hash::BuildHasherDefault<FxHasher>;

/// A stored value as JSON. SQL NULL is JSON null; numbers stored as numbers
/// (a column with NUMERIC affinity, e.g. Rails' `t.json`) are JSON numbers.
fn parse_value(raw: ValueRef<'_>) -> Parsed {
    match raw {
        ValueRef::Null => Ok(Value::Null),
        ValueRef::Integer(i) => Ok(Value::from(i)),
        ValueRef::Real(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| format!("value {f} is not a JSON number")),
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => serde_json::from_slice(bytes)
            .map_err(|e| format!("value is not valid JSON ({e}): {}", snippet_bytes(bytes))),
    }
}

fn snippet_bytes(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut short: String = text.chars().take(60).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    format!("{short:?}")
}

fn snippet(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= 60 {
        text
    } else {
        let mut short: String = text.chars().take(60).collect();
        short.push('…');
        short
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn same_type(a: &Value, b: &Value) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// The rows one target sees, per level.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Levels<'a> {
    pub tenant: &'a [Row],
    pub class: &'a [Row],
    pub instance: &'a [Row],
}

/// Who a call is about, for error messages.
pub(crate) struct Target<'a> {
    pub tenant: &'a TenantId,
    pub klass: &'a str,
    pub id: Option<&'a TargetId>,
}

impl Target<'_> {
    fn describe(&self, level: Level) -> String {
        let tenant = self.tenant;
        let klass = self.klass;
        match (level, self.id) {
            (Level::Instance, Some(id)) => format!("tenant {tenant}, instance {klass}#{id}"),
            (Level::Instance, None) | (Level::Class, _) => {
                format!("tenant {tenant}, class {klass}")
            }
            (Level::Tenant, _) => format!("tenant {tenant}, tenant level"),
            (Level::Default, _) => format!("defaults of {klass}"),
        }
    }

    fn row_error(&self, row: &Row, level: Level, why: &str) -> String {
        format!(
            "settings row {} ({}, key {:?}): {why}",
            row.id,
            self.describe(level),
            row.key
        )
    }
}

/// The strongest row per key: higher level first, lowest id among
/// duplicates of one level.
type Winners<'a> = HashMap<&'a str, (Level, &'a Row)>;

fn add_winners<'a>(winners: &mut Winners<'a>, level: Level, rows: &'a [Row]) {
    for row in rows {
        let stronger = match winners.get(&*row.key) {
            None => true,
            Some((have, best)) => level > *have || (level == *have && row.id < best.id),
        };
        if stronger {
            winners.insert(&*row.key, (level, row));
        }
    }
}

/// Why `row` cannot be the value of its key, if it cannot.
fn problem<'r>(row: &'r Row, default: Option<&Value>) -> std::result::Result<&'r Value, String> {
    let value = row.value.as_ref().as_ref().map_err(Clone::clone)?;
    match default {
        Some(default) if !default.is_null() && !value.is_null() && !same_type(default, value) => {
            Err(format!(
                "value {} is {} but the default {} is {}",
                snippet(value),
                type_name(value),
                snippet(default),
                type_name(default)
            ))
        }
        _ => Ok(value),
    }
}

/// Keys not named by the defaults, sorted by name.
fn extra_keys<'w>(
    winners: impl Iterator<Item = &'w str>,
    defaults: Option<&Map<String, Value>>,
) -> Vec<&'w str> {
    let mut extra: Vec<&str> = winners
        .filter(|key| defaults.is_none_or(|d| !d.contains_key(*key)))
        .collect();
    extra.sort_unstable();
    extra
}

/// One key of a [`Base`].
struct BaseEntry<'a> {
    key: &'a str,
    default: Option<&'a Value>,
    /// The value without instance rows, or the message of the error it
    /// raises when it is the effective one.
    value: std::result::Result<&'a Value, String>,
}

/// Defaults, tenant and class levels of one class merged once; every
/// instance of a call is resolved on top of it without hashing or
/// allocating (see [`Base::resolve_into`]).
pub(crate) struct Base<'a> {
    /// The keys of the defaults in their order, then the other keys sorted.
    entries: Vec<BaseEntry<'a>>,
    named: usize,
    /// Key => entry, only when there are too many keys for a linear scan.
    index: Option<HashMap<&'a str, usize>>,
}

/// Reused buffers of [`Base::resolve_into`].
#[derive(Default)]
pub(crate) struct Scratch<'a> {
    overrides: Vec<Option<&'a Row>>,
    extra: Vec<&'a Row>,
}

impl<'a> Base<'a> {
    /// `tenant` and `class` are the rows of those levels (pass an empty
    /// `class` to get what is in effect below the class level).
    pub fn new(
        defaults: Option<&'a Map<String, Value>>,
        tenant: &'a [Row],
        class: &'a [Row],
        target: &Target,
    ) -> Self {
        let mut winners = Winners::with_capacity(tenant.len() + class.len());
        add_winners(&mut winners, Level::Tenant, tenant);
        add_winners(&mut winners, Level::Class, class);
        let entry = |key: &'a str, default: Option<&'a Value>| {
            let value = match winners.get(key) {
                Some((level, row)) => {
                    problem(row, default).map_err(|why| target.row_error(row, *level, &why))
                }
                None => default.ok_or_else(|| format!("no value for {key:?}")),
            };
            BaseEntry {
                key,
                default,
                value,
            }
        };
        let mut entries: Vec<BaseEntry<'a>> = defaults
            .into_iter()
            .flatten()
            .map(|(key, default)| entry(key.as_str(), Some(default)))
            .collect();
        let named = entries.len();
        for key in extra_keys(winners.keys().copied(), defaults) {
            entries.push(entry(key, None));
        }
        let index = (entries.len() > 24).then(|| {
            entries
                .iter()
                .enumerate()
                .map(|(i, e)| (e.key, i))
                .collect()
        });
        Base {
            entries,
            named,
            index,
        }
    }

    fn position(&self, key: &str) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(key).copied(),
            None => self.entries.iter().position(|e| e.key == key),
        }
    }

    /// The value of `key` without instance rows (`None`: no such key).
    pub fn value_of(&self, key: &str) -> Option<Result<&'a Value>> {
        let entry = &self.entries[self.position(key)?];
        Some(entry.value.clone().map_err(Error::integrity))
    }

    /// The effective settings of one target, as (key, value) pairs in result
    /// order, into `out`: this base with the target's `instance` rows on top.
    pub fn resolve_into(
        &self,
        instance: &'a [Row],
        target: &Target,
        scratch: &mut Scratch<'a>,
        out: &mut Vec<(&'a str, &'a Value)>,
    ) -> Result<()> {
        let Scratch { overrides, extra } = scratch;
        overrides.clear();
        overrides.resize(self.entries.len(), None);
        extra.clear();
        for row in instance {
            let slot = match self.position(&row.key) {
                Some(i) => &mut overrides[i],
                None => match extra.iter().position(|r| r.key == row.key) {
                    Some(j) => {
                        if row.id < extra[j].id {
                            extra[j] = row;
                        }
                        continue;
                    }
                    None => {
                        extra.push(row);
                        continue;
                    }
                },
            };
            if slot.is_none_or(|have| row.id < have.id) {
                *slot = Some(row);
            }
        }
        let instance_value = |row: &'a Row, default: Option<&Value>| {
            problem(row, default)
                .map_err(|why| Error::integrity(target.row_error(row, Level::Instance, &why)))
        };
        let value = |i: usize| -> Result<&'a Value> {
            let entry = &self.entries[i];
            match overrides[i] {
                Some(row) => instance_value(row, entry.default),
                None => entry.value.clone().map_err(Error::integrity),
            }
        };
        out.clear();
        for i in 0..self.named {
            out.push((self.entries[i].key, value(i)?));
        }
        if extra.is_empty() {
            for i in self.named..self.entries.len() {
                out.push((self.entries[i].key, value(i)?));
            }
            return Ok(());
        }
        // Merge the base's other keys with the instance's own, both sorted.
        extra.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        let (mut i, mut j) = (self.named, 0);
        while i < self.entries.len() || j < extra.len() {
            let take_base = j == extra.len()
                || (i < self.entries.len() && self.entries[i].key < &*extra[j].key);
            if take_base {
                out.push((self.entries[i].key, value(i)?));
                i += 1;
            } else {
                out.push((&*extra[j].key, instance_value(extra[j], None)?));
                j += 1;
            }
        }
        Ok(())
    }
}

/// Owned copy of resolved pairs.
pub(crate) fn to_map(pairs: &[(&str, &Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), (*v).clone()))
        .collect()
}

/// Value and source of every key of one target, in result order; invalid
/// rows are skipped and reported in [`Explained::errors`] instead of failing.
pub(crate) fn explain(
    defaults: Option<&Map<String, Value>>,
    levels: Levels<'_>,
    target: &Target,
) -> Vec<(String, Explained)> {
    let mut candidates: HashMap<&str, Vec<(Level, &Row)>> = HashMap::new();
    for (level, rows) in [
        (Level::Tenant, levels.tenant),
        (Level::Class, levels.class),
        (Level::Instance, levels.instance),
    ] {
        for row in rows {
            candidates.entry(&*row.key).or_default().push((level, row));
        }
    }
    let mut keys: Vec<&str> = defaults
        .map(|d| d.keys().map(String::as_str).collect())
        .unwrap_or_default();
    keys.extend(extra_keys(candidates.keys().copied(), defaults));

    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let default = defaults.and_then(|d| d.get(key));
        let mut entry = Explained {
            value: Value::Null,
            source: None,
            row_id: None,
            errors: Vec::new(),
        };
        let mut rows = candidates.remove(key).unwrap_or_default();
        // Strongest first; among duplicates of one level the lowest id.
        rows.sort_by(|(la, ra), (lb, rb)| lb.cmp(la).then(ra.id.cmp(&rb.id)));
        for (level, row) in rows {
            match problem(row, default) {
                Ok(value) => {
                    entry.value = value.clone();
                    entry.source = Some(level);
                    entry.row_id = Some(row.id);
                    break;
                }
                Err(why) => entry.errors.push(target.row_error(row, level, &why)),
            }
        }
        if entry.source.is_none() {
            if let Some(default) = default {
                entry.value = default.clone();
                entry.source = Some(Level::Default);
            }
        }
        out.push((key.to_string(), entry));
    }
    out
}

/// Serializable view used by the JSON front door.
pub(crate) struct ExplainedJson<'a>(pub &'a Explained);

impl serde::Serialize for ExplainedJson<'_> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let e = self.0;
        let mut map = serializer.serialize_map(Some(4))?;
        map.serialize_entry("value", &e.value)?;
        map.serialize_entry("source", &e.source.map(Level::name))?;
        map.serialize_entry("row_id", &e.row_id)?;
        map.serialize_entry("errors", &e.errors)?;
        map.end()
    }
}
