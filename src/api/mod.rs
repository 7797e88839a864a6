//! The wire surfaces. Each converts its wire types to domain types and back and maps
//! `domain::Error` to its own error shape in one place; nothing below this module knows
//! about tonic or HTTP.

pub mod grpc;
pub mod http;
pub mod mlflow;
