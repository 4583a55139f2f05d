//! `elkfs-metarestore`: rebuild metadata offline from an image plus changelogs (a master's
//! or a metalogger's directory), or print records and images for humans.
//!
//! Exit status of `-a`: 0 when every record was used, or when only a torn tail at the very
//! end of the newest changelog was dropped (the normal trace of a crash: that record was
//! never acknowledged); 3 when an image was written but replay stopped earlier (a corrupt
//! record, a gap, a duplicate, later files unused): the metadata is consistent but may miss
//! acknowledged changes, so look before starting a master on it; 1 when nothing could be
//! restored (no loadable image, I/O error).

#[path = "metarestore/continuity.rs"]
mod continuity;
#[path = "metarestore/dump.rs"]
mod dump;

use anyhow::bail;
use clap::Parser;
use elkfs_master::recovery::{recover, Mode, Recovered};
use elkfs_master::{files, snapshot};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// Exit status when a consistent image was written but records were dropped.
const STOPPED_EARLY: u8 = 3;

#[derive(Parser)]
#[command(
    name = "elkfs-metarestore",
    version,
    about = "Rebuild elkfs metadata from an image and changelogs, or print them"
)]
struct Args {
    /// A master's or metalogger's data directory: the newest valid image + every later
    /// changelog record is written out as a new image there.
    #[arg(
        short = 'a',
        long = "auto",
        conflicts_with = "dump",
        required_unless_present = "dump"
    )]
    dir: Option<PathBuf>,
    /// Print a changelog's records or an image's entries.
    #[arg(long, value_name = "FILE")]
    dump: Option<PathBuf>,
}

fn main() -> ExitCode {
    elkfs_proto::daemon::init_logging();
    let args = Args::parse();
    let result = match (&args.dir, &args.dump) {
        (_, Some(file)) => dump_file(file),
        (Some(dir), None) => restore(dir),
        (None, None) => Err(anyhow::anyhow!("give -a DIR or --dump FILE")),
    };
    match result {
        Ok(code) => code,
        // `--dump FILE | head` is normal use, not a failure.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("elkfs-metarestore: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dump_file(path: &Path) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let damage = dump::dump(path, &mut out)?;
    out.flush()?;
    Ok(match damage {
        Some(why) => {
            eprintln!("{}: {why}", path.display());
            ExitCode::from(STOPPED_EARLY)
        }
        None => ExitCode::SUCCESS,
    })
}

fn restore(dir: &Path) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let rec = recover(dir, elkfs_proto::limits::DEFAULT_GOAL, Mode::ReadOnly)?;
    let Some(image) = &rec.image else {
        bail!("{}: no metadata here", dir.display());
    };
    println!("image {} (version {})", image.display(), rec.image_version);
    let check = continuity::scan(dir, rec.image_version)?;
    for f in &check.files {
        match f.span {
            Some((a, b)) => println!(
                "changelog {}: versions {a}..{b} ({} records)",
                f.path.display(),
                f.records
            ),
            None => println!("changelog {}: no records", f.path.display()),
        }
    }
    for p in &check.problems {
        println!(
            "problem: {} at byte {}: {}",
            p.path.display(),
            p.offset,
            p.what
        );
    }
    let path = snapshot::write(dir, &rec.state)?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "reached version {} (image {} + {} records in {secs:.2}s, {:.0} records/s); wrote {}",
        rec.state.version,
        rec.image_version,
        rec.records,
        rec.records as f64 / secs.max(1e-9),
        path.display()
    );
    let duplicates = check
        .problems
        .iter()
        .any(|p| p.what.starts_with("duplicate"));
    if duplicates {
        println!("continuity: duplicate records (skipped by replay)");
    } else if check.problems.is_empty() {
        println!(
            "continuity: ok, versions {}..{}",
            rec.image_version + 1,
            check.last
        );
    }
    Ok(match &rec.stop {
        None if !duplicates => ExitCode::SUCCESS,
        None => ExitCode::from(STOPPED_EARLY),
        Some(stop) => {
            println!(
                "stopped at {} byte {}: {}",
                stop.file.display(),
                stop.offset,
                stop.reason
            );
            for f in &stop.skipped_files {
                println!("not used: {}", f.display());
            }
            if crash_tail(dir, &rec) {
                println!(
                    "warning: dropped a torn record at the end of the newest changelog \
                     (a crash while writing it; it was never acknowledged)"
                );
                ExitCode::SUCCESS
            } else {
                println!(
                    "WARNING: records after version {} were not used; the image is \
                     consistent but may lack acknowledged changes",
                    rec.state.version
                );
                ExitCode::from(STOPPED_EARLY)
            }
        }
    })
}

/// A torn last frame of the newest changelog and nothing after it.
fn crash_tail(dir: &Path, rec: &Recovered) -> bool {
    let Some(stop) = &rec.stop else {
        return false;
    };
    let newest = files::changelogs(dir)
        .ok()
        .and_then(|l| l.last().map(|(_, p)| p.clone()));
    stop.reason.starts_with("torn")
        && stop.skipped_files.is_empty()
        && newest.as_ref() == Some(&stop.file)
}
