//! Shared reference rows, the edge cases: a row to insert that a UNIQUE
//! index refuses (another row has its email), a row to insert that points
//! at a derived row (an attachment) the archive does not carry, and
//! copies with fresh ids (`new_ids:`), which never re-key shared rows.

mod common;

use common::{file_bytes, snapshot, EditableArchive};
use rusqlite::Connection;
use serde_json::json;
use std::path::{Path, PathBuf};
use tenant_kit::progress::CollectProgress;
use tenant_kit::ErrorKind;

/// Users are shared (no tenant column; memberships refer to them) and
/// their email is UNIQUE. Attachments hang off projects: derived rows.
/// A user's avatar is an attachment, so users are ruled shared
/// explicitly (else the avatar would make them derived).
const SCHEMA: &str = "
CREATE TABLE tenants (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE projects (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants(id), name TEXT);
CREATE TABLE attachments (id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL REFERENCES projects(id), name TEXT);
CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL, name TEXT,
  avatar_id INTEGER REFERENCES attachments(id));
CREATE UNIQUE INDEX index_users_on_email ON users(email);
CREATE TABLE memberships (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants(id),
  user_id INTEGER NOT NULL REFERENCES users(id), role TEXT);
";

const SEED: &str = "
INSERT INTO tenants VALUES (1, 'Acme'), (2, 'Globex');
INSERT INTO projects VALUES (1, 1, 'Alpha'), (2, 2, 'Beta');
INSERT INTO attachments VALUES (1, 1, 'alpha.png'), (2, 2, 'beta.png');
INSERT INTO users VALUES (1, 'ann@example.com', 'Ann', 1), (2, 'bob@example.com', 'Bob', NULL);
INSERT INTO memberships VALUES (1, 1, 1, 'admin'), (2, 2, 2, 'admin');
";

fn rules() -> serde_json::Value {
    json!({"users": "shared"})
}

struct Db {
    dir: tempfile::TempDir,
    db: PathBuf,
}

impl Db {
    /// The schema, then `rows`.
    fn new(rows: &str) -> Db {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.sqlite3");
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute_batch(rows).unwrap();
        Db { dir, db }
    }

    fn conn(&self) -> Connection {
        Connection::open(&self.db).unwrap()
    }

    fn backup(&self, tenant: i64) -> PathBuf {
        let options = json!({"database": self.db, "tenant_id": tenant,
                             "output_dir": self.dir.path(), "tables": rules()});
        tenant_kit::backup::backup(
            &serde_json::from_value(options).unwrap(),
            &mut CollectProgress::default(),
        )
        .unwrap()
        .path
    }

    fn restore(
        &self,
        archive: &Path,
        extra: serde_json::Value,
    ) -> tenant_kit::Result<tenant_kit::restore::RestoreReport> {
        let mut options = json!({"database": self.db, "archive": archive, "tenant_id": 1,
                                 "tables": rules()});
        for (k, v) in extra.as_object().unwrap() {
            options[k] = v.clone();
        }
        tenant_kit::restore::restore(
            &serde_json::from_value(options).unwrap(),
            &mut CollectProgress::default(),
        )
    }

    /// Tenant 1's archive with `users` rows added.
    fn edited(&self, users: &[serde_json::Value]) -> PathBuf {
        let mut archive = EditableArchive::open(&self.backup(1));
        let last = archive
            .lines
            .iter()
            .rposition(|l| l["table"] == "users")
            .unwrap();
        for (i, row) in users.iter().enumerate() {
            archive
                .lines
                .insert(last + 1 + i, json!({"table": "users", "row": row}));
        }
        let path = self.dir.path().join("edited.tar.gz");
        archive.write(&path);
        path
    }
}

fn conflicts(report: &tenant_kit::restore::RestoreReport) -> Vec<(String, String, String)> {
    report
        .conflicts
        .iter()
        .map(|c| (c.table.clone(), c.key.clone(), c.reason.clone()))
        .collect()
}

/// The dry run lists exactly `expected`; the restore is refused with a
/// conflict naming each, and the database file is byte-identical.
fn refused_as_planned(db: &Db, archive: &Path, expected: &[(&str, &str, &str)]) {
    let before = file_bytes(&db.db);
    let dry = db.restore(archive, json!({"dry_run": true})).unwrap();
    let expected: Vec<(String, String, String)> = expected
        .iter()
        .map(|(t, k, r)| (t.to_string(), k.to_string(), r.to_string()))
        .collect();
    assert_eq!(conflicts(&dry), expected);
    let err = db.restore(archive, json!({})).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{}", err.message());
    for (table, key, reason) in &expected {
        let named = format!("{table} {key} ({reason})");
        assert!(err.message().contains(&named), "{}", err.message());
    }
    assert_eq!(file_bytes(&db.db), before);
}

