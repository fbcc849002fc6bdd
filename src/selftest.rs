//! Entry points that exist only so the bindings' specs can exercise their
//! machinery (GVL release, callbacks, cancellation, panic boundary) without a
//! database. Not part of the product API.

use crate::error::{Error, Result};
use crate::progress::{Event, Progress, Step};
use std::time::Duration;

/// Sleep `steps` times for `step_ms` milliseconds, emitting a `tick` event
/// after each step. Returns the number of steps done.
pub fn busy_work(steps: u64, step_ms: u64, progress: &mut dyn Progress) -> Result<u64> {
    if steps > 100_000 || step_ms > 10_000 {
        return Err(Error::argument(
            "busy_work: steps <= 100000 and step_ms <= 10000",
        ));
    }
    progress.emit(Event::new(Step::Start).with("total", steps))?;
    for step in 1..=steps {
        progress.check_interrupt()?;
        std::thread::sleep(Duration::from_millis(step_ms));
        progress.emit(
            Event::new(Step::Tick)
                .with("processed", step)
                .with("total", steps),
        )?;
    }
    progress.emit(Event::new(Step::Done))?;
    Ok(steps)
}

/// Panics on purpose, to prove the bindings turn a panic into an error.
pub fn panic_for_test(message: &str) -> Result<()> {
    panic!("{message}")
}
