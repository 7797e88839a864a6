//! `arbor check`: reads a stopped store's log in order and compares every projection
//! with what the log says, and says what to do about any damage.

use arbor::store;

/// `arbor check --data-dir DIR`.
pub fn main(args: crate::config::StoreArgs) -> Result<(), arbor::server::BoxError> {
    let report = store::check(&args.data_dir, &args.store_config())?;
    println!("log: {} events read in order", report.events);
    let dir = args.data_dir.display();
    if let Some(damage) = &report.log_damage {
        println!("log: DAMAGED: {damage}");
        println!(
            "The event log is the truth and cannot be re-derived: restore the store from a backup. `arbor rebuild` cannot repair it."
        );
        return Err("the event log is damaged".into());
    }
    println!(
        "projections: {} keys compared, {} missing or different, {} extra",
        report.keys, report.keys_wrong, report.keys_extra
    );
    if !report.intact() {
        println!(
            "The log is intact and only the projections are damaged: `arbor rebuild --data-dir {dir}` re-derives them from the log."
        );
        return Err("the projections differ from the log".into());
    }
    println!("intact");
    Ok(())
}
