//! The tenant id as the database stores it, so that it selects the rows the
//! app means and the manifest spells it as the archive's rows spell it.

use super::{uuid, TenantId};
use crate::error::{Error, Result};
use crate::schema::{Column, Schema};
use crate::sql;
use crate::value::SqlValue;
use rusqlite::{Connection, OptionalExtension};

/// The tenant id as the database stores it in the tenant column.
///
/// Integer and text: SQLite stores `'42'` (and `'042'`, `' 42'`) as 42 in
/// a column of INTEGER or NUMERIC affinity and 42 as `'42'` in one of TEXT
/// affinity, and compares the same way; so `"42"` (an id from a Rails
/// param) and `42` select the same rows. SQLite itself does the conversion
/// (into a scratch table of the tenant column's affinity, in memory), so
/// the rules are exactly its own. The affinity is the first table's that
/// has the column.
///
/// BLOB: a column of BLOB affinity converts nothing, so a UUID given as
/// text would never equal the 16 bytes the app stores: a text UUID (see
/// [`uuid::parse`]) becomes those bytes. What the column holds is what a
/// stored value is (the first one found, in the first table that has
/// one), or, in a database without any, what its declared type says.
/// An id that cannot equal any value the column holds is an argument
/// error that says what the column holds.
pub fn stored_tenant_id(
    conn: &Connection,
    schema: &Schema,
    tenant_column: &str,
    id: &TenantId,
) -> Result<TenantId> {
    let Some(column) = TenantColumn::find(conn, schema, tenant_column)? else {
        return Ok(id.clone());
    };
    match column.holds() {
        Holds::Blobs { width } => column.blob_id(id, width),
        Holds::Class(class) => match id {
            TenantId::Blob(_) => Err(column.no_blobs_error(&class, id)),
            _ => converted_by_affinity(column.first, id),
        },
        Holds::Unknown => Ok(id.clone()),
    }
}

/// [`stored_tenant_id`] of the database at `path` (opened with
/// `busy_timeout_ms`). A database that cannot be read fails here as it
/// would in the job that asks (a busy one after one wait, not two); a path
/// that is no file is left to that job to report.
pub fn stored_tenant_id_of(
    path: &std::path::Path,
    busy_timeout_ms: u64,
    tenant_column: &str,
    id: &TenantId,
) -> Result<TenantId> {
    if !path.is_file() {
        return Ok(id.clone());
    }
    let conn = crate::db::open_read_only(path, busy_timeout_ms)?;
    stored_tenant_id(&conn, &Schema::read(&conn)?, tenant_column, id)
}

/// Into a scratch column of `column`'s affinity and back out.
fn converted_by_affinity(column: &Column, id: &TenantId) -> Result<TenantId> {
    let conn = Connection::open_in_memory()?;
    conn.execute_batch(&format!("CREATE TABLE t (v {})", column.affinity_keyword()))?;
    let stored = conn.query_row(
        "INSERT INTO t VALUES (?1) RETURNING v",
        [id.to_sql_value()],
        |r| Ok(SqlValue::from_ref(r.get_ref(0)?)),
    )?;
    Ok(match stored {
        SqlValue::Integer(i) => TenantId::Integer(i),
        SqlValue::Text(bytes) => match String::from_utf8(bytes) {
            Ok(s) => TenantId::Text(s),
            Err(_) => id.clone(),
        },
        _ => id.clone(),
    })
}

/// What the tenant column holds.
enum Holds {
    /// BLOBs, of `width` bytes when known.
    Blobs { width: Option<usize> },
    /// Values of another storage class (`integer`, `text`, `real`), or of
    /// the affinity that makes them so.
    Class(String),
    /// A column without a declared type, in a database without values.
    Unknown,
}

/// A stored value of the tenant column.
struct Sample {
    table: String,
    class: String,
    length: usize,
}

struct TenantColumn<'s> {
    /// Table and column of the first table that has the tenant column.
    first_table: &'s str,
    first: &'s Column,
    sample: Option<Sample>,
}

impl<'s> TenantColumn<'s> {
    fn find(conn: &Connection, schema: &'s Schema, name: &str) -> Result<Option<Self>> {
        let mut with_column = schema
            .tables
            .iter()
            .filter(|t| t.skip.is_none())
            .filter_map(|t| Some((t.name.as_str(), t.column(name)?)));
        let Some((first_table, first)) = with_column.next() else {
            return Ok(None);
        };
        let mut sample = None;
        for (table, column) in std::iter::once((first_table, first)).chain(with_column) {
            sample = sample_of(conn, table, &column.name)?;
            if sample.is_some() {
                break;
            }
        }
        Ok(Some(TenantColumn {
            first_table,
            first,
            sample,
        }))
    }

