//! App tables may have any name, ours included: the temp tables a backup
//! and a restore make (`tk_stage_0`, `tk_hits_0`, `tk_ours_0`, …) come first
//! in SQLite's name lookup, so every app table is named through `main.`.

mod common;

use common::*;
use serde_json::json;

#[test]
fn app_tables_named_like_our_temp_tables_back_up_and_restore() {
    let mut sql = String::from(
        "CREATE TABLE tenants(id INTEGER PRIMARY KEY, name TEXT);
         INSERT INTO tenants VALUES (1, 'one'), (2, 'two');",
    );
    let names = [
        "tk_stage_0",
        "tk_stage_1",
        "tk_hits_0",
        "tk_hits_1",
        "tk_ours_0",
        "tk_ours_1",
        "tk_others_0",
        "tk_others_1",
        "tk_cand_0",
        "tk_cand_1",
        "tk_renamed",
    ];
    for name in names {
        sql.push_str(&format!(
            "CREATE TABLE {name}(id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants, v TEXT);
             INSERT INTO {name} VALUES (1, 1, 'a'), (2, 1, 'b'), (3, 2, 'c');"
        ));
    }
    let db = SmallDb::new(&sql);
    let before = snapshot(&db.conn);
    let archive = db.backup(1);
    for name in names {
        db.conn
            .execute_batch(&format!(
                "DELETE FROM {name} WHERE id = 2; INSERT INTO {name} VALUES (4, 1, 'new');"
            ))
            .unwrap();
    }
    let dry = db
        .restore(&archive, 1, json!({"purge": true, "dry_run": true}))
        .unwrap();
    assert!(dry.conflicts.is_empty(), "{:?}", dry.conflicts);
    for name in names {
        let planned = &dry.planned[name];
        assert_eq!(
            (planned.insert, planned.purge),
            (1, 1),
            "{name}: {planned:?}"
        );
    }
    let report = db.restore(&archive, 1, json!({"purge": true})).unwrap();
    assert_eq!(report.purged.values().sum::<u64>(), names.len() as u64);
    assert_eq!(snapshot(&db.conn), before);
}
