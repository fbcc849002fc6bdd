//! tenant_kit C API: back up, restore and verify one tenant of a multi-tenant
//! Rails app on SQLite, and resolve its settings, from C or any language with
//! a C FFI. Build the library with `script/build-c` (libtenant_kit.so and
//! libtenant_kit.a); this header is generated from src/capi/mod.rs.
//!
//! Conventions (after rustls-ffi):
//! - Every fallible function returns a `tk_status`: TK_OK on success, one
//!   error status per kind of failure otherwise. No function ever aborts the
//!   process or lets a Rust panic cross into C: a panic becomes
//!   TK_INTERNAL_ERROR.
//! - Options and results are UTF-8 JSON objects. Option names and values are
//!   those of the Ruby interface (`database`, `tenant_id`, `archive`, ...).
//! - A tenant id (`tenant_id` in options, results, events and the archive's
//!   manifest) is a JSON number (INTEGER), a string (TEXT) or, for a tenant
//!   column of BLOBs, `{"$base64": "<standard base64 of the bytes>"}` (the
//!   form dump.jsonl gives BLOB values). For a column of 16-byte BLOBs a
//!   UUID string is taken too (dashed, 32 hex digits or 25-character
//!   base36) and converted to its 16 bytes; results and events then carry
//!   the `{"$base64": ...}` form. An archive of a BLOB tenant is named
//!   `tenant_<lowercase hex of the bytes>_<stamp>.tar.gz`.
//! - Outputs come back through a `char **out_json` parameter. Whatever the
//!   status, when `out_json` is not NULL the function stores in `*out_json`
//!   either NULL or a string the library allocated: the result JSON on TK_OK,
//!   `{"kind":"...","message":"..."}` on an error. When SQLite reported the
//!   error (TK_DATABASE_ERROR) the object also has SQLite's primary result
//!   `code` (5 is SQLITE_BUSY: another connection held a lock past the busy
//!   timeout; 11 SQLITE_CORRUPT, 26 SQLITE_NOTADB) and its `extended_code`
//!   (see sqlite.org/rescode.html). Free every such string exactly once with
//!   `tk_string_free` (and with nothing else).
//! - Strings the library returns as `const char *` (`tk_version`,
//!   `tk_sqlite_version`) are static: never free them.
//! - A NULL pointer where a value is required, text that is not UTF-8 and
//!   options that are not a JSON object give TK_ARGUMENT_ERROR.
//! - Callbacks take the caller's `userdata` pointer first, are called on the
//!   calling thread before the function returns, and must not unwind or
//!   longjmp through the library. A progress callback returns 0 to go on;
//!   any other value cancels the work (the function then returns
//!   TK_CANCELLED after cleaning up; one last `failed` event may follow).
//! - The configuration (which rows are a tenant's) is part of the options
//!   object, and the same keys mean the same in `tk_backup`, `tk_restore`
//!   and `tk_explain`: build it once and merge it into each call's options.
//!   `tenant_column` (default "tenant_id"); `tenant_table` (default: from a
//!   foreign key or Rails naming); `relations`, an array of
//!   `{"table", "column", "references", "primary_key"}` (`column` and
//!   `primary_key` a name or an array of names; `references: null` says
//!   the column is no reference; `primary_key` defaults to the parent's);
//!   `polymorphic`, an object class name → table for `*_type` values; and
//!   `tables`, an object table → rule (`"skip"`: never backed up, purged or
//!   restored). `tk_explain` reports what a configuration makes of a
//!   database before the first backup.
//! - No init or shutdown call is needed. Calls are synchronous (they return
//!   when the work is done) and may be made from several threads at once,
//!   as the Ruby gem does.

use crate::error::{Error, ErrorKind, Result};
use crate::progress::{Event, NoProgress, Progress};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

