//! Running core work without the GVL, and calling back into Ruby with it.
//!
//! Long work (`TenantKit.backup`, …) releases the Global VM Lock so other
//! Ruby threads keep running. Progress events re-acquire it only to yield to
//! the caller's block. Three things must never cross this boundary:
//! - a Rust panic (Ruby would see an uncatchable `fatal`): caught here and
//!   turned into `TenantKit::InternalError`;
//! - a Ruby non-local exit (`raise`, `break`, `throw`) unwinding through Rust
//!   frames: the yield is protected, the error parked, the core told to stop,
//!   and the parked error re-raised unchanged once the core has cleaned up;
//! - Ruby interrupts (`Thread#kill`, `Timeout`, Ctrl-C) being ignored: the
//!   unblock function raises a flag the core polls in its hot loops.

use crate::errors;
use magnus::{value::BoxValue, Error as RbError, Ruby, Value};
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tenant_kit::{Event, Progress};

/// Progress sink that yields each event, as a JSON string, to the block of
/// the current Ruby method (the Ruby side parses it into a Hash).
struct BlockProgress<'a> {
    yields: bool,
    /// Raised by Ruby's unblock function (kill, Timeout, signal); shared so
    /// that the core's waits for a lock can watch it too.
    interrupted: &'a Arc<AtomicBool>,
    /// The Ruby error raised by the block, kept until the core has stopped.
    parked: Option<RbError>,
    /// Keeps the parked exception object alive while we run without the GVL.
    _pin: Option<BoxValue<Value>>,
}

impl Progress for BlockProgress<'_> {
    fn emit(&mut self, event: Event) -> tenant_kit::Result<()> {
        self.check_interrupt()?;
        if !self.yields {
            return Ok(());
        }
        let json = event.to_json();
        let outcome = with_gvl(|ruby| ruby.yield_value::<String, Value>(json).map(|_| ()));
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(ruby_error)) => {
                self._pin = with_gvl(|_| ruby_error.value().map(BoxValue::new))
                    .ok()
                    .flatten();
                self.parked = Some(ruby_error);
                Err(tenant_kit::Error::cancelled())
            }
            Err(panic_error) => Err(panic_error),
        }
    }

    fn check_interrupt(&self) -> tenant_kit::Result<()> {
        if self.interrupted.load(Ordering::Relaxed) {
            Err(tenant_kit::Error::cancelled())
        } else {
            Ok(())
        }
    }

    fn cancel_flag(&self) -> Option<Arc<AtomicBool>> {
        Some(Arc::clone(self.interrupted))
    }
}

/// Run `work` without the GVL, yielding progress events to the current
/// method's block if it has one. Returns the core's value, the block's own
/// error unchanged, or the core error mapped to its Ruby class.
pub fn run_without_gvl<T, F>(ruby: &Ruby, work: F) -> Result<T, RbError>
where
    F: FnOnce(&mut dyn Progress) -> tenant_kit::Result<T>,
{
    let interrupted = Arc::new(AtomicBool::new(false));
    let mut call = Call {
        work: Some(work),
        progress: BlockProgress {
            yields: ruby.block_given(),
            interrupted: &interrupted,
            parked: None,
            _pin: None,
        },
        outcome: None,
    };

    unsafe {
        rb_sys::rb_thread_call_without_gvl(
            Some(call_work::<T, F>),
            &mut call as *mut Call<'_, T, F> as *mut c_void,
            Some(raise_interrupt_flag),
            Arc::as_ptr(&interrupted) as *mut c_void,
        );
    }

    if let Some(parked) = call.progress.parked.take() {
        return Err(parked);
    }
    let outcome = call
        .outcome
        .take()
        .unwrap_or_else(|| Err(tenant_kit::Error::internal("native work did not run")));
    if interrupted.load(Ordering::Relaxed) {
        // Let Ruby deliver the pending interrupt (kill, Timeout, signal)
        // rather than reporting a cancel nobody asked for.
        unsafe { rb_sys::rb_thread_check_ints() };
    }
    outcome.map_err(|e| errors::to_ruby(ruby, &e))
}

struct Call<'a, T, F> {
    work: Option<F>,
    progress: BlockProgress<'a>,
    outcome: Option<tenant_kit::Result<T>>,
}

unsafe extern "C" fn call_work<T, F>(data: *mut c_void) -> *mut c_void
where
    F: FnOnce(&mut dyn Progress) -> tenant_kit::Result<T>,
{
    let call = unsafe { &mut *(data as *mut Call<'_, T, F>) };
    let work = call.work.take();
    let progress = &mut call.progress;
    let outcome = catch_unwind(AssertUnwindSafe(move || match work {
        Some(work) => work(progress),
        None => Err(tenant_kit::Error::internal("native work ran twice")),
    }));
    call.outcome =
        Some(outcome.unwrap_or_else(|payload| Err(tenant_kit::Error::from_panic(&*payload))));
    std::ptr::null_mut()
}

unsafe extern "C" fn raise_interrupt_flag(data: *mut c_void) {
    let flag = unsafe { &*(data as *const AtomicBool) };
    flag.store(true, Ordering::Relaxed);
}

/// Call `f` with the GVL held, from a thread that released it. A panic in
/// `f` comes back as an internal error instead of unwinding into Ruby.
fn with_gvl<R, F: FnOnce(&Ruby) -> R>(f: F) -> tenant_kit::Result<R> {
    struct Slot<R, F> {
        f: Option<F>,
        out: Option<std::thread::Result<R>>,
    }
    unsafe extern "C" fn trampoline<R, F: FnOnce(&Ruby) -> R>(data: *mut c_void) -> *mut c_void {
        let slot = unsafe { &mut *(data as *mut Slot<R, F>) };
        let f = slot.f.take();
        slot.out = Some(catch_unwind(AssertUnwindSafe(move || {
            // SAFETY: this runs on a Ruby thread holding the GVL.
            let ruby = unsafe { Ruby::get_unchecked() };
            (f.expect("called once"))(&ruby)
        })));
        std::ptr::null_mut()
    }
    let mut slot = Slot {
        f: Some(f),
        out: None,
    };
    unsafe {
        rb_sys::rb_thread_call_with_gvl(
            Some(trampoline::<R, F>),
            &mut slot as *mut Slot<R, F> as *mut c_void,
        );
    }
    match slot.out {
        Some(Ok(value)) => Ok(value),
        Some(Err(payload)) => Err(tenant_kit::Error::from_panic(&*payload)),
        None => Err(tenant_kit::Error::internal("callback did not run")),
    }
}

/// Run a quick native call with the GVL held, turning a panic into
/// `TenantKit::InternalError` (for calls too short to release the GVL).
pub fn guarded<T, F>(ruby: &Ruby, f: F) -> Result<T, RbError>
where
    F: FnOnce() -> tenant_kit::Result<T>,
{
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result.map_err(|e| errors::to_ruby(ruby, &e)),
        Err(payload) => Err(errors::to_ruby(
            ruby,
            &tenant_kit::Error::from_panic(&*payload),
        )),
    }
}
