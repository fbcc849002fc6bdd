//! Opening the app's SQLite database the way every operation needs it.

use crate::error::{Error, Result};
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::time::Duration;

/// How long we wait for another connection's lock before giving up.
pub const DEFAULT_BUSY_TIMEOUT_MS: u64 = 5_000;

/// serde default for the `busy_timeout_ms` option.
pub fn default_busy_timeout_ms() -> u64 {
    DEFAULT_BUSY_TIMEOUT_MS
}

fn check_exists(path: &Path) -> Result<()> {
    if path.as_os_str().is_empty() {
        return Err(Error::argument("database: path is empty"));
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(Error::argument(format!(
            "database: {} is not a file",
            path.display()
        ))),
        Err(_) => Err(Error::argument(format!(
            "database: {} does not exist",
            path.display()
        ))),
    }
}

/// Read-only connection (never creates the file). Temp tables still work:
/// they live in the connection's own temp database.
pub fn open_read_only(path: &Path, busy_timeout_ms: u64) -> Result<Connection> {
    check_exists(path)?;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| Error::database(format!("cannot open {}: {e}", path.display())))?;
    // Reads stream through once: a small cache keeps a backup's memory flat.
    configure(&conn, busy_timeout_ms, 16 << 10)?;
    Ok(conn)
}

/// Read-write connection to an existing database, foreign keys enforced as
/// Rails enables them.
pub fn open_read_write(path: &Path, busy_timeout_ms: u64) -> Result<Connection> {
    check_exists(path)?;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| Error::database(format!("cannot open {}: {e}", path.display())))?;
    // A restore rewrites many pages in one transaction: a larger cache means
    // fewer spills to the database file (each one costs a journal fsync).
    configure(&conn, busy_timeout_ms, 64 << 10)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(conn)
}

/// SQLite takes its busy timeout as a C int of milliseconds (about 24
/// days); rusqlite panics past it.
pub const MAX_BUSY_TIMEOUT_MS: u64 = i32::MAX as u64;

fn configure(conn: &Connection, busy_timeout_ms: u64, cache_kib: i64) -> Result<()> {
    if busy_timeout_ms > MAX_BUSY_TIMEOUT_MS {
        return Err(Error::argument(format!(
            "busy_timeout_ms must be at most {MAX_BUSY_TIMEOUT_MS} (about 24 days), got {busy_timeout_ms}"
        )));
    }
    conn.busy_timeout(Duration::from_millis(busy_timeout_ms))?;
    // Membership sets and sorts may be large: keep them on disk, not in RAM.
    conn.pragma_update(None, "temp_store", "FILE")?;
    conn.pragma_update(None, "cache_size", -cache_kib)?;
    // Fail fast on a file that is not a database at all.
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(|e| Error::database(format!("not a usable SQLite database: {e}")))?;
    Ok(())
}

/// `delete`, `wal`, `truncate`…
pub fn journal_mode(conn: &Connection) -> Result<String> {
    Ok(conn
        .query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))?
        .to_lowercase())
}
