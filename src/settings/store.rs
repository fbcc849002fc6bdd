//! [`Settings`]: one connection to the app's database, the settings table
//! as found there ([`SettingsTable`]: its quoted names and statement texts),
//! and (without a suitable index) the [`TenantCache`] of per-tenant row
//! snapshots.

use super::cascade::{
    self, Base, Explained, FastHash, Interner, Level, Levels, Row, Scratch, Target,
};
use super::config::{Lookup, SettingsConfig, TargetId, TenantId};
use crate::clock::UtcTime;
use crate::error::{Error, Result, ResultExt};
use crate::sql;
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OpenFlags, Transaction, TransactionBehavior};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};

/// Tenants whose rows a snapshot-mode [`Settings`] keeps at most.
const SNAPSHOT_TENANTS: usize = 4;

/// Up to this many ids, `resolve_many` (query lookup) seeks each id through
/// the index; beyond, it reads all instance rows of the class once and
/// filters, which costs about the same for a class of that many instances
/// and less for larger lists.
const ID_LIST_MAX: usize = 1000;

/// Settings resolution over one SQLite file. See the [module
/// docs](crate::settings) for the semantics.
///
/// Not `Sync`: share it behind a `Mutex` (the Ruby binding does).
pub struct Settings {
    config: SettingsConfig,
    conn: Option<Connection>,
    /// The process that opened `conn`; another one (after `fork`) must not
    /// use it.
    pid: u32,
    table: SettingsTable,
    snapshot: bool,
    cache: TenantCache,
}

/// Snapshot lookup's memory: the rows of the [`SNAPSHOT_TENANTS`] tenants
/// used last, each valid for the `PRAGMA data_version` it was read at
/// (another connection's commit changes it; our own commits do not, so
/// [`Settings::build_settings_for`] forgets the tenant it wrote).
#[derive(Default)]
struct TenantCache {
    /// Least recently used first.
    entries: Vec<CachedTenant>,
}

struct CachedTenant {
    tenant: TenantId,
    data_version: i64,
    rows: TenantRows,
}

impl TenantCache {
    /// The tenant's rows as of `data_version`: kept ones if they were read
    /// at that version, otherwise `load`ed (evicting the least recently
    /// used tenant when full).
    fn rows(
        &mut self,
        tenant: &TenantId,
        data_version: i64,
        load: impl FnOnce() -> Result<TenantRows>,
    ) -> Result<&TenantRows> {
        if let Some(pos) = self.entries.iter().position(|e| &e.tenant == tenant) {
            let entry = self.entries.remove(pos);
            if entry.data_version == data_version {
                self.entries.push(entry);
            }
        }
        if self.entries.last().is_none_or(|e| &e.tenant != tenant) {
            let rows = load()?;
            if self.entries.len() >= SNAPSHOT_TENANTS {
                self.entries.remove(0);
            }
            self.entries.push(CachedTenant {
                tenant: tenant.clone(),
                data_version,
                rows,
            });
        }
        Ok(&self.entries.last().expect("pushed above").rows)
    }

    fn forget(&mut self, tenant: &TenantId) {
        self.entries.retain(|e| &e.tenant != tenant);
    }

    fn clear(&mut self) {
        self.entries.clear();
    }
}

/// Rows of one tenant by level: the tenant level, and per class its class
/// level and its instances (by canonical id).
#[derive(Debug, Default)]
struct TenantRows {
    tenant: Vec<Row>,
    classes: HashMap<String, ClassRows, FastHash>,
}

#[derive(Debug, Default)]
struct ClassRows {
    class: Vec<Row>,
    instances: HashMap<String, Vec<Row>, FastHash>,
}

impl ClassRows {
    fn push_instance(&mut self, target: std::borrow::Cow<'_, str>, row: Row) {
        match self.instances.get_mut(target.as_ref()) {
            Some(rows) => rows.push(row),
            None => {
                self.instances.insert(target.into_owned(), vec![row]);
            }
        }
    }
}

impl TenantRows {
    fn levels(&self, klass: &str, id: Option<&str>) -> Levels<'_> {
        let class = self.classes.get(klass);
        let instance = match (class, id) {
            (Some(class), Some(id)) => class.instances.get(id).map_or(&[][..], Vec::as_slice),
            _ => &[],
        };
        Levels {
            tenant: &self.tenant,
            class: class.map_or(&[][..], |c| c.class.as_slice()),
            instance,
        }
    }

    fn class_mut(&mut self, klass: &str) -> &mut ClassRows {
        if !self.classes.contains_key(klass) {
            self.classes.insert(klass.to_string(), ClassRows::default());
        }
        self.classes.get_mut(klass).expect("inserted above")
    }
}

