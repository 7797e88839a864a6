//! The `arbor` binary: parses the command line, sets up logging, opens the store, binds,
//! and hands over to the library.

use clap::Parser;
use tracing_subscriber::EnvFilter;

use arbor::config::{Cli, CliCommand, LogFormat};
use arbor::store::{self, Store};

fn main() -> std::process::ExitCode {
    cap_malloc_arenas();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        CliCommand::Serve(args) => serve(*args),
        CliCommand::Rebuild(args) => rebuild(args),
        CliCommand::Check(args) => check(args),
        CliCommand::DiskUsage(args) => disk_usage(args),
        CliCommand::Backup(args) => backup(args),
        CliCommand::Restore(args) => restore(args),
        CliCommand::MigrateStore(args) => migrate_store(args),
        CliCommand::Watch(args) => watch(args),
        CliCommand::Tree(args) => tree(args),
        CliCommand::Admin(args) => admin(args),
        CliCommand::Import(args) => import(args),
        CliCommand::Export(args) => export(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("arbor: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// glibc's malloc gives threads arenas of their own, up to eight per core, and memory
/// freed in one arena serves only that arena again; a server whose work moves between
/// runtime, blocking and storage threads keeps every arena's high-water mark. Two arenas
/// took the REST benchmark's server from 66.6 to 59.1 MiB (16 MiB cache) at the same
/// throughput. `MALLOC_ARENA_MAX` in the environment still decides when it is set.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn cap_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: mallopt only changes the allocator's settings and is safe to call at any
    // time; this runs first in `main`, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn cap_malloc_arenas() {}

/// glibc hands memory back to the system only from the top of a heap: what a burst
/// freed in the middle stays resident. After 10,000 watchers had come and gone the
/// server held 210 MiB, and 97 MiB after one `malloc_trim`. So a thread looks at the
/// process's CPU time every two seconds and, the first time a period is idle (under 1%
/// of a core) after a busy one, trims the heap once. An idle server never trims twice,
/// and a busy one never stalls on it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim_heap_when_idle() {
    use std::time::Duration;
    const PERIOD: Duration = Duration::from_secs(2);
    const IDLE_CPU_NANOS: i128 = 20_000_000;
    let cpu_nanos = || {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
        i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec)
    };
    let spawned = std::thread::Builder::new()
        .name("arbor-heap-trim".into())
        .spawn(move || {
            let mut last = cpu_nanos();
            let mut busy_since_trim = false;
            loop {
                std::thread::sleep(PERIOD);
                let now = cpu_nanos();
                if now - last >= IDLE_CPU_NANOS {
                    busy_since_trim = true;
                } else if busy_since_trim {
                    // SAFETY: malloc_trim only returns free memory to the system; it
                    // takes the allocator's own locks and may run on any thread.
                    unsafe {
                        libc::malloc_trim(0);
                    }
                    busy_since_trim = false;
                }
                // The trim's own CPU time is not activity.
                last = cpu_nanos();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the heap trimmer; memory freed by bursts stays resident");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap_when_idle() {}

/// Log lines on stderr, filtered by `ARBOR_LOG` (default `info`): plain text, with
/// colour only on a terminal (a log file must not fill with escape codes), or JSON.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_env("ARBOR_LOG")
        // The migration crate narrates every start; PostgreSQL's notices are for its logs.
        .unwrap_or_else(|_| EnvFilter::new("info,refinery_core=warn,tokio_postgres=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn serve(args: arbor::config::ServeArgs) -> Result<(), arbor::server::BoxError> {
    trim_heap_when_idle();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Handlers first: a SIGTERM that arrives any time after the address is announced
        // (a supervisor stopping a server that just started) must shut down cleanly, not
        // take the default action and kill the process.
        let shutdown = shutdown_signal()?;
        let options = arbor::server::Options {
            mlflow_ui: locate_ui(&args)?,
            limits: args.limits(),
            allowed_hosts: arbor::server::AllowedHosts::new(&args.allowed_hosts, args.listen),
            cors: arbor::server::Cors::new(&args.cors_allowed_origins),
            tls: load_tls(&args)?,
            metrics_token: args.metrics_token.clone().filter(|t| !t.is_empty()),
            auth: arbor::auth::Policy {
                enabled: args.auth,
                default_permission: args.auth_default_permission,
            },
        };
        let admin_password = match (&args.admin_password, &args.admin_password_file) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(file)) => Some(
                std::fs::read_to_string(file)
                    .map_err(|e| format!("cannot read {}: {e}", file.display()))?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            ),
            (None, None) => None,
        };
        let store = Store::open(&args.store.data_dir, &args.store_config())
            .map_err(|e| open_failure(&args.store.data_dir, e))?;
        if args.auth
            && let Err(e) =
                arbor::auth::bootstrap(&store, &args.admin_username, admin_password).await
        {
            store.close().await;
            return Err(e.to_string().into());
        }
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        let addr = listener.local_addr()?;
        tracing::info!(
            %addr,
            data_dir = %args.store.data_dir.display(),
            max_connections = options.limits.max_connections,
            "arbor serving gRPC and HTTP"
        );
        // Tests and scripts that bind port 0 read the address from this line.
        println!("arbor listening on {addr}");
        arbor::server::serve(listener, store, options, shutdown).await?;
        tracing::info!("shut down cleanly");
        Ok(())
    })
}

/// The TLS configuration the flags name, and a SIGHUP handler that reloads it.
fn load_tls(
    args: &arbor::config::ServeArgs,
) -> Result<Option<arbor::server::Tls>, arbor::server::BoxError> {
    // SIGHUP never takes its default action (exit): `systemctl reload` sends it.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::info!("SIGHUP: nothing to reload (no TLS)");
            }
        });
        return Ok(None);
    };
    let tls = arbor::server::Tls::load(arbor::server::TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
        client_ca: args.tls_client_ca.clone(),
    })?;
    let reloading = tls.clone();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match reloading.reload() {
                Ok(()) => tracing::info!("SIGHUP: reloaded the TLS certificate and key"),
                Err(e) => tracing::error!("SIGHUP: kept the old TLS configuration: {e}"),
            }
        }
    });
    tracing::info!(
        client_certificates = args.tls_client_ca.is_some(),
        "serving HTTPS and gRPC over TLS"
    );
    Ok(Some(tls))
}

