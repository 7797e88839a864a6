//! The native gRPC API: `arbor.v1` tracking, hierarchy and watch services on top of
//! `Store`, with their codec.

pub mod codec;
mod convert;
mod hierarchy;
mod tracking;
mod watch;

pub use hierarchy::HierarchyApi;
pub use tracking::TrackingApi;
pub use watch::WatchApi;
