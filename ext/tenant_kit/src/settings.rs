//! Ruby binding of `TenantKit::Settings` (lib/tenant_kit/settings.rb).
//!
//! `TenantKit::Native::Settings` is a handle on one core
//! `tenant_kit::settings::Settings` (its connection, prepared statements and
//! snapshots), kept for the life of the Ruby object. Requests come in as the
//! JSON of `tenant_kit::settings::Call`; `resolve` and `resolve_many` answer
//! with Ruby Hashes built straight from the core's values (parsing a
//! megabyte of JSON in Ruby would cost more than resolving it), `call`
//! (explain, build_settings_for) answers with the core's JSON.
//!
//! The GVL: a resolve takes microseconds, less than releasing and taking
//! back the GVL costs, so each call first runs with the GVL held, under a
//! busy handler that gives up at once instead of waiting for a lock. Only
//! when SQLite reports busy (another connection, possibly another Ruby
//! thread of this process, holds a lock), or another thread is using this
//! handle, is the call run again without the GVL, waiting up to the busy
//! timeout. So a call never holds the GVL while it waits.

use crate::{errors, gvl};
use magnus::{
    function, method, prelude::*, Error as RbError, ExceptionClass, RClass, RHash, RModule,
    RString, Ruby, Value as RbValue,
};
use serde_json::Value;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard, TryLockError};
use tenant_kit::settings::{self, Call, Op, Settings, TargetId};
use tenant_kit::ErrorKind;

/// One `Settings` per Ruby object; the mutex serializes Ruby threads that
/// share the object.
#[magnus::wrap(class = "TenantKit::Native::Settings", free_immediately, size)]
struct Handle(Mutex<Settings>, &'static str);

impl Handle {
    fn lock(&self) -> MutexGuard<'_, Settings> {
        // A panic while locked was reported as InternalError; the core's
        // state stays usable (no transaction outlives a call).
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `Native::Settings.open(config_json)`: opens the database and checks
    /// the table; raises ArgumentError for a missing file, table or column.
    fn open(ruby: &Ruby, config_json: String) -> Result<Handle, RbError> {
        let settings = without_gvl(ruby, || settings::open_json(&config_json))?;
        let lookup = settings.lookup().name();
        Ok(Handle(Mutex::new(settings), lookup))
    }

    /// Run `work` with the GVL held if the handle is free, never waiting for
    /// a database lock. `Ok(None)`: it would have had to wait.
    fn attempt<T>(
        &self,
        ruby: &Ruby,
        work: impl FnOnce(&mut Settings) -> tenant_kit::Result<T>,
    ) -> Result<Option<T>, RbError> {
        let mut settings = match self.0.try_lock() {
            Ok(settings) => settings,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return Ok(None),
        };
        match catch_unwind(AssertUnwindSafe(|| settings.without_waiting(work))) {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(error)) => Err(to_ruby(ruby, &error)),
            Err(panic) => Err(to_ruby(ruby, &tenant_kit::Error::from_panic(&*panic))),
        }
    }

    /// Run `work` without the GVL, waiting for locks up to the busy timeout.
    fn patiently<T>(
        &self,
        ruby: &Ruby,
        work: impl FnOnce(&mut Settings) -> tenant_kit::Result<T>,
    ) -> Result<T, RbError> {
        without_gvl(ruby, || work(&mut self.lock()))
    }

    /// `#resolve(call_json) -> { "key" => value }`.
    fn resolve(ruby: &Ruby, rb_self: &Handle, call_json: String) -> Result<RHash, RbError> {
        let call = parse(ruby, &call_json, Op::Resolve)?;
        let work = |s: &mut Settings| s.resolve(&call.tenant, &call.klass, call.id.as_ref());
        let map = match rb_self.attempt(ruby, work)? {
            Some(map) => map,
            None => rb_self.patiently(ruby, work)?,
        };
        let mut keys = Keys::default();
        object_to_ruby(ruby, map.iter().map(|(k, v)| (k.as_str(), v)), &mut keys)
    }

    /// `#resolve_many(call_json) -> { id => { "key" => value } }`, ids as
    /// given (Integer or String).
    fn resolve_many(ruby: &Ruby, rb_self: &Handle, call_json: String) -> Result<RHash, RbError> {
        let call = parse(ruby, &call_json, Op::ResolveMany)?;
        let mut keys = Keys::default();
        // Fast path: Hashes built as each target is resolved.
        let out = ruby.hash_new();
        let mut failure: Option<RbError> = None;
        let attempt = rb_self.attempt(ruby, |s| {
            s.resolve_many_each(&call.tenant, &call.klass, &call.ids, |id, pairs| {
                let hash = object_to_ruby(ruby, pairs.iter().map(|(k, v)| (*k, *v)), &mut keys)
                    .and_then(|hash| out.aset(id_to_ruby(ruby, id), hash));
                hash.map_err(|e| {
                    failure = Some(e);
                    tenant_kit::Error::cancelled()
                })
            })
        });
        if let Some(error) = failure {
            return Err(error);
        }
        if attempt?.is_some() {
            return Ok(out);
        }
        // Patient path: resolve without the GVL, convert with it.
        let resolved = rb_self.patiently(ruby, |s| {
            s.resolve_many(&call.tenant, &call.klass, &call.ids)
        })?;
        let out = ruby.hash_new();
        for (id, map) in &resolved {
            let hash = object_to_ruby(ruby, map.iter().map(|(k, v)| (k.as_str(), v)), &mut keys)?;
            out.aset(id_to_ruby(ruby, id), hash)?;
        }
        Ok(out)
    }

    /// `#call(call_json) -> result_json` for explain and build_settings_for
    /// (the JSON documented on `tenant_kit::settings::resolve_json`).
    fn call(ruby: &Ruby, rb_self: &Handle, call_json: String) -> Result<String, RbError> {
        let call = Call::parse(&call_json).map_err(|e| to_ruby(ruby, &e))?;
        let work = |s: &mut Settings| call.run_json(s);
        match rb_self.attempt(ruby, work)? {
            Some(json) => Ok(json),
            None => rb_self.patiently(ruby, work),
        }
    }

    /// `#close`: closes the connection now (the next call reopens it).
    fn close(ruby: &Ruby, rb_self: &Handle) -> Result<(), RbError> {
        rb_self.patiently(ruby, |s| {
            s.close();
            Ok(())
        })
    }

    /// `#lookup`: "query" or "snapshot", the strategy in use.
    fn lookup(&self) -> &'static str {
        self.1
    }
}

