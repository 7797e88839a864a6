#![no_main]
//! See `arbor::fuzzing::replay` for what this target feeds and what it holds.

libfuzzer_sys::fuzz_target!(|data: &[u8]| arbor::fuzzing::replay(data));
