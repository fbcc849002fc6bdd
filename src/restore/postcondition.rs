//! The restore's post-condition, one mechanism for every way a write can
//! reach beyond the rows it names: while the write transaction runs,
//! SQLite's pre-update hook shows us every row it inserts, updates or
//! deletes — our own statements, and what SQLite does on their behalf
//! (foreign-key actions, triggers, `REPLACE` conflict resolution). Before
//! commit, each change must be one of:
//!
//! - a row of a table with the tenant column that holds the target tenant
//!   before and after the change;
//! - the target tenant's own row in the tenants table;
//! - a row of a derived table (join tables, ActiveStorage) changed by the
//!   statement the plan made for that table (its rows are the plan's:
//!   the purge's by its member sets, the write's by the staged rows, which
//!   are checked again after writing);
//! - a row of a search index's shadow table (FTS data that the app's
//!   triggers derive from the rows above);
//! - a shared reference row (users, tags) inserted by the plan's own
//!   statement for that table, never updated or deleted, and never by a
//!   trigger.
//!
//! Anything else — another tenant's row, a row of a table that is not
//! tenant data, a derived row changed by a trigger — is a violation: the
//! transaction is rolled back and the restore fails with a conflict that
//! names table, key and cause. The hook cannot be fooled by what the archive
//! says: it judges the database's own rows by the target's schema.

use crate::error::{Error, Result};
use crate::schema::{Schema, SkipReason};
use crate::scope::{Membership, TenantScope};
use crate::value::SqlValue;
use rusqlite::hooks::{Action, PreUpdateCase};
use rusqlite::Connection;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// How many violations a refusal lists (it counts them all).
const LISTED: usize = 10;

/// What the statement running now is meant to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Intent {
    /// Nothing of the app's: bookkeeping only.
    Nothing,
    /// `DELETE` of the plan's rows of this table.
    Purge(String),
    /// `INSERT`/upsert of the staged rows of this table.
    Write(String),
    /// `INSERT` of the staged shared rows of this table missing here.
    Share(String),
}

/// One change the post-condition refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Violation {
    pub table: String,
    pub key: String,
    pub reason: String,
}

/// How rows of one table may change.
#[derive(Debug)]
enum Rule {
    /// The tenant column is at this position (in `table_xinfo` order, the
    /// order the hook's values come in).
    TenantColumn { column: usize },
    /// The tenants table: only the target's own row.
    TenantRow { key: usize },
    /// Rows that belong through other rows: only the plan's statement for
    /// this table may change them.
    Derived,
    /// Shared reference rows: only inserted, only by the plan's statement
    /// for this table (never a trigger's row).
    Shared,
    /// A virtual table's storage (FTS): derived by the app's triggers
    /// from rows the rules above admitted.
    Index,
    /// `sqlite_sequence`: an `AUTOINCREMENT` table's next id may rise
    /// (rows written with their keys, ids reserved by
    /// [`super::future_ids`]), never fall: a lower sequence hands out ids
    /// that rows may still refer to.
    Sequence,
}

/// Where the hook writes its verdicts, shared with the hook closure.
struct Watch {
    rules: HashMap<String, (Rule, Vec<(usize, String)>)>,
    target: SqlValue,
    intent: Intent,
    listed: Vec<Violation>,
    count: u64,
}

/// The hook, installed on a connection for as long as this lives.
pub(super) struct Watcher<'c> {
    conn: &'c Connection,
    watch: Arc<Mutex<Watch>>,
}

