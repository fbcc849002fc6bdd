//! `tenant_id: nil` with `new_ids: true`: the restore makes a new tenant.
//! Its id is chosen before the restore starts, like the tenants table's
//! next one (after its largest id and its `sqlite_sequence`), or a fresh
//! UUID in the form the table's ids have; the write transaction then
//! checks that nobody took it meanwhile (`new_ids::recheck`).

use super::RestoreOptions;
use crate::error::{Error, Result};
use crate::schema::Schema;
use crate::scope::TenantScope;
use crate::sql;
use crate::value::SqlValue;
use crate::TenantId;
use rusqlite::OptionalExtension;

/// The id of the tenant a `tenant_id: nil` restore creates.
pub(super) fn new_tenant_id(options: &RestoreOptions) -> Result<TenantId> {
    if !options.database.is_file() {
        return Err(Error::argument(format!(
            "database {} does not exist",
            options.database.display()
        )));
    }
    let conn = crate::db::open_read_only(&options.database, options.busy_timeout_ms)?;
    let schema = Schema::read(&conn)?;
    let scope = TenantScope::discover(&conn, &schema, &options.scope_options(), &[])?;
    let no_table = || {
        Error::argument(
            "tenant_id: nil makes a new tenant, which needs a tenants table with a one-column key (pass tenant_table:)",
        )
    };
    let tenants = scope.tenant_table().ok_or_else(no_table)?;
    let table = schema.table(&tenants.name).ok_or_else(no_table)?;
    let [key] = table.primary_key()[..] else {
        return Err(no_table());
    };
    let column = table.column(key).ok_or_else(no_table)?;
    let sample: Option<SqlValue> = conn
        .query_row(
            &format!(
                "SELECT {k} FROM {} WHERE {k} IS NOT NULL ORDER BY rowid DESC LIMIT 1",
                sql::main_table(&table.name),
                k = sql::ident(key)
            ),
            [],
            |r| Ok(SqlValue::from_ref(r.get_ref(0)?)),
        )
        .optional()?;
    let integer = match &sample {
        Some(v) => matches!(v, SqlValue::Integer(_)),
        None => column.has_integer_affinity() || table.rowid_alias().is_some(),
    };
    if integer {
        let largest = super::new_ids::largest_id(&conn, &table.name, key)?;
        let next = largest
            .checked_add(1)
            .ok_or_else(|| Error::conflict(format!("{} has no integer ids left", table.name)))?;
        return Ok(TenantId::Integer(next));
    }
    // No row to copy the form from: 16 bytes where the column keeps BLOBs,
    // else dashed text; time-ordered either way.
    let like = sample.unwrap_or_else(|| {
        let v7 = b"00000000-0000-7000-8000-000000000000".to_vec();
        if column.keeps_storage_class() {
            SqlValue::Blob(
                crate::tenant_id::uuid::parse("00000000-0000-7000-8000-000000000000")
                    .unwrap_or_default()
                    .to_vec(),
            )
        } else {
            SqlValue::Text(v7)
        }
    });
    match super::new_ids::fresh_uuid(&like) {
        Some(SqlValue::Blob(b)) => Ok(TenantId::Blob(b)),
        Some(SqlValue::Text(t)) => Ok(TenantId::Text(String::from_utf8_lossy(&t).into_owned())),
        _ => Err(Error::argument(format!(
            "tenant_id: nil makes a new tenant, but {}.{key} holds {}, neither an integer nor a UUID: pass the new tenant's id",
            table.name,
            like.describe()
        ))),
    }
}
