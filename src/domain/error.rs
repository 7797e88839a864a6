//! The one error type of the store and the domain. The API layers map it to
//! `tonic::Status` and to MLflow's `error_code`, each in one exhaustive `match`.

/// What went wrong, in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named experiment, run or tag does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed or breaks a rule (names, limits, immutable params).
    #[error("{0}")]
    InvalidArgument(String),
    /// The request itself is malformed (not JSON, wrong content type): MLflow's
    /// `BAD_REQUEST`, gRPC's INVALID_ARGUMENT.
    #[error("{0}")]
    BadRequest(String),
    /// No such API endpoint (MLflow's `ENDPOINT_NOT_FOUND`).
    #[error("{0}")]
    EndpointNotFound(String),
    /// The thing to create exists already (experiment names are unique).
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is well-formed but the target is in the wrong state (a deleted run).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The storage engine failed; details are logged, the client gets a short message.
    #[error("storage failure: {0}")]
    Storage(#[from] sled::Error),
    /// A stored record did not decode: the data directory is damaged.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The store cannot take writes now (a storage failure made it stop); retry later.
    #[error("{0}")]
    Unavailable(String),
    /// No credentials, or wrong ones (`--auth`): 401 / UNAUTHENTICATED.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but may not do this (`--auth`): 403 / PERMISSION_DENIED.
    #[error("{0}")]
    PermissionDenied(String),
    /// The store is shutting down and takes no more writes.
    #[error("the server is shutting down")]
    Closed,
    /// A position beyond what exists (a stream's `from_seq` past the log's head):
    /// gRPC's OUT_OF_RANGE, MLflow's `INVALID_PARAMETER_VALUE`.
    #[error("{0}")]
    OutOfRange(String),
    /// The client did not send its request in time (a body that stalls or trickles):
    /// gRPC's DEADLINE_EXCEEDED, HTTP 408.
    #[error("{0}")]
    RequestTimeout(String),
    /// A failure of the server's own (an artifact file that cannot be read for a
    /// reason other than its absence); details are logged, the client gets a short
    /// message.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidArgument(msg.into())
    }
}

impl From<prost::DecodeError> for Error {
    fn from(e: prost::DecodeError) -> Self {
        Self::Corrupt(e.to_string())
    }
}

/// Longest error message sent to a client. Messages quote what the client sent (keys,
/// values, filters), which can be megabytes; gRPC carries messages in a header.
pub const MAX_ERROR_MESSAGE_CHARS: usize = 4096;

/// `text` cut to `max` characters, marked when cut.
pub fn bounded(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!(
            "{}… ({} characters more)",
            &text[..cut],
            text[cut..].chars().count()
        ),
        None => text.to_string(),
    }
}
