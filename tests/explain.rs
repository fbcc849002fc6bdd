//! `explain`: the report of what a backup takes and why, built from the
//! same discovery the backup uses (tables by class with reasons, references
//! with their source, unconfirmed naming guesses).

mod common;

use common::App;
use serde_json::{json, Value};

/// The report for `app` with extra configuration keys, through the JSON
/// front door Ruby and C use.
fn explain(app: &App, config: Value) -> Value {
    let mut options = json!({ "database": app.db });
    options
        .as_object_mut()
        .unwrap()
        .extend(config.as_object().unwrap().clone());
    let text = tenant_kit::api::explain_json(&options.to_string()).expect("explain");
    serde_json::from_str(&text).unwrap()
}

fn table<'r>(report: &'r Value, name: &str) -> &'r Value {
    report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no table {name} in {report:#}"))
}

fn reference<'r>(report: &'r Value, table: &str, column: &str) -> Vec<&'r Value> {
    report["references"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["table"] == table && r["columns"] == json!([column]))
        .collect()
}

fn guess(table: &str, column: &str, references: &str) -> Value {
    json!({ "table": table, "column": column, "references": references })
}

#[test]
fn classes_every_table_with_its_reason() {
    let app = App::new();
    app.conn()
        .execute_batch("CREATE TABLE currencies (id INTEGER PRIMARY KEY, code TEXT)")
        .unwrap();
    let report = explain(&app, json!({ "tables": { "settings": "skip" } }));

    assert_eq!(report["tenant_column"], "tenant_id");
    assert_eq!(report["tenant_table"], "tenants");
    let expect = [
        (
            "tenants",
            "tenants",
            "the tenants table: the row whose id is the tenant id",
        ),
        ("tasks", "owned", "has the tenant column tenant_id"),
        (
            "tags_tasks",
            "derived",
            "via tags_tasks.tag_id -> tags; tags_tasks.task_id -> tasks",
        ),
        ("settings", "skipped", "skipped by the caller (tables:)"),
        (
            "schema_migrations",
            "skipped",
            "Rails metadata, not tenant data",
        ),
        (
            "currencies",
            "not_tenant_data",
            "no tenant_id column and no reference to tenant rows",
        ),
    ];
    for (name, class, reason) in expect {
        let t = table(&report, name);
        assert_eq!(
            (t["class"].as_str(), t["reason"].as_str()),
            (Some(class), Some(reason)),
            "{name}"
        );
    }
    // Every table of the database is in the report once.
    let conn = app.conn();
    let in_db: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(report["tables"].as_array().unwrap().len() as i64, in_db);
}

#[test]
fn lists_a_naming_guess_until_a_hint_confirms_it() {
    let app = App::new();
    let report = explain(&app, json!({}));
    let guessed = reference(&report, "tasks", "project_id");
    assert_eq!(guessed.len(), 1, "{guessed:?}");
    assert_eq!(guessed[0]["references"], "projects");
    assert_eq!(guessed[0]["source"], "naming");
    let guesses = report["guesses"].as_array().unwrap();
    assert!(
        guesses.contains(&guess("tasks", "project_id", "projects")),
        "{guesses:?}"
    );
    // A declared foreign key is no guess.
    assert_eq!(
        reference(&report, "users", "tenant_id")[0]["source"],
        "foreign_key"
    );

    let hint = json!({ "relations": [
        { "table": "tasks", "column": "project_id", "references": "projects" }
    ] });
    let confirmed = explain(&app, hint);
    let followed = reference(&confirmed, "tasks", "project_id");
    assert_eq!(followed.len(), 1, "{followed:?}");
    assert_eq!(followed[0]["source"], "hint");
    assert_eq!(followed[0]["primary_key"], json!(["id"]));
    let left = confirmed["guesses"].as_array().unwrap();
    assert!(
        !left.contains(&guess("tasks", "project_id", "projects")),
        "{left:?}"
    );
    assert_eq!(
        left.len(),
        guesses.len() - 1,
        "only the confirmed guess goes"
    );
}

#[test]
fn a_hint_saying_not_a_reference_removes_the_guess_and_the_reference() {
    let app = App::new();
    let hint = json!({ "relations": [
        { "table": "tasks", "column": "project_id", "references": null }
    ] });
    let report = explain(&app, hint);
    assert!(reference(&report, "tasks", "project_id").is_empty());
    assert!(!report["guesses"].as_array().unwrap().contains(&guess(
        "tasks",
        "project_id",
        "projects"
    )));
}

