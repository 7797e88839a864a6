//! The terminal clients the `arbor` binary runs against a server over gRPC: `arbor watch`
//! (follow metrics live, resuming after a dropped connection) and `arbor tree` (print a
//! run's subtree), `arbor backup` and `arbor admin` over HTTP. They use only the
//! public API, as any other client would.

pub mod admin;
pub mod backup;
pub mod http;
pub mod import;
pub mod tree;
pub mod watch;