/// The outcome of a call: TK_OK or the kind of error. The matching
/// `*out_json` (when the function has one) carries the details.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum tk_status {
    /// Success.
    TK_OK = 0,
    /// A bad argument: NULL pointer, invalid UTF-8, malformed or incomplete
    /// options, unknown path.
    TK_ARGUMENT_ERROR = 1,
    /// The archive is unreadable, malformed or hostile. Nothing was changed.
    TK_ARCHIVE_ERROR = 2,
    /// A checksum or a count does not match the manifest. Nothing was changed.
    TK_INTEGRITY_ERROR = 3,
    /// The archive's tables or columns do not fit the database's schema.
    TK_SCHEMA_ERROR = 4,
    /// The restore would touch rows that belong to another tenant.
    TK_CONFLICT_ERROR = 5,
    /// SQLite reported an error (busy, constraint, corrupt file...); the
    /// error JSON's `code` and `extended_code` are SQLite's.
    TK_DATABASE_ERROR = 6,
    /// The file system failed (disk full, permission denied...).
    TK_FILE_ERROR = 7,
    /// The progress callback returned non-zero; the work was undone.
    TK_CANCELLED = 8,
    /// A bug inside tenant_kit (a panic caught at the boundary).
    TK_INTERNAL_ERROR = 9,
    /// An encrypted archive and a key that does not open it: no matching
    /// identity, or a wrong passphrase.
    TK_DECRYPTION_ERROR = 10,
}

impl tk_status {
    fn of(kind: ErrorKind) -> Self {
        // No wildcard: a new ErrorKind must get its own status.
        match kind {
            ErrorKind::Argument => tk_status::TK_ARGUMENT_ERROR,
            ErrorKind::Archive => tk_status::TK_ARCHIVE_ERROR,
            ErrorKind::Integrity => tk_status::TK_INTEGRITY_ERROR,
            ErrorKind::Schema => tk_status::TK_SCHEMA_ERROR,
            ErrorKind::Conflict => tk_status::TK_CONFLICT_ERROR,
            ErrorKind::Database => tk_status::TK_DATABASE_ERROR,
            ErrorKind::Io => tk_status::TK_FILE_ERROR,
            ErrorKind::Cancelled => tk_status::TK_CANCELLED,
            ErrorKind::Internal => tk_status::TK_INTERNAL_ERROR,
            ErrorKind::Decryption => tk_status::TK_DECRYPTION_ERROR,
        }
    }
}

/// Receives progress events while `tk_backup`, `tk_restore` or `tk_verify`
/// works. `userdata` is the pointer given to that function; `event_json` is
/// one event as a JSON object (always `step` and `at`, then step-specific
/// fields), valid only during the call: copy it to keep it. Return 0 to go
/// on, non-zero to cancel.
#[allow(non_camel_case_types)]
pub type tk_progress_callback =
    Option<unsafe extern "C" fn(userdata: *mut c_void, event_json: *const c_char) -> c_int>;

/// Progress sink that forwards each event to a C callback.
struct CallbackProgress {
    callback: tk_progress_callback,
    userdata: *mut c_void,
}

impl Progress for CallbackProgress {
    fn emit(&mut self, event: Event) -> Result<()> {
        let Some(callback) = self.callback else {
            return Ok(());
        };
        let json = CString::new(event.to_json())
            .map_err(|_| Error::internal("progress event contains a NUL byte"))?;
        // SAFETY: the caller promised `callback` is a valid function taking
        // its own `userdata`; `json` outlives the call.
        let answer = unsafe { callback(self.userdata, json.as_ptr()) };
        if answer == 0 {
            Ok(())
        } else {
            Err(Error::cancelled())
        }
    }
}

const VERSION_C: &CStr =
    match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(version) => version,
        Err(_) => panic!("version contains a NUL byte"),
    };

/// The library version, e.g. "0.1.0" (equal to the Ruby gem's). Static:
/// do not free.
#[no_mangle]
pub extern "C" fn tk_version() -> *const c_char {
    VERSION_C.as_ptr()
}