impl<'c> Watcher<'c> {
    /// Watch every change `conn` makes from now on.
    pub fn install(
        conn: &'c Connection,
        schema: &Schema,
        scope: &TenantScope,
        target: SqlValue,
    ) -> Watcher<'c> {
        let watch = Arc::new(Mutex::new(Watch {
            rules: rules(schema, scope),
            target,
            intent: Intent::Nothing,
            listed: Vec::new(),
            count: 0,
        }));
        let shared = Arc::clone(&watch);
        conn.preupdate_hook(Some(
            move |_: Action, db: &str, table: &str, case: &PreUpdateCase| {
                // Our own temp tables (staging, scratch) are not the app's.
                if db != "main" {
                    return;
                }
                if let Ok(mut watch) = shared.lock() {
                    watch.judge(table, case);
                }
            },
        ));
        Watcher { conn, watch }
    }

    /// The statement about to run is meant to change `intent`'s rows.
    pub fn expect(&self, intent: Intent) {
        if let Ok(mut watch) = self.watch.lock() {
            watch.intent = intent;
        }
    }

    /// Every violation so far (up to [`LISTED`]) and how many there were.
    pub fn violations(&self) -> (Vec<Violation>, u64) {
        match self.watch.lock() {
            Ok(watch) => (watch.listed.clone(), watch.count),
            Err(_) => (Vec::new(), 1),
        }
    }

    /// The post-condition: an error naming the violations, if any.
    pub fn check(&self) -> Result<()> {
        let (listed, count) = self.violations();
        if count == 0 {
            return Ok(());
        }
        let named: Vec<String> = listed
            .iter()
            .map(|v| format!("{} {} ({})", v.table, v.key, v.reason))
            .collect();
        let more = match count.saturating_sub(listed.len() as u64) {
            0 => String::new(),
            n => format!(" and {n} more"),
        };
        Err(Error::conflict(format!(
            "the restore would change rows that are not tenant {}'s: {}{more}; nothing was changed",
            self.target_description(),
            named.join(", ")
        )))
    }

    fn target_description(&self) -> String {
        self.watch
            .lock()
            .map(|w| w.target.describe())
            .unwrap_or_default()
    }
}

impl Drop for Watcher<'_> {
    fn drop(&mut self) {
        self.conn
            .preupdate_hook(None::<fn(Action, &str, &str, &PreUpdateCase)>);
    }
}

/// Each table's rule and its key columns (for messages), from the
/// target's schema and scope; tables without a rule are not tenant data.
fn rules(schema: &Schema, scope: &TenantScope) -> HashMap<String, (Rule, Vec<(usize, String)>)> {
    let tenant_column = &scope.options.tenant_column;
    let mut rules = HashMap::new();
    rules.insert("sqlite_sequence".to_string(), (Rule::Sequence, Vec::new()));
    for table in &schema.tables {
        let position = |name: &str| table.columns.iter().position(|c| c.name == name);
        let rule = match scope.table(&table.name).map(|t| &t.membership) {
            Some(Membership::TenantRow { key }) => position(key).map(|key| Rule::TenantRow { key }),
            Some(Membership::TenantColumn) => {
                position(tenant_column).map(|column| Rule::TenantColumn { column })
            }
            Some(Membership::Derived { .. }) => Some(Rule::Derived),
            Some(Membership::Shared { .. }) => None,
            None if scope.shared.iter().any(|t| t.name == table.name) => Some(Rule::Shared),
            None if table.skip == Some(SkipReason::Shadow) => Some(Rule::Index),
            None => None,
        };
        let Some(rule) = rule else { continue };
        let key = table
            .primary_key()
            .into_iter()
            .filter_map(|c| position(c).map(|i| (i, c.to_string())))
            .collect();
        rules.insert(table.name.clone(), (rule, key));
    }
    rules
}

/// The values of one side (before or after) of a change.
enum Side<'a> {
    Old(&'a rusqlite::hooks::PreUpdateOldValueAccessor),
    New(&'a rusqlite::hooks::PreUpdateNewValueAccessor),
}

impl Side<'_> {
    fn value(&self, column: usize) -> SqlValue {
        let value = match self {
            Side::Old(a) => a.get_old_column_value(column as i32),
            Side::New(a) => a.get_new_column_value(column as i32),
        };
        value.map(SqlValue::from_ref).unwrap_or(SqlValue::Null)
    }

    fn rowid(&self) -> i64 {
        match self {
            Side::Old(a) => a.get_old_row_id(),
            Side::New(a) => a.get_new_row_id(),
        }
    }

    fn depth(&self) -> i32 {
        match self {
            Side::Old(a) => a.get_query_depth(),
            Side::New(a) => a.get_query_depth(),
        }
    }
}