/// Which instances a query is about.
#[derive(Clone, Copy)]
enum Ids<'a> {
    /// None: class-level resolution.
    Class,
    One(&'a str),
    Many(&'a HashSet<&'a str, FastHash>, &'a [&'a str]),
}

/// The settings table as found in the database: the statement texts built
/// from its quoted names, and whether an index serves (tenant,
/// target_type, target_id) lookups.
struct SettingsTable {
    levels_class: String,
    levels_one: String,
    levels_list: String,
    levels_all: String,
    tenant_rows: String,
    insert: String,
    has_timestamps: bool,
    indexed: bool,
}

impl SettingsTable {
    fn inspect(conn: &Connection, config: &SettingsConfig) -> Result<SettingsTable> {
        let db = config.database.display();
        let columns: Vec<String> = {
            let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
            let names = stmt.query_map([&config.table], |r| r.get::<_, String>(0))?;
            names
                .collect::<rusqlite::Result<_>>()
                .at(format!("reading the columns of {:?}", config.table))?
        };
        if columns.is_empty() {
            return Err(Error::argument(format!(
                "table: there is no table {:?} in {db}",
                config.table
            )));
        }
        let find = |name: &str| {
            columns
                .iter()
                .find(|c| c.eq_ignore_ascii_case(name))
                .cloned()
        };
        let need = |option: &str, name: &str| {
            find(name).map(|c| sql::ident(&c)).ok_or_else(|| {
                Error::argument(format!(
                    "{option}: table {:?} in {db} has no column {name:?} (columns: {})",
                    config.table,
                    columns.join(", ")
                ))
            })
        };
        let table = sql::ident(&config.table);
        let tenant = need("tenant_column", &config.tenant_column)?;
        let ttype = need("target_type_column", &config.target_type_column)?;
        let tid = need("target_id_column", &config.target_id_column)?;
        let key = need("key_column", &config.key_column)?;
        let value = need("value_column", &config.value_column)?;
        let id = find("id")
            .map(|c| sql::ident(&c))
            .unwrap_or_else(|| "rowid".to_string());
        let created = find(&config.created_at_column).map(|c| sql::ident(&c));
        let updated = find(&config.updated_at_column).map(|c| sql::ident(&c));

        let indexed = Self::has_lookup_index(conn, config)?;

        let tenant_part = format!(
            "SELECT 0, {id}, NULL, {key}, {value} FROM {table} WHERE {tenant} = ?1 AND {ttype} IS NULL AND {tid} IS NULL"
        );
        let class_part = format!(
            "SELECT 1, {id}, NULL, {key}, {value} FROM {table} WHERE {tenant} = ?1 AND {ttype} = ?2 AND {tid} IS NULL"
        );
        let instance_part = |cond: &str| {
            format!(
                "SELECT 2, {id}, {tid}, {key}, {value} FROM {table} WHERE {tenant} = ?1 AND {ttype} = ?2 AND {cond}"
            )
        };
        let levels = |cond: Option<&str>| match cond {
            None => format!("{tenant_part} UNION ALL {class_part} AND ?3 IS NULL"),
            Some(cond) => format!(
                "{tenant_part} UNION ALL {class_part} UNION ALL {}",
                instance_part(cond)
            ),
        };
        let (ts_cols, ts_vals) = match (&created, &updated) {
            (Some(c), Some(u)) => (format!(", {c}, {u}"), ", ?6, ?6"),
            (Some(c), None) | (None, Some(c)) => (format!(", {c}"), ", ?6"),
            (None, None) => (String::new(), ""),
        };
        Ok(SettingsTable {
            levels_class: levels(None),
            levels_one: levels(Some(&format!("{tid} = ?3"))),
            levels_list: levels(Some(&format!("{tid} IN (SELECT value FROM json_each(?3))"))),
            levels_all: levels(Some(&format!("{tid} IS NOT NULL AND ?3 IS NULL"))),
            tenant_rows: format!("SELECT {id}, {ttype}, {tid}, {key}, {value} FROM {table} WHERE {tenant} = ?1"),
            insert: format!(
                "INSERT INTO {table} ({tenant}, {ttype}, {tid}, {key}, {value}{ts_cols}) VALUES (?1, ?2, ?3, ?4, ?5{ts_vals})"
            ),
            has_timestamps: created.is_some() || updated.is_some(),
            indexed,
        })
    }

