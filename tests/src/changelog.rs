//! Reading a daemon's changelog files from outside, to check or damage them.

use elkfs_master::frame::{self, FrameReader};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

fn open(path: &Path) -> BufReader<File> {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    BufReader::new(file)
}

/// Where the whole records of a changelog file end: the zero-filled space the writer keeps
/// ahead of them comes after.
pub fn records_end(path: &Path) -> u64 {
    frame::records_end(open(path))
}

/// Highest version of a whole frame in `dir`'s `changelog.*.elk` files (0: none).
pub fn last_version(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut last = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("changelog.") && name.ends_with(".elk") {
            last = FrameReader::new(open(&e.path()))
                .map_while(Result::ok)
                .fold(last, |l, f| l.max(f.version));
        }
    }
    last
}
