#![no_main]
//! See `arbor::fuzzing::rest` for what this target feeds and what it holds.

libfuzzer_sys::fuzz_target!(|data: &[u8]| arbor::fuzzing::rest(data));
