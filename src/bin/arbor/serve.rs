//! `arbor serve`: the server on one port, with TLS reloaded on SIGHUP, graceful shutdown
//! on SIGINT and SIGTERM, and the heap trimmed when the process goes idle.

use arbor::store::Store;

/// `arbor serve`: opens the store, binds, serves until SIGINT or SIGTERM.
pub fn main(args: crate::config::ServeArgs) -> Result<(), arbor::server::BoxError> {
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
    args: &crate::config::ServeArgs,
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
pub fn open_failure(dir: &std::path::Path, e: arbor::domain::Error) -> arbor::server::BoxError {
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
    args: &crate::config::ServeArgs,
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
