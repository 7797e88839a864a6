//! `arbor backup`: from a running server (`--server`, through
//! `GET /api/arbor/v1/backup`) or from a stopped store (`--data-dir`), into a file that
//! appears under its name only once it is complete and verified.

use std::path::{Path, PathBuf};

use arbor::backup::Summary;
use arbor::server::BoxError;

/// Where a backup comes from.
pub enum Source {
    Server(String),
    DataDir {
        dir: PathBuf,
        config: arbor::store::StoreConfig,
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
        Some(prev) => arbor::backup::verify(prev)?.0.to_seq + 1,
        None => 1,
    };
    let partial = partial_path(&opts.out);
    let written = match &opts.source {
        Source::Server(url) => download(url, from_seq, opts.with_artifacts, &partial).await,
        Source::DataDir { dir, config } => {
            // Opening an empty directory would create a store there: never for a backup.
            if !arbor::store::exists(dir) {
                return Err(format!("there is no Arbor store in {}", dir.display()).into());
            }
            let store = arbor::store::Store::open(dir, config)?;
            let file = std::fs::File::create(&partial)?;
            let result = arbor::backup::write(
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
        Ok(arbor::backup::verify(&partial)?)
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

/// `arbor backup`: prints what was written and how fast.
pub fn main(args: crate::config::BackupArgs) -> Result<(), arbor::server::BoxError> {
    use crate::backup::{BackupOptions, Source};
    let source = match (args.server, args.data_dir) {
        (Some(url), _) => Source::Server(url),
        (None, Some(dir)) => Source::DataDir {
            dir,
            config: arbor::store::StoreConfig {
                artifacts_dir: args.artifacts_dir,
                ..arbor::store::StoreConfig::default()
            },
        },
        (None, None) => return Err("name --server or --data-dir".into()),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = std::time::Instant::now();
    let out = args.out.clone();
    let summary = runtime.block_on(crate::backup::backup(BackupOptions {
        source,
        out: args.out,
        with_artifacts: args.with_artifacts,
        incremental_from: args.incremental_from,
    }))?;
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    println!(
        "backed up events {}..={} ({} events, {} artifact files, {} artifact bytes) to {}: {} bytes in {:.2} s ({:.0} events/s, {:.1} MB/s)",
        summary.from_seq,
        summary.to_seq,
        summary.events,
        summary.artifact_files,
        summary.artifact_bytes,
        out.display(),
        summary.bytes,
        secs,
        summary.events as f64 / secs,
        summary.bytes as f64 / secs / 1e6
    );
    Ok(())
}
