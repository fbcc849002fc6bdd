//! Shapes of real multi-tenant Rails schemas (issue 18): no declared
//! foreign keys, `account_id`, users shared between accounts through
//! memberships, polymorphic audits naming those users, `*_id` columns that
//! are no reference, `related_<x>_id` columns.

mod common;

use common::{snapshot, EditableArchive, SmallDb};
use serde_json::json;
use std::path::Path;

/// A support-desk app: every reference is a naming convention.
const SUPPORT_DESK: &str = "
    CREATE TABLE accounts(id integer PRIMARY KEY, name varchar);
    CREATE TABLE users(id integer PRIMARY KEY, name varchar);
    CREATE TABLE account_users(id integer PRIMARY KEY, account_id integer, user_id integer);
    CREATE TABLE tickets(id integer PRIMARY KEY, account_id integer, title varchar);
    CREATE TABLE audits(id integer PRIMARY KEY, auditable_type varchar, auditable_id integer,
                        user_type varchar, user_id integer, action varchar);
    CREATE TABLE categories(id integer PRIMARY KEY, account_id integer, name varchar);
    CREATE TABLE related_categories(id integer PRIMARY KEY, category_id integer,
                                    related_category_id integer);
    CREATE TABLE campaigns(id integer PRIMARY KEY, account_id integer, name varchar);
    CREATE TABLE messages(id integer PRIMARY KEY, account_id integer, body varchar);
    CREATE TABLE campaign_messages(id integer PRIMARY KEY, campaign_id integer,
                                   message_id varchar);

    INSERT INTO accounts VALUES (1, 'one'), (2, 'two');
    INSERT INTO users VALUES (1, 'ann'), (2, 'bob');
    -- ann works for both accounts
    INSERT INTO account_users VALUES (1, 1, 1), (2, 2, 1), (3, 2, 2);
    INSERT INTO tickets VALUES (1, 1, 'printer'), (2, 2, 'vpn');
    INSERT INTO audits VALUES (1, 'Ticket', 1, 'User', 1, 'create'),
                              (2, 'Ticket', 2, 'User', 2, 'create');
    -- categories 1, 2 are account 1's; 3, 4 account 2's
    INSERT INTO categories VALUES (1, 1, 'a'), (2, 1, 'b'), (3, 2, 'c'), (4, 2, 'd');
    -- row 2 (account 1's) has related_category_id 1: category 1, which a
    -- guess of `related_categories` would read as account 2's row 1
    INSERT INTO related_categories VALUES (1, 3, 4), (2, 1, 1);
    INSERT INTO campaigns VALUES (1, 1, 'spring'), (2, 2, 'fall');
    INSERT INTO messages VALUES (1, 1, 'hi'), (2, 2, 'hello');
    -- a provider's message id '2', not account 2's message 2
    INSERT INTO campaign_messages VALUES (1, 1, '2'), (2, 2, 'msg-77');
";

fn ids(archive: &EditableArchive, table: &str) -> Vec<i64> {
    let mut ids: Vec<i64> = archive
        .rows(table)
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    ids.sort();
    ids
}

fn backup(db: &SmallDb, tenant: i64, extra: serde_json::Value) -> tenant_kit::backup::BackupReport {
    let mut options = json!({"database": db.db, "tenant_id": tenant,
        "output_dir": db.dir.path(), "tenant_column": "account_id"});
    for (k, v) in extra.as_object().unwrap() {
        options[k] = v.clone();
    }
    let options: tenant_kit::backup::BackupOptions = serde_json::from_value(options).unwrap();
    tenant_kit::backup::backup(
        &options,
        &mut tenant_kit::progress::CollectProgress::default(),
    )
    .unwrap()
}

/// Restore into account 1 with the `extra` options.
fn restore(
    db: &SmallDb,
    archive: &Path,
    mut extra: serde_json::Value,
) -> tenant_kit::Result<tenant_kit::restore::RestoreReport> {
    extra["tenant_column"] = json!("account_id");
    db.restore(archive, 1, extra)
}

/// Delete account 1's tickets and their audits the way the app would.
fn delete_tickets(db: &SmallDb) {
    db.conn
        .execute_batch(
            "DELETE FROM audits WHERE auditable_type = 'Ticket'
               AND auditable_id IN (SELECT id FROM tickets WHERE account_id = 1);
             DELETE FROM tickets WHERE account_id = 1;",
        )
        .unwrap();
}

/// Dry run without conflicts, restore to the state of the backup, a second
/// restore changing nothing, then a purge restore doing the same.
fn round_trip(
    db: &SmallDb,
    archive: &Path,
    before: &std::collections::BTreeMap<String, Vec<String>>,
) {
    let dry = restore(db, archive, json!({"dry_run": true})).unwrap();
    assert_eq!(dry.conflict_count, 0, "{:?}", dry.conflicts);
    restore(db, archive, json!({})).unwrap();
    assert_eq!(&snapshot(&db.conn), before);
    restore(db, archive, json!({})).unwrap();
    assert_eq!(&snapshot(&db.conn), before);
    restore(db, archive, json!({"purge": true})).unwrap();
    assert_eq!(&snapshot(&db.conn), before);
}

#[test]
fn audits_naming_shared_users_round_trip() {
    let db = SmallDb::new(SUPPORT_DESK);
    let before = snapshot(&db.conn);
    let report = backup(&db, 1, json!({}));
    let archive = EditableArchive::open(&report.path);
    assert_eq!(ids(&archive, "audits"), [1]);
    delete_tickets(&db);
    round_trip(&db, &report.path, &before);
}

#[test]
fn audit_whose_own_type_names_no_tenant_table_is_still_refused() {
    let db = SmallDb::new(SUPPORT_DESK);
    let report = backup(&db, 1, json!({}));
    let mut archive = EditableArchive::open(&report.path);
    // The type column the audit belongs through must name tenant data.
    archive.edit_rows("audits", |row| row["auditable_type"] = json!("User"));
    let edited = db.dir.path().join("edited.tar.gz");
    archive.write(&edited);
    let err = restore(&db, &edited, json!({})).unwrap_err();
    assert!(
        err.to_string()
            .contains("audits.auditable_type = \"User\" maps to no table of this tenant's data"),
        "{err}"
    );
}

#[test]
fn related_x_id_names_x_not_its_own_table() {
    let db = SmallDb::new(SUPPORT_DESK);
    let report = backup(&db, 2, json!({}));
    let archive = EditableArchive::open(&report.path);
    assert_eq!(ids(&archive, "related_categories"), [1]);
    let guess = tenant_kit::archive::Guess {
        table: "related_categories".into(),
        column: "related_category_id".into(),
        references: "categories".into(),
    };
    assert!(report.guesses.contains(&guess), "{:?}", report.guesses);
    let listed: Vec<tenant_kit::archive::Guess> =
        serde_json::from_value(archive.manifest["guesses"].clone()).unwrap();
    assert_eq!(listed, report.guesses);
}

#[test]
fn text_id_column_is_no_reference_to_an_integer_key() {
    let db = SmallDb::new(SUPPORT_DESK);
    let report = backup(&db, 2, json!({}));
    let archive = EditableArchive::open(&report.path);
    assert_eq!(ids(&archive, "campaign_messages"), [2]);
    assert!(
        !report.guesses.iter().any(|g| g.column == "message_id"),
        "{:?}",
        report.guesses
    );
}

/// With an integer `message_id` the guess stands (it could be right): it
/// makes tenant 1's campaign message 1 hang off tenant 2's message 2 as
/// well, so it is both tenants' and left out of the archive (counted). A
/// hint with `references: null` removes the guess.
#[test]
fn hint_says_a_column_is_no_reference() {
    let db = SmallDb::new(&SUPPORT_DESK.replace("message_id varchar", "message_id integer"));
    db.conn
        .execute(
            "UPDATE campaign_messages SET message_id = 2 WHERE id = 1",
            [],
        )
        .unwrap();
    let guessed = backup(&db, 2, json!({}));
    assert_eq!(
        ids(&EditableArchive::open(&guessed.path), "campaign_messages"),
        [2]
    );
    assert_eq!(
        guessed.left_out_cross_tenant.get("campaign_messages"),
        Some(&1)
    );

    let hint = json!({"relations": [
        {"table": "campaign_messages", "column": "message_id", "references": null}
    ]});
    let report = backup(&db, 2, hint.clone());
    assert_eq!(
        ids(&EditableArchive::open(&report.path), "campaign_messages"),
        [2]
    );
    assert!(!report.guesses.iter().any(|g| g.column == "message_id"));
    assert!(
        report.left_out_cross_tenant.is_empty(),
        "{:?}",
        report.left_out_cross_tenant
    );

    // The key must be there: a hint without it is a mistake, not a "no".
    let options = json!({"database": db.db, "tenant_id": 2, "output_dir": db.dir.path(),
        "tenant_column": "account_id",
        "relations": [{"table": "campaign_messages", "column": "message_id"}]});
    let err = serde_json::from_value::<tenant_kit::backup::BackupOptions>(options).unwrap_err();
    assert!(
        err.to_string().contains("missing field `references`"),
        "{err}"
    );
}

#[test]
fn tables_option_skips_a_table_in_backup_and_restore() {
    let db = SmallDb::new(SUPPORT_DESK);
    let before = snapshot(&db.conn);
    let report = backup(&db, 1, json!({"tables": {"audits": "skip"}}));
    assert!(!report.tables.contains_key("audits"));
    let skipped = report.skipped.iter().find(|s| s.name == "audits").unwrap();
    assert_eq!(skipped.reason, "skipped by the caller (tables:)");
    db.conn
        .execute_batch("DELETE FROM tickets WHERE account_id = 1;")
        .unwrap();
    let rules = json!({"tables": {"audits": "skip"}, "purge": true});
    restore(&db, &report.path, rules).unwrap();
    assert_eq!(snapshot(&db.conn), before);

    let err = serde_json::from_value::<tenant_kit::backup::BackupOptions>(
        json!({"database": db.db, "tenant_id": 1, "output_dir": db.dir.path(),
               "tables": {"audits": "sometimes"}}),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("unknown variant `sometimes`"),
        "{err}"
    );
}

/// A 37signals-style search index: FTS5 over `cards` with external
/// content and no triggers (the app writes the index itself).
const SEARCHABLE: &str = "
    CREATE TABLE accounts(id integer PRIMARY KEY);
    CREATE TABLE cards(id integer PRIMARY KEY, account_id integer, title varchar);
    CREATE VIRTUAL TABLE cards_search USING fts5(title, content='cards', content_rowid='id');
    INSERT INTO accounts VALUES (1), (2);
    INSERT INTO cards VALUES (1, 1, 'printer jam'), (2, 2, 'printer toner'), (3, 1, 'vpn down');
    INSERT INTO cards_search(cards_search) VALUES ('rebuild');
";

fn found(db: &SmallDb, word: &str) -> Vec<i64> {
    let mut stmt = db
        .conn
        .prepare("SELECT rowid FROM cards_search WHERE cards_search MATCH ?1 ORDER BY rowid")
        .unwrap();
    stmt.query_map([word], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

fn index_is_true(db: &SmallDb) {
    db.conn
        .execute(
            "INSERT INTO cards_search(cards_search, rank) VALUES ('integrity-check', 1)",
            [],
        )
        .unwrap();
}

#[test]
fn external_content_search_index_follows_restore_and_purge() {
    let db = SmallDb::new(SEARCHABLE);
    let archive = backup(&db, 1, json!({})).path;
    // The app deletes a card and its index entry, and adds another.
    db.conn
        .execute_batch(
            "INSERT INTO cards_search(cards_search, rowid, title) VALUES ('delete', 1, 'printer jam');
             DELETE FROM cards WHERE id = 1;
             INSERT INTO cards VALUES (4, 1, 'fresh start');
             INSERT INTO cards_search(rowid, title) VALUES (4, 'fresh start');",
        )
        .unwrap();
    assert_eq!(found(&db, "printer"), [2]);

    let report = restore(&db, &archive, json!({})).unwrap();
    assert_eq!(
        report.search_indexes.get("cards_search"),
        Some(&tenant_kit::restore::IndexAction::Rebuilt)
    );
    assert_eq!(found(&db, "printer"), [1, 2]);
    index_is_true(&db);

    restore(&db, &archive, json!({"purge": true})).unwrap();
    assert_eq!(found(&db, "fresh"), Vec::<i64>::new());
    assert_eq!(found(&db, "printer"), [1, 2]);
    index_is_true(&db);
}
