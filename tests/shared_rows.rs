//! Shared reference rows: users joined to accounts through `account_users`,
//! tags shared between accounts, audits whose polymorphic user is a shared
//! user, identities and platform apps keyed by 16-byte BLOB UUIDs without
//! declared foreign keys. A backup carries the rows the tenant's rows refer
//! to; a restore into a new, empty database then leaves no dangling
//! reference, and a restore anywhere never updates or purges a shared row.

mod common;

use common::{snapshot, EditableArchive};
use rusqlite::Connection;
use serde_json::json;
use std::path::{Path, PathBuf};
use tenant_kit::progress::CollectProgress;
use tenant_kit::ErrorKind;

const SCHEMA: &str = "
CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE identities (id blob(16) PRIMARY KEY NOT NULL, email TEXT NOT NULL);
CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, identity_id blob(16));
CREATE TABLE account_users (id INTEGER PRIMARY KEY,
  account_id INTEGER NOT NULL REFERENCES accounts(id),
  user_id INTEGER NOT NULL REFERENCES users(id), role TEXT);
CREATE TABLE platform_apps (id blob(16) PRIMARY KEY NOT NULL, name TEXT);
CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT NOT NULL, taggings_count INTEGER DEFAULT 0);
CREATE TABLE projects (id INTEGER PRIMARY KEY, account_id INTEGER NOT NULL REFERENCES accounts(id),
  name TEXT, platform_app_id blob(16), budget REAL);
CREATE TABLE taggings (id INTEGER PRIMARY KEY, tag_id INTEGER NOT NULL,
  taggable_type TEXT NOT NULL, taggable_id INTEGER NOT NULL);
CREATE TABLE audits (id INTEGER PRIMARY KEY, auditable_type TEXT, auditable_id INTEGER,
  user_type TEXT, user_id INTEGER, action TEXT);
";

fn uuid(kind: u8, n: u8) -> Vec<u8> {
    let mut b = vec![0x01, 0x90, kind, 0x7a, 0x1b, 0x2c, 0x7d, 0x3e];
    b.extend([0x8f, 0x40, 0x51, 0x62, 0x73, 0x84, 0x95, n]);
    b
}

/// Two accounts. User 2 belongs to both, user 4 to none; tag 1 is used by
/// both accounts' projects, tag 2 by account 1's, tag 3 by account 2's;
/// platform app 1 is used by account 1, app 2 by nobody.
fn seed(conn: &Connection) {
    conn.execute_batch(
        "INSERT INTO accounts VALUES (1, 'One'), (2, 'Two');
         INSERT INTO tags VALUES (1, 'urgent', 2), (2, 'later', 1), (3, 'blue', 1);
         INSERT INTO account_users VALUES (1, 1, 1, 'admin'), (2, 1, 2, 'member'), (3, 2, 2, 'admin'), (4, 2, 3, 'member');
         INSERT INTO projects(id, account_id, name, budget) VALUES (1, 1, 'Alpha', 1.5), (2, 2, 'Beta', 2.0), (3, 1, 'Gamma', NULL);
         INSERT INTO taggings VALUES (1, 1, 'Project', 1), (2, 2, 'Project', 3), (3, 1, 'Project', 2), (4, 3, 'Project', 2);
         INSERT INTO audits VALUES (1, 'Project', 1, 'User', 1, 'create'), (2, 'Project', 3, 'User', 2, 'update'),
           (3, 'Project', 2, 'User', 3, 'create'), (4, 'Project', 1, NULL, NULL, 'system');",
    )
    .unwrap();
    for n in 1..=4u8 {
        conn.execute(
            "INSERT INTO identities VALUES (?1, ?2)",
            rusqlite::params![uuid(1, n), format!("u{n}@example.com")],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO users(id, name, identity_id) VALUES (?1, ?2, ?3)",
            rusqlite::params![n, format!("User {n}"), uuid(1, n)],
        )
        .unwrap();
    }
    for n in 1..=2u8 {
        conn.execute(
            "INSERT INTO platform_apps VALUES (?1, ?2)",
            rusqlite::params![uuid(2, n), format!("App {n}")],
        )
        .unwrap();
    }
    conn.execute(
        "UPDATE projects SET platform_app_id = ?1 WHERE id = 1",
        [uuid(2, 1)],
    )
    .unwrap();
}

