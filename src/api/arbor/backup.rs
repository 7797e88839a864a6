//! `GET /api/arbor/v1/backup?from_seq=N&artifacts=true`: a backup streamed while the
//! server keeps serving (the format of `proto/arbor/v1/backup.proto`), from `from_seq`
//! (default 1) up to the last event committed when the request arrived, which the
//! `x-arbor-backup-to-seq` header also gives. `arbor backup --server` calls it.

use axum::body::{Body, Bytes};
use axum::extract::Query;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::api::Authorized;
use crate::domain::Error;

/// Bytes gathered before a chunk goes out.
const CHUNK: usize = 256 * 1024;

#[derive(serde::Deserialize)]
pub(crate) struct Params {
    #[serde(default)]
    from_seq: Option<u64>,
    #[serde(default)]
    artifacts: Option<bool>,
}

/// Admins only with `--auth`: a backup holds everything, password hashes included.
pub(crate) async fn backup(
    Authorized(access): Authorized,
    Query(params): Query<Params>,
) -> Result<Response, Error> {
    let store = access.admin()?.clone();
    let from_seq = params.from_seq.unwrap_or(1).max(1);
    let to_seq = store.committed_seq();
    if from_seq > to_seq + 1 {
        return Err(Error::invalid(format!(
            "from_seq {from_seq} is beyond the log, which ends at {to_seq}"
        )));
    }
    let with_artifacts = params.artifacts.unwrap_or(false);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        if let Err(e) = crate::backup::write(&store, from_seq, to_seq, with_artifacts, &mut out) {
            tracing::error!(error = %e, "backup failed");
            // The client sees a broken body and no trailer: never a backup that looks whole.
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "application/x-arbor-backup".to_string(),
            ),
            (
                header::HeaderName::from_static("x-arbor-backup-to-seq"),
                to_seq.to_string(),
            ),
        ],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response())
}

/// A blocking writer that sends what it is given down a channel in chunks.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client left"))
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}
