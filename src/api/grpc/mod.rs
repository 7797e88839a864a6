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

use crate::auth::{Access, Caller};
use crate::store::Store;

/// The store as the services hold it: reachable only as a request's caller sees it
/// (`Access`), so that no method can forget to check what its caller may do.
#[derive(Clone)]
pub(crate) struct Guarded(Store);

impl Guarded {
    pub(crate) fn new(store: Store) -> Self {
        Self(store)
    }

    /// The store as the caller of `req` may use it; the server's auth layer named the
    /// caller (a request that bypassed it is refused).
    pub(crate) fn of<T>(&self, req: &tonic::Request<T>) -> Result<Access, tonic::Status> {
        let caller = req
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| tonic::Status::unauthenticated("no caller was established"))?;
        Ok(Access::new(&self.0, caller))
    }
}