fn parse(ruby: &Ruby, call_json: &str, op: Op) -> Result<Call, RbError> {
    let call = Call::parse(call_json).map_err(|e| to_ruby(ruby, &e))?;
    if call.op != op {
        return Err(RbError::new(
            ruby.exception_arg_error(),
            format!("expected op {op:?}, got {:?}", call.op),
        ));
    }
    Ok(call)
}

/// Frozen key Strings, shared by every Hash of one call (Ruby would
/// otherwise copy and freeze each key of each Hash). The core hands out the
/// same `&str` for a key throughout a call, so the address usually finds it.
#[derive(Default)]
struct Keys(Vec<(usize, String, RString)>);

impl Keys {
    fn get(&mut self, ruby: &Ruby, key: &str) -> RString {
        let address = key.as_ptr() as usize;
        if let Some((_, _, string)) = self
            .0
            .iter()
            .find(|(a, k, _)| *a == address && k.len() == key.len())
        {
            return *string;
        }
        if let Some((_, _, string)) = self.0.iter().find(|(_, k, _)| k == key) {
            return *string;
        }
        let string = ruby.str_new(key);
        string.freeze();
        // Referenced from the Hash it is stored in next, so GC keeps it. A
        // few dozen keys are worth caching; beyond, scanning costs more.
        if self.0.len() < 64 {
            self.0.push((address, key.to_string(), string));
        }
        string
    }
}