struct Shop {
    _dir: tempfile::TempDir,
    db: PathBuf,
    out: PathBuf,
}

impl Shop {
    fn new() -> Shop {
        Shop::with_schema(SCHEMA)
    }

    /// The accounts of [`seed`] in a variant of the schema.
    fn with_schema(schema: &str) -> Shop {
        let shop = Shop::empty(schema);
        seed(&shop.conn());
        shop
    }

    /// A new database with `schema` and no rows.
    fn empty(schema: &str) -> Shop {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.sqlite3");
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(schema).unwrap();
        Shop { _dir: dir, db, out }
    }

    fn conn(&self) -> Connection {
        Connection::open(&self.db).unwrap()
    }

    fn backup(
        &self,
        tenant: i64,
        extra: serde_json::Value,
    ) -> tenant_kit::Result<tenant_kit::backup::BackupReport> {
        let mut options = json!({
            "database": self.db, "tenant_id": tenant, "output_dir": self.out,
            "tenant_column": "account_id",
        });
        for (k, v) in extra.as_object().unwrap() {
            options[k] = v.clone();
        }
        tenant_kit::backup::backup(
            &serde_json::from_value(options).unwrap(),
            &mut CollectProgress::default(),
        )
    }

    fn restore(
        &self,
        archive: &Path,
        tenant: i64,
        extra: serde_json::Value,
    ) -> tenant_kit::Result<tenant_kit::restore::RestoreReport> {
        let mut options = json!({
            "database": self.db, "archive": archive, "tenant_id": tenant,
            "tenant_column": "account_id",
        });
        for (k, v) in extra.as_object().unwrap() {
            options[k] = v.clone();
        }
        tenant_kit::restore::restore(
            &serde_json::from_value(options).unwrap(),
            &mut CollectProgress::default(),
        )
    }

    /// Every row of `table` with each value's storage class, in key order.
    fn typed_rows(&self, table: &str, filter: &str) -> Vec<String> {
        let conn = self.conn();
        let cols: Vec<String> = conn
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let select = cols
            .iter()
            .map(|c| format!("typeof({c}) || ':' || quote({c})"))
            .collect::<Vec<_>>()
            .join(" || ' ' || ");
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {select} FROM {table} WHERE {filter} ORDER BY 1"
            ))
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }
}

