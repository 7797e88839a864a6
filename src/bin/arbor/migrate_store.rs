//! `arbor migrate-store`: copies a store's log (and artifacts) from a data directory into
//! PostgreSQL, or from PostgreSQL into a new data directory.

/// `arbor migrate-store --from A --to B`.
pub fn main(args: crate::config::MigrateArgs) -> Result<(), arbor::server::BoxError> {
    use arbor::store::migrate;
    let pg = arbor::store::is_postgres_url;
    let config = arbor::store::StoreConfig::default();
    let started = std::time::Instant::now();
    let artifacts = args.artifacts.as_deref();
    let (report, to) = match (pg(&args.from), pg(&args.to)) {
        (false, true) => (
            migrate::to_postgres(args.from.as_ref(), &args.to, artifacts, &config)?,
            "PostgreSQL",
        ),
        (true, false) => (
            migrate::from_postgres(&args.from, args.to.as_ref(), artifacts, &config)?,
            args.to.as_str(),
        ),
        _ => {
            return Err(
                "one of --from and --to is a data directory, the other a postgres:// URL".into(),
            );
        }
    };
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    println!(
        "copied {} events{} and {} artifact files ({} bytes) into {to} in {secs:.1} s ({:.0} events/s)",
        report.events,
        if report.already > 0 {
            format!(" (after {} copied before)", report.already)
        } else {
            String::new()
        },
        report.artifact_files,
        report.artifact_bytes,
        report.events as f64 / secs
    );
    Ok(())
}
