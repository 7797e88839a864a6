//! `arbor rebuild`: re-derives a stopped store's projections from its log.

use arbor::store;

/// `arbor rebuild --data-dir DIR`.
pub fn main(args: crate::config::StoreArgs) -> Result<(), arbor::server::BoxError> {
    let report = store::rebuild(&args.data_dir, &args.store_config())?;
    println!(
        "rebuilt from {} events: {} projected keys before, {} after, {} changed",
        report.events, report.keys_before, report.keys_after, report.keys_changed
    );
    Ok(())
}