/// Every reference of the schema, declared or not, whose value names no
/// row: foreign keys, `<x>_id` → `<x>s` by naming, and polymorphic
/// `<x>_type`/`<x>_id` pairs (class `Project` → `projects`).
fn dangling_references(conn: &Connection) -> Vec<String> {
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let columns = |t: &str| -> Vec<String> {
        conn.prepare(&format!("SELECT name FROM pragma_table_info('{t}')"))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    let mut out = Vec::new();
    let mut check = |child: &str, col: &str, parent: &str, typed: &str| {
        let sql = format!(
            "SELECT count(*) FROM {child} AS c WHERE c.{col} IS NOT NULL{typed} AND NOT EXISTS (SELECT 1 FROM {parent} AS p WHERE p.id = c.{col})"
        );
        let n: i64 = conn.query_row(&sql, [], |r| r.get(0)).unwrap();
        if n > 0 {
            out.push(format!("{child}.{col} -> {parent}: {n}"));
        }
    };
    for t in &tables {
        let cols = columns(t);
        for c in &cols {
            let Some(stem) = c.strip_suffix("_id") else {
                continue;
            };
            let type_col = format!("{stem}_type");
            if cols.contains(&type_col) {
                let classes: Vec<String> = conn
                    .prepare(&format!(
                        "SELECT DISTINCT {type_col} FROM {t} WHERE {type_col} IS NOT NULL"
                    ))
                    .unwrap()
                    .query_map([], |r| r.get(0))
                    .unwrap()
                    .collect::<rusqlite::Result<_>>()
                    .unwrap();
                for class in classes {
                    let parent = format!("{}s", class.to_lowercase());
                    assert!(tables.contains(&parent), "class {class}");
                    check(t, c, &parent, &format!(" AND c.{type_col} = '{class}'"));
                }
            } else if tables.contains(&format!("{stem}s")) {
                check(t, c, &format!("{stem}s"), "");
            }
        }
    }
    out
}

fn shared_counts(report: &tenant_kit::restore::RestoreReport) -> serde_json::Value {
    serde_json::to_value(&report.shared).unwrap()
}

#[test]
fn a_backup_carries_exactly_the_shared_rows_its_rows_refer_to() {
    let shop = Shop::new();
    let report = shop.backup(1, json!({})).unwrap();
    let shared: Vec<(String, u64)> = report.shared.clone().into_iter().collect();
    assert_eq!(
        shared,
        [
            ("identities".to_string(), 2),
            ("platform_apps".to_string(), 1),
            ("tags".to_string(), 2),
            ("users".to_string(), 2),
        ]
    );
    assert!(!report.tables.contains_key("users"), "{:?}", report.tables);
    let archive = EditableArchive::open(&report.path);
    for entry in archive.manifest["tables"].as_array().unwrap() {
        let shared = report.shared.contains_key(entry["name"].as_str().unwrap());
        assert_eq!(entry["scope"] == "shared", shared, "{entry}");
    }
    let ids = |table: &str| -> Vec<serde_json::Value> {
        archive
            .rows(table)
            .iter()
            .map(|r| r["id"].clone())
            .collect()
    };
    assert_eq!(ids("users"), [json!(1), json!(2)]);
    assert_eq!(ids("tags"), [json!(1), json!(2)]);
    // Shared rows come after the tenant's rows.
    let first_shared = archive
        .lines
        .iter()
        .position(|l| report.shared.contains_key(l["table"].as_str().unwrap()))
        .unwrap();
    assert!(archive.lines[first_shared..]
        .iter()
        .all(|l| report.shared.contains_key(l["table"].as_str().unwrap())));
}

#[test]
fn restoring_into_the_same_database_changes_nothing_and_counts_the_shared_rows_present() {
    let shop = Shop::new();
    let archive = shop.backup(1, json!({})).unwrap().path;
    let before = snapshot(&shop.conn());
    let report = shop.restore(&archive, 1, json!({})).unwrap();
    assert_eq!(snapshot(&shop.conn()), before);
    assert_eq!(
        shared_counts(&report)["users"],
        json!({"inserted": 0, "present": 2, "differing": 0})
    );
    let dry = shop.restore(&archive, 1, json!({"dry_run": true})).unwrap();
    assert_eq!(shared_counts(&dry), shared_counts(&report));
}

#[test]
fn a_restore_into_a_new_empty_database_leaves_no_dangling_reference() {
    let shop = Shop::new();
    let archive = shop.backup(1, json!({})).unwrap().path;
    let fresh = Shop::empty(SCHEMA);
    let report = fresh.restore(&archive, 1, json!({})).unwrap();
    assert_eq!(dangling_references(&fresh.conn()), Vec::<String>::new());
    assert_eq!(
        shared_counts(&report)["identities"],
        json!({"inserted": 2, "present": 0, "differing": 0})
    );
    // The tenant's rows and the shared rows, values and storage classes.
    for (table, filter) in [
        ("projects", "account_id = 1"),
        ("account_users", "account_id = 1"),
        ("users", "id IN (1, 2)"),
        (
            "identities",
            "email IN ('u1@example.com', 'u2@example.com')",
        ),
        ("tags", "id IN (1, 2)"),
        ("platform_apps", "name = 'App 1'"),
        ("audits", "auditable_id IN (1, 3)"),
    ] {
        assert_eq!(
            fresh.typed_rows(table, filter),
            shop.typed_rows(table, filter),
            "{table}"
        );
        assert_eq!(
            fresh.typed_rows(table, "1").len(),
            shop.typed_rows(table, filter).len(),
            "{table}"
        );
    }
    // The same archive again: every shared row is present now.
    let before = snapshot(&fresh.conn());
    let again = fresh.restore(&archive, 1, json!({})).unwrap();
    assert_eq!(snapshot(&fresh.conn()), before);
    assert_eq!(
        shared_counts(&again)["users"],
        json!({"inserted": 0, "present": 2, "differing": 0})
    );
    // The other account's archive next to it: user 2 and tag 1 are there.
    let second = shop.backup(2, json!({})).unwrap().path;
    let report = fresh.restore(&second, 2, json!({})).unwrap();
    assert_eq!(
        shared_counts(&report)["users"],
        json!({"inserted": 1, "present": 1, "differing": 0})
    );
    assert_eq!(dangling_references(&fresh.conn()), Vec::<String>::new());
}

#[test]
fn a_purge_restore_never_purges_or_updates_a_shared_row() {
    let shop = Shop::new();
    let archive = shop.backup(1, json!({})).unwrap().path;
    // The app renames a shared user and drops account 1's memberships.
    shop.conn()
        .execute_batch(
            "UPDATE users SET name = 'Renamed' WHERE id = 2;
             DELETE FROM account_users WHERE account_id = 1;",
        )
        .unwrap();
    let users_before = shop.typed_rows("users", "1");
    let dry = shop
        .restore(&archive, 1, json!({"purge": true, "dry_run": true}))
        .unwrap();
    assert_eq!(
        shared_counts(&dry)["users"],
        json!({"inserted": 0, "present": 2, "differing": 1})
    );
    let report = shop.restore(&archive, 1, json!({"purge": true})).unwrap();
    assert_eq!(shared_counts(&report), shared_counts(&dry));
    assert_eq!(shop.typed_rows("users", "1"), users_before);
    assert!(!report.purged.contains_key("users"));
    assert_eq!(shop.typed_rows("account_users", "account_id = 1").len(), 2);
}

#[test]
fn table_rules_make_a_table_shared_owned_or_skipped() {
    let shop = Shop::new();
    let skipped = shop.backup(1, json!({"tables": {"tags": "skip"}})).unwrap();
    assert!(!skipped.shared.contains_key("tags"), "{:?}", skipped.shared);

    let owned = shop
        .backup(1, json!({"tables": {"users": "owned"}}))
        .unwrap_err();
    assert_eq!(owned.kind(), ErrorKind::Argument);
    assert!(
        owned
            .message()
            .contains("\"users\" is ruled owned, but it has no \"account_id\" column"),
        "{}",
        owned.message()
    );

    let tenant_data = shop
        .backup(1, json!({"tables": {"projects": "shared"}}))
        .unwrap_err();
    assert_eq!(tenant_data.kind(), ErrorKind::Argument);
    assert!(
        tenant_data
            .message()
            .contains("\"projects\" has the tenant column \"account_id\""),
        "{}",
        tenant_data.message()
    );

    let tenants = shop
        .backup(1, json!({"tables": {"accounts": "shared"}}))
        .unwrap_err();
    assert_eq!(
        tenants.message(),
        "tables: \"accounts\" is the tenants table, whose tenant's row is tenant data: it cannot be shared"
    );
    let owned_tenants = shop
        .backup(
            1,
            json!({"tables": {"accounts": "owned"}, "tenant_table": "accounts"}),
        )
        .unwrap();
    assert_eq!(owned_tenants.tables.get("accounts"), Some(&1));

    // Ruled shared, a table whose rows refer to tenant rows is no derived
    // table: its rows travel as shared rows, and a purge leaves them.
    let shared = shop
        .backup(1, json!({"tables": {"taggings": "shared"}}))
        .unwrap();
    assert!(!shared.tables.contains_key("taggings"));
    assert_eq!(
        shared.shared.get("taggings"),
        None,
        "no tenant row refers to a tagging"
    );
}

// ---- hostile archives: the archive is data, the target schema decides ----

/// `row` added to the dump after the last row of `table`.
fn add_row(archive: &mut EditableArchive, table: &str, row: serde_json::Value) {
    let last = archive
        .lines
        .iter()
        .rposition(|l| l["table"] == table)
        .unwrap();
    archive
        .lines
        .insert(last + 1, json!({"table": table, "row": row}));
}

fn edited(
    shop: &Shop,
    tenant: i64,
    extra: serde_json::Value,
    edit: impl FnOnce(&mut EditableArchive),
) -> PathBuf {
    let mut archive = EditableArchive::open(&shop.backup(tenant, extra).unwrap().path);
    edit(&mut archive);
    let path = shop.out.join("edited.tar.gz");
    archive.write(&path);
    path
}

#[test]
fn an_archived_shared_row_never_overwrites_the_row_present() {
    let shop = Shop::new();
    let path = edited(&shop, 1, json!({}), |a| {
        a.edit_rows("users", |row| row["name"] = json!("Hijacked"));
    });
    let before = snapshot(&shop.conn());
    let report = shop.restore(&path, 1, json!({})).unwrap();
    assert_eq!(snapshot(&shop.conn()), before);
    assert_eq!(
        shared_counts(&report)["users"],
        json!({"inserted": 0, "present": 2, "differing": 2})
    );
}

#[test]
fn a_shared_row_that_would_replace_another_row_is_refused_by_the_plan() {
    let schema = SCHEMA.replace(
        "tags (id INTEGER PRIMARY KEY, name TEXT NOT NULL,",
        "tags (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE ON CONFLICT REPLACE,",
    );
    let shop = Shop::with_schema(&schema);
    // A new tag with the name of account 2's tag 3: inserting it would make
    // SQLite delete tag 3.
    let path = edited(&shop, 1, json!({}), |a| {
        add_row(
            a,
            "tags",
            json!({"id": 50, "name": "blue", "taggings_count": 0}),
        );
    });
    // The plan sees the clash on the UNIQUE column first (see
    // tests/shared_row_edges.rs): the new tag is refused before the write
    // could delete tag 3.
    let before = snapshot(&shop.conn());
    let reason = "a shared row to insert whose name is already another tags row's (UNIQUE index sqlite_autoindex_tags_1): it cannot be inserted, and the rows that refer to it would dangle";
    let dry = shop.restore(&path, 1, json!({"dry_run": true})).unwrap();
    assert_eq!(dry.conflicts.len(), 1, "{:?}", dry.conflicts);
    assert_eq!(
        (
            dry.conflicts[0].table.as_str(),
            dry.conflicts[0].key.as_str(),
            dry.conflicts[0].reason.as_str()
        ),
        ("tags", "id=50", reason)
    );
    let err = shop.restore(&path, 1, json!({})).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(
        err.message().contains(&format!("tags id=50 ({reason})")),
        "{}",
        err.message()
    );
    assert_eq!(snapshot(&shop.conn()), before);
}

#[test]
fn the_archive_cannot_mark_tenant_data_shared_nor_shared_rows_tenant_data() {
    let shop = Shop::new();
    let before = snapshot(&shop.conn());
    let as_shared = edited(&shop, 1, json!({}), |a| {
        for t in a.manifest["tables"].as_array_mut().unwrap() {
            if t["name"] == "projects" {
                t["scope"] = json!("shared");
            }
        }
    });
    for dry_run in [true, false] {
        let err = shop
            .restore(&as_shared, 1, json!({"dry_run": dry_run}))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Archive);
        assert_eq!(
            err.message(),
            "the archive marks table projects as shared, but it is tenant data here (it has the tenant column account_id)"
        );
    }
    let as_owned = edited(&shop, 1, json!({}), |a| {
        for t in a.manifest["tables"].as_array_mut().unwrap() {
            if t["name"] == "users" {
                t["scope"] = json!("via account_users.user_id -> users");
            }
        }
    });
    let err = shop.restore(&as_owned, 1, json!({})).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Archive);
    assert_eq!(
        err.message(),
        "the archive marks table users as tenant data, but it holds shared rows here, not tenant data"
    );
    assert_eq!(snapshot(&shop.conn()), before);
}

