//! `elkfs-metarestore`: rebuild metadata offline from an image plus changelogs.
//! (Full feature set — `--dump`, progress, metalogger directories — comes with the
//! metalogger issue.)

use anyhow::bail;
use clap::Parser;
use elkfs_master::recovery::{recover, Mode};
use elkfs_master::snapshot;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "elkfs-metarestore",
    version,
    about = "Rebuild elkfs metadata from an image and changelogs"
)]
struct Args {
    /// Data directory (a master's): newest valid image + every later changelog record is
    /// written out as a new image there.
    #[arg(short = 'a', long = "auto")]
    dir: PathBuf,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let rec = recover(&args.dir, elkfs_proto::limits::DEFAULT_GOAL, Mode::ReadOnly)?;
    if rec.image.is_none() {
        bail!("{}: no metadata here", args.dir.display());
    }
    let path = snapshot::write(&args.dir, &rec.state)?;
    println!(
        "reached version {} (image {} + {} records); wrote {}",
        rec.state.version,
        rec.image_version,
        rec.records,
        path.display()
    );
    if let Some(stop) = rec.stop {
        println!(
            "stopped early in {} at byte {}: {} ({} later files not used)",
            stop.file.display(),
            stop.offset,
            stop.reason,
            stop.skipped_files.len()
        );
    }
    Ok(())
}
