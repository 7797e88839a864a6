//! `arbor restore`: a backup file (and its chain of increments) into a new data directory.

/// `arbor restore --from FILE --data-dir DIR`.
pub fn main(args: crate::config::RestoreArgs) -> Result<(), arbor::server::BoxError> {
    let report = arbor::backup::restore(
        &args.from,
        &args.data_dir,
        args.artifacts_dir.as_deref(),
        arbor::store::StoreConfig::default().cache_bytes,
    )?;
    println!(
        "restored {} events, {} artifact files ({} bytes) into {}",
        report.events,
        report.artifact_files,
        report.artifact_bytes,
        args.data_dir.display()
    );
    Ok(())
}
