//! Opening the app's SQLite database the way every operation needs it.

use crate::error::{Error, Result};
use crate::progress::{Event, Progress, Step};
use rusqlite::{Connection, OpenFlags};
use std::cell::{Cell, RefCell};
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
    .map_err(|e| Error::sqlite(format!("cannot open {}: {e}", path.display()), &e))?;
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
    .map_err(|e| Error::sqlite(format!("cannot open {}: {e}", path.display()), &e))?;
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
        Error::sqlite(
            format!("{} is not a usable SQLite database: {e}", path.display()),
            &e,
        )
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

/// How many SQLite virtual-machine instructions a running statement
/// executes between two looks at [`Watched`] (a few hundred microseconds).
const STATEMENT_CHECK_OPS: std::ffi::c_int = 10_000;

/// A statement running longer than this without any event emits a
/// `working` event: the progress callback's way to cancel it (a C
/// callback has no other).
const HEARTBEAT: Duration = Duration::from_millis(500);

/// Run `work` with every statement `conn` runs meanwhile interruptible: a
/// raised cancel flag (Ruby's unblock function: `Thread#kill`, `Timeout`,
/// a signal) or a sink that refuses an event stops a running statement
/// within [`STATEMENT_CHECK_OPS`] instructions, instead of when it ends
/// (a DELETE may run for minutes). The statement fails with
/// `SQLITE_INTERRUPT`, the work unwinds as for any error (rolling back
/// its transaction), and the result is [`Error::cancelled`].
pub fn watch_statements<T>(
    conn: &Connection,
    progress: &mut dyn Progress,
    work: impl FnOnce(&mut dyn Progress) -> Result<T>,
) -> Result<T> {
    let watched = Watched {
        inner: RefCell::new(progress),
        last_event: Cell::new(Instant::now()),
        stopped: Cell::new(false),
    };
    let installed = Installed::new(conn, &watched);
    let result = work(&mut WatchedSink(&watched));
    drop(installed);
    match result {
        Err(e) if watched.stopped.get() && e.kind() != crate::error::ErrorKind::Cancelled => {
            Err(Error::cancelled())
        }
        other => other,
    }
}

/// The sink of the work, shared with SQLite's progress handler: the
/// handler runs only while a statement runs, when the work itself is not
/// emitting, and it never waits for the cell (see [`on_progress`]).
struct Watched<'p> {
    inner: RefCell<&'p mut dyn Progress>,
    /// When the last event went out: heartbeats fill only silences.
    last_event: Cell<Instant>,
    /// Set once a statement was interrupted: every later one is too.
    stopped: Cell<bool>,
}

struct WatchedSink<'w, 'p>(&'w Watched<'p>);

impl Progress for WatchedSink<'_, '_> {
    fn emit(&mut self, event: Event) -> Result<()> {
        self.0.last_event.set(Instant::now());
        self.0.inner.borrow_mut().emit(event)
    }

    fn check_interrupt(&self) -> Result<()> {
        self.0.inner.borrow().check_interrupt()
    }

    fn cancel_flag(&self) -> Option<Arc<AtomicBool>> {
        self.0.inner.borrow().cancel_flag()
    }
}

/// SQLite's progress handler on the connection for as long as this lives.
struct Installed<'c> {
    conn: &'c Connection,
}

impl<'c> Installed<'c> {
    fn new(conn: &'c Connection, watched: &Watched<'_>) -> Installed<'c> {
        // SAFETY: `watched` outlives the handler: `Installed` is dropped
        // (and the handler removed) before `watched` in `watch_statements`.
        unsafe {
            rusqlite::ffi::sqlite3_progress_handler(
                conn.handle(),
                STATEMENT_CHECK_OPS,
                Some(on_progress),
                watched as *const Watched<'_> as *mut std::ffi::c_void,
            );
        }
        Installed { conn }
    }
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        // SAFETY: the live connection's handle; no handler from here on.
        unsafe {
            rusqlite::ffi::sqlite3_progress_handler(
                self.conn.handle(),
                0,
                None,
                std::ptr::null_mut(),
            );
        }
    }
}

/// Non-zero interrupts the running statement.
unsafe extern "C" fn on_progress(data: *mut std::ffi::c_void) -> std::ffi::c_int {
    // SAFETY: installed by `Installed::new` with a `Watched` that is still
    // alive (the handler is removed before it is dropped).
    let watched = unsafe { &*(data as *const Watched<'_>) };
    // A panic must not unwind into SQLite: it stops the statement.
    let stop = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| should_stop(watched)))
        .unwrap_or(true);
    if stop {
        watched.stopped.set(true);
    }
    std::ffi::c_int::from(stop)
}

fn should_stop(watched: &Watched<'_>) -> bool {
    if watched.stopped.get() {
        return true;
    }
    // Busy: an event is being delivered and ran this statement; not ours
    // to interrupt.
    let Ok(mut sink) = watched.inner.try_borrow_mut() else {
        return false;
    };
    if sink.check_interrupt().is_err() {
        return true;
    }
    if watched.last_event.get().elapsed() < HEARTBEAT {
        return false;
    }
    watched.last_event.set(Instant::now());
    sink.emit(Event::new(Step::Working)).is_err()
}
