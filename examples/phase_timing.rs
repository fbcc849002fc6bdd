//! Phase timings of one restore or backup, for profiling by hand:
//! `cargo run --release --example phase_timing -- <options.json>`
//! (restore options), `-- backup:<options.json>` (backup options) or
//! `-- verify:<archive>`. With `PHASE_EVENTS=1` it also prints every
//! `plan_progress` event (which plan step took how long).
use std::time::Instant;
use tenant_kit::{Event, Progress, Result};

struct Timed {
    started: Instant,
    last: Instant,
    last_step: String,
    /// When the current step's latest event came (a step may repeat).
    latest: Instant,
}

impl Progress for Timed {
    fn emit(&mut self, event: Event) -> Result<()> {
        let step = event.step().to_string();
        let now = Instant::now();
        if step != self.last_step {
            eprintln!(
                "{:>8.3}s  (+{:.3}s)  {}  (the step before last reported at {:.3}s)",
                self.started.elapsed().as_secs_f64(),
                (now - self.last).as_secs_f64(),
                step,
                (self.latest - self.started).as_secs_f64(),
            );
            self.last = now;
            self.last_step = step;
        }
        if std::env::var_os("PHASE_EVENTS").is_some() && event.step() == "plan_progress" {
            eprintln!(
                "{:>8.3}s    {}",
                self.started.elapsed().as_secs_f64(),
                event.to_json()
            );
        }
        self.latest = now;
        Ok(())
    }
}

fn main() {
    let path = std::env::args().nth(1).expect("options.json");
    if let Some(archive) = path.strip_prefix("verify:") {
        let t = Instant::now();
        tenant_kit::verify::verify_path(std::path::Path::new(archive)).unwrap();
        eprintln!("verify {:?}", t.elapsed());
        return;
    }
    let now = Instant::now();
    let mut p = Timed {
        started: now,
        last: now,
        last_step: String::new(),
        latest: now,
    };
    if let Some(options) = path.strip_prefix("backup:") {
        let json = std::fs::read_to_string(options).unwrap();
        let options: tenant_kit::backup::BackupOptions = serde_json::from_str(&json).unwrap();
        let report = tenant_kit::backup::backup(&options, &mut p).unwrap();
        eprintln!("{}", serde_json::to_string(&report).unwrap());
        return;
    }
    let json = std::fs::read_to_string(path).unwrap();
    let options: tenant_kit::restore::RestoreOptions = serde_json::from_str(&json).unwrap();
    let report = tenant_kit::restore::restore(&options, &mut p).unwrap();
    eprintln!(
        "lock_ms {} duration_ms {}",
        report.lock_ms, report.duration_ms
    );
}
