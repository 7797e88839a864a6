//! Arbor's integration tests, one binary so the suite links once per backend: real
//! servers on `127.0.0.1:0`, each on its own temporary data directory (or, with
//! `ARBOR_TEST_BACKEND=postgres`, its own PostgreSQL database). One module per area;
//! `cargo test --test it <area>::` runs one area.

mod common;

mod auth;
mod backup;
mod check;
mod connections;
mod durability;
mod fuzz_regressions;
mod hierarchy;
mod hosts;
mod import;
mod live_page;
mod metrics;
mod mlflow_rest;
mod mlflow_ui;
mod rebuild;
mod search;
mod search_fuzz;
mod shared_log;
mod storage_safety;
mod streams;
mod surfaces;
mod tls;
mod tracking;
mod watch_cli;