    fn holds(&self) -> Holds {
        match &self.sample {
            Some(s) if s.class == "blob" => Holds::Blobs {
                width: Some(s.length),
            },
            Some(s) => Holds::Class(s.class.clone()),
            None if self.first.decl_type.to_ascii_uppercase().contains("BLOB") => Holds::Blobs {
                width: declared_width(&self.first.decl_type),
            },
            None if self.first.keeps_storage_class() => Holds::Unknown,
            None => Holds::Class(self.first.affinity_keyword().to_ascii_lowercase()),
        }
    }

    /// `table.column`, of the value the answer comes from.
    fn name(&self) -> String {
        let table = self.sample.as_ref().map_or(self.first_table, |s| &s.table);
        format!("{table}.{}", self.first.name)
    }

    /// `id` as the bytes a BLOB column holds: given as bytes, or as a
    /// UUID in text. An id of another width can equal no stored value;
    /// but bytes that spell a UUID, in a column of 16-byte BLOBs, are that
    /// UUID: Ruby gives text in binary Strings (`pack`, binary reads).
    fn blob_id(&self, id: &TenantId, width: Option<usize>) -> Result<TenantId> {
        let bytes = match id {
            TenantId::Blob(bytes) if width == Some(16) && bytes.len() != 16 => {
                std::str::from_utf8(bytes)
                    .ok()
                    .and_then(uuid::parse)
                    .map(|b| b.to_vec())
            }
            TenantId::Blob(bytes) => Some(bytes.clone()),
            TenantId::Text(text) => uuid::parse(text).map(|b| b.to_vec()),
            TenantId::Integer(_) => None,
        };
        match bytes {
            Some(bytes) if width.is_none_or(|w| w == bytes.len()) => Ok(TenantId::Blob(bytes)),
            _ => Err(self.blob_error(width, id)),
        }
    }

    fn blob_error(&self, width: Option<usize>, id: &TenantId) -> Error {
        let uuid_forms = format!(
            "a UUID like {} (dashed, 32 hex digits or 25-character base36)",
            uuid::EXAMPLE
        );
        let (holds, wanted) = match width {
            Some(16) => (
                "16-byte BLOBs".to_string(),
                format!("a binary String of 16 bytes or {uuid_forms}"),
            ),
            Some(w) => (
                format!("{w}-byte BLOBs"),
                format!("a binary String of {w} bytes"),
            ),
            None => ("BLOBs".into(), format!("a binary String or {uuid_forms}")),
        };
        Error::argument(format!(
            "{} / tenant_id holds {holds}; give {wanted}; got {}",
            self.name(),
            given(id)
        ))
    }

    fn no_blobs_error(&self, class: &str, id: &TenantId) -> Error {
        Error::argument(format!(
            "{} / tenant_id holds {class} values, not BLOBs; give an Integer or a String, not a binary String; got {}",
            self.name(),
            given(id)
        ))
    }
}

/// The first non-NULL value of `table.column`: its storage class and
/// length. (An index on the tenant column, which apps have, finds it at
/// once; without one, rows rarely lack their tenant.)
fn sample_of(conn: &Connection, table: &str, column: &str) -> Result<Option<Sample>> {
    let sql = format!(
        "SELECT typeof({c}), length(CAST({c} AS BLOB)) FROM {t} WHERE {c} IS NOT NULL LIMIT 1",
        c = sql::ident(column),
        t = sql::ident(table)
    );
    let found = conn
        .query_row(&sql, [], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .optional()?;
    Ok(found.map(|(class, length)| Sample {
        table: table.to_string(),
        class,
        length: length.max(0) as usize,
    }))
}

/// `n` of a declared type such as `blob(16)`: Rails writes a column's
/// `limit:` there, and SQLite ignores it.
fn declared_width(decl_type: &str) -> Option<usize> {
    let (_, rest) = decl_type.split_once('(')?;
    rest.strip_suffix(')')?.trim().parse().ok()
}

/// The given id for a message: never raw bytes.
fn given(id: &TenantId) -> String {
    match id {
        TenantId::Integer(i) => format!("the Integer {i}"),
        TenantId::Text(s) => {
            let short: String = s.chars().take(60).collect();
            let cut = if short.len() < s.len() { "…" } else { "" };
            format!("the String {short:?}{cut}")
        }
        TenantId::Blob(b) => format!("{} bytes {id}", b.len()),
    }
}