/// The version of the SQLite library in use at run time, e.g. "3.40.1".
/// Static: do not free.
#[no_mangle]
pub extern "C" fn tk_sqlite_version() -> *const c_char {
    catch_unwind(|| {
        // SAFETY: sqlite3_libversion returns a static NUL-terminated string.
        unsafe { rusqlite::ffi::sqlite3_libversion() }
    })
    .unwrap_or(c"".as_ptr())
}

/// Back up one tenant into an archive. `options_json` holds the options of
/// `TenantKit.backup` (`database`, `tenant_id`, `output_dir`, `storage_root`,
/// `tenant_column`, `tables` as `{"name": "skip" | "shared" | "owned"}`; a
/// BLOB `tenant_id` as `{"$base64": "..."}`, see the top of this header).
/// To encrypt (age format, file `….tar.gz.age`): either
/// `"recipients": ["age1…", …]` (age public keys) or `"passphrase": "…"`
/// (never empty), not both. `progress` may be NULL. On TK_OK `*out_json` is
/// the backup result (`path`, `tables`, `shared` (shared reference rows per
/// table), `blobs`, `bytes`, `sha256`, `errors`, `encrypted`, `recipients`:
/// public keys only, never a secret).
///
/// # Safety
/// `options_json` is NULL or a NUL-terminated string; `out_json` is NULL or
/// points to writable storage for one pointer; `progress`, when not NULL,
/// is a valid function that accepts `userdata`.
#[no_mangle]
pub unsafe extern "C" fn tk_backup(
    options_json: *const c_char,
    progress: tk_progress_callback,
    userdata: *mut c_void,
    out_json: *mut *mut c_char,
) -> tk_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_progress(
            options_json,
            progress,
            userdata,
            out_json,
            crate::api::backup_json,
        )
    }
}

/// Restore an archive into a tenant. `options_json` holds the options of
/// `TenantKit.restore` (`database`, `archive`, `tenant_id`, `storage_root`,
/// `dry_run`, `purge`, `restore`, `remap`, `tenant_column`, `tables`,
/// `new_ids`, `id_map`, `only`, `except`). `progress` may be NULL. On TK_OK
/// `*out_json` is the restore result, with `shared`: `{"table":
/// {"inserted", "present", "differing"}}` (shared reference rows) and
/// `encrypted`.
///
/// An encrypted archive needs `"identities": ["AGE-SECRET-KEY-1…", …]`
/// and/or `"identity_file": "path"` (age key-file format), or
/// `"passphrase"`: without one it is TK_ARGUMENT_ERROR, with one that does
/// not fit TK_DECRYPTION_ERROR, with changed or cut ciphertext
/// TK_INTEGRITY_ERROR, and nothing is written.
///
/// A partial restore: `"only": ["tags"]` or `"except": ["users"]` (table
/// names), or a subtree: `"only": {"projects": [17]}` (keys in the
/// archive's JSON form: `17`, `"a1"`, `{"$base64": "…"}`, an array of
/// those for a key over several columns); the result's `selection` says
/// what was selected.
///
/// A copy with fresh ids: `"new_ids": true` gives every restored row a new
/// key and rewrites every reference to it the library knows; with
/// `"tenant_id": null` it makes a new tenant, whose id the result's
/// `tenant_id` holds (`tenant_row_created` is true). The result's `id_map`
/// counts the new keys per table; `"id_map": "<path>"` writes them, one
/// JSON line per row: `{"table": ..., "old": ..., "new": ...}`. New blob
/// keys are in `renamed_keys` (old key → new key).
///
/// # Safety
/// As for `tk_backup`.
#[no_mangle]
pub unsafe extern "C" fn tk_restore(
    options_json: *const c_char,
    progress: tk_progress_callback,
    userdata: *mut c_void,
    out_json: *mut *mut c_char,
) -> tk_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_progress(
            options_json,
            progress,
            userdata,
            out_json,
            crate::api::restore_json,
        )
    }
}

