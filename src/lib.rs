//! Arbor: an experiment-tracking server for machine-learning runs.
//!
//! The event log in sled is the truth (`log`); projections derived from it in the same
//! atomic step serve reads (`projection`); `store::Store` is the boundary every surface
//! goes through; `api` holds the wire surfaces; `server::run` serves them all on one
//! port.

/// The wire surfaces: gRPC services, MLflow's REST API and web UI, plain HTTP and SSE.
pub mod api;
/// The artifact files: local, streamed, atomic uploads, paths that never leave the root.
pub mod artifacts;
/// Who is calling (`--auth`: users, passwords, tokens) and what they may do.
pub mod auth;
/// Backups of the log (and artifacts) in a documented format, and restore from them.
pub mod backup;
/// The sled database: the keyspace, reads, group writes, open and release.
pub(crate) mod db;
/// Experiments, runs, metrics, commands, errors and MLflow's rules; no wire types.
pub mod domain;
/// Entry points for the fuzz targets and their regression tests; not an API.
#[doc(hidden)]
pub mod fuzzing;
/// The run tree: subtrees, children, ancestors, and the rules for re-parenting.
pub mod hierarchy;
/// The event log: the committer (the one writer), what each command decides, rebuild.
pub(crate) mod log;
/// Prometheus metrics: what `/metrics` serves.
pub mod metrics;
/// Opaque page tokens, shared by search, history and hierarchy paging.
pub(crate) mod paging;
/// State derived from the log in the same atomic step: records, history, indexes.
pub mod projection;
/// MLflow's filter and order_by language, and the planner onto the indexes.
pub mod search;
/// One port for gRPC and HTTP, and graceful shutdown.
pub mod server;
/// `Store`: the facade every surface reads and writes through.
pub mod store;
/// Live streams: the hub, watch sessions and their scopes.
pub mod stream;

/// The generated `arbor.v1` messages, clients and servers.
pub mod pb {
    #![allow(clippy::all)]
    tonic::include_proto!("arbor.v1");

    /// The encoded descriptors of `arbor.v1`, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("arbor_descriptor");
}
