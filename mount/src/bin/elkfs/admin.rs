//! The master's Admin service as the tool uses it: a client per master address, one small
//! runtime for the blocking commands, and RPC failures as messages a person can act on.

use anyhow::{anyhow, Context, Result};
use elkfs_proto::admin::admin_client::AdminClient;
use elkfs_proto::{transport, FsError};
use tonic::transport::Channel;
use tonic::{Code, Status};

pub type Client = AdminClient<Channel>;

/// A client for the master at `addr` (connects at the first call).
pub fn connect(addr: &str) -> Result<Client> {
    let channel = transport::channel(addr).with_context(|| format!("bad master address {addr}"))?;
    Ok(transport::admin_client(channel))
}

/// Runs `fut` to completion on a single-threaded runtime.
pub fn block_on<T>(fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting tokio runtime")?
        .block_on(fut)
}

/// What went wrong with a call to the master at `addr`.
pub fn rpc_error(addr: &str, status: Status) -> anyhow::Error {
    if status.code() == Code::Unavailable {
        return anyhow!("master {addr} is unreachable: {}", status.message());
    }
    anyhow!("{}", FsError::from(status))
}
