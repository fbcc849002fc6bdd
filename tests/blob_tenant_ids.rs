//! Tenant ids stored as 16-byte BLOBs (UUIDv7), as 37signals' apps keep
//! them on SQLite: `accounts.id` and every `account_id` are `blob(16)`, no
//! foreign key is declared. The tenant is given as its raw bytes or as a
//! UUID in text; rows and storage classes must come back exactly.

mod common;

use common::snapshot;
use rusqlite::Connection;
use serde_json::json;
use tenant_kit::progress::CollectProgress;
use tenant_kit::{ErrorKind, TenantId};

const SCHEMA: &str = "
CREATE TABLE accounts (id blob(16) PRIMARY KEY NOT NULL, name varchar NOT NULL);
CREATE TABLE users (id blob(16) PRIMARY KEY NOT NULL, account_id blob(16) NOT NULL, name varchar);
CREATE TABLE projects (id blob(16) PRIMARY KEY NOT NULL, account_id blob(16) NOT NULL,
  creator_id blob(16) NOT NULL, name varchar);
CREATE TABLE tasks (id blob(16) PRIMARY KEY NOT NULL, account_id blob(16) NOT NULL,
  project_id blob(16) NOT NULL, title varchar, position integer, estimate float);
CREATE TABLE comments (id blob(16) PRIMARY KEY NOT NULL, account_id blob(16) NOT NULL,
  task_id blob(16) NOT NULL, user_id blob(16), body text);
CREATE TABLE projects_users (project_id blob(16) NOT NULL, user_id blob(16) NOT NULL);
CREATE INDEX index_users_on_account_id ON users (account_id);
CREATE INDEX index_projects_on_account_id ON projects (account_id);
CREATE INDEX index_tasks_on_account_id ON tasks (account_id);
CREATE INDEX index_comments_on_account_id ON comments (account_id);
CREATE UNIQUE INDEX index_projects_users ON projects_users (project_id, user_id);
";

const TABLES: [&str; 6] = [
    "accounts",
    "users",
    "projects",
    "tasks",
    "comments",
    "projects_users",
];

/// A UUIDv7-shaped id: account and kind of row in the first bytes, so
/// accounts never share one.
fn uuid(account: u8, kind: u8, n: u8) -> Vec<u8> {
    let mut b = vec![0x01, 0x90, account, kind, 0x1b, 0x2c, 0x7d, 0x3e];
    b.extend([0x8f, 0x40, 0x51, 0x62, 0x73, 0x84, 0x95, n]);
    b
}

fn account(n: u8) -> Vec<u8> {
    uuid(n, 0, 0)
}

