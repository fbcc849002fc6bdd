#![no_main]
//! See tenant_kit::fuzzing::Target::Manifest.

use libfuzzer_sys::fuzz_target;
use tenant_kit::fuzzing::{run, Target};

fuzz_target!(|data: &[u8]| {
    let _ = run(Target::Manifest, data);
});
