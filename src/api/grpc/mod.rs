//! The native gRPC API: `arbor.v1.TrackingService` on top of `Store`.

mod convert;
mod tracking;

pub use tracking::TrackingApi;
