//! What a backup and a restore do around their own work: wait for locks
//! the caller's way, take the tenant id as the database stores it, and end
//! a failure with the events a progress display needs.

use crate::db::BusyPolicy;
use crate::error::Result;
use crate::progress::{report_failure, Event, LockState, Progress, Step};
use crate::TenantId;
use std::path::Path;

/// The database and tenant a job works on.
pub(crate) struct Target<'a> {
    pub database: &'a Path,
    pub busy_timeout_ms: u64,
    pub tenant_column: &'a str,
    pub tenant_id: &'a TenantId,
}

/// Run `work` with the tenant id converted the way SQLite stores it in the
/// tenant column (`"1"` is tenant 1 of an INTEGER column, see
/// `tenant_id::stored_tenant_id_of`). On failure, a lock the work's last `lock`
/// event announced is reported let go (its connection is closed by the time
/// `work` returns) before the `failed` event, so a display that shows the
/// app's writers held off never stays stuck at "read" or "write".
pub(crate) fn run<T>(
    target: Target<'_>,
    progress: &mut dyn Progress,
    work: impl FnOnce(TenantId, &mut dyn Progress) -> Result<T>,
) -> Result<T> {
    let _busy = BusyPolicy::new(target.busy_timeout_ms, progress.cancel_flag()).enter();
    let mut tracked = LockTracking {
        inner: progress,
        held: false,
    };
    let result = crate::tenant_id::stored_tenant_id_of(
        target.database,
        target.busy_timeout_ms,
        target.tenant_column,
        target.tenant_id,
    )
    .and_then(|tenant_id| work(tenant_id, &mut tracked));
    if let Err(e) = &result {
        if tracked.held {
            let _ = progress.emit(Event::lock(LockState::None));
        }
        report_failure(progress, e);
    }
    result
}

/// Passes events on and remembers whether the last `lock` event announced
/// a lock that has not been reported let go.
struct LockTracking<'a> {
    inner: &'a mut dyn Progress,
    held: bool,
}

impl Progress for LockTracking<'_> {
    fn emit(&mut self, event: Event) -> Result<()> {
        if event.step() != Step::Lock {
            return self.inner.emit(event);
        }
        if event.lock_state() == Some(LockState::None) {
            // Let go, whether or not the sink takes the news.
            self.held = false;
            return self.inner.emit(event);
        }
        // Announced before the lock is taken: a sink that refuses the event
        // stops the work before it takes the lock.
        self.inner.emit(event)?;
        self.held = true;
        Ok(())
    }

    fn check_interrupt(&self) -> Result<()> {
        self.inner.check_interrupt()
    }

    fn cancel_flag(&self) -> Option<std::sync::Arc<std::sync::atomic::AtomicBool>> {
        self.inner.cancel_flag()
    }
}
