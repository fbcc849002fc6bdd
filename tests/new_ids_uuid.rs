//! Copies with fresh ids (`new_ids: true`) of a tenant whose keys are
//! UUIDs: 16-byte BLOBs (version 7) and dashed text (version 4), made
//! afresh in the same form and version, every reference following them;
//! integer keys of the same schema from their table's sequence.

mod common;

use common::{snapshot, SmallDb};
use rusqlite::Connection;
use serde_json::json;
use tenant_kit::progress::CollectProgress;
use tenant_kit::TenantId;

const UUID_SCHEMA: &str = "
CREATE TABLE accounts (id blob(16) PRIMARY KEY NOT NULL, name varchar NOT NULL);
CREATE TABLE projects (id blob(16) PRIMARY KEY NOT NULL, account_id blob(16) NOT NULL, name varchar);
CREATE TABLE tasks (id varchar(36) PRIMARY KEY NOT NULL, account_id blob(16) NOT NULL,
  project_id blob(16) NOT NULL REFERENCES projects(id), parent_id varchar(36), title varchar);
CREATE TABLE comments (id integer PRIMARY KEY AUTOINCREMENT, account_id blob(16) NOT NULL,
  task_id varchar(36) NOT NULL, body text);
CREATE INDEX index_projects_on_account_id ON projects (account_id);
CREATE INDEX index_tasks_on_account_id ON tasks (account_id);
CREATE INDEX index_comments_on_account_id ON comments (account_id);
";

fn bytes(account: u8, kind: u8, n: u8, version: u8) -> Vec<u8> {
    vec![
        0x01,
        0x90,
        account,
        kind,
        0x1b,
        0x2c,
        version << 4 | 0x0d,
        0x3e,
        0x8f,
        0x40,
        0x51,
        0x62,
        0x73,
        0x84,
        0x95,
        n,
    ]
}

fn dashed(b: &[u8]) -> String {
    let hex: String = b.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn seed_uuid_account(conn: &Connection, a: u8) {
    let account = bytes(a, 0, 0, 7);
    conn.execute(
        "INSERT INTO accounts VALUES (?1, ?2)",
        rusqlite::params![account, format!("Account {a}")],
    )
    .unwrap();
    for p in 1..=2u8 {
        conn.execute(
            "INSERT INTO projects VALUES (?1, ?2, ?3)",
            rusqlite::params![bytes(a, 1, p, 7), account, format!("P{p}")],
        )
        .unwrap();
        for t in 1..=2u8 {
            let id = dashed(&bytes(a, 2, p * 10 + t, 4));
            let parent = (t == 2).then(|| dashed(&bytes(a, 2, p * 10 + 1, 4)));
            conn.execute(
                "INSERT INTO tasks VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![id, account, bytes(a, 1, p, 7), parent, format!("T{p}.{t}")],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO comments(account_id, task_id, body) VALUES (?1, ?2, ?3)",
                rusqlite::params![account, id, format!("see {id}")],
            )
            .unwrap();
        }
    }
}

#[test]
fn text_and_blob_uuid_keys_are_made_afresh_in_their_form_and_version() {
    let db = SmallDb::new(UUID_SCHEMA);
    seed_uuid_account(&db.conn, 1);
    seed_uuid_account(&db.conn, 2);
    let backup: tenant_kit::backup::BackupOptions = serde_json::from_value(json!({
        "database": db.db, "tenant_id": dashed(&bytes(1, 0, 0, 7)), "tenant_column": "account_id",
        "output_dir": db.dir.path(),
    }))
    .unwrap();
    let archive = tenant_kit::backup::backup(&backup, &mut CollectProgress::default())
        .unwrap()
        .path;
    let before = snapshot(&db.conn);
    let options: tenant_kit::restore::RestoreOptions = serde_json::from_value(json!({
        "database": db.db, "archive": archive, "tenant_id": null, "new_ids": true,
        "tenant_column": "account_id",
    }))
    .unwrap();
    let report = tenant_kit::restore::restore(&options, &mut CollectProgress::default()).unwrap();
    let TenantId::Blob(account) = &report.tenant_id else {
        panic!("a BLOB account id, got {:?}", report.tenant_id);
    };
    assert_eq!(account.len(), 16);
    assert_eq!(account[6] >> 4, 7, "a UUIDv7 like the others");
    assert_eq!(report.id_map.get("projects"), Some(&2));
    assert_eq!(report.id_map.get("tasks"), Some(&4));
    assert_eq!(report.id_map.get("comments"), Some(&4));
    common::assert_rows_kept(&before, &snapshot(&db.conn));

    let conn = &db.conn;
    let new_projects: Vec<Vec<u8>> = conn
        .prepare("SELECT id FROM projects WHERE account_id = ?1")
        .unwrap()
        .query_map([account], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(new_projects.len(), 2);
    for p in &new_projects {
        assert_eq!((p.len(), p[6] >> 4, p[8] >> 6), (16, 7, 2), "{p:?}");
        assert!(!before["projects"].iter().any(|r| r.contains(&hex(p))));
    }
    let tasks: Vec<(String, String, Vec<u8>, Option<String>)> = conn
        .prepare("SELECT id, typeof(id), project_id, parent_id FROM tasks WHERE account_id = ?1")
        .unwrap()
        .query_map([account], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(tasks.len(), 4);
    let ids: Vec<&String> = tasks.iter().map(|t| &t.0).collect();
    for (id, class, project, parent) in &tasks {
        assert_eq!(
            (id.len(), class.as_str(), &id[14..15]),
            (36, "text", "4"),
            "{id}"
        );
        assert_eq!(id, &id.to_lowercase());
        assert!(
            new_projects.contains(project),
            "task {id} in a project of the copy"
        );
        if let Some(parent) = parent {
            assert!(ids.contains(&parent), "parent of {id} in the copy");
        }
    }
    // Comments point at the copy's tasks; the ids in their text are data.
    let comments: Vec<(String, String)> = conn
        .prepare("SELECT task_id, body FROM comments WHERE account_id = ?1")
        .unwrap()
        .query_map([account], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(comments.len(), 4);
    for (task, body) in &comments {
        assert!(ids.contains(&task), "{task}");
        let old = body.strip_prefix("see ").unwrap();
        assert!(
            !ids.contains(&&old.to_string()),
            "text is not rewritten: {body}"
        );
        assert_eq!(&old[..4], "0190", "{body}");
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02X}")).collect()
}