impl Watch {
    fn judge(&mut self, table: &str, case: &PreUpdateCase) {
        let (verb, sides): (&str, Vec<Side<'_>>) = match case {
            PreUpdateCase::Insert(new) => ("inserted", vec![Side::New(new)]),
            PreUpdateCase::Delete(old) => ("deleted", vec![Side::Old(old)]),
            PreUpdateCase::Update {
                old_value_accessor,
                new_value_accessor,
            } => (
                "changed",
                vec![Side::Old(old_value_accessor), Side::New(new_value_accessor)],
            ),
            PreUpdateCase::Unknown => ("changed", Vec::new()),
        };
        let Some(first) = sides.first() else {
            return self.refuse(
                table,
                "?".into(),
                "changed in a way SQLite did not name".into(),
            );
        };
        let Some((rule, key)) = self.rules.get(table) else {
            let key = describe_key(&[], first);
            return self.refuse(table, key, format!("not tenant data, would be {verb}"));
        };
        let key_text = || describe_key(key, first);
        match rule {
            Rule::Index => {}
            Rule::Sequence => {
                if sequence_falls(case) {
                    let name = first.value(0).describe();
                    let reason = format!("the id sequence of {name} would be lowered or {verb}");
                    self.refuse(table, key_text(), reason);
                }
            }
            Rule::TenantColumn { column } | Rule::TenantRow { key: column } => {
                for side in &sides {
                    let value = side.value(*column);
                    if value != self.target {
                        let owner = match value {
                            SqlValue::Null => "no tenant".to_string(),
                            v => format!("tenant {}", v.describe()),
                        };
                        let reason = format!("a row of {owner}, would be {verb}");
                        return self.refuse(table, key_text(), reason);
                    }
                }
            }
            Rule::Derived | Rule::Shared => {
                if !self.planned(rule, table, case) || first.depth() > 0 {
                    let reason = if matches!(rule, Rule::Derived) {
                        format!("not a row the restore writes, would be {verb} by a trigger, a foreign-key action or a REPLACE conflict clause")
                    } else {
                        format!(
                            "a shared row the restore only inserts when missing, would be {verb}"
                        )
                    };
                    self.refuse(table, key_text(), reason);
                }
            }
        }
    }

    /// Whether the statement running now is the plan's own for this row
    /// of a derived table (its purge or write) or a shared table (its
    /// insert).
    fn planned(&self, rule: &Rule, table: &str, case: &PreUpdateCase) -> bool {
        match (rule, &self.intent, case) {
            (Rule::Derived, Intent::Purge(t), PreUpdateCase::Delete(_)) => t == table,
            (
                Rule::Derived,
                Intent::Write(t),
                PreUpdateCase::Insert(_) | PreUpdateCase::Update { .. },
            ) => t == table,
            (Rule::Shared, Intent::Share(t), PreUpdateCase::Insert(_)) => t == table,
            _ => false,
        }
    }

    fn refuse(&mut self, table: &str, key: String, reason: String) {
        self.count += 1;
        if self.listed.len() < LISTED {
            self.listed.push(Violation {
                table: table.to_string(),
                key,
                reason,
            });
        }
    }
}

/// Whether a change of `sqlite_sequence` deletes a sequence or lowers it.
fn sequence_falls(case: &PreUpdateCase) -> bool {
    match case {
        PreUpdateCase::Delete(_) => true,
        PreUpdateCase::Update {
            old_value_accessor,
            new_value_accessor,
        } => {
            let seq = |side: Side<'_>| match side.value(1) {
                SqlValue::Integer(i) => i,
                _ => i64::MIN,
            };
            seq(Side::New(new_value_accessor)) < seq(Side::Old(old_value_accessor))
        }
        _ => false,
    }
}

/// `id=5`, `(a=1, b=2)`, or `rowid 7` for a table without a primary key.
fn describe_key(key: &[(usize, String)], side: &Side<'_>) -> String {
    if key.is_empty() {
        return format!("rowid {}", side.rowid());
    }
    let parts: Vec<String> = key
        .iter()
        .map(|(i, name)| format!("{name}={}", side.value(*i).describe()))
        .collect();
    if parts.len() == 1 {
        parts.into_iter().next().unwrap_or_default()
    } else {
        format!("({})", parts.join(", "))
    }
}

/// Whether a write here can change rows its statements do not name:
/// triggers, foreign-key actions (`CASCADE`, `SET NULL`, `SET DEFAULT`) or
/// a `REPLACE` conflict clause anywhere in the schema. Without them, the
/// plan's own checks predict the post-condition exactly; with them, a dry
/// run rehearses the writes in a transaction it rolls back.
pub(super) fn writes_can_reach_further(conn: &Connection) -> Result<bool> {
    let found: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM main.sqlite_schema WHERE type = 'trigger')
             OR EXISTS (SELECT 1 FROM main.sqlite_schema
                        WHERE type = 'table' AND upper(sql) LIKE '%REPLACE%')
             OR EXISTS (SELECT 1 FROM main.sqlite_schema AS s, pragma_foreign_key_list(s.name) AS f
                        WHERE s.type = 'table'
                          AND (f.on_delete NOT IN ('NO ACTION', 'RESTRICT')
                               OR f.on_update NOT IN ('NO ACTION', 'RESTRICT')))",
        [],
        |r| r.get(0),
    )?;
    Ok(found)
}
