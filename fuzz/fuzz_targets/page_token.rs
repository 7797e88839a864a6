#![no_main]
//! See `arbor::fuzzing::page_token` for what this target feeds and what it holds.

libfuzzer_sys::fuzz_target!(|data: &[u8]| arbor::fuzzing::page_token(data));
