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
    super::http::Client::new(url, super::http::authorization())?
        .get_to_file(
            &format!("/api/arbor/v1/backup?from_seq={from_seq}&artifacts={artifacts}"),
            to,
        )
        .await
}
