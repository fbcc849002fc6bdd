//! The helper connection: a second reader that shares the backup's read
//! snapshot and computes the tenant's member sets on its own thread while
//! the main connection dumps the tables that need none (see snapshot.rs for
//! when that is safe).

use super::BackupOptions;
use crate::db;
use crate::error::{Error, Result};
use crate::schema::Schema;
use crate::scope::{MemberSets, Side, TenantScope};
use rusqlite::{Connection, InterruptHandle};
use std::collections::{BTreeMap, BTreeSet};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::Duration;

/// Open the helper connection, before the snapshot starts. None when the
/// snapshot could not be shared (WAL mode; checked again once the snapshot
/// has begun) or the open fails: the backup then computes the sets on its
/// main connection.
pub(super) fn open_helper(options: &BackupOptions, journal_mode: &str) -> Option<Connection> {
    if journal_mode == "wal" {
        return None;
    }
    let helper = db::open_read_only(&options.database, options.busy_timeout_ms).ok()?;
    // The helper walks indexes once to fill the sets; a page cache as large
    // as the main connection's would only add to the backup's memory.
    helper
        .pragma_update(None, "cache_size", -HELPER_CACHE_KIB)
        .ok()?;
    Some(helper)
}

/// Page cache of the helper connection, in KiB.
const HELPER_CACHE_KIB: i64 = 2 << 10;

/// Begin the helper's read transaction while the main connection holds its
/// SHARED lock. Without waiting: a writer that is about to commit holds
/// PENDING, waits for our main connection, and keeps new readers out; we
/// must not wait for it in turn.
pub(super) fn join_snapshot(helper: Connection) -> Option<Connection> {
    helper.busy_timeout(Duration::ZERO).ok()?;
    helper
        .execute_batch("BEGIN; SELECT count(*) FROM sqlite_schema;")
        .ok()?;
    db::wait_when_busy(&helper).ok()?;
    Some(helper)
}

/// Where the member sets come from: a helper thread computing them on its
/// connection, or the main connection when they are first needed.
pub(super) enum MemberSetsSource<'scope, 'env> {
    Helper(HelperJob<'scope, 'env>),
    Main,
}

/// The helper's thread. Dropped before it was joined (an error or a cancel
/// on the main thread), it interrupts the helper's statements until the
/// thread has stopped, so a cancel does not wait for the sets.
pub(super) struct HelperJob<'scope, 'env> {
    thread: Option<ScopedJoinHandle<'scope, Result<(Connection, TenantSets<'env>)>>>,
    interrupt: InterruptHandle,
}

impl<'scope, 'env> MemberSetsSource<'scope, 'env> {
    pub(super) fn start(
        threads: &'scope Scope<'scope, 'env>,
        helper: Option<Connection>,
        scope: &'env TenantScope,
        schema: &'env Schema,
        options: &'env BackupOptions,
        choice: &'env SetChoice,
    ) -> Self {
        let Some(helper) = helper else {
            return MemberSetsSource::Main;
        };
        let interrupt = helper.get_interrupt_handle();
        let busy = db::BusyPolicy::current();
        let thread = std::thread::Builder::new()
            .name("tenant_kit-sets".into())
            .spawn_scoped(threads, move || {
                let _busy = busy.map(db::BusyPolicy::enter);
                let sets = tenant_sets(&helper, scope, schema, options, choice)?;
                Ok((helper, sets))
            });
        match thread {
            Ok(thread) => MemberSetsSource::Helper(HelperJob {
                thread: Some(thread),
                interrupt,
            }),
            // No thread to be had: the main connection does the work.
            Err(_) => MemberSetsSource::Main,
        }
    }
}

impl<'env> MemberSetsSource<'_, 'env> {
    /// The sets, and the connection whose temp schema holds them (None:
    /// `conn`, the main one, on which they are computed now).
    pub(super) fn into_sets(
        self,
        conn: &Connection,
        scope: &'env TenantScope,
        schema: &'env Schema,
        options: &BackupOptions,
        choice: &SetChoice,
    ) -> Result<(Option<Connection>, TenantSets<'env>)> {
        match self {
            MemberSetsSource::Helper(job) => {
                let (helper, sets) = job.finish()?;
                Ok((Some(helper), sets))
            }
            MemberSetsSource::Main => {
                let sets = tenant_sets(conn, scope, schema, options, choice)?;
                Ok((None, sets))
            }
        }
    }
}

/// Which member sets a backup makes, and which of them lose the rows other
/// tenants reach too.
pub(super) struct SetChoice {
    /// Derived tables without sets (read by filtered scans).
    pub without: BTreeSet<String>,
    /// Tables whose rows may be shared ([`TenantScope::may_cross_tenants`])
    /// that have sets.
    pub leave_out: BTreeSet<String>,
}

/// The tenant's member sets, without the rows other tenants reach too.
pub(super) struct TenantSets<'env> {
    pub sets: MemberSets<'env>,
    /// Rows left out as shared, per table.
    pub left_out: BTreeMap<String, u64>,
}