/// The dashed text form of a 16-byte id.
fn dashed(bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn base64(bytes: &[u8]) -> serde_json::Value {
    use base64::Engine;
    json!({ "$base64": base64::engine::general_purpose::STANDARD.encode(bytes) })
}

struct BlobApp {
    dir: tempfile::TempDir,
    db: std::path::PathBuf,
}

impl BlobApp {
    fn new() -> BlobApp {
        let app = BlobApp::schema_only();
        for a in 1..=2 {
            seed(&app.conn(), a);
        }
        app
    }

    /// The schema without a row.
    fn schema_only() -> BlobApp {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.sqlite3");
        Connection::open(&db)
            .unwrap()
            .execute_batch(SCHEMA)
            .unwrap();
        BlobApp { dir, db }
    }

    fn conn(&self) -> Connection {
        Connection::open(&self.db).unwrap()
    }

    fn backup(
        &self,
        tenant: serde_json::Value,
    ) -> tenant_kit::Result<tenant_kit::backup::BackupReport> {
        let out = self.dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let options = serde_json::from_value(json!({
            "database": self.db, "tenant_id": tenant, "output_dir": out, "tenant_column": "account_id",
        }))
        .unwrap();
        tenant_kit::backup::backup(&options, &mut CollectProgress::default())
    }

    fn restore(
        &self,
        archive: &std::path::Path,
        tenant: serde_json::Value,
        extra: serde_json::Value,
    ) -> tenant_kit::Result<tenant_kit::restore::RestoreReport> {
        let mut options = json!({
            "database": self.db, "archive": archive, "tenant_id": tenant, "tenant_column": "account_id",
        });
        for (k, v) in extra.as_object().unwrap() {
            options[k] = v.clone();
        }
        let options = serde_json::from_value(options).unwrap();
        tenant_kit::restore::restore(&options, &mut CollectProgress::default())
    }

    /// Delete every row of `account` through SQL, the join table's by its
    /// projects.
    fn delete_account(&self, account: &[u8]) {
        let conn = self.conn();
        conn.execute(
            "DELETE FROM projects_users WHERE project_id IN (SELECT id FROM projects WHERE account_id = ?1)",
            [account],
        )
        .unwrap();
        for table in ["comments", "tasks", "projects", "users"] {
            conn.execute(
                &format!("DELETE FROM {table} WHERE account_id = ?1"),
                [account],
            )
            .unwrap();
        }
        conn.execute("DELETE FROM accounts WHERE id = ?1", [account])
            .unwrap();
    }
}

/// Rows of one account, every id a 16-byte BLOB; a REAL and an INTEGER
/// column for storage classes that are not BLOBs.
fn seed(conn: &Connection, a: u8) {
    let acc = account(a);
    conn.execute(
        "INSERT INTO accounts VALUES (?1, ?2)",
        rusqlite::params![acc, format!("Account {a}")],
    )
    .unwrap();
    for n in 1..=2 {
        conn.execute(
            "INSERT INTO users VALUES (?1, ?2, ?3)",
            rusqlite::params![uuid(a, 1, n), acc, format!("User {n}")],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO projects VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![uuid(a, 2, n), acc, uuid(a, 1, 1), format!("Project {n}")],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO projects_users VALUES (?1, ?2)",
            rusqlite::params![uuid(a, 2, n), uuid(a, 1, n)],
        )
        .unwrap();
    }
    for n in 1..=3 {
        conn.execute(
            "INSERT INTO tasks VALUES (?1, ?2, ?3, ?4, ?5, 2.0)",
            rusqlite::params![
                uuid(a, 3, n),
                acc,
                uuid(a, 2, 1),
                format!("Task {n}"),
                n as i64
            ],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO comments VALUES (?1, ?2, ?3, ?4, 'ok')",
            rusqlite::params![uuid(a, 4, n), acc, uuid(a, 3, n), uuid(a, 1, 2)],
        )
        .unwrap();
    }
}

/// Rows per table of the archive, from its manifest (through verify).
fn verified(archive: &std::path::Path) -> tenant_kit::verify::VerifyReport {
    let options = serde_json::from_value(json!({ "archive": archive })).unwrap();
    tenant_kit::verify::verify(&options, &mut CollectProgress::default()).unwrap()
}

#[test]
fn raw_bytes_and_every_uuid_text_form_back_up_the_same_rows() {
    let app = BlobApp::new();
    let bytes = account(1);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let base36 = {
        let mut n = u128::from_be_bytes(bytes.clone().try_into().unwrap());
        let mut digits = Vec::new();
        while n > 0 {
            digits.push(std::char::from_digit((n % 36) as u32, 36).unwrap());
            n /= 36;
        }
        format!("{:0>25}", digits.iter().rev().collect::<String>())
    };
    let by_bytes = app.backup(base64(&bytes)).unwrap();
    let expected_rows = [
        ("accounts", 1),
        ("comments", 3),
        ("projects", 2),
        ("projects_users", 2),
        ("tasks", 3),
        ("users", 2),
    ];
    let rows: Vec<(&str, u64)> = by_bytes
        .tables
        .iter()
        .map(|(t, n)| (t.as_str(), *n))
        .collect();
    assert_eq!(rows, expected_rows);
    for text in [
        dashed(&bytes),
        dashed(&bytes).to_uppercase(),
        hex.clone(),
        base36,
    ] {
        let by_text = app.backup(json!(text)).unwrap();
        assert_eq!(by_text.dump_sha256, by_bytes.dump_sha256, "{text}");
        assert_eq!(by_text.tables, by_bytes.tables, "{text}");
        // The same text in binary (Ruby's pack gives such Strings).
        let in_binary = app.backup(base64(text.as_bytes())).unwrap();
        assert_eq!(in_binary.dump_sha256, by_bytes.dump_sha256, "{text}");
    }

    // The manifest holds the BLOB id; verify checks every row's
    // account_id against it.
    let report = verified(&by_bytes.path);
    assert_eq!(report.tenant_id, TenantId::Blob(bytes.clone()));
    let manifest_id = serde_json::to_value(&report.tenant_id).unwrap();
    assert_eq!(manifest_id, base64(&bytes));

    // The archive name spells the id as lowercase hex.
    let name = by_bytes.path.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with(&format!("tenant_{hex}_")), "{name}");
    let parsed = tenant_kit::prune::parse_archive_name(name).map(|(id, _)| id);
    assert_eq!(parsed, Some(hex.as_str()));
}