/// What to do when the store does not open: a damaged store gets a way forward.
fn open_failure(dir: &std::path::Path, e: arbor::domain::Error) -> arbor::server::BoxError {
    use arbor::domain::Error;
    let dir = dir.display();
    match e {
        Error::Storage(e) if e.to_string().contains("could not acquire lock") => format!(
            "the store in {dir} is in use by another process (another `arbor serve`, or a rebuild): {e}"
        )
        .into(),
        Error::Storage(_) | Error::Corrupt(_) => format!(
            "the store in {dir} cannot be opened: {e}. `arbor check --data-dir {dir}` tells whether the log or only the projections are damaged; `arbor rebuild --data-dir {dir}` re-derives damaged projections from an intact log; a damaged log needs a restore from a backup."
        )
        .into(),
        other => other.into(),
    }
}

/// Finds MLflow's UI as `--mlflow-ui` says: a path that holds no UI is an error; `auto`
/// that finds none logs why and serves without it.
fn locate_ui(
    args: &arbor::config::ServeArgs,
) -> Result<Option<arbor::api::mlflow::ui::MlflowUi>, arbor::server::BoxError> {
    use arbor::api::mlflow::ui::{MlflowUi, UiSource};
    let Some(source) = args.mlflow_ui_source() else {
        return Ok(None);
    };
    match (MlflowUi::locate(&source), &source) {
        (Ok(ui), _) => {
            tracing::info!(
                build = %ui.build.display(),
                mlflow_version = ui.version.as_deref().unwrap_or("unknown"),
                "serving MLflow's UI at /"
            );
            Ok(Some(ui))
        }
        (Err(why), UiSource::Auto { .. }) => {
            tracing::warn!("--mlflow-ui auto found no UI, serving without it: {why}");
            Ok(None)
        }
        (Err(why), UiSource::Path(_)) => Err(why.into()),
    }
}

/// Installs the SIGINT and SIGTERM (what `docker stop` sends) handlers now, and returns
/// a future that completes when either arrives.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutdown signal received; finishing in-flight requests");
    })
}

