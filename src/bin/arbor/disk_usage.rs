//! `arbor disk-usage`: where a stopped store's bytes go, table by table.

use arbor::store;

/// `arbor disk-usage --data-dir DIR`.
pub fn main(args: crate::config::StoreArgs) -> Result<(), arbor::server::BoxError> {
    let u = store::disk_usage(&args.data_dir, &args.store_config())?;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "the database in {}: {:.1} MiB on disk",
        args.data_dir.display(),
        mib(u.disk_bytes)
    );
    println!(
        "{:<2} {:<28} {:>10} {:>11} {:>11}",
        "", "table", "keys", "keys MiB", "values MiB"
    );
    let (mut keys, mut stored) = (0, 0);
    for t in u.tables.iter().filter(|t| t.keys > 0) {
        println!(
            "{:<2} {:<28} {:>10} {:>11.2} {:>11.2}",
            char::from(t.prefix),
            t.name,
            t.keys,
            mib(t.key_bytes),
            mib(t.value_bytes)
        );
        keys += t.keys;
        stored += t.key_bytes + t.value_bytes;
    }
    println!(
        "{:<2} {:<28} {:>10} {:>23.2}",
        "",
        "all tables",
        keys,
        mib(stored)
    );
    let overhead = u.disk_bytes.saturating_sub(stored);
    println!(
        "sled's own layout, overhead and fragmentation: {:.1} MiB ({:.0}% of the disk)",
        mib(overhead),
        100.0 * overhead as f64 / u.disk_bytes.max(1) as f64
    );
    if u.points > 0 {
        let per = |b: u64| b as f64 / u.points as f64;
        println!(
            "{} points: {:.1} B each in the log's metric events, {:.1} B in history chunks, {:.1} B of the whole disk",
            u.points,
            per(u.metric_event_bytes),
            per(u.history_bytes),
            per(u.disk_bytes)
        );
    }
    if u.runs > 0 {
        println!(
            "{} runs: {:.0} B each in run records and indexes",
            u.runs,
            u.run_bytes as f64 / u.runs as f64
        );
    }
    Ok(())
}
