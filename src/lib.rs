//! Arbor: an experiment-tracking server for machine-learning runs.
//!
//! The event log in sled is the truth (`log`); projections derived from it in the same
//! atomic step serve reads (`projection`); `store::Store` is the boundary every surface
//! goes through; `api` holds the wire surfaces; `server::run` serves them all on one
//! port.

pub mod api;
pub mod artifacts;
pub mod cli;
pub mod config;
pub(crate) mod db;
pub mod domain;
pub mod hierarchy;
pub(crate) mod log;
pub mod projection;
pub mod search;
pub mod server;
pub mod store;
pub mod stream;

/// The generated `arbor.v1` messages, clients and servers.
pub mod pb {
    #![allow(clippy::all)]
    tonic::include_proto!("arbor.v1");

    /// The encoded descriptors of `arbor.v1`, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("arbor_descriptor");
}