fn watch(args: arbor::config::WatchArgs) -> Result<(), arbor::server::BoxError> {
    use std::io::IsTerminal;
    let stdout = std::io::stdout();
    let opts = arbor::cli::watch::WatchOptions {
        server: args.server,
        run_id: args.run_id,
        subtree: args.subtree,
        keys: args.keys,
        from_seq: args.from_seq,
        table: stdout.is_terminal(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(arbor::cli::watch::watch(opts, &mut stdout.lock()))
}

fn tree(args: arbor::config::TreeArgs) -> Result<(), arbor::server::BoxError> {
    let opts = arbor::cli::tree::TreeOptions {
        server: args.server,
        run_id: args.run_id,
        metric: args.metric,
        max_depth: args.max_depth,
        all: args.all,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(arbor::cli::tree::print_tree(
        opts,
        &mut std::io::stdout().lock(),
    ))
}

fn check(args: arbor::config::StoreArgs) -> Result<(), arbor::server::BoxError> {
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

fn disk_usage(args: arbor::config::StoreArgs) -> Result<(), arbor::server::BoxError> {
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

fn rebuild(args: arbor::config::StoreArgs) -> Result<(), arbor::server::BoxError> {
    let report = store::rebuild(&args.data_dir, &args.store_config())?;
    println!(
        "rebuilt from {} events: {} projected keys before, {} after, {} changed",
        report.events, report.keys_before, report.keys_after, report.keys_changed
    );
    Ok(())
}

fn backup(args: arbor::config::BackupArgs) -> Result<(), arbor::server::BoxError> {
    use arbor::cli::backup::{BackupOptions, Source};
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
    let summary = runtime.block_on(arbor::cli::backup::backup(BackupOptions {
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

fn restore(args: arbor::config::RestoreArgs) -> Result<(), arbor::server::BoxError> {
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

fn migrate_store(args: arbor::config::MigrateArgs) -> Result<(), arbor::server::BoxError> {
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

/// A new password: ARBOR_NEW_PASSWORD, else the file, else the first line of stdin.
fn new_password(file: Option<&std::path::Path>) -> Result<String, arbor::server::BoxError> {
    if let Ok(p) = std::env::var("ARBOR_NEW_PASSWORD")
        && !p.is_empty()
    {
        return Ok(p);
    }
    let text = match file {
        Some(f) => {
            std::fs::read_to_string(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?
        }
        None => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line
        }
    };
    let password = text.trim_end_matches(['\r', '\n']).to_string();
    arbor::auth::check_password_text(&password)?;
    Ok(password)
}

fn admin(args: arbor::config::AdminArgs) -> Result<(), arbor::server::BoxError> {
    use arbor::cli::admin::{AdminAction, Target};
    use arbor::config::AdminCommand;
    let target = match (args.server, args.data_dir) {
        (Some(url), _) => Target::Server(url),
        (None, Some(dir)) => Target::DataDir(dir, arbor::store::StoreConfig::default()),
        (None, None) => return Err("give --server URL or --data-dir DIR".into()),
    };
    let action = match args.command {
        AdminCommand::CreateUser {
            username,
            admin,
            password_file,
        } => AdminAction::CreateUser {
            username,
            password: new_password(password_file.as_deref())?,
            admin,
        },
        AdminCommand::ResetPassword {
            username,
            password_file,
        } => AdminAction::ResetPassword {
            username,
            password: new_password(password_file.as_deref())?,
        },
        AdminCommand::SetAdmin { username, revoke } => AdminAction::SetAdmin {
            username,
            admin: !revoke,
        },
        AdminCommand::IssueToken {
            username,
            description,
            expires_in_days,
        } => AdminAction::IssueToken {
            username,
            description,
            expires_in_days,
        },
        AdminCommand::RevokeToken { token_id } => AdminAction::RevokeToken { token_id },
        AdminCommand::ListUsers => AdminAction::ListUsers,
        AdminCommand::ListTokens => AdminAction::ListTokens,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let out = runtime.block_on(arbor::cli::admin::run(target, action))?;
    if !out.is_empty() {
        println!("{out}");
    }
    Ok(())
}

fn mlflow_credentials() -> Option<String> {
    arbor::cli::http::authorization_from(
        &["MLFLOW_TRACKING_TOKEN"],
        &["MLFLOW_TRACKING_USERNAME"],
        &["MLFLOW_TRACKING_PASSWORD"],
    )
}

fn arbor_credentials() -> Option<String> {
    arbor::cli::http::authorization_from(&["ARBOR_TOKEN"], &["ARBOR_USERNAME"], &["ARBOR_PASSWORD"])
}

fn import(args: arbor::config::ImportArgs) -> Result<(), arbor::server::BoxError> {
    use std::io::IsTerminal;
    use std::sync::atomic::Ordering::Relaxed;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let options = arbor::cli::import::Options {
            experiments: args.experiments.clone(),
            jobs: args.jobs,
            progress: std::io::stderr().is_terminal(),
        };
        let from = arbor::cli::http::Client::new(&args.from, mlflow_credentials())?
            .limit(args.source_connections);
        // A stopped store is served here, on loopback, for the length of the import:
        // one code path, through the API, for every store.
        let mut local = None;
        let target = match (&args.server, &args.data_dir) {
            (Some(url), _) => url.clone(),
            (None, Some(dir)) => {
                let store = Store::open(dir, &store::StoreConfig::default())
                    .map_err(|e| open_failure(dir, e))?;
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let url = format!("http://{}", listener.local_addr()?);
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let task = tokio::spawn(arbor::server::run(listener, store, async {
                    let _ = stopped.await;
                }));
                local = Some((stop, task));
                url
            }
            (None, None) => return Err("give --server URL or --data-dir DIR".into()),
        };
        let auth = if local.is_some() { None } else { arbor_credentials() };
        let to = arbor::cli::http::Client::new(&target, auth)?;
        let outcome = if args.verify {
            let diffs = arbor::cli::import::verify(&from, &to, &options).await?;
            for d in &diffs {
                println!("{d}");
            }
            if diffs.is_empty() {
                println!("verified: the source and Arbor match");
                Ok(())
            } else {
                Err(format!("{} differences", diffs.len()).into())
            }
        } else {
            let started = std::time::Instant::now();
            let result = arbor::cli::import::import(from, to, &options).await?;
            let s = result.summary();
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            let (runs, points) = (s.runs.load(Relaxed), s.points.load(Relaxed));
            println!(
                "imported {} experiments, {runs} runs ({} new), {points} points, {} params and tags, {} logged models, {} artifact files ({} bytes) in {secs:.1} s: {:.0} runs/s, {:.0} points/s",
                s.experiments.load(Relaxed),
                s.runs_created.load(Relaxed),
                s.params_and_tags.load(Relaxed),
                s.logged_models.load(Relaxed),
                s.artifact_files.load(Relaxed),
                s.artifact_bytes.load(Relaxed),
                runs as f64 / secs,
                points as f64 / secs,
            );
            if let Ok(skipped) = s.skipped.lock() {
                for line in skipped.iter() {
                    println!("skipped: {line}");
                }
            }
            Ok(())
        };
        if let Some((stop, task)) = local {
            let _ = stop.send(());
            task.await??;
        }
        outcome
    })
}

fn export(args: arbor::config::ExportArgs) -> Result<(), arbor::server::BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let from = arbor::cli::http::Client::new(&args.server, arbor_credentials())?;
        let to = arbor::cli::http::Client::new(&args.to, mlflow_credentials())?;
        let options = arbor::cli::import::Options {
            experiments: args.experiments,
            jobs: 1,
            progress: false,
        };
        let summary = arbor::cli::import::export(from, to, &options).await?;
        if let Ok(mapping) = summary.mapping.lock() {
            for (old, new) in mapping.iter() {
                println!("{old} {new}");
            }
        }
        eprintln!(
            "exported {} runs, {} points, {} artifact files",
            summary.runs.load(std::sync::atomic::Ordering::Relaxed),
            summary.points.load(std::sync::atomic::Ordering::Relaxed),
            summary
                .artifact_files
                .load(std::sync::atomic::Ordering::Relaxed)
        );
        Ok(())
    })
}