    /// Is there a full (not partial) index whose first three columns are
    /// the tenant, target_type and target_id columns?
    fn has_lookup_index(conn: &Connection, config: &SettingsConfig) -> Result<bool> {
        let wanted = [
            &config.tenant_column,
            &config.target_type_column,
            &config.target_id_column,
        ];
        let indexes: Vec<String> = {
            let mut stmt =
                conn.prepare("SELECT name FROM pragma_index_list(?1) WHERE partial = 0")?;
            let names = stmt.query_map([&config.table], |r| r.get::<_, String>(0))?;
            names.collect::<rusqlite::Result<_>>()?
        };
        let mut stmt =
            conn.prepare("SELECT name FROM pragma_index_info(?1) ORDER BY seqno LIMIT 3")?;
        for index in indexes {
            let columns: Vec<Option<String>> = stmt
                .query_map([&index], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let matches = columns.len() == 3
                && columns.iter().zip(wanted).all(|(have, want)| {
                    have.as_deref()
                        .is_some_and(|h| h.eq_ignore_ascii_case(want))
                });
            if matches {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

fn connect(config: &SettingsConfig) -> Result<Connection> {
    let path = &config.database;
    if path.as_os_str() == ":memory:" {
        return Err(Error::argument(
            "database: an in-memory database cannot be shared; give the path of a file",
        ));
    }
    if !path.is_file() {
        return Err(Error::argument(format!(
            "database: no such file: {}",
            path.display()
        )));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn =
        Connection::open_with_flags(path, flags).at(format!("opening {}", path.display()))?;
    conn.busy_timeout(config.busy_timeout)?;
    conn.set_prepared_statement_cache_capacity(16);
    Ok(conn)
}

/// `target_id` as text, whatever its storage class.
fn id_text(raw: ValueRef<'_>) -> Option<std::borrow::Cow<'_, str>> {
    match raw {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string().into()),
        ValueRef::Real(f) => Some(f.to_string().into()),
        ValueRef::Text(b) | ValueRef::Blob(b) => Some(String::from_utf8_lossy(b)),
    }
}

/// One query for the tenant and class levels and the requested instances.
fn query_levels(
    conn: &Connection,
    table: &SettingsTable,
    tenant: &TenantId,
    klass: &str,
    ids: Ids,
) -> Result<TenantRows> {
    let list_json;
    let (sql, third): (&str, Option<&str>) = match ids {
        Ids::Class => (&table.levels_class, None),
        Ids::One(id) => (&table.levels_one, Some(id)),
        Ids::Many(_, list) if list.len() <= ID_LIST_MAX => {
            list_json = serde_json::to_string(list).map_err(|e| Error::internal(e.to_string()))?;
            (&table.levels_list, Some(list_json.as_str()))
        }
        Ids::Many(..) => (&table.levels_all, None),
    };
    let filter = match ids {
        Ids::Many(wanted, list) if list.len() > ID_LIST_MAX => Some(wanted),
        _ => None,
    };
    let mut out = TenantRows::default();
    let mut class = ClassRows::default();
    if let Ids::Many(_, list) = ids {
        class.instances.reserve(list.len());
    }
    let mut interner = Interner::new(matches!(ids, Ids::Many(..)));
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params![tenant.to_sql_value(), klass, third])?;
    while let Some(r) = rows.next()? {
        let level: i64 = r.get(0)?;
        let Some(key) = id_text(r.get_ref(3)?) else {
            continue;
        }; // NULL key: no setting
        let id: i64 = r.get(1)?;
        match level {
            0 => out.tenant.push(interner.row(id, &key, r.get_ref(4)?)),
            1 => class.class.push(interner.row(id, &key, r.get_ref(4)?)),
            _ => {
                let Some(target) = id_text(r.get_ref(2)?) else {
                    continue;
                };
                if filter.is_some_and(|wanted| !wanted.contains(target.as_ref())) {
                    continue;
                }
                let row = interner.row(id, &key, r.get_ref(4)?);
                class.push_instance(target, row);
            }
        }
    }
    if !class.class.is_empty() || !class.instances.is_empty() {
        out.classes.insert(klass.to_string(), class);
    }
    Ok(out)
}

/// All rows of one tenant (snapshot mode).
fn load_tenant(conn: &Connection, table: &SettingsTable, tenant: &TenantId) -> Result<TenantRows> {
    let mut out = TenantRows::default();
    let mut interner = Interner::new(true);
    let mut stmt = conn.prepare_cached(&table.tenant_rows)?;
    let mut rows = stmt.query([tenant.to_sql_value()])?;
    while let Some(r) = rows.next()? {
        let Some(key) = id_text(r.get_ref(3)?) else {
            continue;
        };
        let ttype = id_text(r.get_ref(1)?);
        let target = id_text(r.get_ref(2)?);
        let row = interner.row(r.get(0)?, &key, r.get_ref(4)?);
        match (ttype, target) {
            (None, None) => out.tenant.push(row),
            (Some(t), None) => out.class_mut(&t).class.push(row),
            (Some(t), Some(target)) => out.class_mut(&t).push_instance(target, row),
            (None, Some(_)) => {} // fits no level, see the module docs
        }
    }
    Ok(out)
}

/// The rows a call sees: fresh from a query, or a kept snapshot.
enum Fetched<'a> {
    Owned(TenantRows),
    Kept(&'a TenantRows),
}

impl std::ops::Deref for Fetched<'_> {
    type Target = TenantRows;
    fn deref(&self) -> &TenantRows {
        match self {
            Fetched::Owned(rows) => rows,
            Fetched::Kept(rows) => rows,
        }
    }
}

fn fetch<'a>(
    conn: &Connection,
    table: &SettingsTable,
    cache: Option<&'a mut TenantCache>,
    tenant: &TenantId,
    klass: &str,
    ids: Ids,
) -> Result<Fetched<'a>> {
    let Some(cache) = cache else {
        return Ok(Fetched::Owned(query_levels(
            conn, table, tenant, klass, ids,
        )?));
    };
    // Read the version before the rows: a commit in between makes the
    // snapshot newer than its version, which only costs a reload.
    let data_version: i64 = conn
        .prepare_cached("PRAGMA data_version")?
        .query_row([], |r| r.get(0))?;
    let rows = cache.rows(tenant, data_version, || load_tenant(conn, table, tenant))?;
    Ok(Fetched::Kept(rows))
}

thread_local! {
    /// Set by [`refuse_and_note`] when SQLite reported busy on this thread.
    static BUSY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Busy handler of [`Settings::without_waiting`]: give up at once, noting it.
fn refuse_and_note(_attempts: i32) -> bool {
    BUSY.with(|busy| busy.set(true));
    false
}

/// `YYYY-MM-DD HH:MM:SS.ffffff`, UTC: how Rails stores `datetime(6)`.
fn rails_timestamp() -> String {
    let t = UtcTime::now();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        t.millis * 1000
    )
}

impl Settings {
    /// Open the database (it must exist) and check the settings table.
    pub fn open(config: SettingsConfig) -> Result<Self> {
        let conn = connect(&config)?;
        Self::over(config, conn)
    }

    /// Settings over an open connection: the table is inspected here.
    fn over(config: SettingsConfig, conn: Connection) -> Result<Self> {
        let table = SettingsTable::inspect(&conn, &config)?;
        let snapshot = match config.lookup {
            Lookup::Auto => !table.indexed,
            Lookup::Query => false,
            Lookup::Snapshot => true,
        };
        Ok(Settings {
            config,
            conn: Some(conn),
            pid: std::process::id(),
            table,
            snapshot,
            cache: TenantCache::default(),
        })
    }

    pub fn config(&self) -> &SettingsConfig {
        &self.config
    }

    /// The strategy in use: [`Lookup::Query`] or [`Lookup::Snapshot`].
    pub fn lookup(&self) -> Lookup {
        if self.snapshot {
            Lookup::Snapshot
        } else {
            Lookup::Query
        }
    }

    /// Whether the table has the (tenant, target_type, target_id) index.
    pub fn indexed(&self) -> bool {
        self.table.indexed
    }

    /// Close the connection now; the next call opens a new one.
    pub fn close(&mut self) {
        self.cache.clear();
        if let Some(conn) = self.conn.take() {
            if self.pid == std::process::id() {
                drop(conn);
            } else {
                std::mem::forget(conn);
            }
        }
    }

    /// The connection of this process, opened if needed. After `fork` the
    /// parent's connection is forgotten, never closed nor used: closing it
    /// could release POSIX locks this process holds through other
    /// connections to the same file.
    fn connection(&mut self) -> Result<()> {
        let pid = std::process::id();
        if pid != self.pid {
            if let Some(inherited) = self.conn.take() {
                std::mem::forget(inherited);
            }
            self.cache.clear();
            self.pid = pid;
        }
        if self.conn.is_none() {
            self.conn = Some(connect(&self.config)?);
        }
        Ok(())
    }

    fn fetch(
        &mut self,
        tenant: &TenantId,
        klass: &str,
        ids: Ids,
    ) -> Result<(Fetched<'_>, Option<&Map<String, Value>>)> {
        self.connection()?;
        let Settings {
            config,
            conn,
            table,
            snapshot,
            cache,
            ..
        } = self;
        let conn = conn
            .as_ref()
            .ok_or_else(|| Error::internal("settings: no connection"))?;
        let cache = if *snapshot { Some(cache) } else { None };
        let rows = fetch(conn, table, cache, tenant, klass, ids)?;
        Ok((rows, config.defaults.get(klass)))
    }

    /// Effective settings of one target: `id` `None` resolves the class
    /// level (defaults < tenant < class).
    pub fn resolve(
        &mut self,
        tenant: &TenantId,
        klass: &str,
        id: Option<&TargetId>,
    ) -> Result<Map<String, Value>> {
        let canonical = id.map(TargetId::canonical);
        let ids = canonical.as_deref().map_or(Ids::Class, Ids::One);
        let (rows, defaults) = self.fetch(tenant, klass, ids)?;
        let levels = rows.levels(klass, canonical.as_deref());
        let target = Target { tenant, klass, id };
        let base = Base::new(defaults, levels.tenant, levels.class, &target);
        let mut pairs = Vec::new();
        base.resolve_into(
            levels.instance,
            &target,
            &mut Scratch::default(),
            &mut pairs,
        )?;
        Ok(cascade::to_map(&pairs))
    }

    /// Value and source level of every key of one target. Invalid rows are
    /// reported, not raised (see [`Explained::errors`]).
    pub fn explain(
        &mut self,
        tenant: &TenantId,
        klass: &str,
        id: Option<&TargetId>,
    ) -> Result<Vec<(String, Explained)>> {
        let canonical = id.map(TargetId::canonical);
        let ids = canonical.as_deref().map_or(Ids::Class, Ids::One);
        let (rows, defaults) = self.fetch(tenant, klass, ids)?;
        let levels = rows.levels(klass, canonical.as_deref());
        Ok(cascade::explain(
            defaults,
            levels,
            &Target { tenant, klass, id },
        ))
    }

    /// `resolve` for many instances of one class in one query, as owned
    /// maps. Ids that name the same target (`42` and `"42"`) are resolved
    /// once, under the first.
    pub fn resolve_many(
        &mut self,
        tenant: &TenantId,
        klass: &str,
        ids: &[TargetId],
    ) -> Result<Vec<(TargetId, Map<String, Value>)>> {
        let mut out = Vec::with_capacity(ids.len());
        self.resolve_many_each(tenant, klass, ids, |id, pairs| {
            out.push((id.clone(), cascade::to_map(pairs)));
            Ok(())
        })?;
        Ok(out)
    }

    /// `resolve_many` without copies: `visit` gets each distinct target (in
    /// request order) with its settings as (key, value) pairs in result
    /// order. An error from `visit` stops the call and is returned.
    pub fn resolve_many_each<F>(
        &mut self,
        tenant: &TenantId,
        klass: &str,
        ids: &[TargetId],
        mut visit: F,
    ) -> Result<()>
    where
        F: FnMut(&TargetId, &[(&str, &Value)]) -> Result<()>,
    {
        let all: Vec<String> = ids.iter().map(TargetId::canonical).collect();
        let mut wanted: HashSet<&str, FastHash> =
            HashSet::with_capacity_and_hasher(ids.len(), FastHash::default());
        let mut unique: Vec<(&TargetId, &str)> = Vec::with_capacity(ids.len());
        for (id, text) in ids.iter().zip(&all) {
            if wanted.insert(text) {
                unique.push((id, text));
            }
        }
        if unique.is_empty() {
            return Ok(());
        }
        let list: Vec<&str> = unique.iter().map(|(_, text)| *text).collect();
        let (rows, defaults) = self.fetch(tenant, klass, Ids::Many(&wanted, &list))?;
        let class_levels = rows.levels(klass, None);
        let base = Base::new(
            defaults,
            class_levels.tenant,
            class_levels.class,
            &Target {
                tenant,
                klass,
                id: None,
            },
        );
        let instances = rows.classes.get(klass).map(|c| &c.instances);
        let mut scratch = Scratch::default();
        let mut pairs = Vec::new();
        for (id, text) in unique {
            let instance = instances
                .and_then(|m| m.get(text))
                .map_or(&[][..], Vec::as_slice);
            base.resolve_into(
                instance,
                &Target {
                    tenant,
                    klass,
                    id: Some(id),
                },
                &mut scratch,
                &mut pairs,
            )?;
            visit(id, &pairs)?;
        }
        Ok(())
    }

    /// Run `work` without ever waiting for a lock: if SQLite reports busy
    /// anywhere in it, its result is dropped and `Ok(None)` returned, so the
    /// caller can run it again the patient way. Lets a binding try a call
    /// without releasing its interpreter lock first.
    pub fn without_waiting<T>(
        &mut self,
        work: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<Option<T>> {
        self.connection()?;
        let conn = self
            .conn
            .as_ref()
            .ok_or_else(|| Error::internal("settings: no connection"))?;
        BUSY.with(|busy| busy.set(false));
        conn.busy_handler(Some(refuse_and_note))?;
        let outcome = work(self);
        if let Some(conn) = self.conn.as_ref() {
            conn.busy_timeout(self.config.busy_timeout)?;
        }
        if BUSY.with(|busy| busy.replace(false)) {
            return Ok(None);
        }
        outcome.map(Some)
    }

    /// Create the missing rows of one level (class level without `id`,
    /// instance level with it) for the keys of `defaults[klass]`, exactly
    /// once even under concurrent callers; returns how many were created.
    /// The values written are the ones in effect (see the module docs).
    /// Phases: a plain read without lock (nothing missing: done), then under
    /// the write lock a second look and the inserts.
    pub fn build_settings_for(
        &mut self,
        tenant: &TenantId,
        klass: &str,
        id: Option<&TargetId>,
    ) -> Result<usize> {
        if self.class_defaults(klass)?.is_empty() {
            return Ok(0);
        }
        let build = BuildLevel::new(tenant, klass, id);
        if self.level_is_complete(&build)? {
            return Ok(0);
        }
        let created = self.insert_missing(&build)?;
        // Our own commits do not change our `data_version`: forget the
        // snapshot of this tenant ourselves.
        self.cache.forget(tenant);
        Ok(created)
    }

    /// `defaults[klass]`, which `build_settings_for` requires.
    fn class_defaults(&self, klass: &str) -> Result<&Map<String, Value>> {
        self.config.defaults.get(klass).ok_or_else(|| {
            let mut known: Vec<&str> = self.config.defaults.keys().map(String::as_str).collect();
            known.sort_unstable();
            Error::argument(format!(
                "build_settings_for: no defaults for klass {klass:?} (defaults name: {})",
                if known.is_empty() {
                    "nothing".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })
    }

    /// The fast path: does the level already have a row for every default
    /// key? A plain read, no lock held.
    fn level_is_complete(&mut self, build: &BuildLevel) -> Result<bool> {
        let (rows, defaults) = self.fetch(build.tenant, build.klass, build.ids())?;
        let present = build.present(&rows);
        Ok(defaults
            .into_iter()
            .flat_map(Map::keys)
            .all(|key| present.iter().any(|row| *row.key == **key)))
    }

    /// The slow path: take the write lock, look again, insert the rows
    /// still missing with the value in effect below the level.
    fn insert_missing(&self, build: &BuildLevel) -> Result<usize> {
        let conn = self
            .conn
            .as_ref()
            .ok_or_else(|| Error::internal("settings: no connection"))?;
        let defaults = self.class_defaults(build.klass)?;
        let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
            .at("build_settings_for: taking the write lock")?;
        let rows = query_levels(&tx, &self.table, build.tenant, build.klass, build.ids())?;
        let present: HashSet<&str> = build.present(&rows).iter().map(|r| &*r.key).collect();
        let levels = rows.levels(build.klass, build.canonical.as_deref());
        // What is in effect below the level being built.
        let target = Target {
            tenant: build.tenant,
            klass: build.klass,
            id: build.id,
        };
        let class_rows = match build.level {
            Level::Instance => levels.class,
            _ => &[],
        };
        let below = Base::new(Some(defaults), levels.tenant, class_rows, &target);
        let now = rails_timestamp();
        let tenant_value = build.tenant.to_sql_value();
        let mut created = 0;
        {
            let mut insert = tx.prepare_cached(&self.table.insert)?;
            for (key, default) in defaults {
                if present.contains(key.as_str()) {
                    continue;
                }
                let value = below.value_of(key).unwrap_or(Ok(default))?;
                let json =
                    serde_json::to_string(value).map_err(|e| Error::internal(e.to_string()))?;
                let (klass, canonical) = (build.klass, &build.canonical);
                if self.table.has_timestamps {
                    insert.execute(params![tenant_value, klass, canonical, key, json, now])?;
                } else {
                    insert.execute(params![tenant_value, klass, canonical, key, json])?;
                }
                created += 1;
            }
        }
        tx.commit().at("build_settings_for: commit")?;
        Ok(created)
    }
}

/// The level `build_settings_for` builds: the class level of `klass`, or
/// the instance level of `id`.
struct BuildLevel<'a> {
    tenant: &'a TenantId,
    klass: &'a str,
    id: Option<&'a TargetId>,
    canonical: Option<String>,
    level: Level,
}

impl<'a> BuildLevel<'a> {
    fn new(tenant: &'a TenantId, klass: &'a str, id: Option<&'a TargetId>) -> Self {
        BuildLevel {
            tenant,
            klass,
            id,
            canonical: id.map(TargetId::canonical),
            level: if id.is_some() {
                Level::Instance
            } else {
                Level::Class
            },
        }
    }

    fn ids(&self) -> Ids<'_> {
        self.canonical.as_deref().map_or(Ids::Class, Ids::One)
    }

    /// The rows the level already has.
    fn present<'r>(&self, rows: &'r TenantRows) -> &'r [Row] {
        let levels = rows.levels(self.klass, self.canonical.as_deref());
        match self.level {
            Level::Instance => levels.instance,
            _ => levels.class,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The store's rules on in-memory databases: which level wins, that a
    //! missing level falls through to the next weaker one, and when kept
    //! rows are read again.
    use super::*;
    use serde_json::json;

    const TABLE: &str = "CREATE TABLE settings (id integer PRIMARY KEY, tenant_id integer,
        target_type varchar, target_id varchar, key varchar, value text)";

    /// Settings over an in-memory database holding `rows` (tenant,
    /// target_type, target_id, key, JSON value), with `color` and `size`
    /// defaults for `User`.
    fn settings(lookup: Lookup, rows: &[SettingRow]) -> Settings {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(TABLE).unwrap();
        for row in rows {
            conn.execute(
                "INSERT INTO settings (tenant_id, target_type, target_id, key, value) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![row.0, row.1, row.2, row.3, row.4],
            )
            .unwrap();
        }
        let defaults = json!({"color": "default", "size": 1});
        let config = SettingsConfig::new(":memory:")
            .with_lookup(lookup)
            .with_defaults("User", defaults.as_object().unwrap().clone());
        Settings::over(config, conn).unwrap()
    }

    fn tenant(id: i64) -> TenantId {
        TenantId::Integer(id)
    }

    fn color(settings: &mut Settings, id: Option<i64>) -> (Value, Option<Level>) {
        let id = id.map(TargetId::Int);
        let explained = settings.explain(&tenant(1), "User", id.as_ref()).unwrap();
        let (_, color) = explained.into_iter().find(|(k, _)| k == "color").unwrap();
        let resolved = settings.resolve(&tenant(1), "User", id.as_ref()).unwrap();
        assert_eq!(
            resolved["color"], color.value,
            "resolve agrees with explain"
        );
        (color.value, color.source)
    }

    /// tenant, target_type, target_id, key, JSON value.
    type SettingRow = (
        i64,
        Option<&'static str>,
        Option<&'static str>,
        &'static str,
        &'static str,
    );

    const EVERY_LEVEL: &[SettingRow] = &[
        (1, None, None, "color", "\"tenant\""),
        (1, Some("User"), None, "color", "\"class\""),
        (1, Some("User"), Some("7"), "color", "\"instance\""),
        // Another tenant's and another class's rows never count.
        (2, Some("User"), Some("8"), "color", "\"tenant 2\""),
        (1, Some("Project"), Some("8"), "color", "\"project\""),
    ];

    #[test]
    fn the_strongest_level_with_a_row_wins_instance_over_class_over_tenant() {
        for lookup in [Lookup::Query, Lookup::Snapshot] {
            let mut s = settings(lookup, EVERY_LEVEL);
            assert_eq!(
                color(&mut s, Some(7)),
                (json!("instance"), Some(Level::Instance))
            );
            assert_eq!(color(&mut s, None), (json!("class"), Some(Level::Class)));
        }
    }

    #[test]
    fn a_missing_level_falls_through_to_the_next_weaker_one() {
        for lookup in [Lookup::Query, Lookup::Snapshot] {
            // No instance row for 8: the class row.
            let mut s = settings(lookup, EVERY_LEVEL);
            assert_eq!(color(&mut s, Some(8)), (json!("class"), Some(Level::Class)));
            // No class row either: the tenant row.
            let mut s = settings(lookup, &[EVERY_LEVEL[0], EVERY_LEVEL[3], EVERY_LEVEL[4]]);
            assert_eq!(
                color(&mut s, Some(8)),
                (json!("tenant"), Some(Level::Tenant))
            );
            assert_eq!(color(&mut s, None), (json!("tenant"), Some(Level::Tenant)));
            // No row of the tenant at all: the default.
            let mut s = settings(lookup, &EVERY_LEVEL[3..]);
            assert_eq!(
                color(&mut s, Some(8)),
                (json!("default"), Some(Level::Default))
            );
            // An instance row with no class row between it and the tenant's.
            let mut s = settings(lookup, &[EVERY_LEVEL[0], EVERY_LEVEL[2]]);
            assert_eq!(
                color(&mut s, Some(7)),
                (json!("instance"), Some(Level::Instance))
            );
            assert_eq!(color(&mut s, None), (json!("tenant"), Some(Level::Tenant)));
        }
    }

    /// Our own commits leave `PRAGMA data_version` as it is, so the rows
    /// `build_settings_for` wrote are only seen because it forgets the
    /// tenant's kept rows.
    #[test]
    fn building_a_level_forgets_the_kept_rows_of_that_tenant() {
        let mut s = settings(Lookup::Snapshot, &EVERY_LEVEL[..1]);
        assert_eq!(
            color(&mut s, Some(9)),
            (json!("tenant"), Some(Level::Tenant))
        );
        assert_eq!(
            s.build_settings_for(&tenant(1), "User", Some(&TargetId::Int(9)))
                .unwrap(),
            2
        );
        assert_eq!(
            color(&mut s, Some(9)),
            (json!("tenant"), Some(Level::Instance))
        );
        assert_eq!(
            s.build_settings_for(&tenant(1), "User", Some(&TargetId::Int(9)))
                .unwrap(),
            0
        );
    }

    /// A loader that counts its calls and returns rows with one tenant row
    /// whose id is the call number.
    fn counting(calls: &std::cell::Cell<i64>) -> impl FnOnce() -> Result<TenantRows> + '_ {
        move || {
            calls.set(calls.get() + 1);
            let mut interner = Interner::new(false);
            let row = interner.row(calls.get(), "color", ValueRef::Text(b"1"));
            Ok(TenantRows {
                tenant: vec![row],
                ..TenantRows::default()
            })
        }
    }

    fn first_row_id(rows: &TenantRows) -> i64 {
        rows.tenant[0].id
    }

    #[test]
    fn kept_rows_are_read_again_when_the_data_version_changes() {
        let mut cache = TenantCache::default();
        let calls = std::cell::Cell::new(0);
        let t = tenant(1);
        assert_eq!(
            first_row_id(cache.rows(&t, 5, counting(&calls)).unwrap()),
            1
        );
        assert_eq!(
            first_row_id(cache.rows(&t, 5, counting(&calls)).unwrap()),
            1
        );
        assert_eq!(calls.get(), 1, "same version: kept");
        assert_eq!(
            first_row_id(cache.rows(&t, 6, counting(&calls)).unwrap()),
            2
        );
        cache.forget(&t);
        assert_eq!(
            first_row_id(cache.rows(&t, 6, counting(&calls)).unwrap()),
            3
        );
        assert_eq!(cache.entries.len(), 1);
    }

    #[test]
    fn the_cache_keeps_the_tenants_used_last() {
        let mut cache = TenantCache::default();
        let calls = std::cell::Cell::new(0);
        for id in 1..=SNAPSHOT_TENANTS as i64 {
            cache.rows(&tenant(id), 1, counting(&calls)).unwrap();
        }
        // Tenant 1 used again, so tenant 2 is the least recently used.
        cache.rows(&tenant(1), 1, counting(&calls)).unwrap();
        cache.rows(&tenant(99), 1, counting(&calls)).unwrap();
        let kept: Vec<&TenantId> = cache.entries.iter().map(|e| &e.tenant).collect();
        assert_eq!(kept.len(), SNAPSHOT_TENANTS);
        assert!(!kept.contains(&&tenant(2)), "{kept:?}");
        assert!(kept.contains(&&tenant(1)), "{kept:?}");
        let before = calls.get();
        cache.rows(&tenant(1), 1, counting(&calls)).unwrap();
        assert_eq!(calls.get(), before, "tenant 1 still kept");
    }
}
