//! Opening the app's SQLite database the way every operation needs it.

use crate::error::{Error, Result};
use rusqlite::{Connection, OpenFlags};
use std::cell::RefCell;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    configure(&conn, path, busy_timeout_ms, 16 << 10)?;
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
    configure(&conn, path, busy_timeout_ms, 64 << 10)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(conn)
}

/// SQLite takes its busy timeout as a C int of milliseconds (about 24
/// days); rusqlite panics past it.
pub const MAX_BUSY_TIMEOUT_MS: u64 = i32::MAX as u64;

fn configure(conn: &Connection, path: &Path, busy_timeout_ms: u64, cache_kib: i64) -> Result<()> {
    check_busy_timeout(busy_timeout_ms)?;
    wait_when_busy(conn)?;
    // The first statements read the file's header: a file that is not a
    // database (or is encrypted, or corrupt) fails here, and the message
    // must say which file.
    let first_reads = || -> rusqlite::Result<()> {
        // Membership sets and sorts may be large: keep them on disk, not in RAM.
        conn.pragma_update(None, "temp_store", "FILE")?;
        conn.pragma_update(None, "cache_size", -cache_kib)?;
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
            r.get::<_, i64>(0)
        })?;
        Ok(())
    };
    first_reads().map_err(|e| {
        Error::database(format!(
            "{} is not a usable SQLite database: {e}",
            path.display()
        ))
    })
}

/// `delete`, `wal`, `truncate`…
pub fn journal_mode(conn: &Connection) -> Result<String> {
    Ok(conn
        .query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))?
        .to_lowercase())
}

fn check_busy_timeout(busy_timeout_ms: u64) -> Result<()> {
    if busy_timeout_ms > MAX_BUSY_TIMEOUT_MS {
        return Err(Error::argument(format!(
            "busy_timeout_ms must be at most {MAX_BUSY_TIMEOUT_MS} (about 24 days), got {busy_timeout_ms}"
        )));
    }
    Ok(())
}

/// How a job waits for another connection's lock: up to `timeout`, unless
/// `cancel` is raised meanwhile. SQLite's own busy timeout sleeps through
/// its whole length without looking at anything, so a `Thread#kill` or
/// `Timeout.timeout` of the Ruby caller would wait it out; our busy handler
/// sleeps in short steps and gives up as soon as the job is cancelled.
///
/// rusqlite takes a busy handler as a plain `fn`, and SQLite calls it on the
/// thread that runs the statement, so the policy lives in a thread-local:
/// each thread that runs a job's SQL enters it ([`BusyPolicy::enter`]).
/// A thread that did not waits [`DEFAULT_BUSY_TIMEOUT_MS`], uncancellable.
#[derive(Clone, Debug)]
pub struct BusyPolicy {
    pub timeout: Duration,
    pub cancel: Option<Arc<AtomicBool>>,
}

/// Sleep at most this long between two tries for a lock.
const BUSY_POLL: Duration = Duration::from_millis(10);

thread_local! {
    /// The policy of this thread's job, and when the current wait began.
    static BUSY_POLICY: RefCell<Option<(BusyPolicy, Instant)>> = const { RefCell::new(None) };
}

/// Restores the thread's previous policy when dropped.
pub struct BusyScope {
    previous: Option<(BusyPolicy, Instant)>,
}

impl BusyPolicy {
    pub fn new(timeout_ms: u64, cancel: Option<Arc<AtomicBool>>) -> BusyPolicy {
        BusyPolicy {
            timeout: Duration::from_millis(timeout_ms),
            cancel,
        }
    }

    /// This thread's policy, to hand to a thread the job starts.
    pub fn current() -> Option<BusyPolicy> {
        BUSY_POLICY.with(|p| p.borrow().as_ref().map(|(policy, _)| policy.clone()))
    }

    /// Wait this way on this thread until the scope is dropped.
    pub fn enter(self) -> BusyScope {
        let previous = BUSY_POLICY.with(|p| p.borrow_mut().replace((self, Instant::now())));
        BusyScope { previous }
    }
}

impl Drop for BusyScope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        BUSY_POLICY.with(|p| *p.borrow_mut() = previous);
    }
}

/// Make `conn` wait for locks by the thread's [`BusyPolicy`].
pub fn wait_when_busy(conn: &Connection) -> Result<()> {
    conn.busy_handler(Some(busy_handler))?;
    Ok(())
}

/// SQLite's busy callback: `tries` is how often it was called before for
/// this lock. True: sleep a little and try again.
fn busy_handler(tries: i32) -> bool {
    BUSY_POLICY.with(|p| {
        let mut p = p.borrow_mut();
        let (policy, started) = p.get_or_insert_with(|| {
            (
                BusyPolicy::new(DEFAULT_BUSY_TIMEOUT_MS, None),
                Instant::now(),
            )
        });
        if tries == 0 {
            *started = Instant::now();
        }
        if policy
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            return false;
        }
        let waited = started.elapsed();
        if waited >= policy.timeout {
            return false;
        }
        std::thread::sleep((policy.timeout - waited).min(BUSY_POLL));
        true
    })
}
