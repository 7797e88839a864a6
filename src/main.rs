//! The `arbor` binary: parses the command line, sets up logging, opens the store, binds,
//! and hands over to the library.

use clap::Parser;
use tracing_subscriber::EnvFilter;

use arbor::config::{Cli, CliCommand};
use arbor::store::{self, Store};

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("ARBOR_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        CliCommand::Serve(args) => serve(args),
        CliCommand::Rebuild(args) => rebuild(args),
        CliCommand::Watch(args) => watch(args),
        CliCommand::Tree(args) => tree(args),
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

fn serve(args: arbor::config::ServeArgs) -> Result<(), arbor::server::BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = Store::open(&args.store.data_dir, &args.store.store_config())?;
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, data_dir = %args.store.data_dir.display(), "arbor serving gRPC and HTTP");
        // Tests and scripts that bind port 0 read the address from this line.
        println!("arbor listening on {addr}");
        arbor::server::run(listener, store, shutdown_signal()).await?;
        tracing::info!("shut down cleanly");
        Ok(())
    })
}

/// Completes on SIGINT or SIGTERM (what `docker stop` sends).
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}

fn watch(args: arbor::config::WatchArgs) -> Result<(), arbor::server::BoxError> {
    use std::io::IsTerminal;
    let stdout = std::io::stdout();
    let opts = arbor::watcher::WatchOptions {
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
    runtime.block_on(arbor::watcher::watch(opts, &mut stdout.lock()))
}

fn tree(args: arbor::config::TreeArgs) -> Result<(), arbor::server::BoxError> {
    let opts = arbor::tree_view::TreeOptions {
        server: args.server,
        run_id: args.run_id,
        metric: args.metric,
        max_depth: args.max_depth,
        all: args.all,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(arbor::tree_view::print_tree(
        opts,
        &mut std::io::stdout().lock(),
    ))
}

fn rebuild(args: arbor::config::StoreArgs) -> Result<(), arbor::server::BoxError> {
    let report = store::rebuild(&args.data_dir, &args.store_config())?;
    println!(
        "rebuilt from {} events: {} projected keys before, {} after, {} changed",
        report.events, report.keys_before, report.keys_after, report.keys_changed
    );
    Ok(())
}
