//! [`Settings`]: one connection to the app's database, the settings table
//! as found there ([`SettingsTable`]: its quoted names and statement texts),
//! and (without a suitable index) the [`TenantCache`] of per-tenant row
//! snapshots.

use super::cascade::{self, Base, Explained, FastHash, Level, Row, Scratch, Target};
use super::config::{Lookup, SettingsConfig, TargetId, TenantId};
use super::rows::{fetch, query_levels, Fetched, Ids, TenantCache, TenantRows};
use super::table::{connect, SettingsTable};
use crate::clock::UtcTime;
use crate::error::{Error, Result, ResultExt};
use rusqlite::{params, Connection, Transaction, TransactionBehavior};
use serde_json::{Map, Value};
use std::collections::HashSet;

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
    use crate::settings::cascade::Interner;
    use crate::settings::rows::SNAPSHOT_TENANTS;
    use rusqlite::types::ValueRef;
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
