//! Settings resolution: the tenant / class / instance cascade over defaults
//! (`TenantKit::Settings`, `tk_settings_resolve`).
//!
//! # The table
//! One row per setting, in the app's `settings` table (table and column names
//! configurable, see [`SettingsConfig`]): the tenant column, `target_type`
//! (a class name or NULL), `target_id` (NULL or the record id, integer or
//! text, usually in a varchar column), `key`, `value` (JSON text) and the
//! Rails timestamps.
//!
//! # Levels, weakest first
//! | level      | rows                                             |
//! |------------|--------------------------------------------------|
//! | `default`  | none: the caller's `defaults[klass]`             |
//! | `tenant`   | `target_type IS NULL AND target_id IS NULL`      |
//! | `class`    | `target_type = klass AND target_id IS NULL`      |
//! | `instance` | `target_type = klass AND target_id = id`         |
//!
//! The effective value of a key is the one of the strongest level that has a
//! row for it. Decisions, documented here once:
//! - **Tenant-level rows apply to every class**: resolving `User` also
//!   returns tenant-level keys that `User`'s defaults do not name.
//! - **Unknown keys** (rows whose key is not in `defaults[klass]`) are
//!   returned as they are, of any JSON type. Result keys come in the order of
//!   `defaults[klass]`, then the unknown keys sorted by name.
//! - **Duplicates** (several rows for the same tenant, level, target and key,
//!   which the old code could create) resolve to the row with the **lowest
//!   id**: the first one created, the one `find_by` used to return and update.
//! - **`target_id`** is compared as text: the integer `42` and the string
//!   `"42"` name the same target, `"042"` does not. This works for varchar
//!   and integer columns alike.
//! - **SQL NULL in `value`** is JSON `null` (what Rails' JSON coder stores for
//!   `nil`); it is a value like any other and overrides weaker levels. `null`
//!   is compatible with every default type, and a `null` default accepts any
//!   type.
//! - **Invalid values**: a winning row whose value is not valid JSON, or whose
//!   JSON type (null, boolean, number, string, array, object; integers and
//!   floats are both "number") contradicts the type of `defaults[klass][key]`,
//!   makes `resolve`, `resolve_many` and `build_settings_for` fail with an
//!   [`ErrorKind::Integrity`](crate::ErrorKind) error naming the row (id,
//!   tenant, level, target, key, and a snippet of the value); Ruby raises
//!   `TenantKit::Settings::InvalidValueError` (a `TenantKit::IntegrityError`).
//!   Rows shadowed by a stronger valid row are not inspected. `explain`
//!   never fails on values: it skips invalid rows, reports the next valid
//!   level as the value and lists what it skipped in `errors`.
//! - Rows with `target_type` NULL but `target_id` set fit no level and are
//!   ignored.
//! - **Isolation**: every query is bound to one tenant id; nothing of another
//!   tenant is ever read.
//!
//! # `build_settings_for`
//! Creates the rows of one level (class level when `id` is absent, instance
//! level otherwise) for the keys of `defaults[klass]` that have no row at that
//! level yet, and returns how many it created. The value written is the one in
//! effect at that moment (the default, or the tenant / class row that
//! overrides it), so building never changes what `resolve` returns. It runs
//! a cheap read first and only when rows are missing takes the write lock
//! (`BEGIN IMMEDIATE`, waiting up to the busy timeout), checks again and
//! inserts, so concurrent callers in any number of processes create each row
//! exactly once. (A unique index cannot do this in SQLite: NULLs are distinct
//! in unique indexes.) `klass` must have an entry in `defaults`.
//!
//! # Connections and lookups
//! A [`Settings`] keeps one connection (no transaction is ever left open
//! between calls; reads are single statements) and its prepared statements.
//! It notices `fork()`: a child never touches its parent's connection, it
//! opens its own. How rows are found depends on the table's indexes
//! ([`Lookup`]): with an index whose leading columns are (tenant,
//! `target_type`, `target_id`), each call runs one indexed query; without
//! one (the stock Rails table only indexes the tenant), the tenant's rows are
//! loaded once and kept, and `PRAGMA data_version` tells when another
//! connection committed so they are reloaded. Either way a single `resolve`
//! costs microseconds once warm; the README shows the migration for the
//! index.

mod cascade;
mod config;
mod request;
mod rows;
mod store;
mod table;

pub use cascade::{Explained, Level};
pub use config::{Lookup, SettingsConfig, TargetId, TenantId};
pub use request::{call_json, open_json, resolve_json, Call, Op};
pub use store::Settings;
