//! The master's Admin service as the tool uses it: clients per master address, the active
//! master found among several, one small runtime for the blocking commands, and RPC
//! failures as messages a person can act on.

use anyhow::{anyhow, bail, Context, Result};
use elkfs_proto::admin::admin_client::AdminClient;
use elkfs_proto::{transport, FsError};
use std::collections::HashMap;
use std::future::Future;
use tonic::transport::Channel;
use tonic::{Code, Response, Status};

pub type Client = AdminClient<Channel>;

pub use elkfs_proto::transport::address_list as master_list;

/// Admin clients by master address, connected at their first call and then reused.
#[derive(Default)]
pub struct Masters(HashMap<String, Client>);

impl Masters {
    fn client(&mut self, addr: &str) -> Result<Client> {
        if let Some(c) = self.0.get(addr) {
            return Ok(c.clone());
        }
        let channel =
            transport::channel(addr).with_context(|| format!("bad master address {addr}"))?;
        let client = transport::admin_client(channel);
        self.0.insert(addr.to_owned(), client.clone());
        Ok(client)
    }

    /// `op` on the first of `addrs` that serves it: with several masters only the active
    /// one does, the others are down or standbys.
    pub async fn call<R, Fut>(
        &mut self,
        addrs: &[String],
        mut op: impl FnMut(Client) -> Fut,
    ) -> Result<R>
    where
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let mut last = None;
        for addr in addrs {
            match op(self.client(addr)?).await {
                Ok(reply) => return Ok(reply.into_inner()),
                Err(s) if matches!(s.code(), Code::Unavailable | Code::Unimplemented) => {
                    last = Some(rpc_error(addr, s));
                }
                Err(s) => return Err(rpc_error(addr, s)),
            }
        }
        match last {
            Some(e) => Err(e),
            None => bail!("no master address"),
        }
    }
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
fn rpc_error(addr: &str, status: Status) -> anyhow::Error {
    match status.code() {
        Code::Unavailable => return anyhow!("master {addr} is unreachable: {}", status.message()),
        Code::Unimplemented => return anyhow!("{addr} is not an active elkfs master"),
        _ => {}
    }
    anyhow!("{}", FsError::from(status))
}
