//! `elkfs maintenance on|off SERVER`: suspend re-replication of a chunkserver's copies for
//! a planned restart, and resume it.

use crate::admin::{block_on, master_list, Masters};
use anyhow::Result;
use elkfs_proto::admin::MaintenanceRequest;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

#[derive(clap::Args)]
#[command(
    after_help = "Output: `maintenance on SERVER` or `maintenance off SERVER`.\n\
While a server is in maintenance the master does not re-replicate its chunks when it \
disconnects; its copies show as `maintenance` in `elkfs fileinfo`."
)]
pub struct Args {
    switch: Switch,
    /// Chunkserver address as registered (host:port, see `elkfs status`) or its id.
    server: String,
    /// Master address (host:port), or several separated by commas: the active one answers.
    #[arg(long, default_value = "127.0.0.1:9520")]
    master: String,
}

pub fn run(args: Args) -> Result<()> {
    let on = matches!(args.switch, Switch::On);
    let server = &args.server;
    block_on(
        Masters::default().call(&master_list(&args.master), |mut client| async move {
            client
                .maintenance(MaintenanceRequest {
                    server: server.clone(),
                    on,
                })
                .await
        }),
    )?;
    println!(
        "maintenance {} {}",
        if on { "on" } else { "off" },
        args.server
    );
    Ok(())
}