#[test]
fn polymorphic_references_name_their_class_and_whether_the_map_gave_it() {
    let app = App::new();
    let by_naming = explain(&app, json!({}));
    let task = reference(&by_naming, "comments", "commentable_id")
        .into_iter()
        .find(|r| r["polymorphic"]["class"] == "Task")
        .expect("comments -> tasks");
    assert_eq!(task["references"], "tasks");
    assert_eq!(task["polymorphic"]["type_column"], "commentable_type");
    assert_eq!(task["source"], "polymorphic_naming");

    let mapped = explain(&app, json!({ "polymorphic": { "Task": "tasks" } }));
    let sources: Vec<(&str, &str)> = reference(&mapped, "comments", "commentable_id")
        .iter()
        .map(|r| {
            (
                r["polymorphic"]["class"].as_str().unwrap(),
                r["source"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        sources.contains(&("Task", "polymorphic_map")),
        "{sources:?}"
    );
    assert!(
        sources.contains(&("Project", "polymorphic_naming")),
        "{sources:?}"
    );
}

#[test]
fn the_report_matches_what_a_backup_takes() {
    let app = App::new();
    let report = explain(&app, json!({}));
    let options = json!({ "database": app.db, "tenant_id": 1, "output_dir": app.out,
                          "storage_root": app.storage });
    let mut progress = tenant_kit::NoProgress;
    let backup: Value = serde_json::from_str(
        &tenant_kit::api::backup_json(&options.to_string(), &mut progress).unwrap(),
    )
    .unwrap();
    let members: Vec<&str> = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| ["tenants", "owned", "derived"].contains(&t["class"].as_str().unwrap()))
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    let mut dumped: Vec<&str> = backup["tables"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted = members.clone();
    sorted.sort();
    dumped.sort();
    assert_eq!(sorted, dumped);
    assert_eq!(report["guesses"], backup["guesses"]);
}

#[test]
fn unknown_options_and_bad_rules_are_argument_errors_naming_them() {
    let app = App::new();
    let options = json!({ "database": app.db, "tenant_colum": "account_id" });
    let err = tenant_kit::api::explain_json(&options.to_string()).unwrap_err();
    assert_eq!(err.kind(), tenant_kit::ErrorKind::Argument);
    assert!(
        err.to_string().contains("unknown field `tenant_colum`"),
        "{err}"
    );

    let options = json!({ "database": app.db, "tables": { "nope": "skip" } });
    let err = tenant_kit::api::explain_json(&options.to_string()).unwrap_err();
    assert_eq!(err.kind(), tenant_kit::ErrorKind::Argument);
    assert!(
        err.to_string().contains("tables: no table \"nope\""),
        "{err}"
    );
}

#[cfg(feature = "capi")]
#[test]
fn c_explain_returns_the_same_report() {
    use std::ffi::{CStr, CString};
    let app = App::new();
    let options = CString::new(json!({ "database": app.db }).to_string()).unwrap();
    let mut out: *mut std::ffi::c_char = std::ptr::null_mut();
    let status = unsafe { tenant_kit::capi::tk_explain(options.as_ptr(), &mut out) };
    assert_eq!(status, tenant_kit::capi::tk_status::TK_OK);
    let text = unsafe { CStr::from_ptr(out) }.to_str().unwrap().to_string();
    unsafe { tenant_kit::capi::tk_string_free(out) };
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report, explain(&app, json!({})));
}

#[test]
fn a_hint_about_a_skipped_table_yields_to_the_skip_and_one_about_no_table_is_an_error() {
    let app = App::new();
    let config = json!({
        "tables": { "tags_tasks": "skip" },
        "relations": [{ "table": "tags_tasks", "column": "tag_id", "references": "tags" }]
    });
    let report = explain(&app, config);
    assert_eq!(table(&report, "tags_tasks")["class"], "skipped");
    assert!(reference(&report, "tags_tasks", "tag_id").is_empty());

    let options = json!({ "database": app.db, "relations": [
        { "table": "nope", "column": "tag_id", "references": "tags" }
    ] });
    let err = tenant_kit::api::explain_json(&options.to_string()).unwrap_err();
    assert_eq!(err.kind(), tenant_kit::ErrorKind::Argument);
    assert!(
        err.to_string().contains("relation hint: no table \"nope\""),
        "{err}"
    );
}
