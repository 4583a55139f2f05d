//! Start-up pieces every elkfs binary shares: logging and the stop signal.

use std::io::IsTerminal;
use tokio::signal::unix::{signal, SignalKind};

/// `tracing` to stderr, filtered by `ELKFS_LOG` (else `RUST_LOG`, else `info`); colour only
/// on a terminal, since daemons usually log to files.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ELKFS_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Resolves at the first SIGTERM or SIGINT.
pub async fn shutdown_signal() -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    Ok(())
}
