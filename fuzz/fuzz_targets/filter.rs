#![no_main]
//! See `arbor::fuzzing::filter` for what this target feeds and what it holds.

libfuzzer_sys::fuzz_target!(|data: &[u8]| arbor::fuzzing::filter(data));