/// Check an archive's integrity without a database. `options_json` holds
/// `archive` (and, for an encrypted one, the keys as for `tk_restore`).
/// `progress` may be NULL. On TK_OK `*out_json` is the
/// verification result.
///
/// # Safety
/// As for `tk_backup`.
#[no_mangle]
pub unsafe extern "C" fn tk_verify(
    options_json: *const c_char,
    progress: tk_progress_callback,
    userdata: *mut c_void,
    out_json: *mut *mut c_char,
) -> tk_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_progress(
            options_json,
            progress,
            userdata,
            out_json,
            crate::api::verify_json,
        )
    }
}

/// Delete old archives. `options_json` holds the options of
/// `TenantKit.prune`. On TK_OK `*out_json` lists what was deleted.
///
/// # Safety
/// `options_json` is NULL or a NUL-terminated string; `out_json` is NULL or
/// points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn tk_prune(
    options_json: *const c_char,
    out_json: *mut *mut c_char,
) -> tk_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { json_call(options_json, out_json, crate::api::prune_json) }
}

/// Explain which rows a backup takes, without taking them. `options_json`
/// holds `database`, `busy_timeout_ms` and the configuration keys (see the
/// top of this header). On TK_OK `*out_json` is the report: `tenant_column`,
/// `tenant_table`, `tables` (each `name`, `class` — "tenants", "owned",
/// "derived", "shared", "skipped" or "not_tenant_data" — and `reason`), `references`
/// (each `table`, `columns`, `references`, `primary_key`, `polymorphic`
/// (null or `{"type_column", "class"}`) and `source` — "foreign_key",
/// "hint", "framework", "naming", "polymorphic_map" or
/// "polymorphic_naming") and `guesses` (naming guesses nothing confirms:
/// `table`, `column`, `references`).
///
/// # Safety
/// `options_json` is NULL or a NUL-terminated string; `out_json` is NULL or
/// points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn tk_explain(
    options_json: *const c_char,
    out_json: *mut *mut c_char,
) -> tk_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { json_call(options_json, out_json, crate::api::explain_json) }
}

/// Make a new age key pair for encrypted archives. `options_json` is `{}`.
/// On TK_OK `*out_json` is `{"identity": "AGE-SECRET-KEY-1…", "recipient":
/// "age1…"}`: keep the identity secret (free it with `tk_free_string`
/// after overwriting it), give the recipient to `tk_backup`'s `recipients`.
///
/// # Safety
/// `options_json` is NULL or a NUL-terminated string; `out_json` is NULL or
/// points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn tk_generate_key(
    options_json: *const c_char,
    out_json: *mut *mut c_char,
) -> tk_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { json_call(options_json, out_json, crate::api::generate_key_json) }
}

/// Resolve settings through the tenant / class / instance cascade.
/// `request_json` holds the request of `TenantKit::Settings`. On TK_OK
/// `*out_json` is the resolved settings.
///
/// # Safety
/// `request_json` is NULL or a NUL-terminated string; `out_json` is NULL or
/// points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn tk_settings_resolve(
    request_json: *const c_char,
    out_json: *mut *mut c_char,
) -> tk_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { json_call(request_json, out_json, crate::settings::resolve_json) }
}

/// Free a string this library stored in an `out_json`. NULL is a no-op.
///
/// # Safety
/// `string` is NULL or a pointer received from this library through an
/// `out_json` parameter and not freed yet.
#[no_mangle]
pub unsafe extern "C" fn tk_string_free(string: *mut c_char) {
    if string.is_null() {
        return;
    }
    let _ = catch_unwind(|| {
        // SAFETY: the caller hands back a pointer made by CString::into_raw.
        drop(unsafe { CString::from_raw(string) });
    });
}

/// The body shared by the calls that report progress.
unsafe fn with_progress(
    options_json: *const c_char,
    callback: tk_progress_callback,
    userdata: *mut c_void,
    out_json: *mut *mut c_char,
    work: fn(&str, &mut dyn Progress) -> Result<String>,
) -> tk_status {
    // SAFETY: forwarded from the public function's contract.
    unsafe {
        json_call(options_json, out_json, |options| {
            let mut progress = CallbackProgress { callback, userdata };
            if callback.is_none() {
                work(options, &mut NoProgress)
            } else {
                work(options, &mut progress)
            }
        })
    }
}