/// The tenant's member sets on `conn`, as `choice` says.
fn tenant_sets<'env>(
    conn: &Connection,
    scope: &'env TenantScope,
    schema: &'env Schema,
    options: &BackupOptions,
    choice: &SetChoice,
) -> Result<TenantSets<'env>> {
    let sets = MemberSets::materialize_without(
        conn,
        scope,
        schema,
        &options.tenant_id,
        Side::Ours,
        &choice.without,
    )?;
    let left_out = sets.leave_out_cross_tenant(conn, &options.tenant_id, &choice.leave_out)?;
    Ok(TenantSets { sets, left_out })
}

impl<'env> HelperJob<'_, 'env> {
    fn finish(mut self) -> Result<(Connection, TenantSets<'env>)> {
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            _ => Err(Error::internal("the member-set thread panicked")),
        }
    }
}

impl Drop for HelperJob<'_, '_> {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            // An interrupt only reaches a statement that is running, so
            // repeat it until the thread has noticed.
            while !thread.is_finished() {
                self.interrupt.interrupt();
                std::thread::sleep(Duration::from_millis(2));
            }
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn database(dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("app.sqlite3");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = DELETE; CREATE TABLE t(id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);",
        )
        .unwrap();
        path
    }

    /// A writer that is committing holds PENDING and waits for our main
    /// connection's SHARED lock; a helper that waited for the writer in turn
    /// would wait for ever (until both busy timeouts ran out). It must give
    /// up at once, and the writer must get through once the main
    /// connection's snapshot ends.
    #[test]
    fn the_helper_does_not_wait_for_a_writer_that_waits_for_us() {
        let dir = tempfile::tempdir().unwrap();
        let path = database(dir.path());
        // Opened before the snapshot, as the backup does.
        let helper = db::open_read_only(&path, 5_000).unwrap();
        let main = db::open_read_only(&path, 5_000).unwrap();
        main.execute_batch("BEGIN; SELECT count(*) FROM t;")
            .unwrap();

        // The probe is opened (its first reads done) before the writer
        // starts: opened once the writer holds PENDING, those reads would
        // be refused (under load, the writer can get there first). It never
        // waits for a lock: a refusal is the signal it looks for.
        let probe = db::open_read_only(&path, 0).unwrap();
        probe.busy_timeout(Duration::ZERO).unwrap();
        let writer_path = path.clone();
        let writer = std::thread::spawn(move || {
            let w = Connection::open(&writer_path).unwrap();
            w.busy_timeout(Duration::from_secs(30)).unwrap();
            w.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (2); COMMIT;")
        });
        // Wait until the writer holds PENDING: new readers are refused then.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let refused = probe
                .execute_batch("BEGIN; SELECT count(*) FROM t;")
                .is_err();
            let _ = probe.execute_batch("ROLLBACK");
            if refused {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the writer never reached PENDING"
            );
            std::thread::sleep(Duration::from_millis(5));
        }

        // Had the helper waited (with this timeout), the writer would time
        // out first and fail below.
        let _busy = db::BusyPolicy::new(120_000, None).enter();
        let joined = join_snapshot(helper);
        assert!(joined.is_none(), "the helper joined past a pending writer");

        main.execute_batch("ROLLBACK").unwrap();
        writer
            .join()
            .unwrap()
            .expect("the writer commits after the snapshot");
        let rows: i64 = main
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 2);
    }

    /// Without a writer in the way the helper joins, and it reads what the
    /// main connection reads even after a writer has been held off.
    #[test]
    fn the_helper_joins_the_snapshot_of_the_main_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = database(dir.path());
        let main = db::open_read_only(&path, 5_000).unwrap();
        main.execute_batch("BEGIN; SELECT count(*) FROM t;")
            .unwrap();
        let helper = join_snapshot(db::open_read_only(&path, 5_000).unwrap())
            .expect("nothing stands in the way");

        let w = Connection::open(&path).unwrap();
        w.busy_timeout(Duration::ZERO).unwrap();
        let refused = w.execute_batch("INSERT INTO t VALUES (2)");
        assert!(refused.is_err(), "a commit got past two SHARED locks");
        let count = |c: &Connection| -> i64 {
            c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!((count(&main), count(&helper)), (1, 1));
    }

    /// A helper job dropped early (an error or a cancel on the main thread)
    /// interrupts the helper's statement instead of waiting for it.
    #[test]
    fn a_dropped_helper_job_interrupts_the_helper() {
        let dir = tempfile::tempdir().unwrap();
        let path = database(dir.path());
        let helper = db::open_read_only(&path, 5_000).unwrap();
        let started = Instant::now();
        let outcome = std::thread::scope(|threads| {
            let interrupt = helper.get_interrupt_handle();
            let (running, is_running) = std::sync::mpsc::channel();
            let thread = threads.spawn(move || -> Result<(Connection, TenantSets<'_>)> {
                running.send(()).unwrap();
                // Counts to 10^12: hours, unless interrupted.
                helper.query_row(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000000000) SELECT count(*) FROM n",
                    [],
                    |r| r.get::<_, i64>(0),
                )?;
                Err(Error::internal("the statement ran to its end"))
            });
            is_running.recv().unwrap();
            std::thread::sleep(Duration::from_millis(50));
            drop(HelperJob {
                thread: Some(thread),
                interrupt,
            });
            started.elapsed()
        });
        assert!(
            outcome < Duration::from_secs(60),
            "dropping the job waited {outcome:?} for the statement"
        );
    }
}
