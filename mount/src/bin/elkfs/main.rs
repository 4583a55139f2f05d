//! `elkfs`: the user/admin tool.
//!
//! * `elkfs up DATA_DIR MOUNTPOINT`: a whole local cluster (master, chunkservers, mount) as
//!   detached background processes, for trying elkfs out.
//! * `elkfs down DATA_DIR`: unmount and stop what `up` started.
//! * `elkfs status`: the master's view of the cluster.

mod daemon;
mod down;
mod mounts;
mod status;
mod up;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "elkfs", version, about = "elkfs user and admin tool")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a local cluster (master, chunkservers, FUSE mount) in the background.
    Up(up::Args),
    /// Unmount and stop a cluster started with `elkfs up`.
    Down(down::Args),
    /// Print the cluster state as the master sees it.
    Status(status::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Up(args) => up::run(args),
        Cmd::Down(args) => down::run(args),
        Cmd::Status(args) => status::run(args),
    }
}