/// The panic boundary around every JSON call: check the arguments, run
/// `work`, store its result or error as a new string in `*out_json`.
unsafe fn json_call<F>(input: *const c_char, out_json: *mut *mut c_char, work: F) -> tk_status
where
    F: FnOnce(&str) -> Result<String>,
{
    if out_json.is_null() {
        return tk_status::TK_ARGUMENT_ERROR;
    }
    // SAFETY: out_json is not NULL and the caller promised it is writable.
    unsafe { *out_json = ptr::null_mut() };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: forwarded from the public function's contract.
        let input = unsafe { json_object_arg(input) }?;
        work(input)
    }))
    .unwrap_or_else(|payload| Err(Error::from_panic(&*payload)));
    // Building the output cannot panic in practice, but stay on the safe side.
    let stored = catch_unwind(AssertUnwindSafe(|| {
        let (status, text) = match outcome {
            Ok(json) => (tk_status::TK_OK, json),
            Err(error) => (tk_status::of(error.kind()), error_json(&error)),
        };
        match CString::new(text) {
            Ok(text) => (status, text),
            Err(_) => {
                let error = Error::internal("result contains a NUL byte");
                (
                    tk_status::TK_INTERNAL_ERROR,
                    CString::new(error_json(&error)).unwrap_or_default(),
                )
            }
        }
    }));
    match stored {
        Ok((status, text)) => {
            // SAFETY: as above.
            unsafe { *out_json = text.into_raw() };
            status
        }
        Err(_) => tk_status::TK_INTERNAL_ERROR,
    }
}

/// Borrow a C string argument that must be a UTF-8 JSON object.
unsafe fn json_object_arg<'a>(input: *const c_char) -> Result<&'a str> {
    if input.is_null() {
        return Err(Error::argument("the JSON argument is NULL"));
    }
    // SAFETY: not NULL, and the caller promised a NUL-terminated string.
    let text = unsafe { CStr::from_ptr(input) }
        .to_str()
        .map_err(|e| Error::argument(format!("the JSON argument is not valid UTF-8: {e}")))?;
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(_)) => Ok(text),
        Ok(_) => Err(Error::argument(
            "the JSON argument must be an object ({...})",
        )),
        Err(e) => Err(Error::argument(format!(
            "the JSON argument is malformed: {e}"
        ))),
    }
}