#[test]
fn prune_finds_a_blob_tenants_archives_by_its_bytes_or_its_uuid_text() {
    let app = BlobApp::new();
    let path = app.backup(base64(&account(1))).unwrap().path;
    let other = app.backup(base64(&account(2))).unwrap().path;
    for tenant in [base64(&account(1)), json!(dashed(&account(1)))] {
        let options = serde_json::from_value(json!({
            "output_dir": path.parent().unwrap(), "keep_last": 0, "tenant_id": tenant, "dry_run": true,
        }))
        .unwrap();
        let report = tenant_kit::prune::prune(&options).unwrap();
        assert_eq!(report.deleted, std::slice::from_ref(&path), "{tenant}");
        assert_eq!(report.kept, Vec::<std::path::PathBuf>::new());
    }
    assert!(other.exists());
}

#[test]
fn restore_brings_back_rows_and_storage_classes_and_a_second_run_changes_nothing() {
    let app = BlobApp::new();
    let acc = account(1);
    let before = snapshot(&app.conn());
    let archive = app.backup(json!(dashed(&acc))).unwrap().path;

    app.delete_account(&acc);
    assert_ne!(snapshot(&app.conn()), before);
    let report = app
        .restore(&archive, json!(dashed(&acc)), json!({}))
        .unwrap();
    assert_eq!(report.tenant_id, TenantId::Blob(acc.clone()));
    assert_eq!(report.source_tenant_id, TenantId::Blob(acc.clone()));
    assert_eq!(report.restored.values().sum::<u64>(), 13);
    assert_eq!(report.written.values().sum::<u64>(), 13);
    // snapshot() compares typeof() of every value, not only the value.
    assert_eq!(snapshot(&app.conn()), before);

    let again = app.restore(&archive, base64(&acc), json!({})).unwrap();
    assert_eq!(
        again.written.values().sum::<u64>(),
        0,
        "{:?}",
        again.written
    );
    // (The tenant row, already there, is left as it is and not counted.)
    assert_eq!(
        again.restored.values().sum::<u64>(),
        12,
        "{:?}",
        again.restored
    );
    assert_eq!(snapshot(&app.conn()), before);

    // A row the archive does not have goes with purge: true.
    app.conn()
        .execute(
            "INSERT INTO comments VALUES (?1, ?2, ?3, NULL, 'later')",
            [uuid(1, 4, 99), acc.clone(), uuid(1, 3, 1)],
        )
        .unwrap();
    let purged = app
        .restore(&archive, base64(&acc), json!({"purge": true}))
        .unwrap();
    let purged_rows: Vec<(&str, u64)> = purged
        .purged
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(t, n)| (t.as_str(), *n))
        .collect();
    assert_eq!(purged_rows, [("comments", 1)]);
    assert_eq!(snapshot(&app.conn()), before);
}