#[test]
fn a_missing_shared_row_whose_unique_email_another_user_has_is_a_planned_conflict() {
    let source = Db::new(SEED);
    let archive = source.backup(1);
    // A new database where Ann's email belongs to another user (id 7).
    let target = Db::new("INSERT INTO users VALUES (7, 'ann@example.com', 'Ann B.', NULL);");
    refused_as_planned(
        &target,
        &archive,
        &[(
            "users",
            "id=1",
            "a shared row to insert whose email is already another users row's (UNIQUE index index_users_on_email): it cannot be inserted, and the rows that refer to it would dangle",
        )],
    );
}

#[test]
fn two_missing_shared_rows_of_the_archive_with_one_unique_email_are_a_conflict() {
    let db = Db::new(SEED);
    let archive = db.edited(&[
        json!({"id": 8, "email": "twin@example.com", "name": "Twin", "avatar_id": null}),
        json!({"id": 9, "email": "twin@example.com", "name": "Twin", "avatar_id": null}),
    ]);
    refused_as_planned(
        &db,
        &archive,
        &[(
            "users",
            "id=9",
            "a shared row to insert whose email is already another users row's (UNIQUE index index_users_on_email): it cannot be inserted, and the rows that refer to it would dangle",
        )],
    );
}

#[test]
fn a_shared_row_to_insert_may_not_refer_to_a_derived_row_the_archive_does_not_carry() {
    let db = Db::new(SEED);
    // User 9's avatar is Globex's attachment 2; user 8's is Acme's
    // attachment 1, which the archive carries: only 9 is refused.
    let archive = db.edited(&[
        json!({"id": 8, "email": "eve@example.com", "name": "Eve", "avatar_id": 1}),
        json!({"id": 9, "email": "mole@example.com", "name": "Mole", "avatar_id": 2}),
    ]);
    refused_as_planned(
        &db,
        &archive,
        &[(
            "users",
            "id=9",
            "a shared row to insert whose avatar_id refers to a row of attachments that the archive does not carry",
        )],
    );
    // Without user 9 the restore goes through and inserts user 8.
    let fine =
        db.edited(&[json!({"id": 8, "email": "eve@example.com", "name": "Eve", "avatar_id": 1})]);
    let report = db.restore(&fine, json!({})).unwrap();
    assert_eq!(
        serde_json::to_value(&report.shared).unwrap()["users"],
        json!({"inserted": 1, "present": 1, "differing": 0})
    );
}

#[test]
fn new_ids_never_rekey_a_shared_row_whose_id_another_row_has_here() {
    let source = Db::new(SEED);
    let archive = source.backup(1);
    // A database where id 1 is another user: the copy's membership takes
    // the archive's user id, so it names that user; the row is counted
    // present and differing, never overwritten.
    let target = Db::new(
        "INSERT INTO tenants VALUES (5, 'Initech');
         INSERT INTO users VALUES (1, 'carl@example.com', 'Carl', NULL);",
    );
    let before = snapshot(&target.conn());
    let dry = target
        .restore(
            &archive,
            json!({"tenant_id": null, "new_ids": true, "dry_run": true}),
        )
        .unwrap();
    assert!(dry.conflicts.is_empty(), "{:?}", dry.conflicts);
    assert_eq!(snapshot(&target.conn()), before);
    let report = target
        .restore(&archive, json!({"tenant_id": null, "new_ids": true}))
        .unwrap();
    assert_eq!(
        serde_json::to_value(&report.shared).unwrap()["users"],
        json!({"inserted": 0, "present": 1, "differing": 1})
    );
    let conn = target.conn();
    let users: Vec<(i64, String)> = conn
        .prepare("SELECT id, email FROM users ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(users, [(1, "carl@example.com".to_string())]);
    let copied: Vec<(i64, i64, String)> = conn
        .prepare("SELECT m.tenant_id, m.user_id, m.role FROM memberships m")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let new_tenant = report.tenant_id.to_string();
    assert_ne!(new_tenant, "5");
    assert_eq!(
        copied,
        [(new_tenant.parse::<i64>().unwrap(), 1, "admin".to_string())]
    );
}