/// `{"kind":"argument","message":"..."}`
fn error_json(error: &Error) -> String {
    let mut json = serde_json::json!({ "kind": error.kind().name(), "message": error.message() });
    if let Some(code) = error.sqlite_code() {
        json["code"] = code.primary.into();
        json["extended_code"] = code.extended.into();
    }
    json.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Call `f` with an out pointer, return the status and the owned text.
    fn call(f: impl FnOnce(*mut *mut c_char) -> tk_status) -> (tk_status, Option<String>) {
        let mut out: *mut c_char = ptr::dangling_mut(); // garbage the call must overwrite
        let status = f(&mut out);
        if out.is_null() {
            return (status, None);
        }
        let text = unsafe { CStr::from_ptr(out) }.to_str().unwrap().to_string();
        unsafe { tk_string_free(out) };
        (status, Some(text))
    }

    fn kind_of(json: &str) -> String {
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        value["kind"].as_str().unwrap().to_string()
    }

    #[test]
    fn every_error_kind_has_its_own_status() {
        let kinds = [
            ErrorKind::Argument,
            ErrorKind::Archive,
            ErrorKind::Integrity,
            ErrorKind::Schema,
            ErrorKind::Conflict,
            ErrorKind::Database,
            ErrorKind::Io,
            ErrorKind::Cancelled,
            ErrorKind::Internal,
            ErrorKind::Decryption,
        ];
        let mut statuses: Vec<i32> = kinds.iter().map(|k| tk_status::of(*k) as i32).collect();
        statuses.sort();
        statuses.dedup();
        assert_eq!(statuses, (1..=10).collect::<Vec<_>>());
    }

    #[test]
    fn version_strings() {
        let version = unsafe { CStr::from_ptr(tk_version()) }.to_str().unwrap();
        assert_eq!(version, crate::VERSION);
        let sqlite = unsafe { CStr::from_ptr(tk_sqlite_version()) }
            .to_str()
            .unwrap();
        assert_eq!(sqlite, crate::sqlite_version());
    }

    #[test]
    fn bad_arguments_are_argument_errors() {
        let inputs: [&[u8]; 4] = [b"\xff\xfe{}\0", b"{not json\0", b"[1, 2]\0", b"\0"];
        for input in inputs {
            let (status, text) = call(|out| unsafe { tk_prune(input.as_ptr().cast(), out) });
            assert_eq!(status, tk_status::TK_ARGUMENT_ERROR, "{input:?}");
            assert_eq!(kind_of(&text.unwrap()), "argument");
        }
        let (status, text) =
            call(|out| unsafe { tk_backup(ptr::null(), None, ptr::null_mut(), out) });
        assert_eq!(status, tk_status::TK_ARGUMENT_ERROR);
        assert!(text.unwrap().contains("NULL"));
        let status = unsafe { tk_settings_resolve(c"{}".as_ptr(), ptr::null_mut()) };
        assert_eq!(status, tk_status::TK_ARGUMENT_ERROR);
    }

    #[test]
    fn panics_become_internal_errors() {
        let (status, text) = call(|out| unsafe {
            json_call(c"{}".as_ptr(), out, |_| -> Result<String> {
                panic!("boom")
            })
        });
        assert_eq!(status, tk_status::TK_INTERNAL_ERROR);
        let text = text.unwrap();
        assert_eq!(kind_of(&text), "internal");
        assert!(text.contains("boom"), "{text}");
    }

    #[test]
    fn callback_gets_userdata_and_events_and_can_cancel() {
        struct Seen {
            steps: Vec<String>,
            stop_after: usize,
        }
        unsafe extern "C" fn on_event(userdata: *mut c_void, event_json: *const c_char) -> c_int {
            let seen = unsafe { &mut *(userdata as *mut Seen) };
            let json = unsafe { CStr::from_ptr(event_json) }.to_str().unwrap();
            let value: serde_json::Value = serde_json::from_str(json).unwrap();
            seen.steps.push(value["step"].as_str().unwrap().to_string());
            c_int::from(seen.steps.len() >= seen.stop_after)
        }
        let busy = |options: &str, progress: &mut dyn Progress| -> Result<String> {
            let steps: u64 = serde_json::from_str::<serde_json::Value>(options).unwrap()["steps"]
                .as_u64()
                .unwrap();
            crate::selftest::busy_work(steps, 0, progress).map(|n| format!("{{\"steps\":{n}}}"))
        };

        let mut seen = Seen {
            steps: vec![],
            stop_after: usize::MAX,
        };
        let userdata = &mut seen as *mut Seen as *mut c_void;
        let (status, text) = call(|out| unsafe {
            with_progress(
                c"{\"steps\":3}".as_ptr(),
                Some(on_event),
                userdata,
                out,
                busy,
            )
        });
        assert_eq!(
            (status, text.as_deref()),
            (tk_status::TK_OK, Some("{\"steps\":3}"))
        );
        assert_eq!(seen.steps, ["start", "tick", "tick", "tick", "done"]);

        let mut seen = Seen {
            steps: vec![],
            stop_after: 2,
        };
        let userdata = &mut seen as *mut Seen as *mut c_void;
        let (status, text) = call(|out| unsafe {
            with_progress(
                c"{\"steps\":100}".as_ptr(),
                Some(on_event),
                userdata,
                out,
                busy,
            )
        });
        assert_eq!(status, tk_status::TK_CANCELLED);
        assert_eq!(kind_of(&text.unwrap()), "cancelled");
        assert_eq!(seen.steps, ["start", "tick"]);
    }
}
