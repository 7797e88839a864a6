//! The terminal clients the `arbor` binary runs against a server over gRPC: `arbor watch`
//! (follow metrics live, resuming after a dropped connection) and `arbor tree` (print a
//! run's subtree). They use only the public API, as any other client would.

pub mod backup;
pub mod tree;
pub mod watch;
