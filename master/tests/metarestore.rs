//! `elkfs-metarestore -a` on damaged directories: it stops at the last good record, says
//! exactly where (file and byte offset), and its exit status tells a crash tail (0) from
//! lost records (3).

use elkfs_master::files;
use elkfs_master::frame;
use elkfs_master::snapshot;
use elkfs_master::state::{State, Ts};
use elkfs_proto::changelog::{record::Op, Mknod, Record};
use elkfs_proto::meta::{NodeKind, Timespec};
use prost::Message;
use std::path::Path;
use std::process::Command;

/// `n` mknod records after `state` (applied to it); returns each frame's bytes.
fn records(state: &mut State, n: u64) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| {
            let v = state.version + 1;
            let rec = Record {
                op: Some(Op::Mknod(Mknod {
                    parent: 1,
                    name: format!("f{v}").into_bytes(),
                    ino: state.next_ino,
                    kind: NodeKind::File as i32,
                    mode: 0o644,
                    time: Some(Timespec {
                        sec: v as i64,
                        nsec: 0,
                    }),
                    goal: 1,
                    ..Default::default()
                })),
            };
            state.apply(v, &rec).expect("valid record");
            let mut out = Vec::new();
            frame::encode(v, &rec.encode_to_vec(), &mut out);
            out
        })
        .collect()
}

/// A directory with image 0 and changelog files starting at the given versions, each
/// holding the given frames.
fn setup(dir: &Path, n: u64) -> (State, Vec<Vec<u8>>) {
    let mut state = State::new(2, Ts::default());
    snapshot::write(dir, &state).expect("image 0");
    let frames = records(&mut state, n);
    (state, frames)
}

fn write_log(dir: &Path, start: u64, frames: &[Vec<u8>]) -> std::path::PathBuf {
    let path = files::changelog_path(dir, start);
    std::fs::write(&path, frames.concat()).expect("write changelog");
    path
}

fn restore(dir: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_elkfs-metarestore"))
        .arg("-a")
        .arg(dir)
        .output()
        .expect("run metarestore");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn clean_directory_restores_everything_with_continuity() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_, frames) = setup(tmp.path(), 30);
    write_log(tmp.path(), 1, &frames[..10]);
    write_log(tmp.path(), 11, &frames[10..]);
    let (code, out) = restore(tmp.path());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("reached version 30 "), "{out}");
    assert!(out.contains("continuity: ok, versions 1..30"), "{out}");
    assert!(tmp.path().join("metadata.30.elk").exists());
}

#[test]
fn torn_tail_is_a_crash_trace_and_says_where() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_, frames) = setup(tmp.path(), 20);
    let good: usize = frames[..19].iter().map(Vec::len).sum();
    let mut bytes = frames.concat();
    bytes.truncate(bytes.len() - 3);
    let path = files::changelog_path(tmp.path(), 1);
    std::fs::write(&path, bytes).expect("write");
    let (code, out) = restore(tmp.path());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("reached version 19 "), "{out}");
    assert!(
        out.contains(&format!("stopped at {} byte {good}: torn", path.display())),
        "{out}"
    );
}

#[test]
fn flipped_byte_stops_at_the_last_good_record() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_, mut frames) = setup(tmp.path(), 20);
    let offset: usize = frames[..9].iter().map(Vec::len).sum();
    frames[9][20] ^= 0x10;
    let path = write_log(tmp.path(), 1, &frames);
    let (code, out) = restore(tmp.path());
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("reached version 9 "), "{out}");
    assert!(
        out.contains(&format!(
            "stopped at {} byte {offset}: corrupt",
            path.display()
        )),
        "{out}"
    );
    assert!(out.contains("CRC mismatch"), "{out}");
}

#[test]
fn gap_between_files_is_reported() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_, frames) = setup(tmp.path(), 20);
    write_log(tmp.path(), 1, &frames[..10]);
    let later = write_log(tmp.path(), 15, &frames[14..]);
    let (code, out) = restore(tmp.path());
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("reached version 10 "), "{out}");
    assert!(
        out.contains(&format!(
            "problem: {} at byte 0: gap: version 15 follows 10 (versions 11..14 missing)",
            later.display()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("stopped at {} byte 0: gap", later.display())),
        "{out}"
    );
}

#[test]
fn duplicate_records_are_reported() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_, frames) = setup(tmp.path(), 12);
    write_log(tmp.path(), 1, &frames[..10]);
    let overlap = write_log(tmp.path(), 8, &frames[7..]);
    let (code, out) = restore(tmp.path());
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("reached version 12 "), "{out}");
    assert!(
        out.contains(&format!(
            "problem: {} at byte 0: duplicate: version 8 after 10",
            overlap.display()
        )),
        "{out}"
    );
}

#[test]
fn dump_prints_records_and_images_readably() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (state, frames) = setup(tmp.path(), 3);
    let log = write_log(tmp.path(), 1, &frames);
    let image = snapshot::write(tmp.path(), &state).expect("image 3");
    let run = |p: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_elkfs-metarestore"))
            .arg("--dump")
            .arg(p)
            .output()
            .expect("run");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let records = run(&log);
    assert!(
        records.starts_with("1\tmknod parent=1 name=\"f1\" ino=2 kind=file mode=644"),
        "{records}"
    );
    assert_eq!(records.lines().count(), 3);
    let img = run(&image);
    assert!(img.starts_with("image version=3 next_ino=5"), "{img}");
    assert!(img.contains("\n  \"f3\" -> 4 cookie="), "{img}");
}
