//! MLflow's error JSON, `{"error_code": ..., "message": ...}`, with MLflow's HTTP
//! statuses: the one mapping from `domain::Error` for every HTTP surface (Arbor's own
//! routes answer in the same shape).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::domain::Error;

/// Handlers on every HTTP surface return `Result<_, Error>`; the error answers for itself
/// through the one mapping below.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        error_response(self)
    }
}

/// The one mapping from `domain::Error` to MLflow's error codes and HTTP statuses. Input
/// errors are never 5xx: MLflow's client retries those for minutes.
pub(crate) fn error_response(e: Error) -> Response {
    let (status, code, message) = mlflow_error(e);
    let mut response = (
        status,
        Json(serde_json::json!({ "error_code": code, "message": message })),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static(crate::auth::CHALLENGE),
        );
    }
    response
}

/// MLflow's HTTP status, `error_code` and message for an error (the message bounded).
pub(crate) fn mlflow_error(e: Error) -> (StatusCode, &'static str, String) {
    let (status, code, message) = match e {
        Error::NotFound(m) => (StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST", m),
        Error::InvalidArgument(m) => (StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", m),
        Error::BadRequest(m) => (StatusCode::BAD_REQUEST, "BAD_REQUEST", m),
        Error::EndpointNotFound(m) => (StatusCode::NOT_FOUND, "ENDPOINT_NOT_FOUND", m),
        Error::AlreadyExists(m) => (StatusCode::BAD_REQUEST, "RESOURCE_ALREADY_EXISTS", m),
        Error::FailedPrecondition(m) => (StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", m),
        Error::Unavailable(m) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "TEMPORARILY_UNAVAILABLE",
            m,
        ),
        Error::Unauthenticated(m) => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", m),
        Error::PermissionDenied(m) => (StatusCode::FORBIDDEN, "PERMISSION_DENIED", m),
        Error::Closed => (
            StatusCode::SERVICE_UNAVAILABLE,
            "TEMPORARILY_UNAVAILABLE",
            "the server is shutting down".to_string(),
        ),
        Error::OutOfRange(m) => (StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", m),
        Error::RequestTimeout(m) => (StatusCode::REQUEST_TIMEOUT, "DEADLINE_EXCEEDED", m),
        Error::Internal(m) => {
            tracing::error!(error = %m, "internal error");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                "internal error; see the server log".to_string(),
            )
        }
        Error::Storage(e) => {
            tracing::error!(error = %e, "storage error");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                "storage failure; see the server log".to_string(),
            )
        }
        Error::Corrupt(m) => {
            tracing::error!(error = %m, "corrupt data");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                "the data directory is damaged; see the server log".to_string(),
            )
        }
    };
    let message = crate::domain::bounded(&message, crate::domain::MAX_ERROR_MESSAGE_CHARS);
    (status, code, message)
}
