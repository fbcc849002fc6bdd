//! The settings rows of one tenant, by level (tenant, class, instance),
//! read for one resolution ([`query_levels`]) or for the snapshot cache
//! ([`TenantCache`], used when no index serves lookups).

use super::cascade::{FastHash, Interner, Levels, Row};
use super::config::TenantId;
use super::table::SettingsTable;
use crate::error::{Error, Result};
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection};
use std::collections::{HashMap, HashSet};

/// Tenants whose rows a snapshot-mode [`Settings`] keeps at most.
pub(super) const SNAPSHOT_TENANTS: usize = 4;

/// Snapshot lookup's memory: the rows of the [`SNAPSHOT_TENANTS`] tenants
/// used last, each valid for the `PRAGMA data_version` it was read at
/// (another connection's commit changes it; our own commits do not, so
/// [`Settings::build_settings_for`] forgets the tenant it wrote).
#[derive(Default)]
pub(super) struct TenantCache {
    /// Least recently used first.
    pub(super) entries: Vec<CachedTenant>,
}

pub(super) struct CachedTenant {
    pub(super) tenant: TenantId,
    pub(super) data_version: i64,
    pub(super) rows: TenantRows,
}

impl TenantCache {
    /// The tenant's rows as of `data_version`: kept ones if they were read
    /// at that version, otherwise `load`ed (evicting the least recently
    /// used tenant when full).
    pub(super) fn rows(
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

    pub(super) fn forget(&mut self, tenant: &TenantId) {
        self.entries.retain(|e| &e.tenant != tenant);
    }

    pub(super) fn clear(&mut self) {
        self.entries.clear();
    }
}

/// Rows of one tenant by level: the tenant level, and per class its class
/// level and its instances (by canonical id).
#[derive(Debug, Default)]
pub(super) struct TenantRows {
    pub(super) tenant: Vec<Row>,
    pub(super) classes: HashMap<String, ClassRows, FastHash>,
}

#[derive(Debug, Default)]
pub(super) struct ClassRows {
    pub(super) class: Vec<Row>,
    pub(super) instances: HashMap<String, Vec<Row>, FastHash>,
}

impl ClassRows {
    pub(super) fn push_instance(&mut self, target: std::borrow::Cow<'_, str>, row: Row) {
        match self.instances.get_mut(target.as_ref()) {
            Some(rows) => rows.push(row),
            None => {
                self.instances.insert(target.into_owned(), vec![row]);
            }
        }
    }
}

impl TenantRows {
    pub(super) fn levels(&self, klass: &str, id: Option<&str>) -> Levels<'_> {
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

    pub(super) fn class_mut(&mut self, klass: &str) -> &mut ClassRows {
        if !self.classes.contains_key(klass) {
            self.classes.insert(klass.to_string(), ClassRows::default());
        }
        self.classes.get_mut(klass).expect("inserted above")
    }
}

/// Up to this many ids, `resolve_many` (query lookup) seeks each id through
/// the index; beyond, it reads all instance rows of the class once and
/// filters, which costs about the same for a class of that many instances
/// and less for larger lists.
pub(super) const ID_LIST_MAX: usize = 1000;

/// Which instances a query is about.
#[derive(Clone, Copy)]
pub(super) enum Ids<'a> {
    /// None: class-level resolution.
    Class,
    One(&'a str),
    Many(&'a HashSet<&'a str, FastHash>, &'a [&'a str]),
}

/// `target_id` as text, whatever its storage class.
pub(super) fn id_text(raw: ValueRef<'_>) -> Option<std::borrow::Cow<'_, str>> {
    match raw {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string().into()),
        ValueRef::Real(f) => Some(f.to_string().into()),
        ValueRef::Text(b) | ValueRef::Blob(b) => Some(String::from_utf8_lossy(b)),
    }
}

/// One query for the tenant and class levels and the requested instances.
pub(super) fn query_levels(
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
pub(super) fn load_tenant(
    conn: &Connection,
    table: &SettingsTable,
    tenant: &TenantId,
) -> Result<TenantRows> {
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
pub(super) enum Fetched<'a> {
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

pub(super) fn fetch<'a>(
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
