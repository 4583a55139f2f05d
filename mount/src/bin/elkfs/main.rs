//! `elkfs`: the user/admin tool.
//!
//! * `elkfs up DATA_DIR MOUNTPOINT`: a whole local cluster (master, chunkservers, mount) as
//!   detached background processes, for trying elkfs out.
//! * `elkfs down DATA_DIR`: unmount and stop what `up` started.
//! * `elkfs status`: the master's view of the cluster.
//! * `elkfs getgoal|setgoal|fileinfo|checkfile PATH...`: goals and chunk copies of files,
//!   asked of the master serving the mount PATH is on.
//! * `elkfs maintenance on|off SERVER`: planned chunkserver restarts.
//! * `elkfs promote ADDR`: a standby metalogger becomes the master.

mod admin;
mod daemon;
mod down;
mod fileinfo;
mod goal;
mod maintenance;
mod mounts;
mod promote;
mod status;
mod target;
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
    /// Print the goal (number of copies) of files and directories.
    Getgoal(goal::GetArgs),
    /// Set the goal of files and directories (with -r, of whole trees).
    Setgoal(goal::SetArgs),
    /// Print each chunk of files and where its copies are.
    Fileinfo(fileinfo::InfoArgs),
    /// Count the chunks of files by number of valid copies.
    Checkfile(fileinfo::CheckArgs),
    /// Suspend (on) or resume (off) re-replication for a chunkserver's planned restart.
    Maintenance(maintenance::Args),
    /// Make a standby metalogger the master (ADDR: its control address).
    Promote(promote::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Up(args) => up::run(args),
        Cmd::Down(args) => down::run(args),
        Cmd::Status(args) => status::run(args),
        Cmd::Getgoal(args) => goal::get(args),
        Cmd::Setgoal(args) => goal::set(args),
        Cmd::Fileinfo(args) => fileinfo::info(args),
        Cmd::Checkfile(args) => fileinfo::check(args),
        Cmd::Maintenance(args) => maintenance::run(args),
        Cmd::Promote(args) => promote::run(args),
    }
}
