//! A damaged chunk copy is detected by its CRC: reading gives EIO, never wrong data.

use elkfs_tests::fsutil::{assert_same_bytes, Rng};
use elkfs_tests::{Cluster, Opts};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;

/// Chunk data starts after the 8 KiB header.
const DATA_OFFSET: u64 = 8192;
const BLOCK: usize = 64 << 10;

#[test]
fn flipped_byte_gives_eio_not_wrong_data() {
    // One chunkserver: a single copy, so there is no good copy to fall back to.
    let c = Cluster::start(Opts {
        chunkservers: 1,
        ..Opts::default()
    });
    let content = Rng::new("corruption").bytes(1 << 20);
    {
        let m = c.mount();
        let mut f = File::create(m.join("victim")).expect("create");
        f.write_all(&content).expect("write");
        f.sync_all().expect("fsync");
    }
    let chunks = c.chunk_files(0);
    assert_eq!(
        chunks.len(),
        1,
        "one chunk file for a 1 MiB file: {chunks:?}"
    );
    let damaged_at = 1000;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&chunks[0])
        .expect("open chunk file");
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, DATA_OFFSET + damaged_at)
        .expect("read chunk byte");
    assert_eq!(
        byte[0], content[damaged_at as usize],
        "chunk data starts at offset 8192"
    );
    f.write_all_at(&[byte[0] ^ 0x5a], DATA_OFFSET + damaged_at)
        .expect("flip byte");
    drop(f);

    // A fresh mount has no cached pages of the file.
    let m = c.mount();
    let mut whole = Vec::new();
    let res = File::open(m.join("victim"))
        .expect("open")
        .read_to_end(&mut whole);
    match res {
        Ok(n) => {
            assert_same_bytes(&whole, &content, "read of a damaged file");
            panic!("reading a damaged block returned {n} bytes instead of EIO");
        }
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "damaged block: {e}"),
    }
    // Blocks whose CRC is fine still read correctly.
    let h = File::open(m.join("victim")).expect("open");
    let mut buf = vec![0u8; BLOCK];
    let at = 10 * BLOCK;
    h.read_exact_at(&mut buf, at as u64)
        .expect("read an undamaged block");
    assert_same_bytes(&buf, &content[at..at + BLOCK], "undamaged block");
    assert!(c.chunkserver_running(0), "chunkserver survived");
    // Metadata is unaffected.
    assert_eq!(
        fs::metadata(m.join("victim")).expect("stat").len(),
        content.len() as u64
    );
}
