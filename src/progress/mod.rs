//! Progress events flowing from long work to whoever called it (a Ruby block,
//! a C callback, nothing at all).
//!
//! An event is a flat JSON object: always `step` (a [`Step`], see steps.rs)
//! and `at` (UTC ISO 8601), then step-specific data (`table`, `processed`,
//! `total`, …). The sink may refuse
//! an event, which cancels the work: the caller's own error travels back
//! through the binding, the core only sees [`Error::cancelled`].

mod steps;

pub use steps::{vocabulary_json, Cadence, LockState, Phase, Step, BACKUP_PHASES, RESTORE_PHASES};

use crate::clock::UtcTime;
use crate::error::{Error, Result};
use serde_json::{Map, Value};

#[derive(Debug, Clone)]
pub struct Event {
    step: Step,
    /// `step` (its name) and `at` first, then the step's data: the JSON
    /// object as it is sent.
    fields: Map<String, Value>,
}

impl Event {
    pub fn new(step: Step) -> Self {
        let mut fields = Map::new();
        fields.insert("step".into(), Value::from(step.name()));
        fields.insert("at".into(), Value::from(UtcTime::now().iso8601()));
        Event { step, fields }
    }

    /// Builder-style field: `Event::new(Step::DumpProgress).with("table", "tasks")`.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(key.into(), value.into());
        self
    }

    /// The per-table progress events (`dump_progress`, `purge_progress`,
    /// `restore_progress`): `table`, `processed` and `total`.
    pub fn table_progress(step: Step, table: &str, processed: u64, total: u64) -> Self {
        Event::new(step)
            .with("table", table)
            .with("processed", processed)
            .with("total", total)
    }

    /// Which lock on the app's database the work's connection is about to
    /// take ("read": in rollback-journal mode no other connection can
    /// commit; "write": none can write) or has let go ("none"). Emitted
    /// before a lock is taken and after it is released, so a progress
    /// callback that writes to the same database knows when it may.
    pub fn lock(state: LockState) -> Self {
        Event::new(Step::Lock).with("state", state.name())
    }

    pub fn step(&self) -> Step {
        self.step
    }

    /// The state a `lock` event announces; `None` for other steps.
    pub fn lock_state(&self) -> Option<LockState> {
        if self.step != Step::Lock {
            return None;
        }
        LockState::from_name(self.get("state")?.as_str()?)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields.get(key)
    }

    pub fn to_json(&self) -> String {
        Value::Object(self.fields.clone()).to_string()
    }
}

/// Where events go. Implemented by the Ruby and C bindings and by tests.
pub trait Progress {
    /// Deliver an event; an `Err` stops the work (it is treated as a cancel).
    fn emit(&mut self, event: Event) -> Result<()>;

    /// Cheap check called often inside hot loops: has someone asked us to
    /// stop (Ruby's `Thread#kill`, a signal)? Defaults to never.
    fn check_interrupt(&self) -> Result<()> {
        Ok(())
    }

    /// The flag behind [`Progress::check_interrupt`], when there is one
    /// that another thread raises: waits for a lock (where no code of ours
    /// runs to ask) end as soon as it is up. See [`crate::db::BusyPolicy`].
    fn cancel_flag(&self) -> Option<std::sync::Arc<std::sync::atomic::AtomicBool>> {
        None
    }
}

/// A sink that drops everything, for callers that gave no callback.
pub struct NoProgress;

impl Progress for NoProgress {
    fn emit(&mut self, _event: Event) -> Result<()> {
        Ok(())
    }
}

/// Collects events, for tests and for building a result's log.
#[derive(Default)]
pub struct CollectProgress {
    pub events: Vec<Event>,
}

impl Progress for CollectProgress {
    fn emit(&mut self, event: Event) -> Result<()> {
        self.events.push(event);
        Ok(())
    }
}

impl<F: FnMut(Event) -> Result<()>> Progress for F {
    fn emit(&mut self, event: Event) -> Result<()> {
        self(event)
    }
}

/// Emits `processed`/`total` events for one table at most about
/// [`Throttle::EVENTS_PER_TABLE`] times, so a million-row table gives a few
/// hundred events rather than a million, plus a final one at the end.
pub struct Throttle {
    every: u64,
    next: u64,
}

impl Throttle {
    pub const EVENTS_PER_TABLE: u64 = 200;

    pub fn new(total: u64) -> Self {
        let every = total.div_ceil(Self::EVENTS_PER_TABLE).max(1_000);
        Throttle { every, next: every }
    }

    /// True when `processed` crossed the next reporting point.
    pub fn due(&mut self, processed: u64) -> bool {
        if processed >= self.next {
            self.next = processed + self.every;
            true
        } else {
            false
        }
    }
}

/// Report a failure as a `failed` event; the error itself still propagates.
/// A sink that refuses the `failed` event cannot make things worse.
pub fn report_failure(progress: &mut dyn Progress, error: &Error) {
    let _ = progress.emit(
        Event::new(Step::Failed)
            .with("error", error.message())
            .with("kind", error.kind().name()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_bounds_event_count() {
        let total = 1_000_000;
        let mut t = Throttle::new(total);
        let fired = (1..=total).filter(|p| t.due(*p)).count() as u64;
        assert!(fired <= Throttle::EVENTS_PER_TABLE, "fired {fired}");
        assert!(fired >= Throttle::EVENTS_PER_TABLE / 2, "fired {fired}");
    }

    #[test]
    fn event_has_step_and_utc_time() {
        let json: Value =
            serde_json::from_str(&Event::new(Step::Start).with("n", 3).to_json()).unwrap();
        assert_eq!(json["step"], "start");
        assert!(json["at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(json["n"], 3);
    }
}
