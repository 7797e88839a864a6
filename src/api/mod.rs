//! The wire surfaces. Each converts its wire types to domain types and back and maps
//! `domain::Error` to its own error shape in one place; nothing below this module knows
//! about tonic or HTTP.

pub mod arbor;
pub mod grpc;
pub mod mlflow;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;

use crate::auth::{Access, Caller};
use crate::domain::Error;
use crate::store::Store;

/// The store as the caller of an HTTP request may use it (the server's auth layer put
/// the caller in the request; a request that bypassed it is refused).
pub(crate) struct Authorized(pub Access);

impl<S> FromRequestParts<S> for Authorized
where
    Store: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        let caller = parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| Error::Unauthenticated("no caller was established".into()))?;
        Ok(Authorized(Access::new(&Store::from_ref(state), caller)))
    }
}
