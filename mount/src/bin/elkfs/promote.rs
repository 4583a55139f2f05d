//! `elkfs promote ADDR`: a standby metalogger (control address ADDR) becomes the master.
//! `--status` only prints its state.

use crate::admin::block_on;
use anyhow::{anyhow, Context, Result};
use elkfs_proto::standby::standby_client::StandbyClient;
use elkfs_proto::standby::{PromoteRequest, StandbyStatusRequest};
use elkfs_proto::{transport, FsError};
use tonic::transport::Channel;
use tonic::Status;

#[derive(clap::Args)]
pub struct Args {
    /// The standby's control address (`elkfs-metalogger --standby --control ADDR`).
    standby: String,
    /// Print the standby's state instead of promoting it.
    #[arg(long)]
    status: bool,
}

fn failed(addr: &str, s: Status) -> anyhow::Error {
    anyhow!("standby {addr}: {}", FsError::from(s))
}

pub fn run(args: Args) -> Result<()> {
    let addr = args.standby.as_str();
    block_on(async {
        let channel = transport::channel(addr).with_context(|| format!("bad address {addr}"))?;
        let mut client: StandbyClient<Channel> = StandbyClient::new(channel);
        if args.status {
            let s = client
                .status(StandbyStatusRequest {})
                .await
                .map_err(|s| failed(addr, s))?
                .into_inner();
            println!(
                "role {}\nversion {}\nmaster_listen {}\nfollowing {}",
                s.role, s.version, s.master_listen, s.following
            );
            return Ok(());
        }
        let r = client
            .promote(PromoteRequest {})
            .await
            .map_err(|s| failed(addr, s))?
            .into_inner();
        println!(
            "promoted: master on {} at metadata version {} ({} ms)",
            r.master_listen, r.version, r.elapsed_ms
        );
        Ok(())
    })
}