#[test]
fn remap_moves_the_rows_into_another_blob_tenant() {
    let app = BlobApp::new();
    let (from, to) = (account(1), account(9));
    let archive = app.backup(base64(&from)).unwrap().path;
    app.delete_account(&from);
    let untouched = snapshot(&app.conn());

    let refused = app
        .restore(&archive, json!(dashed(&to)), json!({}))
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Argument);
    assert!(
        refused.message().contains(&format!(
            "the archive holds tenant x'{}', not x'{}'",
            hex(&from),
            hex(&to)
        )),
        "{refused}"
    );

    let report = app
        .restore(&archive, json!(dashed(&to)), json!({"remap": true}))
        .unwrap();
    assert_eq!(report.source_tenant_id, TenantId::Blob(from.clone()));
    assert_eq!(report.tenant_id, TenantId::Blob(to.clone()));
    assert!(report.tenant_row_created);
    let conn = app.conn();
    for table in ["users", "projects", "tasks", "comments"] {
        let (blobs_of_to, others): (i64, i64) = conn
            .query_row(
                &format!(
                    "SELECT count(*) FILTER (WHERE typeof(account_id) = 'blob' AND account_id = ?1),
                            count(*) FILTER (WHERE account_id != ?1 AND account_id != ?2)
                     FROM {table}"
                ),
                [&to, &account(2)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(others, 0, "{table}");
        assert_eq!(blobs_of_to as u64, report.restored[table], "{table}");
    }
    let name: String = conn
        .query_row("SELECT name FROM accounts WHERE id = ?1", [&to], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(name, "Account 1");
    // Account 2 is as it was.
    let after = snapshot(&conn);
    for table in TABLES {
        let of_2 = |rows: &Vec<String>| -> Vec<String> {
            let marker = format!("X'0190{:02X}", 2);
            rows.iter()
                .filter(|r| r.contains(&marker))
                .cloned()
                .collect()
        };
        assert_eq!(of_2(&after[table]), of_2(&untouched[table]), "{table}");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn an_id_that_is_no_16_byte_uuid_says_what_the_column_holds() {
    let app = BlobApp::new();
    let holds = "comments.account_id / tenant_id holds 16-byte BLOBs; give a binary String of 16 bytes \
                 or a UUID like 0190a7c4-1b2c-7d3e-8f40-5162738495a6 (dashed, 32 hex digits or 25-character base36)";
    let dashed_1 = dashed(&account(1));
    let not_hex = format!("{}g", &dashed_1[..35]);
    let cases = [
        (
            json!(not_hex.clone()),
            format!("got the String {not_hex:?}"),
        ),
        (
            json!("0190a7c41b2c"),
            "got the String \"0190a7c41b2c\"".to_string(),
        ),
        (json!(1), "got the Integer 1".to_string()),
        (
            base64(&account(1)[..15]),
            format!("got 15 bytes x'{}'", hex(&account(1)[..15])),
        ),
    ];
    for (tenant, got) in cases {
        let err = app.backup(tenant.clone()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Argument, "{tenant}: {err}");
        assert_eq!(
            err.message(),
            format!("{holds}; got {}", got.trim_start_matches("got ")),
            "{tenant}"
        );
        let archive = app.dir.path().join("none.tar.gz");
        let err = app
            .restore(&archive, tenant.clone(), json!({}))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Argument, "{tenant}: {err}");
        assert!(err.message().starts_with(holds), "{tenant}: {err}");
    }
}

#[test]
fn a_binary_id_for_an_integer_tenant_column_says_the_column_holds_integers() {
    let app = common::App::new();
    let options = serde_json::from_value(json!({
        "database": app.db, "tenant_id": base64(b"1"), "output_dir": app.out,
    }))
    .unwrap();
    let err = tenant_kit::backup::backup(&options, &mut CollectProgress::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Argument);
    assert!(
        err.message().ends_with(
            "/ tenant_id holds integer values, not BLOBs; give an Integer or a String, not a binary String; got 1 bytes x'31'"
        ),
        "{err}"
    );
}

#[test]
fn a_database_without_rows_is_read_by_its_declared_blob_type() {
    let app = BlobApp::new();
    let acc = account(1);
    let archive = app.backup(base64(&acc)).unwrap().path;
    let before = snapshot(&app.conn());
    let empty = BlobApp::schema_only();

    // No stored value to go by: blob(16) says the column holds 16 bytes.
    let err = empty
        .restore(&archive, json!("0190"), json!({}))
        .unwrap_err();
    assert!(
        err.message()
            .starts_with("comments.account_id / tenant_id holds 16-byte BLOBs; give a binary String of 16 bytes or a UUID like"),
        "{err}"
    );
    let report = empty
        .restore(&archive, json!(dashed(&acc)), json!({}))
        .unwrap();
    assert!(report.tenant_row_created);
    let restored = snapshot(&empty.conn());
    for table in TABLES {
        let of_1 = |rows: &Vec<String>| -> Vec<String> {
            rows.iter()
                .filter(|r| r.contains("X'019001"))
                .cloned()
                .collect()
        };
        assert_eq!(restored[table], of_1(&before[table]), "{table}");
    }
}
