//! Version continuity of the changelog chain after an image: every record exactly once, in
//! order. Replay alone would silently skip a repeated version; this pass names it.

use elkfs_master::files;
use elkfs_master::frame::FrameReader;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

/// Frames between progress lines on stderr.
const PROGRESS_EVERY: u64 = 1_000_000;

pub struct FileSpan {
    pub path: PathBuf,
    /// First and last version read from the file (None: no records).
    pub span: Option<(u64, u64)>,
    pub records: u64,
}

pub struct Problem {
    pub path: PathBuf,
    pub offset: u64,
    pub what: String,
}

pub struct Report {
    pub files: Vec<FileSpan>,
    /// Duplicates, gaps and damaged frames, in file order.
    pub problems: Vec<Problem>,
    /// Last version of the unbroken chain after the image.
    pub last: u64,
}

/// Check the files that replay from an image at `image_version` uses.
pub fn scan(dir: &Path, image_version: u64) -> std::io::Result<Report> {
    let logs = files::changelogs(dir)?;
    let mut report = Report {
        files: Vec::new(),
        problems: Vec::new(),
        last: image_version,
    };
    let mut prev = image_version;
    let mut frames = 0u64;
    let mut chain_intact = true;
    for (i, (_, path)) in logs.iter().enumerate() {
        if logs
            .get(i + 1)
            .is_some_and(|(next, _)| *next <= image_version + 1)
        {
            continue;
        }
        let mut span = FileSpan {
            path: path.clone(),
            span: None,
            records: 0,
        };
        let file = File::open(path)?;
        for frame in FrameReader::new(BufReader::with_capacity(1 << 20, file)) {
            frames += 1;
            if frames.is_multiple_of(PROGRESS_EVERY) {
                eprintln!("checked {frames} records, at version {prev}");
            }
            let f = match frame {
                Ok(f) => f,
                Err(e) => {
                    report.problems.push(Problem {
                        path: path.clone(),
                        offset: e.offset(),
                        what: e.to_string(),
                    });
                    chain_intact = false;
                    break;
                }
            };
            span.records += 1;
            span.span = Some(
                span.span
                    .map_or((f.version, f.version), |(a, _)| (a, f.version)),
            );
            let expected = prev + 1;
            if f.version < expected && prev > image_version {
                report.problems.push(Problem {
                    path: path.clone(),
                    offset: f.offset,
                    what: format!("duplicate: version {} after {prev}", f.version),
                });
            } else if f.version > expected {
                report.problems.push(Problem {
                    path: path.clone(),
                    offset: f.offset,
                    what: format!(
                        "gap: version {} follows {prev} (versions {expected}..{} missing)",
                        f.version,
                        f.version - 1
                    ),
                });
                chain_intact = false;
            }
            prev = prev.max(f.version);
            if chain_intact {
                report.last = prev;
            }
        }
        report.files.push(span);
    }
    Ok(report)
}
