//! Every input kept in `fuzz/regressions/<target>/` (seeds, and each crash the fuzzers
//! found, once fixed) goes through its target's entry point again, so what was fixed
//! stays fixed without running a fuzzer. `scripts/fuzz` runs the fuzzers themselves.

use std::path::PathBuf;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.expect("entry").path();
            let data = std::fs::read(&path).expect("read input");
            (path, data)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no inputs kept for {target}");
    out
}

fn replay_all(target: &str, run: fn(&[u8])) {
    for (path, data) in inputs(target) {
        eprintln!("{}", path.display());
        run(&data);
    }
}

/// Kept MLflow REST inputs answer without a 5xx and without a panic.
#[test]
fn rest_inputs() {
    replay_all("rest", arbor::fuzzing::rest);
    // The target's store lives as long as the process; its directory goes now.
    std::fs::remove_dir_all(arbor::fuzzing::rest_data_dir()).expect("remove the store");
}

/// Kept filter and order-by inputs compile or are refused, never panic.
#[test]
fn filter_inputs() {
    replay_all("filter", arbor::fuzzing::filter);
}

/// Kept event streams (one is a real store's log) project or are refused, never panic.
#[test]
fn replay_inputs() {
    replay_all("replay", arbor::fuzzing::replay);
}

/// Kept page tokens decode or are refused, and round-trip when they decode.
#[test]
fn page_token_inputs() {
    replay_all("page_token", arbor::fuzzing::page_token);
}
