//! `arbor backup`: from a running server (`--server`, through
//! `GET /api/arbor/v1/backup`) or from a stopped store (`--data-dir`), into a file that
//! appears under its name only once it is complete and verified.

use std::path::{Path, PathBuf};

use crate::backup::Summary;
use crate::server::BoxError;

/// Where a backup comes from.
pub enum Source {
    Server(String),
    DataDir {
        dir: PathBuf,
        config: crate::store::StoreConfig,
    },
}

pub struct BackupOptions {
    pub source: Source,
    pub out: PathBuf,
    pub with_artifacts: bool,
    /// Continue from this earlier backup: only the events after it.
    pub incremental_from: Option<PathBuf>,
}

/// Takes the backup; returns what it holds.
pub async fn backup(opts: BackupOptions) -> Result<Summary, BoxError> {
    let from_seq = match &opts.incremental_from {
        Some(prev) => crate::backup::verify(prev)?.0.to_seq + 1,
        None => 1,
    };
    let partial = partial_path(&opts.out);
    let written = match &opts.source {
        Source::Server(url) => download(url, from_seq, opts.with_artifacts, &partial).await,
        Source::DataDir { dir, config } => {
            // Opening an empty directory would create a store there: never for a backup.
            if !crate::db::db_path(dir).exists() {
                return Err(format!("there is no Arbor store in {}", dir.display()).into());
            }
            let store = crate::store::Store::open(dir, config)?;
            let file = std::fs::File::create(&partial)?;
            let result = crate::backup::write(
                &store,
                from_seq,
                store.committed_seq(),
                opts.with_artifacts,
                std::io::BufWriter::with_capacity(1 << 20, file),
            );
            store.close().await;
            result.map(|_| ()).map_err(BoxError::from)
        }
    };
    let verified = written.and_then(|()| {
        std::fs::File::open(&partial)?.sync_all()?;
        Ok(crate::backup::verify(&partial)?)
    });
    match verified {
        Ok((_, summary)) => {
            std::fs::rename(&partial, &opts.out)?;
            Ok(summary)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    out.with_file_name(name)
}

/// Streams the server's backup into `to`.
async fn download(url: &str, from_seq: u64, artifacts: bool, to: &Path) -> Result<(), BoxError> {
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;
    let uri: http::Uri = url.parse()?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "--server {url}: this client speaks plain http:// only (not TLS yet); back up a server with TLS through a loopback listener, or a stopped store with --data-dir"
        )
        .into());
    }
    let host = uri.host().ok_or("the server URL has no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port)).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let connection = tokio::spawn(conn);
    let path = format!("/api/arbor/v1/backup?from_seq={from_seq}&artifacts={artifacts}");
    let mut request = http::Request::get(path).header(http::header::HOST, format!("{host}:{port}"));
    if let Some(auth) = super::http::authorization() {
        request = request.header(http::header::AUTHORIZATION, auth);
    }
    let request = request.body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let response = sender.send_request(request).await?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        return Err(format!(
            "the server answered {status}: {}",
            String::from_utf8_lossy(&body)
        )
        .into());
    }
    let mut file = tokio::fs::File::create(to).await?;
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            file.write_all(&data).await?;
        }
    }
    file.flush().await?;
    drop(sender);
    let _ = connection.await;
    Ok(())
}
