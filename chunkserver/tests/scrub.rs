//! Scrub finds a flipped byte in a chunk nobody reads and reports exactly that copy.

use elkfs_chunkserver::chunk_file::HEADER_SIZE;
use elkfs_chunkserver::master_link::{DamageReport, DAMAGE_QUEUE};
use elkfs_chunkserver::scrub::Scrubber;
use elkfs_chunkserver::store::{chunk_file_name, Store};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrub_reports_a_flipped_byte_in_an_unread_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&[dir.path().to_owned()], 0).unwrap());
    let data: Vec<u8> = (0..(3 << 20) + 100).map(|i| (i % 251) as u8).collect();
    for (id, version) in [(0x500, 3), (0x501, 1), (0x502, 8)] {
        store.create(id, version).unwrap();
        let w = store.writer(id, version).unwrap();
        store.write(&w, 0, &data).unwrap();
    }
    // Rot in the last (short) block of 0x501, behind the store's back.
    let path = dir.path().join("01").join(chunk_file_name(0x501, 1));
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&[0xFF], HEADER_SIZE + (3 << 20) + 50)
        .unwrap();
    drop(f);

    let (damage_tx, mut damage_rx) = mpsc::channel(DAMAGE_QUEUE);
    let (stop_tx, stop_rx) = watch::channel(false);
    let scrub = Scrubber {
        store: store.clone(),
        damage: damage_tx,
        bytes_per_sec: 1 << 30,
        pause: Duration::from_millis(100),
    };
    let task = tokio::spawn(scrub.run(stop_rx));
    // Two passes' worth of reports: only the rotten copy, each pass.
    for _ in 0..2 {
        let got = tokio::time::timeout(Duration::from_secs(30), damage_rx.recv())
            .await
            .expect("scrub reported nothing")
            .unwrap();
        assert_eq!(
            got,
            DamageReport {
                chunk_id: 0x501,
                version: 1
            }
        );
    }
    stop_tx.send(true).unwrap();
    task.await.unwrap();
    // The good copies still read, the damaged one fails: scrub changed nothing.
    assert_eq!(store.read(0x500, 3, 0, 100).unwrap(), data[..100]);
    assert!(store.read(0x501, 1, 3 << 20, 100).is_err());
}

#[tokio::test]
async fn zero_rate_disables_scrub() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&[dir.path().to_owned()], 0).unwrap());
    let (damage, _rx) = mpsc::channel(1);
    let (_stop_tx, stop_rx) = watch::channel(false);
    let scrub = Scrubber {
        store,
        damage,
        bytes_per_sec: 0,
        pause: Duration::from_millis(1),
    };
    // Returns at once instead of looping forever.
    tokio::time::timeout(Duration::from_secs(5), scrub.run(stop_rx))
        .await
        .unwrap();
}
