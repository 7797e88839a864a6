//! The native gRPC API: `arbor.v1.TrackingService` on top of `Store`.

mod convert;
mod hierarchy;
mod tracking;
mod watch;

pub use hierarchy::HierarchyApi;
pub use tracking::TrackingApi;
pub use watch::WatchApi;
