//! Names of the files in the master's data directory.

use std::path::{Path, PathBuf};

const CHANGELOG_PREFIX: &str = "changelog.";
const IMAGE_PREFIX: &str = "metadata.";
const SUFFIX: &str = ".elk";

/// `changelog.<first version>.elk`
pub fn changelog_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("{CHANGELOG_PREFIX}{start}{SUFFIX}"))
}

/// `metadata.<version>.elk`
pub fn image_path(dir: &Path, version: u64) -> PathBuf {
    dir.join(format!("{IMAGE_PREFIX}{version}{SUFFIX}"))
}

fn numbered(dir: &Path, prefix: &str) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|n| n.strip_suffix(SUFFIX))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((n, entry.path()));
    }
    out.sort();
    Ok(out)
}

/// Changelog files, oldest first, with the version of their first record.
pub fn changelogs(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    numbered(dir, CHANGELOG_PREFIX)
}

/// Snapshot images, oldest first, with their version.
pub fn images(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    numbered(dir, IMAGE_PREFIX)
}

/// Make a rename or file creation in `dir` durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Take the data directory's lock file, so two daemons never write the same metadata.
pub fn lock_dir(dir: &Path) -> std::io::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = dir.join(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(std::io::Error::other(format!(
            "{} is in use by another elkfs process",
            dir.display()
        )));
    }
    Ok(f)
}
