//! `tables: {name: "skip"}`: a table the caller names (a job progress table that
//! carries the tenant column) is not tenant data, for backup and restore
//! alike: not archived, not purged, its rows outlive a purge restore.

mod common;

use common::App;
use serde_json::json;

fn insert_job(app: &App, id: i64, tenant: i64, state: &str) {
    app.conn()
        .execute(
            "INSERT INTO background_jobs(id, tenant_id, job_type, state, created_at, updated_at) VALUES (?1, ?2, 'backup', ?3, 'x', 'x')",
            rusqlite::params![id, tenant, state],
        )
        .unwrap();
}

fn jobs_of(app: &App, tenant: i64) -> Vec<(i64, String)> {
    let conn = app.conn();
    let mut stmt = conn
        .prepare("SELECT id, state FROM background_jobs WHERE tenant_id = ?1 ORDER BY id")
        .unwrap();
    stmt.query_map([tenant], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

fn backup_skipping(app: &App, tenant: i64) -> tenant_kit::backup::BackupReport {
    let mut options = app.backup_options(tenant);
    options.tables = serde_json::from_value(json!({"background_jobs": "skip"})).unwrap();
    tenant_kit::backup::backup(
        &options,
        &mut tenant_kit::progress::CollectProgress::default(),
    )
    .unwrap()
}

#[test]
fn a_skipped_table_is_not_archived_and_named_in_the_manifest() {
    let app = App::new();
    insert_job(&app, 1, 1, "running");
    let report = backup_skipping(&app, 1);
    assert!(
        !report.tables.contains_key("background_jobs"),
        "{:?}",
        report.tables
    );
    let skipped: Vec<_> = report
        .skipped
        .iter()
        .filter(|s| s.name == "background_jobs")
        .collect();
    assert_eq!(skipped.len(), 1, "{:?}", report.skipped);
    assert_eq!(skipped[0].reason, "skipped by the caller (tables:)");
}

#[test]
fn a_purge_restore_keeps_the_rows_of_a_skipped_table() {
    let app = App::new();
    insert_job(&app, 1, 1, "running");
    let report = backup_skipping(&app, 1);
    insert_job(&app, 2, 1, "planned"); // created after the backup
    let restored = app
        .restore(
            &report.path,
            1,
            json!({"purge": true, "tables": {"background_jobs": "skip"}}),
        )
        .unwrap();
    assert!(
        !restored.planned.contains_key("background_jobs"),
        "{:?}",
        restored.planned
    );
    assert_eq!(
        jobs_of(&app, 1),
        vec![(1, "running".to_string()), (2, "planned".to_string())]
    );
}

#[test]
fn an_unknown_skip_table_is_refused_by_name() {
    let app = App::new();
    let mut options = app.backup_options(1);
    options.tables = serde_json::from_value(json!({"background_jbos": "skip"})).unwrap();
    let err = tenant_kit::backup::backup(
        &options,
        &mut tenant_kit::progress::CollectProgress::default(),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "tables: no table \"background_jbos\"");
}
