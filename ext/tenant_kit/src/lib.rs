//! Ruby binding of tenant_kit. Deliberately thin: options arrive as one JSON
//! string built by `lib/tenant_kit.rb`, results leave as JSON, events are
//! yielded as JSON. Everything else lives in the core crate.

mod archive_calls;
mod errors;
mod gvl;
mod settings;

use magnus::{function, prelude::*, Error as RbError, Ruby};

fn version() -> &'static str {
    tenant_kit::VERSION
}

fn sqlite_version() -> String {
    tenant_kit::sqlite_version()
}

/// The progress steps and phases (lib/tenant_kit/steps.rb turns them into
/// `TenantKit::STEPS`, `TenantKit::PHASES`, ...).
fn steps_json() -> String {
    tenant_kit::progress::vocabulary_json()
}

/// Test-only: sleeps in steps without the GVL, yielding a `tick` per step.
fn busy_work(ruby: &Ruby, steps: u64, step_ms: u64) -> Result<u64, RbError> {
    gvl::run_without_gvl(ruby, |progress| {
        tenant_kit::selftest::busy_work(steps, step_ms, progress)
    })
}

/// Test-only: panics inside native code, with and without the GVL.
fn panic_for_test(ruby: &Ruby, message: String, without_gvl: bool) -> Result<(), RbError> {
    if without_gvl {
        gvl::run_without_gvl(ruby, |_| tenant_kit::selftest::panic_for_test(&message))
    } else {
        gvl::guarded(ruby, || tenant_kit::selftest::panic_for_test(&message))
    }
}

#[magnus::init]
fn init(ruby: &Ruby) -> Result<(), RbError> {
    let root = ruby.define_module("TenantKit")?;
    let native = root.define_module("Native")?;
    native.define_module_function("version", function!(version, 0))?;
    native.define_module_function("sqlite_version", function!(sqlite_version, 0))?;
    native.define_module_function("steps_json", function!(steps_json, 0))?;
    native.define_module_function("busy_work", function!(busy_work, 2))?;
    native.define_module_function("panic_for_test", function!(panic_for_test, 2))?;
    archive_calls::init(ruby, &native)?;
    settings::init(ruby, &native)?;
    Ok(())
}
