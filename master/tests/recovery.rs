//! Changelog + image + replay on real files: torn tails, flipped bytes, continuity after
//! a repair.

use elkfs_master::changelog::Changelog;
use elkfs_master::files;
use elkfs_master::frame::records_end;
use elkfs_master::recovery::{recover, Mode};
use elkfs_master::snapshot;
use elkfs_master::state::State;
use elkfs_proto::changelog::{record::Op, Mknod, Record};
use elkfs_proto::meta::{NodeKind, Timespec};
use prost::Message;
use std::path::Path;

fn mknod(state: &State, n: u64) -> Record {
    Record {
        op: Some(Op::Mknod(Mknod {
            parent: 1,
            name: format!("file{n}").into_bytes(),
            ino: state.next_ino,
            kind: NodeKind::File as i32,
            mode: 0o644,
            time: Some(Timespec {
                sec: n as i64,
                nsec: 1,
            }),
            goal: 1,
            ..Default::default()
        })),
    }
}

/// Apply and log `n` records; returns the state after each version.
async fn write_records(dir: &Path, state: &mut State, n: u64) -> Vec<State> {
    let log = Changelog::start(dir, state.version + 1).expect("changelog");
    let mut history = Vec::new();
    for i in 0..n {
        let rec = mknod(state, state.version + i);
        let v = state.version + 1;
        state.apply(v, &rec).expect("valid record");
        log.submit(v, &rec.encode_to_vec());
        history.push(state.clone());
    }
    log.wait(state.version).await.expect("durable");
    history
}

fn newest_log(dir: &Path) -> std::path::PathBuf {
    files::changelogs(dir)
        .expect("list")
        .last()
        .expect("a changelog")
        .1
        .clone()
}

#[tokio::test]
async fn replay_stops_cleanly_at_torn_and_corrupt_records() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut state = recover(dir, 2, Mode::Repair).expect("new fs").state;
    snapshot::write(dir, &state).expect("image 0");
    let history = write_records(dir, &mut state, 50).await;

    let full = recover(dir, 2, Mode::ReadOnly).expect("recover");
    assert_eq!(full.state, state);
    assert!(full.stop.is_none());
    assert_eq!(full.records, 50);

    // Torn tail: the last record loses its final bytes.
    let log = newest_log(dir);
    // Zero-filled space follows the records; tear the last record itself.
    let len = records_end(std::fs::File::open(&log).expect("open changelog"));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .expect("open")
        .set_len(len - 3)
        .expect("truncate");
    let torn = recover(dir, 2, Mode::ReadOnly).expect("recover torn");
    assert_eq!(
        torn.state, history[48],
        "everything before the torn record is kept"
    );
    assert!(torn.stop.as_ref().expect("stop").reason.contains("torn"));

    // A flipped byte inside record 20 drops it and everything after.
    let mut bytes = std::fs::read(&log).expect("read");
    let mut offset = 0usize;
    for _ in 0..19 {
        let l = u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes")) as usize;
        offset += 16 + l;
    }
    bytes[offset + 20] ^= 0x40;
    std::fs::write(&log, &bytes).expect("write");
    let flipped = recover(dir, 2, Mode::Repair).expect("recover flipped");
    assert_eq!(flipped.state, history[18]);
    let stop = flipped.stop.expect("stop");
    assert_eq!(stop.offset, offset as u64);
    assert!(stop.reason.contains("CRC"), "{}", stop.reason);
    assert!(dir.join("damaged").read_dir().expect("damaged dir").count() >= 1);

    // After the repair, new records continue from the last good version and replay.
    let mut state = flipped.state;
    write_records(dir, &mut state, 5).await;
    let again = recover(dir, 2, Mode::ReadOnly).expect("recover after repair");
    assert!(again.stop.is_none(), "{:?}", again.stop);
    assert_eq!(again.state, state);
    assert_eq!(again.state.version, 24);
}

#[tokio::test]
async fn newest_valid_image_wins_and_broken_images_are_skipped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut state = recover(dir, 2, Mode::Repair).expect("new fs").state;
    snapshot::write(dir, &state).expect("image 0");
    write_records(dir, &mut state, 10).await;
    let image = snapshot::write(dir, &state).expect("image 10");
    // Damage the newest image: start-up falls back to image 0 + replay.
    let mut bytes = std::fs::read(&image).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&image, bytes).expect("write");
    let rec = recover(dir, 2, Mode::ReadOnly).expect("recover");
    assert_eq!(rec.image_version, 0);
    assert_eq!(rec.state, state);
}