#[test]
fn a_shared_row_to_insert_may_not_refer_to_another_tenants_rows() {
    // Users name a project; ruled shared, they are still no tenant data.
    let schema = SCHEMA.replace(
        "users (id INTEGER PRIMARY KEY, name TEXT NOT NULL,",
        "users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, project_id INTEGER,",
    );
    let shop = Shop::with_schema(&schema);
    let rules = json!({"tables": {"users": "shared"}});
    let path = edited(&shop, 1, rules.clone(), |a| {
        add_row(
            a,
            "users",
            json!({"id": 9, "name": "Mole", "project_id": 2, "identity_id": null}),
        );
    });
    let before = snapshot(&shop.conn());
    let dry = shop
        .restore(
            &path,
            1,
            json!({"dry_run": true, "tables": {"users": "shared"}}),
        )
        .unwrap();
    let reason = "a shared row to insert whose project_id refers to a row of projects that belongs to another tenant";
    assert_eq!(
        dry.conflicts
            .iter()
            .map(|c| (c.table.as_str(), c.key.as_str(), c.reason.as_str()))
            .collect::<Vec<_>>(),
        [("users", "id=9", reason)]
    );
    let err = shop
        .restore(&path, 1, json!({"tables": {"users": "shared"}}))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(
        err.message().contains(&format!("users id=9 ({reason})")),
        "{}",
        err.message()
    );
    assert_eq!(snapshot(&shop.conn()), before);
}
