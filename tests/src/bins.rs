//! Locating (and building) the daemon binaries the tests run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The directory holding `elkfs-master` & co., built for the same profile as the running
/// test. `cargo test` only builds the binaries of the package under test, and the daemons
/// live in other crates, so the first call runs `cargo build --bins` once per test process
/// (a no-op when they are up to date).
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(build)
}

pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

fn build() -> PathBuf {
    // Test executables live in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("current_exe of the test binary");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary is not under target/<profile>/deps")
        .to_path_buf();
    let target_dir = profile_dir
        .parent()
        .expect("target dir above the profile dir");
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("profile dir name")
        .to_owned();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace root");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_owned());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--bins")
        .arg("--workspace")
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target_dir);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.arg("--profile").arg(other);
        }
    }
    let out = cmd.output().expect("running cargo build --bins");
    assert!(
        out.status.success(),
        "cargo build --bins failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["elkfs-master", "elkfs-chunkserver", "elkfs-mount"] {
        assert!(
            profile_dir.join(name).is_file(),
            "{name} missing in {} after cargo build",
            profile_dir.display()
        );
    }
    profile_dir
}
