//! Pieces every elkfs daemon shares: logging, the stop signal, small state files.

use std::io::IsTerminal;
use std::path::Path;
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

/// Replaces the small file `dir/name` with `contents`; a crash leaves either the old or
/// the new file, and the new one is on disk when this returns.
pub fn write_durably(dir: &Path, name: &str, contents: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, contents)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}