fn object_to_ruby<'v>(
    ruby: &Ruby,
    pairs: impl ExactSizeIterator<Item = (&'v str, &'v Value)>,
    keys: &mut Keys,
) -> Result<RHash, RbError> {
    let hash = ruby.hash_new();
    for (key, value) in pairs {
        hash.aset(keys.get(ruby, key), value_to_ruby(ruby, value, keys)?)?;
    }
    Ok(hash)
}

/// JSON to Ruby as `JSON.parse` does it: fresh (unfrozen) Strings, Arrays
/// and Hashes with (frozen, as always in Ruby) String keys, Integer (of any
/// size) and Float numbers.
fn value_to_ruby(ruby: &Ruby, value: &Value, keys: &mut Keys) -> Result<RbValue, RbError> {
    Ok(match value {
        Value::Null => ruby.qnil().as_value(),
        Value::Bool(true) => ruby.qtrue().as_value(),
        Value::Bool(false) => ruby.qfalse().as_value(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                ruby.integer_from_i64(i).as_value()
            } else if let Some(u) = n.as_u64() {
                ruby.integer_from_u64(u).as_value()
            } else {
                let text = n.to_string();
                if text.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
                    // An integer beyond 64 bits: let Ruby parse it.
                    ruby.str_new(&text).funcall::<_, _, RbValue>("to_i", ())?
                } else {
                    ruby.float_from_f64(n.as_f64().unwrap_or(f64::NAN))
                        .as_value()
                }
            }
        }
        Value::String(s) => ruby.str_new(s).as_value(),
        Value::Array(items) => {
            let array = ruby.ary_new_capa(items.len());
            for item in items {
                array.push(value_to_ruby(ruby, item, keys)?)?;
            }
            array.as_value()
        }
        Value::Object(map) => {
            object_to_ruby(ruby, map.iter().map(|(k, v)| (k.as_str(), v)), keys)?.as_value()
        }
    })
}

fn id_to_ruby(ruby: &Ruby, id: &TargetId) -> RbValue {
    match id {
        TargetId::Int(i) => ruby.integer_from_i64(*i).as_value(),
        TargetId::Text(s) => ruby.str_new(s).as_value(),
    }
}

/// Run `work` without the GVL (panics become InternalError) and map its
/// error with [`to_ruby`].
fn without_gvl<T, F>(ruby: &Ruby, work: F) -> Result<T, RbError>
where
    F: FnOnce() -> tenant_kit::Result<T>,
{
    gvl::run_without_gvl(ruby, |_progress| Ok(work()))?.map_err(|error| to_ruby(ruby, &error))
}

/// Core error to Ruby: an invalid stored value raises
/// `TenantKit::Settings::InvalidValueError` (a `TenantKit::IntegrityError`),
/// the rest as everywhere else.
fn to_ruby(ruby: &Ruby, error: &tenant_kit::Error) -> RbError {
    if error.kind() == ErrorKind::Integrity {
        if let Some(class) = invalid_value_class(ruby) {
            return RbError::new(class, error.message().to_string());
        }
    }
    errors::to_ruby(ruby, error)
}

fn invalid_value_class(ruby: &Ruby) -> Option<ExceptionClass> {
    let root = ruby
        .class_object()
        .const_get::<_, RModule>("TenantKit")
        .ok()?;
    let settings = root.const_get::<_, RClass>("Settings").ok()?;
    settings
        .const_get::<_, ExceptionClass>("InvalidValueError")
        .ok()
}

pub fn init(ruby: &Ruby, native: &RModule) -> Result<(), RbError> {
    let class = native.define_class("Settings", ruby.class_object())?;
    class.undef_default_alloc_func();
    class.define_singleton_method("open", function!(Handle::open, 1))?;
    class.define_method("resolve", method!(Handle::resolve, 1))?;
    class.define_method("resolve_many", method!(Handle::resolve_many, 1))?;
    class.define_method("call", method!(Handle::call, 1))?;
    class.define_method("close", method!(Handle::close, 0))?;
    class.define_method("lookup", method!(Handle::lookup, 0))?;
    Ok(())
}
